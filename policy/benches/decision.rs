//! Decision cost with 1, 100 and 1,000 policies in the pod's namespace. Baseline in the
//! same run: an engine with no policy at all (the cheapest possible decision).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use trireme_policy::{Cluster, Engine, Identity, NamedPort, Peer, Protocol};

/// `n` policies in namespace `bench`: each selects `app=svc-<i>` and admits ingress from
/// `role=client-<i>` on port 8080 and egress to namespaces labelled `tier=<i>`.
fn policies_yaml(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!(
            "---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: p{i}, namespace: bench}}
spec:
  podSelector: {{matchLabels: {{app: svc-{i}}}}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {{matchLabels: {{role: client-{i}}}}}
    ports: [{{port: 8080}}]
  egress:
  - to:
    - namespaceSelector: {{matchLabels: {{tier: t{i}}}}}
"
        ));
    }
    s
}

fn identity(ns: &str, labels: &[(&str, &str)]) -> Identity {
    Identity {
        namespace: ns.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        namespace_labels: BTreeMap::from([(
            "kubernetes.io/metadata.name".to_string(),
            ns.to_string(),
        )]),
        ports: vec![NamedPort {
            name: "http".into(),
            port: 8080,
            protocol: Protocol::Tcp,
        }],
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("decision");
    let server = identity("bench", &[("app", "svc-0"), ("version", "v1")]);
    let client = identity("bench", &[("role", "client-0")]);
    let stranger = identity("bench", &[("role", "nobody")]);
    let ip = Some(IpAddr::V4(Ipv4Addr::new(10, 244, 0, 7)));
    let baseline = Engine::new(&[]);
    g.bench_function("baseline_no_policies", |b| {
        let peer = Peer::Pod {
            identity: &client,
            ip,
        };
        b.iter(|| black_box(baseline.ingress(black_box(&server), &peer, 8080, Protocol::Tcp)))
    });
    for n in [1usize, 100, 1000] {
        let cluster = Cluster::parse_str("bench", &policies_yaml(n)).expect("valid policies");
        let engine = cluster.engine();
        g.bench_with_input(BenchmarkId::new("ingress_allowed", n), &n, |b, _| {
            let peer = Peer::Pod {
                identity: &client,
                ip,
            };
            b.iter(|| {
                let d = engine.ingress(black_box(&server), &peer, 8080, Protocol::Tcp);
                assert!(d.allowed, "{d}");
                black_box(d)
            })
        });
        g.bench_with_input(BenchmarkId::new("ingress_denied", n), &n, |b, _| {
            let peer = Peer::Pod {
                identity: &stranger,
                ip,
            };
            b.iter(|| {
                let d = engine.ingress(black_box(&server), &peer, 8080, Protocol::Tcp);
                assert!(!d.allowed);
                black_box(d)
            })
        });
        g.bench_with_input(BenchmarkId::new("egress_unselected", n), &n, |b, _| {
            let peer = Peer::Pod {
                identity: &server,
                ip,
            };
            b.iter(|| black_box(engine.egress(black_box(&client), &peer, 8080, Protocol::Tcp)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
