//! ELF cores, e.g. QEMU `dump-guest-memory` (`paging: false`) or `/proc/vmcore` copies: each
//! PT_LOAD maps `[p_paddr, p_paddr + p_filesz)` to file offset `p_offset`.
//!
//! Invariants:
//! - Only the ELF header and the program header table are read at open; every field is
//!   bounds-checked and every PT_LOAD must lie inside the file.
//! - Holes between PT_LOADs are unmapped. Bytes between `p_filesz` and `p_memsz` read as zero,
//!   as the ELF specification defines (and crash and gdb do). Dump tools use this for pages
//!   they left out: `makedumpfile -E` for excluded pages (all zero at dump level 1; at higher
//!   levels also free, cache and user pages, which then read as zero too).
//! - Overlapping PT_LOADs (a `paging: true` dump maps one physical page once per virtual
//!   mapping) keep the first bytes seen for each physical address.
//! - Notes (including VMCOREINFO) are parsed only on request; serving memory never needs them.
//!
//! Both classes (ELF32/ELF64) and both byte orders are accepted; QEMU writes ELF64 for x86
//! guests (with `e_machine` EM_386 while the CPU is not in long mode).

use super::notes::{self, Note, MAX_NOTES_BYTES};
use super::reader::{ExtentMap, Extents, Location, MappedImage, Piece};
use super::source::Source;
use super::{FileOffset, ParseError};
use crate::mem::PhysAddr;

/// ELF magic bytes.
pub const MAGIC: &[u8] = b"\x7fELF";
const ET_CORE: u64 = 4;
const PT_LOAD: u64 = 1;
const PT_NOTE: u64 = 4;
const PN_XNUM: u64 = 0xffff;

/// Where each header field is, per ELF class.
struct Class {
    bits: u32,
    ehsize: u64,
    /// (offset, width) of e_phoff, e_shoff; offsets of e_phentsize, e_phnum, e_shentsize.
    phoff: (usize, usize),
    shoff: (usize, usize),
    phentsize: usize,
    phnum: usize,
    shentsize: usize,
    /// Program header entry size and field (offset, width) of p_type, p_offset, p_paddr,
    /// p_filesz, p_memsz, p_align.
    phent: u64,
    p_type: (usize, usize),
    p_offset: (usize, usize),
    p_paddr: (usize, usize),
    p_filesz: (usize, usize),
    p_memsz: (usize, usize),
    p_align: (usize, usize),
    /// Section header entry size and the offset of sh_info (for PN_XNUM).
    shent: u64,
    sh_info: usize,
}

const ELF64: Class = Class {
    bits: 64,
    ehsize: 64,
    phoff: (32, 8),
    shoff: (40, 8),
    phentsize: 54,
    phnum: 56,
    shentsize: 58,
    phent: 56,
    p_type: (0, 4),
    p_offset: (8, 8),
    p_paddr: (24, 8),
    p_filesz: (32, 8),
    p_memsz: (40, 8),
    p_align: (48, 8),
    shent: 64,
    sh_info: 44,
};

const ELF32: Class = Class {
    bits: 32,
    ehsize: 52,
    phoff: (28, 4),
    shoff: (32, 4),
    phentsize: 42,
    phnum: 44,
    shentsize: 46,
    phent: 32,
    p_type: (0, 4),
    p_offset: (4, 4),
    p_paddr: (12, 4),
    p_filesz: (16, 4),
    p_memsz: (20, 4),
    p_align: (28, 4),
    shent: 40,
    sh_info: 28,
};

/// The PT_NOTE segments' positions, for [`notes`](MappedImage::notes).
#[derive(Clone, Copy, Debug)]
struct NoteSegment {
    at: FileOffset,
    len: u64,
    align: usize,
}

/// Layout of an ELF core.
#[derive(Debug)]
pub struct ElfLayout {
    map: ExtentMap,
    bits: u32,
    big_endian: bool,
    loads: usize,
    note_segments: Vec<NoteSegment>,
    flattened: bool,
}

impl ElfLayout {
    /// Number of PT_LOAD program headers.
    pub fn loads(&self) -> usize {
        self.loads
    }
    /// The pieces (PT_LOAD parts) in physical order.
    pub fn pieces(&self) -> &[Piece] {
        self.map.pieces()
    }
}

/// Parse the ELF core in `src`.
pub fn open(src: Source) -> Result<MappedImage<ElfLayout>, ParseError> {
    let ident = src.fields(FileOffset(0), 16, "ELF identification")?;
    if ident.bytes(0, 4)? != MAGIC {
        return Err(ParseError::invalid(
            FileOffset(0),
            "ELF header",
            "no ELF magic",
        ));
    }
    let class = match ident.bytes(4, 1)?[0] {
        1 => &ELF32,
        2 => &ELF64,
        c => {
            return Err(ParseError::invalid(
                FileOffset(4),
                "ELF header",
                format!("class {c}"),
            ))
        }
    };
    let big = match ident.bytes(5, 1)?[0] {
        1 => false,
        2 => true,
        d => {
            return Err(ParseError::invalid(
                FileOffset(5),
                "ELF header",
                format!("data encoding {d}"),
            ))
        }
    };
    let eh = src.fields(FileOffset(0), class.ehsize, "ELF header")?;
    let e_type = eh.uint(16, 2, big)?;
    if e_type != ET_CORE {
        return Err(ParseError::invalid(
            eh.at(16),
            "ELF header",
            format!("type {e_type} is not a core file (4)"),
        ));
    }
    let phoff = eh.uint(class.phoff.0, class.phoff.1, big)?;
    let shoff = eh.uint(class.shoff.0, class.shoff.1, big)?;
    let phentsize = eh.uint(class.phentsize, 2, big)?;
    let mut phnum = eh.uint(class.phnum, 2, big)?;
    if phnum == PN_XNUM {
        // The real count lives in section header 0's sh_info.
        let shentsize = eh.uint(class.shentsize, 2, big)?;
        if shoff == 0 || shentsize != class.shent {
            return Err(ParseError::invalid(
                eh.at(class.phnum),
                "ELF header",
                "PN_XNUM without a valid section header 0",
            ));
        }
        let sh0 = src.fields(FileOffset(shoff), class.shent, "ELF section header 0")?;
        phnum = sh0.uint(class.sh_info, 4, big)?;
    }
    if phnum == 0 || phoff == 0 {
        return Err(ParseError::invalid(
            eh.at(class.phnum),
            "ELF header",
            "no program headers",
        ));
    }
    if phentsize != class.phent {
        return Err(ParseError::invalid(
            eh.at(class.phentsize),
            "ELF header",
            format!("program header size {phentsize}, expected {}", class.phent),
        ));
    }
    // Bounds-checked against the file before anything is allocated.
    let table_len = phnum.checked_mul(class.phent).ok_or_else(|| {
        ParseError::invalid(
            eh.at(class.phnum),
            "ELF header",
            "program header table size overflows",
        )
    })?;
    let table = src.fields(FileOffset(phoff), table_len, "ELF program header table")?;

    let mut pieces = Vec::new();
    let mut note_segments = Vec::new();
    let mut loads = 0usize;
    for i in 0..phnum as usize {
        let base = i * class.phent as usize;
        let field = |(off, width): (usize, usize)| table.uint(base + off, width, big);
        let at = table.at(base);
        let p_type = field(class.p_type)?;
        if p_type == PT_NOTE {
            let len = field(class.p_filesz)?;
            let align = if field(class.p_align)? == 8 { 8 } else { 4 };
            note_segments.push(NoteSegment {
                at: FileOffset(field(class.p_offset)?),
                len,
                align,
            });
            continue;
        }
        if p_type != PT_LOAD {
            continue;
        }
        loads += 1;
        let (offset, paddr, filesz, memsz) = (
            field(class.p_offset)?,
            field(class.p_paddr)?,
            field(class.p_filesz)?,
            field(class.p_memsz)?,
        );
        if filesz > memsz {
            return Err(ParseError::invalid(
                at,
                "PT_LOAD",
                format!("p_filesz {filesz:#x} exceeds p_memsz {memsz:#x}"),
            ));
        }
        src.check(FileOffset(offset), filesz, "PT_LOAD data")?;
        let end = paddr.checked_add(memsz).ok_or_else(|| {
            ParseError::invalid(
                at,
                "PT_LOAD",
                format!("p_paddr {paddr:#x} + p_memsz {memsz:#x} overflows"),
            )
        })?;
        let file_end = paddr + filesz;
        pieces.push((
            Piece {
                start: PhysAddr(paddr),
                end: PhysAddr(file_end),
                loc: Location::Stored(FileOffset(offset)),
            },
            at,
        ));
        pieces.push((
            Piece {
                start: PhysAddr(file_end),
                end: PhysAddr(end),
                loc: Location::Zero,
            },
            at,
        ));
    }
    let map = ExtentMap::new(first_wins(pieces), "PT_LOAD")?;
    let flattened = src.is_flattened();
    Ok(MappedImage::new(
        src,
        ElfLayout {
            map,
            bits: class.bits,
            big_endian: big,
            loads,
            note_segments,
            flattened,
        },
    ))
}

/// Resolve overlapping PT_LOAD parts: among stored parts the lowest start (then file order)
/// keeps each address; zero-filled tails (`p_memsz > p_filesz`) only fill what no stored
/// part covers.
fn first_wins(pieces: Vec<(Piece, FileOffset)>) -> Vec<(Piece, FileOffset)> {
    let (excluded, stored): (Vec<_>, Vec<_>) = pieces
        .into_iter()
        .partition(|(p, _)| p.loc == Location::Zero);
    let stored = trim_overlaps(stored);
    let excluded = trim_overlaps(excluded);
    // Subtract the stored coverage from the excluded parts (both sorted and disjoint).
    let mut out = stored.clone();
    let mut j = 0;
    for (e, at) in excluded {
        while stored.get(j).is_some_and(|(c, _)| c.end <= e.start) {
            j += 1;
        }
        let mut cur = e.start;
        let mut k = j;
        while cur < e.end {
            match stored.get(k) {
                Some((c, _)) if c.start < e.end => {
                    if c.start > cur {
                        out.push((
                            Piece {
                                start: cur,
                                end: c.start,
                                loc: e.loc,
                            },
                            at,
                        ));
                    }
                    cur = cur.max(c.end);
                    k += 1;
                }
                _ => {
                    out.push((
                        Piece {
                            start: cur,
                            end: e.end,
                            loc: e.loc,
                        },
                        at,
                    ));
                    break;
                }
            }
        }
    }
    out
}

/// Sort by start and cut away parts already covered by an earlier piece.
fn trim_overlaps(mut pieces: Vec<(Piece, FileOffset)>) -> Vec<(Piece, FileOffset)> {
    pieces.retain(|(p, _)| !p.is_empty());
    pieces.sort_by_key(|(p, _)| p.start); // stable: file order among equal starts
    let mut out: Vec<(Piece, FileOffset)> = Vec::with_capacity(pieces.len());
    let mut covered = PhysAddr(0);
    for (mut p, at) in pieces {
        if !out.is_empty() && p.start < covered {
            if p.end <= covered {
                continue;
            }
            let cut = covered.0 - p.start.0;
            p.start = covered;
            if let Location::Stored(off) = p.loc {
                p.loc = Location::Stored(FileOffset(off.0 + cut));
            }
        }
        covered = covered.max(p.end);
        out.push((p, at));
    }
    out
}

impl Extents for ElfLayout {
    fn map(&self) -> &ExtentMap {
        &self.map
    }
    fn label(&self) -> String {
        format!(
            "ELF{} {} core ({}{} PT_LOAD)",
            self.bits,
            if self.big_endian { "BE" } else { "LE" },
            if self.flattened { "flattened, " } else { "" },
            self.loads
        )
    }
}

impl MappedImage<ElfLayout> {
    /// All notes of all PT_NOTE segments (informational; memory reads never need them).
    pub fn notes(&self) -> Result<Vec<Note>, ParseError> {
        let mut out = Vec::new();
        let mut total = 0u64;
        for seg in &self.layout().note_segments {
            total = total.saturating_add(seg.len);
            if total > MAX_NOTES_BYTES {
                return Err(ParseError::unsupported(
                    seg.at,
                    "PT_NOTE",
                    format!("more than {MAX_NOTES_BYTES} bytes of notes"),
                ));
            }
            let data = self.source().read_vec(seg.at, seg.len, "PT_NOTE data")?;
            out.extend(notes::parse(
                &data,
                seg.at,
                self.layout().big_endian,
                seg.align,
            )?);
        }
        Ok(out)
    }

    /// The VMCOREINFO note's text, if the guest kernel published one.
    pub fn vmcoreinfo(&self) -> Result<Option<String>, ParseError> {
        Ok(self.notes()?.iter().find_map(Note::vmcoreinfo))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(start: u64, end: u64, off: u64) -> (Piece, FileOffset) {
        (
            Piece {
                start: PhysAddr(start),
                end: PhysAddr(end),
                loc: Location::Stored(FileOffset(off)),
            },
            FileOffset(0),
        )
    }

    #[test]
    fn overlapping_loads_keep_the_first_bytes() {
        let out = first_wins(vec![
            stored(0x2000, 0x4000, 0x10000),
            stored(0, 0x3000, 0),
            stored(0x1000, 0x2000, 0x50000),
        ]);
        let pieces: Vec<Piece> = out.into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            pieces,
            vec![stored(0, 0x3000, 0).0, stored(0x3000, 0x4000, 0x11000).0]
        );
    }

    #[test]
    fn zero_filled_tails_only_fill_gaps() {
        let gone = Location::Zero;
        let tail = |s: u64, e: u64| {
            (
                Piece {
                    start: PhysAddr(s),
                    end: PhysAddr(e),
                    loc: gone,
                },
                FileOffset(0),
            )
        };
        // Load A: stored 0..0x1000, not dumped 0x1000..0x5000; load B stored 0x2000..0x3000.
        let mut out: Vec<Piece> = first_wins(vec![
            stored(0, 0x1000, 0),
            tail(0x1000, 0x5000),
            stored(0x2000, 0x3000, 0x9000),
        ])
        .into_iter()
        .map(|(p, _)| p)
        .collect();
        out.sort_by_key(|p| p.start);
        assert_eq!(
            out,
            vec![
                stored(0, 0x1000, 0).0,
                tail(0x1000, 0x2000).0,
                stored(0x2000, 0x3000, 0x9000).0,
                tail(0x3000, 0x5000).0
            ]
        );
    }
}
