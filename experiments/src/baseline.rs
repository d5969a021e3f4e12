//! `baseline`: netdma beside Volatility 3, side by side on the same dump file. Per corpus kernel
//! and mode (running, panicked), on the entry's ELF core:
//!
//! - `netdma-profile`: `harness profile --format isf` — the Volatility 3 ISF derived from that
//!   memory alone, which Volatility needs before it can list anything (once per kernel-mode);
//! - `netdma`: `harness ps --image DUMP --format json --stats` (layout method `auto`, memory
//!   only: no `--kernel-source`, so no thesis method — Volatility gets no more than memory either);
//! - `volatility3`: `vol -q --offline -f DUMP -s <dir holding that ISF> -r csv linux.pslist`, the
//!   pinned release `scripts/setup` installs ([`crate::volatility`]).
//!
//! Each is a separate process (the release `harness` beside this binary), timed from spawn to
//! exit (`wall_ms`, polled every millisecond); for `netdma` the engine's own clock (`--stats`)
//! is `engine_ms`. The two listers alternate: repeat 0 of each, then repeat 1 of each, and so
//! on, so drift on a shared machine hits both. Repeat 0 is the first run of a tool on the dump in
//! this run — for Volatility with an empty `--cache-path` (it builds its symbol-identifier cache);
//! figures use the warm repeats (≥ 1).
//!
//! Scoring is per **process** (thread-group leader), because `linux.pslist` lists only those:
//! the truth's processes are its threads with `pid == tgid`, netdma's are its rows with
//! `pid == tgid`. The rules are [`crate::analysis`]'s at thread level: a true positive is a pid
//! on both sides; kernel threads present on one side only are charged to neither precision nor
//! recall. Volatility does not mark kernel threads, so for it a process is a kernel thread when
//! it is kthreadd (pid 2) or its child. `fields_exact_fraction` compares ppid, uid and comm by
//! `compare`'s rules: the name `/proc` shows is the truth, so a `kworker/...` name may carry
//! another workqueue description but not none, and a kernel thread's full name (longer than the
//! 15 bytes of `task->comm`) must be whole. Volatility prints `task->comm`, so both count against
//! it. A tool that fails has `ok = false` and its own error text.
//!
//! Invariant: every row is one process run on one dump file; the ISF Volatility reads is the one
//! the `netdma-profile` row of the same kernel-mode timed.
//!
//! ```text
//! results/baseline.csv  kernel,release,mode,tool,tool_version,repeat,ok,error,wall_ms,engine_ms,
//!                       method_used,dump_format,dump_bytes,isf_method,isf_bytes,isf_missing,
//!                       processes_truth,processes_listed,true_positives,precision,recall,
//!                       fields_exact_fraction, + stamp
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use harness::introspect::compare::kworker_base;
use harness::introspect::ps::Row;
use harness::lab::corpus::{DumpFormat, Entry, Mode};
use harness::lab::truth::Thread;
use serde::{Deserialize, Serialize};

use crate::analysis;
use crate::experiment::{Context, Experiment, RunError};
use crate::process;
use crate::timing::{median, stats_line};
use crate::volatility::{self, PslistRow};

/// The tools, as written in the `tool` column.
pub const NETDMA: &str = "netdma";
pub const PROFILE: &str = "netdma-profile";
pub const VOLATILITY: &str = "volatility3";

/// One process run is killed after this long (a Volatility listing takes seconds).
const TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaselineRow {
    pub kernel: String,
    pub release: String,
    pub mode: String,
    /// `netdma`, `netdma-profile` or `volatility3`.
    pub tool: String,
    /// `volatility3 2.28.2` (from its banner), `harness <crate version>`.
    pub tool_version: String,
    /// 0: the tool's first run on this dump here (cold); 1..: the measured repeats.
    pub repeat: u32,
    pub ok: bool,
    /// The tool's error, or netdma's walk error of a partial listing; empty otherwise.
    pub error: String,
    /// The whole process, spawn to exit.
    pub wall_ms: f64,
    /// `netdma` only: the engine's own time (`--stats` `wall_ms`), without process start.
    pub engine_ms: Option<f64>,
    /// `netdma` and `netdma-profile`: the layout method `auto` chose (from `--stats`, or the
    /// ISF's producer); empty for `volatility3`.
    pub method_used: String,
    pub dump_format: String,
    pub dump_bytes: u64,
    /// The layout method `harness profile` used for the ISF (`btf`, `thesis`, `heuristic`).
    pub isf_method: String,
    pub isf_bytes: u64,
    /// What Volatility's Linux stacker reads that the ISF lacks (space-separated; empty = none).
    pub isf_missing: String,
    /// Processes (thread-group leaders) in the guest's truth.
    pub processes_truth: usize,
    /// Processes the tool listed (netdma: its rows with pid == tgid).
    pub processes_listed: usize,
    pub true_positives: usize,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    /// True positives whose ppid, uid and comm agree with the truth, over true positives.
    pub fields_exact_fraction: Option<f64>,
}

/// One kernel-mode: a profile, then `repeats` warm runs (after a cold one) of each lister.
pub struct BaselineRun {
    pub entry: Entry,
    pub mode: Mode,
    pub repeats: u32,
}

impl fmt::Display for BaselineRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} x{}", self.entry.name, self.mode.as_str(), self.repeats)
    }
}

pub struct Baseline;

const QUICK_KERNELS: usize = 1;

impl Experiment for Baseline {
    type Row = BaselineRow;
    type Run = BaselineRun;

    fn name(&self) -> &'static str {
        "baseline"
    }
    fn module(&self) -> &'static str {
        "baseline"
    }
    fn plan(&self, ctx: &Context) -> Result<Vec<BaselineRun>, RunError> {
        volatility::require()?;
        process::sibling_binary("harness")?;
        let entries = analysis::entries(ctx, QUICK_KERNELS)?;
        let repeats = if ctx.quick { 1 } else { 3 };
        Ok(entries
            .into_iter()
            .flat_map(|entry| Mode::ALL.into_iter().map(move |mode| BaselineRun { entry: entry.clone(), mode, repeats }))
            .collect())
    }
    fn run(&self, _ctx: &Context, run: &BaselineRun) -> Result<Vec<BaselineRow>, RunError> {
        measure(run)
    }
    fn headline(&self, rows: &[BaselineRow]) -> Vec<String> {
        headline(rows)
    }
}

/// A Volatility run's working directory for one kernel-mode: `symbols/` (where the ISF goes)
/// and `volatility-cache/`, created empty and removed when dropped.
pub(crate) struct VolScratch {
    pub root: PathBuf,
    pub symbols: PathBuf,
    pub cache: PathBuf,
}

impl VolScratch {
    /// `netdma-<what>-<entry>-<mode>-<pid>` under the temporary directory.
    pub(crate) fn create(what: &str, e: &Entry, mode: Mode) -> Result<VolScratch, RunError> {
        let root = std::env::temp_dir().join(format!("netdma-{what}-{}-{}-{}", e.name, mode.as_str(), std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (symbols, cache) = (root.join("symbols"), root.join("volatility-cache"));
        for d in [&symbols, &cache] {
            std::fs::create_dir_all(d).map_err(|err| RunError::Prerequisite(format!("{}: {err}", d.display())))?;
        }
        Ok(VolScratch { root, symbols, cache })
    }

    /// A tool that could not be started or waited for in this directory.
    pub(crate) fn io_error(&self, err: std::io::Error) -> RunError {
        RunError::Prerequisite(format!("running a tool in {}: {err}", self.root.display()))
    }
}

impl Drop for VolScratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn measure(run: &BaselineRun) -> Result<Vec<BaselineRow>, RunError> {
    let e = &run.entry;
    let vol = volatility::require()?;
    let harness = process::sibling_binary("harness")?;
    let truth = analysis::truth(e, run.mode)?;
    let dump = e
        .dump_path(run.mode, DumpFormat::Elf)
        .ok_or_else(|| RunError::Prerequisite(format!("{}: no {} ELF dump; {}", e.name, run.mode.as_str(), analysis::BUILD_CORPUS)))?;
    let dump_bytes = std::fs::metadata(&dump)
        .map_err(|err| RunError::Prerequisite(format!("{}: {err}; {}", dump.display(), analysis::BUILD_CORPUS)))?
        .len();
    let scratch = VolScratch::create("baseline", e, run.mode)?;
    let (symbols, vol_cache) = (&scratch.symbols, &scratch.cache);
    let scratch_err = |err| scratch.io_error(err);
    let harness_version = format!("harness {}", env!("CARGO_PKG_VERSION"));
    let base = BaselineRow {
        kernel: e.name.clone(),
        release: e.release.clone(),
        mode: run.mode.as_str().into(),
        tool: String::new(),
        tool_version: String::new(),
        repeat: 0,
        ok: false,
        error: String::new(),
        wall_ms: 0.0,
        engine_ms: None,
        method_used: String::new(),
        dump_format: DumpFormat::Elf.as_str().into(),
        dump_bytes,
        isf_method: String::new(),
        isf_bytes: 0,
        isf_missing: String::new(),
        processes_truth: truth.iter().filter(|t| t.pid == t.tgid).count(),
        processes_listed: 0,
        true_positives: 0,
        precision: None,
        recall: None,
        fields_exact_fraction: None,
    };
    let mut rows = Vec::new();

    // The ISF, from this dump.
    let isf = symbols.join("netdma.json");
    let mut cmd = Command::new(&harness);
    cmd.args(analysis::HARNESS_ERRORS).args(["profile", "--format", "isf", "--image"]).arg(&dump).arg("--output").arg(&isf);
    let done = process::run(cmd, &scratch.root, "profile", TIMEOUT).map_err(scratch_err)?;
    let mut profile_row = BaselineRow { tool: PROFILE.into(), tool_version: harness_version.clone(), repeat: 1, wall_ms: done.wall_ms, ..base.clone() };
    let doc = if done.success() {
        std::fs::read(&isf)
            .map_err(|err| err.to_string())
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).map_err(|err| format!("{}: {err}", isf.display())))
    } else {
        Err(analysis::harness_failure(&done))
    };
    let isf_ok = match doc {
        Ok(doc) => {
            profile_row.ok = true;
            profile_row.isf_method = doc.pointer("/metadata/producer/method").and_then(|m| m.as_str()).unwrap_or("").into();
            profile_row.method_used = profile_row.isf_method.clone();
            profile_row.isf_bytes = std::fs::metadata(&isf).map(|m| m.len()).unwrap_or(0);
            profile_row.isf_missing = volatility::isf_missing(&doc).join(" ");
            true
        }
        Err(why) => {
            profile_row.error = analysis::one_line(&why, 300);
            false
        }
    };
    let base = BaselineRow {
        isf_method: profile_row.isf_method.clone(),
        isf_bytes: profile_row.isf_bytes,
        isf_missing: profile_row.isf_missing.clone(),
        ..base
    };
    rows.push(profile_row);

    for repeat in 0..=run.repeats {
        // netdma
        let mut cmd = Command::new(&harness);
        cmd.args(analysis::HARNESS_ERRORS).args(["ps", "--format", "json", "--stats", "--image"]).arg(&dump);
        let done = process::run(cmd, &scratch.root, "ps", TIMEOUT).map_err(scratch_err)?;
        let mut r = BaselineRow { tool: NETDMA.into(), tool_version: harness_version.clone(), repeat, wall_ms: done.wall_ms, ..base.clone() };
        // A listing that stopped part-way (its rows are printed).
        let partial = done.status.and_then(|s| s.code()) == Some(harness::failure::EXIT_PARTIAL);
        match (done.success() || partial).then(|| parse_ps_json(&done.stdout)) {
            Some(Ok(listed)) => {
                let stats = stats_line(&done.stderr);
                r.engine_ms = stats.as_ref().map(|s| s.wall_ms);
                r.method_used = stats.map(|s| s.method).unwrap_or_default();
                r.ok = true;
                if partial {
                    r.error = analysis::one_line(&analysis::harness_failure(&done), 300);
                }
                let procs: Vec<Proc> = listed.iter().filter(|row| row.pid >= 0 && row.pid == row.tgid).map(Proc::from_ps).collect();
                set_score(&mut r, &procs, &truth);
            }
            Some(Err(why)) => r.error = analysis::one_line(&format!("reading harness ps output: {why}"), 300),
            None => r.error = analysis::one_line(&analysis::harness_failure(&done), 300),
        }
        rows.push(r);

        // Volatility 3 with the ISF above.
        let mut r = BaselineRow { tool: VOLATILITY.into(), repeat, ..base.clone() };
        if !isf_ok {
            r.error = "no ISF: harness profile failed (see the netdma-profile row)".into();
            rows.push(r);
            continue;
        }
        let mut cmd = Command::new(&vol);
        cmd.args(["-q", "--offline", "--cache-path"])
            .arg(vol_cache)
            .arg("-f")
            .arg(&dump)
            .arg("-s")
            .arg(symbols)
            .args(["-r", "csv", "linux.pslist"]);
        let done = process::run(cmd, &scratch.root, "vol", TIMEOUT).map_err(scratch_err)?;
        r.wall_ms = done.wall_ms;
        r.tool_version = volatility::version(&done.stderr).map(|v| format!("volatility3 {v}")).unwrap_or_default();
        if !done.success() {
            r.error = analysis::one_line(&format!("{}: {}", done.describe(), volatility::error_line(&done.stderr)), 300);
        } else {
            match volatility::parse_pslist_csv(&done.stdout) {
                Ok(listed) => {
                    r.ok = true;
                    let procs: Vec<Proc> = listed.iter().map(Proc::from_pslist).collect();
                    set_score(&mut r, &procs, &truth);
                }
                Err(why) => r.error = analysis::one_line(&format!("reading Volatility's CSV: {why}"), 300),
            }
        }
        rows.push(r);
    }
    Ok(rows)
}

/// At most this many rows of one `harness ps` listing are read.
const MAX_PS_ROWS: usize = 1_000_000;

/// `harness ps --format json`: one JSON object per line.
fn parse_ps_json(stdout: &[u8]) -> Result<Vec<Row>, String> {
    let text = std::str::from_utf8(stdout).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        if rows.len() == MAX_PS_ROWS {
            return Err(format!("more than {MAX_PS_ROWS} rows"));
        }
        rows.push(serde_json::from_str::<Row>(line).map_err(|e| format!("line {}: {e}", i + 1))?);
    }
    Ok(rows)
}

/// One process as a tool listed it, or as the truth records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: String,
    pub kthread: bool,
}

impl Proc {
    fn from_ps(r: &Row) -> Proc {
        Proc { pid: r.pid as u32, ppid: r.ppid.max(0) as u32, uid: r.uid, comm: r.comm.clone(), kthread: r.kthread }
    }
    /// Volatility does not say which tasks are kernel threads: kthreadd and its children are.
    pub fn from_pslist(r: &PslistRow) -> Proc {
        Proc { pid: r.pid, ppid: r.ppid, uid: r.uid, comm: r.comm.clone(), kthread: r.pid == 2 || r.ppid == 2 }
    }
    /// The truth's processes: its threads that lead their group.
    pub fn truth(truth: &[Thread]) -> Vec<Proc> {
        truth
            .iter()
            .filter(|t| t.pid == t.tgid)
            .map(|t| Proc {
                pid: t.pid,
                ppid: t.ppid,
                uid: t.uid,
                comm: String::from_utf8_lossy(&t.comm_bytes()).into_owned(),
                kthread: t.kthread,
            })
            .collect()
    }
}

/// A process listing scored against the truth's processes (the rules in the module documentation).
#[derive(Clone, Debug, PartialEq)]
pub struct ProcScore {
    pub truth: usize,
    pub listed: usize,
    pub true_positives: usize,
    pub precision: f64,
    pub recall: f64,
    pub fields_exact_fraction: f64,
}

/// `compare`'s comm rule: equal, or the same worker with another workqueue description (but a
/// description missing where the truth has one is a difference).
fn same_comm(truth: &str, listed: &str) -> bool {
    match (kworker_base(truth), kworker_base(listed)) {
        _ if truth == listed => true,
        (Some(a), Some(b)) => a == b && (listed != b || truth == a),
        _ => false,
    }
}

pub fn score_processes(listed: &[Proc], truth: &[Proc]) -> ProcScore {
    let ours: BTreeMap<u32, &Proc> = listed.iter().map(|p| (p.pid, p)).collect();
    let theirs: BTreeMap<u32, &Proc> = truth.iter().map(|p| (p.pid, p)).collect();
    let both: BTreeSet<u32> = ours.keys().filter(|pid| theirs.contains_key(pid)).copied().collect();
    let truth_only_kthreads = truth.iter().filter(|p| p.kthread && !ours.contains_key(&p.pid)).count();
    let ours_only_kthreads = listed.iter().filter(|p| p.kthread && !theirs.contains_key(&p.pid)).count();
    let exact = both
        .iter()
        .filter(|pid| {
            let (o, t) = (ours[pid], theirs[pid]);
            o.ppid == t.ppid && o.uid == t.uid && same_comm(&t.comm, &o.comm)
        })
        .count();
    let tp = both.len();
    ProcScore {
        truth: truth.len(),
        listed: listed.len(),
        true_positives: tp,
        precision: analysis::ratio(tp, listed.len() - ours_only_kthreads),
        recall: analysis::ratio(tp, truth.len() - truth_only_kthreads),
        fields_exact_fraction: analysis::ratio(exact, tp),
    }
}

fn set_score(r: &mut BaselineRow, listed: &[Proc], truth: &[Thread]) {
    let s = score_processes(listed, &Proc::truth(truth));
    r.processes_truth = s.truth;
    r.processes_listed = s.listed;
    r.true_positives = s.true_positives;
    r.precision = Some(s.precision);
    r.recall = Some(s.recall);
    r.fields_exact_fraction = Some(s.fields_exact_fraction);
}

/// Median warm wall time of `tool` on one kernel-mode, if it listed there.
pub fn warm_median_ms(rows: &[BaselineRow], kernel: &str, mode: &str, tool: &str) -> Option<f64> {
    let v: Vec<f64> = rows
        .iter()
        .filter(|r| r.ok && r.kernel == kernel && r.mode == mode && r.tool == tool && (r.repeat >= 1 || r.tool == PROFILE))
        .map(|r| r.wall_ms)
        .collect();
    (!v.is_empty()).then(|| median(v))
}

/// Kernel-modes in the order their rows appear.
pub fn kernel_modes(rows: &[BaselineRow]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for r in rows {
        let k = (r.kernel.clone(), r.mode.clone());
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

fn headline(rows: &[BaselineRow]) -> Vec<String> {
    let mut out = Vec::new();
    for (kernel, mode) in kernel_modes(rows) {
        let of = |tool: &str| rows.iter().filter(|r| r.kernel == kernel && r.mode == mode && r.tool == tool).collect::<Vec<_>>();
        let recall = |tool: &str| of(tool).iter().find(|r| r.ok && r.repeat >= 1).and_then(|r| r.recall);
        let netdma = warm_median_ms(rows, &kernel, &mode, NETDMA);
        let profile = warm_median_ms(rows, &kernel, &mode, PROFILE);
        let vol = warm_median_ms(rows, &kernel, &mode, VOLATILITY);
        let fmt_ms = |v: Option<f64>| v.map_or("failed".to_string(), |v| format!("{v:.0} ms"));
        let fmt_recall = |v: Option<f64>| v.map_or(String::new(), |v| format!(" (recall {v:.2})"));
        let vol_part = match (vol, netdma) {
            (Some(v), Some(n)) => format!("Volatility 3 {v:.0} ms{} = {:.0}x netdma", fmt_recall(recall(VOLATILITY)), v / n),
            (Some(v), None) => format!("Volatility 3 {v:.0} ms{}", fmt_recall(recall(VOLATILITY))),
            (None, _) => match of(VOLATILITY).iter().find(|r| !r.error.is_empty()) {
                Some(r) if !r.isf_missing.is_empty() => format!("Volatility 3 failed (the ISF lacks {})", r.isf_missing),
                Some(r) => format!("Volatility 3 failed: {}", analysis::one_line(&r.error, 90)),
                None => "Volatility 3 not measured".into(),
            },
        };
        out.push(format!(
            "{kernel} {mode}: netdma {}{}; ISF {}; {vol_part}",
            fmt_ms(netdma),
            fmt_recall(recall(NETDMA)),
            fmt_ms(profile)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, ppid: u32, comm: &str, kthread: bool) -> Proc {
        Proc { pid, ppid, uid: 0, comm: comm.into(), kthread }
    }

    #[test]
    fn process_scoring_follows_the_thread_rules() {
        let truth = [p(1, 0, "init", false), p(3, 2, "gone", true), p(7, 2, "kworker/0:1-events", true), p(9, 1, "sh", false)];
        // 7 with another description is exact; 11 a kthread only listed; 12 a user process only listed.
        let listed = [p(1, 0, "init", false), p(7, 2, "kworker/0:1+mm", true), p(9, 5, "sh", false), p(11, 2, "new", true), p(12, 1, "x", false)];
        let s = score_processes(&listed, &truth);
        assert_eq!((s.truth, s.listed, s.true_positives), (4, 5, 3));
        assert_eq!(s.recall, 1.0);
        assert_eq!(s.precision, 3.0 / 4.0);
        assert_eq!(s.fields_exact_fraction, 2.0 / 3.0, "pid 9's ppid differs");
    }

    #[test]
    fn comm_rule_is_compares() {
        assert!(same_comm("kworker/0:1-events", "kworker/0:1+mm_percpu_wq"));
        assert!(same_comm("kworker/0:1", "kworker/0:1-events"));
        assert!(!same_comm("kworker/0:1-events", "kworker/0:1"), "a missing description is a difference");
        assert!(!same_comm("rcu_tasks_kthread", "rcu_tasks_kthre"), "a cut name is a difference");
        assert!(same_comm("init", "init"));
    }

    #[test]
    fn volatility_kernel_threads_are_kthreadd_and_its_children() {
        let row = |pid, ppid| PslistRow { pid, tid: pid, ppid, uid: 0, comm: "x".into() };
        assert!(Proc::from_pslist(&row(2, 0)).kthread);
        assert!(Proc::from_pslist(&row(40, 2)).kthread);
        assert!(!Proc::from_pslist(&row(1, 0)).kthread);
        assert!(!Proc::from_pslist(&row(90, 1)).kthread);
    }

    #[test]
    fn ps_json_lines() {
        let out = b"{\"pid\":1,\"tgid\":1,\"ppid\":0,\"uid\":0,\"state\":\"S\",\"comm\":\"init\",\"cmdline\":\"/init\",\"threads\":1,\"start_time\":230000000,\"kthread\":false}\n\n";
        let rows = parse_ps_json(out).unwrap();
        assert_eq!((rows.len(), rows[0].comm.as_str()), (1, "init"));
        assert!(parse_ps_json(b"{\"pid\":1}\n").unwrap_err().starts_with("line 1:"));
        assert!(parse_ps_json(b"\xff\n").is_err());
    }
}
