//! The plugin's network configuration and the pod facts derived from it (labels, ports,
//! namespace), validated without touching anything.

use crate::env::CniEnv;
use crate::error::{Error, Result};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use trireme_policy::{NamedPort, Protocol};

/// CNI versions whose configs trireme accepts.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.4.0", "1.0.0", "1.1.0"];
/// The version trireme speaks natively.
pub const CURRENT_VERSION: &str = "1.1.0";
/// Runtime capability through which containerd passes pod annotations.
pub const ANNOTATIONS_CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";
pub const LABELS_ANNOTATION: &str = "trireme.io/labels";
pub const PORTS_ANNOTATION: &str = "trireme.io/ports";

pub const DEFAULT_POLICY_DIR: &str = "/etc/trireme/policies";
pub const DEFAULT_KEY_DIR: &str = "/etc/trireme/keys";
pub const DEFAULT_CONTROL_DIR: &str = "/run/trireme";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/trireme";
pub const DEFAULT_READY_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_RESTART_DELAY_MS: u64 = 1_000;
const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error"];

/// The JSON the runtime writes to stdin, as far as trireme reads it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: Option<String>,
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub plugin_type: Option<String>,
    pub policy_dir: Option<PathBuf>,
    pub key_dir: Option<PathBuf>,
    pub fail_open: Option<bool>,
    pub reject: Option<bool>,
    pub deny_node: Option<bool>,
    pub log_level: Option<String>,
    pub enforcer_path: Option<PathBuf>,
    pub control_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub ready_timeout_ms: Option<u64>,
    pub restart_delay_ms: Option<u64>,
    pub args: Option<Value>,
    pub runtime_config: Option<Value>,
    pub prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub cni_version: String,
    pub name: String,
    pub policy_dir: PathBuf,
    pub key_dir: PathBuf,
    pub fail_open: bool,
    pub reject: bool,
    pub deny_node: bool,
    pub log_level: String,
    pub enforcer_path: Option<PathBuf>,
    pub control_dir: PathBuf,
    pub state_dir: PathBuf,
    pub ready_timeout_ms: u64,
    pub restart_delay_ms: u64,
}

/// Decodes stdin. Not JSON, or a field of the wrong type, is a decode error (code 6).
pub fn decode(stdin: &[u8]) -> Result<(NetConf, Value)> {
    let raw: Value = serde_json::from_slice(stdin).map_err(|e| Error::Decode {
        what: "network configuration on stdin".into(),
        reason: e.to_string(),
    })?;
    if !raw.is_object() {
        return Err(Error::Decode {
            what: "network configuration on stdin".into(),
            reason: "expected a JSON object".into(),
        });
    }
    let conf: NetConf = serde_json::from_value(raw.clone()).map_err(|e| Error::Decode {
        what: "network configuration on stdin".into(),
        reason: e.to_string(),
    })?;
    Ok((conf, raw))
}

/// The config's cniVersion if trireme supports it.
pub fn check_version(conf: &NetConf) -> Result<String> {
    match conf.cni_version.as_deref() {
        None | Some("") => Err(Error::config(
            "cniVersion is missing; set it to one of 0.4.0, 1.0.0, 1.1.0",
        )),
        Some(v) if SUPPORTED_VERSIONS.contains(&v) => Ok(v.to_string()),
        Some(v) => Err(Error::IncompatibleVersion {
            version: v.to_string(),
            supported: SUPPORTED_VERSIONS.join(", "),
        }),
    }
}

impl Config {
    /// Validates values (no I/O).
    pub fn from_netconf(conf: &NetConf) -> Result<Config> {
        let cni_version = check_version(conf)?;
        let name = match conf.name.as_deref() {
            None | Some("") => {
                return Err(Error::config(
                    "\"name\" (the network name) is missing from the configuration",
                ))
            }
            Some(n) => n.to_string(),
        };
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(Error::config(format!(
                "network name {name:?} may contain only letters, digits, '_', '.', '-'"
            )));
        }
        let log_level = conf.log_level.clone().unwrap_or_else(|| "info".into());
        if !LOG_LEVELS.contains(&log_level.as_str()) {
            return Err(Error::config(format!(
                "logLevel {log_level:?} is not one of {}",
                LOG_LEVELS.join(", ")
            )));
        }
        let abs = |field: &str, p: &Option<PathBuf>, default: &str| -> Result<PathBuf> {
            let p = p.clone().unwrap_or_else(|| PathBuf::from(default));
            if p.is_absolute() {
                Ok(p)
            } else {
                Err(Error::config(format!(
                    "{field} {} must be an absolute path",
                    p.display()
                )))
            }
        };
        let enforcer_path = match &conf.enforcer_path {
            Some(p) if !p.is_absolute() => {
                return Err(Error::config(format!(
                    "enforcerPath {} must be an absolute path",
                    p.display()
                )))
            }
            other => other.clone(),
        };
        let ready_timeout_ms = conf.ready_timeout_ms.unwrap_or(DEFAULT_READY_TIMEOUT_MS);
        if !(100..=600_000).contains(&ready_timeout_ms) {
            return Err(Error::config(format!(
                "readyTimeoutMs {ready_timeout_ms} must be between 100 and 600000"
            )));
        }
        let restart_delay_ms = conf.restart_delay_ms.unwrap_or(DEFAULT_RESTART_DELAY_MS);
        if restart_delay_ms > 60_000 {
            return Err(Error::config(format!(
                "restartDelayMs {restart_delay_ms} must be at most 60000"
            )));
        }
        Ok(Config {
            cni_version,
            name,
            policy_dir: abs("policyDir", &conf.policy_dir, DEFAULT_POLICY_DIR)?,
            key_dir: abs("keyDir", &conf.key_dir, DEFAULT_KEY_DIR)?,
            fail_open: conf.fail_open.unwrap_or(false),
            reject: conf.reject.unwrap_or(false),
            deny_node: conf.deny_node.unwrap_or(false),
            log_level,
            enforcer_path,
            control_dir: abs("controlDir", &conf.control_dir, DEFAULT_CONTROL_DIR)?,
            state_dir: abs("stateDir", &conf.state_dir, DEFAULT_STATE_DIR)?,
            ready_timeout_ms,
            restart_delay_ms,
        })
    }

    /// The directory holding the state files of this network's attachments.
    pub fn network_state_dir(&self) -> PathBuf {
        self.state_dir.join(&self.name)
    }
}

/// What the enforcer is told about its pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<NamedPort>,
}

#[derive(Deserialize)]
struct CniLabel {
    key: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PortSpec {
    name: String,
    port: u32,
    protocol: Option<String>,
}

/// Pod namespace, name, labels and named ports from CNI_ARGS, `args.cni.labels` and the pod
/// annotations (`trireme.io/labels` overrides `args.cni.labels` key by key).
pub fn pod_info(conf: &NetConf, env: &CniEnv) -> Result<PodInfo> {
    let namespace = env
        .arg("K8S_POD_NAMESPACE")
        .unwrap_or("default")
        .to_string();
    validate_dns_label(&namespace).map_err(|e| {
        Error::Env(format!(
            "K8S_POD_NAMESPACE {namespace:?} is not a valid namespace name: {e}"
        ))
    })?;
    let name = env
        .arg("K8S_POD_NAME")
        .map(str::to_string)
        .unwrap_or_else(|| env.container_id().chars().take(63).collect());
    validate_dns_subdomain(&name).map_err(|e| {
        Error::Env(format!(
            "K8S_POD_NAME {name:?} is not a valid pod name: {e}"
        ))
    })?;

    let mut labels = BTreeMap::new();
    if let Some(l) = conf
        .args
        .as_ref()
        .and_then(|a| a.get("cni"))
        .and_then(|c| c.get("labels"))
    {
        let list: Vec<CniLabel> = serde_json::from_value(l.clone()).map_err(|e| {
            Error::config(format!(
                "args.cni.labels must be a list of {{\"key\":..,\"value\":..}}: {e}"
            ))
        })?;
        for CniLabel { key, value } in list {
            labels.insert(key, value);
        }
    }
    let annotations = conf
        .runtime_config
        .as_ref()
        .and_then(|r| r.get(ANNOTATIONS_CAPABILITY));
    let annotation = |key: &str| -> Result<Option<String>> {
        match annotations.and_then(|a| a.get(key)) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Error::config(format!(
                "pod annotation {key} must be a string holding JSON"
            ))),
        }
    };
    if let Some(text) = annotation(LABELS_ANNOTATION)? {
        let map: BTreeMap<String, String> = serde_json::from_str(&text).map_err(|e| {
            Error::config(format!(
                "pod annotation {LABELS_ANNOTATION} must be a JSON object of string labels: {e}"
            ))
        })?;
        labels.extend(map);
    }
    for (k, v) in &labels {
        validate_label_key(k)
            .map_err(|e| Error::config(format!("label key {k:?} is invalid: {e}")))?;
        validate_label_value(v)
            .map_err(|e| Error::config(format!("label {k}={v:?} has an invalid value: {e}")))?;
    }
    let mut ports = Vec::new();
    if let Some(text) = annotation(PORTS_ANNOTATION)? {
        let list: Vec<PortSpec> = serde_json::from_str(&text).map_err(|e| {
            Error::config(format!(
                "pod annotation {PORTS_ANNOTATION} must be a JSON list of {{\"name\",\"port\",\"protocol\"}}: {e}"
            ))
        })?;
        for p in list {
            validate_port_name(&p.name)
                .map_err(|e| Error::config(format!("port name {:?} is invalid: {e}", p.name)))?;
            if !(1..=65535).contains(&p.port) {
                return Err(Error::config(format!(
                    "port {:?}: number {} is not in 1..65535",
                    p.name, p.port
                )));
            }
            let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => Protocol::Tcp,
                "UDP" => Protocol::Udp,
                "SCTP" => Protocol::Sctp,
                other => {
                    return Err(Error::config(format!(
                        "port {:?}: protocol {other:?} is not TCP, UDP or SCTP",
                        p.name
                    )))
                }
            };
            ports.push(NamedPort {
                name: p.name,
                port: p.port as u16,
                protocol,
            });
        }
    }
    Ok(PodInfo {
        namespace,
        name,
        labels,
        ports,
    })
}

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// RFC 1123 label: at most 63 lowercase alphanumerics or '-', alphanumeric at both ends.
pub fn validate_dns_label(s: &str) -> std::result::Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err("must be 1 to 63 characters".into());
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err("only lowercase letters, digits and '-' are allowed".into());
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn validate_dns_subdomain(s: &str) -> std::result::Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err("must be 1 to 253 characters".into());
    }
    for part in s.split('.') {
        validate_dns_label(part)?;
    }
    Ok(())
}

fn validate_qualified_name_part(s: &str) -> std::result::Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err("the name part must be 1 to 63 characters".into());
    }
    if !s
        .chars()
        .all(|c| is_alnum(c) || matches!(c, '-' | '_' | '.'))
    {
        return Err("only letters, digits, '-', '_' and '.' are allowed".into());
    }
    if !s.starts_with(is_alnum) || !s.ends_with(is_alnum) {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

/// Kubernetes label key: `[prefix/]name`, prefix a DNS subdomain, name a qualified name.
pub fn validate_label_key(key: &str) -> std::result::Result<(), String> {
    match key.split_once('/') {
        Some((prefix, name)) => {
            validate_dns_subdomain(prefix).map_err(|e| format!("prefix {prefix:?}: {e}"))?;
            validate_qualified_name_part(name)
        }
        None => validate_qualified_name_part(key),
    }
}

/// Kubernetes label value: empty, or at most 63 characters like a qualified name.
pub fn validate_label_value(v: &str) -> std::result::Result<(), String> {
    if v.is_empty() {
        Ok(())
    } else {
        validate_qualified_name_part(v)
    }
}

/// IANA service name as Kubernetes checks container port names.
pub fn validate_port_name(s: &str) -> std::result::Result<(), String> {
    if s.is_empty() || s.len() > 15 {
        return Err("must be 1 to 15 characters".into());
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err("only lowercase letters, digits and '-' are allowed".into());
    }
    if !s.chars().any(|c| c.is_ascii_lowercase()) {
        return Err("must contain at least one letter".into());
    }
    if s.starts_with('-') || s.ends_with('-') || s.contains("--") {
        return Err("no '-' at either end and no '--'".into());
    }
    Ok(())
}

/// I/O checks that decide whether ADD can work: policyDir a readable directory, keyDir a
/// readable directory holding a PSK (`psk.key`) or a PKI node credential (`node.key`,
/// `node.crt`, `ca.crt`), the enforcer an executable file.
pub fn check_policy_dir(dir: &Path) -> Result<()> {
    std::fs::read_dir(dir).map(|_| ()).map_err(|e| {
        Error::config(format!(
            "policyDir {} is not a readable directory ({e}); create it (it may be empty)",
            dir.display()
        ))
    })
}

pub fn check_key_dir(dir: &Path) -> std::result::Result<(), String> {
    // The same loader the enforcer uses: detects PSK or PKI, checks permissions, that the
    // node credential is signed by the CA, valid now and matches the node key.
    trireme_token::load_keys(dir)
        .map(|_| ())
        .map_err(|e| format!("keyDir {}: {e}", dir.display()))
}

/// The enforcer binary to start: `enforcerPath`, or `trireme-enforcer` next to this binary.
pub fn enforcer_binary(config: &Config) -> Result<PathBuf> {
    match &config.enforcer_path {
        Some(p) => Ok(p.clone()),
        None => {
            let exe = std::env::current_exe()
                .map_err(|e| Error::io("cannot find the plugin's own binary", e))?;
            Ok(exe
                .parent()
                .unwrap_or(Path::new("/"))
                .join("trireme-enforcer"))
        }
    }
}

pub fn check_executable(p: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(_) => Err(format!(
            "enforcer {} is not an executable file",
            p.display()
        )),
        Err(e) => Err(format!(
            "enforcer {} not found ({e}); install trireme-enforcer next to the trireme plugin or set enforcerPath",
            p.display()
        )),
    }
}

/// Finds an executable named `name` in a PATH-style list.
pub fn find_in_path(name: &str, path: &str) -> Option<PathBuf> {
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| check_executable(p).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn netconf(v: Value) -> NetConf {
        serde_json::from_value(v).unwrap()
    }

    fn env(args: &str) -> CniEnv {
        CniEnv::parse(|k| match k {
            "CNI_COMMAND" => Some("ADD".into()),
            "CNI_CONTAINERID" => Some("c1".into()),
            "CNI_NETNS" => Some("/x".into()),
            "CNI_IFNAME" => Some("eth0".into()),
            "CNI_ARGS" => Some(args.into()),
            _ => None,
        })
        .unwrap()
    }

    #[test]
    fn defaults_and_versions() {
        let c = Config::from_netconf(&netconf(
            json!({"cniVersion":"1.0.0","name":"n","type":"trireme"}),
        ))
        .unwrap();
        assert_eq!(c.policy_dir, PathBuf::from(DEFAULT_POLICY_DIR));
        assert_eq!(c.control_dir, PathBuf::from(DEFAULT_CONTROL_DIR));
        assert!(!c.fail_open && !c.reject);
        assert_eq!(c.log_level, "info");
        for v in SUPPORTED_VERSIONS {
            assert!(Config::from_netconf(&netconf(json!({"cniVersion":v,"name":"n"}))).is_ok());
        }
        let e =
            Config::from_netconf(&netconf(json!({"cniVersion":"0.3.1","name":"n"}))).unwrap_err();
        assert_eq!(e.code(), 1);
        let e = Config::from_netconf(&netconf(json!({"name":"n"}))).unwrap_err();
        assert_eq!(e.code(), 7);
        let e = Config::from_netconf(&netconf(json!({"cniVersion":"1.0.0"}))).unwrap_err();
        assert_eq!(e.code(), 7);
        let e = Config::from_netconf(&netconf(
            json!({"cniVersion":"1.0.0","name":"n","logLevel":"loud"}),
        ))
        .unwrap_err();
        assert_eq!(e.code(), 7);
        let e = Config::from_netconf(&netconf(
            json!({"cniVersion":"1.0.0","name":"n","keyDir":"rel/keys"}),
        ))
        .unwrap_err();
        assert_eq!(e.code(), 7);
    }

    #[test]
    fn decode_errors_are_code_6() {
        assert_eq!(decode(b"{not json").unwrap_err().code(), 6);
        assert_eq!(decode(b"[1]").unwrap_err().code(), 6);
        assert_eq!(decode(br#"{"failOpen":"yes"}"#).unwrap_err().code(), 6);
    }

    #[test]
    fn labels_from_args_and_annotations() {
        let nc = netconf(json!({
            "cniVersion":"1.0.0","name":"n",
            "args":{"cni":{"labels":[{"key":"app","value":"web"},{"key":"tier","value":"a"}]}},
            "runtimeConfig":{"io.kubernetes.cri.pod-annotations":{
                "trireme.io/labels":"{\"tier\":\"front\",\"example.com/team\":\"x\"}",
                "trireme.io/ports":"[{\"name\":\"http\",\"port\":80,\"protocol\":\"TCP\"},{\"name\":\"dns\",\"port\":53,\"protocol\":\"UDP\"}]"
            }}
        }));
        let p = pod_info(&nc, &env("K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-1")).unwrap();
        assert_eq!(p.namespace, "prod");
        assert_eq!(p.name, "web-1");
        assert_eq!(p.labels.get("app").unwrap(), "web");
        assert_eq!(p.labels.get("tier").unwrap(), "front");
        assert_eq!(p.labels.get("example.com/team").unwrap(), "x");
        assert_eq!(p.ports.len(), 2);
        assert_eq!(p.ports[1].protocol, Protocol::Udp);
        let p = pod_info(&netconf(json!({})), &env("")).unwrap();
        assert_eq!(p.namespace, "default");
        assert_eq!(p.name, "c1");
        assert!(p.labels.is_empty());
    }

    #[test]
    fn invalid_labels_and_ports_are_code_7() {
        let bad = [
            json!({"args":{"cni":{"labels":[{"key":"-bad","value":"x"}]}}}),
            json!({"args":{"cni":{"labels":[{"key":"ok","value":"has space"}]}}}),
            json!({"args":{"cni":{"labels":[{"key":"Bad_Prefix/x","value":"v"}]}}}),
            json!({"args":{"cni":{"labels":{"app":"x"}}}}),
            json!({"runtimeConfig":{"io.kubernetes.cri.pod-annotations":{"trireme.io/labels":"not json"}}}),
            json!({"runtimeConfig":{"io.kubernetes.cri.pod-annotations":{"trireme.io/labels":"{\"a\":1}"}}}),
            json!({"runtimeConfig":{"io.kubernetes.cri.pod-annotations":{"trireme.io/ports":"[{\"name\":\"http\",\"port\":0}]"}}}),
            json!({"runtimeConfig":{"io.kubernetes.cri.pod-annotations":{"trireme.io/ports":"[{\"name\":\"HTTP\",\"port\":80}]"}}}),
            json!({"runtimeConfig":{"io.kubernetes.cri.pod-annotations":{"trireme.io/ports":"[{\"name\":\"http\",\"port\":80,\"protocol\":\"ICMP\"}]"}}}),
        ];
        for b in bad {
            let e = pod_info(&netconf(b.clone()), &env("")).unwrap_err();
            assert_eq!(e.code(), 7, "{b}: {e}");
        }
        let long = "a".repeat(64);
        assert!(validate_label_value(&long).is_err());
        assert!(validate_label_value("").is_ok());
        assert!(validate_label_key("app.kubernetes.io/name").is_ok());
        assert_eq!(
            pod_info(&netconf(json!({})), &env("K8S_POD_NAMESPACE=Prod"))
                .unwrap_err()
                .code(),
            4
        );
    }

    #[test]
    fn port_names() {
        assert!(validate_port_name("serve-80-tcp").is_ok());
        assert!(validate_port_name("80").is_err());
        assert!(validate_port_name("a--b").is_err());
        assert!(validate_port_name("this-is-too-long-x").is_err());
    }
}
