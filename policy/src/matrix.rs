//! Reachability truth tables (pods x pods), in the format the upstream NetworkPolicy e2e
//! suite prints: a header row of destinations, one row per source, `.` allowed, `X` denied.

use crate::cluster::{Cluster, PodInfo};
use crate::engine::{Decision, Engine, Peer, Reason};
use crate::error::PolicyError;
use crate::identity::Protocol;
use std::collections::BTreeMap;
use std::fmt;

/// Both halves of one connection's verdict: the source's egress and the destination's
/// ingress. The connection is allowed only if both are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairDecision {
    pub egress: Decision,
    pub ingress: Decision,
}

impl PairDecision {
    pub fn allowed(&self) -> bool {
        self.egress.allowed && self.ingress.allowed
    }
}

impl Cluster {
    /// The verdict for a connection from pod `from` to pod `to` on `port`/`proto`.
    pub fn check(
        &self,
        engine: &Engine,
        from: &PodInfo,
        to: &PodInfo,
        port: u16,
        proto: Protocol,
    ) -> PairDecision {
        if from.namespace == to.namespace && from.name == to.name {
            let loopback = Decision {
                allowed: true,
                reason: Reason::Loopback,
            };
            return PairDecision {
                egress: loopback.clone(),
                ingress: loopback,
            };
        }
        let src = self.identity_of_pod(from);
        let dst = self.identity_of_pod(to);
        let egress = engine.egress(
            &src,
            &Peer::Pod {
                identity: &dst,
                ip: to.ip,
            },
            port,
            proto,
        );
        let ingress = engine.ingress(
            &dst,
            &Peer::Pod {
                identity: &src,
                ip: from.ip,
            },
            port,
            proto,
        );
        PairDecision { egress, ingress }
    }

    /// Every pod to every pod, pods sorted by `namespace/name`; self pairs are allowed
    /// (loopback, as upstream's truth tables).
    pub fn truth_table(&self, engine: &Engine, port: u16, proto: Protocol) -> TruthTable {
        let mut pods: Vec<&PodInfo> = self.pods.iter().collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let ids: Vec<_> = pods.iter().map(|p| self.identity_of_pod(p)).collect();
        let mut allowed = BTreeMap::new();
        for (i, from) in pods.iter().enumerate() {
            for (j, to) in pods.iter().enumerate() {
                if i == j {
                    // Loopback is never subject to NetworkPolicy.
                    allowed.insert((pod_key(from), pod_key(to)), true);
                    continue;
                }
                let e = engine.egress(
                    &ids[i],
                    &Peer::Pod {
                        identity: &ids[j],
                        ip: to.ip,
                    },
                    port,
                    proto,
                );
                let ok = e.allowed
                    && engine
                        .ingress(
                            &ids[j],
                            &Peer::Pod {
                                identity: &ids[i],
                                ip: from.ip,
                            },
                            port,
                            proto,
                        )
                        .allowed;
                allowed.insert((pod_key(from), pod_key(to)), ok);
            }
        }
        TruthTable {
            port,
            protocol: proto,
            pods: pods.iter().map(|p| pod_key(p)).collect(),
            allowed,
        }
    }
}

fn pod_key(p: &PodInfo) -> String {
    format!("{}/{}", p.namespace, p.name)
}

/// A reachability matrix over `pods` (`namespace/name`) for one port and protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruthTable {
    pub port: u16,
    pub protocol: Protocol,
    /// Row and column order.
    pub pods: Vec<String>,
    /// (source, destination) -> allowed.
    pub allowed: BTreeMap<(String, String), bool>,
}

fn protocol_name(p: Protocol) -> &'static str {
    p.as_str()
}

/// Parses `TCP`, `UDP` or `SCTP` (case-insensitive).
pub fn parse_protocol(s: &str) -> Option<Protocol> {
    match s.to_ascii_uppercase().as_str() {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

impl TruthTable {
    /// Whether `from` may reach `to` (`None` if either is not in the table).
    pub fn get(&self, from: &str, to: &str) -> Option<bool> {
        self.allowed
            .get(&(from.to_string(), to.to_string()))
            .copied()
    }

    /// The JSON form, keys in exactly this order:
    /// `{"port":80,"protocol":"TCP","allowed":{"x/a":{"x/a":false,"x/b":true,...},...}}`
    /// (source, then destination, in table order).
    pub fn to_json(&self) -> String {
        let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
        let rows: Vec<String> = self
            .pods
            .iter()
            .map(|from| {
                let cells: Vec<String> = self
                    .pods
                    .iter()
                    .filter_map(|to| self.get(from, to).map(|v| format!("{}:{v}", q(to))))
                    .collect();
                format!("{}:{{{}}}", q(from), cells.join(","))
            })
            .collect();
        format!(
            "{{\"port\":{},\"protocol\":{},\"allowed\":{{{}}}}}",
            self.port,
            q(protocol_name(self.protocol)),
            rows.join(",")
        )
    }

    /// A table of the pairs where `observed` differs from `self` (`X` = mismatch, `.` =
    /// same), or `None` if both agree on every pair.
    pub fn diff(&self, observed: &TruthTable) -> Option<String> {
        let mut mismatches = 0;
        let mut t = self.clone();
        for ((from, to), v) in &self.allowed {
            let same = observed.get(from, to) == Some(*v);
            if !same {
                mismatches += 1;
            }
            t.allowed.insert((from.clone(), to.clone()), same);
        }
        (mismatches > 0 || observed.pods != self.pods).then(|| {
            format!(
                "{mismatches} mismatches (X) between expected and observed, port {}/{}:\n{}",
                self.port,
                protocol_name(self.protocol),
                t.render()
            )
        })
    }

    fn render(&self) -> String {
        let w = self.pods.iter().map(String::len).max().unwrap_or(1).max(1) + 2;
        let mut s = format!("{:w$}", "-");
        for to in &self.pods {
            s.push_str(&format!("{to:w$}"));
        }
        let mut out = vec![s.trim_end().to_string()];
        for from in &self.pods {
            let mut line = format!("{from:w$}");
            for to in &self.pods {
                let mark = match self.get(from, to) {
                    Some(true) => ".",
                    Some(false) => "X",
                    None => "?",
                };
                line.push_str(&format!("{mark:w$}"));
            }
            out.push(line.trim_end().to_string());
        }
        out.join("\n")
    }

    /// Parses a file of one or more tables, each introduced by a `port N/PROTO` line and
    /// written as [`TruthTable`]'s `Display` prints it. `#` starts a comment line.
    pub fn parse_all(name: &str, text: &str) -> Result<Vec<TruthTable>, PolicyError> {
        let err = |line: usize, message: String| PolicyError::Syntax {
            file: name.into(),
            doc: line,
            message,
        };
        let mut tables: Vec<TruthTable> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let n = n + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let toks: Vec<&str> = line.split_whitespace().collect();
            if toks[0] == "port" {
                let spec = toks.get(1).copied().unwrap_or("");
                let (port, proto) = spec.split_once('/').unwrap_or((spec, "TCP"));
                let port = port
                    .parse::<u16>()
                    .map_err(|_| err(n, format!("bad port {spec:?}")))?;
                let protocol = parse_protocol(proto)
                    .ok_or_else(|| err(n, format!("bad protocol {proto:?}")))?;
                tables.push(TruthTable {
                    port,
                    protocol,
                    pods: Vec::new(),
                    allowed: BTreeMap::new(),
                });
                continue;
            }
            let Some(t) = tables.last_mut() else {
                return Err(err(n, "table before any `port N/PROTO` line".into()));
            };
            if toks[0] == "-" {
                t.pods = toks[1..].iter().map(|s| s.to_string()).collect();
                continue;
            }
            if toks.len() != t.pods.len() + 1 {
                return Err(err(
                    n,
                    format!(
                        "row has {} cells, header has {}",
                        toks.len() - 1,
                        t.pods.len()
                    ),
                ));
            }
            for (to, mark) in t.pods.iter().zip(&toks[1..]) {
                let v = match *mark {
                    "." => true,
                    "X" => false,
                    other => return Err(err(n, format!("bad cell {other:?} (expected . or X)"))),
                };
                t.allowed.insert((toks[0].to_string(), to.clone()), v);
            }
        }
        for t in &tables {
            if t.allowed.len() != t.pods.len() * t.pods.len() {
                return Err(err(0, format!("table for port {} is not square", t.port)));
            }
        }
        Ok(tables)
    }
}

impl fmt::Display for TruthTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}
