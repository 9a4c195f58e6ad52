//! Shared fixture of the CNI tests: a temp dir with keys, policies, control/state/cache dirs,
//! a unique network (bridge name, subnet, host-local dataDir), and cleanup on Drop.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use trireme_conformance::sandbox::{self, become_subreaper, processes_with, reap_orphans};
use trireme_conformance::{
    require_root, unique_name, workspace_bin, CniRuntime, HostLink, Netns, NetworkConfigList,
    RuntimeConf,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Main {
    Bridge,
    Ptp,
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub rt: CniRuntime,
    pub network: String,
    pub main: Main,
    pub subnet: String,
    pub bridge: Option<HostLink>,
    /// Attachments added through [`Fixture::add_pod`], DELeted on Drop.
    pub attached: Mutex<Vec<RuntimeConf>>,
    /// Extra trireme config fields (merged into the trireme plugin config).
    pub trireme_extra: Value,
}

static SUBNET: AtomicU32 = AtomicU32::new(0);

impl Fixture {
    pub fn new(main: Main) -> Fixture {
        require_root();
        become_subreaper();
        if main == Main::Ptp {
            // ptp routes pod traffic through the host, as on a node.
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("enable ip_forward");
        }
        let dir = tempfile::Builder::new()
            .prefix("trc")
            .tempdir()
            .expect("temp dir");
        for d in ["policies", "control", "state", "cache", "ipam"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        trireme_token::keys::init_psk(&dir.path().join("keys")).expect("create PSK keys");
        let plugin_dir = workspace_bin("trireme").parent().unwrap().to_path_buf();
        workspace_bin("trireme-enforcer");
        let rt = CniRuntime::new(
            vec![plugin_dir, PathBuf::from("/usr/lib/cni")],
            &dir.path().join("cache"),
        );
        let n = SUBNET.fetch_add(1, Ordering::Relaxed);
        let subnet = format!("10.{}.{}.0/24", 100 + (std::process::id() % 100), n % 250);
        let network = unique_name("net");
        let bridge = (main == Main::Bridge).then(|| HostLink(unique_name("trb")));
        Fixture {
            dir,
            rt,
            network,
            main,
            subnet,
            bridge,
            attached: Mutex::new(Vec::new()),
            trireme_extra: json!({}),
        }
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    pub fn main_conf(&self) -> Value {
        let ipam = json!({
            "type": "host-local",
            "subnet": self.subnet,
            "dataDir": self.path("ipam"),
            "routes": [{"dst": "0.0.0.0/0"}],
        });
        match self.main {
            Main::Bridge => json!({
                "type": "bridge",
                "bridge": self.bridge.as_ref().unwrap().0,
                "isGateway": true,
                "ipMasq": false,
                "ipam": ipam,
            }),
            Main::Ptp => json!({"type": "ptp", "ipMasq": false, "ipam": ipam}),
        }
    }

    pub fn trireme_conf(&self) -> Value {
        let mut c = json!({
            "type": "trireme",
            "policyDir": self.path("policies"),
            "keyDir": self.path("keys"),
            "controlDir": self.path("control"),
            "stateDir": self.path("state"),
            "logLevel": "debug",
            "capabilities": {"io.kubernetes.cri.pod-annotations": true},
        });
        for (k, v) in self.trireme_extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    /// `[main, trireme]` in `version`.
    pub fn list(&self, version: &str) -> NetworkConfigList {
        NetworkConfigList::from_value(&json!({
            "cniVersion": version,
            "name": self.network,
            "plugins": [self.main_conf(), self.trireme_conf()],
        }))
        .unwrap()
    }

    /// `[trireme]` alone in `version` (STATUS, GC).
    pub fn trireme_list(&self, version: &str) -> NetworkConfigList {
        NetworkConfigList::from_value(&json!({
            "cniVersion": version,
            "name": self.network,
            "plugins": [self.trireme_conf()],
        }))
        .unwrap()
    }

    /// A runtime conf for a new pod in `ns`, labelled through `args.cni.labels`-free
    /// annotations (what containerd passes).
    pub fn runtime_conf(&self, ns: &Netns, pod: &str, labels: &[(&str, &str)]) -> RuntimeConf {
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        RuntimeConf::new(&unique_name("c"), ns.path(), "eth0")
            .arg("IgnoreUnknown", "1")
            .arg("K8S_POD_NAMESPACE", "default")
            .arg("K8S_POD_NAME", pod)
            .capability(
                "io.kubernetes.cri.pod-annotations",
                json!({"trireme.io/labels": Value::Object(labels).to_string()}),
            )
    }

    /// ADD through `[main, trireme]` (1.0.0); remembered for DEL on Drop. Returns the trace.
    pub fn add(&self, rc: &RuntimeConf) -> Result<Vec<Value>, trireme_conformance::cni::Error> {
        self.attached.lock().unwrap().push(rc.clone());
        self.rt.add_traced(&self.list("1.0.0"), rc)
    }

    pub fn del(&self, rc: &RuntimeConf) -> Result<(), trireme_conformance::cni::Error> {
        self.rt.del(&self.list("1.0.0"), rc)
    }

    pub fn write_policy(&self, name: &str, yaml: &str) {
        std::fs::write(self.path("policies").join(format!("{name}.yaml")), yaml).unwrap();
    }

    /// The supervisor pid of an attachment, from its pid file.
    pub fn supervisor_pid(&self, rc: &RuntimeConf) -> Option<u32> {
        let f = self
            .path("control")
            .join(format!("{}-{}.pid", rc.container_id, rc.ifname));
        std::fs::read_to_string(f).ok()?.trim().parse().ok()
    }

    /// The enforcer's answer to `{"op":"status"}` on its control socket.
    pub fn enforcer_status(&self, rc: &RuntimeConf) -> Value {
        use std::io::{BufRead, BufReader, Write};
        let sock = self
            .path("control")
            .join(format!("{}-{}.sock", rc.container_id, rc.ifname));
        let mut s = std::os::unix::net::UnixStream::connect(&sock)
            .unwrap_or_else(|e| panic!("connect {}: {e}", sock.display()));
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"{\"op\":\"status\"}\n").unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    /// What trireme left behind for this fixture: files in controlDir and stateDir, live
    /// processes started for it, and trireme chains in the given namespaces.
    pub fn leftovers(&self, namespaces: &[&Netns]) -> Vec<String> {
        reap_orphans("trireme-sup");
        reap_orphans("trireme-enforce");
        let mut out = Vec::new();
        for d in ["control", "state"] {
            for e in walk(&self.path(d)) {
                out.push(format!("file {}", e.display()));
            }
        }
        for pid in processes_with(&self.path("control").display().to_string()) {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .unwrap_or_default();
            out.push(format!("process {pid}: {cmd}"));
        }
        for ns in namespaces {
            if ns.path().exists() {
                if let Ok(o) = ns.exec(&["iptables-save"]) {
                    for l in String::from_utf8_lossy(&o.stdout).lines() {
                        if l.contains("TRIREME") {
                            out.push(format!("rule in {}: {l}", ns.name()));
                        }
                    }
                }
            }
        }
        out
    }

    /// Waits (up to 5 s) until nothing is left behind; returns what is still there.
    pub fn settle_leftovers(&self, namespaces: &[&Netns]) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let l = self.leftovers(namespaces);
            if l.is_empty() || std::time::Instant::now() >= deadline {
                return l;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let list = self.list("1.0.0");
        for rc in self.attached.lock().unwrap().iter() {
            let _ = self.rt.del(&list, rc);
        }
        reap_orphans("trireme-sup");
        reap_orphans("trireme-enforce");
        // Bridge link (HostLink) and the temp dir are removed by their own Drop.
    }
}

/// A pod namespace plus its runtime conf.
pub fn new_ns() -> Netns {
    Netns::new("tp").expect("create netns")
}

pub fn pod_ip(result: &Value) -> std::net::IpAddr {
    sandbox::result_ip(result).expect("result has an IP")
}

/// The error code of a runtime error (panics if it was not a plugin error).
pub fn code(e: &trireme_conformance::cni::Error) -> u64 {
    e.code()
        .unwrap_or_else(|| panic!("not a plugin error: {e}"))
}
