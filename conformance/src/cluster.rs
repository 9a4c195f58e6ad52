//! A sandbox cluster of network-namespace pods on one node: the real Debian `bridge` +
//! `host-local` plugins with `trireme` chained, driven by [`crate::cni`]. Every pod serves
//! real TCP on its ports, its identity (labels, named ports) reaches trireme through the
//! pod annotations containerd passes, and the cluster writes the Namespace, Pod and
//! NetworkPolicy YAML its enforcers (and the policy engine computing the expected
//! matrices) read.
//!
//! Everything the cluster creates is removed when it is dropped, also on panic: pods DEL'd
//! through the chain, namespaces, the bridge, iptables chains, host settings restored,
//! temp dir removed. [`Cluster::keep`] hands the pieces over to a [`KeptState`] file for
//! `trireme-sandbox down` instead.

use crate::cni::{CniRuntime, NetworkConfigList, RuntimeConf};
use crate::matrix::{self, Comparison, ProbeJob};
use crate::probe::TcpServer;
use crate::sandbox::{self, Netns};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use trireme_policy::{NamedPort, Protocol, TruthTable};

/// What can go wrong building or driving a cluster; every variant says what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Cni {
        context: String,
        #[source]
        source: crate::cni::Error,
    },
    #[error("{context}: {msg}")]
    Other { context: String, msg: String },
    #[error("teardown incomplete: {}", .0.join("; "))]
    Teardown(Vec<String>),
}

pub type Result<T> = std::result::Result<T, Error>;

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

fn other(context: impl Into<String>, msg: impl std::fmt::Display) -> Error {
    Error::Other {
        context: context.into(),
        msg: msg.to_string(),
    }
}

/// One pod to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Named TCP ports the pod serves (passed as the `trireme.io/ports` annotation).
    pub ports: Vec<NamedPort>,
}

/// `serve-<port>-tcp` for each port, as the upstream e2e pods name them.
pub fn serve_ports(ports: &[u16]) -> Vec<NamedPort> {
    ports
        .iter()
        .map(|p| NamedPort {
            name: format!("serve-{p}-tcp"),
            port: *p,
            protocol: Protocol::Tcp,
        })
        .collect()
}

/// Trust mode of the cluster's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// A fresh CA and a node key signed by it (`trireme_token::keys::init_pki`).
    Pki,
    /// Keys already made elsewhere (e.g. a second node issued by another node's CA).
    Dir(PathBuf),
}

/// What the cluster looks like.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Namespaces and their labels (`kubernetes.io/metadata.name` is added).
    pub namespaces: Vec<(String, BTreeMap<String, String>)>,
    pub pods: Vec<PodSpec>,
    /// A host DNAT rule per pod, as kube-proxy installs for a ClusterIP Service.
    pub services: bool,
    /// The host as a Kubernetes node: bridge-nf-call-iptables=1 and a FORWARD rule
    /// dropping conntrack INVALID packets (own chain; its counter is [`Cluster::invalid_drops`]).
    pub k8s_node: bool,
    pub trust: Trust,
    /// Extra fields merged into the trireme plugin config (e.g. `restartDelayMs`).
    pub trireme_extra: Value,
    /// Run the bridge plugin inside this node namespace (two-node setups) instead of the
    /// host. Services and the k8s-node rules are host features and need `None`.
    pub node: Option<PathBuf>,
    /// Name of the node, used for its key credential.
    pub node_name: String,
    /// Pod subnet; `None` picks a free /24.
    pub subnet: Option<Ipv4Addr>,
    /// Probe timeout (a denied connection is a dropped SYN: it times out).
    pub probe_timeout: Duration,
}

impl ClusterSpec {
    /// The upstream netpol e2e cluster: namespaces x, y, z labelled `ns=<name>`, pods a, b,
    /// c in each labelled `pod=<name>`, serving 80 and 81; Service VIPs and the k8s-node
    /// host set-up on; real PKI keys.
    pub fn netpol() -> ClusterSpec {
        let nss = ["x", "y", "z"];
        ClusterSpec {
            namespaces: nss
                .iter()
                .map(|n| {
                    (
                        n.to_string(),
                        BTreeMap::from([("ns".into(), n.to_string())]),
                    )
                })
                .collect(),
            pods: nss
                .iter()
                .flat_map(|ns| {
                    ["a", "b", "c"].iter().map(move |p| PodSpec {
                        namespace: ns.to_string(),
                        name: p.to_string(),
                        labels: BTreeMap::from([("pod".into(), p.to_string())]),
                        ports: serve_ports(&[80, 81]),
                    })
                })
                .collect(),
            services: true,
            k8s_node: true,
            trust: Trust::Pki,
            trireme_extra: json!({}),
            node: None,
            node_name: "node-1".into(),
            subnet: None,
            probe_timeout: Duration::from_millis(1500),
        }
    }
}

impl ClusterSpec {
    /// A cluster of the Namespaces and Pods loaded from manifests (labels, named TCP
    /// ports; pods without TCP ports serve nothing), otherwise as [`ClusterSpec::netpol`].
    pub fn from_manifests(cl: &trireme_policy::Cluster) -> ClusterSpec {
        let mut spec = ClusterSpec::netpol();
        spec.namespaces = cl
            .namespaces
            .iter()
            .map(|(n, l)| (n.clone(), l.clone()))
            .collect();
        spec.pods = cl
            .pods
            .iter()
            .map(|p| PodSpec {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                labels: p.labels.clone(),
                ports: p
                    .ports
                    .iter()
                    .filter(|np| np.protocol == Protocol::Tcp)
                    .cloned()
                    .collect(),
            })
            .collect();
        spec
    }
}

/// A pod of the cluster.
pub struct ClusterPod {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<NamedPort>,
    pub ip: Ipv4Addr,
    /// Its Service VIP, when the cluster has services.
    pub vip: Option<Ipv4Addr>,
    pub netns: Netns,
    pub rc: RuntimeConf,
    /// The host end of its veth (from the bridge plugin's result).
    pub host_veth: Option<String>,
    pub servers: Vec<TcpServer>,
    /// Whether it is still attached (DEL'd on drop).
    pub attached: bool,
}

impl ClusterPod {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Connections accepted by its servers so far.
    pub fn accepts(&self) -> u64 {
        self.servers.iter().map(TcpServer::accepts).sum()
    }
}

/// Host sysctls a Kubernetes node has, shared by every cluster of this process (reference
/// counted) and restored when the last cluster goes.
static HOST_SETTINGS: Mutex<(usize, Vec<(String, String)>)> = Mutex::new((0, Vec::new()));
const NODE_SYSCTLS: &[(&str, &str)] = &[
    ("/proc/sys/net/ipv4/ip_forward", "1"),
    ("/proc/sys/net/bridge/bridge-nf-call-iptables", "1"),
];

fn host_settings_acquire() -> Result<()> {
    let mut g = HOST_SETTINGS.lock().unwrap_or_else(|p| p.into_inner());
    if g.0 == 0 {
        if !Path::new("/proc/sys/net/bridge").exists() {
            let _ = Command::new("modprobe").arg("br_netfilter").output();
        }
        let mut saved = Vec::new();
        for (path, want) in NODE_SYSCTLS {
            let old = std::fs::read_to_string(path)
                .map_err(io(format!(
                    "read {path} (br_netfilter must be available: modprobe br_netfilter)"
                )))?
                .trim()
                .to_string();
            if let Err(e) = std::fs::write(path, want) {
                for (p, v) in &saved {
                    let _ = std::fs::write(p, v);
                }
                return Err(io(format!("set {path}={want}"))(e));
            }
            saved.push((path.to_string(), old));
        }
        g.1 = saved;
    }
    g.0 += 1;
    Ok(())
}

fn host_settings_release() {
    let mut g = HOST_SETTINGS.lock().unwrap_or_else(|p| p.into_inner());
    g.0 = g.0.saturating_sub(1);
    if g.0 == 0 {
        for (p, v) in g.1.drain(..) {
            let _ = std::fs::write(p, v);
        }
    }
}

static SUBNETS: AtomicU32 = AtomicU32::new(0);

/// A /24 not routed on the host: `10.<200 + pid % 50>.<n>.0`, n counting up.
fn pick_subnet() -> Result<Ipv4Addr> {
    let routes = Command::new("ip")
        .args(["-4", "route", "show", "table", "all"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for _ in 0..120 {
        let n = SUBNETS.fetch_add(1, Ordering::Relaxed) % 120;
        let net = Ipv4Addr::new(10, 200 + (std::process::id() % 50) as u8, n as u8, 0);
        let prefix = format!("{}.{}.{}.", 10, net.octets()[1], net.octets()[2]);
        if !routes.lines().any(|l| l.contains(&prefix)) {
            return Ok(net);
        }
    }
    Err(other("pick a pod subnet", "no free /24 in 10.200.0.0/10"))
}

/// The Service VIP block of a pod subnet: same /16, third octet + 128.
fn vip_of(subnet: Ipv4Addr, i: usize) -> Ipv4Addr {
    let o = subnet.octets();
    Ipv4Addr::new(o[0], o[1], o[2].wrapping_add(128), 10 + i as u8)
}

fn run_cmd(context: &str, cmd: &mut Command) -> Result<String> {
    let out = cmd.output().map_err(io(context.to_string()))?;
    if !out.status.success() {
        return Err(other(
            context,
            format!(
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim_end()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn iptables_restore(context: &str, rules: &str) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new("iptables-restore")
        .arg("--noflush")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(io(format!("{context}: run iptables-restore")))?;
    if let Some(mut s) = child.stdin.take() {
        s.write_all(rules.as_bytes())
            .map_err(io(format!("{context}: write iptables-restore input")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(io(format!("{context}: iptables-restore")))?;
    if !out.status.success() {
        return Err(other(
            context,
            format!(
                "iptables-restore: {}\ninput:\n{rules}",
                String::from_utf8_lossy(&out.stderr).trim_end()
            ),
        ));
    }
    Ok(())
}

/// An iptables chain of ours: its jumps and the chain itself are removed by
/// [`remove_chain`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainRef {
    pub table: String,
    pub chain: String,
    /// `(parent chain, match args)` of every jump to it.
    pub jumps: Vec<(String, Vec<String>)>,
}

/// Removes a chain and every jump to it; what failed is returned (nothing if it is gone).
pub fn remove_chain(c: &ChainRef) -> Vec<String> {
    let mut errs = Vec::new();
    for (parent, args) in &c.jumps {
        // Delete every copy of the jump.
        for _ in 0..4 {
            let mut cmd = Command::new("iptables");
            cmd.args(["-w", "-t", &c.table, "-D", parent])
                .args(args)
                .args(["-j", &c.chain]);
            match cmd.output() {
                Ok(o) if o.status.success() => continue,
                _ => break,
            }
        }
    }
    let exists = Command::new("iptables")
        .args(["-w", "-t", &c.table, "-n", "-L", &c.chain])
        .output()
        .is_ok_and(|o| o.status.success());
    if exists {
        for op in ["-F", "-X"] {
            let out = Command::new("iptables")
                .args(["-w", "-t", &c.table, op, &c.chain])
                .output();
            if !out.is_ok_and(|o| o.status.success()) {
                errs.push(format!("iptables -t {} {op} {}", c.table, c.chain));
            }
        }
    }
    errs
}

/// A TCP connection that keeps exchanging data in the background: one byte out and its
/// echo back every `interval`, until dropped. Shows whether an established connection
/// keeps flowing across a change (policy update, enforcer restart).
pub struct Flow {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    error: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Flow {
    /// Connects from inside `from` to `to` (3 s timeout) and starts echoing.
    pub fn start(from: &Netns, to: SocketAddr, interval: Duration) -> Result<Flow> {
        let mut s = from
            .run(move || TcpStream::connect_timeout(&to, Duration::from_secs(3)))
            .map_err(io(format!("enter {}", from.name())))?
            .map_err(io(format!("connect {} -> {to}", from.name())))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(io("set timeout"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let error = Arc::new(Mutex::new(None));
        let (st, r, e) = (stop.clone(), rounds.clone(), error.clone());
        let thread = std::thread::spawn(move || {
            let mut b = [0u8; 1];
            while !st.load(Ordering::Relaxed) {
                let res = s
                    .write_all(b"f")
                    .and_then(|_| s.read_exact(&mut b))
                    .and_then(|_| {
                        if &b == b"f" {
                            Ok(())
                        } else {
                            Err(std::io::Error::other("wrong echo"))
                        }
                    });
                match res {
                    Ok(()) => {
                        r.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(err) => {
                        *e.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!(
                            "after {} round trips: {err}",
                            r.load(Ordering::Relaxed)
                        ));
                        return;
                    }
                }
                std::thread::sleep(interval);
            }
        });
        Ok(Flow {
            stop,
            rounds,
            error,
            thread: Some(thread),
        })
    }

    /// Round trips completed so far.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// The error that stopped the flow, if it stopped.
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until `n` more round trips completed (true) or `timeout` passed / the flow
    /// failed (false).
    pub fn advances(&self, n: u64, timeout: Duration) -> bool {
        let target = self.rounds() + n;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.rounds() >= target {
                return true;
            }
            if self.error().is_some() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Everything a kept cluster consists of, written to `<dir>/state.json` so that
/// [`teardown_kept`] can remove it from another process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeptState {
    pub name: String,
    pub dir: PathBuf,
    pub cni_path: Vec<PathBuf>,
    pub conflist: Value,
    pub attachments: Vec<KeptPod>,
    pub bridge: Option<String>,
    pub chains: Vec<ChainRef>,
    /// Processes started for the cluster (pod servers).
    pub pids: Vec<u32>,
    /// The process that created the cluster.
    #[serde(default)]
    pub owner_pid: u32,
    /// Kept on purpose (`--keep`): never reaped as abandoned.
    #[serde(default)]
    pub kept: bool,
    /// The owner's pid namespace (`/proc/self/ns/pid` link): a pid is only checked in it.
    #[serde(default)]
    pub owner_pidns: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeptPod {
    pub key: String,
    pub ip: Ipv4Addr,
    pub netns: String,
    pub container_id: String,
    pub ifname: String,
    pub args: Vec<(String, String)>,
}

/// The sandbox cluster.
pub struct Cluster {
    pub name: String,
    /// Temp dir: keys/, policies/, control/, state/, cache/, ipam/, net.conflist.
    dir: Option<tempfile::TempDir>,
    dir_path: PathBuf,
    pub rt: CniRuntime,
    pub list: NetworkConfigList,
    pub bridge: String,
    pub subnet: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub pods: Vec<ClusterPod>,
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub spec: ClusterSpec,
    chains: Vec<ChainRef>,
    /// Pods attached with the main plugin only (no enforcer), e.g. an attacker.
    pub bare: Vec<ClusterPod>,
    host_settings: bool,
    kept: bool,
}

impl Cluster {
    /// Builds the cluster: keys, namespaces in the policy dir, a conflist, one ADD per pod,
    /// servers, services and node rules. On any error everything made so far is removed.
    pub fn new(spec: ClusterSpec) -> Result<Cluster> {
        sandbox::require_root();
        sandbox::become_subreaper();
        reap_abandoned();
        let dir = tempfile::Builder::new()
            .prefix("trireme-cluster-")
            .tempdir()
            .map_err(io("create the cluster's temp dir"))?;
        let dir_path = dir.path().to_path_buf();
        for d in ["policies", "control", "state", "cache", "ipam", "bin"] {
            std::fs::create_dir_all(dir_path.join(d)).map_err(io(format!("create {d}/")))?;
        }
        let name = sandbox::unique_name("tc");
        let subnet = match spec.subnet {
            Some(s) => s,
            None => pick_subnet()?,
        };
        let o = subnet.octets();
        let gateway = Ipv4Addr::new(o[0], o[1], o[2], 1);
        let key_dir = match &spec.trust {
            Trust::Pki => {
                let k = dir_path.join("keys");
                trireme_token::keys::init_pki(&k, &spec.node_name)
                    .map_err(|e| other("create the cluster's PKI keys", e))?;
                k
            }
            Trust::Dir(d) => d.clone(),
        };
        let trireme_dir = sandbox::workspace_bin("trireme")
            .parent()
            .expect("binary has a dir")
            .to_path_buf();
        sandbox::workspace_bin("trireme-enforcer");
        let mut cni_path = vec![trireme_dir, PathBuf::from("/usr/lib/cni")];
        if let Some(node) = &spec.node {
            // The bridge plugin must run inside the node namespace so that the bridge lands
            // there: a wrapper found first in CNI_PATH.
            let w = dir_path.join("bin/bridge");
            std::fs::write(
                &w,
                format!(
                    "#!/bin/sh\nexec nsenter --net={} /usr/lib/cni/bridge \"$@\"\n",
                    node.display()
                ),
            )
            .map_err(io("write the bridge wrapper"))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755))
                .map_err(io("chmod the bridge wrapper"))?;
            cni_path.insert(0, dir_path.join("bin"));
        }
        let rt = CniRuntime::new(cni_path, &dir_path.join("cache"));
        let bridge = sandbox::unique_name("tcb");
        let mut trireme = json!({
            "type": "trireme",
            "policyDir": dir_path.join("policies"),
            "keyDir": key_dir,
            "controlDir": dir_path.join("control"),
            "stateDir": dir_path.join("state"),
            "logLevel": "info",
            "capabilities": {"io.kubernetes.cri.pod-annotations": true},
        });
        if let Some(extra) = spec.trireme_extra.as_object() {
            for (k, v) in extra {
                trireme[k] = v.clone();
            }
        }
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "subnet": format!("{subnet}/24"),
                        "dataDir": dir_path.join("ipam"),
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                trireme,
            ],
        });
        std::fs::write(
            dir_path.join("net.conflist"),
            serde_json::to_vec_pretty(&conflist).expect("JSON"),
        )
        .map_err(io("write net.conflist"))?;
        let list =
            NetworkConfigList::from_value(&conflist).map_err(|e| other("build the conflist", e))?;
        let namespaces = spec
            .namespaces
            .iter()
            .map(|(n, l)| {
                let mut l = l.clone();
                l.insert(trireme_policy::NAMESPACE_NAME_LABEL.into(), n.clone());
                (n.clone(), l)
            })
            .collect();
        let mut c = Cluster {
            name,
            dir: Some(dir),
            dir_path,
            rt,
            list,
            bridge,
            subnet,
            gateway,
            pods: Vec::new(),
            namespaces,
            spec: spec.clone(),
            chains: Vec::new(),
            bare: Vec::new(),
            host_settings: false,
            kept: false,
        };
        if spec.services || spec.k8s_node {
            if spec.node.is_some() {
                return Err(other(
                    "cluster spec",
                    "services and k8s_node are host features: not with a node namespace",
                ));
            }
            host_settings_acquire()?;
            c.host_settings = true;
        }
        c.write_cluster_yaml()?;
        c.write_policies("")?;
        for (i, p) in spec.pods.iter().enumerate() {
            let pod = c.add_pod(p, i)?;
            c.pods.push(pod);
            c.save_state(false, Vec::new())?;
        }
        if spec.k8s_node {
            c.install_invalid_drop()?;
            c.save_state(false, Vec::new())?;
        }
        if spec.services {
            c.install_services()?;
            c.save_state(false, Vec::new())?;
        }
        // Pods with their IPs, so that ipBlock and the expected matrices see them.
        let before = c.reload_counts();
        c.write_cluster_yaml()?;
        c.wait_reloaded(&before)?;
        Ok(c)
    }

    /// The cluster's directory (keys/, policies/, control/, ...).
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    pub fn policy_dir(&self) -> PathBuf {
        self.dir_path.join("policies")
    }

    pub fn control_dir(&self) -> PathBuf {
        self.dir_path.join("control")
    }

    pub fn key_dir(&self) -> PathBuf {
        match &self.spec.trust {
            Trust::Pki => self.dir_path.join("keys"),
            Trust::Dir(d) => d.clone(),
        }
    }

    fn runtime_conf(&self, p: &PodSpec, ns: &Netns) -> RuntimeConf {
        let ports: Vec<Value> = p
            .ports
            .iter()
            .map(|np| json!({"name": np.name, "port": np.port, "protocol": np.protocol.as_str()}))
            .collect();
        RuntimeConf::new(&sandbox::unique_name("c"), ns.path(), "eth0")
            .arg("IgnoreUnknown", "1")
            .arg("K8S_POD_NAMESPACE", &p.namespace)
            .arg("K8S_POD_NAME", &p.name)
            .capability(
                "io.kubernetes.cri.pod-annotations",
                json!({
                    "trireme.io/labels": serde_json::to_string(&p.labels).expect("JSON"),
                    "trireme.io/ports": Value::Array(ports).to_string(),
                }),
            )
    }

    fn add_pod(&self, p: &PodSpec, i: usize) -> Result<ClusterPod> {
        let netns = Netns::new("tcp").map_err(io(format!("create netns for {}", p.name)))?;
        let rc = self.runtime_conf(p, &netns);
        let mut pod = ClusterPod {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            labels: p.labels.clone(),
            ports: p.ports.clone(),
            ip: Ipv4Addr::UNSPECIFIED,
            vip: self.spec.services.then(|| vip_of(self.subnet, i)),
            netns,
            rc,
            host_veth: None,
            servers: Vec::new(),
            attached: true,
        };
        // From here on the pod's Drop is not enough: the cluster DELs attached pods, so a
        // failed ADD is DEL'd right here.
        let result = match self.rt.add(&self.list, &pod.rc) {
            Ok(r) => r,
            Err(e) => {
                let _ = self.rt.del(&self.list, &pod.rc);
                return Err(Error::Cni {
                    context: format!("ADD {}/{}", p.namespace, p.name),
                    source: e,
                });
            }
        };
        let ip = match sandbox::result_ip(&result) {
            Some(IpAddr::V4(ip)) => ip,
            _ => {
                let _ = self.rt.del(&self.list, &pod.rc);
                return Err(other("ADD result", format!("no IPv4 address in {result}")));
            }
        };
        pod.ip = ip;
        pod.host_veth = result["interfaces"].as_array().and_then(|ifs| {
            ifs.iter()
                .filter(|i| i.get("sandbox").is_none())
                .filter_map(|i| i["name"].as_str())
                .find(|n| *n != self.bridge)
                .map(str::to_string)
        });
        for port in p.ports.iter().map(|np| np.port) {
            match TcpServer::start(&pod.netns, port) {
                Ok(s) => pod.servers.push(s),
                Err(e) => {
                    let _ = self.rt.del(&self.list, &pod.rc);
                    return Err(io(format!("start server :{port} in {}", pod.key()))(e));
                }
            }
        }
        Ok(pod)
    }

    /// The enforcer control socket of a pod.
    pub fn socket(&self, pod: &ClusterPod) -> PathBuf {
        trireme_enforcer::control::socket_path(
            &self.control_dir(),
            &format!("{}-{}", pod.rc.container_id, pod.rc.ifname),
        )
    }

    /// The enforcer's status for a pod.
    pub fn status(&self, pod: &ClusterPod) -> Result<trireme_enforcer::control::Status> {
        trireme_enforcer::control::status(&self.socket(pod))
            .map_err(|e| other(format!("status of {}", pod.key()), e))
    }

    /// The conflist without trireme: the bridge plugin alone, same network.
    pub fn bare_list(&self) -> NetworkConfigList {
        NetworkConfigList {
            name: self.list.name.clone(),
            cni_version: self.list.cni_version.clone(),
            plugins: vec![self.list.plugins[0].clone()],
        }
    }

    /// Attaches a pod with the bridge plugin only: on the cluster network, no enforcer, no
    /// identity (it is not part of the matrices). DEL'd with the cluster. Returns its index
    /// in [`Cluster::bare`].
    pub fn add_bare_pod(&mut self, namespace: &str, name: &str) -> Result<usize> {
        let netns = Netns::new("tcx").map_err(io(format!("create netns for {name}")))?;
        let rc = RuntimeConf::new(&sandbox::unique_name("c"), netns.path(), "eth0")
            .arg("IgnoreUnknown", "1")
            .arg("K8S_POD_NAMESPACE", namespace)
            .arg("K8S_POD_NAME", name);
        let list = self.bare_list();
        let result = match self.rt.add(&list, &rc) {
            Ok(r) => r,
            Err(e) => {
                let _ = self.rt.del(&list, &rc);
                return Err(Error::Cni {
                    context: format!("ADD bare {namespace}/{name}"),
                    source: e,
                });
            }
        };
        let Some(IpAddr::V4(ip)) = sandbox::result_ip(&result) else {
            let _ = self.rt.del(&list, &rc);
            return Err(other("ADD result", format!("no IPv4 address in {result}")));
        };
        self.bare.push(ClusterPod {
            namespace: namespace.into(),
            name: name.into(),
            labels: BTreeMap::new(),
            ports: Vec::new(),
            ip,
            vip: None,
            netns,
            rc,
            host_veth: None,
            servers: Vec::new(),
            attached: true,
        });
        Ok(self.bare.len() - 1)
    }

    pub fn pod(&self, key: &str) -> &ClusterPod {
        self.pods
            .iter()
            .find(|p| p.key() == key)
            .unwrap_or_else(|| panic!("no pod {key} in the cluster"))
    }

    fn pod_index(&self, key: &str) -> Result<usize> {
        self.pods
            .iter()
            .position(|p| p.key() == key)
            .ok_or_else(|| other("find pod", format!("no pod {key}")))
    }

    /// Namespace and Pod objects as a `v1 List`, as `kubectl get -o json` prints them (the
    /// parts policy reads).
    pub fn cluster_yaml(&self) -> String {
        let mut docs = Vec::new();
        for (n, labels) in &self.namespaces {
            docs.push(json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": n, "labels": labels},
            }));
        }
        for p in &self.pods {
            docs.push(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": p.name, "namespace": p.namespace, "labels": p.labels},
                "spec": {"containers": p.ports.iter().map(|np| json!({
                    "name": format!("cont-{}", np.port),
                    "image": "registry.k8s.io/e2e-test-images/agnhost:2.53",
                    "ports": [{"name": np.name, "containerPort": np.port, "protocol": np.protocol.as_str()}],
                })).collect::<Vec<_>>()},
                "status": {"podIP": p.ip.to_string()},
            }));
        }
        serde_json::to_string_pretty(&json!({"apiVersion": "v1", "kind": "List", "items": docs}))
            .expect("JSON")
    }

    /// Writes `name` in the policy dir atomically (temp file + rename: one change for the
    /// watchers).
    fn write_policy_file(&self, name: &str, text: &str) -> Result<()> {
        let dir = self.policy_dir();
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).map_err(io(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, dir.join(name)).map_err(io(format!("rename into {name}")))
    }

    fn write_cluster_yaml(&self) -> Result<()> {
        // A JSON `List` (the loader reads YAML and JSON); validated before the enforcers
        // see it.
        let text = self.cluster_yaml();
        trireme_policy::Cluster::parse_str("cluster.yaml", &text)
            .map_err(|e| other("cluster.yaml", e))?;
        self.write_policy_file("cluster.yaml", &text)
    }

    fn write_policies(&self, yaml: &str) -> Result<()> {
        self.write_policy_file("policies.yaml", yaml)
    }

    fn reload_counts(&self) -> Vec<Option<u64>> {
        self.pods
            .iter()
            .map(|p| {
                p.attached
                    .then(|| self.status(p).ok().map(|s| s.counters.policy_reloads))
                    .flatten()
            })
            .collect()
    }

    /// Waits until every attached pod's enforcer has reloaded its policy since `before`
    /// (through its directory watcher) without error. Returns how long it took.
    fn wait_reloaded(&self, before: &[Option<u64>]) -> Result<Duration> {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(5);
        for (p, b) in self.pods.iter().zip(before) {
            let Some(b) = b else { continue };
            loop {
                let st = self.status(p)?;
                if st.counters.policy_reloads > *b {
                    if let Some(e) = st.policy.error {
                        return Err(other(format!("policy reload of {}", p.key()), e));
                    }
                    break;
                }
                if Instant::now() > deadline {
                    return Err(other(
                        format!("policy reload of {}", p.key()),
                        "the enforcer did not pick up the change within 5 s",
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(t0.elapsed())
    }

    /// Replaces the cluster's NetworkPolicies with `yaml` (validated first with the policy
    /// engine: a bad input changes nothing) and waits until every enforcer applied it.
    /// Returns how long the enforcers took.
    pub fn apply_policies(&self, yaml: &str) -> Result<Duration> {
        trireme_policy::Cluster::parse_str("policies.yaml", yaml)
            .map_err(|e| other("policy", e))?;
        let before = self.reload_counts();
        self.write_policies(yaml)?;
        self.wait_reloaded(&before)
    }

    /// Sets a namespace's labels (besides `kubernetes.io/metadata.name`) and waits until
    /// every enforcer reloaded them.
    pub fn set_namespace_labels(
        &mut self,
        ns: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Duration> {
        let mut l = labels;
        l.insert(trireme_policy::NAMESPACE_NAME_LABEL.into(), ns.into());
        self.namespaces.insert(ns.into(), l);
        let before = self.reload_counts();
        self.write_cluster_yaml()?;
        self.wait_reloaded(&before)
    }

    /// Sets a pod's labels: registered with its running enforcer through the control socket
    /// (`register`: no restart, applies to new connections) and written to the Pod object.
    pub fn set_pod_labels(&mut self, key: &str, labels: BTreeMap<String, String>) -> Result<()> {
        let i = self.pod_index(key)?;
        let ports = self.pods[i].ports.clone();
        trireme_enforcer::control::register(&self.socket(&self.pods[i]), labels.clone(), ports)
            .map_err(|e| other(format!("register labels of {key}"), e))?;
        self.pods[i].labels = labels;
        let before = self.reload_counts();
        self.write_cluster_yaml()?;
        self.wait_reloaded(&before)?;
        Ok(())
    }

    /// Every TCP port some pod serves, sorted.
    pub fn ports(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self
            .pods
            .iter()
            .flat_map(|p| p.ports.iter().map(|np| np.port))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Keys of the attached pods that serve `port` (the destinations probed on it).
    pub fn servers_of(&self, port: u16) -> Vec<String> {
        let mut v: Vec<String> = self
            .pods
            .iter()
            .filter(|p| p.attached && p.ports.iter().any(|np| np.port == port))
            .map(|p| p.key())
            .collect();
        v.sort();
        v
    }

    /// The expected matrix for `port`/TCP: the policy engine over the YAML in the policy dir.
    pub fn expected(&self, port: u16) -> Result<TruthTable> {
        self.expected_for(port, Protocol::Tcp)
    }

    /// [`Cluster::expected`] for any protocol (only TCP is probed).
    pub fn expected_for(&self, port: u16, proto: Protocol) -> Result<TruthTable> {
        let cl = trireme_policy::Cluster::load_paths(&[self.policy_dir()])
            .map_err(|e| other("load the policy dir", e))?;
        let mut t = cl.truth_table(&cl.engine(), port, proto);
        // Only the pods that are attached.
        let keep: Vec<String> = self
            .pods
            .iter()
            .filter(|p| p.attached)
            .map(|p| p.key())
            .collect();
        t.pods.retain(|p| keep.contains(p));
        t.allowed
            .retain(|(f, to), _| keep.contains(f) && keep.contains(to));
        Ok(t)
    }

    /// Probes every attached pod from every other on `port`, at pod IPs or (`via_vip`) at
    /// the Service VIPs. A pair observed blocked while expected connected is probed again
    /// (twice at most) to ride out a lost SYN on a loaded machine; a pair observed
    /// connected is never re-probed (one leak is a failure).
    pub fn probe(&self, port: u16, via_vip: bool) -> Result<Comparison> {
        let expected = self.expected(port)?;
        let jobs = self.jobs(port, via_vip)?;
        let mut results = matrix::probe_pairs(&jobs, self.spec.probe_timeout);
        for _ in 0..2 {
            let retry: Vec<ProbeJob> = jobs
                .iter()
                .filter(|j| {
                    expected.get(&j.from, &j.to) == Some(true)
                        && results.get(&(j.from.clone(), j.to.clone())) == Some(&false)
                })
                .cloned()
                .collect();
            if retry.is_empty() {
                break;
            }
            results.extend(matrix::probe_pairs(&retry, self.spec.probe_timeout));
        }
        let observed = matrix::observed_table(&expected, &results);
        Ok(Comparison {
            columns: self.servers_of(port),
            title: format!(
                "port {port}/TCP via {}",
                if via_vip { "Service VIPs" } else { "pod IPs" }
            ),
            expected,
            observed,
        })
    }

    fn jobs(&self, port: u16, via_vip: bool) -> Result<Vec<ProbeJob>> {
        let mut jobs = Vec::new();
        for from in self.pods.iter().filter(|p| p.attached) {
            for to in self.pods.iter().filter(|p| p.attached) {
                if from.key() == to.key() || !to.ports.iter().any(|np| np.port == port) {
                    continue;
                }
                let ip = if via_vip {
                    to.vip
                        .ok_or_else(|| other("probe via VIP", "the cluster has no services"))?
                } else {
                    to.ip
                };
                jobs.push(ProbeJob {
                    from: from.key(),
                    to: to.key(),
                    netns: from.netns.path().to_path_buf(),
                    addr: SocketAddr::new(IpAddr::V4(ip), port),
                });
            }
        }
        Ok(jobs)
    }

    fn install_services(&mut self) -> Result<()> {
        let chain = format!("TRC-SVC-{}", &self.name);
        let mut rules = format!("*nat\n:{chain} - [0:0]\n");
        for p in &self.pods {
            if let Some(vip) = p.vip {
                rules.push_str(&format!(
                    "-A {chain} -d {vip}/32 -p tcp -m comment --comment \"{}\" -j DNAT --to-destination {}\n",
                    p.key(),
                    p.ip
                ));
            }
        }
        rules.push_str(&format!("-I PREROUTING 1 -j {chain}\nCOMMIT\n"));
        self.chains.push(ChainRef {
            table: "nat".into(),
            chain: chain.clone(),
            jumps: vec![("PREROUTING".into(), vec![])],
        });
        iptables_restore("install the Service DNAT rules", &rules)
    }

    fn install_invalid_drop(&mut self) -> Result<()> {
        let chain = format!("TRC-INV-{}", &self.name);
        let b = &self.bridge;
        let rules = format!(
            "*filter\n:{chain} - [0:0]\n-A {chain} -m conntrack --ctstate INVALID -j DROP\n\
             -I FORWARD 1 -i {b} -j {chain}\n-I FORWARD 1 -o {b} -j {chain}\nCOMMIT\n"
        );
        self.chains.push(ChainRef {
            table: "filter".into(),
            chain: chain.clone(),
            jumps: vec![
                ("FORWARD".into(), vec!["-i".into(), b.clone()]),
                ("FORWARD".into(), vec!["-o".into(), b.clone()]),
            ],
        });
        iptables_restore("install the conntrack INVALID drop rule", &rules)
    }

    /// Packets the node's `--ctstate INVALID -j DROP` rule dropped on this cluster's bridge
    /// (`None` without the k8s-node set-up).
    pub fn invalid_drops(&self) -> Result<Option<u64>> {
        let Some(c) = self.chains.iter().find(|c| c.chain.starts_with("TRC-INV-")) else {
            return Ok(None);
        };
        let out = run_cmd(
            "read the INVALID drop counter",
            Command::new("iptables").args(["-w", "-t", "filter", "-n", "-v", "-x", "-L", &c.chain]),
        )?;
        // Chain header, column header, then the rule: its first field is the packet count.
        let n = out
            .lines()
            .nth(2)
            .and_then(|l| l.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| other("read the INVALID drop counter", format!("{out:?}")))?;
        Ok(Some(n))
    }

    /// Stops the in-process servers of every pod (e.g. before serving from processes).
    pub fn stop_servers(&mut self) {
        for p in &mut self.pods {
            p.servers.clear();
        }
    }

    /// Packets that went through the INVALID-drop chain (the FORWARD jumps' counters):
    /// shows that the cluster's traffic is really seen by the node's conntrack rule.
    pub fn invalid_chain_packets(&self) -> Result<Option<u64>> {
        let Some(c) = self.chains.iter().find(|c| c.chain.starts_with("TRC-INV-")) else {
            return Ok(None);
        };
        let out = run_cmd(
            "read the FORWARD counters",
            Command::new("iptables")
                .args(["-w", "-t", "filter", "-n", "-v", "-x", "-L", "FORWARD"]),
        )?;
        let n = out
            .lines()
            .filter(|l| l.split_whitespace().nth(2) == Some(c.chain.as_str()))
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        Ok(Some(n))
    }

    /// DEL of one pod through the chain (reverse order, cached result); its servers stop.
    pub fn del_pod(&mut self, key: &str) -> Result<()> {
        let i = self.pod_index(key)?;
        self.pods[i].servers.clear();
        self.rt
            .del(&self.list, &self.pods[i].rc)
            .map_err(|e| Error::Cni {
                context: format!("DEL {key}"),
                source: e,
            })?;
        self.pods[i].attached = false;
        Ok(())
    }

    /// Hands the cluster over to a state file instead of removing it on drop (the pods keep
    /// running; their in-process servers stop with this process, so `pids` names the
    /// processes that serve instead). Returns the state file path.
    pub fn keep(mut self, pids: Vec<u32>) -> Result<PathBuf> {
        let f = self.save_state(true, pids)?;
        let _ = self.dir.take().expect("not kept yet").keep();
        self.kept = true;
        // Keep the namespaces: forget the guards.
        for p in self.pods.drain(..) {
            std::mem::forget(p.netns);
            drop(p.servers);
        }
        Ok(f)
    }

    /// Writes `<dir>/state.json`: what [`teardown_kept`] needs to remove the cluster from
    /// another process (after `--keep`, or when this process dies without unwinding).
    fn save_state(&self, kept: bool, pids: Vec<u32>) -> Result<PathBuf> {
        let dir = self.dir_path.clone();
        let st = KeptState {
            owner_pid: std::process::id(),
            owner_pidns: pid_namespace(),
            kept,
            name: self.name.clone(),
            dir: dir.clone(),
            cni_path: self.rt.cni_path.clone(),
            conflist: json!({
                "cniVersion": self.list.cni_version,
                "name": self.list.name,
                "plugins": self.list.plugins,
            }),
            attachments: self
                .pods
                .iter()
                .chain(&self.bare)
                .filter(|p| p.attached)
                .map(|p| KeptPod {
                    key: p.key(),
                    ip: p.ip,
                    netns: p.netns.name().to_string(),
                    container_id: p.rc.container_id.clone(),
                    ifname: p.rc.ifname.clone(),
                    args: p.rc.args.clone(),
                })
                .collect(),
            bridge: self.spec.node.is_none().then(|| self.bridge.clone()),
            chains: self.chains.clone(),
            pids,
        };
        let f = dir.join("state.json");
        let tmp = dir.join(".state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&st).expect("JSON"))
            .and_then(|_| std::fs::rename(&tmp, &f))
            .map_err(io(format!("write {}", f.display())))?;
        Ok(f)
    }

    fn teardown(&mut self) -> Vec<String> {
        let mut errs = Vec::new();
        let bare_list = self.bare_list();
        for p in self.bare.drain(..) {
            if let Err(e) = self.rt.del(&bare_list, &p.rc) {
                errs.push(format!("DEL {}: {e}", p.key()));
            }
        }
        for p in self.pods.iter_mut().rev() {
            p.servers.clear();
            if p.attached {
                if let Err(e) = self.rt.del(&self.list, &p.rc) {
                    errs.push(format!("DEL {}: {e}", p.key()));
                }
                p.attached = false;
            }
        }
        for c in self.chains.drain(..) {
            errs.extend(remove_chain(&c));
        }
        self.pods.clear(); // netns guards
        if self.spec.node.is_none() {
            drop(sandbox::HostLink(self.bridge.clone()));
        }
        sandbox::reap_orphans("trireme-sup");
        sandbox::reap_orphans("trireme-enforce");
        if self.host_settings {
            host_settings_release();
            self.host_settings = false;
        }
        errs
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let errs = self.teardown();
        if !errs.is_empty() {
            eprintln!("cluster {}: teardown: {}", self.name, errs.join("; "));
        }
    }
}

fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Removes clusters whose creating process died without unwinding (SIGKILL, timeout):
/// their state file is not marked kept and its owner is gone. Returns what was removed.
pub fn reap_abandoned() -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
        return removed;
    };
    for e in rd.flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .starts_with("trireme-cluster-")
        {
            continue;
        }
        let f = e.path().join("state.json");
        let Ok(text) = std::fs::read(&f) else {
            continue;
        };
        let Ok(st) = serde_json::from_slice::<KeptState>(&text) else {
            continue;
        };
        // An owner in another pid namespace cannot be checked from here: leave it.
        let owner_alive = st.owner_pid == 0
            || st.owner_pidns != pid_namespace()
            || nix::sys::signal::kill(nix::unistd::Pid::from_raw(st.owner_pid as i32), None)
                .is_ok();
        if st.kept || owner_alive {
            continue;
        }
        if let Err(e) = teardown_kept(&f) {
            eprintln!("reaping abandoned cluster {}: {e}", st.name);
        }
        removed.push(e.path());
    }
    removed
}

/// Removes a kept cluster from its state file: DEL of every pod, processes, namespaces,
/// chains, bridge, directory. Keeps going past failures and reports them all.
pub fn teardown_kept(state_file: &Path) -> Result<()> {
    let text = std::fs::read(state_file).map_err(io(format!("read {}", state_file.display())))?;
    let st: KeptState = serde_json::from_slice(&text)
        .map_err(|e| other(format!("parse {}", state_file.display()), e))?;
    let list = NetworkConfigList::from_value(&st.conflist)
        .map_err(|e| other("conflist in the state file", e))?;
    let rt = CniRuntime::new(st.cni_path.clone(), &st.dir.join("cache"));
    let mut errs = Vec::new();
    for pid in &st.pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    for p in st.attachments.iter().rev() {
        let rc = RuntimeConf {
            container_id: p.container_id.clone(),
            netns: Some(PathBuf::from(format!("/var/run/netns/{}", p.netns))),
            ifname: p.ifname.clone(),
            args: p.args.clone(),
            capability_args: Default::default(),
        };
        if let Err(e) = rt.del(&list, &rc) {
            errs.push(format!("DEL {}: {e}", p.key));
        }
        let out = Command::new("ip").args(["netns", "del", &p.netns]).output();
        if !out.is_ok_and(|o| o.status.success())
            && Path::new("/var/run/netns").join(&p.netns).exists()
        {
            errs.push(format!("ip netns del {}", p.netns));
        }
    }
    for c in &st.chains {
        errs.extend(remove_chain(c));
    }
    if let Some(b) = &st.bridge {
        drop(sandbox::HostLink(b.clone()));
    }
    if let Err(e) = std::fs::remove_dir_all(&st.dir) {
        errs.push(format!("remove {}: {e}", st.dir.display()));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(Error::Teardown(errs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netpol_spec_is_the_upstream_cluster() {
        let s = ClusterSpec::netpol();
        assert_eq!(s.pods.len(), 9);
        assert_eq!(s.pods[4].namespace, "y");
        assert_eq!(s.pods[4].name, "b");
        assert_eq!(s.pods[4].labels["pod"], "b");
        assert_eq!(s.namespaces[2].1["ns"], "z");
        let names: Vec<&str> = s.pods[0].ports.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["serve-80-tcp", "serve-81-tcp"]);
        assert_eq!(s.pods[8].ports[1].port, 81);
    }

    #[test]
    fn state_files_without_owner_fields_parse_as_not_reapable() {
        let st: KeptState = serde_json::from_value(json!({
            "name": "tc1", "dir": "/tmp/x", "cni_path": [], "conflist": {},
            "attachments": [], "bridge": null, "chains": [], "pids": [],
        }))
        .unwrap();
        assert_eq!(st.owner_pid, 0);
        assert!(!st.kept);
        assert_eq!(st.owner_pidns, "");
    }

    #[test]
    fn vips_are_outside_the_pod_subnet() {
        let s = Ipv4Addr::new(10, 201, 3, 0);
        assert_eq!(vip_of(s, 0), Ipv4Addr::new(10, 201, 131, 10));
        assert_eq!(vip_of(s, 8), Ipv4Addr::new(10, 201, 131, 18));
    }
}
