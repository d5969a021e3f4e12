//! `hidden` from physical memory: tasks and modules that some view of the kernel's memory sees
//! and the kernel's own lists do not (a cross-view comparison, as rootkit hunters do), with no
//! prior knowledge of the kernel.
//!
//! ```text
//!   hidden ─ scan, symbols, layout   as for ps (banner, kallsyms, KASLR; btf | ... | heuristic)
//!          ─ list       the task list, every thread (walk.rs: what `ps` lists)     ┐ compared
//!          ─ pid        init_pid_ns's IDR → struct pid → PIDTYPE_PID task (pidns.rs)│ by physical
//!          ─ runqueue   each CPU's rq: curr, idle, fair/RT/deadline queues (runqueue.rs) address
//!          ─ scan       --scan: RAM, 64-byte aligned task_struct candidates (memscan.rs) ┘
//!          ─ modules    the `modules` list (modules::list: what `lsmod` lists)  ┐ by struct
//!          ─ mod_tree   the module address tree (modtree.rs)                    │ module address
//!          ─ module_area every struct module in the module area's pages (modules::area)  ┘
//!          ▼
//!   findings: one per task or module absent from its list, with every view that saw it (render.rs)
//! ```
//!
//! A task seen off the list is not hidden if it is an idle task (pid 0: in a run queue's
//! `rq->idle`, or `PF_IDLE`; Linux never lists them) or has exited (`TASK_DEAD` in `__state`, or
//! `EXIT_DEAD`: freed memory the scan finds, or a task between its release and its last switch).
//! A scan candidate whose pid belongs to a listed task at another address is a stale copy (a
//! `task_struct` freed without dying: a failed fork's copy of its parent) and is not hidden
//! either. Each of these is counted in `--stats`. Everything else is a finding.
//!
//! Every view says whether it ran, was unavailable (its prerequisite is missing here: which one
//! is said) or failed; a view that failed or stopped part-way makes the result partial (exit
//! status 2), as the comparison is then incomplete.
//!
//! Invariant: guest memory is adversarial. Every view is bounded (see each module) and every
//! candidate validated; a finding is only reported for an address a view reached through the
//! kernel's own structures or that validates as a `task_struct`.

pub mod cut;
pub mod memscan;
pub mod modtree;
pub mod rbtree;
pub mod render;
pub mod runqueue;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use emulator::mem::{Counting, PhysMem};
use serde::Serialize;

use super::pidns::{self, PidLayout};
use super::addr::KVirt;
use super::btf::Btf;
use super::gather::Plan;
use super::kernel::{Kernel, KernelInfo};
use super::kspace::{space_reader, ReadMany, Reads};
use super::layout::heuristic::task::{PF_IDLE, TASK_DEAD};
use super::layout::{btf as btf_method, Layout};
use super::modules::{self, list as modlist, ModMethod};
use super::ps::{prepare, Clock, Phase, Prepared, PsError, PsOptions};
use super::state::{state_letter, EXIT_DEAD, PID_MAX_LIMIT};
use super::walk::{walk, Thread};


/// Largest RAM the scan reads by default (a guest of the corpus has 256 MiB).
pub const SCAN_MAX_BYTES: u64 = 64 << 30;

#[derive(Debug, Clone, Default)]
pub struct HiddenOptions {
    /// How the task layout is learned, as for `ps`.
    pub ps: PsOptions,
    /// Run the scan view (reads all of RAM).
    pub scan: bool,
    /// Most bytes the scan reads (`None`: [`SCAN_MAX_BYTES`]).
    pub scan_max_bytes: Option<u64>,
    /// Infer the pid view's layout even where BTF has it (to compare the two).
    pub infer_pid_layout: bool,
}

/// The views, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum View {
    /// The task list (`init_task.tasks`, then each group's threads).
    List,
    /// The pid allocator of the initial pid namespace.
    Pid,
    /// The run queues.
    Runqueue,
    /// The scan of physical memory.
    Scan,
    /// The `modules` list.
    Modules,
    /// The module address tree.
    ModTree,
    /// The `struct module`s in the module area's writable pages.
    ModuleArea,
}

impl View {
    pub fn name(self) -> &'static str {
        match self {
            View::List => "list",
            View::Pid => "pid",
            View::Runqueue => "runqueue",
            View::Scan => "scan",
            View::Modules => "modules",
            View::ModTree => "mod_tree",
            View::ModuleArea => "module_area",
        }
    }
}

/// Whether a view ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// It ran to its end.
    Ran,
    /// It ran and stopped part-way (`error` says where); what it saw before is used.
    Partial,
    /// Its prerequisite is missing on this kernel (`how` says which).
    Unavailable,
    /// Its prerequisite is there but it could not run (`error` says why).
    Failed,
    /// Not asked for (the scan without `--scan`).
    Skipped,
}

/// One view's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ViewReport {
    pub view: View,
    pub status: Status,
    /// How it was done (layout source, what it covered), or why it is unavailable.
    pub how: String,
    /// Tasks or modules it saw.
    pub seen: usize,
    /// Of those, how many the list lacks (before the idle, exited and stale ones are set aside).
    pub off_list: usize,
    pub error: Option<String>,
    pub ms: f64,
    pub dma_reads: u64,
    pub dma_bytes: u64,
}

impl ViewReport {
    fn new(view: View, status: Status, how: impl Into<String>) -> Self {
        ViewReport { view, status, how: how.into(), seen: 0, off_list: 0, error: None, ms: 0.0, dma_reads: 0, dma_bytes: 0 }
    }
    fn cost(mut self, p: Option<&Phase>) -> Self {
        if let Some(p) = p {
            (self.ms, self.dma_reads, self.dma_bytes) = (p.ms, p.reads, p.bytes);
        }
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Task,
    Module,
}

/// One task or module some view saw and its list lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: Kind,
    /// Thread id (tasks).
    pub pid: Option<i32>,
    /// Thread group id (tasks).
    pub tgid: Option<i32>,
    /// `comm`, or the module's name; `?` when it could not be read.
    pub name: String,
    /// The `task_struct` or `struct module`.
    #[serde(serialize_with = "hex")]
    pub address: u64,
    /// The views that saw it.
    pub seen_by: Vec<View>,
    /// The state letter (tasks) or module state.
    pub state: String,
    /// What did not validate, if anything.
    pub note: Option<String>,
}

fn hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

/// Off-list tasks set aside, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SetAside {
    /// Idle tasks (pid 0).
    pub idle: usize,
    /// Exited tasks (`TASK_DEAD`, `EXIT_DEAD`).
    pub exited: usize,
    /// Scan candidates whose pid a listed task at another address has.
    pub stale: usize,
}

/// The `--stats` line.
#[derive(Debug, Clone, Serialize)]
pub struct HiddenStats {
    pub method: String,
    pub kernel_release: String,
    pub views: Vec<ViewReport>,
    pub hidden_tasks: usize,
    pub hidden_modules: usize,
    pub set_aside: SetAside,
    pub pid_layout: Option<PidLayout>,
    pub dma_reads: u64,
    pub dma_bytes: u64,
    /// Dependent batches of reads, round trips over the wire.
    #[serde(rename = "dma_round_trips", alias = "dma_batches")]
    pub dma_batches: u64,
    pub wall_ms: f64,
    pub phases: Vec<Phase>,
}

#[derive(Debug)]
pub struct HiddenReport {
    pub findings: Vec<Finding>,
    pub views: Vec<ViewReport>,
    /// The tasks on the list (every thread).
    pub listed: Vec<Thread>,
    /// Task addresses each task view saw (idle and exited ones included).
    pub seen: BTreeMap<View, Vec<KVirt>>,
    pub kernel: KernelInfo,
    pub stats: HiddenStats,
}

impl HiddenReport {
    /// Why the comparison is incomplete: every view that failed or stopped part-way.
    pub fn incomplete(&self) -> Option<String> {
        let bad: Vec<String> = self
            .views
            .iter()
            .filter(|v| matches!(v.status, Status::Partial | Status::Failed))
            .map(|v| format!("view {} {}: {}", v.view.name(), if v.status == Status::Failed { "failed" } else { "stopped part-way" }, v.error.as_deref().unwrap_or("?")))
            .collect();
        (!bad.is_empty()).then(|| bad.join("; "))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HiddenError {
    #[error(transparent)]
    Ps(#[from] PsError),
}

/// Data symbols the views use.
const SYMBOLS: &[&str] = &["init_pid_ns", "runqueues", "__per_cpu_offset", "nr_cpu_ids", "mod_tree", "max_pfn"];

/// Cross-view detection on the machine whose memory is `mem`.
pub fn hidden(mem: &dyn PhysMem, opts: &HiddenOptions) -> Result<HiddenReport, HiddenError> {
    let counted = Counting::new(mem);
    let mut clock = Clock::new(&counted);
    let Prepared { mut kernel, method, layout, .. } = prepare(&counted, &opts.ps, None, &mut clock)?;
    // The module views read outside the image and the direct map: a kernel without data
    // symbols has its page tables searched for (the module area view says if they are not found).
    if let Err(e) = modules::area::ensure_page_tables(&mut kernel) {
        tracing::debug!(error = %e, "no kernel page tables");
    }
    let init_task = kernel.info.init_task.ok_or(PsError::NoInitTask)?;
    let kptr = |v: u64| kernel.space.kernel_ptr(KVirt(v));
    let phys = |v: KVirt| kernel.space.linear(v).map(|p| p.0);
    let mut views = Vec::new();
    let mut seen: BTreeMap<View, Vec<KVirt>> = BTreeMap::new();

    // The list.
    let outcome = walk(&kernel.space, &layout, init_task, opts.ps.walk);
    clock.lap("list");
    let mut v = ViewReport::new(View::List, if outcome.error.is_some() { Status::Partial } else { Status::Ran }, "init_task.tasks and each group's threads");
    v.seen = outcome.threads.len();
    v.error = outcome.error.as_ref().map(ToString::to_string);
    views.push(v.cost(clock.phases.last()));
    let listed = outcome.threads;
    let mut listed_phys: HashSet<u64> = listed.iter().filter_map(|t| phys(t.addr)).collect();
    listed_phys.extend(phys(init_task));
    let listed_pids: HashSet<i32> = listed.iter().map(|t| t.pid).collect();

    let syms = kernel.symbols(SYMBOLS).unwrap_or_else(|_| vec![None; SYMBOLS.len()]);
    let sym = |n: &str| SYMBOLS.iter().position(|s| *s == n).and_then(|i| syms[i]).map(|k| k.0);
    let btf = FromBtf::learn(&kernel);
    clock.lap("btf");

    // The pid allocator.
    let mut read = space_reader(&kernel.space);
    let pid_layout = btf.as_ref().ok().filter(|_| !opts.infer_pid_layout).map(|b| b.pid.clone());
    let (pid_found, pid_view) = pid_view(&kernel, &layout, &listed, pid_layout, sym("init_pid_ns"), &kptr, &mut read);
    clock.lap("pid");
    seen.insert(View::Pid, pid_view.1.clone());
    views.push(pid_view.0.cost(clock.phases.last()));

    // The run queues.
    let (rq_report, rq_tasks, idle) = rq_view(&btf, &sym, init_task.0, &mut read);
    clock.lap("runqueue");
    seen.insert(View::Runqueue, rq_tasks);
    views.push(rq_report.cost(clock.phases.last()));

    // The scan.
    let scan_report = if opts.scan {
        let limits = (sym("max_pfn"), opts.scan_max_bytes.unwrap_or(SCAN_MAX_BYTES));
        let (r, tasks) = scan_view(&counted, &kernel, &layout, limits, &kptr, pid_found, &listed_phys, &mut read);
        seen.insert(View::Scan, tasks);
        r
    } else {
        ViewReport::new(View::Scan, Status::Skipped, "not asked for (--scan reads all of RAM)")
    };
    clock.lap("scan");
    views.push(scan_report.cost(clock.phases.last()));

    // Every task some view saw off the list.
    let mut off: BTreeMap<u64, (KVirt, BTreeSet<View>)> = BTreeMap::new();
    for (&view, tasks) in &seen {
        let mut n = 0;
        for &t in tasks {
            let Some(p) = phys(t) else { continue };
            if !listed_phys.contains(&p) {
                n += 1;
                off.entry(p).or_insert((t, BTreeSet::new())).1.insert(view);
            }
        }
        if let Some(r) = views.iter_mut().find(|r| r.view == view) {
            r.seen = tasks.len();
            r.off_list = n;
        }
    }
    let idle: HashSet<u64> = idle.iter().filter_map(|&i| phys(KVirt(i))).collect();
    let (mut findings, set_aside) = classify(&kernel, &layout, &off, &idle, &listed_pids);
    clock.lap("classify");

    // Modules.
    let module_findings = module_views(&kernel, &btf, sym("mod_tree"), &mut read, &mut views, &mut clock);
    findings.extend(module_findings);
    drop(read);

    let total = counted.snapshot();
    let stats = HiddenStats {
        method: method.to_string(),
        kernel_release: kernel.info.release.clone(),
        views: views.clone(),
        hidden_tasks: findings.iter().filter(|f| f.kind == Kind::Task).count(),
        hidden_modules: findings.iter().filter(|f| f.kind == Kind::Module).count(),
        set_aside,
        pid_layout: pid_found.map(|p| p.0),
        dma_reads: total.reads,
        dma_bytes: total.bytes,
        dma_batches: total.batches,
        wall_ms: clock.t0.elapsed().as_secs_f64() * 1e3,
        phases: std::mem::take(&mut clock.phases),
    };
    Ok(HiddenReport { findings, views, listed, seen, kernel: kernel.info.clone(), stats })
}

/// What the views take from BTF, looked up together: through the kernel's index of a
/// name-sorted blob (`layout::sorted`) where there is one, so that one batch reads what all four
/// need, else from the whole blob.
struct FromBtf {
    pid: Result<PidLayout, String>,
    rq: Result<runqueue::RqLayout, String>,
    module: Result<modules::layout::ModuleLayout, String>,
    tree: Result<modtree::TreeLayout, String>,
}

impl FromBtf {
    fn learn(kernel: &Kernel<'_>) -> Result<FromBtf, String> {
        let all = |b: &Btf| {
            let f = FromBtf {
                pid: PidLayout::from_btf(b),
                rq: runqueue::RqLayout::from_btf(b),
                module: modules::layout::ModuleLayout::from_btf(b),
                tree: modtree::TreeLayout::from_btf(b),
            };
            // One that failed on records read through the index: the whole blob decides.
            if f.pid.is_ok() && f.rq.is_ok() && f.module.is_ok() && f.tree.is_ok() { Ok(f) } else { Err(f) }
        };
        btf_method::with_index_or_load(kernel, all).map(|r| r.unwrap_or_else(|f| f)).map_err(|e| e.to_string())
    }
}

/// The pid view: its layout (BTF, else inferred from the listed tasks), the namespace, the walk.
#[allow(clippy::type_complexity)]
fn pid_view(
    kernel: &Kernel<'_>,
    layout: &Layout,
    listed: &[Thread],
    from_btf: Option<Result<PidLayout, String>>,
    init_pid_ns: Option<u64>,
    kptr: &dyn Fn(u64) -> bool,
    read: &mut ReadMany<'_>,
) -> (Option<(PidLayout, u64)>, (ViewReport, Vec<KVirt>)) {
    let failed = |how: &str, e: String| {
        let mut r = ViewReport::new(View::Pid, Status::Failed, how);
        r.error = Some(e);
        (None, (r, Vec::new()))
    };
    let (l, ns, how) = match from_btf {
        Some(Ok(l)) => {
            let ns = match init_pid_ns {
                Some(ns) => ns,
                None => match kernel.info.init_task.ok_or_else(|| "init_task unknown".to_string()).and_then(|t| pidns::ns_of_task(t.0, &l, read)) {
                    Ok(ns) => ns,
                    Err(e) => return failed("BTF", e),
                },
            };
            (l, ns, "BTF".to_string())
        }
        other => {
            let why_not_btf = match other {
                Some(Err(e)) => format!("BTF lacks it ({e})"),
                _ => "no BTF".into(),
            };
            let size = layout.task.size.min(32 << 10) as usize;
            let step = (listed.len() / pidns::MAX_SAMPLES).max(1);
            let picks: Vec<(u64, i32)> = listed.iter().filter(|t| t.pid > 0).step_by(step).take(pidns::MAX_SAMPLES).map(|t| (t.addr.0, t.pid)).collect();
            let samples = pidns::read_samples(&picks, size, read);
            let how = format!("inferred from {} listed tasks ({why_not_btf})", samples.len());
            match pidns::learn(&samples, kptr, init_pid_ns, read) {
                Ok((l, ns)) => (l, ns, how),
                Err(e) => return failed(&how, e),
            }
        }
    };
    let chunk = match pidns::chunk_of(&l, ns, read) {
        Ok(c) => c,
        Err(e) => return failed(&how, e),
    };
    let w = pidns::walk(&l, chunk, ns, read);
    let tasks: Vec<KVirt> = w.pids.iter().filter_map(|p| p.task.map(KVirt)).collect();
    let mut r = ViewReport::new(
        View::Pid,
        if w.error.is_some() { Status::Partial } else { Status::Ran },
        format!(
            "init_pid_ns {ns:#x} IDR ({how}, {chunk}-slot nodes): {} pids in {} nodes, {} without a task",
            w.pids.len(),
            w.nodes,
            w.pids.iter().filter(|p| p.task.is_none()).count()
        ),
    );
    r.error = w.error.as_ref().map(ToString::to_string);
    (Some((l, ns)), (r, tasks))
}

/// The run-queue view: (report, tasks seen, idle tasks).
fn rq_view(btf: &Result<FromBtf, String>, sym: &dyn Fn(&str) -> Option<u64>, init_task: u64, read: &mut ReadMany<'_>) -> (ViewReport, Vec<KVirt>, Vec<u64>) {
    let unavailable = |why: String| (ViewReport::new(View::Runqueue, Status::Unavailable, why), Vec::new(), Vec::new());
    let btf = match btf {
        Ok(b) => b,
        Err(e) => return unavailable(format!("needs BTF for struct rq and the scheduling entities: {e}")),
    };
    let missing: Vec<&str> = ["runqueues", "nr_cpu_ids"].into_iter().filter(|s| sym(s).is_none()).collect();
    if !missing.is_empty() {
        return unavailable(format!("kallsyms has no {} (no data symbols: CONFIG_KALLSYMS_ALL off)", missing.join(", ")));
    }
    let l = match btf.rq.clone() {
        Ok(l) => l,
        Err(e) => {
            let mut r = ViewReport::new(View::Runqueue, Status::Failed, "BTF");
            r.error = Some(e);
            return (r, Vec::new(), Vec::new());
        }
    };
    let nr = read(&[(sym("nr_cpu_ids").unwrap_or(0), 4)]).pop().and_then(Result::ok).and_then(|b| Some(u32::from_le_bytes(b.get(..4)?.try_into().ok()?)));
    let w = runqueue::walk(&l, sym("runqueues").unwrap_or(0), sym("__per_cpu_offset"), nr.unwrap_or(1) as u64, init_task, read);
    let queued: usize = w.cpus.iter().map(|c| c.queued).sum();
    let mut r = ViewReport::new(
        View::Runqueue,
        if w.error.is_some() { Status::Partial } else { Status::Ran },
        format!("{} CPUs: rq->curr, rq->idle, fair (with task groups), RT and deadline queues; {queued} queued (BTF)", w.cpus.len()),
    );
    r.error = w.error.as_ref().map(ToString::to_string);
    (r, w.tasks.into_iter().map(KVirt).collect(), w.idle)
}

/// The scan view: RAM from the source's ranges, else `[0, max_pfn pages)`. A candidate off the
/// list must also be its own pid's task: its `thread_pid` names a `struct pid` whose
/// `numbers[0]` is its pid in the namespace the pid view walked (what a task keeps when a
/// rootkit unlinks it from the lists; bytes that merely look like a task do not). Without the
/// pid view's layout that check is not made, and the view says so.
#[allow(clippy::too_many_arguments)]
fn scan_view(
    mem: &dyn PhysMem,
    kernel: &Kernel<'_>,
    layout: &Layout,
    (max_pfn, max_bytes): (Option<u64>, u64),
    kptr: &dyn Fn(u64) -> bool,
    pid: Option<(PidLayout, u64)>,
    listed_phys: &HashSet<u64>,
    read: &mut ReadMany<'_>,
) -> (ViewReport, Vec<KVirt>) {
    let Some(pob) = kernel.space.page_offset_base else {
        return (ViewReport::new(View::Scan, Status::Unavailable, "direct-map base unknown"), Vec::new());
    };
    let mut ranges: Vec<(u64, u64)> = mem.ranges().iter().map(|r| (r.start.0, r.end.0)).collect();
    let mut from = "the source's RAM ranges";
    if ranges.is_empty() {
        let pfn = max_pfn.and_then(|s| kernel.space.read_u64(KVirt(s)).ok());
        match pfn {
            Some(p) if p > 0 && p < (1 << 40) => {
                ranges = vec![(0, p << 12)];
                from = "RAM up to max_pfn";
            }
            _ => return (ViewReport::new(View::Scan, Status::Unavailable, "the source reports no RAM ranges and kallsyms has no max_pfn"), Vec::new()),
        }
    }
    let o = memscan::scan(mem, &ranges, layout, pob.0, max_bytes, kptr);
    let off: Vec<&memscan::Candidate> = o.candidates.iter().filter(|c| !listed_phys.contains(&c.phys.0)).collect();
    let (rejected, check) = match pid {
        Some((l, ns)) => {
            let ok = pid_linked(&l, ns, &off.iter().map(|c| (pob.0.wrapping_add(c.phys.0), c.pid)).collect::<Vec<_>>(), read);
            (off.iter().zip(&ok).filter(|(_, ok)| !**ok).map(|(c, _)| c.phys.0).collect::<HashSet<u64>>(), "off the list, each checked against its thread_pid")
        }
        None => (HashSet::new(), "off the list, unchecked (no pid layout)"),
    };
    let mut r = ViewReport::new(
        View::Scan,
        if o.truncated { Status::Partial } else { Status::Ran },
        format!(
            "{} MiB of {from}, {} candidates ({} {check}, {} rejected), {} pages unreadable",
            o.bytes >> 20,
            o.candidates.len(),
            off.len(),
            rejected.len(),
            o.pages_unreadable
        ),
    );
    if o.truncated {
        r.error = Some(format!("stopped after {} bytes or {} candidates", o.bytes, o.candidates.len()));
    }
    (r, o.candidates.iter().filter(|c| !rejected.contains(&c.phys.0)).map(|c| KVirt(pob.0.wrapping_add(c.phys.0))).collect())
}

/// Whether each task (address, pid) is its own pid's: `thread_pid->numbers[0]` is `pid` in `ns`.
fn pid_linked(l: &PidLayout, ns: u64, tasks: &[(u64, i32)], read: &mut ReadMany<'_>) -> Vec<bool> {
    let word = |b: &Result<Vec<u8>, String>, o: usize| b.as_ref().ok().and_then(|b| Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?)));
    let ptrs = read(&tasks.iter().map(|&(t, _)| (t.wrapping_add(l.thread_pid), 8)).collect::<Vec<_>>());
    let pids: Vec<u64> = ptrs.iter().map(|p| word(p, 0).unwrap_or(0)).collect();
    let upids = read(&pids.iter().map(|&p| (p.wrapping_add(l.numbers), 16)).collect::<Vec<_>>());
    tasks.iter().zip(&upids).map(|(&(_, pid), u)| word(u, 0).map(|nr| nr as u32 as i32) == Some(pid) && word(u, 8) == Some(ns)).collect()
}

/// Reads and sorts the off-list tasks: findings, and the ones set aside.
fn classify(kernel: &Kernel<'_>, l: &Layout, off: &BTreeMap<u64, (KVirt, BTreeSet<View>)>, idle: &HashSet<u64>, listed_pids: &HashSet<i32>) -> (Vec<Finding>, SetAside) {
    let t = &l.task;
    let mut fields = vec![(t.pid, 4), (t.tgid, 4), (t.comm, 16), (t.state, t.state_size as usize), (t.flags, 4)];
    fields.extend(t.exit_state.map(|e| (e, 4)));
    let plan = Plan::new(&fields, 512);
    let addrs: Vec<KVirt> = off.values().map(|(v, _)| *v).collect();
    let recs = plan.read_many(&kernel.space, &addrs);
    let mut out = Vec::new();
    let mut aside = SetAside::default();
    for ((p, (addr, views)), rec) in off.iter().zip(recs) {
        let facts = rec.map_err(|e| e.to_string()).and_then(|r| {
            let g = |e: super::gather::NotRead| e.to_string();
            let comm = r.bytes(t.comm, 16).map_err(g)?.to_vec();
            let state = r.uint(t.state, t.state_size).map_err(g)? as u32;
            let exit = match t.exit_state {
                Some(o) => r.u32(o).map_err(g)?,
                None => 0,
            };
            Ok((r.i32(t.pid).map_err(g)?, r.i32(t.tgid).map_err(g)?, comm, state, exit, r.u32(t.flags).map_err(g)?))
        });
        let only_scan = views.iter().all(|v| *v == View::Scan);
        let mut f = Finding { kind: Kind::Task, pid: None, tgid: None, name: "?".into(), address: addr.0, seen_by: views.iter().copied().collect(), state: "?".into(), note: None };
        match facts {
            Err(e) => f.note = Some(format!("unreadable: {e}")),
            Ok((pid, tgid, comm, state, exit, flags)) => {
                let end = comm.iter().position(|&c| c == 0);
                f.name = String::from_utf8_lossy(&comm[..end.unwrap_or(16)]).into_owned();
                (f.pid, f.tgid, f.state) = (Some(pid), Some(tgid), state_letter(state, exit).to_string());
                if pid == 0 && (idle.contains(p) || flags & PF_IDLE != 0) {
                    aside.idle += 1;
                    continue;
                }
                if state & TASK_DEAD != 0 || exit & EXIT_DEAD != 0 {
                    aside.exited += 1;
                    continue;
                }
                if only_scan && listed_pids.contains(&pid) {
                    aside.stale += 1;
                    continue;
                }
                if !(0..=PID_MAX_LIMIT).contains(&pid) || end.is_none() {
                    f.note = Some(format!("does not validate as a task: pid {pid}, comm {}", if end.is_some() { "NUL-terminated" } else { "without its NUL" }));
                }
            }
        }
        out.push(f);
    }
    (out, aside)
}

/// The module views: the list (as `lsmod`), the address tree and the module area; module
/// findings, one per `struct module` off the list with every view that saw it.
fn module_views(kernel: &Kernel<'_>, btf: &Result<FromBtf, String>, mod_tree: Option<u64>, read: &mut ReadMany<'_>, views: &mut Vec<ViewReport>, clock: &mut Clock<'_, impl PhysMem>) -> Vec<Finding> {
    const MODULE_VIEWS: [View; 3] = [View::Modules, View::ModTree, View::ModuleArea];
    let area_scan = modules::area::scan(kernel);
    clock.lap("module_area");
    let area_cost = clock.phases.last().cloned();
    let head = match modules::modules_head_with(kernel, &mut || area_scan.clone()) {
        Ok(h) => h,
        Err(e) => {
            clock.lap("modules");
            for v in MODULE_VIEWS {
                views.push(ViewReport::new(v, Status::Unavailable, e.to_string()));
            }
            return Vec::new();
        }
    };
    // The layout learned from BTF with the other views' (as `lsmod`'s btf method).
    let from_btf = btf.as_ref().ok().and_then(|b| b.module.clone().ok());
    let located = match from_btf.map(|layout| Ok(modules::Located { method: ModMethod::Btf, layout, how: "BTF struct module".into() })).unwrap_or_else(|| modules::locate(kernel, head.addr, ModMethod::Auto)) {
        Ok(l) => l,
        Err(e) => {
            clock.lap("modules");
            let mut r = ViewReport::new(View::Modules, Status::Failed, "struct module layout");
            r.error = Some(e.to_string());
            views.push(r);
            for v in [View::ModTree, View::ModuleArea] {
                views.push(ViewReport::new(v, Status::Unavailable, "no struct module layout to compare the modules list with"));
            }
            return Vec::new();
        }
    };
    let w = modlist::walk(&located.layout, head.addr.0, &mut modules::reader(kernel));
    clock.lap("modules");
    let mut r = ViewReport::new(View::Modules, if w.error.is_some() { Status::Partial } else { Status::Ran }, format!("the modules list (head from {}; {})", head.from, located.how));
    r.seen = w.modules.len();
    r.error = w.error.as_ref().map(ToString::to_string);
    views.push(r.cost(clock.phases.last()));
    let listed: HashSet<u64> = w.modules.iter().map(|m| m.module).collect();
    let mut findings: BTreeMap<u64, Finding> = BTreeMap::new();
    let finding = |m: u64, view: View| Finding { kind: Kind::Module, pid: None, tgid: None, name: "?".into(), address: m, seen_by: vec![view], state: "?".into(), note: None };

    let tree_layout = match (btf, mod_tree) {
        (Err(e), _) => Err(format!("needs BTF for mod_tree_node: {e}")),
        (_, None) => Err("kallsyms has no mod_tree".into()),
        (Ok(b), Some(_)) => b.tree.clone(),
    };
    match tree_layout {
        Err(e) => {
            clock.lap("mod_tree");
            views.push(ViewReport::new(View::ModTree, Status::Unavailable, e).cost(clock.phases.last()));
        }
        Ok(tl) => {
            let t = modtree::walk(&tl, mod_tree.unwrap_or(0), read);
            let off: Vec<u64> = t.modules.iter().copied().filter(|m| !listed.contains(m)).collect();
            let got = read(&off.iter().map(|&m| (m, located.layout.span as usize)).collect::<Vec<_>>());
            for (&m, bytes) in off.iter().zip(got) {
                let mut f = finding(m, View::ModTree);
                match bytes.map_err(|e| e.to_string()).and_then(|b| modlist::decode(&located.layout, m, &b).map_err(|e| e.to_string())) {
                    Ok(Some(d)) => (f.name, f.state) = (d.name, d.state.to_string()),
                    Ok(None) => continue,
                    Err(e) => f.note = Some(e),
                }
                findings.insert(m, f);
            }
            clock.lap("mod_tree");
            let mut r = ViewReport::new(View::ModTree, if t.error.is_some() { Status::Partial } else { Status::Ran }, format!("mod_tree: {} nodes (BTF)", t.nodes));
            (r.seen, r.off_list) = (t.modules.len(), off.len());
            r.error = t.error.as_ref().map(ToString::to_string);
            views.push(r.cost(clock.phases.last()));
        }
    }

    match area_scan {
        Err(e) => views.push(ViewReport::new(View::ModuleArea, Status::Unavailable, e)),
        Ok(a) => {
            let off: Vec<&modules::area::Found> = a.modules.iter().filter(|m| !listed.contains(&m.module)).collect();
            for m in &off {
                let f = findings.entry(m.module).or_insert_with(|| finding(m.module, View::ModuleArea));
                if !f.seen_by.contains(&View::ModuleArea) {
                    f.seen_by.push(View::ModuleArea);
                }
                if f.name == "?" {
                    f.name = m.name.clone();
                    f.state = modlist::ModuleState::from_raw(m.state).map_or("?", |s| s.as_str()).to_string();
                }
                if !m.linked && f.note.is_none() {
                    f.note = Some("its list node is unlinked (points at itself, or list poison)".into());
                }
            }
            let status = if a.truncated { Status::Partial } else { Status::Ran };
            let mut r = ViewReport::new(View::ModuleArea, status, format!("{} writable pages of the {} mapped in the module area", a.pages, a.mapped));
            (r.seen, r.off_list) = (a.modules.len(), off.len());
            r.error = a.truncated.then(|| format!("stopped at its bounds ({} page tables, {} bytes)", modules::area::MAX_TABLES, modules::area::MAX_BYTES));
            views.push(r.cost(area_cost.as_ref()));
        }
    }
    findings.into_values().collect()
}
