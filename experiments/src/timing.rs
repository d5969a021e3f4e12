//! `timing`: where the time of one process listing goes, per layout method — the engine's own
//! phase clock (`ps::Stats::phases`: `scan` finds the kernel, `symbols` decodes kallsyms and
//! KASLR, `layout` runs the method, `walk` lists the tasks) plus the total, on each corpus
//! kernel's running ELF dump, repeated.
//!
//! The thesis method is measured twice: `warm` (its per-config layout cache filled by an earlier
//! run in this process) and `cold` — a fresh `harness ps` process whose `$XDG_CACHE_HOME` is an
//! empty directory, so it extracts the kernel source, configures and prepares it and runs the
//! offsetof probe, exactly what a first run on a new configuration pays. `isf` gets an ISF
//! written (untimed) from the kernel's panicked dump, as in config-matrix. Methods without their
//! prerequisite on a kernel give one `total` row with `ok = false` and the reason.
//!
//! Invariant: every row is one phase of one measured run (phases of a run sum to at most its
//! total); nothing is averaged here — the figure takes medians over `repeat`.
//!
//! ```text
//! results/timing.csv  kernel,method,method_used,cache,repeat,phase,ok,error,wall_ms,dma_reads,
//!                     dma_bytes, + stamp
//! ```

use std::fmt;
use std::process::Command;
use std::time::Duration;

use harness::introspect::layout::MethodKind;
use harness::introspect::ps::Stats;
use harness::lab::corpus::{DumpFormat, Entry, Mode};
use serde::{Deserialize, Serialize};

use crate::analysis;
use crate::experiment::{Context, Experiment, RunError};
use crate::process;

/// The engine's phases, in order, then the whole call.
pub const PHASES: [&str; 5] = ["scan", "symbols", "layout", "walk", "total"];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimingRow {
    pub kernel: String,
    pub method: String,
    pub method_used: String,
    /// `warm` / `cold` for the thesis method's layout cache; `none` for methods without one.
    pub cache: String,
    pub repeat: u32,
    /// `scan`, `symbols`, `layout`, `walk` or `total`.
    pub phase: String,
    pub ok: bool,
    pub error: String,
    pub wall_ms: f64,
    pub dma_reads: u64,
    pub dma_bytes: u64,
}

impl TimingRow {
    /// The `total` row of one repeat, not measured yet (not ok, nothing counted).
    pub fn unmeasured(kernel: &str, method: &str, cache: &str, repeat: u32) -> TimingRow {
        TimingRow {
            kernel: kernel.into(),
            method: method.into(),
            method_used: String::new(),
            cache: cache.into(),
            repeat,
            phase: "total".into(),
            ok: false,
            error: String::new(),
            wall_ms: 0.0,
            dma_reads: 0,
            dma_bytes: 0,
        }
    }
}

/// One (kernel, method, cache) measured `repeats` times.
pub struct TimingRun {
    pub entry: Entry,
    pub method: MethodKind,
    pub cache: Cache,
    pub repeats: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cache {
    None,
    Warm,
    Cold,
}

impl Cache {
    pub fn as_str(self) -> &'static str {
        match self {
            Cache::None => "none",
            Cache::Warm => "warm",
            Cache::Cold => "cold",
        }
    }
}

impl fmt::Display for TimingRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} x{}", self.entry.name, self.method, self.cache.as_str(), self.repeats)
    }
}

pub struct Timing;

const QUICK_KERNELS: usize = 2;

impl Experiment for Timing {
    type Row = TimingRow;
    type Run = TimingRun;

    fn name(&self) -> &'static str {
        "timing"
    }
    fn module(&self) -> &'static str {
        "timing"
    }
    fn plan(&self, ctx: &Context) -> Result<Vec<TimingRun>, RunError> {
        let entries = analysis::entries(ctx, QUICK_KERNELS)?;
        let repeats = if ctx.quick { 2 } else { 10 };
        let mut plan = Vec::new();
        for e in entries {
            for method in analysis::METHODS {
                let cache = if method == MethodKind::Thesis { Cache::Warm } else { Cache::None };
                plan.push(TimingRun { entry: e.clone(), method, cache, repeats });
            }
            // A cold thesis run rebuilds from the tarball (minutes): not in --quick. Only the 6.1
            // kernels, whose tarball the machine has (the others' would be a download first).
            let series = harness::introspect::layout::thesis::series_of(&e.release);
            if !ctx.quick && e.flags.ikconfig && series.as_deref() == Some("6.1") {
                plan.push(TimingRun { entry: e, method: MethodKind::Thesis, cache: Cache::Cold, repeats: 1 });
            }
        }
        Ok(plan)
    }
    fn run(&self, _ctx: &Context, run: &TimingRun) -> Result<Vec<TimingRow>, RunError> {
        match run.cache {
            Cache::Cold => cold_thesis(&run.entry),
            _ => in_process(run),
        }
    }
    fn headline(&self, rows: &[TimingRow]) -> Vec<String> {
        let mut out = Vec::new();
        let mut keys: Vec<(String, String)> = rows
            .iter()
            .filter(|r| r.ok && r.phase == "total")
            .map(|r| (r.method.clone(), r.cache.clone()))
            .collect();
        keys.sort();
        keys.dedup();
        for (method, cache) in keys {
            let mut v: Vec<f64> = rows
                .iter()
                .filter(|r| r.ok && r.phase == "total" && r.method == method && r.cache == cache)
                .map(|r| r.wall_ms)
                .collect();
            v.sort_by(f64::total_cmp);
            let kernels = {
                let mut k: Vec<&str> = rows
                    .iter()
                    .filter(|r| r.ok && r.phase == "total" && r.method == method && r.cache == cache)
                    .map(|r| r.kernel.as_str())
                    .collect();
                k.sort();
                k.dedup();
                k.len()
            };
            let cache = if cache == "none" { String::new() } else { format!(" ({cache})") };
            out.push(format!(
                "{method}{cache}: median total {:.1} ms over {} runs on {kernels} kernels (min {:.1}, max {:.1})",
                v[v.len() / 2],
                v.len(),
                v[0],
                v[v.len() - 1]
            ));
        }
        out
    }
}

fn in_process(run: &TimingRun) -> Result<Vec<TimingRow>, RunError> {
    let e = &run.entry;
    let (mem, _) = analysis::open_dump(e, Mode::Running, DumpFormat::Elf)?;
    let mut inputs = analysis::layout_inputs();
    // `isf` reads an ISF written beforehand (untimed) from the kernel's panicked dump, as in
    // config-matrix: a profile made once per kernel build.
    let _isf = if run.method == MethodKind::Isf {
        match crate::config_matrix::isf_from_other_dump(e, Mode::Running) {
            Ok(file) => {
                inputs.isf = Some(file.path.clone());
                Some(file)
            }
            Err(why) => return Err(RunError::Prerequisite(format!("{}: no ISF for the isf method: {why}", e.name))),
        }
    } else {
        None
    };
    // Untimed warm-up: pages of the dump in the page cache, the thesis layout in its cache.
    let warm = analysis::run_ps(mem.as_ref(), run.method, &inputs);
    let base = |repeat: u32| TimingRow::unmeasured(&e.name, run.method.name(), run.cache.as_str(), repeat);
    if let Err(err) = &warm.result {
        let mut r = base(0);
        r.error = analysis::one_line(&err.to_string(), 300);
        r.wall_ms = warm.wall_ms;
        r.dma_reads = warm.reads.reads;
        r.dma_bytes = warm.reads.bytes;
        return Ok(vec![r]);
    }
    let mut rows = Vec::new();
    for repeat in 1..=run.repeats {
        let timed = analysis::run_ps(mem.as_ref(), run.method, &inputs);
        match timed.result {
            Ok(report) => {
                let mut run_rows = rows_from_stats(&base(repeat), &report.stats);
                if let Some(total) = run_rows.last_mut() {
                    total.error = report.walk_error.map(|e| e.to_string()).unwrap_or_default();
                }
                rows.extend(run_rows);
            }
            Err(err) => {
                let mut r = base(repeat);
                r.error = analysis::one_line(&err.to_string(), 300);
                r.wall_ms = timed.wall_ms;
                rows.push(r);
            }
        }
    }
    Ok(rows)
}

/// A cold thesis run (source extraction, kbuild, the offsetof probe) is killed after this long.
const COLD_TIMEOUT: Duration = Duration::from_secs(1800);

/// The thesis method in a fresh process with an empty cache directory.
fn cold_thesis(e: &Entry) -> Result<Vec<TimingRow>, RunError> {
    let harness = process::sibling_binary("harness")?;
    let dump = e
        .dump_path(Mode::Running, DumpFormat::Elf)
        .ok_or_else(|| RunError::Prerequisite(format!("{}: no running dump; {}", e.name, analysis::BUILD_CORPUS)))?;
    let source = std::path::PathBuf::from(analysis::KERNEL_SOURCE);
    if !source.is_file() {
        return Err(RunError::Prerequisite(format!("{} missing: run `bash scripts/setup`", analysis::KERNEL_SOURCE)));
    }
    let scratch = std::env::temp_dir().join(format!("netdma-cold-thesis-{}-{}", e.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(|err| RunError::Prerequisite(format!("{}: {err}", scratch.display())))?;
    let mut cmd = Command::new(&harness);
    cmd.args(analysis::HARNESS_ERRORS)
        .args(["ps", "--method", "thesis", "--format", "json", "--stats", "--image"])
        .arg(&dump)
        .arg("--kernel-source")
        .arg(&source)
        .env("XDG_CACHE_HOME", &scratch);
    let done = process::run(cmd, &scratch, "cold-thesis", COLD_TIMEOUT);
    let _ = std::fs::remove_dir_all(&scratch);
    let done = done.map_err(|err| RunError::Prerequisite(format!("running {}: {err}", harness.display())))?;
    let mut row = TimingRow::unmeasured(&e.name, "thesis", "cold", 1);
    let Some(stats) = stats_line(&done.stderr) else {
        row.error = analysis::one_line(&analysis::harness_failure(&done), 300);
        return Ok(vec![row]);
    };
    Ok(rows_from_stats(&row, &stats))
}

/// The `--stats` line of a `harness ps` run: the last stderr line that parses as [`Stats`].
pub fn stats_line(stderr: &str) -> Option<Stats> {
    stderr.lines().rev().find_map(|l| serde_json::from_str::<Stats>(l.trim()).ok())
}

/// One row per phase of a run, then its `total`, from the engine's own clock.
fn rows_from_stats(base: &TimingRow, stats: &Stats) -> Vec<TimingRow> {
    let row = |phase: Option<&str>, wall_ms: f64, dma_reads: u64, dma_bytes: u64| {
        let mut r = base.clone();
        r.method_used = stats.method.clone();
        r.ok = true;
        if let Some(p) = phase {
            r.phase = p.to_owned();
        }
        r.wall_ms = wall_ms;
        r.dma_reads = dma_reads;
        r.dma_bytes = dma_bytes;
        r
    };
    let mut rows: Vec<TimingRow> = stats.phases.iter().map(|p| row(Some(&p.name), p.ms, p.reads, p.bytes)).collect();
    rows.push(row(None, stats.wall_ms, stats.dma_reads, stats.dma_bytes));
    rows
}

/// Median of `v` (NaN for none).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_line_is_the_last_json_with_phases() {
        // A `--stats` line as `harness ps` prints it, after log lines and other JSON.
        let stats = r#"{"method":"thesis","kernel_release":"6.1.0-1-amd64","kaslr":{"virt_offset":"0x1","phys_base":"0x2","text_phys":"0x3","page_offset_base":""},"dma_reads":3,"dma_bytes":12,"dma_batches":1,"ram_bytes":4096,"scan_percent_of_ram":0.2,"wall_ms":5.0,"phases":[{"name":"scan","ms":1.5,"reads":2,"bytes":8,"batches":1}],"tasks":1,"walk_error":null}"#;
        let err = format!("INFO something\n{{\"x\":1}}\n{stats}\n");
        let v = stats_line(&err).unwrap();
        let base = TimingRow::unmeasured("k", "thesis", "cold", 1);
        let rows = rows_from_stats(&base, &v);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].phase.as_str(), rows[0].wall_ms, rows[0].dma_reads), ("scan", 1.5, 2));
        assert_eq!((rows[1].phase.as_str(), rows[1].wall_ms, rows[1].dma_bytes), ("total", 5.0, 12));
        assert!(rows.iter().all(|r| r.method_used == "thesis" && r.ok));
        assert!(stats_line("no json here").is_none());
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }
}
