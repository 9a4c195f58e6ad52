//! Signer and Verifier: compact JWS tokens signed and verified with jsonwebtoken.
//!
//! Wire form (ASCII):
//! - PKI: `<node credential JWT>~<token JWT>`; the token JWT is EdDSA-signed by the
//!   node key named in the credential, the credential is EdDSA-signed by the CA.
//! - PSK: `<token JWT>`, HS256 with the shared secret, `kid` names the secret.

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

/// A compact JWS split into its parts.
struct Jws<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
    /// `header.payload`, the signing input.
    message: &'a str,
}

fn split_jws(s: &str) -> Result<Jws<'_>, TokenError> {
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

/// Verifies a node credential against the CA. Pure apart from the crypto.
pub(crate) fn verify_credential(
    cred: &str,
    ca_kid: &str,
    ca_key: &DecodingKey,
    now: u64,
) -> Result<CredentialClaims, TokenError> {
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
    match header.kid.as_deref() {
        Some(kid) if kid == ca_kid => {}
        other => {
            return Err(TokenError::UntrustedIssuer(format!(
                "node credential issued by CA {}, this node trusts CA {ca_kid}",
                other.unwrap_or("(no kid)")
            )))
        }
    }
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
    Ok(claims)
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
    /// Everything before the claims: `credential~header.` (PKI) or `header.` (PSK).
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
        let header = b64(br#"{"alg":"EdDSA"}"#);
        let prefix = format!("{credential}~{header}.");
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
        let header = b64(format!(r#"{{"alg":"HS256","kid":"{kid}"}}"#).as_bytes());
        Ok(Signer {
            inner: Arc::new(SignerInner {
                mode: Mode::Psk,
                alg: Algorithm::HS256,
                key,
                prefix: format!("{header}."),
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
        self.inner.prefix.len() + 1 + self.signature_len()
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
        let mut out = String::with_capacity(
            self.inner.prefix.len() + payload.len() * 4 / 3 + 4 + self.signature_len(),
        );
        out.push_str(&self.inner.prefix);
        URL_SAFE_NO_PAD.encode_string(payload.as_bytes(), &mut out);
        let message = &out[self.inner.cred_len..];
        let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &self.inner.key, self.inner.alg)
            .map_err(|e| TokenError::Crypto(format!("signing: {e}")))?;
        out.push('.');
        out.push_str(&sig);
        Ok(out.into_bytes())
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
        ca_kid: String,
        ca_key: DecodingKey,
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
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

impl Verifier {
    /// PKI verifier trusting the CA whose raw Ed25519 public key is given.
    pub(crate) fn pki(ca_public: &[u8]) -> Self {
        Verifier {
            inner: Arc::new(VerifierInner {
                trust: Trust::Pki {
                    ca_kid: key_id(CA_KID_DOMAIN, ca_public),
                    ca_key: DecodingKey::from_ed_der(ca_public),
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
        if let Some(pos) = token.iter().position(|b| !is_token_byte(*b)) {
            return Err(TokenError::Malformed(format!(
                "unexpected byte 0x{:02x} at offset {pos}",
                token[pos]
            )));
        }
        // Only ASCII from here on.
        let s = std::str::from_utf8(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        let claims = match &self.inner.trust {
            Trust::Pki {
                ca_kid,
                ca_key,
                cache,
            } => {
                let Some((cred, jwt)) = s.split_once('~') else {
                    return Err(classify_without_credential(s));
                };
                if jwt.contains('~') {
                    return Err(TokenError::Malformed("more than one '~'".into()));
                }
                let node = self.node_credential(cred, ca_kid, ca_key, cache, now)?;
                let jws = split_jws(jwt)?;
                let header = parse_header(jws.header)?;
                if header.alg != "EdDSA" {
                    return Err(TokenError::UnknownKey(format!(
                        "token signed with {}, node credentials are EdDSA",
                        header.alg
                    )));
                }
                check_sig_len(jws.signature, ED25519_SIG_B64)?;
                if !jws_verifies(&jws, &node.key, Algorithm::EdDSA)? {
                    return Err(TokenError::BadSignature);
                }
                let claims = decode_claims(jws.payload)?;
                if claims.node != node.claims.sub {
                    return Err(TokenError::BadCredential(format!(
                        "token claims node {:?} but carries the credential of {:?}",
                        claims.node, node.claims.sub
                    )));
                }
                claims
            }
            Trust::Psk { kid, key } => {
                if s.contains('~') {
                    return Err(TokenError::UnknownKey(
                        "token carries a node credential (PKI); this node uses a PSK".into(),
                    ));
                }
                let jws = split_jws(s)?;
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
                if !jws_verifies(&jws, key, Algorithm::HS256)? {
                    return Err(TokenError::BadSignature);
                }
                decode_claims(jws.payload)?
            }
        };
        check_claims(&claims, expect, now)?;
        Ok(claims)
    }

    fn node_credential(
        &self,
        cred: &str,
        ca_kid: &str,
        ca_key: &DecodingKey,
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
        let claims = verify_credential(cred, ca_kid, ca_key, now)?;
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

fn decode_claims(payload: &str) -> Result<Claims, TokenError> {
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|e| TokenError::Malformed(format!("claims: {e}")))?;
    parse_payload(&json)
}

/// A PKI verifier got input without `~`: a PSK token, or a cut-off PKI token.
fn classify_without_credential(s: &str) -> TokenError {
    if let Ok(jws) = split_jws(s) {
        if let Ok(h) = parse_header(jws.header) {
            if h.alg == "HS256" {
                return TokenError::UnknownKey(
                    "token signed with a PSK (HS256); this node trusts a CA".into(),
                );
            }
        }
    }
    if s.bytes().all(|b| is_token_byte(b) && b != b'~') && s.starts_with("eyJ") {
        TokenError::Truncated("no token after the node credential".into())
    } else {
        TokenError::Malformed("not a trireme token".into())
    }
}
