//! Inferring the few offsets of `struct kthread` and `struct worker` that kernel-thread names
//! need, from memory, for layout methods that cannot see these private structures (`thesis`
//! probes headers only; `heuristic` sees nothing).
//!
//! - `kthread->data` and `worker->task`: for every workqueue worker (`PF_WQ_WORKER`), `data`
//!   points at its `struct worker`, whose `task` points back at the task. The pair of offsets
//!   that closes this loop for *every* worker is the one (searched over the first 128 bytes of
//!   `kthread` and 256 of `worker`).
//! - `worker->current_work`, `->pool`, `->desc`: at fixed distances from `->task` in 6.1's
//!   `struct worker`, which has no conditional members (kernel/workqueue_internal.h):
//!   `current_work = task - 48`, `pool = task + 8`, `desc = task + 52` (24 bytes). Checked: every
//!   worker's `pool` is a kernel pointer and its `desc` NUL-terminated.
//! - `kthread->full_name`: set only for threads whose name was truncated to 15 bytes; the offset
//!   after `data` whose pointer, for each such thread, names a string extending its `comm` — and
//!   is NULL for every other thread.
//!
//! Invariant: an offset is returned only if it holds for every task it applies to; with no
//! applicable task (no workers, no truncated names) the answer is `None`, never a guess.

use std::collections::HashMap;

use super::addr::KVirt;
use super::bytes::Bytes;
use super::kspace::KernelSpace;
use super::layout::{KthreadLayout, WorkerLayout};
use super::names::NameInput;
use super::state::{PF_KTHREAD, PF_WQ_WORKER};

const KTHREAD_SPAN: usize = 256;
const WORKER_SPAN: usize = 256;

/// Offsets inferred from memory (each `None` when nothing in memory decides it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inferred {
    pub kthread: Option<KthreadLayout>,
    pub worker: Option<WorkerLayout>,
}

fn ptr(b: &[u8], off: usize) -> u64 {
    Bytes::new(b).u64(off).unwrap_or(0)
}

fn kernel_ptr(space: &KernelSpace<'_>, v: u64) -> bool {
    v % 8 == 0 && (space.in_direct_map(KVirt(v)) || space.in_image(KVirt(v)))
}

/// Infer from the kernel threads among `tasks` (their `struct task_struct` addresses in `addrs`).
pub fn infer(space: &KernelSpace<'_>, tasks: &[NameInput<'_>], addrs: &[KVirt]) -> Inferred {
    let kidx: Vec<usize> = (0..tasks.len())
        .filter(|&i| tasks[i].flags & PF_KTHREAD != 0 && kernel_ptr(space, tasks[i].worker_private.0))
        .collect();
    let regions: Vec<(KVirt, usize)> = kidx.iter().map(|&i| (tasks[i].worker_private, KTHREAD_SPAN)).collect();
    let kthreads: HashMap<usize, Vec<u8>> =
        kidx.iter().zip(space.read_many(&regions)).filter_map(|(&i, r)| r.ok().map(|b| (i, b))).collect();

    // data / worker->task: read every pointer-sized candidate of every worker's kthread.
    let workers: Vec<usize> = kidx.iter().copied().filter(|i| tasks[*i].flags & PF_WQ_WORKER != 0 && kthreads.contains_key(i)).collect();
    let mut data_task: Option<(u64, u64)> = None;
    if !workers.is_empty() {
        let mut cand: Vec<(usize, usize, KVirt)> = Vec::new(); // (worker idx, data offset, pointer)
        for &i in &workers {
            for d in (0..128).step_by(8) {
                let p = ptr(&kthreads[&i], d);
                if kernel_ptr(space, p) {
                    cand.push((i, d, KVirt(p)));
                }
            }
        }
        let bodies = space.read_many(&cand.iter().map(|c| (c.2, WORKER_SPAN)).collect::<Vec<_>>());
        let mut ok: HashMap<(usize, usize), usize> = HashMap::new(); // (data off, task off) -> workers agreeing
        for (c, body) in cand.iter().zip(bodies) {
            let Ok(body) = body else { continue };
            for t in (0..WORKER_SPAN).step_by(8) {
                if ptr(&body, t) == addrs[c.0].0 {
                    *ok.entry((c.1, t)).or_default() += 1;
                }
            }
        }
        let mut all: Vec<(usize, usize)> = ok.into_iter().filter(|&(_, n)| n == workers.len()).map(|(k, _)| k).collect();
        all.sort_unstable();
        data_task = all.first().map(|&(d, t)| (d as u64, t as u64));
    }

    let worker = data_task.and_then(|(d, t)| {
        let w = WorkerLayout { current_work: t.checked_sub(48)?, pool: t + 8, desc: t + 52, desc_len: 24 };
        // Check pool and desc on every worker.
        let regions: Vec<(KVirt, usize)> =
            workers.iter().map(|i| (KVirt(ptr(&kthreads[i], d as usize)), (w.desc + w.desc_len) as usize)).collect();
        let good = space.read_many(&regions).into_iter().all(|r| {
            r.is_ok_and(|b| {
                let pool = ptr(&b, w.pool as usize);
                (pool == 0 || kernel_ptr(space, pool)) && Bytes::new(&b).cstr(w.desc as usize, w.desc_len as usize).is_some()
            })
        });
        good.then_some(w)
    });

    // full_name: among offsets after `data`.
    let data_off = data_task.map(|(d, _)| d);
    let long: Vec<usize> = kidx.iter().copied().filter(|i| tasks[*i].flags & PF_WQ_WORKER == 0 && tasks[*i].comm.len() == 15 && kthreads.contains_key(i)).collect();
    let short: Vec<usize> = kidx.iter().copied().filter(|i| tasks[*i].flags & PF_WQ_WORKER == 0 && tasks[*i].comm.len() < 15 && kthreads.contains_key(i)).collect();
    let mut full_name = None;
    if !long.is_empty() {
        let start = data_off.map(|d| d as usize + 8).unwrap_or(8);
        let mut cand: Vec<(usize, usize, KVirt)> = Vec::new();
        for &i in &long {
            for f in (start..KTHREAD_SPAN).step_by(8) {
                let p = ptr(&kthreads[&i], f);
                if kernel_ptr(space, p) {
                    cand.push((i, f, KVirt(p)));
                }
            }
        }
        let strs = space.read_many(&cand.iter().map(|c| (c.2, 64)).collect::<Vec<_>>());
        let mut agree: HashMap<usize, usize> = HashMap::new();
        for (c, s) in cand.iter().zip(strs) {
            let Ok(s) = s else { continue };
            let name = Bytes::new(&s).cstr_lossy_end(0, 63);
            if name.len() > 15 && name.starts_with(tasks[c.0].comm) {
                *agree.entry(c.1).or_default() += 1;
            }
        }
        let mut offs: Vec<usize> = agree
            .into_iter()
            .filter(|&(f, n)| n == long.len() && short.iter().all(|i| ptr(&kthreads[i], f) == 0))
            .map(|(f, _)| f)
            .collect();
        offs.sort_unstable();
        full_name = offs.first().map(|&f| f as u64);
    }
    let kthread = (data_off.is_some() || full_name.is_some()).then_some(KthreadLayout { data: data_off, full_name });
    Inferred { kthread, worker }
}
