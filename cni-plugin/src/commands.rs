//! The CNI operations: ADD, DEL, CHECK, VERSION, STATUS, GC.

use crate::conf::{self, Config, NetConf};
use crate::control;
use crate::env::{CniEnv, Command};
use crate::error::{Error, Result};
use crate::iptables;
use crate::netns;
use crate::process;
use crate::result;
use crate::state::{self, AttachmentLock, State};
use crate::supervisor::SuperviseArgs;
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Runs one invocation: `stdin` is the network configuration, `get_env` reads the CNI_*
/// variables. Returns what goes to stdout, or the error.
pub fn dispatch(stdin: &[u8], get_env: impl Fn(&str) -> Option<String>) -> Result<Option<Value>> {
    let env = CniEnv::parse(&get_env)?;
    if env.command == Command::Version {
        return Ok(Some(version(stdin)?));
    }
    let (nc, _raw) = conf::decode(stdin)?;
    match env.command {
        Command::Add => add(&nc, &env).map(Some),
        Command::Del => del(&nc, &env).map(|_| None),
        Command::Check => check(&nc, &env).map(|_| None),
        Command::Status => status(&nc, get_env("PATH").as_deref()).map(|_| None),
        Command::Gc => gc(&nc).map(|_| None),
        Command::Version => unreachable!(),
    }
}

/// The cniVersion to answer in: the config's when it is one we speak.
pub fn answer_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .filter(|v| conf::SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| conf::CURRENT_VERSION.to_string())
}

fn version(stdin: &[u8]) -> Result<Value> {
    // VERSION may come with an empty stdin or just {"cniVersion": ..}.
    if !stdin.iter().all(u8::is_ascii_whitespace) {
        let (nc, _) = conf::decode(stdin)?;
        if nc.cni_version.is_some() {
            conf::check_version(&nc)?;
        }
    }
    Ok(json!({
        "cniVersion": answer_version(stdin),
        "supportedVersions": conf::SUPPORTED_VERSIONS,
    }))
}

fn key_dir_error(config: &Config) -> Option<String> {
    conf::check_key_dir(&config.key_dir).err()
}

fn add(nc: &NetConf, env: &CniEnv) -> Result<Value> {
    // Everything is validated before anything is touched.
    let config = Config::from_netconf(nc)?;
    let pod = conf::pod_info(nc, env)?;
    let prev = nc.prev_result.as_ref().ok_or_else(|| {
        Error::config(
            "ADD needs a prevResult: list trireme after the main plugin (bridge, ptp, flannel) in a conflist",
        )
    })?;
    let ifname = env.ifname();
    let attachment = result::pod_attachment(prev, ifname)?;
    conf::check_policy_dir(&config.policy_dir)?;
    if let Some(e) = key_dir_error(&config) {
        return Err(Error::Config(e));
    }
    let enforcer = conf::enforcer_binary(&config)?;
    if let Err(e) = conf::check_executable(&enforcer) {
        return Err(if config.enforcer_path.is_some() {
            Error::Config(e)
        } else {
            Error::NotAvailable(e)
        });
    }
    let id = state::attachment_id(env.container_id(), ifname);
    let socket = state::socket_path(&config.control_dir, &id);
    if socket.as_os_str().len() > state::MAX_SOCKET_PATH {
        return Err(Error::config(format!(
            "controlDir {} is too long: the socket path {} exceeds {} bytes",
            config.control_dir.display(),
            socket.display(),
            state::MAX_SOCKET_PATH
        )));
    }
    let ns_path = PathBuf::from(env.netns.as_deref().unwrap_or_default());
    if !netns::exists(&ns_path) {
        return Err(Error::Netns(format!(
            "CNI_NETNS {} is not a network namespace",
            ns_path.display()
        )));
    }
    if netns::interface_index(&ns_path, ifname)?.is_none() {
        return Err(Error::Netns(format!(
            "interface {ifname} from prevResult does not exist in {}",
            ns_path.display()
        )));
    }
    let state_path = state::state_file(&config.network_state_dir(), &id);
    let lock_path = state::lock_file(&config.network_state_dir(), &id);
    let lock = AttachmentLock::acquire(&lock_path)?;
    match state::load(&state_path) {
        Ok(Some(old)) => {
            if process::is_supervisor_of(old.supervisor_pid, &old.id) {
                return Err(Error::AlreadyAttached(id));
            }
            // A leftover of a crashed runtime: clear it before starting afresh.
            teardown(&old, Some(&ns_path), &state_path)?;
        }
        Ok(None) => {}
        Err(e) => return Err(e),
    }

    // From here on, every step is rolled back on failure.
    state::create_private_dir(&config.control_dir)?;
    let mut enforcer_args = vec![
        "--netns".to_string(),
        ns_path.display().to_string(),
        "--id".into(),
        id.clone(),
        "--namespace".into(),
        pod.namespace.clone(),
        "--pod".into(),
        pod.name.clone(),
        "--labels".into(),
        serde_json::to_string(&pod.labels).unwrap_or_default(),
        "--ports".into(),
        serde_json::to_string(&pod.ports).unwrap_or_default(),
        "--policy-dir".into(),
        config.policy_dir.display().to_string(),
        "--key-dir".into(),
        config.key_dir.display().to_string(),
        "--control-dir".into(),
        config.control_dir.display().to_string(),
        "--log-level".into(),
        config.log_level.clone(),
    ];
    if config.fail_open {
        enforcer_args.push("--fail-open".into());
    }
    if config.reject {
        enforcer_args.push("--reject".into());
    }
    if config.deny_node {
        enforcer_args.push("--deny-node".into());
    }
    if let Some(gw) = attachment.gateway {
        enforcer_args.push("--gateway".into());
        enforcer_args.push(gw.to_string());
    }
    let sup = SuperviseArgs {
        id: id.clone(),
        control_dir: config.control_dir.clone(),
        restart_delay_ms: config.restart_delay_ms,
        enforcer: enforcer.clone(),
        enforcer_args,
    };
    let mut st = State {
        id: id.clone(),
        container_id: env.container_id().to_string(),
        ifname: ifname.to_string(),
        network: config.name.clone(),
        netns: Some(ns_path.display().to_string()),
        supervisor_pid: 0,
        control_dir: config.control_dir.clone(),
        enforcer,
    };
    let started = Instant::now();
    let outcome = (|| -> Result<()> {
        // Stale files from an earlier crash would confuse readiness.
        state::remove_file(&st.socket())?;
        st.supervisor_pid = spawn_supervisor(&sup, &st.log_file())?;
        state::save(&state_path, &st)?;
        wait_ready(&st, Duration::from_millis(config.ready_timeout_ms), started)
    })();
    if let Err(e) = outcome {
        let rollback = teardown(&st, Some(&ns_path), &state_path)
            .and_then(|_| lock.remove())
            .err();
        return Err(e.with_rollback(rollback));
    }
    Ok(result::convert_result(prev, &config.cni_version))
}

fn spawn_supervisor(sup: &SuperviseArgs, log: &Path) -> Result<u32> {
    let exe =
        std::env::current_exe().map_err(|e| Error::io("cannot find the plugin's own binary", e))?;
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::io(format!("cannot open log {}", log.display()), e))?;
    let log_err = log_file
        .try_clone()
        .map_err(|e| Error::io("cannot duplicate the log file", e))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(sup.to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file))
        .stderr(Stdio::from(log_err))
        .current_dir("/");
    if std::env::var_os("PATH").is_none() {
        // The enforcer runs iptables-restore; runtimes usually pass PATH, but not all do.
        cmd.env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    }
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CNI_") {
            cmd.env_remove(k);
        }
    }
    // SAFETY: setsid is async-signal-safe. Detaches from the runtime's session.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| Error::io("cannot start the enforcer supervisor", e))?;
    Ok(child.id())
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(20);
    format!(
        "last lines of {}:\n{}",
        log.display(),
        lines[from..].join("\n")
    )
}

fn wait_ready(st: &State, timeout: Duration, started: Instant) -> Result<()> {
    let socket = st.socket();
    let mut last = String::from("the control socket does not exist yet");
    loop {
        if !process::is_alive(st.supervisor_pid) {
            return Err(Error::Enforcer {
                msg: "the supervisor exited before the enforcer became ready".into(),
                details: log_tail(&st.log_file()),
            });
        }
        if process::exists(&socket) {
            match control::status(&socket, Duration::from_secs(2), false) {
                Ok(r) if r.ready() => return Ok(()),
                Ok(r) => {
                    last = format!(
                        "status: rules_present={} queue_bound={}{}",
                        r.rules_present,
                        r.queue_bound,
                        r.rules_error.map(|e| format!(" ({e})")).unwrap_or_default()
                    )
                }
                Err(e) => last = e,
            }
        }
        if started.elapsed() >= timeout {
            return Err(Error::Enforcer {
                msg: format!(
                    "not ready within {} ms ({last}); see {}",
                    timeout.as_millis(),
                    st.log_file().display()
                ),
                details: log_tail(&st.log_file()),
            });
        }
        // Poll finely while the enforcer is expected to come up, then back off.
        let pause = if started.elapsed() < Duration::from_millis(500) {
            2
        } else {
            10
        };
        std::thread::sleep(Duration::from_millis(pause));
    }
}

/// Stops the supervisor and enforcer, removes leftover rules (when the namespace still
/// exists), the socket, pid file, log and state file. Keeps going after a failure and reports
/// all of them.
pub fn teardown(st: &State, netns_hint: Option<&Path>, state_path: &Path) -> Result<()> {
    let mut errs = Vec::new();
    if process::is_supervisor_of(st.supervisor_pid, &st.id) {
        let children = process::children(st.supervisor_pid);
        // The supervisor gives the enforcer 5 s to exit cleanly.
        if !process::terminate(st.supervisor_pid, Duration::from_secs(8)) {
            errs.push(Error::TryAgain(format!(
                "supervisor {} of {} does not exit",
                st.supervisor_pid, st.id
            )));
        }
        for c in children {
            if !process::terminate(c, Duration::from_secs(3)) {
                errs.push(Error::TryAgain(format!(
                    "enforcer {c} of {} does not exit",
                    st.id
                )));
            }
        }
    }
    // Enforcers without a live supervisor (e.g. the supervisor was killed).
    for c in process::enforcers_of(&st.id, &st.control_dir) {
        if !process::terminate(c, Duration::from_secs(5)) {
            errs.push(Error::TryAgain(format!(
                "enforcer {c} of {} does not exit",
                st.id
            )));
        }
    }
    let ns = netns_hint
        .map(Path::to_path_buf)
        .or_else(|| st.netns.as_ref().map(PathBuf::from));
    if let Some(ns) = ns.filter(|p| netns::exists(p)) {
        if let Err(e) = iptables::remove_all(&ns) {
            errs.push(e);
        }
    }
    for f in [
        st.socket(),
        st.pid_file(),
        st.log_file(),
        state_path.to_path_buf(),
    ] {
        if let Err(e) = state::remove_file(&f) {
            errs.push(e);
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(Error::Teardown(errs))
    }
}

/// DEL needs only the network name and the attachment; it works without netns, prevResult,
/// keys or policy.
fn lenient_config(nc: &NetConf) -> Result<Config> {
    Config::from_netconf(nc)
}

fn del(nc: &NetConf, env: &CniEnv) -> Result<()> {
    let config = lenient_config(nc)?;
    let id = state::attachment_id(env.container_id(), env.ifname());
    let state_path = state::state_file(&config.network_state_dir(), &id);
    let netns_path = env.netns.as_deref().map(Path::new);
    let lock = AttachmentLock::acquire(&state::lock_file(&config.network_state_dir(), &id))?;
    let done = match state::load(&state_path) {
        Ok(Some(st)) => teardown(&st, netns_path, &state_path),
        Ok(None) => {
            // Nothing recorded (already deleted, or ADD never finished). Still clear files an
            // interrupted ADD may have left.
            let pid_file = state::pid_file(&config.control_dir, &id);
            let pid = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            let st = State {
                id: id.clone(),
                container_id: env.container_id().to_string(),
                ifname: env.ifname().to_string(),
                network: config.name.clone(),
                netns: env.netns.clone(),
                supervisor_pid: pid,
                control_dir: config.control_dir.clone(),
                enforcer: PathBuf::new(),
            };
            teardown(&st, netns_path, &state_path)
        }
        Err(Error::Decode { .. }) => {
            // A corrupt state file must not make DEL fail forever.
            state::remove_file(&state_path)
        }
        Err(e) => Err(e),
    };
    done?;
    lock.remove()
}

fn check(nc: &NetConf, env: &CniEnv) -> Result<()> {
    let config = Config::from_netconf(nc)?;
    let id = state::attachment_id(env.container_id(), env.ifname());
    let state_path = state::state_file(&config.network_state_dir(), &id);
    let st = state::load(&state_path)?
        .ok_or_else(|| Error::Check(format!("no enforcer was started for attachment {id}")))?;
    if !process::is_supervisor_of(st.supervisor_pid, &st.id) {
        return Err(Error::Check(format!(
            "the supervisor of {id} (pid {}) is not running",
            st.supervisor_pid
        )));
    }
    let r = control::status(&st.socket(), Duration::from_secs(2), true)
        .map_err(|e| Error::Check(format!("the enforcer of {id} is not running: {e}")))?;
    if !r.rules_present {
        return Err(Error::Check(format!(
            "the rules of the enforcer of {id} are missing{}",
            r.rules_error.map(|e| format!(": {e}")).unwrap_or_default()
        )));
    }
    if !r.queue_bound {
        return Err(Error::Check(format!(
            "the enforcer of {id} has no queue bound"
        )));
    }
    Ok(())
}

fn status(nc: &NetConf, path: Option<&str>) -> Result<()> {
    let config = Config::from_netconf(nc)?;
    let mut problems = Vec::new();
    if let Some(e) = key_dir_error(&config) {
        problems.push(e);
    }
    if let Err(e) = conf::check_policy_dir(&config.policy_dir) {
        problems.push(e.to_string());
    }
    if conf::find_in_path(
        "iptables-restore",
        path.unwrap_or("/usr/sbin:/usr/bin:/sbin:/bin"),
    )
    .is_none()
    {
        problems.push("iptables-restore is not in PATH; install iptables".into());
    }
    match conf::enforcer_binary(&config) {
        Ok(p) => {
            if let Err(e) = conf::check_executable(&p) {
                problems.push(e);
            }
        }
        Err(e) => problems.push(e.to_string()),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::NotAvailable(problems.join("; ")))
    }
}

fn gc(nc: &NetConf) -> Result<()> {
    let config = Config::from_netconf(nc)?;
    let valid = nc.valid_attachments.clone().unwrap_or_default();
    let mut errs = Vec::new();
    for path in state::list(&config.network_state_dir())? {
        let id = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let lock_path = state::lock_file(&config.network_state_dir(), &id);
        // An attachment with an ADD or DEL in progress is left to that operation.
        let lock = match AttachmentLock::try_acquire(&lock_path) {
            Ok(Some(l)) => l,
            Ok(None) => continue,
            Err(e) => {
                errs.push(e);
                continue;
            }
        };
        match state::load(&path) {
            Ok(Some(st)) => {
                let keep = valid
                    .iter()
                    .any(|a| a.container_id == st.container_id && a.ifname == st.ifname);
                if !keep {
                    if let Err(e) = teardown(&st, None, &path).and_then(|_| lock.remove()) {
                        errs.push(e);
                    }
                }
            }
            Ok(None) => {
                if let Err(e) = lock.remove() {
                    errs.push(e);
                }
            }
            Err(Error::Decode { .. }) => {
                if let Err(e) = state::remove_file(&path).and_then(|_| lock.remove()) {
                    errs.push(e);
                }
            }
            Err(e) => errs.push(e),
        }
    }
    // Lock files whose attachment is gone (an interrupted ADD) and that nobody holds.
    for lock_path in state::list_ext(&config.network_state_dir(), "lock")? {
        if lock_path.with_extension("json").exists() {
            continue;
        }
        match AttachmentLock::try_acquire(&lock_path) {
            Ok(Some(l)) if !lock_path.with_extension("json").exists() => {
                if let Err(e) = l.remove() {
                    errs.push(e);
                }
            }
            Ok(_) => {}
            Err(e) => errs.push(e),
        }
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

    fn env(cmd: &'static str) -> impl Fn(&str) -> Option<String> {
        move |k| (k == "CNI_COMMAND").then(|| cmd.to_string())
    }

    #[test]
    fn version_answers_with_or_without_config() {
        let v = dispatch(b"", env("VERSION")).unwrap().unwrap();
        assert_eq!(v["cniVersion"], conf::CURRENT_VERSION);
        assert_eq!(v["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));
        let v = dispatch(br#"{"cniVersion":"0.4.0"}"#, env("VERSION"))
            .unwrap()
            .unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        let e = dispatch(br#"{"cniVersion":"0.2.0"}"#, env("VERSION")).unwrap_err();
        assert_eq!(e.code(), 1);
        assert_eq!(dispatch(b"garbage", env("VERSION")).unwrap_err().code(), 6);
    }

    #[test]
    fn errors_answer_in_the_config_version_when_supported() {
        assert_eq!(answer_version(br#"{"cniVersion":"0.4.0"}"#), "0.4.0");
        assert_eq!(
            answer_version(br#"{"cniVersion":"0.3.1"}"#),
            conf::CURRENT_VERSION
        );
        assert_eq!(answer_version(b"not json"), conf::CURRENT_VERSION);
    }

    #[test]
    fn status_and_gc_validate_the_config_first() {
        let e = dispatch(br#"{"name":"n"}"#, env("STATUS")).unwrap_err();
        assert_eq!(e.code(), 7);
        let e = dispatch(br#"{"cniVersion":"1.1.0"}"#, env("GC")).unwrap_err();
        assert_eq!(e.code(), 7);
    }
}
