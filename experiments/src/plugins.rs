//! `baseline-plugins` (module `baseline`): Volatility 3's `linux.kmsg`, `linux.lsmod` and
//! `linux.psscan` beside netdma's `dmesg`, `lsmod` and `ps`, on the same ELF dump, with the ISF
//! `harness profile` derives from that memory alone. Per corpus kernel and mode:
//!
//! - `kmsg`: records as `(seconds.micros, text line)` pairs, a multi-line record one pair per
//!   line (Volatility prints each line of a record as its own row). Volatility also prints a
//!   record's dictionary (` SUBSYSTEM=...`, ` DEVICE=...`), which `dmesg` does not: those lines
//!   are left out. `agree` counts pairs both list (as multisets); no guest truth here (the
//!   console comparison is `forensics`'s).
//! - `lsmod`: modules as `(name, size)`; truth is the guest's `/proc/modules`.
//! - `psscan`: task ids. Volatility scans memory for task structures, so it also finds tasks
//!   that exited and whose memory was not reused; netdma's side is `ps` (the task list). Truth
//!   is the guest's threads.
//!
//! A plugin that fails keeps its row (`ok = false`, Volatility's last error line): where they
//! run is part of the result. Volatility runs as a process with a timeout; netdma's side is a
//! library call on the same file.
//!
//! ```text
//! results/baseline-plugins.csv  kernel,release,mode,plugin,ok,error,vol_ms,ours,theirs,agree,
//!                               truth,ours_true,theirs_true, + stamp
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::process::Command;
use std::time::Duration;

use emulator::mem::PhysMem;
use harness::introspect::modules::{lsmod, LsmodError, LsmodOptions};
use harness::introspect::printk::{dmesg, DmesgOptions};
use harness::introspect::ps::{ps, PsOptions};
use harness::lab::corpus::{DumpFormat, Entry, Mode};
use serde::{Deserialize, Serialize};

use crate::analysis;
use crate::baseline::VolScratch;
use crate::experiment::{Context, Experiment, RunError};
use crate::process;
use crate::volatility;

/// A Volatility plugin run is killed after this long (`psscan` reads the whole dump).
const TIMEOUT: Duration = Duration::from_secs(900);
const QUICK_KERNELS: usize = 1;

/// The plugins compared, as written in the `plugin` column.
pub const PLUGINS: [&str; 3] = ["kmsg", "lsmod", "psscan"];

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginRow {
    pub kernel: String,
    pub release: String,
    pub mode: String,
    /// `kmsg`, `lsmod` or `psscan` (Volatility's `linux.<plugin>`).
    pub plugin: String,
    /// Both sides answered.
    pub ok: bool,
    /// Volatility's or netdma's error; empty otherwise.
    pub error: String,
    /// Volatility's process, spawn to exit.
    pub vol_ms: f64,
    /// Items netdma listed: log lines, modules, tasks.
    pub ours: usize,
    /// Items Volatility listed.
    pub theirs: usize,
    /// Items both listed.
    pub agree: usize,
    /// Items in the guest's truth (`lsmod`, `psscan`); none for `kmsg`.
    pub truth: Option<usize>,
    pub ours_true: Option<usize>,
    pub theirs_true: Option<usize>,
}

pub struct PluginRun {
    pub entry: Entry,
    pub mode: Mode,
}

impl fmt::Display for PluginRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.entry.name, self.mode.as_str())
    }
}

pub struct BaselinePlugins;

impl Experiment for BaselinePlugins {
    type Row = PluginRow;
    type Run = PluginRun;

    fn name(&self) -> &'static str {
        "baseline-plugins"
    }
    fn module(&self) -> &'static str {
        "baseline"
    }
    fn plan(&self, ctx: &Context) -> Result<Vec<PluginRun>, RunError> {
        volatility::require()?;
        process::sibling_binary("harness")?;
        let entries = analysis::entries(ctx, QUICK_KERNELS)?;
        Ok(entries.into_iter().flat_map(|entry| Mode::ALL.into_iter().map(move |mode| PluginRun { entry: entry.clone(), mode })).collect())
    }
    fn run(&self, _ctx: &Context, run: &PluginRun) -> Result<Vec<PluginRow>, RunError> {
        measure(run)
    }
    fn headline(&self, rows: &[PluginRow]) -> Vec<String> {
        headline(rows)
    }
}

fn measure(run: &PluginRun) -> Result<Vec<PluginRow>, RunError> {
    let e = &run.entry;
    let vol = volatility::require()?;
    let harness = process::sibling_binary("harness")?;
    let (mem, dump) = analysis::open_dump(e, run.mode, DumpFormat::Elf)?;
    let scratch = VolScratch::create("plugins", e, run.mode)?;
    let (symbols, cache) = (&scratch.symbols, &scratch.cache);
    let io = |err| scratch.io_error(err);
    let base = PluginRow { kernel: e.name.clone(), release: e.release.clone(), mode: run.mode.as_str().into(), ..PluginRow::default() };

    let isf = symbols.join("netdma.json");
    let mut cmd = Command::new(&harness);
    cmd.args(analysis::HARNESS_ERRORS).args(["profile", "--format", "isf", "--image"]).arg(&dump).arg("--output").arg(&isf);
    let profile = process::run(cmd, &scratch.root, "profile", TIMEOUT).map_err(io)?;
    let profile_error = (!profile.success()).then(|| format!("no ISF: {}", analysis::harness_failure(&profile)));

    let mut rows = Vec::new();
    for plugin in PLUGINS {
        let mut row = PluginRow { plugin: plugin.into(), ..base.clone() };
        let ours = match ours(plugin, mem.as_ref(), e, run.mode) {
            Ok(o) => o,
            Err(why) => {
                row.error = analysis::one_line(&format!("netdma: {why}"), 300);
                rows.push(row);
                continue;
            }
        };
        row.ours = ours.items.len();
        if let Some(why) = &profile_error {
            row.error = analysis::one_line(why, 300);
            rows.push(row);
            continue;
        }
        let mut cmd = Command::new(&vol);
        cmd.args(["-q", "--offline", "--cache-path"]).arg(cache).arg("-f").arg(&dump).arg("-s").arg(symbols);
        cmd.args(["-r", "csv", &format!("linux.{plugin}")]);
        let done = process::run(cmd, &scratch.root, "vol", TIMEOUT).map_err(io)?;
        row.vol_ms = done.wall_ms;
        if !done.success() {
            row.error = analysis::one_line(&format!("{}: {}", done.describe(), volatility::error_line(&done.stderr)), 300);
            rows.push(row);
            continue;
        }
        match theirs(plugin, &done.stdout) {
            Ok(theirs) => {
                row.ok = true;
                row.theirs = theirs.len();
                row.agree = common(&ours.items, &theirs);
                if let Some(truth) = &ours.truth {
                    row.truth = Some(truth.len());
                    row.ours_true = Some(common(&ours.items, truth));
                    row.theirs_true = Some(common(&theirs, truth));
                }
            }
            Err(why) => row.error = analysis::one_line(&format!("reading Volatility's CSV: {why}"), 300),
        }
        rows.push(row);
    }
    Ok(rows)
}

/// netdma's items for `plugin`, and the guest's truth where it has one.
struct Ours {
    items: Vec<String>,
    truth: Option<Vec<String>>,
}

fn ours(plugin: &str, mem: &dyn PhysMem, e: &Entry, mode: Mode) -> Result<Ours, String> {
    match plugin {
        "kmsg" => {
            let report = dmesg(mem, &DmesgOptions::default()).map_err(|err| err.to_string())?;
            let items = report.records.iter().flat_map(|r| r.text.split('\n').map(move |l| kmsg_item(r.ts_nsec, l))).collect();
            Ok(Ours { items, truth: None })
        }
        "lsmod" => {
            let truth = e.modules_truth(mode).map_err(|err| err.to_string())?;
            let truth = Some(truth.iter().map(|m| module_item(&m.name, m.size)).collect());
            let items = match lsmod(mem, &LsmodOptions::default()) {
                Ok(r) => r.modules.iter().map(|m| module_item(&m.name, m.size)).collect(),
                Err(LsmodError::NoModules(_)) => Vec::new(),
                Err(err) => return Err(err.to_string()),
            };
            Ok(Ours { items, truth })
        }
        _ => {
            let truth = analysis::truth(e, mode).map_err(|err| err.to_string())?;
            let report = ps(mem, &PsOptions::default()).map_err(|err| err.to_string())?;
            let items = report.threads.iter().map(|t| t.pid.to_string()).collect();
            Ok(Ours { items, truth: Some(truth.iter().map(|t| t.pid.to_string()).collect()) })
        }
    }
}

/// Volatility's items for `plugin` from its CSV rendering.
fn theirs(plugin: &str, csv: &[u8]) -> Result<Vec<String>, volatility::CsvError> {
    Ok(match plugin {
        "kmsg" => volatility::parse_csv(csv, &["timestamp", "line"])?
            .into_iter()
            .filter(|(_, f)| !is_dict_line(&f[1]))
            // Volatility escapes a backslash in a message as two (`ACPI: \\_SB_`).
            .map(|(_, f)| format!("[{}] {}", f[0].trim(), f[1].replace("\\\\", "\\")))
            .collect(),
        "lsmod" => volatility::parse_csv(csv, &["Module Name", "Code Size"])?
            .into_iter()
            .map(|(_, f)| {
                let hex = f[1].trim().trim_start_matches("0x");
                module_item(&f[0], u64::from_str_radix(hex, 16).unwrap_or(u64::MAX))
            })
            .collect(),
        _ => volatility::parse_csv(csv, &["TID"])?.into_iter().map(|(_, f)| f[0].trim().to_owned()).collect(),
    })
}

/// A record's dictionary property (`SUBSYSTEM=acpi`, `DEVICE=+pci_bus:0000:00`), which
/// Volatility prints as a line of its own after one space, as `/dev/kmsg` does; `dmesg` (and
/// netdma's) prints none.
fn is_dict_line(line: &str) -> bool {
    let Some(rest) = line.strip_prefix(' ') else { return false };
    let key = rest.split('=').next().unwrap_or("");
    rest.len() > key.len() && !key.is_empty() && key.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') && key.as_bytes()[0].is_ascii_uppercase()
}

/// A log line as Volatility prints its timestamp: seconds with six decimals.
fn kmsg_item(ts_nsec: u64, line: &str) -> String {
    format!("[{}.{:06}] {line}", ts_nsec / 1_000_000_000, ts_nsec % 1_000_000_000 / 1000)
}

fn module_item(name: &str, size: u64) -> String {
    format!("{name} {size}")
}

/// Items in both lists, counted as multisets.
fn common(a: &[String], b: &[String]) -> usize {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for x in a {
        *count.entry(x).or_default() += 1;
    }
    b.iter()
        .filter(|x| match count.get_mut(x.as_str()) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        })
        .count()
}

fn headline(rows: &[PluginRow]) -> Vec<String> {
    PLUGINS
        .iter()
        .map(|&p| {
            let of: Vec<&PluginRow> = rows.iter().filter(|r| r.plugin == p).collect();
            let ran: Vec<&&PluginRow> = of.iter().filter(|r| r.ok).collect();
            let kernels: BTreeSet<&str> = ran.iter().map(|r| r.kernel.as_str()).collect();
            let (agree, ours, theirs) = ran.iter().fold((0, 0, 0), |(a, o, t), r| (a + r.agree, o + r.ours, t + r.theirs));
            let identical = ran.iter().filter(|r| r.agree == r.ours && r.agree == r.theirs).count();
            format!(
                "linux.{p}: ran on {}/{} kernel-modes ({} kernels); identical to netdma on {}; {agree} items in common of netdma's {ours} and Volatility's {theirs}",
                ran.len(),
                of.len(),
                kernels.len(),
                identical
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_counts_repeats_once_each() {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(common(&v(&["a", "a", "b"]), &v(&["a", "b", "b", "c"])), 2);
        assert_eq!(common(&v(&[]), &v(&["a"])), 0);
    }

    #[test]
    fn kmsg_items_print_like_volatility() {
        assert_eq!(kmsg_item(1_234_567_890, "x"), "[1.234567] x");
        assert_eq!(kmsg_item(0, ""), "[0.000000] ");
    }

    #[test]
    fn dictionary_lines_are_told_from_messages() {
        assert!(is_dict_line(" SUBSYSTEM=acpi"));
        assert!(is_dict_line(" DEVICE=+pci_bus:0000:00"));
        assert!(!is_dict_line("    HOME=/"));
        assert!(!is_dict_line(" ok=1"));
        assert!(!is_dict_line("SUBSYSTEM=acpi"));
        assert!(!is_dict_line(" =x"));
    }

    #[test]
    fn volatility_rows_become_items() {
        let csv = b"TreeDepth,Offset,Module Name,Code Size,Taints\n0,0xffff,fat,0x16000,\n";
        assert_eq!(theirs("lsmod", csv).unwrap(), vec!["fat 90112".to_string()]);
        let csv = b"TreeDepth,facility,level,timestamp,caller,line\n0,kern,info,0.000000,Task(0),\"a, b\"\n";
        assert_eq!(theirs("kmsg", csv).unwrap(), vec!["[0.000000] a, b".to_string()]);
        let csv = b"TreeDepth,facility,level,timestamp,caller,line\n0,kern,info,0.813022,Task(1),ACPI: \\\\_SB_: x\n";
        assert_eq!(theirs("kmsg", csv).unwrap(), vec!["[0.813022] ACPI: \\_SB_: x".to_string()]);
    }
}
