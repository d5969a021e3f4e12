//! Grounding the inference: `init_task`, the direct-map base, `sizeof(struct task_struct)` and
//! the kernel's top-level page table — from kallsyms when it has data symbols, from memory
//! alone when it does not (kernels without `CONFIG_KALLSYMS_ALL`), and cross-checked when both
//! are there.
//!
//! - `init_task` (no symbol): searched in `.data` from `__start_init_task`: a "swapper[/N]" name
//!   at some position `pos`, and a 64-byte aligned `B ≤ pos` within 16 KiB such that at least
//!   three words of `[B, B + 16 KiB)` hold `B` — `real_parent`, `parent` and `group_leader` of
//!   `init_task` all point at itself.
//! - direct-map base (no `page_offset_base`): 1 GiB aligned (`CONFIG_RANDOMIZE_MEMORY` moves it
//!   in PUD steps, and the default `0xffff888000000000` is aligned too); for each non-empty list
//!   head of `init_task` whose pointers are outside the image, the bases below its `next`
//!   (within the RAM size) whose translation holds a node pointing back at the head get a
//!   vote; the base with most votes, at least two, wins.
//! - `sizeof(task_struct)`: from where the FPU state sits ([`size`]); when `init_task` alone
//!   does not tell, the caller reads it off forked tasks once it has them. kallsyms'
//!   `arch_task_struct_size` and xstate size, when present, are kept to cross-check.
//! - top-level page table (no `init_top_pgt`): a page-aligned page of `.data` whose entry 511
//!   (`__START_KERNEL_map`) and direct-map entry are present and through which `init_task`'s
//!   address translates to where the image mapping puts it. (`init_mm` is not reachable from
//!   memory alone: the idle task's `active_mm` is NULL whenever it is switched out.)
//!
//! Invariant: every search is bounded ([`SEARCH_SPAN`], 16 KiB windows, RAM size in GiB) and a
//! value is accepted only when exactly one candidate passes.

use std::collections::{BTreeMap, BTreeSet};

use super::probe::{failed, swapper_names, u64_at, unavailable, Obj, Probe, MAX_TASK_SIZE};
use super::mm::MM_WIN;
use super::size::{self, FPREGS_STATE};
use crate::introspect::addr::KVirt;
use crate::introspect::kernel::Kernel;
use crate::introspect::kspace::KernelSpace;
use crate::introspect::paging::PageTables;
use super::super::LayoutError;

/// Bytes of `.data` searched for `init_task`.
pub const SEARCH_SPAN: u64 = 32 << 20;
/// Most "swapper" names in `.data` examined as `init_task`'s.
const MAX_NAME_HITS: usize = 256;
/// Most page-table-looking pages in one chunk translated through.
const MAX_TOP_TRIES: usize = 64;
const CHUNK: u64 = 256 << 10;
const GIB: u64 = 1 << 30;

/// What the inference stands on.
pub struct Ground<'m> {
    /// The kernel's address space, with the direct-map base filled in.
    pub space: KernelSpace<'m>,
    /// `init_task`'s first [`MAX_TASK_SIZE`] bytes.
    pub init: Obj,
    /// The struct's size, when `init_task` alone tells it; else it is read off forked tasks.
    pub task_size: Option<size::TaskSize>,
    /// Where kallsyms puts the end of a task's static FPU state, when it has the symbols.
    pub sym_end: Option<u64>,
    /// `init_mm` with the offset of `pgd` in it (kallsyms only: the idle task's `active_mm` is
    /// NULL whenever it is switched out, so memory alone does not lead there).
    pub init_mm: Option<(Obj, u64)>,
    /// The kernel's top-level page table (`init_top_pgt`).
    pub top: KVirt,
    pub init_cred: Option<KVirt>,
    pub init_signals: Option<KVirt>,
    /// How each anchor was found, for the log.
    pub notes: Vec<String>,
}

const SYMS: &[&str] = &[
    "init_task",
    "init_cred",
    "init_mm",
    "init_top_pgt",
    "init_signals",
    "arch_task_struct_size",
    "fpu_kernel_cfg",
    "fpu_kernel_xstate_size",
];

/// Ground the inference on `kernel`. With `data_symbols` false, kallsyms' data symbols and
/// everything derived from them (`init_task`, `page_offset_base`, the kernel page tables) are
/// ignored, as on a kernel without `CONFIG_KALLSYMS_ALL`.
pub fn ground<'m>(kernel: &Kernel<'m>, data_symbols: bool) -> Result<Ground<'m>, LayoutError> {
    let mut s = kernel.symbols(SYMS).map_err(|e| failed(format!("kallsyms: {e}")))?;
    let mut space = kernel.space.clone();
    let mut known_init = kernel.info.init_task;
    if !data_symbols {
        s.iter_mut().for_each(|v| *v = None);
        known_init = None;
        space.page_offset_base = None;
        space.page_tables = None;
    }
    let mut notes = Vec::new();
    let init_task = match known_init.or(s[0]) {
        Some(v) => {
            notes.push("init_task: kallsyms".to_string());
            v
        }
        None => {
            let from = kernel
                .info
                .data_start
                .ok_or_else(|| unavailable("no init_task in kallsyms and no __start_init_task to search .data from"))?;
            let v = search_init_task(&space, from)?;
            notes.push(format!("init_task: found in .data at {v}"));
            v
        }
    };
    let init = Probe { space: &space }.objs(&[init_task], MAX_TASK_SIZE as usize, "init_task")?.remove(0);
    if space.page_offset_base.is_none() {
        let pob = direct_map_base(&space, &init)?;
        space.page_offset_base = Some(pob);
        notes.push(format!("page_offset_base {pob:#x}: from init_task's list heads"));
    }
    let p = Probe { space: &space };
    let sym_end = symbol_size(&space, s[5], s[6], s[7])?;
    let task_size = size::from_init(&init);
    if let Some(ts) = &task_size {
        size::check_symbols(ts, sym_end)?;
        notes.push(format!("task_struct: {} bytes ({})", ts.size, ts.how));
    }
    let top = match s[3] {
        Some(t) => t,
        None => {
            let from = kernel.info.data_start.ok_or_else(|| failed("no init_top_pgt in kallsyms and no __start_init_task to search .data from"))?;
            let t = search_top(&p, from, init.addr)?;
            notes.push(format!("top-level page table {t}: found in .data"));
            t
        }
    };
    let init_mm = match s[2] {
        Some(mm) => {
            let o = p.objs(&[mm], MM_WIN, "init_mm")?.remove(0);
            let pgd: Vec<u64> = (0..MM_WIN as u64 - 7).step_by(8).filter(|&g| o.u64(g) == Some(top.0)).collect();
            match pgd.as_slice() {
                [g] => Some((o, *g)),
                _ => return Err(failed(format!("init_mm holds the top-level page table at {pgd:?}, not exactly once"))),
            }
        }
        None => None,
    };
    if space.page_tables.is_none() {
        if let Some(root) = space.linear(top) {
            space.page_tables = Some(PageTables::new(root, space.format));
        }
    }
    Ok(Ground {
        space,
        init,
        task_size,
        sym_end,
        init_mm,
        top,
        init_cred: s[1],
        init_signals: s[4],
        notes,
    })
}

/// The static end of a task's FPU state from `arch_task_struct_size` and the default xstate
/// size (see [`size`]).
fn symbol_size(space: &KernelSpace<'_>, ats: Option<KVirt>, cfg: Option<KVirt>, xsz: Option<KVirt>) -> Result<Option<u64>, LayoutError> {
    let Some(ats) = ats else { return Ok(None) };
    let read32 = |v: KVirt| space.read_u32(v).map(u64::from).map_err(|e| failed(format!("reading {v}: {e}")));
    let xstate = match (cfg, xsz) {
        (Some(c), _) => read32(c.wrapping_add(4))?, // fpu_state_config.default_size
        (None, Some(x)) => read32(x)?,
        (None, None) => return Ok(None),
    };
    let n = (read32(ats)? + FPREGS_STATE).checked_sub(xstate);
    Ok(n.filter(|&n| (1024..=2 * MAX_TASK_SIZE).contains(&n)))
}

/// Find `init_task` in `.data` (see the module doc).
pub(super) fn search_init_task(space: &KernelSpace<'_>, from: KVirt) -> Result<KVirt, LayoutError> {
    let mut found = BTreeSet::new();
    let mut off = 0;
    let mut tried = 0;
    while off < SEARCH_SPAN && found.is_empty() {
        let va = from.wrapping_add(off);
        let mut chunk = vec![0u8; (CHUNK + 16) as usize];
        if space.read(va, &mut chunk).is_err() {
            break;
        }
        let mut pos = 0;
        while let Some(k) = chunk[pos..].windows(7).position(|w| w == b"swapper").map(|k| k + pos) {
            pos = k + 1;
            if chunk.get(k..k + 16).is_none_or(|w| swapper_names(w).is_empty()) {
                continue;
            }
            tried += 1;
            if tried > MAX_NAME_HITS {
                return Err(failed(format!("more than {MAX_NAME_HITS} idle-task names in .data from {from}")));
            }
            // A name within 2 * MAX_TASK_SIZE of 2^64 cannot start a whole task: skip it.
            let Some(at) = va.0.checked_add(k as u64).filter(|a| a.checked_add(MAX_TASK_SIZE).is_some()) else { continue };
            let lo = (at.saturating_sub(MAX_TASK_SIZE)) & !63;
            let mut win = vec![0u8; (at + MAX_TASK_SIZE - lo) as usize];
            if space.read(KVirt(lo), &mut win).is_err() {
                continue;
            }
            let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
            for i in (0..win.len() as u64).step_by(8) {
                if let Some(v) = u64_at(&win, i).filter(|&v| v % 64 == 0 && v >= lo && v <= at && lo + i >= v && lo + i < v + MAX_TASK_SIZE) {
                    *counts.entry(v).or_default() += 1;
                }
            }
            found.extend(counts.into_iter().filter(|&(_, n)| n >= 3).map(|(v, _)| v));
        }
        off += CHUNK;
    }
    match found.len() {
        1 => Ok(KVirt(found.into_iter().next().unwrap_or(0))),
        0 => Err(failed(format!("init_task not found in {off:#x} bytes of .data from {from}"))),
        _ => Err(failed(format!("several init_task candidates in .data: {found:x?}"))),
    }
}

/// The direct-map base from `init_task`'s list heads (see the module doc).
pub(super) fn direct_map_base(space: &KernelSpace<'_>, init: &Obj) -> Result<KVirt, LayoutError> {
    let ram_end = space.direct_map_size;
    let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
    let mut heads = 0;
    let len = init.bytes.len() as u64;
    for o in (0..len.saturating_sub(15)).step_by(8) {
        let (Some(next), Some(prev)) = (init.u64(o), init.u64(o + 8)) else { continue };
        let far = |v: u64| v.is_multiple_of(8) && v >= 0xff00_0000_0000_0000 && !space.in_image(KVirt(v));
        if !far(next) || !far(prev) || heads >= 64 {
            continue;
        }
        heads += 1;
        let top = next & !(GIB - 1);
        let bases: Vec<u64> = (0..=ram_end.div_ceil(GIB)).filter_map(|k| top.checked_sub(k * GIB)).filter(|&b| next - b + 16 <= ram_end).collect();
        let regions: Vec<(emulator::mem::PhysAddr, usize)> = bases.iter().map(|&b| (emulator::mem::PhysAddr(next - b), 16)).collect();
        for (b, r) in bases.iter().zip(crate::introspect::physread::read_many(space.mem(), &regions)) {
            if r.ok().and_then(|n| u64_at(&n, 8)).map(KVirt) == Some(init.at(o)) {
                *votes.entry(*b).or_default() += 1;
            }
        }
    }
    let best = votes.values().copied().max().unwrap_or(0);
    let winners: Vec<u64> = votes.iter().filter(|&(_, &n)| n == best).map(|(&b, _)| b).collect();
    match winners.as_slice() {
        [b] if best >= 2 => Ok(KVirt(*b)),
        _ => Err(failed(format!("direct-map base: votes {votes:x?} from {heads} list heads"))),
    }
}

/// Whether a 4 KiB page looks like the kernel's top-level table: entry 511 (the image) and the
/// entry covering the direct map present; with the direct map not known yet, entry 511 and
/// another kernel-half entry present and the user half empty. (No check of the frames against
/// the RAM size: a replayed capture knows only the bytes read; the translation of an image
/// address through the candidate is the decisive test.)
fn looks_like_top(space: &KernelSpace<'_>, page: &[u8]) -> bool {
    let present = |i: u64| u64_at(page, 8 * i).is_some_and(|e| e & 1 != 0);
    match space.page_offset_base {
        Some(pob) => present(511) && present((pob.0 >> 39) & 511),
        None => present(511) && (256..511).any(present) && page[..2048].iter().all(|&b| b == 0),
    }
}

/// The kernel's top-level page table in `.data` (no `init_top_pgt` symbol): the page-aligned
/// page that looks like one and through which `probe` (an address in the image, such as
/// `init_task`) translates to where the image mapping puts it. Scans 256 KiB chunks from
/// `from`, stopping at the first chunk with a hit; the hit must be unique.
pub fn search_top(p: &Probe<'_, '_>, from: KVirt, probe: KVirt) -> Result<KVirt, LayoutError> {
    let space = p.space;
    let want = space.linear(probe).ok_or_else(|| failed(format!("{probe} is not in the image")))?;
    let mut off = 0;
    while off < SEARCH_SPAN {
        let va = from.wrapping_add(off);
        let mut chunk = vec![0u8; CHUNK as usize];
        if space.read(va, &mut chunk).is_err() {
            break;
        }
        let mut hits = Vec::new();
        let mut tries = 0;
        for k in (0..CHUNK).step_by(4096) {
            let page = &chunk[k as usize..(k + 4096) as usize];
            if !looks_like_top(space, page) {
                continue;
            }
            tries += 1;
            if tries > MAX_TOP_TRIES {
                return Err(failed(format!("more than {MAX_TOP_TRIES} page-table-like pages in 256 KiB of .data at {va}")));
            }
            let Some(root) = space.linear(va.wrapping_add(k)) else { continue };
            let t = PageTables::new(root, space.format).translate(space.mem(), probe);
            if t.is_ok_and(|t| t.phys == want) {
                hits.push(va.wrapping_add(k));
            }
        }
        match hits.as_slice() {
            [] => off += CHUNK,
            [t] => return Ok(*t),
            many => return Err(failed(format!("several top-level page table candidates in .data: {many:?}"))),
        }
    }
    Err(failed(format!("no top-level page table in {off:#x} bytes of .data from {from}")))
}

#[cfg(test)]
mod overflow_tests {
    use super::*;
    use crate::introspect::paging::X86_64_4LEVEL;
    use crate::introspect::testutil::VecMem;

    /// An idle-task name in the last page below 2^64 (a direct-map base taken from guest memory):
    /// the search skips it instead of overflowing `at + MAX_TASK_SIZE`.
    #[test]
    fn init_task_search_near_the_top_of_the_address_space() {
        let size = 512u64 << 10;
        let mut mem = VecMem::new(size as usize);
        let pob = 0u64.wrapping_sub(size);
        // The chunk read from `from` ends exactly at 2^64; the name sits 8 KiB below it.
        let from = KVirt(pob + (size - CHUNK - 16));
        mem.write(size - 8192, b"swapper/0\0\0\0\0\0\0\0");
        let space = KernelSpace::new(&mem, 0, Some(KVirt(pob)), &X86_64_4LEVEL);
        let e = search_init_task(&space, from).expect_err("no init_task there");
        assert!(e.to_string().contains("init_task not found"), "{e}");
    }
}
