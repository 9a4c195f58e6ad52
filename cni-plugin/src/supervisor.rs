//! `trireme supervise`: the detached process that keeps one pod's enforcer running.
//!
//! The plugin re-executes itself as `trireme supervise --id ID --control-dir DIR
//! --restart-delay-ms N -- ENFORCER ARGS...` in a new session with stdio on the log file. The
//! supervisor writes `<controlDir>/<id>.pid`, starts the enforcer, restarts it after
//! `restart-delay-ms` whenever it exits, forwards SIGHUP to it (policy reload), and on
//! SIGTERM/SIGINT stops it (SIGTERM, then SIGKILL after 5 s), removes its pid file and exits.

use crate::process::SUPERVISOR_COMM;
use crate::state;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuperviseArgs {
    pub id: String,
    pub control_dir: PathBuf,
    pub restart_delay_ms: u64,
    pub enforcer: PathBuf,
    pub enforcer_args: Vec<String>,
}

impl SuperviseArgs {
    /// The arguments after the program name: `supervise --id .. -- enforcer args..`.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec![
            "supervise".to_string(),
            "--id".into(),
            self.id.clone(),
            "--control-dir".into(),
            self.control_dir.display().to_string(),
            "--restart-delay-ms".into(),
            self.restart_delay_ms.to_string(),
            "--".into(),
            self.enforcer.display().to_string(),
        ];
        v.extend(self.enforcer_args.iter().cloned());
        v
    }

    /// Parses what [`to_args`](Self::to_args) produced.
    pub fn parse(args: &[String]) -> Result<SuperviseArgs, String> {
        let mut it = args.iter();
        if it.next().map(String::as_str) != Some("supervise") {
            return Err("expected `supervise`".into());
        }
        let (mut id, mut dir, mut delay) = (None, None, None);
        loop {
            match it.next().map(String::as_str) {
                Some("--id") => id = it.next().cloned(),
                Some("--control-dir") => dir = it.next().map(PathBuf::from),
                Some("--restart-delay-ms") => {
                    delay = it.next().and_then(|d| d.parse::<u64>().ok());
                }
                Some("--") => break,
                other => return Err(format!("unexpected argument {other:?}")),
            }
        }
        let enforcer = it
            .next()
            .map(PathBuf::from)
            .ok_or("missing enforcer path")?;
        Ok(SuperviseArgs {
            id: id.ok_or("missing --id")?,
            control_dir: dir.ok_or("missing --control-dir")?,
            restart_delay_ms: delay.ok_or("missing or bad --restart-delay-ms")?,
            enforcer,
            enforcer_args: it.cloned().collect(),
        })
    }
}

fn log(msg: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    eprintln!("{now:.3} trireme-supervisor[{}]: {msg}", std::process::id());
}

fn sigset() -> libc::sigset_t {
    // SAFETY: plain libc set manipulation on a local.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Waits for one of our signals, up to `timeout` (None: forever). None on timeout.
fn wait_signal(set: &libc::sigset_t, timeout: Option<Duration>) -> Option<i32> {
    loop {
        // SAFETY: set is a valid sigset; info/ts are locals.
        let r = unsafe {
            match timeout {
                None => libc::sigwaitinfo(set, std::ptr::null_mut()),
                Some(t) => {
                    let ts = libc::timespec {
                        tv_sec: t.as_secs() as libc::time_t,
                        tv_nsec: t.subsec_nanos() as libc::c_long,
                    };
                    libc::sigtimedwait(set, std::ptr::null_mut(), &ts)
                }
            }
        };
        if r > 0 {
            return Some(r);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return None;
    }
}

fn is_stop(sig: i32) -> bool {
    matches!(sig, libc::SIGTERM | libc::SIGINT)
}

fn stop(child: &mut Child) {
    let pid = child.id();
    crate::process::signal(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            log(&format!("enforcer {pid} stopped: {st}"));
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    log(&format!(
        "enforcer {pid} ignored SIGTERM for 5 s; killing it"
    ));
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs the supervisor; returns the process exit code.
pub fn run(args: &[String]) -> i32 {
    let a = match SuperviseArgs::parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("trireme supervise: {e}");
            return 2;
        }
    };
    // SAFETY: prctl with a NUL-terminated static name.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"trireme-sup".as_ptr());
    }
    debug_assert_eq!(SUPERVISOR_COMM, "trireme-sup");
    let set = sigset();
    // SAFETY: single-threaded here; blocks our signals so sigwaitinfo receives them.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let pid_file = state::pid_file(&a.control_dir, &a.id);
    let socket = state::socket_path(&a.control_dir, &a.id);
    if let Err(e) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
        log(&format!("cannot write {}: {e}", pid_file.display()));
        return 1;
    }
    let cleanup = || {
        let _ = std::fs::remove_file(&pid_file);
        let _ = std::fs::remove_file(&socket);
    };
    let delay = Duration::from_millis(a.restart_delay_ms);
    let mut starts: u64 = 0;
    loop {
        // A killed enforcer leaves its socket; the next one must be able to bind.
        let _ = std::fs::remove_file(&socket);
        starts += 1;
        let mut cmd = Command::new(&a.enforcer);
        cmd.args(&a.enforcer_args);
        // SAFETY: only async-signal-safe calls between fork and exec. The child must not
        // inherit our blocked signals, nor ignored ones from whoever started us.
        unsafe {
            cmd.pre_exec(|| {
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut empty);
                libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                for s in [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT, libc::SIGHUP] {
                    libc::signal(s, libc::SIG_DFL);
                }
                Ok(())
            });
        }
        match cmd.spawn() {
            Ok(mut child) => {
                log(&format!(
                    "started enforcer {} (start #{starts}): {}",
                    child.id(),
                    a.enforcer.display()
                ));
                loop {
                    match wait_signal(&set, None) {
                        Some(s) if is_stop(s) => {
                            log("stop requested");
                            stop(&mut child);
                            cleanup();
                            return 0;
                        }
                        Some(libc::SIGHUP) => {
                            // The enforcer reloads its policy directory on SIGHUP.
                            log("forwarding SIGHUP (policy reload) to the enforcer");
                            crate::process::signal(child.id(), nix::sys::signal::Signal::SIGHUP);
                        }
                        _ => {
                            if let Ok(Some(st)) = child.try_wait() {
                                log(&format!(
                                    "enforcer {} exited ({st}); restarting in {} ms",
                                    child.id(),
                                    a.restart_delay_ms
                                ));
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => log(&format!(
                "cannot start {}: {e}; retrying in {} ms",
                a.enforcer.display(),
                a.restart_delay_ms
            )),
        }
        let deadline = Instant::now() + delay;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match wait_signal(&set, Some(left)) {
                Some(s) if is_stop(s) => {
                    log("stop requested while waiting to restart");
                    cleanup();
                    return 0;
                }
                Some(_) => continue,
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_roundtrip() {
        let a = SuperviseArgs {
            id: "c1-eth0".into(),
            control_dir: "/run/trireme".into(),
            restart_delay_ms: 250,
            enforcer: "/opt/cni/bin/trireme-enforcer".into(),
            enforcer_args: vec!["--id".into(), "c1-eth0".into(), "--".into()],
        };
        assert_eq!(SuperviseArgs::parse(&a.to_args()).unwrap(), a);
        assert!(SuperviseArgs::parse(&["supervise".into()]).is_err());
        assert!(SuperviseArgs::parse(&["other".into()]).is_err());
    }
}
