//! ACK proof checking on attacker input: never panics, never accepts a proof that
//! does not open the commitment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trireme_token::proof;

fuzz_target!(|data: &[u8]| {
    let secret = [7u8; 32];
    let commit = proof::commit(&secret);
    let good = proof::make(&secret, &[1; 16], 10, 20);
    let r = proof::check(&commit, data, &[1; 16], 10, 20);
    assert_eq!(r.is_ok(), data == good.as_slice());
});
