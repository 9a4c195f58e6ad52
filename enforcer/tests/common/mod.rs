//! Support for the enforcer's integration tests: real network namespaces joined by a veth
//! pair, the real `trireme-enforcer` binary, real keys, real TCP. Every resource has a
//! unique name (pid + counter) and a Drop guard, so tests run in parallel and clean up
//! even when they panic.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use trireme_enforcer::control::{self, Status};
use trireme_enforcer::netns;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A short unique suffix for names (interface names have at most 15 characters).
pub fn unique() -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{}{}", std::process::id() % 100_000, n)
}

/// Fails the test with a clear message unless it runs as root.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "this test needs root (it creates network namespaces, veth pairs, iptables rules and \
             NFQUEUE listeners); run it with sudo or as root, e.g. scripts/test.sh"
        );
    }
}

pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        let name = format!("trt-{prefix}-{}", unique());
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.exec("ip", &["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.name))
    }

    /// Runs a command inside the namespace; panics on failure.
    pub fn exec(&self, cmd: &str, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.name, cmd];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs a command inside the namespace; returns (success, stdout+stderr).
    pub fn try_exec(&self, cmd: &str, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, cmd])
            .args(args)
            .output()
            .expect("ip");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// `iptables-save` and `ip6tables-save` lines that mention trireme.
    pub fn trireme_rules(&self) -> Vec<String> {
        let mut out = self.trireme_rules_of("iptables-save");
        out.extend(self.trireme_rules_of("ip6tables-save"));
        out
    }

    /// Lines of one save command (`iptables-save` or `ip6tables-save`) that mention trireme.
    pub fn trireme_rules_of(&self, save: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .exec(save, &[])
            .lines()
            .filter(|l| l.contains("TRIREME"))
            .map(String::from)
            .collect();
        out.sort();
        out
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Two pods on a veth pair: `a` is 10.0.0.1, `b` is 10.0.0.2 (addresses are per netns,
/// so parallel tests don't collide).
pub struct Pair {
    pub a: Netns,
    pub b: Netns,
}

pub const IP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const IP_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

impl Pair {
    pub fn new() -> Pair {
        let a = Netns::new("a");
        let b = Netns::new("b");
        let u = unique();
        let (va, vb) = (format!("tv{u}a"), format!("tv{u}b"));
        run(
            "ip",
            &[
                "link", "add", &va, "netns", &a.name, "type", "veth", "peer", "name", &vb, "netns",
                &b.name,
            ],
        );
        a.exec("ip", &["addr", "add", "10.0.0.1/24", "dev", &va]);
        b.exec("ip", &["addr", "add", "10.0.0.2/24", "dev", &vb]);
        a.exec("ip", &["link", "set", &va, "up"]);
        b.exec("ip", &["link", "set", &vb, "up"]);
        Pair { a, b }
    }
}

/// A temporary directory removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("trireme-test-")
        .tempdir()
        .expect("tempdir")
}

/// A directory with real PKI keys for node `node` (a fresh CA).
pub fn pki_keys(node: &str) -> tempfile::TempDir {
    let d = tempdir();
    trireme_token::keys::init_pki(d.path(), node).expect("init_pki");
    d
}

/// Keys for a second node signed by the CA in `ca_dir`.
pub fn issue_keys(ca_dir: &Path, node: &str) -> tempfile::TempDir {
    let d = tempdir();
    // issue_node wants a fresh output directory.
    let out = d.path().join("keys");
    trireme_token::keys::issue_node(ca_dir, node, &out).expect("issue_node");
    d
}

/// Writes `yaml` as the only file of a policy directory.
pub fn write_policy(dir: &Path, yaml: &str) {
    let tmp = dir.join(".policy.yaml.tmp");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, dir.join("policy.yaml")).unwrap();
}

/// Options of one enforcer.
#[derive(Clone)]
pub struct EnforcerOpts {
    pub namespace: String,
    pub pod: String,
    pub labels: String,
    pub ports: String,
    pub policy_dir: PathBuf,
    pub key_dir: PathBuf,
    pub extra: Vec<String>,
}

impl EnforcerOpts {
    pub fn new(
        namespace: &str,
        pod: &str,
        labels: &str,
        policy_dir: &Path,
        key_dir: &Path,
    ) -> Self {
        EnforcerOpts {
            namespace: namespace.into(),
            pod: pod.into(),
            labels: labels.into(),
            ports: "[]".into(),
            policy_dir: policy_dir.into(),
            key_dir: key_dir.into(),
            extra: vec![],
        }
    }
}

/// A running `trireme-enforcer`; SIGTERM (then SIGKILL) on drop.
pub struct Enforcer {
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub id: String,
    pub netns: PathBuf,
    pub opts: EnforcerOpts,
    ctl: tempfile::TempDir,
}

pub fn enforcer_bin() -> &'static str {
    env!("CARGO_BIN_EXE_trireme-enforcer")
}

impl Enforcer {
    pub fn command(netns: &Path, id: &str, control_dir: &Path, o: &EnforcerOpts) -> Command {
        let mut cmd = Command::new(enforcer_bin());
        cmd.arg("--netns")
            .arg(netns)
            .args(["--id", id, "--namespace", &o.namespace, "--pod", &o.pod])
            .args(["--labels", &o.labels, "--ports", &o.ports])
            .arg("--policy-dir")
            .arg(&o.policy_dir)
            .arg("--key-dir")
            .arg(&o.key_dir)
            .arg("--control-dir")
            .arg(control_dir)
            .args(["--log-level", "debug", "--log-format", "json"])
            .args(&o.extra);
        cmd
    }

    /// Starts the enforcer in `ns` and waits until its control socket answers `status`
    /// with rules present and queue bound.
    pub fn start(ns: &Netns, o: EnforcerOpts) -> Enforcer {
        let ctl = tempdir();
        let id = format!("e{}", unique());
        let mut e = Enforcer {
            child: None,
            socket: control::socket_path(ctl.path(), &id),
            log: ctl.path().join(format!("{id}.log")),
            id,
            netns: ns.path(),
            opts: o,
            ctl,
        };
        e.spawn();
        e
    }

    pub fn control_dir(&self) -> &Path {
        self.ctl.path()
    }

    /// (Re)starts the process with the same options and waits until ready.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Self::command(&self.netns, &self.id, self.ctl.path(), &self.opts)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn trireme-enforcer");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("enforcer exited early ({st}); log:\n{}", self.log_text());
            }
            if let Ok(s) = control::status(&self.socket) {
                assert!(s.ready(), "enforcer answered but is not ready: {s:?}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "enforcer not ready after 15 s; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn status(&self) -> Status {
        control::status(&self.socket)
            .unwrap_or_else(|e| panic!("status: {e}; log:\n{}", self.log_text()))
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// Sends `sig` and waits for the process to exit.
    pub fn stop_with(&mut self, sig: nix::sys::signal::Signal) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "enforcer did not exit after {sig:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Enforcer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// FNV-1a over a byte stream (integrity check of transfers).
#[derive(Clone, Copy)]
pub struct Fnv(pub u64);

impl Fnv {
    pub fn new() -> Self {
        Fnv(0xcbf29ce484222325)
    }
    pub fn update(&mut self, data: &[u8]) {
        for b in data {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x100000001b3);
        }
    }
}

/// A TCP server inside a netns. Protocol per connection: the server sends one greeting
/// byte `!`, reads until EOF, then answers 16 bytes: byte count and FNV-1a of what it read.
pub struct Server {
    pub accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    pub port: u16,
}

impl Server {
    /// Listens on 0.0.0.0:`port`.
    pub fn start(ns: &Netns, port: u16) -> Server {
        Self::start_at(ns, SocketAddr::from(([0, 0, 0, 0], port)))
    }

    /// Listens on `bind` (e.g. `[::]:80` for IPv6).
    pub fn start_at(ns: &Netns, bind: SocketAddr) -> Server {
        let port = bind.port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let (acc, st) = (accepted.clone(), stop.clone());
        netns::spawn_in(&ns.path(), move || {
            let l = match TcpListener::bind(bind) {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            l.set_nonblocking(true).unwrap();
            let _ = tx.send(Ok(()));
            while !st.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((c, _)) => {
                        acc.fetch_add(1, Ordering::SeqCst);
                        std::thread::spawn(move || serve(c));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("server thread")
            .expect("bind server");
        Server {
            accepted,
            stop,
            port,
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn serve(mut c: TcpStream) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
    if c.write_all(b"!").is_err() {
        return;
    }
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    let mut h = Fnv::new();
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                n += k as u64;
                h.update(&buf[..k]);
            }
            Err(_) => return,
        }
    }
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&n.to_be_bytes());
    out[8..].copy_from_slice(&h.0.to_be_bytes());
    let _ = c.write_all(&out);
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Connects from inside `ns`; the socket lives in `ns` and can be used from any thread.
pub fn connect(
    ns: &Netns,
    to: Ipv4Addr,
    port: u16,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let addr = SocketAddr::from((to, port));
    netns::run_in(&ns.path(), move || {
        TcpStream::connect_timeout(&addr, timeout)
    })
    .expect("enter netns")
}

/// A connection to a [`Server`] that has received the greeting (so both ends have
/// exchanged data and both enforcers have authorised the connection).
pub struct Conn {
    pub s: TcpStream,
    sent: u64,
    hash: Fnv,
}

impl Conn {
    /// Connects and reads the greeting within `timeout`.
    pub fn open(ns: &Netns, to: Ipv4Addr, port: u16, timeout: Duration) -> std::io::Result<Conn> {
        let mut s = connect(ns, to, port, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        let mut g = [0u8; 1];
        s.read_exact(&mut g)?;
        if &g != b"!" {
            return Err(std::io::Error::other(format!("bad greeting {g:?}")));
        }
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.set_write_timeout(Some(Duration::from_secs(20)))?;
        Ok(Conn {
            s,
            sent: 0,
            hash: Fnv::new(),
        })
    }

    /// Sends `n` bytes of a deterministic pattern.
    pub fn send(&mut self, n: usize) -> std::io::Result<()> {
        let chunk: Vec<u8> = (0..65536u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut left = n;
        while left > 0 {
            let k = left.min(chunk.len());
            self.s.write_all(&chunk[..k])?;
            self.hash.update(&chunk[..k]);
            self.sent += k as u64;
            left -= k;
        }
        Ok(())
    }

    /// Ends the upload and checks the server received exactly what was sent.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.s.shutdown(Shutdown::Write)?;
        let mut out = [0u8; 16];
        self.s.read_exact(&mut out)?;
        let n = u64::from_be_bytes(out[..8].try_into().unwrap());
        let h = u64::from_be_bytes(out[8..].try_into().unwrap());
        if n != self.sent || h != self.hash.0 {
            return Err(std::io::Error::other(format!(
                "server received {n} bytes (hash {h:x}), client sent {} (hash {:x})",
                self.sent, self.hash.0
            )));
        }
        Ok(())
    }
}

/// One full exchange: connect, greeting, send `n` bytes, verified answer.
pub fn exchange(
    ns: &Netns,
    to: Ipv4Addr,
    port: u16,
    n: usize,
    timeout: Duration,
) -> std::io::Result<()> {
    let mut c = Conn::open(ns, to, port, timeout)?;
    c.send(n)?;
    c.finish()
}

/// Waits until `f` is true or `timeout` passes; returns the last value.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
