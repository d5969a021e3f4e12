//! The quick chain of the main command on one small corpus entry: the corpus experiments run
//! through the same driver as `experiments run --quick --only-kernel custom-thesis`, into a
//! temporary results directory; every CSV must have its schema and the figures must render.
//!
//! This boots real QEMU guests (the panic and scaling experiments) and so takes a few minutes.

use std::path::Path;

use experiments::config_matrix::MatrixRow;
use experiments::panic::PanicRow;
use experiments::results::{self, Stamp};
use experiments::scaling::ScalingRow;
use experiments::timing::TimingRow;
use experiments::{hw_reference, registry, Context};
use indicatif::MultiProgress;
use paper_figures::Outcome;
use serde::de::DeserializeOwned;
use serde::Serialize;

const ENTRY: &str = "custom-thesis";
const BUILD: &str = "run `cargo run --release -p harness -- corpus build`";

fn rows<R: Serialize + DeserializeOwned>(dir: &Path, name: &str) -> Vec<R> {
    let path = results::path_for(dir, name);
    let rows: Vec<(R, Stamp)> = results::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(!rows.is_empty(), "{name}: no rows");
    assert!(rows.iter().all(|(_, s)| s.quick && !s.git_rev.is_empty()), "{name}: stamps");
    rows.into_iter().map(|(r, _)| r).collect()
}

#[test]
fn quick_chain_on_one_entry() {
    let corpus = harness::lab::corpus::Corpus::open_default();
    corpus
        .entry(ENTRY)
        .unwrap_or_else(|e| panic!("corpus entry {ENTRY} is not available ({e}); {BUILD}"));
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let ctx = Context {
        hw_reference: repo.join(hw_reference::DEFAULT_RELATIVE),
        results_dir: dir.path().to_owned(),
        repo: repo.clone(),
        quick: true,
        only_kernels: vec![ENTRY.into()],
    };
    let names: Vec<String> = ["config-matrix", "timing", "panic", "scaling"].map(String::from).to_vec();
    let progress = MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden());
    let rev = experiments::provenance::git_rev(&repo).unwrap();
    for exp in registry::select(&names).unwrap() {
        let outcome = exp.execute(&ctx, &rev, &progress);
        assert!(outcome.succeeded(), "{}: {:?}", outcome.name, outcome.failures);
        assert_eq!(outcome.runs_ok, outcome.runs_planned, "{}", outcome.name);
    }

    let matrix: Vec<MatrixRow> = rows(dir.path(), "config-matrix");
    // --quick: the running mode only, every method once.
    assert_eq!(matrix.len(), 6);
    assert!(matrix.iter().all(|r| r.kernel == ENTRY && r.mode == "running"));
    // A method either listed tasks or said why not.
    assert!(matrix.iter().all(|r| r.ok || !r.error.is_empty()));

    let timing: Vec<TimingRow> = rows(dir.path(), "timing");
    assert!(timing.iter().any(|r| r.ok && r.phase == "total"));
    // Every successful repeat has its four phases and its total.
    let ok_totals = timing.iter().filter(|r| r.ok && r.phase == "total").count();
    assert_eq!(timing.iter().filter(|r| r.ok).count(), ok_totals * 5);

    let panic: Vec<PanicRow> = rows(dir.path(), "panic");
    assert_eq!(panic.len(), 4, "two observers x two modes");
    let get = |mode: &str, obs: &str| panic.iter().find(|r| r.mode == mode && r.observer == obs).unwrap();
    // Measured, not asserted by the experiment: the in-guest agent answers only while the
    // kernel runs; the memory analysis answers in both states.
    assert!(get("running", "in-guest-ps").available, "{:?}", get("running", "in-guest-ps"));
    assert!(!get("panicked", "in-guest-ps").available);
    assert!(get("running", "netdma").available && get("panicked", "netdma").available);

    let scaling: Vec<ScalingRow> = rows(dir.path(), "scaling");
    let procs: Vec<&ScalingRow> = scaling.iter().filter(|r| r.axis == "processes" && r.ok).collect();
    let most = procs.iter().map(|r| r.tasks_truth).max().unwrap();
    let least = procs.iter().map(|r| r.tasks_truth).min().unwrap();
    assert!(most >= least + 1000, "the sleepers were added: {least} → {most} tasks");

    let out = tempfile::tempdir().unwrap();
    let mut rendered = Vec::new();
    for o in paper_figures::render_all(dir.path(), out.path()) {
        match o {
            Outcome::Rendered { stem, files } => {
                for f in &files {
                    assert!(std::fs::metadata(f).unwrap().len() > 1000, "{}", f.display());
                }
                rendered.push(stem);
            }
            Outcome::Skipped { .. } => {}
            Outcome::Failed { stem, error } => panic!("{stem}: {error}"),
        }
    }
    assert_eq!(rendered, ["config-matrix", "timing-phases", "panic-availability", "scaling"]);
}
