//! Token decoding on attacker input: `Verifier::verify` must never panic, and never
//! accept anything but what our own keys signed.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use trireme_token::{keys, load_keys, Expect, Verifier};

struct Keys {
    _dir: tempfile::TempDir,
    pki: Verifier,
    psk: Verifier,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("tempdir");
    keys::init_pki(&dir.path().join("pki"), "fuzz-node").expect("init_pki");
    keys::init_psk(&dir.path().join("psk")).expect("init_psk");
    Keys {
        pki: load_keys(&dir.path().join("pki")).expect("load pki").1,
        psk: load_keys(&dir.path().join("psk")).expect("load psk").1,
        _dir: dir,
    }
});

fuzz_target!(|data: &[u8]| {
    let k = &*KEYS;
    let now = trireme_token::now_unix();
    for v in [&k.pki, &k.psk] {
        // Random input cannot carry a valid signature of keys made in this process.
        assert!(v.verify(data, &Expect::syn(1), now).is_err());
        assert!(v
            .verify(data, &Expect::syn_ack(1, 2, [0; 16]), now)
            .is_err());
    }
});
