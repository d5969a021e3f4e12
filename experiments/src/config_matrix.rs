//! `config-matrix`: does the analysis absorb kernel-config differences? Every corpus kernel ×
//! mode (running, panicked) × layout method (static, thesis, btf, isf, heuristic, auto), each a
//! library call of `harness::introspect::ps::ps` on the entry's ELF dump, scored against the
//! guest's own truth (see [`crate::analysis`] for the scores).
//!
//! The `isf` method (not `auto`, which stays "memory + kernel source") gets a Volatility 3 ISF written by `harness profile` from the
//! kernel's *other* dump (running ↔ panicked): a profile made once per kernel build and used on
//! a later snapshot. It tests the ISF path end to end; it is not an independent source of
//! offsets (those would come from dwarf2json and a debug vmlinux, which the corpus lacks).
//!
//! A method whose prerequisite is absent (no BTF, no IKCONFIG, no ISF file, no kernel source) is
//! a row with `ok = false` and the engine's reason: that refusal is the result being measured.
//! A method that runs but fails (e.g. a layout that does not fit) is also `ok = false`, with its
//! error; a listing that stopped part-way is `ok = true` with the walk error.
//!
//! Invariant: one row per (kernel, mode, method) run, every number from that run.
//!
//! ```text
//! results/config-matrix.csv  kernel,release,mode,method,method_used,ok,unavailable,error,
//!                            tasks_truth,tasks_found,true_positives,precision,recall,
//!                            fields_exact_fraction,exact,mismatched_fields,prerequisites,
//!                            btf,ikconfig,vmcoreinfo,kaslr,layout_digest,wall_ms,dma_reads,
//!                            dma_bytes, + stamp
//! ```

use std::fmt;
use std::path::PathBuf;

use harness::introspect::layout::MethodKind;
use harness::introspect::profile::{profile, ProfileFormat};
use harness::introspect::ps::PsOptions;
use harness::lab::corpus::{DumpFormat, Entry, Mode};
use serde::{Deserialize, Serialize};

use crate::analysis::{self, METHODS};
use crate::experiment::{Context, Experiment, RunError};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatrixRow {
    pub kernel: String,
    pub release: String,
    pub mode: String,
    /// The method asked for.
    pub method: String,
    /// The method that produced the layout (differs from `method` for `auto`); empty if none.
    pub method_used: String,
    /// A listing was produced.
    pub ok: bool,
    /// Not ok because a prerequisite of the method is absent (a refusal, not a failure).
    pub unavailable: bool,
    /// Why not ok, or the walk error of a partial listing; empty otherwise.
    pub error: String,
    pub tasks_truth: usize,
    pub tasks_found: usize,
    pub true_positives: usize,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub fields_exact_fraction: Option<f64>,
    /// `compare`'s verdict: no difference beyond its documented tolerances.
    pub exact: bool,
    pub mismatched_fields: usize,
    /// What the method relied on besides physical memory.
    pub prerequisites: String,
    /// What the kernel offers (from its own config): BTF, IKCONFIG, vmcoreinfo, KASLR.
    pub btf: bool,
    pub ikconfig: bool,
    pub vmcoreinfo: bool,
    pub kaslr: bool,
    /// Hash of the kernel's true task_struct offsets (equal digests = same layout).
    pub layout_digest: String,
    pub wall_ms: f64,
    pub dma_reads: u64,
    pub dma_bytes: u64,
}

/// One (kernel, mode): all methods run on the same opened dump.
pub struct MatrixRun {
    pub entry: Entry,
    pub mode: Mode,
}

impl fmt::Display for MatrixRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.entry.name, self.mode.as_str())
    }
}

pub struct ConfigMatrix;

/// Kernels in `--quick` mode (the first ones of the corpus order).
const QUICK_KERNELS: usize = 2;

impl Experiment for ConfigMatrix {
    type Row = MatrixRow;
    type Run = MatrixRun;

    fn name(&self) -> &'static str {
        "config-matrix"
    }
    fn module(&self) -> &'static str {
        "config-matrix"
    }
    fn plan(&self, ctx: &Context) -> Result<Vec<MatrixRun>, RunError> {
        let entries = analysis::entries(ctx, QUICK_KERNELS)?;
        let modes: &[Mode] = if ctx.quick { &[Mode::Running] } else { &Mode::ALL };
        Ok(entries
            .into_iter()
            .flat_map(|entry| modes.iter().map(move |&mode| MatrixRun { entry: entry.clone(), mode }))
            .collect())
    }
    fn run(&self, _ctx: &Context, run: &MatrixRun) -> Result<Vec<MatrixRow>, RunError> {
        let e = &run.entry;
        let truth = analysis::truth(e, run.mode)?;
        let (mem, _) = analysis::open_dump(e, run.mode, DumpFormat::Elf)?;
        let mut inputs = analysis::layout_inputs();
        let isf = isf_from_other_dump(e, run.mode);
        let mut rows = Vec::new();
        for &method in &METHODS {
            inputs.isf = match (&isf, method) {
                (Ok(file), MethodKind::Isf) => Some(file.path.clone()),
                _ => None,
            };
            if let (MethodKind::Isf, Err(why)) = (method, &isf) {
                // No ISF could be made: the method's prerequisite is absent, for that reason.
                let mut r = row(e, run.mode, method, analysis::run_ps(mem.as_ref(), method, &inputs), &truth);
                r.error = analysis::one_line(&format!("no ISF file: {why}"), 300);
                rows.push(r);
                continue;
            }
            let timed = analysis::run_ps(mem.as_ref(), method, &inputs);
            rows.push(row(e, run.mode, method, timed, &truth));
        }
        Ok(rows)
    }
    fn headline(&self, rows: &[MatrixRow]) -> Vec<String> {
        let mut out = Vec::new();
        for m in METHODS {
            let of: Vec<&MatrixRow> = rows.iter().filter(|r| r.method == m.name()).collect();
            if of.is_empty() {
                continue;
            }
            let ok = of.iter().filter(|r| r.ok).count();
            let exact = of.iter().filter(|r| r.exact).count();
            let unavailable = of.iter().filter(|r| r.unavailable).count();
            out.push(format!(
                "{:<9} exact on {exact}/{} kernel-modes; listing on {ok}; refused (prerequisite absent) on {unavailable}",
                m.name(),
                of.len()
            ));
        }
        out
    }
}

/// A Volatility 3 ISF for this kernel, written by `harness profile --format isf` (the library
/// call behind it) from the entry's *other* dump — a profile made once for a kernel build and
/// used on a later snapshot, as a user with an ISF would. Removed when dropped.
pub struct IsfFile {
    pub path: PathBuf,
}

impl Drop for IsfFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub fn isf_from_other_dump(e: &Entry, mode: Mode) -> Result<IsfFile, String> {
    let other = match mode {
        Mode::Running => Mode::Panicked,
        Mode::Panicked | Mode::Infected => Mode::Running,
    };
    let (mem, _) = analysis::open_dump(e, other, DumpFormat::Elf).map_err(|err| err.to_string())?;
    let opts = PsOptions { method: Some(MethodKind::Auto), inputs: analysis::layout_inputs(), ..Default::default() };
    let doc = profile(mem.as_ref(), &opts, ProfileFormat::Isf)
        .map_err(|err| format!("profiling the {} dump failed: {err}", other.as_str()))?;
    let path = std::env::temp_dir().join(format!("netdma-isf-{}-{}-{}.json", e.name, other.as_str(), std::process::id()));
    let text = serde_json::to_vec(&doc).map_err(|err| err.to_string())?;
    std::fs::write(&path, text).map_err(|err| format!("{}: {err}", path.display()))?;
    Ok(IsfFile { path })
}

fn row(e: &Entry, mode: Mode, method: MethodKind, timed: analysis::Timed, truth: &[harness::lab::truth::Thread]) -> MatrixRow {
    let mut r = MatrixRow {
        kernel: e.name.clone(),
        release: e.release.clone(),
        mode: mode.as_str().into(),
        method: method.name().into(),
        method_used: String::new(),
        ok: false,
        unavailable: false,
        error: String::new(),
        tasks_truth: truth.len(),
        tasks_found: 0,
        true_positives: 0,
        precision: None,
        recall: None,
        fields_exact_fraction: None,
        exact: false,
        mismatched_fields: 0,
        prerequisites: analysis::prerequisites(method).into(),
        btf: e.flags.btf,
        ikconfig: e.flags.ikconfig,
        vmcoreinfo: e.flags.vmcoreinfo,
        kaslr: e.flags.kaslr,
        layout_digest: e.layout_digest.clone(),
        wall_ms: timed.wall_ms,
        dma_reads: timed.reads.reads,
        dma_bytes: timed.reads.bytes,
    };
    match timed.result {
        Ok(report) => {
            let (s, _) = analysis::score(&report.rows, truth);
            r.method_used = report.method.name().into();
            if method == MethodKind::Auto {
                r.prerequisites = analysis::prerequisites(report.method).into();
            }
            r.ok = true;
            r.error = report.walk_error.as_ref().map(|w| analysis::one_line(&w.to_string(), 300)).unwrap_or_default();
            r.tasks_found = s.tasks_found;
            r.true_positives = s.true_positives;
            r.precision = Some(s.precision);
            r.recall = Some(s.recall);
            r.fields_exact_fraction = Some(s.fields_exact_fraction);
            r.exact = s.exact && report.walk_error.is_none();
            r.mismatched_fields = s.mismatched_fields;
        }
        Err(err) => {
            r.unavailable = analysis::is_unavailable(&err);
            r.error = analysis::one_line(&err.to_string(), 300);
        }
    }
    r
}
