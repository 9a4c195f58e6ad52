//! The examples can't rot: every policy file under examples/policies loads with
//! trireme-policy, the example policies decide what their README says, every conflist in
//! examples/conflists is a valid chain ending in trireme, and the Kubernetes manifests carry
//! valid policies and plugin config (the same policies as examples/policies/tiers).

use serde::Deserialize;
use serde_json::Value;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use trireme_conformance::NetworkConfigList;
use trireme_policy::{Cluster, Engine, NetworkPolicy, Peer, Protocol};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn files_with(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut all = Vec::new();
    walk(dir, &mut all);
    all.into_iter()
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.contains(&e))
        })
        .collect()
}

#[test]
fn every_policy_file_loads() {
    let files = files_with(&examples().join("policies"), &["yaml", "yml", "json"]);
    assert!(files.len() >= 8, "too few example files: {files:?}");
    for f in &files {
        Cluster::load_paths(&[f]).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
}

/// One example directory (policy + cluster) and its engine.
struct Example {
    cluster: Cluster,
    engine: Engine,
}

impl Example {
    fn load(name: &str) -> Example {
        let dir = examples().join("policies").join(name);
        let cluster = Cluster::load_paths(&[&dir]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!cluster.policies.is_empty(), "{name}: no policies");
        assert!(!cluster.pods.is_empty(), "{name}: no pods");
        let engine = cluster.engine();
        Example { cluster, engine }
    }

    fn allowed(&self, from: &str, to: &str, port: u16) -> bool {
        let pod = |s: &str| {
            let (ns, name) = s.split_once('/').unwrap();
            self.cluster
                .pod(ns, name)
                .unwrap_or_else(|| panic!("no pod {s}"))
        };
        self.cluster
            .check(&self.engine, pod(from), pod(to), port, Protocol::Tcp)
            .allowed()
    }

    fn ingress_from_ip(&self, ip: &str, to: &str, port: u16) -> bool {
        let (ns, name) = to.split_once('/').unwrap();
        let id = self.cluster.identity_of(ns, name).unwrap();
        let ip: IpAddr = ip.parse().unwrap();
        self.engine
            .ingress(&id, &Peer::External { ip }, port, Protocol::Tcp)
            .allowed
    }

    fn egress_to_ip(&self, from: &str, ip: &str, port: u16) -> bool {
        let (ns, name) = from.split_once('/').unwrap();
        let id = self.cluster.identity_of(ns, name).unwrap();
        let ip: IpAddr = ip.parse().unwrap();
        self.engine
            .egress(&id, &Peer::External { ip }, port, Protocol::Tcp)
            .allowed
    }
}

#[test]
fn default_deny_denies_everything_in_prod() {
    let e = Example::load("default-deny");
    assert!(!e.allowed("prod/web", "prod/api", 80));
    assert!(!e.allowed("prod/api", "prod/web", 80));
    assert!(!e.ingress_from_ip("192.0.2.1", "prod/web", 80));
    assert!(!e.egress_to_ip("prod/web", "192.0.2.1", 443));
}

#[test]
fn tiers_allow_only_the_chain_frontend_backend_db() {
    let e = Example::load("tiers");
    assert!(e.allowed("shop/frontend", "shop/backend", 8080));
    assert!(!e.allowed("shop/frontend", "shop/backend", 80));
    assert!(e.allowed("shop/backend", "shop/db", 5432));
    assert!(!e.allowed("shop/frontend", "shop/db", 5432));
    assert!(
        !e.allowed("shop/db", "shop/backend", 8080),
        "db opens no connections"
    );
    assert!(e.allowed("shop/backend", "shop/frontend", 80));
    assert!(e.ingress_from_ip("192.0.2.1", "shop/frontend", 80));
    assert!(!e.ingress_from_ip("192.0.2.1", "shop/backend", 8080));
}

#[test]
fn namespace_isolation_keeps_teams_apart_but_lets_monitoring_scrape() {
    let e = Example::load("namespace-isolation");
    assert!(e.allowed("team-a/a1", "team-a/a2", 8080));
    assert!(!e.allowed("team-b/b1", "team-a/a1", 8080));
    assert!(!e.allowed("team-a/a1", "team-b/b1", 8080));
    assert!(e.allowed("monitoring/prometheus", "team-a/a1", 9090));
    assert!(e.allowed("monitoring/prometheus", "team-b/b1", 9090));
    assert!(!e.allowed("monitoring/prometheus", "team-a/a1", 8080));
}

#[test]
fn external_ipblock_matches_addresses_with_except() {
    let e = Example::load("external-ipblock");
    assert!(e.ingress_from_ip("198.51.100.7", "payments/gateway", 8443));
    assert!(!e.ingress_from_ip("192.0.2.7", "payments/gateway", 8443));
    assert!(!e.ingress_from_ip("198.51.100.7", "payments/gateway", 443));
    assert!(e.egress_to_ip("payments/gateway", "203.0.113.10", 443));
    assert!(
        !e.egress_to_ip("payments/gateway", "203.0.113.200", 443),
        "except"
    );
    assert!(!e.egress_to_ip("payments/gateway", "192.0.2.1", 443));
    assert!(e.allowed("payments/gateway", "payments/ledger", 8080));
    assert!(!e.allowed("payments/ledger", "payments/gateway", 8443));
}

#[test]
fn conflists_chain_trireme_after_bridge_flannel_and_ptp() {
    let files = files_with(&examples().join("conflists"), &["conflist", "json"]);
    let mut mains = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let list =
            NetworkConfigList::from_value(&v).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(
            ["0.4.0", "1.0.0", "1.1.0"].contains(&list.cni_version.as_str()),
            "{}: cniVersion {}",
            f.display(),
            list.cni_version
        );
        let last = list.plugins.last().unwrap();
        assert_eq!(
            last["type"],
            "trireme",
            "{}: trireme must be chained last",
            f.display()
        );
        assert_eq!(
            last["capabilities"]["io.kubernetes.cri.pod-annotations"],
            true,
            "{}: pod annotations carry the labels",
            f.display()
        );
        mains.push(list.plugins[0]["type"].as_str().unwrap().to_string());
    }
    mains.sort();
    assert_eq!(mains, ["bridge", "flannel", "ptp"]);
}

fn yaml_docs(path: &Path) -> Vec<serde_yaml_ng::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| {
            serde_yaml_ng::Value::deserialize(d)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect()
}

fn find<'a>(docs: &'a [serde_yaml_ng::Value], kind: &str, name: &str) -> &'a serde_yaml_ng::Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn sorted(mut p: Vec<NetworkPolicy>) -> Vec<NetworkPolicy> {
    p.sort_by_key(|p| p.metadata.name.clone());
    p
}

#[test]
fn kubernetes_manifests_carry_valid_policies_and_plugin_config() {
    let docs = yaml_docs(&examples().join("kubernetes/trireme.yaml"));

    let policies = find(&docs, "ConfigMap", "trireme-policies");
    let data = policies["data"].as_mapping().expect("data");
    let sources: Vec<(String, String)> = data
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_string(),
                v.as_str().unwrap().to_string(),
            )
        })
        .collect();
    let cluster = Cluster::parse_sources(sources.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .unwrap_or_else(|e| panic!("ConfigMap trireme-policies: {e}"));
    assert!(cluster.namespaces.contains_key("shop"));
    let tiers = Cluster::load_paths(&[examples().join("policies/tiers/policy.yaml")]).unwrap();
    assert_eq!(
        sorted(cluster.policies),
        sorted(tiers.policies),
        "the ConfigMap must hold examples/policies/tiers/policy.yaml"
    );

    let config = find(&docs, "ConfigMap", "trireme-config");
    let plugin: Value =
        serde_json::from_str(config["data"]["trireme-plugin.json"].as_str().unwrap()).unwrap();
    assert_eq!(plugin["type"], "trireme");
    assert_eq!(plugin["policyDir"], "/etc/trireme/policies");
    assert_eq!(plugin["keyDir"], "/etc/trireme/keys");

    let ds = find(&docs, "DaemonSet", "trireme-node");
    let spec = &ds["spec"]["template"]["spec"];
    let host_paths: Vec<&str> = spec["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    for p in ["/opt/cni/bin", "/etc/cni/net.d", "/etc/trireme"] {
        assert!(
            host_paths.contains(&p),
            "DaemonSet must mount {p}: {host_paths:?}"
        );
    }
    let init = &spec["initContainers"][0];
    assert_eq!(init["command"][1], "install");
    assert!(examples().join("kubernetes/install.sh").is_file());
}
