//! Sandbox pieces for tests on real network namespaces: named netns and host links removed on
//! Drop, code and commands run inside a namespace, unique names, binaries of this workspace.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// Panics with a clear message when not root (the tests need namespaces and iptables).
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (network namespaces, iptables, NFQUEUE): run it as root, e.g. sudo scripts/test.sh"
    );
}

/// A name unique to this process and call: `<prefix><pid base36><counter>`, short enough for
/// interface names (15 bytes) when `prefix` has at most 4 characters.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{}", base36(std::process::id()), base36(n))
}

fn base36(mut n: u32) -> String {
    const D: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = Vec::new();
    loop {
        s.push(D[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    s.reverse();
    String::from_utf8(s).expect("ascii")
}

/// A binary of this workspace (`trireme`, `trireme-enforcer`, `triremectl`), found in the
/// target dir next to the running test executable. Panics with the command to build it.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("target dir");
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is not built: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        p.display()
    );
    p
}

fn run(cmd: &mut Command) -> std::io::Result<Output> {
    let out = cmd.output()?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(std::io::Error::other(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A named network namespace (`ip netns add`), deleted on Drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: PathBuf,
    deleted: bool,
}

impl Netns {
    /// Creates `<prefix><unique>` with loopback up.
    pub fn new(prefix: &str) -> std::io::Result<Netns> {
        let name = unique_name(prefix);
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns {
            path: PathBuf::from(format!("/var/run/netns/{name}")),
            name,
            deleted: false,
        };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a fresh thread inside this namespace (sockets made there stay there).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
        run_in(&self.path, f)
    }

    /// Runs a command inside this namespace; an unsuccessful exit is an error.
    pub fn exec(&self, argv: &[&str]) -> std::io::Result<Output> {
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..]);
        run(&mut in_netns(&self.path, cmd)?)
    }

    /// Deletes the namespace now (e.g. to test DEL without netns).
    pub fn delete(&mut self) -> std::io::Result<()> {
        if !self.deleted {
            run(Command::new("ip").args(["netns", "del", &self.name]))?;
            self.deleted = true;
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.delete();
    }
}

/// Runs `f` on a fresh thread inside the namespace at `path`.
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    let ns = File::open(path)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            Ok(f())
        })
        .join()
        .map_err(|_| std::io::Error::other("closure inside the namespace panicked"))?
    })
}

/// Prepares `cmd` to run inside the namespace at `path`.
pub fn in_netns(path: &Path, mut cmd: Command) -> std::io::Result<Command> {
    let ns = File::open(path)?;
    // SAFETY: setns is async-signal-safe; the fd is owned by the closure until exec (CLOEXEC).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

/// A host link (e.g. the bridge the bridge plugin creates), deleted on Drop if it exists.
#[derive(Debug)]
pub struct HostLink(pub String);

impl HostLink {
    pub fn exists(&self) -> bool {
        Path::new("/sys/class/net").join(&self.0).exists()
    }
}

impl Drop for HostLink {
    fn drop(&mut self) {
        if self.exists() {
            let _ = Command::new("ip").args(["link", "del", &self.0]).output();
        }
    }
}

/// A pod: its namespace and the address the CNI chain gave it.
#[derive(Debug)]
pub struct Pod {
    pub netns: Netns,
    pub ip: IpAddr,
    pub container_id: String,
    pub ifname: String,
}

/// The first address of interface `interface_index` in a CNI result.
pub fn result_ip(result: &serde_json::Value) -> Option<IpAddr> {
    let ips = result.get("ips")?.as_array()?;
    ips.iter()
        .filter_map(|ip| ip.get("address")?.as_str()?.split('/').next()?.parse().ok())
        .next()
}

/// Live processes whose command line contains `needle`.
pub fn processes_with(needle: &str) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let zombie = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                .is_some_and(|s| s == "Z");
            !zombie
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(needle))
                    .unwrap_or(false)
        })
        .collect()
}

/// Makes this process the reaper of orphaned descendants (supervisors detached by the
/// plugin), so [`reap_orphans`] can collect them: on a node, init does this.
pub fn become_subreaper() {
    // SAFETY: plain prctl.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// Reaps exited orphans named `comm` whose parent is this process (only those, so children
/// that other threads wait for are left alone).
pub fn reap_orphans(comm: &str) {
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return;
    };
    for pid in rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next();
        let ppid = rest.next().and_then(|p| p.parse::<u32>().ok());
        if name == comm && state == Some("Z") && ppid == Some(me) {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_unique_and_short() {
        let a = unique_name("tb");
        let b = unique_name("tb");
        assert_ne!(a, b);
        assert!(a.len() <= 15, "{a}");
        assert_eq!(base36(0), "0");
        assert_eq!(base36(36), "10");
    }

    #[test]
    fn result_ip_reads_first_address() {
        let r = serde_json::json!({"ips":[{"address":"10.1.2.3/24","interface":2}]});
        assert_eq!(result_ip(&r), Some("10.1.2.3".parse().unwrap()));
        assert_eq!(result_ip(&serde_json::json!({})), None);
    }
}
