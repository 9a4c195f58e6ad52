//! Sign and verify per trust mode, against the bare signature primitives of the
//! same backend measured in the same process (the floor any token format pays).

use std::collections::BTreeMap;
use std::hint::black_box;

use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use criterion::{criterion_group, criterion_main, Criterion};
use trireme_policy::{Identity, NamedPort, Protocol, NAMESPACE_NAME_LABEL};
use trireme_token::{keys, load_keys, proof, Claims, Expect, Signer};

fn identity() -> Identity {
    let labels: BTreeMap<String, String> = [
        ("app", "checkout"),
        ("app.kubernetes.io/name", "checkout"),
        ("app.kubernetes.io/instance", "checkout-prod"),
        ("pod-template-hash", "7d9f8c6b5d"),
        ("tier", "backend"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Identity {
        namespace: "webshop-prod".into(),
        labels,
        namespace_labels: [(NAMESPACE_NAME_LABEL.to_string(), "webshop-prod".to_string())]
            .into_iter()
            .collect(),
        ports: vec![NamedPort {
            name: "http".into(),
            port: 8080,
            protocol: Protocol::Tcp,
        }],
    }
}

fn claims(signer: &Signer, now: u64) -> Claims {
    Claims::syn(
        identity(),
        signer.node_name().unwrap_or("node-a").to_string(),
        [1; 16],
        4242,
        proof::commit(&[2; 32]),
        now,
    )
}

fn benches(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let p = tmp.path().join("p");
    keys::init_pki(&a, "node-a").expect("init_pki");
    keys::issue_node(&a, "node-b", &b).expect("issue_node");
    keys::init_psk(&p).expect("init_psk");
    let (pki_signer, _) = load_keys(&a).expect("load a");
    let (_, pki_verifier) = load_keys(&b).expect("load b");
    let (psk_signer, psk_verifier) = load_keys(&p).expect("load psk");
    let now = trireme_token::now_unix();
    let expect = Expect::syn(4242);

    // Baselines: the bare primitives over a message of the same size.
    let pki_claims = claims(&pki_signer, now);
    let pki_token = pki_signer.sign(&pki_claims).expect("sign");
    let msg = vec![b'x'; pki_token.len()];
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("keygen");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("pair");
    let public = UnparsedPublicKey::new(&ED25519, pair.public_key().as_ref().to_vec());
    let raw_sig = pair.sign(&msg);
    let hkey = hmac::Key::new(hmac::HMAC_SHA256, &[7; 32]);
    let raw_tag = hmac::sign(&hkey, &msg);

    let mut g = c.benchmark_group("pki");
    g.bench_function("baseline_ed25519_sign", |bch| {
        bch.iter(|| black_box(pair.sign(black_box(&msg))))
    });
    g.bench_function("sign", |bch| {
        bch.iter(|| black_box(pki_signer.sign(black_box(&pki_claims)).expect("sign")))
    });
    g.bench_function("baseline_ed25519_verify", |bch| {
        bch.iter(|| {
            public
                .verify(black_box(&msg), raw_sig.as_ref())
                .expect("verify")
        })
    });
    g.bench_function("verify_known_node", |bch| {
        bch.iter(|| {
            black_box(
                pki_verifier
                    .verify(black_box(&pki_token), &expect, now)
                    .expect("verify"),
            )
        })
    });
    g.bench_function("verify_first_contact", |bch| {
        bch.iter(|| {
            pki_verifier.clear_credential_cache();
            black_box(
                pki_verifier
                    .verify(black_box(&pki_token), &expect, now)
                    .expect("verify"),
            )
        })
    });
    g.finish();

    let psk_claims = claims(&psk_signer, now);
    let psk_token = psk_signer.sign(&psk_claims).expect("sign");
    let mut g = c.benchmark_group("psk");
    g.bench_function("baseline_hmac_sha256", |bch| {
        bch.iter(|| black_box(hmac::sign(&hkey, black_box(&msg))))
    });
    g.bench_function("sign", |bch| {
        bch.iter(|| black_box(psk_signer.sign(black_box(&psk_claims)).expect("sign")))
    });
    g.bench_function("baseline_hmac_sha256_verify", |bch| {
        bch.iter(|| hmac::verify(&hkey, black_box(&msg), raw_tag.as_ref()).expect("verify"))
    });
    g.bench_function("verify", |bch| {
        bch.iter(|| {
            black_box(
                psk_verifier
                    .verify(black_box(&psk_token), &expect, now)
                    .expect("verify"),
            )
        })
    });
    g.finish();

    let secret = proof::new_secret();
    let commitment = proof::commit(&secret);
    let ack_proof = proof::make(&secret, &[3; 16], 1, 2);
    let mut g = c.benchmark_group("proof");
    g.bench_function("make", |bch| {
        bch.iter(|| black_box(proof::make(black_box(&secret), &[3; 16], 1, 2)))
    });
    g.bench_function("check", |bch| {
        bch.iter(|| {
            proof::check(&commitment, black_box(&ack_proof), &[3; 16], 1, 2).expect("check")
        })
    });
    g.finish();
}

criterion_group!(token, benches);
criterion_main!(token);
