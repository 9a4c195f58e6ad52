//! The upstream NetworkPolicy e2e cases on the x/y/z × a/b/c cluster. Inputs and the
//! hand-written expected truth tables live in examples/policies/conformance/, shared with
//! the `triremectl policy matrix` test.

use std::path::PathBuf;
use trireme_policy::{Cluster, TruthTable};

const CASES: &[&str] = &[
    "default-deny-ingress",
    "default-deny-all",
    "allow-from-pod-b",
    "pod-or-namespace",
    "pod-and-namespace",
    "named-port-ingress",
    "named-port-egress",
    "egress-denied-at-client",
    "stacked-policies",
    "allow-all-precedence",
    "ipblock-except",
    "protocol-only",
    "endport-range",
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/policies/conformance")
}

fn run_case(case: &str) {
    let d = dir();
    let cluster = Cluster::load_paths(&[d.join("cluster.yaml"), d.join(case).join("policy.yaml")])
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    assert_eq!(cluster.pods.len(), 9, "{case}: fixture pods");
    assert!(!cluster.policies.is_empty(), "{case}: no policy loaded");
    let expected_path = d.join(case).join("expected.txt");
    let text = std::fs::read_to_string(&expected_path).unwrap();
    let tables = TruthTable::parse_all(&expected_path.display().to_string(), &text).unwrap();
    assert!(!tables.is_empty(), "{case}: expected.txt has no table");
    let engine = cluster.engine();
    for expected in tables {
        assert_eq!(expected.pods.len(), 9, "{case}: expected table size");
        let observed = cluster.truth_table(&engine, expected.port, expected.protocol);
        if let Some(diff) = expected.diff(&observed) {
            panic!("{case}:\nexpected:\n{expected}\nobserved:\n{observed}\n{diff}");
        }
    }
}

#[test]
fn every_case_directory_is_tested() {
    let mut on_disk: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = CASES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

macro_rules! cases {
    ($($f:ident => $name:literal),* $(,)?) => {$(
        #[test]
        fn $f() {
            run_case($name);
        }
    )*};
}

cases! {
    default_deny_ingress => "default-deny-ingress",
    default_deny_all => "default-deny-all",
    allow_from_pod_b => "allow-from-pod-b",
    pod_or_namespace => "pod-or-namespace",
    pod_and_namespace => "pod-and-namespace",
    named_port_ingress => "named-port-ingress",
    named_port_egress => "named-port-egress",
    egress_denied_at_client => "egress-denied-at-client",
    stacked_policies => "stacked-policies",
    allow_all_precedence => "allow-all-precedence",
    ipblock_except => "ipblock-except",
    protocol_only => "protocol-only",
    endport_range => "endport-range",
}

#[test]
fn no_policy_allows_everything() {
    let cluster = Cluster::load_paths(&[dir().join("cluster.yaml")]).unwrap();
    let t = cluster.truth_table(&cluster.engine(), 80, trireme_policy::Protocol::Tcp);
    assert_eq!(t.allowed.len(), 81);
    assert!(t.allowed.values().all(|v| *v));
}

#[test]
fn json_keys_are_in_the_documented_order() {
    let cluster = Cluster::load_paths(&[dir().join("cluster.yaml")]).unwrap();
    let t = cluster.truth_table(&cluster.engine(), 81, trireme_policy::Protocol::Udp);
    let json = t.to_json();
    assert!(
        json.starts_with(r#"{"port":81,"protocol":"UDP","allowed":{"x/a":{"x/a":true,"x/b":true,"#),
        "{json}"
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["allowed"]["z/c"].as_object().unwrap().len(), 9);
}
