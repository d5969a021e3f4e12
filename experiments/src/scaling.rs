//! `scaling`: how the cost of one process listing grows with the machine — against the number of
//! processes (the lab workload plus N sleeping processes forked by `nd-sleepers`) and against
//! guest RAM size (the lab workload alone).
//!
//! Each run boots one lab guest (`harness::lab::shellport`) with the given RAM. For every level,
//! the guest's agent records the truth, QEMU is paused, and `harness::introspect::ps` (method
//! `auto`) lists the tasks from the guest's live RAM file once untimed (mapping the file's pages
//! into this process) and then `repeats` times — target `image` — and then the same over the
//! wire: `emulator serve --format live` serves the RAM file on a loopback address at the
//! adapter's MPS 256 and the listing reads it through `harness::dma::Requester` — target
//! `wire` with the requester's defaults (MRRS 512, batched on one UDP port with GSO/GRO), and
//! beside it `wire-libtlp` with libtlp's data path (each request on its tag's port, one
//! datagram per system call, 16 in flight), the default before issue 14. The three alternate
//! per repeat. Then QEMU continues and more sleepers are added for the next level.
//!
//! Invariant: `tasks_truth` is the guest's own count at that level, `tasks_found` and the costs
//! are measured by that repeat; the process axis only ever adds processes, never assumes them.
//!
//! ```text
//! results/scaling.csv  axis,kernel,target,guest_ram_mib,processes_added,tasks_truth,
//!                      tasks_found,recall,repeat,ok,error,wall_ms,scan_ms,walk_ms,dma_reads,
//!                      dma_bytes,round_trips,walk_round_trips,scan_bytes,symbols_bytes,
//!                      layout_bytes,walk_bytes,index_used, + stamp
//! ```
//!
//! `round_trips` are dependent batches of reads (each waits for the one before); `*_bytes` the
//! bytes read per phase; `index_used` the task records the walk took from its read-ahead of the
//! pid allocator (see `harness::introspect::pidindex`).

use std::fmt;
use std::time::Duration;

use emulator::image::{Format, Machine};
use emulator::mem::{Deadline, PhysMem};
use harness::introspect::layout::MethodKind;
use harness::lab::cache::Cache;
use harness::lab::shellport::{ShellGuest, ShellGuestOptions};
use serde::{Deserialize, Serialize};

use crate::analysis;
use crate::experiment::{Context, Experiment, RunError};
use crate::served::Served;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalingRow {
    /// `processes` or `ram`: which quantity this series varies.
    pub axis: String,
    pub kernel: String,
    /// Where the memory was read: `image` (the live RAM file) or `wire` (NetTLP via the emulator).
    pub target: String,
    pub guest_ram_mib: u32,
    /// Sleeping processes added to the lab workload.
    pub processes_added: u32,
    /// Threads in the guest's own truth at this level.
    pub tasks_truth: usize,
    pub tasks_found: usize,
    pub recall: f64,
    pub repeat: u32,
    pub ok: bool,
    pub error: String,
    pub wall_ms: f64,
    pub scan_ms: f64,
    pub walk_ms: f64,
    pub dma_reads: u64,
    pub dma_bytes: u64,
    /// Dependent batches of reads (round trips over the wire), in all and in the walk.
    #[serde(default)]
    pub round_trips: u64,
    #[serde(default)]
    pub walk_round_trips: u64,
    /// Bytes read per phase.
    #[serde(default)]
    pub scan_bytes: u64,
    #[serde(default)]
    pub symbols_bytes: u64,
    #[serde(default)]
    pub layout_bytes: u64,
    #[serde(default)]
    pub walk_bytes: u64,
    /// Task records taken from the walk's read-ahead of the pid allocator.
    #[serde(default)]
    pub index_used: u64,
}

/// One guest boot: a RAM size and the process levels to measure in it.
pub struct ScalingRun {
    pub axis: &'static str,
    pub kernel: String,
    pub ram_mib: u32,
    /// Cumulative sleepers at each level (ascending).
    pub levels: Vec<u32>,
    pub repeats: u32,
}

impl fmt::Display for ScalingRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} MiB +{:?} processes", self.axis, self.kernel, self.ram_mib, self.levels)
    }
}

pub struct Scaling;

/// The endpoint serving the guest's RAM file for the `wire` target.
const WIRE_ADDR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 79, 1);
/// libtlp's data path: each request on its tag's UDP port, 16 in flight (the requester's
/// defaults before issue 14).
pub const LIBTLP: &str = "port=tag&inflight=16";
/// Longest one listing over the wire may take.
const WIRE_BUDGET: Duration = Duration::from_secs(300);

fn row(run: &ScalingRun, target: &str, level: u32, repeat: u32, timed: analysis::Timed, truth: &[harness::lab::truth::Thread]) -> ScalingRow {
    let mut r = ScalingRow {
        axis: run.axis.into(),
        kernel: run.kernel.clone(),
        target: target.into(),
        guest_ram_mib: run.ram_mib,
        processes_added: level,
        tasks_truth: truth.len(),
        tasks_found: 0,
        recall: 0.0,
        repeat,
        ok: false,
        error: String::new(),
        wall_ms: timed.wall_ms,
        scan_ms: 0.0,
        walk_ms: 0.0,
        dma_reads: timed.reads.reads,
        dma_bytes: timed.reads.bytes,
        round_trips: timed.reads.batches,
        walk_round_trips: 0,
        scan_bytes: 0,
        symbols_bytes: 0,
        layout_bytes: 0,
        walk_bytes: 0,
        index_used: 0,
    };
    match timed.result {
        Ok(report) => {
            let (s, _) = analysis::score(&report.rows, truth);
            let phase = |n: &str| report.stats.phases.iter().find(|p| p.name == n);
            let ms = |n: &str| phase(n).map_or(0.0, |p| p.ms);
            let bytes = |n: &str| phase(n).map_or(0, |p| p.bytes);
            r.ok = true;
            r.tasks_found = s.tasks_found;
            r.recall = s.recall;
            r.scan_ms = ms("scan");
            r.walk_ms = ms("walk");
            r.walk_round_trips = phase("walk").map_or(0, |p| p.batches);
            (r.scan_bytes, r.symbols_bytes, r.layout_bytes, r.walk_bytes) = (bytes("scan"), bytes("symbols"), bytes("layout"), bytes("walk"));
            r.index_used = report.stats.index.used as u64;
            r.error = report.walk_error.map(|e| e.to_string()).unwrap_or_default();
        }
        Err(e) => r.error = analysis::one_line(&e.to_string(), 300),
    }
    r
}

/// Process levels and the RAM they run in; RAM sizes of the RAM axis.
pub fn levels(quick: bool) -> (Vec<u32>, u32, Vec<u32>) {
    if quick {
        (vec![0, 100, 1000], 512, vec![256, 1024])
    } else {
        // 10,000 sleepers need ~0.7 GiB of kernel memory and a threads-max above 10,000
        // (the kernel sets it from RAM: 2 GiB gives 16,384).
        (vec![0, 100, 300, 1000, 3000, 10_000], 2048, vec![256, 512, 1024, 2048, 4096])
    }
}

impl Experiment for Scaling {
    type Row = ScalingRow;
    type Run = ScalingRun;

    fn name(&self) -> &'static str {
        "scaling"
    }
    fn module(&self) -> &'static str {
        "scaling"
    }
    fn plan(&self, ctx: &Context) -> Result<Vec<ScalingRun>, RunError> {
        let kernel = analysis::entries(ctx, 1)?
            .into_iter()
            .next()
            .map(|e| e.name)
            .ok_or_else(|| RunError::Prerequisite(format!("no corpus entry; {}", analysis::BUILD_CORPUS)))?;
        let repeats = if ctx.quick { 2 } else { 3 };
        let (procs, procs_ram, rams) = levels(ctx.quick);
        let mut plan = vec![ScalingRun { axis: "processes", kernel: kernel.clone(), ram_mib: procs_ram, levels: procs, repeats }];
        plan.extend(rams.into_iter().map(|ram_mib| ScalingRun {
            axis: "ram",
            kernel: kernel.clone(),
            ram_mib,
            levels: vec![0],
            repeats,
        }));
        Ok(plan)
    }
    fn run(&self, _ctx: &Context, run: &ScalingRun) -> Result<Vec<ScalingRow>, RunError> {
        let lab = |what: &str, e: harness::lab::Error| RunError::Prerequisite(format!("{} {what}: {e}", run.kernel));
        let cache = Cache::open_default();
        let opts = ShellGuestOptions { memory_mib: Some(run.ram_mib), ..Default::default() };
        let mut g = ShellGuest::boot(&cache, &run.kernel, &opts).map_err(|e| lab("boot", e))?;
        let mut rows = Vec::new();
        let mut have = 0u32;
        for &level in &run.levels {
            if level > have {
                g.add_sleepers(level - have, Duration::from_secs(900)).map_err(|e| lab("nd-sleepers", e))?;
                have = level;
            }
            let truth = g.truth().map_err(|e| lab("truth", e))?;
            g.guest().and_then(|q| q.qmp().stop()).map_err(|e| lab("pause", e))?;
            let mem = emulator::image::open(g.ram_path(), Some(Format::Live(Machine::Pc)), None)
                .map_err(|e| RunError::Prerequisite(format!("{}: {e}", g.ram_path().display())))?;
            let inputs = analysis::layout_inputs();
            // The same paused guest over the wire: its RAM file served by `emulator serve`.
            // Both ends busy-poll as in the wire experiment (the paused guest leaves the cores free).
            let served = Served::start_polling(g.ram_path(), Some("live"), WIRE_ADDR, &[])?;
            let wires = [("wire", served.requester("")?), ("wire-libtlp", served.requester(LIBTLP)?)];
            // Repeat 0 is an untimed warm-up of each: this process maps the RAM file's pages and
            // fills its caches; then the targets alternate, so that load changes hit them alike.
            for repeat in 0..=run.repeats {
                let timed = analysis::run_ps(mem.as_ref(), MethodKind::Auto, &inputs);
                if repeat > 0 {
                    rows.push(row(run, "image", level, repeat, timed, &truth));
                }
                for (target, req) in &wires {
                    let mem = Deadline::new(req, WIRE_BUDGET);
                    let timed = analysis::run_ps(&mem as &dyn PhysMem, MethodKind::Auto, &inputs);
                    if repeat > 0 {
                        rows.push(row(run, target, level, repeat, timed, &truth));
                    }
                }
            }
            drop(wires);
            drop(served);
            g.guest().and_then(|q| q.qmp().cont()).map_err(|e| lab("continue", e))?;
        }
        g.shutdown().map_err(|e| lab("shutdown", e))?;
        Ok(rows)
    }
    fn headline(&self, rows: &[ScalingRow]) -> Vec<String> {
        let mut out = Vec::new();
        for axis in ["processes", "ram"] {
            for target in ["image", "wire", "wire-libtlp"] {
                let of: Vec<&ScalingRow> = rows.iter().filter(|r| r.axis == axis && r.target == target && r.ok).collect();
                let mut keys: Vec<(u32, u32)> = of.iter().map(|r| (r.guest_ram_mib, r.processes_added)).collect();
                keys.sort();
                keys.dedup();
                let parts: Vec<String> = keys
                    .iter()
                    .map(|&(ram, added)| {
                        let same: Vec<&&ScalingRow> = of.iter().filter(|r| r.guest_ram_mib == ram && r.processes_added == added).collect();
                        let ms = crate::timing::median(same.iter().map(|r| r.wall_ms).collect());
                        let found = same.iter().map(|r| r.tasks_found).max().unwrap_or(0);
                        let reads = same.iter().map(|r| r.dma_reads).max().unwrap_or(0);
                        let trips = same.iter().map(|r| r.round_trips).max().unwrap_or(0);
                        let bytes = same.iter().map(|r| r.dma_bytes).max().unwrap_or(0);
                        let image = rows.iter().filter(|r| r.axis == axis && r.target == "image" && r.ok && r.guest_ram_mib == ram && r.processes_added == added);
                        let image_ms = crate::timing::median(image.map(|r| r.wall_ms).collect());
                        let ratio = if target != "image" && image_ms > 0.0 { format!(" ({:.1}x the image)", ms / image_ms) } else { String::new() };
                        format!(
                            "{found} tasks/{ram} MiB: {ms:.0} ms{ratio}, {reads} reads, {trips} round trips, {:.2} MB ({:.2} % of RAM)",
                            bytes as f64 / 1e6,
                            bytes as f64 * 100.0 / (f64::from(ram) * 1048576.0)
                        )
                    })
                    .collect();
                if !parts.is_empty() {
                    out.push(format!("{axis} ({target}): {}", parts.join("; ")));
                }
            }
        }
        out
    }
}
