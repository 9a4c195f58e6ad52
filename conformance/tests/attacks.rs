//! Issue 6 "Attacks", on a sandbox cluster: x/a admits only pod=b. An attacker pod on the
//! same bridge, with no enforcer, sends raw SYNs (IP_HDRINCL raw socket) carrying crafted
//! tokens: forged by its own CA, tampered labels, expired, lifted from another connection,
//! a replayed captured SYN, garbage options and payloads. Every one is denied: no SYN-ACK
//! comes back, the server application never accepts, the enforcer counts the refusal and
//! keeps serving the legitimate client. Last, a pod with a full TCP stack and its own
//! enforcer running on a rogue CA's keys, labelled like the allowed client, is refused.

use etherparse::PacketBuilder;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use trireme_conformance::cluster::{serve_ports, Cluster, ClusterSpec, PodSpec};
use trireme_conformance::probe::probe_here;
use trireme_conformance::{unique_name, Netns, NetworkConfigList, RuntimeConf};
use trireme_enforcer::packet;
use trireme_policy::Identity;
use trireme_token::{Claims, Signer};

const POLICY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: b}}
"#;

fn spec() -> ClusterSpec {
    let pod = |name: &str| PodSpec {
        namespace: "x".into(),
        name: name.into(),
        labels: BTreeMap::from([("pod".to_string(), name.to_string())]),
        ports: serve_ports(&[80]),
    };
    let mut s = ClusterSpec::netpol();
    s.namespaces = vec![(
        "x".into(),
        BTreeMap::from([("ns".to_string(), "x".to_string())]),
    )];
    s.pods = vec![pod("a"), pod("b"), pod("c")];
    s.services = false;
    s.k8s_node = false;
    s
}

fn identity(pod: &str) -> Identity {
    Identity {
        namespace: "x".into(),
        labels: BTreeMap::from([("pod".to_string(), pod.to_string())]),
        namespace_labels: BTreeMap::from([
            ("ns".to_string(), "x".to_string()),
            (
                trireme_policy::NAMESPACE_NAME_LABEL.to_string(),
                "x".to_string(),
            ),
        ]),
        ports: Vec::new(),
    }
}

fn signer(dir: &std::path::Path) -> Signer {
    trireme_token::load_keys(dir)
        .unwrap_or_else(|e| panic!("keys {}: {e}", dir.display()))
        .0
}

/// A SYN token for `pod`'s identity bound to `isn`, signed by `s`, valid `iat..exp`.
fn token(s: &Signer, pod: &str, isn: u32, iat: u64, exp: u64) -> Vec<u8> {
    let secret = trireme_token::proof::new_secret();
    let mut c = Claims::syn(
        identity(pod),
        s.node_name().unwrap_or("node").to_string(),
        trireme_token::new_nonce().unwrap(),
        isn,
        trireme_token::proof::commit(&secret),
        iat,
    );
    c.exp = exp;
    s.sign(&c).expect("sign")
}

/// A plain SYN (IPv4 + TCP with MSS), optional raw options and payload.
fn syn(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    isn: u32,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, 80, isn, 64240)
        .syn();
    let b = if options.is_empty() {
        b.options_raw(&[2, 4, 0x05, 0xb4]).unwrap()
    } else {
        b.options_raw(options).unwrap()
    };
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).unwrap();
    out
}

fn fd_result(r: libc::c_int, what: &str) -> std::io::Result<libc::c_int> {
    if r < 0 {
        let e = std::io::Error::last_os_error();
        Err(std::io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(r)
    }
}

fn sockaddr_in(ip: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    }
}

/// From the calling thread's namespace: sends `pkt` (a whole IPv4 packet) through a raw
/// socket and reports whether a SYN-ACK from `server` to `sport` arrives within `wait`.
fn send_and_watch(pkt: &[u8], server: Ipv4Addr, sport: u16, wait: Duration) -> bool {
    // SAFETY: plain socket calls on fds owned here and closed before returning.
    unsafe {
        let rx = fd_result(
            libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP),
            "raw rx socket",
        )
        .unwrap();
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        libc::setsockopt(
            rx,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
        let tx = fd_result(
            libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW),
            "raw tx socket",
        )
        .unwrap();
        let sa = sockaddr_in(server);
        let n = libc::sendto(
            tx,
            pkt.as_ptr() as *const libc::c_void,
            pkt.len(),
            0,
            &sa as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        libc::close(tx);
        assert_eq!(
            n as usize,
            pkt.len(),
            "sendto: {}",
            std::io::Error::last_os_error()
        );
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 4096];
        let mut seen = false;
        while Instant::now() < deadline {
            let n = libc::recv(rx, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0);
            if n <= 0 {
                continue;
            }
            let p = &buf[..n as usize];
            let ihl = ((p[0] & 0x0f) as usize) * 4;
            if p.len() < ihl + 14 || p[12..16] != server.octets() {
                continue;
            }
            let t = &p[ihl..];
            let dport = u16::from_be_bytes([t[2], t[3]]);
            if dport == sport && t[13] & 0x12 == 0x12 {
                seen = true;
                break;
            }
        }
        libc::close(rx);
        seen
    }
}

/// Captures, on a host interface, the first SYN carrying our marker to `dst`:80 (a cooked
/// packet socket for every protocol; IPv6 and others are skipped by the parser).
fn capture_syn(ifname: &str, dst: Ipv4Addr, wait: Duration) -> Option<Vec<u8>> {
    // SAFETY: plain socket calls on an fd owned here and closed before returning.
    unsafe {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        let fd = fd_result(
            libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, proto as i32),
            "packet socket",
        )
        .unwrap();
        let name = std::ffi::CString::new(ifname).unwrap();
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
        assert!(sll.sll_ifindex > 0, "no interface {ifname}");
        fd_result(
            libc::bind(
                fd,
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            ),
            "bind packet socket",
        )
        .unwrap();
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 4096];
        let mut found = None;
        while Instant::now() < deadline {
            let n = libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0);
            if n <= 0 {
                continue;
            }
            let p = &buf[..n as usize];
            if let Ok(v) = packet::parse(p) {
                if v.flags.syn && !v.flags.ack && v.dst == dst && v.token.is_some() {
                    found = Some(p.to_vec());
                    break;
                }
            }
        }
        libc::close(fd);
        found
    }
}

/// A pod attached through the cluster's chain but with trireme's `keyDir` pointing at a
/// rogue CA's keys; DEL'd on drop.
struct RoguePod<'a> {
    c: &'a Cluster,
    list: NetworkConfigList,
    rc: RuntimeConf,
    netns: Netns,
}

impl<'a> RoguePod<'a> {
    fn attach(c: &'a Cluster, keys: &std::path::Path) -> RoguePod<'a> {
        let netns = Netns::new("tcr").expect("rogue netns");
        let mut list = c.list.clone();
        list.plugins[1]["keyDir"] = serde_json::json!(keys);
        let rc = RuntimeConf::new(&unique_name("c"), netns.path(), "eth0")
            .arg("IgnoreUnknown", "1")
            .arg("K8S_POD_NAMESPACE", "x")
            .arg("K8S_POD_NAME", "rogue")
            .capability(
                "io.kubernetes.cri.pod-annotations",
                serde_json::json!({"trireme.io/labels": r#"{"pod":"b"}"#}),
            );
        let pod = RoguePod { c, list, rc, netns };
        pod.c.rt.add(&pod.list, &pod.rc).expect("ADD the rogue pod");
        pod
    }
}

impl Drop for RoguePod<'_> {
    fn drop(&mut self) {
        let _ = self.c.rt.del(&self.list, &self.rc);
    }
}

/// Counters of x/a's enforcer that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    denied_token: u64,
    replays: u64,
    denied: u64,
    pid: u32,
}

fn seen(c: &Cluster) -> Seen {
    let st = c.status(c.pod("x/a")).expect("x/a's enforcer answers");
    Seen {
        denied_token: st.counters.denied_token,
        replays: st.counters.replays,
        denied: st.counters.denied.ingress + st.counters.denied.egress,
        pid: st.pid,
    }
}

/// Waits (up to 2 s) until `f` holds for x/a's counters.
fn counted(c: &Cluster, f: impl Fn(&Seen) -> bool) -> Seen {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let s = seen(c);
        if f(&s) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn crafted_tokens_from_an_attacker_pod_are_all_denied() {
    trireme_conformance::require_root();
    let mut c = Cluster::new(spec()).expect("create the cluster");
    c.apply_policies(POLICY).expect("apply the policy");
    let att = c.add_bare_pod("x", "attacker").expect("attacker pod");
    let server = c.pod("x/a").ip;
    let attacker_ip = c.bare[att].ip;
    let to_a = SocketAddr::new(server.into(), 80);
    let from = |k: &str| {
        c.pod(k)
            .netns
            .run(|| probe_here(to_a, Duration::from_secs(2)))
    };
    assert_eq!(from("x/b").ok(), Some(true), "x/b must reach x/a");
    assert_eq!(from("x/c").ok(), Some(false), "x/c must not reach x/a");
    // Without any token, the attacker is a peer without identity: denied by policy.
    assert!(
        !c.bare[att]
            .netns
            .run(|| probe_here(to_a, Duration::from_secs(1)))
            .unwrap(),
        "a plain connection from the attacker got through"
    );

    // Capture a genuine SYN of x/b on its host veth while x/b connects.
    let veth = c.pod("x/b").host_veth.clone().expect("x/b's host veth");
    let captured = std::thread::scope(|s| {
        let cap = s.spawn(|| capture_syn(&veth, server, Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(from("x/b").ok(), Some(true), "x/b must reach x/a");
        cap.join().unwrap()
    })
    .expect("captured x/b's SYN with its token");
    let view = packet::parse(&captured).unwrap();
    let lifted = view.token.unwrap().to_vec();
    println!(
        "captured x/b's SYN: {} bytes, token {} bytes",
        captured.len(),
        lifted.len()
    );

    let accepts = c.pod("x/a").accepts();
    let before = seen(&c);
    let rogue_dir = tempfile::tempdir().unwrap();
    trireme_token::keys::init_pki(&rogue_dir.path().join("k"), "node-1").unwrap();
    let rogue = signer(&rogue_dir.path().join("k"));
    let real = signer(&c.key_dir());
    let now = trireme_token::now_unix();

    struct Attack {
        name: &'static str,
        pkt: Vec<u8>,
        sport: u16,
        /// Counted as a refused token (or a replay) by the enforcer.
        token_refused: bool,
        replay: bool,
    }
    let mut attacks = Vec::new();
    let mut port = 40000u16;
    let mut next = |isn: u32| {
        port += 1;
        (port, isn)
    };
    let with = |pkt: Vec<u8>, tok: &[u8]| packet::attach(&pkt, tok, 1500).expect("attach");

    let (sp, isn) = next(1_000_001);
    attacks.push(Attack {
        name: "forged token (own CA), claiming pod=b",
        pkt: with(
            syn(attacker_ip, server, sp, isn, &[], b""),
            &token(&rogue, "b", isn, now, now + 30),
        ),
        sport: sp,
        token_refused: true,
        replay: false,
    });
    let (sp, isn) = next(2_000_002);
    let mut tampered = token(&real, "c", isn, now, now + 30);
    let needle = br#""pod":"c""#;
    let at = tampered
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("labels in the token");
    tampered[at + 7] = b'b';
    attacks.push(Attack {
        name: "tampered labels (pod=c rewritten to pod=b)",
        pkt: with(syn(attacker_ip, server, sp, isn, &[], b""), &tampered),
        sport: sp,
        token_refused: true,
        replay: false,
    });
    let (sp, isn) = next(3_000_003);
    attacks.push(Attack {
        name: "expired token (real keys, pod=b, expired 100 s ago)",
        pkt: with(
            syn(attacker_ip, server, sp, isn, &[], b""),
            &token(&real, "b", isn, now - 200, now - 100),
        ),
        sport: sp,
        token_refused: true,
        replay: false,
    });
    let (sp, isn) = next(4_000_004);
    attacks.push(Attack {
        name: "token lifted from x/b's connection onto a new SYN",
        pkt: with(syn(attacker_ip, server, sp, isn, &[], b""), &lifted),
        sport: sp,
        token_refused: true,
        replay: false,
    });
    attacks.push(Attack {
        name: "replayed captured SYN of x/b (source spoofed)",
        pkt: captured.clone(),
        sport: view.src_port,
        token_refused: false,
        replay: true,
    });
    let (sp, isn) = next(5_000_005);
    let garbage: Vec<u8> = (0..700u32).map(|i| (i * 7919 % 251) as u8).collect();
    attacks.push(Attack {
        name: "garbage token (700 bytes) behind the marker",
        pkt: with(syn(attacker_ip, server, sp, isn, &[], b""), &garbage),
        sport: sp,
        token_refused: true,
        replay: false,
    });
    let (sp, isn) = next(6_000_006);
    attacks.push(Attack {
        name: "marker option announcing 65535 token bytes, none sent",
        pkt: syn(
            attacker_ip,
            server,
            sp,
            isn,
            &[253, 6, 0x54, 0x52, 0xff, 0xff, 1, 1],
            b"",
        ),
        sport: sp,
        token_refused: false,
        replay: false,
    });
    let (sp, isn) = next(7_000_007);
    attacks.push(Attack {
        name: "garbage options and SYN payload, no marker",
        pkt: syn(
            attacker_ip,
            server,
            sp,
            isn,
            &[254, 10, 1, 2, 3, 4, 5, 6, 7, 8, 99, 2],
            &garbage[..300],
        ),
        sport: sp,
        token_refused: false,
        replay: false,
    });

    // Control: the same raw path with a genuine token (real keys, pod=b, bound to this
    // SYN) is answered, so a missing SYN-ACK below means a refusal, not a broken probe.
    let (sp, isn) = next(9_000_009);
    let genuine = with(
        syn(attacker_ip, server, sp, isn, &[], b""),
        &token(&real, "b", isn, now, now + 30),
    );
    let answered = c.bare[att]
        .netns
        .run(|| send_and_watch(&genuine, server, sp, Duration::from_secs(2)))
        .unwrap();
    assert!(
        answered,
        "control: a raw SYN with a genuine token got no SYN-ACK; the attack probes would prove nothing"
    );
    println!("control: raw SYN with a genuine pod=b token answered with a SYN-ACK");

    let mut failures = Vec::new();
    for a in &attacks {
        let b = seen(&c);
        let synack = c.bare[att]
            .netns
            .run(|| send_and_watch(&a.pkt, server, a.sport, Duration::from_millis(800)))
            .unwrap();
        let after = counted(&c, |s| {
            (!a.token_refused || s.denied_token > b.denied_token)
                && (!a.replay || s.replays > b.replays)
        });
        let mut why = Vec::new();
        if synack {
            why.push("the server answered with a SYN-ACK".to_string());
        }
        if a.token_refused && after.denied_token == b.denied_token {
            why.push("the enforcer did not count a refused token".into());
        }
        if a.replay && after.replays == b.replays {
            why.push("the enforcer did not count a replay".into());
        }
        if after.pid != before.pid {
            why.push("the enforcer restarted".into());
        }
        println!(
            "attack: {:<55} {}",
            a.name,
            if why.is_empty() {
                "denied".to_string()
            } else {
                format!("FAILED: {}", why.join("; "))
            }
        );
        if !why.is_empty() {
            failures.push(a.name);
        }
    }
    // A full TCP stack with its own enforcer, keys from its own CA, labelled pod=b: its
    // enforcer signs every SYN with the rogue key; x/a's refuses them.
    let rogue_pod = RoguePod::attach(&c, &rogue_dir.path().join("k"));
    let b4 = seen(&c);
    let rogue_ok = rogue_pod
        .netns
        .run(|| probe_here(to_a, Duration::from_secs(2)))
        .unwrap();
    let after_rogue = counted(&c, |s| s.denied_token > b4.denied_token);
    println!(
        "attack: {:<55} {}",
        "pod with its own enforcer and rogue CA, labelled pod=b",
        if rogue_ok {
            "FAILED: connected"
        } else {
            "denied"
        }
    );
    if rogue_ok || after_rogue.denied_token == b4.denied_token {
        failures.push("rogue enforcer");
    }
    drop(rogue_pod);

    let after = seen(&c);
    println!("x/a's enforcer: before {before:?}, after {after:?}");
    assert_eq!(
        c.pod("x/a").accepts(),
        accepts,
        "an attack reached the server application"
    );
    assert!(failures.is_empty(), "attacks not denied: {failures:?}");
    // Still serving: the legitimate client connects, the denied one does not.
    assert_eq!(from("x/b").ok(), Some(true), "x/b must still reach x/a");
    assert_eq!(from("x/c").ok(), Some(false), "x/c must still be denied");
    assert_eq!(seen(&c).pid, before.pid, "same enforcer process throughout");
}
