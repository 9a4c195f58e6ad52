//! Egress through a Service whose DNAT changes the port (kube-proxy: the client dials
//! `VIP:8080`, the server pod is reached on `podIP:80`). Kubernetes NetworkPolicy egress
//! rules are about the destination pod: its port (the Service's `targetPort`) and, for
//! `ipBlock`, its pod IP. The client's enforcer learns both from the server's signed
//! SYN-ACK token, so a client whose egress allows only TCP 80 to `pod=b` reaches b through
//! `VIP:8080 → b:80`, and one whose egress allows only 8080 does not.
//!
//! Real pods on the real bridge plugin with trireme chained (the host set up as a
//! Kubernetes node: br_netfilter, conntrack INVALID drops). The port-changing DNAT is a
//! nat chain of this test's own (jumps from PREROUTING and OUTPUT), removed by a Drop
//! guard, also on panic.
//!
//! Run: `cargo build --bins && cargo test -p trireme-conformance --test service_ports`
//! (as root).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use trireme_conformance::cluster::{
    remove_chain, serve_ports, ChainRef, Cluster, ClusterPod, ClusterSpec, PodSpec,
};
use trireme_conformance::{probe, unique_name};

const SVC_PORT: u16 = 8080;
const TARGET_PORT: u16 = 80;

/// A host nat chain `VIP:SVC_PORT → pod:TARGET_PORT` with jumps from PREROUTING (pod
/// traffic) and OUTPUT (host traffic); removed with its jumps on Drop.
struct PortDnat {
    chain: ChainRef,
}

impl PortDnat {
    fn install(vip: Ipv4Addr, pod: Ipv4Addr) -> PortDnat {
        let name = format!("TRS-{}", unique_name("s"));
        let guard = PortDnat {
            chain: ChainRef {
                table: "nat".into(),
                chain: name.clone(),
                jumps: vec![("PREROUTING".into(), vec![]), ("OUTPUT".into(), vec![])],
            },
        };
        // The guard exists before the rules do: a half-applied install is removed too.
        let rules = format!(
            "*nat\n:{name} - [0:0]\n\
             -A {name} -d {vip}/32 -p tcp --dport {SVC_PORT} -m comment --comment \"trireme test service_ports\" -j DNAT --to-destination {pod}:{TARGET_PORT}\n\
             -I PREROUTING 1 -j {name}\n-I OUTPUT 1 -j {name}\nCOMMIT\n"
        );
        let mut child = Command::new("iptables-restore")
            .args(["-w", "--noflush"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run iptables-restore");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(rules.as_bytes())
            .expect("write the nat rules");
        let out = child.wait_with_output().expect("iptables-restore");
        assert!(
            out.status.success(),
            "install the Service DNAT {vip}:{SVC_PORT} -> {pod}:{TARGET_PORT}: {}\n{rules}",
            String::from_utf8_lossy(&out.stderr)
        );
        guard
    }
}

impl Drop for PortDnat {
    fn drop(&mut self) {
        let errs = remove_chain(&self.chain);
        if !errs.is_empty() {
            eprintln!("service_ports: teardown incomplete: {}", errs.join("; "));
        }
    }
}

fn pod(name: &str) -> PodSpec {
    PodSpec {
        namespace: "x".into(),
        name: name.into(),
        labels: BTreeMap::from([("pod".to_string(), name.to_string())]),
        ports: serve_ports(&[TARGET_PORT, SVC_PORT]),
    }
}

/// Pod a's egress: only TCP `port`, only to `to` (a NetworkPolicy peer, flow style).
fn a_egress(to: &str, port: u16) -> String {
    format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: a-egress-only-{port}, namespace: x}}
spec:
  podSelector: {{matchLabels: {{pod: a}}}}
  policyTypes: [Egress]
  egress:
  - to: [{to}]
    ports: [{{port: {port}, protocol: TCP}}]
"#
    )
}

/// An allowed connection may lose a SYN on a loaded machine: up to three tries.
fn reaches(from: &ClusterPod, to: IpAddr, port: u16) -> bool {
    (0..3).any(|_| probe(&from.netns, to, port, Duration::from_millis(1500)))
}

/// A denied connection: one try (a single leak is a failure).
fn blocked(from: &ClusterPod, to: IpAddr, port: u16) -> bool {
    !probe(&from.netns, to, port, Duration::from_millis(1500))
}

fn accepts_on(p: &ClusterPod, port: u16) -> u64 {
    p.servers
        .iter()
        .filter(|s| s.port == port)
        .map(|s| s.accepts())
        .sum()
}

fn egress_counts(c: &Cluster, p: &ClusterPod) -> (u64, u64) {
    let s = c.status(p).expect("client enforcer status").counters;
    (s.allowed.egress, s.denied.egress)
}

/// Waits until the pod's enforcer log has a line containing `needle`.
fn log_has(c: &Cluster, p: &ClusterPod, needle: &str) -> bool {
    // The plugin logs each enforcer to `<control dir>/<enforcer id>.log`.
    let id = c.status(p).expect("enforcer status").id;
    let path = c.control_dir().join(format!("{id}.log"));
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().any(|l| l.contains(needle)) {
            return true;
        }
        if Instant::now() > deadline {
            eprintln!("{} has no line with {needle:?}:\n{text}", path.display());
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn egress_through_a_port_changing_service_is_judged_on_the_pods_port_and_address() {
    trireme_conformance::require_root();
    let mut spec = ClusterSpec::netpol();
    spec.namespaces = vec![(
        "x".into(),
        BTreeMap::from([("ns".to_string(), "x".to_string())]),
    )];
    spec.pods = vec![pod("a"), pod("b")];
    spec.services = false;
    spec.k8s_node = true;
    let c = Cluster::new(spec).expect("cluster of x/a and x/b");
    let (a, b) = (c.pod("x/a"), c.pod("x/b"));
    // The Service VIP: in the cluster's own, unrouted VIP block (subnet + 128 in the
    // third octet), away from the per-pod VIPs (.10 + i).
    let o = c.subnet.octets();
    let vip = Ipv4Addr::new(o[0], o[1], o[2].wrapping_add(128), 250);
    let _dnat = PortDnat::install(vip, b.ip);
    let (vip, b_ip) = (IpAddr::V4(vip), IpAddr::V4(b.ip));

    // 1. Egress allows only TCP 80 (the pod's port) to pod=b.
    c.apply_policies(&a_egress(
        "{podSelector: {matchLabels: {pod: b}}}",
        TARGET_PORT,
    ))
    .expect("apply a-egress-only-80");
    let before = accepts_on(b, TARGET_PORT);
    assert!(
        reaches(a, vip, SVC_PORT),
        "a -> {vip}:{SVC_PORT} (DNAT to b:{TARGET_PORT}) must be allowed by an egress rule for port {TARGET_PORT}"
    );
    assert!(
        accepts_on(b, TARGET_PORT) > before,
        "b's server on {TARGET_PORT} took the connection"
    );
    assert!(
        log_has(
            &c,
            a,
            &format!("dialled {vip}:{SVC_PORT}, server is {b_ip}:{TARGET_PORT}")
        ),
        "a's enforcer logs what was dialled and what the server is"
    );
    // the same policy at pod IPs: 80 yes, 8080 no (b serves both)
    assert!(reaches(a, b_ip, TARGET_PORT), "a -> b:80 directly");
    assert!(blocked(a, b_ip, SVC_PORT), "a -> b:8080 directly is denied");

    // 2. Egress allows only TCP 8080 (the Service port) to pod=b: the DNATed connection
    //    lands on b:80 and is denied, by a's egress.
    c.apply_policies(&a_egress(
        "{podSelector: {matchLabels: {pod: b}}}",
        SVC_PORT,
    ))
    .expect("apply a-egress-only-8080");
    let before = accepts_on(b, TARGET_PORT);
    let (_, denied_before) = egress_counts(&c, a);
    assert!(
        blocked(a, vip, SVC_PORT),
        "a -> {vip}:{SVC_PORT} (DNAT to b:{TARGET_PORT}) must be denied by an egress rule for port {SVC_PORT} only"
    );
    assert_eq!(
        accepts_on(b, TARGET_PORT),
        before,
        "b accepted nothing on {TARGET_PORT}"
    );
    let (_, denied_after) = egress_counts(&c, a);
    assert!(
        denied_after > denied_before,
        "the denial is a's egress decision ({denied_before} -> {denied_after})"
    );
    // the policy is in force and allows 8080 where the pod really serves 8080
    assert!(reaches(a, b_ip, SVC_PORT), "a -> b:8080 directly");

    // 3. ipBlock egress is matched against the pod address the server reports, not the
    //    VIP that was dialled.
    c.apply_policies(&a_egress(
        &format!("{{ipBlock: {{cidr: {b_ip}/32}}}}"),
        TARGET_PORT,
    ))
    .expect("apply ipBlock b/32");
    assert!(
        reaches(a, vip, SVC_PORT),
        "ipBlock {b_ip}/32 port {TARGET_PORT} admits a -> {vip}:{SVC_PORT}"
    );
    c.apply_policies(&a_egress(
        &format!("{{ipBlock: {{cidr: {vip}/32}}}}"),
        TARGET_PORT,
    ))
    .expect("apply ipBlock vip/32");
    assert!(
        blocked(a, vip, SVC_PORT),
        "ipBlock {vip}/32 does not match the pod behind the Service"
    );
}
