//! trireme-token: the signed identity tokens that ride on SYN and SYN-ACK, the ACK
//! proof, and the keys behind them.
//!
//! Two trust modes, detected from the files in the key directory by [`load_keys`]:
//! - **PKI**: a cluster CA (Ed25519) signs each node's Ed25519 key into a compact
//!   node credential; tokens are EdDSA JWTs that carry that credential, and
//!   receivers trust the CA only.
//! - **PSK**: one shared secret, tokens are HS256 JWTs.
//!
//! Signing and verification go through `jsonwebtoken` with its `aws_lc_rs`
//! provider; call [`init`] at start-up (the key loaders call it too) so that a
//! missing provider is an error rather than a panic.
//!
//! See `docs/tokens.md` for the wire format.

mod claims;
mod error;
pub mod keys;
mod pem;
pub mod proof;
mod provider;
mod token;

pub use claims::{
    check_claims, Claims, Expect, TokenKind, CLOCK_SKEW_SECS, MAX_TOKEN_LIFETIME_SECS,
    TOKEN_TTL_SECS,
};
pub use error::TokenError;
pub use keys::load_keys;
pub use token::{Mode, Signer, Verifier, MAX_TOKEN_LEN};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use jsonwebtoken::crypto::CryptoProvider;

/// Installs jsonwebtoken's crypto provider (aws-lc-rs, with Ed25519 key pairs parsed
/// once instead of per signature) unless one is installed already, and checks it and
/// the system random source with a real round trip. Idempotent; cheap after the
/// first call. Every constructor of this crate calls it; call it first thing at
/// start-up to fail early with an error instead of a panic later.
pub fn init() -> Result<(), TokenError> {
    static CHECKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    CHECKED
        .get_or_init(|| {
            // Ours: aws-lc-rs with Ed25519 key pairs parsed once. If another provider
            // was installed (or chosen) before, that one stays and works, only slower.
            let _ = provider::PROVIDER.install_default();
            if CryptoProvider::try_get_default().is_none() {
                return Err("jsonwebtoken has no crypto provider (build needs exactly one of the aws_lc_rs / rust_crypto features)".to_string());
            }
            // A real round trip through the provider: HS256 sign + verify.
            let key = jsonwebtoken::EncodingKey::from_secret(b"trireme self-test")
                .map_err(|e| e.to_string())?;
            let dkey = jsonwebtoken::DecodingKey::from_secret(b"trireme self-test")
                .map_err(|e| e.to_string())?;
            let sig = jsonwebtoken::crypto::sign(b"x.y", &key, jsonwebtoken::Algorithm::HS256)
                .map_err(|e| e.to_string())?;
            let ok = jsonwebtoken::crypto::verify(
                &sig,
                b"x.y",
                &dkey,
                jsonwebtoken::Algorithm::HS256,
            )
            .map_err(|e| e.to_string())?;
            if !ok {
                return Err("provider self-test: HS256 signature did not verify".into());
            }
            let mut buf = [0u8; 16];
            SystemRandom::new()
                .fill(&mut buf)
                .map_err(|_| "system random source failed".to_string())?;
            Ok(())
        })
        .clone()
        .map_err(TokenError::Crypto)
}

/// `N` bytes from the system's secure random source.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], TokenError> {
    let mut buf = [0u8; N];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| TokenError::Crypto("system random source failed".into()))?;
    Ok(buf)
}

/// A fresh 16-byte nonce for a token.
pub fn new_nonce() -> Result<[u8; 16], TokenError> {
    random_bytes()
}

/// Now, in unix seconds (what `iat`, `exp` and `verify`'s `now` use).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn init_finds_the_provider() {
        super::init().unwrap();
        super::init().unwrap();
    }
}
