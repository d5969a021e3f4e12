//! A running QEMU guest's RAM file: `-object memory-backend-file,id=ram,size=S,mem-path=FILE,
//! share=on -machine memory-backend=ram`. The file holds guest RAM linearly; the machine type
//! decides where it appears in guest-physical space.
//!
//! QEMU's x86 RAM split (hw/i386/pc_piix.c `pc_init1`, hw/i386/pc_q35.c `pc_q35_init`, for the
//! current machine versions and without `max-ram-below-4g`):
//! - `pc` (i440FX): RAM below 4 GiB is at most 3.5 GiB (`0xe0000000`); when the RAM does not
//!   fit (size ≥ 3.5 GiB) the split moves to 3 GiB (`gigabyte_align`). So 3.25 GiB stays
//!   entirely low, 4 GiB becomes 3 GiB low + 1 GiB at 4 GiB.
//! - `q35`: RAM of 2.75 GiB (`0xb0000000`) or more is split at 2 GiB, the rest at 4 GiB;
//!   smaller RAM is entirely low.
//! - The part above the split is mapped at 4 GiB (`0x1_0000_0000`), file offset = split.
//!
//! Not modelled: `max-ram-below-4g`, pre-2.x machine versions (3.5 GiB split without gigabyte
//! alignment), the AMD 1 TiB hole relocation of QEMU ≥ 7.1 (only for guests near 1 TiB), and
//! NUMA or hot-plugged DIMMs (separate backends). In the legacy window `0xa0000..0x100000` the
//! file holds the RAM underneath, while the guest CPU sees VGA memory and BIOS/option ROMs there.
//!
//! Invariant: bytes are copied from the shared mapping on every read, never cached, so reads
//! see the guest's memory as of the read.

use std::fmt;
use std::str::FromStr;

use super::reader::{ExtentMap, Extents, Location, MappedImage, Piece};
use super::source::Source;
use super::{human_size, FileOffset, ParseError};
use crate::mem::PhysRange;

/// QEMU x86 machine type, for its RAM layout.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
pub enum Machine {
    /// `-machine pc` (i440FX + PIIX).
    #[default]
    Pc,
    /// `-machine q35` (Q35 + ICH9).
    Q35,
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Machine::Pc => "pc",
            Machine::Q35 => "q35",
        })
    }
}

/// `--machine` parse failure.
#[derive(Debug, thiserror::Error)]
#[error("unknown machine type {0:?} (expected pc or q35)")]
pub struct UnknownMachine(pub String);

impl FromStr for Machine {
    type Err = UnknownMachine;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "pc" | "i440fx" => Ok(Machine::Pc),
            "q35" => Ok(Machine::Q35),
            _ => Err(UnknownMachine(s.to_string())),
        }
    }
}

const GIB: u64 = 1 << 30;
const FOUR_GIB: u64 = 4 * GIB;

impl Machine {
    /// RAM bytes mapped below 4 GiB for a guest with `ram_size` bytes of RAM.
    pub fn below_4g(self, ram_size: u64) -> u64 {
        let lowmem = match self {
            Machine::Pc => {
                let max_below = 0xe000_0000;
                if ram_size >= max_below {
                    0xc000_0000
                } else {
                    max_below
                }
            }
            Machine::Q35 => {
                if ram_size >= 0xb000_0000 {
                    0x8000_0000
                } else {
                    0xb000_0000
                }
            }
        };
        ram_size.min(lowmem)
    }

    /// Where the RAM file's bytes appear: `(physical range, file offset)` pairs.
    pub fn ram_map(self, ram_size: u64) -> Vec<(PhysRange, FileOffset)> {
        let below = self.below_4g(ram_size);
        let above = ram_size - below;
        let mut out = vec![(PhysRange::new(0, below), FileOffset(0))];
        if above > 0 {
            out.push((
                PhysRange::new(FOUR_GIB, FOUR_GIB.saturating_add(above)),
                FileOffset(below),
            ));
        }
        out
    }
}

/// Layout of a live RAM file.
#[derive(Debug)]
pub struct LiveLayout {
    map: ExtentMap,
    machine: Machine,
    ram_size: u64,
}

impl LiveLayout {
    pub fn machine(&self) -> Machine {
        self.machine
    }
}

/// Serve a guest RAM file as `machine` lays it out. The RAM size is the file's length.
pub fn open(src: Source, machine: Machine) -> Result<MappedImage<LiveLayout>, ParseError> {
    if src.is_flattened() {
        return Err(ParseError::invalid(
            FileOffset(0),
            "live RAM file",
            "this is a makedumpfile flattened file",
        ));
    }
    let ram_size = src.len();
    if ram_size > (1 << 46) {
        return Err(ParseError::unsupported(
            FileOffset(0),
            "live RAM file",
            format!("{} of RAM", human_size(ram_size)),
        ));
    }
    let pieces = machine
        .ram_map(ram_size)
        .into_iter()
        .map(|(r, at)| {
            (
                Piece {
                    start: r.start,
                    end: r.end,
                    loc: Location::Stored(at),
                },
                at,
            )
        })
        .collect();
    let map = ExtentMap::new(pieces, "live RAM file")?;
    Ok(MappedImage::new(
        src,
        LiveLayout {
            map,
            machine,
            ram_size,
        },
    ))
}

impl Extents for LiveLayout {
    fn map(&self) -> &ExtentMap {
        &self.map
    }
    fn label(&self) -> String {
        format!(
            "live QEMU RAM file ({} layout, {} RAM)",
            self.machine,
            human_size(self.ram_size)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(m: Machine, ram: u64) -> (u64, u64) {
        let below = m.below_4g(ram);
        (below, ram - below)
    }

    #[test]
    fn pc_split_follows_qemu_examples() {
        // The examples in QEMU's pc_piix.c comment (current machine types).
        assert_eq!(split(Machine::Pc, 4 * GIB), (3 * GIB, GIB));
        assert_eq!(split(Machine::Pc, 128 << 20), (128 << 20, 0));
        // Below 3.5 GiB everything stays low, even above 3 GiB.
        assert_eq!(
            split(Machine::Pc, 3 * GIB + GIB / 4),
            (3 * GIB + GIB / 4, 0)
        );
        // At exactly 3.5 GiB the split moves to 3 GiB.
        assert_eq!(split(Machine::Pc, 0xe000_0000), (3 * GIB, GIB / 2));
    }

    #[test]
    fn q35_split_at_2g_from_2_75g() {
        assert_eq!(split(Machine::Q35, 0xafff_f000), (0xafff_f000, 0));
        assert_eq!(split(Machine::Q35, 0xb000_0000), (2 * GIB, 0x3000_0000));
        assert_eq!(split(Machine::Q35, 8 * GIB), (2 * GIB, 6 * GIB));
    }

    #[test]
    fn high_part_maps_at_4g_from_the_split_offset() {
        assert_eq!(
            Machine::Q35.ram_map(3 * GIB),
            vec![
                (PhysRange::new(0, 2 * GIB), FileOffset(0)),
                (PhysRange::new(4 * GIB, 5 * GIB), FileOffset(2 * GIB))
            ]
        );
    }
}
