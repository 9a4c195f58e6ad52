//! The enforcer crate's error type for its datapath glue (netns, rules, queue, control
//! socket). Every variant carries the context a person needs to act on it.

use std::path::PathBuf;

/// Errors of the enforcer's datapath glue.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A network namespace could not be opened or entered.
    #[error("network namespace {path}: {msg}")]
    Netns { path: PathBuf, msg: String },
    /// The enforcer would run in the host network namespace.
    #[error("refusing to run in the host network namespace ({path} is the host's, inode {inode})")]
    HostNetns { path: PathBuf, inode: u64 },
    /// An external command (iptables-restore, iptables-save, conntrack) failed.
    #[error("{cmd}: {msg}")]
    Command { cmd: String, msg: String },
    /// Bad value for an option or bad input (e.g. labels JSON).
    #[error("invalid {what}: {msg}")]
    Invalid { what: String, msg: String },
    /// NFQUEUE socket errors.
    #[error("NFQUEUE {queue}: {msg}")]
    Queue { queue: u16, msg: String },
    /// Control socket I/O, server or client side.
    #[error("control socket {path}: {msg}")]
    Control { path: PathBuf, msg: String },
    /// The enforcer answered a control request with an error.
    #[error("enforcer refused the request: {0}")]
    Refused(String),
    /// File I/O with the path it concerns.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Several failures during teardown; teardown went on after each.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    List(Vec<Error>),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn cmd(cmd: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Command {
            cmd: cmd.into(),
            msg: msg.into(),
        }
    }
}

/// Result with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
