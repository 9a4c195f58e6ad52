//! The enforcer's datapath on real network namespaces: rules, NFQUEUE, the connmark
//! bypass, the control socket, start-up refusals, SIGTERM/SIGKILL behaviour.
//! Needs root.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use trireme_enforcer::control::{self, Request, Response};

const T: Duration = Duration::from_secs(3);
/// How long a connection attempt that must fail may take.
const DENY_T: Duration = Duration::from_millis(1200);

struct Setup {
    pair: Pair,
    keys: tempfile::TempDir,
    pol_a: tempfile::TempDir,
    pol_b: tempfile::TempDir,
}

fn setup() -> Setup {
    require_root();
    Setup {
        pair: Pair::new(),
        keys: pki_keys("node-1"),
        pol_a: tempdir(),
        pol_b: tempdir(),
    }
}

fn opts(s: &Setup, pod: &str) -> EnforcerOpts {
    let pol = if pod == "a" { &s.pol_a } else { &s.pol_b };
    EnforcerOpts::new(
        "x",
        pod,
        &format!(r#"{{"pod":"{pod}"}}"#),
        pol.path(),
        s.keys.path(),
    )
}

#[test]
fn ready_means_rules_queue_and_socket_and_sigterm_removes_them() {
    let s = setup();
    assert!(s.pair.b.trireme_rules().is_empty());
    let mut e = Enforcer::start(&s.pair.b, opts(&s, "b"));
    let st = e.status();
    assert!(st.rules_present && st.queue_bound, "{st:?}");
    assert_eq!(st.pid as i32, e.pid());
    assert_eq!(st.identity.namespace, "x");
    assert_eq!(st.identity.labels["pod"], "b");
    assert_eq!(
        st.identity.namespace_labels["kubernetes.io/metadata.name"],
        "x"
    );
    let rules = s.pair.b.trireme_rules();
    assert!(
        rules.contains(&"-A INPUT -j TRIREME-IN".to_string()),
        "{rules:?}"
    );
    assert!(rules.iter().any(|r| r.contains("NFQUEUE --queue-num 0")));
    // Fail closed by default.
    assert!(!rules.iter().any(|r| r.contains("queue-bypass")));
    let mode = std::fs::metadata(&e.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let code = e.stop_with(Signal::SIGTERM);
    assert!(code.success(), "exit {code}; log:\n{}", e.log_text());
    assert!(
        s.pair.b.trireme_rules().is_empty(),
        "rules left behind: {:?}",
        s.pair.b.trireme_rules()
    );
    assert!(!e.socket.exists(), "socket left behind");
}

#[test]
fn status_notices_removed_rules() {
    let s = setup();
    let e = Enforcer::start(&s.pair.b, opts(&s, "b"));
    s.pair.b.exec(
        "iptables",
        &["-t", "mangle", "-D", "OUTPUT", "-j", "TRIREME-OUT"],
    );
    let st = e.status();
    assert!(!st.rules_present);
    assert!(
        st.rules_error
            .as_deref()
            .unwrap_or("")
            .contains("-A OUTPUT -j TRIREME-OUT"),
        "{st:?}"
    );
}

#[test]
fn bulk_transfer_after_the_handshake_never_reaches_userspace() {
    let s = setup();
    let ea = Enforcer::start(&s.pair.a, opts(&s, "a"));
    let eb = Enforcer::start(&s.pair.b, opts(&s, "b"));
    let _srv = Server::start(&s.pair.b, 8080);

    let mut c = Conn::open(&s.pair.a, IP_B, 8080, T).expect("connect");
    // Handshake done and data seen both ways: both sides authorised.
    let qa = ea.status().counters;
    let qb = eb.status().counters;
    assert!(qa.authorised >= 1 && qb.authorised >= 1, "{qa:?} {qb:?}");
    assert!(qa.queued.syn >= 1 && qb.queued.syn >= 1);

    c.send(100 << 20).expect("100 MB upload");
    c.finish().expect("transfer intact");

    let qa2 = ea.status().counters;
    let qb2 = eb.status().counters;
    assert_eq!(
        qa.queued, qa2.queued,
        "client enforcer saw packets after the handshake"
    );
    assert_eq!(
        qb.queued, qb2.queued,
        "server enforcer saw packets after the handshake"
    );
    // And the metrics say the same in Prometheus text.
    let m = control::metrics(&eb.socket).unwrap();
    assert!(m.contains(&format!(
        "trireme_packets_queued_total{{id=\"{}\",namespace=\"x\",pod=\"b\",kind=\"syn\"}} {}",
        eb.id, qb2.queued.syn
    )));
}

#[test]
fn sigkill_fails_closed_established_keep_flowing_restart_recovers() {
    let s = setup();
    let _ea = Enforcer::start(&s.pair.a, opts(&s, "a"));
    let mut eb = Enforcer::start(&s.pair.b, opts(&s, "b"));
    let srv = Server::start(&s.pair.b, 8081);

    let mut c = Conn::open(&s.pair.a, IP_B, 8081, T).expect("connect");
    c.send(1 << 20).unwrap();
    eb.stop_with(Signal::SIGKILL);
    // Rules stay after a crash: the kernel drops what it would queue.
    assert!(!s.pair.b.trireme_rules().is_empty());

    // The established connection keeps flowing.
    c.send(4 << 20).unwrap();
    c.finish()
        .expect("established connection survives the crash");

    // New connections fail closed and never reach the server.
    let before = srv.accepted();
    assert!(Conn::open(&s.pair.a, IP_B, 8081, DENY_T).is_err());
    assert_eq!(
        srv.accepted(),
        before,
        "server accepted while enforcer was dead"
    );

    // A restart replaces the stale rules (no duplicates) and serves again.
    eb.spawn();
    for save in ["iptables-save", "ip6tables-save"] {
        let rules = s.pair.b.trireme_rules_of(save);
        assert_eq!(
            rules
                .iter()
                .filter(|r| *r == "-A INPUT -j TRIREME-IN")
                .count(),
            1,
            "{save}: {rules:?}"
        );
    }
    exchange(&s.pair.a, IP_B, 8081, 1000, T).expect("works again after restart");
}

#[test]
fn connections_older_than_the_enforcer_keep_working() {
    let s = setup();
    let _srv = Server::start(&s.pair.b, 8082);
    // A dual-stack listener: its IPv4 connections show as ::ffff:a.b.c.d in tcp6.
    let _srv6 = Server::start_at(&s.pair.b, "[::]:8083".parse().unwrap());
    let mut c = Conn::open(&s.pair.a, IP_B, 8082, T).expect("connect without enforcers");
    let mut c6 = Conn::open(&s.pair.a, IP_B, 8083, T).expect("connect without enforcers");
    c.send(1000).unwrap();
    c6.send(1000).unwrap();
    let eb = Enforcer::start(&s.pair.b, opts(&s, "b"));
    c.send(1 << 20).unwrap();
    c6.send(1 << 20).unwrap();
    c.finish().expect("pre-existing connection keeps flowing");
    c6.finish()
        .expect("pre-existing connection of a dual-stack listener keeps flowing");
    assert!(
        eb.log_text().contains("\"connections\":2"),
        "{}",
        eb.log_text()
    );
}

#[test]
fn refuses_the_host_netns_and_changes_nothing() {
    require_root();
    let keys = pki_keys("n");
    let pol = tempdir();
    let ctl = tempdir();
    let host_rules_before = run("iptables-save", &["-t", "mangle"])
        .lines()
        .filter(|l| l.contains("TRIREME"))
        .count();
    let o = EnforcerOpts::new("x", "p", "{}", pol.path(), keys.path());
    let out = Enforcer::command(
        std::path::Path::new("/proc/self/ns/net"),
        "host",
        ctl.path(),
        &o,
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("host network namespace"), "{err}");
    assert_eq!(
        run("iptables-save", &["-t", "mangle"])
            .lines()
            .filter(|l| l.contains("TRIREME"))
            .count(),
        host_rules_before
    );
    assert!(control::list_sockets(ctl.path()).unwrap().is_empty());
}

#[test]
fn bad_arguments_are_clear_errors_and_change_nothing() {
    let s = setup();
    let ctl = tempdir();
    let cases: Vec<(EnforcerOpts, &str, &str)> = vec![
        (
            EnforcerOpts {
                labels: "{not json".into(),
                ..opts(&s, "b")
            },
            "e1",
            "--labels",
        ),
        (
            EnforcerOpts {
                labels: r#"{"bad key!":"x"}"#.into(),
                ..opts(&s, "b")
            },
            "e2",
            "label key",
        ),
        (
            EnforcerOpts {
                ports: r#"[{"name":"http","port":0,"protocol":"TCP"}]"#.into(),
                ..opts(&s, "b")
            },
            "e3",
            "port number 0",
        ),
        (
            EnforcerOpts {
                policy_dir: "/nonexistent/policies".into(),
                ..opts(&s, "b")
            },
            "e4",
            "--policy-dir",
        ),
        (opts(&s, "b"), "../evil", "--id"),
    ];
    for (o, id, want) in cases {
        let out = Enforcer::command(&s.pair.b.path(), id, ctl.path(), &o)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{id}: succeeded");
        assert!(err.contains(want), "{id}: expected {want:?} in {err}");
        assert!(s.pair.b.trireme_rules().is_empty(), "{id}: left rules");
        assert!(control::list_sockets(ctl.path()).unwrap().is_empty());
    }
    // A broken policy file at start-up: refused, nothing installed, error names the file.
    write_policy(
        s.pol_b.path(),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress:\n  - ports:\n    - {port: 80, endPort: 70}\n",
    );
    let out = Enforcer::command(&s.pair.b.path(), "e5", ctl.path(), &opts(&s, "b"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("policy.yaml") && err.contains("endPort"),
        "{err}"
    );
    assert!(s.pair.b.trireme_rules().is_empty());
}

#[test]
fn a_second_enforcer_on_the_same_queue_is_refused() {
    let s = setup();
    let e = Enforcer::start(&s.pair.b, opts(&s, "b"));
    let ctl = tempdir();
    let out = Enforcer::command(&s.pair.b.path(), "other", ctl.path(), &opts(&s, "b"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NFQUEUE 0"), "{err}");
    // The first one is untouched.
    let st = e.status();
    assert!(st.ready(), "{st:?}");
}

const DENY_ALL: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all, namespace: x}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n";

#[test]
fn control_register_reload_and_policy_watch() {
    let s = setup();
    let e = Enforcer::start(&s.pair.b, opts(&s, "b"));

    // register: labels and ports replace the old ones.
    let id = control::register(
        &e.socket,
        [("app".to_string(), "db".to_string())].into(),
        vec![trireme_policy::NamedPort {
            name: "pg".into(),
            port: 5432,
            protocol: trireme_policy::Protocol::Tcp,
        }],
    )
    .unwrap();
    assert_eq!(id.labels.len(), 1);
    assert_eq!(e.status().identity.labels["app"], "db");
    assert_eq!(e.status().identity.ports[0].port, 5432);
    // Invalid labels are refused and change nothing.
    let r = control::request(
        &e.socket,
        &Request::Register {
            labels: [("-bad".to_string(), "x".to_string())].into(),
            ports: vec![],
        },
    )
    .unwrap();
    assert!(matches!(r, Response::Error { .. }), "{r:?}");
    assert_eq!(e.status().identity.labels["app"], "db");

    // The watcher picks up a new policy file within a second.
    assert_eq!(e.status().policy.policies, 0);
    write_policy(s.pol_b.path(), DENY_ALL);
    assert!(
        wait_for(Duration::from_secs(1), || e.status().policy.policies == 1),
        "policy change not applied within 1 s: {:?}",
        e.status().policy
    );
    // A broken file keeps the last good policy and status shows the error with file and field.
    write_policy(
        s.pol_b.path(),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  podSelector:\n    matchExpressions: [{key: a, operator: Near}]\n",
    );
    assert!(wait_for(Duration::from_secs(1), || e
        .status()
        .policy
        .error
        .is_some()));
    let p = e.status().policy;
    assert_eq!(p.policies, 1, "last good policy must stay in force");
    let msg = p.error.unwrap();
    assert!(
        msg.contains("policy.yaml") && msg.contains("operator"),
        "{msg}"
    );
    // Explicit reload reports the same error; fixing the file clears it.
    assert!(control::reload(&e.socket).is_err());
    write_policy(s.pol_b.path(), "");
    let p = control::reload(&e.socket).expect("reload");
    assert_eq!(p.policies, 0);
    assert!(p.error.is_none());
    let st = e.status();
    assert!(
        st.counters.policy_reloads >= 2 && st.counters.policy_errors >= 1,
        "{st:?}"
    );
}

/// A process kept alive inside a netns (its /proc/PID/ns/net names the netns).
struct Holder(std::process::Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn netns_given_as_proc_pid_path_works() {
    let s = setup();
    let holder = Holder(
        std::process::Command::new("ip")
            .args(["netns", "exec", &s.pair.b.name, "sleep", "60"])
            .spawn()
            .unwrap(),
    );
    let path = std::path::PathBuf::from(format!("/proc/{}/ns/net", holder.0.id()));
    // `ip netns exec` execs sleep in place once it has entered the netns.
    assert!(wait_for(T, || netns_inode(&path).is_some()
        && netns_inode(&path) == netns_inode(&s.pair.b.path())));
    let ctl = tempdir();
    let o = opts(&s, "b");
    let child = Enforcer::command(&path, "byproc", ctl.path(), &o)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let sock = control::socket_path(ctl.path(), "byproc");
    let ready = wait_for(Duration::from_secs(10), || {
        control::status(&sock).is_ok_and(|st| st.ready())
    });
    let rules = s.pair.b.trireme_rules();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    );
    let out = child.wait_with_output().unwrap();
    assert!(ready, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(rules.contains(&"-A INPUT -j TRIREME-IN".to_string()));
    assert!(out.status.success());
    assert!(s.pair.b.trireme_rules().is_empty());
}

fn netns_inode(p: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| m.ino())
}
