//! Reachability matrices measured with real TCP probes, compared with the policy engine's
//! truth table and printed as the upstream NetworkPolicy e2e suite prints them: rows are
//! sources, columns destinations, `.` connected, `X` blocked.
//!
//! Pure parts (comparison, rendering) are unit-tested; [`probe_pairs`] is the thin I/O.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use trireme_policy::TruthTable;

/// One probe to run: from the namespace at `netns`, connect to `addr`.
#[derive(Debug, Clone)]
pub struct ProbeJob {
    pub from: String,
    pub to: String,
    pub netns: PathBuf,
    pub addr: SocketAddr,
}

/// Runs every job in parallel (one thread each, entering its namespace) and returns
/// `(from, to) -> connected`. A connection counts when it is established and echoes one
/// byte within `timeout`.
pub fn probe_pairs(jobs: &[ProbeJob], timeout: Duration) -> BTreeMap<(String, String), bool> {
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|j| {
                s.spawn(move || {
                    let ok = File::open(&j.netns).ok().is_some_and(|ns| {
                        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).is_ok()
                            && crate::probe::probe_here(j.addr, timeout)
                    });
                    ((j.from.clone(), j.to.clone()), ok)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("probe thread panicked"))
            .collect()
    })
}

/// Builds the observed table: probed pairs from `results`, self pairs (loopback, not probed,
/// as upstream) copied from `expected`.
pub fn observed_table(
    expected: &TruthTable,
    results: &BTreeMap<(String, String), bool>,
) -> TruthTable {
    let mut t = expected.clone();
    for ((from, to), v) in t.allowed.iter_mut() {
        if from != to {
            *v = results
                .get(&(from.clone(), to.clone()))
                .copied()
                .unwrap_or(false);
        }
    }
    t
}

/// Expected vs observed for one port (and one way of addressing the pods).
#[derive(Debug, Clone)]
pub struct Comparison {
    /// What this comparison is about, e.g. `port 80/TCP via pod IPs`.
    pub title: String,
    /// Destinations shown and compared (the pods serving the port), in table order.
    pub columns: Vec<String>,
    pub expected: TruthTable,
    pub observed: TruthTable,
}

impl Comparison {
    /// Pairs (source, destination) where observed differs from expected, self pairs excluded.
    pub fn mismatches(&self) -> Vec<(String, String)> {
        self.expected
            .allowed
            .iter()
            .filter(|((f, t), v)| {
                f != t && self.columns.contains(t) && self.observed.get(f, t) != Some(**v)
            })
            .map(|((f, t), _)| (f.clone(), t.clone()))
            .collect()
    }

    pub fn passed(&self) -> bool {
        self.mismatches().is_empty()
    }

    /// The observed table, then, when anything differs, the expected table and the
    /// comparison (`.` same, `X` different), as the upstream e2e suite prints them. Cells
    /// that differ carry a `*` in the observed table.
    pub fn render(&self) -> String {
        let mis = self.mismatches();
        let is_mis = |f: &str, t: &str| mis.iter().any(|(a, b)| a == f && b == t);
        let mut out = format!("{}\n", self.title);
        if mis.is_empty() {
            out.push_str("observed (= expected):\n");
            out.push_str(&render(&self.observed.pods, &self.columns, |f, t| {
                mark(self.observed.get(f, t)).to_string()
            }));
            return out;
        }
        out.push_str("expected:\n");
        out.push_str(&render(&self.expected.pods, &self.columns, |f, t| {
            mark(self.expected.get(f, t)).to_string()
        }));
        out.push_str("observed:\n");
        out.push_str(&render(&self.observed.pods, &self.columns, |f, t| {
            let m = mark(self.observed.get(f, t));
            if is_mis(f, t) {
                format!("{m}*")
            } else {
                m.to_string()
            }
        }));
        out.push_str(&format!(
            "comparison ({} mismatches, X = differs):\n",
            mis.len()
        ));
        out.push_str(&render(&self.expected.pods, &self.columns, |f, t| {
            if is_mis(f, t) { "X" } else { "." }.to_string()
        }));
        out
    }
}

fn mark(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => ".",
        Some(false) => "X",
        None => "?",
    }
}

/// A table with a `-` corner, one row per source, one column per destination.
pub fn render(rows: &[String], cols: &[String], cell: impl Fn(&str, &str) -> String) -> String {
    let w = rows
        .iter()
        .chain(cols)
        .map(String::len)
        .max()
        .unwrap_or(1)
        .max(2)
        + 2;
    let mut s = format!("{:w$}", "-");
    for to in cols {
        s.push_str(&format!("{to:w$}"));
    }
    let mut out = s.trim_end().to_string();
    out.push('\n');
    for from in rows {
        let mut line = format!("{from:w$}");
        for to in cols {
            line.push_str(&format!("{:w$}", cell(from, to)));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The address a destination is probed at.
pub fn socket(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trireme_policy::Protocol;

    fn table(cells: &[((&str, &str), bool)]) -> TruthTable {
        let pods = vec!["x/a".to_string(), "x/b".to_string()];
        TruthTable {
            port: 80,
            protocol: Protocol::Tcp,
            pods,
            allowed: cells
                .iter()
                .map(|((f, t), v)| ((f.to_string(), t.to_string()), *v))
                .collect(),
        }
    }

    #[test]
    fn observed_keeps_self_pairs_from_expected_and_missing_probes_are_blocked() {
        let exp = table(&[
            (("x/a", "x/a"), true),
            (("x/a", "x/b"), true),
            (("x/b", "x/a"), false),
            (("x/b", "x/b"), false),
        ]);
        let mut res = BTreeMap::new();
        res.insert(("x/a".to_string(), "x/b".to_string()), true);
        let obs = observed_table(&exp, &res);
        assert_eq!(obs.get("x/a", "x/a"), Some(true));
        assert_eq!(obs.get("x/b", "x/b"), Some(false));
        assert_eq!(obs.get("x/b", "x/a"), Some(false));
        let c = Comparison {
            columns: vec!["x/a".into(), "x/b".into()],
            title: "t".into(),
            expected: exp,
            observed: obs,
        };
        assert!(c.passed(), "{}", c.render());
    }

    #[test]
    fn mismatches_are_marked_in_observed_and_comparison() {
        let exp = table(&[
            (("x/a", "x/a"), true),
            (("x/a", "x/b"), false),
            (("x/b", "x/a"), true),
            (("x/b", "x/b"), true),
        ]);
        let mut obs = exp.clone();
        obs.allowed
            .insert(("x/a".to_string(), "x/b".to_string()), true);
        let c = Comparison {
            columns: vec!["x/a".into(), "x/b".into()],
            title: "port 80/TCP".into(),
            expected: exp,
            observed: obs,
        };
        assert_eq!(c.mismatches(), vec![("x/a".to_string(), "x/b".to_string())]);
        let r = c.render();
        assert!(r.contains("expected:\n-    x/a  x/b\nx/a  .    X\n"), "{r}");
        assert!(
            r.contains("observed:\n-    x/a  x/b\nx/a  .    .*\n"),
            "{r}"
        );
        assert!(r.contains("comparison (1 mismatches"), "{r}");
        assert!(r.ends_with("x/a  .    X\nx/b  .    .\n"), "{r}");
    }

    #[test]
    fn a_self_pair_difference_is_not_a_mismatch() {
        let exp = table(&[
            (("x/a", "x/a"), true),
            (("x/a", "x/b"), true),
            (("x/b", "x/a"), true),
            (("x/b", "x/b"), true),
        ]);
        let mut obs = exp.clone();
        obs.allowed
            .insert(("x/a".to_string(), "x/a".to_string()), false);
        let c = Comparison {
            columns: vec!["x/a".into(), "x/b".into()],
            title: String::new(),
            expected: exp,
            observed: obs,
        };
        assert!(c.passed());
    }
}
