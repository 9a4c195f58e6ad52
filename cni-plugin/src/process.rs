//! Processes by pid, read from /proc: liveness (zombies count as gone), identification of our
//! supervisor, children, and termination with a deadline.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::Path;
use std::time::{Duration, Instant};

/// Name the supervisor gives itself (comm), so it is recognisable in `ps` and by tests.
pub const SUPERVISOR_COMM: &str = "trireme-sup";

fn stat_fields(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces: state and ppid follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut it = rest.split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((state, ppid))
}

/// The process exists and has not exited (a zombie is gone).
pub fn is_alive(pid: u32) -> bool {
    pid != 0 && matches!(stat_fields(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

/// The command line of a live process.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

/// True when `pid` is a live trireme supervisor for attachment `id` (so a recycled pid is
/// never signalled).
pub fn is_supervisor_of(pid: u32, id: &str) -> bool {
    if !is_alive(pid) {
        return false;
    }
    let Some(args) = cmdline(pid) else {
        return false;
    };
    crate::supervisor::SuperviseArgs::parse(args.get(1..).unwrap_or_default())
        .map(|a| a.id == id)
        .unwrap_or(false)
}

/// Live enforcers started for attachment `id` under `control_dir` (found by their command
/// line, so an enforcer orphaned by a killed supervisor is found too).
pub fn enforcers_of(id: &str, control_dir: &Path) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let dir_s = control_dir.display().to_string();
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| is_alive(*pid))
        .filter(|pid| {
            cmdline(*pid).is_some_and(|args| {
                args.get(1).map(String::as_str) != Some("supervise")
                    && has_pair(&args, "--id", id)
                    && has_pair(&args, "--control-dir", &dir_s)
            })
        })
        .collect()
}

fn has_pair(args: &[String], flag: &str, value: &str) -> bool {
    args.windows(2).any(|w| w[0] == flag && w[1] == value)
}

/// Live children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|c| matches!(stat_fields(*c), Some((s, pp)) if pp == pid && s != 'Z'))
        .collect()
}

/// Sends `sig`; a process that is already gone is not an error.
pub fn signal(pid: u32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), sig);
}

/// Waits until `pid` is gone, up to `timeout`. True if it is gone.
pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while is_alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// SIGTERM, then SIGKILL after `grace`. True when the process is gone.
pub fn terminate(pid: u32, grace: Duration) -> bool {
    if !is_alive(pid) {
        return true;
    }
    signal(pid, Signal::SIGTERM);
    if wait_gone(pid, grace) {
        return true;
    }
    signal(pid, Signal::SIGKILL);
    wait_gone(pid, Duration::from_secs(2))
}

/// Whether a path exists, without following a dangling symlink.
pub fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_pid_zero_is_not() {
        assert!(is_alive(std::process::id()));
        assert!(!is_alive(0));
        assert!(cmdline(std::process::id()).is_some());
        assert!(!is_supervisor_of(std::process::id(), "x"));
        assert!(enforcers_of("no-such-id", Path::new("/nonexistent")).is_empty());
        assert!(has_pair(
            &["a".into(), "--id".into(), "x".into()],
            "--id",
            "x"
        ));
        assert!(!has_pair(&["--id".into()], "--id", "x"));
    }
}
