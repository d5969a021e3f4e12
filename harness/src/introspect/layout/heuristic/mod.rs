//! The `heuristic` layout method: the offsets the walker needs, inferred from memory alone —
//! for kernels with neither BTF nor IKCONFIG, given only what [`Kernel`] found (kallsyms, the
//! image mapping) and physical reads. Data symbols (`init_task`, `init_cred`, `init_mm`,
//! `init_top_pgt`, `init_signals`, `arch_task_struct_size`) are used when kallsyms has them
//! and found in memory when it does not ([`ground`]).
//!
//! Order of inference, each step checked on every sampled task (rules in the submodules):
//! 1. [`ground`]: `init_task`, the direct-map base, `sizeof(task_struct)`, `init_mm` and the
//!    kernel's top-level page table.
//! 2. `comm`: "swapper[/N]" in `init_task`; `tasks`: the one list head of `init_task` that goes
//!    round named heap tasks with consistent back links and returns ([`probe`]).
//! 3. The members' windows are read (all of them up to 128, else the first 32 and last 96).
//! 4. `signal`, `thread_node`, `thread_head` from `init_task`'s one-node thread list
//!    ([`structs::find_signal`]); every sampled group's thread list, which tells `pid` from
//!    `tgid` ([`task::pid_like`], [`task::pid_tgid`]) and gives `nr_threads`.
//! 5. `real_parent`, `real_cred` + `cred.uid`, `mm` + `flags` + `mm_struct.pgd`, the argument
//!    area, `__state`, `exit_state`, `start_boottime` ([`task`], [`structs`]).
//! 6. `worker_private`, `struct kthread`, `struct worker` ([`kthread`]) — optional: the walker
//!    falls back to plain `comm` without them.
//!
//! Invariant: the method only reads (through a copy of the [`Kernel`]'s address space), in
//! batches, with every search bounded (task window ≤ 16 KiB, list walks ≤ 2^16 nodes, sample ≤
//! 128 groups); it returns a layout only when each required offset is the single one that fits
//! (or, for the few fields documented as such, is placed by a stated convention and reported in
//! [`Inference::weak`]), and otherwise [`LayoutError::Failed`] naming the field and the offsets
//! left. [`LayoutError::Unavailable`] means `init_task` cannot even be looked for.

pub mod ground;
pub mod kthread;
pub mod probe;
pub mod structs;
pub mod task;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use super::{CredLayout, Layout, LayoutError, LayoutInputs, LayoutMethod, MethodKind, MmLayout, SignalLayout, TaskLayout};
use crate::introspect::addr::KVirt;
use crate::introspect::kernel::Kernel;
use probe::{failed, Obj, Probe};
use task::Sample;

/// Most groups whose tasks are read in full.
pub const SAMPLE_MAX: usize = 128;
/// Most non-leader threads read per group, and in all.
pub const THREADS_PER_GROUP: usize = 8;
pub const THREADS_MAX: usize = 256;

pub struct HeuristicMethod;

impl LayoutMethod for HeuristicMethod {
    fn kind(&self) -> MethodKind {
        MethodKind::Heuristic
    }

    fn layout(&self, kernel: &Kernel<'_>, _: &LayoutInputs) -> Result<Layout, LayoutError> {
        infer(kernel, true).map(|r| r.layout)
    }
}

/// The inferred layout, with what the inference saw.
#[derive(Debug, Clone)]
pub struct Inference {
    pub layout: Layout,
    /// Groups and threads whose full windows were examined.
    pub sampled_leaders: usize,
    pub sampled_threads: usize,
    /// Fields placed by a layout convention rather than by evidence in this memory.
    pub weak: Vec<&'static str>,
    /// Where `init_task` was found, and the direct-map base used.
    pub init_task: KVirt,
    pub page_offset_base: Option<u64>,
    /// How the anchors were found.
    pub notes: Vec<String>,
}

/// `(major, minor)` of a release string such as `6.1.0-56-amd64`.
fn version(release: &str) -> (u32, u32) {
    let mut it = release.split(|c: char| !c.is_ascii_digit()).map(|n| n.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// Which ring members are read in full: all, or the first and last ones.
fn sample_indices(n: usize) -> Vec<usize> {
    if n <= SAMPLE_MAX {
        (0..n).collect()
    } else {
        let head = SAMPLE_MAX / 4;
        (0..head).chain(n - (SAMPLE_MAX - head)..n).collect()
    }
}

/// Infer the layout of `kernel`'s structures; `data_symbols`: whether kallsyms' data symbols
/// may be used (see [`ground::ground`]).
pub fn infer(kernel: &Kernel<'_>, data_symbols: bool) -> Result<Inference, LayoutError> {
    let g = ground::ground(kernel, data_symbols)?;
    for n in &g.notes {
        tracing::debug!("heuristic: {n}");
    }
    let p = Probe { space: &g.space };
    let ver = version(&kernel.info.release);
    let win = g.task_win as usize;
    let init = Obj { addr: g.init.addr, bytes: g.init.bytes.get(..win).unwrap_or(&g.init.bytes).to_vec() };

    let comms = probe::swapper_names(&init.bytes);
    if comms.is_empty() {
        return Err(failed("no \"swapper\" name in init_task"));
    }
    let ring = probe::find_ring(&p, &init, &comms)?;
    tracing::debug!(tasks = ring.tasks, comm = ring.comm, members = ring.members.len(), "heuristic: task list");
    let picked: Vec<KVirt> = sample_indices(ring.members.len()).into_iter().map(|i| ring.members[i]).collect();
    let leaders = p.objs(&picked, win, "task_struct")?;

    let sf = structs::find_signal(&p, &init, g.init_signals)?;
    let groups = structs::groups(&p, &leaders, sf)?;
    let mut thread_addrs = Vec::new();
    for gr in &groups {
        let others = gr.members.iter().filter(|&&m| m != leaders[gr.leader].addr).take(THREADS_PER_GROUP);
        thread_addrs.extend(others.map(|&m| (gr.leader, m)));
    }
    thread_addrs.truncate(THREADS_MAX);
    let addrs: Vec<KVirt> = thread_addrs.iter().map(|&(_, m)| m).collect();
    let threads: Vec<(usize, Obj)> =
        thread_addrs.iter().map(|&(i, _)| i).zip(p.objs(&addrs, win, "thread task_struct")?).collect();

    let s = Sample { init: &init, leaders: &leaders, threads: &threads, win: win as u64, comm: ring.comm };
    let like = task::pid_like(&s);
    let (pid, tgid) = task::pid_tgid(&s, &like)?;
    let real_parent = task::real_parent(&s, |v| p.heap(v))?;
    let all: Vec<&Obj> = s.all().collect();
    let (real_cred, uid) = structs::find_cred(&p, &all, g.init_cred, ver >= (6, 3))?;

    let ((init_mm, pgd), top) = match (&g.init_mm, g.top) {
        (Some(m), Some(t)) => (m, t),
        _ => return Err(failed("init_mm / the kernel's top-level page table not found")),
    };
    let mf = task::mm_flags(&s, |v| p.heap(v));
    let (mm, flags) = structs::find_mm(&p, &all, &mf, *pgd, top)?;
    let user_mms: BTreeSet<u64> = all.iter().filter_map(|t| t.u64(mm)).filter(|&v| v != 0).collect();
    let user_mms: Vec<KVirt> = user_mms.into_iter().map(KVirt).collect();
    let mms = p.objs(&user_mms, structs::MM_WIN, "mm_struct")?;
    let arg_start = structs::find_args(&p, &mms, init_mm, *pgd)?;

    let state_size = if ver >= (5, 14) { 4 } else { 8 };
    let state = task::state(&s, state_size)?;
    let mut weak = Vec::new();
    let (exit_state, exit_weak) = task::exit_state(&s, state, state_size, mm)?;
    if exit_weak {
        weak.push("exit_state");
    }
    let taken = [(pid, 4), (tgid, 4), (state, state_size), (exit_state, 4), (flags, 4), (mm, 8), (real_parent, 8), (real_cred, 8)];
    let start_boottime = task::start_boottime(&s, &taken)?;
    let init_signals = p.objs(&[KVirt(init.u64(sf.signal).unwrap_or(0))], structs::SIGNAL_WIN, "init_signals")?.remove(0);
    let nr_threads = structs::nr_threads(&init_signals, &groups, sf.thread_head);

    let kt = kthread::infer(&p, &s, flags, mm);
    weak.extend(kt.weak.iter().copied());

    let layout = Layout {
        task: TaskLayout {
            size: g.task_size,
            tasks: ring.tasks,
            pid,
            tgid,
            real_parent,
            thread_node: sf.thread_node,
            signal: sf.signal,
            real_cred,
            state,
            state_size,
            exit_state,
            comm: ring.comm,
            mm,
            flags,
            start_boottime,
            worker_private: kt.worker_private,
        },
        signal: SignalLayout { thread_head: sf.thread_head, nr_threads },
        cred: CredLayout { uid },
        mm: MmLayout { pgd: *pgd, arg_start, arg_end: arg_start + 8, env_start: arg_start + 16, env_end: arg_start + 24 },
        kthread: kt.kthread,
        worker: kt.worker,
    };
    Ok(Inference {
        layout,
        sampled_leaders: leaders.len(),
        sampled_threads: threads.len(),
        weak,
        init_task: init.addr,
        page_offset_base: g.space.page_offset_base,
        notes: g.notes.clone(),
    })
}
