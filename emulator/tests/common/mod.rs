//! Shared helpers for the capture tests: where the real NetTLP captures are, and what they hold.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The real hardware captures (`shared/captures`, next to the repository).
pub fn captures_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/captures");
    assert!(
        dir.is_dir(),
        "the NetTLP hardware captures are missing: expected the directory {} \
         (`../shared/captures` relative to the repository root, with root-complex/, \
         nic-and-nvme/ and simple-nic/ inside). Put the published NetTLP captures there.",
        dir.display()
    );
    dir
}

/// Path of one capture, failing clearly if it is absent.
pub fn capture(rel: &str) -> PathBuf {
    let p = captures_dir().join(rel);
    assert!(
        p.is_file(),
        "capture {} is missing from {}",
        rel,
        captures_dir().display()
    );
    p
}

/// Every `.pcap` below `captures_dir()`, relative, sorted (bounded walk).
pub fn all_captures() -> Vec<String> {
    let root = captures_dir();
    let mut out = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(d) = dirs.pop() {
        assert!(out.len() < 10_000, "runaway directory walk");
        for e in std::fs::read_dir(&d).expect("read captures dir") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "pcap") {
                out.push(
                    p.strip_prefix(&root)
                        .expect("below root")
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

/// TLP kinds per capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub mrd: usize,
    pub mwr: usize,
    pub cpl: usize,
    pub cpld: usize,
    pub unknown: usize,
}

impl Counts {
    pub const fn of(mrd: usize, mwr: usize, cpl: usize, cpld: usize, unknown: usize) -> Counts {
        Counts { mrd, mwr, cpl, cpld, unknown }
    }
}

/// Kinds of every capture, counted independently of this crate: a short Python script read
/// the pcap records with `struct`, skipped Ethernet/802.1Q/IPv4(IHL)/UDP and the 6-byte NetTLP
/// header, and classified the first TLP byte (0x00/0x20 MRd, 0x40/0x60 MWr, 0x0a Cpl,
/// 0x4a CplD, anything else Unknown). Frame totals agree with `tshark -r FILE | wc -l`.
pub const EXPECTED: &[(&str, Counts)] = &[
    // (capture, Counts::of(mrd, mwr, cpl, cpld, unknown))
    ("nic-and-nvme/p4600/p4600-read-1blk.pcap", Counts::of(0, 2, 0, 0, 0)),
    ("nic-and-nvme/p4600/p4600-read-32blk.pcap", Counts::of(0, 64, 0, 0, 0)),
    ("nic-and-nvme/p4600/p4600-read-4blk.pcap", Counts::of(0, 8, 0, 0, 0)),
    ("nic-and-nvme/p4600/p4600-read-64blk.pcap", Counts::of(0, 128, 0, 0, 0)),
    ("nic-and-nvme/p4600/p4600-read-8blk.pcap", Counts::of(0, 16, 0, 0, 0)),
    ("nic-and-nvme/p4600/p4600-write-1blk.pcap", Counts::of(1, 0, 0, 2, 0)),
    ("nic-and-nvme/p4600/p4600-write-32blk.pcap", Counts::of(32, 0, 0, 64, 0)),
    ("nic-and-nvme/p4600/p4600-write-4blk.pcap", Counts::of(4, 0, 0, 8, 0)),
    ("nic-and-nvme/p4600/p4600-write-64blk.pcap", Counts::of(64, 0, 0, 128, 0)),
    ("nic-and-nvme/p4600/p4600-write-8blk.pcap", Counts::of(8, 0, 0, 16, 0)),
    ("nic-and-nvme/pm1725/pm1725-read-16blk.pcap", Counts::of(51, 253, 0, 0, 0)),
    ("nic-and-nvme/pm1725/pm1725-read-1blk.pcap", Counts::of(0, 16, 0, 0, 0)),
    ("nic-and-nvme/pm1725/pm1725-read-4blk.pcap", Counts::of(0, 64, 0, 0, 0)),
    ("nic-and-nvme/pm1725/pm1725-read-8blk.pcap", Counts::of(39, 126, 0, 0, 2)),
    ("nic-and-nvme/pm1725/pm1725-write-16blk.pcap", Counts::of(128, 0, 0, 256, 0)),
    ("nic-and-nvme/pm1725/pm1725-write-1blk.pcap", Counts::of(8, 0, 0, 16, 0)),
    ("nic-and-nvme/pm1725/pm1725-write-4blk.pcap", Counts::of(32, 0, 0, 64, 0)),
    ("nic-and-nvme/pm1725/pm1725-write-8blk.pcap", Counts::of(64, 0, 0, 128, 0)),
    ("nic-and-nvme/x520/x520-1024B-16pkt.pcap", Counts::of(32, 0, 0, 64, 0)),
    ("nic-and-nvme/x520/x520-1024B-1pkt.pcap", Counts::of(2, 0, 0, 4, 0)),
    ("nic-and-nvme/x520/x520-1024B-32pkt.pcap", Counts::of(64, 0, 0, 128, 0)),
    ("nic-and-nvme/x520/x520-1500B-16pkt.pcap", Counts::of(48, 0, 0, 96, 0)),
    ("nic-and-nvme/x520/x520-1500B-1pkt.pcap", Counts::of(3, 0, 0, 6, 0)),
    ("nic-and-nvme/x520/x520-1500B-32pkt.pcap", Counts::of(96, 0, 0, 192, 0)),
    ("nic-and-nvme/x520/x520-512B-16pkt.pcap", Counts::of(16, 0, 0, 32, 0)),
    ("nic-and-nvme/x520/x520-512B-1pkt.pcap", Counts::of(1, 0, 0, 2, 0)),
    ("nic-and-nvme/x520/x520-512B-32pkt.pcap", Counts::of(32, 0, 0, 64, 0)),
    ("nic-and-nvme/x520/x520-64B-16pkt.pcap", Counts::of(16, 0, 0, 16, 0)),
    ("nic-and-nvme/x520/x520-64B-1pkt.pcap", Counts::of(1, 0, 0, 1, 0)),
    ("nic-and-nvme/x520/x520-64B-32pkt.pcap", Counts::of(32, 0, 0, 32, 0)),
    ("nic-and-nvme/xl710/xl710-1024B-16pkt.pcap", Counts::of(32, 0, 0, 64, 0)),
    ("nic-and-nvme/xl710/xl710-1024B-1pkt.pcap", Counts::of(2, 0, 0, 4, 0)),
    ("nic-and-nvme/xl710/xl710-1024B-32pkt.pcap", Counts::of(64, 0, 0, 128, 0)),
    ("nic-and-nvme/xl710/xl710-1500B-16pkt.pcap", Counts::of(48, 0, 0, 96, 0)),
    ("nic-and-nvme/xl710/xl710-1500B-1pkt.pcap", Counts::of(3, 0, 0, 6, 0)),
    ("nic-and-nvme/xl710/xl710-1500B-32pkt.pcap", Counts::of(96, 0, 0, 192, 0)),
    ("nic-and-nvme/xl710/xl710-512B-16pkt.pcap", Counts::of(16, 0, 0, 32, 0)),
    ("nic-and-nvme/xl710/xl710-512B-1pkt.pcap", Counts::of(1, 0, 0, 2, 0)),
    ("nic-and-nvme/xl710/xl710-512B-32pkt.pcap", Counts::of(32, 0, 0, 64, 0)),
    ("nic-and-nvme/xl710/xl710-64B-16pkt.pcap", Counts::of(16, 0, 0, 16, 0)),
    ("nic-and-nvme/xl710/xl710-64B-1pkt.pcap", Counts::of(1, 0, 0, 1, 0)),
    ("nic-and-nvme/xl710/xl710-64B-32pkt.pcap", Counts::of(32, 0, 0, 32, 0)),
    ("root-complex/mrd-512byte-plx.pcap", Counts::of(2, 0, 0, 4, 0)),
    ("root-complex/mrd-512byte-rc.pcap", Counts::of(9, 0, 0, 10, 0)),
    ("simple-nic/simple-nic-ping.pcap", Counts::of(3, 6, 0, 3, 0)),
];

pub fn expected(rel: &str) -> Counts {
    EXPECTED
        .iter()
        .find(|(p, _)| *p == rel)
        .map(|(_, c)| *c)
        .unwrap_or_else(|| panic!("{rel} has no entry in tests/common/mod.rs EXPECTED"))
}
