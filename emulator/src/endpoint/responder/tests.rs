//! Responder tests: replies checked byte by byte against the real capture where we have one,
//! against the PCIe split rules and the known pattern otherwise.

use super::*;
use crate::pattern::{pattern_bytes, PatternMem};
use crate::mem::PhysRange;
use crate::wire::tlp::Kind;

const SRC: SocketAddrV4 = SocketAddrV4::new(std::net::Ipv4Addr::new(127, 0, 0, 9), 0x3000);
const REQ: PortClass = PortClass::Requester { tag: 0 };

fn responder(mps: u32, allow_write: bool) -> Responder<PatternMem> {
    let mem = PatternMem::new(vec![
        PhysRange::new(0x1000, 0x10_0000),
        PhysRange::new(0xc000_0000, 0xc010_0000),
        PhysRange::new(0x1_0000_0000, 0x1_0001_0000),
    ]);
    Responder::new(mem, ResponderConfig { mps, allow_write, ..Default::default() }, Instant::now())
}

fn datagram(repr: Repr, data: &[u8]) -> Vec<u8> {
    let mut d = vec![0u8; nettlp::HEADER_LEN + repr.buffer_len()];
    let mut outer = nettlp::Packet::new_unchecked(&mut d[..]);
    nettlp::Repr::default().emit(&mut outer);
    let mut inner = tlp::Packet::new_unchecked(outer.payload_mut());
    repr.emit(&mut inner);
    inner.payload_mut()[..data.len()].copy_from_slice(data);
    d
}

fn mrd(tag: u8, addr: u64, len: u32) -> Vec<u8> {
    datagram(Repr::MemRead(MemRequest::new(DeviceId(0x1a00), tag, addr, len).unwrap()), &[])
}

fn run(r: &Responder<PatternMem>, port: PortClass, d: &[u8]) -> (Vec<Vec<u8>>, Snapshot) {
    let mut out = Outbox::new(128);
    let mut tally = Snapshot::default();
    r.handle(Instant::now(), port, SRC, d, &mut out, &mut tally);
    ((0..out.len()).map(|i| out.get(i).to_vec()).collect(), tally)
}

/// Parse completions; return (header, data bytes per the header's own rules).
fn completions(replies: &[Vec<u8>]) -> Vec<(Completion, Vec<u8>)> {
    replies
        .iter()
        .map(|d| {
            let outer = nettlp::Packet::new_checked(&d[..]).unwrap();
            let p = tlp::Packet::new_checked(outer.payload()).unwrap();
            assert!(!p.payload_truncated());
            assert_eq!(p.trailing_len(), 0, "no bytes after the payload");
            let Repr::Completion(c) = Repr::parse(&p).unwrap() else { panic!("not a completion") };
            (c, p.payload()[c.data_range()].to_vec())
        })
        .collect()
}

fn pattern(addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    pattern_bytes(addr, &mut v);
    v
}

#[test]
fn first_cpld_matches_the_root_complex_capture() {
    // root-complex/mrd-512byte-rc.pcap frame 18, TLP header: CplD 64 DW, completer 00:00.0,
    // byte count 512, requester 1a:00.0, tag 0, lower address 0
    const RC_CPLD: [u8; 12] = [0x4a, 0x00, 0x00, 0x40, 0x00, 0x00, 0x02, 0x00, 0x1a, 0x00, 0x00, 0x00];
    let r = responder(256, false);
    let (replies, t) = run(&r, REQ, &mrd(0, 0xc000_0000, 512));
    assert_eq!(replies.len(), 2);
    assert_eq!(&replies[0][6..18], &RC_CPLD);
    assert_eq!(replies[0].len(), 6 + 12 + 256);
    let cs = completions(&replies);
    assert_eq!(cs[1].0.byte_count, 256);
    let data: Vec<u8> = cs.iter().flat_map(|(_, d)| d.clone()).collect();
    assert_eq!(data, pattern(0xc000_0000, 512));
    assert_eq!((t.datagrams, t.reads_ok, t.completions, t.payload_bytes), (1, 1, 2, 512));
}

#[rstest::rstest]
#[case(0x1003, 300, 128)]
#[case(0x1003, 300, 256)]
#[case(0x1fff, 1, 256)]
#[case(0x1ffe, 4, 256)]
#[case(0x2001, 4095, 256)]
#[case(0x2000, 4096, 4096)]
#[case(0x2040, 4096, 64)]
#[case(0x1_0000_0ffd, 7, 256)]
fn reads_split_on_rcb_and_reassemble(#[case] addr: u64, #[case] len: u32, #[case] mps: u32) {
    let r = responder(mps, false);
    let (replies, t) = run(&r, REQ, &mrd(7, addr, len));
    let cs = completions(&replies);
    let mut next = addr;
    let mut data = Vec::new();
    for (i, (c, d)) in cs.iter().enumerate() {
        assert_eq!((c.tag, c.requester, c.status), (7, DeviceId(0x1a00), CplStatus::SC));
        assert_eq!(u64::from(c.byte_count), addr + u64::from(len) - next, "byte count of #{i}");
        assert_eq!(c.lower_address, (next & 0x7f) as u8);
        assert!(u32::from(c.length_dw) * 4 <= mps);
        assert_eq!(c.is_last(), i + 1 == cs.len());
        next += d.len() as u64;
        if i + 1 < cs.len() {
            assert_eq!(next % 64, 0, "non-final completion ends off an RCB line");
        }
        data.extend_from_slice(d);
    }
    assert_eq!(data, pattern(addr, len as usize));
    assert_eq!(t.payload_bytes, u64::from(len));
}

#[test]
fn unbacked_reads_get_one_ur_completion() {
    let r = responder(256, false);
    for (addr, len) in [(0x0, 4u32), (0xffc, 8), (0xf_fffc, 16), (0x5000_0000, 512), (0xc010_0000, 4)] {
        let (replies, t) = run(&r, REQ, &mrd(3, addr, len));
        assert_eq!(replies.len(), 1, "{addr:#x}");
        let (c, d) = &completions(&replies)[0];
        assert_eq!((c.status, c.tag, c.length_dw, c.byte_count), (CplStatus::UR, 3, 0, len as u16));
        assert_eq!(c.lower_address, (addr & 0x7f) as u8);
        assert!(d.is_empty());
        assert_eq!((t.reads_ur, t.completions, t.reads_ok), (1, 1, 0));
        // Cpl, not CplD: 3DW header only
        assert_eq!(replies[0].len(), 6 + 12);
        let p = tlp::Packet::new_checked(&replies[0][6..]).unwrap();
        assert_eq!(p.kind(), Kind::Cpl);
    }
}

#[test]
fn zero_length_read_gets_one_dw() {
    let r = responder(256, false);
    let (replies, t) = run(&r, REQ, &mrd(1, 0x1004, 0));
    let cs = completions(&replies);
    assert_eq!(cs.len(), 1);
    assert_eq!((cs[0].0.length_dw, cs[0].0.byte_count, cs[0].0.status), (1, 1, CplStatus::SC));
    assert_eq!(t.reads_ok, 1);
}

fn mwr(addr: u64, data: &[u8]) -> Vec<u8> {
    let req = MemRequest::new(DeviceId(0x1a00), 2, addr, data.len() as u32).unwrap();
    let mut payload = vec![0u8; usize::from(req.length_dw) * 4];
    let off = (addr & 3) as usize;
    payload[off..off + data.len()].copy_from_slice(data);
    datagram(Repr::MemWrite(req), &payload)
}

fn read_back(r: &Responder<PatternMem>, addr: u64, len: u32) -> Vec<u8> {
    let (replies, _) = run(r, REQ, &mrd(0, addr, len));
    completions(&replies).into_iter().flat_map(|(_, d)| d).collect()
}

#[test]
fn writes_are_refused_by_default() {
    let r = responder(256, false);
    let (replies, t) = run(&r, REQ, &mwr(0x2002, b"hello"));
    assert!(replies.is_empty());
    assert_eq!((t.writes_refused, t.writes_applied), (1, 0));
    assert_eq!(read_back(&r, 0x2000, 16), pattern(0x2000, 16));
    assert_eq!(r.memory().pages_written(), 0);
}

#[test]
fn allowed_writes_land_in_the_overlay_only() {
    let r = responder(256, true);
    let (replies, t) = run(&r, REQ, &mwr(0x2ffe, b"across a page"));
    assert!(replies.is_empty(), "MWr is posted");
    assert_eq!(t.writes_applied, 1);
    let mut want = pattern(0x2ff0, 48);
    want[14..27].copy_from_slice(b"across a page");
    assert_eq!(read_back(&r, 0x2ff0, 48), want);
    // the image underneath is unchanged
    let mut img = vec![0u8; 48];
    r.memory().base().read_phys(PhysAddr(0x2ff0), &mut img).unwrap();
    assert_eq!(img, pattern(0x2ff0, 48));
    // unbacked writes change nothing
    let (_, t) = run(&r, REQ, &mwr(0xffe, b"abcd"));
    assert_eq!(t.writes_unbacked, 1);
}

#[test]
fn write_byte_enables_are_honoured() {
    let r = responder(256, true);
    // one DW at 0x3000 with bytes 1 and 3 enabled (non-contiguous, legal for 1-DW writes)
    let mut req = MemRequest::new(DeviceId(0x1a00), 0, 0x3000, 4).unwrap();
    req.first_be = 0b1010;
    let d = datagram(Repr::MemWrite(req), &[0xa0, 0xa1, 0xa2, 0xa3]);
    let (_, t) = run(&r, REQ, &d);
    assert_eq!(t.writes_applied, 1);
    let mut want = pattern(0x3000, 4);
    want[1] = 0xa1;
    want[3] = 0xa3;
    assert_eq!(read_back(&r, 0x3000, 4), want);
    assert_eq!(enabled_runs(3, 0b1100, 0b0011), vec![(2, 8)]);
    assert_eq!(enabled_runs(1, 0b1001, 0), vec![(0, 1), (3, 1)]);
}

#[test]
fn messages_are_answered_like_the_driver() {
    let r = responder(256, false);
    let (replies, t) = run(&r, PortClass::Messaging, &2i32.to_le_bytes());
    assert_eq!(replies, vec![vec![0x00, 0x1a]]);
    let (replies, _) = run(&r, PortClass::Messaging, &1i32.to_le_bytes());
    assert_eq!(replies, vec![vec![0u8; 8]]);
    let (replies, _) = run(&r, PortClass::Messaging, &3i32.to_le_bytes());
    assert_eq!(replies[0].len(), 192);
    assert_eq!(t.messages, 1);
    let (replies, t) = run(&r, PortClass::Messaging, &9i32.to_le_bytes());
    assert!(replies.is_empty());
    assert_eq!(t.unsupported, 1);
}

#[test]
fn garbage_is_counted_and_dropped() {
    let r = responder(256, true);
    let cpl = {
        let req = MemRequest::new(DeviceId(0x1a00), 0, 0x1000, 4).unwrap();
        datagram(Repr::Completion(Completion::error(&req, DeviceId(0), CplStatus::UR)), &[])
    };
    let mut truncated_mwr = mwr(0x2000, &[1; 64]);
    truncated_mwr.truncate(40);
    let mut bad_be = mrd(0, 0x1000, 64);
    bad_be[6 + 7] = 0x0f; // multi-DW request with last BE 0
    let cases: Vec<(Vec<u8>, bool)> = vec![
        (vec![], true),
        (vec![0; 5], true),
        (vec![0; 6 + 11], true),
        (truncated_mwr, true),
        (bad_be, true),
        (cpl, false),
        ({ let mut d = mrd(0, 0x1000, 4); d[6] = 0xa0; d }, false), // the capture's 0xa0 TLP
    ];
    for (d, malformed) in cases {
        let (replies, t) = run(&r, REQ, &d);
        assert!(replies.is_empty(), "{d:02x?}");
        assert_eq!((t.malformed, t.unsupported), (u64::from(malformed), u64::from(!malformed)), "{d:02x?}");
        assert_eq!(t.datagrams, 1);
    }
}

#[test]
fn random_bytes_never_panic_and_are_counted_once() {
    let r = responder(64, true);
    let mut rng = crate::endpoint::fault::Rng::new(1);
    let mut total = Snapshot::default();
    for i in 0..20_000u32 {
        let len = (rng.next_u64() % 80) as usize;
        let mut d: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if i % 3 == 0 && d.len() > 6 {
            d[6] &= 0x7f; // bias towards MRd/MWr formats
        }
        let port = if i % 17 == 0 { PortClass::Messaging } else { REQ };
        let mut out = Outbox::new(128);
        r.handle(Instant::now(), port, SRC, &d, &mut out, &mut total);
        assert!(out.len() <= MAX_REPLIES_PER_REQUEST);
    }
    let outcomes = total.reads() + total.writes_applied + total.writes_refused + total.writes_unbacked
        + total.messages + total.dropped();
    assert_eq!(total.datagrams, 20_000);
    assert_eq!(outcomes, total.datagrams, "{total}");
}
