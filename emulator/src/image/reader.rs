//! The one generic image reader: a [`Layout`] (built by a format parser) says where the bytes
//! of each physical address are; [`MappedImage`] serves [`PhysMem`] reads from a [`Source`].
//!
//! Invariants:
//! - A read either fills the whole buffer or fails with the first address that could not be
//!   served; every step of a read advances by at least one byte, so reads always end.
//! - Stored bytes are copied from the map on every read (no content cache): a live RAM file
//!   is always served fresh. Only decompressed units (kdump pages, snappy chunks) are cached,
//!   in a small bounded LRU keyed by their file offset.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::codec::{self, Codec};
use super::source::Source;
use super::{human_size, FileOffset, ParseError};
use crate::mem::{MemError, PhysAddr, PhysMem, PhysRange};

/// Where the bytes of one piece of physical memory are.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Location {
    /// The piece's bytes are stored verbatim from this file offset on.
    Stored(FileOffset),
    /// The whole piece is one compressed unit of `len` bytes at `at`.
    Compressed {
        codec: Codec,
        at: FileOffset,
        len: u32,
    },
    /// The piece reads as zeros (e.g. kdump pages excluded because they were zero).
    Zero,
    /// The memory existed but this image does not hold its bytes.
    Excluded(&'static str),
}

/// A physical range `[start, end)` and where its bytes are.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Piece {
    pub start: PhysAddr,
    pub end: PhysAddr,
    pub loc: Location,
}

impl Piece {
    pub fn len(&self) -> u64 {
        self.end.0.saturating_sub(self.start.0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A format's map from physical addresses to their bytes.
pub trait Layout: Send + Sync {
    /// The piece containing `addr`, `None` if `addr` is not backed. A returned piece must
    /// contain `addr`.
    fn locate(&self, addr: PhysAddr, src: &Source) -> Result<Option<Piece>, MemError>;
    /// The backed ranges, sorted, non-overlapping and with adjacent ranges merged.
    fn ranges(&self) -> Vec<PhysRange>;
    /// Format name and details for `describe` ("ELF core", "kdump (flattened, zlib)").
    fn label(&self) -> String;
}

/// A layout whose pieces are all known once the file is parsed (raw, ELF, LiME, AVML, live):
/// its [`ExtentMap`] answers `locate` and `ranges`; the format adds only its label.
pub trait Extents: Send + Sync {
    fn map(&self) -> &ExtentMap;
    /// Format name and details (see [`Layout::label`]).
    fn label(&self) -> String;
}

impl<T: Extents> Layout for T {
    fn locate(&self, addr: PhysAddr, _src: &Source) -> Result<Option<Piece>, MemError> {
        Ok(self.map().locate(addr))
    }
    fn ranges(&self) -> Vec<PhysRange> {
        self.map().ranges()
    }
    fn label(&self) -> String {
        Extents::label(self)
    }
}

/// A layout given as a sorted list of pieces (raw, ELF, LiME, AVML, live).
#[derive(Debug, Default)]
pub struct ExtentMap {
    pieces: Vec<Piece>,
}

impl ExtentMap {
    /// Build from pieces in any order. Empty pieces are dropped; overlaps are an error
    /// naming `at(i)`, the file offset that described the i-th piece.
    pub fn new(
        mut pieces: Vec<(Piece, FileOffset)>,
        what: &'static str,
    ) -> Result<ExtentMap, ParseError> {
        pieces.retain(|(p, _)| !p.is_empty());
        pieces.sort_by_key(|(p, _)| p.start);
        for w in pieces.windows(2) {
            let ((a, _), (b, at)) = (&w[0], &w[1]);
            if b.start < a.end {
                return Err(ParseError::invalid(
                    *at,
                    what,
                    format!(
                        "range {:#x}..{:#x} overlaps {:#x}..{:#x}",
                        b.start.0, b.end.0, a.start.0, a.end.0
                    ),
                ));
            }
        }
        Ok(ExtentMap {
            pieces: pieces.into_iter().map(|(p, _)| p).collect(),
        })
    }

    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    pub fn locate(&self, addr: PhysAddr) -> Option<Piece> {
        let i = self.pieces.partition_point(|p| p.end <= addr);
        self.pieces.get(i).filter(|p| p.start <= addr).copied()
    }

    pub fn ranges(&self) -> Vec<PhysRange> {
        merge_ranges(self.pieces.iter().map(|p| PhysRange {
            start: p.start,
            end: p.end,
        }))
    }
}

/// Merge sorted, non-overlapping ranges that touch.
pub fn merge_ranges(sorted: impl IntoIterator<Item = PhysRange>) -> Vec<PhysRange> {
    let mut out: Vec<PhysRange> = Vec::new();
    for r in sorted {
        match out.last_mut() {
            Some(last) if last.end == r.start => last.end = r.end,
            _ => out.push(r),
        }
    }
    out
}

/// A compressed unit's identity: where it is, how long, how encoded, and how long decoded.
type UnitKey = (u64, u32, Codec, u64);

/// Decompressed units recently used, most recent at the front.
struct UnitCache {
    units: VecDeque<(UnitKey, Arc<[u8]>)>,
    capacity: usize,
}

impl UnitCache {
    fn get(&mut self, key: UnitKey) -> Option<Arc<[u8]>> {
        let i = self.units.iter().position(|(k, _)| *k == key)?;
        let unit = self.units.remove(i)?;
        let data = unit.1.clone();
        self.units.push_front(unit);
        Some(data)
    }
    fn put(&mut self, key: UnitKey, data: Arc<[u8]>) {
        if self.units.iter().any(|(k, _)| *k == key) {
            return;
        }
        if self.units.len() >= self.capacity {
            self.units.pop_back();
        }
        self.units.push_front((key, data));
    }
}

/// Decompressed units kept per image (64 × a 4 KiB page, or 64 × a 64 KiB snappy chunk).
const UNIT_CACHE: usize = 64;
/// Largest compressed unit accepted: a 64 KiB snappy chunk's worst-case expansion.
const MAX_UNIT_INPUT: u32 = 80 * 1024;
/// Largest decompressed unit accepted.
const MAX_UNIT_OUTPUT: u64 = 1 << 20;

/// A memory image: one [`Source`] and the [`Layout`] its format parser built.
pub struct MappedImage<L> {
    src: Source,
    layout: L,
    cache: Mutex<UnitCache>,
}

impl<L: Layout> MappedImage<L> {
    pub fn new(src: Source, layout: L) -> Self {
        MappedImage {
            src,
            layout,
            cache: Mutex::new(UnitCache {
                units: VecDeque::new(),
                capacity: UNIT_CACHE,
            }),
        }
    }

    /// The format-specific layout (e.g. ELF notes, kdump header details).
    pub fn layout(&self) -> &L {
        &self.layout
    }

    pub fn path(&self) -> &Path {
        self.src.path()
    }

    /// The mapped file.
    pub fn source(&self) -> &Source {
        &self.src
    }

    /// The decompressed bytes of a compressed piece, from the cache or freshly decoded.
    fn unit(
        &self,
        piece: &Piece,
        codec: Codec,
        at: FileOffset,
        len: u32,
    ) -> Result<Arc<[u8]>, MemError> {
        let addr = piece.start;
        let key = (at.0, len, codec, piece.len());
        if let Some(hit) = self.cache.lock().ok().and_then(|mut c| c.get(key)) {
            return Ok(hit);
        }
        let corrupt = |reason: String| MemError::Corrupt { addr, reason };
        if len > MAX_UNIT_INPUT || piece.len() > MAX_UNIT_OUTPUT {
            return Err(corrupt(format!(
                "{codec} unit at {at}: {len} bytes for {} is too large",
                piece.len()
            )));
        }
        let input = self
            .src
            .read_vec(at, u64::from(len), "compressed unit")
            .map_err(|e| corrupt(e.to_string()))?;
        let mut out = vec![0u8; piece.len() as usize];
        codec::decompress(codec, &input, &mut out).map_err(|e| corrupt(format!("{at}: {e}")))?;
        let out: Arc<[u8]> = out.into();
        if let Ok(mut c) = self.cache.lock() {
            c.put(key, out.clone());
        }
        Ok(out)
    }
}

impl<L: Layout> PhysMem for MappedImage<L> {
    fn read_phys(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let mut done = 0usize;
        while done < buf.len() {
            let a = addr.checked_add(done as u64).ok_or(MemError::Unmapped {
                addr: PhysAddr(u64::MAX),
            })?;
            let piece = self
                .layout
                .locate(a, &self.src)?
                .ok_or(MemError::Unmapped { addr: a })?;
            if !(piece.start <= a && a < piece.end) {
                return Err(MemError::Corrupt {
                    addr: a,
                    reason: format!("layout returned {piece:?}"),
                });
            }
            let skip = a.0 - piece.start.0;
            let n = ((piece.end.0 - a.0).min((buf.len() - done) as u64)) as usize;
            let out = &mut buf[done..done + n];
            match piece.loc {
                Location::Stored(at) => {
                    let at = at.checked_add(skip).unwrap_or(FileOffset(u64::MAX));
                    self.src
                        .read_at(at, out, "stored bytes")
                        .map_err(|e| MemError::Corrupt {
                            addr: a,
                            reason: e.to_string(),
                        })?;
                }
                Location::Compressed { codec, at, len } => {
                    let unit = self.unit(&piece, codec, at, len)?;
                    let from = unit.get(skip as usize..skip as usize + n).ok_or_else(|| {
                        MemError::Corrupt {
                            addr: a,
                            reason: format!("unit at {at} is shorter than its range"),
                        }
                    })?;
                    out.copy_from_slice(from);
                }
                Location::Zero => out.fill(0),
                Location::Excluded(reason) => {
                    return Err(MemError::Unknown {
                        addr: a,
                        reason: reason.to_string(),
                    })
                }
            }
            done += n;
        }
        Ok(())
    }

    fn ranges(&self) -> Vec<PhysRange> {
        self.layout.ranges()
    }

    fn describe(&self) -> String {
        let ranges = self.layout.ranges();
        let total: u64 = ranges.iter().map(|r| r.len()).sum();
        let shown: Vec<String> = ranges
            .iter()
            .take(4)
            .map(|r| format!("{:#x}-{:#x}", r.start.0, r.end.0))
            .collect();
        let more = if ranges.len() > 4 {
            format!(", … {} more", ranges.len() - 4)
        } else {
            String::new()
        };
        format!(
            "{} {}: {} range{} [{}{}], {}",
            self.layout.label(),
            self.src.path().display(),
            ranges.len(),
            if ranges.len() == 1 { "" } else { "s" },
            shown.join(", "),
            more,
            human_size(total),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(start: u64, end: u64) -> Piece {
        Piece {
            start: PhysAddr(start),
            end: PhysAddr(end),
            loc: Location::Zero,
        }
    }

    #[test]
    fn extent_map_locates_and_merges() {
        let m = ExtentMap::new(
            vec![
                (piece(0x2000, 0x3000), FileOffset(2)),
                (piece(0, 0x1000), FileOffset(1)),
                (piece(0x1000, 0x2000), FileOffset(3)),
            ],
            "test",
        )
        .unwrap();
        assert_eq!(m.locate(PhysAddr(0x1fff)), Some(piece(0x1000, 0x2000)));
        assert_eq!(m.locate(PhysAddr(0x3000)), None);
        assert_eq!(m.ranges(), vec![PhysRange::new(0, 0x3000)]);
    }

    #[test]
    fn overlaps_are_reported_with_their_offset() {
        let e = ExtentMap::new(
            vec![
                (piece(0, 0x1000), FileOffset(1)),
                (piece(0xfff, 0x2000), FileOffset(0x40)),
            ],
            "test",
        )
        .unwrap_err();
        assert_eq!(e.offset(), FileOffset(0x40));
    }

    #[test]
    fn unit_cache_is_bounded_lru() {
        let mut c = UnitCache {
            units: VecDeque::new(),
            capacity: 2,
        };
        let k = |n: u64| (n, 1, Codec::Zlib, 4096);
        c.put(k(1), Arc::from(vec![1u8]));
        c.put(k(2), Arc::from(vec![2u8]));
        assert!(c.get(k(1)).is_some());
        c.put(k(3), Arc::from(vec![3u8]));
        assert!(c.get(k(2)).is_none(), "least recently used unit evicted");
        assert!(c.get(k(1)).is_some() && c.get(k(3)).is_some());
        assert_eq!(c.units.len(), 2);
    }
}
