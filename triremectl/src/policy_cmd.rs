//! `triremectl policy check|matrix`: NetworkPolicy verdicts from manifests on disk, with
//! the same engine the enforcer uses.

use clap::Subcommand;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use trireme_policy::{
    parse_protocol, resolve_named_port, Cluster, Decision, Engine, Identity, Peer, PodInfo,
    Protocol,
};

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Whether a connection from one pod to another is allowed, with the reason of each side
    /// (the source's egress, the destination's ingress). Exit status 0 for both verdicts.
    Check {
        /// Manifest file or directory (NetworkPolicy, Namespace, Pod, List); repeatable.
        #[arg(short = 'f', long = "filename", required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Source: NAMESPACE/POD from the manifests, or an IP address (a peer without
        /// identity, judged by ipBlock rules only).
        #[arg(long, value_name = "NS/POD|IP")]
        from: String,
        /// Destination: NAMESPACE/POD from the manifests, or an IP address.
        #[arg(long, value_name = "NS/POD|IP")]
        to: String,
        /// Destination port: a number, or a named port of the destination pod.
        #[arg(long)]
        port: String,
        /// TCP, UDP or SCTP.
        #[arg(long, default_value = "TCP")]
        protocol: String,
    },
    /// Reachability of every Pod to every Pod in the manifests: rows are sources, columns
    /// destinations, `.` allowed, `X` denied.
    Matrix {
        /// Manifest file or directory; repeatable.
        #[arg(short = 'f', long = "filename", required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Destination port.
        #[arg(long, default_value_t = 80)]
        port: u16,
        /// TCP, UDP or SCTP.
        #[arg(long, default_value = "TCP")]
        protocol: String,
        /// Print `{"port":80,"protocol":"TCP","allowed":{"x/a":{"x/b":true,...},...}}`.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a policy subcommand, printing to stdout; the error is for main to print (exit 1).
pub fn run(cmd: PolicyCmd) -> Result<(), String> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    run_to(cmd, &mut out)
}

fn run_to(cmd: PolicyCmd, out: &mut dyn Write) -> Result<(), String> {
    match cmd {
        PolicyCmd::Check {
            paths,
            from,
            to,
            port,
            protocol,
        } => {
            let proto = protocol_arg(&protocol)?;
            let cluster = load(&paths)?;
            let engine = cluster.engine();
            let text = check(&cluster, &engine, &from, &to, &port, proto)?;
            out.write_all(text.as_bytes()).map_err(|e| e.to_string())
        }
        PolicyCmd::Matrix {
            paths,
            port,
            protocol,
            json,
        } => {
            let proto = protocol_arg(&protocol)?;
            if port == 0 {
                return Err("--port must be 1-65535".into());
            }
            let cluster = load(&paths)?;
            if cluster.pods.is_empty() {
                return Err("no Pod objects found in the given paths".into());
            }
            let table = cluster.truth_table(&cluster.engine(), port, proto);
            let text = if json {
                table.to_json()
            } else {
                table.to_string()
            };
            writeln!(out, "{text}").map_err(|e| e.to_string())
        }
    }
}

fn protocol_arg(s: &str) -> Result<Protocol, String> {
    parse_protocol(s).ok_or_else(|| format!("unknown protocol {s:?} (expected TCP, UDP or SCTP)"))
}

fn load(paths: &[PathBuf]) -> Result<Cluster, String> {
    let cluster = Cluster::load_paths(paths).map_err(|e| e.to_string())?;
    for note in &cluster.ignored {
        eprintln!("note: {note}");
    }
    Ok(cluster)
}

/// One end of the checked connection.
enum End<'a> {
    Pod(&'a PodInfo, Identity),
    Ip(IpAddr),
}

impl End<'_> {
    fn peer(&self) -> Peer<'_> {
        match self {
            End::Pod(p, id) => Peer::Pod {
                identity: id,
                ip: p.ip,
            },
            End::Ip(ip) => Peer::External { ip: *ip },
        }
    }

    fn name(&self) -> String {
        match self {
            End::Pod(p, _) => format!("{}/{}", p.namespace, p.name),
            End::Ip(ip) => ip.to_string(),
        }
    }
}

fn end<'a>(cluster: &'a Cluster, arg: &str, flag: &str) -> Result<End<'a>, String> {
    if let Ok(ip) = arg.parse::<IpAddr>() {
        return Ok(End::Ip(ip));
    }
    let (ns, name) = arg
        .split_once('/')
        .ok_or_else(|| format!("{flag} {arg:?}: expected NAMESPACE/POD or an IP address"))?;
    let pod = cluster
        .pod(ns, name)
        .ok_or_else(|| format!("{flag} {arg:?}: no such Pod in the given paths"))?;
    Ok(End::Pod(pod, cluster.identity_of_pod(pod)))
}

fn check(
    cluster: &Cluster,
    engine: &Engine,
    from: &str,
    to: &str,
    port: &str,
    proto: Protocol,
) -> Result<String, String> {
    let src = end(cluster, from, "--from")?;
    let dst = end(cluster, to, "--to")?;
    let port_num = match port.parse::<u16>() {
        Ok(0) => return Err("--port must be 1-65535".into()),
        Ok(n) => n,
        Err(_) => match &dst {
            End::Pod(p, _) => resolve_named_port(&p.ports, port, proto).ok_or_else(|| {
                format!(
                    "--port {port:?}: pod {} has no {} port named {port:?}",
                    dst.name(),
                    proto
                )
            })?,
            End::Ip(_) => {
                return Err(format!(
                    "--port {port:?}: a named port needs a destination pod, not an IP address"
                ))
            }
        },
    };
    let pname = proto;
    // A peer without identity has no policy of its own: only the pod side is judged.
    let egress: Option<Decision> = match &src {
        End::Pod(_, id) => Some(engine.egress(id, &dst.peer(), port_num, proto)),
        End::Ip(_) => None,
    };
    let ingress: Option<Decision> = match &dst {
        End::Pod(_, id) => Some(engine.ingress(id, &src.peer(), port_num, proto)),
        End::Ip(_) => None,
    };
    let allowed =
        egress.as_ref().is_none_or(|d| d.allowed) && ingress.as_ref().is_none_or(|d| d.allowed);
    let mut s = String::new();
    s.push_str(if allowed { "allowed\n" } else { "denied\n" });
    let (sn, dn) = (src.name(), dst.name());
    let side = |d: &Decision, pod: &str| {
        format!(
            "{}: {}",
            if d.allowed { "allowed" } else { "denied" },
            d.reason.for_pod(pod)
        )
    };
    match &egress {
        Some(d) => s.push_str(&format!(
            "  egress  {sn} -> {dn}:{port_num}/{pname}: {}\n",
            side(d, &sn)
        )),
        None => s.push_str(&format!(
            "  egress  {sn}: not a pod, no egress policy applies\n"
        )),
    }
    match &ingress {
        Some(d) => s.push_str(&format!(
            "  ingress {dn} <- {sn} on {port_num}/{pname}: {}\n",
            side(d, &dn)
        )),
        None => s.push_str(&format!(
            "  ingress {dn}: not a pod, no ingress policy applies\n"
        )),
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conformance(case: &str) -> Vec<PathBuf> {
        let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/policies/conformance");
        vec![d.join("cluster.yaml"), d.join(case).join("policy.yaml")]
    }

    fn run_check(case: &str, from: &str, to: &str, port: &str) -> Result<String, String> {
        let mut out = Vec::new();
        run_to(
            PolicyCmd::Check {
                paths: conformance(case),
                from: from.into(),
                to: to.into(),
                port: port.into(),
                protocol: "tcp".into(),
            },
            &mut out,
        )?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn check_prints_verdict_and_both_reasons() {
        let s = run_check("allow-from-pod-b", "x/b", "x/a", "80").unwrap();
        assert_eq!(
            s,
            "allowed\n  egress  x/b -> x/a:80/TCP: allowed: no policy selects x/b for egress (allowed by default)\n  ingress x/a <- x/b on 80/TCP: allowed: allowed by x/allow-b ingress rule 0\n"
        );
        let s = run_check("allow-from-pod-b", "y/b", "x/a", "80").unwrap();
        assert!(s.starts_with("denied\n"), "{s}");
        assert!(
            s.contains("denied: isolated by x/allow-b; no rule matched"),
            "{s}"
        );
    }

    #[test]
    fn check_resolves_named_ports_on_the_destination() {
        let s = run_check("named-port-ingress", "y/a", "x/b", "serve-81-tcp").unwrap();
        assert!(s.starts_with("allowed\n") && s.contains(":81/TCP"), "{s}");
        let s = run_check("named-port-ingress", "y/a", "x/b", "serve-80-tcp").unwrap();
        assert!(s.starts_with("denied\n"), "{s}");
        let e = run_check("named-port-ingress", "y/a", "x/b", "nope").unwrap_err();
        assert!(e.contains("no TCP port named"), "{e}");
    }

    #[test]
    fn check_accepts_external_addresses() {
        let s = run_check("ipblock-except", "10.244.1.11", "z/c", "80").unwrap();
        assert!(s.starts_with("allowed\n"), "{s}");
        let s = run_check("ipblock-except", "10.244.1.12", "z/c", "80").unwrap();
        assert!(s.starts_with("denied\n"), "{s}");
        let s = run_check("ipblock-except", "x/a", "10.244.2.11", "80").unwrap();
        assert!(s.starts_with("denied\n"), "{s}");
    }

    #[test]
    fn check_rejects_bad_arguments() {
        for (from, to, port, want) in [
            ("x/zz", "x/a", "80", "no such Pod"),
            ("xa", "x/a", "80", "expected NAMESPACE/POD"),
            ("x/a", "x/b", "0", "1-65535"),
            ("x/a", "10.0.0.1", "http", "needs a destination pod"),
        ] {
            let e = run_check("allow-from-pod-b", from, to, port).unwrap_err();
            assert!(e.contains(want), "{from} {to} {port}: {e}");
        }
        let mut out = Vec::new();
        let e = run_to(
            PolicyCmd::Matrix {
                paths: conformance("allow-from-pod-b"),
                port: 80,
                protocol: "ICMP".into(),
                json: false,
            },
            &mut out,
        )
        .unwrap_err();
        assert!(e.contains("unknown protocol"), "{e}");
    }
}
