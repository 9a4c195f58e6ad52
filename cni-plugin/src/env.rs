//! The CNI_* environment of one invocation, parsed and validated without I/O.

use crate::error::{Error, Result};

/// The CNI operation requested by `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(s: &str) -> Result<Command> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            other => {
                return Err(Error::Env(format!(
                    "CNI_COMMAND={other:?} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC"
                )))
            }
        })
    }
}

/// The parsed environment of an invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    pub command: Command,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    /// `CNI_ARGS` as key/value pairs, in order.
    pub args: Vec<(String, String)>,
    pub path: Option<String>,
}

impl CniEnv {
    /// Parses the environment through `get` (e.g. `|k| std::env::var(k).ok()`), checking that
    /// every variable the command needs is present and well formed.
    pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<CniEnv> {
        let command = match get("CNI_COMMAND") {
            Some(c) => Command::parse(&c)?,
            None => return Err(Error::Env("CNI_COMMAND is not set".into())),
        };
        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
        let env = CniEnv {
            command,
            container_id: nonempty("CNI_CONTAINERID"),
            netns: nonempty("CNI_NETNS"),
            ifname: nonempty("CNI_IFNAME"),
            args: match get("CNI_ARGS") {
                Some(a) => parse_cni_args(&a)?,
                None => Vec::new(),
            },
            path: nonempty("CNI_PATH"),
        };
        let (need_id, need_netns, need_if) = match command {
            Command::Add | Command::Check => (true, true, true),
            Command::Del => (true, false, true),
            Command::Version | Command::Status | Command::Gc => (false, false, false),
        };
        if need_id {
            match &env.container_id {
                None => {
                    return Err(Error::Env(format!(
                        "CNI_CONTAINERID is required for {command:?}"
                    )))
                }
                Some(id) => validate_container_id(id)?,
            }
        }
        if need_netns && env.netns.is_none() {
            return Err(Error::Env(format!("CNI_NETNS is required for {command:?}")));
        }
        if need_if {
            match &env.ifname {
                None => {
                    return Err(Error::Env(format!(
                        "CNI_IFNAME is required for {command:?}"
                    )))
                }
                Some(i) => validate_ifname(i)?,
            }
        }
        Ok(env)
    }

    /// The value of a `CNI_ARGS` key.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn container_id(&self) -> &str {
        self.container_id.as_deref().unwrap_or_default()
    }

    pub fn ifname(&self) -> &str {
        self.ifname.as_deref().unwrap_or_default()
    }
}

/// `K=V;K2=V2` as the spec defines `CNI_ARGS`.
pub fn parse_cni_args(s: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in s.split(';').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => out.push((k.to_string(), v.to_string())),
            _ => {
                return Err(Error::Env(format!(
                    "CNI_ARGS entry {pair:?} is not KEY=VALUE (entries are separated by ';')"
                )))
            }
        }
    }
    Ok(out)
}

/// Container ids: non-empty, alphanumeric first, then alphanumerics, `_`, `.`, `-` (spec 1.1).
pub fn validate_container_id(id: &str) -> Result<()> {
    let ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Env(format!(
            "CNI_CONTAINERID {id:?} must start with a letter or digit and contain only letters, digits, '_', '.', '-'"
        )))
    }
}

/// Interface names as Linux accepts them (spec 1.1).
pub fn validate_ifname(name: &str) -> Result<()> {
    let bad = name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        Err(Error::Env(format!(
            "CNI_IFNAME {name:?} is not a valid interface name (at most 15 characters, no '/', ':' or spaces)"
        )))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<CniEnv> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CniEnv::parse(|k| m.get(k).cloned())
    }

    #[test]
    fn add_needs_id_netns_ifname() {
        let full = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-1"),
        ];
        let e = env(&full).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.arg("K8S_POD_NAMESPACE"), Some("prod"));
        assert_eq!(e.arg("K8S_POD_NAME"), Some("web-1"));
        for skip in 1..4 {
            let partial: Vec<_> = full
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, p)| *p)
                .collect();
            assert_eq!(
                env(&partial).unwrap_err().code(),
                4,
                "without {:?}",
                full[skip]
            );
        }
    }

    #[test]
    fn del_does_not_need_netns() {
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        assert_eq!(e.netns, None);
    }

    #[test]
    fn bad_values_are_code_4() {
        assert_eq!(env(&[]).unwrap_err().code(), 4);
        assert_eq!(env(&[("CNI_COMMAND", "FOO")]).unwrap_err().code(), 4);
        assert_eq!(
            env(&[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "-x"),
                ("CNI_IFNAME", "eth0")
            ])
            .unwrap_err()
            .code(),
            4
        );
        assert_eq!(
            env(&[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "x"),
                ("CNI_IFNAME", "a/b")
            ])
            .unwrap_err()
            .code(),
            4
        );
        assert_eq!(
            env(&[("CNI_COMMAND", "VERSION"), ("CNI_ARGS", "novalue")])
                .unwrap_err()
                .code(),
            4
        );
    }

    #[test]
    fn cni_args_parse() {
        assert_eq!(
            parse_cni_args("IgnoreUnknown=1;A=b=c").unwrap(),
            vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("A".into(), "b=c".into())
            ]
        );
        assert!(parse_cni_args("").unwrap().is_empty());
        assert!(parse_cni_args("=v").is_err());
    }
}
