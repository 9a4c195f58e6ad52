//! The engine indexes policies by namespace and by one required label; this checks on
//! many generated policies that the index never changes a result: selection against a
//! naive selector evaluation written here, and the union of all policies against the
//! decisions of one-policy engines.

use std::collections::BTreeMap;
use trireme_policy::{Cluster, Engine, Identity, Peer, Protocol, Reason};

/// Small deterministic generator (64-bit LCG), so failures reproduce.
struct Gen(u64);
impl Gen {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

const KEYS: [&str; 3] = ["app", "tier", "env"];
const VALS: [&str; 3] = ["a", "b", "c"];
const NSS: [&str; 2] = ["x", "y"];

#[derive(Debug, Clone)]
enum Expr {
    Eq(usize, usize),
    In(usize, Vec<usize>),
    NotIn(usize, Vec<usize>),
    Exists(usize),
    DoesNotExist(usize),
}

fn gen_selector(g: &mut Gen) -> Vec<Expr> {
    (0..g.next(3))
        .map(|_| {
            let k = g.next(3) as usize;
            match g.next(5) {
                0 | 1 => Expr::Eq(k, g.next(3) as usize),
                2 => Expr::In(k, vec![g.next(3) as usize, g.next(3) as usize]),
                3 => Expr::NotIn(k, vec![g.next(3) as usize]),
                _ => {
                    if g.next(2) == 0 {
                        Expr::Exists(k)
                    } else {
                        Expr::DoesNotExist(k)
                    }
                }
            }
        })
        .collect()
}

fn selector_yaml(sel: &[Expr]) -> String {
    let mut ml = Vec::new();
    let mut me = Vec::new();
    for e in sel {
        match e {
            Expr::Eq(k, v) => ml.push(format!("{}: {}", KEYS[*k], VALS[*v])),
            Expr::In(k, vs) | Expr::NotIn(k, vs) => {
                let op = if matches!(e, Expr::In(..)) {
                    "In"
                } else {
                    "NotIn"
                };
                let vs: Vec<&str> = vs.iter().map(|v| VALS[*v]).collect();
                me.push(format!(
                    "{{key: {}, operator: {op}, values: [{}]}}",
                    KEYS[*k],
                    vs.join(", ")
                ));
            }
            Expr::Exists(k) => me.push(format!("{{key: {}, operator: Exists}}", KEYS[*k])),
            Expr::DoesNotExist(k) => {
                me.push(format!("{{key: {}, operator: DoesNotExist}}", KEYS[*k]))
            }
        }
    }
    // matchLabels with a repeated key: keep the last, as a YAML map would be invalid.
    let mut dedup = BTreeMap::new();
    for kv in ml {
        let (k, v) = kv.split_once(": ").unwrap();
        dedup.insert(k.to_string(), v.to_string());
    }
    let ml: Vec<String> = dedup.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!(
        "{{matchLabels: {{{}}}, matchExpressions: [{}]}}",
        ml.join(", "),
        me.join(", ")
    )
}

fn naive_matches(sel: &[Expr], labels: &BTreeMap<String, String>) -> bool {
    // matchLabels keeps the last value per key (see selector_yaml).
    let mut eq: BTreeMap<usize, usize> = BTreeMap::new();
    for e in sel {
        if let Expr::Eq(k, v) = e {
            eq.insert(*k, *v);
        }
    }
    let get = |k: usize| labels.get(KEYS[k]).map(String::as_str);
    eq.iter().all(|(k, v)| get(*k) == Some(VALS[*v]))
        && sel.iter().all(|e| match e {
            Expr::Eq(..) => true,
            Expr::In(k, vs) => get(*k).is_some_and(|l| vs.iter().any(|v| VALS[*v] == l)),
            Expr::NotIn(k, vs) => get(*k).is_none_or(|l| vs.iter().all(|v| VALS[*v] != l)),
            Expr::Exists(k) => get(*k).is_some(),
            Expr::DoesNotExist(k) => get(*k).is_none(),
        })
}

#[test]
fn index_and_union_agree_with_naive_evaluation() {
    let mut g = Gen(0x7472_6972_656d_6521);
    let mut docs = Vec::new();
    let mut selectors = Vec::new();
    for i in 0..400 {
        let ns = NSS[g.next(2) as usize];
        let sel = gen_selector(&mut g);
        // Peers narrow enough that many connections stay denied.
        let mut peer_sel = vec![
            Expr::Eq(0, g.next(3) as usize),
            Expr::Eq(1 + g.next(2) as usize, g.next(3) as usize),
        ];
        peer_sel.extend(gen_selector(&mut g));
        let port = 80 + g.next(6);
        docs.push(format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p{i}, namespace: {ns}}}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n  ingress:\n  - from: [{{namespaceSelector: {{}}, podSelector: {}}}]\n    ports: [{{port: {port}}}]\n",
            selector_yaml(&sel),
            selector_yaml(&peer_sel),
        ));
        selectors.push((ns, sel));
    }
    let singles: Vec<Engine> = docs
        .iter()
        .map(|d| Cluster::parse_str("p.yaml", d).unwrap().engine())
        .collect();
    let all = Cluster::parse_str("all.yaml", &docs.join("---\n"))
        .unwrap()
        .engine();
    assert_eq!(all.len(), 400);

    let mut identities = Vec::new();
    for _ in 0..60 {
        let ns = NSS[g.next(2) as usize];
        let mut labels = BTreeMap::new();
        for k in KEYS {
            if g.next(3) > 0 {
                labels.insert(k.to_string(), VALS[g.next(3) as usize].to_string());
            }
        }
        identities.push(Identity {
            namespace: ns.into(),
            labels,
            namespace_labels: BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                ns.to_string(),
            )]),
            ports: vec![],
        });
    }
    let mut allowed_count = 0;
    let mut denied_count = 0;
    for pod in &identities {
        for peer in identities.iter().step_by(3) {
            for port in [80u16, 81] {
                let p = Peer::Pod {
                    identity: peer,
                    ip: None,
                };
                let mut any_selected = false;
                let mut any_allowed = false;
                for (i, e) in singles.iter().enumerate() {
                    let d = e.ingress(pod, &p, port, Protocol::Tcp);
                    let (ns, sel) = &selectors[i];
                    let selected = *ns == pod.namespace && naive_matches(sel, &pod.labels);
                    let engine_selected = !matches!(d.reason, Reason::NotSelected { .. });
                    assert_eq!(selected, engine_selected, "policy p{i} selecting {pod:?}");
                    any_selected |= selected;
                    any_allowed |= selected && d.allowed;
                }
                let d = all.ingress(pod, &p, port, Protocol::Tcp);
                assert_eq!(
                    d.allowed,
                    !any_selected || any_allowed,
                    "{pod:?} <- {peer:?}:{port}: {d}"
                );
                assert_eq!(
                    matches!(d.reason, Reason::NotSelected { .. }),
                    !any_selected
                );
                if d.allowed {
                    allowed_count += 1
                } else {
                    denied_count += 1
                }
            }
        }
    }
    // The generated set exercises both outcomes.
    assert!(
        allowed_count > 50 && denied_count > 50,
        "{allowed_count} / {denied_count}"
    );
}
