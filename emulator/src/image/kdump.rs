//! kdump-compressed ("diskdump") files, as written by QEMU `dump-guest-memory` (`kdump-zlib`,
//! `kdump-lzo`, `kdump-snappy`) and by makedumpfile (`-c`, `-l`, `-p`), standard or flattened.
//!
//! ```text
//!   block 0        disk_dump_header   "KDUMP   ", version, utsname, status, block_size, …
//!   block 1        kdump_sub_header   phys_base, dump_level, split, …, max_mapnr_64 (v6)
//!   block 1+S      1st bitmap         pfn is RAM                      (bitmap_blocks/2 blocks)
//!                  2nd bitmap         pfn was dumped                  (bitmap_blocks/2 blocks)
//!   block 1+S+B    page descriptors   {offset u64, size u32, flags u32, page_flags u64}, one per
//!                                     set bit of the 2nd bitmap, in pfn order
//!                  page data          compressed (flags) or raw (size == block_size)
//! ```
//!
//! Invariants:
//! - At open only the headers and the two bitmaps are read (bitmap bytes ≤ file size); a rank
//!   index over the 2nd bitmap turns a pfn into its descriptor number in O(1).
//! - Each read locates one page: bitmap test, one 24-byte descriptor read, and at most one
//!   page decompressed (into a buffer of exactly one page). No full inflation.
//! - A pfn in neither bitmap is unmapped. A pfn in the 1st but not the 2nd bitmap was excluded
//!   by makedumpfile: it reads as zeros when the dump level excluded only zero pages (level 1),
//!   otherwise as [`MemError::Unknown`].
//!
//! Only the 64-bit header layout (x86_64, arm64, …) is implemented, in little-endian byte
//! order; zstd pages (makedumpfile `-z`) and `--split` files are reported, not decoded.

use super::codec::Codec;
use super::notes::{self, Note, MAX_NOTES_BYTES};
use super::reader::{merge_ranges, Layout, Location, MappedImage, Piece};
use super::source::Source;
use super::{FileOffset, ParseError};
use crate::mem::{MemError, PhysAddr, PhysRange};

/// Signature at the start of a (non-flattened) kdump file.
pub const SIGNATURE: &[u8] = b"KDUMP   ";

const DH_ZLIB: u32 = 0x1;
const DH_LZO: u32 = 0x2;
const DH_SNAPPY: u32 = 0x4;
const DH_ZSTD: u32 = 0x20;
const DESC_SIZE: u64 = 24;
/// makedumpfile dump level bit "exclude zero pages".
const DL_EXCLUDE_ZERO: u32 = 1;
/// Byte offsets in `disk_dump_header` (64-bit layout: 8 + 4 + 390 utsname + 22 timestamp).
const H_VERSION: usize = 8;
const H_RELEASE: usize = 12 + 2 * 65;
const H_STATUS: usize = 424;
const H_BLOCK_SIZE: usize = 428;
const H_SUB_HDR_SIZE: usize = 432;
const H_BITMAP_BLOCKS: usize = 436;
const H_MAX_MAPNR: usize = 440;
const HEADER_LEN: u64 = 464;
/// The 32-bit header layout's block_size (timestamp is 10 bytes there), to recognise it.
const H32_BLOCK_SIZE: usize = 416;
const SUB_HEADER_LEN: u64 = 104;

/// A bitmap over pfns with a rank index (set bits before each 512-bit block).
#[derive(Debug)]
struct Bitmap {
    words: Vec<u64>,
    ranks: Vec<u64>,
}

impl Bitmap {
    /// Bits `0..nbits` from little-endian bitmap bytes (bit i of byte j is pfn 8j+i).
    fn new(bytes: &[u8], nbits: u64) -> Bitmap {
        let mut words: Vec<u64> = bytes
            .chunks(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w[..c.len()].copy_from_slice(c);
                u64::from_le_bytes(w)
            })
            .collect();
        words.truncate(nbits.div_ceil(64) as usize);
        if let Some(last) = words.last_mut() {
            if nbits & 63 != 0 {
                *last &= (1u64 << (nbits % 64)) - 1;
            }
        }
        Bitmap::with_ranks(words)
    }

    fn with_ranks(words: Vec<u64>) -> Bitmap {
        let mut ranks = Vec::with_capacity(words.len() / 8 + 1);
        let mut total = 0u64;
        for block in words.chunks(8) {
            ranks.push(total);
            total += block.iter().map(|w| u64::from(w.count_ones())).sum::<u64>();
        }
        ranks.push(total);
        Bitmap { words, ranks }
    }

    fn get(&self, bit: u64) -> bool {
        self.words
            .get((bit / 64) as usize)
            .is_some_and(|w| w >> (bit % 64) & 1 == 1)
    }

    /// Number of set bits below `bit`.
    fn rank(&self, bit: u64) -> u64 {
        let word = (bit / 64) as usize;
        let block = word / 8;
        let mut r = self.ranks.get(block).copied().unwrap_or(0);
        for w in self.words.iter().take(word).skip(block * 8) {
            r += u64::from(w.count_ones());
        }
        if let Some(w) = self.words.get(word) {
            r += u64::from((w & ((1u64 << (bit % 64)) - 1)).count_ones());
        }
        r
    }

    fn count(&self) -> u64 {
        self.ranks.last().copied().unwrap_or(0)
    }

    fn or(&self, other: &Bitmap) -> Bitmap {
        let words = self
            .words
            .iter()
            .zip(&other.words)
            .map(|(a, b)| a | b)
            .collect();
        Bitmap::with_ranks(words)
    }

    /// Runs of set bits as `[first, end)` bit ranges.
    fn runs(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut start: Option<u64> = None;
        for (i, &w) in self.words.iter().enumerate() {
            let base = i as u64 * 64;
            match (w, start) {
                (0, None) | (u64::MAX, Some(_)) => continue,
                (0, Some(s)) => {
                    out.push((s, base));
                    start = None;
                }
                (u64::MAX, None) => start = Some(base),
                _ => {
                    for b in 0..64 {
                        match (w >> b & 1 == 1, start) {
                            (true, None) => start = Some(base + b),
                            (false, Some(s)) => {
                                out.push((s, base + b));
                                start = None;
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        if let Some(s) = start {
            out.push((s, self.words.len() as u64 * 64));
        }
        out
    }
}

/// Layout of a kdump file.
#[derive(Debug)]
pub struct KdumpLayout {
    page_size: u64,
    max_mapnr: u64,
    present: Bitmap,
    dumped: Bitmap,
    descriptors: FileOffset,
    excluded_are_zero: bool,
    dump_level: u32,
    header_version: u32,
    status: u32,
    release: String,
    ranges: Vec<PhysRange>,
    vmcoreinfo: Option<(FileOffset, u64)>,
    notes: Option<(FileOffset, u64)>,
    flattened: bool,
}

impl KdumpLayout {
    pub fn page_size(&self) -> u64 {
        self.page_size
    }
    /// Pages with a descriptor (set bits of the 2nd bitmap).
    pub fn dumped_pages(&self) -> u64 {
        self.dumped.count()
    }
    /// Pages of RAM (set bits of the 1st bitmap, plus any dumped page it lacks).
    pub fn present_pages(&self) -> u64 {
        self.present.count()
    }
    /// makedumpfile dump level (which kinds of pages were excluded).
    pub fn dump_level(&self) -> u32 {
        self.dump_level
    }
    pub fn header_version(&self) -> u32 {
        self.header_version
    }
    pub fn is_flattened(&self) -> bool {
        self.flattened
    }
    /// Compression named by the header's status flags ("zlib", "lzo", "snappy", "zstd",
    /// "uncompressed").
    pub fn compression(&self) -> &'static str {
        match self.status & (DH_ZLIB | DH_LZO | DH_SNAPPY | DH_ZSTD) {
            DH_ZLIB => "zlib",
            DH_LZO => "lzo",
            DH_SNAPPY => "snappy",
            DH_ZSTD => "zstd",
            0 => "uncompressed",
            _ => "mixed",
        }
    }
}

/// Parse the kdump file in `src` (already unflattened by [`Source`] if needed).
pub fn open(src: Source) -> Result<MappedImage<KdumpLayout>, ParseError> {
    let h = src.fields(FileOffset(0), HEADER_LEN, "kdump header")?;
    if h.bytes(0, 8)? != SIGNATURE {
        return Err(ParseError::invalid(
            FileOffset(0),
            "kdump header",
            "no \"KDUMP   \" signature",
        ));
    }
    let version = h.u32(H_VERSION)?;
    let block_size = u64::from(h.u32(H_BLOCK_SIZE)?);
    let valid_block = |b: u64| b.is_power_of_two() && (512..=(1 << 16)).contains(&b);
    if !valid_block(block_size) {
        if valid_block(u64::from(h.u32(H32_BLOCK_SIZE)?)) {
            return Err(ParseError::unsupported(
                h.at(H32_BLOCK_SIZE),
                "kdump header",
                "32-bit header layout",
            ));
        }
        return Err(ParseError::invalid(
            h.at(H_BLOCK_SIZE),
            "kdump header",
            format!("block size {block_size}"),
        ));
    }
    if version == 0 {
        return Err(ParseError::invalid(
            h.at(H_VERSION),
            "kdump header",
            "header version 0",
        ));
    }
    let status = h.u32(H_STATUS)?;
    let sub_hdr_size = u64::from(h.u32(H_SUB_HDR_SIZE)?);
    let bitmap_blocks = u64::from(h.u32(H_BITMAP_BLOCKS)?);
    let release = String::from_utf8_lossy(h.bytes(H_RELEASE, 65)?)
        .trim_end_matches('\0')
        .to_string();

    let s = src.fields(FileOffset(block_size), SUB_HEADER_LEN, "kdump sub header")?;
    let dump_level = s.u32(8)?;
    let split = s.u32(12)?;
    if split != 0 {
        return Err(ParseError::unsupported(
            s.at(12),
            "kdump sub header",
            "one part of a --split dump",
        ));
    }
    let max_mapnr = if version >= 6 {
        s.u64(96)?
    } else {
        u64::from(h.u32(H_MAX_MAPNR)?)
    };
    let area = |off: usize,
                len: usize,
                min_version: u32|
     -> Result<Option<(FileOffset, u64)>, ParseError> {
        let (at, n) = (s.u64(off)?, s.u64(len)?);
        Ok((version >= min_version && at != 0 && n != 0).then_some((FileOffset(at), n)))
    };
    let vmcoreinfo = area(32, 40, 3)?;
    let notes = area(48, 56, 4)?;

    let blocks = |n: u64, what| {
        n.checked_mul(block_size)
            .ok_or_else(|| ParseError::invalid(h.at(H_BITMAP_BLOCKS), what, "size overflows"))
    };
    let bitmap_at = blocks(1 + sub_hdr_size, "kdump bitmap offset")?;
    let bitmap_len = blocks(bitmap_blocks, "kdump bitmap size")?;
    let half = bitmap_len / 2;
    if max_mapnr == 0
        || max_mapnr > half.saturating_mul(8)
        || max_mapnr.checked_mul(block_size).is_none()
    {
        return Err(ParseError::invalid(
            if version >= 6 {
                s.at(96)
            } else {
                h.at(H_MAX_MAPNR)
            },
            "kdump header",
            format!("max_mapnr {max_mapnr:#x} does not fit {bitmap_blocks} bitmap blocks"),
        ));
    }
    let used = max_mapnr.div_ceil(8);
    let first = src.read_vec(FileOffset(bitmap_at), used, "kdump 1st bitmap")?;
    let second = src.read_vec(FileOffset(bitmap_at + half), used, "kdump 2nd bitmap")?;
    let dumped = Bitmap::new(&second, max_mapnr);
    let present = Bitmap::new(&first, max_mapnr).or(&dumped);
    drop((first, second));

    let descriptors = FileOffset(bitmap_at + bitmap_len);
    let desc_len = dumped.count().saturating_mul(DESC_SIZE);
    src.check(descriptors, desc_len, "kdump page descriptors")?;

    let ranges = merge_ranges(
        present
            .runs()
            .into_iter()
            .map(|(a, b)| PhysRange::new(a * block_size, b.min(max_mapnr) * block_size)),
    );
    let layout = KdumpLayout {
        page_size: block_size,
        max_mapnr,
        present,
        dumped,
        descriptors,
        excluded_are_zero: dump_level & !DL_EXCLUDE_ZERO == 0,
        dump_level,
        header_version: version,
        status,
        release,
        ranges,
        vmcoreinfo,
        notes,
        flattened: src.is_flattened(),
    };
    Ok(MappedImage::new(src, layout))
}

impl Layout for KdumpLayout {
    fn locate(&self, addr: PhysAddr, src: &Source) -> Result<Option<Piece>, MemError> {
        let pfn = addr.0 / self.page_size;
        if pfn >= self.max_mapnr || !self.present.get(pfn) {
            return Ok(None);
        }
        let start = PhysAddr(pfn * self.page_size);
        let end = PhysAddr(start.0 + self.page_size);
        if !self.dumped.get(pfn) {
            let loc = if self.excluded_are_zero {
                Location::Zero
            } else {
                Location::Excluded("page excluded from the dump by makedumpfile's dump level")
            };
            return Ok(Some(Piece { start, end, loc }));
        }
        let at = FileOffset(self.descriptors.0 + self.dumped.rank(pfn) * DESC_SIZE);
        let corrupt = |reason: String| MemError::Corrupt { addr, reason };
        let mut d = [0u8; DESC_SIZE as usize];
        src.read_at(at, &mut d, "kdump page descriptor")
            .map_err(|e| corrupt(e.to_string()))?;
        let [o0, o1, o2, o3, o4, o5, o6, o7, s0, s1, s2, s3, f0, f1, f2, f3, ..] = d;
        let offset = FileOffset(u64::from_le_bytes([o0, o1, o2, o3, o4, o5, o6, o7]));
        let size = u32::from_le_bytes([s0, s1, s2, s3]);
        let flags = u32::from_le_bytes([f0, f1, f2, f3]);
        let compressed = |codec| Location::Compressed {
            codec,
            at: offset,
            len: size,
        };
        let loc = match flags & (DH_ZLIB | DH_LZO | DH_SNAPPY | DH_ZSTD) {
            0 if u64::from(size) == self.page_size => Location::Stored(offset),
            0 => {
                return Err(corrupt(format!(
                    "{at}: uncompressed page of {size} bytes, page size {}",
                    self.page_size
                )))
            }
            DH_ZLIB => compressed(Codec::Zlib),
            DH_LZO => compressed(Codec::Lzo),
            DH_SNAPPY => compressed(Codec::Snappy),
            DH_ZSTD => {
                Location::Excluded("page is zstd-compressed, which this reader does not decode")
            }
            _ => {
                return Err(corrupt(format!(
                    "{at}: page descriptor flags {flags:#x} name several codecs"
                )))
            }
        };
        Ok(Some(Piece { start, end, loc }))
    }

    fn ranges(&self) -> Vec<PhysRange> {
        self.ranges.clone()
    }

    fn label(&self) -> String {
        let mut details = vec![self.compression().to_string()];
        if self.flattened {
            details.insert(0, "flattened".into());
        }
        details.push(format!("v{}", self.header_version));
        if self.dumped.count() < self.present.count() {
            details.push(format!("dump level {}", self.dump_level));
        }
        if !self.release.is_empty() {
            details.push(format!("kernel {}", self.release));
        }
        format!("kdump ({})", details.join(", "))
    }
}

impl MappedImage<KdumpLayout> {
    /// The notes area of the sub header (header version ≥ 4), if any. Informational only.
    pub fn notes(&self) -> Result<Vec<Note>, ParseError> {
        let Some((at, len)) = self.layout().notes else {
            return Ok(Vec::new());
        };
        if len > MAX_NOTES_BYTES {
            return Err(ParseError::unsupported(
                at,
                "kdump notes",
                format!("{len} bytes"),
            ));
        }
        let data = self.source().read_vec(at, len, "kdump notes")?;
        notes::parse(&data, at, false, 4)
    }

    /// The VMCOREINFO text (header version ≥ 3), if the dump carries one.
    pub fn vmcoreinfo(&self) -> Result<Option<String>, ParseError> {
        if let Some((at, len)) = self.layout().vmcoreinfo {
            if len > MAX_NOTES_BYTES {
                return Err(ParseError::unsupported(
                    at,
                    "kdump vmcoreinfo",
                    format!("{len} bytes"),
                ));
            }
            let data = self.source().read_vec(at, len, "kdump vmcoreinfo")?;
            return Ok(Some(
                String::from_utf8_lossy(&data)
                    .trim_end_matches('\0')
                    .to_string(),
            ));
        }
        Ok(self.notes()?.iter().find_map(Note::vmcoreinfo))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_rank_and_runs() {
        // pfns 0..3, 64..200, 700 set; 1000 bits.
        let mut bytes = vec![0u8; 125];
        let mut set = |i: usize| bytes[i / 8] |= 1 << (i % 8);
        for i in (0..3).chain(64..200).chain([700]) {
            set(i);
        }
        let b = Bitmap::new(&bytes, 1000);
        assert!(b.get(2) && !b.get(3) && b.get(199) && !b.get(200) && b.get(700) && !b.get(5000));
        assert_eq!(b.rank(0), 0);
        assert_eq!(b.rank(3), 3);
        assert_eq!(b.rank(100), 3 + 36);
        assert_eq!(b.rank(700), 3 + 136);
        assert_eq!(b.rank(999), 3 + 136 + 1);
        assert_eq!(b.count(), 140);
        assert_eq!(b.runs(), vec![(0, 3), (64, 200), (700, 701)]);
    }

    #[test]
    fn bits_beyond_max_mapnr_are_ignored() {
        let b = Bitmap::new(&[0xff; 16], 70);
        assert_eq!(b.count(), 70);
        assert_eq!(b.runs(), vec![(0, 70)]);
    }
}
