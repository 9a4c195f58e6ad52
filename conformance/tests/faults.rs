//! Issue 6 "Faults", on a sandbox cluster (bridge + trireme, real enforcers, real TCP):
//! - the server pod's enforcer killed (SIGKILL) under load: established connections keep
//!   exchanging data; new connections fail closed until the supervisor restarts it (time to
//!   recover printed); then they work again;
//! - plugin DEL while traffic flows leaves nothing behind (process, rule, socket, file).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use trireme_conformance::cluster::{serve_ports, Cluster, ClusterSpec, Flow, PodSpec};
use trireme_conformance::probe::probe_here;
use trireme_conformance::sandbox::processes_with;

const POLICY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-client, namespace: f}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: client}}
    ports:
    - port: serve-8080-tcp
"#;

/// Namespace f: a server, two clients, an outsider (labels decide).
fn spec(restart_delay_ms: u64) -> ClusterSpec {
    let pod = |name: &str, app: &str| PodSpec {
        namespace: "f".into(),
        name: name.into(),
        labels: BTreeMap::from([("app".to_string(), app.to_string())]),
        ports: serve_ports(&[8080]),
    };
    let mut s = ClusterSpec::netpol();
    s.namespaces = vec![("f".into(), BTreeMap::new())];
    s.pods = vec![
        pod("server", "server"),
        pod("client", "client"),
        pod("client2", "client"),
        pod("outsider", "other"),
    ];
    s.services = false;
    s.k8s_node = false;
    s.trireme_extra = serde_json::json!({"restartDelayMs": restart_delay_ms});
    s
}

fn can_connect(c: &Cluster, from: &str, to: SocketAddr, timeout: Duration) -> bool {
    c.pod(from)
        .netns
        .run(|| probe_here(to, timeout))
        .unwrap_or(false)
}

#[test]
fn enforcer_killed_under_load_fails_closed_and_recovers() {
    trireme_conformance::require_root();
    // Long enough to observe the fail-closed window, short enough for CI.
    let c = Cluster::new(spec(3000)).expect("create the cluster");
    c.apply_policies(POLICY).expect("apply the policy");
    let server = SocketAddr::new(c.pod("f/server").ip.into(), 8080);
    assert!(
        can_connect(&c, "f/client", server, Duration::from_secs(3)),
        "client must reach the server before the fault"
    );
    assert!(
        !can_connect(&c, "f/outsider", server, Duration::from_secs(1)),
        "the outsider must be denied before the fault"
    );

    // Load: two connections exchanging a byte every 5 ms.
    let flows: Vec<Flow> = ["f/client", "f/client2"]
        .iter()
        .map(|p| Flow::start(&c.pod(p).netns, server, Duration::from_millis(5)).expect("flow"))
        .collect();
    for f in &flows {
        assert!(
            f.advances(20, Duration::from_secs(5)),
            "flow not running: {:?}",
            f.error()
        );
    }

    let old = c.status(c.pod("f/server")).expect("status").pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the enforcer");
    let killed = Instant::now();

    // Established connections keep flowing while no enforcer runs (they are marked; the
    // kernel carries them).
    for f in &flows {
        assert!(
            f.advances(50, Duration::from_secs(2)),
            "an established connection stalled while the enforcer was dead: {:?}",
            f.error()
        );
    }
    // New connections fail closed: the queue rules stay, nobody answers them.
    let denied = !can_connect(&c, "f/client", server, Duration::from_millis(1000));
    let still_down = killed.elapsed() < Duration::from_millis(2900);
    assert!(
        still_down,
        "too slow: the supervisor may have restarted the enforcer already"
    );
    assert!(
        denied,
        "a new connection got through while the enforcer was dead (must fail closed)"
    );

    // Recovery: the supervisor restarts it; new connections work again.
    let recovered = loop {
        if can_connect(&c, "f/client", server, Duration::from_millis(500)) {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no recovery within 30 s of the kill"
        );
    };
    let new = c
        .status(c.pod("f/server"))
        .expect("status after restart")
        .pid;
    assert_ne!(new, old, "a new enforcer serves");
    println!(
        "enforcer SIGKILLed: new connections failed closed, recovered {:.2} s after the kill \
         (supervisor restart delay 3.00 s); {} established connections kept flowing",
        recovered.as_secs_f64(),
        flows.len()
    );
    // Policy still enforced by the new enforcer, and the old flows still alive.
    assert!(
        !can_connect(&c, "f/outsider", server, Duration::from_secs(1)),
        "the outsider got through after the restart"
    );
    for f in &flows {
        assert!(
            f.advances(20, Duration::from_secs(3)),
            "an established connection died across the restart: {:?}",
            f.error()
        );
    }
}

/// Everything left of an attachment: processes naming it, files naming it under the
/// cluster dir's control/ and state/, TRIREME rules in its namespace.
fn leftovers(c: &Cluster, key: &str) -> Vec<String> {
    let p = c.pod(key);
    let id = format!("{}-{}", p.rc.container_id, p.rc.ifname);
    let mut out = Vec::new();
    for pid in processes_with(&id) {
        out.push(format!("process {pid}"));
    }
    for d in ["control", "state"] {
        for f in walk(&c.dir().join(d)) {
            if f.display().to_string().contains(&id) {
                out.push(format!("file {}", f.display()));
            }
        }
    }
    if let Ok(o) = p.netns.exec(&["iptables-save"]) {
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            if l.contains("TRIREME") {
                out.push(format!("rule {l}"));
            }
        }
    }
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn del_during_traffic_leaves_nothing_behind() {
    trireme_conformance::require_root();
    let mut c = Cluster::new(spec(1000)).expect("create the cluster");
    c.apply_policies(POLICY).expect("apply the policy");
    let server = SocketAddr::new(c.pod("f/server").ip.into(), 8080);
    let flow = Flow::start(&c.pod("f/client").netns, server, Duration::from_millis(2))
        .expect("flow to the server");
    assert!(
        flow.advances(50, Duration::from_secs(5)),
        "{:?}",
        flow.error()
    );
    // DEL of the client while its connection is busy, then of the server.
    for key in ["f/client", "f/server"] {
        assert!(!leftovers(&c, key).is_empty(), "{key} has an enforcer");
        c.del_pod(key).expect("DEL during traffic");
        let deadline = Instant::now() + Duration::from_secs(5);
        let left = loop {
            trireme_conformance::sandbox::reap_orphans("trireme-sup");
            trireme_conformance::sandbox::reap_orphans("trireme-enforce");
            let l = leftovers(&c, key);
            if l.is_empty() || Instant::now() > deadline {
                break l;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(left.is_empty(), "DEL of {key} left behind: {left:#?}");
    }
    drop(flow);
    // The other pods are untouched and still enforced.
    let out = c.pod("f/outsider");
    assert!(
        c.status(out).expect("outsider's enforcer").ready(),
        "the other pods' enforcers keep running"
    );
}
