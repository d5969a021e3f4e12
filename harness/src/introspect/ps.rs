//! `ps` from physical memory: the library entry point behind `harness ps`.
//!
//! Phases, each timed and counted: `scan` (find the kernel), `symbols` (kallsyms, KASLR,
//! direct map), `layout` (the chosen method), `walk` (tasks, names, command lines).
//!
//! Invariant: a report is returned whenever the kernel and a layout were found, even if the walk
//! stopped early — then `walk_error` says why and `rows` holds every task read before it.

use std::time::Instant;

use emulator::mem::{Counting, Counts, PhysMem};

use super::anchor::{self, AnchorError};
use super::identity::{identify, IdentityError, KernelIdentity, LayoutCache};
use super::kernel::{Kernel, KernelError, KernelInfo};
use super::layout::{learn, Layout, LayoutError, LayoutInputs, MethodKind};
use super::scan::ScanConfig;
use super::pidindex::PidIndex;
use super::walk::{probe, walk_again, CmdlineCache, Consistency, IndexUse, TaskIndex, Thread, WalkConfig, WalkError};
use super::cmdline::join_args;

#[derive(Debug, Clone, Default)]
pub struct PsOptions {
    pub method: Option<MethodKind>,
    pub inputs: LayoutInputs,
    pub scan: ScanConfig,
    pub walk: WalkConfig,
}

/// One output row: one thread.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Row {
    pub pid: i32,
    pub tgid: i32,
    pub ppid: i32,
    pub uid: u32,
    pub state: String,
    pub comm: String,
    pub cmdline: String,
    /// Threads in the group (group leaders only).
    pub threads: Option<u32>,
    /// Start time in ns since boot (`start_boottime`).
    pub start_time: u64,
    pub kthread: bool,
}

impl Row {
    pub fn from_thread(t: &Thread) -> Row {
        Row {
            pid: t.pid,
            tgid: t.tgid,
            ppid: t.ppid,
            uid: t.uid,
            state: t.state.to_string(),
            comm: String::from_utf8_lossy(&t.comm).into_owned(),
            cmdline: String::from_utf8_lossy(&join_args(&t.cmdline)).into_owned(),
            threads: t.threads,
            start_time: t.start_time_ns,
            kthread: t.kthread,
        }
    }
}

/// Cost of one phase.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Phase {
    pub name: String,
    pub ms: f64,
    pub reads: u64,
    pub bytes: u64,
    /// Batches of reads ([`Counts::batches`]): each waits for the one before, so over the wire
    /// each is one round trip (printed as `round_trips`).
    #[serde(rename = "round_trips", alias = "batches")]
    pub batches: u64,
}

/// KASLR-derived values, as hex strings for humans and JSON alike.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Kaslr {
    pub virt_offset: String,
    pub phys_base: String,
    pub text_phys: String,
    pub page_offset_base: String,
}

/// The `--stats` line (`harness ps --stats` prints it as JSON on stderr; experiments that run
/// `harness` as a process read it back as this type).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    pub method: String,
    pub kernel_release: String,
    pub kaslr: Kaslr,
    pub dma_reads: u64,
    pub dma_bytes: u64,
    /// Dependent batches of reads, round trips over the wire (see [`Phase::batches`]).
    #[serde(rename = "dma_round_trips", alias = "dma_batches")]
    pub dma_batches: u64,
    pub ram_bytes: u64,
    pub scan_percent_of_ram: f64,
    pub wall_ms: f64,
    pub phases: Vec<Phase>,
    pub tasks: usize,
    pub walk_error: Option<String>,
    /// How much memory changed under the walk (zero on a dump).
    #[serde(default)]
    pub consistency: Consistency,
    /// How much the walk's index of tasks (the pid allocator) saved it.
    #[serde(default)]
    pub index: IndexUse,
}

/// Everything `ps` learned.
#[derive(Debug)]
pub struct PsReport {
    pub rows: Vec<Row>,
    pub threads: Vec<Thread>,
    pub walk_error: Option<WalkError>,
    pub kernel: KernelInfo,
    pub method: MethodKind,
    pub layout: Layout,
    pub stats: Stats,
    /// The kernel build's identity, when a layout cache was used.
    pub identity: Option<KernelIdentity>,
    /// Whether the layout came from the cache (`None`: no cache).
    pub cache_hit: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum PsError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Anchor(#[from] AnchorError),
    #[error("init_task unknown")]
    NoInitTask,
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Another thread is learning this build's layout and the caller chose not to wait.
    #[error("the layout of this kernel build is being learned for another machine")]
    LayoutBusy,
}

/// How [`ps_cached`] uses a layout cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheUse<'c> {
    pub cache: &'c LayoutCache,
    /// Wait while another thread learns the same build (else: [`PsError::LayoutBusy`]).
    pub wait: bool,
}

/// Times and read counts per phase (shared with `printk::dmesg`).
pub(crate) struct Clock<'c, M: PhysMem> {
    mem: &'c Counting<M>,
    pub(crate) t0: Instant,
    last: (Instant, Counts),
    pub(crate) phases: Vec<Phase>,
}

impl<'c, M: PhysMem> Clock<'c, M> {
    /// Counts from the counter's value now.
    pub(crate) fn new(mem: &'c Counting<M>) -> Self {
        let t0 = Instant::now();
        Clock { mem, t0, last: (t0, mem.snapshot()), phases: Vec::new() }
    }

    pub(crate) fn lap(&mut self, name: &'static str) {
        let now = (Instant::now(), self.mem.snapshot());
        let d = now.1.since(self.last.1);
        self.phases.push(Phase {
            name: name.to_owned(),
            ms: (now.0 - self.last.0).as_secs_f64() * 1e3,
            reads: d.reads,
            bytes: d.bytes,
            batches: d.batches,
        });
        self.last = now;
    }
}

/// Tasks followed to accept a layout in `auto`.
const VALIDATE_TASKS: usize = 16;

/// Why a layout does not fit this kernel.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error(transparent)]
    Anchor(#[from] AnchorError),
    #[error("init_task unknown")]
    NoInitTask,
    #[error(transparent)]
    Walk(#[from] WalkError),
}

/// Does `layout` fit this kernel? Anchors `init_task` and the direct map with it, then follows
/// the first tasks of the list.
pub fn validate(kernel: &mut Kernel<'_>, layout: &Layout) -> Result<(), ValidateError> {
    validate_with(kernel, layout, None)
}

/// [`validate`], reading the first tasks' records in one batch from where a pid `index` that is
/// ready ([`PidIndex::is_ready`]) says they are, rather than one list hop per round trip (the
/// list still decides which tasks are checked, and how).
fn validate_with(kernel: &mut Kernel<'_>, layout: &Layout, index: Option<&mut PidIndex>) -> Result<(), ValidateError> {
    anchor::complete(kernel, layout)?;
    let init = kernel.info.init_task.ok_or(ValidateError::NoInitTask)?;
    let index = index.filter(|i| i.is_ready()).map(|i| i as &mut dyn TaskIndex);
    probe(&kernel.space, layout, init, VALIDATE_TASKS, index)?;
    Ok(())
}

/// What [`prepare`] learned: the kernel, its layout and how it was had.
pub(crate) struct Prepared<'m> {
    pub kernel: Kernel<'m>,
    pub method: MethodKind,
    pub layout: Layout,
    /// The build's identity, read when a cache was given.
    pub identity: Option<KernelIdentity>,
    /// Whether the cache held the layout (`None`: no cache).
    pub cache_hit: Option<bool>,
    /// The walk's index of tasks ([`PidIndex`]), learned before the layout so that `auto`'s
    /// check of a layout reads through it too.
    pub index: PidIndex,
}

/// The phases every task view shares: find the kernel (`scan`), open it (`symbols`), with a
/// cache read the build's identity (`identity`), learn the layout or take the cached one, and
/// anchor `init_task` and the direct map with it (`layout`).
pub(crate) fn prepare<'m, M: PhysMem>(
    counted: &'m Counting<M>,
    opts: &PsOptions,
    cache: Option<CacheUse<'_>>,
    clock: &mut Clock<'_, M>,
) -> Result<Prepared<'m>, PsError> {
    let found = Kernel::scan(counted, &opts.scan)?;
    clock.lap("scan");
    let mut kernel = Kernel::open(counted, found)?;
    clock.lap("symbols");
    let identity = match cache {
        Some(_) => {
            let id = identify(&kernel)?;
            clock.lap("identity");
            Some(id)
        }
        None => None,
    };
    let method = opts.method.unwrap_or(MethodKind::Auto);
    let index = std::cell::RefCell::new(PidIndex::learn(&kernel));
    // The layout the check last accepted: `init_task` is anchored under it already.
    let accepted = std::cell::RefCell::new(None::<Layout>);
    let check = |k: &mut Kernel<'_>, l: &Layout| {
        let r = validate_with(k, l, Some(&mut index.borrow_mut()));
        *accepted.borrow_mut() = r.is_ok().then(|| l.clone());
        r
    };
    let (method, layout, cache_hit) = match (cache, &identity) {
        (Some(c), Some(id)) => {
            let learned = c.cache.get_or_learn(id, c.wait, || learn(method, &mut kernel, &opts.inputs, &check))?;
            let ((m, l), hit) = learned.ok_or(PsError::LayoutBusy)?;
            (m, l, Some(hit))
        }
        _ => {
            let (m, l) = learn(method, &mut kernel, &opts.inputs, &check)?;
            (m, l, None)
        }
    };
    if accepted.into_inner().as_ref() != Some(&layout) {
        anchor::complete(&mut kernel, &layout)?;
    }
    let mut index = index.into_inner();
    // The walk follows at once: it takes the tasks the check's walk of the pid tree named.
    index.reuse_last();
    if !index.is_ready() {
        // Learned again now that the layout has anchored `init_task` (kernels whose kallsyms
        // lacks `init_pid_ns` find the namespace through it).
        index = PidIndex::learn(&kernel);
    }
    clock.lap("layout");
    Ok(Prepared { kernel, method, layout, identity, cache_hit, index })
}

/// List the processes of the machine whose memory is `mem`.
pub fn ps(mem: &dyn PhysMem, opts: &PsOptions) -> Result<PsReport, PsError> {
    ps_counted(&Counting::new(mem), opts)
}

/// [`ps`] over a counter the caller holds, so that the reads of a run that fails are known
/// too; [`Stats`] counts from the counter's value at the start.
pub fn ps_counted<M: PhysMem>(counted: &Counting<M>, opts: &PsOptions) -> Result<PsReport, PsError> {
    ps_cached(counted, opts, None)
}

/// [`ps_counted`] with a layout cache that waits for a build being learned elsewhere.
pub fn ps_with_cache<M: PhysMem>(counted: &Counting<M>, opts: &PsOptions, cache: &LayoutCache) -> Result<PsReport, PsError> {
    ps_cached(counted, opts, Some(CacheUse { cache, wait: true }))
}

/// [`ps_counted`] with a layout cache: the kernel's identity is read after its symbols (phase
/// `identity`) and a layout learned for the same build is reused, so the `layout` phase costs
/// only anchoring `init_task`; a layout learned here is added to the cache.
pub fn ps_cached<M: PhysMem>(counted: &Counting<M>, opts: &PsOptions, cache: Option<CacheUse<'_>>) -> Result<PsReport, PsError> {
    // Ranges come from the image's headers: a sum past 2^64 saturates.
    let ram_bytes: u64 = counted.ranges().iter().fold(0u64, |acc, r| acc.saturating_add(r.end.0.saturating_sub(r.start.0)));
    let start = counted.snapshot();
    let mut clock = Clock::new(counted);

    let Prepared { kernel, method, layout, identity, cache_hit, mut index } = prepare(counted, opts, cache, &mut clock)?;
    let init_task = kernel.info.init_task.ok_or(PsError::NoInitTask)?;
    let outcome = walk_again(&kernel.space, &layout, init_task, opts.walk, &mut CmdlineCache::default(), Some(&mut index));
    clock.lap("walk");

    let mut threads = outcome.threads;
    threads.sort_by_key(|t| (t.pid, t.tgid));
    let rows: Vec<Row> = threads.iter().map(Row::from_thread).collect();
    let total = counted.snapshot().since(start);
    let scan_bytes = clock.phases.first().map(|p| p.bytes).unwrap_or(0);
    let walk_error = outcome.error;
    let info = kernel.info.clone();
    let stats = Stats {
        method: method.to_string(),
        kernel_release: info.release.clone(),
        kaslr: Kaslr {
            virt_offset: format!("{:#x}", info.kaslr_virt_offset),
            phys_base: format!("{:#x}", info.phys_base),
            text_phys: format!("{:#x}", info.text_phys.0),
            page_offset_base: info.page_offset_base.map(|p| format!("{p:#x}")).unwrap_or_default(),
        },
        dma_reads: total.reads,
        dma_bytes: total.bytes,
        dma_batches: total.batches,
        ram_bytes,
        scan_percent_of_ram: if ram_bytes > 0 { scan_bytes as f64 * 100.0 / ram_bytes as f64 } else { 0.0 },
        wall_ms: clock.t0.elapsed().as_secs_f64() * 1e3,
        phases: clock.phases,
        tasks: rows.len(),
        walk_error: walk_error.as_ref().map(|e| e.to_string()),
        consistency: outcome.consistency,
        index: outcome.index,
    };
    Ok(PsReport { rows, threads, walk_error, kernel: info, method, layout, stats, identity, cache_hit })
}
