//! The ACK proof.
//!
//! The client draws a random 32-byte secret `s` per connection and puts
//! `commit = SHA-256(s)` into its (signed) SYN token. Its handshake ACK carries
//! `s || HMAC-SHA256(key = s, "trireme-ack-proof-v1" || Ns || isn_c || isn_s)`
//! (ISNs big-endian). The server checks that `s` opens the commitment it verified
//! at the SYN and that the MAC binds the proof to its own nonce `Ns` and to both
//! ISNs. Nothing on the wire before the ACK lets anyone compute the MAC key, and a
//! proof from another connection fails on the nonce or the sequence numbers.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::hmac;

use crate::error::TokenError;

/// Length of the secret carried in the proof.
pub const SECRET_LEN: usize = 32;
/// Length of the MAC carried in the proof.
pub const MAC_LEN: usize = 32;
/// Length of a proof on the wire: the secret followed by the MAC.
pub const PROOF_LEN: usize = SECRET_LEN + MAC_LEN;

const DOMAIN: &[u8] = b"trireme-ack-proof-v1";

/// A fresh random secret for one connection.
///
/// Panics only if the operating system's random source fails, which
/// [`crate::init`] checks at start-up; use [`try_new_secret`] to handle it.
pub fn new_secret() -> [u8; SECRET_LEN] {
    try_new_secret().expect("system random source failed after init() checked it")
}

/// A fresh random secret, or an error when the system random source fails.
pub fn try_new_secret() -> Result<[u8; SECRET_LEN], TokenError> {
    crate::random_bytes()
}

/// The commitment to `secret` that goes into the SYN token: SHA-256(secret).
pub fn commit(secret: &[u8; SECRET_LEN]) -> [u8; 32] {
    let d = digest(&SHA256, secret);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn mac(secret: &[u8; SECRET_LEN], server_nonce: &[u8; 16], isn_c: u32, isn_s: u32) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(DOMAIN);
    ctx.update(server_nonce);
    ctx.update(&isn_c.to_be_bytes());
    ctx.update(&isn_s.to_be_bytes());
    ctx.sign()
}

/// The proof the client puts on its handshake ACK.
pub fn make(
    secret: &[u8; SECRET_LEN],
    server_nonce: &[u8; 16],
    isn_c: u32,
    isn_s: u32,
) -> [u8; PROOF_LEN] {
    let mut out = [0u8; PROOF_LEN];
    out[..SECRET_LEN].copy_from_slice(secret);
    out[SECRET_LEN..].copy_from_slice(mac(secret, server_nonce, isn_c, isn_s).as_ref());
    out
}

/// Checks a proof received on a handshake ACK against the commitment from the
/// client's SYN token, the server's own nonce and both ISNs.
pub fn check(
    commit_value: &[u8; 32],
    proof: &[u8],
    server_nonce: &[u8; 16],
    isn_c: u32,
    isn_s: u32,
) -> Result<(), TokenError> {
    if proof.len() < PROOF_LEN {
        return Err(TokenError::Truncated(format!(
            "ACK proof has {} bytes, needs {PROOF_LEN}",
            proof.len()
        )));
    }
    if proof.len() > PROOF_LEN {
        return Err(TokenError::Malformed(format!(
            "ACK proof has {} bytes, needs {PROOF_LEN}",
            proof.len()
        )));
    }
    let mut secret = [0u8; SECRET_LEN];
    secret.copy_from_slice(&proof[..SECRET_LEN]);
    verify_slices_are_equal(&commit(&secret), commit_value)
        .map_err(|_| TokenError::ProofMismatch)?;
    let expected = mac(&secret, server_nonce, isn_c, isn_s);
    verify_slices_are_equal(expected.as_ref(), &proof[SECRET_LEN..])
        .map_err(|_| TokenError::ProofMismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: [u8; 16] = [5; 16];

    #[test]
    fn good_proof_checks() {
        let s = new_secret();
        let p = make(&s, &NS, 10, 20);
        check(&commit(&s), &p, &NS, 10, 20).unwrap();
    }

    #[test]
    fn secrets_are_fresh() {
        assert_ne!(new_secret(), new_secret());
    }

    #[test]
    fn wrong_secret_fails() {
        let s = new_secret();
        let other = new_secret();
        let p = make(&other, &NS, 10, 20);
        assert!(matches!(
            check(&commit(&s), &p, &NS, 10, 20),
            Err(TokenError::ProofMismatch)
        ));
    }

    #[test]
    fn wrong_nonce_fails() {
        let s = new_secret();
        let p = make(&s, &[6; 16], 10, 20);
        assert!(matches!(
            check(&commit(&s), &p, &NS, 10, 20),
            Err(TokenError::ProofMismatch)
        ));
    }

    #[test]
    fn wrong_isns_fail() {
        let s = new_secret();
        let p = make(&s, &NS, 10, 20);
        for (c, sv) in [(11, 20), (10, 21), (20, 10)] {
            assert!(matches!(
                check(&commit(&s), &p, &NS, c, sv),
                Err(TokenError::ProofMismatch)
            ));
        }
    }

    #[test]
    fn tampered_mac_fails() {
        let s = new_secret();
        let mut p = make(&s, &NS, 10, 20);
        p[PROOF_LEN - 1] ^= 1;
        assert!(matches!(
            check(&commit(&s), &p, &NS, 10, 20),
            Err(TokenError::ProofMismatch)
        ));
    }

    #[test]
    fn truncated_and_overlong_proofs_fail() {
        let s = new_secret();
        let p = make(&s, &NS, 10, 20);
        for n in [0, 1, SECRET_LEN, PROOF_LEN - 1] {
            assert!(matches!(
                check(&commit(&s), &p[..n], &NS, 10, 20),
                Err(TokenError::Truncated(_))
            ));
        }
        let mut long = p.to_vec();
        long.push(0);
        assert!(matches!(
            check(&commit(&s), &long, &NS, 10, 20),
            Err(TokenError::Malformed(_))
        ));
    }
}
