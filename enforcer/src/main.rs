//! `trireme-enforcer`: one process per pod, inside the pod's network namespace.
//!
//! Start-up order (each step only after the previous one worked; a failure undoes what
//! was done and exits 1): parse and validate arguments → block SIGTERM/SIGINT → enter the
//! netns (still single-threaded) and refuse the host's → load keys and policy → bind the
//! NFQUEUE → install the rules (removing stale ones of a crash) → note existing
//! connections → bind the control socket (= ready) → serve. SIGTERM/SIGINT remove the
//! rules and the socket and exit 0; SIGHUP reloads the policy directory.

use clap::Parser;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use trireme_enforcer::control::{self, PolicyStatus, Request, Response, Status};
use trireme_enforcer::metrics::{self, Counters, MetricLabels};
use trireme_enforcer::queue::{self, BoundQueue, PacketHandler, QueueConfig, SharedHandler};
use trireme_enforcer::rules::{self, Family, RuleConfig, SystemIptables};
use trireme_enforcer::{handshake, netns, Error, Result};
use trireme_policy::{Identity, NamedPort};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

/// Per-pod trireme enforcer: authorises every TCP connection of the pod during its
/// handshake (NFQUEUE) with signed identity tokens and Kubernetes NetworkPolicy.
#[derive(Debug, Parser)]
#[command(name = "trireme-enforcer", version)]
struct Args {
    /// The pod's network namespace: /var/run/netns/NAME or /proc/PID/ns/net.
    #[arg(long)]
    netns: PathBuf,
    /// Unique id of this pod attachment (e.g. the CNI container id); names the socket.
    #[arg(long)]
    id: String,
    /// The pod's namespace.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// The pod's name (for logs and status).
    #[arg(long, default_value = "")]
    pod: String,
    /// The pod's labels as a JSON object, e.g. '{"app":"web"}'.
    #[arg(long, default_value = "{}")]
    labels: String,
    /// The pod's named ports as JSON: '[{"name":"http","port":80,"protocol":"TCP"}]'.
    #[arg(long, default_value = "[]")]
    ports: String,
    /// Directory (or file) of NetworkPolicy / Namespace YAML or JSON; watched for changes.
    #[arg(long)]
    policy_dir: PathBuf,
    /// Directory with this node's keys (PKI: ca.crt, node.key, node.crt; PSK: psk.key).
    #[arg(long)]
    key_dir: PathBuf,
    /// Directory of the control sockets.
    #[arg(long, default_value = control::DEFAULT_CONTROL_DIR)]
    control_dir: PathBuf,
    /// NFQUEUE number (queues are per netns).
    #[arg(long, default_value_t = 0)]
    queue: u16,
    /// Let packets pass when the enforcer is not running or the queue is full.
    #[arg(long)]
    fail_open: bool,
    /// Answer denied connections with a TCP reset instead of dropping them.
    #[arg(long)]
    reject: bool,
    /// The node's address on the pod network: its connections to the pod (kubelet
    /// probes) are allowed without a token, as Kubernetes documents.
    #[arg(long)]
    gateway: Option<IpAddr>,
    /// Do not allow the gateway address (overrides --gateway).
    #[arg(long)]
    deny_node: bool,
    /// Log level: error, warn, info, debug, trace (or a tracing filter).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
}

fn invalid(what: &str, msg: impl std::fmt::Display) -> Error {
    Error::Invalid {
        what: what.to_string(),
        msg: msg.to_string(),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Everything the control socket and the watcher share with the queue thread.
struct Enforcer {
    id: String,
    namespace: String,
    pod: String,
    netns: PathBuf,
    policy_dir: PathBuf,
    queue_cfg: QueueConfig,
    rule_cfg: RuleConfig,
    families: Vec<Family>,
    started: Instant,
    counters: Arc<Counters>,
    handler: SharedHandler,
    identity: Mutex<Identity>,
    policy: Mutex<PolicyStatus>,
    /// Serialises policy loads (watcher vs `reload`).
    reload_lock: Mutex<()>,
    queue_bound: AtomicBool,
}

impl Enforcer {
    fn snapshot(&self) -> metrics::Snapshot {
        let stats = {
            let h = self.handler.lock().unwrap_or_else(|p| p.into_inner());
            h.stats()
        };
        self.counters
            .snapshot(stats, self.started.elapsed().as_secs())
    }

    /// With `verify`, the rules are re-read now (`iptables-save`, one process per family);
    /// without, they are reported as installed: the control socket is only bound after
    /// our own `iptables-restore` succeeded, so answering costs no process (the CNI
    /// plugin's readiness poll).
    fn status(&self, verify: bool) -> Status {
        let (rules_present, rules_error) = if verify {
            match rules::check(&SystemIptables, &self.rule_cfg, &self.families) {
                Ok(()) => (true, None),
                Err(e) => (false, Some(e.to_string())),
            }
        } else {
            (true, None)
        };
        Status {
            id: self.id.clone(),
            pid: std::process::id(),
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            netns: self.netns.clone(),
            identity: self.identity.lock().unwrap().clone(),
            rules_present,
            rules_error,
            queue: self.queue_cfg.queue,
            queue_bound: self.queue_bound.load(Ordering::SeqCst),
            fail_open: self.queue_cfg.fail_open,
            reject: self.queue_cfg.reject,
            policy: self.policy.lock().unwrap().clone(),
            counters: self.snapshot(),
        }
    }

    /// Loads the policy directory; on success swaps the policy and the namespace labels of
    /// our identity in; on failure keeps the last good policy and records the error.
    fn reload(&self) -> std::result::Result<PolicyStatus, String> {
        let _g = self.reload_lock.lock().unwrap();
        match trireme_policy::Cluster::load_paths(&[&self.policy_dir]) {
            Ok(cluster) => {
                let engine = Arc::new(cluster.engine());
                let ns_labels = namespace_labels(&cluster, &self.namespace);
                {
                    let mut h = self.handler.lock().unwrap_or_else(|p| p.into_inner());
                    h.set_policy(engine.clone());
                }
                {
                    let mut id = self.identity.lock().unwrap();
                    if id.namespace_labels != ns_labels {
                        id.namespace_labels = ns_labels;
                        let mut h = self.handler.lock().unwrap_or_else(|p| p.into_inner());
                        h.set_identity(id.clone());
                    }
                }
                self.counters.policy_reload();
                let mut st = self.policy.lock().unwrap();
                st.policies = cluster.policies.len();
                st.loaded_at = unix_now();
                st.error = None;
                tracing::info!(
                    policies = st.policies,
                    dir = %self.policy_dir.display(),
                    "policy loaded"
                );
                Ok(st.clone())
            }
            Err(e) => {
                self.counters.policy_error();
                let msg = e.to_string();
                tracing::error!(error = %msg, dir = %self.policy_dir.display(),
                    "policy not loaded; the last good policy stays in force");
                self.policy.lock().unwrap().error = Some(msg.clone());
                Err(msg)
            }
        }
    }

    fn register(&self, labels: BTreeMap<String, String>, ports: Vec<NamedPort>) -> Response {
        if let Err(e) = control::validate_identity(&labels, &ports) {
            return Response::Error { message: e };
        }
        let mut id = self.identity.lock().unwrap();
        id.labels = labels;
        id.ports = ports;
        {
            let mut h = self.handler.lock().unwrap_or_else(|p| p.into_inner());
            h.set_identity(id.clone());
        }
        tracing::info!(labels = ?id.labels, ports = id.ports.len(), "identity registered");
        Response::Registered {
            identity: id.clone(),
        }
    }
}

impl control::Handler for Enforcer {
    fn handle(&self, req: Request) -> Response {
        match req {
            Request::Status { verify } => Response::Status(Box::new(self.status(verify))),
            Request::Metrics => Response::Metrics {
                text: metrics::render(
                    &self.snapshot(),
                    &MetricLabels {
                        id: self.id.clone(),
                        namespace: self.namespace.clone(),
                        pod: self.pod.clone(),
                    },
                ),
            },
            Request::Register { labels, ports } => self.register(labels, ports),
            Request::Reload => match self.reload() {
                Ok(policy) => Response::Reloaded { policy },
                Err(message) => Response::Error { message },
            },
        }
    }
}

fn namespace_labels(cluster: &trireme_policy::Cluster, ns: &str) -> BTreeMap<String, String> {
    cluster.namespace_labels(ns).cloned().unwrap_or_else(|| {
        BTreeMap::from([(
            trireme_policy::NAMESPACE_NAME_LABEL.to_string(),
            ns.to_string(),
        )])
    })
}

/// Polls the policy directory's fingerprint every 300 ms and reloads on change.
fn watch_policy(enf: Arc<Enforcer>, mut last: Vec<control::FileStamp>) {
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = control::fingerprint(&enf.policy_dir);
        if now != last {
            last = now;
            let _ = enf.reload();
        }
        enf.handler.lock().unwrap_or_else(|p| p.into_inner()).tick();
    }
}

fn init_logging(args: &Args) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .map_err(|e| invalid("--log-level", e))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let res = match args.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    res.map_err(|e| invalid("logging", e))
}

fn parse_identity(args: &Args) -> Result<(BTreeMap<String, String>, Vec<NamedPort>)> {
    let labels: BTreeMap<String, String> =
        serde_json::from_str(&args.labels).map_err(|e| invalid("--labels", e))?;
    let ports: Vec<NamedPort> =
        serde_json::from_str(&args.ports).map_err(|e| invalid("--ports", e))?;
    control::validate_identity(&labels, &ports).map_err(|e| invalid("--labels/--ports", e))?;
    Ok((labels, ports))
}

fn validate(args: &Args) -> Result<()> {
    if args.id.is_empty()
        || args.id.len() > 200
        || !args
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        || args.id.starts_with('.')
    {
        return Err(invalid(
            "--id",
            format!(
                "{:?}: use 1-200 characters of [A-Za-z0-9._-], not starting with '.'",
                args.id
            ),
        ));
    }
    if args.namespace.is_empty() {
        return Err(invalid("--namespace", "must not be empty"));
    }
    for (flag, p) in [
        ("--policy-dir", &args.policy_dir),
        ("--key-dir", &args.key_dir),
    ] {
        if !p.exists() {
            return Err(invalid(flag, format!("{} does not exist", p.display())));
        }
    }
    Ok(())
}

fn block_signals() -> Result<nix::sys::signal::SigSet> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    set.thread_block()
        .map_err(|e| invalid("signals", format!("block: {e}")))?;
    Ok(set)
}

enum Event {
    Signal(nix::sys::signal::Signal),
    QueueFailed(Error),
}

/// Reports a panicking queue thread to the main thread (which then exits, fail closed).
struct PanicNotice(mpsc::Sender<Event>, Arc<Enforcer>);

impl Drop for PanicNotice {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.1.queue_bound.store(false, Ordering::SeqCst);
            let _ = self.0.send(Event::QueueFailed(Error::Queue {
                queue: self.1.queue_cfg.queue,
                msg: "the queue thread panicked".into(),
            }));
        }
    }
}

fn run(args: Args) -> Result<()> {
    validate(&args)?;
    let (labels, ports) = parse_identity(&args)?;
    let signals = block_signals()?;

    // Single-threaded until here: enter the pod's netns for every thread and child to come.
    netns::enter(&args.netns)?;

    let keys = load_keys(&args.key_dir)?;
    // Stamped before loading, so a change during the load is seen by the watcher.
    let stamps = control::fingerprint(&args.policy_dir);
    let cluster = trireme_policy::Cluster::load_paths(&[&args.policy_dir])
        .map_err(|e| invalid("policy", e))?;
    let identity = Identity {
        namespace: args.namespace.clone(),
        labels,
        namespace_labels: namespace_labels(&cluster, &args.namespace),
        ports,
    };
    let gateway = if args.deny_node { None } else { args.gateway };
    let policy_engine = Arc::new(cluster.engine());
    let handler = build_handler(&args, identity.clone(), policy_engine, keys, gateway)?;

    let queue_cfg = QueueConfig {
        queue: args.queue,
        max_len: queue::DEFAULT_MAX_LEN,
        fail_open: args.fail_open,
        reject: args.reject,
    };
    let rule_cfg = RuleConfig {
        queue: args.queue,
        fail_open: args.fail_open,
        reject: args.reject,
    };
    let families = rules::families();

    let mut bound = BoundQueue::bind(queue_cfg)?;
    // A fresh netns has nothing of ours: one iptables-restore per family, in parallel,
    // without a save first; stale rules of a crashed predecessor make it fall back.
    rules::install_fresh_first(&SystemIptables, &rule_cfg, &families)?;
    // From here on, a failure must remove the rules again.
    let undo_rules = |e: Error| -> Error {
        match rules::remove(&SystemIptables, &families) {
            Ok(()) => e,
            Err(e2) => Error::List(vec![e, e2]),
        }
    };
    // Connections older than the rules keep flowing (see queue::Preexisting).
    let mut preexisting = queue::Preexisting::read();
    tracing::info!(
        connections = preexisting.len(),
        "existing connections will be authorised without a handshake"
    );

    let enf = Arc::new(Enforcer {
        id: args.id.clone(),
        namespace: args.namespace.clone(),
        pod: args.pod.clone(),
        netns: args.netns.clone(),
        policy_dir: args.policy_dir.clone(),
        queue_cfg,
        rule_cfg: rule_cfg.clone(),
        families: families.clone(),
        started: Instant::now(),
        counters: Arc::new(Counters::default()),
        handler,
        identity: Mutex::new(identity),
        policy: Mutex::new(PolicyStatus {
            dir: args.policy_dir.clone(),
            policies: cluster.policies.len(),
            loaded_at: unix_now(),
            error: None,
        }),
        reload_lock: Mutex::new(()),
        queue_bound: AtomicBool::new(true),
    });

    let (tx, rx) = mpsc::channel::<Event>();
    {
        let enf = enf.clone();
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("queue".into())
            .spawn(move || {
                // A panic in the loop must not leave a dead queue behind a live process.
                let _guard = PanicNotice(tx.clone(), enf.clone());
                let err = match bound.run(&enf.handler, &enf.counters, &mut preexisting) {
                    Ok(()) => Error::Queue {
                        queue: enf.queue_cfg.queue,
                        msg: "loop ended".into(),
                    },
                    Err(e) => e,
                };
                enf.queue_bound.store(false, Ordering::SeqCst);
                let _ = tx.send(Event::QueueFailed(err));
            })
            .map_err(|e| undo_rules(invalid("thread", e)))?;
    }
    {
        let enf = enf.clone();
        std::thread::Builder::new()
            .name("policy-watch".into())
            .spawn(move || watch_policy(enf, stamps))
            .map_err(|e| undo_rules(invalid("thread", e)))?;
    }
    {
        let tx = tx.clone();
        let enf = enf.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || loop {
                match signals.wait() {
                    // SIGHUP: re-read the policy directory now (like `reload`).
                    Ok(nix::sys::signal::Signal::SIGHUP) => {
                        let _ = enf.reload();
                    }
                    Ok(sig) => {
                        let _ = tx.send(Event::Signal(sig));
                    }
                    Err(_) => {}
                }
            })
            .map_err(|e| undo_rules(invalid("thread", e)))?;
    }

    // Ready: rules installed, queue bound.
    let sock = control::socket_path(&args.control_dir, &args.id);
    let server = Arc::new(control::Server::bind(&sock).map_err(undo_rules)?);
    {
        let server = server.clone();
        let handler: Arc<dyn control::Handler> = enf.clone();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || server.serve(handler))
            .map_err(|e| undo_rules(invalid("thread", e)))?;
    }
    tracing::info!(
        id = %args.id, namespace = %args.namespace, pod = %args.pod,
        netns = %args.netns.display(), queue = args.queue, fail_open = args.fail_open,
        reject = args.reject, socket = %sock.display(), pid = std::process::id(),
        "enforcer ready"
    );

    let event = rx
        .recv()
        .expect("event senders live in threads that never exit cleanly");
    let _ = std::fs::remove_file(&sock);
    match event {
        Event::Signal(sig) => {
            tracing::info!(signal = ?sig, "stopping: removing rules");
            rules::remove(&SystemIptables, &families)?;
            tracing::info!("stopped; rules and socket removed");
            Ok(())
        }
        Event::QueueFailed(e) => {
            // Keep the rules: the pod stays closed (fail closed) until a restart.
            tracing::error!(error = %e, "queue failed; exiting with rules left in place (fail closed)");
            Err(e)
        }
    }
}

/// Checks the crypto provider and loads this node's keys (PKI or PSK).
fn load_keys(dir: &Path) -> Result<Arc<dyn handshake::Tokens>> {
    trireme_token::init().map_err(|e| invalid("crypto provider", e))?;
    let (signer, verifier) = trireme_token::load_keys(dir).map_err(|e| invalid("--key-dir", e))?;
    // PKI: the node name comes from the credential; this only names PSK nodes.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "node".to_string());
    Ok(Arc::new(handshake::TokenCrypto::new(
        signer,
        verifier,
        &host,
        trireme_token::TOKEN_TTL_SECS,
    )))
}

fn build_handler(
    args: &Args,
    identity: Identity,
    policy: Arc<trireme_policy::Engine>,
    tokens: Arc<dyn handshake::Tokens>,
    gateway: Option<IpAddr>,
) -> Result<SharedHandler> {
    let cfg = handshake::Config {
        reject: args.reject,
        allow_node: gateway,
        ..Default::default()
    };
    let engine = handshake::Engine::new(
        cfg,
        identity,
        tokens,
        policy,
        Box::new(handshake::SystemRandom),
    );
    let injector = queue::RawInjector::open()?;
    let h: Box<dyn PacketHandler> = Box::new(queue::TokenEaterGuard::new(
        Box::new(engine),
        Box::new(injector),
    ));
    Ok(Arc::new(Mutex::new(h)))
}

fn main() {
    let args = Args::parse();
    if let Err(e) = init_logging(&args) {
        eprintln!("trireme-enforcer: {e}");
        std::process::exit(2);
    }
    if let Err(e) = run(args) {
        tracing::error!(error = %e, "trireme-enforcer failed");
        eprintln!("trireme-enforcer: {e}");
        std::process::exit(1);
    }
}
