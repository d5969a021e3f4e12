//! The name `/proc` shows for a task (`proc_task_name`, fs/proc/array.c, 6.1):
//! - workqueue workers (`PF_WQ_WORKER`): `comm` then `+desc` (busy) or `-desc` (idle) from the
//!   `struct worker` behind `kthread->data`, when the worker has a pool and a description
//!   (`wq_worker_comm`);
//! - other kernel threads: `kthread->full_name` when the name was too long for `comm`
//!   (`get_kthread_comm`);
//! - everyone else: `comm`.
//!
//! Offsets of those private structures that the layout method could not provide are inferred
//! from memory by [`naming`](super::naming).
//!
//! Invariant: every name is at most 63 bytes (`char tcomm[64]`), reads are batched across all
//! tasks (three rounds: kthread, then worker or full name), and a task whose extra structures
//! cannot be read keeps its plain `comm` with a note saying why.

use super::addr::KVirt;
use emulator::bytes::Bytes;
use super::kspace::{KSpaceError, KernelSpace};
use super::layout::{KthreadLayout, Layout, WorkerLayout};
use super::naming::{self, Inferred, NameInput};
use super::state::{PF_KTHREAD, PF_WQ_WORKER};

/// `sizeof(tcomm)` in `proc_task_name`, minus the terminator.
const TCOMM_MAX: usize = 63;
/// Most bytes of `struct kthread` or `struct worker` read per task (both are a few hundred).
const MAX_STRUCT: u64 = 64 << 10;

/// Bytes of `struct worker` to read for `desc`, `pool` and `current_work`, if the offsets are sane.
fn worker_span(wl: &WorkerLayout) -> Option<u64> {
    let span = wl.desc.checked_add(wl.desc_len)?.max(wl.pool.checked_add(8)?).max(wl.current_work.checked_add(8)?);
    (span <= MAX_STRUCT).then_some(span)
}

/// Display names for `tasks` (whose `task_struct` addresses are `addrs`), in order, with a note
/// for each task whose name fell back to `comm`. Offsets of `struct kthread` / `struct worker`
/// that the layout lacks are inferred from memory ([`naming`]); the offsets used are returned.
pub fn display_names(
    space: &KernelSpace<'_>,
    layout: &Layout,
    tasks: &[NameInput<'_>],
    addrs: &[KVirt],
) -> (Vec<Vec<u8>>, Vec<Option<String>>, Inferred) {
    let mut names: Vec<Vec<u8>> = tasks.iter().map(|t| t.comm.iter().copied().take(TCOMM_MAX).collect()).collect();
    let mut notes: Vec<Option<String>> = vec![None; tasks.len()];
    if layout.task.worker_private.is_none() {
        return (names, notes, Inferred::default());
    }
    let mut used = Inferred { kthread: layout.kthread.clone(), worker: layout.worker.clone() };
    let complete = used.kthread.as_ref().is_some_and(|k| k.data.is_some() && k.full_name.is_some()) && used.worker.is_some();
    let mut known = naming::Read::new();
    if !complete {
        let (inferred, read) = naming::infer(space, tasks, addrs);
        known = read;
        let k = used.kthread.get_or_insert(KthreadLayout { data: None, full_name: None });
        let ik = inferred.kthread.unwrap_or(KthreadLayout { data: None, full_name: None });
        k.data = k.data.or(ik.data);
        k.full_name = k.full_name.or(ik.full_name);
        used.worker = used.worker.or(inferred.worker);
    }
    let Some(kl) = used.kthread.clone() else { return (names, notes, used) };
    // Round 1: struct kthread of every kernel thread.
    let kidx: Vec<usize> = (0..tasks.len())
        .filter(|&i| tasks[i].flags & PF_KTHREAD != 0 && tasks[i].worker_private.0 != 0)
        .collect();
    // Offsets come from the layout (BTF, an ISF file, or inferred from memory): a span past
    // MAX_STRUCT reads nothing, so every kthread keeps its comm with a note.
    let span = kl.data.unwrap_or(0).max(kl.full_name.unwrap_or(0)).checked_add(8).filter(|&n| n <= MAX_STRUCT);
    let regions: Vec<(KVirt, usize)> = match span {
        Some(span) => kidx.iter().map(|&i| (tasks[i].worker_private, span as usize)).collect(),
        None => {
            for &i in &kidx {
                notes[i] = Some(format!("struct kthread offsets {kl:?} exceed {MAX_STRUCT} bytes"));
            }
            return (names, notes, used);
        }
    };
    let kthreads = read_known(space, &known, &regions);
    let mut worker_reqs = Vec::new();
    let mut name_reqs = Vec::new();
    for (&i, r) in kidx.iter().zip(kthreads) {
        let k = match r {
            Ok(k) => k,
            Err(e) => {
                notes[i] = Some(format!("struct kthread unreadable: {e}"));
                continue;
            }
        };
        let kb = Bytes::new(&k);
        let data = KVirt(kl.data.and_then(|d| kb.u64(d as usize).ok()).unwrap_or(0));
        let full_name = KVirt(kl.full_name.and_then(|f| kb.u64(f as usize).ok()).unwrap_or(0));
        if tasks[i].flags & PF_WQ_WORKER != 0 {
            if let (Some(wl), true) = (&used.worker, data.0 != 0) {
                let span = worker_span(wl);
                match span {
                    Some(span) => worker_reqs.push((i, data, span as usize)),
                    None => notes[i] = Some(format!("struct worker offsets {wl:?} exceed {MAX_STRUCT} bytes")),
                }
            }
        } else if full_name.0 != 0 {
            name_reqs.push((i, full_name));
        }
    }
    // Round 2: workers and full names together.
    let mut regions: Vec<(KVirt, usize)> = worker_reqs.iter().map(|&(_, v, n)| (v, n)).collect();
    regions.extend(name_reqs.iter().map(|&(_, v)| (v, TCOMM_MAX)));
    let mut results = read_known(space, &known, &regions).into_iter();
    for &(i, _, _) in &worker_reqs {
        let (Some(wl), Some(r)) = (&used.worker, results.next()) else { break };
        match r {
            Ok(w) => {
                let wb = Bytes::new(&w);
                let pool = wb.u64(wl.pool as usize).unwrap_or(0);
                let current = wb.u64(wl.current_work as usize).unwrap_or(0);
                let desc = wb.cstr_lossy_end(wl.desc as usize, wl.desc_len as usize);
                if pool != 0 && !desc.is_empty() {
                    let n = &mut names[i];
                    n.push(if current != 0 { b'+' } else { b'-' });
                    n.extend_from_slice(desc);
                    n.truncate(TCOMM_MAX);
                }
            }
            Err(e) => notes[i] = Some(format!("struct worker unreadable: {e}")),
        }
    }
    for &(i, _) in &name_reqs {
        let Some(r) = results.next() else { break };
        match r {
            Ok(s) => names[i] = Bytes::new(&s).cstr_lossy_end(0, TCOMM_MAX).to_vec(),
            Err(e) => notes[i] = Some(format!("kthread full_name unreadable: {e}")),
        }
    }
    (names, notes, used)
}

/// `regions` read, those whose start `known` holds with enough bytes taken from there (the
/// rest in one batch).
fn read_known(space: &KernelSpace<'_>, known: &naming::Read, regions: &[(KVirt, usize)]) -> Vec<Result<Vec<u8>, KSpaceError>> {
    let have = |&(a, n): &(KVirt, usize)| known.get(&a).and_then(|b| b.get(..n));
    let missing: Vec<(KVirt, usize)> = regions.iter().filter(|r| have(r).is_none()).copied().collect();
    let mut read = space.read_many(&missing).into_iter();
    regions.iter().map(|r| have(r).map_or_else(|| read.next().unwrap_or(Err(KSpaceError::Unmapped { addr: r.0 })), |b| Ok(b.to_vec()))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_span_is_checked_and_capped() {
        let wl = |desc: u64, desc_len: u64| WorkerLayout { current_work: 8, pool: 72, desc, desc_len };
        assert_eq!(worker_span(&wl(96, 24)), Some(120));
        assert_eq!(worker_span(&wl(16, 8)), Some(80));
        // A BTF or ISF member size near 2^64 (`desc + desc_len` used to overflow).
        assert_eq!(worker_span(&wl(96, u64::MAX - 8)), None);
        assert_eq!(worker_span(&wl(96, MAX_STRUCT)), None);
        assert_eq!(worker_span(&WorkerLayout { current_work: u64::MAX, pool: 0, desc: 0, desc_len: 1 }), None);
    }
}
