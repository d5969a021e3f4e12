//! What Volatility 3's Linux stacker needs beyond the walk's layout, for kernels whose kallsyms
//! has no data symbols and which carry no BTF (so no profile can be made for them from debug
//! information): the globals `init_top_pgt`, `init_mm`, `init_files` and the `task_struct`
//! fields `active_mm` and `files` (its `find_aslr` checks `init_task.active_mm` against
//! `init_mm` and derives the virtual shift from `init_task.files - init_files`).
//!
//! From memory alone, each checked by what it must be:
//! - `init_top_pgt`: kallsyms, else the page table the heuristic finds in `.data`
//!   ([`search_top`]).
//! - `init_mm`: kallsyms, else the one place in `.data` (up to `_sinittext`) holding
//!   `init_top_pgt`'s address where
//!   an `mm_struct`'s `pgd` goes whose argument area (`arg_start..env_end`) is all zero.
//! - `task_struct.active_mm`: the one field besides `mm` that holds every user task's `mm`; of
//!   the two, `mm` is the one NULL in every kernel thread, `active_mm` set in some (a running
//!   kernel thread, or one lazily keeping the last user address space). When the layout's `mm`
//!   is the other one (a randomized layout learned from user tasks), `mm` is corrected. When
//!   every kernel thread is switched out (both NULL), memory cannot tell the two apart, and no
//!   reader of it can be misled by either naming: the layout's stands.
//! - `task_struct.files`: kernel threads share `init_files` (`CLONE_FILES` from `kthreadd`), so
//!   it is a field holding the same image address in `init_task` and every kernel thread and a
//!   direct-map address in user tasks, and of those (`fs`, `files`, the creds) the one whose
//!   object points into itself just past the pointer (`files_struct.fdt == &fdtab` while the
//!   table is the embedded one, as it always is for `init_files`).
//! - `init_files`: `init_task.files`.
//! - `task_struct.cred`: the one field besides `real_cred` that holds every task's `real_cred`;
//!   `cred.gid`, `euid`, `egid`: see [`cred_ids`].
//!
//! Invariant: a value is given only when exactly one candidate passes; every search is bounded
//! ([`SEARCH_SPAN`] of `.data`, [`SAMPLE`] tasks of each kind compared field by field and
//! [`MAX_TASKS`] for credentials, [`MAX_TASK_BYTES`] of each).

use super::addr::KVirt;
use super::kernel::Kernel;
use super::kspace::KernelSpace;
use super::layout::heuristic::ground::{search_top, SEARCH_SPAN};
use super::layout::heuristic::probe::{u64_at, Obj, Probe};
use super::layout::Layout;
use super::walk::{walk, WalkConfig};

/// Tasks of each kind (kernel threads, user tasks) compared.
const SAMPLE: usize = 16;
/// Tasks walked (their credentials all compared).
const MAX_TASKS: usize = 1024;
/// Bytes of a task read.
const MAX_TASK_BYTES: usize = 16 << 10;
/// Places in `.data` holding the page table's address beyond which the search gives up.
const MAX_HITS: usize = 64;
/// Bytes of a `struct cred` compared.
const CRED_BYTES: usize = 256;
/// `.data` read per request when looking for `init_mm`.
const CHUNK: usize = 256 << 10;

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Globals {
    /// `task_struct.mm` when it is not the layout's: user tasks hold the same pointer in `mm`
    /// and `active_mm`, and a layout learned from them alone may have taken one for the other.
    pub mm: Option<u64>,
    pub active_mm: Option<u64>,
    pub files: Option<u64>,
    /// `task_struct.cred` (the effective credentials; the same object as `real_cred` unless a
    /// task overrides them for a moment).
    pub cred: Option<u64>,
    /// `cred.gid`, `cred.euid`, `cred.egid`.
    pub cred_ids: Option<[u64; 3]>,
    pub init_top_pgt: Option<KVirt>,
    pub init_mm: Option<KVirt>,
    pub init_files: Option<KVirt>,
}

/// What [`infer_in`] starts from: `init_task`, the `.data` range searched for `init_mm`
/// (`__start_init_task` to `_sinittext`), and whatever kallsyms names of the three globals.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    pub init_task: KVirt,
    pub data: Option<(KVirt, KVirt)>,
    pub init_top_pgt: Option<KVirt>,
    pub init_mm: Option<KVirt>,
    pub init_files: Option<KVirt>,
}

/// Infers what it can for an opened kernel; a value it cannot pin down stays `None`.
pub fn infer(kernel: &Kernel<'_>, layout: &Layout) -> Globals {
    let Some(init_task) = kernel.info.init_task else { return Globals::default() };
    let syms = kernel.symbols(&["init_top_pgt", "init_mm", "init_files", "_sinittext"]).unwrap_or_else(|_| vec![None; 4]);
    let data = kernel.info.data_start.zip(syms[3]);
    let p = Probe { space: &kernel.space };
    let top = syms[0].or(kernel.info.init_top_pgt).or_else(|| kernel.info.data_start.and_then(|from| search_top(&p, from, init_task).ok()));
    infer_in(&kernel.space, layout, Start { init_task, data, init_top_pgt: top, init_mm: syms[1], init_files: syms[2] })
}

/// [`infer`] over a kernel space (what the fuzz target drives with arbitrary memory).
pub fn infer_in(space: &KernelSpace<'_>, layout: &Layout, start: Start) -> Globals {
    let mut g = Globals::default();
    let init_task = start.init_task;
    let p = Probe { space };
    g.init_top_pgt = start.init_top_pgt;

    // Tasks: init_task, then kernel threads and user tasks from a walk, each kind read whole in
    // one batch.
    let out = walk(space, layout, init_task, WalkConfig { max_tasks: MAX_TASKS, ..WalkConfig::default() });
    // Offsets come from a layout (possibly from a file): never more than MAX_TASK_BYTES.
    let size = (layout.task.size as usize).max((layout.task.mm as usize).saturating_add(16)).min(MAX_TASK_BYTES);
    if size < 16 {
        return g;
    }
    let Some(init) = p.objs_lossy(&[init_task], size).pop().flatten() else { return g };
    let addrs = |kthread: bool| -> Vec<KVirt> { out.threads.iter().filter(|t| t.kthread == kthread).map(|t| t.addr).collect() };
    let kthread_addrs = addrs(true);
    let kthreads: Vec<Obj> = p.objs_lossy(&kthread_addrs[..kthread_addrs.len().min(SAMPLE)], size).into_iter().flatten().collect();
    // Every user task (their credentials are all compared); the first SAMPLE also field by field.
    let every_user = p.objs_lossy(&addrs(false), size);
    let users: Vec<&Obj> = every_user.iter().take(SAMPLE).flatten().collect();
    let every_user: Vec<&Obj> = every_user.iter().flatten().collect();
    let offsets = || (0..size as u64 - 7).step_by(8);
    let mm = layout.task.mm;

    if !users.is_empty() {
        let fits = |o: u64| o != mm && users.iter().all(|u| matches!((u.u64(o), u.u64(mm)), (Some(a), Some(m)) if m != 0 && a == m));
        let c: Vec<u64> = offsets().filter(|&o| fits(o)).collect();
        if let [o] = c.as_slice() {
            // Kernel threads have no `mm`; one running, or lazily keeping the last user's
            // address space, has an `active_mm`. Which of the two is NULL in all of them?
            let null_in_all = |f: u64| kthreads.iter().chain([&init]).all(|k| k.u64(f) == Some(0));
            if !null_in_all(mm) && null_in_all(*o) {
                g.mm = Some(*o);
                g.active_mm = Some(mm);
            } else {
                g.active_mm = Some(*o);
            }
        }
    }

    if !kthreads.is_empty() && !users.is_empty() {
        let shared = |o: u64| -> Option<KVirt> {
            let v = init.ptr(o)?;
            let all = p.image(v)
                && kthreads.iter().all(|k| k.u64(o) == Some(v.0))
                && users.iter().all(|u| u.ptr(o).is_some_and(|x| x != v && p.heap(x)));
            all.then_some(v)
        };
        let points_into_itself = |v: KVirt| -> bool {
            let mut b = [0u8; 136];
            space.read(v, &mut b).is_ok() && (8..=128).step_by(8).any(|k| u64_at(&b, k) == Some(v.0 + k + 8))
        };
        let c: Vec<(u64, KVirt)> = offsets().filter_map(|o| shared(o).map(|v| (o, v))).filter(|&(_, v)| points_into_itself(v)).collect();
        if let [(o, v)] = c.as_slice() {
            g.files = Some(*o);
            g.init_files = Some(*v);
        }
    }
    if let Some(v) = start.init_files {
        g.init_files = Some(v);
    }

    // `cred`: the one field besides `real_cred` holding every task's `real_cred`.
    let rc = layout.task.real_cred;
    let all: Vec<&Obj> = kthreads.iter().chain(users.iter().copied()).chain([&init]).collect();
    let c: Vec<u64> =
        offsets().filter(|&o| o != rc && all.iter().all(|t| matches!((t.u64(o), t.u64(rc)), (Some(a), Some(r)) if r != 0 && a == r))).collect();
    if let [o] = c.as_slice() {
        g.cred = Some(*o);
    }
    g.cred_ids = cred_ids(&p, layout, &every_user);

    g.init_mm = start.init_mm.or_else(|| find_init_mm(space, layout, start.data?, g.init_top_pgt?));
    g
}

/// `gid`, `euid`, `egid` in `struct cred`. In the order the kernel declares the eight ids
/// (`uid, gid, suid, sgid, euid, egid, fsuid, fsgid`) if every user task's credentials read so:
/// the four uid-kind words equal `uid` (known) and the four gid-kind words equal each other.
/// Else (a randomized `struct cred`) the words that equal `uid` in every user task, some of
/// whose uid is not 0, if there are at least three: where no task's ids differ, memory does not
/// tell them apart, and every naming of them reads the same values from it.
fn cred_ids(p: &Probe<'_, '_>, layout: &Layout, users: &[&Obj]) -> Option<[u64; 3]> {
    let u = layout.cred.uid;
    let at: Vec<KVirt> = users.iter().map(|t| t.ptr(layout.task.real_cred)).collect::<Option<_>>()?;
    let creds: Vec<Obj> = p.objs_lossy(&at, CRED_BYTES).into_iter().collect::<Option<_>>()?;
    if creds.is_empty() {
        return None;
    }
    let declared = creds.iter().all(|c| {
        let id = |k: u64| c.u32(u + 4 * k);
        id(0).is_some() && [2, 4, 6].iter().all(|&k| id(k) == id(0)) && [3, 5, 7].iter().all(|&k| id(k) == id(1))
    });
    if declared {
        return Some([u + 4, u + 16, u + 20]);
    }
    if creds.iter().all(|c| c.u32(u) == Some(0)) {
        return None;
    }
    let same: Vec<u64> =
        (0..CRED_BYTES as u64 - 3).step_by(4).filter(|&o| o != u && creds.iter().all(|c| c.u32(o).is_some() && c.u32(o) == c.u32(u))).collect();
    match same.as_slice() {
        [a, b, c, ..] => Some([*a, *b, *c]),
        _ => None,
    }
}

/// The `mm_struct` in `.data` (from `__start_init_task` to `_sinittext`, the init sections that
/// follow it; past the image the window maps whatever lies there, copies of the image among
/// it) whose `pgd` is `top` and whose argument area is zero.
fn find_init_mm(space: &KernelSpace<'_>, layout: &Layout, (from, end): (KVirt, KVirt), top: KVirt) -> Option<KVirt> {
    let span = end.0.checked_sub(from.0)?.min(SEARCH_SPAN);
    let m = &layout.mm;
    let mut hits = Vec::new();
    let mut at = 0u64;
    while at < span {
        let mut buf = vec![0u8; CHUNK.min((span - at) as usize)];
        if space.read(from.wrapping_add(at), &mut buf).is_err() {
            break;
        }
        for k in (0..buf.len().saturating_sub(7)).step_by(8) {
            if u64_at(&buf, k as u64) == Some(top.0) {
                if hits.len() >= MAX_HITS {
                    return None;
                }
                hits.push(from.wrapping_add(at + k as u64));
            }
        }
        at += CHUNK as u64;
    }
    let zero_args = |mm: KVirt| -> bool {
        [m.arg_start, m.arg_end, m.env_start, m.env_end].iter().all(|&o| space.read_u64(mm.wrapping_add(o)).ok() == Some(0))
    };
    let c: Vec<KVirt> = hits.into_iter().filter_map(|h| h.0.checked_sub(m.pgd).map(KVirt)).filter(|&mm| zero_args(mm)).collect();
    match c.as_slice() {
        [mm] => Some(*mm),
        _ => None,
    }
}
