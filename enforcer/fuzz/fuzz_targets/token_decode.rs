//! Verifier::verify on arbitrary bytes never panics, in PSK and in PKI mode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use trireme_token::{Expect, Verifier};

fn verifiers() -> &'static (Verifier, Verifier) {
    static V: OnceLock<(Verifier, Verifier)> = OnceLock::new();
    V.get_or_init(|| {
        let psk = Verifier::from_psk(b"fuzzing-psk-0123456789abcdef0123456789").unwrap();
        let dir = std::env::temp_dir().join(format!("trireme-fuzz-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        trireme_token::keys::init_pki(&dir, "fuzz-node").unwrap();
        let (_, pki) = trireme_token::load_keys(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        (psk, pki)
    })
}

fuzz_target!(|data: &[u8]| {
    let (psk, pki) = verifiers();
    let isn = data
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0);
    for expect in [Expect::syn(isn), Expect::syn_ack(isn, isn ^ 1, [7; 16])] {
        let _ = psk.verify(data, &expect, 1_800_000_000);
        let _ = pki.verify(data, &expect, 1_800_000_000);
    }
});
