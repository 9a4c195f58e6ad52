//! trireme side by side with its baselines, every figure measured in ONE run on this machine,
//! interleaved (one sample with, one without, alternating):
//!
//! - connection setup (connect + 1-byte echo) between two pods on a real bridge network with
//!   trireme chained, vs two pods on a plain bridge network: warm and cold (fresh pod pair);
//! - a mutual-TLS 1.3 handshake (rustls + rcgen, aws-lc-rs) on the plain pods, beside ours;
//! - new connections per second with 32 concurrent clients;
//! - one bulk TCP stream after the handshake;
//! - CNI ADD / DEL of trireme's own step in the chain (vs the bridge plugin's step);
//! - enforcer RSS idle and with 10,000 half-open flows;
//! - policy decision cost with 1,000 policies vs 1 (in-process).
//!
//! Run as root after `cargo build --release --workspace --bins`: `sudo ./scripts/bench.sh`.
//! Everything it creates (namespaces, bridges, enforcers, rules, files) is removed on exit,
//! also when a step fails. `TRIREME_BENCH_QUICK=1` runs a much smaller version.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trireme_conformance::bench::{
    bulk, connect_echo, cpu_time, echo_handler, rate, render, rss_kib, sink_handler, Bound,
    NsWorker, Row, Server, Single, Summary, Target,
};
use trireme_conformance::cni::{plugin_config, CniRuntime, NetworkConfigList, RuntimeConf};
use trireme_conformance::sandbox::{
    become_subreaper, reap_orphans, require_root, result_ip, unique_name, workspace_bin, HostLink,
    Netns,
};
use trireme_policy::{Cluster, Engine, Identity, Peer, Protocol};

const ECHO: u16 = 7000;
const SINK: u16 = 7001;
const TLS: u16 = 7443;
const TIMEOUT: Duration = Duration::from_secs(2);

type BoxError = Box<dyn std::error::Error>;

/// Sizes of one run (bounded loops; a full run stays under about five minutes).
struct Plan {
    warm: usize,
    cold: usize,
    rate_windows: usize,
    window: Duration,
    clients: usize,
    bulk_bytes: u64,
    bulk_rounds: usize,
    syns: usize,
    decision_batches: usize,
    batch: usize,
}

impl Plan {
    fn from_env() -> Plan {
        if std::env::var_os("TRIREME_BENCH_QUICK").is_some() {
            Plan {
                warm: 200,
                cold: 3,
                rate_windows: 2,
                window: Duration::from_millis(500),
                clients: 32,
                bulk_bytes: 64 << 20,
                bulk_rounds: 2,
                syns: 10_000,
                decision_batches: 20,
                batch: 1000,
            }
        } else {
            Plan {
                warm: 3000,
                cold: 20,
                rate_windows: 6,
                window: Duration::from_secs(1),
                clients: 32,
                bulk_bytes: 1 << 30,
                bulk_rounds: 3,
                syns: 10_000,
                decision_batches: 200,
                batch: 2000,
            }
        }
    }
}

/// A CNI network of this run: `[bridge]` or `[bridge, trireme]` on its own bridge and
/// subnet. Every attachment made through it is DELeted on Drop (then the bridge goes).
struct Net {
    rt: CniRuntime,
    list: NetworkConfigList,
    subnet: Ipv4Addr,
    attached: Mutex<Vec<(RuntimeConf, Value)>>,
    control_dir: PathBuf,
    _bridge: HostLink,
}

/// Durations of one attachment's plugin steps.
struct Timed {
    result: Value,
    bridge: Duration,
    trireme: Option<Duration>,
}

impl Net {
    fn new(dir: &Path, trireme: bool, third_octet: u8) -> Result<Net, BoxError> {
        let plugin_dir = workspace_bin("trireme")
            .parent()
            .expect("bin dir")
            .to_path_buf();
        let rt = CniRuntime::new(
            vec![plugin_dir, PathBuf::from("/usr/lib/cni")],
            &dir.join("cache"),
        );
        let bridge = HostLink(unique_name("tbb"));
        let subnet = Ipv4Addr::new(10, 200 + (std::process::id() % 50) as u8, third_octet, 0);
        let mut plugins = vec![json!({
            "type": "bridge",
            "bridge": bridge.0,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "subnet": format!("{subnet}/24"),
                "dataDir": dir.join(format!("ipam{third_octet}")),
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        })];
        let control_dir = dir.join("control");
        if trireme {
            plugins.push(json!({
                "type": "trireme",
                "policyDir": dir.join("policies"),
                "keyDir": dir.join("keys"),
                "controlDir": control_dir,
                "stateDir": dir.join("state"),
                "logLevel": "info",
                "capabilities": {"io.kubernetes.cri.pod-annotations": true},
            }));
        }
        let list = NetworkConfigList::from_value(&json!({
            "cniVersion": "1.0.0",
            "name": unique_name("bn"),
            "plugins": plugins,
        }))?;
        Ok(Net {
            rt,
            list,
            subnet,
            attached: Mutex::new(Vec::new()),
            control_dir,
            _bridge: bridge,
        })
    }

    /// ADD through the chain, timing each plugin's own step.
    fn add(&self, ns: &Netns, labels: Value) -> Result<(RuntimeConf, Timed), BoxError> {
        let rc = RuntimeConf::new(&unique_name("bc"), ns.path(), "eth0")
            .arg("IgnoreUnknown", "1")
            .arg("K8S_POD_NAMESPACE", "bench")
            .arg("K8S_POD_NAME", ns.name())
            .capability(
                "io.kubernetes.cri.pod-annotations",
                json!({"trireme.io/labels": labels.to_string()}),
            );
        let mut prev: Option<Value> = None;
        let mut times = Vec::new();
        self.attached
            .lock()
            .expect("lock")
            .push((rc.clone(), Value::Null));
        for p in &self.list.plugins {
            let ty = p["type"].as_str().expect("type");
            let conf = plugin_config(&self.list, p, prev.as_ref(), Some(&rc));
            let t = Instant::now();
            let out = self
                .rt
                .exec(ty, "ADD", Some(&rc), &conf)?
                .ok_or_else(|| format!("{ty} ADD printed nothing"))?;
            times.push(t.elapsed());
            prev = Some(out);
        }
        let result = prev.expect("plugins");
        if let Some(e) = self.attached.lock().expect("lock").last_mut() {
            e.1 = result.clone();
        }
        Ok((
            rc,
            Timed {
                result,
                bridge: times[0],
                trireme: times.get(1).copied(),
            },
        ))
    }

    /// DEL in reverse order with the ADD result as prevResult: (bridge, trireme) durations.
    fn del(&self, rc: &RuntimeConf) -> Result<(Duration, Option<Duration>), BoxError> {
        let result = {
            let mut a = self.attached.lock().expect("lock");
            let i = a
                .iter()
                .position(|(r, _)| r.container_id == rc.container_id)
                .ok_or("not attached")?;
            a.remove(i).1
        };
        self.del_with(rc, &result)
    }

    fn del_with(
        &self,
        rc: &RuntimeConf,
        result: &Value,
    ) -> Result<(Duration, Option<Duration>), BoxError> {
        let prev = (!result.is_null()).then_some(result);
        let mut times = Vec::new();
        for p in self.list.plugins.iter().rev() {
            let ty = p["type"].as_str().expect("type");
            let conf = plugin_config(&self.list, p, prev, Some(rc));
            let t = Instant::now();
            self.rt.exec(ty, "DEL", Some(rc), &conf)?;
            times.push(t.elapsed());
        }
        Ok(match times.as_slice() {
            [b] => (*b, None),
            [t, b] => (*b, Some(*t)),
            _ => unreachable!("one or two plugins"),
        })
    }

    /// The enforcer's `status` of an attachment (trireme networks only).
    fn status(&self, rc: &RuntimeConf) -> Result<Value, BoxError> {
        let sock = self
            .control_dir
            .join(format!("{}-{}.sock", rc.container_id, rc.ifname));
        let mut s = std::os::unix::net::UnixStream::connect(&sock)
            .map_err(|e| format!("connect {}: {e}", sock.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"{\"op\":\"status\"}\n")?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        Ok(serde_json::from_str(&line)?)
    }

    fn enforcer_pid(&self, rc: &RuntimeConf) -> Result<u32, BoxError> {
        let st = self.status(rc)?;
        Ok(st["pid"]
            .as_u64()
            .ok_or_else(|| format!("status without pid: {st}"))? as u32)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let attached = std::mem::take(&mut *self.attached.lock().expect("lock"));
        for (rc, result) in attached.iter().rev() {
            if let Err(e) = self.del_with(rc, result) {
                eprintln!("cleanup: DEL {}: {e}", rc.container_id);
            }
        }
        reap_orphans("trireme-sup");
        reap_orphans("trireme-enforce");
    }
}

/// A pod of this run: its namespace (deleted on Drop, after its network DELs it), its
/// address and a worker thread inside it.
struct Pod {
    rc: RuntimeConf,
    ip: Ipv4Addr,
    worker: NsWorker,
    ns: Netns,
}

fn pod(net: &Net, role: &str, timed: &mut Vec<Timed>) -> Result<Pod, BoxError> {
    let ns = Netns::new("tbp")?;
    // Many short connections from one client: the whole port range and TIME_WAIT reuse,
    // the same in both networks.
    ns.exec(&["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535"])?;
    ns.exec(&["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"])?;
    let labels = match role {
        "server" => json!({"app": "server"}),
        _ => json!({"role": "client"}),
    };
    let (rc, t) = net.add(&ns, labels)?;
    let ip = match result_ip(&t.result) {
        Some(IpAddr::V4(ip)) => ip,
        other => return Err(format!("no IPv4 in ADD result: {other:?}").into()),
    };
    timed.push(t);
    let worker = NsWorker::new(ns.path())?;
    Ok(Pod { rc, ip, worker, ns })
}

fn serve(
    p: &Pod,
    port: u16,
    threads: usize,
    h: trireme_conformance::bench::load::Handler,
) -> Result<Server, BoxError> {
    let l = p.ns.run(|| TcpListener::bind(("0.0.0.0", port)))??;
    Ok(Server::start(l, threads, h)?)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn summary(v: &[f64], what: &str) -> Result<Summary, BoxError> {
    Summary::of(v).ok_or_else(|| format!("no samples for {what}").into())
}

fn row(
    name: &str,
    unit: &str,
    ours: &[f64],
    base: &[f64],
    base_name: &str,
) -> Result<Row, BoxError> {
    Ok(Row {
        name: name.into(),
        unit: unit.into(),
        ours: summary(ours, name)?,
        base: summary(base, name)?,
        base_name: base_name.into(),
    })
}

// ---------------------------------------------------------------- mutual TLS 1.3

struct Tls {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

/// A CA, a server and a client certificate (ECDSA P-256, rcgen), TLS 1.3 only, client
/// certificates required, no tickets and no resumption: every connection is a full mutual
/// handshake. Provider: aws-lc-rs (rustls' default key exchange order, X25519MLKEM768 first).
fn tls_configs() -> Result<Tls, BoxError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "trireme bench CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let leaf = |name: &str, eku: ExtendedKeyUsagePurpose| -> Result<(Vec<u8>, Vec<u8>), BoxError> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(vec![name.to_string()])?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![eku];
        let cert = p.signed_by(&key, &ca)?;
        Ok((cert.der().to_vec(), key.serialize_der()))
    };
    let (server_cert, server_key) = leaf("server.bench", ExtendedKeyUsagePurpose::ServerAuth)?;
    let (client_cert, client_key) = leaf("client.bench", ExtendedKeyUsagePurpose::ClientAuth)?;
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone())?;
    let roots = Arc::new(roots);
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server_cert.into()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key)),
        )?;
    server.send_tls13_tickets = 0;
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![client_cert.into()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(client_key)),
        )?;
    client.resumption = rustls::client::Resumption::disabled();
    Ok(Tls {
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

fn tls_handler(cfg: Arc<ServerConfig>) -> trireme_conformance::bench::load::Handler {
    Arc::new(move |tcp: TcpStream| {
        let _ = tcp.set_nodelay(true);
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
        let Ok(conn) = ServerConnection::new(cfg.clone()) else {
            return;
        };
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut b = [0u8; 1];
        if tls.read_exact(&mut b).is_ok() && tls.write_all(&b).is_ok() {
            let _ = tls.flush();
            let mut rest = [0u8; 64];
            while let Ok(n) = tls.read(&mut rest) {
                if n == 0 {
                    break;
                }
            }
        }
    })
}

/// Connect + full mutual TLS 1.3 handshake + 1-byte echo, timed like [`connect_echo`].
fn tls_connect_echo(addr: SocketAddr, cfg: Arc<ClientConfig>) -> std::io::Result<Duration> {
    let start = Instant::now();
    let tcp = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(TIMEOUT))?;
    let name = ServerName::try_from("server.bench").expect("valid name");
    let conn = ClientConnection::new(cfg, name).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"x")?;
    let mut b = [0u8; 1];
    tls.read_exact(&mut b)?;
    let took = start.elapsed();
    if &b != b"x" {
        return Err(std::io::Error::other("TLS echo returned a different byte"));
    }
    tls.conn.send_close_notify();
    let _ = tls.flush();
    Ok(took)
}

// ---------------------------------------------------------------- half-open flows

/// Sends `n` SYNs (distinct source ports) from `src` to `dst:port` through a raw socket of
/// the calling thread's namespace, paced so the NFQUEUE never overflows.
fn send_syns(src: Ipv4Addr, dst: Ipv4Addr, port: u16, n: usize) -> std::io::Result<usize> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(dst).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut sent = 0;
    for i in 0..n {
        let sport = 10_000 + (i % 50_000) as u16;
        let seq = 0x1000_0000u32.wrapping_add((i as u32).wrapping_mul(7919));
        let b = etherparse::PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
            .tcp(sport, port, seq, 64240)
            .syn();
        let mut buf = Vec::with_capacity(b.size(0));
        b.write(&mut buf, &[]).map_err(std::io::Error::other)?;
        // SAFETY: buf and sa outlive the call; lengths are theirs.
        let r = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                0,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if r >= 0 {
            sent += 1;
        }
        if i % 200 == 199 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(sent)
}

// ---------------------------------------------------------------- policy decisions

fn policies_yaml(n: usize) -> String {
    (0..n)
        .map(|i| {
            [
                "---".to_string(),
                "apiVersion: networking.k8s.io/v1".into(),
                "kind: NetworkPolicy".into(),
                format!("metadata: {{name: np{i}, namespace: bench}}"),
                "spec:".into(),
                format!("  podSelector: {{matchLabels: {{app: svc{i}}}}}"),
                "  policyTypes: [Ingress]".into(),
                "  ingress:".into(),
                "  - from:".into(),
                format!("    - podSelector: {{matchLabels: {{role: client{i}}}}}"),
                "    ports: [{port: 7000}]".into(),
                String::new(),
            ]
            .join("\n")
        })
        .collect()
}

fn ident(labels: &[(&str, &str)]) -> Identity {
    Identity {
        namespace: "bench".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        namespace_labels: BTreeMap::from([(
            "kubernetes.io/metadata.name".to_string(),
            "bench".to_string(),
        )]),
        ports: Vec::new(),
    }
}

/// ns per decision, batches of 1,000 policies and of 1 policy interleaved.
fn decisions(plan: &Plan) -> Result<(Vec<f64>, Vec<f64>), BoxError> {
    let many: Engine = Cluster::parse_str("bench-1000", &policies_yaml(1000))?.engine();
    let one: Engine = Cluster::parse_str("bench-1", &policies_yaml(1))?.engine();
    // The selected pod of the 1,000 is in the middle; the allowed client is its own.
    let server_many = ident(&[("app", "svc500")]);
    let client_many = ident(&[("role", "client500")]);
    let server_one = ident(&[("app", "svc0")]);
    let client_one = ident(&[("role", "client0")]);
    let ip = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
    let run = |e: &Engine, server: &Identity, client: &Identity| -> Result<f64, BoxError> {
        let peer = Peer::Pod {
            identity: client,
            ip,
        };
        let t = Instant::now();
        let mut allowed = 0;
        for _ in 0..plan.batch {
            let d = e.ingress(black_box(server), black_box(&peer), 7000, Protocol::Tcp);
            allowed += usize::from(d.allowed);
        }
        let took = t.elapsed();
        if allowed != plan.batch {
            let d = e.ingress(server, &peer, 7000, Protocol::Tcp);
            return Err(format!("a decision that must allow denied: {d}").into());
        }
        Ok(took.as_secs_f64() * 1e9 / plan.batch as f64)
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..plan.decision_batches {
        if i % 2 == 0 {
            a.push(run(&many, &server_many, &client_many)?);
            b.push(run(&one, &server_one, &client_one)?);
        } else {
            b.push(run(&one, &server_one, &client_one)?);
            a.push(run(&many, &server_many, &client_many)?);
        }
    }
    Ok((a, b))
}

// ---------------------------------------------------------------- the run

const POLICY: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-clients, namespace: bench}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {matchLabels: {role: client}}
    ports: [{port: 7000}, {port: 7001}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: clients-to-server, namespace: bench}
spec:
  podSelector: {matchLabels: {role: client}}
  policyTypes: [Egress]
  egress:
  - to:
    - podSelector: {matchLabels: {app: server}}
    ports: [{port: 7000}, {port: 7001}]
";

const QUEUED: [&str; 4] = ["syn", "synack", "ack", "other"];

/// The enforcer's queued-packet counters: syn, synack, ack, other.
fn queued(st: &Value) -> [u64; 4] {
    QUEUED.map(|k| st["counters"]["queued"][k].as_u64().unwrap_or(0))
}

/// `syn +a, synack +b, ...` between two status answers.
fn queued_delta(before: &Value, after: &Value) -> String {
    let (a, b) = (queued(before), queued(after));
    QUEUED
        .iter()
        .zip(a.iter().zip(b))
        .map(|(k, (x, y))| format!("{k} +{}", y.saturating_sub(*x)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs bench targets without
    // it, and this one needs root and a minute: only say how to run it then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("side_by_side: run it with `sudo ./scripts/bench.sh` (cargo bench)");
        return;
    }
    require_root();
    become_subreaper();
    match run() {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("side_by_side: some targets were missed (see above)");
        }
        Err(e) => {
            eprintln!("side_by_side: FAILED: {e}");
            std::process::exit(1);
        }
    }
}

/// Ok(all targets met).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn run() -> Result<bool, BoxError> {
    let plan = Plan::from_env();
    println!(
        "{} CPUs, load average {} at start",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    let t_run = Instant::now();
    let dir = tempfile::Builder::new().prefix("trbench").tempdir()?;
    for d in ["policies", "control", "state", "cache"] {
        std::fs::create_dir_all(dir.path().join(d))?;
    }
    trireme_token::keys::init_pki(&dir.path().join("keys"), "bench-node")?;
    std::fs::write(dir.path().join("policies/bench.yaml"), POLICY)?;
    workspace_bin("trireme-enforcer");

    let tnet = Net::new(dir.path(), true, 0)?;
    let pnet = Net::new(dir.path(), false, 1)?;
    let mut t_add = Vec::new();
    let mut p_add = Vec::new();
    let ts = pod(&tnet, "server", &mut t_add)?;
    let tc = pod(&tnet, "client", &mut t_add)?;
    let ps = pod(&pnet, "server", &mut p_add)?;
    let pc = pod(&pnet, "client", &mut p_add)?;
    println!(
        "pods: trireme {} -> {} on {}/24, plain {} -> {} on {}/24",
        tc.ip, ts.ip, tnet.subnet, pc.ip, ps.ip, pnet.subnet
    );

    // Idle RSS of the two enforcers, before any traffic.
    std::thread::sleep(Duration::from_millis(300));
    let mut rss_idle = Vec::new();
    for p in [&ts, &tc] {
        rss_idle.push(rss_kib(tnet.enforcer_pid(&p.rc)?)? as f64);
    }

    let tls = tls_configs()?;
    let _t_echo = serve(&ts, ECHO, 48, echo_handler())?;
    let _t_sink = serve(&ts, SINK, 2, sink_handler())?;
    let _p_echo = serve(&ps, ECHO, 48, echo_handler())?;
    let _p_sink = serve(&ps, SINK, 2, sink_handler())?;
    let _p_tls = serve(&ps, TLS, 8, tls_handler(tls.server.clone()))?;
    let t_echo = SocketAddr::from((ts.ip, ECHO));
    let p_echo = SocketAddr::from((ps.ip, ECHO));
    let p_tls = SocketAddr::from((ps.ip, TLS));

    // Warm-up: both pairs have talked before the warm samples.
    for _ in 0..50 {
        tc.worker.call(move || connect_echo(t_echo, TIMEOUT))?;
        pc.worker.call(move || connect_echo(p_echo, TIMEOUT))?;
        let c = tls.client.clone();
        pc.worker.call(move || tls_connect_echo(p_tls, c))?;
    }

    // 1. Warm connection setup: trireme, plain, mutual TLS, order rotated every round.
    println!("warm connection setup: {} rounds", plan.warm);
    let st0 = tnet.status(&tc.rc)?;
    let (tc_pid, ts_pid) = (tnet.enforcer_pid(&tc.rc)?, tnet.enforcer_pid(&ts.rc)?);
    let cpu0 = cpu_time(tc_pid)? + cpu_time(ts_pid)?;
    let (mut w_t, mut w_p, mut w_tls, mut failures) = (Vec::new(), Vec::new(), Vec::new(), 0u64);
    for i in 0..plan.warm {
        for k in 0..3 {
            match (i + k) % 3 {
                0 => match tc.worker.call(move || connect_echo(t_echo, TIMEOUT)) {
                    Ok(d) => w_t.push(us(d)),
                    Err(_) => failures += 1,
                },
                1 => match pc.worker.call(move || connect_echo(p_echo, TIMEOUT)) {
                    Ok(d) => w_p.push(us(d)),
                    Err(_) => failures += 1,
                },
                _ => {
                    let c = tls.client.clone();
                    match pc.worker.call(move || tls_connect_echo(p_tls, c)) {
                        Ok(d) => w_tls.push(us(d)),
                        Err(_) => failures += 1,
                    }
                }
            }
        }
    }
    let enforcer_cpu_per_conn = (cpu_time(tc_pid)? + cpu_time(ts_pid)?)
        .saturating_sub(cpu0)
        .as_secs_f64()
        * 1e6
        / plan.warm.max(1) as f64;
    let st1 = tnet.status(&tc.rc)?;
    let st1s = tnet.status(&ts.rc)?;
    let total = |st: &Value| queued(st).iter().sum::<u64>();
    let queued_per_conn = total(&st1).saturating_sub(total(&st0)) as f64 / plan.warm.max(1) as f64;
    let warm_queued = queued_delta(&st0, &st1);

    // 2. Connection rate, 32 concurrent clients, windows alternating.
    println!(
        "connection rate: {} windows of {:?} each, {} clients",
        plan.rate_windows, plan.window, plan.clients
    );
    let (mut r_t, mut r_p) = (Vec::new(), Vec::new());
    let (clients, window) = (plan.clients, plan.window);
    for i in 0..plan.rate_windows * 2 {
        let trireme_turn = i % 2 == 0;
        let (w, addr) = if trireme_turn {
            (&tc.worker, t_echo)
        } else {
            (&pc.worker, p_echo)
        };
        let (per_sec, failed) = w.call(move || rate(addr, clients, window, TIMEOUT));
        failures += failed;
        if trireme_turn {
            r_t.push(per_sec)
        } else {
            r_p.push(per_sec)
        }
        // Let TIME_WAIT sockets and flows of the window settle before the other side.
        std::thread::sleep(Duration::from_millis(200));
    }

    // 3. Throughput after the handshake: one bulk stream, alternating.
    println!(
        "throughput: {} rounds of {} MiB each",
        plan.bulk_rounds,
        plan.bulk_bytes >> 20
    );
    let (mut b_t, mut b_p) = (Vec::new(), Vec::new());
    let bytes = plan.bulk_bytes;
    let (t_sink, p_sink) = (
        SocketAddr::from((ts.ip, SINK)),
        SocketAddr::from((ps.ip, SINK)),
    );
    let (stb_c, stb_s) = (tnet.status(&tc.rc)?, tnet.status(&ts.rc)?);
    for i in 0..plan.bulk_rounds * 2 {
        let trireme_turn = i % 2 == 0;
        let (w, addr) = if trireme_turn {
            (&tc.worker, t_sink)
        } else {
            (&pc.worker, p_sink)
        };
        let d = w.call(move || bulk(addr, bytes, TIMEOUT))?;
        let mib_s = bytes as f64 / (1 << 20) as f64 / d.as_secs_f64();
        if trireme_turn {
            b_t.push(mib_s)
        } else {
            b_p.push(mib_s)
        }
    }

    let bulk_queued = format!(
        "client {}; server {}",
        queued_delta(&stb_c, &tnet.status(&tc.rc)?),
        queued_delta(&stb_s, &tnet.status(&ts.rc)?)
    );

    // 4. Cold: a fresh pod pair per sample in each network, first contact; ADD/DEL timed.
    println!(
        "cold connection setup + CNI ADD/DEL: {} fresh pod pairs per network",
        plan.cold
    );
    let (mut c_t, mut c_p) = (Vec::new(), Vec::new());
    let (mut add_t, mut add_b, mut del_t, mut del_b) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for t in &t_add {
        add_t.push(ms(t.trireme.expect("trireme step")));
        add_b.push(ms(t.bridge));
    }
    for t in &p_add {
        add_b.push(ms(t.bridge));
    }
    for i in 0..plan.cold {
        for side in [i % 2 == 0, i % 2 != 0] {
            let net = if side { &tnet } else { &pnet };
            let mut timed = Vec::new();
            let s = pod(net, "server", &mut timed)?;
            let c = pod(net, "client", &mut timed)?;
            let _srv = serve(&s, ECHO, 2, echo_handler())?;
            if side {
                for p in [&s, &c] {
                    rss_idle.push(rss_kib(net.enforcer_pid(&p.rc)?)? as f64);
                }
            }
            let addr = SocketAddr::from((s.ip, ECHO));
            match c.worker.call(move || connect_echo(addr, TIMEOUT)) {
                Ok(d) if side => c_t.push(us(d)),
                Ok(d) => c_p.push(us(d)),
                Err(_) => failures += 1,
            }
            for t in &timed {
                add_b.push(ms(t.bridge));
                if let Some(d) = t.trireme {
                    add_t.push(ms(d));
                }
            }
            for p in [&c, &s] {
                let (b, t) = net.del(&p.rc)?;
                del_b.push(ms(b));
                if let Some(t) = t {
                    del_t.push(ms(t));
                }
            }
        }
    }

    // 5. Enforcer memory with 10,000 half-open flows: raw SYNs from the trireme client to an
    //    address of its own subnet that no pod has (the SYNs are never answered).
    let nobody = Ipv4Addr::from(u32::from(tnet.subnet) | 250);
    let rss_before = rss_kib(tnet.enforcer_pid(&tc.rc)?)? as f64;
    let (src, n) = (tc.ip, plan.syns);
    let sent = tc.worker.call(move || send_syns(src, nobody, ECHO, n))?;
    std::thread::sleep(Duration::from_millis(300));
    let st_syn = tnet.status(&tc.rc)?;
    let flows = st_syn["counters"]["flows"].as_u64().unwrap_or(0);
    let rss_flows = rss_kib(st_syn["pid"].as_u64().unwrap_or(0) as u32)? as f64;

    // 6. Policy decision cost, in-process.
    println!(
        "policy decisions: {} batches of {}",
        plan.decision_batches, plan.batch
    );
    let (d_many, d_one) = decisions(&plan)?;

    // Report.
    let rows = vec![
        row(
            "setup warm (connect+1B echo)",
            "us",
            &w_t,
            &w_p,
            "plain bridge pods",
        )?,
        row(
            "mutual TLS 1.3 setup warm",
            "us",
            &w_tls,
            &w_p,
            "plain bridge pods",
        )?,
        row(
            "setup cold (fresh pod pair)",
            "us",
            &c_t,
            &c_p,
            "fresh plain pair",
        )?,
        row(
            "new connections / s (32 clients)",
            "conn/s",
            &r_t,
            &r_p,
            "plain bridge pods",
        )?,
        row(
            "bulk stream throughput",
            "MiB/s",
            &b_t,
            &b_p,
            "plain bridge pods",
        )?,
        row(
            "CNI ADD, one plugin step",
            "ms",
            &add_t,
            &add_b,
            "bridge plugin step",
        )?,
        row(
            "CNI DEL, one plugin step",
            "ms",
            &del_t,
            &del_b,
            "bridge plugin step",
        )?,
        row(
            "policy decision, 1,000 policies",
            "ns",
            &d_many,
            &d_one,
            "1 policy",
        )?,
    ];
    let singles = vec![
        Single {
            name: "enforcer RSS idle".into(),
            unit: "KiB".into(),
            s: summary(&rss_idle, "rss idle")?,
            note: "fresh enforcers right after ADD".into(),
        },
        Single {
            name: "enforcer RSS with half-open SYNs".into(),
            unit: "KiB".into(),
            s: summary(&[rss_flows], "rss flows")?,
            note: format!(
                "{sent} raw SYNs sent; the enforcer reports {flows} tracked flows; {} KiB before",
                rss_before
            ),
        },
        Single {
            name: "enforcer CPU per warm connection (client + server enforcer, user + system)"
                .into(),
            unit: "us".into(),
            s: summary(&[enforcer_cpu_per_conn], "enforcer cpu")?,
            note: "from /proc/PID/stat over the warm phase (10 ms ticks)".into(),
        },
        Single {
            name: "packets queued to userspace per warm connection (client enforcer)".into(),
            unit: "packets".into(),
            s: summary(&[queued_per_conn], "queued")?,
            note: format!(
                "{warm_queued}; client counters: authorised {}, allowed {}, denied {}; server: authorised {}, allowed {}, denied {}",
                st1["counters"]["authorised"],
                st1["counters"]["allowed"],
                st1["counters"]["denied"],
                st1s["counters"]["authorised"],
                st1s["counters"]["allowed"],
                st1s["counters"]["denied"]
            ),
        },
    ];
    println!("packets queued during the bulk transfers: {bulk_queued}");
    let warm = &rows[0];
    let tls_row = &rows[1];
    let targets = vec![
        Target {
            what: "added setup latency p50, warm".into(),
            value: warm.added_median(),
            bound: Bound::Below,
            limit: 75.0,
            unit: "us".into(),
        },
        Target {
            what: "connection rate vs baseline".into(),
            value: rows[3].ratio(),
            bound: Bound::AtLeast,
            limit: 0.60,
            unit: "x".into(),
        },
        Target {
            what: "bulk throughput vs baseline".into(),
            value: rows[4].ratio(),
            bound: Bound::AtLeast,
            limit: 0.98,
            unit: "x".into(),
        },
        Target {
            what: "CNI ADD of trireme's step, median".into(),
            value: rows[5].ours.median,
            bound: Bound::Below,
            limit: 20.0,
            unit: "ms".into(),
        },
        Target {
            what: "enforcer RSS idle, median".into(),
            value: singles[0].s.median / 1024.0,
            bound: Bound::Below,
            limit: 8.0,
            unit: "MiB".into(),
        },
    ];
    println!();
    print!("{}", render(&rows, &singles, &targets));
    println!(
        "\nadded warm setup latency: trireme +{:.1} us p50 / +{:.1} us p99; mutual TLS 1.3 +{:.1} us p50 / +{:.1} us p99",
        warm.added_median(),
        warm.added_p99(),
        tls_row.added_median(),
        tls_row.added_p99()
    );
    println!(
        "failed connections (timeouts/errors, all measurements): {failures}; run took {:.1} s; load average {} at the end",
        t_run.elapsed().as_secs_f64(),
        loadavg()
    );
    Ok(targets.iter().all(Target::met))
}
