//! Reading and scoring Volatility 3's `linux.pslist`, on output captured from a real run: the
//! pinned release on the deb-amd64 running dump with the ISF `harness profile` made of it, and
//! the guest's own truth recorded for that dump (`tests/fixtures/`). No Volatility needed here.

use std::path::PathBuf;

use experiments::baseline::{score_processes, Proc};
use experiments::volatility::{self, parse_pslist_csv};
use harness::introspect::compare::kworker_base;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn pslist_of_a_real_dump_scored_against_the_guest() {
    let listed = parse_pslist_csv(&fixture("volatility-pslist-deb-amd64-running.csv")).unwrap();
    let truth = harness::lab::truth::parse_jsonl(&fixture("truth-deb-amd64-running.jsonl")).unwrap();
    assert_eq!(listed.len(), 75);
    assert!(listed.iter().all(|r| r.pid == r.tid), "pslist lists leaders only");
    assert_eq!((listed[0].pid, listed[0].ppid, listed[0].comm.as_str()), (1, 0, "init"));

    let procs: Vec<Proc> = listed.iter().map(Proc::from_pslist).collect();
    let truth_procs = Proc::truth(&truth);
    assert_eq!(truth_procs.len(), 76);
    let s = score_processes(&procs, &truth_procs);
    // The one process Volatility does not list is the guest's zombie (its nsproxy is gone, which
    // Volatility's task validity check rejects).
    let missing: Vec<_> = truth_procs.iter().filter(|t| !procs.iter().any(|p| p.pid == t.pid)).collect();
    assert_eq!(missing.len(), 1);
    let zombie = truth.iter().find(|t| t.pid == missing[0].pid).unwrap();
    assert_eq!((zombie.comm.as_str(), zombie.state.as_str()), ("nd-zchild", "Z"));
    assert_eq!((s.true_positives, s.precision, s.recall), (75, 1.0, 75.0 / 76.0));

    // Parents and uids agree everywhere; names differ only where /proc shows more than
    // task->comm: a worker's description, or a kernel thread's name past 15 bytes.
    let mut differ = 0;
    for p in &procs {
        let t = truth_procs.iter().find(|t| t.pid == p.pid).unwrap();
        assert_eq!((p.ppid, p.uid), (t.ppid, t.uid), "pid {}", p.pid);
        if p.comm != t.comm {
            differ += 1;
            let cut = t.comm.len() > 15 && t.comm.starts_with(&p.comm) && p.comm.len() == 15;
            let no_description = kworker_base(&t.comm) == Some(p.comm.as_str());
            assert!(cut || no_description, "pid {}: {:?} vs {:?}", p.pid, t.comm, p.comm);
        }
    }
    assert!(differ > 0);
    assert!((s.fields_exact_fraction - (75 - differ) as f64 / 75.0).abs() < 1e-12);
}

#[test]
fn a_failed_run_reports_volatilitys_own_error() {
    let stderr = String::from_utf8(fixture("volatility-pslist-custom-bare-panicked.stderr")).unwrap();
    assert_eq!(volatility::version(&stderr).as_deref(), Some(volatility::PINNED_VERSION));
    assert_eq!(
        volatility::error_line(&stderr),
        "Unable to validate the plugin requirements: ['plugins.PsList.kernel.layer_name', 'plugins.PsList.kernel.symbol_table_name']"
    );
}

#[test]
fn setup_installs_the_pinned_release() {
    let setup = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/setup")).unwrap();
    assert!(
        setup.lines().any(|l| l.trim() == format!("vol_version={}", volatility::PINNED_VERSION)),
        "scripts/setup must install volatility3=={}",
        volatility::PINNED_VERSION
    );
}
