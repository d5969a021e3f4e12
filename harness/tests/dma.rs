//! The requester against the endpoint over loopback UDP, on a raw image holding a known
//! pattern: exact bytes, UR past the image, write policy, faults, garbage.

mod support;

use emulator::endpoint::{EndpointConfig, FaultSpec, ResponderConfig};
use emulator::mem::{MemError, PhysAddr, PhysMem, ReadOp};
use emulator::wire::tlp::DeviceId;
use support::{image, pattern, requester, serve, BASE};

fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed;
    move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        emulator::endpoint::pattern::splitmix64(s)
    }
}

#[rstest::rstest]
#[case::mps_256_mrrs_512(256, "mrrs=512")]
#[case::mps_64_mrrs_4096(64, "mrrs=4096&tags=32")]
#[case::mps_4096_one_port(4096, "mrrs=4096&tags=16&stride=16")]
fn random_sizes_and_alignments_are_exact(#[case] mps: u32, #[case] options: &str) {
    let len = 8 << 20;
    let img = image(len);
    let cfg = EndpointConfig { responder: ResponderConfig { mps, ..Default::default() }, ..Default::default() };
    let (ep, addr) = serve(&img.path, cfg);
    let req = requester(addr, options);
    let mut next = rng(u64::from(mps));
    for i in 0..600 {
        let size = match i % 3 {
            0 => (next() % 16 + 1) as usize,
            1 => (next() % 600 + 1) as usize,
            _ => (next() % 20_000 + 1) as usize,
        };
        let a = BASE + next() % (len - size as u64);
        let mut buf = vec![0u8; size];
        if i % 2 == 0 {
            req.read_phys(PhysAddr(a), &mut buf).unwrap();
        } else {
            req.read_blocking(PhysAddr(a), &mut buf).unwrap();
        }
        assert!(buf == pattern(a, size), "read {i}: {size} bytes at {a:#x}");
    }
    let s = req.stats();
    assert_eq!((s.reads, s.timeouts, s.ur), (600, 0, 0), "{s}");
    let c = ep.stop().unwrap();
    assert_eq!(c.reads_ok, s.requests, "{c}");
    assert_eq!(c.payload_bytes, s.bytes);
}

#[test]
fn reads_past_the_image_fail_with_ur_and_the_first_bad_address() {
    let img = image(1 << 20);
    let (ep, addr) = serve(&img.path, EndpointConfig::default());
    let req = requester(addr, "mrrs=512");
    let end = BASE + (1 << 20);
    // straddling the end: the request holding the end fails
    let mut buf = vec![0u8; 3000];
    match req.read_phys(PhysAddr(end - 1000), &mut buf) {
        Err(MemError::Completion { addr, status }) => {
            assert_eq!(status, "UR");
            assert!(addr.0 <= end && addr.0 > end - 1000, "{addr}");
        }
        other => panic!("expected UR, got {other:?}"),
    }
    // below the image, and far above it (4DW)
    for a in [BASE - 8, 0x10, 0x7_0000_0000] {
        let e = req.read_blocking(PhysAddr(a), &mut [0u8; 4]).unwrap_err();
        assert!(matches!(&e, MemError::Completion { status, .. } if status == "UR"), "{e}");
        assert_eq!(e.addr(), PhysAddr(a));
    }
    // a batch mixes successes and failures, one result per op
    let mut bufs = vec![vec![0u8; 64]; 4];
    let addrs = [BASE, end, BASE + 4096, end + 4096];
    let mut ops: Vec<ReadOp<'_>> =
        bufs.iter_mut().zip(addrs).map(|(b, a)| ReadOp { addr: PhysAddr(a), buf: b }).collect();
    let r = req.read_batch(&mut ops);
    assert!(r[0].is_ok() && r[1].is_err() && r[2].is_ok() && r[3].is_err(), "{r:?}");
    assert_eq!(bufs[2], pattern(BASE + 4096, 64));
    let c = ep.stop().unwrap();
    assert_eq!(c.reads_ur, req.stats().ur);
    assert!(c.reads_ur >= 6);
}

#[test]
fn allowed_writes_change_reads_but_not_the_file() {
    let img = image(1 << 20);
    let before = std::fs::read(&img.path).unwrap();
    let cfg = EndpointConfig {
        responder: ResponderConfig { allow_write: true, ..Default::default() },
        ..Default::default()
    };
    let (ep, addr) = serve(&img.path, cfg);
    let req = requester(addr, "");
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 1) as u8).collect();
    let at = BASE + 0x1ffd; // unaligned, crosses pages
    req.write_for_testing(PhysAddr(at), &data).unwrap();
    let mut got = vec![0u8; 5100];
    req.read_phys(PhysAddr(at - 50), &mut got).unwrap();
    let mut want = pattern(at - 50, 5100);
    want[50..5050].copy_from_slice(&data);
    assert!(got == want, "read-back differs from the write");
    let c = ep.stop().unwrap();
    assert!(c.writes_applied > 0 && c.writes_refused == 0, "{c}");
    assert!(std::fs::read(&img.path).unwrap() == before, "the image file changed");
}

#[test]
fn writes_without_permission_are_refused_and_counted() {
    let img = image(1 << 20);
    let (ep, addr) = serve(&img.path, EndpointConfig::default());
    let req = requester(addr, "");
    req.write_for_testing(PhysAddr(BASE + 0x100), &[0xaa; 600]).unwrap();
    let mut got = vec![0u8; 600];
    req.read_phys(PhysAddr(BASE + 0x100), &mut got).unwrap();
    assert_eq!(got, pattern(BASE + 0x100, 600));
    let c = ep.stop().unwrap();
    // 600 bytes at 0x100 in 256-byte writes: 3 MWr
    assert_eq!((c.writes_refused, c.writes_applied), (3, 0), "{c}");
}

#[test]
fn requester_id_comes_from_the_messaging_port() {
    let img = image(1 << 16);
    let mut cfg = EndpointConfig::default();
    cfg.responder.identity.dev_id = DeviceId::new(0x3b, 0, 0);
    let (ep, addr) = serve(&img.path, cfg);
    let req = requester(addr, "requester=auto");
    assert_eq!(req.requester_id(), DeviceId(0x3b00));
    let mut b = [0u8; 16];
    req.read_phys(PhysAddr(BASE), &mut b).unwrap();
    assert_eq!(b.to_vec(), pattern(BASE, 16));
    assert_eq!(ep.stop().unwrap().messages, 1);
}

#[test]
fn faulty_network_64_mib_read_back_is_exact() {
    let len = support::LEN;
    let img = image(len);
    let fault: FaultSpec = "loss=0.1,dup=0.1,reorder=0.1,delay=200us,seed=2".parse().unwrap();
    let cfg = EndpointConfig { fault, ..Default::default() };
    let (ep, addr) = serve(&img.path, cfg);
    // A tag must rest longer than any stale copy of its completions can be late (see
    // harness::dma::tags): the injected delay is at most 200 us + 500 us reorder hold, but on a
    // loaded 2-core machine the endpoint thread itself can stall for milliseconds; reuse=auto
    // follows the stalls. 256 tags so resting ones do not starve the 48 in flight.
    let req = requester(addr, "tags=256&inflight=48&timeout=2ms&retries=30&reuse=auto");
    let chunk = 1 << 20;
    let mut buf = vec![0u8; chunk];
    for off in (0..len).step_by(chunk) {
        let mut ops: Vec<ReadOp<'_>> = buf
            .chunks_mut(64 << 10)
            .enumerate()
            .map(|(i, b)| ReadOp { addr: PhysAddr(BASE + off + (i as u64) * (64 << 10)), buf: b })
            .collect();
        for r in req.read_batch(&mut ops) {
            r.unwrap();
        }
        let want = pattern(BASE + off, chunk);
        if buf != want {
            let first = buf.iter().zip(&want).position(|(a, b)| a != b).unwrap();
            let last = buf.iter().zip(&want).rposition(|(a, b)| a != b).unwrap();
            let a = BASE + off + first as u64;
            // where do the wrong bytes come from? pattern words are unique
            let w0 = (first + 7) & !7;
            let word = u64::from_le_bytes(buf[w0..w0 + 8].try_into().unwrap());
            let src = (0..(support::LEN / 8)).map(|i| BASE / 8 + i).find(|&i| emulator::endpoint::pattern::splitmix64(i) == word);
            panic!("bytes differ at {a:#x} ({} bytes span), word at {:#x} came from {:?}; stats {}", last - first + 1, BASE + off + w0 as u64, src.map(|i| format!("{:#x}", i * 8)), req.stats());
        }
    }
    let s = req.stats();
    let c = ep.stop().unwrap();
    eprintln!("requester: {s}\nendpoint: {c}");
    assert_eq!(s.bytes, len);
    assert!(s.retries > 1000, "loss must have caused retries: {s}");
    assert!(s.duplicates + s.stale > 1000, "duplicates must have been dropped: {s}");
    assert!(c.fault_dropped > 0 && c.fault_duplicated > 0 && c.fault_reordered > 0 && c.fault_delayed > 0, "{c}");
}

#[test]
fn malformed_storm_does_not_stop_the_endpoint() {
    use std::net::{SocketAddrV4, UdpSocket};
    let img = image(1 << 20);
    let (ep, addr) = serve(&img.path, EndpointConfig::default());
    let req = requester(addr, "");
    let storm = UdpSocket::bind(SocketAddrV4::new(support::loopback(), 0)).unwrap();
    let mut next = rng(99);
    let mut sent = 0u64;
    for i in 0..20_000u32 {
        let len = match i % 4 {
            0 => (next() % 24) as usize,
            1 => (next() % 200) as usize,
            2 => 9000 + (next() % 1000) as usize, // oversized
            _ => 30,
        };
        let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 4 == 3 {
            d[6] = 0x4a; // a CplD sent to the completer: valid framing, not a request
        }
        let port = if i % 10 == 0 { 0x2fff } else { 0x3000 + (next() % 16) as u16 };
        if storm.send_to(&d, SocketAddrV4::new(addr, port)).is_ok() {
            sent += 1;
        }
        if i % 1000 == 0 {
            let mut b = vec![0u8; 777];
            req.read_phys(PhysAddr(BASE + u64::from(i)), &mut b).unwrap();
            assert_eq!(b, pattern(BASE + u64::from(i), 777));
        }
    }
    // still answering, exactly
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut b = vec![0u8; 4096];
    req.read_phys(PhysAddr(BASE + 12345), &mut b).unwrap();
    assert_eq!(b, pattern(BASE + 12345, 4096));
    let c = ep.stop().unwrap();
    eprintln!("{c}");
    assert!(c.dropped() > sent / 2, "garbage must be counted as dropped: {c}");
    assert!(c.oversized > 0 && c.malformed > 0 && c.unsupported > 0, "{c}");
}

#[test]
fn two_endpoints_on_two_loopback_addresses() {
    let a = image(1 << 20);
    let b = support::Image { ..image(2 << 20) };
    let (ep_a, addr_a) = serve(&a.path, EndpointConfig::default());
    let (ep_b, addr_b) = serve(&b.path, EndpointConfig::default());
    let ra = requester(addr_a, "");
    let rb = requester(addr_b, "");
    let mut x = [0u8; 64];
    ra.read_phys(PhysAddr(BASE + (1 << 20) - 64), &mut x).unwrap();
    assert!(ra.read_phys(PhysAddr(BASE + (1 << 20)), &mut x).is_err());
    rb.read_phys(PhysAddr(BASE + (1 << 20)), &mut x).unwrap();
    assert_eq!(x.to_vec(), pattern(BASE + (1 << 20), 64));
    assert_eq!(ep_a.stop().unwrap().reads_ur, 1);
    assert_eq!(ep_b.stop().unwrap().reads_ur, 0);
}

#[test]
fn no_answer_is_a_timeout_after_the_retries() {
    // nobody listens at this address: every attempt times out
    let silent = support::loopback();
    let req = requester(silent, "requester=1a:00.0&timeout=5ms&retries=2");
    let e = req.read_phys(PhysAddr(0x1000), &mut [0u8; 64]).unwrap_err();
    assert!(matches!(e, MemError::Timeout { addr: PhysAddr(0x1000), attempts: 3 }), "{e}");
    let s = req.stats();
    assert_eq!((s.timeouts, s.retries, s.requests), (1, 2, 3), "{s}");
}

/// A misbehaving completer, built on the codec: before the right completions of each read it
/// sends one with another tag, one for another requester, one whose byte count does not fit,
/// and it repeats the first right one. The requester must deliver exact bytes.
#[test]
fn stale_and_duplicate_completions_are_dropped() {
    use emulator::wire::nettlp;
    use emulator::wire::tlp::{self, Completion, Repr};
    use std::net::{SocketAddrV4, UdpSocket};
    let addr = support::loopback();
    let sock = UdpSocket::bind(SocketAddrV4::new(addr, 0x3000)).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
    let completer = std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        // until the requester is done (no request for 2 s)
        while let Ok((n, src)) = sock.recv_from(&mut buf) {
            let outer = nettlp::Packet::new_checked(&buf[..n]).unwrap();
            let Repr::MemRead(req) = Repr::parse(&tlp::Packet::new_checked(outer.payload()).unwrap()).unwrap()
            else {
                panic!("not a read")
            };
            let (a, len) = req.bytes();
            let data = pattern(a, len as usize);
            let dgram = |c: Completion, chunk_addr: u64, chunk_len: usize| {
                let repr = Repr::Completion(c);
                let mut d = vec![0u8; 6 + repr.buffer_len()];
                let mut o = nettlp::Packet::new_unchecked(&mut d[..]);
                let mut p = tlp::Packet::new_unchecked(o.payload_mut());
                repr.emit(&mut p);
                let off = (chunk_addr & 3) as usize;
                let from = (chunk_addr - a) as usize;
                p.payload_mut()[off..off + chunk_len].copy_from_slice(&data[from..from + chunk_len]);
                d
            };
            let chunks: Vec<_> = req.completion_chunks(64).collect();
            let right: Vec<Vec<u8>> = chunks
                .iter()
                .map(|ch| dgram(Completion::for_chunk(&req, DeviceId(0), ch), ch.addr, ch.len as usize))
                .collect();
            let first = chunks[0];
            let mut wrong_tag = Completion::for_chunk(&req, DeviceId(0), &first);
            wrong_tag.tag ^= 0x10;
            let mut wrong_req = Completion::for_chunk(&req, DeviceId(0), &first);
            wrong_req.requester = DeviceId(0x9900);
            let mut wrong_bc = Completion::for_chunk(&req, DeviceId(0), &first);
            wrong_bc.byte_count += 4;
            for c in [wrong_tag, wrong_req, wrong_bc] {
                sock.send_to(&dgram(c, first.addr, first.len as usize), src).unwrap();
            }
            sock.send_to(&right[0], src).unwrap();
            sock.send_to(&right[0], src).unwrap(); // duplicate while the read is pending
            for d in right.iter().skip(1).rev() {
                sock.send_to(d, src).unwrap(); // the rest in reverse order
            }
        }
    });
    let req = requester(addr, "requester=1a:00.0&tags=16&stride=16&mrrs=4096&timeout=1s");
    for i in 0..20u64 {
        let a = BASE + i * 1000 + 3;
        let mut b = vec![0u8; 300];
        req.read_blocking(PhysAddr(a), &mut b).unwrap();
        assert_eq!(b, pattern(a, 300), "read {i}");
    }
    let s = req.stats();
    drop(req);
    completer.join().unwrap();
    // some reads cross a 4 KiB page and take two requests; each request drew 3 stale
    // completions and 1 repeat, a duplicate while the request is pending (stale once a
    // one-chunk request is already complete)
    assert!(s.requests > 20, "{s}");
    assert_eq!((s.stale + s.duplicates, s.retries, s.timeouts), (4 * s.requests, 0, 0), "{s}");
    assert!(s.duplicates >= 20, "{s}");
}
