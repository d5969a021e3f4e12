//! Reading for the heuristic method: task windows, pointer classes, and the lockstep walk that
//! finds `init_task.tasks` among all the list heads in `init_task`.
//!
//! Invariant: every read goes through [`KernelSpace::read_many`] in batches; every loop is
//! bounded by a constant here ([`MAX_RING`], [`MAX_LIST_HEADS`]); a candidate list that breaks
//! (unreadable node, wrong back link, a node seen twice, a member without a name) is dropped,
//! never followed further.

use std::collections::HashSet;

use emulator::bytes::Bytes;

use super::super::{LayoutError, MethodKind};
use crate::introspect::addr::KVirt;
use crate::introspect::kspace::KernelSpace;

/// Upper bound on `sizeof(struct task_struct)` the method accepts.
pub const MAX_TASK_SIZE: u64 = 16 << 10;
/// Most list nodes followed around any candidate ring.
pub const MAX_RING: usize = 1 << 16;
/// Most non-empty list heads in `init_task` considered (a 16 KiB struct holds at most 1024).
pub const MAX_LIST_HEADS: usize = 1024;
/// Most list nodes read by one ring search, over all candidate lists together.
pub const RING_BUDGET: usize = 4 * MAX_RING;
/// `TASK_COMM_LEN`.
pub const COMM_LEN: u64 = 16;

pub fn failed(reason: impl Into<String>) -> LayoutError {
    LayoutError::Failed { method: MethodKind::Heuristic, reason: reason.into() }
}

pub fn unavailable(reason: impl Into<String>) -> LayoutError {
    LayoutError::Unavailable { method: MethodKind::Heuristic, reason: reason.into() }
}

/// Little-endian `u64` at `off`, if inside `b` (a heuristic asks and moves on: no error).
pub fn u64_at(b: &[u8], off: u64) -> Option<u64> {
    Bytes::new(b).u64(usize::try_from(off).ok()?).ok()
}

/// Little-endian `u32` at `off`, if inside `b`.
pub fn u32_at(b: &[u8], off: u64) -> Option<u32> {
    Bytes::new(b).u32(usize::try_from(off).ok()?).ok()
}

/// Whether 16 bytes look like a task's `comm`: a non-empty name without control characters,
/// NUL-terminated within the array (bytes after the NUL are stale and not checked).
pub fn is_comm(b: &[u8]) -> bool {
    let Some(nul) = b.iter().take(COMM_LEN as usize).position(|&c| c == 0) else { return false };
    nul > 0 && b[..nul].iter().all(|&c| c >= 0x20 && c != 0x7f)
}

/// The bytes of one structure, read from `addr`.
#[derive(Debug, Clone)]
pub struct Obj {
    pub addr: KVirt,
    pub bytes: Vec<u8>,
}

impl Obj {
    pub fn u64(&self, off: u64) -> Option<u64> {
        u64_at(&self.bytes, off)
    }
    pub fn u32(&self, off: u64) -> Option<u32> {
        u32_at(&self.bytes, off)
    }
    pub fn slice(&self, off: u64, len: u64) -> Option<&[u8]> {
        Bytes::new(&self.bytes).slice(usize::try_from(off).ok()?, usize::try_from(len).ok()?).ok()
    }
    /// A pointer stored at `off`, as the kernel virtual address it holds (not yet checked).
    pub fn ptr(&self, off: u64) -> Option<KVirt> {
        self.u64(off).map(KVirt)
    }
    /// The address of byte `off` of this structure.
    pub fn at(&self, off: u64) -> KVirt {
        self.addr.wrapping_add(off)
    }
}

/// Reads and pointer classification over one kernel's address space.
pub struct Probe<'a, 'm> {
    pub space: &'a KernelSpace<'m>,
}

impl Probe<'_, '_> {
    /// An 8-aligned pointer into the direct map (where slab objects live).
    pub fn heap(&self, v: KVirt) -> bool {
        v.0.is_multiple_of(8) && self.space.in_direct_map(v)
    }

    /// An 8-aligned pointer into the kernel image (static data such as `init_cred`).
    pub fn image(&self, v: KVirt) -> bool {
        v.0.is_multiple_of(8) && self.space.in_image(v)
    }

    /// Either of the above.
    pub fn kernel(&self, v: KVirt) -> bool {
        self.heap(v) || self.image(v)
    }

    /// Read `len` bytes at each address, in one batch; an unreadable one fails naming it.
    pub fn objs(&self, addrs: &[KVirt], len: usize, what: &str) -> Result<Vec<Obj>, LayoutError> {
        let regions: Vec<(KVirt, usize)> = addrs.iter().map(|&a| (a, len)).collect();
        addrs
            .iter()
            .zip(self.space.read_many(&regions))
            .map(|(&addr, r)| r.map(|bytes| Obj { addr, bytes }).map_err(|e| failed(format!("reading {what}: {e}"))))
            .collect()
    }

    /// Like [`Probe::objs`] but keeps going: unreadable ones are `None`.
    pub fn objs_lossy(&self, addrs: &[KVirt], len: usize) -> Vec<Option<Obj>> {
        let regions: Vec<(KVirt, usize)> = addrs.iter().map(|&a| (a, len)).collect();
        addrs.iter().zip(self.space.read_many(&regions)).map(|(&addr, r)| r.ok().map(|bytes| Obj { addr, bytes })).collect()
    }

    /// The pointer at each address, in one batch (`None` where unreadable).
    pub fn ptrs(&self, addrs: &[KVirt]) -> Vec<Option<KVirt>> {
        let regions: Vec<(KVirt, usize)> = addrs.iter().map(|&a| (a, 8)).collect();
        self.space.read_many(&regions).into_iter().map(|r| r.ok().and_then(|b| u64_at(&b, 0)).map(KVirt)).collect()
    }
}

/// `init_task.tasks`, found: the list offset, the `comm` offset, and the members in list order.
#[derive(Debug, Clone)]
pub struct Ring {
    pub tasks: u64,
    pub comm: u64,
    /// Task addresses (node minus `tasks`), `init_task` excluded.
    pub members: Vec<KVirt>,
}

/// A candidate list being followed.
struct Cand {
    off: u64,
    head: KVirt,
    prev: KVirt,
    node: KVirt,
    comms: Vec<u64>,
    members: Vec<KVirt>,
    seen: HashSet<KVirt>,
    alive: bool,
}

/// Find the task list: among the non-empty list heads of `init_task`, those that go round
/// through heap nodes with consistent back links and return to the head, every member having a
/// name at one of the `comms` offsets that also names `init_task`. All candidates advance
/// together, one batched read per hop, within [`RING_BUDGET`] nodes in all. Exactly one ring
/// must be longest.
pub fn find_ring(p: &Probe<'_, '_>, init: &Obj, comms: &[u64]) -> Result<Ring, LayoutError> {
    let mut cands = Vec::new();
    let mut off = 0u64;
    while off + 16 <= init.bytes.len() as u64 {
        if let (Some(next), Some(prev)) = (init.ptr(off), init.ptr(off + 8)) {
            let head = init.at(off);
            if next != head && p.heap(next) && p.heap(prev) {
                if cands.len() >= MAX_LIST_HEADS {
                    return Err(failed(format!("more than {MAX_LIST_HEADS} list heads in init_task")));
                }
                cands.push(Cand {
                    off,
                    head,
                    prev: head,
                    node: next,
                    comms: comms.to_vec(),
                    members: Vec::new(),
                    seen: HashSet::new(),
                    alive: true,
                });
            }
        }
        off += 8;
    }
    let mut spent = 0usize;
    for _hop in 0..=MAX_RING {
        let active: Vec<usize> = (0..cands.len()).filter(|&i| cands[i].alive && cands[i].node != cands[i].head).collect();
        if active.is_empty() {
            break;
        }
        spent += active.len();
        if spent > RING_BUDGET {
            return Err(failed(format!("task list search: more than {RING_BUDGET} list nodes followed without settling")));
        }
        let mut regions = Vec::new();
        for &i in &active {
            let c = &cands[i];
            regions.push((c.node, 16));
            let task = KVirt(c.node.0.wrapping_sub(c.off));
            regions.extend(c.comms.iter().map(|&co| (task.wrapping_add(co), COMM_LEN as usize)));
        }
        let mut results = p.space.read_many(&regions).into_iter();
        for &i in &active {
            let c = &mut cands[i];
            let node = results.next().and_then(|r| r.ok());
            let names: Vec<Option<Vec<u8>>> = c.comms.iter().map(|_| results.next().and_then(|r| r.ok())).collect();
            let Some(node) = node else {
                c.alive = false;
                continue;
            };
            let (next, back) = (KVirt(u64_at(&node, 0).unwrap_or(0)), KVirt(u64_at(&node, 8).unwrap_or(0)));
            let comms: Vec<u64> = c
                .comms
                .iter()
                .zip(&names)
                .filter(|(_, n)| n.as_deref().is_some_and(is_comm))
                .map(|(&co, _)| co)
                .collect();
            if back != c.prev || !c.seen.insert(c.node) || comms.is_empty() || c.members.len() >= MAX_RING {
                c.alive = false;
                continue;
            }
            c.comms = comms;
            c.members.push(KVirt(c.node.0.wrapping_sub(c.off)));
            c.prev = c.node;
            c.node = next;
            if next != c.head && !p.heap(next) {
                c.alive = false;
            }
        }
    }
    let closed: Vec<&Cand> = cands.iter().filter(|c| c.alive && c.node == c.head && c.members.len() >= 2).collect();
    let longest = closed.iter().map(|c| c.members.len()).max().ok_or_else(|| {
        failed("no list in init_task goes round named tasks and back (init_task.tasks not found)")
    })?;
    let best: Vec<&&Cand> = closed.iter().filter(|c| c.members.len() == longest).collect();
    let [ring] = best.as_slice() else {
        let offs: Vec<u64> = best.iter().map(|c| c.off).collect();
        return Err(failed(format!("ambiguous task list: rings of {longest} named tasks at offsets {offs:?}")));
    };
    let [comm] = ring.comms.as_slice() else {
        return Err(failed(format!("ambiguous comm offset: {:?} all name every task", ring.comms)));
    };
    Ok(Ring { tasks: ring.off, comm: *comm, members: ring.members.clone() })
}

/// Offsets in `init_task` holding the idle task's name: `swapper`, optionally `/<cpu>`, then
/// NULs to the end of the 16-byte array.
pub fn swapper_names(init: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    let n = init.len().saturating_sub(COMM_LEN as usize);
    for off in 0..=n {
        let Some(w) = init.get(off..off + COMM_LEN as usize) else { break };
        let Some(rest) = w.strip_prefix(b"swapper") else { continue };
        let digits_end = match rest.strip_prefix(b"/") {
            Some(d) => {
                let k = d.iter().take_while(|c| c.is_ascii_digit()).count();
                if k == 0 {
                    continue;
                }
                1 + k
            }
            None => 0,
        };
        if rest[digits_end..].iter().all(|&c| c == 0) && digits_end < rest.len() {
            out.push(off as u64);
        }
    }
    out
}
