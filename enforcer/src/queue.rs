//! The NFQUEUE loop: receives the TCP packets the rules queue, hands each to a
//! [`PacketHandler`] (the handshake engine), and turns its [`Outcome`] into a verdict:
//!
//! | action      | verdict to the kernel                                              |
//! |-------------|--------------------------------------------------------------------|
//! | `Accept`    | NF_ACCEPT (with the rewritten packet, if any)                      |
//! | `Authorise` | NF_REPEAT + packet mark [`AUTH_MARK`]: the first rules of our chain turn it into a connmark, so the rest of the connection never reaches userspace |
//! | `Drop`      | NF_DROP                                                            |
//! | `Reject`    | NF_ACCEPT + packet mark [`REJECT_MARK`]: the filter-table rule answers with a TCP reset (drop when reject is not configured) |
//!
//! Setting the connmark inside the verdict (NFQA_CT) is ignored by this kernel, hence
//! NF_REPEAT + packet mark (see DESIGN.md field notes).

use crate::error::{Error, Result};
use crate::metrics::{Counters, Direction, EngineStats, PacketKind};
use crate::rules::{AUTH_MARK, REJECT_MARK};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use trireme_policy::Identity;

/// Netfilter hook numbers (linux/netfilter.h).
const NF_INET_LOCAL_IN: u8 = 1;
const NF_INET_LOCAL_OUT: u8 = 3;

/// Where a queued packet is going, as the pod sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Arriving at the pod (INPUT).
    Inbound,
    /// Leaving the pod (OUTPUT).
    Outbound,
}

impl Hook {
    /// From the netfilter hook number of a queued packet.
    pub fn from_nf_hook(hook: u8) -> Option<Hook> {
        match hook {
            NF_INET_LOCAL_IN => Some(Hook::Inbound),
            NF_INET_LOCAL_OUT => Some(Hook::Outbound),
            _ => None,
        }
    }
}

/// What to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Accept,
    /// Accept and hand the whole connection to the kernel from now on.
    Authorise,
    Drop,
    /// Drop and answer the local or remote socket with a TCP reset.
    Reject,
}

/// One policy decision, logged as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub direction: Direction,
    pub peer_ip: IpAddr,
    /// `namespace` and labels of the peer, if it proved an identity.
    pub peer_namespace: Option<String>,
    pub peer_labels: Option<String>,
    /// The destination port of the connection.
    pub port: u16,
    pub reason: String,
}

/// The handler's answer for one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub action: Action,
    /// The rewritten packet (token attached or stripped), if it changed.
    pub packet: Option<Vec<u8>>,
    pub decision: Option<Decision>,
}

impl Outcome {
    pub fn new(action: Action) -> Self {
        Outcome {
            action,
            packet: None,
            decision: None,
        }
    }
}

/// The seam between the NFQUEUE glue and the handshake logic.
pub trait PacketHandler: Send {
    fn handle(&mut self, hook: Hook, packet: &[u8], now: Instant) -> Outcome;
    /// Flow-table size and engine counters.
    fn stats(&self) -> EngineStats {
        EngineStats::default()
    }
    /// Housekeeping when idle (expire half-open flows); called every few hundred ms.
    fn tick(&mut self) {}
    /// New labels/ports/namespace labels; applies to new connections.
    fn set_identity(&mut self, identity: Identity) {
        let _ = identity;
    }
    /// A freshly loaded policy; applies to new connections.
    fn set_policy(&mut self, policy: Arc<trireme_policy::Engine>) {
        let _ = policy;
    }
}

/// The real handler: trireme's handshake engine.
impl PacketHandler for crate::handshake::Engine {
    fn handle(&mut self, hook: Hook, packet: &[u8], _now: Instant) -> Outcome {
        let dir = match hook {
            Hook::Inbound => crate::handshake::Dir::Inbound,
            Hook::Outbound => crate::handshake::Dir::Outbound,
        };
        let v = crate::handshake::Engine::handle(self, dir, packet, unix_ms());
        Outcome {
            action: match v.action {
                crate::handshake::Action::Accept => Action::Accept,
                crate::handshake::Action::Authorise => Action::Authorise,
                crate::handshake::Action::Drop => Action::Drop,
                crate::handshake::Action::Reject => Action::Reject,
            },
            packet: v.packet,
            decision: v.decision.map(decision_of),
        }
    }

    fn stats(&self) -> EngineStats {
        let c = self.counters();
        EngineStats {
            flows: c.flows,
            replays: c.denied_replay,
            evictions: c.evictions,
            expirations: c.expirations,
            denied_token: c.denied_token,
            denied_proof: c.denied_proof,
            dropped_no_proof: c.dropped_no_proof,
            dropped_unknown: c.dropped_unknown,
        }
    }

    fn tick(&mut self) {
        self.expire(unix_ms());
    }

    fn set_identity(&mut self, identity: Identity) {
        crate::handshake::Engine::set_identity(self, identity);
    }

    fn set_policy(&mut self, policy: Arc<trireme_policy::Engine>) {
        crate::handshake::Engine::set_policy(self, policy);
    }
}

/// Unix time in milliseconds (the engine's clock; token expiry is wall-clock time).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Labels as `k=v,k2=v2` for log lines.
pub fn labels_text(labels: &std::collections::BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn decision_of(d: crate::handshake::DecisionLog) -> Decision {
    Decision {
        allowed: d.allowed,
        direction: match d.direction {
            crate::handshake::PolicyDirection::Ingress => Direction::Ingress,
            crate::handshake::PolicyDirection::Egress => Direction::Egress,
        },
        peer_ip: d.peer_ip,
        peer_namespace: d.peer_identity.as_ref().map(|i| i.namespace.clone()),
        peer_labels: d.peer_identity.as_ref().map(|i| labels_text(&i.labels)),
        port: d.port,
        reason: d.reason,
    }
}

/// Authorises every connection at its first queued packet. Used to test the datapath
/// (rules, NF_REPEAT bypass, counters) without the handshake engine.
#[derive(Debug, Default)]
pub struct AuthoriseAll;

impl PacketHandler for AuthoriseAll {
    fn handle(&mut self, _: Hook, _: &[u8], _: Instant) -> Outcome {
        Outcome::new(Action::Authorise)
    }
}

/// How to bind the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    pub queue: u16,
    /// Kernel queue length; packets beyond it are dropped (or accepted with fail-open).
    pub max_len: u32,
    pub fail_open: bool,
    /// The reject chain is installed (otherwise `Reject` falls back to `Drop`).
    pub reject: bool,
}

/// Default kernel queue length: enough for bursts of thousands of new connections.
pub const DEFAULT_MAX_LEN: u32 = 8192;

/// The verdict for an outcome: (NFQUEUE verdict, packet mark to set or None). Pure.
pub fn verdict_for(
    action: Action,
    old_mark: u32,
    reject_enabled: bool,
) -> (nfq::Verdict, Option<u32>) {
    match action {
        Action::Accept => (nfq::Verdict::Accept, None),
        Action::Authorise => (nfq::Verdict::Repeat, Some(old_mark | AUTH_MARK)),
        Action::Drop => (nfq::Verdict::Drop, None),
        Action::Reject if reject_enabled => (nfq::Verdict::Accept, Some(old_mark | REJECT_MARK)),
        Action::Reject => (nfq::Verdict::Drop, None),
    }
}

/// Classifies a packet for the counters (TCP flags; unparsable = other).
pub fn kind_of(packet: &[u8]) -> PacketKind {
    match crate::packet::parse(packet) {
        Ok(v) => PacketKind::from_flags(v.flags.syn, v.flags.ack, v.flags.fin, v.flags.rst),
        Err(_) => PacketKind::Other,
    }
}

/// TCP connections that were established before enforcement started, as
/// (local, remote) socket addresses. Their packets are authorised (connmarked) without a
/// handshake, so enforcement never breaks a connection that already existed. Read once at
/// start-up from the netns' socket table (`/proc/net/tcp`, `/proc/net/tcp6`): conntrack
/// may hold no entry for them at all (a netns only tracks connections once a rule needs
/// conntrack), so marking conntrack entries alone is not enough.
#[derive(Debug, Default, Clone)]
pub struct Preexisting(std::collections::HashSet<(SocketAddr, SocketAddr)>);

impl Preexisting {
    /// Established connections of the caller's netns.
    pub fn read() -> Preexisting {
        let mut set = std::collections::HashSet::new();
        for (path, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
            if let Ok(text) = std::fs::read_to_string(path) {
                set.extend(parse_proc_net_tcp(&text, v6));
            }
        }
        Preexisting(set)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Is this (non-SYN) packet part of a pre-existing connection?
    pub fn matches(&self, hook: Hook, packet: &[u8]) -> bool {
        if self.0.is_empty() {
            return false;
        }
        let Ok(v) = crate::packet::parse(packet) else {
            return false;
        };
        if v.flags.syn {
            return false;
        }
        let src = SocketAddr::new(v.src, v.src_port);
        let dst = SocketAddr::new(v.dst, v.dst_port);
        let key = match hook {
            Hook::Outbound => (src, dst),
            Hook::Inbound => (dst, src),
        };
        self.0.contains(&key)
    }
}

fn parse_hex_addr(s: &str, v6: bool) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip: IpAddr = if v6 {
        if addr.len() != 32 {
            return None;
        }
        let mut b = [0u8; 16];
        for (i, word) in (0..4).map(|i| &addr[i * 8..i * 8 + 8]).enumerate() {
            let w = u32::from_str_radix(word, 16).ok()?;
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::from(b)
    } else {
        let w = u32::from_str_radix(addr, 16).ok()?;
        IpAddr::from(w.to_ne_bytes())
    };
    Some(SocketAddr::new(ip, port))
}

/// Established (state 01) connections in `/proc/net/tcp{,6}` text, as (local, remote).
/// Addresses there are hex words in host byte order. Pure.
pub fn parse_proc_net_tcp(text: &str, v6: bool) -> Vec<(SocketAddr, SocketAddr)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 || f[3] != "01" {
                return None;
            }
            Some((parse_hex_addr(f[1], v6)?, parse_hex_addr(f[2], v6)?))
        })
        .collect()
}

/// A bound NFQUEUE.
pub struct BoundQueue {
    queue: nfq::Queue,
    cfg: QueueConfig,
}

impl BoundQueue {
    /// Opens the netlink socket (in the caller's netns) and binds queue `cfg.queue`.
    /// Fails when another process has bound it.
    pub fn bind(cfg: QueueConfig) -> Result<BoundQueue> {
        let qerr = |what: &str, e: std::io::Error| Error::Queue {
            queue: cfg.queue,
            msg: format!("{what}: {e}"),
        };
        let mut queue = nfq::Queue::open().map_err(|e| qerr("open netlink socket", e))?;
        queue.bind(cfg.queue).map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::EBUSY) {
                " (another process is bound to this queue in this netns)"
            } else {
                ""
            };
            qerr(&format!("bind{hint}"), e)
        })?;
        queue
            .set_queue_max_len(cfg.queue, cfg.max_len)
            .map_err(|e| qerr("set queue length", e))?;
        queue
            .set_fail_open(cfg.queue, cfg.fail_open)
            .map_err(|e| qerr("set fail-open", e))?;
        Ok(BoundQueue { queue, cfg })
    }

    /// Receives and decides packets until the socket fails. Each decision is logged and
    /// counted.
    pub fn run<H: PacketHandler + ?Sized>(
        &mut self,
        handler: &Mutex<Box<H>>,
        counters: &Counters,
        preexisting: &Preexisting,
    ) -> Result<()> {
        loop {
            let mut msg = match self.queue.recv() {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::Queue {
                        queue: self.cfg.queue,
                        msg: format!("receive: {e}"),
                    })
                }
            };
            let hook = Hook::from_nf_hook(msg.get_hook());
            let payload = msg.get_payload();
            counters.queued(kind_of(payload));
            let outcome = match hook {
                Some(h) if preexisting.matches(h, payload) => Outcome::new(Action::Authorise),
                Some(h) => {
                    let mut guard = handler.lock().unwrap_or_else(|p| p.into_inner());
                    guard.handle(h, payload, Instant::now())
                }
                // Our rules only queue at INPUT and OUTPUT.
                None => Outcome::new(Action::Drop),
            };
            if let Some(d) = &outcome.decision {
                counters.decision(d.direction, d.allowed);
                log_decision(d);
            }
            let (verdict, mark) = verdict_for(outcome.action, msg.get_nfmark(), self.cfg.reject);
            let mut outcome = outcome;
            if outcome.action == Action::Reject && outcome.packet.is_none() {
                // The kernel's reset acknowledges the SYN's payload: without our token,
                // so the peer's SYN_SENT socket accepts it (connection refused at once).
                outcome.packet = reject_packet(msg.get_payload());
            }
            match outcome.action {
                Action::Authorise => counters.authorised(),
                Action::Drop => counters.dropped(),
                Action::Reject => counters.rejected(),
                Action::Accept => {}
            }
            if let Some(m) = mark {
                msg.set_nfmark(m);
            }
            if let Some(p) = outcome.packet {
                if verdict != nfq::Verdict::Drop {
                    counters.rewritten();
                    msg.set_payload(p);
                }
            }
            msg.set_verdict(verdict);
            if let Err(e) = self.queue.verdict(msg) {
                counters.verdict_error();
                tracing::warn!(error = %e, "NFQUEUE verdict failed");
            }
        }
    }
}

/// The packet the kernel's `REJECT --reject-with tcp-reset` should answer: the original
/// without our marker and token (a reset acking the token bytes would be ignored by the
/// peer). `None` when there is no token to remove.
pub fn reject_packet(packet: &[u8]) -> Option<Vec<u8>> {
    match crate::packet::parse(packet) {
        Ok(v) if v.token.is_some() => crate::packet::strip(packet).ok().map(|s| s.packet),
        _ => None,
    }
}

/// One structured log line per decision.
pub fn log_decision(d: &Decision) {
    let direction = match d.direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    };
    let verdict = if d.allowed { "allow" } else { "deny" };
    tracing::info!(
        target: "trireme::decision",
        decision = verdict,
        direction,
        peer = %d.peer_ip,
        peer_namespace = d.peer_namespace.as_deref().unwrap_or("-"),
        peer_labels = d.peer_labels.as_deref().unwrap_or("-"),
        port = d.port,
        reason = %d.reason,
        "{verdict} {direction}"
    );
}

/// A handler shared by the queue thread and the control thread.
pub type SharedHandler = Arc<Mutex<Box<dyn PacketHandler>>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_map_actions() {
        assert_eq!(
            verdict_for(Action::Accept, 7, false),
            (nfq::Verdict::Accept, None)
        );
        assert_eq!(
            verdict_for(Action::Authorise, 0x4000, false),
            (nfq::Verdict::Repeat, Some(0x4000 | AUTH_MARK))
        );
        assert_eq!(
            verdict_for(Action::Drop, 0, true),
            (nfq::Verdict::Drop, None)
        );
        assert_eq!(
            verdict_for(Action::Reject, 1, true),
            (nfq::Verdict::Accept, Some(1 | REJECT_MARK))
        );
        // Without the reject chain a reject is a drop, never an accept.
        assert_eq!(
            verdict_for(Action::Reject, 0, false),
            (nfq::Verdict::Drop, None)
        );
    }

    #[test]
    fn hooks() {
        assert_eq!(Hook::from_nf_hook(1), Some(Hook::Inbound));
        assert_eq!(Hook::from_nf_hook(3), Some(Hook::Outbound));
        assert_eq!(Hook::from_nf_hook(0), None);
    }

    #[test]
    fn parses_established_sockets_of_proc_net_tcp() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1293 1 0 100 0 0 10 0\n   1: 0200000A:1F90 0100000A:A6CC 01 00000000:00000000 00:00000000 00000000     0        0 2226819 1 0 20 4 33 105 -1\n";
        let got = parse_proc_net_tcp(v4, false);
        assert_eq!(
            got,
            vec![(
                "10.0.0.2:8080".parse().unwrap(),
                "10.0.0.1:42700".parse().unwrap()
            )]
        );
        // ::1 port 80 to ::ffff:10.0.0.1 port 1, in host-order 32-bit words.
        let one = u32::from_ne_bytes([0, 0, 0, 1]);
        let ffff = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
        let ten = u32::from_ne_bytes([10, 0, 0, 1]);
        let v6 = format!(
            "header\n 0: {:08X}{:08X}{:08X}{:08X}:0050 {:08X}{:08X}{:08X}{:08X}:0001 01 rest\n",
            0, 0, 0, one, 0, 0, ffff, ten
        );
        assert_eq!(
            parse_proc_net_tcp(&v6, true),
            vec![(
                "[::1]:80".parse().unwrap(),
                "[::ffff:10.0.0.1]:1".parse().unwrap()
            )]
        );
        assert!(parse_proc_net_tcp("h\n 0: zz:1 yy:2 01\n", false).is_empty());
    }

    #[test]
    fn unparsable_packets_count_as_other() {
        assert_eq!(kind_of(&[0u8; 3]), PacketKind::Other);
    }
}
