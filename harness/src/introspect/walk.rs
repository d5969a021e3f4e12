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
//!
//! Live memory (a running machine read over DMA) changes under the walk. A violation is first
//! re-read ([`Consistency`] counts it): if the re-read shows the same bytes, memory is not
//! changing and the violation stands; if it shows the list changed (a task unlinked as it
//! exited, the way `list_del_rcu` leaves it: `next` intact, `prev` poisoned), the walk follows
//! the list as it is now, a bounded number of times per step. A node reached a second time is a
//! cycle only if the same task (pid, start time) is still there: a task freed and its memory
//! given to a new one is met again at the list's end. At the end every listed task's
//! identity (pid, tgid, start time) is read again in one batch; a task whose identity changed
//! was freed and its memory reused while we read it, and its record, possibly torn between two
//! tasks, is dropped rather than reported.
//!
//! Round trips: following a list is one dependent read per node. A [`TaskIndex`] (the pid
//! allocator, [`super::pidindex`]) names every task's address in a few batches; the walk then
//! reads every named task's record in one batch and takes a node's record from there the first
//! time the list reaches it, so a walk costs O(index depth) round trips, not O(tasks). The
//! index only says where to read: what is listed, and every check on it, is the list's.

use std::collections::HashMap;

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
    pub consistency: Consistency,
    pub index: IndexUse,
}

/// Where the walk can learn the address of every task at once, so that it reads their records
/// in one batch instead of one list hop per round trip.
pub trait TaskIndex {
    /// Group leaders the index wants to see first (to learn its own layout from them); 0 if
    /// it can be asked at once.
    fn samples(&self) -> usize;
    /// Addresses of tasks (ideally every one, those of the list's first tasks first), given the
    /// leaders taken so far as (address, pid); an error leaves the walk to follow the lists
    /// alone.
    fn addresses(&mut self, space: &KernelSpace<'_>, layout: &Layout, taken: &[(KVirt, i32)]) -> Result<Vec<KVirt>, String>;
}

/// How much a walk's [`TaskIndex`] helped.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IndexUse {
    /// Task addresses the index named.
    pub named: usize,
    /// Task records the walk took from the index's batch instead of reading them itself.
    pub used: usize,
    /// Why the index gave nothing, if it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How much the memory changed under one walk (all zero on a dump).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Consistency {
    /// Links or task records read a second time because they did not validate.
    pub rereads: u64,
    /// Re-reads that found the list changed, so the walk followed it as it is now.
    pub relinks: u64,
    /// Tasks dropped because their identity changed between the first read and the final check.
    pub torn: u64,
}

/// Re-reads of one list step before its violation stands.
const RELINKS_PER_STEP: usize = 8;

/// Is `v` what `list_del_rcu` leaves in an unlinked node's `prev` (`LIST_POISON2`: 0x122, plus
/// `POISON_POINTER_DELTA` 0xdead000000000000 on x86-64), or any other non-kernel value?
fn unlinked_prev(v: KVirt) -> bool {
    v.0 == 0x122 || v.0 >> 48 == 0xdead || v.0 < 0xffff_8000_0000_0000
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
    consistency: std::cell::Cell<Consistency>,
    /// Records read ahead for the tasks the index named, each taken at most once.
    ahead: std::cell::RefCell<HashMap<KVirt, Record>>,
    index_use: std::cell::RefCell<IndexUse>,
}

/// List nodes passed, with the identity (pid, start time) of the task each belonged to; the
/// list head maps to an identity no task has.
type Seen = HashMap<KVirt, (i32, u64)>;

const HEAD_ID: (i32, u64) = (-1, u64::MAX);

fn seen_from(head: KVirt) -> Seen {
    HashMap::from([(head, HEAD_ID)])
}

/// What a list step that did not point back turned into after a re-read.
enum Step {
    /// The node is on the list: take this record of it.
    Take(Record),
    /// The list changed after we read the previous node: continue from its `next` as it is now.
    Follow(KVirt),
    /// The previous node is another task now: continue from a node still on the list.
    Resync,
}

/// Resynchronisations of one walk (or one thread group) before its violation stands.
const RESYNCS: usize = 8;
/// Tasks looked back at for one resynchronisation.
const RESYNC_LOOKBACK: usize = 16;

impl Walker<'_, '_> {
    /// Validate a task record; returns a description of the first problem.
    fn check(&self, r: &Record) -> Result<(), WalkError> {
        let t = &self.l.task;
        for (what, off) in [("real_parent", t.real_parent), ("signal", t.signal), ("real_cred", t.real_cred)] {
            let v = r.ptr(off)?;
            if !self.space.kernel_ptr(v) {
                return Err(WalkError::BadPointer { what, task: r.base, value: v });
            }
        }
        let mm = r.ptr(t.mm)?;
        if mm.0 != 0 && !self.space.kernel_ptr(mm) {
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

    fn count(&self, f: impl FnOnce(&mut Consistency)) {
        let mut c = self.consistency.get();
        f(&mut c);
        self.consistency.set(c);
    }

    /// A task record that validates: `r`, or if it does not, a second read of it that does
    /// (the task was changing). The first problem stands if the second read brings nothing new.
    fn checked(&self, r: Record, what: &'static str) -> Result<Record, WalkError> {
        let Err(e) = self.check(&r) else { return Ok(r) };
        self.count(|c| c.rereads += 1);
        let again = self.read_tasks(&[r.base], what)?.remove(0);
        if again == r {
            return Err(e);
        }
        self.check(&again)?;
        Ok(again)
    }

    /// Resolve a list step from list node `prev` to `node` (list heads; `link` is the offset of
    /// the list head in `task_struct`) whose record `r` has `prev` pointer `back` != `prev`.
    fn resolve(&self, prev: KVirt, node: KVirt, r: Record, link: u64, seen: &Seen, what: &'static str) -> Result<Step, WalkError> {
        let back = r.ptr(link + 8)?;
        self.count(|c| c.rereads += 1);
        // `prev` as it is now: the list head's two pointers, or the task we took there, whose
        // links say nothing about where we were if its memory went to another task.
        let (prev_next, prev_prev) = match seen.get(&prev).filter(|&&id| id != HEAD_ID) {
            Some(&id) => {
                let now = self.read_tasks(&[KVirt(prev.0.wrapping_sub(link))], what)?.remove(0);
                if self.identity(&now)? != id {
                    self.count(|c| c.relinks += 1);
                    return Ok(Step::Resync);
                }
                (now.ptr(link)?, now.ptr(link + 8)?)
            }
            None => {
                let head = self.space.read_many(&[(prev, 16)]).pop().and_then(Result::ok);
                let head = head.ok_or(WalkError::Read { what, source: KSpaceError::Unmapped { addr: prev } })?;
                (KVirt(le_u64(&head[..8])), KVirt(le_u64(&head[8..])))
            }
        };
        if prev_next != node {
            // `prev` now leads elsewhere: `node` was unlinked (or one was added after `prev`).
            self.count(|c| c.relinks += 1);
            return Ok(Step::Follow(prev_next));
        }
        if unlinked_prev(prev_prev) && seen.contains_key(&back) {
            // `prev` itself was unlinked after we read it; `node` links back to a node we passed.
            self.count(|c| c.relinks += 1);
            return Ok(Step::Take(r));
        }
        if self.space.read_u64(node.wrapping_add(8)).ok() == Some(prev.0) {
            // The link was being rewritten as we read it; it points back now.
            self.count(|c| c.relinks += 1);
            let again = self.read_tasks(&[r.base], what)?.remove(0);
            return Ok(Step::Take(again));
        }
        if unlinked_prev(prev_prev) || unlinked_prev(back) {
            // `prev` or `node` was unlinked (both, one after the other, as tasks exit): the
            // links around them say nothing about the list as it is now.
            self.count(|c| c.relinks += 1);
            return Ok(Step::Resync);
        }
        Err(WalkError::BrokenList { node, prev: back, expected: prev })
    }

    fn read_tasks(&self, tasks: &[KVirt], what: &'static str) -> Result<Vec<Record>, WalkError> {
        self.plan.read_many(self.space, tasks).into_iter().map(|r| r.map_err(|source| WalkError::Read { what, source })).collect()
    }

    /// Ask `index` for every task's address and read their records in one batch (records that
    /// cannot be read are left for the walk to read, and fail, itself), with the record of
    /// `with` (returned, if it could be read; not kept for the walk).
    fn read_ahead(&self, index: &mut dyn TaskIndex, taken: &[Record], with: Option<KVirt>) -> Option<Record> {
        let taken: Vec<(KVirt, i32)> = taken.iter().filter_map(|r| Some((r.base, r.i32(self.l.task.pid).ok()?))).collect();
        let mut u = self.index_use.borrow_mut();
        match index.addresses(self.space, self.l, &taken) {
            Ok(mut addrs) => {
                // The first `max_tasks` in the index's order (the pid allocator's: about the
                // list's), then sorted for the read.
                let mut named = std::collections::HashSet::new();
                addrs.retain(|&a| self.space.kernel_ptr(a) && named.insert(a));
                addrs.truncate(self.cfg.max_tasks);
                addrs.sort_unstable();
                u.named = addrs.len();
                let mut got = self.plan.read_many(self.space, &addrs.iter().copied().chain(with).collect::<Vec<_>>());
                let own = with.and_then(|_| got.pop()?.ok());
                self.ahead.borrow_mut().extend(addrs.into_iter().zip(got).filter_map(|(a, r)| Some((a, r.ok()?))));
                own
            }
            Err(e) => {
                u.error = Some(e);
                None
            }
        }
    }

    /// The record read ahead for `task` (taken: each is used at most once): `Ok` if its list
    /// node (at `link`) links back to `prev`, `Err` with it if not.
    fn take_ahead(&self, task: KVirt, link: u64, prev: KVirt) -> Option<Result<Record, Record>> {
        let r = self.ahead.borrow_mut().remove(&task)?;
        if r.ptr(link + 8) == Ok(prev) {
            self.index_use.borrow_mut().used += 1;
            Some(Ok(r))
        } else {
            Some(Err(r))
        }
    }

    /// The record of `task` the first time the walk reaches it through list node `prev` (its
    /// link at `link`): the one read ahead if that links back to `prev`, else one read now.
    /// A record read ahead is older than the walk's position; once it disagrees with the list,
    /// the walk's checks get a fresh one, as without an index.
    fn first_read(&self, task: KVirt, prev: KVirt, link: u64, what: &'static str) -> Result<Record, WalkError> {
        match self.take_ahead(task, link, prev) {
            Some(Ok(r)) => Ok(r),
            Some(Err(old)) => {
                let now = self.read_tasks(&[task], what)?.remove(0);
                if now != old {
                    // Memory changed since the read-ahead (the same bytes: static damage, which
                    // the walk's checks judge as without an index).
                    self.count(|c| c.rereads += 1);
                }
                Ok(now)
            }
            None => Ok(self.read_tasks(&[task], what)?.remove(0)),
        }
    }

    /// Follow `init_task.tasks`: the group leaders, in list order; `index` is asked once, when
    /// it has seen the leaders it wants.
    fn leaders(&self, init_task: KVirt, out: &mut Vec<Record>, mut index: Option<&mut dyn TaskIndex>) -> Result<(), WalkError> {
        let off = self.l.task.tasks;
        let head = init_task.wrapping_add(off);
        // An index that wants no sample of the list names every task at once: their records
        // are read in the batch of init_task's.
        let init = match index.take_if(|i| i.samples() == 0).and_then(|i| self.read_ahead(i, out, Some(init_task))) {
            Some(r) => r,
            None => self.read_tasks(&[init_task], "init_task")?.remove(0),
        };
        let mut prev = head;
        let mut node = init.ptr(off)?;
        let mut seen = seen_from(head);
        let mut relinks = 0;
        let (mut resyncs, mut replayed) = (0, 0);
        while node != head {
            if index.as_ref().is_some_and(|i| out.len() >= i.samples()) {
                if let Some(i) = index.take() {
                    self.read_ahead(i, out, None);
                }
            }
            if !self.space.kernel_ptr(node) || !self.space.in_direct_map(node) {
                // Memory that changed under this walk may have handed us a stale `next`.
                let changing = self.consistency.get() != Consistency::default();
                if !changing || resyncs >= RESYNCS {
                    return Err(WalkError::BadPointer { what: "tasks.next", task: KVirt(prev.0.wrapping_sub(off)), value: node });
                }
                resyncs += 1;
                self.count(|c| c.relinks += 1);
                (prev, node) = self.resume(out, off, head, init_task)?;
                continue;
            }
            if out.len() >= self.cfg.max_tasks {
                return Err(WalkError::TooMany { limit: self.cfg.max_tasks });
            }
            let task = KVirt(node.0.wrapping_sub(off));
            let r = self.first_read(task, prev, off, "task_struct")?;
            if self.revisit(&seen, node, &r, resyncs > 0)? {
                replayed += 1;
                if replayed > out.len() + RESYNC_LOOKBACK {
                    return Err(WalkError::Cycle { node });
                }
                prev = node;
                node = r.ptr(off)?;
                continue;
            }
            let r = if r.ptr(off + 8)? == prev {
                r
            } else {
                relinks += 1;
                if relinks > RELINKS_PER_STEP {
                    return Err(WalkError::BrokenList { node, prev: r.ptr(off + 8)?, expected: prev });
                }
                match self.resolve(prev, node, r, off, &seen, "task_struct")? {
                    Step::Take(r) => r,
                    Step::Follow(next) => {
                        node = next;
                        continue;
                    }
                    Step::Resync => {
                        resyncs += 1;
                        if resyncs > RESYNCS {
                            return Err(WalkError::BrokenList { node, prev: KVirt(0), expected: prev });
                        }
                        (prev, node) = self.resume(out, off, head, init_task)?;
                        relinks = 0;
                        continue;
                    }
                }
            };
            relinks = 0;
            let r = self.checked(r, "task_struct")?;
            seen.insert(node, self.identity(&r)?);
            prev = node;
            node = r.ptr(off)?;
            out.push(r);
        }
        Ok(())
    }

    /// Whether the task record `r` reads differently now.
    fn changed(&self, r: &Record) -> Result<bool, WalkError> {
        self.count(|c| c.rereads += 1);
        Ok(self.read_tasks(&[r.base], "task_struct")?.remove(0) != *r)
    }

    /// A task's identity: pid and start time.
    fn identity(&self, r: &Record) -> Result<(i32, u64), WalkError> {
        Ok((r.i32(self.l.task.pid)?, r.u64(self.l.task.start_boottime)?))
    }

    /// Reaching list node `node` again is a cycle, unless the task there now is another one (its
    /// memory was freed and given to a new task, which the kernel adds at the list's end), or
    /// the walk was resynchronised (`replay`) and passes again over tasks it took: `Ok(true)`
    /// says to pass over this one.
    fn revisit(&self, seen: &Seen, node: KVirt, r: &Record, replay: bool) -> Result<bool, WalkError> {
        match seen.get(&node) {
            None => Ok(false),
            Some(&id) if id == self.identity(r)? => {
                if replay {
                    Ok(true)
                } else {
                    Err(WalkError::Cycle { node })
                }
            }
            Some(_) => {
                self.count(|c| c.relinks += 1);
                Ok(false)
            }
        }
    }

    /// Where the leaders' walk resumes after a resync: (previous node, next node) from the last
    /// task taken that is still on the list, else from the head.
    fn resume(&self, taken: &[Record], off: u64, head: KVirt, init_task: KVirt) -> Result<(KVirt, KVirt), WalkError> {
        Ok(match self.still_linked(taken, off)? {
            Some(q) => (q.base.wrapping_add(off), q.ptr(off)?),
            None => (head, self.read_tasks(&[init_task], "init_task")?.remove(0).ptr(off)?),
        })
    }

    /// After a resync: the list node of the last task in `taken` (searching backwards) that is
    /// still that task and still linked, read now; `None` if none is.
    fn still_linked(&self, taken: &[Record], link: u64) -> Result<Option<Record>, WalkError> {
        for r in taken.iter().rev().take(RESYNC_LOOKBACK) {
            let now = self.read_tasks(&[r.base], "task_struct")?.remove(0);
            if self.identity(&now)? == self.identity(r)? && !unlinked_prev(now.ptr(link + 8)?) {
                return Ok(Some(now));
            }
        }
        Ok(None)
    }

    /// Every thread of every group, groups advancing together one list hop per batch.
    /// Returns threads in group order with each leader's thread count.
    fn threads(&self, leaders: &[Record], out: &mut Vec<(Record, Option<u32>)>) -> Result<(), WalkError> {
        let t = &self.l.task;
        let heads: Vec<KVirt> =
            leaders.iter().map(|r| r.ptr(t.signal).map(|s| s.wrapping_add(self.l.signal.thread_head))).collect::<Result<_, _>>()?;
        // A group's first node: the leader's own where its `prev` is the head (the leader is
        // first in its list, as a group that has not exec'd from a thread has it), else the
        // head's `next`, read (one batch for all).
        let own: Vec<Option<KVirt>> = leaders
            .iter()
            .zip(&heads)
            .map(|(r, &h)| (r.ptr(t.thread_node + 8) == Ok(h)).then_some(r.base.wrapping_add(t.thread_node)))
            .collect();
        let read: Vec<(KVirt, usize)> = heads.iter().zip(&own).filter(|(_, o)| o.is_none()).map(|(&h, _)| (h, 8)).collect();
        let mut read = self.space.read_many(&read).into_iter();
        let firsts: Vec<Result<KVirt, KSpaceError>> = heads
            .iter()
            .zip(own)
            .map(|(&h, o)| match o {
                Some(node) => Ok(node),
                None => read.next().unwrap_or(Err(KSpaceError::Unmapped { addr: h })).map(|b| KVirt(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))),
            })
            .collect();
        struct Group {
            head: KVirt,
            prev: KVirt,
            node: KVirt,
            members: Vec<Record>,
            seen: Seen,
            done: bool,
            relinks: usize,
            resyncs: usize,
            replayed: usize,
        }
        let mut groups = Vec::with_capacity(leaders.len());
        for (&head, first) in heads.iter().zip(firsts) {
            let node = first.map_err(|source| WalkError::Read { what: "signal->thread_head", source })?;
            groups.push(Group { head, prev: head, node, members: Vec::new(), seen: seen_from(head), done: false, relinks: 0, resyncs: 0, replayed: 0 });
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
                if g.members.len() >= self.cfg.max_threads || total >= self.cfg.max_tasks {
                    return Err(WalkError::TooMany { limit: self.cfg.max_threads.min(self.cfg.max_tasks) });
                }
                total += 1;
                want.push((g_idx, KVirt(g.node.0.wrapping_sub(t.thread_node))));
            }
            if want.is_empty() {
                break;
            }
            // Reuse leader records already read and records read ahead that link back to the
            // node the group came from (see `first_read`); read the rest in one batch.
            let mut fresh: HashMap<KVirt, Record> = HashMap::new();
            let mut missing: Vec<KVirt> = Vec::new();
            for &(g_idx, a) in want.iter().filter(|(_, a)| !by_addr.contains_key(a)) {
                match self.take_ahead(a, t.thread_node, groups[g_idx].prev) {
                    Some(Ok(r)) => {
                        fresh.insert(a, r);
                    }
                    Some(Err(_)) | None => missing.push(a),
                }
            }
            fresh.extend(missing.iter().copied().zip(self.read_tasks(&missing, "thread task_struct")?));
            for (g_idx, addr) in want {
                let r = match fresh.get(&addr) {
                    Some(r) => r.clone(),
                    None => (*by_addr.get(&addr).ok_or(WalkError::Cycle { node: addr })?).clone(),
                };
                let g = &mut groups[g_idx];
                if r.i32(t.tgid)? != leaders[g_idx].i32(t.tgid)? {
                    // Every thread of a group has the leader's tgid. One that does not means the
                    // leader's `signal` was freed and given to another process after we read
                    // the leader (on a running machine: the leader and its threads exited);
                    // on memory that does not change, it is damage.
                    if self.consistency.get() == Consistency::default() && !self.changed(&leaders[g_idx])? {
                        let (want, got) = (leaders[g_idx].i32(t.tgid)?, r.i32(t.tgid)?);
                        return Err(WalkError::InvalidTask { task: r.base, reason: format!("on the thread list of group {want} with tgid {got}") });
                    }
                    self.count(|c| c.relinks += 1);
                    g.done = true;
                    continue;
                }
                if self.revisit(&g.seen, g.node, &r, g.resyncs > 0)? {
                    g.replayed += 1;
                    if g.replayed > g.members.len() + RESYNC_LOOKBACK {
                        return Err(WalkError::Cycle { node: g.node });
                    }
                    total -= 1;
                    g.prev = g.node;
                    g.node = r.ptr(t.thread_node)?;
                    continue;
                }
                let back = r.ptr(t.thread_node + 8)?;
                let r = if back == g.prev {
                    r
                } else {
                    g.relinks += 1;
                    if g.relinks > RELINKS_PER_STEP {
                        return Err(WalkError::BrokenList { node: g.node, prev: back, expected: g.prev });
                    }
                    match self.resolve(g.prev, g.node, r, t.thread_node, &g.seen, "thread task_struct")? {
                        Step::Take(r) => r,
                        Step::Follow(next) => {
                            // Not counted as a thread: the step is taken again from `next`.
                            total -= 1;
                            g.node = next;
                            continue;
                        }
                        Step::Resync => {
                            // Start the group again from its head, passing over threads taken.
                            total -= 1;
                            g.resyncs += 1;
                            if g.resyncs > RESYNCS {
                                return Err(WalkError::BrokenList { node: g.node, prev: back, expected: g.prev });
                            }
                            g.prev = g.head;
                            g.node = KVirt(self.space.read_u64(g.head).map_err(|source| WalkError::Read { what: "signal->thread_head", source })?);
                            g.relinks = 0;
                            continue;
                        }
                    }
                };
                g.relinks = 0;
                let r = self.checked(r, "thread task_struct")?;
                g.seen.insert(g.node, self.identity(&r)?);
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
/// With an `index`, the records of the first `n` tasks it names (in its order) are read in one
/// batch and the list takes them from there, as the walk does: one round trip, not `n`.
pub fn probe(space: &KernelSpace<'_>, layout: &Layout, init_task: KVirt, n: usize, index: Option<&mut dyn TaskIndex>) -> Result<usize, WalkError> {
    let w = Walker::new(space, layout, WalkConfig { max_tasks: n, ..WalkConfig::default() });
    let mut out = Vec::new();
    match w.leaders(init_task, &mut out, index) {
        Ok(()) | Err(WalkError::TooMany { .. }) => Ok(out.len()),
        Err(e) => Err(e),
    }
}

/// Walk every task of the kernel, following the lists alone (one round trip per list hop).
pub fn walk(space: &KernelSpace<'_>, layout: &Layout, init_task: KVirt, cfg: WalkConfig) -> WalkOutcome {
    walk_again(space, layout, init_task, cfg, &mut CmdlineCache::default(), None)
}

/// Command lines already read, by `(mm, tgid)`: a process whose address space and group are
/// the same as in an earlier walk has the same arguments unless it rewrote them in place
/// (`setproctitle`), which a repeated walk accepts to miss. `exec` gives a new `mm`.
///
/// Invariant: holds only the processes of the last walk that used it (bounded by `max_tasks`).
#[derive(Debug, Default)]
pub struct CmdlineCache {
    by_mm: HashMap<(KVirt, i32), Vec<u8>>,
}

/// [`walk`] with an index of the tasks (see the module doc), and for a walk repeated on the
/// same machine: command lines of processes already seen are taken from `cache` instead of read
/// again, and `cache` then holds this walk's.
pub fn walk_again(
    space: &KernelSpace<'_>,
    layout: &Layout,
    init_task: KVirt,
    cfg: WalkConfig,
    cache: &mut CmdlineCache,
    index: Option<&mut dyn TaskIndex>,
) -> WalkOutcome {
    let w = Walker::new(space, layout, cfg);
    let mut leaders = Vec::new();
    let mut error = w.leaders(init_task, &mut leaders, index).err();
    let mut recs = Vec::new();
    if let Err(e) = w.threads(&leaders, &mut recs) {
        error.get_or_insert(e);
        recs = leaders.iter().map(|r| (r.clone(), None)).collect();
    }
    let (threads, links, e2) = facts(space, layout, &recs, cfg, cache);
    if let Some(e) = e2 {
        error.get_or_insert(e);
    }
    let threads = w.drop_torn(threads, links);
    WalkOutcome { threads, error, consistency: w.consistency.get(), index: w.index_use.take() }
}

impl<'a, 'm> Walker<'a, 'm> {
    fn new(space: &'a KernelSpace<'m>, l: &'a Layout, cfg: WalkConfig) -> Self {
        Walker {
            space,
            l,
            plan: task_plan(l),
            cfg,
            consistency: std::cell::Cell::new(Consistency::default()),
            ahead: Default::default(),
            index_use: Default::default(),
        }
    }

    /// `threads` without those whose pid, tgid or start time reads differently now (their memory
    /// was freed and reused while we read it) or cannot be read again. A thread whose parent,
    /// credentials or address space (`links`) changed while we read through them gets its ppid
    /// and uid read again through the new ones, kept if they then hold still, else dropped; an
    /// unchanged pointer proves the object it points to was the task's, alive, all along.
    fn drop_torn(&self, threads: Vec<Thread>, links: Vec<Links>) -> Vec<Thread> {
        let t = &self.l.task;
        let plan = Plan::new(&[(t.pid, 4), (t.tgid, 4), (t.start_boottime, 8), (t.real_parent, 8), (t.real_cred, 8), (t.mm, 8)], 512);
        let now_links = |r: &Record| -> Option<Links> { Some([r.ptr(t.real_parent).ok()?, r.ptr(t.real_cred).ok()?, r.ptr(t.mm).ok()?]) };
        let addrs: Vec<KVirt> = threads.iter().map(|th| th.addr).collect();
        let now = plan.read_many(self.space, &addrs);
        let before = threads.len();
        let mut kept = Vec::with_capacity(before);
        let mut redo: Vec<(Thread, Links)> = Vec::new();
        for ((mut th, was), r) in threads.into_iter().zip(links).zip(&now) {
            let Ok(r) = r else { continue };
            let same = matches!((r.i32(t.pid), r.i32(t.tgid), r.u64(t.start_boottime)),
                (Ok(p), Ok(g), Ok(s)) if p == th.pid && g == th.tgid && s == th.start_time_ns);
            let Some(l) = now_links(r).filter(|_| same) else { continue };
            // A task that let go of its address space while we read (`exit_mm`) is exiting:
            // listed, but without the command line read through the old `mm`.
            let exiting = l[2].0 == 0 && was[2].0 != 0;
            if exiting {
                th.cmdline.clear();
                th.notes.push("exiting: its address space was released while it was read".into());
            }
            if l == was || (exiting && l[..2] == was[..2]) {
                kept.push(th);
            } else if l[2] == was[2] || exiting {
                redo.push((th, l));
            }
        }
        if !redo.is_empty() {
            self.count(|c| c.rereads += redo.len() as u64);
            let regions: Vec<(KVirt, usize)> =
                redo.iter().flat_map(|(_, l)| [(l[0].wrapping_add(t.tgid), 4), (l[1].wrapping_add(self.l.cred.uid), 4)]).collect();
            let vals = self.space.read_many(&regions);
            let again = plan.read_many(self.space, &redo.iter().map(|(th, _)| th.addr).collect::<Vec<_>>());
            for (i, ((mut th, l), r)) in redo.into_iter().zip(&again).enumerate() {
                let still = r.as_ref().ok().and_then(now_links) == Some(l);
                if let (true, Ok(p), Ok(u)) = (still, &vals[2 * i], &vals[2 * i + 1]) {
                    th.ppid = le_i32(p);
                    th.uid = le_i32(u) as u32;
                    kept.push(th);
                }
            }
        }
        let torn = (before - kept.len()) as u64;
        self.count(|c| c.torn += torn);
        kept
    }
}

/// Turn task records into [`Thread`]s: parent tgid, uid, names, command lines (all batched).
/// Stops at the first task whose secondary reads fail, returning those before it.
fn facts(space: &KernelSpace<'_>, l: &Layout, recs: &[(Record, Option<u32>)], cfg: WalkConfig, cache: &mut CmdlineCache) -> (Vec<Thread>, Vec<Links>, Option<WalkError>) {
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
            Err(e) => return (Vec::new(), Vec::new(), Some(e.into())),
        }
    }
    // Parent tgid and uid in one batch. A parent among the records gives its tgid from there
    // (a task's tgid never changes while it exists), so only other parents are read.
    let tgid_of: HashMap<KVirt, i32> = recs.iter().filter_map(|(r, _)| Some((r.base, r.i32(t.tgid).ok()?))).collect();
    let mut regions = Vec::with_capacity(recs.len() * 2);
    let mut parent_at = Vec::with_capacity(recs.len());
    for &(parent, cred, ..) in &base {
        // (parent's tgid known, or the index of its read; the index of the uid's read)
        let p = match tgid_of.get(&parent) {
            Some(&g) => Ok(g),
            None => {
                regions.push((parent.wrapping_add(t.tgid), 4));
                Err(regions.len() - 1)
            }
        };
        regions.push((cred.wrapping_add(l.cred.uid), 4));
        parent_at.push((p, regions.len() - 1));
    }
    // mm fields, once per distinct mm of a user task whose command line is not cached (read
    // in the batch of the parents' tgids and the uids).
    let tgids: Vec<i32> = recs.iter().map(|(r, _)| r.i32(t.tgid).unwrap_or(-1)).collect();
    let cached = |b: &(KVirt, KVirt, KVirt, u32, KVirt), tgid: i32| cache.by_mm.contains_key(&(b.2, tgid));
    let mut mms: Vec<KVirt> =
        base.iter().zip(&tgids).filter(|(b, &g)| b.3 & PF_KTHREAD == 0 && b.2.0 != 0 && !cached(b, g)).map(|(b, _)| b.2).collect();
    mms.sort_unstable();
    mms.dedup();
    let mm_plan = Plan::new(&[(l.mm.pgd, 8), (l.mm.arg_start, 8), (l.mm.arg_end, 8), (l.mm.env_start, 8), (l.mm.env_end, 8)], 512);
    let asked = regions.len();
    regions.extend(mm_plan.regions(&mms));
    let mut answers = space.read_many(&regions).into_iter();
    let pu: Vec<_> = answers.by_ref().take(asked).collect();
    let mm_recs = mm_plan.records(&mms, &mut answers);
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
    // This walk's command lines read whole (or taken from the cache): the cache's next content.
    let mut known = HashMap::new();
    for (i, ((r, threads), b)) in recs.iter().zip(&base).enumerate() {
        let (p, u) = parent_at[i];
        let parent = p.map_or_else(|k| pu[k].as_ref().map(|b| le_i32(b)), Ok);
        let (ppid, uid) = match (parent, &pu[u]) {
            (Ok(p), Ok(u)) => (p, le_i32(u) as u32),
            (Err(e), _) => return with_links(out, &base, Some(WalkError::InvalidTask { task: r.base, reason: format!("real_parent->tgid unreadable: {e}") })),
            (_, Err(e)) => return with_links(out, &base, Some(WalkError::InvalidTask { task: r.base, reason: format!("real_cred->uid unreadable: {e}") })),
        };
        let kthread = b.3 & PF_KTHREAD != 0;
        let mut notes = Vec::new();
        notes.extend(name_notes[i].clone());
        let cmdline = if kthread || b.2.0 == 0 {
            Vec::new()
        } else if let Some(c) = cache.by_mm.get(&(b.2, tgids[i])) {
            known.insert((b.2, tgids[i]), c.clone());
            c.clone()
        } else {
            match area_of.get(&b.2) {
                Some(Ok(k)) => match &cmdlines[*k] {
                    Ok(c) => {
                        known.insert((b.2, tgids[i]), c.clone());
                        c.clone()
                    }
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
            Err(e) => return with_links(out, &base, Some(e.into())),
        }
    }
    cache.by_mm = known;
    with_links(out, &base, None)
}

/// The pointers a thread's secondary facts were read through: `real_parent` (ppid), `real_cred`
/// (uid), `mm` (command line).
type Links = [KVirt; 3];

/// `out` with the links of each thread (`base` is aligned with the records, `out` a prefix).
fn with_links(out: Vec<Thread>, base: &[(KVirt, KVirt, KVirt, u32, KVirt)], e: Option<WalkError>) -> (Vec<Thread>, Vec<Links>, Option<WalkError>) {
    let links = base.iter().take(out.len()).map(|b| [b.0, b.1, b.2]).collect();
    (out, links, e)
}

fn cstr(b: &[u8]) -> &[u8] {
    b.iter().position(|&c| c == 0).map_or(b, |n| &b[..n])
}

fn le_u64(b: &[u8]) -> u64 {
    b.get(..8).and_then(|s| s.try_into().ok()).map(u64::from_le_bytes).unwrap_or(0)
}

fn le_i32(b: &[u8]) -> i32 {
    b.get(..4).and_then(|s| s.try_into().ok()).map(i32::from_le_bytes).unwrap_or(0)
}

#[cfg(test)]
#[path = "walk_tests.rs"]
mod tests;
