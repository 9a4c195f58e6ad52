//! The NetworkPolicy decision engine: policies compiled once, then pure lookups.

use crate::error::{FieldError, PolicyError};
use crate::identity::{Identity, NamedPort, Protocol, NAMESPACE_NAME_LABEL};
use crate::selector::{compile_selector, valid_port_name, Selector};
use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// The other end of a connection, as the enforcer knows it.
#[derive(Debug, Clone, Copy)]
pub enum Peer<'a> {
    /// A peer that proved its identity (a pod with a token); `ip` is its address as seen
    /// here, if known (ipBlock rules match it too).
    Pod {
        identity: &'a Identity,
        ip: Option<IpAddr>,
    },
    /// A peer without identity: only ipBlock rules can match it.
    External { ip: IpAddr },
}

impl Peer<'_> {
    fn ip(&self) -> Option<IpAddr> {
        match self {
            Peer::Pod { ip, .. } => *ip,
            Peer::External { ip } => Some(*ip),
        }
    }
}

/// Direction of traffic relative to the pod a policy selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

/// Why a decision came out as it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// No policy selects the pod for this direction: allowed.
    NotSelected { direction: Direction },
    /// Allowed by rule `rule` (0-based) of `policy` (`namespace/name`).
    AllowedBy {
        policy: Arc<str>,
        direction: Direction,
        rule: usize,
    },
    /// The pod is isolated for this direction by `policies` and none of their rules matched.
    Isolated {
        direction: Direction,
        policies: Vec<Arc<str>>,
    },
    /// A pod talking to itself: Kubernetes does not let NetworkPolicy block loopback, and the
    /// enforcer never sees it (upstream's e2e truth tables `AllowLoopback`).
    Loopback,
}

impl Reason {
    /// The reason naming the pod, e.g. `no policy selects x/a for ingress (allowed by default)`.
    pub fn for_pod<'a>(&'a self, pod: &'a str) -> impl fmt::Display + 'a {
        ReasonFor { reason: self, pod }
    }
}

struct ReasonFor<'a> {
    reason: &'a Reason,
    pod: &'a str,
}

impl fmt::Display for ReasonFor<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason {
            Reason::NotSelected { direction } => write!(
                f,
                "no policy selects {} for {direction} (allowed by default)",
                self.pod
            ),
            other => other.fmt(f),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotSelected { direction } => write!(
                f,
                "no policy selects the pod for {direction} (allowed by default)"
            ),
            Reason::AllowedBy {
                policy,
                direction,
                rule,
            } => write!(f, "allowed by {policy} {direction} rule {rule}"),
            Reason::Isolated { policies, .. } => {
                f.write_str("isolated by ")?;
                for (i, p) in policies.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(p)?;
                }
                f.write_str("; no rule matched")
            }
            Reason::Loopback => f.write_str("a pod can always reach itself (loopback)"),
        }
    }
}

/// The verdict for one direction of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allowed { "allowed" } else { "denied" };
        write!(f, "{verdict}: {}", self.reason)
    }
}

#[derive(Debug, Clone)]
enum PortMatch {
    /// Every port of the protocol.
    Any,
    Range(u16, u16),
    /// Resolved on the destination pod's named ports.
    Named(String),
}

#[derive(Debug, Clone)]
struct PortRule {
    proto: Protocol,
    port: PortMatch,
}

impl PortRule {
    #[inline]
    fn matches(&self, port: u16, proto: Protocol, dst_ports: Option<&[NamedPort]>) -> bool {
        if self.proto != proto {
            return false;
        }
        match &self.port {
            PortMatch::Any => true,
            PortMatch::Range(lo, hi) => (*lo..=*hi).contains(&port),
            PortMatch::Named(name) => dst_ports.is_some_and(|ports| {
                ports
                    .iter()
                    .any(|p| p.name == *name && p.protocol == proto && p.port == port)
            }),
        }
    }
}

#[derive(Debug, Clone)]
struct Block {
    cidr: IpNet,
    except: Vec<IpNet>,
}

impl Block {
    fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.cidr.contains(&ip) && !self.except.iter().any(|e| e.contains(&ip))
    }
}

#[derive(Debug, Clone)]
enum NsMatch {
    /// Pods of the policy's own namespace (nil namespaceSelector).
    Same(Arc<str>),
    Select(Selector),
}

#[derive(Debug, Clone)]
enum PeerMatch {
    Pods {
        ns: NsMatch,
        pods: Selector,
    },
    Block(Block),
    /// An invalid peer compiled leniently: matches nothing.
    Nothing,
}

impl PeerMatch {
    #[inline]
    fn matches(&self, peer: &Peer) -> bool {
        match self {
            PeerMatch::Block(b) => peer.ip().is_some_and(|ip| b.contains(ip)),
            PeerMatch::Pods { ns, pods } => match peer {
                Peer::Pod { identity, .. } => {
                    let ns_ok = match ns {
                        NsMatch::Same(n) => identity.namespace == **n,
                        NsMatch::Select(s) => s.matches_with(|k| ns_label(identity, k)),
                    };
                    ns_ok && pods.matches(&identity.labels)
                }
                Peer::External { .. } => false,
            },
            PeerMatch::Nothing => false,
        }
    }
}

/// A namespace label of an identity; `kubernetes.io/metadata.name` is always its namespace.
#[inline]
fn ns_label<'a>(id: &'a Identity, key: &str) -> Option<&'a str> {
    match id.namespace_labels.get(key) {
        Some(v) => Some(v.as_str()),
        None if key == NAMESPACE_NAME_LABEL => Some(id.namespace.as_str()),
        None => None,
    }
}

#[derive(Debug, Clone)]
struct Rule {
    /// Empty: every peer.
    peers: Vec<PeerMatch>,
    /// Empty: every port and protocol.
    ports: Vec<PortRule>,
}

#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    name: Arc<str>,
    selector: Selector,
    /// `None` when the policy does not apply to this direction.
    ingress: Option<Vec<Rule>>,
    egress: Option<Vec<Rule>>,
}

/// Policies of one namespace for one direction, indexed by one `key=value` pair every
/// selected pod must carry, so a decision only looks at policies that can select the pod.
#[derive(Debug, Default)]
struct DirIndex {
    always: Vec<u32>,
    by_pair: HashMap<String, HashMap<String, Vec<u32>>>,
}

#[derive(Debug, Default)]
struct NsIndex {
    ingress: DirIndex,
    egress: DirIndex,
}

/// Compiled NetworkPolicies. Cheap to share (`Send + Sync`, put it in an `Arc`).
#[derive(Debug, Default)]
pub struct Engine {
    policies: Vec<Compiled>,
    namespaces: HashMap<String, NsIndex>,
}

/// The namespace of a policy as Kubernetes defaults it.
pub(crate) fn policy_namespace(np: &NetworkPolicy) -> &str {
    np.metadata.namespace.as_deref().unwrap_or("default")
}

pub(crate) fn policy_object_name(np: &NetworkPolicy) -> String {
    format!(
        "{}/{}",
        policy_namespace(np),
        np.metadata.name.as_deref().unwrap_or("")
    )
}

impl Engine {
    /// Compiles policies. Policies are expected to be validated already (by loading them
    /// with [`crate::Cluster`] or with [`Engine::try_new`]); any invalid part is compiled
    /// fail-closed: an invalid peer or port matches nothing, an invalid podSelector selects
    /// every pod of the namespace.
    pub fn new(policies: &[NetworkPolicy]) -> Engine {
        let mut errs = Vec::new();
        let compiled = policies
            .iter()
            .map(|p| compile_policy(p, &mut errs))
            .collect();
        Engine::index(compiled)
    }

    /// Validates and compiles; the first invalid policy is an error and nothing is built.
    pub fn try_new(policies: &[NetworkPolicy]) -> Result<Engine, PolicyError> {
        let mut compiled = Vec::with_capacity(policies.len());
        for p in policies {
            let mut errs = Vec::new();
            let c = compile_policy(p, &mut errs);
            if let Some(e) = errs.into_iter().next() {
                return Err(PolicyError::Invalid {
                    file: "<input>".into(),
                    kind: "NetworkPolicy".into(),
                    object: policy_object_name(p),
                    field: e.field,
                    message: e.message,
                });
            }
            compiled.push(c);
        }
        Ok(Engine::index(compiled))
    }

    fn index(policies: Vec<Compiled>) -> Engine {
        let mut namespaces: HashMap<String, NsIndex> = HashMap::new();
        for (i, p) in policies.iter().enumerate() {
            let ns = p.name.split_once('/').map(|(ns, _)| ns).unwrap_or("");
            let idx = namespaces.entry(ns.to_string()).or_default();
            let pair = p.selector.required_pair();
            for (applies, dir) in [
                (p.ingress.is_some(), &mut idx.ingress),
                (p.egress.is_some(), &mut idx.egress),
            ] {
                if !applies {
                    continue;
                }
                match pair {
                    Some((k, v)) => dir
                        .by_pair
                        .entry(k.to_string())
                        .or_default()
                        .entry(v.to_string())
                        .or_default()
                        .push(i as u32),
                    None => dir.always.push(i as u32),
                }
            }
        }
        Engine {
            policies,
            namespaces,
        }
    }

    /// Number of compiled policies.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// Whether there are no policies (everything is allowed).
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// May `from` open a connection to `pod` on `port`/`proto`? (The pod's ingress side.)
    /// Named ports are resolved on `pod`'s own ports.
    pub fn ingress(&self, pod: &Identity, from: &Peer, port: u16, proto: Protocol) -> Decision {
        self.decide(Direction::Ingress, pod, from, port, proto, Some(&pod.ports))
    }

    /// May `pod` open a connection to `to` on `port`/`proto`? (The pod's egress side.)
    /// Named ports are resolved on the destination's ports (none for an external peer).
    pub fn egress(&self, pod: &Identity, to: &Peer, port: u16, proto: Protocol) -> Decision {
        let dst_ports = match to {
            Peer::Pod { identity, .. } => Some(identity.ports.as_slice()),
            Peer::External { .. } => None,
        };
        self.decide(Direction::Egress, pod, to, port, proto, dst_ports)
    }

    /// Visits the policies of `pod`'s namespace that select it for `dir`, until `f` says stop.
    #[inline]
    fn for_each_selecting(
        &self,
        dir: Direction,
        pod: &Identity,
        mut f: impl FnMut(usize, &Compiled) -> bool,
    ) {
        let Some(ns) = self.namespaces.get(&pod.namespace) else {
            return;
        };
        let idx = match dir {
            Direction::Ingress => &ns.ingress,
            Direction::Egress => &ns.egress,
        };
        let mut visit = |i: u32| {
            let p = &self.policies[i as usize];
            if p.selector.matches(&pod.labels) {
                f(i as usize, p)
            } else {
                true
            }
        };
        for &i in &idx.always {
            if !visit(i) {
                return;
            }
        }
        if idx.by_pair.is_empty() {
            return;
        }
        for (k, v) in &pod.labels {
            if let Some(list) = idx.by_pair.get(k.as_str()).and_then(|m| m.get(v.as_str())) {
                for &i in list {
                    if !visit(i) {
                        return;
                    }
                }
            }
        }
    }

    fn decide(
        &self,
        dir: Direction,
        pod: &Identity,
        peer: &Peer,
        port: u16,
        proto: Protocol,
        dst_ports: Option<&[NamedPort]>,
    ) -> Decision {
        let mut selected = false;
        let mut allowed: Option<(usize, usize)> = None;
        self.for_each_selecting(dir, pod, |i, p| {
            selected = true;
            let rules = match dir {
                Direction::Ingress => p.ingress.as_deref(),
                Direction::Egress => p.egress.as_deref(),
            }
            .unwrap_or_default();
            for (r, rule) in rules.iter().enumerate() {
                let port_ok = rule.ports.is_empty()
                    || rule
                        .ports
                        .iter()
                        .any(|pr| pr.matches(port, proto, dst_ports));
                if port_ok && (rule.peers.is_empty() || rule.peers.iter().any(|m| m.matches(peer)))
                {
                    allowed = Some((i, r));
                    return false;
                }
            }
            true
        });
        if let Some((i, rule)) = allowed {
            return Decision {
                allowed: true,
                reason: Reason::AllowedBy {
                    policy: self.policies[i].name.clone(),
                    direction: dir,
                    rule,
                },
            };
        }
        if !selected {
            return Decision {
                allowed: true,
                reason: Reason::NotSelected { direction: dir },
            };
        }
        let mut idx = Vec::new();
        self.for_each_selecting(dir, pod, |i, _| {
            idx.push(i);
            true
        });
        idx.sort_unstable();
        Decision {
            allowed: false,
            reason: Reason::Isolated {
                direction: dir,
                policies: idx
                    .into_iter()
                    .map(|i| self.policies[i].name.clone())
                    .collect(),
            },
        }
    }
}

/// Validates and compiles one policy; problems go to `errs` with field paths and the
/// offending part is compiled fail-closed.
pub(crate) fn compile_policy(np: &NetworkPolicy, errs: &mut Vec<FieldError>) -> Compiled {
    let ns: Arc<str> = Arc::from(policy_namespace(np));
    let name: Arc<str> = Arc::from(policy_object_name(np).as_str());
    if np.metadata.name.as_deref().unwrap_or("").is_empty() {
        errs.push(FieldError::new("metadata.name", "is required"));
    }
    let empty = NetworkPolicySpec::default();
    let spec = np.spec.as_ref().unwrap_or(&empty);
    let selector =
        compile_selector(spec.pod_selector.as_ref(), "spec.podSelector", errs).unwrap_or_default();

    let (mut has_ingress, mut has_egress) = (false, false);
    match &spec.policy_types {
        Some(types) if !types.is_empty() => {
            for (i, t) in types.iter().enumerate() {
                let seen = match t.as_str() {
                    "Ingress" => std::mem::replace(&mut has_ingress, true),
                    "Egress" => std::mem::replace(&mut has_egress, true),
                    other => {
                        errs.push(FieldError::new(
                            format!("spec.policyTypes[{i}]"),
                            format!("unknown policy type {other:?} (expected Ingress or Egress)"),
                        ));
                        false
                    }
                };
                if seen {
                    errs.push(FieldError::new(
                        format!("spec.policyTypes[{i}]"),
                        format!("duplicate policy type {t:?}"),
                    ));
                }
            }
        }
        _ => {
            has_ingress = true;
            has_egress = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
        }
    }

    let mut ingress = Vec::new();
    for (i, r) in spec.ingress.iter().flatten().enumerate() {
        let path = format!("spec.ingress[{i}]");
        ingress.push(compile_rule(
            &ns,
            r.from.as_deref(),
            r.ports.as_deref(),
            &path,
            "from",
            errs,
        ));
    }
    let mut egress = Vec::new();
    for (i, r) in spec.egress.iter().flatten().enumerate() {
        let path = format!("spec.egress[{i}]");
        egress.push(compile_rule(
            &ns,
            r.to.as_deref(),
            r.ports.as_deref(),
            &path,
            "to",
            errs,
        ));
    }
    Compiled {
        name,
        selector,
        ingress: has_ingress.then_some(ingress),
        egress: has_egress.then_some(egress),
    }
}

fn compile_rule(
    ns: &Arc<str>,
    peers: Option<&[NetworkPolicyPeer]>,
    ports: Option<&[NetworkPolicyPort]>,
    path: &str,
    peers_field: &str,
    errs: &mut Vec<FieldError>,
) -> Rule {
    let peers = peers
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, p)| compile_peer(ns, p, &format!("{path}.{peers_field}[{i}]"), errs))
        .collect();
    let ports = ports
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, p)| compile_port(p, &format!("{path}.ports[{i}]"), errs))
        .collect();
    Rule { peers, ports }
}

fn compile_peer(
    ns: &Arc<str>,
    p: &NetworkPolicyPeer,
    path: &str,
    errs: &mut Vec<FieldError>,
) -> PeerMatch {
    if let Some(b) = &p.ip_block {
        if p.pod_selector.is_some() || p.namespace_selector.is_some() {
            errs.push(FieldError::new(
                path,
                "ipBlock cannot be combined with podSelector or namespaceSelector in one peer",
            ));
            return PeerMatch::Nothing;
        }
        return compile_block(b, &format!("{path}.ipBlock"), errs)
            .map(PeerMatch::Block)
            .unwrap_or(PeerMatch::Nothing);
    }
    if p.pod_selector.is_none() && p.namespace_selector.is_none() {
        errs.push(FieldError::new(
            path,
            "must specify a peer: podSelector, namespaceSelector or ipBlock",
        ));
        return PeerMatch::Nothing;
    }
    let pods = compile_selector(
        p.pod_selector.as_ref(),
        &format!("{path}.podSelector"),
        errs,
    );
    let ns = match &p.namespace_selector {
        None => Some(NsMatch::Same(ns.clone())),
        Some(s) => compile_selector(Some(s), &format!("{path}.namespaceSelector"), errs)
            .map(NsMatch::Select),
    };
    match (ns, pods) {
        (Some(ns), Some(pods)) => PeerMatch::Pods { ns, pods },
        _ => PeerMatch::Nothing,
    }
}

/// `ADDRESS/PREFIX` with the standard library's strict address syntax (no leading zeros),
/// a decimal prefix length, host bits cleared.
fn parse_cidr(s: &str) -> Option<IpNet> {
    let (addr, len) = s.split_once('/')?;
    if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let addr: IpAddr = addr.parse().ok()?;
    IpNet::new(addr, len.parse().ok()?).ok().map(|n| n.trunc())
}

fn compile_block(
    b: &k8s_openapi::api::networking::v1::IPBlock,
    path: &str,
    errs: &mut Vec<FieldError>,
) -> Option<Block> {
    let cidr = match parse_cidr(&b.cidr) {
        Some(c) => c,
        None => {
            errs.push(FieldError::new(
                format!("{path}.cidr"),
                format!(
                    "invalid CIDR {:?} (expected e.g. 10.0.0.0/8 or fd00::/8)",
                    b.cidr
                ),
            ));
            return None;
        }
    };
    let mut except = Vec::new();
    let mut ok = true;
    for (i, e) in b.except.iter().flatten().enumerate() {
        let p = format!("{path}.except[{i}]");
        match parse_cidr(e) {
            None => {
                errs.push(FieldError::new(p, format!("invalid CIDR {e:?}")));
                ok = false;
            }
            Some(ex) => {
                if !(cidr.contains(&ex) && ex.prefix_len() > cidr.prefix_len()) {
                    errs.push(FieldError::new(
                        p,
                        format!("{e} is not a strict subset of cidr {}", b.cidr),
                    ));
                    ok = false;
                }
                except.push(ex);
            }
        }
    }
    ok.then_some(Block { cidr, except })
}

fn parse_protocol(s: Option<&str>, path: &str, errs: &mut Vec<FieldError>) -> Option<Protocol> {
    match s {
        None | Some("TCP") => Some(Protocol::Tcp),
        Some("UDP") => Some(Protocol::Udp),
        Some("SCTP") => Some(Protocol::Sctp),
        Some(other) => {
            errs.push(FieldError::new(
                path,
                format!("unknown protocol {other:?} (expected TCP, UDP or SCTP)"),
            ));
            None
        }
    }
}

/// A port rule that never matches (SCTP port range 0..=0 does not exist on the wire).
fn never_port() -> PortRule {
    PortRule {
        proto: Protocol::Sctp,
        port: PortMatch::Range(1, 0),
    }
}

fn compile_port(p: &NetworkPolicyPort, path: &str, errs: &mut Vec<FieldError>) -> PortRule {
    let before = errs.len();
    let proto = parse_protocol(p.protocol.as_deref(), &format!("{path}.protocol"), errs);
    let port = match &p.port {
        None => {
            if p.end_port.is_some() {
                errs.push(FieldError::new(
                    format!("{path}.endPort"),
                    "endPort requires a numeric port",
                ));
            }
            PortMatch::Any
        }
        Some(IntOrString::Int(n)) => {
            let lo = *n;
            if !(1..=65535).contains(&lo) {
                errs.push(FieldError::new(
                    format!("{path}.port"),
                    format!("port {lo} is out of range 1-65535"),
                ));
            }
            let hi = match p.end_port {
                None => lo,
                Some(e) => {
                    if e < lo {
                        errs.push(FieldError::new(
                            format!("{path}.endPort"),
                            format!("endPort {e} is below port {lo}"),
                        ));
                    } else if e > 65535 {
                        errs.push(FieldError::new(
                            format!("{path}.endPort"),
                            format!("endPort {e} is out of range 1-65535"),
                        ));
                    }
                    e
                }
            };
            PortMatch::Range(lo.clamp(0, 65535) as u16, hi.clamp(0, 65535) as u16)
        }
        Some(IntOrString::String(name)) => {
            if !valid_port_name(name) {
                errs.push(FieldError::new(
                    format!("{path}.port"),
                    format!("invalid port name {name:?} (1-15 lowercase alphanumerics and '-', at least one letter)"),
                ));
            }
            if p.end_port.is_some() {
                errs.push(FieldError::new(
                    format!("{path}.endPort"),
                    "endPort requires a numeric port, not a named port",
                ));
            }
            PortMatch::Named(name.clone())
        }
    };
    match proto {
        Some(proto) if errs.len() == before => PortRule { proto, port },
        _ => never_port(),
    }
}

/// Named ports of `ports` by name, for callers resolving a port name (e.g. a CLI).
pub fn resolve_named_port(ports: &[NamedPort], name: &str, proto: Protocol) -> Option<u16> {
    ports
        .iter()
        .find(|p| p.name == name && p.protocol == proto)
        .map(|p| p.port)
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn f<T: Send + Sync>() {}
    f::<Engine>();
    f::<BTreeMap<String, String>>();
}
