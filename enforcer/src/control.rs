//! The enforcer's control socket: `<control-dir>/<id>.sock`, a unix stream socket (mode
//! 0600) speaking JSON lines — one [`Request`] object per line, one [`Response`] object per
//! line back. The socket exists only once the enforcer's rules are installed and its queue
//! is bound, so "the socket answers `status`" means "ready".
//!
//! Clients (the CNI plugin, triremectl) use [`request`] / [`status`]; the enforcer binary
//! serves with [`Server`] and a [`Handler`].
//!
//! Wire examples:
//! ```text
//! → {"op":"status"}                  (cheap: no process is started)
//! → {"op":"status","verify":true}    (re-checks the rules against iptables-save)
//! ← {"result":"status","id":"c1","pid":42,...}
//! → {"op":"register","labels":{"app":"web"},"ports":[{"name":"http","port":80,"protocol":"TCP"}]}
//! ← {"result":"registered","identity":{...}}
//! → {"op":"reload"}          ← {"result":"reloaded","policy":{...}}
//! → {"op":"metrics"}         ← {"result":"metrics","text":"# HELP ..."}
//! ← {"result":"error","message":"..."}   (on any failure)
//! ```

use crate::error::{Error, Result};
use crate::metrics::Snapshot;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use trireme_policy::{Identity, NamedPort};

/// Default directory of the control sockets.
pub const DEFAULT_CONTROL_DIR: &str = "/run/trireme";

/// Longest accepted request line (bytes); longer requests are refused.
pub const MAX_REQUEST_LEN: usize = 1 << 20;

/// Control connections served at once.
pub const MAX_CONNECTIONS: usize = 16;

/// How long a client waits for the enforcer's answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The socket path of enforcer `id` under `control_dir`.
pub fn socket_path(control_dir: &Path, id: &str) -> PathBuf {
    control_dir.join(format!("{id}.sock"))
}

/// A control request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Rules present, queue bound, flows, counters, identity, pid. Without `verify`,
    /// `rules_present` says that the enforcer's own `iptables-restore` installed them
    /// (no process is started: this is the readiness poll of the CNI plugin); with
    /// `verify`, the rules are re-read now with `iptables-save` / `ip6tables-save`, so a
    /// rule removed by hand shows up (CNI CHECK, `triremectl status`).
    Status {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        verify: bool,
    },
    /// Counters in the Prometheus text format.
    Metrics,
    /// Replace the pod's labels and named ports; applies to new connections.
    Register {
        labels: BTreeMap<String, String>,
        #[serde(default)]
        ports: Vec<NamedPort>,
    },
    /// Re-read the policy directory now.
    Reload,
}

/// A control response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Status(Box<Status>),
    Metrics { text: String },
    Registered { identity: Identity },
    Reloaded { policy: PolicyStatus },
    Error { message: String },
}

/// State of the policy directory as the enforcer last loaded it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyStatus {
    pub dir: PathBuf,
    /// NetworkPolicy objects in the policy in force.
    pub policies: usize,
    /// Unix seconds of the load of the policy in force (0: none yet).
    pub loaded_at: u64,
    /// The error of the last load attempt if it failed (the last good policy stays in force).
    pub error: Option<String>,
}

/// What `status` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub id: String,
    pub pid: u32,
    pub namespace: String,
    pub pod: String,
    pub netns: PathBuf,
    /// The identity new connections are signed with.
    pub identity: Identity,
    /// All of the enforcer's iptables rules are present in the pod netns: re-checked now
    /// when the request asked to `verify`, otherwise as installed at start.
    pub rules_present: bool,
    /// Why `rules_present` is false, if it is.
    pub rules_error: Option<String>,
    pub queue: u16,
    pub queue_bound: bool,
    pub fail_open: bool,
    pub reject: bool,
    pub policy: PolicyStatus,
    /// Counters, flows and uptime.
    pub counters: Snapshot,
}

impl Status {
    /// Ready to serve: rules installed and queue bound.
    pub fn ready(&self) -> bool {
        self.rules_present && self.queue_bound
    }
}

fn cerr(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Control {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

/// Sends one request to the enforcer listening on `path` and returns its response
/// (which may be [`Response::Error`]). Times out after [`CLIENT_TIMEOUT`].
pub fn request(path: &Path, req: &Request) -> Result<Response> {
    request_with_timeout(path, req, CLIENT_TIMEOUT)
}

/// [`request`] with an explicit timeout for connect, write and read.
pub fn request_with_timeout(path: &Path, req: &Request, timeout: Duration) -> Result<Response> {
    let mut stream = UnixStream::connect(path).map_err(|e| cerr(path, format!("connect: {e}")))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|_| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| cerr(path, e))?;
    let mut line = serde_json::to_string(req).map_err(|e| cerr(path, e))?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|e| cerr(path, format!("send: {e}")))?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    let n = reader
        .read_line(&mut answer)
        .map_err(|e| cerr(path, format!("receive: {e}")))?;
    if n == 0 {
        return Err(cerr(
            path,
            "the enforcer closed the connection without answering",
        ));
    }
    serde_json::from_str(answer.trim_end())
        .map_err(|e| cerr(path, format!("bad response {:?}: {e}", answer.trim_end())))
}

/// Asks for `status` with the rules verified now (`"verify":true`); an error response
/// becomes [`Error::Refused`].
pub fn status(path: &Path) -> Result<Status> {
    status_with(path, true)
}

/// Asks for `status`, re-checking the rules against `iptables-save` only if `verify`.
pub fn status_with(path: &Path, verify: bool) -> Result<Status> {
    match request(path, &Request::Status { verify })? {
        Response::Status(s) => Ok(*s),
        Response::Error { message } => Err(Error::Refused(message)),
        other => Err(cerr(path, format!("unexpected response {other:?}"))),
    }
}

/// Asks for `metrics` (Prometheus text).
pub fn metrics(path: &Path) -> Result<String> {
    match request(path, &Request::Metrics)? {
        Response::Metrics { text } => Ok(text),
        Response::Error { message } => Err(Error::Refused(message)),
        other => Err(cerr(path, format!("unexpected response {other:?}"))),
    }
}

/// Registers new labels and ports; returns the identity now in force.
pub fn register(
    path: &Path,
    labels: BTreeMap<String, String>,
    ports: Vec<NamedPort>,
) -> Result<Identity> {
    match request(path, &Request::Register { labels, ports })? {
        Response::Registered { identity } => Ok(identity),
        Response::Error { message } => Err(Error::Refused(message)),
        other => Err(cerr(path, format!("unexpected response {other:?}"))),
    }
}

/// Asks the enforcer to re-read its policy directory now.
pub fn reload(path: &Path) -> Result<PolicyStatus> {
    match request(path, &Request::Reload)? {
        Response::Reloaded { policy } => Ok(policy),
        Response::Error { message } => Err(Error::Refused(message)),
        other => Err(cerr(path, format!("unexpected response {other:?}"))),
    }
}

/// Every `*.sock` in `control_dir`, sorted (what triremectl reads). A missing directory
/// is an empty list.
pub fn list_sockets(control_dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(control_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(control_dir, e)),
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
        .collect();
    out.sort();
    Ok(out)
}

/// The enforcer's side: answers requests.
pub trait Handler: Send + Sync {
    fn handle(&self, req: Request) -> Response;
}

/// A bound control socket. Dropping it removes the socket file.
pub struct Server {
    path: PathBuf,
    listener: UnixListener,
}

impl Server {
    /// Binds `path` with mode 0600, atomically: the socket is bound under a temporary name
    /// and renamed into place, so a client that sees the path can connect. Refuses when
    /// another enforcer answers on `path`; removes a stale socket left by a crash.
    pub fn bind(path: &Path) -> Result<Server> {
        let dir = path
            .parent()
            .ok_or_else(|| cerr(path, "no parent directory"))?;
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io(dir, e))?;
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(cerr(
                    path,
                    "another enforcer is listening on this socket (same --id?)",
                ));
            }
            std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
        }
        let tmp = path.with_extension(format!("sock.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        // umask so the socket is never accessible to others, not even briefly.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(&tmp);
        nix::sys::stat::umask(old);
        let listener = bound.map_err(|e| cerr(&tmp, format!("bind: {e}")))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(&tmp, e))?;
        if let Err(e) = std::fs::rename(&tmp, path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(path, e));
        }
        Ok(Server {
            path: path.to_path_buf(),
            listener,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves forever on the calling thread: each connection on a thread of its own (at
    /// most [`MAX_CONNECTIONS`] at once; more are answered with an error), each
    /// connection may send many requests, connections idle for 5 s are closed. A panic
    /// while answering ends that connection only.
    pub fn serve(&self, handler: Arc<dyn Handler>) {
        let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for conn in self.listener.incoming() {
            match conn {
                Ok(mut stream) => {
                    use std::sync::atomic::Ordering;
                    if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                        active.fetch_sub(1, Ordering::SeqCst);
                        let _ = stream.write_all(
                            b"{\"result\":\"error\",\"message\":\"too many control connections\"}\n",
                        );
                        continue;
                    }
                    let (h, a) = (handler.clone(), active.clone());
                    let spawned = std::thread::Builder::new()
                        .name("control-conn".into())
                        .spawn(move || {
                            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                serve_conn(stream, h.as_ref())
                            }));
                            a.fetch_sub(1, Ordering::SeqCst);
                            match r {
                                Ok(Err(e)) => {
                                    tracing::debug!(error = %e, "control connection ended")
                                }
                                Err(_) => tracing::error!("control request handler panicked"),
                                Ok(Ok(())) => {}
                            }
                        });
                    if spawned.is_err() {
                        active.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve_conn(stream: UnixStream, handler: &dyn Handler) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = Vec::new();
        let n = (&mut reader)
            .take(MAX_REQUEST_LEN as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        let response = if line.len() > MAX_REQUEST_LEN {
            Response::Error {
                message: format!("request longer than {MAX_REQUEST_LEN} bytes"),
            }
        } else {
            handle_line(&line, handler)
        };
        let mut out = serde_json::to_vec(&response).unwrap_or_else(|e| {
            format!("{{\"result\":\"error\",\"message\":\"encode: {e}\"}}").into_bytes()
        });
        out.push(b'\n');
        writer.write_all(&out)?;
        if line.len() > MAX_REQUEST_LEN {
            return Ok(());
        }
    }
}

use std::io::Read as _;

/// Decodes one request line and hands it to the handler; bad input gets an error answer.
pub fn handle_line(line: &[u8], handler: &dyn Handler) -> Response {
    let text = match std::str::from_utf8(line) {
        Ok(t) => t.trim(),
        Err(_) => {
            return Response::Error {
                message: "request is not UTF-8".into(),
            }
        }
    };
    match serde_json::from_str::<Request>(text) {
        Ok(req) => handler.handle(req),
        Err(e) => Response::Error {
            message: format!(
                "bad request: {e} (expected one JSON object per line with \"op\": status, metrics, register or reload)"
            ),
        },
    }
}

/// One file's stamp in a policy directory fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    pub path: PathBuf,
    pub modified: Option<std::time::SystemTime>,
    pub len: u64,
    pub inode: u64,
}

/// A cheap fingerprint of a policy file or directory (recursive; entries starting with
/// `.` skipped as the policy loader does; symlinks followed, so a ConfigMap's `..data`
/// swap shows). Compared every ~300 ms by the enforcer's watcher; no inotify needed.
pub fn fingerprint(path: &Path) -> Vec<FileStamp> {
    fn walk(p: &Path, out: &mut Vec<FileStamp>, depth: usize) {
        use std::os::unix::fs::MetadataExt;
        let Ok(md) = std::fs::metadata(p) else {
            return;
        };
        if md.is_dir() {
            if depth > 32 {
                return;
            }
            let Ok(rd) = std::fs::read_dir(p) else {
                return;
            };
            let mut children: Vec<PathBuf> = rd
                .filter_map(|e| e.ok())
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| e.path())
                .collect();
            children.sort();
            for c in children {
                walk(&c, out, depth + 1);
            }
        } else {
            out.push(FileStamp {
                path: p.to_path_buf(),
                modified: md.modified().ok(),
                len: md.len(),
                inode: md.ino(),
            });
        }
    }
    let mut out = Vec::new();
    walk(path, &mut out, 0);
    out
}

fn valid_name_part(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn valid_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Validates labels (Kubernetes label key and value rules) and named ports
/// (name non-empty, at most 15 characters, port not 0). Pure.
pub fn validate_identity(
    labels: &BTreeMap<String, String>,
    ports: &[NamedPort],
) -> std::result::Result<(), String> {
    for (k, v) in labels {
        let (prefix, name) = match k.split_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, k.as_str()),
        };
        if prefix.is_some_and(|p| !valid_dns_subdomain(p)) || !valid_name_part(name, 63) {
            return Err(format!(
                "label key {k:?} is not a valid Kubernetes label key ([prefix/]name, name 1-63 characters of [A-Za-z0-9._-] starting and ending alphanumeric)"
            ));
        }
        if !v.is_empty() && !valid_name_part(v, 63) {
            return Err(format!(
                "label {k:?} has an invalid value {v:?} (at most 63 characters of [A-Za-z0-9._-], starting and ending alphanumeric)"
            ));
        }
    }
    for p in ports {
        if p.name.is_empty() || p.name.len() > 15 {
            return Err(format!("port name {:?} must have 1-15 characters", p.name));
        }
        if p.port == 0 {
            return Err(format!("port {:?} has port number 0", p.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Echo {
        seen: Mutex<Vec<Request>>,
    }

    impl Handler for Echo {
        fn handle(&self, req: Request) -> Response {
            self.seen.lock().unwrap().push(req.clone());
            match req {
                Request::Metrics => Response::Metrics {
                    text: "m 1\n".into(),
                },
                Request::Register { labels, ports } => Response::Registered {
                    identity: Identity {
                        namespace: "x".into(),
                        labels,
                        ports,
                        ..Default::default()
                    },
                },
                _ => Response::Error {
                    message: "nope".into(),
                },
            }
        }
    }

    #[test]
    fn requests_have_documented_wire_format() {
        assert_eq!(
            serde_json::to_string(&Request::Status { verify: false }).unwrap(),
            r#"{"op":"status"}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::Status { verify: true }).unwrap(),
            r#"{"op":"status","verify":true}"#
        );
        let r: Request = serde_json::from_str(r#"{"op":"status"}"#).unwrap();
        assert_eq!(r, Request::Status { verify: false });
        let r: Request = serde_json::from_str(r#"{"op":"status","verify":true}"#).unwrap();
        assert_eq!(r, Request::Status { verify: true });
        let r: Request =
            serde_json::from_str(r#"{"op":"register","labels":{"app":"web"}}"#).unwrap();
        assert_eq!(
            r,
            Request::Register {
                labels: [("app".to_string(), "web".to_string())].into(),
                ports: vec![]
            }
        );
        let r: Request = serde_json::from_str(
            r#"{"op":"register","labels":{},"ports":[{"name":"http","port":80,"protocol":"TCP"}]}"#,
        )
        .unwrap();
        assert!(matches!(r, Request::Register { ports, .. } if ports[0].port == 80));
        assert_eq!(
            serde_json::to_string(&Response::Error {
                message: "x".into()
            })
            .unwrap(),
            r#"{"result":"error","message":"x"}"#
        );
    }

    #[test]
    fn bad_lines_get_errors_not_calls() {
        let h = Echo {
            seen: Mutex::new(vec![]),
        };
        for bad in [
            &b"{\"op\":\"explode\"}"[..],
            b"not json",
            b"\xff\xfe",
            b"{}",
        ] {
            assert!(matches!(handle_line(bad, &h), Response::Error { .. }));
        }
        assert!(h.seen.lock().unwrap().is_empty());
    }

    #[test]
    fn client_and_server_talk_over_a_real_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path(), "pod1");
        let server = Server::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A second server on the same path is refused while the first listens.
        assert!(Server::bind(&path).is_err());
        let handler = Arc::new(Echo {
            seen: Mutex::new(vec![]),
        });
        let h2: Arc<dyn Handler> = handler.clone();
        let server = Arc::new(server);
        let s2 = server.clone();
        std::thread::spawn(move || s2.serve(h2));

        assert_eq!(metrics(&path).unwrap(), "m 1\n");
        let id = register(
            &path,
            [("app".to_string(), "db".to_string())].into(),
            vec![],
        )
        .unwrap();
        assert_eq!(id.labels["app"], "db");
        assert!(matches!(status(&path), Err(Error::Refused(m)) if m == "nope"));
        assert_eq!(list_sockets(dir.path()).unwrap(), vec![path.clone()]);
        assert_eq!(handler.seen.lock().unwrap().len(), 3);
    }

    /// Status is slow (like iptables-save under load) and the first request panics.
    struct Slow {
        calls: std::sync::atomic::AtomicUsize,
    }

    impl Handler for Slow {
        fn handle(&self, req: Request) -> Response {
            let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            match req {
                Request::Reload if n == 0 => panic!("handler bug"),
                Request::Status { .. } => {
                    std::thread::sleep(Duration::from_secs(2));
                    Response::Error {
                        message: "slow".into(),
                    }
                }
                _ => Response::Metrics { text: "ok".into() },
            }
        }
    }

    #[test]
    fn a_slow_or_panicking_request_does_not_block_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path(), "slow");
        let server = Arc::new(Server::bind(&path).unwrap());
        let h: Arc<dyn Handler> = Arc::new(Slow {
            calls: Default::default(),
        });
        let s2 = server.clone();
        std::thread::spawn(move || s2.serve(h));
        // The panicking request closes its connection without an answer...
        assert!(request(&path, &Request::Reload).is_err());
        // ...and a slow one does not hold up a quick one.
        let p2 = path.clone();
        let slow = std::thread::spawn(move || request(&p2, &Request::Status { verify: false }));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(metrics(&path).unwrap(), "ok");
        assert!(
            !slow.is_finished(),
            "the quick request waited for the slow one"
        );
        assert!(slow.join().unwrap().is_ok());
    }

    #[test]
    fn stale_socket_is_replaced_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path(), "stale");
        // A socket file nobody listens on (as after a crash).
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let server = Server::bind(&path).unwrap();
        assert!(path.exists());
        drop(server);
        assert!(!path.exists());
        assert!(request(&path, &Request::Status { verify: false }).is_err());
    }

    #[test]
    fn list_of_missing_dir_is_empty() {
        assert!(list_sockets(Path::new("/nonexistent/trireme-test"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn identity_validation_follows_kubernetes_rules() {
        let ok: BTreeMap<String, String> = [
            ("app".into(), "web".into()),
            ("app.kubernetes.io/name".into(), "x-1".into()),
            ("empty".into(), "".into()),
        ]
        .into();
        assert!(validate_identity(&ok, &[]).is_ok());
        for (k, v) in [
            ("", "x"),
            ("-app", "x"),
            ("app", "-bad"),
            ("Bad_Prefix/x", "y"),
            ("a/b/c", "y"),
            ("app", "has space"),
        ] {
            let l: BTreeMap<String, String> = [(k.to_string(), v.to_string())].into();
            assert!(validate_identity(&l, &[]).is_err(), "{k}={v}");
        }
        let long: BTreeMap<String, String> = [("a".repeat(64), "x".into())].into();
        assert!(validate_identity(&long, &[]).is_err());
        let port = |name: &str, port| NamedPort {
            name: name.into(),
            port,
            protocol: trireme_policy::Protocol::Tcp,
        };
        assert!(validate_identity(&ok, &[port("http", 80)]).is_ok());
        assert!(validate_identity(&ok, &[port("", 80)]).is_err());
        assert!(validate_identity(&ok, &[port("http", 0)]).is_err());
    }

    #[test]
    fn fingerprint_sees_changes_and_skips_dotfiles() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "x").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b.yaml"), "y").unwrap();
        let f1 = fingerprint(dir.path());
        assert_eq!(f1.len(), 2);
        std::fs::write(dir.path().join(".hidden"), "z").unwrap();
        assert_eq!(fingerprint(dir.path()), f1);
        std::fs::write(dir.path().join("sub/b.yaml"), "yy").unwrap();
        assert_ne!(fingerprint(dir.path()), f1);
        assert!(fingerprint(Path::new("/nonexistent/x")).is_empty());
    }
}
