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
use std::net::IpAddr;
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
    /// New labels/ports/namespace labels; applies to new connections.
    fn set_identity(&mut self, identity: Identity) {
        let _ = identity;
    }
    /// A freshly loaded policy; applies to new connections.
    fn set_policy(&mut self, policy: Arc<trireme_policy::Engine>) {
        let _ = policy;
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
    fn unparsable_packets_count_as_other() {
        assert_eq!(kind_of(&[0u8; 3]), PacketKind::Other);
    }
}
