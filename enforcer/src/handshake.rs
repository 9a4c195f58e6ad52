//! The handshake state machine: one [`Engine`] per pod decides every queued packet.
//!
//! Pure logic: the datapath hands in the packet, its direction and the time (unix
//! milliseconds) and maps the returned [`Verdict`] to NFQUEUE. Crypto and policy sit
//! behind two small traits ([`Tokens`], [`Policy`]) and randomness behind [`Random`], so
//! every transition is unit-tested with real packets.
//!
//! Roles (see `docs/protocol.md` for the full table):
//! - client: outbound SYN gets a SYN token; inbound SYN-ACK is verified (echo of our nonce,
//!   binding to both ISNs) and judged by our EGRESS policy against the server identity and
//!   the server's own address and port from its token (after a Service DNAT: the pod IP
//!   and target port, not the VIP and Service port we dialled);
//!   outbound pure ACKs then carry the proof until the server answers.
//! - server: inbound SYN is verified, replay-checked and judged by our INGRESS policy;
//!   outbound SYN-ACK gets a SYN-ACK token (with the SYN's destination, our own address
//!   and port); the inbound ACK must carry the proof, only then
//!   is the connection authorised ([`Action::Authorise`]).

use crate::flow::{ExpiringMap, FlowKey, FlowTable};
use crate::packet::{self, TcpView};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use trireme_policy::{Identity, Protocol};
use trireme_token::{Claims, Expect, TokenError, TokenKind};

/// Length of the handshake nonces.
pub const NONCE_LEN: usize = 16;
/// Length of the client's ACK-proof secret.
pub const SECRET_LEN: usize = 32;

/// A nonce carried in a token.
pub type Nonce = [u8; NONCE_LEN];

// ---------------------------------------------------------------------------------------
// Seams

/// Why a token or proof was refused; `code` is short and stable (metrics, logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFailure {
    pub code: &'static str,
    pub message: String,
}

impl fmt::Display for TokenFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// What a verified SYN token tells the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynInfo {
    pub identity: Identity,
    /// The client's nonce Nc.
    pub nonce: Nonce,
    /// Commitment to the client's ACK-proof secret.
    pub commit: [u8; 32],
    /// Token expiry, unix seconds (bounds the replay cache entry).
    pub exp: u64,
}

/// What a verified SYN-ACK token tells the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynAckInfo {
    pub identity: Identity,
    /// The server's nonce Ns (the ACK proof is bound to it).
    pub nonce: Nonce,
    /// The server's own address and port as the server sees them (the destination of
    /// the SYN it accepted): what egress policy is about, even when the client dialled
    /// a Service VIP and port that a DNAT rewrote.
    pub server: SocketAddr,
}

/// Token signing and verification, and the ACK proof (implemented over trireme-token).
pub trait Tokens: Send + Sync {
    /// Signs a SYN token: our identity, client nonce, client ISN, commitment.
    fn sign_syn(
        &self,
        me: &Identity,
        nonce: &Nonce,
        isn_client: u32,
        commit: &[u8; 32],
        now_s: u64,
    ) -> Result<Vec<u8>, TokenFailure>;
    /// Signs a SYN-ACK token: our identity, server nonce, echo of the client nonce, both
    /// ISNs, and `server`, our own address and port as we see them (the SYN's destination).
    #[allow(clippy::too_many_arguments)]
    fn sign_syn_ack(
        &self,
        me: &Identity,
        nonce: &Nonce,
        echo: &Nonce,
        isn_client: u32,
        isn_server: u32,
        server: SocketAddr,
        now_s: u64,
    ) -> Result<Vec<u8>, TokenFailure>;
    /// Verifies a SYN token bound to `isn_client`.
    fn verify_syn(
        &self,
        token: &[u8],
        isn_client: u32,
        now_s: u64,
    ) -> Result<SynInfo, TokenFailure>;
    /// Verifies a SYN-ACK token bound to both ISNs and echoing `echo`.
    fn verify_syn_ack(
        &self,
        token: &[u8],
        isn_client: u32,
        isn_server: u32,
        echo: &Nonce,
        now_s: u64,
    ) -> Result<SynAckInfo, TokenFailure>;
    /// Commitment to an ACK-proof secret (goes into the SYN token).
    fn commit(&self, secret: &[u8; SECRET_LEN]) -> [u8; 32];
    /// The ACK proof.
    fn make_proof(
        &self,
        secret: &[u8; SECRET_LEN],
        server_nonce: &Nonce,
        isn_client: u32,
        isn_server: u32,
    ) -> Vec<u8>;
    /// Checks an ACK proof against the commitment from the SYN token.
    fn check_proof(
        &self,
        commit: &[u8; 32],
        proof: &[u8],
        server_nonce: &Nonce,
        isn_client: u32,
        isn_server: u32,
    ) -> Result<(), TokenFailure>;
}

/// The other end of a connection, for a policy decision.
#[derive(Debug, Clone, Copy)]
pub enum PeerRef<'a> {
    /// A peer that proved its identity with a token; `ip` as seen here.
    Pod { identity: &'a Identity, ip: IpAddr },
    /// A peer without a token: only ipBlock rules can match it.
    External { ip: IpAddr },
}

/// A policy answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyAnswer {
    pub allowed: bool,
    pub reason: String,
}

/// NetworkPolicy evaluation for this pod (implemented over trireme-policy's Engine).
pub trait Policy: Send + Sync {
    /// May `peer` connect to `me` on TCP `port`?
    fn ingress(&self, me: &Identity, peer: PeerRef<'_>, port: u16) -> PolicyAnswer;
    /// May `me` connect to `peer` on TCP `port`?
    fn egress(&self, me: &Identity, peer: PeerRef<'_>, port: u16) -> PolicyAnswer;
}

/// Source of randomness for nonces and proof secrets.
pub trait Random: Send {
    /// Fills `buf`; an error makes the engine fail closed for that packet.
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), TokenFailure>;
}

// ---------------------------------------------------------------------------------------
// Verdicts

/// Which way a queued packet travels, relative to this pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Into the pod (from the network).
    Inbound,
    /// Out of the pod (from a local socket).
    Outbound,
}

/// What to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let it through (rewritten if `Verdict::packet` is set).
    Accept,
    /// Let it through and mark the connection so later packets stay in the kernel.
    Authorise,
    /// Drop it.
    Drop,
    /// Drop it and make the local socket see a RST (kernel REJECT with tcp-reset).
    Reject,
}

/// Policy direction of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyDirection {
    Ingress,
    Egress,
}

impl fmt::Display for PolicyDirection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PolicyDirection::Ingress => "ingress",
            PolicyDirection::Egress => "egress",
        })
    }
}

/// One decision about a connection, for the structured log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionLog {
    pub allowed: bool,
    pub direction: PolicyDirection,
    /// The peer's address the policy was evaluated on. Egress with a token: the server's
    /// own address from its token (a pod IP even when a Service VIP was dialled).
    pub peer_ip: IpAddr,
    /// The peer's verified identity; None for peers without a token.
    pub peer_identity: Option<Identity>,
    /// The server port the policy was evaluated on (egress with a token: the server's
    /// own port from its token, i.e. the target port behind a Service).
    pub port: u16,
    /// Egress: the address and port the client dialled, when they differ from the
    /// server's own (a Service DNAT on the path). The reason says so too.
    pub dialled: Option<SocketAddr>,
    /// Why (policy reason, token or proof failure, replay, node traffic).
    pub reason: String,
}

/// The answer for one queued packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub action: Action,
    /// The rewritten packet to reinject instead of the original.
    pub packet: Option<Vec<u8>>,
    /// Set when this packet decided a connection.
    pub decision: Option<DecisionLog>,
}

impl Verdict {
    fn new(action: Action) -> Self {
        Verdict {
            action,
            packet: None,
            decision: None,
        }
    }
    fn with_packet(mut self, p: Vec<u8>) -> Self {
        self.packet = Some(p);
        self
    }
    fn with_decision(mut self, d: DecisionLog) -> Self {
        self.decision = Some(d);
        self
    }
}

/// Counters the datapath exports. Monotonic except the gauges `flows` and `replay_entries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub queued_syn_out: u64,
    pub queued_syn_in: u64,
    pub queued_synack_out: u64,
    pub queued_synack_in: u64,
    pub queued_ack_out: u64,
    pub queued_ack_in: u64,
    pub queued_other: u64,
    /// Connections allowed by policy (ingress at the SYN, egress at the SYN-ACK).
    pub allowed: u64,
    /// Connections denied by policy.
    pub denied_policy: u64,
    /// Handshakes refused because a token did not verify.
    pub denied_token: u64,
    /// SYNs refused because their token was already used.
    pub denied_replay: u64,
    /// ACKs refused because the proof did not verify.
    pub denied_proof: u64,
    /// Packets dropped on a flow waiting for the proof because they carried none.
    pub dropped_no_proof: u64,
    /// Packets of no known flow (fail safe).
    pub dropped_unknown: u64,
    /// Packets that could not be parsed or carried a bad marker (inbound: dropped;
    /// outbound unparsable: passed unchanged).
    pub dropped_malformed: u64,
    /// Outbound packets a token did not fit on (options full or too big) or signing failed.
    pub attach_failed: u64,
    /// Connections marked (Authorise verdicts that completed a handshake).
    pub authorised: u64,
    /// Flows evicted because the table was full.
    pub evictions: u64,
    /// Flows that timed out half-open.
    pub expirations: u64,
    /// Replay-cache entries evicted because the cache was full.
    pub replay_evictions: u64,
    /// Current flows.
    pub flows: u64,
    /// Current replay-cache entries.
    pub replay_entries: u64,
}

// ---------------------------------------------------------------------------------------
// Engine

/// Engine settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Denied connections get a RST instead of silence.
    pub reject: bool,
    /// The pod's gateway (node) address: its token-less SYNs are allowed.
    pub allow_node: Option<IpAddr>,
    /// Clock skew tolerated by the verifier, seconds (extends replay-cache entries).
    pub clock_skew_s: u64,
    /// Largest flow table.
    pub max_flows: usize,
    /// How long a handshake may stay incomplete, milliseconds.
    pub half_open_ms: u64,
    /// How long an authorised flow stays known (packets queued before the mark took
    /// effect are still authorised), milliseconds.
    pub linger_ms: u64,
    /// Largest replay cache.
    pub max_replay: usize,
    /// Largest packet a token may grow (the interface MTU).
    pub mtu: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            reject: false,
            allow_node: None,
            clock_skew_s: trireme_token::CLOCK_SKEW_SECS,
            max_flows: 65_536,
            half_open_ms: 30_000,
            linger_ms: 5_000,
            max_replay: 131_072,
            mtu: packet::DEFAULT_MAX_PACKET,
        }
    }
}

/// Client side: our SYN is out.
#[derive(Debug, Clone)]
struct ClientSyn {
    isn_c: u32,
    nonce: Nonce,
    secret: [u8; SECRET_LEN],
    /// TFO data length carried by the SYN (the SYN-ACK may acknowledge it).
    syn_data: u32,
    /// The signed token (None: it did not fit; the SYN went out plain).
    token: Option<Arc<[u8]>>,
}

#[derive(Debug, Clone)]
enum Flow {
    /// Client: SYN sent, waiting for the SYN-ACK.
    SynSent(ClientSyn),
    /// Client: SYN-ACK accepted, proof goes on every pure ACK until the server answers.
    ProofPending { syn: ClientSyn, proof: Arc<[u8]> },
    /// Server: SYN accepted; the SYN-ACK gets `token` (signed on its first pass).
    Server {
        isn_c: u32,
        client_nonce: Nonce,
        commit: [u8; 32],
        /// Server nonce and SYN-ACK token, once the SYN-ACK went out.
        sent: Option<(u32, Nonce, Arc<[u8]>)>,
    },
    /// Authorised (or token-less and allowed); kept for `linger_ms` only.
    Authorised,
}

/// Replay-cache entry: the connection that first used a nonce, and how it went.
#[derive(Debug, Clone, Copy)]
struct NonceUse {
    key: FlowKey,
    isn_c: u32,
    /// The SYN was denied: nothing was authorised and no SYN-ACK went out, so a
    /// retransmit of it may be judged again.
    denied: bool,
}

/// The per-pod handshake engine.
pub struct Engine {
    cfg: Config,
    identity: Identity,
    tokens: Arc<dyn Tokens>,
    policy: Arc<dyn Policy>,
    rng: Box<dyn Random>,
    flows: FlowTable<Flow>,
    replay: ExpiringMap<Nonce, NonceUse>,
    counters: Counters,
}

fn socket(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

impl Engine {
    /// An engine for a pod with `identity`.
    pub fn new(
        cfg: Config,
        identity: Identity,
        tokens: Arc<dyn Tokens>,
        policy: Arc<dyn Policy>,
        rng: Box<dyn Random>,
    ) -> Self {
        Engine {
            flows: FlowTable::new(cfg.max_flows),
            replay: ExpiringMap::new(cfg.max_replay),
            cfg,
            identity,
            tokens,
            policy,
            rng,
            counters: Counters::default(),
        }
    }

    /// Replaces the pod's identity (labels updated); applies to new handshakes.
    pub fn set_identity(&mut self, identity: Identity) {
        self.identity = identity;
    }

    /// The pod's identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Replaces the policy; applies to new decisions.
    pub fn set_policy(&mut self, policy: Arc<dyn Policy>) {
        self.policy = policy;
    }

    /// Current settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Counters, with the gauges filled in.
    pub fn counters(&self) -> Counters {
        let mut c = self.counters;
        c.flows = self.flows.len() as u64;
        c.replay_entries = self.replay.len() as u64;
        c
    }

    /// Removes expired flows and replay entries; `handle` does this too, call it when idle.
    pub fn expire(&mut self, now_ms: u64) {
        self.counters.expirations += self.flows.expire(now_ms) as u64;
        self.replay.expire(now_ms);
    }

    /// Decides one queued packet. `now_ms` is unix time in milliseconds.
    pub fn handle(&mut self, dir: Dir, pkt: &[u8], now_ms: u64) -> Verdict {
        self.expire(now_ms);
        let view = match packet::parse(pkt) {
            Ok(v) => v,
            Err(_) => {
                self.counters.dropped_malformed += 1;
                // Inbound: fail safe. Outbound (our own kernel's packet in a form we do
                // not rewrite, e.g. IPv6 extension headers): it goes out unchanged and
                // the peer judges us as a peer without a token.
                return Verdict::new(match dir {
                    Dir::Inbound => Action::Drop,
                    Dir::Outbound => Action::Accept,
                });
            }
        };
        let f = view.flags;
        match (dir, f.syn, f.ack) {
            (Dir::Outbound, true, false) => {
                self.counters.queued_syn_out += 1;
                self.syn_out(&view, pkt, now_ms)
            }
            (Dir::Inbound, true, false) => {
                self.counters.queued_syn_in += 1;
                self.syn_in(&view, pkt, now_ms)
            }
            (Dir::Outbound, true, true) => {
                self.counters.queued_synack_out += 1;
                self.syn_ack_out(&view, pkt, now_ms)
            }
            (Dir::Inbound, true, true) => {
                self.counters.queued_synack_in += 1;
                self.syn_ack_in(&view, pkt, now_ms)
            }
            (Dir::Outbound, false, _) => {
                if view.is_pure_ack() {
                    self.counters.queued_ack_out += 1;
                } else {
                    self.counters.queued_other += 1;
                }
                self.other_out(&view, pkt, now_ms)
            }
            (Dir::Inbound, false, _) => {
                if view.is_pure_ack() {
                    self.counters.queued_ack_in += 1;
                } else {
                    self.counters.queued_other += 1;
                }
                self.other_in(&view, pkt, now_ms)
            }
        }
    }

    fn key(dir: Dir, v: &TcpView<'_>) -> FlowKey {
        match dir {
            Dir::Outbound => FlowKey {
                local: socket(v.src, v.src_port),
                remote: socket(v.dst, v.dst_port),
            },
            Dir::Inbound => FlowKey {
                local: socket(v.dst, v.dst_port),
                remote: socket(v.src, v.src_port),
            },
        }
    }

    fn put(&mut self, key: FlowKey, flow: Flow, expires_ms: u64, now_ms: u64) {
        let r = self.flows.insert(key, flow, expires_ms, now_ms);
        self.counters.expirations += r.expired as u64;
        self.counters.evictions += r.evicted as u64;
    }

    fn authorise(&mut self, key: FlowKey, now_ms: u64) {
        self.counters.authorised += 1;
        self.put(key, Flow::Authorised, now_ms + self.cfg.linger_ms, now_ms);
    }

    /// A denied SYN that carried our token: Drop, or Reject with the token stripped, so
    /// the kernel's reset acknowledges only the SYN (and any Fast Open data) and the
    /// client's SYN-SENT socket accepts it.
    fn deny_syn(&self, pkt: &[u8]) -> Verdict {
        let v = Verdict::new(self.deny_action());
        match (v.action, packet::strip(pkt)) {
            (Action::Reject, Ok(s)) => v.with_packet(s.packet),
            _ => v,
        }
    }

    fn deny_action(&self) -> Action {
        if self.cfg.reject {
            Action::Reject
        } else {
            Action::Drop
        }
    }

    fn random<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut b = [0u8; N];
        self.rng.fill(&mut b).ok().map(|_| b)
    }

    // ---- client ----------------------------------------------------------------------

    fn syn_out(&mut self, v: &TcpView<'_>, pkt: &[u8], now_ms: u64) -> Verdict {
        let key = Self::key(Dir::Outbound, v);
        if v.token.is_some() {
            // Our own kernel never marks; something in the pod forged a marker.
            self.counters.dropped_malformed += 1;
            return Verdict::new(Action::Drop);
        }
        // A retransmitted SYN (same ISN) gets the same token again, no new signature.
        let syn = match self.flows.get(&key, now_ms) {
            Some(Flow::SynSent(s)) if s.isn_c == v.seq => Some(s.clone()),
            _ => None,
        };
        let syn = match syn {
            Some(s) => s,
            None => {
                let (Some(nonce), Some(secret)) = (self.random(), self.random()) else {
                    self.counters.attach_failed += 1;
                    return Verdict::new(Action::Drop);
                };
                let commit = self.tokens.commit(&secret);
                let token = match self.tokens.sign_syn(
                    &self.identity,
                    &nonce,
                    v.seq,
                    &commit,
                    now_ms / 1000,
                ) {
                    Ok(t) => Some(Arc::from(t)),
                    Err(_) => {
                        self.counters.attach_failed += 1;
                        None
                    }
                };
                let s = ClientSyn {
                    isn_c: v.seq,
                    nonce,
                    secret,
                    syn_data: v.payload.len() as u32,
                    token,
                };
                self.put(
                    key,
                    Flow::SynSent(s.clone()),
                    now_ms + self.cfg.half_open_ms,
                    now_ms,
                );
                s
            }
        };
        let Some(token) = &syn.token else {
            return Verdict::new(Action::Accept);
        };
        match packet::attach(pkt, token, self.cfg.mtu) {
            Ok(p) => Verdict::new(Action::Accept).with_packet(p),
            Err(_) => {
                // The token does not fit (e.g. a large Fast Open SYN): the SYN goes out
                // plain and the server judges us by ipBlock, as a peer without identity.
                self.counters.attach_failed += 1;
                Verdict::new(Action::Accept)
            }
        }
    }

    fn syn_ack_in(&mut self, v: &TcpView<'_>, pkt: &[u8], now_ms: u64) -> Verdict {
        let key = Self::key(Dir::Inbound, v);
        let syn = match self.flows.get(&key, now_ms) {
            Some(Flow::SynSent(s)) => s.clone(),
            // A retransmitted SYN-ACK (our ACK was lost): handled again the same way.
            Some(Flow::ProofPending { syn, .. }) => syn.clone(),
            Some(Flow::Authorised) => return self.lingering(Dir::Inbound, v),
            _ => {
                self.counters.dropped_unknown += 1;
                return Verdict::new(Action::Drop);
            }
        };
        // The SYN-ACK acknowledges our SYN (and possibly its Fast Open data).
        let acked = v.ack.wrapping_sub(syn.isn_c.wrapping_add(1));
        if acked > syn.syn_data {
            self.counters.dropped_unknown += 1;
            return Verdict::new(Action::Drop);
        }
        let server = socket(v.src, v.src_port);
        let isn_s = v.seq;
        let Some(token) = v.token else {
            // A server without an enforcer: judged by ipBlock only; no proof will be asked.
            let ans = self.policy.egress(
                &self.identity,
                PeerRef::External { ip: server.ip() },
                server.port(),
            );
            let log = decision(ans, PolicyDirection::Egress, server, server.port(), None);
            return if log.allowed {
                self.counters.allowed += 1;
                self.authorise(key, now_ms);
                Verdict::new(Action::Authorise).with_decision(log)
            } else {
                self.counters.denied_policy += 1;
                self.flows.remove(&key);
                self.deny_syn_ack(pkt).with_decision(log)
            };
        };
        let info =
            match self
                .tokens
                .verify_syn_ack(token, syn.isn_c, isn_s, &syn.nonce, now_ms / 1000)
            {
                Ok(info) => info,
                Err(e) => {
                    self.counters.denied_token += 1;
                    let log = DecisionLog {
                        allowed: false,
                        direction: PolicyDirection::Egress,
                        peer_ip: server.ip(),
                        peer_identity: None,
                        port: server.port(),
                        dialled: None,
                        reason: format!("SYN-ACK token refused: {e}"),
                    };
                    // The flow stays: the genuine SYN-ACK may still come.
                    return Verdict::new(Action::Drop).with_decision(log);
                }
            };
        // Egress is about the destination pod: its own address and port as it saw them
        // (signed in its token), not the Service VIP and port we dialled and a DNAT
        // rewrote. `server` is what we dialled (the SYN-ACK's source here).
        let own = info.server;
        let ans = self.policy.egress(
            &self.identity,
            PeerRef::Pod {
                identity: &info.identity,
                ip: own.ip(),
            },
            own.port(),
        );
        let mut log = decision(
            ans,
            PolicyDirection::Egress,
            own,
            own.port(),
            Some(info.identity),
        );
        if own != server {
            log.dialled = Some(server);
            log.reason = format!("{} (dialled {server}, server is {own})", log.reason);
        }
        if !log.allowed {
            self.counters.denied_policy += 1;
            self.flows.remove(&key);
            return self.deny_syn_ack(pkt).with_decision(log);
        }
        let stripped = match packet::strip(pkt) {
            Ok(s) => s.packet,
            Err(_) => {
                self.counters.dropped_malformed += 1;
                return Verdict::new(Action::Drop);
            }
        };
        self.counters.allowed += 1;
        let proof: Arc<[u8]> = self
            .tokens
            .make_proof(&syn.secret, &info.nonce, syn.isn_c, isn_s)
            .into();
        self.put(
            key,
            Flow::ProofPending { syn, proof },
            now_ms + self.cfg.half_open_ms,
            now_ms,
        );
        Verdict::new(Action::Accept)
            .with_packet(stripped)
            .with_decision(log)
    }

    /// Our egress denied a SYN-ACK: drop it, or with `reject` turn it into a RST the local
    /// SYN-SENT socket accepts, so connect() fails at once.
    fn deny_syn_ack(&self, pkt: &[u8]) -> Verdict {
        if self.cfg.reject {
            if let Ok(rst) = packet::synack_to_rst(pkt) {
                return Verdict::new(Action::Accept).with_packet(rst);
            }
        }
        Verdict::new(Action::Drop)
    }

    /// Outbound non-SYN packets: the client's proof-bearing ACK, anything else of a flow.
    fn other_out(&mut self, v: &TcpView<'_>, pkt: &[u8], now_ms: u64) -> Verdict {
        let key = Self::key(Dir::Outbound, v);
        if v.token.is_some() {
            self.counters.dropped_malformed += 1;
            return Verdict::new(Action::Drop);
        }
        let proof = match self.flows.get(&key, now_ms) {
            None => {
                self.counters.dropped_unknown += 1;
                return Verdict::new(Action::Drop);
            }
            Some(Flow::Authorised) => return self.lingering(Dir::Outbound, v),
            Some(Flow::ProofPending { proof, .. }) => Some(proof.clone()),
            Some(_) => None,
        };
        if v.flags.rst {
            // Our side gives up on the handshake.
            self.flows.remove(&key);
            return Verdict::new(Action::Accept);
        }
        match proof {
            // Every pure ACK carries the proof while the server has not answered: if the
            // first is lost, the server's SYN-ACK retransmit draws a dup ACK, which has it.
            Some(proof) if v.is_pure_ack() => match packet::attach(pkt, &proof, self.cfg.mtu) {
                Ok(p) => Verdict::new(Action::Accept).with_packet(p),
                Err(_) => {
                    self.counters.attach_failed += 1;
                    Verdict::new(Action::Accept)
                }
            },
            // Data while the proof is pending goes out unchanged: the server drops it until
            // it has the proof, and TCP retransmits it.
            _ => Verdict::new(Action::Accept),
        }
    }

    // ---- server ----------------------------------------------------------------------

    fn syn_in(&mut self, v: &TcpView<'_>, pkt: &[u8], now_ms: u64) -> Verdict {
        let key = Self::key(Dir::Inbound, v);
        let client = socket(v.src, v.src_port);
        let port = v.dst_port;
        let Some(token) = v.token else {
            if Some(client.ip()) == self.cfg.allow_node {
                self.counters.allowed += 1;
                self.authorise(key, now_ms);
                let log = DecisionLog {
                    allowed: true,
                    direction: PolicyDirection::Ingress,
                    peer_ip: client.ip(),
                    peer_identity: None,
                    port,
                    dialled: None,
                    reason: "traffic from the pod's node".into(),
                };
                return Verdict::new(Action::Authorise).with_decision(log);
            }
            // A client without an enforcer: ipBlock rules only; no proof will come.
            let ans =
                self.policy
                    .ingress(&self.identity, PeerRef::External { ip: client.ip() }, port);
            let log = decision(ans, PolicyDirection::Ingress, client, port, None);
            return if log.allowed {
                self.counters.allowed += 1;
                self.authorise(key, now_ms);
                Verdict::new(Action::Authorise).with_decision(log)
            } else {
                self.counters.denied_policy += 1;
                self.flows.remove(&key);
                Verdict::new(self.deny_action()).with_decision(log)
            };
        };
        let denied = |reason: String| DecisionLog {
            allowed: false,
            direction: PolicyDirection::Ingress,
            peer_ip: client.ip(),
            peer_identity: None,
            port,
            dialled: None,
            reason,
        };
        let info = match self.tokens.verify_syn(token, v.seq, now_ms / 1000) {
            Ok(info) => info,
            Err(e) => {
                self.counters.denied_token += 1;
                let log = denied(format!("SYN token refused: {e}"));
                return self.deny_syn(pkt).with_decision(log);
            }
        };
        // Replays are refused here, at the SYN. A retransmitted SYN (same tuple, same ISN,
        // same nonce) is not a replay while its handshake is still pending here, or when
        // it was denied. Once the flow completed, expired or was evicted, the nonce is
        // spent: the proof secret may have been on the wire by then.
        let pending = matches!(
            self.flows.get(&key, now_ms),
            Some(Flow::Server { isn_c, client_nonce, .. })
                if *isn_c == v.seq && *client_nonce == info.nonce
        );
        let retransmit = match self.replay.get(&info.nonce, now_ms) {
            None => false,
            Some(u) if u.key == key && u.isn_c == v.seq && (pending || u.denied) => true,
            Some(_) => {
                self.counters.denied_replay += 1;
                let mut log = denied("replayed SYN token".into());
                log.peer_identity = Some(info.identity);
                return self.deny_syn(pkt).with_decision(log);
            }
        };
        if !retransmit {
            let expires = (info.exp + self.cfg.clock_skew_s).saturating_mul(1000);
            let use_ = NonceUse {
                key,
                isn_c: v.seq,
                denied: false,
            };
            let r = self.replay.insert(info.nonce, use_, expires, now_ms);
            self.counters.replay_evictions += r.evicted as u64;
        }
        let ans = self.policy.ingress(
            &self.identity,
            PeerRef::Pod {
                identity: &info.identity,
                ip: client.ip(),
            },
            port,
        );
        let log = decision(
            ans,
            PolicyDirection::Ingress,
            client,
            port,
            Some(info.identity),
        );
        if let Some(u) = self.replay.get_mut(&info.nonce, now_ms) {
            u.denied = !log.allowed;
        }
        if !log.allowed {
            self.counters.denied_policy += 1;
            self.flows.remove(&key);
            return self.deny_syn(pkt).with_decision(log);
        }
        let stripped = match packet::strip(pkt) {
            Ok(s) => s.packet,
            Err(_) => {
                self.counters.dropped_malformed += 1;
                return Verdict::new(Action::Drop);
            }
        };
        self.counters.allowed += 1;
        // A retransmitted SYN's pending flow keeps its state (the SYN-ACK token stays).
        if !pending {
            self.put(
                key,
                Flow::Server {
                    isn_c: v.seq,
                    client_nonce: info.nonce,
                    commit: info.commit,
                    sent: None,
                },
                now_ms + self.cfg.half_open_ms,
                now_ms,
            );
        }
        Verdict::new(Action::Accept)
            .with_packet(stripped)
            .with_decision(log)
    }

    fn syn_ack_out(&mut self, v: &TcpView<'_>, pkt: &[u8], now_ms: u64) -> Verdict {
        let key = Self::key(Dir::Outbound, v);
        if v.token.is_some() {
            self.counters.dropped_malformed += 1;
            return Verdict::new(Action::Drop);
        }
        let isn_s = v.seq;
        let (isn_c, client_nonce, sent) = match self.flows.get(&key, now_ms) {
            Some(Flow::Server {
                isn_c,
                client_nonce,
                sent,
                ..
            }) => (*isn_c, *client_nonce, sent.clone()),
            Some(Flow::Authorised) => return self.lingering(Dir::Outbound, v),
            _ => {
                self.counters.dropped_unknown += 1;
                return Verdict::new(Action::Drop);
            }
        };
        // A retransmitted SYN-ACK gets the same token (same Ns) again.
        let token = match sent {
            Some((s, _, token)) if s == isn_s => token,
            _ => {
                let Some(nonce) = self.random::<NONCE_LEN>() else {
                    self.counters.attach_failed += 1;
                    return Verdict::new(Action::Drop);
                };
                // Our own address and port as we see them: the flow's key was made from
                // the inbound SYN we accepted, so its local side is that SYN's destination
                // (behind a Service: our pod IP and target port).
                let signed = self.tokens.sign_syn_ack(
                    &self.identity,
                    &nonce,
                    &client_nonce,
                    isn_c,
                    isn_s,
                    key.local,
                    now_ms / 1000,
                );
                let Ok(token) = signed else {
                    self.counters.attach_failed += 1;
                    return Verdict::new(Action::Drop);
                };
                let token: Arc<[u8]> = token.into();
                if let Some(Flow::Server { sent, .. }) = self.flows.get_mut(&key, now_ms) {
                    *sent = Some((isn_s, nonce, token.clone()));
                }
                token
            }
        };
        match packet::attach(pkt, &token, self.cfg.mtu) {
            Ok(p) => Verdict::new(Action::Accept).with_packet(p),
            Err(_) => {
                // Without our token the client would never send a proof: fail closed.
                self.counters.attach_failed += 1;
                Verdict::new(Action::Drop)
            }
        }
    }

    /// Inbound non-SYN packets: the server's proof check, the client's first answer.
    fn other_in(&mut self, v: &TcpView<'_>, pkt: &[u8], now_ms: u64) -> Verdict {
        let key = Self::key(Dir::Inbound, v);
        let flow = match self.flows.get(&key, now_ms) {
            None => {
                self.counters.dropped_unknown += 1;
                return Verdict::new(Action::Drop);
            }
            Some(f) => f.clone(),
        };
        match flow {
            Flow::Authorised => self.lingering(Dir::Inbound, v),
            Flow::SynSent(_) => {
                if v.flags.rst && v.token.is_none() {
                    self.flows.remove(&key);
                    return Verdict::new(Action::Accept);
                }
                self.counters.dropped_unknown += 1;
                Verdict::new(Action::Drop)
            }
            Flow::ProofPending { .. } => {
                if v.token.is_some() {
                    self.counters.dropped_malformed += 1;
                    return Verdict::new(Action::Drop);
                }
                if v.flags.rst {
                    self.flows.remove(&key);
                    return Verdict::new(Action::Accept);
                }
                // The server answered after our proof: it authorised the connection.
                self.authorise(key, now_ms);
                Verdict::new(Action::Authorise)
            }
            Flow::Server {
                isn_c,
                commit,
                sent,
                ..
            } => {
                if v.flags.rst && v.token.is_none() {
                    self.flows.remove(&key);
                    return Verdict::new(Action::Accept);
                }
                let (Some((isn_s, ns, _)), Some(proof)) = (sent, v.token) else {
                    // Never authorise without the proof; the half-open flow expires.
                    self.counters.dropped_no_proof += 1;
                    return Verdict::new(Action::Drop);
                };
                let client = socket(v.src, v.src_port);
                if !v.is_pure_ack() || v.ack != isn_s.wrapping_add(1) {
                    self.counters.dropped_no_proof += 1;
                    return Verdict::new(Action::Drop);
                }
                if let Err(e) = self.tokens.check_proof(&commit, proof, &ns, isn_c, isn_s) {
                    self.counters.denied_proof += 1;
                    let log = DecisionLog {
                        allowed: false,
                        direction: PolicyDirection::Ingress,
                        peer_ip: client.ip(),
                        peer_identity: None,
                        port: v.dst_port,
                        dialled: None,
                        reason: format!("ACK proof refused: {e}"),
                    };
                    return Verdict::new(Action::Drop).with_decision(log);
                }
                let Ok(stripped) = packet::strip(pkt) else {
                    self.counters.dropped_malformed += 1;
                    return Verdict::new(Action::Drop);
                };
                // The flow leaves the pending state: from now on a SYN with this nonce
                // is a replay, even on the same tuple.
                self.authorise(key, now_ms);
                Verdict::new(Action::Authorise).with_packet(stripped.packet)
            }
        }
    }

    /// A packet of a flow authorised moments ago (queued before the mark took effect).
    fn lingering(&mut self, dir: Dir, v: &TcpView<'_>) -> Verdict {
        if dir == Dir::Inbound && v.token.is_some() {
            // A duplicate proof-bearing ACK or SYN-ACK: the connection is already up and
            // this packet must not reach the socket with the token as data.
            return Verdict::new(Action::Drop);
        }
        Verdict::new(Action::Authorise)
    }
}

fn decision(
    ans: PolicyAnswer,
    direction: PolicyDirection,
    peer: SocketAddr,
    port: u16,
    peer_identity: Option<Identity>,
) -> DecisionLog {
    DecisionLog {
        allowed: ans.allowed,
        direction,
        peer_ip: peer.ip(),
        peer_identity,
        port,
        dialled: None,
        reason: ans.reason,
    }
}

// ---------------------------------------------------------------------------------------
// The seams implemented over the real crates

/// [`Tokens`] over trireme-token: a node's [`trireme_token::Signer`] and
/// [`trireme_token::Verifier`] (PKI or PSK) and its ACK proof.
#[derive(Debug, Clone)]
pub struct TokenCrypto {
    signer: trireme_token::Signer,
    verifier: trireme_token::Verifier,
    node: String,
    lifetime_s: u64,
}

impl TokenCrypto {
    /// `node` names this node in tokens (PKI: the credential's node name wins);
    /// tokens live `lifetime_s` seconds (at most [`trireme_token::MAX_TOKEN_LIFETIME_SECS`]).
    pub fn new(
        signer: trireme_token::Signer,
        verifier: trireme_token::Verifier,
        node: &str,
        lifetime_s: u64,
    ) -> Self {
        let node = signer.node_name().unwrap_or(node).to_string();
        TokenCrypto {
            signer,
            verifier,
            node,
            lifetime_s: lifetime_s.clamp(1, trireme_token::MAX_TOKEN_LIFETIME_SECS),
        }
    }

    fn claims(
        &self,
        kind: TokenKind,
        me: &Identity,
        nonce: &Nonce,
        isn_client: u32,
        now_s: u64,
    ) -> Claims {
        Claims {
            kind,
            identity: me.clone(),
            node: self.node.clone(),
            nonce: *nonce,
            echo: None,
            isn_client,
            isn_server: None,
            ack_commit: None,
            server_port: None,
            server_addr: None,
            iat: now_s,
            exp: now_s + self.lifetime_s,
        }
    }
}

fn failure(e: TokenError) -> TokenFailure {
    TokenFailure {
        code: e.code(),
        message: e.to_string(),
    }
}

impl Tokens for TokenCrypto {
    fn sign_syn(
        &self,
        me: &Identity,
        nonce: &Nonce,
        isn_client: u32,
        commit: &[u8; 32],
        now_s: u64,
    ) -> Result<Vec<u8>, TokenFailure> {
        let mut c = self.claims(TokenKind::Syn, me, nonce, isn_client, now_s);
        c.ack_commit = Some(*commit);
        self.signer.sign(&c).map_err(failure)
    }

    fn sign_syn_ack(
        &self,
        me: &Identity,
        nonce: &Nonce,
        echo: &Nonce,
        isn_client: u32,
        isn_server: u32,
        server: SocketAddr,
        now_s: u64,
    ) -> Result<Vec<u8>, TokenFailure> {
        let mut c = self.claims(TokenKind::SynAck, me, nonce, isn_client, now_s);
        c.echo = Some(*echo);
        c.isn_server = Some(isn_server);
        c.server_addr = Some(server.ip());
        c.server_port = Some(server.port());
        self.signer.sign(&c).map_err(failure)
    }

    fn verify_syn(
        &self,
        token: &[u8],
        isn_client: u32,
        now_s: u64,
    ) -> Result<SynInfo, TokenFailure> {
        let c = self
            .verifier
            .verify(token, &Expect::syn(isn_client), now_s)
            .map_err(failure)?;
        let commit = c.ack_commit.ok_or_else(|| TokenFailure {
            code: "malformed",
            message: "SYN token without ACK-proof commitment".into(),
        })?;
        Ok(SynInfo {
            identity: c.identity,
            nonce: c.nonce,
            commit,
            exp: c.exp,
        })
    }

    fn verify_syn_ack(
        &self,
        token: &[u8],
        isn_client: u32,
        isn_server: u32,
        echo: &Nonce,
        now_s: u64,
    ) -> Result<SynAckInfo, TokenFailure> {
        let c = self
            .verifier
            .verify(
                token,
                &Expect::syn_ack(isn_client, isn_server, *echo),
                now_s,
            )
            .map_err(failure)?;
        // The verifier refuses SYN-ACK tokens without it; checked again for the type.
        let server = c.server().ok_or_else(|| TokenFailure {
            code: "malformed",
            message: "SYN-ACK token without the server's address and port".into(),
        })?;
        Ok(SynAckInfo {
            identity: c.identity,
            nonce: c.nonce,
            server,
        })
    }

    fn commit(&self, secret: &[u8; SECRET_LEN]) -> [u8; 32] {
        trireme_token::proof::commit(secret)
    }

    fn make_proof(
        &self,
        secret: &[u8; SECRET_LEN],
        server_nonce: &Nonce,
        isn_client: u32,
        isn_server: u32,
    ) -> Vec<u8> {
        trireme_token::proof::make(secret, server_nonce, isn_client, isn_server).to_vec()
    }

    fn check_proof(
        &self,
        commit: &[u8; 32],
        proof: &[u8],
        server_nonce: &Nonce,
        isn_client: u32,
        isn_server: u32,
    ) -> Result<(), TokenFailure> {
        trireme_token::proof::check(commit, proof, server_nonce, isn_client, isn_server)
            .map_err(failure)
    }
}

/// [`Policy`] over trireme-policy's compiled NetworkPolicy engine (TCP).
impl Policy for trireme_policy::Engine {
    fn ingress(&self, me: &Identity, peer: PeerRef<'_>, port: u16) -> PolicyAnswer {
        let d = trireme_policy::Engine::ingress(self, me, &policy_peer(peer), port, Protocol::Tcp);
        PolicyAnswer {
            allowed: d.allowed,
            reason: d.reason.to_string(),
        }
    }

    fn egress(&self, me: &Identity, peer: PeerRef<'_>, port: u16) -> PolicyAnswer {
        let d = trireme_policy::Engine::egress(self, me, &policy_peer(peer), port, Protocol::Tcp);
        PolicyAnswer {
            allowed: d.allowed,
            reason: d.reason.to_string(),
        }
    }
}

fn policy_peer(p: PeerRef<'_>) -> trireme_policy::Peer<'_> {
    match p {
        PeerRef::Pod { identity, ip } => trireme_policy::Peer::Pod {
            identity,
            ip: Some(ip),
        },
        PeerRef::External { ip } => trireme_policy::Peer::External { ip },
    }
}

/// [`Random`] from the system's secure random source.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemRandom;

impl Random for SystemRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), TokenFailure> {
        for chunk in buf.chunks_mut(32) {
            let r: [u8; 32] = trireme_token::random_bytes().map_err(failure)?;
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::verify_checksums;
    use etherparse::{PacketBuilder, TcpOptionElement};
    use std::collections::BTreeMap;

    // Namespace x: pods a (10.0.0.1, client) and b (10.0.0.2, server, port 80).
    // b admits a on 80 and 192.168.0.0/16 (token-less peers) on 80; a may reach b and
    // 192.168.0.0/16 only. Pod c (label pod=c) is a signed pod that b does not admit.
    const POLICY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-ingress, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: a}}
    - ipBlock: {cidr: 192.168.0.0/16}
    ports: [{port: 80, protocol: TCP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-egress, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - podSelector: {matchLabels: {pod: b}}
    - ipBlock: {cidr: 192.168.0.0/16}
"#;

    const A: [u8; 4] = [10, 0, 0, 1];
    const B: [u8; 4] = [10, 0, 0, 2];
    const EXT: [u8; 4] = [192, 168, 1, 9];
    const NODE: [u8; 4] = [10, 0, 0, 254];
    const T0: u64 = 1_800_000_000_000; // unix ms
    const PSK: &[u8] = b"0123456789abcdef0123456789abcdef-trireme-test";

    fn identity(pod: &str) -> Identity {
        let mut labels = BTreeMap::new();
        labels.insert("pod".to_string(), pod.to_string());
        let mut namespace_labels = BTreeMap::new();
        namespace_labels.insert(trireme_policy::NAMESPACE_NAME_LABEL.to_string(), "x".into());
        Identity {
            namespace: "x".into(),
            labels,
            namespace_labels,
            ports: vec![],
        }
    }

    fn policy(text: &str) -> Arc<dyn Policy> {
        Arc::new(
            trireme_policy::Cluster::parse_str("test.yaml", text)
                .unwrap()
                .engine(),
        )
    }

    fn psk_tokens(secret: &[u8], node: &str) -> Arc<dyn Tokens> {
        Arc::new(TokenCrypto::new(
            trireme_token::Signer::from_psk(secret).unwrap(),
            trireme_token::Verifier::from_psk(secret).unwrap(),
            node,
            30,
        ))
    }

    /// Deterministic-per-engine randomness is not needed: use the real source.
    fn engine_with(pod: &str, cfg: Config, tokens: Arc<dyn Tokens>) -> Engine {
        Engine::new(
            cfg,
            identity(pod),
            tokens,
            policy(POLICY),
            Box::new(SystemRandom),
        )
    }

    fn engine(pod: &str) -> Engine {
        engine_with(pod, Config::default(), psk_tokens(PSK, "node-1"))
    }

    fn cfg_reject() -> Config {
        Config {
            reject: true,
            ..Config::default()
        }
    }

    #[derive(Clone, Copy)]
    struct Seg<'a> {
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
        seq: u32,
        ack: Option<u32>,
        syn: bool,
        data: &'a [u8],
    }

    fn build(s: Seg<'_>) -> Vec<u8> {
        let mut b = PacketBuilder::ipv4(s.src, s.dst, 64).tcp(s.sport, s.dport, s.seq, 64240);
        if s.syn {
            b = b.syn();
        }
        if let Some(a) = s.ack {
            b = b.ack(a);
        }
        let b = if s.syn {
            b.options(&[
                TcpOptionElement::MaximumSegmentSize(1460),
                TcpOptionElement::SelectiveAcknowledgementPermitted,
                TcpOptionElement::Timestamp(1, 0),
                TcpOptionElement::Noop,
                TcpOptionElement::WindowScale(7),
            ])
            .unwrap()
        } else {
            b
        };
        let mut v = Vec::new();
        b.write(&mut v, s.data).unwrap();
        v
    }

    const ISN_C: u32 = 1_000_000;
    const ISN_S: u32 = 7_000_000;

    fn syn(src: [u8; 4], sport: u16, data: &[u8]) -> Vec<u8> {
        build(Seg {
            src,
            dst: B,
            sport,
            dport: 80,
            seq: ISN_C,
            ack: None,
            syn: true,
            data,
        })
    }
    fn syn_ack(dst: [u8; 4], dport: u16, acked: u32) -> Vec<u8> {
        build(Seg {
            src: B,
            dst,
            sport: 80,
            dport,
            seq: ISN_S,
            ack: Some(ISN_C.wrapping_add(1 + acked)),
            syn: true,
            data: b"",
        })
    }
    fn ack_c(sport: u16, data: &[u8]) -> Vec<u8> {
        build(Seg {
            src: A,
            dst: B,
            sport,
            dport: 80,
            seq: ISN_C + 1,
            ack: Some(ISN_S + 1),
            syn: false,
            data,
        })
    }
    fn data_s(dport: u16, data: &[u8]) -> Vec<u8> {
        build(Seg {
            src: B,
            dst: A,
            sport: 80,
            dport,
            seq: ISN_S + 1,
            ack: Some(ISN_C + 1),
            syn: false,
            data,
        })
    }

    /// The packet that goes on: the rewritten one, or the original when unchanged.
    fn out(v: &Verdict, orig: &[u8]) -> Vec<u8> {
        let p = v.packet.clone().unwrap_or_else(|| orig.to_vec());
        verify_checksums(&p).expect("every packet we pass on has correct checksums");
        p
    }

    fn token_of(p: &[u8]) -> Option<Vec<u8>> {
        packet::parse(p).unwrap().token.map(|t| t.to_vec())
    }

    /// Runs a full handshake between client `c` (pod a) and server `s` (pod b) on client
    /// port `sport`; returns the final verdicts for inspection.
    fn handshake(c: &mut Engine, s: &mut Engine, sport: u16, now: u64) {
        let p = syn(A, sport, b"");
        let v = c.handle(Dir::Outbound, &p, now);
        assert_eq!(v.action, Action::Accept);
        let wire = out(&v, &p);
        assert!(token_of(&wire).is_some(), "SYN carries a token");
        let v = s.handle(Dir::Inbound, &wire, now);
        assert_eq!(v.action, Action::Accept, "{:?}", v.decision);
        assert_eq!(out(&v, &wire), p, "server kernel sees the plain SYN");
        let p = syn_ack(A, sport, 0);
        let v = s.handle(Dir::Outbound, &p, now);
        assert_eq!(v.action, Action::Accept);
        let wire = out(&v, &p);
        assert!(token_of(&wire).is_some(), "SYN-ACK carries a token");
        let v = c.handle(Dir::Inbound, &wire, now);
        assert_eq!(v.action, Action::Accept, "{:?}", v.decision);
        assert_eq!(out(&v, &wire), p, "client kernel sees the plain SYN-ACK");
        let p = ack_c(sport, b"");
        let v = c.handle(Dir::Outbound, &p, now);
        assert_eq!(v.action, Action::Accept);
        let wire = out(&v, &p);
        assert_eq!(
            token_of(&wire).map(|t| t.len()),
            Some(trireme_token::proof::PROOF_LEN)
        );
        let v = s.handle(Dir::Inbound, &wire, now);
        assert_eq!(v.action, Action::Authorise, "proof verified: authorised");
        assert_eq!(out(&v, &wire), p, "server kernel sees the plain ACK");
        let p = data_s(sport, b"hello");
        let v = c.handle(Dir::Inbound, &p, now);
        assert_eq!(
            v.action,
            Action::Authorise,
            "server answered: client authorised"
        );
        assert_eq!(v.packet, None);
    }

    #[test]
    fn allowed_handshake_authorises_both_sides_with_decisions_logged() {
        let (mut c, mut s) = (engine("a"), engine("b"));
        let p = syn(A, 40000, b"");
        let wire = out(&c.handle(Dir::Outbound, &p, T0), &p);
        let v = s.handle(Dir::Inbound, &wire, T0);
        let d = v.decision.unwrap();
        assert!(d.allowed);
        assert_eq!(d.direction, PolicyDirection::Ingress);
        assert_eq!(d.peer_ip, IpAddr::from(A));
        assert_eq!(d.peer_identity, Some(identity("a")));
        assert_eq!(d.port, 80);
        assert!(d.reason.contains("b-ingress"), "{}", d.reason);
        let p = syn_ack(A, 40000, 0);
        let wire = out(&s.handle(Dir::Outbound, &p, T0), &p);
        let v = c.handle(Dir::Inbound, &wire, T0);
        let d = v.decision.unwrap();
        assert!(d.allowed);
        assert_eq!(d.direction, PolicyDirection::Egress);
        assert_eq!(d.peer_identity, Some(identity("b")));
        assert_eq!((d.peer_ip, d.port), (IpAddr::from(B), 80));
        assert_eq!(d.dialled, None, "no NAT: dialled the server itself");

        let (mut c, mut s) = (engine("a"), engine("b"));
        handshake(&mut c, &mut s, 40001, T0);
        let (cc, sc) = (c.counters(), s.counters());
        assert_eq!((cc.allowed, cc.authorised), (1, 1));
        assert_eq!((sc.allowed, sc.authorised), (1, 1));
        assert_eq!(sc.replay_entries, 1);
        assert_eq!(
            (cc.queued_syn_out, cc.queued_synack_in, cc.queued_ack_out),
            (1, 1, 1)
        );
        assert_eq!(
            (sc.queued_syn_in, sc.queued_synack_out, sc.queued_ack_in),
            (1, 1, 1)
        );
        // authorised flows only linger briefly
        c.expire(T0 + 10_000);
        s.expire(T0 + 10_000);
        assert_eq!((c.counters().flows, s.counters().flows), (0, 0));
    }

    #[test]
    fn handshake_over_ipv6() {
        let (mut c, mut s) = (engine("a"), engine("b"));
        let (a6, b6) = ([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], {
            let mut b = [0u8; 16];
            b[0] = 0xfd;
            b[15] = 2;
            b
        });
        let pk = |src: [u8; 16],
                  dst: [u8; 16],
                  sp: u16,
                  dp: u16,
                  seq: u32,
                  ack: Option<u32>,
                  syn: bool| {
            let mut b = PacketBuilder::ipv6(src, dst, 64).tcp(sp, dp, seq, 64240);
            if syn {
                b = b.syn();
            }
            if let Some(a) = ack {
                b = b.ack(a);
            }
            let mut v = Vec::new();
            b.write(&mut v, b"").unwrap();
            v
        };
        let p = pk(a6, b6, 40000, 80, ISN_C, None, true);
        let w = out(&c.handle(Dir::Outbound, &p, T0), &p);
        let v = s.handle(Dir::Inbound, &w, T0);
        assert_eq!(v.action, Action::Accept);
        assert_eq!(v.decision.clone().unwrap().peer_ip, IpAddr::from(a6));
        assert_eq!(out(&v, &w), p);
        let p = pk(b6, a6, 80, 40000, ISN_S, Some(ISN_C + 1), true);
        let w = out(&s.handle(Dir::Outbound, &p, T0), &p);
        let v = c.handle(Dir::Inbound, &w, T0);
        assert_eq!(v.action, Action::Accept);
        assert_eq!(out(&v, &w), p);
        let p = pk(a6, b6, 40000, 80, ISN_C + 1, Some(ISN_S + 1), false);
        let w = out(&c.handle(Dir::Outbound, &p, T0), &p);
        let v = s.handle(Dir::Inbound, &w, T0);
        assert_eq!(v.action, Action::Authorise);
        assert_eq!(out(&v, &w), p);
    }

    #[test]
    fn pki_tokens_work_across_nodes_with_one_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("n1");
        let n2 = dir.path().join("n2");
        trireme_token::keys::init_pki(&ca, "node-1").unwrap();
        trireme_token::keys::issue_node(&ca, "node-2", &n2).unwrap();
        let (s1, v1) = trireme_token::load_keys(&ca).unwrap();
        let (s2, v2) = trireme_token::load_keys(&n2).unwrap();
        let t1: Arc<dyn Tokens> = Arc::new(TokenCrypto::new(s1, v1, "ignored", 30));
        let t2: Arc<dyn Tokens> = Arc::new(TokenCrypto::new(s2, v2, "ignored", 30));
        let mut c = engine_with("a", Config::default(), t1);
        let mut s = engine_with("b", Config::default(), t2);
        handshake(&mut c, &mut s, 40000, T0);
    }

    #[test]
    fn token_bearing_syn_stays_well_under_the_mtu() {
        // a realistic pod: several labels, namespace labels, named ports
        let mut id = identity("a");
        for (k, v) in [
            ("app.kubernetes.io/name", "checkout-frontend"),
            ("app.kubernetes.io/version", "2026.12.04-rc1"),
            ("pod-template-hash", "7c9d8f6b5d"),
            ("tier", "frontend"),
        ] {
            id.labels.insert(k.into(), v.into());
        }
        id.namespace_labels.insert("team".into(), "payments".into());
        id.ports.push(trireme_policy::NamedPort {
            name: "http".into(),
            port: 8080,
            protocol: Protocol::Tcp,
        });
        let dir = tempfile::tempdir().unwrap();
        trireme_token::keys::init_pki(dir.path(), "node-1").unwrap();
        let (ps, pv) = trireme_token::load_keys(dir.path()).unwrap();
        let pki: Arc<dyn Tokens> = Arc::new(TokenCrypto::new(ps, pv, "", 30));
        for (mode, tokens) in [("PSK", psk_tokens(PSK, "node-1")), ("PKI", pki)] {
            let mut c = engine_with("a", Config::default(), tokens);
            c.set_identity(id.clone());
            let p = syn(A, 40000, b"");
            let w = out(&c.handle(Dir::Outbound, &p, T0), &p);
            let t = token_of(&w).unwrap().len();
            println!("{mode}: SYN token {t} bytes, SYN {} bytes", w.len());
            assert!(w.len() < 1200, "{mode} SYN is {} bytes", w.len());
        }
    }

    #[test]
    fn ingress_denied_by_labels_drops_or_rejects() {
        for (cfg, want) in [
            (Config::default(), Action::Drop),
            (cfg_reject(), Action::Reject),
        ] {
            let mut c = engine("c");
            let mut s = engine_with("b", cfg, psk_tokens(PSK, "n"));
            let p = build(Seg {
                src: A,
                dst: B,
                sport: 40000,
                dport: 80,
                seq: ISN_C,
                ack: None,
                syn: true,
                data: b"",
            });
            let wire = out(&c.handle(Dir::Outbound, &p, T0), &p);
            let v = s.handle(Dir::Inbound, &wire, T0);
            assert_eq!(v.action, want);
            if want == Action::Reject {
                // the kernel's reset must answer the plain SYN, not the token bytes
                assert_eq!(v.packet.as_deref(), Some(&p[..]));
            } else {
                assert_eq!(v.packet, None);
            }
            let d = v.decision.unwrap();
            assert!(!d.allowed);
            assert_eq!(d.peer_identity, Some(identity("c")));
            assert!(d.reason.contains("isolated"), "{}", d.reason);
            assert_eq!(s.counters().denied_policy, 1);
            // no flow: the SYN-ACK (if the kernel ever sent one) would be dropped
            let v = s.handle(Dir::Outbound, &syn_ack(A, 40000, 0), T0);
            assert_eq!(v.action, Action::Drop);
        }
    }

    #[test]
    fn ingress_on_a_port_the_policy_does_not_open_is_denied() {
        let (mut c, mut s) = (engine("a"), engine("b"));
        let p = build(Seg {
            src: A,
            dst: B,
            sport: 40000,
            dport: 81,
            seq: ISN_C,
            ack: None,
            syn: true,
            data: b"",
        });
        let wire = out(&c.handle(Dir::Outbound, &p, T0), &p);
        let v = s.handle(Dir::Inbound, &wire, T0);
        assert_eq!(v.action, Action::Drop);
        assert_eq!(v.decision.unwrap().port, 81);
    }

    #[test]
    fn egress_denied_at_the_client_even_though_the_server_allows() {
        // a's egress admits pod=b only; server pod "d" admits everyone (no policy selects it)
        for (cfg, reject) in [(Config::default(), false), (cfg_reject(), true)] {
            let mut c = engine_with("a", cfg, psk_tokens(PSK, "n"));
            let mut s = engine("d");
            let p = syn(A, 40000, b"");
            let wire = out(&c.handle(Dir::Outbound, &p, T0), &p);
            let v = s.handle(Dir::Inbound, &wire, T0);
            assert_eq!(v.action, Action::Accept);
            let p = syn_ack(A, 40000, 0);
            let wire = out(&s.handle(Dir::Outbound, &p, T0), &p);
            let v = c.handle(Dir::Inbound, &wire, T0);
            let d = v.decision.clone().unwrap();
            assert!(!d.allowed && d.direction == PolicyDirection::Egress);
            assert_eq!(d.peer_identity, Some(identity("d")));
            if reject {
                assert_eq!(v.action, Action::Accept);
                let rst = packet::parse(v.packet.as_ref().unwrap()).unwrap();
                assert!(rst.flags.rst && rst.flags.ack && !rst.flags.syn);
                assert_eq!(
                    rst.ack,
                    ISN_C + 1,
                    "acknowledges our SYN: SYN-SENT accepts it"
                );
                assert!(rst.payload.is_empty() && rst.token.is_none());
                verify_checksums(v.packet.as_ref().unwrap()).unwrap();
            } else {
                assert_eq!((v.action, v.packet), (Action::Drop, None));
            }
            // the flow is gone: the handshake ACK would be dropped, no proof is ever sent
            let v = c.handle(Dir::Outbound, &ack_c(40000, b""), T0);
            assert_eq!(v.action, Action::Drop);
        }
    }

    #[test]
    fn retransmitted_syn_gets_the_same_token_and_is_not_a_replay() {
        let (mut c, mut s) = (engine("a"), engine("b"));
        let p = syn(A, 40000, b"");
        let w1 = out(&c.handle(Dir::Outbound, &p, T0), &p);
        let w2 = out(&c.handle(Dir::Outbound, &p, T0 + 1000), &p);
        assert_eq!(
            w1, w2,
            "same token, not signed again (a new one has a fresh nonce)"
        );
        assert_eq!(s.handle(Dir::Inbound, &w1, T0).action, Action::Accept);
        // the server's SYN-ACK is lost after it went out
        let sa = syn_ack(A, 40000, 0);
        let sa1 = out(&s.handle(Dir::Outbound, &sa, T0), &sa);
        // the retransmitted SYN arrives: not a replay, the flow keeps its state
        let v = s.handle(Dir::Inbound, &w2, T0 + 1000);
        assert_eq!(v.action, Action::Accept, "{:?}", v.decision);
        assert_eq!(s.counters().denied_replay, 0);
        let sa2 = out(&s.handle(Dir::Outbound, &sa, T0 + 1000), &sa);
        assert_eq!(
            sa1, sa2,
            "a retransmitted SYN-ACK carries the same token (same Ns)"
        );
        // and the handshake completes with it
        assert_eq!(
            c.handle(Dir::Inbound, &sa2, T0 + 1000).action,
            Action::Accept
        );
        let a = ack_c(40000, b"");
        let w = out(&c.handle(Dir::Outbound, &a, T0 + 1000), &a);
        assert_eq!(
            s.handle(Dir::Inbound, &w, T0 + 1000).action,
            Action::Authorise
        );
    }

    #[test]
    fn a_new_syn_on_the_same_tuple_gets_a_new_token() {
        let mut c = engine("a");
        let p = syn(A, 40000, b"");
        let w1 = out(&c.handle(Dir::Outbound, &p, T0), &p);
        let p2 = build(Seg {
            src: A,
            dst: B,
            sport: 40000,
            dport: 80,
            seq: ISN_C + 5000,
            ack: None,
            syn: true,
            data: b"",
        });
        let w2 = out(&c.handle(Dir::Outbound, &p2, T0), &p2);
        assert_ne!(token_of(&w1), token_of(&w2));
    }

    #[test]
    fn replayed_syn_is_refused_at_the_syn() {
        let (mut c, mut s) = (engine("a"), engine("b"));
        let p = syn(A, 40000, b"");
        let captured = out(&c.handle(Dir::Outbound, &p, T0), &p);
        assert_eq!(s.handle(Dir::Inbound, &captured, T0).action, Action::Accept);
        // while the first handshake is still pending, the same token from another port
        // (same ISN, so the binding holds) is a replay
        let mut other = captured.clone();
        other[20..22].copy_from_slice(&41000u16.to_be_bytes());
        let lay_fix = packet::strip(&other).unwrap(); // recompute checksum via a round trip
        let other =
            packet::attach(&lay_fix.packet, &captured[lay_fix.token.clone()], 1500).unwrap();
        let v = s.handle(Dir::Inbound, &other, T0 + 10);
        assert_eq!(v.action, Action::Drop);
        assert!(v.decision.unwrap().reason.contains("replay"));
        // complete the first handshake
        let sa = syn_ack(A, 40000, 0);
        let w = out(&s.handle(Dir::Outbound, &sa, T0), &sa);
        c.handle(Dir::Inbound, &w, T0);
        let a = ack_c(40000, b"");
        let w = out(&c.handle(Dir::Outbound, &a, T0), &a);
        assert_eq!(s.handle(Dir::Inbound, &w, T0).action, Action::Authorise);
        // the exact captured SYN replayed on the same tuple after completion: refused,
        // even after the authorised flow is forgotten
        for now in [T0 + 100, T0 + 20_000] {
            let v = s.handle(Dir::Inbound, &captured, now);
            assert_eq!(v.action, Action::Drop);
            let d = v.decision.unwrap();
            assert!(d.reason.contains("replay") && !d.allowed);
            assert_eq!(
                d.peer_identity,
                Some(identity("a")),
                "whose token was replayed"
            );
        }
        assert_eq!(s.counters().denied_replay, 3);
    }

    #[test]
    fn forged_tampered_and_expired_tokens_are_refused() {
        let mut s = engine("b");
        // forged: signed with another PSK
        let mut other = engine_with("a", Config::default(), psk_tokens(&[7u8; 40], "n"));
        let p = syn(A, 40000, b"");
        let w = out(&other.handle(Dir::Outbound, &p, T0), &p);
        let v = s.handle(Dir::Inbound, &w, T0);
        assert_eq!(v.action, Action::Drop);
        assert!(v.decision.unwrap().reason.contains("SYN token refused"));
        // tampered: one byte of the claims changed
        let mut c = engine("a");
        let p = syn(A, 40001, b"");
        let w = out(&c.handle(Dir::Outbound, &p, T0), &p);
        let st = packet::strip(&w).unwrap();
        let mut tok = w[st.token.clone()].to_vec();
        let mid = tok.len() / 2;
        tok[mid] = if tok[mid] == b'A' { b'B' } else { b'A' };
        let tampered = packet::attach(&st.packet, &tok, 1500).unwrap();
        assert_eq!(s.handle(Dir::Inbound, &tampered, T0).action, Action::Drop);
        // lifted to another connection: same token, other ISN
        let mut moved = build(Seg {
            src: A,
            dst: B,
            sport: 40002,
            dport: 80,
            seq: ISN_C + 1,
            ack: None,
            syn: true,
            data: b"",
        });
        moved = packet::attach(&moved, &w[st.token.clone()], 1500).unwrap();
        let v = s.handle(Dir::Inbound, &moved, T0);
        assert_eq!(v.action, Action::Drop);
        assert!(v.decision.unwrap().reason.contains("wrong_binding"));
        // expired: arrives long after its lifetime
        let p = syn(A, 40003, b"");
        let w = out(&c.handle(Dir::Outbound, &p, T0), &p);
        let v = s.handle(Dir::Inbound, &w, T0 + 60_000);
        assert_eq!(v.action, Action::Drop);
        assert!(v.decision.unwrap().reason.contains("expired"));
        assert_eq!(s.counters().denied_token, 4);
        assert_eq!(s.counters().flows, 0);
    }

    // ---- Service DNAT (kube-proxy): the client dials VIP:8080, pod b serves on 80 ----

    const VIP: [u8; 4] = [10, 96, 0, 10];
    const SVC_PORT: u16 = 8080;

    /// A client egress policy for pod a: to `peer` (a NetworkPolicy peer in flow
    /// style) on TCP `port`.
    fn client_egress(peer: &str, port: u16) -> Arc<dyn Policy> {
        policy(&format!(
            r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: a-egress-{port}, namespace: x}}
spec:
  podSelector: {{matchLabels: {{pod: a}}}}
  policyTypes: [Egress]
  egress:
  - to: [{peer}]
    ports: [{{port: {port}, protocol: TCP}}]
"#
        ))
    }

    /// What kube-proxy's DNAT does between the two pods: client → VIP:8080 becomes
    /// client → b:80 on the way in, b:80 → client becomes VIP:8080 → client on the way
    /// back. Checksums are recomputed (and checked by `out` on every hop).
    struct Dnat {
        client: SocketAddr,
    }

    impl Dnat {
        fn vip() -> SocketAddr {
            SocketAddr::from((VIP, SVC_PORT))
        }
        fn pod() -> SocketAddr {
            SocketAddr::from((B, 80))
        }
        fn to_server(&self, p: &[u8]) -> Vec<u8> {
            let v = packet::parse(p).unwrap();
            assert_eq!(SocketAddr::new(v.dst, v.dst_port), Self::vip());
            let n = packet::rewrite_endpoints(p, self.client, Self::pod()).unwrap();
            verify_checksums(&n).unwrap();
            n
        }
        fn to_client(&self, p: &[u8]) -> Vec<u8> {
            let v = packet::parse(p).unwrap();
            assert_eq!(SocketAddr::new(v.src, v.src_port), Self::pod());
            let n = packet::rewrite_endpoints(p, Self::vip(), self.client).unwrap();
            verify_checksums(&n).unwrap();
            n
        }
    }

    /// The client's SYN to VIP:8080 through the DNAT to b:80 (the server's ingress allows
    /// a on 80), and b's SYN-ACK back; returns the client's verdict on that SYN-ACK and
    /// the SYN-ACK as the client's kernel would see it without a token.
    fn syn_ack_through_dnat(c: &mut Engine, s: &mut Engine, sport: u16) -> (Verdict, Vec<u8>) {
        let nat = Dnat {
            client: SocketAddr::from((A, sport)),
        };
        let p = build(Seg {
            src: A,
            dst: VIP,
            sport,
            dport: SVC_PORT,
            seq: ISN_C,
            ack: None,
            syn: true,
            data: b"",
        });
        let w = out(&c.handle(Dir::Outbound, &p, T0), &p);
        let w = nat.to_server(&w);
        let v = s.handle(Dir::Inbound, &w, T0);
        assert_eq!(v.action, Action::Accept, "{:?}", v.decision);
        let d = v.decision.unwrap();
        assert_eq!(d.port, 80, "the server's ingress sees its own port");
        let sa = syn_ack(A, sport, 0);
        let w = out(&s.handle(Dir::Outbound, &sa, T0), &sa);
        let w = nat.to_client(&w);
        (c.handle(Dir::Inbound, &w, T0), nat.to_client(&sa))
    }

    #[test]
    fn egress_through_a_service_dnat_is_judged_on_the_pods_port() {
        // allowed: the policy allows port 80 (the pod's port), the client dialled 8080
        let (mut c, mut s) = (engine("a"), engine("b"));
        c.set_policy(client_egress("{podSelector: {matchLabels: {pod: b}}}", 80));
        let (v, plain) = syn_ack_through_dnat(&mut c, &mut s, 40000);
        assert_eq!(v.action, Action::Accept, "{:?}", v.decision);
        assert_eq!(
            out(&v, &plain),
            plain,
            "client kernel sees VIP:8080, no token"
        );
        let d = v.decision.unwrap();
        assert!(d.allowed);
        assert_eq!(d.peer_identity, Some(identity("b")));
        assert_eq!((d.peer_ip, d.port), (IpAddr::from(B), 80), "judged on b:80");
        assert_eq!(d.dialled, Some(Dnat::vip()));
        assert!(
            d.reason.contains("a-egress-80")
                && d.reason.contains("dialled 10.96.0.10:8080")
                && d.reason.contains("server is 10.0.0.2:80"),
            "{}",
            d.reason
        );
        // the handshake completes through the NAT: proof on the ACK, both authorised
        let nat = Dnat {
            client: SocketAddr::from((A, 40000)),
        };
        let a = build(Seg {
            src: A,
            dst: VIP,
            sport: 40000,
            dport: SVC_PORT,
            seq: ISN_C + 1,
            ack: Some(ISN_S + 1),
            syn: false,
            data: b"",
        });
        let w = nat.to_server(&out(&c.handle(Dir::Outbound, &a, T0), &a));
        assert_eq!(s.handle(Dir::Inbound, &w, T0).action, Action::Authorise);
        let d = nat.to_client(&data_s(40000, b"hi"));
        assert_eq!(c.handle(Dir::Inbound, &d, T0).action, Action::Authorise);

        // denied: a policy that allows only the Service port 8080 does not admit it
        let (mut c, mut s) = (engine("a"), engine("b"));
        c.set_policy(client_egress(
            "{podSelector: {matchLabels: {pod: b}}}",
            SVC_PORT,
        ));
        let (v, _) = syn_ack_through_dnat(&mut c, &mut s, 40001);
        assert_eq!(v.action, Action::Drop);
        let d = v.decision.unwrap();
        assert!(!d.allowed, "{}", d.reason);
        assert_eq!((d.peer_ip, d.port), (IpAddr::from(B), 80));
        assert_eq!(d.dialled, Some(Dnat::vip()));
        assert_eq!(c.counters().denied_policy, 1);
        assert_eq!(c.counters().flows, 0);

        // with reject, the client's connect() fails at once: a RST from VIP:8080
        let mut c = engine_with("a", cfg_reject(), psk_tokens(PSK, "node-1"));
        let mut s = engine("b");
        c.set_policy(client_egress(
            "{podSelector: {matchLabels: {pod: b}}}",
            SVC_PORT,
        ));
        let (v, _) = syn_ack_through_dnat(&mut c, &mut s, 40002);
        assert_eq!(v.action, Action::Accept);
        let rst = out(&v, b"");
        let r = packet::parse(&rst).unwrap();
        assert!(r.flags.rst);
        assert_eq!(
            (r.src, r.src_port),
            (IpAddr::from(VIP), SVC_PORT),
            "the RST matches the socket's own tuple"
        );
    }

    #[test]
    fn egress_ip_block_through_a_service_dnat_matches_the_pod_address_not_the_vip() {
        for (cidr, allowed) in [("10.0.0.2/32", true), ("10.96.0.10/32", false)] {
            let (mut c, mut s) = (engine("a"), engine("b"));
            c.set_policy(client_egress(&format!("{{ipBlock: {{cidr: {cidr}}}}}"), 80));
            let (v, _) = syn_ack_through_dnat(&mut c, &mut s, 40000);
            let d = v.decision.unwrap();
            assert_eq!(d.allowed, allowed, "{cidr}: {}", d.reason);
            let want = if allowed {
                Action::Accept
            } else {
                Action::Drop
            };
            assert_eq!(v.action, want, "{cidr}");
            assert_eq!(d.peer_ip, IpAddr::from(B));
        }
    }

    #[test]
    fn the_synack_token_names_the_syns_destination_as_the_server_saw_it() {
        // b's SYN-ACK token, verified directly: d is b:80 (the DNATed SYN's destination),
        // whatever the client dialled.
        let (mut c, mut s) = (engine("a"), engine("b"));
        let nat = Dnat {
            client: SocketAddr::from((A, 40000)),
        };
        let p = build(Seg {
            src: A,
            dst: VIP,
            sport: 40000,
            dport: SVC_PORT,
            seq: ISN_C,
            ack: None,
            syn: true,
            data: b"",
        });
        let w = nat.to_server(&out(&c.handle(Dir::Outbound, &p, T0), &p));
        let nc = {
            let t = packet::parse(&w).unwrap().token.unwrap().to_vec();
            psk_tokens(PSK, "n")
                .verify_syn(&t, ISN_C, T0 / 1000)
                .unwrap()
                .nonce
        };
        s.handle(Dir::Inbound, &w, T0);
        let sa = syn_ack(A, 40000, 0);
        let w = out(&s.handle(Dir::Outbound, &sa, T0), &sa);
        let t = token_of(&w).unwrap();
        let info = psk_tokens(PSK, "n")
            .verify_syn_ack(&t, ISN_C, ISN_S, &nc, T0 / 1000)
            .unwrap();
        assert_eq!(info.server, Dnat::pod());
    }

    #[test]
    fn forged_syn_ack_is_dropped_and_the_genuine_one_still_works() {
        let (mut c, mut s) = (engine("a"), engine("b"));
        let p = syn(A, 40000, b"");
        let w = out(&c.handle(Dir::Outbound, &p, T0), &p);
        s.handle(Dir::Inbound, &w, T0);
        let sa = syn_ack(A, 40000, 0);
        // an attacker on the path answers first, with a token under another key that
        // echoes nothing it could know
        let forged = {
            let t = psk_tokens(&[9u8; 40], "n");
            let tok = t
                .sign_syn_ack(
                    &identity("b"),
                    &[1; 16],
                    &[2; 16],
                    ISN_C,
                    ISN_S,
                    SocketAddr::from((B, 80)),
                    T0 / 1000,
                )
                .unwrap();
            packet::attach(&sa, &tok, 1500).unwrap()
        };
        let v = c.handle(Dir::Inbound, &forged, T0);
        assert_eq!(v.action, Action::Drop);
        assert_eq!(c.counters().denied_token, 1);
        let genuine = out(&s.handle(Dir::Outbound, &sa, T0), &sa);
        assert_eq!(c.handle(Dir::Inbound, &genuine, T0).action, Action::Accept);
    }

    #[test]
    fn lost_handshake_ack_never_authorises_without_proof_and_recovers() {
        let (mut c, mut s) = (engine("a"), engine("b"));
        let p = syn(A, 40000, b"");
        let w = out(&c.handle(Dir::Outbound, &p, T0), &p);
        s.handle(Dir::Inbound, &w, T0);
        let sa = syn_ack(A, 40000, 0);
        let sa_wire = out(&s.handle(Dir::Outbound, &sa, T0), &sa);
        assert_eq!(c.handle(Dir::Inbound, &sa_wire, T0).action, Action::Accept);
        // the client's ACK with the proof is lost on the wire
        let a = ack_c(40000, b"");
        let _lost = out(&c.handle(Dir::Outbound, &a, T0), &a);
        // the client sends data: unchanged out, dropped at the server (no proof)
        let d = ack_c(40000, b"GET /");
        let v = c.handle(Dir::Outbound, &d, T0 + 1);
        assert_eq!((v.action, v.packet.is_none()), (Action::Accept, true));
        let v = s.handle(Dir::Inbound, &d, T0 + 1);
        assert_eq!(v.action, Action::Drop, "never authorised without the proof");
        // a plain ACK without proof is dropped too
        assert_eq!(s.handle(Dir::Inbound, &a, T0 + 2).action, Action::Drop);
        assert_eq!(s.counters().dropped_no_proof, 2);
        // the server retransmits its SYN-ACK (same token); the client takes it again
        let sa_wire2 = out(&s.handle(Dir::Outbound, &sa, T0 + 1000), &sa);
        assert_eq!(sa_wire, sa_wire2);
        let v = c.handle(Dir::Inbound, &sa_wire2, T0 + 1000);
        assert_eq!(v.action, Action::Accept);
        assert_eq!(out(&v, &sa_wire2), sa);
        // the client kernel answers with a dup ACK: it carries the proof again
        let w = out(&c.handle(Dir::Outbound, &a, T0 + 1000), &a);
        assert!(token_of(&w).is_some());
        let v = s.handle(Dir::Inbound, &w, T0 + 1000);
        assert_eq!(v.action, Action::Authorise);
        // data queued before the mark took effect is authorised too
        assert_eq!(
            s.handle(Dir::Inbound, &d, T0 + 1001).action,
            Action::Authorise
        );
        // a late duplicate of the proof ACK must not reach the socket as data
        assert_eq!(s.handle(Dir::Inbound, &w, T0 + 1002).action, Action::Drop);
    }

    #[test]
    fn syn_reused_after_its_flow_expired_is_a_replay_but_a_denied_syn_may_retry() {
        let (mut c, mut s) = (engine("a"), engine("b"));
        let p = syn(A, 40000, b"");
        let w = out(&c.handle(Dir::Outbound, &p, T0), &p);
        assert_eq!(s.handle(Dir::Inbound, &w, T0).action, Action::Accept);
        // the flow expires half-open (the proof ACK may have been seen on the wire)
        let later = T0 + Config::default().half_open_ms + 1;
        let v = s.handle(Dir::Inbound, &w, later);
        assert_eq!(v.action, Action::Drop);
        assert!(v.decision.unwrap().reason.contains("replay"));
        // a SYN denied by policy may be retransmitted and judged again, not as a replay
        let mut c2 = engine("c");
        let p = syn(A, 40001, b"");
        let w = out(&c2.handle(Dir::Outbound, &p, T0), &p);
        assert_eq!(s.handle(Dir::Inbound, &w, T0).action, Action::Drop);
        let v = s.handle(Dir::Inbound, &w, T0 + 1000);
        assert_eq!(v.action, Action::Drop);
        assert!(v.decision.unwrap().reason.contains("isolated"));
        // ... and after a policy change that admits it, the retransmit gets through
        s.set_policy(policy(""));
        assert_eq!(s.handle(Dir::Inbound, &w, T0 + 3000).action, Action::Accept);
        assert_eq!(s.counters().denied_replay, 1);
    }

    #[test]
    fn half_open_server_flow_expires_and_late_proof_is_dropped() {
        let (mut c, mut s) = (engine("a"), engine("b"));
        let p = syn(A, 40000, b"");
        let w = out(&c.handle(Dir::Outbound, &p, T0), &p);
        s.handle(Dir::Inbound, &w, T0);
        let sa = syn_ack(A, 40000, 0);
        let sa_w = out(&s.handle(Dir::Outbound, &sa, T0), &sa);
        c.handle(Dir::Inbound, &sa_w, T0);
        let a = ack_c(40000, b"");
        let w = out(&c.handle(Dir::Outbound, &a, T0), &a);
        assert_eq!(s.counters().flows, 1);
        let late = T0 + Config::default().half_open_ms + 1;
        let v = s.handle(Dir::Inbound, &w, late);
        assert_eq!(v.action, Action::Drop);
        let sc = s.counters();
        assert_eq!((sc.flows, sc.expirations, sc.dropped_unknown), (0, 1, 1));
    }

    #[test]
    fn bad_proof_is_refused() {
        let (mut c, mut s) = (engine("a"), engine("b"));
        let p = syn(A, 40000, b"");
        let w = out(&c.handle(Dir::Outbound, &p, T0), &p);
        s.handle(Dir::Inbound, &w, T0);
        let sa = syn_ack(A, 40000, 0);
        let sa_w = out(&s.handle(Dir::Outbound, &sa, T0), &sa);
        c.handle(Dir::Inbound, &sa_w, T0);
        let a = ack_c(40000, b"");
        let w = out(&c.handle(Dir::Outbound, &a, T0), &a);
        let st = packet::strip(&w).unwrap();
        let mut proof = w[st.token.clone()].to_vec();
        proof[40] ^= 1;
        let bad = packet::attach(&st.packet, &proof, 1500).unwrap();
        let v = s.handle(Dir::Inbound, &bad, T0);
        assert_eq!(v.action, Action::Drop);
        assert!(v.decision.unwrap().reason.contains("proof"));
        assert_eq!(s.counters().denied_proof, 1);
        // the genuine proof still works
        assert_eq!(s.handle(Dir::Inbound, &w, T0).action, Action::Authorise);
    }

    #[test]
    fn peers_without_tokens_are_judged_by_ip_block() {
        let mut s = engine("b");
        // allowed external client (192.168/16): authorised at once, no proof expected
        let p = syn(EXT, 50000, b"");
        let v = s.handle(Dir::Inbound, &p, T0);
        assert_eq!((v.action, v.packet.is_none()), (Action::Authorise, true));
        let d = v.decision.unwrap();
        assert!(d.allowed && d.peer_identity.is_none());
        // its SYN-ACK, if queued at all, is not given a token
        let sa = build(Seg {
            src: B,
            dst: EXT,
            sport: 80,
            dport: 50000,
            seq: ISN_S,
            ack: Some(ISN_C + 1),
            syn: true,
            data: b"",
        });
        let v = s.handle(Dir::Outbound, &sa, T0);
        assert_eq!((v.action, v.packet), (Action::Authorise, None));
        // a token-less pod address outside the block: denied
        let p = syn([10, 0, 0, 77], 50000, b"");
        let v = s.handle(Dir::Inbound, &p, T0);
        assert_eq!(v.action, Action::Drop);
        assert!(!v.decision.unwrap().allowed);

        // client side: a plain server (no token in its SYN-ACK)
        let mut c = engine("a");
        for (dst, want) in [(EXT, Action::Authorise), ([10, 9, 9, 9], Action::Drop)] {
            let p = build(Seg {
                src: A,
                dst,
                sport: 40000,
                dport: 443,
                seq: ISN_C,
                ack: None,
                syn: true,
                data: b"",
            });
            c.handle(Dir::Outbound, &p, T0);
            let sa = build(Seg {
                src: dst,
                dst: A,
                sport: 443,
                dport: 40000,
                seq: ISN_S,
                ack: Some(ISN_C + 1),
                syn: true,
                data: b"",
            });
            let v = c.handle(Dir::Inbound, &sa, T0);
            assert_eq!(v.action, want);
            assert_eq!(v.packet, None);
            assert!(v.decision.unwrap().peer_identity.is_none());
        }
    }

    #[test]
    fn node_traffic_is_allowed() {
        let cfg = Config {
            allow_node: Some(IpAddr::from(NODE)),
            ..Config::default()
        };
        let mut s = engine_with("b", cfg, psk_tokens(PSK, "n"));
        let p = build(Seg {
            src: NODE,
            dst: B,
            sport: 50000,
            dport: 8080,
            seq: ISN_C,
            ack: None,
            syn: true,
            data: b"",
        });
        let v = s.handle(Dir::Inbound, &p, T0);
        assert_eq!(v.action, Action::Authorise);
        assert!(v.decision.unwrap().reason.contains("node"));
        // without allow_node, the same SYN is judged by policy (port 8080 not open)
        let mut s = engine("b");
        assert_eq!(s.handle(Dir::Inbound, &p, T0).action, Action::Drop);
    }

    #[test]
    fn fast_open_syn_keeps_its_data_and_the_synack_may_ack_it() {
        let (mut c, mut s) = (engine("a"), engine("b"));
        let p = syn(A, 40000, b"GET / HTTP/1.1\r\n\r\n");
        let w = out(&c.handle(Dir::Outbound, &p, T0), &p);
        let v = packet::parse(&w).unwrap();
        assert_eq!(v.payload, b"GET / HTTP/1.1\r\n\r\n");
        let v = s.handle(Dir::Inbound, &w, T0);
        assert_eq!(v.action, Action::Accept);
        assert_eq!(
            out(&v, &w),
            p,
            "server kernel gets the SYN with its data, no token"
        );
        // a server that took the Fast Open data acknowledges it in the SYN-ACK
        let sa = syn_ack(A, 40000, 18);
        let w = out(&s.handle(Dir::Outbound, &sa, T0), &sa);
        assert_eq!(c.handle(Dir::Inbound, &w, T0).action, Action::Accept);
        // acknowledging more than we sent is not our connection
        let mut c = engine("a");
        let p = syn(A, 40001, b"xy");
        c.handle(Dir::Outbound, &p, T0);
        let sa = syn_ack(A, 40001, 3);
        assert_eq!(c.handle(Dir::Inbound, &sa, T0).action, Action::Drop);
    }

    #[test]
    fn syn_with_full_options_goes_out_plain() {
        let mut c = engine("a");
        let b = PacketBuilder::ipv4(A, B, 64)
            .tcp(40000, 80, ISN_C, 1000)
            .syn()
            .options_raw(&[1u8; 36])
            .unwrap();
        let mut p = Vec::new();
        b.write(&mut p, b"").unwrap();
        let v = c.handle(Dir::Outbound, &p, T0);
        assert_eq!((v.action, v.packet), (Action::Accept, None));
        assert_eq!(c.counters().attach_failed, 1);
    }

    #[test]
    fn unknown_flows_and_garbage_are_dropped() {
        let mut e = engine("b");
        let cases = [
            (Dir::Outbound, syn_ack(A, 40000, 0)),
            (Dir::Inbound, syn_ack(A, 40000, 0)),
            (Dir::Inbound, ack_c(40000, b"")),
            (Dir::Outbound, data_s(40000, b"x")),
            (Dir::Inbound, vec![0x45, 0, 0, 20]),
        ];
        assert_eq!(
            e.handle(Dir::Outbound, &[0x45, 0, 0, 20], T0).action,
            Action::Accept,
            "our own unparsable packet goes out unchanged"
        );
        for (dir, p) in cases {
            assert_eq!(e.handle(dir, &p, T0).action, Action::Drop);
        }
        let k = e.counters();
        assert_eq!((k.dropped_unknown, k.dropped_malformed), (4, 2));
        // a local process forging our marker on its own SYN is refused
        let p = packet::attach(&syn(A, 40000, b""), b"x", 1500).unwrap();
        assert_eq!(e.handle(Dir::Outbound, &p, T0).action, Action::Drop);
    }

    #[test]
    fn label_update_applies_to_new_handshakes() {
        let (mut c, mut s) = (engine("c"), engine("b"));
        let p = syn(A, 40000, b"");
        let w = out(&c.handle(Dir::Outbound, &p, T0), &p);
        assert_eq!(s.handle(Dir::Inbound, &w, T0).action, Action::Drop);
        c.set_identity(identity("a"));
        let p = syn(A, 40001, b"");
        let w = out(&c.handle(Dir::Outbound, &p, T0), &p);
        assert_eq!(s.handle(Dir::Inbound, &w, T0).action, Action::Accept);
    }

    #[test]
    fn policy_swap_applies_to_new_handshakes() {
        let (mut c, mut s) = (engine("a"), engine("b"));
        s.set_policy(policy(
            r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress]}
"#,
        ));
        let p = syn(A, 40000, b"");
        let w = out(&c.handle(Dir::Outbound, &p, T0), &p);
        let v = s.handle(Dir::Inbound, &w, T0);
        assert_eq!(v.action, Action::Drop);
        assert!(v.decision.unwrap().reason.contains("deny-all"));
    }

    #[test]
    fn flow_table_and_replay_cache_stay_bounded() {
        let cfg = Config {
            max_flows: 16,
            max_replay: 8,
            ..Config::default()
        };
        let mut c = engine_with("a", cfg.clone(), psk_tokens(PSK, "n"));
        let mut s = engine_with("b", cfg, psk_tokens(PSK, "n"));
        for port in 0..40u16 {
            let p = syn(A, 30000 + port, b"");
            let w = out(&c.handle(Dir::Outbound, &p, T0), &p);
            assert_eq!(s.handle(Dir::Inbound, &w, T0).action, Action::Accept);
        }
        let (cc, sc) = (c.counters(), s.counters());
        assert_eq!((cc.flows, cc.evictions), (16, 24));
        assert_eq!((sc.flows, sc.evictions), (16, 24));
        assert_eq!((sc.replay_entries, sc.replay_evictions), (8, 32));
        // everything goes once its time is up
        s.expire(T0 + 3_600_000);
        c.expire(T0 + 3_600_000);
        assert_eq!((c.counters().flows, s.counters().flows), (0, 0));
        assert_eq!(s.counters().replay_entries, 0);
    }

    #[test]
    fn engine_can_move_to_the_queue_thread() {
        fn send<T: Send>() {}
        send::<Engine>();
        send::<Verdict>();
    }

    /// A random source that fails: the engine fails closed.
    struct Broken;
    impl Random for Broken {
        fn fill(&mut self, _: &mut [u8]) -> Result<(), TokenFailure> {
            Err(TokenFailure {
                code: "crypto",
                message: "no entropy".into(),
            })
        }
    }

    #[test]
    fn broken_randomness_fails_closed() {
        let mut c = Engine::new(
            Config::default(),
            identity("a"),
            psk_tokens(PSK, "n"),
            policy(POLICY),
            Box::new(Broken),
        );
        assert_eq!(
            c.handle(Dir::Outbound, &syn(A, 1, b""), T0).action,
            Action::Drop
        );
    }
}
