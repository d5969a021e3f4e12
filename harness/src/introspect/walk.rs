//! Walking the kernel's tasks: `init_task.tasks` (one entry per thread group), then each
//! group's `signal->thread_head` list (`task->thread_node`, 6.1), then the per-task facts
//! `/proc` would show.
//!
//! Invariant: the walk is bounded (`max_tasks`, `max_threads`) and cycle-safe (a visited set of
//! list nodes; every node's `prev` must point back at the node we came from). Each task is
//! validated before use — its address and its `real_parent`, `signal`, `real_cred` pointers must
//! be kernel addresses (direct map or image), its pid/tgid in range, its `comm` NUL-terminated.
//! The first violation stops the walk: the outcome carries every task read before it plus the
//! error, never a guess.

use std::collections::{HashMap, HashSet};

use super::addr::{KVirt, UVirt};
use super::cmdline::{read_cmdlines, ArgArea};
use super::gather::{NotRead, Plan, Record};
use super::kspace::{KSpaceError, KernelSpace};
use super::layout::Layout;
use super::names::display_names;
use super::naming::NameInput;
use super::state::{state_letter, PF_KTHREAD, PID_MAX_LIMIT};

#[derive(Debug, Clone, Copy)]
pub struct WalkConfig {
    pub max_tasks: usize,
    pub max_threads: usize,
    /// Bytes of command line read per process.
    pub cmdline_max: usize,
}

impl Default for WalkConfig {
    fn default() -> Self {
        WalkConfig { max_tasks: 1 << 16, max_threads: 1 << 14, cmdline_max: 128 << 10 }
    }
}

/// One thread, as `/proc/<tgid>/task/<pid>` describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Thread {
    pub addr: KVirt,
    pub pid: i32,
    pub tgid: i32,
    pub ppid: i32,
    pub uid: u32,
    pub state: char,
    pub raw_state: u32,
    pub exit_state: u32,
    pub flags: u32,
    /// The name `/proc` shows (see `names`).
    pub comm: Vec<u8>,
    /// Raw `/proc/<pid>/cmdline` bytes.
    pub cmdline: Vec<u8>,
    /// Threads in the group, for group leaders.
    pub threads: Option<u32>,
    pub start_time_ns: u64,
    pub kthread: bool,
    /// Non-fatal problems (e.g. an unreadable command line page).
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("no init_task symbol")]
    NoInitTask,
    #[error("{what} of task at {task} is {value}, not a kernel address")]
    BadPointer { what: &'static str, task: KVirt, value: KVirt },
    #[error("reading {what}: {source}")]
    Read { what: &'static str, source: KSpaceError },
    #[error("task list loops back to {node} without returning to its head")]
    Cycle { node: KVirt },
    #[error("list node {node}: prev is {prev}, expected {expected}")]
    BrokenList { node: KVirt, prev: KVirt, expected: KVirt },
    #[error("task at {task}: {reason}")]
    InvalidTask { task: KVirt, reason: String },
    #[error("more than {limit} tasks")]
    TooMany { limit: usize },
    #[error("{0}")]
    Field(#[from] NotRead),
}

/// The tasks read, and why the walk stopped early if it did.
#[derive(Debug)]
pub struct WalkOutcome {
    pub threads: Vec<Thread>,
    pub error: Option<WalkError>,
}

/// Fields of `task_struct` read per task.
fn task_plan(l: &Layout) -> Plan {
    let t = &l.task;
    let mut f = vec![
        (t.tasks, 16),
        (t.pid, 4),
        (t.tgid, 4),
        (t.real_parent, 8),
        (t.thread_node, 16),
        (t.signal, 8),
        (t.real_cred, 8),
        (t.state, t.state_size as usize),
        (t.comm, 16),
        (t.mm, 8),
        (t.flags, 4),
        (t.start_boottime, 8),
    ];
    if let Some(w) = t.worker_private {
        f.push((w, 8));
    }
    if let Some(e) = t.exit_state {
        f.push((e, 4));
    }
    Plan::new(&f, 512)
}

struct Walker<'a, 'm> {
    space: &'a KernelSpace<'m>,
    l: &'a Layout,
    plan: Plan,
    cfg: WalkConfig,
}

impl Walker<'_, '_> {
    fn kptr_ok(&self, v: KVirt) -> bool {
        v.0.is_multiple_of(8) && (self.space.in_direct_map(v) || self.space.in_image(v))
    }

    /// Validate a task record; returns a description of the first problem.
    fn check(&self, r: &Record) -> Result<(), WalkError> {
        let t = &self.l.task;
        for (what, off) in [("real_parent", t.real_parent), ("signal", t.signal), ("real_cred", t.real_cred)] {
            let v = r.ptr(off)?;
            if !self.kptr_ok(v) {
                return Err(WalkError::BadPointer { what, task: r.base, value: v });
            }
        }
        let mm = r.ptr(t.mm)?;
        if mm.0 != 0 && !self.kptr_ok(mm) {
            return Err(WalkError::BadPointer { what: "mm", task: r.base, value: mm });
        }
        let (pid, tgid) = (r.i32(t.pid)?, r.i32(t.tgid)?);
        if !(0..=PID_MAX_LIMIT).contains(&pid) || !(0..=PID_MAX_LIMIT).contains(&tgid) {
            return Err(WalkError::InvalidTask { task: r.base, reason: format!("pid {pid} / tgid {tgid} out of range") });
        }
        if !r.bytes(t.comm, 16)?.contains(&0) {
            return Err(WalkError::InvalidTask { task: r.base, reason: "comm is not NUL-terminated".into() });
        }
        Ok(())
    }

    fn read_tasks(&self, tasks: &[KVirt], what: &'static str) -> Result<Vec<Record>, WalkError> {
        self.plan.read_many(self.space, tasks).into_iter().map(|r| r.map_err(|source| WalkError::Read { what, source })).collect()
    }

    /// Follow `init_task.tasks`: the group leaders, in list order.
    fn leaders(&self, init_task: KVirt, out: &mut Vec<Record>) -> Result<(), WalkError> {
        let off = self.l.task.tasks;
        let head = init_task.wrapping_add(off);
        let init = self.read_tasks(&[init_task], "init_task")?.remove(0);
        let mut prev = head;
        let mut node = init.ptr(off)?;
        let mut seen = HashSet::new();
        while node != head {
            if !self.kptr_ok(node) || !self.space.in_direct_map(node) {
                return Err(WalkError::BadPointer { what: "tasks.next", task: KVirt(prev.0.wrapping_sub(off)), value: node });
            }
            if !seen.insert(node) {
                return Err(WalkError::Cycle { node });
            }
            if out.len() >= self.cfg.max_tasks {
                return Err(WalkError::TooMany { limit: self.cfg.max_tasks });
            }
            let task = KVirt(node.0.wrapping_sub(off));
            let r = self.read_tasks(&[task], "task_struct")?.remove(0);
            let back = r.ptr(off + 8)?;
            if back != prev {
                return Err(WalkError::BrokenList { node, prev: back, expected: prev });
            }
            self.check(&r)?;
            prev = node;
            node = r.ptr(off)?;
            out.push(r);
        }
        Ok(())
    }

    /// Every thread of every group, groups advancing together one list hop per batch.
    /// Returns threads in group order with each leader's thread count.
    fn threads(&self, leaders: &[Record], out: &mut Vec<(Record, Option<u32>)>) -> Result<(), WalkError> {
        let t = &self.l.task;
        let heads: Vec<KVirt> =
            leaders.iter().map(|r| r.ptr(t.signal).map(|s| s.wrapping_add(self.l.signal.thread_head))).collect::<Result<_, _>>()?;
        let firsts = self.space.read_many(&heads.iter().map(|&h| (h, 8)).collect::<Vec<_>>());
        struct Group {
            head: KVirt,
            prev: KVirt,
            node: KVirt,
            members: Vec<Record>,
            seen: HashSet<KVirt>,
            done: bool,
        }
        let mut groups = Vec::with_capacity(leaders.len());
        for (&head, first) in heads.iter().zip(firsts) {
            let first = first.map_err(|source| WalkError::Read { what: "signal->thread_head", source })?;
            let node = KVirt(u64::from_le_bytes(first.try_into().unwrap_or([0; 8])));
            groups.push(Group { head, prev: head, node, members: Vec::new(), seen: HashSet::new(), done: false });
        }
        let by_addr: HashMap<KVirt, &Record> = leaders.iter().map(|r| (r.base, r)).collect();
        let mut total = 0usize;
        loop {
            let mut want = Vec::new();
            for (g_idx, g) in groups.iter_mut().enumerate() {
                if g.done {
                    continue;
                }
                if g.node == g.head {
                    g.done = true;
                    continue;
                }
                if !self.space.in_direct_map(g.node) || g.node.0 % 8 != 0 {
                    return Err(WalkError::BadPointer { what: "thread_node.next", task: KVirt(g.prev.0.wrapping_sub(t.thread_node)), value: g.node });
                }
                if !g.seen.insert(g.node) {
                    return Err(WalkError::Cycle { node: g.node });
                }
                if g.members.len() >= self.cfg.max_threads || total >= self.cfg.max_tasks {
                    return Err(WalkError::TooMany { limit: self.cfg.max_threads.min(self.cfg.max_tasks) });
                }
                total += 1;
                want.push((g_idx, KVirt(g.node.0.wrapping_sub(t.thread_node))));
            }
            if want.is_empty() {
                break;
            }
            // Reuse leader records already read; read the rest in one batch.
            let missing: Vec<KVirt> = want.iter().map(|&(_, a)| a).filter(|a| !by_addr.contains_key(a)).collect();
            let mut fresh: HashMap<KVirt, Record> =
                missing.iter().copied().zip(self.read_tasks(&missing, "thread task_struct")?).collect();
            for (g_idx, addr) in want {
                let r = match fresh.remove(&addr) {
                    Some(r) => r,
                    None => (*by_addr.get(&addr).ok_or(WalkError::Cycle { node: addr })?).clone(),
                };
                let g = &mut groups[g_idx];
                let back = r.ptr(t.thread_node + 8)?;
                if back != g.prev {
                    return Err(WalkError::BrokenList { node: g.node, prev: back, expected: g.prev });
                }
                self.check(&r)?;
                g.prev = g.node;
                g.node = r.ptr(t.thread_node)?;
                g.members.push(r);
            }
        }
        for (leader, g) in leaders.iter().zip(groups) {
            let n = g.members.len() as u32;
            let mut has_leader = false;
            for m in g.members {
                let is_leader = m.base == leader.base;
                has_leader |= is_leader;
                out.push((m, is_leader.then_some(n)));
            }
            if !has_leader {
                // A group whose leader is no longer on its thread list: still list the leader.
                out.push((leader.clone(), Some(n)));
            }
        }
        Ok(())
    }
}

/// Follow the first `n` entries of the task list from `init_task`, validating each — a cheap
/// check that a layout fits this kernel. Returns how many tasks were checked.
pub fn probe(space: &KernelSpace<'_>, layout: &Layout, init_task: KVirt, n: usize) -> Result<usize, WalkError> {
    let w = Walker { space, l: layout, plan: task_plan(layout), cfg: WalkConfig { max_tasks: n, ..WalkConfig::default() } };
    let mut out = Vec::new();
    match w.leaders(init_task, &mut out) {
        Ok(()) | Err(WalkError::TooMany { .. }) => Ok(out.len()),
        Err(e) => Err(e),
    }
}

/// Walk every task of the kernel.
pub fn walk(space: &KernelSpace<'_>, layout: &Layout, init_task: KVirt, cfg: WalkConfig) -> WalkOutcome {
    let w = Walker { space, l: layout, plan: task_plan(layout), cfg };
    let mut leaders = Vec::new();
    let mut error = w.leaders(init_task, &mut leaders).err();
    let mut recs = Vec::new();
    if let Err(e) = w.threads(&leaders, &mut recs) {
        error.get_or_insert(e);
        recs = leaders.iter().map(|r| (r.clone(), None)).collect();
    }
    let (threads, e2) = facts(space, layout, &recs, cfg);
    if let Some(e) = e2 {
        error.get_or_insert(e);
    }
    WalkOutcome { threads, error }
}

/// Turn task records into [`Thread`]s: parent tgid, uid, names, command lines (all batched).
/// Stops at the first task whose secondary reads fail, returning those before it.
fn facts(space: &KernelSpace<'_>, l: &Layout, recs: &[(Record, Option<u32>)], cfg: WalkConfig) -> (Vec<Thread>, Option<WalkError>) {
    let t = &l.task;
    let get = |r: &Record| -> Result<_, NotRead> {
        Ok((
            r.ptr(t.real_parent)?,
            r.ptr(t.real_cred)?,
            r.ptr(t.mm)?,
            r.u32(t.flags)?,
            r.ptr(t.worker_private.unwrap_or(t.tasks))?,
        ))
    };
    let mut base = Vec::with_capacity(recs.len());
    for (r, _) in recs {
        match get(r) {
            Ok(v) => base.push(v),
            Err(e) => return (Vec::new(), Some(e.into())),
        }
    }
    // Parent tgid and uid in one batch.
    let mut regions = Vec::with_capacity(recs.len() * 2);
    for &(parent, cred, ..) in &base {
        regions.push((parent.wrapping_add(t.tgid), 4));
        regions.push((cred.wrapping_add(l.cred.uid), 4));
    }
    let pu = space.read_many(&regions);
    // mm fields, once per distinct mm of a user task.
    let mut mms: Vec<KVirt> = base.iter().filter(|b| b.3 & PF_KTHREAD == 0 && b.2.0 != 0).map(|b| b.2).collect();
    mms.sort_unstable();
    mms.dedup();
    let mm_plan = Plan::new(&[(l.mm.pgd, 8), (l.mm.arg_start, 8), (l.mm.arg_end, 8), (l.mm.env_start, 8), (l.mm.env_end, 8)], 512);
    let mm_recs = mm_plan.read_many(space, &mms);
    let mut areas = Vec::new();
    let mut area_of: HashMap<KVirt, Result<usize, String>> = HashMap::new();
    for (&mm, r) in mms.iter().zip(mm_recs) {
        let a = r.map_err(|e| e.to_string()).and_then(|r| {
            Ok(ArgArea {
                pgd: r.ptr(l.mm.pgd).map_err(|e| e.to_string())?,
                arg_start: r.u64(l.mm.arg_start).map(UVirt).map_err(|e| e.to_string())?,
                arg_end: r.u64(l.mm.arg_end).map(UVirt).map_err(|e| e.to_string())?,
                env_start: r.u64(l.mm.env_start).map(UVirt).map_err(|e| e.to_string())?,
                env_end: r.u64(l.mm.env_end).map(UVirt).map_err(|e| e.to_string())?,
            })
        });
        area_of.insert(mm, a.map(|a| {
            areas.push(a);
            areas.len() - 1
        }));
    }
    let cmdlines = read_cmdlines(space, &areas, cfg.cmdline_max);
    let inputs: Vec<NameInput<'_>> = recs
        .iter()
        .zip(&base)
        .map(|((r, _), b)| NameInput { comm: r.bytes(t.comm, 16).map(cstr).unwrap_or(&[]), flags: b.3, worker_private: b.4 })
        .collect();
    let addrs: Vec<KVirt> = recs.iter().map(|(r, _)| r.base).collect();
    let (names, name_notes, _naming) = display_names(space, l, &inputs, &addrs);

    let mut out = Vec::with_capacity(recs.len());
    for (i, ((r, threads), b)) in recs.iter().zip(&base).enumerate() {
        let (ppid, uid) = match (&pu[2 * i], &pu[2 * i + 1]) {
            (Ok(p), Ok(u)) => (le_i32(p), le_i32(u) as u32),
            (Err(e), _) => return (out, Some(WalkError::InvalidTask { task: r.base, reason: format!("real_parent->tgid unreadable: {e}") })),
            (_, Err(e)) => return (out, Some(WalkError::InvalidTask { task: r.base, reason: format!("real_cred->uid unreadable: {e}") })),
        };
        let kthread = b.3 & PF_KTHREAD != 0;
        let mut notes = Vec::new();
        notes.extend(name_notes[i].clone());
        let cmdline = if kthread || b.2.0 == 0 {
            Vec::new()
        } else {
            match area_of.get(&b.2) {
                Some(Ok(k)) => match &cmdlines[*k] {
                    Ok(c) => c.clone(),
                    Err(e) => {
                        notes.push(format!("cmdline: {e}"));
                        Vec::new()
                    }
                },
                Some(Err(e)) => {
                    notes.push(format!("mm_struct unreadable: {e}"));
                    Vec::new()
                }
                None => Vec::new(),
            }
        };
        let thread = (|| -> Result<Thread, NotRead> {
            let raw_state = r.uint(t.state, t.state_size)? as u32;
            let exit_state = match t.exit_state {
                Some(o) => r.u32(o)?,
                None => 0,
            };
            Ok(Thread {
                addr: r.base,
                pid: r.i32(t.pid)?,
                tgid: r.i32(t.tgid)?,
                ppid,
                uid,
                state: state_letter(raw_state, exit_state),
                raw_state,
                exit_state,
                flags: b.3,
                comm: names[i].clone(),
                cmdline,
                threads: *threads,
                start_time_ns: r.u64(t.start_boottime)?,
                kthread,
                notes,
            })
        })();
        match thread {
            Ok(th) => out.push(th),
            Err(e) => return (out, Some(e.into())),
        }
    }
    (out, None)
}

fn cstr(b: &[u8]) -> &[u8] {
    b.iter().position(|&c| c == 0).map_or(b, |n| &b[..n])
}

fn le_i32(b: &[u8]) -> i32 {
    b.get(..4).and_then(|s| s.try_into().ok()).map(i32::from_le_bytes).unwrap_or(0)
}

#[cfg(test)]
#[path = "walk_tests.rs"]
mod tests;
