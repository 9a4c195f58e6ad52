//! Counters of one enforcer and their rendering in the Prometheus text format.
//!
//! The queue thread bumps lock-free atomics; the control thread takes a [`Snapshot`]
//! (also part of `status`) and renders it with [`render`], a pure function.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Kind of a packet that reached userspace, from its TCP flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    Syn,
    SynAck,
    /// A pure or data-carrying ACK (the handshake ACK and the few packets before the mark).
    Ack,
    /// Anything else (FIN, RST, non-TCP, unparsable).
    Other,
}

impl PacketKind {
    /// Classifies TCP flags (the 13th byte of the TCP header).
    pub fn from_flags(syn: bool, ack: bool, fin: bool, rst: bool) -> Self {
        match (syn, ack, fin || rst) {
            (true, false, false) => PacketKind::Syn,
            (true, true, false) => PacketKind::SynAck,
            (false, true, false) => PacketKind::Ack,
            _ => PacketKind::Other,
        }
    }
}

/// Which side of the pod a decision was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

/// Live counters, shared by the queue thread and the control thread.
#[derive(Debug, Default)]
pub struct Counters {
    queued_syn: AtomicU64,
    queued_synack: AtomicU64,
    queued_ack: AtomicU64,
    queued_other: AtomicU64,
    allowed_ingress: AtomicU64,
    allowed_egress: AtomicU64,
    denied_ingress: AtomicU64,
    denied_egress: AtomicU64,
    authorised: AtomicU64,
    dropped: AtomicU64,
    rejected: AtomicU64,
    rewritten: AtomicU64,
    verdict_errors: AtomicU64,
    policy_reloads: AtomicU64,
    policy_errors: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl Counters {
    pub fn queued(&self, kind: PacketKind) {
        inc(match kind {
            PacketKind::Syn => &self.queued_syn,
            PacketKind::SynAck => &self.queued_synack,
            PacketKind::Ack => &self.queued_ack,
            PacketKind::Other => &self.queued_other,
        })
    }

    pub fn decision(&self, dir: Direction, allowed: bool) {
        inc(match (dir, allowed) {
            (Direction::Ingress, true) => &self.allowed_ingress,
            (Direction::Egress, true) => &self.allowed_egress,
            (Direction::Ingress, false) => &self.denied_ingress,
            (Direction::Egress, false) => &self.denied_egress,
        })
    }

    pub fn authorised(&self) {
        inc(&self.authorised)
    }
    pub fn dropped(&self) {
        inc(&self.dropped)
    }
    pub fn rejected(&self) {
        inc(&self.rejected)
    }
    pub fn rewritten(&self) {
        inc(&self.rewritten)
    }
    pub fn verdict_error(&self) {
        inc(&self.verdict_errors)
    }
    pub fn policy_reload(&self) {
        inc(&self.policy_reloads)
    }
    pub fn policy_error(&self) {
        inc(&self.policy_errors)
    }

    /// A consistent-enough copy for status and metrics; `flows`, `replays`, `evictions`
    /// come from the handshake engine, `uptime_seconds` from the caller.
    pub fn snapshot(&self, engine: EngineStats, uptime_seconds: u64) -> Snapshot {
        Snapshot {
            queued: Queued {
                syn: get(&self.queued_syn),
                synack: get(&self.queued_synack),
                ack: get(&self.queued_ack),
                other: get(&self.queued_other),
            },
            allowed: ByDirection {
                ingress: get(&self.allowed_ingress),
                egress: get(&self.allowed_egress),
            },
            denied: ByDirection {
                ingress: get(&self.denied_ingress),
                egress: get(&self.denied_egress),
            },
            authorised: get(&self.authorised),
            dropped: get(&self.dropped),
            rejected: get(&self.rejected),
            rewritten: get(&self.rewritten),
            verdict_errors: get(&self.verdict_errors),
            policy_reloads: get(&self.policy_reloads),
            policy_errors: get(&self.policy_errors),
            flows: engine.flows,
            replays: engine.replays,
            evictions: engine.evictions,
            expirations: engine.expirations,
            denied_token: engine.denied_token,
            denied_proof: engine.denied_proof,
            dropped_no_proof: engine.dropped_no_proof,
            dropped_unknown: engine.dropped_unknown,
            uptime_seconds,
        }
    }
}

/// What the handshake engine counts itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStats {
    /// Flows in the table now (half-open and awaiting proof; authorised ones live in conntrack).
    pub flows: u64,
    /// SYN tokens rejected as replays.
    pub replays: u64,
    /// Flows evicted because the table was full.
    pub evictions: u64,
    /// Half-open flows that timed out.
    pub expirations: u64,
    /// Handshakes refused because a token did not verify (forged, tampered, expired...).
    pub denied_token: u64,
    /// ACKs refused because the proof did not verify.
    pub denied_proof: u64,
    /// Packets dropped on a flow waiting for its proof because they carried none.
    pub dropped_no_proof: u64,
    /// Packets of no known flow (fail safe).
    pub dropped_unknown: u64,
}

/// Packets that reached userspace, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    pub syn: u64,
    pub synack: u64,
    pub ack: u64,
    pub other: u64,
}

impl Queued {
    pub fn total(&self) -> u64 {
        self.syn + self.synack + self.ack + self.other
    }
}

/// A count per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByDirection {
    pub ingress: u64,
    pub egress: u64,
}

/// All counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub queued: Queued,
    /// Policy decisions that allowed a connection.
    pub allowed: ByDirection,
    /// Policy decisions (or failed verifications) that denied a connection.
    pub denied: ByDirection,
    /// Connections marked so the kernel carries them from now on.
    pub authorised: u64,
    /// Packets dropped by verdict.
    pub dropped: u64,
    /// Packets answered with a reset.
    pub rejected: u64,
    /// Packets rewritten (token attached or stripped).
    pub rewritten: u64,
    /// Verdicts the kernel did not take.
    pub verdict_errors: u64,
    pub policy_reloads: u64,
    pub policy_errors: u64,
    pub flows: u64,
    pub replays: u64,
    pub evictions: u64,
    #[serde(default)]
    pub expirations: u64,
    #[serde(default)]
    pub denied_token: u64,
    #[serde(default)]
    pub denied_proof: u64,
    #[serde(default)]
    pub dropped_no_proof: u64,
    #[serde(default)]
    pub dropped_unknown: u64,
    pub uptime_seconds: u64,
}

/// Labels every series of one enforcer carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricLabels {
    pub id: String,
    pub namespace: String,
    pub pod: String,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders a snapshot in the Prometheus text exposition format (version 0.0.4).
pub fn render(s: &Snapshot, l: &MetricLabels) -> String {
    let base = format!(
        "id=\"{}\",namespace=\"{}\",pod=\"{}\"",
        escape(&l.id),
        escape(&l.namespace),
        escape(&l.pod)
    );
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, series: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (extra, v) in series {
            if extra.is_empty() {
                let _ = writeln!(out, "{name}{{{base}}} {v}");
            } else {
                let _ = writeln!(out, "{name}{{{base},{extra}}} {v}");
            }
        }
    };
    family(
        "trireme_packets_queued_total",
        "counter",
        "TCP packets that reached the enforcer through NFQUEUE, by kind.",
        &[
            ("kind=\"syn\"", s.queued.syn),
            ("kind=\"synack\"", s.queued.synack),
            ("kind=\"ack\"", s.queued.ack),
            ("kind=\"other\"", s.queued.other),
        ],
    );
    family(
        "trireme_decisions_total",
        "counter",
        "Connection decisions, by result and direction.",
        &[
            (
                "decision=\"allowed\",direction=\"ingress\"",
                s.allowed.ingress,
            ),
            (
                "decision=\"allowed\",direction=\"egress\"",
                s.allowed.egress,
            ),
            (
                "decision=\"denied\",direction=\"ingress\"",
                s.denied.ingress,
            ),
            ("decision=\"denied\",direction=\"egress\"", s.denied.egress),
        ],
    );
    family(
        "trireme_connections_authorised_total",
        "counter",
        "Connections handed to the kernel (connmarked) after authorisation.",
        &[("", s.authorised)],
    );
    family(
        "trireme_verdicts_total",
        "counter",
        "Verdicts that dropped, rejected or rewrote a packet.",
        &[
            ("verdict=\"drop\"", s.dropped),
            ("verdict=\"reject\"", s.rejected),
            ("verdict=\"rewrite\"", s.rewritten),
        ],
    );
    family(
        "trireme_verdict_errors_total",
        "counter",
        "Verdicts the kernel refused.",
        &[("", s.verdict_errors)],
    );
    family(
        "trireme_flows",
        "gauge",
        "Connections in the handshake table (not yet authorised).",
        &[("", s.flows)],
    );
    family(
        "trireme_replays_total",
        "counter",
        "SYN tokens rejected as replays.",
        &[("", s.replays)],
    );
    family(
        "trireme_flow_evictions_total",
        "counter",
        "Flows removed from the handshake table early, by reason.",
        &[
            ("reason=\"full\"", s.evictions),
            ("reason=\"expired\"", s.expirations),
        ],
    );
    family(
        "trireme_handshake_failures_total",
        "counter",
        "Handshake packets refused by the protocol (not by policy), by reason.",
        &[
            ("reason=\"token\"", s.denied_token),
            ("reason=\"replay\"", s.replays),
            ("reason=\"proof\"", s.denied_proof),
            ("reason=\"no_proof\"", s.dropped_no_proof),
            ("reason=\"unknown_flow\"", s.dropped_unknown),
        ],
    );
    family(
        "trireme_policy_reloads_total",
        "counter",
        "Policy directory loads, by result.",
        &[
            ("result=\"ok\"", s.policy_reloads),
            ("result=\"error\"", s.policy_errors),
        ],
    );
    family(
        "trireme_uptime_seconds",
        "gauge",
        "Seconds since the enforcer started.",
        &[("", s.uptime_seconds)],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_flags() {
        assert_eq!(
            PacketKind::from_flags(true, false, false, false),
            PacketKind::Syn
        );
        assert_eq!(
            PacketKind::from_flags(true, true, false, false),
            PacketKind::SynAck
        );
        assert_eq!(
            PacketKind::from_flags(false, true, false, false),
            PacketKind::Ack
        );
        assert_eq!(
            PacketKind::from_flags(false, true, true, false),
            PacketKind::Other
        );
        assert_eq!(
            PacketKind::from_flags(true, false, false, true),
            PacketKind::Other
        );
    }

    #[test]
    fn counters_land_in_snapshot() {
        let c = Counters::default();
        c.queued(PacketKind::Syn);
        c.queued(PacketKind::Syn);
        c.queued(PacketKind::Ack);
        c.decision(Direction::Ingress, true);
        c.decision(Direction::Egress, false);
        c.authorised();
        c.policy_reload();
        let s = c.snapshot(
            EngineStats {
                flows: 3,
                replays: 1,
                evictions: 2,
                ..Default::default()
            },
            9,
        );
        assert_eq!(s.queued.syn, 2);
        assert_eq!(s.queued.ack, 1);
        assert_eq!(s.queued.total(), 3);
        assert_eq!(s.allowed.ingress, 1);
        assert_eq!(s.allowed.egress, 0);
        assert_eq!(s.denied.egress, 1);
        assert_eq!(s.authorised, 1);
        assert_eq!(s.flows, 3);
        assert_eq!(s.replays, 1);
        assert_eq!(s.evictions, 2);
        assert_eq!(s.uptime_seconds, 9);
        assert_eq!(s.policy_reloads, 1);
    }

    #[test]
    fn renders_prometheus_text() {
        let s = Snapshot {
            queued: Queued {
                syn: 5,
                synack: 4,
                ack: 3,
                other: 0,
            },
            denied: ByDirection {
                ingress: 2,
                egress: 0,
            },
            replays: 7,
            ..Default::default()
        };
        let l = MetricLabels {
            id: "abc".into(),
            namespace: "x".into(),
            pod: "p\"q".into(),
        };
        let text = render(&s, &l);
        assert!(text.contains("# TYPE trireme_packets_queued_total counter\n"));
        assert!(text.contains(
            "trireme_packets_queued_total{id=\"abc\",namespace=\"x\",pod=\"p\\\"q\",kind=\"syn\"} 5\n"
        ));
        assert!(text.contains(
            "trireme_decisions_total{id=\"abc\",namespace=\"x\",pod=\"p\\\"q\",decision=\"denied\",direction=\"ingress\"} 2\n"
        ));
        assert!(
            text.contains("trireme_replays_total{id=\"abc\",namespace=\"x\",pod=\"p\\\"q\"} 7\n")
        );
        // Every non-comment line is `name{labels} value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("value");
            assert!(series.ends_with('}'), "{line}");
            value.parse::<u64>().expect("numeric value");
        }
    }
}
