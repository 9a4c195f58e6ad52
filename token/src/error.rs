use std::path::PathBuf;

use crate::claims::TokenKind;

/// The one error type of trireme-token.
///
/// Every way a token can be rejected has its own variant, so callers (and their
/// logs and metrics) can tell a forged token from a replayed or expired one.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Not a trireme token at all: bad framing, bad base64, bad JSON, missing fields.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// A prefix of a token: a part or the signature is missing or too short.
    #[error("truncated token: {0}")]
    Truncated(String),
    /// The signature does not match the header and claims (tampered, or signed by
    /// a key other than the one the credential names).
    #[error("bad token signature")]
    BadSignature,
    /// The token names a key this verifier does not have (another PSK, or another
    /// trust mode than ours).
    #[error("unknown signing key: {0}")]
    UnknownKey(String),
    /// The node credential was issued by a CA we do not trust.
    #[error("untrusted issuer: {0}")]
    UntrustedIssuer(String),
    /// The node credential claims our CA but does not verify, is expired, or does
    /// not belong to the node that signed the token.
    #[error("bad node credential: {0}")]
    BadCredential(String),
    /// `exp` is in the past (beyond the allowed clock skew).
    #[error("token expired at {exp}, now {now}")]
    Expired { exp: u64, now: u64 },
    /// `iat` is in the future (beyond the allowed clock skew).
    #[error("token not yet valid: issued at {iat}, now {now}")]
    NotYetValid { iat: u64, now: u64 },
    /// The token belongs to another connection (ISN or echoed nonce differ).
    #[error("token bound to another connection: {0}")]
    WrongBinding(String),
    /// A SYN token where a SYN-ACK token was expected, or the reverse.
    #[error("wrong token kind: expected {expected}, got {got}")]
    WrongKind { expected: TokenKind, got: TokenKind },
    /// The ACK proof does not match the commitment, nonce or sequence numbers.
    #[error("ACK proof does not match")]
    ProofMismatch,
    /// Claims given to `Signer::sign` that cannot make a valid token.
    #[error("invalid claims: {0}")]
    InvalidClaims(String),
    /// A key file or key directory problem, with the file and what to do.
    #[error("{}: {msg}", path.display())]
    Keys { path: PathBuf, msg: String },
    /// The crypto provider is missing or failed (key generation, randomness).
    #[error("crypto provider: {0}")]
    Crypto(String),
}

impl TokenError {
    pub(crate) fn keys(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        TokenError::Keys {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// A short stable name of the variant, for metrics labels and logs.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) => "malformed",
            TokenError::Truncated(_) => "truncated",
            TokenError::BadSignature => "bad_signature",
            TokenError::UnknownKey(_) => "unknown_key",
            TokenError::UntrustedIssuer(_) => "untrusted_issuer",
            TokenError::BadCredential(_) => "bad_credential",
            TokenError::Expired { .. } => "expired",
            TokenError::NotYetValid { .. } => "not_yet_valid",
            TokenError::WrongBinding(_) => "wrong_binding",
            TokenError::WrongKind { .. } => "wrong_kind",
            TokenError::ProofMismatch => "proof_mismatch",
            TokenError::InvalidClaims(_) => "invalid_claims",
            TokenError::Keys { .. } => "keys",
            TokenError::Crypto(_) => "crypto",
        }
    }
}
