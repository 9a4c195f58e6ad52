//! Runs the built `triremectl keys ...` into temporary directories and uses the keys
//! it wrote with the real token library.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use trireme_policy::Identity;
use trireme_token::{load_keys, proof, Claims, Expect, Signer, TokenError};

fn triremectl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_triremectl"))
        .args(args)
        .output()
        .expect("run triremectl")
}

fn ok(args: &[&str]) -> String {
    let out = triremectl(args);
    assert!(
        out.status.success(),
        "triremectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = triremectl(args);
    assert!(!out.status.success(), "triremectl {args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn token(signer: &Signer) -> Vec<u8> {
    let mut id = Identity {
        namespace: "x".into(),
        ..Default::default()
    };
    id.labels.insert("pod".into(), "a".into());
    let now = trireme_token::now_unix();
    signer
        .sign(&Claims::syn(
            id,
            signer.node_name().unwrap().to_string(),
            [1; 16],
            77,
            proof::commit(&[2; 32]),
            now,
        ))
        .unwrap()
}

#[test]
fn init_and_issue_node_make_keys_that_trust_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let out = ok(&["keys", "init", "--dir", s(&a), "--node", "node-a"]);
    assert!(out.contains("ca.key") && out.contains("node.crt"), "{out}");
    ok(&[
        "keys",
        "issue-node",
        "--ca-dir",
        s(&a),
        "--node",
        "node-b",
        "--out",
        s(&b),
    ]);

    assert_eq!(mode(&a), 0o700);
    assert_eq!(mode(&b), 0o700);
    for f in ["ca.key", "ca.crt", "node.key", "node.crt"] {
        assert_eq!(mode(&a.join(f)), 0o600, "a/{f}");
    }
    for f in ["ca.crt", "node.key", "node.crt"] {
        assert_eq!(mode(&b.join(f)), 0o600, "b/{f}");
    }
    assert!(
        !b.join("ca.key").exists(),
        "issue-node must not copy ca.key"
    );

    let (a_signer, a_verifier) = load_keys(&a).unwrap();
    let (b_signer, b_verifier) = load_keys(&b).unwrap();
    assert_eq!(b_signer.node_name(), Some("node-b"));
    let now = trireme_token::now_unix();
    let claims = a_verifier
        .verify(&token(&b_signer), &Expect::syn(77), now)
        .unwrap();
    assert_eq!(claims.node, "node-b");
    b_verifier
        .verify(&token(&a_signer), &Expect::syn(77), now)
        .unwrap();

    // A node of a different CA: its tokens are rejected as an untrusted issuer.
    let c = tmp.path().join("c");
    ok(&["keys", "init", "--dir", s(&c), "--node", "node-b"]);
    let (c_signer, c_verifier) = load_keys(&c).unwrap();
    let e = a_verifier
        .verify(&token(&c_signer), &Expect::syn(77), now)
        .unwrap_err();
    assert!(matches!(e, TokenError::UntrustedIssuer(_)), "{e}");
    let e = c_verifier
        .verify(&token(&b_signer), &Expect::syn(77), now)
        .unwrap_err();
    assert!(matches!(e, TokenError::UntrustedIssuer(_)), "{e}");

    let shown = ok(&["keys", "show", "--dir", s(&b)]);
    assert!(shown.contains("pki") && shown.contains("node-b"), "{shown}");
}

#[test]
fn refuses_to_overwrite_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    ok(&["keys", "init", "--dir", s(&a), "--node", "node-a"]);
    let before = std::fs::read(a.join("ca.key")).unwrap();
    let e = fails(&["keys", "init", "--dir", s(&a), "--node", "node-a"]);
    assert!(e.contains("already exists") && e.contains("--force"), "{e}");
    assert_eq!(std::fs::read(a.join("ca.key")).unwrap(), before);
    ok(&[
        "keys",
        "init",
        "--dir",
        s(&a),
        "--node",
        "node-a",
        "--force",
    ]);
    assert_ne!(std::fs::read(a.join("ca.key")).unwrap(), before);

    let p = tmp.path().join("p");
    ok(&["keys", "psk", "--dir", s(&p)]);
    assert_eq!(mode(&p.join("psk.key")), 0o600);
    let psk = std::fs::read(p.join("psk.key")).unwrap();
    let e = fails(&["keys", "psk", "--dir", s(&p)]);
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(std::fs::read(p.join("psk.key")).unwrap(), psk);
    ok(&["keys", "psk", "--dir", s(&p), "--force"]);
    assert_ne!(std::fs::read(p.join("psk.key")).unwrap(), psk);
    let shown = ok(&["keys", "show", "--dir", s(&p)]);
    assert!(shown.contains("psk"), "{shown}");
}

#[test]
fn psk_keys_verify_only_with_the_same_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("p");
    let q = tmp.path().join("q");
    ok(&["keys", "psk", "--dir", s(&p)]);
    ok(&["keys", "psk", "--dir", s(&q)]);
    let (ps, pv) = load_keys(&p).unwrap();
    let (_, qv) = load_keys(&q).unwrap();
    let id = Identity {
        namespace: "x".into(),
        ..Default::default()
    };
    let now = trireme_token::now_unix();
    let t = ps
        .sign(&Claims::syn(
            id,
            "n".into(),
            [1; 16],
            5,
            proof::commit(&[2; 32]),
            now,
        ))
        .unwrap();
    pv.verify(&t, &Expect::syn(5), now).unwrap();
    assert!(matches!(
        qv.verify(&t, &Expect::syn(5), now),
        Err(TokenError::UnknownKey(_))
    ));
}

#[test]
fn bad_input_is_a_clear_error_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    let e = fails(&["keys", "init", "--dir", s(&d), "--node", "Not_A_Name"]);
    assert!(e.contains("node name"), "{e}");
    assert!(!d.exists());
    let e = fails(&["keys", "init", "--dir", s(&d), "--node", "n", "--days", "0"]);
    assert!(e.contains("--days"), "{e}");
    assert!(!d.exists());
    // issue-node from a directory without a CA key.
    let e = fails(&[
        "keys",
        "issue-node",
        "--ca-dir",
        s(&tmp.path().join("none")),
        "--node",
        "n",
        "--out",
        s(&d),
    ]);
    assert!(e.contains("ca.key"), "{e}");
    assert!(!d.exists());
    // Loose permissions are reported with the fix.
    let a = tmp.path().join("a");
    ok(&["keys", "init", "--dir", s(&a), "--node", "node-a"]);
    std::fs::set_permissions(a.join("node.key"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = fails(&["keys", "show", "--dir", s(&a)]);
    assert!(e.contains("node.key") && e.contains("chmod 600"), "{e}");
    // Missing required arguments: clap's usage error.
    let e = fails(&["keys", "issue-node", "--node", "x"]);
    assert!(e.contains("--ca-dir"), "{e}");
}
