//! Parsers of untrusted bytes never panic: every real frame, cut at every length and mutated
//! at random (deterministically seeded, bounded), goes through the decoder, the replay
//! builder and the TLP/NetTLP/message codecs; damaged pcap files end in an error, not a hang.

mod common;

use common::{capture, EXPECTED};
use emulator::capture::{decode_frame, PcapReader, RecordKind, ReplayBuilder};
use emulator::mem::{PhysAddr, PhysMem};
use emulator::wire::{msg, nettlp, tlp};

/// xorshift64*: a small deterministic generator, so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn all_frames() -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for (rel, _) in EXPECTED {
        for f in PcapReader::open(&capture(rel)).expect("open") {
            frames.push(f.expect("frame").data);
        }
    }
    assert!(
        frames.len() > 3000,
        "expected the full capture set, got {} frames",
        frames.len()
    );
    frames
}

/// Everything a hostile datagram can reach.
fn exercise(bytes: &[u8], replay: &mut ReplayBuilder) {
    let r = decode_frame(1, 0, bytes.len() as u32, bytes);
    assert_eq!(r.index, 1);
    if bytes.len() < 14 {
        assert_eq!(r.kind, RecordKind::Truncated);
    }
    if matches!(
        r.kind,
        RecordKind::NotNetTlp | RecordKind::Truncated | RecordKind::Unknown
    ) {
        assert!(r.reason.is_some(), "{r:?}");
    }
    serde_json::to_string(&r).expect("serializes");
    replay.feed_frame(bytes);
    // the codecs directly, at every layer offset a frame could have
    for off in [0, 6, 42, 46, 48] {
        let Some(b) = bytes.get(off..) else { continue };
        if let Ok(p) = tlp::Packet::new_checked(b) {
            let _ = (
                p.kind(),
                p.address(),
                p.payload(),
                p.payload_truncated(),
                p.trailing_len(),
            );
            if let Ok(repr) = tlp::Repr::parse(&p) {
                let mut buf = vec![0u8; repr.buffer_len()];
                repr.emit(&mut tlp::Packet::new_unchecked(&mut buf[..]));
                assert_eq!(
                    tlp::Repr::parse(&tlp::Packet::new_checked(&buf[..]).expect("own"))
                        .expect("own"),
                    repr
                );
                if let tlp::Repr::MemRead(req) = repr {
                    assert!(req.completion_chunks(256).count() <= 4096 / 64 + 1);
                }
            }
        }
        if let Ok(p) = nettlp::Packet::new_checked(b) {
            let _ = nettlp::Repr::parse(&p);
        }
        if let Ok(p) = msg::Packet::new_checked(b) {
            if let Ok(req) = msg::Request::parse(&p) {
                let _ = msg::Response::parse(req, b);
            }
        }
    }
}

#[test]
fn truncated_real_frames_never_panic() {
    let mut replay = ReplayBuilder::new();
    // every length of every 5th frame (the frames of a capture differ little but in size)
    for f in all_frames().iter().step_by(5) {
        for n in 0..=f.len() {
            exercise(&f[..n], &mut replay);
        }
    }
    let m = replay.finish("truncations".into());
    let _ = m.read_phys(PhysAddr(0xc000_0000), &mut [0u8; 64]);
}

#[test]
fn mutated_real_frames_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut replay = ReplayBuilder::new();
    for f in all_frames() {
        for _ in 0..16 {
            let mut m = f.clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(m.len());
                m[i] = rng.next() as u8;
            }
            if rng.below(4) == 0 {
                m.truncate(rng.below(m.len() + 1));
            }
            exercise(&m, &mut replay);
        }
    }
    for _ in 0..5000 {
        let len = rng.below(200);
        let junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        exercise(&junk, &mut replay);
    }
    let m = replay.finish("mutations".into());
    for r in m.ranges().iter().take(1000) {
        let mut buf = vec![0u8; r.len().min(4096) as usize];
        m.read_phys(r.start, &mut buf).expect("known ranges read");
    }
}

#[test]
fn damaged_pcap_files_end_in_an_error_not_a_hang() {
    let dir = std::env::temp_dir().join(format!("emulator-robust-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let mut rng = Rng(42);
    for rel in [
        "root-complex/mrd-512byte-rc.pcap",
        "simple-nic/simple-nic-ping.pcap",
    ] {
        let orig = std::fs::read(capture(rel)).expect("read");
        let frames = PcapReader::open(&capture(rel)).expect("open").count();
        for case in 0..40 {
            let mut bytes = orig.clone();
            if case % 2 == 0 {
                bytes.truncate(24 + rng.below(orig.len() - 24));
            } else {
                for _ in 0..4 {
                    let i = 24 + rng.below(orig.len() - 24);
                    bytes[i] = rng.next() as u8;
                }
            }
            let path = dir.join(format!("damaged-{case}.pcap"));
            std::fs::write(&path, &bytes).expect("write");
            let Ok(reader) = PcapReader::open(&path) else {
                continue;
            };
            let mut n = 0;
            for f in reader {
                match f {
                    Ok(f) => {
                        let _ = decode_frame(f.index, f.time_ns, f.frame_len, &f.data);
                        n += 1;
                    }
                    Err(_) => break,
                }
                assert!(
                    n <= frames + 1,
                    "reader runs past the frames the file can hold"
                );
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
