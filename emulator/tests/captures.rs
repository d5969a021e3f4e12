//! The real NetTLP hardware captures: every frame decodes, pinned by snapshots; the facts
//! the captures' README states hold; replay and recording agree with the captured bytes.

mod common;

use common::{all_captures, capture, expected, Counts, EXPECTED};
use emulator::capture::{
    decode_file, link, FrameRecord, PcapReader, RecordKind, Recorder, ReplayMem,
};
use emulator::mem::{MemError, PhysAddr, PhysMem};
use emulator::wire::{nettlp, tlp};
use rstest::rstest;
use std::collections::{BTreeMap, HashMap};

fn counts(recs: &[FrameRecord]) -> Counts {
    let n = |k| recs.iter().filter(|r| r.kind == k).count();
    Counts {
        mrd: n(RecordKind::MRd),
        mwr: n(RecordKind::MWr),
        cpl: n(RecordKind::Cpl),
        cpld: n(RecordKind::CplD),
        unknown: n(RecordKind::Unknown),
    }
}

fn jsonl(recs: &[FrameRecord]) -> String {
    recs.iter()
        .map(|r| serde_json::to_string(r).expect("serialize"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn snapshot_name(rel: &str) -> String {
    rel.trim_end_matches(".pcap").replace('/', "__")
}

#[rstest]
#[case("nic-and-nvme/p4600/p4600-read-1blk.pcap")]
#[case("nic-and-nvme/p4600/p4600-read-32blk.pcap")]
#[case("nic-and-nvme/p4600/p4600-read-4blk.pcap")]
#[case("nic-and-nvme/p4600/p4600-read-64blk.pcap")]
#[case("nic-and-nvme/p4600/p4600-read-8blk.pcap")]
#[case("nic-and-nvme/p4600/p4600-write-1blk.pcap")]
#[case("nic-and-nvme/p4600/p4600-write-32blk.pcap")]
#[case("nic-and-nvme/p4600/p4600-write-4blk.pcap")]
#[case("nic-and-nvme/p4600/p4600-write-64blk.pcap")]
#[case("nic-and-nvme/p4600/p4600-write-8blk.pcap")]
#[case("nic-and-nvme/pm1725/pm1725-read-16blk.pcap")]
#[case("nic-and-nvme/pm1725/pm1725-read-1blk.pcap")]
#[case("nic-and-nvme/pm1725/pm1725-read-4blk.pcap")]
#[case("nic-and-nvme/pm1725/pm1725-read-8blk.pcap")]
#[case("nic-and-nvme/pm1725/pm1725-write-16blk.pcap")]
#[case("nic-and-nvme/pm1725/pm1725-write-1blk.pcap")]
#[case("nic-and-nvme/pm1725/pm1725-write-4blk.pcap")]
#[case("nic-and-nvme/pm1725/pm1725-write-8blk.pcap")]
#[case("nic-and-nvme/x520/x520-1024B-16pkt.pcap")]
#[case("nic-and-nvme/x520/x520-1024B-1pkt.pcap")]
#[case("nic-and-nvme/x520/x520-1024B-32pkt.pcap")]
#[case("nic-and-nvme/x520/x520-1500B-16pkt.pcap")]
#[case("nic-and-nvme/x520/x520-1500B-1pkt.pcap")]
#[case("nic-and-nvme/x520/x520-1500B-32pkt.pcap")]
#[case("nic-and-nvme/x520/x520-512B-16pkt.pcap")]
#[case("nic-and-nvme/x520/x520-512B-1pkt.pcap")]
#[case("nic-and-nvme/x520/x520-512B-32pkt.pcap")]
#[case("nic-and-nvme/x520/x520-64B-16pkt.pcap")]
#[case("nic-and-nvme/x520/x520-64B-1pkt.pcap")]
#[case("nic-and-nvme/x520/x520-64B-32pkt.pcap")]
#[case("nic-and-nvme/xl710/xl710-1024B-16pkt.pcap")]
#[case("nic-and-nvme/xl710/xl710-1024B-1pkt.pcap")]
#[case("nic-and-nvme/xl710/xl710-1024B-32pkt.pcap")]
#[case("nic-and-nvme/xl710/xl710-1500B-16pkt.pcap")]
#[case("nic-and-nvme/xl710/xl710-1500B-1pkt.pcap")]
#[case("nic-and-nvme/xl710/xl710-1500B-32pkt.pcap")]
#[case("nic-and-nvme/xl710/xl710-512B-16pkt.pcap")]
#[case("nic-and-nvme/xl710/xl710-512B-1pkt.pcap")]
#[case("nic-and-nvme/xl710/xl710-512B-32pkt.pcap")]
#[case("nic-and-nvme/xl710/xl710-64B-16pkt.pcap")]
#[case("nic-and-nvme/xl710/xl710-64B-1pkt.pcap")]
#[case("nic-and-nvme/xl710/xl710-64B-32pkt.pcap")]
#[case("root-complex/mrd-512byte-plx.pcap")]
#[case("root-complex/mrd-512byte-rc.pcap")]
#[case("simple-nic/simple-nic-ping.pcap")]

fn every_frame_decodes(#[case] rel: &str) {
    let recs = decode_file(&capture(rel)).expect("decode");
    assert_eq!(counts(&recs), expected(rel), "TLP kinds of {rel}");
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.index, i as u64 + 1);
        assert!(
            !matches!(
                r.kind,
                RecordKind::NotNetTlp | RecordKind::Truncated | RecordKind::Message
            ),
            "{rel} frame {}: {:?} {:?}",
            r.index,
            r.kind,
            r.reason
        );
        // truncated <=> the TLP payload is cut (these captures carry nothing after it). Some
        // captures record a cut frame with frame_len == captured_len, so the IPv4/UDP lengths,
        // not the pcap lengths, are what tell.
        if r.kind != RecordKind::Unknown {
            assert_eq!(
                r.truncated,
                r.payload_captured < r.payload_bytes,
                "{rel} frame {}",
                r.index
            );
            assert_eq!(r.trailing_bytes, Some(0), "{rel} frame {}", r.index);
        }
    }
    insta::assert_snapshot!(snapshot_name(rel), jsonl(&recs));
}

#[test]
fn every_capture_is_in_the_table() {
    let table: Vec<String> = EXPECTED.iter().map(|(p, _)| p.to_string()).collect();
    assert_eq!(
        all_captures(),
        table,
        "captures on disk vs tests/common/mod.rs EXPECTED (and the rstest cases)"
    );
}

#[test]
fn cli_prints_the_same_json_lines() {
    let rel = "root-complex/mrd-512byte-rc.pcap";
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_emulator"))
        .args(["decode", capture(rel).to_str().expect("utf-8 path")])
        .output()
        .expect("run emulator decode");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = jsonl(&decode_file(&capture(rel)).expect("decode")) + "\n";
    assert_eq!(String::from_utf8(out.stdout).expect("utf-8"), want);
}

#[test]
fn cli_fails_clearly_on_a_missing_file() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_emulator"))
        .args(["decode", "/nonexistent/x.pcap"])
        .output()
        .expect("run emulator decode");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.pcap"));
}

#[test]
fn the_two_0xa0_frames_are_unknown() {
    let recs = decode_file(&capture("nic-and-nvme/pm1725/pm1725-read-8blk.pcap")).expect("decode");
    let unknown: Vec<&FrameRecord> = recs
        .iter()
        .filter(|r| r.kind == RecordKind::Unknown)
        .collect();
    assert_eq!(
        unknown.iter().map(|r| r.index).collect::<Vec<_>>(),
        [136, 155]
    );
    for r in unknown {
        // first TLP byte 0xa0: Fmt 0b101 (reserved), Type 0
        assert_eq!((r.fmt, r.tlp_type), (Some(5), Some(0)));
        assert!(
            r.reason
                .as_deref()
                .is_some_and(|s| s.contains("Unknown(5)")),
            "{:?}",
            r.reason
        );
        assert_eq!(
            (r.tag, r.requester, r.address.as_deref()),
            (None, None, None)
        );
        assert!(r.seq.is_some());
    }
}

#[test]
fn vlan_tagged_frames_decode() {
    let recs = decode_file(&capture("root-complex/mrd-512byte-rc.pcap")).expect("decode");
    // tshark: frame 1 VLAN 100 (libtlp's MRd), frames 10-17 VLAN 101 (CplD), 18-19 untagged
    assert_eq!((recs[0].vlan, recs[0].kind), (Some(100), RecordKind::MRd));
    assert_eq!(recs[0].address.as_deref(), Some("0xc0000000"));
    assert_eq!(recs[0].length_dw, Some(128));
    for r in &recs[9..17] {
        assert_eq!(
            (r.vlan, r.kind),
            (Some(101), RecordKind::CplD),
            "frame {}",
            r.index
        );
    }
    assert_eq!(recs[17].vlan, None);
    // across all captures: 1808 tagged frames (tshark -T fields -e vlan.id), all decoded TLPs
    let mut tagged = 0;
    for (rel, _) in EXPECTED {
        for r in decode_file(&capture(rel)).expect("decode") {
            if r.vlan.is_some() {
                tagged += 1;
                assert!(matches!(
                    r.kind,
                    RecordKind::MRd | RecordKind::MWr | RecordKind::CplD | RecordKind::Unknown
                ));
            }
        }
    }
    assert_eq!(tagged, 1808);
}

#[test]
fn timestamps_are_nanoseconds_for_both_pcap_precisions() {
    // microsecond file (magic a1b2c3d4); values from `tshark -T fields -e frame.time_epoch`
    let us = decode_file(&capture("simple-nic/simple-nic-ping.pcap")).expect("decode");
    assert_eq!(us[0].time_ns, 1_568_818_308_210_015_000);
    assert_eq!(us[11].time_ns, 1_568_818_308_212_633_000);
    // nanosecond file (magic a1b23c4d)
    let ns = decode_file(&capture("root-complex/mrd-512byte-rc.pcap")).expect("decode");
    assert_eq!(ns[0].time_ns, 1_567_674_646_645_991_562);
    assert_eq!(ns[9].time_ns, 1_567_674_646_646_103_088);
    assert_eq!(ns[18].time_ns, 1_567_674_646_646_166_588);
}

#[test]
fn snap_length_cut_is_reported() {
    let recs = decode_file(&capture("root-complex/mrd-512byte-rc.pcap")).expect("decode");
    let r = &recs[17];
    assert_eq!((r.frame_len, r.captured_len), (316, 128));
    assert_eq!(
        (r.kind, r.byte_count, r.lower_address),
        (RecordKind::CplD, Some(512), Some(0))
    );
    assert_eq!(
        (r.payload_bytes, r.payload_captured, r.truncated),
        (Some(256), Some(68), true)
    );
    assert_eq!(
        r.requester.map(|d| d.to_string()).as_deref(),
        Some("1a:00.0")
    );
    assert_eq!(recs[18].byte_count, Some(256));
}

/// The captured data bytes of every successful CplD, placed by an independent, byte-by-byte
/// model: the CplD's first byte is at `read end - byte count` of the outstanding MRd with its
/// requester and tag; the read ends with the CplD that carries its last byte; later
/// completions overwrite earlier bytes. Returns (memory, CplDs placed, CplDs with no read).
fn model(rel: &str) -> (BTreeMap<u64, u8>, usize, usize) {
    let mut reads: HashMap<(u16, u8), (u64, u64)> = HashMap::new();
    let mut mem = BTreeMap::new();
    let (mut placed, mut orphans) = (0, 0);
    for frame in PcapReader::open(&capture(rel)).expect("open") {
        let frame = frame.expect("frame");
        let d = link::parse_udp(&frame.data).expect("udp");
        let nt = nettlp::Packet::new_checked(d.payload).expect("nettlp");
        let p = tlp::Packet::new_checked(nt.payload()).expect("tlp");
        match p.kind() {
            tlp::Kind::MRd => {
                let (a, n) =
                    tlp::request_bytes(p.address(), p.length_dw(), p.first_be(), p.last_be());
                reads.insert((p.mem_requester().0, p.mem_tag()), (a, a + u64::from(n)));
            }
            tlp::Kind::CplD => {
                let key = (p.cpl_requester().0, p.cpl_tag());
                let Some(&(_, end)) = reads.get(&key) else {
                    orphans += 1;
                    continue;
                };
                let addr = end - u64::from(p.byte_count());
                assert_eq!(
                    addr & 0x7f,
                    u64::from(p.lower_address()),
                    "{rel} frame {}",
                    frame.index
                );
                let skip = usize::from(p.lower_address() & 3);
                let n = (usize::from(p.length_dw()) * 4 - skip).min(usize::from(p.byte_count()));
                for (i, b) in p.payload().iter().skip(skip).take(n).enumerate() {
                    mem.insert(addr + i as u64, *b);
                }
                if n == usize::from(p.byte_count()) {
                    reads.remove(&key);
                }
                placed += 1;
            }
            _ => {}
        }
    }
    (mem, placed, orphans)
}

#[rstest]
#[case("root-complex/mrd-512byte-rc.pcap")]
#[case("root-complex/mrd-512byte-plx.pcap")]
#[case("simple-nic/simple-nic-ping.pcap")]
#[case("nic-and-nvme/x520/x520-1500B-16pkt.pcap")]
#[case("nic-and-nvme/xl710/xl710-64B-32pkt.pcap")]
#[case("nic-and-nvme/p4600/p4600-write-8blk.pcap")]
#[case("nic-and-nvme/pm1725/pm1725-write-16blk.pcap")]
fn replay_returns_the_bytes_the_completions_carried(#[case] rel: &str) {
    let (want, placed, orphans) = model(rel);
    let replay = ReplayMem::from_pcap(&capture(rel)).expect("replay");
    let s = replay.stats();
    assert_eq!(
        (s.matched as usize, s.unmatched as usize),
        (placed, orphans),
        "{s:?}"
    );
    assert_eq!((s.inconsistent, s.error_status), (0, 0), "{s:?}");
    assert_eq!(placed + orphans, expected(rel).cpld);
    // The PLX capture sees each completion on both sides of the switch, after its read has
    // ended; pm1725-write-16blk has two CplD pairs for a tag whose second MRd was not captured.
    // Both are reported as unmatched rather than guessed.
    let expected_orphans = match rel {
        "root-complex/mrd-512byte-plx.pcap" => 2,
        "nic-and-nvme/pm1725/pm1725-write-16blk.pcap" => 4,
        _ => 0,
    };
    assert_eq!(orphans, expected_orphans);
    // every captured byte reads back, range by range
    let known: u64 = replay.ranges().iter().map(|r| r.len()).sum();
    assert_eq!(known as usize, want.len());
    for r in replay.ranges() {
        let mut buf = vec![0u8; r.len() as usize];
        replay
            .read_phys(r.start, &mut buf)
            .expect("known range reads");
        for (i, b) in buf.iter().enumerate() {
            assert_eq!(
                Some(b),
                want.get(&(r.start.0 + i as u64)),
                "{rel} at {:#x}",
                r.start.0 + i as u64
            );
        }
    }
    // bytes the snap length cut are Unknown, never zero-filled
    for u in replay.unknown_ranges() {
        assert!(matches!(
            replay.read_phys(u.start, &mut [0u8; 1]),
            Err(MemError::Unknown { .. })
        ));
        assert!(!want.contains_key(&u.start.0));
    }
    assert!(matches!(
        replay.read_phys(PhysAddr(0x10), &mut [0u8; 4]),
        Err(MemError::Unmapped { .. })
    ));
}

#[test]
fn root_complex_read_replays_512_bytes() {
    // the 512-byte read at 0xc0000000: 8 whole 64-byte CplDs through the switch side and
    // two 256-byte CplDs cut to 68 bytes; together they cover all 512 bytes
    let replay =
        ReplayMem::from_pcap(&capture("root-complex/mrd-512byte-rc.pcap")).expect("replay");
    assert_eq!(
        replay.ranges(),
        vec![emulator::mem::PhysRange::new(0xc000_0000, 0xc000_0200)]
    );
    let mut buf = [0xffu8; 512];
    replay
        .read_phys(PhysAddr(0xc000_0000), &mut buf)
        .expect("read");
    assert!(
        buf.iter().all(|&b| b == 0),
        "the captured host memory was zero"
    );
}

#[test]
fn recorder_output_decodes_like_the_original() {
    let rel = "simple-nic/simple-nic-ping.pcap";
    let dir = std::env::temp_dir().join(format!("emulator-rec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let out = dir.join("rerecorded.pcap");
    let original = decode_file(&capture(rel)).expect("decode");
    {
        let rec = Recorder::create(&out).expect("create");
        for frame in PcapReader::open(&capture(rel)).expect("open") {
            let frame = frame.expect("frame");
            let d = link::parse_udp(&frame.data).expect("udp");
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(frame.time_ns);
            rec.record(t, d.src, d.dst, d.payload).expect("record");
        }
        assert_eq!(rec.frames(), original.len() as u64);
    }
    let bytes = std::fs::read(&out).expect("read back");
    assert_eq!(
        bytes[..4],
        [0x4d, 0x3c, 0xb2, 0xa1],
        "nanosecond pcap magic"
    );
    let again = decode_file(&out).expect("decode recorded");
    assert_eq!(again.len(), original.len());
    for (a, b) in original.iter().zip(&again) {
        // everything but the Ethernet framing is identical
        let strip = |r: &FrameRecord| FrameRecord {
            frame_len: 0,
            captured_len: 0,
            vlan: None,
            ..r.clone()
        };
        assert_eq!(strip(a), strip(b));
        assert_eq!(b.captured_len, b.frame_len);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn recorder_writes_nanoseconds_and_valid_checksums() {
    use pnet_packet::ipv4::{checksum, Ipv4Packet};
    let dir = std::env::temp_dir().join(format!("emulator-rec2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let out = dir.join("one.pcap");
    let src = "127.0.0.2:12293".parse().expect("addr");
    let dst = "127.0.0.1:12293".parse().expect("addr");
    let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123_456_789);
    let dgram = [
        0u8, 1, 0, 0, 0, 2, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00, 0x05, 0x0f, 0x00, 0x00, 0x10, 0x00,
    ];
    Recorder::create(&out)
        .expect("create")
        .record(t, src, dst, &dgram)
        .expect("record");
    let frames: Vec<_> = PcapReader::open(&out)
        .expect("open")
        .collect::<Result<_, _>>()
        .expect("frames");
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].time_ns, 1_700_000_000_123_456_789);
    let ip = Ipv4Packet::new(&frames[0].data[14..]).expect("ipv4");
    assert_eq!(ip.get_checksum(), checksum(&ip));
    let d = link::parse_udp(&frames[0].data).expect("udp");
    assert_eq!((d.src, d.dst, d.payload), (src, dst, &dgram[..]));
    let r = &decode_file(&out).expect("decode")[0];
    assert_eq!(
        (r.kind, r.tag, r.address.as_deref()),
        (RecordKind::MRd, Some(5), Some("0x1000"))
    );
    std::fs::remove_dir_all(&dir).ok();
}
