//! `trireme-sandbox`: a sandbox cluster of network-namespace pods on this machine, with the
//! real bridge plugin and trireme chained, the policies of a directory applied, and the
//! expected reachability matrix (policy engine) beside the one measured with real TCP.
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
each port), then removes everything. --keep leaves the cluster running and prints the
command that removes it. Exit status: 0 when observed = expected, 1 when not, 2 on errors.";

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

    let mut all_ok = true;
    for port in c.ports() {
        let cmp = c
            .probe(port, false)
            .map_err(|e| format!("probe port {port}: {e}"))?;
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
        let pods: Vec<(String, String)> = c
            .pods
            .iter()
            .map(|p| (p.key(), p.netns.name().to_string()))
            .collect();
        let state = c.keep(pids).map_err(|e| format!("keep: {e}"))?;
        std::fs::create_dir_all(REGISTRY).map_err(|e| format!("create {REGISTRY}: {e}"))?;
        std::fs::write(
            Path::new(REGISTRY).join(format!("{name}.json")),
            serde_json::json!({"state": state}).to_string(),
        )
        .map_err(|e| format!("record the cluster in {REGISTRY}: {e}"))?;
        println!("\nkept: cluster {name} (state in {})", state.display());
        for (k, ns) in pods {
            println!("  {k:<24} ip netns exec {ns} <command>");
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

    #[test]
    fn labels_print_sorted() {
        let l = BTreeMap::from([
            ("tier".to_string(), "web".to_string()),
            ("app".to_string(), "frontend".to_string()),
        ]);
        assert_eq!(labels(&l), "app=frontend,tier=web");
    }
}
