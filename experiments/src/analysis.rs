//! The analysis under test, run as a library call on corpus memory and scored against the
//! guest's own ground truth — shared by `config-matrix`, `timing`, `panic` and `scaling`.
//!
//! Scoring reuses `harness::introspect::compare` (the tolerance rules the introspection tests
//! use) and derives rates from it:
//! - `true_positives`: threads present both in the listing and in the truth (by pid);
//! - `recall` = TP / (truth − kernel threads only in the truth), `precision` = TP / (listed −
//!   kernel threads only in the listing): kernel threads that come and go between the truth and
//!   the dump are the one difference `compare` tolerates in presence, so neither side is charged
//!   for them;
//! - `fields_exact_fraction` = threads whose every compared field is equal (after compare's
//!   rules) / TP; `exact` = `compare`'s verdict for the whole listing.
//!
//! Invariant: every number here comes from one `ps` call on real memory and the truth file the
//! lab recorded for that memory; nothing is estimated.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use emulator::mem::{Counting, Counts, PhysMem};
use harness::failure::Failure;
use harness::introspect::compare::{compare, Comparison};
use harness::introspect::layout::{LayoutInputs, MethodKind};
use harness::introspect::ps::{ps_counted, PsError, PsOptions, PsReport, Row};
use harness::lab::corpus::{Corpus, DumpFormat, Entry, Mode};
use harness::lab::truth::Thread;

use crate::experiment::{Context, RunError};
use crate::process::Finished;

/// Debian's 6.1 source tarball (package `linux-source-6.1`), which the cold thesis timing hands
/// the 6.1 kernels explicitly so that it measures extraction and kbuild, not a download.
pub const KERNEL_SOURCE: &str = "/usr/src/linux-source-6.1.tar.xz";

/// How to fix a missing corpus.
pub const BUILD_CORPUS: &str = "run `cargo run --release -p harness -- corpus build`";

/// Every method the evaluation compares, in table order.
pub const METHODS: [MethodKind; 6] = [
    MethodKind::Static,
    MethodKind::Thesis,
    MethodKind::Btf,
    MethodKind::Isf,
    MethodKind::Heuristic,
    MethodKind::Auto,
];

/// The corpus entries an experiment runs on: all complete entries, or those named by
/// `--only-kernel`; in `--quick` mode without a filter, the first `quick_count` of them.
pub fn entries(ctx: &Context, quick_count: usize) -> Result<Vec<Entry>, RunError> {
    let corpus = Corpus::open_default();
    let all = corpus
        .entries()
        .map_err(|e| RunError::Prerequisite(format!("reading the corpus {}: {e}; {BUILD_CORPUS}", corpus.root().display())))?;
    if all.is_empty() {
        return Err(RunError::Prerequisite(format!(
            "the corpus {} is empty; {BUILD_CORPUS}",
            corpus.root().display()
        )));
    }
    if !ctx.only_kernels.is_empty() {
        let mut out = Vec::new();
        for name in &ctx.only_kernels {
            match all.iter().find(|e| &e.name == name) {
                Some(e) => out.push(e.clone()),
                None => {
                    let known: Vec<&str> = all.iter().map(|e| e.name.as_str()).collect();
                    return Err(RunError::Prerequisite(format!(
                        "corpus entry `{name}` not built (have: {}); {BUILD_CORPUS}",
                        known.join(", ")
                    )));
                }
            }
        }
        return Ok(out);
    }
    Ok(if ctx.quick { all.into_iter().take(quick_count).collect() } else { all })
}

/// The layout methods' inputs: none given, so the thesis method fetches the
/// `linux-source-<major.minor>` of each kernel's banner into the cache by itself.
pub fn layout_inputs() -> LayoutInputs {
    LayoutInputs::default()
}

/// Opens one dump of an entry. `Raw` falls back to ELF for entries recorded without it.
pub fn open_dump(e: &Entry, mode: Mode, format: DumpFormat) -> Result<(Box<dyn PhysMem>, PathBuf), RunError> {
    let path = e
        .dump_path(mode, format)
        .or_else(|| e.dump_path(mode, DumpFormat::Elf))
        .ok_or_else(|| RunError::Prerequisite(format!("{}: no {} dump; {BUILD_CORPUS}", e.name, mode.as_str())))?;
    let fmt = if path.extension().is_some_and(|x| x == "raw") { Some(emulator::image::Format::Raw) } else { None };
    let mem = emulator::image::open(&path, fmt, None)
        .map_err(|err| RunError::Prerequisite(format!("{}: {err}; {BUILD_CORPUS}", path.display())))?;
    Ok((mem, path))
}

/// The truth of one mode of an entry.
pub fn truth(e: &Entry, mode: Mode) -> Result<Vec<Thread>, RunError> {
    e.truth(mode)
        .map_err(|err| RunError::Prerequisite(format!("{} {}: {err}; {BUILD_CORPUS}", e.name, mode.as_str())))
}

/// The score of one listing against one truth.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    pub tasks_truth: usize,
    pub tasks_found: usize,
    pub true_positives: usize,
    pub precision: f64,
    pub recall: f64,
    pub fields_exact_fraction: f64,
    pub exact: bool,
    /// Field mismatches `compare` did not tolerate.
    pub mismatched_fields: usize,
}

/// `num / den`, 0 when `den` is 0 (nothing to find: nothing found).
pub fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// Scores `rows` against `truth` (see the module documentation for the definitions).
pub fn score(rows: &[Row], truth: &[Thread]) -> (Score, Comparison) {
    let c = compare(rows, truth);
    let ours: BTreeSet<u32> = rows.iter().filter(|r| r.pid >= 0).map(|r| r.pid as u32).collect();
    let theirs: BTreeSet<u32> = truth.iter().map(|t| t.pid).collect();
    let tp = ours.intersection(&theirs).count();
    let truth_only_kthreads = truth.iter().filter(|t| t.kthread && !ours.contains(&t.pid)).count();
    let ours_only_kthreads = rows
        .iter()
        .filter(|r| r.kthread && (r.pid < 0 || !theirs.contains(&(r.pid as u32))))
        .count();
    let s = Score {
        tasks_truth: truth.len(),
        tasks_found: rows.len(),
        true_positives: tp,
        precision: ratio(tp, rows.len() - ours_only_kthreads),
        recall: ratio(tp, truth.len() - truth_only_kthreads),
        fields_exact_fraction: ratio(c.matched, tp),
        exact: c.is_exact(),
        mismatched_fields: c.mismatches.len(),
    };
    (s, c)
}

/// What a method relied on besides physical memory, as recorded in the results.
pub fn prerequisites(method: MethodKind) -> &'static str {
    match method {
        MethodKind::Btf => "BTF in memory",
        MethodKind::Thesis => "IKCONFIG in memory + kernel source",
        MethodKind::Isf => "ISF file (harness profile of the kernel's other dump)",
        MethodKind::Static => "none (fixed Debian 6.1 amd64 offsets)",
        MethodKind::Heuristic => "none (memory only)",
        MethodKind::Auto => "per method used",
    }
}

/// One timed `ps` call, with the reads it made (also when it failed).
pub struct Timed {
    pub result: Result<PsReport, PsError>,
    pub wall_ms: f64,
    pub reads: Counts,
}

/// Runs `ps` with `method` on `mem`, counting its reads once (the report's `stats` and
/// `reads` come from the same counter).
pub fn run_ps(mem: &dyn PhysMem, method: MethodKind, inputs: &LayoutInputs) -> Timed {
    let opts = PsOptions { method: Some(method), inputs: inputs.clone(), ..Default::default() };
    let counted = Counting::new(mem);
    let t0 = Instant::now();
    let result = ps_counted(&counted, &opts);
    Timed { result, wall_ms: t0.elapsed().as_secs_f64() * 1e3, reads: counted.snapshot() }
}

/// Whether an error means "this method's prerequisite is missing here" (a valid result). For
/// `auto`, only when every method it tried was missing its prerequisite — not when one ran and
/// its layout was rejected or failed
/// ([`LayoutError::is_unavailable`](harness::introspect::layout::LayoutError::is_unavailable)).
pub fn is_unavailable(e: &PsError) -> bool {
    matches!(e, PsError::Layout(l) if l.is_unavailable())
}

/// The arguments that make `harness` report a failure as a typed JSON line
/// ([`harness::failure`]); every experiment that runs the binary passes them.
pub const HARNESS_ERRORS: [&str; 2] = ["--errors", "json"];

/// Why a `harness` command run with [`HARNESS_ERRORS`] failed or stopped part-way: its exit
/// status and the message of its failure line (the status alone if it printed none, e.g.
/// killed after its timeout).
pub fn harness_failure(done: &Finished) -> String {
    match Failure::last_in(&done.stderr) {
        Some(f) => format!("{}: {}", done.describe(), f.message),
        None => done.describe(),
    }
}

/// One line, for a CSV cell: newlines and runs of spaces collapsed, at most `max` characters.
pub fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// `path` relative to the entry directory, for messages.
pub fn short(path: &Path) -> String {
    let parts: Vec<_> = path.components().rev().take(3).collect();
    parts.into_iter().rev().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(pid: u32, kthread: bool) -> Thread {
        Thread {
            pid,
            tgid: pid,
            ppid: 0,
            uid: 0,
            state: "S".into(),
            comm: "x".into(),
            comm_hex: "78".into(),
            cmdline: String::new(),
            start_time: 1,
            start_time_ns: 10_000_000,
            kthread,
        }
    }

    fn r(pid: i32, kthread: bool) -> Row {
        Row {
            pid,
            tgid: pid,
            ppid: 0,
            uid: 0,
            state: "S".into(),
            comm: "x".into(),
            cmdline: String::new(),
            threads: Some(1),
            start_time: 10_000_000,
            kthread,
        }
    }

    #[test]
    fn kernel_threads_that_come_and_go_do_not_count() {
        // truth: 1, 2, 3(kthread, gone); ours: 1, 2, 4(kthread, new), 5 (user, extra)
        let (s, c) = score(&[r(1, false), r(2, false), r(4, true), r(5, false)], &[t(1, false), t(2, false), t(3, true)]);
        assert_eq!(s.true_positives, 2);
        assert_eq!(s.recall, 1.0);
        assert!((s.precision - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.fields_exact_fraction, 1.0);
        assert!(!s.exact && c.extra == vec![5]);
    }

    #[test]
    fn empty_listing_scores_zero() {
        let (s, _) = score(&[], &[t(1, false)]);
        assert_eq!((s.recall, s.precision, s.true_positives), (0.0, 0.0, 0));
    }

    #[test]
    fn cells_are_one_line() {
        assert_eq!(one_line("a\n  b\tc", 10), "a b c");
        assert_eq!(one_line("abcdefghijkl", 5), "abcd…");
    }

    #[test]
    fn harness_failure_is_the_typed_failure_line_else_the_status() {
        use std::os::unix::process::ExitStatusExt;
        let done = |code: Option<i32>, stderr: &str| Finished {
            status: code.map(|c| std::process::ExitStatus::from_raw(c << 8)),
            stdout: Vec::new(),
            stderr: stderr.into(),
            wall_ms: 1.0,
            timeout: std::time::Duration::from_secs(60),
        };
        let line = harness::failure::Failure::new(harness::failure::FailureKind::Kernel, "listing processes: no Linux banner found").line();
        let stderr = format!("WARN x\n{line}\n");
        assert_eq!(harness_failure(&done(Some(1), &stderr)), "exit status: 1: listing processes: no Linux banner found");
        // A stats line after it, and log lines, are not the failure.
        let stderr = format!("{line}\n{{\"method\":\"btf\"}}\n\n");
        assert_eq!(harness_failure(&done(Some(2), &stderr)), "exit status: 2: listing processes: no Linux banner found");
        assert_eq!(harness_failure(&done(None, "last log line\n")), "killed after 60 s");
    }
}
