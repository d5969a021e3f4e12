//! `forensics`: why did it panic, and what was loaded? The kernel log and the module list read
//! from memory alone (`harness dmesg` and `harness lsmod`, method `auto`, no prior knowledge of
//! the kernel), from each corpus kernel's dumps and over NetTLP from the same dumps served by
//! `emulator serve`, against the guest's serial console and its own `/proc/modules`.
//!
//! Truth is the console (`logs/console.log`, [`harness::lab::console`]): QEMU recorded it from
//! boot through the panic, and the running dump, the panicked dump and the console come from one
//! boot. A row counts the console's kernel lines that appear, in order and verbatim, among the
//! log's lines:
//! - **panicked**: every console line (the oops, the call trace and the panic's last line
//!   included) is expected; `panic_found` is whether the log holds the kernel's
//!   `Kernel panic - not syncing` line;
//! - **running**: the console lines printed before the dump was taken are expected. The dump's
//!   moment is not recorded apart from the log itself, so the lines strictly older than the
//!   log's newest record count (a line with the very timestamp of the newest record may have
//!   been printed just after the dump); a log that lost its newest records is charged for none
//!   of them, which the panicked row (a superset, same boot) would show.
//!
//! Modules: the lab's agent saved `/proc/modules` just before each dump; `modules_exact` is
//! whether `lsmod` listed exactly those lines, every column, in order
//! ([`harness::introspect::compare::module_columns`]). A kernel built without `CONFIG_MODULES`
//! holds none, and `lsmod` saying so (its error names the missing list) counts as exact.
//!
//! Hidden tasks and modules (`harness hidden`, views list, pid, runqueue, modules, mod_tree, module_area;
//! no scan of RAM): on the **infected** mode (a Debian kernel per version, its own boot, the
//! project's test rootkit hiding one process by DKOM and itself from the module list;
//! `infected/infected.json` names both) the truth is that pid and that module; on running and
//! panicked it is nothing. `hidden_*_true` counts findings that are the truth, the rest of
//! `hidden_*_found` are false positives. The infected mode's console is its own boot's
//! (`infected/logs/console.log`), and its `lsmod` truth is `/proc/modules` after the rootkit hid
//! (`modules-after.txt`): the module list as the kernel holds it.
//!
//! Invariant: `matched <= console_lines`, and a run that fails (no ring found, a read that times
//! out) is a row with `ok = false`, its error, and nothing matched; never an omitted row.
//!
//! ```text
//! results/forensics.csv  kernel,release,mode,source,ok,error,method,records,console_lines,
//!                        matched,panic_expected,panic_found,wall_ms,dma_reads,dma_bytes,
//!                        modules_truth,modules_found,modules_exact,lsmod_method,lsmod_ms,
//!                        hidden_ok,hidden_error,hidden_tasks_truth,hidden_tasks_found,
//!                        hidden_tasks_true,hidden_modules_truth,hidden_modules_found,
//!                        hidden_modules_true,hidden_seen_by,hidden_ms,hidden_dma_bytes, + stamp
//! ```

use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use emulator::mem::{Deadline, PhysMem};
use harness::introspect::compare::{module_columns, truth_module_columns};
use harness::introspect::hidden::{hidden, HiddenOptions, Kind as HiddenKind};
use harness::introspect::modules::{lsmod, LsmodError, LsmodOptions};
use harness::introspect::printk::render::text;
use harness::introspect::printk::{dmesg, DmesgOptions, DmesgReport};
use harness::lab::console::{kernel_lines, missing, timestamp_ns};
use harness::lab::corpus::{DumpFormat, Entry, Mode};
use serde::{Deserialize, Serialize};

use crate::analysis;
use crate::experiment::{Context, Experiment, RunError};
use crate::served::Served;

/// Where the dumps are served for the wire rows.
const WIRE_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 81, 1);
/// Longest one log may take over the wire.
const WIRE_BUDGET: Duration = Duration::from_secs(120);
/// The kernel's own words when it panics.
pub const PANIC_LINE: &str = "Kernel panic - not syncing";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ForensicsRow {
    pub kernel: String,
    pub release: String,
    /// `running`, `panicked` or `infected`.
    pub mode: String,
    /// `image` (the dump file) or `wire` (the dump served over NetTLP).
    pub source: String,
    pub ok: bool,
    pub error: String,
    /// The method `auto` used to find the ring (`vmcoreinfo`, `btf`, `inferred`).
    pub method: String,
    /// Records in the log.
    pub records: usize,
    /// Console lines expected in the log (see the module doc).
    pub console_lines: usize,
    /// Of those, the ones found.
    pub matched: usize,
    pub panic_expected: bool,
    pub panic_found: bool,
    pub wall_ms: f64,
    pub dma_reads: u64,
    pub dma_bytes: u64,
    /// Lines of the guest's `/proc/modules`.
    pub modules_truth: usize,
    /// Modules `lsmod` listed (0 when it found no list).
    pub modules_found: usize,
    pub modules_exact: bool,
    /// The layout method `auto` used, or why there was no list.
    pub lsmod_method: String,
    pub lsmod_ms: f64,
    /// `harness hidden` ran with every view it needs (none failed or stopped part-way).
    pub hidden_ok: bool,
    pub hidden_error: String,
    /// Tasks hidden in the guest (1 on an infected dump, else 0).
    pub hidden_tasks_truth: usize,
    /// Tasks `hidden` reported.
    pub hidden_tasks_found: usize,
    /// Of those, the hidden ones.
    pub hidden_tasks_true: usize,
    pub hidden_modules_truth: usize,
    pub hidden_modules_found: usize,
    pub hidden_modules_true: usize,
    /// The views that saw the true findings (`pid+runqueue`, ...; `;` between findings).
    pub hidden_seen_by: String,
    pub hidden_ms: f64,
    pub hidden_dma_bytes: u64,
}

pub struct ForensicsRun {
    pub entry: Entry,
}

impl fmt::Display for ForensicsRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let infected = if self.entry.infected.is_some() { ", infected" } else { "" };
        write!(f, "{} dmesg, lsmod, hidden: running, panicked{infected}; image, wire", self.entry.name)
    }
}

pub struct Forensics;

const QUICK_KERNELS: usize = 1;
const MODES: [Mode; 2] = [Mode::Running, Mode::Panicked];

impl Experiment for Forensics {
    type Row = ForensicsRow;
    type Run = ForensicsRun;

    fn name(&self) -> &'static str {
        "forensics"
    }
    fn module(&self) -> &'static str {
        "forensics"
    }
    fn plan(&self, ctx: &Context) -> Result<Vec<ForensicsRun>, RunError> {
        Ok(analysis::entries(ctx, QUICK_KERNELS)?.into_iter().map(|entry| ForensicsRun { entry }).collect())
    }
    fn run(&self, _ctx: &Context, run: &ForensicsRun) -> Result<Vec<ForensicsRow>, RunError> {
        let e = &run.entry;
        let console_of = |log: &str| -> Result<Vec<String>, RunError> {
            let raw = std::fs::read(e.path(log)).map_err(|err| RunError::Prerequisite(format!("{}: {log}: {err}; {}", e.name, analysis::BUILD_CORPUS)))?;
            Ok(kernel_lines(&raw))
        };
        let console = console_of("logs/console.log")?;
        let mut rows = Vec::new();
        let modes = MODES.into_iter().chain(e.infected.as_ref().map(|_| Mode::Infected));
        for mode in modes {
            let (mem, path) = analysis::open_dump(e, mode, DumpFormat::Elf)?;
            let base = ForensicsRow {
                kernel: e.name.clone(),
                release: e.release.clone(),
                mode: mode.as_str().into(),
                panic_expected: mode == Mode::Panicked,
                ..ForensicsRow::default()
            };
            let prerequisite = |err: harness::lab::Error| RunError::Prerequisite(format!("{}: {err}", e.name));
            let (console, modules, hidden_truth) = match (&e.infected, mode) {
                (Some(inf), Mode::Infected) => {
                    (console_of("infected/logs/console.log")?, inf.modules_after(e).map_err(prerequisite)?, Some((inf.hidden.pid, inf.hidden.module.clone())))
                }
                _ => (console.clone(), e.modules_truth(mode).map_err(prerequisite)?, None),
            };
            let score_all = |row: ForensicsRow, mem: &dyn PhysMem| {
                let row = score(row, mem, &console);
                let row = score_modules(row, mem, &modules);
                score_hidden(row, mem, hidden_truth.as_ref())
            };
            rows.push(score_all(ForensicsRow { source: "image".into(), ..base.clone() }, mem.as_ref()));
            drop(mem);
            let served = Served::start_polling(&path, None, WIRE_ADDR, &[])?;
            let req = served.requester("")?;
            let mem = Deadline::new(&req, WIRE_BUDGET);
            rows.push(score_all(ForensicsRow { source: "wire".into(), ..base }, &mem as &dyn PhysMem));
        }
        Ok(rows)
    }
    fn headline(&self, rows: &[ForensicsRow]) -> Vec<String> {
        let mut out = Vec::new();
        for mode in ["running", "panicked", "infected"] {
            for source in ["image", "wire"] {
                let of: Vec<&ForensicsRow> = rows.iter().filter(|r| r.mode == mode && r.source == source).collect();
                if of.is_empty() {
                    continue;
                }
                let complete = of.iter().filter(|r| r.ok && r.matched == r.console_lines).count();
                let (m, c) = of.iter().fold((0, 0), |(m, c), r| (m + r.matched, c + r.console_lines));
                let panics = of.iter().filter(|r| r.panic_found).count();
                let modules = of.iter().filter(|r| r.modules_exact).count();
                let (tt, tf, tr, mt, mf, mr) = of.iter().fold((0, 0, 0, 0, 0, 0), |a, r| {
                    (
                        a.0 + r.hidden_tasks_true,
                        a.1 + r.hidden_tasks_found,
                        a.2 + r.hidden_tasks_truth,
                        a.3 + r.hidden_modules_true,
                        a.4 + r.hidden_modules_found,
                        a.5 + r.hidden_modules_truth,
                    )
                });
                let hidden_ok = of.iter().filter(|r| r.hidden_ok).count();
                out.push(format!(
                    "{mode:<8} {source:<5}: every console line on {complete}/{} kernels ({m}/{c} lines), panic message on {panics}, /proc/modules exact on {modules}; hidden: all views on {hidden_ok}, tasks {tt}/{tr} found with {} false, modules {mt}/{mr} with {} false",
                    of.len(),
                    tf - tt,
                    mf - mt
                ));
            }
        }
        out
    }
}

/// The log of `mem` against the console lines it should hold.
fn score(mut row: ForensicsRow, mem: &dyn PhysMem, console: &[String]) -> ForensicsRow {
    let t = Instant::now();
    let result = dmesg(mem, &DmesgOptions::default());
    row.wall_ms = t.elapsed().as_secs_f64() * 1e3;
    let report: DmesgReport = match result {
        Ok(r) => r,
        Err(err) => {
            row.error = analysis::one_line(&err.to_string(), 300);
            return row;
        }
    };
    row.method = report.located.method.to_string();
    row.records = report.records.len();
    row.dma_reads = report.stats.dma_reads;
    row.dma_bytes = report.stats.dma_bytes;
    let out = text(&report.records);
    let ours: Vec<&str> = out.lines().collect();
    let expected: Vec<String> = if row.panic_expected {
        console.to_vec()
    } else {
        let newest = report.records.last().map_or(0, |r| r.ts_nsec);
        console.iter().filter(|l| timestamp_ns(l).is_some_and(|ts| ts < newest)).cloned().collect()
    };
    row.console_lines = expected.len();
    row.matched = expected.len() - missing(&expected, &ours).len();
    row.panic_found = ours.iter().any(|l| l.contains(PANIC_LINE));
    row.ok = report.read_error.is_none();
    if let Some(e) = &report.read_error {
        row.error = analysis::one_line(e, 300);
    }
    row
}

/// The module list of `mem` against the guest's `/proc/modules`.
fn score_modules(mut row: ForensicsRow, mem: &dyn PhysMem, truth: &[harness::lab::truth::Module]) -> ForensicsRow {
    row.modules_truth = truth.len();
    let t = Instant::now();
    let result = lsmod(mem, &LsmodOptions::default());
    row.lsmod_ms = t.elapsed().as_secs_f64() * 1e3;
    match result {
        Ok(r) => {
            row.modules_found = r.modules.len();
            row.lsmod_method = r.located.method.to_string();
            let ours: Vec<_> = r.modules.iter().map(module_columns).collect();
            let want: Vec<_> = truth.iter().map(truth_module_columns).collect();
            row.modules_exact = r.error.is_none() && ours == want;
        }
        Err(LsmodError::NoModules(why)) => {
            row.lsmod_method = analysis::one_line(&format!("no modules list: {why}"), 120);
            row.modules_exact = truth.is_empty();
        }
        Err(err) => row.lsmod_method = analysis::one_line(&format!("failed: {err}"), 120),
    }
    row
}

/// `harness hidden` on `mem` against what the rootkit hid (`None`: nothing is hidden).
fn score_hidden(mut row: ForensicsRow, mem: &dyn PhysMem, truth: Option<&(u32, String)>) -> ForensicsRow {
    row.hidden_tasks_truth = usize::from(truth.is_some());
    row.hidden_modules_truth = usize::from(truth.is_some());
    let t = Instant::now();
    let result = hidden(mem, &HiddenOptions::default());
    row.hidden_ms = t.elapsed().as_secs_f64() * 1e3;
    let report = match result {
        Ok(r) => r,
        Err(err) => {
            row.hidden_error = analysis::one_line(&err.to_string(), 300);
            return row;
        }
    };
    row.hidden_dma_bytes = report.stats.dma_bytes;
    row.hidden_ok = report.incomplete().is_none();
    row.hidden_error = report.incomplete().map(|e| analysis::one_line(&e, 300)).unwrap_or_default();
    let mut seen = Vec::new();
    for f in &report.findings {
        let views = || f.seen_by.iter().map(|v| v.name()).collect::<Vec<_>>().join("+");
        match f.kind {
            HiddenKind::Task => {
                row.hidden_tasks_found += 1;
                if truth.is_some_and(|(pid, _)| f.pid == i32::try_from(*pid).ok()) {
                    row.hidden_tasks_true += 1;
                    seen.push(format!("task {}", views()));
                }
            }
            HiddenKind::Module => {
                row.hidden_modules_found += 1;
                if truth.is_some_and(|(_, name)| &f.name == name) {
                    row.hidden_modules_true += 1;
                    seen.push(format!("module {}", views()));
                }
            }
        }
    }
    row.hidden_seen_by = seen.join("; ");
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(mode: &str, source: &str, matched: usize, lines: usize, panic: bool) -> ForensicsRow {
        ForensicsRow { mode: mode.into(), source: source.into(), ok: true, matched, console_lines: lines, panic_found: panic, modules_exact: true, ..ForensicsRow::default() }
    }

    #[test]
    fn headline_counts_complete_logs_and_panics() {
        let rows = [row("panicked", "image", 10, 10, true), row("panicked", "image", 9, 10, false), row("running", "wire", 5, 5, false)];
        let h = Forensics.headline(&rows);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(
            h[0],
            "running  wire : every console line on 1/1 kernels (5/5 lines), panic message on 0, /proc/modules exact on 1; hidden: all views on 0, tasks 0/0 found with 0 false, modules 0/0 with 0 false"
        );
        assert_eq!(
            h[1],
            "panicked image: every console line on 1/2 kernels (19/20 lines), panic message on 1, /proc/modules exact on 2; hidden: all views on 0, tasks 0/0 found with 0 false, modules 0/0 with 0 false"
        );
    }
}
