//! Every NetworkPolicy semantic rule the engine implements, one test each, through the
//! public API (policies written as the YAML users write).

use std::collections::BTreeMap;
use std::net::IpAddr;
use trireme_policy::{
    Cluster, Decision, Engine, Identity, NamedPort, Peer, PolicyError, Protocol, Reason,
};

const TCP: Protocol = Protocol::Tcp;

fn engine(yaml: &str) -> Engine {
    let c = Cluster::parse_str("test.yaml", yaml).unwrap_or_else(|e| panic!("{e}"));
    Engine::try_new(&c.policies).unwrap()
}

fn id(ns: &str, labels: &[(&str, &str)]) -> Identity {
    id_ns_labels(ns, labels, &[])
}

fn id_ns_labels(ns: &str, labels: &[(&str, &str)], ns_labels: &[(&str, &str)]) -> Identity {
    let mut nsl: BTreeMap<String, String> = ns_labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    nsl.insert("kubernetes.io/metadata.name".into(), ns.into());
    Identity {
        namespace: ns.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        namespace_labels: nsl,
        ports: vec![],
    }
}

fn with_ports(mut i: Identity, ports: &[(&str, u16, Protocol)]) -> Identity {
    i.ports = ports
        .iter()
        .map(|(n, p, proto)| NamedPort {
            name: n.to_string(),
            port: *p,
            protocol: *proto,
        })
        .collect();
    i
}

fn pod<'a>(identity: &'a Identity) -> Peer<'a> {
    Peer::Pod { identity, ip: None }
}

fn pod_at<'a>(identity: &'a Identity, ip: &str) -> Peer<'a> {
    Peer::Pod {
        identity,
        ip: Some(ip.parse().unwrap()),
    }
}

fn ext(ip: &str) -> Peer<'static> {
    Peer::External {
        ip: ip.parse::<IpAddr>().unwrap(),
    }
}

fn np(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}\n"
    )
}

#[test]
fn no_policy_selecting_the_pod_allows_with_a_reason() {
    // A policy in namespace x selecting app=web does not select app=db, nor pods of y.
    let e = engine(&np(
        "x",
        "web-only",
        "  podSelector: {matchLabels: {app: web}}\n  ingress: []",
    ));
    let db = id("x", &[("app", "db")]);
    let web_y = id("y", &[("app", "web")]);
    let client = id("x", &[]);
    for target in [&db, &web_y] {
        let d = e.ingress(target, &pod(&client), 80, TCP);
        assert!(d.allowed);
        assert_eq!(
            d.reason,
            Reason::NotSelected {
                direction: trireme_policy::Direction::Ingress
            }
        );
    }
    let d = e.ingress(&db, &pod(&client), 80, TCP);
    assert_eq!(
        d.reason.for_pod("x/db").to_string(),
        "no policy selects x/db for ingress (allowed by default)"
    );
    // Egress is not affected by an ingress-only policy.
    let web = id("x", &[("app", "web")]);
    assert!(e.egress(&web, &pod(&client), 80, TCP).allowed);
    assert!(!e.ingress(&web, &pod(&client), 80, TCP).allowed);
}

#[test]
fn reasons_name_the_allowing_rule_and_the_isolating_policies() {
    let e = engine(&format!(
        "{}{}",
        np("x", "deny-all", "  podSelector: {}\n  policyTypes: [Ingress]"),
        np(
            "x",
            "allow-b",
            "  podSelector: {}\n  ingress:\n  - from: [{podSelector: {matchLabels: {pod: z}}}]\n  - from: [{podSelector: {matchLabels: {pod: b}}}]"
        )
    ));
    let a = id("x", &[("pod", "a")]);
    let b = id("x", &[("pod", "b")]);
    let c = id("x", &[("pod", "c")]);
    let d = e.ingress(&a, &pod(&b), 80, TCP);
    assert!(d.allowed);
    assert_eq!(d.reason.to_string(), "allowed by x/allow-b ingress rule 1");
    let d = e.ingress(&a, &pod(&c), 80, TCP);
    assert!(!d.allowed);
    assert_eq!(
        d.reason.to_string(),
        "isolated by x/deny-all, x/allow-b; no rule matched"
    );
    assert_eq!(
        d.to_string(),
        "denied: isolated by x/deny-all, x/allow-b; no rule matched"
    );
}

#[test]
fn rules_of_all_selecting_policies_add_up() {
    let e = engine(&format!(
        "{}{}",
        np(
            "x",
            "p1",
            "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{podSelector: {matchLabels: {app: api}}}]}]"
        ),
        np(
            "x",
            "p2",
            "  podSelector: {matchExpressions: [{key: app, operator: Exists}]}\n  ingress: [{from: [{podSelector: {matchLabels: {app: admin}}}]}]"
        )
    ));
    let db = id("x", &[("app", "db")]);
    assert!(
        e.ingress(&db, &pod(&id("x", &[("app", "api")])), 5432, TCP)
            .allowed
    );
    assert!(
        e.ingress(&db, &pod(&id("x", &[("app", "admin")])), 5432, TCP)
            .allowed
    );
    assert!(
        !e.ingress(&db, &pod(&id("x", &[("app", "web")])), 5432, TCP)
            .allowed
    );
}

#[test]
fn pod_selector_alone_means_the_policy_namespace() {
    let e = engine(&np(
        "x",
        "p",
        "  podSelector: {}\n  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]",
    ));
    let a = id("x", &[("pod", "a")]);
    assert!(
        e.ingress(&a, &pod(&id("x", &[("pod", "b")])), 80, TCP)
            .allowed
    );
    assert!(
        !e.ingress(&a, &pod(&id("y", &[("pod", "b")])), 80, TCP)
            .allowed
    );
}

#[test]
fn namespace_selector_alone_means_every_pod_of_matching_namespaces() {
    let e = engine(&np(
        "x",
        "p",
        "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}}]}]",
    ));
    let a = id("x", &[]);
    let blue = id_ns_labels("y", &[("any", "thing")], &[("team", "blue")]);
    let red = id_ns_labels("z", &[], &[("team", "red")]);
    let same_ns_unlabelled = id("x", &[]);
    assert!(e.ingress(&a, &pod(&blue), 80, TCP).allowed);
    assert!(!e.ingress(&a, &pod(&red), 80, TCP).allowed);
    assert!(!e.ingress(&a, &pod(&same_ns_unlabelled), 80, TCP).allowed);
}

#[test]
fn both_selectors_in_one_peer_are_and_two_peers_are_or() {
    let and = engine(&np(
        "x",
        "and",
        "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}, podSelector: {matchLabels: {role: c}}}]}]",
    ));
    let or = engine(&np(
        "x",
        "or",
        "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}}, {podSelector: {matchLabels: {role: c}}}]}]",
    ));
    let a = id("x", &[]);
    let blue_c = id_ns_labels("y", &[("role", "c")], &[("team", "blue")]);
    let blue_d = id_ns_labels("y", &[("role", "d")], &[("team", "blue")]);
    let x_c = id("x", &[("role", "c")]);
    let red_c = id_ns_labels("z", &[("role", "c")], &[("team", "red")]);
    assert!(and.ingress(&a, &pod(&blue_c), 80, TCP).allowed);
    assert!(!and.ingress(&a, &pod(&blue_d), 80, TCP).allowed);
    assert!(!and.ingress(&a, &pod(&x_c), 80, TCP).allowed);
    assert!(!and.ingress(&a, &pod(&red_c), 80, TCP).allowed);
    assert!(or.ingress(&a, &pod(&blue_c), 80, TCP).allowed);
    assert!(or.ingress(&a, &pod(&blue_d), 80, TCP).allowed);
    assert!(or.ingress(&a, &pod(&x_c), 80, TCP).allowed);
    assert!(
        !or.ingress(&a, &pod(&red_c), 80, TCP).allowed,
        "pod selector of an OR peer is the policy's namespace only"
    );
}

#[test]
fn empty_selectors_select_everything_but_never_external_peers() {
    let e = engine(&np(
        "x",
        "p",
        "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {}}]}]",
    ));
    let a = id("x", &[("pod", "a")]);
    assert!(e.ingress(&a, &pod(&id("q", &[])), 80, TCP).allowed);
    assert!(!e.ingress(&a, &ext("10.0.0.1"), 80, TCP).allowed);
    let same_ns = engine(&np(
        "x",
        "p",
        "  podSelector: {}\n  ingress: [{from: [{podSelector: {}}]}]",
    ));
    assert!(same_ns.ingress(&a, &pod(&id("x", &[])), 80, TCP).allowed);
    assert!(!same_ns.ingress(&a, &pod(&id("y", &[])), 80, TCP).allowed);
    assert!(!same_ns.ingress(&a, &ext("10.0.0.1"), 80, TCP).allowed);
}

#[test]
fn rule_without_from_or_with_empty_from_admits_everyone_including_external() {
    for rules in ["[{}]", "[{from: []}]"] {
        let e = engine(&np(
            "x",
            "p",
            &format!("  podSelector: {{}}\n  ingress: {rules}"),
        ));
        let a = id("x", &[]);
        assert!(e.ingress(&a, &ext("192.0.2.1"), 80, TCP).allowed, "{rules}");
        assert!(
            e.ingress(&a, &pod(&id("y", &[])), 80, TCP).allowed,
            "{rules}"
        );
    }
}

#[test]
fn match_expressions_in_namespace_and_pod_selectors() {
    let e = engine(&np(
        "x",
        "p",
        "  podSelector: {matchExpressions: [{key: tier, operator: In, values: [db, cache]}]}\n  ingress:\n  - from:\n    - namespaceSelector: {matchExpressions: [{key: env, operator: NotIn, values: [dev]}]}\n      podSelector: {matchExpressions: [{key: trusted, operator: Exists}, {key: banned, operator: DoesNotExist}]}",
    ));
    let db = id("x", &[("tier", "db")]);
    let web = id("x", &[("tier", "web")]);
    let good = id_ns_labels("p", &[("trusted", "")], &[("env", "prod")]);
    let no_env = id("q", &[("trusted", "yes")]);
    let dev = id_ns_labels("d", &[("trusted", "")], &[("env", "dev")]);
    let banned = id_ns_labels("p", &[("trusted", ""), ("banned", "1")], &[("env", "prod")]);
    assert!(e.ingress(&db, &pod(&good), 80, TCP).allowed);
    assert!(
        e.ingress(&db, &pod(&no_env), 80, TCP).allowed,
        "NotIn matches a missing key"
    );
    assert!(!e.ingress(&db, &pod(&dev), 80, TCP).allowed);
    assert!(!e.ingress(&db, &pod(&banned), 80, TCP).allowed);
    assert!(
        e.ingress(&web, &pod(&dev), 80, TCP).allowed,
        "web is not selected"
    );
}

#[test]
fn namespace_name_label_is_always_there() {
    let e = engine(&np(
        "x",
        "p",
        "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]}]",
    ));
    let a = id("x", &[]);
    let mut from_y = id("y", &[]);
    from_y.namespace_labels.clear(); // a caller that forgot it: the engine still knows
    assert!(e.ingress(&a, &pod(&from_y), 80, TCP).allowed);
    assert!(!e.ingress(&a, &pod(&id("z", &[])), 80, TCP).allowed);
}

#[test]
fn ip_block_with_except_matches_pods_and_external_peers_by_address() {
    let e = engine(&np(
        "x",
        "p",
        "  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.5.0/24]}}]}]",
    ));
    let a = id("x", &[]);
    let other = id("y", &[]);
    assert!(e.ingress(&a, &ext("10.0.1.1"), 80, TCP).allowed);
    assert!(!e.ingress(&a, &ext("10.0.5.7"), 80, TCP).allowed);
    assert!(!e.ingress(&a, &ext("10.1.0.1"), 80, TCP).allowed);
    assert!(
        e.ingress(&a, &pod_at(&other, "10.0.1.1"), 80, TCP).allowed,
        "a pod with identity matches by its address"
    );
    assert!(!e.ingress(&a, &pod_at(&other, "10.0.5.1"), 80, TCP).allowed);
    assert!(
        !e.ingress(&a, &pod(&other), 80, TCP).allowed,
        "a pod without known address never matches an ipBlock"
    );
    assert!(
        e.ingress(&a, &ext("::ffff:10.0.1.1"), 80, TCP).allowed,
        "IPv4-mapped IPv6"
    );
    assert!(!e.ingress(&a, &ext("fd00::1"), 80, TCP).allowed);
}

#[test]
fn ipv6_ip_blocks() {
    let e = engine(&np(
        "x",
        "p",
        "  podSelector: {}\n  policyTypes: [Egress]\n  egress: [{to: [{ipBlock: {cidr: 'fd00::/64', except: ['fd00::bad/128']}}]}]",
    ));
    let a = id("x", &[]);
    assert!(e.egress(&a, &ext("fd00::1"), 443, TCP).allowed);
    assert!(!e.egress(&a, &ext("fd00::bad"), 443, TCP).allowed);
    assert!(!e.egress(&a, &ext("10.0.0.1"), 443, TCP).allowed);
}

#[test]
fn external_peers_are_matched_only_by_ip_blocks() {
    let e = engine(&np(
        "x",
        "p",
        "  podSelector: {}\n  ingress: [{from: [{podSelector: {}}, {namespaceSelector: {}}]}]",
    ));
    assert!(!e.ingress(&id("x", &[]), &ext("10.0.0.1"), 80, TCP).allowed);
}

#[test]
fn ports_default_to_tcp_and_udp_or_sctp_rules_never_admit_tcp() {
    let e = engine(&np(
        "x",
        "p",
        "  podSelector: {}\n  ingress:\n  - ports: [{port: 53}]\n  - ports: [{protocol: UDP, port: 80}, {protocol: SCTP, port: 80}]",
    ));
    let a = id("x", &[]);
    let c = id("x", &[]);
    assert!(e.ingress(&a, &pod(&c), 53, TCP).allowed);
    assert!(!e.ingress(&a, &pod(&c), 53, Protocol::Udp).allowed);
    assert!(!e.ingress(&a, &pod(&c), 80, TCP).allowed);
    assert!(e.ingress(&a, &pod(&c), 80, Protocol::Udp).allowed);
    assert!(e.ingress(&a, &pod(&c), 80, Protocol::Sctp).allowed);
}

#[test]
fn protocol_only_port_entry_means_all_ports_of_that_protocol() {
    let e = engine(&np(
        "x",
        "p",
        "  podSelector: {}\n  ingress: [{ports: [{protocol: TCP}]}]",
    ));
    let a = id("x", &[]);
    for port in [1, 80, 65535] {
        assert!(e.ingress(&a, &ext("1.2.3.4"), port, TCP).allowed);
        assert!(!e.ingress(&a, &ext("1.2.3.4"), port, Protocol::Udp).allowed);
    }
}

#[test]
fn end_port_ranges_are_inclusive() {
    let e = engine(&np(
        "x",
        "p",
        "  podSelector: {}\n  ingress: [{ports: [{port: 32000, endPort: 32768}]}]",
    ));
    let a = id("x", &[]);
    let c = ext("1.2.3.4");
    assert!(!e.ingress(&a, &c, 31999, TCP).allowed);
    assert!(e.ingress(&a, &c, 32000, TCP).allowed);
    assert!(e.ingress(&a, &c, 32768, TCP).allowed);
    assert!(!e.ingress(&a, &c, 32769, TCP).allowed);
}

#[test]
fn ingress_named_ports_resolve_on_the_selected_pod() {
    let e = engine(&np(
        "x",
        "p",
        "  podSelector: {}\n  ingress: [{ports: [{port: http}]}]",
    ));
    let s1 = with_ports(id("x", &[]), &[("http", 8080, TCP)]);
    let s2 = with_ports(id("x", &[]), &[("http", 9090, TCP)]);
    let s3 = with_ports(id("x", &[]), &[("http", 8080, Protocol::Udp)]);
    let no_ports = id("x", &[]);
    let c = id("y", &[]);
    assert!(e.ingress(&s1, &pod(&c), 8080, TCP).allowed);
    assert!(!e.ingress(&s1, &pod(&c), 9090, TCP).allowed);
    assert!(e.ingress(&s2, &pod(&c), 9090, TCP).allowed);
    assert!(!e.ingress(&s2, &pod(&c), 8080, TCP).allowed);
    assert!(
        !e.ingress(&s3, &pod(&c), 8080, TCP).allowed,
        "the named port's protocol must match"
    );
    assert!(!e.ingress(&no_ports, &pod(&c), 8080, TCP).allowed);
}

#[test]
fn egress_named_ports_resolve_on_the_destination_identity() {
    let e = engine(&np(
        "x",
        "p",
        "  podSelector: {}\n  policyTypes: [Egress]\n  egress: [{ports: [{port: metrics}]}]",
    ));
    // The client's own ports do not matter; each destination's do.
    let client = with_ports(id("x", &[]), &[("metrics", 1111, TCP)]);
    let d1 = with_ports(id("y", &[]), &[("metrics", 9100, TCP)]);
    let d2 = with_ports(id("y", &[]), &[("metrics", 9200, TCP)]);
    assert!(e.egress(&client, &pod(&d1), 9100, TCP).allowed);
    assert!(!e.egress(&client, &pod(&d1), 9200, TCP).allowed);
    assert!(e.egress(&client, &pod(&d2), 9200, TCP).allowed);
    assert!(!e.egress(&client, &pod(&d2), 1111, TCP).allowed);
    assert!(
        !e.egress(&client, &ext("10.0.0.1"), 9100, TCP).allowed,
        "no named ports without identity"
    );
}

#[test]
fn policy_types_default_from_the_presence_of_egress_rules() {
    let a = id("x", &[]);
    let c = ext("10.0.0.1");
    // No policyTypes, no egress: Ingress only.
    let e = engine(&np("x", "p", "  podSelector: {}"));
    assert!(!e.ingress(&a, &c, 80, TCP).allowed);
    assert!(e.egress(&a, &c, 80, TCP).allowed);
    // No policyTypes, empty egress list: still Ingress only (upstream: len(egress) != 0).
    let e = engine(&np("x", "p", "  podSelector: {}\n  egress: []"));
    assert!(e.egress(&a, &c, 80, TCP).allowed);
    // No policyTypes, egress rules: Ingress and Egress.
    let e = engine(&np(
        "x",
        "p",
        "  podSelector: {}\n  egress: [{ports: [{port: 53, protocol: UDP}]}]",
    ));
    assert!(!e.ingress(&a, &c, 80, TCP).allowed);
    assert!(!e.egress(&a, &c, 80, TCP).allowed);
    assert!(e.egress(&a, &c, 53, Protocol::Udp).allowed);
    // policyTypes [Egress] only: ingress untouched even with ingress rules present.
    let e = engine(&np(
        "x",
        "p",
        "  podSelector: {}\n  policyTypes: [Egress]\n  ingress: [{from: [{podSelector: {matchLabels: {never: x}}}]}]",
    ));
    assert!(e.ingress(&a, &c, 80, TCP).allowed);
    assert!(!e.egress(&a, &c, 80, TCP).allowed);
}

#[test]
fn a_connection_needs_source_egress_and_destination_ingress() {
    let yaml = format!(
        "{}{}{}{}",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {pod: a}}\nstatus: {podIP: 10.0.0.1}\n",
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: y, labels: {pod: b}}\nstatus: {podIP: 10.0.0.2}\n",
        np("x", "a-no-egress", "  podSelector: {}\n  policyTypes: [Egress]"),
        np("y", "b-allows-all", "  podSelector: {}\n  ingress: [{}]"),
    );
    let c = Cluster::parse_str("t.yaml", &yaml).unwrap();
    let e = c.engine();
    let (a, b) = (c.pod("x", "a").unwrap(), c.pod("y", "b").unwrap());
    let ab = c.check(&e, a, b, 80, TCP);
    assert!(ab.ingress.allowed && !ab.egress.allowed && !ab.allowed());
    let ba = c.check(&e, b, a, 80, TCP);
    assert!(ba.allowed(), "{ba:?}");
}

#[test]
fn many_policies_are_indexed_without_changing_results() {
    // 300 policies with matchLabels (indexed) and 30 with expressions only (scanned);
    // a pod carrying several labels is selected by exactly the matching ones.
    let mut yaml = String::new();
    for i in 0..300 {
        yaml.push_str(&np(
            "x",
            &format!("m{i}"),
            &format!("  podSelector: {{matchLabels: {{app: a{i}}}}}\n  ingress: [{{from: [{{podSelector: {{matchLabels: {{client: c{i}}}}}}}]}}]"),
        ));
    }
    for i in 0..30 {
        yaml.push_str(&np(
            "x",
            &format!("e{i}"),
            &format!("  podSelector: {{matchExpressions: [{{key: extra{i}, operator: Exists}}]}}\n  ingress: [{{from: [{{podSelector: {{matchLabels: {{client: e{i}}}}}}}]}}]"),
        ));
    }
    let e = engine(&yaml);
    assert_eq!(e.len(), 330);
    let server = id("x", &[("app", "a7"), ("extra3", ""), ("zzz", "1")]);
    for (client, ok) in [("c7", true), ("e3", true), ("c8", false), ("e4", false)] {
        let d: Decision = e.ingress(&server, &pod(&id("x", &[("client", client)])), 80, TCP);
        assert_eq!(d.allowed, ok, "{client}: {d}");
    }
    let d = e.ingress(&server, &pod(&id("x", &[])), 80, TCP);
    assert_eq!(
        d.reason.to_string(),
        "isolated by x/m7, x/e3; no rule matched"
    );
    let unselected = id("x", &[("app", "none")]);
    assert!(e.ingress(&unselected, &pod(&id("x", &[])), 80, TCP).allowed);
}

#[test]
fn engine_new_is_fail_closed_on_invalid_input() {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    // Built in code, bypassing the loader: an invalid peer matches nothing.
    let p: NetworkPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "bad", "namespace": "x"},
        "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "nonsense"}}]}]}
    }))
    .unwrap();
    let err = Engine::try_new(std::slice::from_ref(&p)).unwrap_err();
    assert!(
        matches!(err, PolicyError::Invalid { ref field, .. } if field == "spec.ingress[0].from[0].ipBlock.cidr"),
        "{err}"
    );
    let e = Engine::new(&[p]);
    assert!(!e.ingress(&id("x", &[]), &ext("10.0.0.1"), 80, TCP).allowed);
}

#[test]
fn engine_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Engine>();
    check::<std::sync::Arc<Engine>>();
}
