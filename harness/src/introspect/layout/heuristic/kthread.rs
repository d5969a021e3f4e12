//! Inferring `task_struct.worker_private`, `struct kthread` and `struct worker`, which the
//! walker uses only for the names `/proc` shows for kernel threads (`kworker/0:1-events`, and
//! names longer than `comm`).
//!
//! Rules:
//! - `worker_private` → `kthread`, `kthread.data` → `worker`, `worker.task` → the task: on
//!   every `kworker/*` thread this chain of heap pointers leads back to the task itself, through
//!   three distinct objects, the first holding an empty completion (a self-pointing list head)
//!   at the same offset on every worker. Found on one worker by following every heap pointer two
//!   levels deep (bounded windows), then required on all.
//! - `kthread.full_name`: the name given at creation, a heap string. Up to 6.3 it is set only when
//!   that name did not fit `comm` (16+ bytes); later kernels keep it for every kernel thread. In
//!   both, `comm` holds its first 15 bytes. So on every kernel thread NULL, or a heap string that
//!   equals a shorter `comm` or starts with a 15-byte one — and on some kernel thread not NULL
//!   (without one, `None`).
//! - `worker.pool`: `kworker/<cpu>:<id>[H]` share a pool exactly when `<cpu>` and `H` agree, and
//!   `kworker/u<pool>:<id>` when `<pool>` agrees — equal names, equal pointers.
//! - `worker.desc`: `char[WORKER_DESC_LEN]` (24 since 3.x), on every worker empty or a
//!   workqueue name, on some non-empty, and the byte before it never part of a name. A shorter
//!   name written over a longer one leaves the longer one's tail after the NUL, which can pass
//!   the same test: of candidates less than 24 bytes apart, the first is the buffer.
//! - `worker.current_work`: NULL exactly when idle; the next word (`current_func`) then is NULL
//!   too and otherwise a text address. With every worker idle this does not place it; then the
//!   convention (right after the 16-byte list node that starts `struct worker`) is used and the
//!   field is reported weak.
//!
//! Invariant: best effort — a part that does not fit uniquely is `None` (the walker then shows
//! plain `comm`); the one convention (`current_work` with every worker idle) is reported as
//! weak, never passed off as found; reads are bounded by [`KT_WIN`] per object and
//! [`MAX_FOLLOW`] objects per level.

use std::collections::{BTreeSet, HashMap};

use super::probe::Obj;
use super::probe::Probe;
use super::task::{is_kworker, Sample};
use super::super::{KthreadLayout, WorkerLayout};
use crate::introspect::addr::KVirt;
use crate::introspect::state::PF_KTHREAD;

/// Bytes of a `struct kthread` / `struct worker` searched.
pub const KT_WIN: usize = 256;
/// Most pointers followed per level of the search on the first worker.
pub const MAX_FOLLOW: usize = 512;
/// The shorter `WORKER_DESC_LEN`, which every version's buffer holds at least.
pub const WORKER_DESC_LEN: u64 = 24;

#[derive(Debug, Default)]
pub struct KthreadFound {
    pub worker_private: Option<u64>,
    pub kthread: Option<KthreadLayout>,
    pub worker: Option<WorkerLayout>,
    pub weak: Vec<&'static str>,
}

/// Infer what can be inferred; see the module doc.
pub fn infer(p: &Probe<'_, '_>, s: &Sample<'_>, flags: u64, version: (u32, u32)) -> KthreadFound {
    let mut out = KthreadFound::default();
    let kthreads: Vec<&Obj> =
        s.all().skip(1).filter(|t| t.u32(flags).is_some_and(|f| f & PF_KTHREAD != 0)).collect();
    let kworkers: Vec<&Obj> = kthreads.iter().copied().filter(|t| is_kworker(s.name(t))).collect();
    let Some(first) = kworkers.first() else {
        tracing::info!("heuristic: no kworker in the sample; worker_private not inferred");
        return out;
    };
    // Offsets that are heap pointers on every worker and NULL or heap pointers on every other
    // kernel thread (before 5.13 `kthreadd` itself had no `struct kthread`).
    let ws: Vec<u64> = (0..s.win.saturating_sub(7))
        .step_by(8)
        .filter(|&o| {
            kthreads.iter().all(|t| t.ptr(o).is_some_and(|v| v.0 == 0 || p.heap(v)))
                && kworkers.iter().all(|t| t.ptr(o).is_some_and(|v| p.heap(v)))
        })
        .collect();
    let Some((w, d, k)) = chain(p, first, &ws, s.win).and_then(|c| verify(p, &kworkers, &c)) else {
        tracing::info!("heuristic: no unique worker_private → kthread → worker → task chain");
        return out;
    };
    out.worker_private = Some(w);
    let kt_addrs: Vec<KVirt> = kthreads.iter().map(|t| KVirt(t.u64(w).unwrap_or(0))).collect();
    let kts: Vec<Option<Obj>> = p.objs_lossy(&kt_addrs, KT_WIN);
    let named: Vec<(&[u8], &Obj)> = kthreads.iter().zip(&kts).filter_map(|(t, k)| Some((s.name(t), k.as_ref()?))).collect();
    let full = full_name(p, &named, Some(d));
    if full.is_none() {
        tracing::info!("heuristic: kthread.full_name not placed (no long kernel thread name in the sample)");
    }
    out.kthread = Some(KthreadLayout { data: Some(d), full_name: full });
    let kw: Vec<(&Obj, KVirt)> = kthreads
        .iter()
        .zip(&kts)
        .filter(|(t, _)| is_kworker(s.name(t)))
        .filter_map(|(t, kt)| Some((*t, KVirt(kt.as_ref()?.u64(d)?))))
        .collect();
    let wobjs = p.objs_lossy(&kw.iter().map(|x| x.1).collect::<Vec<_>>(), KT_WIN);
    let workers: Vec<(&[u8], Obj)> = kw.iter().zip(wobjs).filter_map(|((t, _), o)| Some((s.name(t), o?))).collect();
    match worker(p, &workers, k).map(|(w, weak)| (WorkerLayout { desc_len: super::versions::facts(version).worker_desc_len, ..w }, weak)) {
        Some((wl, weak)) => {
            out.worker = Some(wl);
            if weak {
                out.weak.push("worker.current_work");
            }
        }
        None => tracing::info!("heuristic: struct worker not placed"),
    }
    out
}

/// On one worker task: every `(w, d, k)` with `task.w → kthread`, `kthread.d → worker`,
/// `worker.k == task`, the three being distinct objects (pointers into the task itself, such
/// as empty list heads, lead nowhere).
fn chain(p: &Probe<'_, '_>, task: &Obj, ws: &[u64], win: u64) -> Option<Vec<(u64, u64, u64)>> {
    let outside = |v: u64, base: u64, len: u64| v < base || v >= base + len;
    let l1: Vec<(u64, KVirt)> = ws
        .iter()
        .filter_map(|&w| Some((w, KVirt(task.u64(w)?))))
        .filter(|&(_, v)| outside(v.0, task.addr.0, win))
        .take(MAX_FOLLOW)
        .collect();
    let objs1 = p.objs_lossy(&l1.iter().map(|x| x.1).collect::<Vec<_>>(), KT_WIN);
    let mut l2: Vec<(u64, u64, KVirt)> = Vec::new();
    for ((w, _), o) in l1.iter().zip(&objs1) {
        let Some(o) = o else { continue };
        for d in (0..KT_WIN as u64 - 7).step_by(8) {
            if let Some(v) = o.ptr(d).filter(|&v| p.heap(v) && outside(v.0, task.addr.0, win) && outside(v.0, o.addr.0, KT_WIN as u64)) {
                l2.push((*w, d, v));
            }
        }
    }
    l2.truncate(MAX_FOLLOW);
    let distinct: Vec<KVirt> = l2.iter().map(|x| x.2).collect::<BTreeSet<_>>().into_iter().collect();
    let objs2: HashMap<KVirt, Obj> =
        distinct.iter().copied().zip(p.objs_lossy(&distinct, KT_WIN)).filter_map(|(a, o)| Some((a, o?))).collect();
    let mut found = Vec::new();
    for (w, d, v) in l2 {
        let Some(o) = objs2.get(&v) else { continue };
        for k in (0..KT_WIN as u64 - 7).step_by(8) {
            if o.u64(k) == Some(task.addr.0) {
                found.push((w, d, k));
            }
        }
    }
    (!found.is_empty()).then_some(found)
}

/// The one chain that holds on every worker, through an object that is a `struct kthread`:
/// it holds an empty completion (a list head pointing at itself, twice) at the same offset on
/// every worker. (A sleeping worker's saved stack pointer also leads, through a stack frame, to
/// its `struct worker`; a stack frame has no such self-pointers.)
fn verify(p: &Probe<'_, '_>, kworkers: &[&Obj], cands: &[(u64, u64, u64)]) -> Option<(u64, u64, u64)> {
    let fits: Vec<(u64, u64, u64)> = cands
        .iter()
        .copied()
        .filter(|&(w, d, k)| {
            let kts: Vec<KVirt> = kworkers.iter().map(|t| KVirt(t.u64(w).unwrap_or(0))).collect();
            let Some(objs): Option<Vec<Obj>> = p.objs_lossy(&kts, KT_WIN).into_iter().collect() else { return false };
            let empty_list = |o: &Obj, c: u64| o.ptr(c) == Some(o.at(c)) && o.ptr(c + 8) == Some(o.at(c));
            let kthread_like = (0..KT_WIN as u64 - 15).step_by(8).any(|c| objs.iter().all(|o| empty_list(o, c)));
            let datas: Vec<KVirt> = objs.iter().map(|o| o.ptr(d).unwrap_or_default()).collect();
            let backs = p.ptrs(&datas.iter().map(|a| a.wrapping_add(k)).collect::<Vec<_>>());
            kthread_like && kworkers.iter().zip(&datas).zip(backs).all(|((t, &dv), b)| p.heap(dv) && b == Some(t.addr))
        })
        .collect();
    match fits.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// `kthread.full_name`, if some sampled kernel thread has a long name to show it by.
/// `kthread.full_name` over kernel threads given as `(comm, struct kthread)`; `data` (if known)
/// is not a candidate. Shared with [`crate::introspect::naming`].
pub fn full_name(p: &Probe<'_, '_>, readable: &[(&[u8], &Obj)], data: Option<u64>) -> Option<u64> {
    let offs: Vec<u64> = (0..KT_WIN as u64 - 7)
        .step_by(8)
        .filter(|&o| Some(o) != data && readable.iter().all(|(_, k)| k.ptr(o).is_some_and(|v| v.0 == 0 || p.heap(v))))
        .collect();
    // Read the strings every candidate points at (bounded).
    let ptrs: Vec<KVirt> = offs
        .iter()
        .flat_map(|&o| readable.iter().filter_map(move |(_, k)| k.u64(o)))
        .filter(|&v| v != 0)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .take(MAX_FOLLOW)
        .map(KVirt)
        .collect();
    let strs: HashMap<u64, Vec<u8>> =
        ptrs.iter().zip(p.objs_lossy(&ptrs, 64)).filter_map(|(a, o)| Some((a.0, o?.bytes))).collect();
    let name_at = |v: u64| -> Option<&[u8]> {
        let b = strs.get(&v)?;
        let n = b.iter().position(|&c| c == 0)?;
        b[..n].iter().all(|&c| c >= 0x20 && c != 0x7f).then_some(&b[..n])
    };
    let fits: Vec<u64> = offs
        .iter()
        .copied()
        .filter(|&o| {
            readable.iter().all(|(comm, k)| {
                let comm = *comm;
                match k.u64(o) {
                    Some(0) => true,
                    // A 15-byte comm may be a cut full name; a shorter one is the whole name.
                    Some(v) => name_at(v).is_some_and(|n| if comm.len() == 15 { n.starts_with(comm) } else { n == comm }),
                    None => false,
                }
            })
        })
        .collect();
    // Offsets NULL on every kernel thread fit trivially; only a name is evidence.
    let strong: Vec<u64> = fits.iter().copied().filter(|&o| readable.iter().any(|(_, k)| k.u64(o).is_some_and(|v| v != 0))).collect();
    match strong.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// The pool key a `kworker/...` name implies: `(cpu or unbound pool, highpri)`.
fn pool_key(name: &[u8]) -> Option<(Vec<u8>, bool)> {
    let rest = name.strip_prefix(b"kworker/")?;
    let colon = rest.iter().position(|&c| c == b':')?;
    Some((rest[..colon].to_vec(), rest.ends_with(b"H")))
}

/// Workqueue-name characters.
fn wq_name(b: &[u8]) -> bool {
    b.iter().all(|&c| c.is_ascii_alphanumeric() || b"_-./:".contains(&c))
}

/// `struct worker` over workers given as `(comm, struct worker)`, with the back pointer's offset
/// `k`, and whether `current_work` was placed by convention. Shared with
/// [`crate::introspect::naming`].
pub fn worker(p: &Probe<'_, '_>, workers: &[(&[u8], Obj)], k: u64) -> Option<(WorkerLayout, bool)> {
    let keyed: Vec<((Vec<u8>, bool), &Obj)> = workers.iter().filter_map(|(name, w)| Some((pool_key(name)?, w))).collect();
    let words = (0..KT_WIN as u64 - 7).step_by(8);
    let pools: Vec<u64> = words
        .clone()
        .filter(|&o| o != k)
        .filter(|&o| {
            let mut by_key: HashMap<&(Vec<u8>, bool), KVirt> = HashMap::new();
            let mut by_val: HashMap<KVirt, &(Vec<u8>, bool)> = HashMap::new();
            let mut shared = false;
            let ok = keyed.iter().all(|(key, w)| {
                let Some(v) = w.ptr(o).filter(|&v| p.kernel(v)) else { return false };
                shared |= by_key.contains_key(key);
                *by_key.entry(key).or_insert(v) == v && *by_val.entry(v).or_insert(key) == key
            });
            ok && shared
        })
        .collect();
    let [pool] = pools.as_slice() else { return None };
    let descs: Vec<u64> = (1..KT_WIN as u64 - WORKER_DESC_LEN)
        .filter(|&o| {
            let mut nonempty = false;
            let ok = workers.iter().all(|(_, w)| {
                let Some(b) = w.slice(o, WORKER_DESC_LEN) else { return false };
                let Some(n) = b.iter().position(|&c| c == 0) else { return false };
                if n > 0 {
                    nonempty = true;
                    if w.slice(o - 1, 1) != Some(&[0]) {
                        return false;
                    }
                }
                wq_name(&b[..n])
            });
            ok && nonempty
        })
        .collect();
    // `set_worker_desc` overwrites the buffer with a shorter name and leaves the old name's tail
    // after the NUL: an offset inside an earlier candidate's buffer is that stale tail.
    let descs: Vec<u64> = descs.iter().copied().filter(|&o| !descs.iter().any(|&c| c < o && o < c + WORKER_DESC_LEN)).collect();
    let [desc] = descs.as_slice() else { return None };
    let busy_rule = |o: u64| {
        workers.iter().all(|(_, w)| match (w.ptr(o), w.ptr(o + 8)) {
            (Some(KVirt(0)), Some(KVirt(0))) => true,
            (Some(cw), Some(f)) => cw.0 != 0 && p.heap(cw) && p.image(f),
            _ => false,
        })
    };
    let fits: Vec<u64> = words.filter(|&o| o + 16 <= *desc && o != k && o != *pool && busy_rule(o)).collect();
    let any_busy = fits.iter().any(|&o| workers.iter().any(|(_, w)| w.u64(o).is_some_and(|v| v != 0)));
    let (current_work, weak) = match fits.as_slice() {
        [one] => (*one, false),
        _ if any_busy => {
            let busy: Vec<u64> =
                fits.iter().copied().filter(|&o| workers.iter().any(|(_, w)| w.u64(o).is_some_and(|v| v != 0))).collect();
            let [one] = busy.as_slice() else { return None };
            (*one, false)
        }
        _ if fits.contains(&16) => (16, true),
        _ => return None,
    };
    Some((WorkerLayout { current_work, pool: *pool, desc: *desc, desc_len: WORKER_DESC_LEN }, weak))
}
