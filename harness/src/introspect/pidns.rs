//! The pid allocator's view of the tasks: every `struct pid` in the initial pid namespace's IDR
//! (`init_pid_ns.idr`, an XArray indexed by pid number), and the task attached to each as
//! `PIDTYPE_PID`.
//!
//! ```text
//!   init_pid_ns.idr ─▶ xarray ─▶ struct pid { ..., tasks[PIDTYPE_MAX], ..., numbers[] }
//!                                             └ tasks[PIDTYPE_PID].first ─▶ task.pid_links[0]
//!                                                                          └ task = node - offsetof(pid_links)
//! ```
//!
//! A task unlinked from the task list (DKOM) keeps its pid: `find_task_by_vpid`, `kill` and
//! `/proc/<pid>` still need it. Every live thread has one `struct pid` here (`numbers[0]` is its
//! pid in the initial namespace, whatever namespace it runs in); the idle tasks use pid 0,
//! which is never allocated.
//!
//! How the layout is learned ([`PidLayout`]):
//! - `btf`: `task_struct.{thread_pid,pid_links}`, `pid.{tasks,numbers}`, `pid_namespace.idr`,
//!   `idr.idr_rt`, `xarray.xa_head`, `xa_node.slots` (whose length is `XA_CHUNK_SIZE`);
//! - `inferred` (no BTF): from tasks on the list, by structure ([`infer`]): the one pair of
//!   task fields, a pointer `thread_pid` and an `hlist_node` `pid_links[0]` with no next and a
//!   `pprev` a few bytes into the struct that pointer names, such that the struct's hlist head
//!   there points back at the node and a `struct upid` further on holds the task's pid and the
//!   same namespace in every task (a group leader's `pid_links[PIDTYPE_TGID]` fits too, 16 bytes
//!   on, and so does the true node's `pprev` taken for the pointer: such shadows of another
//!   candidate are set aside); then the namespace's XArray by its root node, whose `array`
//!   points back into the namespace ([`locate_xarray`]), and `XA_CHUNK_SIZE` from the root's
//!   entry count. `struct upid` (`int nr; struct pid_namespace *ns`) and `struct xa_node` are
//!   the same in every kernel from 4.20 to 7.x.
//!
//! Invariant: every `struct pid` used has `numbers[0].nr` equal to its index and
//! `numbers[0].ns` equal to the namespace walked; the first that does not ends the view with an
//! error naming its address (the pids before it kept).

use emulator::bytes::Bytes;
use serde::Serialize;

use super::xarray::{self, NodeLayout, XaError};
use super::kspace::ReadMany;
use crate::introspect::btf::Btf;
use crate::introspect::layout::build::Types;

/// `sizeof(struct upid)`, and where `ns` sits in it (`nr` is at 0).
pub const UPID_NS: u64 = 8;
/// Bytes of a `struct pid` searched for `tasks` and `numbers` by the inference.
pub const PID_SPAN: u64 = 512;
/// Bytes of a `struct pid_namespace` searched for its XArray.
pub const NS_SPAN: u64 = 256;
/// Tasks used by the inference.
pub const MAX_SAMPLES: usize = 8;

/// Where the fields the pid view reads sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PidLayout {
    /// `task_struct.thread_pid`.
    pub thread_pid: u64,
    /// `task_struct.pid_links` (`[PIDTYPE_PID]` is the first).
    pub pid_links: u64,
    /// `pid.tasks` (`[PIDTYPE_PID]` is the first).
    pub tasks: u64,
    /// `pid.numbers`.
    pub numbers: u64,
    /// The XArray in `struct pid_namespace` (`idr.idr_rt`).
    pub ns_xarray: u64,
    /// `xarray.xa_head`.
    pub xa_head: u64,
    /// `XA_CHUNK_SIZE`, when known before the walk (BTF); the inference reads it off the root.
    pub chunk: Option<u64>,
}

impl PidLayout {
    /// From the kernel's BTF, `struct xa_node` checked against Linux's and `XA_CHUNK_SIZE` taken
    /// from it.
    pub fn from_btf(btf: &Btf) -> Result<PidLayout, String> {
        let m = |s: &str, f: &str| member(btf, s, f);
        let slots = btf.member("xa_node", &["slots"], "slots").map_err(|e| e.to_string())?.ok_or("BTF struct xa_node has no slots")?;
        let node = NodeLayout {
            shift: m("xa_node", "shift")?,
            offset: m("xa_node", "offset")?,
            parent: m("xa_node", "parent")?,
            array: m("xa_node", "array")?,
            slots: slots.offset,
            chunk: slots.size / 8,
        };
        if node != NodeLayout::linux(node.chunk) {
            return Err(format!("struct xa_node is laid out as {node:?}, not as Linux 4.20 to 7.x"));
        }
        node.check()?;
        Ok(PidLayout { chunk: Some(node.chunk), ..PidLayout::from_btf_core(btf)? })
    }

    /// From the kernel's BTF, without `struct xa_node` (`chunk` is then read off the root node,
    /// [`chunk_of`]): the structures this needs come early in a kernel's BTF, `xa_node` much
    /// later, so a reader of part of the blob ([`crate::introspect::layout::btf::with_btf`])
    /// reads less.
    pub fn from_btf_core(btf: &Btf) -> Result<PidLayout, String> {
        let m = |s: &str, f: &str| member(btf, s, f);
        // Every lookup before any check: a reader of records one by one (`layout::sorted`)
        // then reads what they all need together.
        let (nr, ns) = (m("upid", "nr"), m("upid", "ns"));
        let l = PidLayout {
            thread_pid: m("task_struct", "thread_pid")?,
            pid_links: m("task_struct", "pid_links")?,
            tasks: m("pid", "tasks")?,
            numbers: m("pid", "numbers")?,
            ns_xarray: m("pid_namespace", "idr")? + m("idr", "idr_rt")?,
            xa_head: m("xarray", "xa_head")?,
            chunk: None,
        };
        let (nr, ns) = (nr?, ns?);
        if (nr, ns) != (0, UPID_NS) {
            return Err(format!("struct upid has nr at {nr} and ns at {ns}, not 0 and {UPID_NS}"));
        }
        Ok(l)
    }

    /// The bytes of a `struct pid` read per pid: from `tasks[0]` to the end of `numbers[0]`.
    fn pid_window(&self) -> (u64, u64) {
        let start = self.tasks.min(self.numbers);
        let end = self.tasks.saturating_add(8).max(self.numbers.saturating_add(16));
        (start, (end - start).min(1 << 16))
    }
}

/// The task fields and struct pid offsets found by [`infer`], and the namespace they name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inferred {
    pub thread_pid: u64,
    pub pid_links: u64,
    pub tasks: u64,
    pub numbers: u64,
    /// `numbers[0].ns` of every sample: the initial pid namespace.
    pub ns: u64,
}

/// One task on the list: its address, pid, and its `task_struct`'s bytes.
pub struct Sample<'a> {
    pub addr: u64,
    pub pid: i32,
    pub bytes: &'a [u8],
}

fn word(b: &[u8], off: u64) -> Option<u64> {
    Bytes::new(b).u64(usize::try_from(off).ok()?).ok()
}

fn member(btf: &Btf, s: &str, f: &str) -> Result<u64, String> {
    Ok(btf.member(s, &[f], f).map_err(|e| e.to_string())?.ok_or_else(|| format!("BTF struct {s} has no {f}"))?.offset)
}

/// The first `size` bytes of each task `(address, pid)`, for [`infer`]; tasks that cannot be
/// read are left out.
pub fn read_samples(picks: &[(u64, i32)], size: usize, read: &mut ReadMany<'_>) -> Vec<(u64, i32, Vec<u8>)> {
    let got = read(&picks.iter().map(|&(a, _)| (a, size)).collect::<Vec<_>>());
    picks.iter().zip(got).filter_map(|(&(a, p), b)| Some((a, p, b.ok()?))).collect()
}

/// The pid layout and the initial namespace inferred from sample tasks ([`infer`], then
/// [`locate_xarray`]); `init_pid_ns`, when kallsyms names it, must be the namespace found.
pub fn learn(samples: &[(u64, i32, Vec<u8>)], kptr: &dyn Fn(u64) -> bool, init_pid_ns: Option<u64>, read: &mut ReadMany<'_>) -> Result<(PidLayout, u64), String> {
    let samples: Vec<Sample<'_>> = samples.iter().map(|(a, p, b)| Sample { addr: *a, pid: *p, bytes: b }).collect();
    let i = infer(&samples, kptr, read)?;
    if let Some(sym) = init_pid_ns.filter(|&s| s != i.ns) {
        return Err(format!("the tasks' namespace {:#x} is not init_pid_ns {sym:#x}", i.ns));
    }
    let (ns_xarray, xa_head) = locate_xarray(i.ns, read)?;
    Ok((PidLayout { thread_pid: i.thread_pid, pid_links: i.pid_links, tasks: i.tasks, numbers: i.numbers, ns_xarray, xa_head, chunk: None }, i.ns))
}

/// The pid namespace of the task at `task` (`thread_pid->numbers[0].ns`): for `init_task`,
/// whose pid is `init_struct_pid`, the initial namespace.
pub fn ns_of_task(task: u64, l: &PidLayout, read: &mut ReadMany<'_>) -> Result<u64, String> {
    let first = |r: Option<Result<Vec<u8>, String>>| -> Result<u64, String> { word(&r.unwrap_or(Err("no answer".into()))?, 0).ok_or_else(|| "short read".into()) };
    let pid = first(read(&[(task.wrapping_add(l.thread_pid), 8)]).pop())?;
    first(read(&[(pid.wrapping_add(l.numbers + UPID_NS), 8)]).pop()).map_err(|e| format!("reading the struct pid at {pid:#x}: {e}"))
}

/// `XA_CHUNK_SIZE`: the layout's, else read off the root node of the namespace's XArray.
pub fn chunk_of(l: &PidLayout, ns: u64, read: &mut ReadMany<'_>) -> Result<u64, String> {
    if let Some(c) = l.chunk {
        return Ok(c);
    }
    let head = read(&[(ns.wrapping_add(l.ns_xarray + l.xa_head), 8)]).pop().and_then(Result::ok).and_then(|b| word(&b, 0));
    match head.filter(|h| h & 3 == 2) {
        Some(h) => chunk_of_root(h - 2, read),
        None => Err("the IDR's head is no node".into()),
    }
}

/// Finds `thread_pid`, `pid_links`, `pid.tasks` and `pid.numbers` from tasks on the list (see
/// the module doc). `kptr` says whether a value is a kernel data address (direct map or image).
pub fn infer(samples: &[Sample<'_>], kptr: &dyn Fn(u64) -> bool, read: &mut ReadMany<'_>) -> Result<Inferred, String> {
    let samples: Vec<&Sample<'_>> = samples.iter().filter(|s| s.pid > 0).take(MAX_SAMPLES).collect();
    let first = samples.first().ok_or("no task with a pid to learn struct pid from")?;
    // (thread_pid, pid_links, tasks) from the first task's bytes alone.
    let words = first.bytes.len() as u64 / 8;
    let mut cands: Vec<(u64, u64, u64)> = Vec::new();
    for l in 0..words.saturating_sub(1) {
        let (next, pprev) = (word(first.bytes, l * 8), word(first.bytes, l * 8 + 8));
        let (Some(0), Some(pprev)) = (next, pprev) else { continue };
        if !kptr(pprev) || pprev % 8 != 0 {
            continue;
        }
        for o in 0..words {
            let Some(v) = word(first.bytes, o * 8) else { continue };
            if o == l || o == l + 1 || !kptr(v) || v % 8 != 0 || pprev < v || pprev - v >= PID_SPAN - 8 {
                continue;
            }
            cands.push((o * 8, l * 8, pprev - v));
            if cands.len() > 4096 {
                return Err("too many candidate pid links in the first task".into());
            }
        }
    }
    // Each candidate checked against every sample's struct pid; `numbers` is the first upid
    // after `tasks` holding the sample's pid.
    // (thread_pid, pid_links, tasks, numbers, ns) that hold in every sample so far.
    type Candidate = (u64, u64, u64, u64, u64);
    let mut found: Option<Vec<Candidate>> = None;
    for s in &samples {
        let targets: Vec<(u64, u64, u64)> = match &found {
            None => cands.clone(),
            Some(f) => f.iter().map(|&(o, l, k, _, _)| (o, l, k)).collect(),
        };
        let regions: Vec<(u64, usize)> = targets.iter().map(|&(o, _, _)| (word(s.bytes, o).unwrap_or(0), PID_SPAN as usize)).collect();
        let got = read(&regions);
        let mut keep = Vec::new();
        for (i, &(o, l, k)) in targets.iter().enumerate() {
            let (Some(v), Some(next), Some(pprev)) = (word(s.bytes, o), word(s.bytes, l), word(s.bytes, l + 8)) else { continue };
            let Some(Ok(p)) = got.get(i) else { continue };
            if next != 0 || pprev != v.wrapping_add(k) || word(p, k) != Some(s.addr.wrapping_add(l)) {
                continue;
            }
            let mut u = k + 8;
            while u + 16 <= PID_SPAN {
                let nr = word(p, u).map(|w| w as u32 as i32);
                let ns = word(p, u + UPID_NS).unwrap_or(0);
                if nr == Some(s.pid) && kptr(ns) {
                    let prior = found.as_ref().and_then(|f| f.iter().find(|c| (c.0, c.1, c.2) == (o, l, k)));
                    if prior.is_none_or(|c| c.3 == u && c.4 == ns) {
                        keep.push((o, l, k, u, ns));
                    }
                    break;
                }
                u += 8;
            }
        }
        found = Some(keep);
    }
    // Two shadows of the true pair fit too: a group leader's `pid_links[PIDTYPE_TGID]`, linked
    // the same way to `tasks[PIDTYPE_TGID]` 16 and 8 bytes further; and, taken for the pointer,
    // the true node's own `pprev` (a "struct pid" starting at `tasks[0]`). Both are set aside.
    let found = found.unwrap_or_default();
    let shadow = |c: &Candidate| {
        found.iter().any(|d| c.0 == d.1 + 8 || (d.0 == c.0 && d.1 + 16 == c.1 && d.2 + 8 == c.2))
    };
    let left: Vec<_> = found.iter().filter(|c| !shadow(c)).collect();
    match left.as_slice() {
        [&(o, l, k, u, ns)] => Ok(Inferred { thread_pid: o, pid_links: l, tasks: k, numbers: u, ns }),
        [] => Err(format!("no task field links {} tasks to a struct pid holding their pid", samples.len())),
        many => Err(format!("{} ways to link the tasks to their struct pid: {:?}", many.len(), many.iter().map(|c| (c.0, c.1, c.2)).collect::<Vec<_>>())),
    }
}

/// Finds the XArray in the pid namespace at `ns` by structure: the first word of the
/// namespace that is an XArray node pointer whose node has no parent and an `array` pointing a
/// few bytes before that word, into the namespace. Returns (`ns_xarray`, `xa_head`).
pub fn locate_xarray(ns: u64, read: &mut ReadMany<'_>) -> Result<(u64, u64), String> {
    let got = read(&[(ns, NS_SPAN as usize)]).pop().unwrap_or(Err("no answer".into())).map_err(|e| format!("reading the pid namespace at {ns:#x}: {e}"))?;
    let heads: Vec<(u64, u64)> =
        (1..NS_SPAN / 8).filter_map(|i| Some((i * 8, word(&got, i * 8)?))).filter(|&(_, v)| v & 3 == 2 && v > 0xff00_0000_0000_0000).collect();
    let nodes = read(&heads.iter().map(|&(_, v)| (v - 2, 24)).collect::<Vec<_>>());
    for (&(off, _), node) in heads.iter().zip(nodes) {
        let Ok(node) = node else { continue };
        let (parent, array) = (word(&node, 8), word(&node, 16));
        let head_at = ns + off;
        if let (Some(0), Some(array)) = (parent, array) {
            if array >= ns && array < head_at && head_at - array <= 64 {
                return Ok((array - ns, head_at - array));
            }
        }
    }
    Err(format!("no XArray root in the first {NS_SPAN} bytes of the pid namespace at {ns:#x}"))
}

/// `XA_CHUNK_SIZE` read off the root node at `node`: the size (64, else 16) whose slots hold
/// exactly the node's `count` entries and whose bits divide its `shift`.
pub fn chunk_of_root(node: u64, read: &mut ReadMany<'_>) -> Result<u64, String> {
    let l = NodeLayout::linux(64);
    let b = read(&[(node, l.span() as usize)]).pop().unwrap_or(Err("no answer".into())).map_err(|e| format!("reading the root xa_node at {node:#x}: {e}"))?;
    let (shift, count) = (b.first().copied().unwrap_or(0xff), b.get(2).copied().unwrap_or(0));
    let used = |chunk: u64| (0..chunk).filter(|i| word(&b, 40 + i * 8).is_some_and(|v| v != 0)).count();
    for (chunk, bits) in [(64u64, 6u8), (16, 4)] {
        if shift % bits == 0 && used(chunk) == count as usize {
            return Ok(chunk);
        }
    }
    Err(format!("root xa_node at {node:#x} (shift {shift}, count {count}) fits neither 64 nor 16 slots"))
}

/// One allocated pid: its number, its `struct pid`, and the task attached as `PIDTYPE_PID`
/// (`None` for a pid kept only as a process group or session id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PidEntry {
    pub nr: u64,
    pub pid: u64,
    pub task: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PidError {
    #[error(transparent)]
    Tree(#[from] XaError),
    #[error("reading struct pid at {pid:#x}: {reason}")]
    Read { pid: u64, reason: String },
    #[error("struct pid at {pid:#x} (index {index}): {reason}")]
    Bad { pid: u64, index: u64, reason: String },
}

/// Everything the walk found, and why it stopped early.
#[derive(Debug, Clone, Default)]
pub struct PidWalk {
    pub pids: Vec<PidEntry>,
    pub nodes: usize,
    pub skipped: usize,
    pub error: Option<PidError>,
}

/// Walks the IDR of the pid namespace at `ns`, with `chunk` slots per node.
pub fn walk(l: &PidLayout, chunk: u64, ns: u64, read: &mut ReadMany<'_>) -> PidWalk {
    let mut out = PidWalk::default();
    let array = ns.wrapping_add(l.ns_xarray);
    let head = match read(&[(array.wrapping_add(l.xa_head), 8)]).pop() {
        Some(Ok(b)) => word(&b, 0).unwrap_or(0),
        Some(Err(reason)) => {
            out.error = Some(XaError::Read { node: array, reason }.into());
            return out;
        }
        None => return out,
    };
    let tree = xarray::walk(&NodeLayout::linux(chunk), array, head, read);
    out.nodes = tree.nodes;
    out.skipped = tree.skipped;
    let (start, len) = l.pid_window();
    let got = read(&tree.entries.iter().map(|&(_, p)| (p.wrapping_add(start), len as usize)).collect::<Vec<_>>());
    for (&(index, pid), bytes) in tree.entries.iter().zip(got) {
        match decode(l, ns, index, pid, start, bytes) {
            Ok(e) => out.pids.push(e),
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        }
    }
    out.error = tree.error.map(PidError::from);
    out
}

fn decode(l: &PidLayout, ns: u64, index: u64, pid: u64, start: u64, bytes: Result<Vec<u8>, String>) -> Result<PidEntry, PidError> {
    let b = bytes.map_err(|reason| PidError::Read { pid, reason })?;
    let bad = |reason: String| PidError::Bad { pid, index, reason };
    let at = |off: u64| word(&b, off.wrapping_sub(start)).ok_or_else(|| bad("outside the bytes read".into()));
    let (first, upid) = (at(l.tasks)?, at(l.numbers)?);
    let (nr, upid_ns) = (upid as u32 as u64, at(l.numbers.saturating_add(UPID_NS))?);
    if nr != index || upid_ns != ns {
        return Err(bad(format!("numbers[0] is pid {nr} of namespace {upid_ns:#x}, not {index} of {ns:#x}")));
    }
    Ok(PidEntry { nr, pid, task: (first != 0).then(|| first.wrapping_sub(l.pid_links)) })
}
