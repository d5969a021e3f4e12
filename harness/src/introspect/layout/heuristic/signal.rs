//! Inferring `signal`, `thread_node`, `signal_struct.thread_head` and `nr_threads`, and
//! following every sampled group's thread list.
//!
//! `init_task.thread_node` is the only node of `init_signals.thread_head` (both set by
//! `INIT_TASK`), so a one-node list in `init_task` whose head lies `th` bytes into the static
//! object another field of `init_task` points at, with that head pointing back, fixes all three
//! (checked against the `init_signals` symbol when kallsyms has it). Every sampled leader must
//! then sit on its own signal's thread list.
//!
//! Invariant: bounded windows ([`SIGNAL_WIN`]) and lists ([`MAX_THREADS`] per group, a visited
//! set, back links checked), one batch per hop; an offset is returned only if exactly one fits.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::probe::{failed, u64_at, Obj, Probe};
use super::super::LayoutError;
use crate::introspect::addr::KVirt;

/// Bytes of a `signal_struct` searched for `thread_head` / `nr_threads`: the whole struct (about
/// 1 KiB from 5.10 to 7.x), since RANDSTRUCT may put either anywhere in it (7.2: `thread_head`
/// at 840).
pub const SIGNAL_WIN: usize = 2048;
/// Most threads followed per thread group.
pub const MAX_THREADS: usize = 1 << 14;
/// Most thread list nodes followed over all groups.
pub const MAX_NODES: usize = 1 << 16;
/// Where the thread-group fields are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalFound {
    pub signal: u64,
    pub thread_node: u64,
    pub thread_head: u64,
}

/// `signal`, `thread_node` and `signal_struct.thread_head` from `init_task` and the static
/// signal struct it points at (`init_signals`, checked against the symbol when there is one).
pub fn find_signal(p: &Probe<'_, '_>, init: &Obj, init_signals: Option<KVirt>) -> Result<SignalFound, LayoutError> {
    let len = init.bytes.len() as u64;
    let offs = || (0..len.saturating_sub(15)).step_by(8);
    // One-node lists into the image: next == prev, not self.
    let nodes: Vec<(u64, KVirt)> = offs()
        .filter_map(|n| {
            let (a, b) = (init.ptr(n)?, init.ptr(n + 8)?);
            (a == b && a != init.at(n) && p.image(a)).then_some((n, a))
        })
        .collect();
    let mut triples = Vec::new();
    let mut targets: BTreeSet<KVirt> = BTreeSet::new();
    let mut pairs = Vec::new();
    for s in offs() {
        let Some(ptr) = init.ptr(s).filter(|&v| p.image(v)) else { continue };
        if init_signals.is_some_and(|sym| sym != ptr) {
            continue;
        }
        for &(n, head) in &nodes {
            let th = head.0.wrapping_sub(ptr.0);
            if th < (SIGNAL_WIN as u64 - 16) && s != n && s != n + 8 {
                pairs.push((s, n, ptr, th));
                targets.insert(ptr);
            }
        }
    }
    let targets: Vec<KVirt> = targets.into_iter().collect();
    let objs: HashMap<KVirt, Obj> = p.objs_lossy(&targets, SIGNAL_WIN).into_iter().flatten().map(|o| (o.addr, o)).collect();
    for (s, n, ptr, th) in pairs {
        let Some(sig) = objs.get(&ptr) else { continue };
        if sig.ptr(th) == Some(init.at(n)) && sig.ptr(th + 8) == Some(init.at(n)) {
            triples.push(SignalFound { signal: s, thread_node: n, thread_head: th });
        }
    }
    match triples.as_slice() {
        [one] => Ok(*one),
        [] => Err(failed("signal: no field of init_task points at a signal struct whose thread list holds init_task")),
        many => Err(failed(format!("ambiguous signal/thread_node: {many:?}"))),
    }
}

/// One thread group of the sample.
#[derive(Debug, Clone)]
pub struct Group {
    /// Index into the leaders.
    pub leader: usize,
    pub signal: Obj,
    /// Every task on `signal->thread_head`, in list order.
    pub members: Vec<KVirt>,
}

/// The thread group of every leader: its `signal` struct read, its thread list followed (all
/// groups advancing together). A leader whose signal or list is broken fails the method.
pub fn groups(p: &Probe<'_, '_>, leaders: &[Obj], sf: SignalFound) -> Result<Vec<Group>, LayoutError> {
    let sigs: Vec<KVirt> = leaders
        .iter()
        .map(|l| match l.u64(sf.signal) {
            Some(v) if p.heap(KVirt(v)) => Ok(KVirt(v)),
            v => Err(failed(format!("task {}: signal {v:#x?} is not a heap pointer", l.addr))),
        })
        .collect::<Result<_, _>>()?;
    let objs = p.objs(&sigs, SIGNAL_WIN, "signal_struct")?;
    let lists: Vec<(KVirt, KVirt)> = objs.iter().map(|o| (o.at(sf.thread_head), o.ptr(sf.thread_head).unwrap_or_default())).collect();
    let walked = follow_many(p, &lists, sf.thread_node, MAX_THREADS);
    let mut out = Vec::with_capacity(leaders.len());
    for (i, (sig, members)) in objs.into_iter().zip(walked).enumerate() {
        let members = members.map_err(|e| failed(format!("thread list of task {}: {e}", leaders[i].addr)))?;
        if !members.contains(&leaders[i].addr) {
            return Err(failed(format!("task {} is not on its own signal's thread list", leaders[i].addr)));
        }
        out.push(Group { leader: i, signal: sig, members });
    }
    Ok(out)
}

/// Follow many circular lists together, one batched read per hop: for each `(head, first)`,
/// the members (node minus `node_off`) in order, or why the list is broken. At most `limit`
/// nodes per list and [`MAX_NODES`] in all.
pub fn follow_many(p: &Probe<'_, '_>, lists: &[(KVirt, KVirt)], node_off: u64, limit: usize) -> Vec<Result<Vec<KVirt>, String>> {
    struct L {
        head: KVirt,
        prev: KVirt,
        node: KVirt,
        seen: HashSet<KVirt>,
        out: Result<Vec<KVirt>, String>,
    }
    let mut ls: Vec<L> =
        lists.iter().map(|&(head, first)| L { head, prev: head, node: first, seen: HashSet::new(), out: Ok(Vec::new()) }).collect();
    let mut spent = 0usize;
    loop {
        let mut active = Vec::new();
        for (i, l) in ls.iter_mut().enumerate() {
            let Ok(out) = &l.out else { continue };
            if l.node == l.head {
                continue;
            }
            if !p.heap(l.node) {
                l.out = Err(format!("node {:#x} after {:#x} is not a heap pointer", l.node, l.prev));
            } else if !l.seen.insert(l.node) || out.len() >= limit {
                l.out = Err(format!("does not return to its head {:#x} within {limit} nodes", l.head));
            } else {
                active.push(i);
            }
        }
        if active.is_empty() {
            break;
        }
        spent += active.len();
        if spent > MAX_NODES {
            for &i in &active {
                ls[i].out = Err(format!("more than {MAX_NODES} thread list nodes in all"));
            }
            break;
        }
        let regions: Vec<(KVirt, usize)> = active.iter().map(|&i| (ls[i].node, 16)).collect();
        for (&i, r) in active.iter().zip(p.space.read_many(&regions)) {
            let l = &mut ls[i];
            let Ok(b) = r else {
                l.out = Err(format!("node {:#x} unreadable", l.node));
                continue;
            };
            let (next, back) = (KVirt(u64_at(&b, 0).unwrap_or(0)), KVirt(u64_at(&b, 8).unwrap_or(0)));
            if back != l.prev {
                l.out = Err(format!("node {:#x}: prev {back:#x}, expected {:#x}", l.node, l.prev));
                continue;
            }
            if let Ok(out) = &mut l.out {
                out.push(KVirt(l.node.0.wrapping_sub(node_off)));
            }
            l.prev = l.node;
            l.node = next;
        }
    }
    ls.into_iter().map(|l| l.out).collect()
}

/// `signal_struct.nr_threads`: an `int` before `thread_head` equal to the thread count of
/// every group (1 for `init_signals`). `sigcnt` and `live` often hold the same values (a zombie
/// leader tells `live` apart: 0 against 1); if exactly two offsets still fit and agree on
/// every group, the later one is taken (`sigcnt` is declared first); otherwise `None`.
pub fn nr_threads(init_signals: &Obj, groups: &[Group], thread_head: u64) -> Option<u64> {
    let fits: Vec<u64> = (0..thread_head)
        .step_by(4)
        .filter(|&o| init_signals.u32(o) == Some(1) && groups.iter().all(|g| g.signal.u32(o) == Some(g.members.len() as u32)))
        .collect();
    match fits.as_slice() {
        [x] => Some(*x),
        [_, b] => Some(*b),
        _ => None,
    }
}
