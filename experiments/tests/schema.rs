//! The CSV schema of each experiment, and the exporter's bytes for real hardware rows, pinned.

use std::path::PathBuf;

use experiments::results::{self, Stamp};
use experiments::wire::{LatencyRow, ThroughputRow, WireLatency, WireThroughput};
use experiments::{hw_reference, Context, Experiment};

fn context() -> Context {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    Context {
        hw_reference: repo.join(hw_reference::DEFAULT_RELATIVE),
        results_dir: repo.join("results"),
        repo,
        quick: false,
        only_kernels: Vec::new(),
    }
}

fn stamp() -> Stamp {
    Stamp {
        git_rev: "0123abc".into(),
        date_utc: "2026-01-01T00:00:00Z".into(),
        quick: false,
    }
}

/// The CSV the exporter writes for an experiment's first planned run (real hardware rows).
fn first_run_csv<E: Experiment>(e: E) -> String {
    let ctx = context();
    let runs = e.plan(&ctx).unwrap();
    let rows: Vec<_> = e.run(&ctx, &runs[0]).unwrap().into_iter().map(|r| (r, stamp())).collect();
    String::from_utf8(results::to_csv(&rows).unwrap()).unwrap()
}

#[test]
fn wire_latency_schema() {
    insta::assert_snapshot!("wire_latency_columns", results::columns::<LatencyRow>().unwrap().join(","));
    // The smallest read size, as the exporter writes it.
    insta::assert_snapshot!("wire_latency_csv_1_byte", first_run_csv(WireLatency));
}

#[test]
fn wire_throughput_schema() {
    insta::assert_snapshot!("wire_throughput_columns", results::columns::<ThroughputRow>().unwrap().join(","));
    insta::assert_snapshot!("wire_throughput_csv_fix_1_byte_1_cpu", first_run_csv(WireThroughput));
}

/// The columns of the corpus experiments, pinned: a renamed or reordered column is a visible
/// change (the figures read them by name).
#[test]
fn corpus_experiment_columns() {
    use experiments::{
        baseline::BaselineRow, config_matrix::MatrixRow, faults::FaultRow, forensics::ForensicsRow, panic::PanicRow, plugins::PluginRow, scaling::ScalingRow,
        timing::TimingRow,
    };
    insta::assert_snapshot!("config_matrix_columns", results::columns::<MatrixRow>().unwrap().join(","));
    insta::assert_snapshot!("timing_columns", results::columns::<TimingRow>().unwrap().join(","));
    insta::assert_snapshot!("panic_columns", results::columns::<PanicRow>().unwrap().join(","));
    insta::assert_snapshot!("scaling_columns", results::columns::<ScalingRow>().unwrap().join(","));
    insta::assert_snapshot!("faults_columns", results::columns::<FaultRow>().unwrap().join(","));
    insta::assert_snapshot!("baseline_columns", results::columns::<BaselineRow>().unwrap().join(","));
    insta::assert_snapshot!("forensics_columns", results::columns::<ForensicsRow>().unwrap().join(","));
    insta::assert_snapshot!("baseline_plugins_columns", results::columns::<PluginRow>().unwrap().join(","));
    insta::assert_snapshot!("live_columns", results::columns::<experiments::live::LiveRow>().unwrap().join(","));
}
