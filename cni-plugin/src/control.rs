//! A minimal client of the enforcer's control socket (JSON lines, `{"op":"status"}`), kept
//! here rather than linking the enforcer crate so the plugin stays a small binary. The wire
//! format is the one `trireme_enforcer::control` serves.

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// What `status` told us, reduced to what the plugin decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub rules_present: bool,
    pub queue_bound: bool,
    pub pid: Option<u32>,
    /// Why the rules are missing, if the enforcer says.
    pub rules_error: Option<String>,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.rules_present && self.queue_bound
    }
}

/// Interprets a status response line.
pub fn parse_status(resp: &Value) -> Result<Readiness, String> {
    match resp.get("result").and_then(Value::as_str) {
        Some("status") => Ok(Readiness {
            rules_present: resp.get("rules_present").and_then(Value::as_bool) == Some(true),
            queue_bound: resp.get("queue_bound").and_then(Value::as_bool) == Some(true),
            pid: resp.get("pid").and_then(Value::as_u64).map(|p| p as u32),
            rules_error: resp
                .get("rules_error")
                .and_then(Value::as_str)
                .map(str::to_string),
        }),
        Some("error") => Err(format!(
            "enforcer answered with an error: {}",
            resp.get("message").and_then(Value::as_str).unwrap_or("?")
        )),
        _ => Err(format!("unexpected answer to status: {resp}")),
    }
}

/// The status request line: with `verify` the enforcer re-reads its rules with
/// `iptables-save` (CHECK); without, it answers from memory, starting no process (the
/// readiness poll of ADD: the socket is only bound after the rules were installed).
pub fn status_request(verify: bool) -> &'static [u8] {
    if verify {
        b"{\"op\":\"status\",\"verify\":true}\n"
    } else {
        b"{\"op\":\"status\"}\n"
    }
}

/// Asks the enforcer on `socket` for its status (see [`status_request`] for `verify`).
pub fn status(socket: &Path, timeout: Duration, verify: bool) -> Result<Readiness, String> {
    let sock = socket.display();
    let mut stream = UnixStream::connect(socket).map_err(|e| format!("connect {sock}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|_| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("{sock}: {e}"))?;
    stream
        .write_all(status_request(verify))
        .map_err(|e| format!("write to {sock}: {e}"))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| format!("read from {sock}: {e}"))?;
    let v: Value = serde_json::from_str(line.trim())
        .map_err(|e| format!("{sock} answered something that is not JSON ({e}): {line:?}"))?;
    parse_status(&v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_answers() {
        let r = parse_status(
            &json!({"result":"status","pid":7,"rules_present":true,"queue_bound":true}),
        )
        .unwrap();
        assert!(r.ready());
        assert_eq!(r.pid, Some(7));
        let r = parse_status(&json!({"result":"status","rules_present":false,"rules_error":"chain gone","queue_bound":true})).unwrap();
        assert!(!r.ready());
        assert_eq!(r.rules_error.as_deref(), Some("chain gone"));
        assert!(parse_status(&json!({"result":"error","message":"x"})).is_err());
        assert!(parse_status(&json!({"foo":1})).is_err());
    }

    #[test]
    fn status_requests_are_json_lines() {
        for (verify, want) in [
            (false, json!({"op":"status"})),
            (true, json!({"op":"status","verify":true})),
        ] {
            let line = status_request(verify);
            assert_eq!(line.last(), Some(&b'\n'));
            let v: Value = serde_json::from_slice(line).unwrap();
            assert_eq!(v, want);
        }
    }
}
