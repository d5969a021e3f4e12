//! The scheduler's view of the tasks: each CPU's run queue (`runqueues`, per CPU at
//! `runqueues + __per_cpu_offset[cpu]` for `cpu < nr_cpu_ids`).
//!
//! What is covered, per CPU:
//! - `rq->curr` (the task running, or the idle task) and `rq->idle` (the CPU's idle task, pid 0,
//!   which Linux never puts on the task list);
//! - the fair class: `rq->cfs.tasks_timeline`, a red-black tree of `sched_entity.run_node`
//!   (CFS to 6.5, EEVDF since), descending into the queues of task groups (`se->my_q`: cgroups,
//!   autogroups) up to [`MAX_GROUP_DEPTH`] levels; the entity running is not in the tree but is
//!   `rq->curr`;
//! - the real-time class: the [`MAX_RT_PRIO`] lists of `rq->rt.active.queue` (entities of RT
//!   task groups, `CONFIG_RT_GROUP_SCHED`, are counted and not descended into);
//! - the deadline class: `rq->dl.root`, a red-black tree of `sched_dl_entity.rb_node`.
//!
//! Not covered: sched_ext queues, the stop class (one `migration/N` per CPU, on the task list),
//! and tasks that sleep: a run queue holds only the runnable, so this view sees a hidden task only
//! while it runs or waits to run.
//!
//! Prerequisites: BTF (every offset) and data symbols in kallsyms (`runqueues`,
//! `__per_cpu_offset`, `nr_cpu_ids`); without them the view is unavailable, and says which is
//! missing. Each CPU's queue must name its own CPU (`rq->cpu`) and CPU 0's idle task must be
//! `init_task`, which checks the per-CPU arithmetic before anything is believed.
//!
//! Invariant: at most [`MAX_CPUS`] CPUs, [`rbtree::MAX_NODES`] nodes per tree, [`MAX_LIST`]
//! entries per RT list, [`MAX_TASKS`] tasks in all; a queue that does not hold together ends
//! the view with the tasks found before it and an error naming the address.

use std::collections::HashSet;

use emulator::bytes::Bytes;
use serde::Serialize;

use super::rbtree::{self, Window};
use super::ReadMany;
use crate::introspect::btf::Btf;
use crate::introspect::layout::build::Types;

/// Most CPUs read (`nr_cpu_ids` comes from guest memory).
pub const MAX_CPUS: u64 = 1024;
/// Nested task groups followed.
pub const MAX_GROUP_DEPTH: usize = 8;
/// Entries followed per RT priority list.
pub const MAX_LIST: usize = 4096;
/// `MAX_RT_PRIO`.
pub const MAX_RT_PRIO: u64 = 100;
/// Most tasks (running or queued) kept over all CPUs.
pub const MAX_TASKS: usize = 1 << 17;
/// Largest `struct rq` read.
pub const MAX_RQ: u64 = 64 << 10;

/// Offsets the view reads, from BTF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RqLayout {
    pub rq_size: u64,
    /// `rq.cpu` (`CONFIG_SMP`).
    pub cpu: Option<u64>,
    pub curr: u64,
    pub idle: u64,
    /// `rq.cfs.tasks_timeline` (its `rb_root.rb_node`).
    pub cfs_root: u64,
    /// `rq.rt.active.queue`.
    pub rt_queue: u64,
    /// `rq.dl.root`.
    pub dl_root: u64,
    /// `cfs_rq.tasks_timeline`, for the queues of task groups.
    pub cfs_rq_root: u64,
    /// `task_struct.se` + `sched_entity.run_node`.
    pub task_run_node: u64,
    /// `sched_entity.run_node`.
    pub se_run_node: u64,
    /// `sched_entity.my_q` (`CONFIG_FAIR_GROUP_SCHED`).
    pub se_my_q: Option<u64>,
    /// `task_struct.rt` + `sched_rt_entity.run_list`.
    pub task_run_list: u64,
    /// `sched_rt_entity.my_q` relative to `run_list` (`CONFIG_RT_GROUP_SCHED`).
    pub rt_my_q: Option<i64>,
    /// `task_struct.dl` + `sched_dl_entity.rb_node`.
    pub task_dl_node: u64,
}

impl RqLayout {
    pub fn from_btf(btf: &Btf) -> Result<RqLayout, String> {
        let opt = |s: &str, f: &str| -> Result<Option<u64>, String> {
            // Any struct of that name: one without the member is no error here.
            Ok(btf.member(s, &[], f).map_err(|e| e.to_string())?.map(|x| x.offset))
        };
        let m = |s: &str, f: &str| -> Result<u64, String> { opt(s, f)?.ok_or_else(|| format!("BTF struct {s} has no {f}")) };
        let rq_size = btf.struct_size("rq", &["curr", "idle", "cfs"]).map_err(|e| e.to_string())?;
        let queue = btf.member("rt_prio_array", &["queue"], "queue").map_err(|e| e.to_string())?.ok_or("BTF struct rt_prio_array has no queue")?;
        if queue.size != MAX_RT_PRIO * 16 {
            return Err(format!("rt_prio_array.queue has {} bytes, not {MAX_RT_PRIO} list heads", queue.size));
        }
        let run_list = m("sched_rt_entity", "run_list")?;
        let l = RqLayout {
            rq_size,
            cpu: opt("rq", "cpu")?,
            curr: m("rq", "curr")?,
            idle: m("rq", "idle")?,
            cfs_root: m("rq", "cfs")? + m("cfs_rq", "tasks_timeline")?,
            rt_queue: m("rq", "rt")? + m("rt_rq", "active")? + queue.offset,
            dl_root: m("rq", "dl")? + m("dl_rq", "root")?,
            cfs_rq_root: m("cfs_rq", "tasks_timeline")?,
            task_run_node: m("task_struct", "se")? + m("sched_entity", "run_node")?,
            se_run_node: m("sched_entity", "run_node")?,
            se_my_q: opt("sched_entity", "my_q")?,
            task_run_list: m("task_struct", "rt")? + run_list,
            rt_my_q: opt("sched_rt_entity", "my_q")?.map(|q| q as i64 - run_list as i64),
            task_dl_node: m("task_struct", "dl")? + m("sched_dl_entity", "rb_node")?,
        };
        if l.rq_size > MAX_RQ {
            return Err(format!("struct rq of {} bytes is implausible", l.rq_size));
        }
        for (what, off, len) in [("curr", l.curr, 8), ("idle", l.idle, 8), ("cfs", l.cfs_root, 8), ("rt", l.rt_queue, MAX_RT_PRIO * 16), ("dl", l.dl_root, 8), ("cpu", l.cpu.unwrap_or(0), 4)] {
            if off + len > l.rq_size {
                return Err(format!("rq.{what} at {off} runs past the {}-byte struct", l.rq_size));
            }
        }
        Ok(l)
    }
}

/// One CPU's queue as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cpu {
    pub cpu: u64,
    pub rq: u64,
    pub curr: u64,
    pub idle: u64,
    /// Tasks found queued (fair, real-time, deadline).
    pub queued: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RqError {
    #[error("reading {what} at {addr:#x}: {reason}")]
    Read { what: &'static str, addr: u64, reason: String },
    #[error("run queue of CPU {cpu} at {rq:#x}: {reason}")]
    Bad { cpu: u64, rq: u64, reason: String },
    #[error("CPU {cpu}: {source}")]
    Tree { cpu: u64, source: rbtree::RbError },
    #[error("CPU {cpu}: RT list at {node:#x}: {reason}")]
    List { cpu: u64, node: u64, reason: String },
    #[error("more than {MAX_TASKS} tasks in the run queues")]
    TooMany,
}

/// The tasks the run queues hold, and why the view stopped early.
#[derive(Debug, Clone, Default)]
pub struct RqWalk {
    pub cpus: Vec<Cpu>,
    /// Every task found (running or queued), idle tasks included, once each.
    pub tasks: Vec<u64>,
    /// The idle tasks (`rq->idle`).
    pub idle: Vec<u64>,
    /// RT group entities not descended into.
    pub rt_groups: usize,
    pub error: Option<RqError>,
}

fn word(b: &[u8], off: u64) -> Option<u64> {
    Bytes::new(b).u64(usize::try_from(off).ok()?).ok()
}

fn read_one(read: &mut ReadMany<'_>, what: &'static str, addr: u64, len: u64) -> Result<Vec<u8>, RqError> {
    read(&[(addr, len as usize)]).pop().unwrap_or(Err("no answer".into())).map_err(|reason| RqError::Read { what, addr, reason })
}

/// Walks every CPU's run queue. `runqueues` is the per-CPU symbol's value, `offsets` the
/// `__per_cpu_offset` array's address (`None` on a kernel without SMP: one CPU, offset 0).
pub fn walk(l: &RqLayout, runqueues: u64, offsets: Option<u64>, nr_cpus: u64, init_task: u64, read: &mut ReadMany<'_>) -> RqWalk {
    let mut out = RqWalk::default();
    if let Err(e) = walk_into(l, runqueues, offsets, nr_cpus, init_task, read, &mut out) {
        out.error = Some(e);
    }
    let mut seen = HashSet::new();
    out.tasks.retain(|t| seen.insert(*t));
    out
}

fn walk_into(l: &RqLayout, runqueues: u64, offsets: Option<u64>, nr_cpus: u64, init_task: u64, read: &mut ReadMany<'_>, out: &mut RqWalk) -> Result<(), RqError> {
    if l.rq_size > MAX_RQ {
        return Err(RqError::Bad { cpu: 0, rq: runqueues, reason: format!("struct rq of {} bytes is implausible", l.rq_size) });
    }
    let n = nr_cpus.clamp(1, MAX_CPUS);
    let offs: Vec<u64> = match offsets {
        Some(at) => {
            let b = read_one(read, "__per_cpu_offset", at, n * 8)?;
            (0..n).map(|i| word(&b, i * 8).unwrap_or(0)).collect()
        }
        None => vec![0],
    };
    for (cpu, off) in offs.into_iter().enumerate() {
        let cpu = cpu as u64;
        let rq = runqueues.wrapping_add(off);
        let b = read_one(read, "struct rq", rq, l.rq_size)?;
        let bad = |reason: String| RqError::Bad { cpu, rq, reason };
        let f = |o: u64| word(&b, o).ok_or_else(|| bad(format!("field at {o} outside the bytes read")));
        if let Some(c) = l.cpu {
            let got = f(c)? as u32 as u64;
            if got != cpu {
                return Err(bad(format!("rq->cpu is {got}")));
            }
        }
        let (curr, idle) = (f(l.curr)?, f(l.idle)?);
        if cpu == 0 && idle != init_task {
            return Err(bad(format!("rq->idle is {idle:#x}, not init_task {init_task:#x}")));
        }
        let before = out.tasks.len();
        out.idle.push(idle);
        out.tasks.push(curr);
        out.tasks.push(idle);
        fair(l, cpu, f(l.cfs_root)?, read, out)?;
        for p in 0..MAX_RT_PRIO {
            rt_list(l, cpu, rq.wrapping_add(l.rt_queue).wrapping_add(p * 16), f(l.rt_queue.saturating_add(p * 16))?, read, out)?;
        }
        let dl = rbtree::walk(f(l.dl_root)?, Window::NODE, read);
        if out.tasks.len().saturating_add(dl.nodes.len()) > MAX_TASKS {
            return Err(RqError::TooMany);
        }
        out.tasks.extend(dl.nodes.iter().map(|(n, _)| n.wrapping_sub(l.task_dl_node)));
        if let Some(source) = dl.error {
            return Err(RqError::Tree { cpu, source });
        }
        out.cpus.push(Cpu { cpu, rq, curr, idle, queued: out.tasks.len() - before - 2 });
    }
    Ok(())
}

/// The fair class's tree from `root`, and the trees of the task groups queued in it.
fn fair(l: &RqLayout, cpu: u64, root: u64, read: &mut ReadMany<'_>, out: &mut RqWalk) -> Result<(), RqError> {
    let window = Window { before: l.se_run_node, len: l.se_run_node.saturating_add(rbtree::RB_NODE).max(l.se_my_q.map_or(0, |q| q.saturating_add(8))) };
    let mut roots = vec![root];
    for _ in 0..=MAX_GROUP_DEPTH {
        let mut groups = Vec::new();
        for r in roots {
            let t = rbtree::walk(r, window, read);
            if out.tasks.len().saturating_add(t.nodes.len()) > MAX_TASKS {
                return Err(RqError::TooMany);
            }
            for (node, bytes) in &t.nodes {
                match l.se_my_q.and_then(|q| word(bytes, q)).filter(|&q| q != 0) {
                    Some(q) => groups.push(q),
                    None => out.tasks.push(node.wrapping_sub(l.task_run_node)),
                }
            }
            if let Some(source) = t.error {
                return Err(RqError::Tree { cpu, source });
            }
        }
        if groups.is_empty() {
            return Ok(());
        }
        let got = read(&groups.iter().map(|&q| (q.wrapping_add(l.cfs_rq_root), 8)).collect::<Vec<_>>());
        roots = Vec::new();
        for (q, g) in groups.iter().zip(got) {
            let g = g.map_err(|reason| RqError::Read { what: "a task group's cfs_rq", addr: *q, reason })?;
            roots.push(word(&g, 0).unwrap_or(0));
        }
    }
    Err(RqError::Bad { cpu, rq: root, reason: format!("task groups nested deeper than {MAX_GROUP_DEPTH}") })
}

/// One RT priority list from its head at `head` (whose `next` is `first`).
fn rt_list(l: &RqLayout, cpu: u64, head: u64, first: u64, read: &mut ReadMany<'_>, out: &mut RqWalk) -> Result<(), RqError> {
    let (mut prev, mut node) = (head, first);
    let mut seen = HashSet::new();
    let extra = l.rt_my_q.map_or(16, |q| q.clamp(8, 1 << 12) + 8) as u64;
    while node != head {
        let bad = |reason: &str| RqError::List { cpu, node, reason: reason.into() };
        if out.tasks.len() >= MAX_TASKS {
            return Err(RqError::TooMany);
        }
        if seen.len() >= MAX_LIST || !seen.insert(node) || node < 0xff00_0000_0000_0000 {
            return Err(bad("not a kernel address, seen twice, or too many entries"));
        }
        let b = read_one(read, "an RT entity", node, extra)?;
        if word(&b, 8) != Some(prev) {
            return Err(bad("prev is not the node it was reached from"));
        }
        match l.rt_my_q.and_then(|q| u64::try_from(q).ok()).and_then(|q| word(&b, q)) {
            Some(q) if q != 0 => out.rt_groups += 1,
            _ => out.tasks.push(node.wrapping_sub(l.task_run_list)),
        }
        prev = node;
        node = word(&b, 0).unwrap_or(head);
    }
    Ok(())
}
