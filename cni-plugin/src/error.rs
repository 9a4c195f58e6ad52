//! The one error type of the plugin, mapped onto the CNI spec's error codes.

use serde_json::json;

/// CNI spec error codes used by trireme (spec 1.1, "Error").
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const BAD_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// trireme's own codes start at 100.
    pub const ENFORCER: u32 = 100;
    pub const CHECK_FAILED: u32 = 101;
    pub const NETNS: u32 = 102;
    pub const ALREADY_ATTACHED: u32 = 103;
    pub const TEARDOWN: u32 = 104;
}

/// Everything that can go wrong in the plugin. Each variant maps to one CNI error code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("incompatible CNI version {version:?}: trireme supports {supported}")]
    IncompatibleVersion { version: String, supported: String },
    #[error("bad environment: {0}")]
    Env(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot decode {what}: {reason}")]
    Decode { what: String, reason: String },
    #[error("invalid network configuration: {0}")]
    Config(String),
    #[error("try again later: {0}")]
    TryAgain(String),
    #[error("trireme cannot serve ADD: {0}")]
    NotAvailable(String),
    #[error("enforcer failed: {msg}")]
    Enforcer { msg: String, details: String },
    #[error("CHECK failed: {0}")]
    Check(String),
    #[error("pod network namespace: {0}")]
    Netns(String),
    #[error("attachment {0} already has an enforcer; run DEL first")]
    AlreadyAttached(String),
    #[error("teardown incomplete: {}", join(.0))]
    Teardown(Vec<Error>),
    #[error("{original}")]
    RolledBack {
        original: Box<Error>,
        rollback: Box<Error>,
    },
}

fn join(errs: &[Error]) -> String {
    errs.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }

    /// The CNI error code of this error.
    pub fn code(&self) -> u32 {
        match self {
            Error::IncompatibleVersion { .. } => code::INCOMPATIBLE_VERSION,
            Error::Env(_) => code::BAD_ENV,
            Error::Io { .. } => code::IO,
            Error::Decode { .. } => code::DECODE,
            Error::Config(_) => code::INVALID_CONFIG,
            Error::TryAgain(_) => code::TRY_AGAIN,
            Error::NotAvailable(_) => code::NOT_AVAILABLE,
            Error::Enforcer { .. } => code::ENFORCER,
            Error::Check(_) => code::CHECK_FAILED,
            Error::Netns(_) => code::NETNS,
            Error::AlreadyAttached(_) => code::ALREADY_ATTACHED,
            Error::Teardown(_) => code::TEARDOWN,
            Error::RolledBack { original, .. } => original.code(),
        }
    }

    fn details(&self) -> String {
        match self {
            Error::Enforcer { details, .. } => details.clone(),
            Error::Io { source, .. } => source.to_string(),
            Error::RolledBack { original, rollback } => {
                let mut d = original.details();
                if !d.is_empty() {
                    d.push('\n');
                }
                d.push_str(&format!("rollback failed too: {rollback}"));
                d
            }
            _ => String::new(),
        }
    }

    /// The spec's error JSON, in the given cniVersion.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let mut v = json!({
            "cniVersion": cni_version,
            "code": self.code(),
            "msg": self.to_string(),
        });
        let details = self.details();
        if !details.is_empty() {
            v["details"] = json!(details);
        }
        v
    }

    /// Adds the failures of a rollback to this error (the original error keeps its code and
    /// message; the rollback failure goes to the details).
    pub fn with_rollback(self, rollback: Option<Error>) -> Error {
        match rollback {
            None => self,
            Some(r) => Error::RolledBack {
                original: Box::new(self),
                rollback: Box::new(r),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_spec() {
        assert_eq!(Error::Env("x".into()).code(), 4);
        assert_eq!(
            Error::Decode {
                what: "a".into(),
                reason: "b".into()
            }
            .code(),
            6
        );
        assert_eq!(Error::config("x").code(), 7);
        assert_eq!(Error::TryAgain("x".into()).code(), 11);
        assert_eq!(Error::NotAvailable("x".into()).code(), 50);
        assert!(Error::Check("x".into()).code() >= 100);
    }

    #[test]
    fn error_json_has_code_msg_and_details() {
        let e = Error::Enforcer {
            msg: "not ready".into(),
            details: "log tail".into(),
        };
        let j = e.to_json("1.0.0");
        assert_eq!(j["cniVersion"], "1.0.0");
        assert_eq!(j["code"], 100);
        assert_eq!(j["msg"], "enforcer failed: not ready");
        assert_eq!(j["details"], "log tail");
        let j = Error::config("bad").to_json("0.4.0");
        assert!(j.get("details").is_none());
    }
}
