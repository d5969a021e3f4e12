//! Test support for memory images: real QEMU guests (`qemu`, `qmp`), the cached set of real
//! dumps of one guest in every format (`dumps`), converters for formats without a producer
//! here (`convert`), and the truth the formats are checked against.
#![allow(dead_code)]

pub mod convert;
pub mod dumps;
pub mod qemu;
pub mod qmp;

use std::path::PathBuf;

use emulator::image::{Format, Machine};
use emulator::mem::{PhysAddr, PhysRange};

/// A per-process scratch directory under the target dir, removed when dropped (also when
/// the test panics).
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(name: &str) -> ScratchDir {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        ScratchDir(dir)
    }
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `len` pseudo-random bytes from `seed` (splitmix64), the content loaded into guests.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A small deterministic generator for test addresses and sizes.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Guest memory as QEMU's `pmemsave` saved it: `[0, RAM)` and the BIOS ROM.
pub struct Truth {
    pub low: Vec<u8>,
    pub bios: Vec<u8>,
}

impl Truth {
    pub fn load() -> Truth {
        let set = dumps::dump_set();
        Truth {
            low: std::fs::read(set.path("truth-low.raw")).expect("truth-low.raw"),
            bios: std::fs::read(set.path("truth-bios.raw")).expect("truth-bios.raw"),
        }
    }

    /// The true bytes of `[addr, addr+len)`, if they all lie in one saved region.
    pub fn get(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let end = addr.checked_add(len as u64)?;
        if end <= dumps::RAM {
            return self.low.get(addr as usize..end as usize);
        }
        let (b, n) = dumps::BIOS;
        if addr >= b && end <= b + n {
            return self.bios.get((addr - b) as usize..(end - b) as usize);
        }
        None
    }
}

/// The guest-physical ranges a full dump of the test guest holds: RAM and the BIOS ROM.
pub fn dump_ranges() -> Vec<PhysRange> {
    vec![
        PhysRange::new(0, dumps::RAM),
        PhysRange::new(dumps::BIOS.0, dumps::BIOS.0 + dumps::BIOS.1),
    ]
}

/// One image of the test guest, with how it was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    /// `pmemsave` of `[0, 128 MiB)`.
    Raw,
    /// `pmemsave` of a window at 1 MiB, opened with that base.
    RawBase,
    /// QEMU `dump-guest-memory` ELF.
    Elf,
    /// QEMU `dump-guest-memory` kdump-zlib (flattened, as QEMU 7.2 writes it).
    KdumpZlibFlat,
    /// The same after `makedumpfile -R`.
    KdumpZlib,
    /// `makedumpfile -l -d 0` of the QEMU ELF core.
    KdumpLzo,
    /// `makedumpfile -F -l -d 1` of the QEMU ELF core (flattened, zero pages shared).
    KdumpLzoFlat,
    /// kdump-zlib re-encoded with snappy by the test converter.
    KdumpSnappy,
    /// kdump-zlib with zero pages excluded from the 2nd bitmap, dump level 1 (converter).
    KdumpZeroExcluded,
    /// QEMU ELF core with the begin/length filter: only `dumps::FILTERED`.
    ElfFiltered,
    /// `makedumpfile -F -E -d 0` of the QEMU ELF core: a flattened ELF core.
    ElfFlat,
    /// `makedumpfile -E -d 1`: zero pages left out of the file (`p_memsz > p_filesz`).
    ElfZeroExcluded,
    /// LiME from the ELF core by the test converter.
    Lime,
    /// AVML v2 (snappy) from the ELF core by the test converter.
    Avml,
    /// AVML v1 (uncompressed, LiME magic) from the ELF core by the test converter.
    AvmlV1,
    /// QEMU's RAM file (`memory-backend-file,share=on`).
    Live,
}

impl Case {
    pub fn file(self) -> PathBuf {
        let set = dumps::dump_set();
        set.path(match self {
            Case::Raw => "truth-low.raw",
            Case::RawBase => "raw-base.raw",
            Case::Elf => "guest.elf",
            Case::KdumpZlibFlat => "kdump-zlib.flat",
            Case::KdumpZlib => "kdump-zlib",
            Case::KdumpLzo => "kdump-lzo",
            Case::KdumpLzoFlat => "kdump-lzo-d1.flat",
            Case::KdumpSnappy => "kdump-snappy",
            Case::KdumpZeroExcluded => "kdump-zlib-d1",
            Case::ElfFiltered => "guest-filtered.elf",
            Case::ElfFlat => "guest-elf.flat",
            Case::ElfZeroExcluded => "guest-d1.elf",
            Case::Lime => "guest.lime",
            Case::Avml => "guest.avml",
            Case::AvmlV1 => "guest-v1.avml",
            Case::Live => "ram.live",
        })
    }

    /// The format auto-detection must find (live has no magic: it reads as raw).
    pub fn detected(self) -> Format {
        match self {
            Case::Raw | Case::RawBase | Case::Live => Format::Raw,
            Case::Elf | Case::ElfFiltered | Case::ElfZeroExcluded => Format::Elf,
            // The signature says "flattened"; `open` looks inside and finds the ELF core.
            Case::ElfFlat => Format::Kdump,
            Case::KdumpZlibFlat
            | Case::KdumpZlib
            | Case::KdumpLzo
            | Case::KdumpLzoFlat
            | Case::KdumpSnappy
            | Case::KdumpZeroExcluded => Format::Kdump,
            Case::Lime | Case::AvmlV1 => Format::Lime,
            Case::Avml => Format::Avml,
        }
    }

    /// `--format` and `--base` to open it with (`None` = auto-detect).
    pub fn open_args(self) -> (Option<Format>, Option<PhysAddr>) {
        match self {
            Case::RawBase => (Some(Format::Raw), Some(PhysAddr(dumps::RAW_BASE.0))),
            Case::Live => (Some(Format::Live(Machine::Pc)), None),
            _ => (None, None),
        }
    }

    pub fn open(self) -> Box<dyn emulator::mem::PhysMem> {
        let (format, base) = self.open_args();
        emulator::image::open(&self.file(), format, base)
            .unwrap_or_else(|e| panic!("{self:?}: {e}"))
    }

    /// The ranges it must report exactly; `None` for AVML, whose omitted all-zero blocks are
    /// checked separately.
    pub fn expected_ranges(self) -> Option<Vec<PhysRange>> {
        match self {
            Case::Raw | Case::Live => Some(vec![PhysRange::new(0, dumps::RAM)]),
            Case::RawBase => Some(vec![PhysRange::new(
                dumps::RAW_BASE.0,
                dumps::RAW_BASE.0 + dumps::RAW_BASE.1,
            )]),
            Case::ElfFiltered => Some(vec![PhysRange::new(
                dumps::FILTERED.0,
                dumps::FILTERED.0 + dumps::FILTERED.1,
            )]),
            Case::Avml | Case::AvmlV1 => None,
            _ => Some(dump_ranges()),
        }
    }

    /// Physical ranges where this image legitimately differs from `pmemsave`: the live RAM
    /// file holds the RAM under the legacy ROM window `0xc0000..0x100000`, where the CPU
    /// (and so `pmemsave` and the dumps) sees option ROM and BIOS.
    pub fn differs_from_truth(self) -> Option<PhysRange> {
        (self == Case::Live).then(|| PhysRange::new(0xc_0000, 0x10_0000))
    }
}

/// Is `[addr, addr+len)` entirely inside `ranges`? If not, the first address outside.
pub fn first_unbacked(ranges: &[PhysRange], addr: u64, len: u64) -> Option<u64> {
    let mut a = addr;
    let end = addr + len;
    while a < end {
        match ranges.iter().find(|r| r.contains(PhysAddr(a))) {
            Some(r) => a = r.end.0,
            None => return Some(a),
        }
    }
    None
}
