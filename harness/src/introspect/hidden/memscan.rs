//! The scan view: every 64-byte-aligned place in physical memory that validates as a
//! `task_struct` with the learned layout (`--scan`, as it reads all of RAM).
//!
//! `task_struct`s come from a slab cache aligned to the cache line (64 bytes on x86-64) in the
//! direct map, so a candidate is at `phys % 64 == 0` and its kernel address is
//! `page_offset_base + phys`. A candidate must have, at the layout's offsets:
//! - `pid` and `tgid` in `1..=PID_MAX_LIMIT` (pid 0 is the idle tasks', never hidden);
//! - a `comm` non-empty, NUL-terminated within its 16 bytes, without control characters
//!   (bytes from 0x20: UTF-8 and stray high bytes are names Linux accepts, and the corpus has one);
//! - `real_parent`, `real_cred` and `signal`: 8-aligned kernel addresses (direct map or image),
//!   and `mm` null or one;
//! - `tasks.next` and `tasks.prev` each a kernel address, its own `tasks` (`list_del_init`) or
//!   a list poison (`list_del`): what a task unlinked from the list keeps;
//! - a `__state` below `0x10000` (every state bit Linux defines).
//!
//! Freed `task_struct`s stay in memory until reused: they are found too, and told apart later
//! by their state (`TASK_DEAD`), not here. Limits: a task whose `comm` holds control characters,
//! or whose structure the rootkit scrambled, is not found.
//!
//! Invariant: memory is read in chunks of [`CHUNK`] bytes (plus one structure of overlap) from
//! the RAM ranges given (the source's, or up to `max_pfn` over the wire); at most
//! [`MAX_CANDIDATES`] candidates are kept and `max_bytes` read.

use emulator::mem::{PhysAddr, PhysMem, ReadOp};

use crate::introspect::layout::Layout;
use crate::introspect::state::PID_MAX_LIMIT;

/// Bytes read per chunk.
pub const CHUNK: u64 = 4 << 20;
/// Most candidates kept.
pub const MAX_CANDIDATES: usize = 1 << 18;
/// The slab alignment of `task_struct` (`L1_CACHE_BYTES`).
pub const ALIGN: u64 = 64;
const PAGE: u64 = 4096;
/// `LIST_POISON1` and `LIST_POISON2` (x86-64, `CONFIG_ILLEGAL_POINTER_VALUE` 0xdead000000000000).
pub const LIST_POISONS: [u64; 2] = [0xdead_0000_0000_0100, 0xdead_0000_0000_0122];

/// A place that validates as a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub phys: PhysAddr,
    pub pid: i32,
}

#[derive(Debug, Clone, Default)]
pub struct ScanOutcome {
    pub candidates: Vec<Candidate>,
    pub bytes: u64,
    /// Pages the source could not read (read as zeros).
    pub pages_unreadable: usize,
    /// Stopped at `max_bytes` or [`MAX_CANDIDATES`].
    pub truncated: bool,
}

fn u64_at(b: &[u8], o: u64) -> u64 {
    b.get(o as usize..o as usize + 8).and_then(|s| s.try_into().ok()).map(u64::from_le_bytes).unwrap_or(0)
}

fn i32_at(b: &[u8], o: u64) -> i32 {
    b.get(o as usize..o as usize + 4).and_then(|s| s.try_into().ok()).map(i32::from_le_bytes).unwrap_or(-1)
}

/// Whether the `task_struct` at `b[0..]`, whose kernel address is `virt`, validates.
/// `kptr` says whether a value is an 8-aligned kernel data address.
pub fn validates(l: &Layout, b: &[u8], virt: u64, kptr: &dyn Fn(u64) -> bool) -> bool {
    let t = &l.task;
    let pid_ok = |v: i32| (1..=PID_MAX_LIMIT).contains(&v);
    if !pid_ok(i32_at(b, t.pid)) || !pid_ok(i32_at(b, t.tgid)) {
        return false;
    }
    let Some(comm) = b.get(t.comm as usize..t.comm as usize + 16) else { return false };
    let Some(end) = comm.iter().position(|&c| c == 0) else { return false };
    if end == 0 || !comm[..end].iter().all(|&c| c >= 0x20) {
        return false;
    }
    if ![t.real_parent, t.real_cred, t.signal].iter().all(|&o| kptr(u64_at(b, o))) {
        return false;
    }
    let mm = u64_at(b, t.mm);
    if mm != 0 && !kptr(mm) {
        return false;
    }
    let own = virt.wrapping_add(t.tasks);
    if ![u64_at(b, t.tasks), u64_at(b, t.tasks + 8)].iter().all(|&v| v == own || LIST_POISONS.contains(&v) || kptr(v)) {
        return false;
    }
    let state = b.get(t.state as usize..(t.state + t.state_size) as usize).map(|s| s.iter().rev().fold(0u64, |a, &x| a << 8 | x as u64));
    state.is_some_and(|s| s < 0x10000)
}

/// Scans `ranges` (physical start, end) of `mem`: every candidate, with its kernel address
/// `page_offset_base + phys`. Each chunk is read as a batch of 4 KiB pages; a page that cannot
/// be read (a hole the source does not back) reads as zeros and is counted.
pub fn scan(mem: &dyn PhysMem, ranges: &[(u64, u64)], l: &Layout, page_offset_base: u64, max_bytes: u64, kptr: &dyn Fn(u64) -> bool) -> ScanOutcome {
    let mut out = ScanOutcome::default();
    let size = l.task.size.clamp(ALIGN, 1 << 16);
    let mut buf = Vec::new();
    for &(start, stop) in ranges {
        let mut at = start.next_multiple_of(PAGE);
        while at < stop {
            if out.bytes >= max_bytes || out.candidates.len() >= MAX_CANDIDATES {
                out.truncated = true;
                return out;
            }
            let end = at.saturating_add(CHUNK).min(stop);
            let len = ((end - at) + size).min(stop - at).next_multiple_of(PAGE) as usize;
            buf.clear();
            buf.resize(len, 0);
            let mut ops: Vec<ReadOp<'_>> =
                buf.chunks_mut(PAGE as usize).enumerate().map(|(i, b)| ReadOp { addr: PhysAddr(at + i as u64 * PAGE), buf: b }).collect();
            let results = mem.read_batch(&mut ops);
            drop(ops);
            for (i, r) in results.iter().enumerate() {
                if r.is_err() {
                    out.pages_unreadable += 1;
                    buf[i * PAGE as usize..(i + 1) * PAGE as usize].fill(0);
                }
            }
            out.bytes += len as u64;
            let mut off = 0u64;
            while at + off < end && off + size <= len as u64 {
                let b = &buf[off as usize..];
                let phys = at + off;
                if validates(l, b, page_offset_base.wrapping_add(phys), kptr) {
                    out.candidates.push(Candidate { phys: PhysAddr(phys), pid: i32_at(b, l.task.pid) });
                }
                off += ALIGN;
            }
            at = end;
        }
    }
    out
}
