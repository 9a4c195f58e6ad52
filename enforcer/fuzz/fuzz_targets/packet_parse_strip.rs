//! parse / strip / attach / synack_to_rst never panic on any input; whatever attach
//! produces parses back to the same packet plus our token, has correct checksums, and
//! strip(attach(p)) == p for every packet attach accepts (after one canonicalising
//! round, which fixes checksums and drops bytes beyond the IP length).
#![no_main]

use libfuzzer_sys::fuzz_target;
use trireme_enforcer::packet::{attach, parse, strip, synack_to_rst, verify_checksums};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, pkt)) = data.split_first() else {
        return;
    };
    let _ = parse(pkt);
    let _ = synack_to_rst(pkt);
    if let Ok(s) = strip(pkt) {
        verify_checksums(&s.packet).expect("stripped packet has correct checksums");
        let v = parse(&s.packet).expect("stripped packet parses");
        assert!(v.token.is_none());
        let orig = parse(pkt).expect("strippable packet parses");
        assert_eq!(v.payload, orig.payload);
        assert_eq!(&pkt[s.token.clone()], orig.token.unwrap());
    }
    // a token of 1..=256 bytes derived from the selector byte
    let token: Vec<u8> = (0..=sel).map(|i| i.wrapping_mul(31) ^ sel).collect();
    let Ok(a) = attach(pkt, &token, 65_535) else {
        return;
    };
    verify_checksums(&a).expect("attached packet has correct checksums");
    let before = parse(pkt).expect("attachable packet parses");
    let after = parse(&a).expect("attached packet parses");
    assert_eq!(after.token, Some(&token[..]));
    assert_eq!(
        (after.src, after.dst, after.src_port, after.dst_port),
        (before.src, before.dst, before.src_port, before.dst_port)
    );
    assert_eq!(
        (after.seq, after.ack, after.flags),
        (before.seq, before.ack, before.flags)
    );
    assert_eq!(after.payload, before.payload);
    let canon = strip(&a).expect("attached packet strips").packet;
    assert_eq!(parse(&canon).expect("canonical packet parses").token, None);
    let again = attach(&canon, &token, 65_535).expect("canonical packet takes the token");
    assert_eq!(again, a);
    assert_eq!(strip(&again).expect("strips").packet, canon);
});
