//! A UDP payload as the endpoint receives it: NetTLP header + TLP, or a control message, and the
//! responder's whole handling of it (over pattern memory, writes allowed).
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::OnceLock;
use std::time::Instant;

use emulator::endpoint::outbox::Outbox;
use emulator::pattern::PatternMem;
use emulator::endpoint::{Responder, ResponderConfig, Snapshot};
use emulator::mem::PhysRange;
use emulator::wire::{msg, nettlp, tlp};
use libfuzzer_sys::fuzz_target;

fn responder() -> &'static Responder<PatternMem> {
    static R: OnceLock<Responder<PatternMem>> = OnceLock::new();
    R.get_or_init(|| {
        let mem = PatternMem::new(vec![PhysRange::new(0x1000, 0x10_0000), PhysRange::new(0xffff_ffff_ffff_0000, 0xffff_ffff_ffff_ffff)]);
        Responder::new(mem, ResponderConfig { mps: 256, allow_write: true, ..Default::default() }, Instant::now())
    })
}

fuzz_target!(|data: &[u8]| {
    let (sel, dgram) = data.split_first().map(|(s, d)| (*s, d)).unwrap_or((0, data));
    if let Ok(outer) = nettlp::Packet::new_checked(dgram) {
        let _ = nettlp::Repr::parse(&outer);
        if let Ok(p) = tlp::Packet::new_checked(outer.payload()) {
            let _ = (p.kind(), p.header_len(), p.payload(), p.payload_truncated(), p.tag(), p.requester());
            let _ = tlp::Repr::parse(&p);
        }
    }
    if let Ok(p) = msg::Packet::new_checked(dgram) {
        if let Ok(req) = msg::Request::parse(&p) {
            let _ = msg::Response::parse(req, dgram);
        }
    }
    let port = match sel % 3 {
        0 => nettlp::PortClass::Messaging,
        1 => nettlp::PortClass::Requester { tag: sel },
        _ => nettlp::PortClass::Adapter { tag_low: sel & 15 },
    };
    let src = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 9), 0x3000 + u16::from(sel & 15));
    let mut out = Outbox::new(64);
    let mut tally = Snapshot::default();
    responder().handle(Instant::now(), port, src, dgram, &mut out, &mut tally);
    // Every TLP the endpoint emits parses back (messaging replies are not TLPs).
    let tlp_port = !matches!(port, nettlp::PortClass::Messaging);
    for i in (0..out.len()).filter(|_| tlp_port) {
        let reply = out.get(i);
        if let Ok(outer) = nettlp::Packet::new_checked(reply) {
            if let Ok(p) = tlp::Packet::new_checked(outer.payload()) {
                assert!(tlp::Repr::parse(&p).is_ok(), "the endpoint emitted a TLP it cannot parse: {reply:02x?}");
            }
        }
    }
});
