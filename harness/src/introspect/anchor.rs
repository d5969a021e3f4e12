//! Anchoring the walk when kallsyms has no data symbols (`CONFIG_KALLSYMS_ALL` off): find
//! `init_task` in the image's `.data`, then the direct-map base from its first list pointer.
//!
//! - `init_task` is the statically allocated task of CPU 0's idle thread: `comm` "swapper" or
//!   "swapper/0", pid and tgid 0, `PF_KTHREAD`, no `mm`, and — uniquely — its own `real_parent`.
//!   Its `signal` and `real_cred` point into the image (`init_signals`, `init_cred`). It lies in
//!   `.data`, which starts at `__start_init_task` (a symbol kallsyms always keeps). The search
//!   reads `.data` in chunks, 64-byte aligned candidates only (`__aligned(L1_CACHE_BYTES)`).
//! - `page_offset_base` is 1 GiB aligned (`PUD_SIZE` under `CONFIG_RANDOMIZE_MEMORY`, 4-level)
//!   and `init_task.tasks.next` is a slab address in the direct map: the base is that pointer
//!   rounded down to 1 GiB, minus `k` GiB for `k` below the RAM size; the candidate whose
//!   translation holds a list node pointing back at `init_task.tasks` is the one.
//!
//! Invariant: both searches are bounded (`SEARCH_SPAN`, RAM size in GiB) and accept a candidate
//! only after the structural checks above pass on the bytes read.

use emulator::mem::PhysAddr;

use super::addr::KVirt;
use emulator::bytes::Bytes;
use super::gather::Plan;
use super::kernel::Kernel;
use super::layout::Layout;
use super::physread::{read_u64, read_vec};
use super::state::PF_KTHREAD;

/// `.data` up to `init_task`: it sits in init/init_task.o, linked early (tens to hundreds of KiB
/// into `.data` on the corpus kernels); 4 MiB bounds the search.
const SEARCH_SPAN: u64 = 4 << 20;
const CHUNK: u64 = 256 << 10;
const GIB: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    #[error("init_task not found in {span:#x} bytes of .data from {from} with this layout")]
    NoInitTask { from: KVirt, span: u64 },
    #[error("direct-map base not found: no 1 GiB-aligned base maps {ptr} (init_task.tasks.next) onto a node pointing back")]
    NoDirectMap { ptr: KVirt },
    #[error("init_task at {at} does not validate with this layout: {reason}")]
    BadInitTask { at: KVirt, reason: String },
}

/// Fill in `init_task` and `page_offset_base` if kallsyms did not give them, and check that
/// `init_task` looks right under `layout`.
pub fn complete(kernel: &mut Kernel<'_>, layout: &Layout) -> Result<(), AnchorError> {
    let init = match kernel.info.init_task {
        Some(v) => v,
        None => {
            let v = find_init_task(kernel, layout)?;
            kernel.set_init_task(v, "search of .data");
            v
        }
    };
    let next = check_init_task(kernel, layout, init)?;
    if kernel.info.page_offset_base.is_none() {
        let pob = find_page_offset_base(kernel, layout, init, next)?;
        kernel.set_page_offset_base(pob, "init_task.tasks.next, 1 GiB aligned");
    }
    Ok(())
}

fn task_fields(l: &Layout) -> Plan {
    let t = &l.task;
    Plan::new(
        &[(t.tasks, 16), (t.pid, 4), (t.tgid, 4), (t.real_parent, 8), (t.signal, 8), (t.real_cred, 8), (t.mm, 8), (t.flags, 4), (t.comm, 16)],
        512,
    )
}

/// Validate `init_task` at `at`; returns its `tasks.next`.
fn check_init_task(kernel: &Kernel<'_>, l: &Layout, at: KVirt) -> Result<KVirt, AnchorError> {
    let bad = |reason: String| AnchorError::BadInitTask { at, reason };
    let r = task_fields(l).read_many(&kernel.space, &[at]).pop().ok_or_else(|| bad("no read".into()))?.map_err(|e| bad(e.to_string()))?;
    let t = &l.task;
    let f = |e: super::gather::NotRead| bad(e.to_string());
    let (pid, tgid) = (r.i32(t.pid).map_err(f)?, r.i32(t.tgid).map_err(f)?);
    let parent = r.ptr(t.real_parent).map_err(f)?;
    let flags = r.u32(t.flags).map_err(f)?;
    let mm = r.u64(t.mm).map_err(f)?;
    let comm = r.bytes(t.comm, 16).map_err(f)?;
    let signal = r.ptr(t.signal).map_err(f)?;
    let cred = r.ptr(t.real_cred).map_err(f)?;
    let next = r.ptr(t.tasks).map_err(f)?;
    if pid != 0 || tgid != 0 {
        return Err(bad(format!("pid {pid} tgid {tgid}")));
    }
    if parent != at {
        return Err(bad(format!("real_parent {parent} is not itself")));
    }
    if flags & PF_KTHREAD == 0 || mm != 0 {
        return Err(bad(format!("flags {flags:#x}, mm {mm:#x}: not a kernel thread")));
    }
    if !comm.starts_with(b"swapper") {
        return Err(bad(format!("comm {:?}", String::from_utf8_lossy(comm))));
    }
    if !kernel.space.in_image(signal) || !kernel.space.in_image(cred) {
        return Err(bad(format!("signal {signal} / real_cred {cred} outside the image")));
    }
    if !next.is_canonical(57) || next.0 < 0xff00_0000_0000_0000 {
        return Err(bad(format!("tasks.next {next} is not a kernel address")));
    }
    Ok(next)
}

/// Search `.data` for `init_task`.
fn find_init_task(kernel: &Kernel<'_>, l: &Layout) -> Result<KVirt, AnchorError> {
    let from = kernel.info.data_start.unwrap_or(kernel.info.rodata_virt);
    let mem = kernel.space.mem();
    let comm_off = l.task.comm;
    let mut off = 0u64;
    while off < SEARCH_SPAN {
        let va = from.wrapping_add(off);
        let Some(pa) = kernel.space.linear(va) else { break };
        let Ok(chunk) = read_vec(mem, pa, (CHUNK + 16) as usize) else { break };
        let mut pos = 0usize;
        while let Some(p) = find(&chunk[pos..], b"swapper").map(|p| p + pos) {
            pos = p + 1;
            let Some(base) = va.0.wrapping_add(p as u64).checked_sub(comm_off) else { continue };
            if base % 64 != 0 {
                continue;
            }
            if check_init_task(kernel, l, KVirt(base)).is_ok() {
                return Ok(KVirt(base));
            }
        }
        off += CHUNK;
    }
    Err(AnchorError::NoInitTask { from, span: off })
}

/// Find the direct-map base from `init_task.tasks.next`.
fn find_page_offset_base(kernel: &Kernel<'_>, l: &Layout, init: KVirt, next: KVirt) -> Result<KVirt, AnchorError> {
    let mem = kernel.space.mem();
    let ram_end = kernel.space.direct_map_size;
    let head = init.wrapping_add(l.task.tasks);
    let top = next.0 & !(GIB - 1);
    // A remote source may not know its RAM size: look at most 64 GiB below the pointer.
    for k in 0..=ram_end.div_ceil(GIB).min(64) {
        let Some(pob) = top.checked_sub(k * GIB) else { break };
        let phys = next.0 - pob;
        if phys + 16 > ram_end {
            continue;
        }
        let Ok(node) = read_vec(mem, PhysAddr(phys), 16) else { continue };
        let prev = Bytes::new(&node).u64(8).unwrap_or(0);
        if prev == head.0 {
            // The node's own next must be a direct-map address under this base too, or the head.
            let n = read_u64(mem, PhysAddr(phys)).unwrap_or(0);
            if n == head.0 || (n >= pob && n - pob < ram_end) {
                return Ok(KVirt(pob));
            }
        }
    }
    Err(AnchorError::NoDirectMap { ptr: next })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
