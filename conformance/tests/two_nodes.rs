//! Issue 6 "Two nodes": two node namespaces, each with its own bridge (the bridge plugin
//! runs inside the node namespace), its own pods and enforcers, its own key pair signed by
//! one CA, and its own policy directory holding the same policy files; the nodes are routed
//! to each other over a veth pair. Cross-node connections are allowed and denied by labels,
//! with nothing shared between the nodes but the CA certificate and the policy files.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use trireme_conformance::cluster::{serve_ports, Cluster, ClusterSpec, PodSpec, Trust};
use trireme_conformance::matrix::{probe_pairs, ProbeJob};
use trireme_conformance::{unique_name, Netns};

const POLICIES: &str = r#"
# x/a (node A) admits only pods labelled role=client in namespaces labelled ns=y.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-y-clients, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
      podSelector: {matchLabels: {role: client}}
---
# y/c (node B) admits only pod=b of namespace x.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: c-from-x-b, namespace: y}
spec:
  podSelector: {matchLabels: {pod: c}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: x}}
      podSelector: {matchLabels: {pod: b}}
"#;

fn pod(ns: &str, name: &str, extra: &[(&str, &str)]) -> PodSpec {
    let mut labels = BTreeMap::from([("pod".to_string(), name.to_string())]);
    for (k, v) in extra {
        labels.insert(k.to_string(), v.to_string());
    }
    PodSpec {
        namespace: ns.into(),
        name: name.into(),
        labels,
        ports: serve_ports(&[80]),
    }
}

fn node_spec(node: &Netns, name: &str, trust: Trust, pods: Vec<PodSpec>) -> ClusterSpec {
    let mut s = ClusterSpec::netpol();
    s.namespaces = ["x", "y"]
        .iter()
        .map(|n| {
            (
                n.to_string(),
                BTreeMap::from([("ns".into(), n.to_string())]),
            )
        })
        .collect();
    s.pods = pods;
    s.services = false;
    s.k8s_node = false;
    s.node = Some(node.path().to_path_buf());
    s.node_name = name.into();
    s.trust = trust;
    s
}

fn sh(ns: &Netns, cmd: &str) {
    ns.exec(&["sh", "-c", cmd])
        .unwrap_or_else(|e| panic!("{} in {}: {e}", cmd, ns.name()));
}

#[test]
fn cross_node_connections_follow_labels_with_only_ca_and_policies_shared() {
    trireme_conformance::require_root();
    let node_a = Netns::new("tna").expect("node A netns");
    let node_b = Netns::new("tnb").expect("node B netns");
    for n in [&node_a, &node_b] {
        sh(n, "echo 1 > /proc/sys/net/ipv4/ip_forward");
    }
    // The link between the nodes (deleted with the namespaces).
    let (va, vb) = (unique_name("tva"), unique_name("tvb"));
    let ok = std::process::Command::new("ip")
        .args(["link", "add", &va, "type", "veth", "peer", "name", &vb])
        .status()
        .expect("ip link add")
        .success();
    assert!(ok, "create the veth pair between the nodes");
    for (v, n) in [(&va, &node_a), (&vb, &node_b)] {
        let ok = std::process::Command::new("ip")
            .args(["link", "set", v, "netns", n.name()])
            .status()
            .expect("ip link set netns")
            .success();
        assert!(ok, "move {v} into {}", n.name());
    }
    sh(
        &node_a,
        &format!("ip addr add 192.168.77.1/30 dev {va} && ip link set {va} up"),
    );
    sh(
        &node_b,
        &format!("ip addr add 192.168.77.2/30 dev {vb} && ip link set {vb} up"),
    );

    // Node A makes the CA; node B gets its own key and credential issued by it.
    let a = Cluster::new(node_spec(
        &node_a,
        "node-a",
        Trust::Pki,
        vec![pod("x", "a", &[]), pod("x", "b", &[])],
    ))
    .expect("node A's pods");
    let b_keys = tempfile::tempdir().expect("temp dir");
    trireme_token::keys::issue_node(&a.key_dir(), "node-b", &b_keys.path().join("keys"))
        .expect("issue node B's key with the CA");
    let b = Cluster::new(node_spec(
        &node_b,
        "node-b",
        Trust::Dir(b_keys.path().join("keys")),
        vec![pod("y", "c", &[]), pod("y", "d", &[("role", "client")])],
    ))
    .expect("node B's pods");
    // Shared: the CA certificate only; each node has its own key, B has no CA key.
    let read = |p: std::path::PathBuf| std::fs::read(&p).unwrap_or_default();
    assert_eq!(
        read(a.key_dir().join("ca.crt")),
        read(b.key_dir().join("ca.crt"))
    );
    assert_ne!(
        read(a.key_dir().join("node.key")),
        read(b.key_dir().join("node.key"))
    );
    assert!(
        !b.key_dir().join("ca.key").exists(),
        "node B holds no CA key"
    );
    assert_ne!(a.control_dir(), b.control_dir());

    // Routes between the nodes' pod subnets.
    sh(
        &node_a,
        &format!("ip route add {}/24 via 192.168.77.2", b.subnet),
    );
    sh(
        &node_b,
        &format!("ip route add {}/24 via 192.168.77.1", a.subnet),
    );

    // The same policy files on both nodes.
    a.apply_policies(POLICIES).expect("policies on node A");
    b.apply_policies(POLICIES).expect("policies on node B");

    let pods: Vec<(&Cluster, &str)> = vec![(&a, "x/a"), (&a, "x/b"), (&b, "y/c"), (&b, "y/d")];
    // Expected, from the policies above (written out, not computed).
    let expected: BTreeMap<(&str, &str), bool> = BTreeMap::from([
        (("x/a", "x/b"), true),
        (("x/a", "y/c"), false),
        (("x/a", "y/d"), true),
        (("x/b", "x/a"), false),
        (("x/b", "y/c"), true),
        (("x/b", "y/d"), true),
        (("y/c", "x/a"), false),
        (("y/c", "x/b"), true),
        (("y/c", "y/d"), true),
        (("y/d", "x/a"), true),
        (("y/d", "x/b"), true),
        (("y/d", "y/c"), false),
    ]);
    let mut jobs = Vec::new();
    for (fc, from) in &pods {
        for (tc, to) in &pods {
            if from == to {
                continue;
            }
            jobs.push(ProbeJob {
                from: from.to_string(),
                to: to.to_string(),
                netns: fc.pod(from).netns.path().to_path_buf(),
                addr: SocketAddr::new(IpAddr::V4(tc.pod(to).ip), 80),
            });
        }
    }
    let mut observed = probe_pairs(&jobs, Duration::from_millis(1500));
    // A blocked pair expected connected is probed again once (a lost SYN); never the reverse.
    let retry: Vec<ProbeJob> = jobs
        .iter()
        .filter(|j| {
            expected[&(j.from.as_str(), j.to.as_str())]
                && !observed[&(j.from.clone(), j.to.clone())]
        })
        .cloned()
        .collect();
    observed.extend(probe_pairs(&retry, Duration::from_millis(1500)));

    let keys: Vec<&str> = pods.iter().map(|(_, k)| *k).collect();
    let cells: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    let mismatches: Vec<String> = expected
        .iter()
        .filter(|((f, t), e)| observed[&(f.to_string(), t.to_string())] != **e)
        .map(|((f, t), _)| format!("{f} -> {t}"))
        .collect();
    let table = trireme_conformance::matrix::render(&cells, &cells, |f, t| {
        if f == t {
            return "-".into();
        }
        let o = observed[&(f.to_string(), t.to_string())];
        let e = expected[&(f, t)];
        format!(
            "{}{}",
            if o { "." } else { "X" },
            if o != e { "*" } else { "" }
        )
    });
    println!(
        "two nodes, port 80/TCP (node A: x/a, x/b; node B: y/c, y/d; * = not as expected):\n{table}"
    );
    assert!(
        mismatches.is_empty(),
        "cross-node reachability differs from the policies: {mismatches:?}"
    );
    // Both directions crossed the nodes and were decided by labels.
    assert!(observed[&("y/d".to_string(), "x/a".to_string())]);
    assert!(!observed[&("y/c".to_string(), "x/a".to_string())]);
    drop(b);
    drop(a);
}
