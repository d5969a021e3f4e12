//! Virtual-to-physical translation through guest page tables, with the page-table format as data.
//!
//! Invariant: a walk reads exactly one entry per level of its [`PagingFormat`] and stops — a
//! table that points at itself (recursive mappings, loops, garbage) cannot make it run longer.
//! Every failure names the virtual address, the level and the physical entry that stopped it.
//! One generic walker serves every format; x86-64 4- and 5-level are two constant tables.

use emulator::mem::{MemError, PhysAddr, PhysMem, ReadOp};

use super::addr::Virt;

/// One level of a radix page table.
#[derive(Debug, Clone, Copy)]
pub struct Level {
    /// Name used in errors ("PML4", "PD", ...).
    pub name: &'static str,
    /// Bit position of this level's index in the virtual address.
    pub shift: u32,
    /// Whether an entry here may map a page directly (the PS bit on x86-64).
    pub large_page: bool,
}

/// A page-table format: levels from the root down, and the entry encoding.
#[derive(Debug, Clone, Copy)]
pub struct PagingFormat {
    pub name: &'static str,
    pub levels: &'static [Level],
    /// Bits of index per level (9 on x86-64: 512 entries of 8 bytes).
    pub index_bits: u32,
    /// Bits of the entry holding the next table's (or a 4 KiB page's) physical address.
    pub addr_mask: u64,
    /// The present bit.
    pub present: u64,
    /// The bit marking a large-page entry at levels that allow one.
    pub page_size: u64,
    /// The bit allowing writes through an entry (R/W on x86-64; needed at every level).
    pub writable: u64,
    /// The bit forbidding instruction fetches through an entry (XD on x86-64; at any level).
    pub no_execute: u64,
}

impl PagingFormat {
    /// Width of a canonical virtual address.
    pub fn va_bits(&self) -> u32 {
        self.levels.first().map(|l| l.shift + self.index_bits).unwrap_or(0)
    }
}

/// The x86-64 levels; 5-level paging puts PML5 above the same four.
const PML5: Level = Level { name: "PML5", shift: 48, large_page: false };
const PML4: Level = Level { name: "PML4", shift: 39, large_page: false };
const PDPT: Level = Level { name: "PDPT", shift: 30, large_page: true };
const PD: Level = Level { name: "PD", shift: 21, large_page: true };
const PT: Level = Level { name: "PT", shift: 12, large_page: false };

/// x86-64 4-level paging (48-bit virtual addresses).
pub const X86_64_4LEVEL: PagingFormat = PagingFormat {
    name: "x86-64 4-level",
    levels: &[PML4, PDPT, PD, PT],
    index_bits: 9,
    addr_mask: 0x000f_ffff_ffff_f000,
    present: 1,
    page_size: 1 << 7,
    writable: 1 << 1,
    no_execute: 1 << 63,
};

/// x86-64 5-level paging (57-bit virtual addresses, LA57): the same entries, one level more.
pub const X86_64_5LEVEL: PagingFormat =
    PagingFormat { name: "x86-64 5-level", levels: &[PML5, PML4, PDPT, PD, PT], ..X86_64_4LEVEL };

/// Where a virtual address landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    pub phys: PhysAddr,
    /// Size of the page that maps it (4 KiB, 2 MiB, 1 GiB).
    pub page_size: u64,
}

impl Translation {
    /// Bytes from `phys` to the end of its page.
    pub fn remaining_in_page(&self) -> u64 {
        self.page_size - self.phys.page_offset(self.page_size)
    }
}

/// Why a translation failed: every variant names the virtual address, typed by its space
/// ([`KVirt`](super::addr::KVirt) or [`UVirt`](super::addr::UVirt)).
#[derive(Debug, thiserror::Error)]
pub enum PagingError<V: Virt> {
    #[error("virtual address {va:#x} is not canonical for {format}")]
    NonCanonical { va: V, format: &'static str },
    #[error("virtual address {va:#x}: {level} entry at {entry} = {value:#x} is not present")]
    NotPresent { va: V, level: &'static str, entry: PhysAddr, value: u64 },
    #[error("virtual address {va:#x}: {level} entry at {entry} points outside physical memory ({value:#x})")]
    BadEntry { va: V, level: &'static str, entry: PhysAddr, value: u64 },
    #[error("virtual address {va:#x}: reading the {level} entry failed: {source}")]
    Mem { va: V, level: &'static str, source: MemError },
    /// The table's entry lies past the end of the physical address space (a root or table base
    /// taken from guest memory near 2^64).
    #[error("virtual address {va:#x}: the {level} table at {table} has no entry {index} below 2^64")]
    TableOutOfRange { va: V, level: &'static str, table: PhysAddr, index: u64 },
}

impl<V: Virt> PagingError<V> {
    pub fn va(&self) -> V {
        match self {
            PagingError::NonCanonical { va, .. }
            | PagingError::NotPresent { va, .. }
            | PagingError::BadEntry { va, .. }
            | PagingError::Mem { va, .. }
            | PagingError::TableOutOfRange { va, .. } => *va,
        }
    }
}

/// Page tables rooted at `root` (a CR3 / `mm->pgd` value translated to physical).
#[derive(Debug, Clone, Copy)]
pub struct PageTables {
    pub root: PhysAddr,
    pub format: &'static PagingFormat,
}

/// One walk in progress.
struct Walk<V: Virt> {
    va: V,
    table: PhysAddr,
    level: usize,
    done: Option<Result<Translation, PagingError<V>>>,
}

impl PageTables {
    pub fn new(root: PhysAddr, format: &'static PagingFormat) -> Self {
        PageTables { root, format }
    }

    /// Translate one address.
    pub fn translate<V: Virt>(&self, mem: &dyn PhysMem, va: V) -> Result<Translation, PagingError<V>> {
        translate_many(mem, &[(*self, va)]).pop().unwrap_or(Err(PagingError::NonCanonical {
            va,
            format: self.format.name,
        }))
    }
}

/// Translate many addresses, possibly under different page tables, level by level: all walks
/// read their entry for one level in one `read_batch`, so a pipelining backend pays one round
/// trip per level rather than one per entry.
pub fn translate_many<V: Virt>(mem: &dyn PhysMem, reqs: &[(PageTables, V)]) -> Vec<Result<Translation, PagingError<V>>> {
    let mut walks: Vec<Walk<V>> = reqs
        .iter()
        .map(|(pt, va)| {
            let bits = pt.format.va_bits();
            let shift = 64 - bits;
            let raw = va.raw();
            let canonical = bits > 0 && ((((raw << shift) as i64) >> shift) as u64) == raw;
            Walk {
                va: *va,
                table: pt.root,
                level: 0,
                done: (!canonical).then_some(Err(PagingError::NonCanonical { va: *va, format: pt.format.name })),
            }
        })
        .collect();
    let max_levels = reqs.iter().map(|(pt, _)| pt.format.levels.len()).max().unwrap_or(0);
    for _ in 0..max_levels {
        let pending: Vec<usize> = (0..walks.len()).filter(|&i| walks[i].done.is_none()).collect();
        if pending.is_empty() {
            break;
        }
        // The entry of each pending walk at its level; a table whose entry would lie past 2^64
        // (a root from guest memory) ends its walk here.
        let mut entry_of: Vec<(usize, PhysAddr)> = Vec::with_capacity(pending.len());
        for &i in &pending {
            let (pt, _) = &reqs[i];
            let w = &mut walks[i];
            let lvl = pt.format.levels[w.level];
            let index = (w.va.raw() >> lvl.shift) & ((1 << pt.format.index_bits) - 1);
            match w.table.checked_add(index * 8) {
                Some(a) => entry_of.push((i, a)),
                None => w.done = Some(Err(PagingError::TableOutOfRange { va: w.va, level: lvl.name, table: w.table, index })),
            }
        }
        let (pending, entry_addrs): (Vec<usize>, Vec<PhysAddr>) = entry_of.into_iter().unzip();
        // Each distinct entry is read once: walks of addresses in one page (or one table) of
        // one address space share their entries down to where they part.
        let mut distinct = entry_addrs.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let mut bufs = vec![[0u8; 8]; distinct.len()];
        let results = {
            let mut ops: Vec<ReadOp<'_>> = bufs
                .iter_mut()
                .zip(&distinct)
                .map(|(buf, &addr)| ReadOp { addr, buf: &mut buf[..] })
                .collect();
            mem.read_batch(&mut ops)
        };
        for (k, &i) in pending.iter().enumerate() {
            let fmt = reqs[i].0.format;
            let w = &mut walks[i];
            let lvl = fmt.levels[w.level];
            let entry = entry_addrs[k];
            let Ok(d) = distinct.binary_search(&entry) else { continue };
            match &results[d] {
                Err(source) => w.done = Some(Err(PagingError::Mem { va: w.va, level: lvl.name, source: source.clone() })),
                Ok(()) => w.done = step(fmt, w, lvl, entry, u64::from_le_bytes(bufs[d])),
            }
        }
    }
    walks
        .into_iter()
        .map(|w| {
            w.done.unwrap_or(Err(PagingError::NonCanonical { va: w.va, format: "walk did not finish" }))
        })
        .collect()
}

/// Apply one entry to a walk: finish it (page found or error) or descend a level.
fn step<V: Virt>(
    fmt: &PagingFormat,
    w: &mut Walk<V>,
    lvl: Level,
    entry: PhysAddr,
    value: u64,
) -> Option<Result<Translation, PagingError<V>>> {
    if value & fmt.present == 0 {
        return Some(Err(PagingError::NotPresent { va: w.va, level: lvl.name, entry, value }));
    }
    let last = w.level + 1 == fmt.levels.len();
    if last || (lvl.large_page && value & fmt.page_size != 0) {
        let page_size = 1u64 << lvl.shift;
        let base = value & fmt.addr_mask & !(page_size - 1);
        return Some(Ok(Translation { phys: PhysAddr(base | (w.va.raw() & (page_size - 1))), page_size }));
    }
    w.table = PhysAddr(value & fmt.addr_mask);
    w.level += 1;
    None
}

/// One present leaf entry: a page mapped in a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// The page's virtual address (aligned to its size).
    pub va: u64,
    pub phys: PhysAddr,
    /// 4 KiB, 2 MiB or 1 GiB.
    pub size: u64,
    /// Writable through every level above it.
    pub writable: bool,
    /// Executable: no level on the way forbids it.
    pub executable: bool,
}

/// The pages mapped in `[start, end)` under `pt`, in address order, found level by level: one
/// `read_batch` per level, of the entries of each table that fall in the range.
#[derive(Debug, Default)]
pub struct Mapped {
    pub pages: Vec<Mapping>,
    /// Tables read.
    pub tables: usize,
    /// Stopped at `max_tables` tables or `max_pages` pages: `pages` is a prefix of the answer.
    pub truncated: bool,
    /// Tables left unread at `max_tables`: the (sign-extended) address their entry maps, and
    /// the table's physical address.
    pub unread: Vec<(u64, PhysAddr)>,
    /// Tables that could not be read (their part of the range is left out).
    pub unreadable: usize,
}

/// Enumerates the mappings of `[start, end)` (canonical, within one half of the address space).
/// Bounded whatever the tables hold: the walk is as deep as the format, reads at most
/// `max_tables` tables and keeps at most `max_pages` mappings, so tables that point at each
/// other or at themselves cannot make it run longer.
pub fn mapped(mem: &dyn PhysMem, pt: PageTables, start: u64, end: u64, max_tables: usize, max_pages: usize) -> Mapped {
    let fmt = pt.format;
    let mut out = Mapped::default();
    // Offsets in the format's `va_bits` space, where the root's entry 0 maps 0; an `end` at the
    // top of the space (2^64) masks to 0.
    let mask = (1u64 << fmt.va_bits()).wrapping_sub(1);
    let (start, end) = (start & mask, match end & mask { 0 if end != 0 => mask + 1, e => e });
    // (table, offset its entry 0 maps, writable so far, executable so far)
    let mut frontier = vec![(pt.root, 0u64, true, true)];
    let sign = |v: u64| -> u64 {
        let shift = 64 - fmt.va_bits();
        (((v << shift) as i64) >> shift) as u64
    };
    for (depth, lvl) in fmt.levels.iter().enumerate() {
        if frontier.is_empty() {
            break;
        }
        if out.tables + frontier.len() > max_tables {
            let keep = max_tables.saturating_sub(out.tables);
            out.unread.extend(frontier[keep..].iter().map(|&(table, base, ..)| (sign(base), table)));
            frontier.truncate(keep);
            out.truncated = true;
        }
        out.tables += frontier.len();
        let span = 1u64 << lvl.shift;
        let entries = 1u64 << fmt.index_bits;
        // The entries of each table inside [start, end).
        let ranges: Vec<(u64, u64)> = frontier
            .iter()
            .map(|&(_, base, ..)| {
                let first = if start > base { ((start - base) / span).min(entries) } else { 0 };
                let last = if end > base { (end - base).div_ceil(span).min(entries) } else { 0 };
                (first, last.max(first))
            })
            .collect();
        let mut bufs: Vec<Vec<u8>> = ranges.iter().map(|&(a, b)| vec![0u8; ((b - a) * 8) as usize]).collect();
        let results = {
            let mut ops: Vec<ReadOp<'_>> = bufs
                .iter_mut()
                .zip(frontier.iter().zip(&ranges))
                .map(|(buf, (&(table, ..), &(a, _)))| ReadOp { addr: PhysAddr(table.0.wrapping_add(a * 8)), buf: &mut buf[..] })
                .collect();
            mem.read_batch(&mut ops)
        };
        let last_level = depth + 1 == fmt.levels.len();
        let mut next = Vec::new();
        for (((&(_, base, writable, executable), &(a, _)), buf), result) in frontier.iter().zip(&ranges).zip(&bufs).zip(results) {
            if result.is_err() {
                out.unreadable += 1;
                continue;
            }
            for (k, e) in buf.chunks_exact(8).enumerate() {
                let value = u64::from_le_bytes(e.try_into().unwrap_or([0; 8]));
                if value & fmt.present == 0 {
                    continue;
                }
                let offset = base.wrapping_add((a + k as u64) * span);
                let w = writable && value & fmt.writable != 0;
                let x = executable && value & fmt.no_execute == 0;
                if last_level || (lvl.large_page && value & fmt.page_size != 0) {
                    if out.pages.len() == max_pages {
                        out.truncated = true;
                        continue;
                    }
                    let phys = PhysAddr(value & fmt.addr_mask & !(span - 1));
                    out.pages.push(Mapping { va: sign(offset), phys, size: span, writable: w, executable: x });
                } else {
                    next.push((PhysAddr(value & fmt.addr_mask), offset, w, x));
                }
            }
        }
        frontier = next;
    }
    out.pages.sort_by_key(|m| m.va);
    out
}

#[cfg(test)]
#[path = "paging_tests.rs"]
mod tests;
