//! Loading manifests: accepted shapes, validation errors with file/object/field, and
//! all-or-nothing behaviour.

use std::fs;
use trireme_policy::{Cluster, PolicyError, Protocol, NAMESPACE_NAME_LABEL};

fn policy_with(spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\n  namespace: x\nspec:\n{spec}\n"
    )
}

/// Parses and expects an `Invalid` error on `field`; returns the message for more checks.
fn invalid(spec: &str, field: &str) -> String {
    let err = Cluster::parse_str("bad.yaml", &policy_with(spec)).unwrap_err();
    match &err {
        PolicyError::Invalid {
            file,
            kind,
            object,
            field: f,
            ..
        } => {
            assert_eq!(file, "bad.yaml");
            assert_eq!(kind, "NetworkPolicy");
            assert_eq!(object, "x/p");
            assert_eq!(f, field, "{err}");
        }
        other => panic!("expected Invalid on {field}, got {other}"),
    }
    err.to_string()
}

#[test]
fn validation_errors_name_file_object_and_field() {
    let m = invalid(
        "  podSelector: {}\n  ingress:\n  - ports:\n    - port: 80\n    - endPort: 90",
        "spec.ingress[0].ports[1].endPort",
    );
    assert!(
        m.starts_with("bad.yaml: NetworkPolicy x/p: spec.ingress[0].ports[1].endPort: "),
        "{m}"
    );
    assert!(m.contains("numeric port"), "{m}");
    invalid(
        "  podSelector: {}\n  ingress: [{ports: [{port: http, endPort: 90}]}]",
        "spec.ingress[0].ports[0].endPort",
    );
    let m = invalid(
        "  podSelector: {}\n  egress: [{ports: [{port: 90, endPort: 80}]}]",
        "spec.egress[0].ports[0].endPort",
    );
    assert!(m.contains("below port 90"), "{m}");
    invalid(
        "  podSelector: {}\n  ingress: [{ports: [{port: 70000}]}]",
        "spec.ingress[0].ports[0].port",
    );
    invalid(
        "  podSelector: {}\n  ingress: [{ports: [{port: Not_A_Name}]}]",
        "spec.ingress[0].ports[0].port",
    );
    let m = invalid(
        "  podSelector: {}\n  ingress: [{ports: [{protocol: ICMP}]}]",
        "spec.ingress[0].ports[0].protocol",
    );
    assert!(m.contains("ICMP"), "{m}");
    let m = invalid(
        "  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}]}]",
        "spec.ingress[0].from[0].ipBlock.except[0]",
    );
    assert!(m.contains("10.1.0.0/24"), "{m}");
    invalid(
        "  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.0.0/16]}}]}]",
        "spec.ingress[0].from[0].ipBlock.except[0]",
    );
    invalid(
        "  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]",
        "spec.ingress[0].from[0].ipBlock.cidr",
    );
    invalid(
        "  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 010.0.0.0/8}}]}]",
        "spec.ingress[0].from[0].ipBlock.cidr",
    );
    invalid(
        "  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [banana]}}]}]",
        "spec.ingress[0].from[0].ipBlock.except[0]",
    );
    invalid(
        "  podSelector: {}\n  egress: [{to: [{podSelector: {}}, {ipBlock: {cidr: 10.0.0.0/8}, namespaceSelector: {}}]}]",
        "spec.egress[0].to[1]",
    );
    invalid(
        "  podSelector: {}\n  ingress: [{from: [{}]}]",
        "spec.ingress[0].from[0]",
    );
    invalid(
        "  podSelector: {matchExpressions: [{key: a, operator: Equals, values: [b]}]}",
        "spec.podSelector.matchExpressions[0].operator",
    );
    invalid(
        "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: a, operator: In, values: []}]}}]}]",
        "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].values",
    );
    invalid(
        "  podSelector: {}\n  ingress: [{from: [{podSelector: {matchExpressions: [{key: a, operator: NotIn}]}}]}]",
        "spec.ingress[0].from[0].podSelector.matchExpressions[0].values",
    );
    invalid(
        "  podSelector: {matchExpressions: [{key: a, operator: Exists, values: [b]}]}",
        "spec.podSelector.matchExpressions[0].values",
    );
    invalid(
        "  podSelector: {matchLabels: {'bad key': b}}",
        "spec.podSelector.matchLabels[bad key]",
    );
    invalid(
        "  podSelector: {}\n  policyTypes: [Ingres]",
        "spec.policyTypes[0]",
    );
    invalid(
        "  podSelector: {}\n  policyTypes: [Egress, Egress]",
        "spec.policyTypes[1]",
    );
    // Unknown (misspelt, misindented) fields are errors, not silently dropped.
    invalid("  podSelector: {}\n  ingres: [{}]", "spec.ingres");
    invalid(
        "  podSelector: {}\n  ingress: [{from: [{podSelector: {}, nameSpaceSelector: {}}]}]",
        "spec.ingress[0].from[0].nameSpaceSelector",
    );
    let err = Cluster::parse_str(
        "f.yaml",
        &format!("{}ingress: [{{}}]\n", policy_with("  podSelector: {}")),
    )
    .unwrap_err();
    assert!(
        matches!(err, PolicyError::Invalid { ref field, .. } if field == "ingress"),
        "{err}"
    );
    // Type errors from decoding carry the path too.
    invalid(
        "  podSelector: {}\n  ingress: [{ports: {port: 80}}]",
        "spec.ingress[0].ports",
    );
}

#[test]
fn a_bad_file_never_half_applies() {
    let good = policy_with("  podSelector: {}");
    let bad = format!(
        "{}---\n{}",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n",
        policy_with("  podSelector: {}\n  ingress: [{ports: [{protocol: tcp}]}]")
    );
    let r = Cluster::parse_sources([("good.yaml", good.as_str()), ("bad.yaml", bad.as_str())]);
    assert!(
        matches!(r, Err(PolicyError::Invalid { ref file, .. }) if file == "bad.yaml"),
        "{r:?}"
    );
}

#[test]
fn documents_need_api_version_and_kind() {
    for (text, what) in [
        ("kind: Pod\nmetadata: {name: a}\n", "apiVersion"),
        ("apiVersion: v1\nmetadata: {name: a}\n", "kind"),
        ("- just\n- a list\n", "mapping"),
    ] {
        let err = Cluster::parse_str("f.yaml", text).unwrap_err();
        assert!(
            matches!(err, PolicyError::NotAnObject { doc: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains(what), "{err}");
    }
    let err = Cluster::parse_str("f.yaml", "a: [unclosed\n").unwrap_err();
    assert!(matches!(err, PolicyError::Syntax { .. }), "{err}");
}

#[test]
fn multi_document_yaml_lists_json_and_other_kinds() {
    let yaml = r#"
# kubectl get -o yaml prints a List
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata:
    name: shop
    labels: {team: blue, kubernetes.io/metadata.name: wrong}
- apiVersion: v1
  kind: Pod
  metadata: {name: web, namespace: shop, labels: {app: web}}
  spec:
    containers:
    - name: c
      image: nginx
      ports:
      - {name: http, containerPort: 8080}
      - {name: dns, containerPort: 53, protocol: UDP}
      - {containerPort: 9999}
  status: {podIP: 10.1.2.3}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: calico-one, namespace: shop}
---
apiVersion: v1
kind: PodList
items:
- metadata: {name: lonely, namespace: elsewhere}
---
"#;
    let json = r#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicyList","items":[
        {"metadata":{"name":"deny","namespace":"shop"},"spec":{"podSelector":{}}}]}"#;
    let c = Cluster::parse_sources([("a.yaml", yaml), ("b.json", json)]).unwrap();
    assert_eq!(c.policies.len(), 1);
    assert_eq!(c.pods.len(), 2);
    assert_eq!(c.ignored.len(), 2, "{:?}", c.ignored);
    assert!(c.ignored[0].contains("apps/v1 Deployment shop/web"));
    assert!(c.ignored[1].contains("projectcalico.org/v3 NetworkPolicy"));
    let web = c.pod("shop", "web").unwrap();
    assert_eq!(web.ip, Some("10.1.2.3".parse().unwrap()));
    assert_eq!(web.ports.len(), 2, "unnamed ports are left out");
    assert_eq!(web.ports[1].protocol, Protocol::Udp);
    let id = c.identity_of("shop", "web").unwrap();
    assert_eq!(id.labels["app"], "web");
    assert_eq!(id.namespace_labels["team"], "blue");
    assert_eq!(id.namespace_labels[NAMESPACE_NAME_LABEL], "shop");
    // A namespace only a pod refers to exists implicitly.
    let ns = c.namespace_labels("elsewhere").unwrap();
    assert_eq!(ns.len(), 1);
    assert_eq!(ns[NAMESPACE_NAME_LABEL], "elsewhere");
    assert!(c.identity_of("shop", "nope").is_none());
    assert!(c.namespace_labels("nope").is_none());
}

#[test]
fn objects_without_namespace_go_to_default_and_duplicates_are_errors() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n";
    let c = Cluster::parse_str("p.yaml", pod).unwrap();
    assert_eq!(c.pods[0].namespace, "default");
    let err = Cluster::parse_sources([("one.yaml", pod), ("two.yaml", pod)]).unwrap_err();
    assert!(matches!(err, PolicyError::Duplicate { .. }), "{err}");
    let m = err.to_string();
    assert!(
        m.contains("one.yaml") && m.contains("two.yaml") && m.contains("default/a"),
        "{m}"
    );
}

#[test]
fn invalid_pods_and_namespaces_are_errors() {
    for (text, field) in [
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nstatus: {podIP: 10.0.0.300}\n",
            "status.podIP",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {'-bad': x}}\n",
            "metadata.labels[-bad]",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, ports: [{name: p, containerPort: 0}]}]}\n",
            "spec.containers[0].ports[0].containerPort",
        ),
        (
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: Bad_NS}\n",
            "metadata.name",
        ),
    ] {
        let err = Cluster::parse_str("f.yaml", text).unwrap_err();
        assert!(matches!(err, PolicyError::Invalid { field: ref f, .. } if f == field), "{err}");
    }
}

#[test]
fn load_paths_reads_directories_recursively_in_sorted_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("b/nested")).unwrap();
    fs::create_dir_all(d.join("..2026_01_01")).unwrap();
    fs::write(
        d.join("b/nested/z.yml"),
        policy_with("  podSelector: {}").replace("name: p", "name: from-z"),
    )
    .unwrap();
    fs::write(
        d.join("a.json"),
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","namespace":"x"}}"#,
    )
    .unwrap();
    fs::write(
        d.join("b/m.yaml"),
        policy_with("  podSelector: {}").replace("name: p", "name: from-m"),
    )
    .unwrap();
    fs::write(d.join("notes.txt"), "not: yaml: at: all: [").unwrap();
    // A ConfigMap mount keeps real files in ..<timestamp>/ and links them: skipped.
    fs::write(
        d.join("..2026_01_01/m.yaml"),
        policy_with("  podSelector: {}").replace("name: p", "name: from-m"),
    )
    .unwrap();
    let c = Cluster::load_paths(&[d]).unwrap();
    let names: Vec<_> = c
        .policies
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["from-m", "from-z"]);
    assert_eq!(c.pods.len(), 1);

    // A file named explicitly is read whatever its extension.
    let extra = d.join("policy.txt");
    fs::write(
        &extra,
        policy_with("  podSelector: {}").replace("name: p", "name: extra"),
    )
    .unwrap();
    let c = Cluster::load_paths(&[extra.as_path(), d.join("a.json").as_path()]).unwrap();
    assert_eq!(c.policies.len(), 1);

    // One bad file anywhere: an error naming it, nothing loaded.
    fs::write(
        d.join("b/nested/bad.yaml"),
        "apiVersion: v1\nmetadata: {}\n",
    )
    .unwrap();
    let err = Cluster::load_paths(&[d]).unwrap_err();
    assert!(err.to_string().contains("bad.yaml"), "{err}");

    let err = Cluster::load_paths(&[d.join("missing")]).unwrap_err();
    assert!(matches!(err, PolicyError::Io { .. }), "{err}");
}

#[test]
fn a_mounted_configmap_directory_loads_each_object_once() {
    // Layout of a ConfigMap volume: real files in ..<timestamp>/, ..data links to it, and
    // each key is a link through ..data.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir(d.join("..2026_12_04_10_00_00.1")).unwrap();
    fs::write(
        d.join("..2026_12_04_10_00_00.1/deny.yaml"),
        policy_with("  podSelector: {}"),
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_12_04_10_00_00.1", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/deny.yaml", d.join("deny.yaml")).unwrap();
    let c = Cluster::load_paths(&[d]).unwrap();
    assert_eq!(c.policies.len(), 1);
}
