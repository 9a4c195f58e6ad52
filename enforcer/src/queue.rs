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
use std::time::{Duration, Instant};
use trireme_policy::Identity;

/// Netfilter hook numbers (linux/netfilter.h).
const NF_INET_LOCAL_IN: u8 = 1;
const NF_INET_LOCAL_OUT: u8 = 3;

/// Where a queued packet is going, as the pod sees it (INPUT: inbound, OUTPUT: outbound):
/// the handshake engine's own direction.
pub use crate::handshake::Dir as Hook;

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

/// What to do with a packet: the handshake engine's own verdict action.
pub use crate::handshake::Action;

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
        let v = crate::handshake::Engine::handle(self, hook, packet, unix_ms());
        Outcome {
            action: v.action,
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

    /// Is this (non-SYN) packet part of a pre-existing connection? A SYN on such a
    /// 4-tuple starts a new connection there: the tuple is forgotten, so the new
    /// connection gets the full handshake.
    pub fn matches(&mut self, hook: Hook, packet: &[u8]) -> bool {
        if self.0.is_empty() {
            return false;
        }
        let Ok(v) = crate::packet::parse(packet) else {
            return false;
        };
        let src = SocketAddr::new(v.src, v.src_port);
        let dst = SocketAddr::new(v.dst, v.dst_port);
        let key = match hook {
            Hook::Outbound => (src, dst),
            Hook::Inbound => (dst, src),
        };
        if v.flags.syn {
            self.0.remove(&key);
            return false;
        }
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
        // A dual-stack socket's IPv4 peer shows as ::ffff:a.b.c.d; its packets are IPv4.
        let v6 = std::net::Ipv6Addr::from(b);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
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
        preexisting: &mut Preexisting,
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

// ---------------------------------------------------------------------------------------
// Servers that eat the SYN token

/// Sends a raw IP packet (the guard's reset) from the pod netns.
pub trait Injector: Send {
    fn send(&mut self, packet: &[u8]) -> std::io::Result<()>;
}

/// Raw `IPPROTO_RAW` sockets (IPv4 and, if available, IPv6), opened in the caller's netns.
pub struct RawInjector {
    v4: std::os::fd::OwnedFd,
    v6: Option<std::os::fd::OwnedFd>,
}

fn raw_socket(family: libc::c_int) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: socket(2) with constant arguments; the fd is owned from here on.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

impl RawInjector {
    pub fn open() -> Result<RawInjector> {
        let v4 = raw_socket(libc::AF_INET).map_err(|e| Error::Queue {
            queue: 0,
            msg: format!("raw socket: {e}"),
        })?;
        Ok(RawInjector {
            v4,
            v6: raw_socket(libc::AF_INET6).ok(),
        })
    }
}

impl Injector for RawInjector {
    fn send(&mut self, packet: &[u8]) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let v = crate::packet::parse(packet).map_err(std::io::Error::other)?;
        let n = match (v.dst, &self.v6) {
            (IpAddr::V4(d), _) => {
                let addr = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: 0,
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(d.octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: valid fd, buffer and address of the stated sizes.
                unsafe {
                    libc::sendto(
                        self.v4.as_raw_fd(),
                        packet.as_ptr().cast(),
                        packet.len(),
                        0,
                        (&addr as *const libc::sockaddr_in).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    )
                }
            }
            (IpAddr::V6(d), Some(fd)) => {
                let addr = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: 0,
                    sin6_flowinfo: 0,
                    sin6_addr: libc::in6_addr {
                        s6_addr: d.octets(),
                    },
                    sin6_scope_id: 0,
                };
                // SAFETY: valid fd, buffer and address of the stated sizes.
                unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        packet.as_ptr().cast(),
                        packet.len(),
                        0,
                        (&addr as *const libc::sockaddr_in6).cast(),
                        std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                    )
                }
            }
            (IpAddr::V6(_), None) => return Err(std::io::Error::other("no IPv6 raw socket")),
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// How long a server that ate a token gets SYNs without one.
pub const EATER_TTL: Duration = Duration::from_secs(300);
const GUARD_MAX: usize = 65_536;
const SENT_TTL: Duration = Duration::from_secs(30);

/// A SYN that left with our token.
#[derive(Debug, Clone, Copy)]
struct SentSyn {
    /// ISN + 1 + the application's SYN data: what a server acks that did not eat the token.
    base: u32,
    token_len: u32,
    at: Instant,
}

impl SentSyn {
    /// Does `ack` cover (some of) our token bytes?
    fn eaten_by(&self, ack: u32) -> bool {
        let over = ack.wrapping_sub(self.base);
        over >= 1 && over <= self.token_len
    }
}

/// Wraps the handshake engine for one pitfall of plain servers: a listener running TCP
/// Fast Open without cookies (`net.ipv4.tcp_fastopen` 0x200) accepts the data of ANY SYN,
/// so it hands our token to its application and its SYN-ACK acknowledges the token bytes.
/// No byte of such a connection can be repaired. The guard notices that SYN-ACK (its ack
/// covers exactly our token), resets the server's side with a raw RST at the sequence
/// number it expects, drops the SYN-ACK, and remembers the server for [`EATER_TTL`]: the
/// local kernel retransmits its SYN, which now leaves without a token, so the server sees
/// a plain connection, and our side judges it by ipBlock like every token-less peer.
pub struct TokenEaterGuard {
    inner: Box<dyn PacketHandler>,
    injector: Box<dyn Injector>,
    sent: std::collections::HashMap<(SocketAddr, SocketAddr), SentSyn>,
    eaters: std::collections::HashMap<SocketAddr, Instant>,
}

impl TokenEaterGuard {
    pub fn new(inner: Box<dyn PacketHandler>, injector: Box<dyn Injector>) -> Self {
        TokenEaterGuard {
            inner,
            injector,
            sent: Default::default(),
            eaters: Default::default(),
        }
    }

    /// Servers currently sent SYNs without a token.
    pub fn eaters(&self) -> usize {
        self.eaters.len()
    }

    fn expire(&mut self, now: Instant) {
        self.sent.retain(|_, s| now.duration_since(s.at) < SENT_TTL);
        self.eaters
            .retain(|_, at| now.duration_since(*at) < EATER_TTL);
    }
}

/// The reset that closes a server's connection whose next expected byte is `seq`.
pub fn reset_for(local: SocketAddr, remote: SocketAddr, seq: u32) -> Option<Vec<u8>> {
    let b = match (local.ip(), remote.ip()) {
        (IpAddr::V4(l), IpAddr::V4(r)) => {
            etherparse::PacketBuilder::ipv4(l.octets(), r.octets(), 64)
        }
        (IpAddr::V6(l), IpAddr::V6(r)) => {
            etherparse::PacketBuilder::ipv6(l.octets(), r.octets(), 64)
        }
        _ => return None,
    };
    let b = b.tcp(local.port(), remote.port(), seq, 0).rst();
    let mut out = Vec::with_capacity(60);
    b.write(&mut out, &[]).ok()?;
    Some(out)
}

impl PacketHandler for TokenEaterGuard {
    fn handle(&mut self, hook: Hook, packet: &[u8], now: Instant) -> Outcome {
        let Ok(v) = crate::packet::parse(packet) else {
            return self.inner.handle(hook, packet, now);
        };
        let src = SocketAddr::new(v.src, v.src_port);
        let dst = SocketAddr::new(v.dst, v.dst_port);
        match (hook, v.flags.syn, v.flags.ack) {
            (Hook::Outbound, true, false) => {
                let mut out = self.inner.handle(hook, packet, now);
                if out.action != Action::Accept {
                    return out;
                }
                if self.eaters.contains_key(&dst) {
                    // Known token eater: the SYN leaves as the application sent it.
                    out.packet = None;
                    return out;
                }
                let token_len = out
                    .packet
                    .as_deref()
                    .and_then(|p| crate::packet::parse(p).ok())
                    .and_then(|t| t.token.map(|t| t.len()));
                if let Some(n) = token_len {
                    if self.sent.len() >= GUARD_MAX {
                        self.expire(now);
                        if self.sent.len() >= GUARD_MAX {
                            self.sent.clear();
                        }
                    }
                    let base = v.seq.wrapping_add(1).wrapping_add(v.payload.len() as u32);
                    self.sent.insert(
                        (src, dst),
                        SentSyn {
                            base,
                            token_len: n as u32,
                            at: now,
                        },
                    );
                }
                out
            }
            (Hook::Inbound, true, true) => {
                let key = (dst, src);
                match self.sent.remove(&key) {
                    // The server expects its next byte at the ack it sent.
                    Some(s) if v.token.is_none() && s.eaten_by(v.ack) => {
                        if self.eaters.len() >= GUARD_MAX {
                            self.eaters.clear();
                        }
                        self.eaters.insert(src, now);
                        match reset_for(dst, src, v.ack) {
                            Some(rst) => {
                                if let Err(e) = self.injector.send(&rst) {
                                    tracing::warn!(error = %e, server = %src, "could not reset the server's connection");
                                }
                            }
                            None => {
                                tracing::warn!(server = %src, "no reset for mixed address families")
                            }
                        }
                        tracing::warn!(
                            server = %src,
                            "server took the SYN token as Fast Open data; its connection was reset and SYNs to it go without a token for {} s",
                            EATER_TTL.as_secs()
                        );
                        Outcome::new(Action::Drop)
                    }
                    _ => self.inner.handle(hook, packet, now),
                }
            }
            _ => self.inner.handle(hook, packet, now),
        }
    }

    fn stats(&self) -> EngineStats {
        self.inner.stats()
    }

    fn tick(&mut self) {
        self.expire(Instant::now());
        self.inner.tick();
    }

    fn set_identity(&mut self, identity: Identity) {
        self.inner.set_identity(identity);
    }

    fn set_policy(&mut self, policy: Arc<trireme_policy::Engine>) {
        self.inner.set_policy(policy);
    }
}

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
        // ::1 port 80 to ::2 port 1, and a dual-stack socket's IPv4 connection
        // ::ffff:10.0.0.2 port 80 to ::ffff:10.0.0.1 port 1 (seen as IPv4), in host-order
        // 32-bit words.
        let w = |b: [u8; 4]| u32::from_ne_bytes(b);
        let v6 = format!(
            "header\n 0: {:08X}{:08X}{:08X}{:08X}:0050 {:08X}{:08X}{:08X}{:08X}:0001 01 rest\n 1: {:08X}{:08X}{:08X}{:08X}:0050 {:08X}{:08X}{:08X}{:08X}:0001 01 rest\n",
            0, 0, 0, w([0, 0, 0, 1]), 0, 0, 0, w([0, 0, 0, 2]),
            0, 0, w([0, 0, 0xff, 0xff]), w([10, 0, 0, 2]), 0, 0, w([0, 0, 0xff, 0xff]), w([10, 0, 0, 1])
        );
        assert_eq!(
            parse_proc_net_tcp(&v6, true),
            vec![
                ("[::1]:80".parse().unwrap(), "[::2]:1".parse().unwrap()),
                (
                    "10.0.0.2:80".parse().unwrap(),
                    "10.0.0.1:1".parse().unwrap()
                )
            ]
        );
        assert!(parse_proc_net_tcp("h\n 0: zz:1 yy:2 01\n", false).is_empty());
    }

    /// Attaches a fixed token to outbound SYNs, accepts everything else.
    struct FakeEngine {
        seen: Arc<Mutex<Vec<Hook>>>,
    }

    impl PacketHandler for FakeEngine {
        fn handle(&mut self, hook: Hook, packet: &[u8], _: Instant) -> Outcome {
            self.seen.lock().unwrap().push(hook);
            let v = crate::packet::parse(packet).unwrap();
            let mut o = Outcome::new(Action::Accept);
            if hook == Hook::Outbound && v.flags.syn && !v.flags.ack {
                o.packet = Some(crate::packet::attach(packet, &[b't'; 100], 1500).unwrap());
            }
            o
        }
    }

    struct Sent(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Injector for Sent {
        fn send(&mut self, packet: &[u8]) -> std::io::Result<()> {
            self.0.lock().unwrap().push(packet.to_vec());
            Ok(())
        }
    }

    fn seg(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, seq: u32, ack: Option<u32>) -> Vec<u8> {
        let mut b = etherparse::PacketBuilder::ipv4(src, dst, 64)
            .tcp(sp, dp, seq, 64240)
            .syn();
        if let Some(a) = ack {
            b = b.ack(a);
        }
        let mut out = Vec::new();
        b.write(&mut out, &[]).unwrap();
        out
    }

    #[test]
    fn guard_resets_a_server_that_ate_the_token_and_stops_sending_it_one() {
        let seen = Arc::new(Mutex::new(vec![]));
        let sent = Arc::new(Mutex::new(vec![]));
        let mut g = TokenEaterGuard::new(
            Box::new(FakeEngine { seen: seen.clone() }),
            Box::new(Sent(sent.clone())),
        );
        let (me, srv) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let now = Instant::now();
        let syn = seg(me, 40000, srv, 80, 1000, None);
        let out = g.handle(Hook::Outbound, &syn, now);
        assert!(out.packet.is_some(), "token attached");
        // A SYN-ACK acknowledging only the SYN goes to the engine as usual.
        let normal = seg(srv, 80, me, 40000, 5000, Some(1001));
        g.handle(Hook::Inbound, &normal, now);
        assert_eq!(seen.lock().unwrap().len(), 2);
        assert!(sent.lock().unwrap().is_empty());

        // A SYN-ACK acking beyond the token is not ours to interpret: to the engine.
        let syn3 = seg(me, 40003, srv, 80, 100, None);
        g.handle(Hook::Outbound, &syn3, now);
        let beyond = seg(srv, 80, me, 40003, 1, Some(100 + 1 + 101));
        g.handle(Hook::Inbound, &beyond, now);
        assert_eq!(seen.lock().unwrap().len(), 4);
        assert!(sent.lock().unwrap().is_empty());
        seen.lock().unwrap().clear();
        seen.lock().unwrap().extend([Hook::Outbound, Hook::Inbound]);

        // Another connection whose SYN-ACK acknowledges our 100 token bytes.
        let syn2 = seg(me, 40001, srv, 80, 7000, None);
        g.handle(Hook::Outbound, &syn2, now);
        let eaten = seg(srv, 80, me, 40001, 9000, Some(7000 + 1 + 100));
        let out = g.handle(Hook::Inbound, &eaten, now);
        assert_eq!(out.action, Action::Drop);
        assert_eq!(
            seen.lock().unwrap().len(),
            3,
            "the eaten SYN-ACK never reaches the engine"
        );
        let rst = sent.lock().unwrap()[0].clone();
        let v = crate::packet::parse(&rst).unwrap();
        assert!(v.flags.rst && !v.flags.syn);
        assert_eq!((v.src, v.src_port), (IpAddr::from(me), 40001));
        assert_eq!((v.dst, v.dst_port), (IpAddr::from(srv), 80));
        assert_eq!(v.seq, 7101);
        crate::packet::verify_checksums(&rst).unwrap();
        assert_eq!(g.eaters(), 1);

        // The retransmitted SYN (and any new one) to that server leaves without a token.
        let out = g.handle(Hook::Outbound, &syn2, now);
        assert_eq!(out.action, Action::Accept);
        assert!(out.packet.is_none());
        // Other servers still get tokens.
        let other = seg(me, 40002, [10, 0, 0, 3], 80, 1, None);
        assert!(g.handle(Hook::Outbound, &other, now).packet.is_some());
        // Memory is bounded in time.
        g.expire(now + EATER_TTL + Duration::from_secs(1));
        assert_eq!(g.eaters(), 0);
    }

    #[test]
    fn preexisting_tuples_are_forgotten_when_a_new_connection_reuses_them() {
        let me = SocketAddr::from(([10, 0, 0, 2], 80));
        let peer = SocketAddr::from(([10, 0, 0, 1], 40000));
        let mut p = Preexisting([(me, peer)].into_iter().collect());
        let data = {
            let mut out = Vec::new();
            etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .tcp(40000, 80, 5, 100)
                .ack(9)
                .write(&mut out, b"x")
                .unwrap();
            out
        };
        assert!(p.matches(Hook::Inbound, &data));
        // Same tuple seen from the other hook is another connection.
        assert!(!p.matches(Hook::Outbound, &data));
        let syn = seg([10, 0, 0, 1], 40000, [10, 0, 0, 2], 80, 1, None);
        assert!(!p.matches(Hook::Inbound, &syn));
        assert!(
            !p.matches(Hook::Inbound, &data),
            "reused tuple must do the handshake"
        );
        assert!(p.is_empty());
    }

    #[test]
    fn unparsable_packets_count_as_other() {
        assert_eq!(kind_of(&[0u8; 3]), PacketKind::Other);
    }
}
