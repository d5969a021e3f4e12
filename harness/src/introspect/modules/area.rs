//! The module area's view of the modules: every `struct module` in the writable pages the
//! kernel's page tables map in the x86-64 module area, with no symbol and no layout.
//!
//! ```text
//!   init_top_pgt ─ paging::mapped(MODULES_VADDR..MODULES_END) ─ writable pages (a module's data)
//!     ─ every 64-byte-aligned place that looks like the head of a struct module
//!     ─ its list links checked against its neighbours (one batch) → linked, or unlinked
//!     ─ the one list node the linked ones reach that is no module's: the `modules` head
//! ```
//! A `struct module` is `____cacheline_aligned` in its module's own writable memory (the
//! `.gnu.linkonce.this_module` section), and its first fields are the same on every x86-64 kernel
//! since 2.6 (what [`super::infer`] also takes as known): `state` (a `u32` from 0 to 3, then four
//! bytes of padding), `list` (8) and `name[56]` (24), a module name (`[A-Za-z0-9_-]`, from the
//! file name) zero-padded to its end as the compiler laid out the initializer. A place that has
//! all that and whose `list` either links back from both neighbours, points at itself (what a
//! module unlinked with `list_del_init` keeps) or holds the list poisons (`list_del`) is
//! reported; nothing else is.
//!
//! This is how `lsmod` finds the `modules` list on a kernel whose kallsyms has no data symbols
//! (no `CONFIG_KALLSYMS_ALL`), and the `module-area` view of `hidden`.
//!
//! Invariant: at most [`MAX_TABLES`] page tables are read ([`MAX_PAGES`] mappings kept) and
//! [`MAX_BYTES`] bytes of pages, in batches of at most [`BATCH_BYTES`]; a candidate is reported
//! only after its neighbours were read and agree; [`candidates`] never panics and reads only the
//! bytes it is given.

use std::collections::{BTreeMap, HashSet};

use emulator::bytes::Bytes;
use emulator::mem::ReadOp;

use super::infer::{MODULES_END, MODULES_START};
use super::list::KERNEL_HALF;
use crate::introspect::kernel::Kernel;
use crate::introspect::kspace::space_reader;
use crate::introspect::layout::heuristic::ground::search_top;
use crate::introspect::layout::heuristic::probe::Probe;
use crate::introspect::paging;

/// Most page tables read walking the module area.
pub const MAX_TABLES: usize = 4096;
/// Most mappings kept from that walk (the area holds about 376,000 pages of 4 KiB; a machine
/// with a few hundred modules maps tens of thousands).
pub const MAX_PAGES: usize = 1 << 18;
/// Most bytes of mapped pages read (64 MiB: a machine with a few hundred modules has tens).
pub const MAX_BYTES: u64 = 64 << 20;
/// Bytes read per batch.
pub const BATCH_BYTES: u64 = 1 << 20;
/// The alignment of `struct module` (`____cacheline_aligned`).
pub const ALIGN: usize = 64;
const LIST: u64 = 8;
const NAME: usize = 24;
const NAME_LEN: usize = 56;

/// `LIST_POISON1`, `LIST_POISON2`: what `list_del` leaves in a node (x86-64).
const LIST_POISONS: [u64; 2] = [0xdead_0000_0000_0100, 0xdead_0000_0000_0122];

/// A place that holds together as the head of a `struct module`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The `struct module`'s address.
    pub module: u64,
    pub name: String,
    pub state: u32,
    /// `list.next`, `list.prev`.
    pub next: u64,
    pub prev: u64,
    /// Linked into a list (both neighbours point back); else its `list` points at itself
    /// (`list_del_init`) or holds the list poisons (`list_del`).
    pub linked: bool,
}

/// What a scan of the module area found.
#[derive(Debug, Clone, Default)]
pub struct AreaScan {
    /// In address order.
    pub modules: Vec<Found>,
    /// Writable pages read (of any size) and their bytes.
    pub pages: usize,
    pub bytes: u64,
    /// Pages mapped in the area (from `MODULES_VADDR`, not the image), writable or not.
    pub mapped: usize,
    /// A bound stopped the walk or the reads: `modules` may miss some.
    pub truncated: bool,
    /// The page tables walked.
    pub tables: Option<paging::PageTables>,
}

/// The places in `bytes` (mapped at kernel address `va`) that look like the head of a
/// `struct module`, before their links are checked: `(address, name, state, next, prev)`.
pub fn candidates(va: u64, bytes: &[u8]) -> Vec<(u64, String, u32, u64, u64)> {
    let b = Bytes::new(bytes);
    let mut out = Vec::new();
    for off in (0..bytes.len()).step_by(ALIGN) {
        let (Ok(state), Ok(pad), Ok(next), Ok(prev), Ok(name)) =
            (b.u32(off), b.u32(off + 4), b.u64(off + 8), b.u64(off + 16), b.slice(off + NAME, NAME_LEN))
        else {
            break;
        };
        let poisoned = [next, prev] == LIST_POISONS;
        if state > 3 || pad != 0 || !(poisoned || (next >= KERNEL_HALF && prev >= KERNEL_HALF && next % 8 == 0 && prev % 8 == 0)) {
            continue;
        }
        let Some(len) = name.iter().position(|&c| c == 0) else { continue };
        let valid = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-';
        if len == 0 || !name[..len].iter().all(valid) || name[len..].iter().any(|&c| c != 0) {
            continue;
        }
        let name = String::from_utf8_lossy(&name[..len]).into_owned();
        out.push((va.wrapping_add(off as u64), name, state, next, prev));
    }
    out
}

/// `MODULES_VADDR`: 512 MiB above `__START_KERNEL_map` (`MODULES_START`) in a kernel built
/// without `CONFIG_RANDOMIZE_BASE`, whose image then lies below it; 1 GiB above with it, as the
/// image may be placed anywhere in that first GiB. The image is mapped with 2 MiB pages, so a
/// 2 MiB page below 1 GiB above the map says the image reaches past `MODULES_START`: the
/// modules then start at 1 GiB (and the image's own writable pages, tens of MiB, are not read).
fn modules_start(pages: &[paging::Mapping]) -> u64 {
    const RANDOMIZED: u64 = 0xffff_ffff_c000_0000;
    if pages.iter().any(|p| p.size >= 2 << 20 && p.va < RANDOMIZED) {
        RANDOMIZED
    } else {
        MODULES_START
    }
}

/// The kernel's page tables: `init_top_pgt` from kallsyms (as [`Kernel::open`] sets them), else
/// the top-level table searched for in `.data` as the heuristic layout does (a kernel without
/// data symbols; 4-level paging unless the direct map's base said otherwise).
pub fn page_tables(kernel: &Kernel<'_>) -> Result<paging::PageTables, String> {
    if let Some(pt) = kernel.space.page_tables {
        return Ok(pt);
    }
    let from = kernel.info.data_start.ok_or("no init_top_pgt in kallsyms and no __start_init_task to search .data from")?;
    let top = search_top(&Probe { space: &kernel.space }, from, from).map_err(|e| format!("the kernel's page tables: {e}"))?;
    let root = kernel.space.linear(top).ok_or_else(|| format!("the kernel's page tables at {top} are not in the image"))?;
    Ok(paging::PageTables::new(root, kernel.space.format))
}

/// [`page_tables`], kept in `kernel.space` for every later read.
pub fn ensure_page_tables(kernel: &mut Kernel<'_>) -> Result<paging::PageTables, String> {
    let pt = page_tables(kernel)?;
    kernel.space.page_tables = Some(pt);
    Ok(pt)
}

/// Scans the module area of `kernel` through its [`page_tables`] (recorded in the result, for
/// a caller that has to read the modules through them afterwards).
pub fn scan(kernel: &Kernel<'_>) -> Result<AreaScan, String> {
    let pt = page_tables(kernel)?;
    // The neighbours of a module may be other modules: read through the tables found.
    let mut space = kernel.space.clone();
    space.page_tables = Some(pt);
    let space = &space;
    let mem = space.mem();
    let m = paging::mapped(mem, pt, MODULES_START, MODULES_END, MAX_TABLES, MAX_PAGES);
    let start = modules_start(&m.pages);
    let pages: Vec<&paging::Mapping> = m.pages.iter().filter(|p| p.va >= start).collect();
    let mut out = AreaScan { tables: Some(pt), mapped: pages.len(), truncated: m.truncated, ..Default::default() };
    let writable: Vec<&paging::Mapping> = pages.into_iter().filter(|p| p.writable).collect();
    // The writable pages within MAX_BYTES, read in batches of at most BATCH_BYTES (or one page).
    let mut budget = MAX_BYTES;
    let readable: Vec<&paging::Mapping> = writable.iter().copied().take_while(|p| budget.checked_sub(p.size).map(|b| budget = b).is_some()).collect();
    out.truncated |= readable.len() < writable.len();
    let mut raw = Vec::new();
    let mut rest = readable.as_slice();
    while !rest.is_empty() {
        let mut size = 0;
        let fit = rest
            .iter()
            .take_while(|p| {
                size += p.size;
                size <= BATCH_BYTES
            })
            .count();
        let (batch, tail) = rest.split_at(fit.max(1));
        rest = tail;
        let mut bufs: Vec<Vec<u8>> = batch.iter().map(|p| vec![0u8; p.size as usize]).collect();
        let results = {
            let mut ops: Vec<ReadOp<'_>> = bufs.iter_mut().zip(batch).map(|(b, p)| ReadOp { addr: p.phys, buf: &mut b[..] }).collect();
            mem.read_batch(&mut ops)
        };
        out.bytes += batch.iter().map(|p| p.size).sum::<u64>();
        for ((p, buf), r) in batch.iter().zip(&bufs).zip(results) {
            if r.is_ok() {
                out.pages += 1;
                raw.extend(candidates(p.va, buf));
            }
        }
    }
    // Each candidate's neighbours, in one batch: `next->prev` and `prev->next` must be its node.
    let node = |m: u64| m.wrapping_add(LIST);
    let mut regions: Vec<(u64, usize)> = Vec::new();
    for (m, _, _, next, prev) in &raw {
        if [*next, *prev] != [node(*m); 2] && [*next, *prev] != LIST_POISONS {
            regions.push((next.wrapping_add(8), 8));
            regions.push((*prev, 8));
        }
    }
    regions.sort_unstable();
    regions.dedup();
    let words: BTreeMap<u64, u64> = regions
        .iter()
        .zip(space_reader(space)(&regions))
        .filter_map(|(&(a, _), r)| Some((a, Bytes::new(&r.ok()?).u64(0).ok()?)))
        .collect();
    for (module, name, state, next, prev) in raw {
        let n = node(module);
        let linked = if [next, prev] == [n, n] || [next, prev] == LIST_POISONS {
            false
        } else if words.get(&next.wrapping_add(8)) == Some(&n) && words.get(&prev) == Some(&n) {
            true
        } else {
            continue;
        };
        out.modules.push(Found { module, name, state, next, prev, linked });
    }
    Ok(out)
}

/// The `modules` list head: the one node that the linked modules found link to and that is no
/// found module's `list`, which must lie in the kernel image (`in_image`). An error says why
/// there is none (no module loaded, or several candidates).
pub fn head(found: &AreaScan, in_image: impl Fn(u64) -> bool) -> Result<u64, String> {
    let nodes: HashSet<u64> = found.modules.iter().filter(|m| m.linked).map(|m| m.module.wrapping_add(LIST)).collect();
    if nodes.is_empty() {
        return Err(format!(
            "no struct module linked into a list in the module area ({} pages mapped, {} writable read{}): no module is loaded",
            found.mapped,
            found.pages,
            if found.truncated { ", the scan stopped at its bounds" } else { "" }
        ));
    }
    let mut heads: BTreeMap<u64, usize> = BTreeMap::new();
    for m in found.modules.iter().filter(|m| m.linked) {
        for l in [m.next, m.prev] {
            if !nodes.contains(&l) {
                *heads.entry(l).or_default() += 1;
            }
        }
    }
    let in_kernel: Vec<(u64, usize)> = heads.iter().map(|(&a, &n)| (a, n)).filter(|&(a, _)| in_image(a)).collect();
    match in_kernel.as_slice() {
        [(a, _)] => Ok(*a),
        [] => Err(format!("the {} modules found in the module area link to no node in the kernel image (other nodes: {})", nodes.len(), heads.len())),
        more => Err(format!("the modules found in the module area link to {} nodes in the kernel image: {:x?}", more.len(), more.iter().map(|(a, _)| a).collect::<Vec<_>>())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(state: u32, next: u64, prev: u64, name: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 128];
        b[0..4].copy_from_slice(&state.to_le_bytes());
        b[8..16].copy_from_slice(&next.to_le_bytes());
        b[16..24].copy_from_slice(&prev.to_le_bytes());
        b[24..24 + name.len()].copy_from_slice(name);
        b
    }

    #[test]
    fn candidates_are_module_heads_and_nothing_else() {
        let k = 0xffff_ffff_c000_1000u64;
        let mut page = vec![0u8; 4096];
        page[0..128].copy_from_slice(&module(0, k + 0x48, k + 0x48, b"nls_base"));
        page[128..256].copy_from_slice(&module(4, k, k, b"bad_state"));
        page[256..384].copy_from_slice(&module(0, k, 0x1234, b"user_ptr"));
        page[384..512].copy_from_slice(&module(0, k, k, b"sp ace"));
        let mut junk = module(0, k, k, b"tail");
        junk[24 + 10] = b'x'; // bytes after the NUL
        page[512..640].copy_from_slice(&junk);
        page[640..768].copy_from_slice(&module(1, k, k, b"nd-x_9"));
        page[896..1024].copy_from_slice(&module(0, LIST_POISONS[0], LIST_POISONS[1], b"deleted"));
        page[1024..1152].copy_from_slice(&module(0, LIST_POISONS[1], LIST_POISONS[0], b"swapped"));
        // not 64-aligned: never looked at
        page[776..904].copy_from_slice(&module(0, k, k, b"odd"));
        let got: Vec<(u64, String)> = candidates(k, &page).into_iter().map(|(a, n, ..)| (a, n)).collect();
        assert_eq!(got, vec![(k, "nls_base".to_string()), (k + 640, "nd-x_9".to_string()), (k + 896, "deleted".to_string())]);
        // Short or empty input: nothing, no panic.
        assert!(candidates(k, &page[..79]).is_empty(), "the name runs past the bytes");
        assert_eq!(candidates(k, &page[..80]).len(), 1);
        assert!(candidates(k, &[]).is_empty());
    }

    #[test]
    fn the_image_below_one_gib_moves_the_module_area_up() {
        let page = |va: u64, size: u64| paging::Mapping { va, phys: emulator::mem::PhysAddr(0), size, writable: true, executable: false };
        // No KASLR: the image ends below MODULES_START, modules from there.
        assert_eq!(modules_start(&[page(MODULES_START + 0x1000, 4096), page(0xffff_ffff_c000_0000, 4096)]), MODULES_START);
        // KASLR put the image's 2 MiB pages past MODULES_START: modules from 1 GiB.
        assert_eq!(modules_start(&[page(0xffff_ffff_b000_0000, 2 << 20), page(0xffff_ffff_b020_0000, 4096)]), 0xffff_ffff_c000_0000);
    }

    #[test]
    fn the_head_is_the_one_node_in_the_image_that_is_no_module() {
        let image = |a: u64| (0xffff_ffff_8000_0000..0xffff_ffff_c000_0000).contains(&a);
        let head_node = 0xffff_ffff_8200_0000u64;
        let (a, b) = (0xffff_ffff_c000_0000u64, 0xffff_ffff_c001_0000u64);
        let f = |module: u64, next: u64, prev: u64, linked: bool| Found { module, name: "m".into(), state: 0, next, prev, linked };
        let mut s = AreaScan {
            modules: vec![f(a, head_node, b + 8, true), f(b, a + 8, head_node, true), f(0xffff_ffff_c002_0000, 0xffff_ffff_c002_0008, 0xffff_ffff_c002_0008, false)],
            ..Default::default()
        };
        assert_eq!(head(&s, image), Ok(head_node));
        // Nothing linked: no module loaded (an unlinked one is not a list).
        s.modules.retain(|m| !m.linked);
        assert!(head(&s, image).unwrap_err().contains("no module is loaded"));
        // Two lists into the image: ambiguous.
        s.modules = vec![f(a, head_node, head_node, true), f(b, head_node + 64, head_node + 64, true)];
        assert!(head(&s, image).unwrap_err().contains("2 nodes"));
    }
}
