//! A full client + server handshake through two in-process Engines (real tokens, real
//! policy engine, real packets built with etherparse), PSK and PKI, beside a baseline of
//! just parsing and copying the same packets. Run: `cargo bench -p trireme-enforcer`.

use criterion::{criterion_group, criterion_main, Criterion};
use etherparse::{PacketBuilder, TcpOptionElement};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use trireme_enforcer::handshake::{
    Action, Config, Dir, Engine, SystemRandom, TokenCrypto, Tokens, Verdict,
};
use trireme_enforcer::packet;
use trireme_policy::{Cluster, Identity, NAMESPACE_NAME_LABEL};

const POLICY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-ingress, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {pod: a}}}]
    ports: [{port: 80, protocol: TCP}]
"#;
const A: [u8; 4] = [10, 0, 0, 1];
const B: [u8; 4] = [10, 0, 0, 2];
const ISN_C: u32 = 1_000_000;
const ISN_S: u32 = 7_000_000;
const NOW: u64 = 1_800_000_000_000;
const PORTS: u16 = 1024;

fn identity(pod: &str) -> Identity {
    let mut labels = BTreeMap::new();
    labels.insert("pod".to_string(), pod.to_string());
    labels.insert("app.kubernetes.io/name".to_string(), "bench".to_string());
    let mut namespace_labels = BTreeMap::new();
    namespace_labels.insert(NAMESPACE_NAME_LABEL.to_string(), "x".to_string());
    Identity {
        namespace: "x".into(),
        labels,
        namespace_labels,
        ports: vec![],
    }
}

fn tcp(
    src: [u8; 4],
    dst: [u8; 4],
    sp: u16,
    dp: u16,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
) -> Vec<u8> {
    let mut b = PacketBuilder::ipv4(src, dst, 64).tcp(sp, dp, seq, 64240);
    if syn {
        b = b.syn();
    }
    if let Some(a) = ack {
        b = b.ack(a);
    }
    let b = if syn {
        b.options(&[
            TcpOptionElement::MaximumSegmentSize(1460),
            TcpOptionElement::SelectiveAcknowledgementPermitted,
            TcpOptionElement::Timestamp(1, 0),
            TcpOptionElement::Noop,
            TcpOptionElement::WindowScale(7),
        ])
        .unwrap()
    } else {
        b
    };
    let mut v = Vec::new();
    b.write(&mut v, b"").unwrap();
    v
}

/// The plain packets of one connection from client port `p`.
struct Conn {
    syn: Vec<u8>,
    syn_ack: Vec<u8>,
    ack: Vec<u8>,
    data: Vec<u8>,
}

fn conns() -> Vec<Conn> {
    (0..PORTS)
        .map(|i| {
            let p = 20_000 + i;
            Conn {
                syn: tcp(A, B, p, 80, ISN_C, None, true),
                syn_ack: tcp(B, A, 80, p, ISN_S, Some(ISN_C + 1), true),
                ack: tcp(A, B, p, 80, ISN_C + 1, Some(ISN_S + 1), false),
                data: tcp(B, A, 80, p, ISN_S + 1, Some(ISN_C + 1), false),
            }
        })
        .collect()
}

fn pass(v: Verdict, orig: &[u8]) -> Vec<u8> {
    assert_ne!(v.action, Action::Drop);
    v.packet.unwrap_or_else(|| orig.to_vec())
}

/// One complete handshake; panics if any step is not what a working handshake gives.
fn handshake(c: &mut Engine, s: &mut Engine, k: &Conn) {
    let w = pass(c.handle(Dir::Outbound, &k.syn, NOW), &k.syn);
    let _ = pass(s.handle(Dir::Inbound, &w, NOW), &w);
    let w = pass(s.handle(Dir::Outbound, &k.syn_ack, NOW), &k.syn_ack);
    let _ = pass(c.handle(Dir::Inbound, &w, NOW), &w);
    let w = pass(c.handle(Dir::Outbound, &k.ack, NOW), &k.ack);
    let v = s.handle(Dir::Inbound, &w, NOW);
    assert_eq!(v.action, Action::Authorise);
    let v = c.handle(Dir::Inbound, &k.data, NOW);
    assert_eq!(v.action, Action::Authorise);
}

fn engines(tc: Arc<dyn Tokens>, ts: Arc<dyn Tokens>) -> (Engine, Engine) {
    let policy = Arc::new(Cluster::parse_str("p.yaml", POLICY).unwrap().engine());
    let c = Engine::new(
        Config::default(),
        identity("a"),
        tc,
        policy.clone(),
        Box::new(SystemRandom),
    );
    let s = Engine::new(
        Config::default(),
        identity("b"),
        ts,
        policy,
        Box::new(SystemRandom),
    );
    (c, s)
}

fn bench(cr: &mut Criterion) {
    let conns = conns();
    let mut g = cr.benchmark_group("handshake");

    // Baseline: the same seven packet traversals, each just parsed and copied.
    let mut i = 0usize;
    g.bench_function("baseline_parse_copy", |b| {
        b.iter(|| {
            let k = &conns[i % conns.len()];
            i += 1;
            for p in [
                &k.syn, &k.syn, &k.syn_ack, &k.syn_ack, &k.ack, &k.ack, &k.data,
            ] {
                let v = packet::parse(black_box(p)).unwrap();
                black_box(v.seq);
                black_box(p.to_vec());
            }
        })
    });

    let psk = b"bench-psk-0123456789abcdef0123456789abcdef";
    let t: Arc<dyn Tokens> = Arc::new(TokenCrypto::new(
        trireme_token::Signer::from_psk(psk).unwrap(),
        trireme_token::Verifier::from_psk(psk).unwrap(),
        "node-1",
        30,
    ));
    let (mut c, mut s) = engines(t.clone(), t);
    let mut i = 0usize;
    g.bench_function("psk", |b| {
        b.iter(|| {
            handshake(&mut c, &mut s, &conns[i % conns.len()]);
            i += 1;
        })
    });

    let dir = std::env::temp_dir().join(format!("trireme-bench-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (d1, d2) = (dir.join("n1"), dir.join("n2"));
    trireme_token::keys::init_pki(&d1, "node-1").unwrap();
    trireme_token::keys::issue_node(&d1, "node-2", &d2).unwrap();
    let (s1, v1) = trireme_token::load_keys(&d1).unwrap();
    let (s2, v2) = trireme_token::load_keys(&d2).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let (mut c, mut s) = engines(
        Arc::new(TokenCrypto::new(s1, v1, "", 30)),
        Arc::new(TokenCrypto::new(s2, v2, "", 30)),
    );
    let mut i = 0usize;
    g.bench_function("pki", |b| {
        b.iter(|| {
            handshake(&mut c, &mut s, &conns[i % conns.len()]);
            i += 1;
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
