//! Token claims and their compact JSON form on the wire (pure logic, no I/O).

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use trireme_policy::{Identity, NamedPort, Protocol, NAMESPACE_NAME_LABEL};

use crate::error::TokenError;

/// Clock skew tolerated between nodes, in seconds, when checking `iat` and `exp`.
pub const CLOCK_SKEW_SECS: u64 = 10;
/// Lifetime the enforcer should give handshake tokens (`exp = iat + TOKEN_TTL_SECS`).
pub const TOKEN_TTL_SECS: u64 = 30;
/// Longest lifetime (`exp - iat`) a token may have; longer ones are rejected, so a
/// replay cache never needs to remember a token longer than
/// `MAX_TOKEN_LIFETIME_SECS + 2 * CLOCK_SKEW_SECS`.
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 300;

/// Which handshake packet a token rides on. It is inside the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TokenKind {
    /// Client → server, on the SYN.
    #[serde(rename = "syn")]
    Syn,
    /// Server → client, on the SYN-ACK.
    #[serde(rename = "synack")]
    SynAck,
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenKind::Syn => "SYN",
            TokenKind::SynAck => "SYN-ACK",
        })
    }
}

/// What a token asserts. Everything here is covered by the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// SYN or SYN-ACK.
    pub kind: TokenKind,
    /// The sending pod: labels, namespace, namespace labels, named ports.
    pub identity: Identity,
    /// The issuing node (in PKI mode it must be the node named by the credential).
    pub node: String,
    /// Fresh random nonce per connection and direction.
    pub nonce: [u8; 16],
    /// SYN-ACK only: the client's nonce, echoed.
    pub echo: Option<[u8; 16]>,
    /// The client's TCP initial sequence number (survives DNAT and SNAT).
    pub isn_client: u32,
    /// SYN-ACK only: the server's TCP initial sequence number.
    pub isn_server: Option<u32>,
    /// SYN only: SHA-256 commitment to the client's ACK-proof secret (see [`crate::proof`]).
    pub ack_commit: Option<[u8; 32]>,
    /// SYN-ACK only: the server's own TCP port as the server sees it (the destination
    /// port of the SYN it accepted; after a Service DNAT the pod's `targetPort`, not
    /// the Service port the client dialled).
    pub server_port: Option<u16>,
    /// SYN-ACK only: the server's own address as the server sees it (its pod IP, not
    /// a Service VIP the client dialled).
    pub server_addr: Option<IpAddr>,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// Expires at, unix seconds.
    pub exp: u64,
}

/// What the receiver knows about the connection a token must belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    /// The kind the receiver expects on this packet.
    pub kind: TokenKind,
    /// The client ISN seen by the receiver (the SYN's sequence number, or the
    /// SYN-ACK's acknowledgement number minus one).
    pub isn_client: u32,
    /// SYN-ACK: the server ISN (the SYN-ACK's sequence number). `None`: not checked.
    pub isn_server: Option<u32>,
    /// SYN-ACK: the nonce the client put in its SYN token. `None`: not checked.
    pub echo: Option<[u8; 16]>,
}

impl Expect {
    /// What a server expects on a SYN with sequence number `isn_client`.
    pub fn syn(isn_client: u32) -> Self {
        Expect {
            kind: TokenKind::Syn,
            isn_client,
            isn_server: None,
            echo: None,
        }
    }

    /// What a client expects on the SYN-ACK of its connection.
    pub fn syn_ack(isn_client: u32, isn_server: u32, client_nonce: [u8; 16]) -> Self {
        Expect {
            kind: TokenKind::SynAck,
            isn_client,
            isn_server: Some(isn_server),
            echo: Some(client_nonce),
        }
    }
}

impl Claims {
    /// Claims for a client's SYN token, valid from `now` for [`TOKEN_TTL_SECS`].
    pub fn syn(
        identity: Identity,
        node: String,
        nonce: [u8; 16],
        isn_client: u32,
        ack_commit: [u8; 32],
        now: u64,
    ) -> Self {
        Claims {
            kind: TokenKind::Syn,
            identity,
            node,
            nonce,
            echo: None,
            isn_client,
            isn_server: None,
            ack_commit: Some(ack_commit),
            server_port: None,
            server_addr: None,
            iat: now,
            exp: now + TOKEN_TTL_SECS,
        }
    }

    /// Claims for a server's SYN-ACK token, valid from `now` for [`TOKEN_TTL_SECS`].
    /// `server` is the server's own address and port as the server sees them (the
    /// destination of the SYN it accepted).
    #[allow(clippy::too_many_arguments)]
    pub fn syn_ack(
        identity: Identity,
        node: String,
        nonce: [u8; 16],
        client_nonce: [u8; 16],
        isn_client: u32,
        isn_server: u32,
        server: SocketAddr,
        now: u64,
    ) -> Self {
        Claims {
            kind: TokenKind::SynAck,
            identity,
            node,
            nonce,
            echo: Some(client_nonce),
            isn_client,
            isn_server: Some(isn_server),
            ack_commit: None,
            server_port: Some(server.port()),
            server_addr: Some(server.ip()),
            iat: now,
            exp: now + TOKEN_TTL_SECS,
        }
    }

    /// SYN-ACK: the server's address and port as the server sees them.
    pub fn server(&self) -> Option<SocketAddr> {
        match (self.server_addr, self.server_port) {
            (Some(ip), Some(port)) => Some(SocketAddr::new(ip, port)),
            _ => None,
        }
    }

    /// The fields a token of this kind must (and must not) have.
    pub(crate) fn shape_error(&self) -> Option<String> {
        match self.kind {
            TokenKind::Syn => {
                if self.echo.is_some() || self.isn_server.is_some() {
                    return Some("a SYN token carries no echo and no server ISN".into());
                }
                if self.server_port.is_some() || self.server_addr.is_some() {
                    return Some("a SYN token carries no server address or port".into());
                }
                if self.ack_commit.is_none() {
                    return Some("a SYN token needs an ACK-proof commitment".into());
                }
            }
            TokenKind::SynAck => {
                if self.echo.is_none() || self.isn_server.is_none() {
                    return Some("a SYN-ACK token needs the echo and the server ISN".into());
                }
                if self.ack_commit.is_some() {
                    return Some("a SYN-ACK token carries no ACK-proof commitment".into());
                }
                if self.server_port.is_none() || self.server_addr.is_none() {
                    return Some("a SYN-ACK token needs the server's address and port".into());
                }
                if self.server_port == Some(0) {
                    return Some("a SYN-ACK token's server port cannot be 0".into());
                }
            }
        }
        if self.exp <= self.iat {
            return Some(format!("exp {} is not after iat {}", self.exp, self.iat));
        }
        if self.exp - self.iat > MAX_TOKEN_LIFETIME_SECS {
            return Some(format!(
                "lifetime {} s exceeds the maximum of {MAX_TOKEN_LIFETIME_SECS} s",
                self.exp - self.iat
            ));
        }
        None
    }
}

/// Checks kind, validity time and binding of verified claims against what the
/// receiver expects. Pure; `now` in unix seconds.
pub fn check_claims(c: &Claims, expect: &Expect, now: u64) -> Result<(), TokenError> {
    if c.kind != expect.kind {
        return Err(TokenError::WrongKind {
            expected: expect.kind,
            got: c.kind,
        });
    }
    if c.iat > now.saturating_add(CLOCK_SKEW_SECS) {
        return Err(TokenError::NotYetValid { iat: c.iat, now });
    }
    if now > c.exp.saturating_add(CLOCK_SKEW_SECS) {
        return Err(TokenError::Expired { exp: c.exp, now });
    }
    if c.isn_client != expect.isn_client {
        return Err(TokenError::WrongBinding(format!(
            "client ISN {} in token, {} on the wire",
            c.isn_client, expect.isn_client
        )));
    }
    if let Some(isn_s) = expect.isn_server {
        if c.isn_server != Some(isn_s) {
            return Err(TokenError::WrongBinding(format!(
                "server ISN {:?} in token, {} on the wire",
                c.isn_server, isn_s
            )));
        }
    }
    if let Some(echo) = expect.echo {
        if c.echo != Some(echo) {
            return Err(TokenError::WrongBinding(
                "echoed nonce is not the one this client sent".into(),
            ));
        }
    }
    Ok(())
}

// ---- wire form -------------------------------------------------------------------

/// The identity as it travels: short keys, and the namespace-name label left out
/// (the receiver restores it from the namespace).
#[derive(Serialize, Deserialize)]
struct WireIdentity {
    #[serde(rename = "ns")]
    namespace: String,
    #[serde(rename = "l", default, skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(rename = "nl", default, skip_serializing_if = "BTreeMap::is_empty")]
    namespace_labels: BTreeMap<String, String>,
    #[serde(rename = "p", default, skip_serializing_if = "Vec::is_empty")]
    ports: Vec<(String, u16, Protocol)>,
}

#[derive(Deserialize)]
struct WireClaims {
    k: TokenKind,
    n: String,
    i: WireIdentity,
    r: String,
    #[serde(default)]
    e: Option<String>,
    c: u32,
    #[serde(default)]
    s: Option<u32>,
    #[serde(default)]
    a: Option<String>,
    /// SYN-ACK: the server's address and port as it sees them, `SocketAddr` text.
    #[serde(default)]
    d: Option<String>,
    iat: u64,
    exp: u64,
}

/// The identity's JSON, as it appears in every token of that pod (precomputable).
pub(crate) fn identity_json(id: &Identity) -> String {
    let mut namespace_labels = id.namespace_labels.clone();
    if namespace_labels.get(NAMESPACE_NAME_LABEL) == Some(&id.namespace) {
        namespace_labels.remove(NAMESPACE_NAME_LABEL);
    }
    let wire = WireIdentity {
        namespace: id.namespace.clone(),
        labels: id.labels.clone(),
        namespace_labels,
        ports: id
            .ports
            .iter()
            .map(|p| (p.name.clone(), p.port, p.protocol))
            .collect(),
    };
    // Serializing maps of strings and integers cannot fail.
    serde_json::to_string(&wire).unwrap_or_default()
}

fn json_str(out: &mut String, s: &str) {
    // A &str always serializes.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

/// The claims' JSON, with the identity part given pre-encoded.
pub(crate) fn payload_json(c: &Claims, identity_json: &str) -> String {
    let mut out = String::with_capacity(identity_json.len() + 200);
    out.push_str("{\"k\":");
    out.push_str(match c.kind {
        TokenKind::Syn => "\"syn\"",
        TokenKind::SynAck => "\"synack\"",
    });
    out.push_str(",\"n\":");
    json_str(&mut out, &c.node);
    out.push_str(",\"i\":");
    out.push_str(identity_json);
    out.push_str(",\"r\":\"");
    URL_SAFE_NO_PAD.encode_string(c.nonce, &mut out);
    out.push('"');
    if let Some(e) = &c.echo {
        out.push_str(",\"e\":\"");
        URL_SAFE_NO_PAD.encode_string(e, &mut out);
        out.push('"');
    }
    let _ = write!(out, ",\"c\":{}", c.isn_client);
    if let Some(s) = c.isn_server {
        let _ = write!(out, ",\"s\":{s}");
    }
    if let Some(a) = &c.ack_commit {
        out.push_str(",\"a\":\"");
        URL_SAFE_NO_PAD.encode_string(a, &mut out);
        out.push('"');
    }
    if let Some(d) = c.server() {
        // "10.0.0.2:80" or "[fd00::2]:80": digits, hex, dots, colons, brackets only.
        let _ = write!(out, ",\"d\":\"{d}\"");
    }
    let _ = write!(out, ",\"iat\":{},\"exp\":{}}}", c.iat, c.exp);
    out
}

fn fixed_b64<const N: usize>(field: &str, s: &str) -> Result<[u8; N], TokenError> {
    let v = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|e| TokenError::Malformed(format!("claim {field}: {e}")))?;
    v.try_into()
        .map_err(|_| TokenError::Malformed(format!("claim {field}: not {N} bytes")))
}

/// Parses the claims' JSON (already base64-decoded) and checks their shape.
pub(crate) fn parse_payload(json: &[u8]) -> Result<Claims, TokenError> {
    let w: WireClaims =
        serde_json::from_slice(json).map_err(|e| TokenError::Malformed(format!("claims: {e}")))?;
    let server =
        w.d.as_deref()
            .map(|d| {
                d.parse::<SocketAddr>()
                    .map_err(|e| TokenError::Malformed(format!("claim d: {d:?}: {e}")))
            })
            .transpose()?;
    let mut namespace_labels = w.i.namespace_labels;
    namespace_labels
        .entry(NAMESPACE_NAME_LABEL.to_string())
        .or_insert_with(|| w.i.namespace.clone());
    let c = Claims {
        kind: w.k,
        identity: Identity {
            namespace: w.i.namespace,
            labels: w.i.labels,
            namespace_labels,
            ports: w
                .i
                .ports
                .into_iter()
                .map(|(name, port, protocol)| NamedPort {
                    name,
                    port,
                    protocol,
                })
                .collect(),
        },
        node: w.n,
        nonce: fixed_b64("r", &w.r)?,
        echo: w.e.as_deref().map(|e| fixed_b64("e", e)).transpose()?,
        isn_client: w.c,
        isn_server: w.s,
        ack_commit: w.a.as_deref().map(|a| fixed_b64("a", a)).transpose()?,
        server_port: server.map(|d| d.port()),
        server_addr: server.map(|d| d.ip()),
        iat: w.iat,
        exp: w.exp,
    };
    if let Some(msg) = c.shape_error() {
        return Err(TokenError::Malformed(msg));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn identity() -> Identity {
        let mut id = Identity {
            namespace: "prod".into(),
            ..Default::default()
        };
        id.labels.insert("app".into(), "web".into());
        id.labels.insert("quote\"d".into(), "\\ü".into());
        id.namespace_labels
            .insert(NAMESPACE_NAME_LABEL.into(), "prod".into());
        id.namespace_labels.insert("team".into(), "a".into());
        id.ports.push(NamedPort {
            name: "http".into(),
            port: 8080,
            protocol: Protocol::Tcp,
        });
        id
    }

    fn syn() -> Claims {
        Claims::syn(identity(), "node-a".into(), [7; 16], 1000, [9; 32], 5000)
    }

    fn syn_ack() -> Claims {
        Claims::syn_ack(
            identity(),
            "node-b".into(),
            [3; 16],
            [7; 16],
            1000,
            2000,
            "10.244.1.7:80".parse().unwrap(),
            5000,
        )
    }

    fn round_trip(c: &Claims) -> Result<Claims, TokenError> {
        parse_payload(payload_json(c, &identity_json(&c.identity)).as_bytes())
    }

    #[test]
    fn payload_round_trips_both_kinds() {
        for c in [syn(), syn_ack()] {
            let json = payload_json(&c, &identity_json(&c.identity));
            let back = parse_payload(json.as_bytes()).unwrap();
            assert_eq!(back, c);
        }
    }

    #[test]
    fn syn_ack_carries_the_servers_own_address_and_port() {
        let c = syn_ack();
        assert_eq!(c.server(), Some("10.244.1.7:80".parse().unwrap()));
        let json = payload_json(&c, &identity_json(&c.identity));
        assert!(json.contains(r#","d":"10.244.1.7:80","#), "{json}");
        assert_eq!(round_trip(&c).unwrap().server(), c.server());
        let mut c6 = syn_ack();
        let v6: SocketAddr = "[fd00:10:244::1:7]:8443".parse().unwrap();
        c6.server_addr = Some(v6.ip());
        c6.server_port = Some(v6.port());
        assert_eq!(round_trip(&c6).unwrap().server(), Some(v6));
        // a SYN carries none
        assert_eq!(syn().server(), None);
        assert!(!payload_json(&syn(), "{}").contains("\"d\""));
    }

    #[test]
    fn syn_ack_without_server_address_or_port_is_malformed() {
        for edit in [
            |c: &mut Claims| c.server_port = None,
            |c: &mut Claims| c.server_addr = None,
            |c: &mut Claims| c.server_port = Some(0),
        ] {
            let mut c = syn_ack();
            edit(&mut c);
            assert!(c.shape_error().is_some());
            assert!(matches!(round_trip(&c), Err(TokenError::Malformed(_))));
        }
        // a SYN that claims a server address is malformed too
        let mut c = syn();
        c.server_port = Some(80);
        c.server_addr = Some("10.0.0.1".parse().unwrap());
        assert!(matches!(round_trip(&c), Err(TokenError::Malformed(_))));
        // the address text must parse
        let json = payload_json(&syn_ack(), &identity_json(&identity()));
        for bad in ["10.244.1.7", "10.244.1.7:99999", "host:80", "[fd00::1]"] {
            let edited = json.replace("10.244.1.7:80", bad);
            assert!(
                matches!(
                    parse_payload(edited.as_bytes()),
                    Err(TokenError::Malformed(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn namespace_name_label_is_left_out_and_restored() {
        let c = syn();
        let json = identity_json(&c.identity);
        assert!(!json.contains(NAMESPACE_NAME_LABEL), "{json}");
        let mut id = c.identity.clone();
        id.namespace_labels.clear();
        let back = parse_payload(payload_json(&c, &identity_json(&id)).as_bytes()).unwrap();
        assert_eq!(
            back.identity.namespace_labels.get(NAMESPACE_NAME_LABEL),
            Some(&"prod".to_string())
        );
    }

    #[test]
    fn wrong_shapes_are_malformed() {
        let mut c = syn();
        c.echo = Some([1; 16]);
        let json = payload_json(&c, &identity_json(&c.identity));
        assert!(matches!(
            parse_payload(json.as_bytes()),
            Err(TokenError::Malformed(_))
        ));
        let mut c = syn_ack();
        c.isn_server = None;
        let json = payload_json(&c, &identity_json(&c.identity));
        assert!(matches!(
            parse_payload(json.as_bytes()),
            Err(TokenError::Malformed(_))
        ));
        let mut c = syn();
        c.exp = c.iat + MAX_TOKEN_LIFETIME_SECS + 1;
        let json = payload_json(&c, &identity_json(&c.identity));
        assert!(matches!(
            parse_payload(json.as_bytes()),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            parse_payload(b"{\"k\":\"syn\"}"),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn check_accepts_matching_syn_and_syn_ack() {
        check_claims(&syn(), &Expect::syn(1000), 5000).unwrap();
        check_claims(&syn_ack(), &Expect::syn_ack(1000, 2000, [7; 16]), 5000).unwrap();
    }

    #[test]
    fn check_rejects_wrong_kind() {
        let e = check_claims(&syn_ack(), &Expect::syn(1000), 5000).unwrap_err();
        assert!(matches!(
            e,
            TokenError::WrongKind {
                expected: TokenKind::Syn,
                got: TokenKind::SynAck
            }
        ));
    }

    #[test]
    fn check_time_window_with_skew() {
        let c = syn(); // iat 5000, exp 5030
        check_claims(&c, &Expect::syn(1000), 5000 - CLOCK_SKEW_SECS).unwrap();
        check_claims(&c, &Expect::syn(1000), 5030 + CLOCK_SKEW_SECS).unwrap();
        assert!(matches!(
            check_claims(&c, &Expect::syn(1000), 5000 - CLOCK_SKEW_SECS - 1),
            Err(TokenError::NotYetValid { iat: 5000, .. })
        ));
        assert!(matches!(
            check_claims(&c, &Expect::syn(1000), 5030 + CLOCK_SKEW_SECS + 1),
            Err(TokenError::Expired { exp: 5030, .. })
        ));
    }

    #[test]
    fn check_rejects_other_connection() {
        assert!(matches!(
            check_claims(&syn(), &Expect::syn(1001), 5000),
            Err(TokenError::WrongBinding(_))
        ));
        assert!(matches!(
            check_claims(&syn_ack(), &Expect::syn_ack(1000, 2001, [7; 16]), 5000),
            Err(TokenError::WrongBinding(_))
        ));
        assert!(matches!(
            check_claims(&syn_ack(), &Expect::syn_ack(1000, 2000, [8; 16]), 5000),
            Err(TokenError::WrongBinding(_))
        ));
    }
}
