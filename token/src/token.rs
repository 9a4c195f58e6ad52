//! Signer and Verifier: compact JWS tokens signed and verified with jsonwebtoken.
//!
//! Wire form: a JWS with an unencoded, detached payload (RFC 7797: header
//! `"b64":false`, `"crit":["b64"]`), so the claims JSON travels once, not base64'd:
//! - PKI: `<node credential JWT>~<protected header>..<signature>~<claims JSON>`; the
//!   token is EdDSA-signed by the node key named in the credential, the credential
//!   (a compact JWT) is EdDSA-signed by the CA.
//! - PSK: `<protected header>..<signature>~<claims JSON>`, HS256 with the shared
//!   secret; the header's `kid` names the secret.
//!
//! The signing input is `<protected header>.<claims JSON>` (RFC 7797, section 3).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use aws_lc_rs::digest::{digest, SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde::Deserialize;
use trireme_policy::Identity;

use crate::claims::CLOCK_SKEW_SECS;
use crate::claims::{check_claims, identity_json, parse_payload, payload_json, Claims, Expect};
use crate::error::TokenError;

/// Longest token a verifier will look at, in bytes; longer input is malformed.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Most node credentials a verifier keeps verified in memory (then it starts over).
pub const CREDENTIAL_CACHE_MAX: usize = 4096;

/// Base64url length of an Ed25519 signature (64 bytes).
const ED25519_SIG_B64: usize = 86;
/// Base64url length of an HMAC-SHA256 tag (32 bytes).
const HS256_SIG_B64: usize = 43;

/// The trust mode of a key directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A cluster CA signs node keys; tokens are EdDSA and carry the node credential.
    Pki,
    /// One shared secret; tokens are HS256.
    Psk,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Pki => "pki",
            Mode::Psk => "psk",
        })
    }
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A short key id: base64url of the first 9 bytes of SHA-256(domain || key).
pub(crate) fn key_id(domain: &[u8], key: &[u8]) -> String {
    let mut buf = Vec::with_capacity(domain.len() + key.len());
    buf.extend_from_slice(domain);
    buf.extend_from_slice(key);
    b64(&digest(&SHA256, &buf).as_ref()[..9])
}

pub(crate) const CA_KID_DOMAIN: &[u8] = b"trireme-ca:";
pub(crate) const PSK_KID_DOMAIN: &[u8] = b"trireme-psk:";

#[derive(Deserialize)]
struct JwtHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    b64: Option<bool>,
    #[serde(default)]
    crit: Vec<String>,
}

/// The claims of a node credential (a CA-signed JWT).
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub(crate) struct CredentialClaims {
    /// Node name.
    pub sub: String,
    /// The node's Ed25519 public key, raw 32 bytes, base64url.
    pub pk: String,
    pub iat: u64,
    pub exp: u64,
}

/// The CA public keys a node trusts, by key id (more than one during a CA rotation).
pub(crate) struct TrustedCas {
    cas: Vec<(String, DecodingKey)>,
}

impl TrustedCas {
    /// From raw Ed25519 public keys.
    pub(crate) fn new(publics: &[Vec<u8>]) -> Self {
        TrustedCas {
            cas: publics
                .iter()
                .map(|p| (key_id(CA_KID_DOMAIN, p), DecodingKey::from_ed_der(p)))
                .collect(),
        }
    }

    fn get(&self, kid: &str) -> Option<&DecodingKey> {
        self.cas.iter().find(|(k, _)| k == kid).map(|(_, key)| key)
    }

    /// The trusted key ids, comma-separated.
    pub(crate) fn kids(&self) -> String {
        self.cas
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A compact JWS split into its parts.
struct Jws<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
    /// `header.payload`, the signing input.
    message: &'a str,
}

fn split_jws(s: &str) -> Result<Jws<'_>, TokenError> {
    // Every JOSE header starts with `{"`, base64url `eyJ`.
    if !s.starts_with("eyJ") && !"eyJ".starts_with(s) {
        return Err(TokenError::Malformed("not a JWS".into()));
    }
    let mut dots = s.match_indices('.').map(|(i, _)| i);
    let (Some(d1), Some(d2)) = (dots.next(), dots.next()) else {
        return Err(TokenError::Truncated(
            "a JWT needs three parts (header.claims.signature)".into(),
        ));
    };
    if dots.next().is_some() {
        return Err(TokenError::Malformed("more than three JWT parts".into()));
    }
    Ok(Jws {
        header: &s[..d1],
        payload: &s[d1 + 1..d2],
        signature: &s[d2 + 1..],
        message: &s[..d2],
    })
}

fn parse_header(part: &str) -> Result<JwtHeader, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| TokenError::Malformed(format!("header: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| TokenError::Malformed(format!("header: {e}")))
}

fn check_sig_len(sig: &str, want: usize) -> Result<(), TokenError> {
    if sig.len() < want {
        return Err(TokenError::Truncated(format!(
            "signature has {} characters, needs {want}",
            sig.len()
        )));
    }
    if sig.len() > want {
        return Err(TokenError::Malformed(format!(
            "signature has {} characters, needs {want}",
            sig.len()
        )));
    }
    Ok(())
}

/// Verifies `jws` with jsonwebtoken; `Ok(false)` is a signature mismatch.
fn jws_verifies(jws: &Jws<'_>, key: &DecodingKey, alg: Algorithm) -> Result<bool, TokenError> {
    jsonwebtoken::crypto::verify(jws.signature, jws.message.as_bytes(), key, alg)
        .map_err(|e| TokenError::Malformed(format!("signature: {e}")))
}

/// Verifies a node credential against the trusted CAs. Pure apart from the crypto.
/// Returns its claims and the key id of the CA that signed it.
pub(crate) fn verify_credential(
    cred: &str,
    cas: &TrustedCas,
    now: u64,
) -> Result<(CredentialClaims, String), TokenError> {
    let jws = split_jws(cred).map_err(|e| match e {
        TokenError::Truncated(m) | TokenError::Malformed(m) => {
            TokenError::Malformed(format!("node credential: {m}"))
        }
        other => other,
    })?;
    let header = parse_header(jws.header)?;
    if header.alg != "EdDSA" {
        return Err(TokenError::UntrustedIssuer(format!(
            "node credential signed with {}, trireme CAs sign with EdDSA",
            header.alg
        )));
    }
    let kid = header.kid.unwrap_or_default();
    let Some(ca_key) = cas.get(&kid) else {
        return Err(TokenError::UntrustedIssuer(format!(
            "node credential issued by CA {}, this node trusts CA {}",
            if kid.is_empty() { "(no kid)" } else { &kid },
            cas.kids()
        )));
    };
    check_sig_len(jws.signature, ED25519_SIG_B64)
        .map_err(|e| TokenError::BadCredential(e.to_string()))?;
    if !jws_verifies(&jws, ca_key, Algorithm::EdDSA)? {
        return Err(TokenError::BadCredential(
            "signature does not verify against the cluster CA".into(),
        ));
    }
    let claims: CredentialClaims = URL_SAFE_NO_PAD
        .decode(jws.payload)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| TokenError::BadCredential(format!("claims: {e}")))?;
    check_credential_time(&claims, now)?;
    Ok((claims, kid))
}

fn check_credential_time(c: &CredentialClaims, now: u64) -> Result<(), TokenError> {
    if c.iat > now.saturating_add(CLOCK_SKEW_SECS) {
        return Err(TokenError::BadCredential(format!(
            "credential of node {} not valid before {} (now {now})",
            c.sub, c.iat
        )));
    }
    if now > c.exp.saturating_add(CLOCK_SKEW_SECS) {
        return Err(TokenError::BadCredential(format!(
            "credential of node {} expired at {} (now {now})",
            c.sub, c.exp
        )));
    }
    Ok(())
}

// ---- Signer ------------------------------------------------------------------------

/// Signs this node's tokens. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Signer {
    inner: Arc<SignerInner>,
}

struct SignerInner {
    mode: Mode,
    alg: Algorithm,
    key: EncodingKey,
    /// Everything before the signature but its two dots: `credential~header` (PKI)
    /// or `header` (PSK).
    prefix: String,
    /// Length of the credential part plus `~` (0 in PSK mode).
    cred_len: usize,
    /// PKI: the node named by the credential.
    node: Option<String>,
    /// The identity last signed and its JSON (a pod signs with one identity).
    identity_cache: Mutex<Option<(Identity, Arc<str>)>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("mode", &self.inner.mode)
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// PKI signer from the node's Ed25519 key (PKCS#8 DER) and its credential.
    pub(crate) fn pki(node_pkcs8: &[u8], credential: String, node: String) -> Self {
        let header = b64(br#"{"alg":"EdDSA","b64":false,"crit":["b64"]}"#);
        let prefix = format!("{credential}~{header}");
        Signer {
            inner: Arc::new(SignerInner {
                mode: Mode::Pki,
                alg: Algorithm::EdDSA,
                key: EncodingKey::from_ed_der(node_pkcs8),
                cred_len: credential.len() + 1,
                prefix,
                node: Some(node),
                identity_cache: Mutex::new(None),
            }),
        }
    }

    /// PSK signer from the shared secret (at least 32 bytes).
    pub fn from_psk(secret: &[u8]) -> Result<Self, TokenError> {
        crate::init()?;
        let key = EncodingKey::from_secret(secret)
            .map_err(|e| TokenError::Crypto(format!("PSK: {e}")))?;
        if secret.len() < 32 {
            return Err(TokenError::InvalidClaims(format!(
                "a PSK needs at least 32 bytes, got {}",
                secret.len()
            )));
        }
        let kid = key_id(PSK_KID_DOMAIN, secret);
        let header = b64(
            format!(r#"{{"alg":"HS256","kid":"{kid}","b64":false,"crit":["b64"]}}"#).as_bytes(),
        );
        Ok(Signer {
            inner: Arc::new(SignerInner {
                mode: Mode::Psk,
                alg: Algorithm::HS256,
                key,
                prefix: header,
                cred_len: 0,
                node: None,
                identity_cache: Mutex::new(None),
            }),
        })
    }

    /// The trust mode.
    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    /// PKI: the node name in this node's credential; every token must use it as
    /// `Claims::node`. PSK: `None` (any node name is accepted).
    pub fn node_name(&self) -> Option<&str> {
        self.inner.node.as_deref()
    }

    /// Bytes of every token that do not depend on the claims (credential, header).
    pub fn fixed_overhead(&self) -> usize {
        self.inner.prefix.len() + 3 + self.signature_len()
    }

    fn signature_len(&self) -> usize {
        match self.inner.alg {
            Algorithm::HS256 => HS256_SIG_B64,
            _ => ED25519_SIG_B64,
        }
    }

    fn identity_segment(&self, id: &Identity) -> Arc<str> {
        let mut cache = self
            .inner
            .identity_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((cached, json)) = cache.as_ref() {
            if cached == id {
                return json.clone();
            }
        }
        let json: Arc<str> = identity_json(id).into();
        *cache = Some((id.clone(), json.clone()));
        json
    }

    /// Signs `claims` into a token (ASCII bytes, see `docs/tokens.md`).
    pub fn sign(&self, claims: &Claims) -> Result<Vec<u8>, TokenError> {
        if let Some(msg) = claims.shape_error() {
            return Err(TokenError::InvalidClaims(msg));
        }
        if let Some(node) = &self.inner.node {
            if &claims.node != node {
                return Err(TokenError::InvalidClaims(format!(
                    "claims name node {:?} but this node's credential is for {node:?}",
                    claims.node
                )));
            }
        }
        let id_json = self.identity_segment(&claims.identity);
        let payload = payload_json(claims, &id_json);
        let header = &self.inner.prefix[self.inner.cred_len..];
        let mut message = String::with_capacity(header.len() + 1 + payload.len());
        message.push_str(header);
        message.push('.');
        message.push_str(&payload);
        let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &self.inner.key, self.inner.alg)
            .map_err(|e| TokenError::Crypto(format!("signing: {e}")))?;
        let mut out = Vec::with_capacity(self.inner.prefix.len() + 3 + sig.len() + payload.len());
        out.extend_from_slice(self.inner.prefix.as_bytes());
        out.extend_from_slice(b"..");
        out.extend_from_slice(sig.as_bytes());
        out.push(b'~');
        out.extend_from_slice(payload.as_bytes());
        Ok(out)
    }
}

// ---- Verifier ----------------------------------------------------------------------

/// Verifies peers' tokens. Cheap to clone (clones share the credential cache);
/// `Send + Sync`.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<VerifierInner>,
}

enum Trust {
    Pki {
        cas: TrustedCas,
        /// Verified node credentials by SHA-256 of their bytes.
        cache: RwLock<HashMap<[u8; 32], Arc<NodeCred>>>,
    },
    Psk {
        kid: String,
        key: DecodingKey,
    },
}

struct NodeCred {
    claims: CredentialClaims,
    key: DecodingKey,
}

struct VerifierInner {
    trust: Trust,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("mode", &self.mode())
            .finish_non_exhaustive()
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

impl Verifier {
    /// PKI verifier trusting the CAs whose raw Ed25519 public keys are given.
    pub(crate) fn pki(cas: TrustedCas) -> Self {
        Verifier {
            inner: Arc::new(VerifierInner {
                trust: Trust::Pki {
                    cas,
                    cache: RwLock::new(HashMap::new()),
                },
            }),
        }
    }

    /// PSK verifier from the shared secret (at least 32 bytes).
    pub fn from_psk(secret: &[u8]) -> Result<Self, TokenError> {
        crate::init()?;
        if secret.len() < 32 {
            return Err(TokenError::InvalidClaims(format!(
                "a PSK needs at least 32 bytes, got {}",
                secret.len()
            )));
        }
        let key = DecodingKey::from_secret(secret)
            .map_err(|e| TokenError::Crypto(format!("PSK: {e}")))?;
        Ok(Verifier {
            inner: Arc::new(VerifierInner {
                trust: Trust::Psk {
                    kid: key_id(PSK_KID_DOMAIN, secret),
                    key,
                },
            }),
        })
    }

    /// The trust mode.
    pub fn mode(&self) -> Mode {
        match self.inner.trust {
            Trust::Pki { .. } => Mode::Pki,
            Trust::Psk { .. } => Mode::Psk,
        }
    }

    /// How many verified node credentials are cached (PKI; 0 for PSK).
    pub fn cached_credentials(&self) -> usize {
        match &self.inner.trust {
            Trust::Pki { cache, .. } => cache.read().map(|c| c.len()).unwrap_or(0),
            Trust::Psk { .. } => 0,
        }
    }

    /// Forgets every cached node credential (e.g. after the CA was rotated); the
    /// next token of each node verifies its credential again.
    pub fn clear_credential_cache(&self) {
        if let Trust::Pki { cache, .. } = &self.inner.trust {
            cache.write().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    /// Verifies a token received on a handshake packet: framing, signature(s),
    /// validity time (with [`CLOCK_SKEW_SECS`]), kind and binding to `expect`.
    /// `now` in unix seconds. Returns the verified claims.
    pub fn verify(&self, token: &[u8], expect: &Expect, now: u64) -> Result<Claims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Truncated("empty token".into()));
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed(format!(
                "{} bytes, at most {MAX_TOKEN_LEN}",
                token.len()
            )));
        }
        let framing_parts = match self.inner.trust {
            Trust::Pki { .. } => 2,
            Trust::Psk { .. } => 1,
        };
        if framing_parts == 2 {
            // A PSK token (`header..sig~claims`) sent to a PKI node: say so.
            let end = token.iter().position(|b| *b == b'~').unwrap_or(token.len());
            if let Some(e) = std::str::from_utf8(&token[..end])
                .ok()
                .and_then(psk_token_here)
            {
                return Err(e);
            }
        }
        let (framing, payload) = split_framing(token, framing_parts)?;
        let claims = match &self.inner.trust {
            Trust::Pki { cas, cache } => {
                let first = framing[0];
                let Some(jws_part) = framing.get(1) else {
                    return Err(classify_incomplete(first));
                };
                let Some(payload) = payload else {
                    return Err(TokenError::Truncated(
                        "no claims after the signature".into(),
                    ));
                };
                let node = self.node_credential(first, cas, cache, now)?;
                let jws = split_detached(jws_part)?;
                let header = parse_header(jws.header)?;
                if header.alg != "EdDSA" {
                    return Err(TokenError::UnknownKey(format!(
                        "token signed with {}, node credentials are EdDSA",
                        header.alg
                    )));
                }
                check_sig_len(jws.signature, ED25519_SIG_B64)?;
                verify_detached(&jws, &header, payload, &node.key, Algorithm::EdDSA)?;
                let claims = parse_payload(payload)?;
                if claims.node != node.claims.sub {
                    return Err(TokenError::BadCredential(format!(
                        "token claims node {:?} but carries the credential of {:?}",
                        claims.node, node.claims.sub
                    )));
                }
                claims
            }
            Trust::Psk { kid, key } => {
                let first = framing[0];
                let Some(payload) = payload else {
                    return Err(classify_incomplete(first));
                };
                let jws = split_jws(first)?;
                if !jws.payload.is_empty() {
                    // A complete compact JWS before `~`: a PKI node credential.
                    let pki = parse_header(jws.header).is_ok_and(|h| h.alg == "EdDSA");
                    return Err(if pki {
                        TokenError::UnknownKey(
                            "token carries a node credential (PKI); this node uses a PSK".into(),
                        )
                    } else {
                        TokenError::Malformed("JWS payload is not detached".into())
                    });
                }
                let header = parse_header(jws.header)?;
                if header.alg != "HS256" {
                    return Err(TokenError::UnknownKey(format!(
                        "token signed with {}, this node uses a PSK (HS256)",
                        header.alg
                    )));
                }
                if header.kid.as_deref() != Some(kid.as_str()) {
                    return Err(TokenError::UnknownKey(format!(
                        "token signed with PSK {}, ours is {kid}",
                        header.kid.as_deref().unwrap_or("(no kid)")
                    )));
                }
                check_sig_len(jws.signature, HS256_SIG_B64)?;
                verify_detached(&jws, &header, payload, key, Algorithm::HS256)?;
                parse_payload(payload)?
            }
        };
        check_claims(&claims, expect, now)?;
        Ok(claims)
    }

    fn node_credential(
        &self,
        cred: &str,
        cas: &TrustedCas,
        cache: &RwLock<HashMap<[u8; 32], Arc<NodeCred>>>,
        now: u64,
    ) -> Result<Arc<NodeCred>, TokenError> {
        let mut hash = [0u8; 32];
        hash.copy_from_slice(digest(&SHA256, cred.as_bytes()).as_ref());
        let hit = cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&hash)
            .cloned();
        if let Some(node) = hit {
            check_credential_time(&node.claims, now)?;
            return Ok(node);
        }
        let (claims, _) = verify_credential(cred, cas, now)?;
        let pk = URL_SAFE_NO_PAD
            .decode(&claims.pk)
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| {
                TokenError::BadCredential("public key is not 32 bytes of base64url".into())
            })?;
        let node = Arc::new(NodeCred {
            claims,
            key: DecodingKey::from_ed_der(&pk),
        });
        let mut cache = cache.write().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CREDENTIAL_CACHE_MAX {
            cache.clear();
        }
        cache.insert(hash, node.clone());
        Ok(node)
    }
}

/// Splits the ASCII framing parts (separated by `~`) from the claims JSON.
/// Returns up to `n` framing parts and the payload if all `n` were present.
fn split_framing(token: &[u8], n: usize) -> Result<(Vec<&str>, Option<&[u8]>), TokenError> {
    let mut parts = Vec::with_capacity(n);
    let mut rest = token;
    while parts.len() < n {
        let end = rest.iter().position(|b| *b == b'~');
        let part = &rest[..end.unwrap_or(rest.len())];
        if let Some(pos) = part.iter().position(|b| !is_token_byte(*b)) {
            return Err(TokenError::Malformed(format!(
                "unexpected byte 0x{:02x} at offset {}",
                part[pos],
                token.len() - rest.len() + pos
            )));
        }
        // Only base64url characters and dots: ASCII.
        parts.push(std::str::from_utf8(part).map_err(|e| TokenError::Malformed(e.to_string()))?);
        match end {
            Some(e) => rest = &rest[e + 1..],
            None => return Ok((parts, None)),
        }
    }
    Ok((parts, Some(rest)))
}

/// A detached-payload JWS: `header..signature`.
fn split_detached(s: &str) -> Result<Jws<'_>, TokenError> {
    let jws = split_jws(s)?;
    if !jws.payload.is_empty() {
        return Err(TokenError::Malformed("JWS payload is not detached".into()));
    }
    Ok(jws)
}

/// Verifies a detached-payload JWS over `header.payload` with jsonwebtoken.
fn verify_detached(
    jws: &Jws<'_>,
    header: &JwtHeader,
    payload: &[u8],
    key: &DecodingKey,
    alg: Algorithm,
) -> Result<(), TokenError> {
    if header.b64 != Some(false) || !header.crit.iter().any(|c| c == "b64") {
        return Err(TokenError::Malformed(
            "header must declare an unencoded payload (\"b64\":false, \"crit\":[\"b64\"])".into(),
        ));
    }
    let mut message = Vec::with_capacity(jws.header.len() + 1 + payload.len());
    message.extend_from_slice(jws.header.as_bytes());
    message.push(b'.');
    message.extend_from_slice(payload);
    let ok = jsonwebtoken::crypto::verify(jws.signature, &message, key, alg)
        .map_err(|e| TokenError::Malformed(format!("signature: {e}")))?;
    if ok {
        return Ok(());
    }
    // A cut-off token fails the signature too; tell it apart by its unfinished JSON.
    match serde_json::from_slice::<serde::de::IgnoredAny>(payload) {
        Err(e) if e.classify() == serde_json::error::Category::Eof => {
            Err(TokenError::Truncated("claims JSON ends early".into()))
        }
        _ => Err(TokenError::BadSignature),
    }
}

/// A PKI verifier's first framing part is a PSK token's JWS: wrong trust mode.
fn psk_token_here(first: &str) -> Option<TokenError> {
    let jws = split_jws(first).ok()?;
    let h = parse_header(jws.header).ok()?;
    (h.alg == "HS256").then(|| {
        TokenError::UnknownKey("token signed with a PSK (HS256); this node trusts a CA".into())
    })
}

/// Input ended inside the framing: a cut-off token, or something else entirely.
fn classify_incomplete(s: &str) -> TokenError {
    if s.starts_with("eyJ") || "eyJ".starts_with(s) {
        TokenError::Truncated("token ends before its claims".into())
    } else {
        TokenError::Malformed("not a trireme token".into())
    }
}
