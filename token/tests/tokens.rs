//! Tokens end to end with real keys written to temporary directories.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use trireme_policy::{Identity, NamedPort, Protocol, NAMESPACE_NAME_LABEL};
use trireme_token::keys::{self, Options};
use trireme_token::{
    load_keys, proof, Claims, Expect, Mode, Signer, TokenError, TokenKind, Verifier,
    CLOCK_SKEW_SECS, TOKEN_TTL_SECS,
};

/// One "now" for the whole test process (credentials are issued at the real time).
fn now() -> u64 {
    static NOW: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *NOW.get_or_init(trireme_token::now_unix)
}

/// Labels as a real Deployment's pod carries them.
fn realistic_identity() -> Identity {
    let labels: BTreeMap<String, String> = [
        ("app", "checkout"),
        ("app.kubernetes.io/name", "checkout"),
        ("app.kubernetes.io/instance", "checkout-prod"),
        ("app.kubernetes.io/version", "1.24.3"),
        ("app.kubernetes.io/part-of", "webshop"),
        ("pod-template-hash", "7d9f8c6b5d"),
        ("tier", "backend"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let namespace_labels: BTreeMap<String, String> = [
        (NAMESPACE_NAME_LABEL, "webshop-prod"),
        ("env", "production"),
        ("team", "payments"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Identity {
        namespace: "webshop-prod".into(),
        labels,
        namespace_labels,
        ports: vec![
            NamedPort {
                name: "http".into(),
                port: 8080,
                protocol: Protocol::Tcp,
            },
            NamedPort {
                name: "metrics".into(),
                port: 9090,
                protocol: Protocol::Tcp,
            },
        ],
    }
}

fn syn_claims(signer: &Signer, isn_c: u32) -> Claims {
    Claims::syn(
        realistic_identity(),
        signer.node_name().unwrap_or("node-psk").to_string(),
        [0x11; 16],
        isn_c,
        proof::commit(&[0x22; 32]),
        now(),
    )
}

fn syn_ack_claims(signer: &Signer, isn_c: u32, isn_s: u32) -> Claims {
    syn_ack_claims_at(signer, isn_c, isn_s, "10.244.3.17:8080".parse().unwrap())
}

fn syn_ack_claims_at(signer: &Signer, isn_c: u32, isn_s: u32, server: SocketAddr) -> Claims {
    Claims::syn_ack(
        realistic_identity(),
        signer.node_name().unwrap_or("node-psk").to_string(),
        [0x33; 16],
        [0x11; 16],
        isn_c,
        isn_s,
        server,
        now(),
    )
}

struct Cluster {
    _tmp: tempfile::TempDir,
    a: (Signer, Verifier),
    b: (Signer, Verifier),
}

/// Node A with the CA, node B issued by the same CA.
fn pki_cluster() -> Cluster {
    let tmp = tempfile::tempdir().unwrap();
    let a_dir = tmp.path().join("a");
    let b_dir = tmp.path().join("b");
    keys::init_pki(&a_dir, "node-a").unwrap();
    keys::issue_node(&a_dir, "node-b", &b_dir).unwrap();
    Cluster {
        a: load_keys(&a_dir).unwrap(),
        b: load_keys(&b_dir).unwrap(),
        _tmp: tmp,
    }
}

fn psk_pair(dir: &Path) -> (Signer, Verifier) {
    keys::init_psk(dir).unwrap();
    load_keys(dir).unwrap()
}

fn err_code(r: Result<Claims, TokenError>) -> &'static str {
    match r {
        Ok(_) => "accepted",
        Err(e) => e.code(),
    }
}

/// Splits a token into (credential with its `~` or "", detached JWS, claims JSON).
fn token_parts(token: &[u8]) -> (String, String, String) {
    let s = std::str::from_utf8(token).unwrap();
    let (framing, payload) = s.rsplit_once('~').unwrap();
    let (cred, jws) = match framing.split_once('~') {
        Some((c, j)) => (format!("{c}~"), j),
        None => (String::new(), framing),
    };
    (cred, jws.to_string(), payload.to_string())
}

/// Rewrites the claims JSON of `token` with `edit`, keeping the signature.
fn tamper_claims(token: &[u8], edit: impl Fn(&str) -> String) -> Vec<u8> {
    let (cred, jws, json) = token_parts(token);
    let edited = edit(&json);
    assert_ne!(edited, json, "the edit must change something");
    format!("{cred}{jws}~{edited}").into_bytes()
}

#[test]
fn pki_syn_and_syn_ack_round_trip_between_nodes() {
    let c = pki_cluster();
    assert_eq!(c.a.0.mode(), Mode::Pki);
    assert_eq!(c.a.0.node_name(), Some("node-a"));
    assert_eq!(c.b.0.node_name(), Some("node-b"));

    let syn = syn_claims(&c.a.0, 1000);
    let token = c.a.0.sign(&syn).unwrap();
    let got = c.b.1.verify(&token, &Expect::syn(1000), now()).unwrap();
    assert_eq!(got, syn);

    let ack = syn_ack_claims(&c.b.0, 1000, 2000);
    let token = c.b.0.sign(&ack).unwrap();
    let got =
        c.a.1
            .verify(&token, &Expect::syn_ack(1000, 2000, [0x11; 16]), now())
            .unwrap();
    assert_eq!(got, ack);
}

#[test]
fn psk_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, v) = psk_pair(&tmp.path().join("k"));
    assert_eq!(s.mode(), Mode::Psk);
    assert_eq!(v.mode(), Mode::Psk);
    let syn = syn_claims(&s, 7);
    let got = v
        .verify(&s.sign(&syn).unwrap(), &Expect::syn(7), now())
        .unwrap();
    assert_eq!(got, syn);
}

#[test]
fn token_sizes_with_realistic_labels() {
    let c = pki_cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (psk, _) = psk_pair(&tmp.path().join("k"));
    let pki_syn = c.a.0.sign(&syn_claims(&c.a.0, u32::MAX)).unwrap().len();
    let pki_ack =
        c.a.0
            .sign(&syn_ack_claims(&c.a.0, u32::MAX, u32::MAX))
            .unwrap()
            .len();
    let psk_syn = psk.sign(&syn_claims(&psk, u32::MAX)).unwrap().len();
    let psk_ack = psk
        .sign(&syn_ack_claims(&psk, u32::MAX, u32::MAX))
        .unwrap()
        .len();
    println!(
        "token sizes (7 pod labels, 2 namespace labels, 2 named ports): \
         PKI SYN {pki_syn} B, PKI SYN-ACK {pki_ack} B, PSK SYN {psk_syn} B, PSK SYN-ACK {psk_ack} B; \
         PKI fixed overhead {} B, ACK proof {} B",
        c.a.0.fixed_overhead(),
        proof::PROOF_LEN
    );
    println!(
        "PKI SYN token: {}",
        String::from_utf8(c.a.0.sign(&syn_claims(&c.a.0, u32::MAX)).unwrap()).unwrap()
    );
    // The longest server address a SYN-ACK can carry: a full IPv6 address, port 65535.
    let longest: SocketAddr = "[fd00:1234:5678:9abc:def0:1234:5678:9abc]:65535"
        .parse()
        .unwrap();
    let pki_ack_v6 =
        c.a.0
            .sign(&syn_ack_claims_at(&c.a.0, u32::MAX, u32::MAX, longest))
            .unwrap()
            .len();
    println!("PKI SYN-ACK token with the longest server address: {pki_ack_v6} B");
    // A SYN must stay well under 1,200 bytes (one MTU with headers and options).
    assert!(pki_syn < 1000, "PKI SYN token is {pki_syn} bytes");
    assert!(pki_ack < 1000, "PKI SYN-ACK token is {pki_ack} bytes");
    assert!(pki_ack_v6 < 1000, "PKI SYN-ACK token is {pki_ack_v6} bytes");
    // The server address claim costs its text and nothing else.
    assert_eq!(
        pki_ack_v6 - pki_ack,
        longest.to_string().len() - "10.244.3.17:8080".len()
    );
    assert!(psk_syn < pki_syn);
    assert!(psk_ack < pki_ack);
}

#[test]
fn other_ca_is_untrusted_issuer() {
    let c = pki_cluster();
    let tmp = tempfile::tempdir().unwrap();
    let evil = tmp.path().join("evil");
    keys::init_pki(&evil, "node-b").unwrap();
    let (evil_signer, _) = load_keys(&evil).unwrap();
    let token = evil_signer.sign(&syn_claims(&evil_signer, 1)).unwrap();
    let e = c.a.1.verify(&token, &Expect::syn(1), now()).unwrap_err();
    assert!(matches!(e, TokenError::UntrustedIssuer(_)), "{e}");
}

#[test]
fn other_psk_is_unknown_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (s1, _) = psk_pair(&tmp.path().join("one"));
    let (_, v2) = psk_pair(&tmp.path().join("two"));
    let e = v2
        .verify(
            &s1.sign(&syn_claims(&s1, 1)).unwrap(),
            &Expect::syn(1),
            now(),
        )
        .unwrap_err();
    assert!(matches!(e, TokenError::UnknownKey(_)), "{e}");
}

#[test]
fn other_trust_mode_is_unknown_key() {
    let c = pki_cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (psk_s, psk_v) = psk_pair(&tmp.path().join("k"));
    let psk_token = psk_s.sign(&syn_claims(&psk_s, 1)).unwrap();
    let pki_token = c.a.0.sign(&syn_claims(&c.a.0, 1)).unwrap();
    assert_eq!(
        err_code(c.b.1.verify(&psk_token, &Expect::syn(1), now())),
        "unknown_key"
    );
    assert_eq!(
        err_code(psk_v.verify(&pki_token, &Expect::syn(1), now())),
        "unknown_key"
    );
}

#[test]
fn tampered_claims_are_bad_signature() {
    let c = pki_cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (psk_s, psk_v) = psk_pair(&tmp.path().join("k"));
    for (signer, verifier) in [(&c.a.0, &c.b.1), (&psk_s, &psk_v)] {
        let token = signer.sign(&syn_claims(signer, 1)).unwrap();
        // Raise privileges by label, move to another connection, extend the expiry:
        // each edit on its own must break the signature.
        let edits: [&dyn Fn(&str) -> String; 3] = [
            &|j| j.replace("\"tier\":\"backend\"", "\"tier\":\"admin\""),
            &|j| j.replace("\"c\":1,", "\"c\":2,"),
            &|j| {
                j.replace(
                    &format!("\"exp\":{}", now() + TOKEN_TTL_SECS),
                    "\"exp\":9999999999",
                )
            },
        ];
        for edit in edits {
            let forged = tamper_claims(&token, edit);
            let e = verifier
                .verify(&forged, &Expect::syn(1), now())
                .unwrap_err();
            assert!(matches!(e, TokenError::BadSignature), "{e}");
        }
        // A changed signature as well.
        let (cred, jws, json) = token_parts(&token);
        let (head, sig) = jws.split_once("..").unwrap();
        let sig = match sig.strip_prefix('A') {
            Some(rest) => format!("B{rest}"),
            None => format!("A{}", &sig[1..]),
        };
        let flipped = format!("{cred}{head}..{sig}~{json}");
        assert_eq!(
            err_code(verifier.verify(flipped.as_bytes(), &Expect::syn(1), now())),
            "bad_signature"
        );
        // The server's address and port in a SYN-ACK are inside the signature too.
        let ack = signer.sign(&syn_ack_claims(signer, 1, 2)).unwrap();
        let expect = Expect::syn_ack(1, 2, [0x11; 16]);
        verifier.verify(&ack, &expect, now()).unwrap();
        for (from, to) in [
            ("\"d\":\"10.244.3.17:8080\"", "\"d\":\"10.244.3.17:80\""),
            ("\"d\":\"10.244.3.17:8080\"", "\"d\":\"10.96.0.10:8080\""),
        ] {
            let forged = tamper_claims(&ack, |j| j.replace(from, to));
            assert_eq!(
                err_code(verifier.verify(&forged, &expect, now())),
                "bad_signature"
            );
        }
    }
}

#[test]
fn tampered_credential_is_bad_credential() {
    let c = pki_cluster();
    let token = c.b.0.sign(&syn_claims(&c.b.0, 1)).unwrap();
    let s = String::from_utf8(token).unwrap();
    let (cred, jwt) = s.split_once('~').unwrap();
    let parts: Vec<&str> = cred.split('.').collect();
    assert_eq!(parts.len(), 3, "the credential is a compact JWT");
    let json = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let forged_json = json.replace("\"node-b\"", "\"node-a\"");
    assert_ne!(forged_json, json);
    let forged = format!(
        "{}.{}.{}~{jwt}",
        parts[0],
        URL_SAFE_NO_PAD.encode(forged_json),
        parts[2]
    );
    let e =
        c.a.1
            .verify(forged.as_bytes(), &Expect::syn(1), now())
            .unwrap_err();
    assert!(matches!(e, TokenError::BadCredential(_)), "{e}");
}

#[test]
fn another_nodes_credential_with_own_key_fails() {
    // Node B signs, but presents node A's (valid, same CA) credential.
    let c = pki_cluster();
    let a_token = String::from_utf8(c.a.0.sign(&syn_claims(&c.a.0, 1)).unwrap()).unwrap();
    let b_token = String::from_utf8(c.b.0.sign(&syn_claims(&c.b.0, 1)).unwrap()).unwrap();
    let a_cred = a_token.split_once('~').unwrap().0;
    let b_jwt = b_token.split_once('~').unwrap().1;
    let swapped = format!("{a_cred}~{b_jwt}");
    let e =
        c.a.1
            .verify(swapped.as_bytes(), &Expect::syn(1), now())
            .unwrap_err();
    assert!(matches!(e, TokenError::BadSignature), "{e}");
}

#[test]
fn expired_and_not_yet_valid() {
    let c = pki_cluster();
    let token = c.a.0.sign(&syn_claims(&c.a.0, 1)).unwrap();
    let late = now() + TOKEN_TTL_SECS + CLOCK_SKEW_SECS + 1;
    assert!(matches!(
        c.b.1.verify(&token, &Expect::syn(1), late),
        Err(TokenError::Expired { .. })
    ));
    // Issued by a node whose clock runs ahead by more than the skew.
    let mut ahead = syn_claims(&c.a.0, 1);
    ahead.iat = now() + CLOCK_SKEW_SECS + 1;
    ahead.exp = ahead.iat + TOKEN_TTL_SECS;
    let t = c.a.0.sign(&ahead).unwrap();
    assert!(matches!(
        c.b.1.verify(&t, &Expect::syn(1), now()),
        Err(TokenError::NotYetValid { .. })
    ));
    // Within the skew on both sides: accepted.
    ahead.iat = now() + CLOCK_SKEW_SECS;
    ahead.exp = ahead.iat + TOKEN_TTL_SECS;
    let t = c.a.0.sign(&ahead).unwrap();
    c.b.1.verify(&t, &Expect::syn(1), now()).unwrap();
    c.b.1
        .verify(
            &token,
            &Expect::syn(1),
            now() + TOKEN_TTL_SECS + CLOCK_SKEW_SECS,
        )
        .unwrap();
}

#[test]
fn expired_node_credential_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let ca_dir = tmp.path().join("ca");
    keys::init_pki(&ca_dir, "node-a").unwrap();
    let old = tmp.path().join("old");
    let opts = Options {
        valid_from: Some(trireme_token::now_unix() - 1000),
        validity_secs: 100,
        ..Options::default()
    };
    keys::issue_node_with(&ca_dir, "node-old", &old, &opts).unwrap();
    let e = load_keys(&old).unwrap_err().to_string();
    assert!(e.contains("node.crt") && e.contains("expired"), "{e}");
}

#[test]
fn lifted_from_another_connection_is_wrong_binding() {
    let c = pki_cluster();
    let token = c.a.0.sign(&syn_claims(&c.a.0, 1000)).unwrap();
    assert_eq!(
        err_code(c.b.1.verify(&token, &Expect::syn(1001), now())),
        "wrong_binding"
    );
    let ack = c.b.0.sign(&syn_ack_claims(&c.b.0, 1000, 2000)).unwrap();
    for expect in [
        Expect::syn_ack(1000, 2001, [0x11; 16]),
        Expect::syn_ack(1000, 2000, [0x12; 16]),
        Expect::syn_ack(999, 2000, [0x11; 16]),
    ] {
        assert_eq!(
            err_code(c.a.1.verify(&ack, &expect, now())),
            "wrong_binding"
        );
    }
}

#[test]
fn wrong_kind() {
    let c = pki_cluster();
    let ack = c.b.0.sign(&syn_ack_claims(&c.b.0, 1000, 2000)).unwrap();
    let e = c.a.1.verify(&ack, &Expect::syn(1000), now()).unwrap_err();
    assert!(
        matches!(
            e,
            TokenError::WrongKind {
                expected: TokenKind::Syn,
                got: TokenKind::SynAck
            }
        ),
        "{e}"
    );
}

#[test]
fn garbage_is_malformed() {
    let c = pki_cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (_, psk_v) = psk_pair(&tmp.path().join("k"));
    let long = vec![b'a'; 5000];
    let inputs: Vec<&[u8]> = vec![
        b"hello world",
        b"\x00\x01\x02\xff\xfe",
        b"!!!!",
        "äöü".as_bytes(),
        b"a.b.c.d",
        b"x~y~z",
        b"abc.def.ghi",
        &long,
    ];
    for v in [&c.a.1, &psk_v] {
        for input in &inputs {
            assert_eq!(
                err_code(v.verify(input, &Expect::syn(1), now())),
                "malformed",
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}

#[test]
fn every_prefix_is_truncated() {
    let c = pki_cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (psk_s, psk_v) = psk_pair(&tmp.path().join("k"));
    for (signer, verifier) in [(&c.a.0, &c.b.1), (&psk_s, &psk_v)] {
        let token = signer.sign(&syn_claims(signer, 1)).unwrap();
        for n in 0..token.len() {
            assert_eq!(
                err_code(verifier.verify(&token[..n], &Expect::syn(1), now())),
                "truncated",
                "prefix of {n} of {} bytes",
                token.len()
            );
        }
        verifier.verify(&token, &Expect::syn(1), now()).unwrap();
    }
}

#[test]
fn verified_credentials_are_cached_per_node() {
    let c = pki_cluster();
    assert_eq!(c.b.1.cached_credentials(), 0);
    for isn in 0..5 {
        let t = c.a.0.sign(&syn_claims(&c.a.0, isn)).unwrap();
        c.b.1.verify(&t, &Expect::syn(isn), now()).unwrap();
    }
    assert_eq!(c.b.1.cached_credentials(), 1);
    let t = c.b.0.sign(&syn_claims(&c.b.0, 9)).unwrap();
    c.b.1.verify(&t, &Expect::syn(9), now()).unwrap();
    assert_eq!(c.b.1.cached_credentials(), 2);
    // A cached credential still expires with time.
    let far = now() + 10 * 365 * 24 * 3600;
    let mut late = syn_claims(&c.a.0, 3);
    late.iat = far;
    late.exp = far + 10;
    let t = c.a.0.sign(&late).unwrap();
    assert_eq!(
        err_code(c.b.1.verify(&t, &Expect::syn(3), far)),
        "bad_credential"
    );
}

#[test]
fn signer_keeps_identities_apart() {
    let c = pki_cluster();
    let mut other = realistic_identity();
    other.labels.insert("tier".into(), "frontend".into());
    for round in 0..3u32 {
        let mut claims = syn_claims(&c.a.0, round);
        if round % 2 == 1 {
            claims.identity = other.clone();
        }
        let got =
            c.b.1
                .verify(&c.a.0.sign(&claims).unwrap(), &Expect::syn(round), now())
                .unwrap();
        assert_eq!(got.identity, claims.identity);
    }
}

#[test]
fn signer_rejects_bad_claims() {
    let c = pki_cluster();
    let mut claims = syn_claims(&c.a.0, 1);
    claims.node = "node-b".into();
    assert!(matches!(
        c.a.0.sign(&claims),
        Err(TokenError::InvalidClaims(_))
    ));
    let mut claims = syn_claims(&c.a.0, 1);
    claims.ack_commit = None;
    assert!(matches!(
        c.a.0.sign(&claims),
        Err(TokenError::InvalidClaims(_))
    ));
    let mut claims = syn_claims(&c.a.0, 1);
    claims.exp = claims.iat;
    assert!(matches!(
        c.a.0.sign(&claims),
        Err(TokenError::InvalidClaims(_))
    ));
    // A SYN-ACK must say where the server is (its own address and port) ...
    for edit in [
        |c: &mut Claims| c.server_port = None,
        |c: &mut Claims| c.server_addr = None,
    ] {
        let mut claims = syn_ack_claims(&c.a.0, 1, 2);
        edit(&mut claims);
        assert!(matches!(
            c.a.0.sign(&claims),
            Err(TokenError::InvalidClaims(_))
        ));
    }
    // ... and a SYN must not.
    let mut claims = syn_claims(&c.a.0, 1);
    claims.server_port = Some(80);
    claims.server_addr = Some("10.0.0.1".parse().unwrap());
    assert!(matches!(
        c.a.0.sign(&claims),
        Err(TokenError::InvalidClaims(_))
    ));
}

#[test]
fn proof_binds_to_the_syn_token_commitment() {
    // The flow the enforcers run: commitment in the SYN token, proof on the ACK.
    let c = pki_cluster();
    let secret = proof::new_secret();
    let mut claims = syn_claims(&c.a.0, 1000);
    claims.ack_commit = Some(proof::commit(&secret));
    let got =
        c.b.1
            .verify(&c.a.0.sign(&claims).unwrap(), &Expect::syn(1000), now())
            .unwrap();
    let ns = [0x44; 16];
    let p = proof::make(&secret, &ns, 1000, 2000);
    proof::check(&got.ack_commit.unwrap(), &p, &ns, 1000, 2000).unwrap();
    let other = proof::make(&proof::new_secret(), &ns, 1000, 2000);
    assert!(matches!(
        proof::check(&got.ack_commit.unwrap(), &other, &ns, 1000, 2000),
        Err(TokenError::ProofMismatch)
    ));
}

// ---- key files ----------------------------------------------------------------------

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn key_files_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let written = keys::init_pki(&a, "node-a").unwrap();
    assert_eq!(written.len(), 4);
    assert_eq!(mode(&a), 0o700);
    for f in ["ca.key", "ca.crt", "node.key", "node.crt"] {
        assert_eq!(mode(&a.join(f)), 0o600, "{f}");
    }
    let b = tmp.path().join("nested/b");
    keys::issue_node(&a, "node-b", &b).unwrap();
    assert!(!b.join("ca.key").exists());
    assert_eq!(
        std::fs::read(a.join("ca.crt")).unwrap(),
        std::fs::read(b.join("ca.crt")).unwrap()
    );
    let p = tmp.path().join("p");
    keys::init_psk(&p).unwrap();
    assert_eq!(mode(&p.join("psk.key")), 0o600);
    assert_eq!(mode(&p), 0o700);
}

#[test]
fn refuses_to_overwrite_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    keys::init_pki(&a, "node-a").unwrap();
    let before = std::fs::read(a.join("node.key")).unwrap();
    let e = keys::init_pki(&a, "node-a").unwrap_err().to_string();
    assert!(e.contains("already exists") && e.contains("--force"), "{e}");
    assert_eq!(std::fs::read(a.join("node.key")).unwrap(), before);
    let forced = Options {
        force: true,
        ..Options::default()
    };
    keys::init_pki_with(&a, "node-a", &forced).unwrap();
    assert_ne!(std::fs::read(a.join("node.key")).unwrap(), before);
    load_keys(&a).unwrap();
    // Mixing trust modes in one directory is refused even with --force.
    let e = keys::init_psk_with(&a, &forced).unwrap_err().to_string();
    assert!(e.contains("other trust mode"), "{e}");
    assert!(!a.join("psk.key").exists());
}

#[test]
fn bad_node_names_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in ["", "Node-A", "-a", "a_b", "a b", &"x".repeat(254)] {
        let d = tmp.path().join("n");
        assert!(keys::init_pki(&d, bad).is_err(), "{bad:?}");
        assert!(!d.exists(), "{bad:?} created the directory");
    }
}

#[test]
fn load_keys_gives_actionable_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let err = |d: &Path| load_keys(d).unwrap_err().to_string();

    let e = err(&tmp.path().join("missing"));
    assert!(e.contains("triremectl keys init"), "{e}");

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(err(&empty).contains("holds no keys"));

    let a = tmp.path().join("a");
    keys::init_pki(&a, "node-a").unwrap();
    std::fs::set_permissions(a.join("node.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = err(&a);
    assert!(e.contains("node.key") && e.contains("chmod 600"), "{e}");
    std::fs::set_permissions(a.join("node.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    load_keys(&a).unwrap();

    std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert!(err(&a).contains("chmod 700"));
    std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o700)).unwrap();

    // node.key of another node: does not match node.crt.
    let b = tmp.path().join("b");
    keys::issue_node(&a, "node-b", &b).unwrap();
    std::fs::copy(b.join("node.key"), a.join("node.key")).unwrap();
    let e = err(&a);
    assert!(
        e.contains("node.key") && e.contains("does not match"),
        "{e}"
    );

    // ca.crt of another CA: node.crt not signed by it.
    let other = tmp.path().join("other");
    keys::init_pki(&other, "node-x").unwrap();
    std::fs::copy(other.join("ca.crt"), b.join("ca.crt")).unwrap();
    let e = err(&b);
    assert!(e.contains("node.crt") && e.contains("untrusted"), "{e}");

    // Missing node.crt.
    std::fs::remove_file(other.join("node.crt")).unwrap();
    let e = err(&other);
    assert!(e.contains("node.crt") && e.contains("missing"), "{e}");

    // Both trust modes in one directory.
    let p = tmp.path().join("p");
    keys::init_psk(&p).unwrap();
    std::fs::copy(b.join("node.key"), p.join("node.key")).unwrap();
    assert!(err(&p).contains("both"));

    // A truncated PSK file.
    let q = tmp.path().join("q");
    keys::init_psk(&q).unwrap();
    let text = std::fs::read_to_string(q.join("psk.key")).unwrap();
    std::fs::write(q.join("psk.key"), &text[..20]).unwrap();
    assert!(err(&q).contains("psk.key"));

    // issue-node without a CA key.
    let e = keys::issue_node(&b, "node-c", &tmp.path().join("c"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("ca.key") && e.contains("missing"), "{e}");
    assert!(!tmp.path().join("c").exists());
}

#[test]
fn no_single_byte_change_verifies() {
    // Every byte of a token is covered: credential, header, signature, claims.
    let c = pki_cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (psk_s, psk_v) = psk_pair(&tmp.path().join("k"));
    for (signer, verifier) in [(&c.a.0, &c.b.1), (&psk_s, &psk_v)] {
        let token = signer.sign(&syn_claims(signer, 1)).unwrap();
        verifier.verify(&token, &Expect::syn(1), now()).unwrap();
        for i in 0..token.len() {
            for replacement in [b'A', b'z', b'.', b'~', b'"', 0x00, 0xff] {
                if token[i] == replacement {
                    continue;
                }
                let mut t = token.clone();
                t[i] = replacement;
                let r = verifier.verify(&t, &Expect::syn(1), now());
                assert!(
                    r.is_err(),
                    "byte {i} ({:?} -> {:?}) still verifies",
                    token[i] as char,
                    replacement as char
                );
            }
        }
    }
}

#[test]
fn ca_rotation_trusts_every_ca_in_ca_crt() {
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("old");
    let new = tmp.path().join("new");
    keys::init_pki(&old, "node-a").unwrap();
    keys::init_pki(&new, "node-b").unwrap();
    let (old_signer, _) = load_keys(&old).unwrap();
    let (new_signer, new_only) = load_keys(&new).unwrap();
    let t_old = old_signer.sign(&syn_claims(&old_signer, 1)).unwrap();
    assert_eq!(
        err_code(new_only.verify(&t_old, &Expect::syn(1), now())),
        "untrusted_issuer"
    );
    // Append the old CA's public key to the new CA's ca.crt: both are trusted.
    let both = format!(
        "{}{}",
        std::fs::read_to_string(new.join("ca.crt")).unwrap(),
        std::fs::read_to_string(old.join("ca.crt")).unwrap()
    );
    std::fs::write(new.join("ca.crt"), &both).unwrap();
    let (_, rotating) = load_keys(&new).unwrap();
    rotating.verify(&t_old, &Expect::syn(1), now()).unwrap();
    let t_new = new_signer.sign(&syn_claims(&new_signer, 1)).unwrap();
    rotating.verify(&t_new, &Expect::syn(1), now()).unwrap();
    let info = keys::describe(&new).unwrap();
    assert_eq!(info.trusted_cas.len(), 2);
    assert_eq!(info.node.as_deref(), Some("node-b"));
    // issue-node works with a multi-key ca.crt and copies all of it.
    let c = tmp.path().join("c");
    keys::issue_node(&new, "node-c", &c).unwrap();
    assert_eq!(std::fs::read_to_string(c.join("ca.crt")).unwrap(), both);
    let (c_signer, _) = load_keys(&c).unwrap();
    let t_c = c_signer.sign(&syn_claims(&c_signer, 1)).unwrap();
    rotating.verify(&t_c, &Expect::syn(1), now()).unwrap();
    // A ca.crt with a foreign block in it is an error naming the block.
    std::fs::write(
        new.join("ca.crt"),
        format!("{both}-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
    )
    .unwrap();
    let e = load_keys(&new).unwrap_err().to_string();
    assert!(e.contains("ca.crt") && e.contains("block 3"), "{e}");
}

#[test]
fn any_label_text_round_trips() {
    // The claims JSON follows the last framing separator: '~', dots, quotes and
    // non-ASCII in labels must not confuse the framing.
    let c = pki_cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (psk_s, psk_v) = psk_pair(&tmp.path().join("k"));
    for (signer, verifier) in [(&c.a.0, &c.b.1), (&psk_s, &psk_v)] {
        let mut claims = syn_claims(signer, 9);
        claims
            .identity
            .labels
            .insert("we~ird.key/x".into(), "a~b..c\"d\\e ü 🚀".into());
        claims
            .identity
            .namespace_labels
            .insert("tilde".into(), "~~".into());
        let got = verifier
            .verify(&signer.sign(&claims).unwrap(), &Expect::syn(9), now())
            .unwrap();
        assert_eq!(got, claims);
    }
}

#[test]
fn new_credentials_are_backdated_for_lagging_clocks() {
    let tmp = tempfile::tempdir().unwrap();
    let before = trireme_token::now_unix();
    keys::init_pki(&tmp.path().join("a"), "node-a").unwrap();
    let info = keys::describe(&tmp.path().join("a")).unwrap();
    let (from, until) = info.valid.unwrap();
    assert!(from + keys::CREDENTIAL_BACKDATE_SECS >= before);
    assert!(from + keys::CREDENTIAL_BACKDATE_SECS <= trireme_token::now_unix());
    assert_eq!(until - from, keys::DEFAULT_CREDENTIAL_VALIDITY_SECS);
    // A verifier whose clock is 4 minutes behind still accepts the node's tokens.
    let (s, v) = load_keys(&tmp.path().join("a")).unwrap();
    let behind = trireme_token::now_unix() - 240;
    let mut claims = syn_claims(&s, 1);
    claims.iat = behind;
    claims.exp = behind + TOKEN_TTL_SECS;
    v.verify(&s.sign(&claims).unwrap(), &Expect::syn(1), behind)
        .unwrap();
}
