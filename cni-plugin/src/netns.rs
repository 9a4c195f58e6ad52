//! Entering a pod network namespace, in one place. `setns` changes only the calling thread, so
//! work runs either in a short-lived thread or in a child process (`pre_exec`).

use crate::error::{Error, Result};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| {
        Error::Netns(format!(
            "cannot open network namespace {}: {e}",
            path.display()
        ))
    })
}

/// True when `path` exists and is a network namespace.
pub fn exists(path: &Path) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    // A bind-mounted namespace file is an nsfs inode; setns with CLONE_NEWNET rejects
    // anything else. Check in a throwaway thread.
    std::thread::scope(|s| {
        s.spawn(|| nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).is_ok())
            .join()
            .unwrap_or(false)
    })
}

/// Runs `f` on a fresh thread inside the namespace at `path`.
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Result<T> {
    let ns = open(path)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::Netns(format!("cannot enter {}: {e}", path.display())))?;
            Ok(f())
        })
        .join()
        .map_err(|_| Error::Netns("thread inside the pod namespace panicked".into()))?
    })
}

/// Runs a command inside the namespace at `path`, feeding it `stdin`, and returns its output.
pub fn command_output(path: &Path, mut cmd: Command, stdin: Option<&[u8]>) -> Result<Output> {
    let ns = open(path)?;
    let fd = ns.as_raw_fd();
    // SAFETY: setns is async-signal-safe; the fd stays open until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let what = format!("cannot run {cmd:?} in {}", path.display());
    let ctx = || what.clone();
    let mut child = cmd.spawn().map_err(|e| Error::io(ctx(), e))?;
    drop(ns);
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // Scripts are small (well under the pipe buffer), so writing before reading is safe.
        pipe.write_all(input).map_err(|e| Error::io(ctx(), e))?;
    }
    child.wait_with_output().map_err(|e| Error::io(ctx(), e))
}

/// The index of interface `ifname` inside the namespace, if it exists.
pub fn interface_index(path: &Path, ifname: &str) -> Result<Option<u32>> {
    run_in(path, || nix::net::if_::if_nametoindex(ifname).ok())
}
