//! The handshake engine never panics on arbitrary packets in either direction, and never
//! authorises a connection from arbitrary inbound bytes that carry a token or proof
//! (only a peer without token can be authorised, by policy; here the policy admits none).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, Mutex, OnceLock};
use trireme_enforcer::handshake::{Action, Config, Dir, Engine, SystemRandom, TokenCrypto};
use trireme_policy::{Cluster, Identity};

const DENY_ALL: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
"#;

fn engine() -> &'static Mutex<Engine> {
    static E: OnceLock<Mutex<Engine>> = OnceLock::new();
    E.get_or_init(|| {
        let secret = b"fuzzing-psk-0123456789abcdef0123456789";
        let tokens = TokenCrypto::new(
            trireme_token::Signer::from_psk(secret).unwrap(),
            trireme_token::Verifier::from_psk(secret).unwrap(),
            "fuzz",
            30,
        );
        let policy = Cluster::parse_str("deny.yaml", DENY_ALL).unwrap().engine();
        let id = Identity {
            namespace: "x".into(),
            ..Identity::default()
        };
        Mutex::new(Engine::new(
            Config::default(),
            id,
            Arc::new(tokens),
            Arc::new(policy),
            Box::new(SystemRandom),
        ))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, pkt)) = data.split_first() else {
        return;
    };
    let dir = if sel & 1 == 0 {
        Dir::Inbound
    } else {
        Dir::Outbound
    };
    let now = 1_800_000_000_000 + u64::from(sel) * 1000;
    let mut e = engine().lock().unwrap_or_else(|p| p.into_inner());
    let v = e.handle(dir, pkt, now);
    if dir == Dir::Inbound {
        assert_ne!(
            v.action,
            Action::Authorise,
            "deny-all never authorises inbound"
        );
    }
    if let Some(p) = &v.packet {
        trireme_enforcer::packet::verify_checksums(p).expect("rewritten packets are valid");
    }
});
