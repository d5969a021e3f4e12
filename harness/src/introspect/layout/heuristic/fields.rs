//! Heuristic step 2: `task_struct` fields from the values every task holds, and the thread
//! groups (which also tell `pid` from `tgid`).
//!
//! Invariant: each field's offset is the lowest one that fits *every* task read; a field the
//! walker cannot do without and that no offset fits is an error naming it.

use std::collections::{HashMap, HashSet};

use super::anchor::{snaps, Found};
use super::mm::{CredFields, MmFields};
use super::{Snap, TASK_SPAN};
use crate::introspect::addr::KVirt;
use crate::introspect::bytes::Bytes;
use crate::introspect::names::NameInput;
use crate::introspect::naming;
use crate::introspect::layout::{CredLayout, Layout, MmLayout, SignalLayout, TaskLayout};
use crate::introspect::state::{EXIT_DEAD, EXIT_ZOMBIE, PF_KTHREAD, TASK_IDLE, TASK_INTERRUPTIBLE};


const PID_MAX: u32 = 4 << 20;
/// `struct signal_struct` is about 1 KiB on x86-64 6.1.
const SIGNAL_SPAN: usize = 1024;
const MAX_THREADS: usize = 1 << 14;
/// `PF_IDLE`: the idle task.
const PF_IDLE: u32 = 0x2;
/// `TASK_DEAD`.
const TASK_DEAD: u32 = 0x80;

/// Offsets found in `task_struct`.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    pub pid: u64,
    pub tgid: u64,
    pub real_parent: u64,
    pub signal: u64,
    pub thread_head: u64,
    pub thread_node: u64,
    pub flags: u64,
    pub state: u64,
    pub exit_state: Option<u64>,
    pub start_boottime: u64,
    pub mm_candidates: Vec<u64>,
    pub cred_candidates: Vec<u64>,
    pub worker_private: Option<u64>,
}

/// Every task read, with what the search learned about each.
pub struct Tasks {
    /// init_task first, then the group leaders in list order, then the other threads.
    pub all: Vec<Snap>,
    pub f: Fields,
}

/// At least 90 % of neighbours in order (creation order along the task list, up to races).
fn mostly_ordered<T: PartialOrd>(v: &[T]) -> bool {
    let good = v.windows(2).filter(|w| w[0] <= w[1]).count();
    v.len() >= 2 && good * 10 >= (v.len() - 1) * 9
}

fn offsets(step: u64) -> impl Iterator<Item = u64> {
    (0..TASK_SPAN as u64 - 8).step_by(step as usize)
}

/// The lowest offset where `fits` holds, or an error naming the field.
fn lowest(step: u64, what: &str, fits: impl Fn(u64) -> bool) -> Result<u64, String> {
    offsets(step).find(|&o| fits(o)).ok_or_else(|| format!("no task_struct offset fits {what}"))
}

pub fn infer(found: &Found<'_>) -> Result<Tasks, String> {
    let s = &found.space;
    let init = &found.init_snap;
    let leaders = snaps(s, &found.leaders, TASK_SPAN)?;
    if leaders.len() < 2 {
        return Err("fewer than two processes on the task list".into());
    }
    let in_image = |v: u64| s.in_image(KVirt(v));
    let in_dm = |v: u64| s.in_direct_map(KVirt(v)) && v % 8 == 0;

    // pid and tgid candidates: 0, then 1, 2, distinct and (mostly) increasing — on SMP two
    // forks can take pids in one order and join the task list in the other.
    let pids: Vec<u64> = offsets(4)
        .filter(|&o| {
            let vals: Vec<u32> = leaders.iter().filter_map(|l| l.u32(o)).collect();
            init.u32(o) == Some(0)
                && vals.len() == leaders.len()
                && vals[0] == 1
                && vals[1] == 2
                && vals.iter().all(|&v| v > 0 && v <= PID_MAX)
                && vals.iter().collect::<HashSet<_>>().len() == vals.len()
                && mostly_ordered(&vals)
        })
        .collect();
    if pids.is_empty() {
        return Err("no task_struct offset holds pids 0, 1, 2, ... along the task list".into());
    }

    // real_parent: init_task for pids 1 and 2, a listed task for everyone.
    let bases: HashSet<u64> = leaders.iter().map(|l| l.base).chain([init.base]).collect();
    let real_parent = lowest(8, "real_parent", |o| {
        init.u64(o) == Some(init.base)
            && leaders[0].u64(o) == Some(init.base)
            && leaders[1].u64(o) == Some(init.base)
            && leaders.iter().all(|l| l.u64(o).is_some_and(|v| bases.contains(&v)))
    })?;

    // signal, thread_head, thread_node.
    let (signal, thread_head, thread_node) = find_signal(found, &leaders, real_parent, &in_image, &in_dm)?;

    // Threads of every group, leader first.
    let mut all = vec![init.clone()];
    let mut leader = vec![0usize];
    all.extend(leaders.iter().cloned());
    leader.extend(1..=leaders.len());
    let mut extra: Vec<(usize, u64)> = Vec::new();
    for (i, l) in leaders.iter().enumerate() {
        let members = group(s, l.u64(signal).unwrap_or(0) + thread_head, thread_node)
            .ok_or_else(|| format!("thread list of process {:#x} does not close", l.base))?;
        extra.extend(members.into_iter().filter(|&t| t != l.base).map(|t| (i + 1, t)));
    }
    let thread_snaps = snaps(s, &extra.iter().map(|e| e.1).collect::<Vec<_>>(), TASK_SPAN)?;
    for ((li, _), snap) in extra.iter().zip(thread_snaps) {
        all.push(snap);
        leader.push(*li);
    }
    let threads: Vec<usize> = (leaders.len() + 1..all.len()).collect();

    // pid vs tgid: threads share their leader's tgid.
    let (pid, tgid) = if threads.is_empty() {
        match pids.as_slice() {
            [p, t, ..] => (*p, *t),
            _ => return Err("cannot tell pid from tgid: one candidate and no threads".into()),
        }
    } else {
        let shares = |o: u64| threads.iter().all(|&t| all[t].u32(o) == all[leader[t]].u32(o));
        let tgid = pids.iter().copied().find(|&o| shares(o)).ok_or("no tgid offset shared by threads")?;
        let pid = pids.iter().copied().find(|&o| threads.iter().all(|&t| all[t].u32(o) != all[leader[t]].u32(o))).ok_or("no pid offset distinct for threads")?;
        (pid, tgid)
    };

    // Kernel threads: init_task, kthreadd (pid 2) and kthreadd's children.
    let kthreadd = leaders[1].base;
    let kthread: Vec<bool> = (0..all.len())
        .map(|i| {
            let l = &all[leader[i]];
            i == 0 || l.base == kthreadd || l.u64(real_parent) == Some(kthreadd)
        })
        .collect();
    // flags: PF_KTHREAD exactly on kernel threads, PF_IDLE on no listed task but init_task
    // (which has it on SMP kernels), and no bit 31 (which would make this the upper half of a
    // kernel pointer).
    let flags = lowest(4, "flags (PF_KTHREAD)", |o| {
        all.iter().zip(&kthread).enumerate().all(|(i, (t, &k))| {
                t.u32(o).is_some_and(|f| (f & PF_KTHREAD != 0) == k && f < 0x8000_0000 && (i == 0 || f & PF_IDLE == 0))
            })
    })?;

    // __state: task states only, init_task running, sleepers and idle kernel threads present.
    let state = lowest(4, "__state", |o| {
        let vals: Vec<u32> = all.iter().filter_map(|t| t.u32(o)).collect();
        init.u32(o) == Some(0)
            && vals.len() == all.len()
            && vals.iter().all(|&v| v < 0x1_0000)
            && vals.contains(&TASK_INTERRUPTIBLE)
            && vals.contains(&TASK_IDLE)
            && vals.iter().filter(|&&v| v == TASK_INTERRUPTIBLE || v == TASK_IDLE).count() * 5 >= vals.len() * 3
    })?;
    // exit_state: EXIT_ZOMBIE / EXIT_DEAD exactly on tasks in TASK_DEAD.
    let dead: Vec<bool> = all.iter().map(|t| t.u32(state) == Some(TASK_DEAD)).collect();
    let exit_state = if dead.iter().any(|&d| d) {
        offsets(4).filter(|&o| o != state).find(|&o| {
            all.iter().zip(&dead).all(|(t, &d)| {
                t.u32(o).is_some_and(|v| if d { v == EXIT_ZOMBIE || v == EXIT_DEAD } else { v == 0 })
            })
        })
    } else {
        tracing::warn!("heuristic: no zombie in memory, exit_state cannot be learned");
        None
    };

    // mm: NULL for kernel threads, a direct-map pointer shared by a group's threads.
    let mm_candidates: Vec<u64> = offsets(8)
        .filter(|&o| {
            all.iter().zip(&kthread).all(|(t, &k)| t.u64(o).is_some_and(|v| if k { v == 0 } else { v == 0 || in_dm(v) }))
                && all.iter().any(|t| t.u64(o).is_some_and(|v| v != 0))
                && threads.iter().all(|&t| all[t].u64(o) == all[leader[t]].u64(o))
        })
        .collect();

    // real_cred candidates: init_cred (image) for init_task, a direct-map cred for everyone
    // else (kernel threads get their own copies), shared by a group's threads. `signal` fits
    // this too and is excluded; `mm::infer` tells the rest apart by what they point to.
    let cred_candidates: Vec<u64> = offsets(8)
        .filter(|&o| {
            o != signal
                && init.u64(o).is_some_and(in_image)
                && all.iter().skip(1).all(|t| t.u64(o).is_some_and(in_dm))
                && threads.iter().all(|&t| all[t].u64(o) == all[leader[t]].u64(o))
        })
        .collect();

    // start_boottime: 0 for init_task, (mostly) non-decreasing in creation order, threads
    // after their leaders, children after their parents.
    let start_of: HashMap<u64, usize> = all.iter().enumerate().map(|(i, t)| (t.base, i)).collect();
    let starts: Vec<u64> = offsets(8)
        .filter(|&o| {
            !pids.iter().any(|&p| o + 8 > p && o < p + 4)
                && init.u64(o) == Some(0)
                && leaders[0].u64(o).is_some_and(|v| v >= 1000)
                && leaders.iter().all(|l| l.u64(o).is_some_and(|v| v < 1_000_000_000_000_000))
                && mostly_ordered(&leaders.iter().filter_map(|l| l.u64(o)).collect::<Vec<_>>())
                && threads.iter().all(|&t| matches!((all[t].u64(o), all[leader[t]].u64(o)), (Some(a), Some(b)) if a >= b))
                // Children start after their parents.
                && all.iter().all(|t| match t.u64(real_parent).and_then(|p| start_of.get(&p)) {
                    Some(&pi) => matches!((t.u64(o), all[pi].u64(o)), (Some(a), Some(b)) if a >= b),
                    None => true,
                })
                && leaders.iter().filter_map(|l| l.u64(o)).collect::<HashSet<_>>().len() >= 3
        })
        .collect();
    tracing::debug!(?starts, ?pids, real_parent, signal, thread_head, thread_node, flags, state, ?exit_state, ?mm_candidates, ?cred_candidates, "heuristic: task_struct candidates");
    // start_time and start_boottime hold equal values for every task without suspend; of such
    // a pair the later is start_boottime in declaration order.
    let equal = |a: u64, b: u64| all.iter().all(|t| t.u64(a) == t.u64(b));
    let start_boottime = starts
        .iter()
        .rev()
        .copied()
        .find(|&b| starts.iter().any(|&a| a < b && equal(a, b)))
        .or(starts.first().copied())
        .ok_or("no task_struct offset fits start_boottime")?;

    // worker_private: distinct per kernel thread (init_task too: sched_init gives it a struct
    // kthread), NULL for user tasks.
    let worker_privates: Vec<u64> = offsets(8)
        .filter(|&o| {
            let mut seen = HashSet::new();
            all.iter().zip(&kthread).all(|(t, &k)| {
                    t.u64(o).is_some_and(|v| if k { in_dm(v) && seen.insert(v) } else { v == 0 })
                })
                && seen.len() >= 2
        })
        .collect();
    tracing::debug!(?worker_privates, "heuristic: worker_private candidates");
    // The one whose targets are `struct kthread`s: kernel-thread naming works through it.
    let naming_works = |o: u64| {
            let comms: Vec<Vec<u8>> = all
                .iter()
                .map(|t| Bytes::new(&t.data).cstr_lossy_end(found.comm_off as usize, 16).to_vec())
                .collect();
            let inputs: Vec<NameInput<'_>> = all
                .iter()
                .zip(&comms)
                .map(|(t, c)| NameInput { comm: c, flags: t.u32(flags).unwrap_or(0), worker_private: KVirt(t.u64(o).unwrap_or(0)) })
                .collect();
            let addrs: Vec<KVirt> = all.iter().map(|t| KVirt(t.base)).collect();
            naming::infer(s, &inputs, &addrs)
    };
    // Prefer the candidate through which workqueue workers resolve (every kernel has some).
    let results: Vec<(u64, naming::Inferred)> = worker_privates.iter().map(|&o| (o, naming_works(o))).collect();
    let worker_private = results
        .iter()
        .find(|(_, i)| i.worker.is_some())
        .or_else(|| results.iter().find(|(_, i)| i.kthread.as_ref().is_some_and(|k| k.full_name.is_some())))
        .map(|(o, _)| *o)
        .or(worker_privates.first().copied());

    Ok(Tasks {
        all,
        f: Fields {
            pid,
            tgid,
            real_parent,
            signal,
            thread_head,
            thread_node,
            flags,
            state,
            exit_state,
            start_boottime,
            mm_candidates,
            cred_candidates,
            worker_private,
        },
    })
}

/// The tasks on the thread list at `head` (nodes at `thread_node` in each task), in order;
/// `None` if the ring does not close with consistent `prev` pointers.
fn group(s: &crate::introspect::kspace::KernelSpace<'_>, head: u64, thread_node: u64) -> Option<Vec<u64>> {
    let mut out = Vec::new();
    let mut prev = head;
    let mut node = s.read_u64(KVirt(head)).ok()?;
    while node != head {
        if out.len() >= MAX_THREADS || !s.in_direct_map(KVirt(node)) || node % 8 != 0 {
            return None;
        }
        let nb = s.read_many(&[(KVirt(node), 16)]).pop()?.ok()?;
        let b = Bytes::new(&nb);
        if b.u64(8).ok()? != prev {
            return None;
        }
        out.push(node.checked_sub(thread_node)?);
        prev = node;
        node = b.u64(0).ok()?;
    }
    Some(out)
}

/// `signal`, `signal_struct.thread_head` and `thread_node`: a per-process pointer whose
/// `thread_head.next` is the leader's own `thread_node` (leaders come first on their list).
fn find_signal(
    found: &Found<'_>,
    leaders: &[Snap],
    real_parent: u64,
    in_image: &dyn Fn(u64) -> bool,
    in_dm: &dyn Fn(u64) -> bool,
) -> Result<(u64, u64, u64), String> {
    let s = &found.space;
    let init = &found.init_snap;
    // The candidate whose thread lists hold the most tasks (a list that merely points back at
    // each task also closes, but never holds a process's other threads).
    let mut best: Option<((u64, u64, u64), u32)> = None;
    for o in offsets(8) {
        let Some(isig) = init.u64(o).filter(|&v| in_image(v)) else { continue };
        let mut seen = HashSet::new();
        if !leaders.iter().all(|l| l.u64(o).is_some_and(|v| in_dm(v) && seen.insert(v))) {
            continue;
        }
        let mut bodies: HashMap<u64, Vec<u8>> = HashMap::new();
        let ptrs: Vec<u64> = std::iter::once(isig).chain(leaders.iter().filter_map(|l| l.u64(o))).collect();
        for (p, r) in ptrs.iter().zip(s.read_many(&ptrs.iter().map(|&p| (KVirt(p), SIGNAL_SPAN)).collect::<Vec<_>>())) {
            if let Ok(b) = r {
                bodies.insert(*p, b);
            }
        }
        let Some(ib) = bodies.get(&isig) else { continue };
        for h in (0..SIGNAL_SPAN as u64 - 16).step_by(8) {
            let ibb = Bytes::new(ib);
            let (Ok(next), Ok(prev)) = (ibb.u64(h as usize), ibb.u64(h as usize + 8)) else { continue };
            // init_task is its group's only thread.
            let Some(n) = next.checked_sub(init.base).filter(|&n| n < TASK_SPAN as u64 && n % 8 == 0) else { continue };
            if prev != next {
                continue;
            }
            // The pointer field is not itself the list node.
            if n == o || n + 8 == o {
                continue;
            }
            let fits = leaders.iter().all(|l| {
                let sig = l.u64(o).unwrap_or(0);
                bodies.get(&sig).is_some_and(|b| Bytes::new(b).u64(h as usize).ok() == Some(l.base + n))
            });
            if !fits {
                continue;
            }
            // Every group's ring closes, its threads share the leader's parent and signal, and
            // the signal_struct counts them (`nr_threads`, before `thread_head`).
            let mut sizes = Vec::with_capacity(leaders.len());
            let groups_ok = leaders.iter().all(|l| {
                let Some(members) = group(s, l.u64(o).unwrap_or(0) + h, n) else { return false };
                sizes.push(members.len() as u32);
                let others: Vec<u64> = members.into_iter().filter(|&t| t != l.base).collect();
                let snaps = snaps(s, &others, TASK_SPAN).unwrap_or_default();
                snaps.len() == others.len() && snaps.iter().all(|t| t.u64(real_parent) == l.u64(real_parent) && t.u64(o) == l.u64(o))
            });
            let counted = groups_ok
                && (0..SIGNAL_SPAN as u64 - 4).step_by(4).filter(|k| !(h..h + 16).contains(k)).any(|k| {
                    leaders.iter().zip(&sizes).all(|(l, &n)| {
                        bodies.get(&l.u64(o).unwrap_or(0)).and_then(|b| Bytes::new(b).u32(k as usize).ok()) == Some(n)
                    })
                });
            if counted {
                let total: u32 = sizes.iter().sum();
                if best.is_none_or(|(_, t)| total > t) {
                    best = Some(((o, h, n), total));
                }
            }
        }
    }
    best.map(|(f, _)| f).ok_or_else(|| "no task_struct pointer leads to a signal_struct whose thread list holds the task".into())
}

/// Assemble the layout.
pub fn layout(found: &Found<'_>, t: &Tasks, mm: MmFields, cred: CredFields) -> Layout {
    let f = &t.f;
    Layout {
        task: TaskLayout {
            size: 0,
            tasks: found.tasks_off,
            pid: f.pid,
            tgid: f.tgid,
            real_parent: f.real_parent,
            thread_node: f.thread_node,
            signal: f.signal,
            real_cred: cred.real_cred,
            state: f.state,
            state_size: 4,
            exit_state: f.exit_state,
            comm: found.comm_off,
            mm: mm.mm,
            flags: f.flags,
            start_boottime: f.start_boottime,
            worker_private: f.worker_private,
        },
        signal: SignalLayout { thread_head: f.thread_head, nr_threads: None },
        cred: CredLayout { uid: cred.uid },
        mm: MmLayout { pgd: mm.pgd, arg_start: mm.arg_start, arg_end: mm.arg_end, env_start: mm.env_start, env_end: mm.env_end },
        kthread: None,
        worker: None,
    }
}
