//! The walk's index of tasks: the pid allocator of the initial pid namespace (`init_pid_ns`'s
//! IDR, an XArray), read breadth-first — one batch per tree level, one for the `struct pid`s —
//! names the address of every task with a pid, so [`super::walk`] reads every task record in
//! one batch instead of following the task list one round trip per task.
//!
//! ```text
//!   learn (once per machine)   BTF: task_struct/pid/upid/pid_namespace/idr/xarray offsets,
//!                              init_pid_ns (kallsyms, else init_task's own pid), chunk off the root
//!                              no BTF: inferred from the first leaders the walk takes (`pidns`)
//!   addresses (every walk)     XArray levels ─▶ struct pid ─▶ tasks[PIDTYPE_PID] ─▶ task
//! ```
//!
//! Invariant: an index only says where to read. The walk takes a record from it only for a node
//! its own list reaches and validates it as it validates records it reads itself, so a wrong or
//! failed index costs round trips, never a row. Reads are bounded by `pidns`'s limits.

use super::addr::KVirt;
use super::kspace::{space_reader, KernelSpace, ReadMany, Reads};
use super::pidns::{self, PidLayout};
use super::kernel::{Kernel, INIT_PID_NS};
use super::layout::{btf as btf_method, Layout};
use super::walk::TaskIndex;

/// What the index knows about one machine (kept across the walks of a watched machine).
#[derive(Debug, Clone)]
pub struct PidIndex {
    state: State,
    /// The addresses the last walk of the tree named, while [`PidIndex::reuse_last`] lets the
    /// next call take them.
    last: Option<Vec<KVirt>>,
    reuse: bool,
    /// Every region learning read, with its bytes (the IDR's head and root node, for
    /// `XA_CHUNK_SIZE`; the namespace's path from `init_task` where kallsyms lacks
    /// `init_pid_ns`), answered to the first walk instead of read again a moment later.
    primed: Vec<((u64, usize), Vec<u8>)>,
}

#[derive(Debug, Clone)]
enum State {
    /// Learn the layout from the first leaders (no BTF); `init_pid_ns` if kallsyms names it.
    FromSamples { init_pid_ns: Option<u64>, why: String },
    /// Layout, namespace address and `XA_CHUNK_SIZE`.
    Ready { l: PidLayout, ns: u64, chunk: u64 },
    Failed(String),
}

impl PidIndex {
    /// Learns what it can before the walk: from BTF when the kernel has it (reading only the
    /// part of the blob that describes the structures used), else it waits for sample tasks.
    pub fn learn(kernel: &Kernel<'_>) -> PidIndex {
        let init_pid_ns = kernel.symbols(&[INIT_PID_NS]).ok().and_then(|v| v.first().copied().flatten()).map(|k| k.0);
        let mut primed = Vec::new();
        let mut space_read = space_reader(&kernel.space);
        let mut read = |regions: &[(u64, usize)]| {
            let got = space_read(regions);
            primed.extend(regions.iter().zip(&got).filter_map(|(&r, g)| Some((r, g.as_ref().ok()?.clone()))));
            got
        };
        let state = match btf_method::with_btf(kernel, PidLayout::from_btf_core).map_err(|e| e.to_string()).and_then(|(_, r)| r) {
            Ok(l) => {
                let ns = match (init_pid_ns, kernel.info.init_task) {
                    (Some(ns), _) => Ok(ns),
                    (None, Some(t)) => pidns::ns_of_task(t.0, &l, &mut read),
                    (None, None) => Err("init_task unknown".to_string()),
                };
                match ns.and_then(|ns| Ok((ns, pidns::chunk_of(&l, ns, &mut read)?))) {
                    Ok((ns, chunk)) => State::Ready { l, ns, chunk },
                    Err(e) => State::Failed(format!("pid allocator (BTF): {e}")),
                }
            }
            Err(e) => State::FromSamples { init_pid_ns, why: e },
        };
        PidIndex { state, last: None, reuse: false, primed }
    }

    /// Whether the index can name tasks before the walk has taken any (it learned its layout
    /// from BTF), so that a check of a layout can use it without teaching it anything.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready { .. })
    }

    /// Let the next call to [`TaskIndex::addresses`] answer with what the last one named, if
    /// there was one, instead of walking the tree again: for a walk that follows a check of the
    /// layout by a moment (`ps`'s `auto`). Addresses a moment old only say where to read: a task
    /// created since is reached through its list, one round trip, as without an index.
    pub fn reuse_last(&mut self) {
        self.reuse = self.last.is_some();
    }

    /// How the index was learned, or why it failed.
    pub fn describe(&self) -> String {
        match &self.state {
            State::FromSamples { why, .. } => format!("to be inferred from the first tasks (BTF: {why})"),
            State::Ready { ns, chunk, .. } => format!("init_pid_ns {ns:#x} IDR, {chunk}-slot nodes"),
            State::Failed(e) => e.clone(),
        }
    }
}

impl TaskIndex for PidIndex {
    fn samples(&self) -> usize {
        match self.state {
            State::FromSamples { .. } => pidns::MAX_SAMPLES,
            _ => 0,
        }
    }

    fn addresses(&mut self, space: &KernelSpace<'_>, layout: &Layout, taken: &[(KVirt, i32)]) -> Result<Vec<KVirt>, String> {
        let mut space_read = space_reader(space);
        let mut primed = std::mem::take(&mut self.primed);
        let mut read = |regions: &[(u64, usize)]| primed_read(&mut primed, regions, &mut space_read);
        if let State::FromSamples { init_pid_ns, .. } = self.state {
            self.state = match infer(space, layout, taken, init_pid_ns, &mut read) {
                Ok((l, ns, chunk)) => State::Ready { l, ns, chunk },
                Err(e) => State::Failed(format!("pid allocator (inferred): {e}")),
            };
        }
        if std::mem::take(&mut self.reuse) {
            if let Some(last) = self.last.take() {
                return Ok(last);
            }
        }
        match &self.state {
            State::Ready { l, ns, chunk } => {
                let w = pidns::walk(l, *chunk, *ns, &mut read);
                // A walk cut short still names the tasks before the cut.
                let named: Vec<KVirt> = w.pids.iter().filter_map(|p| p.task.map(KVirt)).collect();
                self.last = Some(named.clone());
                Ok(named)
            }
            State::Failed(e) => Err(e.clone()),
            State::FromSamples { .. } => Err("not learned".into()),
        }
    }
}

/// `regions` read, those `primed` holds answered from it (each once) and the others in one
/// batch (none when all are primed).
fn primed_read(primed: &mut Vec<((u64, usize), Vec<u8>)>, regions: &[(u64, usize)], read: &mut ReadMany<'_>) -> Reads {
    let mut answers: Vec<Option<Result<Vec<u8>, String>>> =
        regions.iter().map(|r| primed.iter().position(|(p, _)| p == r).map(|i| Ok(primed.swap_remove(i).1))).collect();
    let missing: Vec<(u64, usize)> = regions.iter().zip(&answers).filter(|(_, a)| a.is_none()).map(|(&r, _)| r).collect();
    let mut got = if missing.is_empty() { Vec::new() } else { read(&missing) }.into_iter();
    answers.iter_mut().map(|a| a.take().unwrap_or_else(|| got.next().unwrap_or_else(|| Err("no answer".into())))).collect()
}

fn infer(space: &KernelSpace<'_>, layout: &Layout, taken: &[(KVirt, i32)], init_pid_ns: Option<u64>, read: &mut ReadMany<'_>) -> Result<(PidLayout, u64, u64), String> {
    let kptr = |v: u64| space.kernel_ptr(KVirt(v));
    let picks: Vec<(u64, i32)> = taken.iter().filter(|t| t.1 > 0).take(pidns::MAX_SAMPLES).map(|t| (t.0 .0, t.1)).collect();
    let samples = pidns::read_samples(&picks, layout.task.size.min(32 << 10) as usize, read);
    let (l, ns) = pidns::learn(&samples, &kptr, init_pid_ns, read)?;
    let chunk = pidns::chunk_of(&l, ns, read)?;
    Ok((l, ns, chunk))
}
