//! jsonwebtoken's crypto provider for trireme: the aws-lc-rs provider, except that
//! EdDSA signers reuse the parsed key pair. jsonwebtoken builds a signer per call,
//! and parsing an Ed25519 PKCS#8 key costs as much as a signature (it derives the
//! public key), which would double the cost of every token.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use aws_lc_rs::signature::Ed25519KeyPair;
use jsonwebtoken::crypto::{aws_lc, CryptoProvider, JwtSigner};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey};

/// Parsed Ed25519 keys by their PKCS#8 bytes (a node has one or two keys).
static ED25519_KEYS: LazyLock<RwLock<HashMap<Vec<u8>, Arc<Ed25519KeyPair>>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));
const ED25519_KEYS_MAX: usize = 64;

pub(crate) static PROVIDER: LazyLock<CryptoProvider> = LazyLock::new(|| CryptoProvider {
    signer_factory: new_signer,
    ..aws_lc::DEFAULT_PROVIDER.clone()
});

struct CachedEd25519(Arc<Ed25519KeyPair>);

impl jsonwebtoken::signature::Signer<Vec<u8>> for CachedEd25519 {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, jsonwebtoken::signature::Error> {
        Ok(self.0.sign(msg).as_ref().to_vec())
    }
}

impl JwtSigner for CachedEd25519 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

fn ed25519_pair(pkcs8: &[u8]) -> Result<Arc<Ed25519KeyPair>> {
    if let Some(pair) = ED25519_KEYS
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(pkcs8)
    {
        return Ok(pair.clone());
    }
    let pair = Arc::new(Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| ErrorKind::InvalidEddsaKey)?);
    let mut keys = ED25519_KEYS.write().unwrap_or_else(|p| p.into_inner());
    if keys.len() >= ED25519_KEYS_MAX {
        keys.clear();
    }
    keys.insert(pkcs8.to_vec(), pair.clone());
    Ok(pair)
}

fn new_signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    if *algorithm == Algorithm::EdDSA {
        if key.family() != AlgorithmFamily::Ed {
            return Err(ErrorKind::InvalidKeyFormat.into());
        }
        return Ok(Box::new(CachedEd25519(ed25519_pair(key.as_bytes())?)));
    }
    (aws_lc::DEFAULT_PROVIDER.signer_factory)(algorithm, key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;

    #[test]
    fn cached_signer_signs_like_the_default_provider() {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let key = EncodingKey::from_ed_der(doc.as_ref());
        let ours = (PROVIDER.signer_factory)(&Algorithm::EdDSA, &key).unwrap();
        let theirs = (aws_lc::DEFAULT_PROVIDER.signer_factory)(&Algorithm::EdDSA, &key).unwrap();
        // Ed25519 is deterministic: same key and message, same signature.
        assert_eq!(ours.try_sign(b"m").unwrap(), theirs.try_sign(b"m").unwrap());
        // Second use comes from the cache and still agrees.
        let again = (PROVIDER.signer_factory)(&Algorithm::EdDSA, &key).unwrap();
        assert_eq!(
            again.try_sign(b"m").unwrap(),
            theirs.try_sign(b"m").unwrap()
        );
        // A non-Ed key is refused, as by the default provider.
        let hs = EncodingKey::from_secret(b"secret").unwrap();
        assert!((PROVIDER.signer_factory)(&Algorithm::EdDSA, &hs).is_err());
    }
}
