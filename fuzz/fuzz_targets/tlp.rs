//! A TLP on its own: every accessor, `Repr::parse`, and `emit` of what parsed into a buffer of
//! `buffer_len()` bytes, which must parse back to the same `Repr`.
#![no_main]

use emulator::wire::tlp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = tlp::Packet::new_checked(data) else { return };
    let _ = (p.fmt(), p.tlp_type(), p.kind(), p.traffic_class(), p.td(), p.ep(), p.attr(), p.length_dw());
    let _ = (p.first_be(), p.last_be(), p.address(), p.status(), p.bcm(), p.byte_count(), p.lower_address());
    let _ = (p.payload_declared_len(), p.payload(), p.payload_truncated(), p.trailing_len());
    let Ok(repr) = tlp::Repr::parse(&p) else { return };
    let _ = (repr.header_len(), repr.payload_len());
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(&mut tlp::Packet::new_unchecked(&mut buf[..]));
    let back = tlp::Packet::new_checked(&buf[..]).expect("an emitted TLP is long enough");
    assert_eq!(tlp::Repr::parse(&back).expect("an emitted TLP parses"), repr);
    if let tlp::Repr::MemRead(req) = repr {
        for mps in [64, 128, 256, 4096] {
            let _ = req.completion_chunks(mps).take(4096).count();
        }
    }
});
