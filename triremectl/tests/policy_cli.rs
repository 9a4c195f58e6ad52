//! Runs the built `triremectl policy matrix --json` / `policy check` on the conformance
//! fixtures and compares with the hand-written expected tables next to each case.

use std::path::{Path, PathBuf};
use std::process::Command;
use trireme_policy::TruthTable;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/policies/conformance")
}

fn triremectl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_triremectl"))
        .args(args)
        .output()
        .expect("run triremectl")
}

fn cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected.txt").is_file())
        .collect();
    v.sort();
    v
}

fn check_case(case: &Path) -> usize {
    let cluster = fixtures().join("cluster.yaml");
    let policy = case.join("policy.yaml");
    let exp_path = case.join("expected.txt");
    let tables = TruthTable::parse_all(
        &exp_path.display().to_string(),
        &std::fs::read_to_string(&exp_path).unwrap(),
    )
    .unwrap();
    assert!(!tables.is_empty(), "{}: no expected table", case.display());
    for t in &tables {
        let port = t.port.to_string();
        let proto = t.protocol.to_string();
        let out = triremectl(&[
            "policy",
            "matrix",
            "-f",
            cluster.to_str().unwrap(),
            "-f",
            policy.to_str().unwrap(),
            "--port",
            &port,
            "--protocol",
            &proto,
            "--json",
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: exit {:?}: {}",
            case.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let prefix = format!("{{\"port\":{port},\"protocol\":\"{proto}\",\"allowed\":{{");
        assert!(stdout.starts_with(&prefix), "{}: {stdout}", case.display());
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let allowed = v["allowed"].as_object().unwrap();
        assert_eq!(allowed.len(), t.pods.len(), "{}: rows", case.display());
        let mut mismatches = Vec::new();
        for from in &t.pods {
            let row = allowed[from].as_object().unwrap();
            assert_eq!(row.len(), t.pods.len(), "{}: row {from}", case.display());
            for to in &t.pods {
                let got = row[to].as_bool().unwrap();
                if Some(got) != t.get(from, to) {
                    mismatches.push(format!("{from} -> {to}: got {got}"));
                }
            }
        }
        assert!(
            mismatches.is_empty(),
            "{} port {port}/{proto}: expected\n{t}\nmismatches: {mismatches:?}",
            case.display()
        );
    }
    tables.len()
}

#[test]
fn matrix_json_matches_every_expected_table() {
    let cases = cases();
    assert_eq!(cases.len(), 13, "conformance cases on disk");
    let tables: usize = cases.iter().map(|c| check_case(c)).sum();
    assert!(tables >= 13);
}

#[test]
fn matrix_table_is_the_upstream_layout() {
    let d = fixtures();
    let out = triremectl(&[
        "policy",
        "matrix",
        "-f",
        d.join("cluster.yaml").to_str().unwrap(),
        "-f",
        d.join("default-deny-ingress").to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10, "{text}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["-", "x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c"]
    );
    let row: Vec<&str> = lines[4].split_whitespace().collect();
    assert_eq!(row, ["y/a", "X", "X", "X", ".", ".", ".", ".", ".", "."]);
}

#[test]
fn check_prints_the_verdict_and_exits_zero_for_both() {
    let d = fixtures();
    let args = |from: &'static str| {
        vec![
            "policy".to_string(),
            "check".into(),
            "-f".into(),
            d.join("cluster.yaml").display().to_string(),
            "-f".into(),
            d.join("allow-from-pod-b").display().to_string(),
            "--from".into(),
            from.into(),
            "--to".into(),
            "x/a".into(),
            "--port".into(),
            "serve-80-tcp".into(),
        ]
    };
    let run = |from| {
        let a = args(from);
        triremectl(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let ok = run("x/b");
    assert!(ok.status.success());
    let s = String::from_utf8_lossy(&ok.stdout);
    assert!(
        s.starts_with("allowed\n") && s.contains("allowed by x/allow-b ingress rule 0"),
        "{s}"
    );
    let no = run("y/b");
    assert!(no.status.success());
    let s = String::from_utf8_lossy(&no.stdout);
    assert!(
        s.starts_with("denied\n") && s.contains("isolated by x/allow-b"),
        "{s}"
    );
}

#[test]
fn bad_input_is_an_error_with_exit_status_1() {
    let dir = std::env::temp_dir().join(format!("triremectl-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _c = Cleanup(dir.clone());
    std::fs::write(
        dir.join("bad.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: 90, endPort: 80}]}]\n",
    )
    .unwrap();
    let out = triremectl(&["policy", "matrix", "-f", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml") && err.contains("spec.ingress[0].ports[0].endPort"),
        "{err}"
    );
}
