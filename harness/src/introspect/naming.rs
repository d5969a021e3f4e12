//! Inferring the few offsets of `struct kthread` and `struct worker` that kernel-thread names
//! need, from memory, for layout methods that cannot see these private structures (`thesis`
//! probes headers only; `heuristic` sees nothing).
//!
//! - `kthread->data` and `worker->task`: for every workqueue worker (`PF_WQ_WORKER`), `data`
//!   points at its `struct worker`, whose `task` points back at the task. The pair of offsets
//!   that closes this loop for *every* worker is the one (searched over the first 128 bytes of
//!   `kthread` and 256 of `worker`).
//! - `worker->current_work`, `->pool`, `->desc` and `kthread->full_name`: by the same structural
//!   rules the heuristic layout uses ([`kthread::worker`], [`kthread::full_name`]: pools shared
//!   exactly by workers whose names say so, a NUL-preceded workqueue name, the busy/idle pair of
//!   `current_work`/`current_func`, a heap string extending `comm`), not by one version's
//!   distances — `struct worker` grew fields between 6.1 and 7.x.
//!
//! Invariant: an offset is returned only if it holds for every task it applies to; with no
//! applicable task (no workers, no truncated names) the answer is `None`, never a guess.

use std::collections::HashMap;

use super::addr::KVirt;
use emulator::bytes::Bytes;
use super::kspace::KernelSpace;
use super::layout::{KthreadLayout, WorkerLayout};
use super::layout::heuristic::kthread;
use super::layout::heuristic::probe::{Obj, Probe};
use super::state::{PF_KTHREAD, PF_WQ_WORKER};

const KTHREAD_SPAN: usize = 256;
const WORKER_SPAN: usize = 256;

/// One task's inputs (to naming and to [`display_names`](super::names::display_names)).
#[derive(Debug, Clone, Copy)]
pub struct NameInput<'a> {
    pub comm: &'a [u8],
    pub flags: u32,
    pub worker_private: KVirt,
}

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

/// Bytes read while inferring, by address: every kernel thread's `struct kthread` and the
/// `struct worker` of every workqueue worker (their first 256 bytes each), which the names
/// then need again.
pub type Read = HashMap<KVirt, Vec<u8>>;

/// Infer from the kernel threads among `tasks` (their `struct task_struct` addresses in
/// `addrs`); also what was read of their structures.
pub fn infer(space: &KernelSpace<'_>, tasks: &[NameInput<'_>], addrs: &[KVirt]) -> (Inferred, Read) {
    let kidx: Vec<usize> = (0..tasks.len())
        .filter(|&i| tasks[i].flags & PF_KTHREAD != 0 && kernel_ptr(space, tasks[i].worker_private.0))
        .collect();
    let regions: Vec<(KVirt, usize)> = kidx.iter().map(|&i| (tasks[i].worker_private, KTHREAD_SPAN)).collect();
    let kthreads: HashMap<usize, Vec<u8>> =
        kidx.iter().zip(space.read_many(&regions)).filter_map(|(&i, r)| r.ok().map(|b| (i, b))).collect();

    // data / worker->task: read every pointer-sized candidate of every worker's kthread.
    let workers: Vec<usize> = kidx.iter().copied().filter(|i| tasks[*i].flags & PF_WQ_WORKER != 0 && kthreads.contains_key(i)).collect();
    let mut data_task: Option<(u64, u64)> = None;
    // Each worker's candidate `struct worker`, by (worker index, data offset).
    let mut bodies: HashMap<(usize, usize), Obj> = HashMap::new();
    if !workers.is_empty() {
        // A worker is allocated on its own (the direct map, never the image), so neither a
        // pointer into the image nor one into the kthread itself (its list heads) is `data`.
        let mut cand: Vec<(usize, usize, KVirt)> = Vec::new(); // (worker idx, data offset, pointer)
        for &i in &workers {
            let own = tasks[i].worker_private.0;
            for d in (0..128).step_by(8) {
                let p = ptr(&kthreads[&i], d);
                if p % 8 == 0 && space.in_direct_map(KVirt(p)) && !(own..own.saturating_add(KTHREAD_SPAN as u64)).contains(&p) {
                    cand.push((i, d, KVirt(p)));
                }
            }
        }
        let read = space.read_many(&cand.iter().map(|c| (c.2, WORKER_SPAN)).collect::<Vec<_>>());
        let mut ok: HashMap<(usize, usize), usize> = HashMap::new(); // (data off, task off) -> workers agreeing
        for (c, body) in cand.iter().zip(read) {
            let Ok(body) = body else { continue };
            for t in (0..WORKER_SPAN).step_by(8) {
                if ptr(&body, t) == addrs[c.0].0 {
                    *ok.entry((c.1, t)).or_default() += 1;
                }
            }
            bodies.insert((c.0, c.1), Obj { addr: c.2, bytes: body });
        }
        let mut all: Vec<(usize, usize)> = ok.into_iter().filter(|&(_, n)| n == workers.len()).map(|(k, _)| k).collect();
        all.sort_unstable();
        data_task = all.first().map(|&(d, t)| (d as u64, t as u64));
    }

    let p = Probe { space };
    let worker = data_task.and_then(|(d, t)| {
        let named: Vec<(&[u8], Obj)> = workers.iter().filter_map(|&i| Some((tasks[i].comm, bodies.get(&(i, d as usize))?.clone()))).collect();
        (named.len() == workers.len()).then_some(())?;
        kthread::worker(&p, &named, t).map(|(w, _)| w)
    });

    // full_name: over every kernel thread's `struct kthread`.
    let data_off = data_task.map(|(d, _)| d);
    let kobjs: Vec<Obj> = kidx
        .iter()
        .filter_map(|i| Some(Obj { addr: tasks[*i].worker_private, bytes: kthreads.get(i)?.clone() }))
        .collect();
    let named: Vec<(&[u8], &Obj)> = kidx.iter().filter(|i| kthreads.contains_key(i)).map(|&i| tasks[i].comm).zip(&kobjs).collect();
    let full_name = kthread::full_name(&p, &named, data_off);
    let kthread = (data_off.is_some() || full_name.is_some()).then_some(KthreadLayout { data: data_off, full_name });
    let mut read: Read = kobjs.into_iter().map(|o| (o.addr, o.bytes)).collect();
    if let Some((d, _)) = data_task {
        read.extend(bodies.into_iter().filter(|((_, off), _)| *off as u64 == d).map(|(_, o)| (o.addr, o.bytes)));
    }
    (Inferred { kthread, worker }, read)
}
