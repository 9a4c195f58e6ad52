//! `trireme-sandbox`: a sandbox cluster of network-namespace pods on this machine, with the
//! real bridge plugin and trireme chained, the policies of a directory applied, and the
//! expected reachability matrix (policy engine) beside the one measured with real TCP, and
//! why some connections were denied: the enforcers' own decision lines from their logs.
//!
//! ```text
//! trireme-sandbox up [--policies PATH ...] [--keep]  create, apply, probe, print; clean up
//! trireme-sandbox down --name NAME | --state FILE  remove a cluster kept with --keep
//! trireme-sandbox list                             clusters kept on this machine
//! trireme-sandbox serve --port P [--port P ...]    TCP echo servers (the pods of a kept cluster)
//! ```

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;
use trireme_conformance::cluster::{self, Cluster, ClusterSpec};
use trireme_conformance::matrix;

/// Where kept clusters are recorded: `<name>.json` holds the path of the state file.
const REGISTRY: &str = "/run/trireme-sandbox";

const USAGE: &str = "usage:
  trireme-sandbox up [--policies PATH ...] [--keep]
  trireme-sandbox down (--name NAME | --state FILE)
  trireme-sandbox list
  trireme-sandbox serve --port P [--port P ...]

up: creates a sandbox cluster of network-namespace pods from the Namespace and Pod objects
in the files and directories given with --policies (default examples/policies/demo),
attached with the bridge plugin and trireme chained, applies the NetworkPolicies in them
once the pods run, prints the expected reachability matrix (the
policy engine) and the observed one (real TCP connections from every pod to every pod on
each port), the enforcers' own decision lines for a few denied pairs and one allowed pair
(why), then removes everything. --keep leaves the cluster running and prints where the
enforcers' status and logs are and the command that removes it. Exit status: 0 when observed = expected, 1 when not, 2 on errors.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("up") => up(&args[1..]),
        Some("down") => down(&args[1..]).map(|_| ExitCode::SUCCESS),
        Some("list") => list().map(|_| ExitCode::SUCCESS),
        Some("serve") => serve(&args[1..]),
        Some("-h") | Some("--help") | Some("help") => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        _ => Err(format!("unknown command\n{USAGE}")),
    };
    match res {
        Ok(c) => c,
        Err(e) => {
            eprintln!("trireme-sandbox: {e}");
            ExitCode::from(2)
        }
    }
}

fn need_root() -> Result<(), String> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err("must run as root (network namespaces, bridges, iptables, NFQUEUE): sudo trireme-sandbox ...".into())
    }
}

/// `--flag VALUE` pairs and bare `--switch`es.
fn parse_flags(
    args: &[String],
    with_value: &[&str],
    switches: &[&str],
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if with_value.contains(&a.as_str()) {
            let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
            out.push((a.clone(), v.clone()));
        } else if switches.contains(&a.as_str()) {
            out.push((a.clone(), String::new()));
        } else {
            return Err(format!("unexpected argument {a:?}\n{USAGE}"));
        }
    }
    Ok(out)
}

fn up(args: &[String]) -> Result<ExitCode, String> {
    let flags = parse_flags(args, &["--policies"], &["--keep"])?;
    need_root()?;
    let mut paths: Vec<PathBuf> = flags
        .iter()
        .filter(|(k, _)| k == "--policies")
        .map(|(_, v)| PathBuf::from(v))
        .collect();
    if paths.is_empty() {
        paths.push(PathBuf::from("examples/policies/demo"));
    }
    let dir = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let keep = flags.iter().any(|(k, _)| k == "--keep");
    let manifests =
        trireme_policy::Cluster::load_paths(&paths).map_err(|e| format!("policies {dir}: {e}"))?;
    if manifests.pods.is_empty() {
        return Err(format!(
            "{} has no Pod objects: the sandbox creates one pod per Pod (see examples/policies/demo/cluster.yaml)",
            dir
        ));
    }
    let policies = serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": manifests.policies.iter().map(|p| serde_json::to_value(p).expect("JSON")).collect::<Vec<_>>(),
    });

    println!(
        "creating a sandbox cluster: {} namespaces, {} pods (bridge + host-local + trireme)...",
        manifests.namespaces.len(),
        manifests.pods.len()
    );
    let t0 = std::time::Instant::now();
    let mut c = Cluster::new(ClusterSpec::from_manifests(&manifests))
        .map_err(|e| format!("create the cluster: {e}"))?;
    println!(
        "cluster {} ready in {:.1} s: bridge {}, pods in {}/24, Service VIPs, keys by a fresh CA",
        c.name,
        t0.elapsed().as_secs_f64(),
        c.bridge,
        c.subnet
    );
    for p in &c.pods {
        let ports: Vec<String> = p
            .ports
            .iter()
            .map(|np| format!("{}:{}", np.name, np.port))
            .collect();
        println!(
            "  {:<24} {:<15} VIP {:<15} {}  serves {}",
            p.key(),
            p.ip,
            p.vip.map(|v| v.to_string()).unwrap_or_default(),
            labels(&p.labels),
            if ports.is_empty() {
                "nothing".to_string()
            } else {
                ports.join(", ")
            }
        );
    }
    let applied = c
        .apply_policies(&policies.to_string())
        .map_err(|e| format!("apply the policies: {e}"))?;
    println!(
        "applied {} NetworkPolicies from {} (every enforcer had them within {:.2} s)",
        manifests.policies.len(),
        dir,
        applied.as_secs_f64()
    );

    // Where each enforcer's log stands now that the policies are in force: the "why"
    // section reads only the decisions taken after this point.
    let logs: Vec<PodLog> = c
        .pods
        .iter()
        .filter(|p| p.attached)
        .map(|p| {
            let path = log_path(&c, p);
            let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            PodLog {
                key: p.key(),
                ip: p.ip.to_string(),
                path,
                offset,
            }
        })
        .collect();

    let mut all_ok = true;
    let mut pairs: Vec<Pair> = Vec::new();
    for port in c.ports() {
        let cmp = c
            .probe(port, false)
            .map_err(|e| format!("probe port {port}: {e}"))?;
        for f in &cmp.observed.pods {
            for t in &cmp.columns {
                if let (false, Some(v)) = (f == t, cmp.observed.get(f, t)) {
                    pairs.push(Pair {
                        from: f.clone(),
                        to: t.clone(),
                        port,
                        allowed: v,
                    });
                }
            }
        }
        println!("\n== port {port}/TCP (rows: from, columns: to; . connects, X blocked)");
        println!("expected (policy engine):");
        print!(
            "{}",
            matrix::render(&cmp.expected.pods, &cmp.columns, |f, t| {
                if f == t {
                    "-".into()
                } else {
                    mark(cmp.expected.get(f, t))
                }
            })
        );
        let mis = cmp.mismatches();
        println!(
            "observed (real TCP connections){}:",
            if mis.is_empty() { "" } else { ", * = differs" }
        );
        print!(
            "{}",
            matrix::render(&cmp.observed.pods, &cmp.columns, |f, t| {
                if f == t {
                    "-".into()
                } else if mis.iter().any(|(a, b)| a == f && b == t) {
                    format!("{}*", mark(cmp.observed.get(f, t)))
                } else {
                    mark(cmp.observed.get(f, t))
                }
            })
        );
        let vip = c
            .probe(port, true)
            .map_err(|e| format!("probe port {port} via VIPs: {e}"))?;
        println!(
            "through the Service VIPs: {}",
            if vip.passed() {
                "the same".to_string()
            } else {
                format!("{} differences\n{}", vip.mismatches().len(), vip.render())
            }
        );
        all_ok &= cmp.passed() && vip.passed();
    }
    if let Ok(Some(n)) = c.invalid_drops() {
        println!("\nconntrack INVALID drops on the bridge (kube-proxy's rule): {n}");
    }
    print!("\n{}", why(&logs, &pairs));
    println!(
        "\nresult: observed {} expected",
        if all_ok { "=" } else { "!=" }
    );

    if keep {
        c.stop_servers();
        let exe = std::env::current_exe().map_err(|e| format!("own binary: {e}"))?;
        let mut pids = Vec::new();
        for p in &c.pods {
            if p.ports.is_empty() {
                continue;
            }
            let mut cmd = Command::new(&exe);
            cmd.arg("serve");
            for np in &p.ports {
                cmd.args(["--port", &np.port.to_string()]);
            }
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0);
            let mut cmd = trireme_conformance::sandbox::in_netns(p.netns.path(), cmd)
                .map_err(|e| format!("enter {}: {e}", p.key()))?;
            let child = cmd
                .spawn()
                .map_err(|e| format!("start the servers of {}: {e}", p.key()))?;
            pids.push(child.id());
        }
        let name = c.name.clone();
        let control = c.control_dir();
        let pods: Vec<(String, String, PathBuf)> = c
            .pods
            .iter()
            .map(|p| (p.key(), p.netns.name().to_string(), log_path(&c, p)))
            .collect();
        let state = c.keep(pids).map_err(|e| format!("keep: {e}"))?;
        std::fs::create_dir_all(REGISTRY).map_err(|e| format!("create {REGISTRY}: {e}"))?;
        std::fs::write(
            Path::new(REGISTRY).join(format!("{name}.json")),
            serde_json::json!({"state": state}).to_string(),
        )
        .map_err(|e| format!("record the cluster in {REGISTRY}: {e}"))?;
        println!("\nkept: cluster {name} (state in {})", state.display());
        for (k, ns, _) in &pods {
            println!("  {k:<24} ip netns exec {ns} <command>");
        }
        let ctl = exe
            .parent()
            .map(|d| d.join("triremectl"))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "triremectl".into());
        println!("look yourself:");
        println!("  {ctl} status --control-dir {}", control.display());
        println!("  the enforcers' logs, one JSON line per connection decision (target trireme::decision):");
        for (k, _, log) in &pods {
            println!("  {k:<24} {}", log.display());
        }
        println!("remove it with: trireme-sandbox down --name {name}");
    } else {
        drop(c);
        println!("cleaned up: pods deleted, namespaces, bridge, rules and keys removed");
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// How many denied examples the "why" section shows at most (one per distinct reason).
const WHY_DENIED: usize = 5;

/// A pod's enforcer log and the byte offset it had when the policies were in force.
struct PodLog {
    key: String,
    ip: String,
    path: PathBuf,
    offset: u64,
}

/// The enforcer log of a pod: `<controlDir>/<containerID>-<ifname>.log`, beside its socket.
fn log_path(c: &Cluster, p: &cluster::ClusterPod) -> PathBuf {
    c.control_dir()
        .join(format!("{}-{}.log", p.rc.container_id, p.rc.ifname))
}

/// One observed connection: `from` -> `to`:`port`, connected or not.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pair {
    from: String,
    to: String,
    port: u16,
    allowed: bool,
}

/// One `trireme::decision` line of an enforcer log (docs/enforcer.md, Logs).
#[derive(Debug, Clone, PartialEq, Eq)]
struct DecisionLine {
    allowed: bool,
    direction: String,
    peer: String,
    peer_namespace: String,
    peer_labels: String,
    port: u16,
    reason: String,
}

/// The decision in a log line; `None` for any other line (other targets, the
/// supervisor's own lines, text format, a line cut short).
fn parse_decision(line: &str) -> Option<DecisionLine> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v.get("target")?.as_str()? != "trireme::decision" {
        return None;
    }
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let allowed = match text("decision")?.as_str() {
        "allow" => true,
        "deny" => false,
        _ => return None,
    };
    Some(DecisionLine {
        allowed,
        direction: text("direction")?,
        peer: text("peer")?,
        peer_namespace: text("peer_namespace").unwrap_or_else(|| "-".into()),
        peer_labels: text("peer_labels").unwrap_or_else(|| "-".into()),
        port: u16::try_from(v.get("port")?.as_u64()?).ok()?,
        reason: text("reason").unwrap_or_default(),
    })
}

/// The decisions in a log's text.
fn parse_decisions(text: &str) -> Vec<DecisionLine> {
    text.lines().filter_map(parse_decision).collect()
}

/// Where a decision was taken: at the server (ingress) or at the client (egress).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

/// The enforcers' decision on `client_ip` -> `server_ip`:`port` with the verdict
/// `allowed`: the server's ingress line (peer = the client) first, else the client's
/// egress line (peer = the server; with a token that is the server's own address). The
/// first matching line of a log wins: the probe at the pod IP comes before the one through
/// the Service VIP.
fn find_decision<'a>(
    client: &'a [DecisionLine],
    server: &'a [DecisionLine],
    client_ip: &str,
    server_ip: &str,
    port: u16,
    allowed: bool,
) -> Option<(Side, &'a DecisionLine)> {
    let find = |lines: &'a [DecisionLine], direction: &str, peer: &str| {
        lines.iter().find(|d| {
            d.allowed == allowed && d.direction == direction && d.peer == peer && d.port == port
        })
    };
    find(server, "ingress", client_ip)
        .map(|d| (Side::Server, d))
        .or_else(|| find(client, "egress", server_ip).map(|d| (Side::Client, d)))
}

/// The examples to explain: denied pairs, one per distinct reason (a pair without a
/// decision line counts as one more reason), at most `max`; then the first allowed pair,
/// preferably one with a decision line.
fn pick_examples<T: Clone>(
    pairs: &[Pair],
    lookup: impl Fn(&Pair) -> Option<T>,
    reason: impl Fn(&T) -> String,
    max: usize,
) -> Vec<(Pair, Option<T>)> {
    let mut out: Vec<(Pair, Option<T>)> = Vec::new();
    let mut seen: Vec<Option<String>> = Vec::new();
    for p in pairs.iter().filter(|p| !p.allowed) {
        if out.len() >= max {
            break;
        }
        let found = lookup(p);
        let key = found.as_ref().map(&reason);
        if !seen.contains(&key) {
            seen.push(key);
            out.push((p.clone(), found));
        }
    }
    let mut allowed = pairs.iter().filter(|p| p.allowed);
    let first = allowed.clone().next();
    if let Some(ex) = allowed
        .find_map(|p| lookup(p).map(|d| (p.clone(), Some(d))))
        .or_else(|| first.map(|p| (p.clone(), None)))
    {
        out.push(ex);
    }
    out
}

/// One example: `from -> to:port  denied at POD (direction): reason`, then the line's
/// peer, identity and port.
fn explain(p: &Pair, found: Option<(&str, &DecisionLine)>, logs: &str) -> String {
    let verdict = if p.allowed { "allowed" } else { "denied" };
    let head = format!("{} -> {}:{}", p.from, p.to, p.port);
    match found {
        Some((at, d)) => {
            let identity = if d.peer_namespace == "-" {
                "no identity (judged by address)".to_string()
            } else {
                format!("identity {}/{{{}}}", d.peer_namespace, d.peer_labels)
            };
            format!(
                "{head}  {verdict} at {at} ({}): {}\n    peer {} ({identity}), port {}\n",
                d.direction, d.reason, d.peer, d.port
            )
        }
        None => format!("{head}  {verdict}; no decision line for it found in {logs}\n"),
    }
}

/// The "why" section: for a few denied pairs and one allowed pair, the decision line of
/// the enforcer that decided, read from the real logs. Never fails: a log that cannot be
/// read or a line not found is said so.
fn why(logs: &[PodLog], pairs: &[Pair]) -> String {
    let mut out = String::from(
        "== why: the enforcers' own decision lines for some connections (from their logs)\n",
    );
    let mut lines: BTreeMap<&str, Vec<DecisionLine>> = BTreeMap::new();
    for l in logs {
        match read_from(&l.path, l.offset) {
            Ok(text) => {
                lines.insert(&l.key, parse_decisions(&text));
            }
            Err(e) => out.push_str(&format!("cannot read the log of {}: {e}\n", l.key)),
        }
    }
    let by_key = |k: &str| logs.iter().find(|l| l.key == k);
    let none: Vec<DecisionLine> = Vec::new();
    let lookup = |p: &Pair| -> Option<(Side, DecisionLine)> {
        let (cl, sv) = (by_key(&p.from)?, by_key(&p.to)?);
        find_decision(
            lines.get(cl.key.as_str()).unwrap_or(&none),
            lines.get(sv.key.as_str()).unwrap_or(&none),
            &cl.ip,
            &sv.ip,
            p.port,
            p.allowed,
        )
        .map(|(s, d)| (s, d.clone()))
    };
    let examples = pick_examples(pairs, lookup, |(_, d)| d.reason.clone(), WHY_DENIED);
    if examples.is_empty() {
        out.push_str("no connections were probed\n");
    }
    for (p, found) in &examples {
        let at = |s: &Side| match s {
            Side::Server => p.to.as_str(),
            Side::Client => p.from.as_str(),
        };
        let paths: Vec<String> = [&p.to, &p.from]
            .iter()
            .filter_map(|k| by_key(k).map(|l| l.path.display().to_string()))
            .collect();
        out.push_str(&explain(
            p,
            found.as_ref().map(|(s, d)| (at(s), d)),
            &paths.join(" or "),
        ));
    }
    out
}

/// A file's text from byte `offset` on (lossy UTF-8: a line cut mid-character is skipped
/// by the JSON parse anyway).
fn read_from(path: &Path, offset: u64) -> Result<String, String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn mark(v: Option<bool>) -> String {
    match v {
        Some(true) => ".".into(),
        Some(false) => "X".into(),
        None => "?".into(),
    }
}

fn labels(l: &BTreeMap<String, String>) -> String {
    let v: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
    v.join(",")
}

fn down(args: &[String]) -> Result<(), String> {
    let flags = parse_flags(args, &["--name", "--state"], &[])?;
    need_root()?;
    let (state, record) = match flags.first() {
        Some((k, v)) if k == "--state" => (PathBuf::from(v), None),
        Some((k, name)) if k == "--name" => {
            let rec = Path::new(REGISTRY).join(format!("{name}.json"));
            let text = std::fs::read(&rec).map_err(|e| {
                format!(
                    "no kept cluster {name:?} ({}: {e}); `trireme-sandbox list` shows them",
                    rec.display()
                )
            })?;
            let v: serde_json::Value =
                serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", rec.display()))?;
            let s = v["state"]
                .as_str()
                .ok_or_else(|| format!("{}: no state path", rec.display()))?;
            (PathBuf::from(s), Some(rec))
        }
        _ => return Err(format!("down needs --name NAME or --state FILE\n{USAGE}")),
    };
    cluster::teardown_kept(&state).map_err(|e| e.to_string())?;
    if let Some(rec) = record {
        let _ = std::fs::remove_file(rec);
    } else if let Ok(rd) = std::fs::read_dir(REGISTRY) {
        // Forget any record pointing at this state file.
        for e in rd.flatten() {
            let points_here = std::fs::read_to_string(e.path())
                .is_ok_and(|t| t.contains(&state.display().to_string()));
            if points_here {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    println!("removed");
    Ok(())
}

fn list() -> Result<(), String> {
    let Ok(rd) = std::fs::read_dir(REGISTRY) else {
        println!("no kept clusters");
        return Ok(());
    };
    let mut n = 0;
    for e in rd.flatten() {
        let name = e
            .file_name()
            .to_string_lossy()
            .trim_end_matches(".json")
            .to_string();
        let state = std::fs::read_to_string(e.path()).unwrap_or_default();
        println!("{name}\t{state}");
        n += 1;
    }
    if n == 0 {
        println!("no kept clusters");
    }
    Ok(())
}

fn serve(args: &[String]) -> Result<ExitCode, String> {
    let flags = parse_flags(args, &["--port"], &[])?;
    let ports: Vec<u16> = flags
        .iter()
        .map(|(_, v)| v.parse().map_err(|_| format!("bad port {v:?}")))
        .collect::<Result<_, _>>()?;
    if ports.is_empty() {
        return Err("serve needs at least one --port".into());
    }
    let mut servers = Vec::new();
    for p in ports {
        let l = std::net::TcpListener::bind(("0.0.0.0", p)).map_err(|e| format!(":{p}: {e}"))?;
        servers.push(std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut c = conn;
                    let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
                    let mut r = match c.try_clone() {
                        Ok(r) => r,
                        Err(_) => return,
                    };
                    let _ = std::io::copy(&mut r, &mut c);
                });
            }
        }));
    }
    for s in servers {
        let _ = s.join();
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn flags_with_values_and_switches() {
        let f = parse_flags(
            &s(&["--policies", "d1", "--keep", "--policies", "d2"]),
            &["--policies"],
            &["--keep"],
        )
        .unwrap();
        assert_eq!(
            f,
            vec![
                ("--policies".to_string(), "d1".to_string()),
                ("--keep".to_string(), String::new()),
                ("--policies".to_string(), "d2".to_string()),
            ]
        );
    }

    #[test]
    fn bad_flags_are_errors() {
        assert!(parse_flags(&s(&["--policies"]), &["--policies"], &[])
            .unwrap_err()
            .contains("needs a value"));
        assert!(parse_flags(&s(&["--nope"]), &["--policies"], &["--keep"])
            .unwrap_err()
            .contains("unexpected argument"));
    }

    const DENY_DB: &str = r#"{"timestamp":"2026-12-04T17:00:00Z","level":"INFO","message":"deny ingress","decision":"deny","direction":"ingress","peer":"10.0.0.2","peer_namespace":"shop","peer_labels":"app=frontend,tier=web","port":5432,"reason":"isolated by shop/db; no rule matched","target":"trireme::decision"}"#;

    fn line(allowed: bool, direction: &str, peer: &str, port: u16, reason: &str) -> DecisionLine {
        DecisionLine {
            allowed,
            direction: direction.into(),
            peer: peer.into(),
            peer_namespace: "shop".into(),
            peer_labels: "app=x".into(),
            port,
            reason: reason.into(),
        }
    }

    fn pair(from: &str, to: &str, port: u16, allowed: bool) -> Pair {
        Pair {
            from: from.into(),
            to: to.into(),
            port,
            allowed,
        }
    }

    #[test]
    fn decision_lines_are_parsed_and_other_lines_skipped() {
        let text = format!(
            "1764867600.000 trireme-supervisor[12]: enforcer started\n\
             {{\"level\":\"INFO\",\"message\":\"policy loaded\",\"target\":\"trireme_enforcer\"}}\n\
             {DENY_DB}\n\
             {{\"decision\":\"deny\",\"direction\":\"ingress\",\"pe"
        );
        let d = parse_decisions(&text);
        assert_eq!(
            d,
            vec![DecisionLine {
                allowed: false,
                direction: "ingress".into(),
                peer: "10.0.0.2".into(),
                peer_namespace: "shop".into(),
                peer_labels: "app=frontend,tier=web".into(),
                port: 5432,
                reason: "isolated by shop/db; no rule matched".into(),
            }]
        );
        assert_eq!(
            parse_decision(&DENY_DB.replace("\"deny\"", "\"maybe\"")),
            None
        );
    }

    #[test]
    fn the_server_ingress_line_is_found_by_client_address_and_port() {
        let server = vec![
            line(false, "ingress", "10.0.0.3", 5432, "other client"),
            line(false, "ingress", "10.0.0.2", 80, "other port"),
            line(true, "ingress", "10.0.0.2", 5432, "allowed"),
            line(false, "ingress", "10.0.0.2", 5432, "first"),
            line(false, "ingress", "10.0.0.2", 5432, "later, through the VIP"),
        ];
        let (side, d) = find_decision(&[], &server, "10.0.0.2", "10.0.0.9", 5432, false).unwrap();
        assert_eq!((side, d.reason.as_str()), (Side::Server, "first"));
        let (_, d) = find_decision(&[], &server, "10.0.0.2", "10.0.0.9", 5432, true).unwrap();
        assert_eq!(d.reason, "allowed");
        assert!(find_decision(&[], &server, "10.0.0.4", "10.0.0.9", 5432, false).is_none());
    }

    #[test]
    fn the_client_egress_line_is_found_by_server_address_when_the_server_has_none() {
        let client = vec![
            line(false, "ingress", "10.0.0.9", 5432, "wrong direction"),
            line(false, "egress", "10.0.0.9", 5432, "egress denied"),
        ];
        let (side, d) = find_decision(&client, &[], "10.0.0.2", "10.0.0.9", 5432, false).unwrap();
        assert_eq!((side, d.reason.as_str()), (Side::Client, "egress denied"));
    }

    #[test]
    fn examples_are_one_per_reason_capped_then_one_allowed() {
        let pairs = vec![
            pair("a", "b", 80, false),
            pair("a", "c", 80, true),
            pair("c", "b", 80, false),
            pair("a", "d", 80, false),
            pair("d", "b", 80, false),
            pair("b", "a", 80, true),
        ];
        // b denies everything for one reason; d's line is missing; c -> a has no line.
        let lookup = |p: &Pair| -> Option<String> {
            match (p.to.as_str(), p.allowed) {
                ("b", false) => Some("isolated by b".into()),
                ("a", true) => Some("allowed by a".into()),
                _ => None,
            }
        };
        let ex = pick_examples(&pairs, lookup, |r| r.clone(), 5);
        let got: Vec<(String, Option<String>)> = ex
            .iter()
            .map(|(p, r)| (format!("{}->{}", p.from, p.to), r.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a->b".to_string(), Some("isolated by b".to_string())),
                ("a->d".to_string(), None),
                ("b->a".to_string(), Some("allowed by a".to_string())),
            ]
        );
        let capped = pick_examples(&pairs, lookup, |r| r.clone(), 1);
        assert_eq!(capped.len(), 2);
        assert!(!capped[0].0.allowed && capped[1].0.allowed);
        // No allowed line anywhere: the first allowed pair, said to be without a line.
        let ex = pick_examples(&pairs, |_: &Pair| None::<String>, |r| r.clone(), 5);
        assert_eq!(ex.last().unwrap(), &(pair("a", "c", 80, true), None));
    }

    #[test]
    fn an_example_prints_where_why_and_who_or_that_no_line_was_found() {
        let d = parse_decision(DENY_DB).unwrap();
        let p = pair("shop/frontend", "shop/db", 5432, false);
        assert_eq!(
            explain(&p, Some(("shop/db", &d)), "x.log"),
            "shop/frontend -> shop/db:5432  denied at shop/db (ingress): isolated by shop/db; no rule matched\n    peer 10.0.0.2 (identity shop/{app=frontend,tier=web}), port 5432\n"
        );
        assert_eq!(
            explain(&p, None, "db.log or frontend.log"),
            "shop/frontend -> shop/db:5432  denied; no decision line for it found in db.log or frontend.log\n"
        );
    }

    #[test]
    fn the_why_section_reads_logs_from_the_offset_and_survives_a_missing_log() {
        let dir = std::env::temp_dir().join(format!("trireme-sandbox-why-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        struct Rm(PathBuf);
        impl Drop for Rm {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _rm = Rm(dir.clone());
        let before = DENY_DB.replace("isolated by shop/db", "before the policies");
        let db_log = dir.join("db.log");
        std::fs::write(&db_log, format!("{before}\n{DENY_DB}\n")).unwrap();
        let logs = vec![
            PodLog {
                key: "shop/frontend".into(),
                ip: "10.0.0.2".into(),
                path: dir.join("missing.log"),
                offset: 0,
            },
            PodLog {
                key: "shop/db".into(),
                ip: "10.0.0.9".into(),
                path: db_log,
                offset: before.len() as u64 + 1,
            },
        ];
        let out = why(
            &logs,
            &[
                pair("shop/frontend", "shop/db", 5432, false),
                pair("shop/db", "shop/frontend", 80, true),
            ],
        );
        assert!(
            out.contains("cannot read the log of shop/frontend"),
            "{out}"
        );
        assert!(out.contains("shop/frontend -> shop/db:5432  denied at shop/db (ingress): isolated by shop/db; no rule matched"), "{out}");
        assert!(!out.contains("before the policies"), "{out}");
        assert!(
            out.contains("shop/db -> shop/frontend:80  allowed; no decision line"),
            "{out}"
        );
    }

    #[test]
    fn labels_print_sorted() {
        let l = BTreeMap::from([
            ("tier".to_string(), "web".to_string()),
            ("app".to_string(), "frontend".to_string()),
        ]);
        assert_eq!(labels(&l), "app=frontend,tier=web");
    }
}
