//! The `heuristic` layout method: the offsets the walker needs, inferred from memory alone —
//! for kernels with neither BTF nor IKCONFIG, given only what [`Kernel`] found (kallsyms, the
//! image mapping) and physical reads. Data symbols (`init_task`, `init_cred`, `init_mm`,
//! `init_top_pgt`, `init_signals`, `arch_task_struct_size`) are used when kallsyms has them
//! and found in memory when it does not ([`ground`]).
//!
//! Order of inference, each step checked on every sampled task (rules in the submodules):
//! 1. [`ground`]: `init_task`, the direct-map base, `sizeof(task_struct)` when `init_task`
//!    tells it ([`size`]; else from the first forked tasks read, step 2), the kernel's
//!    top-level page table (and `init_mm` when kallsyms names it).
//! 2. `comm`: "swapper[/N]" in `init_task`; `tasks`: the one list head of `init_task` that goes
//!    round named heap tasks with consistent back links and returns ([`probe`]).
//! 3. The members' windows are read (all of them up to 128, else the first 32 and last 96).
//! 4. `signal`, `thread_node`, `thread_head` from `init_task`'s one-node thread list
//!    ([`signal::find_signal`]); every sampled group's thread list, which tells `pid` from
//!    `tgid` ([`task::pid_like`], [`task::pid_tgid`]) and gives `nr_threads`.
//! 5. `real_parent`, `real_cred` + `cred.uid`, `mm` + `flags` + `mm_struct.pgd`, the argument
//!    area, `__state`, `exit_state`, `start_boottime` ([`task`], [`cred`], [`mm`]).
//! 6. `worker_private`, `struct kthread`, `struct worker` ([`kthread`]) — optional: the walker
//!    falls back to plain `comm` without them.
//!
//! Ties between fields that hold equal values on every sampled task (`real_parent`/`parent`,
//! `real_cred`/`cred`, `mm`/`active_mm`, `start_time`/`start_boottime`, `arg_end`/`env_start`,
//! uid among the ids of a shuffled `struct cred`) cannot be broken by values. They are broken
//! by declaration order only when the two candidates are adjacent and the layout does not look
//! shuffled (`tgid` right after `pid`, as declared in every version); otherwise the lowest (or,
//! for the clock, the later) is taken and the field is listed in [`Inference::weak`] — right in
//! value for this memory, possibly not the kernel's own offset (RANDSTRUCT).
//!
//! Invariant: the method only reads (through a copy of the [`Kernel`]'s address space), in
//! batches, with every search bounded (task window ≤ 16 KiB, list walks ≤ 2^16 nodes, sample ≤
//! 128 groups, `.data` searches ≤ 32 MiB); it returns a layout only when each required offset
//! is the single one that fits or a tie reported in [`Inference::weak`]; optional fields
//! (`exit_state` without a zombie, `nr_threads`, the kthread/worker structures) are `None`
//! without evidence; anything else is [`LayoutError::Failed`] naming the field and the offsets
//! left. [`LayoutError::Unavailable`] means `init_task` cannot even be looked for.

pub mod cred;
pub mod ground;
pub mod kthread;
pub mod mm;
pub mod probe;
pub mod signal;
pub mod size;
pub mod task;
pub mod versions;

#[cfg(test)]
mod tests;

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
    pub page_offset_base: Option<KVirt>,
    /// How the anchors were found.
    pub notes: Vec<String>,
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
    let p = Probe { space: &g.space };
    let ver = super::version_of(&kernel.info.release);
    // Until the size is known, windows span the most a task can be; cut once it is.
    let mut win = g.task_size.map_or(probe::MAX_TASK_SIZE, |t| t.win) as usize;
    let mut notes = g.notes.clone();
    let cut = |o: &Obj, win: usize| Obj { addr: o.addr, bytes: o.bytes.get(..win).unwrap_or(&o.bytes).to_vec() };
    let mut init = cut(&g.init, win);

    let comms = probe::swapper_names(&init.bytes);
    if comms.is_empty() {
        return Err(failed("no \"swapper\" name in init_task"));
    }
    let ring = probe::find_ring(&p, &init, &comms)?;
    tracing::debug!(tasks = ring.tasks, comm = ring.comm, members = ring.members.len(), "heuristic: task list");
    let picked: Vec<KVirt> = sample_indices(ring.members.len()).into_iter().map(|i| ring.members[i]).collect();
    let mut leaders = p.objs(&picked, win, "task_struct")?;
    let task_size = match g.task_size {
        Some(t) => t,
        None => {
            let forked: Vec<&Obj> = leaders.iter().filter(|t| t.addr != init.addr).collect();
            let t = match (size::from_forked(&forked), g.sym_end) {
                (Ok(t), _) => {
                    size::check_symbols(&t, g.sym_end)?;
                    t
                }
                // Memory does not tell; kallsyms does (the register area ends the struct).
                (Err(e), Some(end)) => {
                    tracing::debug!("heuristic: {e}; sizing from kallsyms");
                    size::TaskSize { size: end, win: end.saturating_sub(size::FPREGS_STATE), fpu_end: end, how: "kallsyms" }
                }
                (Err(e), None) => return Err(e),
            };
            notes.push(format!("task_struct: {} bytes ({}, {} tasks)", t.size, t.how, forked.len()));
            win = t.win as usize;
            init = cut(&init, win);
            leaders = leaders.iter().map(|o| cut(o, win)).collect();
            t
        }
    };

    let sf = signal::find_signal(&p, &init, g.init_signals)?;
    let groups = signal::groups(&p, &leaders, sf)?;
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
    // Fields declared next to each other in every version that are not adjacent here: the
    // layout is shuffled (RANDSTRUCT), and declaration order decides nothing.
    let shuffled = tgid != pid + 4;
    let mut weak = Vec::new();
    let (real_parent, rp_fits) = task::real_parent(&s, |v| p.heap(KVirt(v)))?;
    if rp_fits.len() > 1 && !cred::declared_first(&rp_fits, 8, shuffled) {
        weak.push("real_parent");
    }
    let all: Vec<&Obj> = s.all().collect();
    let cred = cred::find_cred(&p, &s, g.init_cred, versions::facts(ver).caps_u64, shuffled, sf.signal)?;
    weak.extend(cred.weak.iter().copied());

    let mf = task::mm_flags(&s, |v| p.heap(KVirt(v)));
    let mmf = mm::find_mm(&p, &all, &mf, g.top, g.init_mm.as_ref(), shuffled)?;
    if mmf.weak {
        weak.push("mm");
    }
    let (mm, flags, pgd) = (mmf.mm, mmf.flags, mmf.pgd);
    let args = mm::find_args(&p, &mmf.mms, g.init_mm.as_ref().map(|x| &x.0), pgd)?;
    if args.weak {
        weak.push("mm_struct.arg_end/env_start");
    }

    // The low 32 bits of the state word, whatever its declared size (see `task::state`).
    let state_size = 4;
    let state = task::state(&s)?;
    let exit_state = task::exit_state(&s, state)?;
    let taken = [(pid, 4), (tgid, 4), (state, state_size), (exit_state.unwrap_or(state), 4), (flags, 4), (mm, 8), (real_parent, 8), (cred.real_cred, 8)];
    let (start_boottime, tied) = task::start_boottime(&s, &taken)?;
    if tied.len() > 1 && !cred::declared_first(&tied, 8, shuffled) {
        weak.push("start_boottime");
    }
    let init_signals = p.objs(&[KVirt(init.u64(sf.signal).unwrap_or(0))], signal::SIGNAL_WIN, "init_signals")?.remove(0);
    let nr_threads = signal::nr_threads(&init_signals, &groups, sf.thread_head);

    let kt = kthread::infer(&p, &s, flags, ver);
    weak.extend(kt.weak.iter().copied());

    let layout = Layout {
        task: TaskLayout {
            size: task_size.size,
            tasks: ring.tasks,
            pid,
            tgid,
            real_parent,
            thread_node: sf.thread_node,
            signal: sf.signal,
            real_cred: cred.real_cred,
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
        cred: CredLayout { uid: cred.uid },
        mm: MmLayout { pgd, arg_start: args.arg_start, arg_end: args.arg_end, env_start: args.env_start, env_end: args.env_end },
        kthread: kt.kthread,
        worker: kt.worker,
    };
    for n in &notes {
        tracing::debug!("heuristic: {n}");
    }
    Ok(Inference {
        layout,
        sampled_leaders: leaders.len(),
        sampled_threads: threads.len(),
        weak,
        init_task: init.addr,
        page_offset_base: g.space.page_offset_base,
        notes,
    })
}
