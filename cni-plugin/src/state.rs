//! What trireme remembers per attachment, so DEL and GC know what exists:
//! `<stateDir>/<network>/<id>.json`, plus files under controlDir named after the id.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Longest unix socket path Linux accepts (sun_path minus the NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// The attachment id: container id + interface name, reduced to `[A-Za-z0-9_.-]`.
pub fn attachment_id(container_id: &str, ifname: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let cid: String = clean(container_id).chars().take(64).collect();
    format!("{cid}-{}", clean(ifname))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub id: String,
    pub container_id: String,
    pub ifname: String,
    pub network: String,
    pub netns: Option<String>,
    pub supervisor_pid: u32,
    pub control_dir: PathBuf,
    pub enforcer: PathBuf,
}

impl State {
    pub fn socket(&self) -> PathBuf {
        socket_path(&self.control_dir, &self.id)
    }
    pub fn pid_file(&self) -> PathBuf {
        pid_file(&self.control_dir, &self.id)
    }
    pub fn log_file(&self) -> PathBuf {
        log_file(&self.control_dir, &self.id)
    }
}

pub fn socket_path(control_dir: &Path, id: &str) -> PathBuf {
    control_dir.join(format!("{id}.sock"))
}
pub fn pid_file(control_dir: &Path, id: &str) -> PathBuf {
    control_dir.join(format!("{id}.pid"))
}
pub fn log_file(control_dir: &Path, id: &str) -> PathBuf {
    control_dir.join(format!("{id}.log"))
}
pub fn state_file(network_dir: &Path, id: &str) -> PathBuf {
    network_dir.join(format!("{id}.json"))
}

pub fn lock_file(network_dir: &Path, id: &str) -> PathBuf {
    network_dir.join(format!("{id}.lock"))
}

/// An exclusive lock on one attachment (flock on `<id>.lock` next to its state file), held
/// by ADD, DEL and CHECK for their whole run; GC skips attachments that are locked.
pub struct AttachmentLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
    path: PathBuf,
}

impl AttachmentLock {
    fn open(path: &Path) -> Result<std::fs::File> {
        create_private_dir(path.parent().unwrap_or(Path::new("/")))?;
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(format!("cannot open lock {}", path.display()), e))
    }

    /// Waits for the lock.
    pub fn acquire(path: &Path) -> Result<AttachmentLock> {
        let f = Self::open(path)?;
        let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::io(format!("cannot lock {}", path.display()), e.into()))?;
        Ok(AttachmentLock {
            _lock: lock,
            path: path.to_path_buf(),
        })
    }

    /// Takes the lock if nobody holds it; `Ok(None)` when an operation is in progress.
    pub fn try_acquire(path: &Path) -> Result<Option<AttachmentLock>> {
        let f = Self::open(path)?;
        match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(AttachmentLock {
                _lock: lock,
                path: path.to_path_buf(),
            })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(Error::io(
                format!("cannot lock {}", path.display()),
                e.into(),
            )),
        }
    }

    /// Removes the lock file (the attachment is gone) and releases the lock.
    pub fn remove(self) -> Result<()> {
        remove_file(&self.path)
    }
}

/// Reads a state file; `Ok(None)` when there is none.
pub fn load(path: &Path) -> Result<Option<State>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Decode {
                what: format!("state file {}", path.display()),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
    }
}

/// Writes a state file atomically (temp file + rename), creating the directory (0700).
pub fn save(path: &Path, state: &State) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    create_private_dir(dir)?;
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec_pretty(state).map_err(|e| Error::Decode {
        what: "state".into(),
        reason: e.to_string(),
    })?;
    std::fs::write(&tmp, body)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(format!("cannot write state file {}", path.display()), e)
        })
}

/// Every state file of a network (paths), sorted.
pub fn list(network_dir: &Path) -> Result<Vec<PathBuf>> {
    list_ext(network_dir, "json")
}

/// Every file of a network's state directory with extension `ext`, sorted.
pub fn list_ext(network_dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let rd = match std::fs::read_dir(network_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::io(
                format!("cannot list {}", network_dir.display()),
                e,
            ))
        }
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    out.sort();
    Ok(out)
}

/// Creates a directory (and parents) with mode 0700 for the last component.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("cannot create directory {}", dir.display()), e))
}

/// Removes a file; a missing file is fine.
pub fn remove_file(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("cannot remove {}", p.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_sanitised_and_bounded() {
        assert_eq!(attachment_id("abc", "eth0"), "abc-eth0");
        assert_eq!(attachment_id("abc", "we:ird"), "abc-we_ird");
        let long = "a".repeat(100);
        assert_eq!(attachment_id(&long, "eth0").len(), 64 + 5);
    }

    #[test]
    fn save_load_list_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let net = dir.path().join("net1");
        let s = State {
            id: "c-eth0".into(),
            container_id: "c".into(),
            ifname: "eth0".into(),
            network: "net1".into(),
            netns: Some("/var/run/netns/x".into()),
            supervisor_pid: 42,
            control_dir: "/run/trireme".into(),
            enforcer: "/opt/cni/bin/trireme-enforcer".into(),
        };
        let p = state_file(&net, &s.id);
        assert_eq!(load(&p).unwrap(), None);
        save(&p, &s).unwrap();
        assert_eq!(load(&p).unwrap(), Some(s.clone()));
        assert_eq!(list(&net).unwrap(), vec![p.clone()]);
        assert_eq!(s.socket(), PathBuf::from("/run/trireme/c-eth0.sock"));
        remove_file(&p).unwrap();
        remove_file(&p).unwrap();
        assert!(list(&net).unwrap().is_empty());
        let lp = lock_file(&net, "c-eth0");
        let held = AttachmentLock::acquire(&lp).unwrap();
        assert!(AttachmentLock::try_acquire(&lp).unwrap().is_none());
        drop(held);
        let again = AttachmentLock::try_acquire(&lp)
            .unwrap()
            .expect("free again");
        again.remove().unwrap();
        assert!(!lp.exists());
        std::fs::write(&p, "garbage").unwrap();
        assert_eq!(load(&p).unwrap_err().code(), 6);
    }
}
