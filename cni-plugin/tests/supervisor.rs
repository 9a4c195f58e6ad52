//! Unit-level tests of `trireme supervise` with a stand-in child (`sleep`), so the
//! supervisor's own mechanics are checked without root: pid file, restart after the child
//! dies, stop on SIGTERM with the child stopped and the pid file removed.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(c) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{c}/stat")) else {
            continue;
        };
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        let mut it = rest.split_whitespace();
        let state = it.next().unwrap();
        let ppid: u32 = it.next().unwrap().parse().unwrap();
        if ppid == pid && state != "Z" {
            out.push(c);
        }
    }
    out
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Supervisor(Child);

impl Drop for Supervisor {
    fn drop(&mut self) {
        let pid = self.0.id();
        for c in children(pid) {
            let _ = kill(Pid::from_raw(c as i32), Signal::SIGKILL);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, delay_ms: u64) -> Supervisor {
    let child = Command::new(env!("CARGO_BIN_EXE_trireme"))
        .args([
            "supervise",
            "--id",
            "t-eth0",
            "--control-dir",
            dir.to_str().unwrap(),
            "--restart-delay-ms",
            &delay_ms.to_string(),
            "--",
            "/bin/sleep",
            "300",
        ])
        .env_remove("CNI_COMMAND")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Supervisor(child)
}

#[test]
fn restarts_a_dead_child_and_stops_it_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut sup = start(dir.path(), 100);
    let pid = sup.0.id();
    let pid_file = dir.path().join("t-eth0.pid");
    wait_for("pid file", Duration::from_secs(5), || {
        let s = std::fs::read_to_string(&pid_file).ok()?;
        (s.trim() == pid.to_string()).then_some(())
    });
    let first = wait_for("first child", Duration::from_secs(5), || {
        children(pid).first().copied()
    });
    // A stale socket is removed before the restart.
    std::fs::write(dir.path().join("t-eth0.sock"), "stale").unwrap();
    kill(Pid::from_raw(first as i32), Signal::SIGKILL).unwrap();
    let second = wait_for("restarted child", Duration::from_secs(5), || {
        children(pid).into_iter().find(|c| *c != first)
    });
    assert_ne!(first, second);
    assert!(!dir.path().join("t-eth0.sock").exists());

    // SIGHUP is forwarded to the child (the enforcer reloads policy on it); `sleep` dies of
    // it, so the supervisor restarts it.
    kill(Pid::from_raw(pid as i32), Signal::SIGHUP).unwrap();
    let third = wait_for(
        "child restarted after SIGHUP",
        Duration::from_secs(5),
        || children(pid).into_iter().find(|c| *c != second),
    );
    assert!(
        sup.0.try_wait().unwrap().is_none(),
        "SIGHUP stopped the supervisor"
    );
    let second = third;

    // The child gets default signal handling, whatever the supervisor blocks.
    let child_status = std::fs::read_to_string(format!("/proc/{second}/status")).unwrap();
    let sigblk = child_status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .unwrap()
        .trim();
    assert_eq!(
        u64::from_str_radix(sigblk, 16).unwrap(),
        0,
        "child has blocked signals"
    );

    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    let asked = Instant::now();
    let status = wait_for("supervisor exit", Duration::from_secs(10), || {
        sup.0.try_wait().unwrap()
    });
    // The child honours SIGTERM, so no 5 s SIGKILL fallback was needed.
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "child ignored SIGTERM"
    );
    assert!(status.success(), "{status}");
    assert!(
        !Path::new(&format!("/proc/{second}")).exists()
            || std::fs::read_to_string(format!("/proc/{second}/stat"))
                .map(|s| s.contains(") Z"))
                .unwrap_or(true),
        "child still running after the supervisor stopped"
    );
    assert!(!pid_file.exists(), "pid file left behind");
}

#[test]
fn sigterm_during_the_restart_delay_exits_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let mut sup = start(dir.path(), 60_000);
    let pid = sup.0.id();
    let first = wait_for("first child", Duration::from_secs(5), || {
        children(pid).first().copied()
    });
    kill(Pid::from_raw(first as i32), Signal::SIGKILL).unwrap();
    wait_for("child gone", Duration::from_secs(5), || {
        children(pid).is_empty().then_some(())
    });
    let asked = Instant::now();
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    wait_for("supervisor exit", Duration::from_secs(10), || {
        sup.0.try_wait().unwrap()
    });
    assert!(asked.elapsed() < Duration::from_secs(5));
    assert!(!dir.path().join("t-eth0.pid").exists());
}

#[test]
fn bad_arguments_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_trireme"))
        .args(["supervise", "--id"])
        .env_remove("CNI_COMMAND")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("trireme supervise"));
}

#[test]
fn without_cni_command_the_plugin_answers_code_4() {
    let out = Command::new(env!("CARGO_BIN_EXE_trireme"))
        .env_remove("CNI_COMMAND")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"], 4);
}
