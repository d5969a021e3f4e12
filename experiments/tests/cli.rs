//! `experiments run wire` end to end: exit status, files, summary.

use std::process::Command;

use experiments::results;
use experiments::wire::{LatencyRow, ThroughputRow};

#[test]
fn run_wire_writes_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_experiments"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "wire", "--quick", "--results"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("wire-latency") && stdout.contains("wire-throughput"),
        "{stdout}"
    );

    let lat = results::read::<LatencyRow>(&dir.path().join("wire-latency.csv")).unwrap();
    let thr = results::read::<ThroughputRow>(&dir.path().join("wire-throughput.csv")).unwrap();
    // 10 sizes with 10,000 reads each; 40 runs of 10 seconds.
    assert_eq!(lat.iter().map(|(r, _)| r.reads).sum::<u64>(), 100_000);
    assert_eq!(thr.len(), 400);
    assert!(lat.iter().all(|(_, s)| s.quick) && thr.iter().all(|(_, s)| s.quick));
}

#[test]
fn pending_experiment_is_an_error_that_says_why() {
    let out = Command::new(env!("CARGO_BIN_EXE_experiments"))
        .args(["run", "faults"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs"), "{stderr}");
}
