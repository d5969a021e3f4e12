//! Heuristic step 1: init_task, its `comm` and `tasks` offsets, the direct-map base, and every
//! process on the task list — with no layout at all.
//!
//! Invariant: a candidate is accepted only if the whole task ring it implies closes with
//! consistent `prev` pointers within [`MAX_RING`] hops and every task on it has a readable,
//! NUL-terminated name at the implied `comm` offset.

use std::collections::HashMap;

use super::{Snap, TASK_SPAN};
use crate::introspect::addr::KVirt;
use crate::introspect::bytes::Bytes;
use crate::introspect::kernel::Kernel;
use crate::introspect::kspace::KernelSpace;
use crate::introspect::physread::read_vec;

/// `.data` up to `init_task`: it sits in init/init_task.o, linked early (tens to hundreds of KiB
/// into `.data` on the corpus kernels); 4 MiB bounds the search.
const SEARCH_SPAN: u64 = 4 << 20;
const CHUNK: u64 = 256 << 10;
const MAX_RING: usize = 1 << 16;
const GIB: u64 = 1 << 30;

/// What step 1 found.
pub struct Found<'m> {
    pub init: KVirt,
    pub comm_off: u64,
    pub tasks_off: u64,
    /// The kernel space with the direct-map base filled in.
    pub space: KernelSpace<'m>,
    /// Process (group leader) addresses, in list order.
    pub leaders: Vec<u64>,
    /// init_task's bytes.
    pub init_snap: Snap,
}

fn find_bytes(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    hay.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect()
}

/// A task name: NUL-terminated within 16 bytes, no control bytes before the NUL.
pub fn plausible_comm(b: &[u8]) -> bool {
    match b.iter().take(16).position(|&c| c == 0) {
        Some(n) => n > 0 && b[..n].iter().all(|&c| c >= 0x20 && c != 0x7f),
        None => false,
    }
}

pub fn find<'m>(kernel: &Kernel<'m>) -> Result<Found<'m>, String> {
    let space = &kernel.space;
    let mem = space.mem();
    let from = kernel.info.data_start.unwrap_or(kernel.info.rodata_virt);
    let mut off = 0u64;
    let mut tried = 0usize;
    while off < SEARCH_SPAN {
        let va = from.0.wrapping_add(off);
        let Some(pa) = space.linear(KVirt(va)) else { break };
        let Ok(chunk) = read_vec(mem, pa, (CHUNK + 16) as usize) else { break };
        for p in find_bytes(&chunk, b"swapper") {
            let c = va + p as u64;
            if !plausible_comm(chunk.get(p..).unwrap_or(&[])) {
                continue;
            }
            tried += 1;
            if let Some(found) = try_comm(kernel, KVirt(c)) {
                return Ok(found);
            }
        }
        off += CHUNK;
    }
    Err(format!("no init_task found in {off:#x} bytes of .data from {from} ({tried} \"swapper\" names examined)"))
}

/// Given the address of a "swapper" name, find init_task's base from the pointers to itself.
fn try_comm<'m>(kernel: &Kernel<'m>, comm: KVirt) -> Option<Found<'m>> {
    let space = &kernel.space;
    let lo = comm.0.saturating_sub(TASK_SPAN as u64) & !7;
    let win = space.linear(KVirt(lo)).and_then(|p| read_vec(space.mem(), p, TASK_SPAN + 4096).ok())?;
    let b = Bytes::new(&win);
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for i in (0..win.len().saturating_sub(8)).step_by(8) {
        let v = b.u64(i).ok()?;
        if v % 64 == 0 && v <= comm.0 && comm.0 - v < TASK_SPAN as u64 && space.in_image(KVirt(v)) {
            *counts.entry(v).or_default() += 1;
        }
    }
    let mut cands: Vec<(usize, u64)> = counts.into_iter().filter(|&(_, n)| n >= 3).map(|(v, n)| (n, v)).collect();
    cands.sort_unstable_by(|a, b| b.cmp(a));
    for (_, base) in cands.into_iter().take(4) {
        let init_snap = Snap { base, data: read_vec(space.mem(), space.linear(KVirt(base))?, TASK_SPAN).ok()? };
        if let Some(f) = find_tasks(kernel, &init_snap, comm.0 - base) {
            return Some(f);
        }
    }
    None
}

/// Among init_task's list heads into the direct map, the one that is the task list.
fn find_tasks<'m>(kernel: &Kernel<'m>, init: &Snap, comm_off: u64) -> Option<Found<'m>> {
    let space = &kernel.space;
    let ram = space.direct_map_size;
    let mut best: Option<Found<'m>> = None;
    for q in (0..TASK_SPAN as u64 - 16).step_by(8) {
        let (Some(next), Some(_)) = (init.u64(q), init.u64(q + 8)) else { continue };
        if next < 0xff00_0000_0000_0000 || space.in_image(KVirt(next)) || next % 8 != 0 {
            continue;
        }
        let head = init.base + q;
        // A remote source may not know its RAM size: look at most 64 GiB below the pointer.
        for k in 0..=ram.div_ceil(GIB).min(64) {
            let Some(pob) = (next & !(GIB - 1)).checked_sub(k * GIB) else { break };
            if next - pob >= ram {
                continue;
            }
            let mut s = space.clone();
            s.page_offset_base = Some(pob);
            if let Some(leaders) = ring(&s, head, q, comm_off) {
                if best.as_ref().is_none_or(|b| leaders.len() > b.leaders.len()) {
                    best = Some(Found { init: KVirt(init.base), comm_off, tasks_off: q, space: s, leaders, init_snap: init.clone() });
                }
                break;
            }
        }
    }
    best
}

/// Walk the ring from `head`; every node minus `q` must be a task with a name at `comm_off`.
fn ring(s: &KernelSpace<'_>, head: u64, q: u64, comm_off: u64) -> Option<Vec<u64>> {
    let mut out = Vec::new();
    let mut prev = head;
    let mut node = s.read_u64(KVirt(head)).ok()?;
    while node != head {
        if out.len() >= MAX_RING || !s.in_direct_map(KVirt(node)) || node % 8 != 0 {
            return None;
        }
        let nb = s.read_many(&[(KVirt(node), 16)]).pop()?.ok()?;
        let b = Bytes::new(&nb);
        if b.u64(8).ok()? != prev {
            return None;
        }
        // task_structs come from a cache aligned to L1_CACHE_BYTES.
        let base = node.checked_sub(q).filter(|b| b % 64 == 0)?;
        out.push(base);
        prev = node;
        node = b.u64(0).ok()?;
    }
    if out.len() < 2 {
        return None;
    }
    // Names, in one batch.
    let names = s.read_many(&out.iter().map(|&b| (KVirt(b + comm_off), 16)).collect::<Vec<_>>());
    names.into_iter().all(|n| n.is_ok_and(|n| plausible_comm(&n))).then_some(out)
}

/// Read `TASK_SPAN` bytes of each task (one batch).
pub fn snaps(s: &KernelSpace<'_>, bases: &[u64], span: usize) -> Result<Vec<Snap>, String> {
    let regions: Vec<(KVirt, usize)> = bases.iter().map(|&b| (KVirt(b), span)).collect();
    s.read_many(&regions)
        .into_iter()
        .zip(bases)
        .map(|(r, &base)| r.map(|data| Snap { base, data }).map_err(|e| format!("task at {base:#x}: {e}")))
        .collect()
}
