//! Everything about network namespaces, in one place.
//!
//! `setns(2)` changes only the calling thread. The enforcer calls [`enter`] on its main
//! thread before it creates any other thread, so every thread and every child process
//! (iptables-restore, conntrack) lives in the pod's netns. [`run_in`] runs a closure on a
//! fresh thread inside a netns (tests, the CNI plugin) without touching the caller.

use crate::error::{Error, Result};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The host's network namespace as seen by init.
pub const HOST_NETNS: &str = "/proc/1/ns/net";

/// The calling thread's network namespace.
pub const SELF_NETNS: &str = "/proc/thread-self/ns/net";

fn nerr(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Netns {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

/// Inode number of a namespace file (identifies the namespace).
pub fn inode(path: &Path) -> Result<u64> {
    std::fs::metadata(path)
        .map(|m| m.ino())
        .map_err(|e| nerr(path, e))
}

/// Pure check: is the namespace `current` the host's namespace `host`?
pub fn refuse_host(current: u64, host: u64, path: &Path) -> Result<()> {
    if current == host {
        Err(Error::HostNetns {
            path: path.to_path_buf(),
            inode: current,
        })
    } else {
        Ok(())
    }
}

fn setns(path: &Path) -> Result<()> {
    let file = File::open(path).map_err(|e| nerr(path, format!("open: {e}")))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| nerr(path, format!("setns: {e}")))
}

/// Enters the network namespace at `path` on the calling thread and verifies that it is
/// not the host's. Call it while the process is single-threaded.
pub fn enter(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| nerr(path, e))?;
    if meta.is_dir() {
        return Err(nerr(
            path,
            "is a directory; give a namespace file such as /var/run/netns/NAME or /proc/PID/ns/net",
        ));
    }
    let before = inode(Path::new(SELF_NETNS))?;
    setns(path)?;
    let now = inode(Path::new(SELF_NETNS))?;
    refuse_host(now, host_inode(before), path)
}

/// The host netns inode: init's when readable; otherwise (e.g. in a container where
/// /proc/1 is not ours to read) the namespace the process was started in, since the
/// enforcer is always started from the host side.
fn host_inode(started_in: u64) -> u64 {
    inode(Path::new(HOST_NETNS)).unwrap_or(started_in)
}

/// Runs `f` on a new thread that first entered the netns at `path`; returns its result.
/// The caller's thread stays where it is.
pub fn run_in<T, F>(path: &Path, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let p: PathBuf = path.to_path_buf();
    std::thread::spawn(move || -> Result<T> {
        setns(&p)?;
        Ok(f())
    })
    .join()
    .map_err(|_| nerr(path, "thread panicked inside the namespace"))?
}

/// Spawns `f` on a new thread inside the netns at `path` and returns the join handle
/// (for servers that keep running). The setns error, if any, is the thread's result.
pub fn spawn_in<T, F>(path: &Path, f: F) -> std::thread::JoinHandle<Result<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let p: PathBuf = path.to_path_buf();
    std::thread::spawn(move || -> Result<T> {
        setns(&p)?;
        Ok(f())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_refused_other_is_fine() {
        let p = Path::new("/proc/1/ns/net");
        assert!(matches!(
            refuse_host(4026531840, 4026531840, p),
            Err(Error::HostNetns {
                inode: 4026531840,
                ..
            })
        ));
        assert!(refuse_host(4026532000, 4026531840, p).is_ok());
    }

    #[test]
    fn missing_or_wrong_path_is_a_clear_error() {
        let e = enter(Path::new("/nonexistent/netns/x")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/netns/x"), "{e}");
        let e = enter(Path::new("/proc")).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
    }
}
