//! A CNI runtime for tests, following libcni's behaviour.

use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The error JSON a plugin printed, plus its stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    pub code: u64,
    pub msg: String,
    pub details: String,
    pub stderr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("plugin {plugin} {command} failed with code {}: {} {} (stderr: {})", .err.code, .err.msg, .err.details, .err.stderr)]
    Plugin {
        plugin: String,
        command: String,
        err: Box<PluginError>,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid network configuration list: {0}")]
    Config(String),
    #[error("plugin {plugin:?} not found in CNI_PATH {path}")]
    NotFound { plugin: String, path: String },
    #[error("plugin {plugin} {command} printed something that is not JSON: {output:?}")]
    Decode {
        plugin: String,
        command: String,
        output: String,
    },
    #[error("no cached result for {0}; CHECK needs a previous ADD")]
    NoCache(String),
}

impl Error {
    /// The plugin's error code, when a plugin failed.
    pub fn code(&self) -> Option<u64> {
        match self {
            Error::Plugin { err, .. } => Some(err.code),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// A conflist: `{"cniVersion", "name", "plugins": [..]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Value>,
}

impl NetworkConfigList {
    pub fn from_value(v: &Value) -> Result<Self> {
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Config("missing \"name\"".into()))?;
        let cni_version = v
            .get("cniVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Config("missing \"cniVersion\"".into()))?;
        let plugins = v
            .get("plugins")
            .and_then(Value::as_array)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Error::Config("\"plugins\" must be a non-empty list".into()))?;
        for p in plugins {
            if p.get("type").and_then(Value::as_str).is_none() {
                return Err(Error::Config(format!("plugin without \"type\": {p}")));
            }
        }
        Ok(NetworkConfigList {
            name: name.into(),
            cni_version: cni_version.into(),
            plugins: plugins.clone(),
        })
    }

    pub fn from_json(s: &str) -> Result<Self> {
        let v: Value =
            serde_json::from_str(s).map_err(|e| Error::Config(format!("not JSON: {e}")))?;
        Self::from_value(&v)
    }

    pub fn from_file(p: &Path) -> Result<Self> {
        let s = std::fs::read_to_string(p).map_err(io(format!("read {}", p.display())))?;
        Self::from_json(&s)
    }
}

/// One attachment: what the runtime passes besides the config.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuntimeConf {
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// CNI_ARGS pairs.
    pub args: Vec<(String, String)>,
    /// Capability arguments; a plugin receives in `runtimeConfig` only the ones it declares
    /// in its `capabilities`.
    pub capability_args: Map<String, Value>,
}

impl RuntimeConf {
    pub fn new(container_id: &str, netns: &Path, ifname: &str) -> Self {
        RuntimeConf {
            container_id: container_id.into(),
            netns: Some(netns.to_path_buf()),
            ifname: ifname.into(),
            ..Default::default()
        }
    }

    pub fn arg(mut self, k: &str, v: &str) -> Self {
        self.args.push((k.into(), v.into()));
        self
    }

    pub fn capability(mut self, k: &str, v: Value) -> Self {
        self.capability_args.insert(k.into(), v);
        self
    }

    fn cni_args(&self) -> String {
        self.args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// Builds the config one plugin receives (libcni's buildOneConfig): the plugin's own conf plus
/// name, cniVersion, prevResult and the runtimeConfig of the capabilities it declares.
pub fn plugin_config(
    list: &NetworkConfigList,
    plugin: &Value,
    prev: Option<&Value>,
    rt: Option<&RuntimeConf>,
) -> Value {
    let mut conf = plugin.clone();
    let o = conf.as_object_mut().expect("plugin configs are objects");
    o.insert("name".into(), json!(list.name));
    o.insert("cniVersion".into(), json!(list.cni_version));
    match prev {
        Some(p) => {
            o.insert("prevResult".into(), p.clone());
        }
        None => {
            o.remove("prevResult");
        }
    }
    if let Some(rt) = rt {
        let declared: Vec<String> = plugin
            .get("capabilities")
            .and_then(Value::as_object)
            .map(|c| {
                c.iter()
                    .filter(|(_, v)| v.as_bool() == Some(true))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        let mut runtime = Map::new();
        for k in declared {
            if let Some(v) = rt.capability_args.get(&k) {
                runtime.insert(k, v.clone());
            }
        }
        if !runtime.is_empty() {
            o.insert("runtimeConfig".into(), Value::Object(runtime));
        }
    }
    conf
}

fn version_at_least(v: &str, want: (u32, u32, u32)) -> bool {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let got = (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    );
    got >= want
}

/// The runtime: where plugins are, where results are cached, extra environment.
#[derive(Debug, Clone)]
pub struct CniRuntime {
    pub cni_path: Vec<PathBuf>,
    pub cache_dir: PathBuf,
    /// Extra environment for every plugin (e.g. a PATH override).
    pub env: Vec<(String, String)>,
}

impl CniRuntime {
    pub fn new(cni_path: Vec<PathBuf>, cache_dir: &Path) -> Self {
        CniRuntime {
            cni_path,
            cache_dir: cache_dir.to_path_buf(),
            env: Vec::new(),
        }
    }

    fn cni_path_string(&self) -> String {
        self.cni_path
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Finds a plugin binary by type in CNI_PATH.
    pub fn find_plugin(&self, plugin_type: &str) -> Result<PathBuf> {
        self.cni_path
            .iter()
            .map(|d| d.join(plugin_type))
            .find(|p| p.is_file())
            .ok_or_else(|| Error::NotFound {
                plugin: plugin_type.into(),
                path: self.cni_path_string(),
            })
    }

    /// Runs one plugin once: the raw protocol. Returns its stdout as JSON (None if empty).
    pub fn exec(
        &self,
        plugin_type: &str,
        command: &str,
        rt: Option<&RuntimeConf>,
        stdin: &Value,
    ) -> Result<Option<Value>> {
        let bin = self.find_plugin(plugin_type)?;
        let mut cmd = Command::new(&bin);
        cmd.env("CNI_COMMAND", command)
            .env("CNI_PATH", self.cni_path_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(rt) = rt {
            cmd.env("CNI_CONTAINERID", &rt.container_id)
                .env("CNI_IFNAME", &rt.ifname)
                .env("CNI_ARGS", rt.cni_args());
            if let Some(ns) = &rt.netns {
                cmd.env("CNI_NETNS", ns);
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let raw = serde_json::to_vec(stdin).expect("JSON serialises");
        self.exec_raw(plugin_type, command, cmd, &raw)
    }

    /// Runs a prepared plugin command with `stdin` bytes (for tests of malformed input).
    pub fn exec_raw(
        &self,
        plugin_type: &str,
        command: &str,
        mut cmd: Command,
        stdin: &[u8],
    ) -> Result<Option<Value>> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(io(format!("cannot run plugin {plugin_type}")))?;
        if let Some(mut pipe) = child.stdin.take() {
            // A plugin that exits early closes the pipe; its output says why.
            let _ = pipe.write_all(stdin);
        }
        let out = child
            .wait_with_output()
            .map_err(io(format!("wait for plugin {plugin_type}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let parsed: Option<Value> = if stdout.trim().is_empty() {
            None
        } else {
            Some(
                serde_json::from_str(stdout.trim()).map_err(|_| Error::Decode {
                    plugin: plugin_type.into(),
                    command: command.into(),
                    output: stdout.clone(),
                })?,
            )
        };
        if out.status.success() {
            return Ok(parsed);
        }
        let err = match parsed {
            Some(v) => PluginError {
                code: v.get("code").and_then(Value::as_u64).unwrap_or(0),
                msg: v
                    .get("msg")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .into(),
                details: v
                    .get("details")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .into(),
                stderr,
            },
            None => PluginError {
                code: 0,
                msg: format!("exited with {} and no error JSON", out.status),
                details: String::new(),
                stderr,
            },
        };
        Err(Error::Plugin {
            plugin: plugin_type.into(),
            command: command.into(),
            err: Box::new(err),
        })
    }

    fn cache_file(&self, network: &str, rt: &RuntimeConf) -> PathBuf {
        self.cache_dir
            .join("results")
            .join(format!("{network}-{}-{}", rt.container_id, rt.ifname))
    }

    /// The cached result of a previous ADD.
    pub fn cached_result(&self, network: &str, rt: &RuntimeConf) -> Option<Value> {
        let b = std::fs::read(self.cache_file(network, rt)).ok()?;
        let v: Value = serde_json::from_slice(&b).ok()?;
        v.get("result").cloned()
    }

    fn write_cache(
        &self,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
        result: &Value,
    ) -> Result<()> {
        let f = self.cache_file(&list.name, rt);
        let dir = f.parent().expect("cache file has a parent");
        std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        let entry = json!({
            "kind": "cniCacheV1",
            "containerId": rt.container_id,
            "ifName": rt.ifname,
            "networkName": list.name,
            "netns": rt.netns,
            "cniArgs": rt.args,
            "capabilityArgs": rt.capability_args,
            "result": result,
        });
        std::fs::write(&f, serde_json::to_vec(&entry).expect("JSON serialises"))
            .map_err(io(format!("write {}", f.display())))
    }

    /// ADD through the chain; the result after each plugin, in order.
    pub fn add_traced(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<Vec<Value>> {
        let mut prev: Option<Value> = None;
        let mut trace = Vec::new();
        for p in &list.plugins {
            let ty = p["type"].as_str().expect("checked at load");
            let conf = plugin_config(list, p, prev.as_ref(), Some(rt));
            let out = self.exec(ty, "ADD", Some(rt), &conf)?;
            let out = out.ok_or_else(|| Error::Decode {
                plugin: ty.into(),
                command: "ADD".into(),
                output: String::new(),
            })?;
            trace.push(out.clone());
            prev = Some(out);
        }
        let result = prev.expect("a list has plugins");
        self.write_cache(list, rt, &result)?;
        Ok(trace)
    }

    /// ADD through the chain; the final result (cached for DEL/CHECK).
    pub fn add(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<Value> {
        Ok(self
            .add_traced(list, rt)?
            .pop()
            .expect("a list has plugins"))
    }

    /// CHECK (cniVersion >= 0.4.0), with the cached result as prevResult.
    pub fn check(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<()> {
        if !version_at_least(&list.cni_version, (0, 4, 0)) {
            return Ok(());
        }
        let cached = self
            .cached_result(&list.name, rt)
            .ok_or_else(|| Error::NoCache(format!("{}/{}", rt.container_id, rt.ifname)))?;
        for p in &list.plugins {
            let ty = p["type"].as_str().expect("checked at load");
            let conf = plugin_config(list, p, Some(&cached), Some(rt));
            self.exec(ty, "CHECK", Some(rt), &conf)?;
        }
        Ok(())
    }

    /// DEL in reverse order with the cached result (if any) as prevResult; then drops the
    /// cache entry.
    pub fn del(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<()> {
        let cached = self.cached_result(&list.name, rt);
        for p in list.plugins.iter().rev() {
            let ty = p["type"].as_str().expect("checked at load");
            let conf = plugin_config(list, p, cached.as_ref(), Some(rt));
            self.exec(ty, "DEL", Some(rt), &conf)?;
        }
        let f = self.cache_file(&list.name, rt);
        match std::fs::remove_file(&f) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(format!("remove {}", f.display()))(e)),
        }
    }

    /// Every cached attachment of a network: (container id, ifname, netns).
    pub fn cached_attachments(&self, network: &str) -> Vec<RuntimeConf> {
        let Ok(rd) = std::fs::read_dir(self.cache_dir.join("results")) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let Ok(b) = std::fs::read(e.path()) else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<Value>(&b) else {
                continue;
            };
            if v.get("networkName").and_then(Value::as_str) != Some(network) {
                continue;
            }
            out.push(RuntimeConf {
                container_id: v["containerId"].as_str().unwrap_or_default().into(),
                netns: v["netns"].as_str().map(PathBuf::from),
                ifname: v["ifName"].as_str().unwrap_or_default().into(),
                args: serde_json::from_value(v["cniArgs"].clone()).unwrap_or_default(),
                capability_args: v["capabilityArgs"].as_object().cloned().unwrap_or_default(),
            });
        }
        out
    }

    /// GC as libcni does it: DEL every cached attachment of this network that is not valid;
    /// then, for cniVersion >= 1.1.0, GC on every plugin with `cni.dev/valid-attachments`.
    pub fn gc(&self, list: &NetworkConfigList, valid: &[(String, String)]) -> Result<()> {
        for rt in self.cached_attachments(&list.name) {
            if !valid
                .iter()
                .any(|(c, i)| *c == rt.container_id && *i == rt.ifname)
            {
                self.del(list, &rt)?;
            }
        }
        if !version_at_least(&list.cni_version, (1, 1, 0)) {
            return Ok(());
        }
        let attachments: Vec<Value> = valid
            .iter()
            .map(|(c, i)| json!({"containerID": c, "ifname": i}))
            .collect();
        for p in &list.plugins {
            let ty = p["type"].as_str().expect("checked at load");
            let mut conf = plugin_config(list, p, None, None);
            conf["cni.dev/valid-attachments"] = json!(attachments);
            self.exec(ty, "GC", None, &conf)?;
        }
        Ok(())
    }

    /// STATUS on every plugin (cniVersion >= 1.1.0, as libcni).
    pub fn status(&self, list: &NetworkConfigList) -> Result<()> {
        if !version_at_least(&list.cni_version, (1, 1, 0)) {
            return Ok(());
        }
        for p in &list.plugins {
            let ty = p["type"].as_str().expect("checked at load");
            let conf = plugin_config(list, p, None, None);
            self.exec(ty, "STATUS", None, &conf)?;
        }
        Ok(())
    }

    /// VERSION of one plugin.
    pub fn version(&self, plugin_type: &str, cni_version: &str) -> Result<Value> {
        self.exec(
            plugin_type,
            "VERSION",
            None,
            &json!({"cniVersion": cni_version}),
        )?
        .ok_or_else(|| Error::Decode {
            plugin: plugin_type.into(),
            command: "VERSION".into(),
            output: String::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> NetworkConfigList {
        NetworkConfigList::from_json(
            r#"{"cniVersion":"1.0.0","name":"n1","plugins":[
                {"type":"bridge","bridge":"b0"},
                {"type":"trireme","capabilities":{"io.kubernetes.cri.pod-annotations":true,"portMappings":false}}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn plugin_config_injects_name_version_prev_and_declared_capabilities_only() {
        let l = list();
        let rt = RuntimeConf::new("c1", Path::new("/x"), "eth0")
            .capability("io.kubernetes.cri.pod-annotations", json!({"a":"b"}))
            .capability("portMappings", json!([]));
        let prev = json!({"cniVersion":"1.0.0","ips":[]});
        let c = plugin_config(&l, &l.plugins[1], Some(&prev), Some(&rt));
        assert_eq!(c["name"], "n1");
        assert_eq!(c["cniVersion"], "1.0.0");
        assert_eq!(c["prevResult"], prev);
        assert_eq!(
            c["runtimeConfig"],
            json!({"io.kubernetes.cri.pod-annotations":{"a":"b"}})
        );
        let c = plugin_config(&l, &l.plugins[0], None, Some(&rt));
        assert!(c.get("runtimeConfig").is_none());
        assert!(c.get("prevResult").is_none());
    }

    #[test]
    fn bad_lists_are_rejected() {
        for bad in [
            r#"{"name":"n","plugins":[{"type":"x"}]}"#,
            r#"{"cniVersion":"1.0.0","plugins":[{"type":"x"}]}"#,
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"bridge":"x"}]}"#,
            "nope",
        ] {
            assert!(NetworkConfigList::from_json(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn versions_compare() {
        assert!(version_at_least("1.1.0", (1, 1, 0)));
        assert!(version_at_least("1.0.0", (0, 4, 0)));
        assert!(!version_at_least("1.0.0", (1, 1, 0)));
        assert!(!version_at_least("0.3.1", (0, 4, 0)));
    }

    #[test]
    fn cni_args_string() {
        let rt = RuntimeConf::new("c", Path::new("/x"), "eth0")
            .arg("K8S_POD_NAMESPACE", "x")
            .arg("K8S_POD_NAME", "a");
        assert_eq!(rt.cni_args(), "K8S_POD_NAMESPACE=x;K8S_POD_NAME=a");
    }
}
