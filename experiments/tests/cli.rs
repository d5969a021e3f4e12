//! `experiments run wire` end to end: exit status, files, summary.

use std::process::Command;

use experiments::results;
use experiments::wire::{LatencyRow, Source, ThroughputRow};

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
    let hw = |s: Source| s == Source::NettlpHw;
    // Hardware: 10 sizes with 10,000 reads each; 40 runs of 10 seconds.
    assert_eq!(lat.iter().filter(|(r, _)| hw(r.source)).map(|(r, _)| r.reads).sum::<u64>(), 100_000);
    assert_eq!(thr.iter().filter(|(r, _)| hw(r.source)).count(), 400);
    // Emulator: both modes measured at every quick size.
    for source in [Source::EmulatorBlocking, Source::EmulatorPipelined] {
        let sizes: std::collections::BTreeSet<u64> =
            lat.iter().filter(|(r, _)| r.source == source).map(|(r, _)| r.size_bytes).collect();
        assert_eq!(sizes.into_iter().collect::<Vec<_>>(), [4, 64, 512, 4096], "{source}");
        assert!(thr.iter().any(|(r, _)| r.source == source && r.reads_per_s > 0.0), "{source}");
    }
    assert!(lat.iter().all(|(_, s)| s.quick) && thr.iter().all(|(_, s)| s.quick));
}

#[test]
fn unknown_experiment_is_an_error_that_lists_the_known_ones() {
    let out = Command::new(env!("CARGO_BIN_EXE_experiments"))
        .args(["run", "no-such-experiment"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("config-matrix") && stderr.contains("faults"), "{stderr}");
}
