//! `triremectl status` and `triremectl metrics`: ask every enforcer on this node (every
//! `<control-dir>/*.sock`) over its control socket.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use trireme_enforcer::control::{self, Status};

/// One enforcer's answer (or why there was none).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Entry {
    pub socket: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn collect(control_dir: &Path) -> Result<Vec<Entry>, String> {
    let sockets = control::list_sockets(control_dir).map_err(|e| e.to_string())?;
    Ok(sockets
        .into_iter()
        .map(|socket| match control::status(&socket) {
            Ok(s) => Entry {
                socket,
                status: Some(s),
                error: None,
            },
            Err(e) => Entry {
                socket,
                status: None,
                error: Some(e.to_string()),
            },
        })
        .collect())
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "ok"
    } else {
        "MISSING"
    }
}

/// The status table (pure): one row per enforcer.
pub fn render_table(entries: &[Entry]) -> String {
    let header = [
        "ID", "POD", "PID", "RULES", "QUEUE", "FLOWS", "ALLOWED", "DENIED", "POLICY",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for e in entries {
        match &e.status {
            Some(s) => {
                let c = &s.counters;
                rows.push(vec![
                    s.id.clone(),
                    if s.pod.is_empty() {
                        s.namespace.clone()
                    } else {
                        format!("{}/{}", s.namespace, s.pod)
                    },
                    s.pid.to_string(),
                    yes_no(s.rules_present).to_string(),
                    if s.queue_bound {
                        format!("{} bound", s.queue)
                    } else {
                        format!("{} UNBOUND", s.queue)
                    },
                    c.flows.to_string(),
                    (c.allowed.ingress + c.allowed.egress).to_string(),
                    (c.denied.ingress + c.denied.egress).to_string(),
                    match &s.policy.error {
                        None => format!("{} policies", s.policy.policies),
                        Some(_) => format!("{} policies, ERROR", s.policy.policies),
                    },
                ]);
            }
            None => {
                let id = e
                    .socket
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let mut row = vec![id, "-".into(), "-".into()];
                row.push(format!(
                    "NOT ANSWERING: {}",
                    e.error.as_deref().unwrap_or("?")
                ));
                rows.push(row);
            }
        }
    }
    let cols = header.len();
    let mut widths = vec![0; cols];
    for r in &rows {
        // The last cell of an error row spans the rest; don't let it widen a column.
        if r.len() == cols {
            for (i, cell) in r.iter().enumerate() {
                widths[i] = widths[i].max(cell.len());
            }
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{:<w$}  ", cell, w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for e in entries {
        if let Some(Status {
            id,
            policy,
            rules_error,
            ..
        }) = &e.status
        {
            if let Some(err) = &policy.error {
                let _ = writeln!(out, "{id}: policy error (last good policy in force): {err}");
            }
            if let Some(err) = rules_error {
                let _ = writeln!(out, "{id}: rules: {err}");
            }
        }
    }
    out
}

/// `triremectl status`: a table (or JSON list) of every enforcer under `control_dir`.
/// Fails (after printing) when an enforcer does not answer or lacks rules or queue.
pub fn status(control_dir: &Path, json: bool) -> Result<(), String> {
    let entries = collect(control_dir)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&entries).map_err(|e| e.to_string())?
        );
    } else if entries.is_empty() {
        println!("no enforcers under {}", control_dir.display());
    } else {
        print!("{}", render_table(&entries));
    }
    let bad = entries
        .iter()
        .filter(|e| !e.status.as_ref().is_some_and(|s| s.ready()))
        .count();
    if bad > 0 {
        return Err(format!(
            "{bad} of {} enforcers are not answering or not ready",
            entries.len()
        ));
    }
    Ok(())
}

/// Merges the Prometheus texts of several enforcers so every metric family appears once
/// (one HELP and TYPE, then the series of all enforcers). Pure.
pub fn merge_metrics(texts: &[String]) -> String {
    struct Family {
        name: String,
        meta: Vec<String>,
        series: Vec<String>,
    }
    let mut families: Vec<Family> = Vec::new();
    let find = |families: &mut Vec<Family>, name: &str| -> usize {
        match families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                families.push(Family {
                    name: name.to_string(),
                    meta: Vec::new(),
                    series: Vec::new(),
                });
                families.len() - 1
            }
        }
    };
    for text in texts {
        for line in text.lines() {
            if line.trim().is_empty() {
                continue;
            }
            if let Some(rest) = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
            {
                let name = rest.split_whitespace().next().unwrap_or("");
                let i = find(&mut families, name);
                if !families[i].meta.iter().any(|m| m == line) {
                    families[i].meta.push(line.to_string());
                }
            } else if line.starts_with('#') {
                continue;
            } else {
                let name = line.split(['{', ' ']).next().unwrap_or("").to_string();
                let i = find(&mut families, &name);
                families[i].series.push(line.to_string());
            }
        }
    }
    let mut out = String::new();
    for f in families {
        for m in f.meta {
            out.push_str(&m);
            out.push('\n');
        }
        for s in f.series {
            out.push_str(&s);
            out.push('\n');
        }
    }
    out
}

/// `triremectl metrics`: the metrics of every enforcer under `control_dir`, merged.
pub fn metrics(control_dir: &Path) -> Result<(), String> {
    let sockets = control::list_sockets(control_dir).map_err(|e| e.to_string())?;
    let mut texts = Vec::new();
    let mut errors = Vec::new();
    for s in &sockets {
        match control::metrics(s) {
            Ok(t) => texts.push(t),
            Err(e) => errors.push(e.to_string()),
        }
    }
    print!("{}", merge_metrics(&texts));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} enforcers did not answer: {}",
            errors.len(),
            sockets.len(),
            errors.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trireme_enforcer::control::PolicyStatus;
    use trireme_enforcer::metrics::Snapshot;

    fn st(id: &str, rules: bool) -> Status {
        let mut counters = Snapshot::default();
        counters.allowed.ingress = 3;
        counters.allowed.egress = 2;
        counters.denied.ingress = 4;
        counters.flows = 1;
        Status {
            id: id.into(),
            pid: 42,
            namespace: "x".into(),
            pod: "a".into(),
            netns: "/var/run/netns/p".into(),
            identity: Default::default(),
            rules_present: rules,
            rules_error: (!rules).then(|| "missing: mangle: -A INPUT -j TRIREME-IN".into()),
            queue: 0,
            queue_bound: true,
            fail_open: false,
            reject: false,
            policy: PolicyStatus::default(),
            counters,
        }
    }

    #[test]
    fn table_has_one_row_per_enforcer() {
        let entries = vec![
            Entry {
                socket: "/run/trireme/c1.sock".into(),
                status: Some(st("c1", true)),
                error: None,
            },
            Entry {
                socket: "/run/trireme/dead.sock".into(),
                status: None,
                error: Some("connect: Connection refused".into()),
            },
            Entry {
                socket: "/run/trireme/c2.sock".into(),
                status: Some(st("c2", false)),
                error: None,
            },
        ];
        let t = render_table(&entries);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ID"));
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            vec!["c1", "x/a", "42", "ok", "0", "bound", "1", "5", "4", "0", "policies"]
        );
        assert!(lines[2].starts_with("dead"));
        assert!(lines[2].contains("NOT ANSWERING: connect: Connection refused"));
        assert!(lines[3].contains("MISSING"));
        assert!(t.contains("c2: rules: missing: mangle: -A INPUT -j TRIREME-IN"));
    }

    #[test]
    fn merged_metrics_keep_one_header_per_family() {
        let a = "# HELP m_total A.\n# TYPE m_total counter\nm_total{id=\"a\"} 1\n# HELP g G.\n# TYPE g gauge\ng{id=\"a\"} 5\n".to_string();
        let b = "# HELP m_total A.\n# TYPE m_total counter\nm_total{id=\"b\"} 2\n# HELP g G.\n# TYPE g gauge\ng{id=\"b\"} 6\n".to_string();
        assert_eq!(
            merge_metrics(&[a, b]),
            "# HELP m_total A.\n# TYPE m_total counter\nm_total{id=\"a\"} 1\nm_total{id=\"b\"} 2\n# HELP g G.\n# TYPE g gauge\ng{id=\"a\"} 5\ng{id=\"b\"} 6\n"
        );
        assert_eq!(merge_metrics(&[]), "");
    }
}
