//! Key files: creating a CA, node keys and credentials, a PSK; loading them.
//!
//! Files (PEM unless noted), written 0600 into directories created 0700:
//! - `ca.key`   CA private key, Ed25519 PKCS#8 (`PRIVATE KEY`); only where the CA lives
//! - `ca.crt`   CA public key, Ed25519 SubjectPublicKeyInfo (`PUBLIC KEY`)
//! - `node.key` this node's private key, Ed25519 PKCS#8 (`PRIVATE KEY`)
//! - `node.crt` this node's credential: a compact JWT signed by the CA (one line)
//! - `psk.key`  a 32-byte shared secret (`TRIREME PSK`)

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use jsonwebtoken::{Algorithm, EncodingKey};

use crate::error::TokenError;
use crate::pem;
use crate::token::{b64, key_id, verify_credential, CredentialClaims, TrustedCas, CA_KID_DOMAIN};
use crate::{Signer, Verifier};

pub const CA_KEY: &str = "ca.key";
pub const CA_CRT: &str = "ca.crt";
pub const NODE_KEY: &str = "node.key";
pub const NODE_CRT: &str = "node.crt";
pub const PSK_KEY: &str = "psk.key";

/// A new credential is valid from this many seconds before its issuing, so that
/// nodes whose clocks lag the issuer's accept it at once.
pub const CREDENTIAL_BACKDATE_SECS: u64 = 300;

/// How long a node credential is valid by default: one year.
pub const DEFAULT_CREDENTIAL_VALIDITY_SECS: u64 = 365 * 24 * 3600;

const PSK_LABEL: &str = "TRIREME PSK";
const PSK_LEN: usize = 32;
/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), followed by the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Options for writing keys.
#[derive(Debug, Clone)]
pub struct Options {
    /// Replace existing key files (otherwise existing files are an error).
    pub force: bool,
    /// Start of a new node credential's validity, unix seconds (`None`: now minus
    /// [`CREDENTIAL_BACKDATE_SECS`]).
    pub valid_from: Option<u64>,
    /// Validity of a new node credential, in seconds.
    pub validity_secs: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            force: false,
            valid_from: None,
            validity_secs: DEFAULT_CREDENTIAL_VALIDITY_SECS,
        }
    }
}

/// Checks a node name: a DNS subdomain as Kubernetes requires for node names
/// (lowercase letters, digits, '-', '.', at most 253, alphanumeric at both ends).
pub fn validate_node_name(node: &str) -> Result<(), String> {
    if node.is_empty() || node.len() > 253 {
        return Err(format!("node name {node:?} must have 1 to 253 characters"));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !node.chars().all(ok_char) || !node.starts_with(alnum) || !node.ends_with(alnum) {
        return Err(format!(
            "node name {node:?} must be lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

fn crypto(what: &str) -> TokenError {
    TokenError::Crypto(format!("{what} failed"))
}

fn generate_ed25519() -> Result<(Vec<u8>, Vec<u8>), TokenError> {
    let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| crypto("Ed25519 key generation"))?;
    let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(|_| crypto("Ed25519 key"))?;
    Ok((doc.as_ref().to_vec(), pair.public_key().as_ref().to_vec()))
}

fn spki(public: &[u8]) -> Vec<u8> {
    let mut der = ED25519_SPKI_PREFIX.to_vec();
    der.extend_from_slice(public);
    der
}

fn make_credential(
    ca_pkcs8: &[u8],
    ca_public: &[u8],
    node: &str,
    node_public: &[u8],
    opts: &Options,
) -> Result<String, TokenError> {
    let iat = opts
        .valid_from
        .unwrap_or_else(|| crate::now_unix().saturating_sub(CREDENTIAL_BACKDATE_SECS));
    let claims = CredentialClaims {
        sub: node.to_string(),
        pk: b64(node_public),
        iat,
        exp: iat.saturating_add(opts.validity_secs),
    };
    let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
    header.typ = None;
    header.kid = Some(key_id(CA_KID_DOMAIN, ca_public));
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(ca_pkcs8))
        .map_err(|e| TokenError::Crypto(format!("signing the node credential: {e}")))
}

// ---- files ----------------------------------------------------------------------

fn mode_of(path: &Path) -> Option<u32> {
    fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

/// Makes sure `dir` can hold keys: creates it 0700, or checks an existing one.
fn prepare_dir(dir: &Path) -> Result<bool, TokenError> {
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(TokenError::keys(dir, "exists and is not a directory")),
        Ok(m) => {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o022 != 0 {
                return Err(TokenError::keys(
                    dir,
                    format!(
                        "directory is writable by group or others (mode {mode:04o}); run: chmod 700 {}",
                        dir.display()
                    ),
                ));
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(TokenError::keys(dir, format!("cannot inspect: {e}"))),
    }
}

fn create_dir(dir: &Path) -> Result<(), TokenError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| TokenError::keys(dir, format!("cannot create directory: {e}")))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| TokenError::keys(dir, format!("cannot chmod 700: {e}")))
}

/// Writes every `(name, content)` into `dir` with mode 0600, all or nothing as far
/// as the checks go: existence (unless `force`) and the directory are checked before
/// anything is written; each file is written to a temporary name and renamed.
fn write_files(
    dir: &Path,
    files: &[(&str, String)],
    conflicting: &[&str],
    force: bool,
) -> Result<Vec<PathBuf>, TokenError> {
    let create = prepare_dir(dir)?;
    if !create {
        for name in conflicting {
            let p = dir.join(name);
            if p.exists() {
                return Err(TokenError::keys(
                    &p,
                    "belongs to the other trust mode; use a separate directory (or remove it)",
                ));
            }
        }
        if !force {
            for (name, _) in files {
                let p = dir.join(name);
                if p.exists() {
                    return Err(TokenError::keys(
                        &p,
                        "already exists; refusing to overwrite keys (use --force to replace them)",
                    ));
                }
            }
        }
    } else {
        create_dir(dir)?;
    }
    // Phase 1: every file to a temporary name; on any failure remove them all.
    let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
    for (name, content) in files {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let res = (|| -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(content.as_bytes())?;
            f.sync_all()?;
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))
        })();
        staged.push((tmp, path.clone()));
        if let Err(e) = res {
            for (t, _) in &staged {
                let _ = fs::remove_file(t);
            }
            return Err(TokenError::keys(&path, format!("cannot write: {e}")));
        }
    }
    // Phase 2: rename into place (atomic per file).
    let mut written = Vec::new();
    for (i, (tmp, path)) in staged.iter().enumerate() {
        if let Err(e) = fs::rename(tmp, path) {
            for (t, _) in &staged[i..] {
                let _ = fs::remove_file(t);
            }
            return Err(TokenError::keys(path, format!("cannot write: {e}")));
        }
        written.push(path.clone());
    }
    Ok(written)
}

fn read_text(path: &Path) -> Result<String, TokenError> {
    fs::read_to_string(path).map_err(|e| TokenError::keys(path, format!("cannot read: {e}")))
}

/// Reads a private key file, refusing it when group or others can access it.
fn read_private(path: &Path) -> Result<String, TokenError> {
    if let Some(mode) = mode_of(path) {
        if mode & 0o077 != 0 {
            return Err(TokenError::keys(
                path,
                format!(
                    "private key is accessible by group or others (mode {mode:04o}); run: chmod 600 {}",
                    path.display()
                ),
            ));
        }
    }
    read_text(path)
}

fn parse_ed25519_private(path: &Path, text: &str) -> Result<(Vec<u8>, Vec<u8>), TokenError> {
    let der = pem::decode(text, "PRIVATE KEY").map_err(|m| TokenError::keys(path, m))?;
    let pair = Ed25519KeyPair::from_pkcs8(&der)
        .map_err(|e| TokenError::keys(path, format!("not an Ed25519 PKCS#8 private key: {e}")))?;
    let public = pair.public_key().as_ref().to_vec();
    Ok((der, public))
}

/// Every Ed25519 public key in a `ca.crt` (one, or several during a CA rotation).
fn parse_ca_publics(path: &Path, text: &str) -> Result<Vec<Vec<u8>>, TokenError> {
    let ders = pem::decode_all(text, "PUBLIC KEY").map_err(|m| TokenError::keys(path, m))?;
    ders.into_iter()
        .enumerate()
        .map(|(i, der)| {
            if der.len() != ED25519_SPKI_PREFIX.len() + 32 || der[..12] != ED25519_SPKI_PREFIX {
                return Err(TokenError::keys(
                    path,
                    format!("PUBLIC KEY block {} is not an Ed25519 public key", i + 1),
                ));
            }
            Ok(der[12..].to_vec())
        })
        .collect()
}

// ---- public API -------------------------------------------------------------------

/// Creates a cluster CA and this node's key and credential in `dir`
/// (`ca.key`, `ca.crt`, `node.key`, `node.crt`). Refuses to overwrite keys.
pub fn init_pki(dir: &Path, node: &str) -> Result<Vec<PathBuf>, TokenError> {
    init_pki_with(dir, node, &Options::default())
}

/// [`init_pki`] with options.
pub fn init_pki_with(dir: &Path, node: &str, opts: &Options) -> Result<Vec<PathBuf>, TokenError> {
    crate::init()?;
    validate_node_name(node).map_err(|m| TokenError::keys(dir, m))?;
    let (ca_pkcs8, ca_public) = generate_ed25519()?;
    let (node_pkcs8, node_public) = generate_ed25519()?;
    let cred = make_credential(&ca_pkcs8, &ca_public, node, &node_public, opts)?;
    write_files(
        dir,
        &[
            (CA_KEY, pem::encode("PRIVATE KEY", &ca_pkcs8)),
            (CA_CRT, pem::encode("PUBLIC KEY", &spki(&ca_public))),
            (NODE_KEY, pem::encode("PRIVATE KEY", &node_pkcs8)),
            (NODE_CRT, format!("{cred}\n")),
        ],
        &[PSK_KEY],
        opts.force,
    )
}

/// Issues a key and credential for another node with the CA in `ca_dir`
/// (which must hold `ca.key` and `ca.crt`). `out_dir` gets `ca.crt`, `node.key`
/// and `node.crt`, never `ca.key`.
pub fn issue_node(ca_dir: &Path, node: &str, out_dir: &Path) -> Result<Vec<PathBuf>, TokenError> {
    issue_node_with(ca_dir, node, out_dir, &Options::default())
}

/// [`issue_node`] with options.
pub fn issue_node_with(
    ca_dir: &Path,
    node: &str,
    out_dir: &Path,
    opts: &Options,
) -> Result<Vec<PathBuf>, TokenError> {
    crate::init()?;
    validate_node_name(node).map_err(|m| TokenError::keys(out_dir, m))?;
    let ca_key_path = ca_dir.join(CA_KEY);
    if !ca_key_path.exists() {
        return Err(TokenError::keys(
            &ca_key_path,
            "missing: issue-node needs the CA's private key (the directory made by `triremectl keys init`)",
        ));
    }
    let (ca_pkcs8, ca_public) = parse_ed25519_private(&ca_key_path, &read_private(&ca_key_path)?)?;
    let ca_crt_path = ca_dir.join(CA_CRT);
    let ca_crt_text = read_text(&ca_crt_path)?;
    if !parse_ca_publics(&ca_crt_path, &ca_crt_text)?.contains(&ca_public) {
        return Err(TokenError::keys(
            &ca_crt_path,
            format!("holds no public key matching {}", ca_key_path.display()),
        ));
    }
    let (node_pkcs8, node_public) = generate_ed25519()?;
    let cred = make_credential(&ca_pkcs8, &ca_public, node, &node_public, opts)?;
    write_files(
        out_dir,
        &[
            (CA_CRT, ca_crt_text),
            (NODE_KEY, pem::encode("PRIVATE KEY", &node_pkcs8)),
            (NODE_CRT, format!("{cred}\n")),
        ],
        &[PSK_KEY],
        opts.force,
    )
}

/// Creates a random 32-byte shared secret in `dir/psk.key`. Refuses to overwrite.
pub fn init_psk(dir: &Path) -> Result<Vec<PathBuf>, TokenError> {
    init_psk_with(dir, &Options::default())
}

/// [`init_psk`] with options (only `force` applies).
pub fn init_psk_with(dir: &Path, opts: &Options) -> Result<Vec<PathBuf>, TokenError> {
    crate::init()?;
    let secret: [u8; PSK_LEN] = crate::random_bytes()?;
    write_files(
        dir,
        &[(PSK_KEY, pem::encode(PSK_LABEL, &secret))],
        &[NODE_KEY, NODE_CRT, CA_KEY],
        opts.force,
    )
}

/// Loads this node's signer and verifier from `dir`, detecting the trust mode:
/// `psk.key` → PSK; `ca.crt` + `node.key` + `node.crt` → PKI. Checks permissions
/// (private keys must be 0600 or stricter), that the credential is signed by the
/// CA, is currently valid and matches `node.key`.
pub fn load_keys(dir: &Path) -> Result<(Signer, Verifier), TokenError> {
    crate::init()?;
    let meta = fs::metadata(dir).map_err(|e| {
        TokenError::keys(
            dir,
            format!(
                "cannot open key directory ({e}); create keys with `triremectl keys init --dir {0}` or `triremectl keys psk --dir {0}`",
                dir.display()
            ),
        )
    })?;
    if !meta.is_dir() {
        return Err(TokenError::keys(dir, "is not a directory"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(TokenError::keys(
            dir,
            format!(
                "key directory is writable by group or others (mode {mode:04o}); run: chmod 700 {}",
                dir.display()
            ),
        ));
    }
    let has = |name: &str| dir.join(name).exists();
    if has(CA_KEY) {
        // Not used here, but a loose CA key is a problem worth stopping for.
        let _ = read_private(&dir.join(CA_KEY))?;
    }
    let pki = has(NODE_KEY) || has(NODE_CRT);
    if has(PSK_KEY) && pki {
        return Err(TokenError::keys(
            dir,
            "holds both psk.key and node keys; keep one trust mode per directory",
        ));
    }
    if has(PSK_KEY) {
        let path = dir.join(PSK_KEY);
        let text = read_private(&path)?;
        let secret = pem::decode(&text, PSK_LABEL).map_err(|m| TokenError::keys(&path, m))?;
        if secret.len() < PSK_LEN {
            return Err(TokenError::keys(
                &path,
                format!(
                    "secret has {} bytes, needs at least {PSK_LEN}",
                    secret.len()
                ),
            ));
        }
        return Ok((Signer::from_psk(&secret)?, Verifier::from_psk(&secret)?));
    }
    if !pki {
        let hint = if has(CA_KEY) || has(CA_CRT) {
            "holds only CA files; issue this node's key with `triremectl keys issue-node`"
        } else {
            "holds no keys (expected psk.key, or ca.crt + node.key + node.crt); create them with `triremectl keys init` or `triremectl keys psk`"
        };
        return Err(TokenError::keys(dir, hint));
    }
    for name in [CA_CRT, NODE_KEY, NODE_CRT] {
        if !has(name) {
            return Err(TokenError::keys(
                dir.join(name),
                "missing: PKI mode needs ca.crt, node.key and node.crt",
            ));
        }
    }
    let ca_crt_path = dir.join(CA_CRT);
    let cas = TrustedCas::new(&parse_ca_publics(&ca_crt_path, &read_text(&ca_crt_path)?)?);
    let node_key_path = dir.join(NODE_KEY);
    let (node_pkcs8, node_public) =
        parse_ed25519_private(&node_key_path, &read_private(&node_key_path)?)?;
    let node_crt_path = dir.join(NODE_CRT);
    let cred = read_text(&node_crt_path)?.trim().to_string();
    let (claims, _) = verify_credential(&cred, &cas, crate::now_unix())
        .map_err(|e| TokenError::keys(&node_crt_path, format!("{e} (CA in {CA_CRT})")))?;
    if claims.pk != b64(&node_public) {
        return Err(TokenError::keys(
            &node_key_path,
            format!("does not match the public key in {NODE_CRT}"),
        ));
    }
    Ok((
        Signer::pki(&node_pkcs8, cred, claims.sub),
        Verifier::pki(cas),
    ))
}

/// What a key directory holds, for `triremectl keys show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The trust mode `load_keys` uses for this directory.
    pub mode: crate::Mode,
    /// PKI: the node named by `node.crt`.
    pub node: Option<String>,
    /// PKI: key id of the CA that signed `node.crt`.
    /// PSK: the secret's key id (the `kid` in every token).
    pub key_id: String,
    /// PKI: key ids of every CA in `ca.crt` (tokens of nodes issued by other CAs are
    /// rejected). PSK: empty.
    pub trusted_cas: Vec<String>,
    /// PKI: validity of `node.crt`, unix seconds (from, until).
    pub valid: Option<(u64, u64)>,
    /// Whether `ca.key` is present (this directory can issue node keys).
    pub has_ca_key: bool,
}

/// Loads `dir` exactly as [`load_keys`] does and describes it.
pub fn describe(dir: &Path) -> Result<KeyInfo, TokenError> {
    let (signer, _) = load_keys(dir)?;
    let has_ca_key = dir.join(CA_KEY).exists();
    match signer.mode() {
        crate::Mode::Psk => {
            let path = dir.join(PSK_KEY);
            let secret = pem::decode(&read_private(&path)?, PSK_LABEL)
                .map_err(|m| TokenError::keys(&path, m))?;
            Ok(KeyInfo {
                mode: crate::Mode::Psk,
                node: None,
                key_id: key_id(crate::token::PSK_KID_DOMAIN, &secret),
                trusted_cas: Vec::new(),
                valid: None,
                has_ca_key,
            })
        }
        crate::Mode::Pki => {
            let ca_crt_path = dir.join(CA_CRT);
            let publics = parse_ca_publics(&ca_crt_path, &read_text(&ca_crt_path)?)?;
            let cas = TrustedCas::new(&publics);
            let cred = read_text(&dir.join(NODE_CRT))?;
            let (claims, ca_kid) = verify_credential(cred.trim(), &cas, crate::now_unix())?;
            Ok(KeyInfo {
                mode: crate::Mode::Pki,
                node: Some(claims.sub),
                key_id: ca_kid,
                trusted_cas: publics.iter().map(|p| key_id(CA_KID_DOMAIN, p)).collect(),
                valid: Some((claims.iat, claims.exp)),
                has_ca_key,
            })
        }
    }
}
