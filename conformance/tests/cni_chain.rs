//! Issue 4 "Done when", through the conformance runtime with [bridge, trireme] and
//! [ptp, trireme]: real namespaces, real plugins, the real enforcer, real TCP.

mod common;

use common::{code, new_ns, pod_ip, Fixture, Main};
use serde_json::json;
use std::time::{Duration, Instant};
use trireme_conformance::{probe, Netns, RuntimeConf, TcpServer};

const POLICY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: server-from-good
  namespace: default
spec:
  podSelector:
    matchLabels:
      app: server
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels:
          app: good
    ports:
    - port: 8080
      protocol: TCP
"#;

fn chain_allows_and_denies_by_labels(main: Main) {
    let fx = Fixture::new(main);
    fx.write_policy("server-from-good", POLICY);
    let (server_ns, good_ns, bad_ns) = (new_ns(), new_ns(), new_ns());
    let server = fx.runtime_conf(&server_ns, "server", &[("app", "server")]);
    let good = fx.runtime_conf(&good_ns, "good", &[("app", "good")]);
    let bad = fx.runtime_conf(&bad_ns, "bad", &[("app", "bad")]);

    let mut server_ip = None;
    for rc in [&server, &good, &bad] {
        let trace = fx
            .add(rc)
            .unwrap_or_else(|e| panic!("ADD {}: {e}", rc.container_id));
        assert_eq!(trace.len(), 2);
        // trireme prints the main plugin's result unchanged.
        assert_eq!(
            trace[1], trace[0],
            "trireme changed the main plugin's result"
        );
        assert_eq!(trace[1]["cniVersion"], "1.0.0");
        if rc.container_id == server.container_id {
            server_ip = Some(pod_ip(&trace[1]));
        }
        fx.rt.check(&fx.list("1.0.0"), rc).expect("CHECK after ADD");
    }
    let server_ip = server_ip.unwrap();
    // The pod's identity reached its enforcer (labels from the annotation, CNI_ARGS).
    let st = fx.enforcer_status(&server);
    assert_eq!(st["result"], "status", "{st}");
    assert_eq!(st["namespace"], "default", "{st}");
    assert_eq!(st["pod"], "server", "{st}");
    assert_eq!(st["identity"]["labels"], json!({"app": "server"}), "{st}");
    let srv = TcpServer::start(&server_ns, 8080).unwrap();
    assert!(
        probe(&good_ns, server_ip, 8080, Duration::from_secs(3)),
        "app=good must reach app=server:8080"
    );
    let accepted = srv.accepts();
    assert!(
        !probe(&bad_ns, server_ip, 8080, Duration::from_secs(2)),
        "app=bad must not reach app=server:8080"
    );
    assert_eq!(
        srv.accepts(),
        accepted,
        "the server saw the denied connection"
    );
    drop(srv);

    for rc in [&server, &good, &bad] {
        for _ in 0..3 {
            fx.del(rc).expect("DEL is idempotent");
        }
    }
    let left = fx.settle_leftovers(&[&server_ns, &good_ns, &bad_ns]);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn bridge_chain_allows_and_denies_by_labels() {
    chain_allows_and_denies_by_labels(Main::Bridge);
}

#[test]
fn ptp_chain_allows_and_denies_by_labels() {
    chain_allows_and_denies_by_labels(Main::Ptp);
}

fn enforcer_pid(fx: &Fixture, rc: &RuntimeConf) -> u32 {
    let sup = fx.supervisor_pid(rc).expect("supervisor pid file");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(c) = trireme_cni_children(sup).first() {
            return *c;
        }
        assert!(
            Instant::now() < deadline,
            "supervisor {sup} has no enforcer"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn trireme_cni_children(pid: u32) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|c| {
            std::fs::read_to_string(format!("/proc/{c}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 1..];
                    let mut it = rest.split_whitespace();
                    let state = it.next()?;
                    let ppid: u32 = it.next()?.parse().ok()?;
                    Some(state != "Z" && ppid == pid)
                })
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn check_fails_while_the_enforcer_is_dead_and_passes_after_restart() {
    let mut fx = Fixture::new(Main::Bridge);
    // Long enough that CHECK runs before the restart, short enough for the test.
    fx.trireme_extra = json!({"restartDelayMs": 3000});
    let ns = new_ns();
    let rc = fx.runtime_conf(&ns, "p", &[("app", "x")]);
    fx.add(&rc).expect("ADD");
    let list = fx.list("1.0.0");
    fx.rt.check(&list, &rc).expect("CHECK while running");

    let pid = enforcer_pid(&fx, &rc);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed_at = Instant::now();
    while trireme_conformance::sandbox::processes_with(&rc.container_id).contains(&pid) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let e = fx
        .rt
        .check(&list, &rc)
        .expect_err("CHECK must fail while the enforcer is dead");
    assert!(
        killed_at.elapsed() < Duration::from_millis(3000),
        "too slow to observe"
    );
    assert_eq!(code(&e), 101, "{e}");

    // The supervisor restarts it; CHECK passes again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match fx.rt.check(&list, &rc) {
            Ok(()) => break,
            Err(e) => assert!(Instant::now() < deadline, "never recovered: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ne!(enforcer_pid(&fx, &rc), pid, "a new enforcer runs");
    fx.del(&rc).unwrap();
    let left = fx.settle_leftovers(&[&ns]);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn del_after_the_namespace_is_gone() {
    let fx = Fixture::new(Main::Bridge);
    let mut ns = new_ns();
    let rc = fx.runtime_conf(&ns, "p", &[("app", "x")]);
    fx.add(&rc).expect("ADD");
    ns.delete().unwrap();
    for _ in 0..3 {
        fx.del(&rc).expect("DEL without netns");
    }
    let left = fx.settle_leftovers(&[]);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn gc_removes_attachments_that_are_not_valid() {
    let fx = Fixture::new(Main::Bridge);
    let (ns1, ns2) = (new_ns(), new_ns());
    let keep = fx.runtime_conf(&ns1, "keep", &[("app", "a")]);
    let drop_ = fx.runtime_conf(&ns2, "drop", &[("app", "b")]);
    fx.add(&keep).unwrap();
    fx.add(&drop_).unwrap();
    let mut gc = fx.trireme_conf();
    gc["cniVersion"] = json!("1.1.0");
    gc["name"] = json!(fx.network);
    gc["cni.dev/valid-attachments"] = json!([{"containerID": keep.container_id, "ifname": "eth0"}]);
    fx.rt.exec("trireme", "GC", None, &gc).expect("GC");
    let list = fx.list("1.0.0");
    fx.rt
        .check(&list, &keep)
        .expect("valid attachment survives GC");
    let e = fx
        .rt
        .check(&list, &drop_)
        .expect_err("GC removed the other one");
    assert_eq!(code(&e), 101);
    assert!(fx.supervisor_pid(&drop_).is_none());
    let ns2_rules = fx.leftovers(&[&ns2]);
    assert!(
        ns2_rules
            .iter()
            .all(|l| !l.contains(ns2.name()) && !l.contains(&drop_.container_id)),
        "{ns2_rules:#?}"
    );

    // A lock file left by an interrupted ADD (no state file) is removed too.
    std::fs::write(
        fx.path("state")
            .join(&fx.network)
            .join("interrupted-eth0.lock"),
        "",
    )
    .unwrap();
    // A missing valid-attachments key means none is valid.
    gc.as_object_mut()
        .unwrap()
        .remove("cni.dev/valid-attachments");
    fx.rt.exec("trireme", "GC", None, &gc).expect("GC");
    let left = fx.settle_leftovers(&[&ns1, &ns2]);
    assert!(left.is_empty(), "left behind: {left:#?}");
    for rc in [&keep, &drop_] {
        fx.del(rc).unwrap();
    }
}

#[test]
fn accepts_0_4_0_and_1_1_0_configs() {
    let fx = Fixture::new(Main::Bridge);
    // 0.4.0 through the runtime (bridge speaks it too).
    let ns = new_ns();
    let rc = fx.runtime_conf(&ns, "old", &[("app", "x")]);
    fx.attached.lock().unwrap().push(rc.clone());
    let list = fx.list("0.4.0");
    let trace = fx.rt.add_traced(&list, &rc).expect("ADD 0.4.0");
    assert_eq!(trace[1], trace[0]);
    assert_eq!(trace[1]["cniVersion"], "0.4.0");
    fx.rt.check(&list, &rc).expect("CHECK 0.4.0");
    fx.rt.del(&list, &rc).expect("DEL 0.4.0");

    // 1.1.0 directly (Debian's bridge stops at 1.0.0): prevResult from a 1.0.0 bridge ADD.
    let ns2 = new_ns();
    let rc2 = fx.runtime_conf(&ns2, "new", &[("app", "y")]);
    fx.attached.lock().unwrap().push(rc2.clone());
    let bridge_only = trireme_conformance::NetworkConfigList::from_value(&json!({
        "cniVersion": "1.0.0", "name": fx.network, "plugins": [fx.main_conf()]
    }))
    .unwrap();
    let prev = fx.rt.add(&bridge_only, &rc2).unwrap();
    let mut conf = fx.trireme_conf();
    conf["cniVersion"] = json!("1.1.0");
    conf["name"] = json!(fx.network);
    conf["prevResult"] = prev.clone();
    let out = fx
        .rt
        .exec("trireme", "ADD", Some(&rc2), &conf)
        .unwrap()
        .unwrap();
    let mut expected = prev.clone();
    expected["cniVersion"] = json!("1.1.0");
    assert_eq!(out, expected);
    fx.rt.exec("trireme", "DEL", Some(&rc2), &conf).unwrap();
    fx.rt.del(&bridge_only, &rc2).unwrap();
    let left = fx.settle_leftovers(&[&ns, &ns2]);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn hundred_add_del_cycles_leave_nothing_behind() {
    let fx = Fixture::new(Main::Bridge);
    let ns: Netns = new_ns();
    for i in 0..100 {
        let rc = fx.runtime_conf(&ns, "cycle", &[("app", "cycle")]);
        fx.add(&rc).unwrap_or_else(|e| panic!("ADD #{i}: {e}"));
        fx.del(&rc).unwrap_or_else(|e| panic!("DEL #{i}: {e}"));
        fx.attached.lock().unwrap().clear();
    }
    let left = fx.settle_leftovers(&[&ns]);
    assert!(left.is_empty(), "left behind: {left:#?}");
    // host-local keeps one file per leased address (named after it): none may remain.
    let leases: Vec<_> = std::fs::read_dir(fx.path("ipam").join(&fx.network))
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<std::net::IpAddr>().is_ok())
        })
        .collect();
    assert!(leases.is_empty(), "host-local kept leases: {leases:?}");
}

#[test]
fn check_fails_when_the_enforcer_rules_are_missing() {
    let fx = Fixture::new(Main::Bridge);
    let ns = new_ns();
    let rc = fx.runtime_conf(&ns, "p", &[("app", "x")]);
    fx.add(&rc).expect("ADD");
    let list = fx.list("1.0.0");
    fx.rt
        .check(&list, &rc)
        .expect("CHECK while the rules are there");
    // Remove the jumps into trireme's chains, as a careless admin would.
    let save = ns.exec(&["iptables-save", "-t", "mangle"]).unwrap();
    let jumps: Vec<String> = String::from_utf8_lossy(&save.stdout)
        .lines()
        .filter(|l| {
            l.starts_with("-A ") && !l.starts_with("-A TRIREME") && l.contains("-j TRIREME")
        })
        .map(|l| l[3..].to_string())
        .collect();
    assert!(!jumps.is_empty(), "no jump into trireme chains found");
    for j in &jumps {
        let mut argv = vec!["iptables", "-t", "mangle", "-D"];
        argv.extend(j.split_whitespace());
        ns.exec(&argv).unwrap();
    }
    let e = fx
        .rt
        .check(&list, &rc)
        .expect_err("CHECK must fail without the rules");
    assert_eq!(code(&e), 101, "{e}");
    fx.del(&rc).unwrap();
    let left = fx.settle_leftovers(&[&ns]);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn del_stops_an_enforcer_whose_supervisor_was_killed() {
    let fx = Fixture::new(Main::Bridge);
    let ns = new_ns();
    let rc = fx.runtime_conf(&ns, "p", &[("app", "x")]);
    fx.add(&rc).expect("ADD");
    let enforcer = enforcer_pid(&fx, &rc);
    let sup = fx.supervisor_pid(&rc).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    trireme_conformance::sandbox::reap_orphans("trireme-sup");
    assert!(
        std::fs::metadata(format!("/proc/{enforcer}")).is_ok(),
        "the enforcer outlives its supervisor"
    );
    fx.del(&rc).expect("DEL");
    let left = fx.settle_leftovers(&[&ns]);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn gc_leaves_an_attachment_alone_while_an_operation_holds_its_lock() {
    let fx = Fixture::new(Main::Bridge);
    let ns = new_ns();
    let rc = fx.runtime_conf(&ns, "busy", &[("app", "a")]);
    fx.add(&rc).unwrap();
    let lock_path = fx
        .path("state")
        .join(&fx.network)
        .join(format!("{}-eth0.lock", rc.container_id));
    let f = std::fs::File::open(&lock_path).expect("ADD keeps a lock file per attachment");
    let held = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    let mut gc = fx.trireme_conf();
    gc["cniVersion"] = json!("1.1.0");
    gc["name"] = json!(fx.network);
    gc["cni.dev/valid-attachments"] = json!([]);
    fx.rt.exec("trireme", "GC", None, &gc).expect("GC");
    let list = fx.list("1.0.0");
    fx.rt
        .check(&list, &rc)
        .expect("a locked attachment survives GC");
    drop(held);
    fx.rt.exec("trireme", "GC", None, &gc).expect("GC");
    let e = fx
        .rt
        .check(&list, &rc)
        .expect_err("GC removed it once unlocked");
    assert_eq!(code(&e), 101);
    let left = fx.settle_leftovers(&[&ns]);
    assert!(left.is_empty(), "left behind: {left:#?}");
    fx.del(&rc).unwrap();
}

#[test]
fn options_and_gateway_reach_the_enforcer() {
    let mut fx = Fixture::new(Main::Bridge);
    let ns = new_ns();
    let plain = fx.runtime_conf(&ns, "plain", &[("app", "a")]);
    let trace = fx.add(&plain).unwrap();
    let st = fx.enforcer_status(&plain);
    assert_eq!(st["fail_open"], false, "{st}");
    assert_eq!(st["reject"], false, "{st}");
    // The gateway from prevResult is passed as --gateway.
    let gw = trace[0]["ips"][0]["gateway"].as_str().unwrap().to_string();
    let pid = st["pid"].as_u64().unwrap();
    let args: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    assert!(
        args.windows(2).any(|w| w[0] == "--gateway" && w[1] == gw),
        "{args:?}"
    );
    assert!(!args.iter().any(|a| a == "--deny-node"), "{args:?}");
    fx.del(&plain).unwrap();

    fx.trireme_extra = json!({"failOpen": true, "reject": true, "denyNode": true});
    let ns2 = new_ns();
    let opts = fx.runtime_conf(&ns2, "opts", &[("app", "b")]);
    fx.add(&opts).unwrap();
    let st = fx.enforcer_status(&opts);
    assert_eq!(st["fail_open"], true, "{st}");
    assert_eq!(st["reject"], true, "{st}");
    let pid = st["pid"].as_u64().unwrap();
    let cmd = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
        .replace('\0', " ");
    assert!(cmd.contains("--deny-node"), "{cmd}");
    fx.del(&opts).unwrap();
    let left = fx.settle_leftovers(&[&ns, &ns2]);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn labels_from_cni_args_and_annotations_and_the_namespace_reach_the_enforcer() {
    let mut fx = Fixture::new(Main::Bridge);
    fx.trireme_extra = json!({"args": {"cni": {"labels": [
        {"key": "app", "value": "from-args"},
        {"key": "tier", "value": "web"}
    ]}}});
    let ns = new_ns();
    let mut rc = fx.runtime_conf(&ns, "labelled", &[("app", "from-annotation")]);
    rc.args
        .retain(|(k, _)| k != "K8S_POD_NAMESPACE" && k != "K8S_POD_NAME");
    rc.args.push(("K8S_POD_NAMESPACE".into(), "prod".into()));
    rc.args.push(("K8S_POD_NAME".into(), "web-1".into()));
    rc.capability_args.insert(
        "io.kubernetes.cri.pod-annotations".into(),
        json!({
            "trireme.io/labels": "{\"app\":\"from-annotation\"}",
            "trireme.io/ports": "[{\"name\":\"http\",\"port\":8080,\"protocol\":\"TCP\"}]"
        }),
    );
    fx.add(&rc).unwrap();
    let st = fx.enforcer_status(&rc);
    assert_eq!(st["namespace"], "prod", "{st}");
    assert_eq!(st["pod"], "web-1", "{st}");
    // The annotation overrides args.cni.labels key by key.
    assert_eq!(
        st["identity"]["labels"],
        json!({"app": "from-annotation", "tier": "web"}),
        "{st}"
    );
    assert_eq!(
        st["identity"]["ports"],
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
        "{st}"
    );
    fx.del(&rc).unwrap();
    let left = fx.settle_leftovers(&[&ns]);
    assert!(left.is_empty(), "left behind: {left:#?}");
}
