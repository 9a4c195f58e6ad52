//! Issue 3's "Done when" on real network namespaces: two pods on a veth pair, real TCP,
//! the real enforcer binary with real PKI keys and NetworkPolicy files. Needs root.

mod common;

use common::*;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;
use trireme_enforcer::control;
use trireme_policy::Identity;

const T: Duration = Duration::from_secs(4);
const DENY_T: Duration = Duration::from_millis(1500);

/// Pods `a` (10.0.0.1, label pod=a) and `b` (10.0.0.2, pod=b) in namespace x; keys for
/// node-a and node-b signed by one CA.
struct World {
    pair: Pair,
    ca: tempfile::TempDir,
    keys_b: tempfile::TempDir,
    pol_a: tempfile::TempDir,
    pol_b: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        require_root();
        let ca = pki_keys("node-a");
        let keys_b = issue_keys(ca.path(), "node-b");
        World {
            pair: Pair::new(),
            ca,
            keys_b,
            pol_a: tempdir(),
            pol_b: tempdir(),
        }
    }

    fn keys_b(&self) -> std::path::PathBuf {
        self.keys_b.path().join("keys")
    }

    fn enforce_a(&self) -> Enforcer {
        self.enforce_a_with(self.ca.path())
    }

    fn enforce_a_with(&self, keys: &Path) -> Enforcer {
        Enforcer::start(
            &self.pair.a,
            EnforcerOpts::new("x", "a", r#"{"pod":"a"}"#, self.pol_a.path(), keys),
        )
    }

    fn enforce_b(&self) -> Enforcer {
        Enforcer::start(
            &self.pair.b,
            EnforcerOpts::new(
                "x",
                "b",
                r#"{"pod":"b"}"#,
                self.pol_b.path(),
                &self.keys_b(),
            ),
        )
    }
}

fn ingress_from_pod(to: &str, from: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: allow-{from}, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: {to}}}}}\n  ingress:\n  - from:\n    - podSelector: {{matchLabels: {{pod: {from}}}}}\n"
    )
}

fn egress_to_pod(from: &str, to: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: egress-{to}, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: {from}}}}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - podSelector: {{matchLabels: {{pod: {to}}}}}\n"
    )
}

fn ingress_from_cidr(to: &str, cidr: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: from-cidr, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: {to}}}}}\n  ingress:\n  - from:\n    - ipBlock: {{cidr: {cidr}}}\n"
    )
}

fn egress_to_cidr(from: &str, cidr: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: to-cidr, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: {from}}}}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock: {{cidr: {cidr}}}\n"
    )
}

/// A denied attempt: connect (with greeting) fails within `DENY_T` and the server never
/// accepts.
fn assert_denied(w: &World, srv: &Server, port: u16) {
    let before = srv.accepted();
    let r = Conn::open(&w.pair.a, IP_B, port, DENY_T);
    assert!(r.is_err(), "connection was allowed");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        srv.accepted(),
        before,
        "the server application saw an accept"
    );
}

fn decision_lines(e: &Enforcer, verdict: &str) -> Vec<serde_json::Value> {
    e.log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "trireme::decision" && v["decision"] == verdict)
        .collect()
}

#[test]
fn allowed_by_labels_with_one_decision_line_each_side() {
    let w = World::new();
    write_policy(w.pol_b.path(), &ingress_from_pod("b", "a"));
    let ea = w.enforce_a();
    let eb = w.enforce_b();
    let srv = Server::start(&w.pair.b, 80);
    exchange(&w.pair.a, IP_B, 80, 100_000, T).expect("allowed connection works");
    assert_eq!(srv.accepted(), 1);
    let sb = eb.status().counters;
    let sa = ea.status().counters;
    assert_eq!(sb.allowed.ingress, 1, "{sb:?}");
    assert_eq!(sa.allowed.egress, 1, "{sa:?}");
    assert!(sb.authorised >= 1 && sa.authorised >= 1);
    // One structured line per decision with peer identity, port and reason.
    let lines = decision_lines(&eb, "allow");
    assert_eq!(lines.len(), 1, "{}", eb.log_text());
    let l = &lines[0];
    assert_eq!(l["direction"], "ingress");
    assert_eq!(l["peer"], "10.0.0.1");
    assert_eq!(l["peer_namespace"], "x");
    assert_eq!(l["peer_labels"], "pod=a");
    assert_eq!(l["port"], 80);
    assert!(l["reason"].as_str().unwrap().contains("allow-a"), "{l}");
    let la = decision_lines(&ea, "allow");
    assert_eq!(la.len(), 1);
    assert_eq!(la[0]["direction"], "egress");
    assert_eq!(la[0]["peer_labels"], "pod=b");
}

#[test]
fn denied_by_labels_server_never_accepts() {
    let w = World::new();
    write_policy(w.pol_b.path(), &ingress_from_pod("b", "c"));
    let _ea = w.enforce_a();
    let eb = w.enforce_b();
    let srv = Server::start(&w.pair.b, 80);
    assert_denied(&w, &srv, 80);
    let s = eb.status().counters;
    assert!(s.denied.ingress >= 1, "{s:?}");
    assert_eq!(s.allowed.ingress, 0);
    let d = decision_lines(&eb, "deny");
    assert!(!d.is_empty());
    assert_eq!(d[0]["peer_labels"], "pod=a");
}

#[test]
fn egress_denied_at_the_client_while_the_server_allows() {
    let w = World::new();
    write_policy(w.pol_a.path(), &egress_to_pod("a", "c"));
    let ea = w.enforce_a();
    let eb = w.enforce_b();
    let srv = Server::start(&w.pair.b, 80);
    assert_denied(&w, &srv, 80);
    let sa = ea.status().counters;
    assert!(sa.denied.egress >= 1, "{sa:?}");
    assert!(eb.status().counters.allowed.ingress >= 1);
    let d = decision_lines(&ea, "deny");
    assert_eq!(d[0]["direction"], "egress");
    assert_eq!(d[0]["peer_labels"], "pod=b");
}

#[test]
fn label_update_through_the_control_socket_takes_effect() {
    let w = World::new();
    write_policy(w.pol_b.path(), &ingress_from_pod("b", "c"));
    let ea = w.enforce_a();
    let _eb = w.enforce_b();
    let srv = Server::start(&w.pair.b, 80);
    assert_denied(&w, &srv, 80);
    let id: Identity = control::register(
        &ea.socket,
        [("pod".to_string(), "c".to_string())].into(),
        vec![],
    )
    .unwrap();
    assert_eq!(id.labels["pod"], "c");
    exchange(&w.pair.a, IP_B, 80, 1000, T).expect("allowed after the label update");
}

#[test]
fn policy_file_change_takes_effect_within_a_second() {
    let w = World::new();
    write_policy(w.pol_b.path(), &ingress_from_pod("b", "c"));
    let _ea = w.enforce_a();
    let eb = w.enforce_b();
    let srv = Server::start(&w.pair.b, 80);
    assert_denied(&w, &srv, 80);
    let reloads = eb.status().counters.policy_reloads;
    write_policy(w.pol_b.path(), &ingress_from_pod("b", "a"));
    assert!(wait_for(Duration::from_secs(1), || eb
        .status()
        .counters
        .policy_reloads
        > reloads));
    exchange(&w.pair.a, IP_B, 80, 1000, T).expect("allowed after the policy change");
    // And back: denied again.
    write_policy(w.pol_b.path(), &ingress_from_pod("b", "c"));
    assert!(wait_for(Duration::from_secs(3), || eb
        .status()
        .counters
        .policy_reloads
        > reloads + 1));
    assert_denied(&w, &srv, 80);
}

#[test]
fn peer_without_enforcer_is_judged_by_ipblock_only() {
    let w = World::new();
    write_policy(w.pol_b.path(), &ingress_from_cidr("b", "10.0.0.0/30"));
    let eb = w.enforce_b();
    let srv = Server::start(&w.pair.b, 80);
    exchange(&w.pair.a, IP_B, 80, 1000, T).expect("ipBlock admits the token-less peer");
    let allow = decision_lines(&eb, "allow");
    assert_eq!(allow[0]["peer_namespace"], "-", "{}", allow[0]);
    // A pod selector can never match a peer without a token.
    write_policy(w.pol_b.path(), &ingress_from_pod("b", "a"));
    assert!(wait_for(Duration::from_secs(3), || eb
        .status()
        .counters
        .policy_reloads
        >= 1));
    assert_denied(&w, &srv, 80);
}

#[test]
fn forged_token_from_another_ca_is_denied() {
    let w = World::new();
    let rogue = pki_keys("node-a"); // same node name, different CA
    let _ea = w.enforce_a_with(rogue.path());
    let eb = w.enforce_b();
    let srv = Server::start(&w.pair.b, 80);
    assert_denied(&w, &srv, 80);
    let s = eb.status().counters;
    assert!(s.denied_token >= 1, "{s:?}");
    assert_eq!(s.allowed.ingress, 0);
}

// ---- raw SYN injection from pod a (no enforcer there) -------------------------------

/// A SYN 10.0.0.1:sport -> 10.0.0.2:dport with `token` attached as trireme does.
fn syn_with_token(sport: u16, dport: u16, isn: u32, token: &[u8]) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ipv4(IP_A.octets(), IP_B.octets(), 64)
        .tcp(sport, dport, isn, 64240)
        .syn()
        .options(&[etherparse::TcpOptionElement::MaximumSegmentSize(1460)])
        .unwrap();
    let mut pkt = Vec::new();
    b.write(&mut pkt, &[]).unwrap();
    trireme_enforcer::packet::attach(&pkt, token, 1500).expect("attach token")
}

/// Sends an IPv4 packet through a raw socket inside `ns`.
fn send_raw(ns: &Netns, pkt: Vec<u8>, dst: Ipv4Addr) {
    trireme_enforcer::netns::run_in(&ns.path(), move || {
        // SAFETY: plain socket syscalls on a local fd with valid buffers.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(dst.octets()),
                },
                sin_zero: [0; 8],
            };
            let n = libc::sendto(
                fd,
                pkt.as_ptr() as *const libc::c_void,
                pkt.len(),
                0,
                &addr as *const libc::sockaddr_in as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            );
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            assert_eq!(n as usize, pkt.len(), "sendto: {err}");
        }
    })
    .unwrap();
}

fn identity_a() -> Identity {
    Identity {
        namespace: "x".into(),
        labels: [("pod".to_string(), "a".to_string())].into(),
        namespace_labels: [("kubernetes.io/metadata.name".to_string(), "x".to_string())].into(),
        ports: vec![],
    }
}

fn sign_syn(keys: &Path, isn: u32, now: u64, nonce: [u8; 16]) -> Vec<u8> {
    trireme_token::init().unwrap();
    let (signer, _) = trireme_token::load_keys(keys).unwrap();
    let claims =
        trireme_token::Claims::syn(identity_a(), "node-a".into(), nonce, isn, [7u8; 32], now);
    signer.sign(&claims).unwrap()
}

#[test]
fn tampered_replayed_and_expired_syn_tokens_are_denied() {
    let w = World::new();
    write_policy(w.pol_b.path(), &ingress_from_pod("b", "a"));
    let eb = w.enforce_b();
    let srv = Server::start(&w.pair.b, 80);
    let now = trireme_token::now_unix();
    let counters = || eb.status().counters;

    // Control: a genuine token from node-a (same CA) is verified and allowed.
    let genuine = sign_syn(w.ca.path(), 1000, now, [1; 16]);
    send_raw(&w.pair.a, syn_with_token(40001, 80, 1000, &genuine), IP_B);
    assert!(
        wait_for(T, || counters().allowed.ingress == 1),
        "genuine SYN not allowed: {:?}",
        counters()
    );

    // Replay: the same token on another connection (same ISN, other port).
    send_raw(&w.pair.a, syn_with_token(40002, 80, 1000, &genuine), IP_B);
    assert!(
        wait_for(T, || counters().replays == 1),
        "replay not caught: {:?}",
        counters()
    );

    // Tampered: one byte of the signed claims changed.
    let mut tampered = sign_syn(w.ca.path(), 2000, now, [2; 16]);
    let mid = tampered.len() / 3;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    send_raw(&w.pair.a, syn_with_token(40003, 80, 2000, &tampered), IP_B);
    assert!(
        wait_for(T, || counters().denied_token == 1),
        "tampered token not denied: {:?}",
        counters()
    );

    // Expired: signed correctly, but its lifetime ended a minute ago.
    let expired = sign_syn(w.ca.path(), 3000, now - 120, [3; 16]);
    send_raw(&w.pair.a, syn_with_token(40004, 80, 3000, &expired), IP_B);
    assert!(
        wait_for(T, || counters().denied_token == 2),
        "expired token not denied: {:?}",
        counters()
    );

    let c = counters();
    assert_eq!(c.allowed.ingress, 1, "{c:?}");
    assert_eq!(srv.accepted(), 0, "the server application saw an accept");
    let denials = decision_lines(&eb, "deny");
    assert!(denials.len() >= 3, "{}", eb.log_text());
}

#[test]
fn a_lost_handshake_ack_neither_authorises_without_proof_nor_hangs() {
    let w = World::new();
    let _ea = w.enforce_a();
    let eb = w.enforce_b();
    let srv = Server::start(&w.pair.b, 8090);
    // In the client netns, after the client enforcer (mangle OUTPUT): drop the second
    // packet of each connection in the original direction, i.e. the handshake ACK that
    // carries the proof. Exactly once per connection.
    w.pair.a.exec(
        "iptables",
        &[
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "--dport",
            "8090",
            "--tcp-flags",
            "ALL",
            "ACK",
            "-m",
            "connbytes",
            "--connbytes",
            "2:2",
            "--connbytes-dir",
            "original",
            "--connbytes-mode",
            "packets",
            "-j",
            "DROP",
        ],
    );
    let started = std::time::Instant::now();
    exchange(&w.pair.a, IP_B, 8090, 200_000, Duration::from_secs(8))
        .expect("connection completes after the lost ACK");
    assert_eq!(srv.accepted(), 1);
    let dropped = w
        .pair
        .a
        .exec("iptables", &["-L", "OUTPUT", "-v", "-x", "-n"]);
    let pkts: u64 = dropped
        .lines()
        .find(|l| l.contains("connbytes"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert_eq!(pkts, 1, "the ACK was not dropped on the wire:\n{dropped}");
    let s = eb.status().counters;
    // The server saw the proof only on the retransmitted ACK, then authorised.
    assert!(s.queued.ack >= 1 && s.authorised >= 1, "{s:?}");
    assert_eq!(s.denied_proof, 0, "{s:?}");
    assert!(started.elapsed() < Duration::from_secs(8));
    // Nothing stays in the handshake table: the authorised flow lingers a few seconds
    // (for packets queued before the mark took effect), then goes.
    assert!(
        wait_for(Duration::from_secs(8), || eb.status().counters.flows == 0),
        "flow left in the handshake table: {:?}",
        eb.status().counters
    );
}

/// Client with enforcer, plain server without one, egress allowed by ipBlock; `tfo` is
/// the server netns' `net.ipv4.tcp_fastopen`.
/// `polluted`: connections the server application accepts besides the client's three
/// (a cookie-less Fast Open listener accepts the first SYN with its token as data before
/// the client's enforcer can know; that connection is reset, the client never uses it).
fn plain_server_case(tfo: &str, polluted: usize) -> Enforcer {
    let w = World::new();
    w.pair.b.exec(
        "sysctl",
        &["-q", "-w", &format!("net.ipv4.tcp_fastopen={tfo}")],
    );
    write_policy(w.pol_a.path(), &egress_to_cidr("a", "10.0.0.2/32"));
    let ea = w.enforce_a();
    let srv = Server::start(&w.pair.b, 80);
    for _ in 0..3 {
        exchange(&w.pair.a, IP_B, 80, 300_000, T).expect("intact transfer to a plain server");
    }
    assert_eq!(srv.accepted(), 3 + polluted);
    let s = ea.status().counters;
    assert_eq!(s.allowed.egress, 3, "{s:?}");
    // Egress to anything else is denied by the same policy.
    write_policy(w.pol_a.path(), &egress_to_cidr("a", "10.9.0.0/16"));
    assert!(wait_for(Duration::from_secs(3), || ea
        .status()
        .counters
        .policy_reloads
        >= 1));
    assert_denied(&w, &srv, 80);
    ea
}

/// TFO server side on with "no cookie required" (0x200), for listeners that ask for TFO
/// (0x203); the plain server application does not.
#[test]
fn plain_server_on_a_host_with_cookieless_fast_open_gets_clean_data() {
    let ea = plain_server_case("0x203", 0);
    assert!(!ea.log_text().contains("Fast Open data"));
}

/// The prototype's pitfall 1: a server whose listener runs TFO without cookies (0x400:
/// every listener; 0x200: no cookie required). Linux hands data of ANY SYN to such a
/// listener's application, whatever options it carries (tcp_try_fastopen does not need a
/// cookie option with TFO_SERVER_COOKIE_NOT_REQD), so the SYN-ACK acknowledges the token
/// bytes. The client must still end up with a working, uncorrupted connection: the
/// enforcer resets that server connection and sends the server its SYNs without a token.
#[test]
fn plain_server_whose_listener_runs_fast_open_without_cookies_gets_clean_data() {
    let ea = plain_server_case("0x603", 1);
    assert!(
        ea.log_text()
            .contains("server took the SYN token as Fast Open data"),
        "{}",
        ea.log_text()
    );
}

const DENY_ALL_INGRESS: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all, namespace: x}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n";

fn enforce_b_with(w: &World, extra: &[&str]) -> Enforcer {
    let mut o = EnforcerOpts::new("x", "b", r#"{"pod":"b"}"#, w.pol_b.path(), &w.keys_b());
    o.extra = extra.iter().map(|s| s.to_string()).collect();
    Enforcer::start(&w.pair.b, o)
}

#[test]
fn reject_answers_denied_connections_with_a_reset() {
    let w = World::new();
    write_policy(w.pol_b.path(), DENY_ALL_INGRESS);
    let _ea = w.enforce_a();
    let eb = enforce_b_with(&w, &["--reject"]);
    let srv = Server::start(&w.pair.b, 80);
    let started = std::time::Instant::now();
    let err = connect(&w.pair.a, IP_B, 80, Duration::from_secs(3)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(srv.accepted(), 0);
    assert!(eb.status().counters.rejected >= 1);
}

#[test]
fn the_node_gateway_is_allowed_unless_denied() {
    let w = World::new();
    write_policy(w.pol_b.path(), DENY_ALL_INGRESS);
    // Pod a plays the node (no enforcer, no token) at the gateway address 10.0.0.1.
    let eb = enforce_b_with(&w, &["--gateway", "10.0.0.1"]);
    let srv = Server::start(&w.pair.b, 80);
    exchange(&w.pair.a, IP_B, 80, 1000, T).expect("the node's probe is allowed");
    drop(eb);
    let _eb = enforce_b_with(&w, &["--gateway", "10.0.0.1", "--deny-node"]);
    assert_denied(&w, &srv, 80);
}

#[test]
fn fail_open_lets_new_connections_through_when_the_enforcer_is_gone() {
    let w = World::new();
    write_policy(w.pol_b.path(), DENY_ALL_INGRESS);
    let mut eb = enforce_b_with(&w, &["--fail-open"]);
    let srv = Server::start(&w.pair.b, 80);
    assert_denied(&w, &srv, 80);
    eb.stop_with(nix::sys::signal::Signal::SIGKILL);
    assert!(w
        .pair
        .b
        .trireme_rules()
        .iter()
        .any(|r| r.contains("--queue-bypass")));
    exchange(&w.pair.a, IP_B, 80, 1000, T).expect("fail-open passes traffic without an enforcer");
}

#[test]
fn reject_refuses_at_once_when_our_egress_denies() {
    let w = World::new();
    write_policy(w.pol_a.path(), &egress_to_pod("a", "c"));
    let mut o = EnforcerOpts::new("x", "a", r#"{"pod":"a"}"#, w.pol_a.path(), w.ca.path());
    o.extra = vec!["--reject".into()];
    let ea = Enforcer::start(&w.pair.a, o);
    let _eb = w.enforce_b();
    let srv = Server::start(&w.pair.b, 80);
    let started = std::time::Instant::now();
    let err = connect(&w.pair.a, IP_B, 80, Duration::from_secs(3)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(ea.status().counters.denied.egress >= 1);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(srv.accepted(), 0);
}

#[test]
fn ipv6_connections_are_authorised_and_denied_the_same_way() {
    let w = World::new();
    for (ns, addr) in [(&w.pair.a, "fd00:7::1/64"), (&w.pair.b, "fd00:7::2/64")] {
        let dev = ns
            .exec("ip", &["-o", "link", "show", "type", "veth"])
            .split(':')
            .nth(1)
            .unwrap()
            .trim()
            .split('@')
            .next()
            .unwrap()
            .to_string();
        ns.exec("ip", &["-6", "addr", "add", addr, "dev", &dev, "nodad"]);
    }
    write_policy(w.pol_b.path(), &ingress_from_pod("b", "a"));
    let _ea = w.enforce_a();
    let eb = w.enforce_b();
    let srv = Server::start_at(&w.pair.b, "[::]:80".parse().unwrap());
    let b6: std::net::Ipv6Addr = "fd00:7::2".parse().unwrap();
    let addr = std::net::SocketAddr::from((b6, 80));
    let conn = trireme_enforcer::netns::run_in(&w.pair.a.path(), move || {
        std::net::TcpStream::connect_timeout(&addr, T)
    })
    .unwrap();
    let mut s = conn.expect("IPv6 connection allowed");
    s.set_read_timeout(Some(T)).unwrap();
    let mut g = [0u8; 1];
    std::io::Read::read_exact(&mut s, &mut g).expect("greeting over IPv6");
    assert_eq!(srv.accepted(), 1);
    let st = eb.status().counters;
    assert_eq!(st.allowed.ingress, 1, "{st:?}");
    // ip6tables rules are in place too.
    assert!(w
        .pair
        .b
        .trireme_rules_of("ip6tables-save")
        .contains(&"-A INPUT -j TRIREME-IN".to_string()));
    // And a denied peer is denied over IPv6 as well.
    write_policy(w.pol_b.path(), &ingress_from_pod("b", "c"));
    assert!(wait_for(Duration::from_secs(3), || eb
        .status()
        .counters
        .policy_reloads
        >= 1));
    let r = trireme_enforcer::netns::run_in(&w.pair.a.path(), move || {
        std::net::TcpStream::connect_timeout(&addr, DENY_T)
    })
    .unwrap();
    assert!(r.is_err());
    assert_eq!(srv.accepted(), 1);
}
