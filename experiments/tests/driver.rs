//! The driver persists rows after every run: a failing run keeps what came before it.

use std::cell::RefCell;
use std::path::PathBuf;

use experiments::driver;
use experiments::hw_reference;
use experiments::results;
use experiments::wire::{ThroughputRow, WireRun, WireThroughput};
use experiments::{Context, Experiment, RunError};
use indicatif::{MultiProgress, ProgressDrawTarget};

/// Real wire-throughput runs over the hardware data, except that chosen runs fail; before each
/// run it records how many rows the results file holds.
struct FailingOn {
    fail: Vec<usize>,
    take: usize,
    seen: RefCell<Vec<usize>>,
}

impl Experiment for FailingOn {
    type Row = ThroughputRow;
    type Run = Indexed;
    fn name(&self) -> &'static str {
        "failing-throughput"
    }
    fn module(&self) -> &'static str {
        "test"
    }
    fn plan(&self, ctx: &Context) -> Result<Vec<Indexed>, RunError> {
        Ok(WireThroughput
            .plan(ctx)?
            .into_iter()
            .take(self.take)
            .enumerate()
            .map(|(i, r)| Indexed(i, r))
            .collect())
    }
    fn run(&self, ctx: &Context, Indexed(i, run): &Indexed) -> Result<Vec<ThroughputRow>, RunError> {
        let path = results::path_for(&ctx.results_dir, self.name());
        let on_disk = if path.exists() {
            results::read::<ThroughputRow>(&path).unwrap().len()
        } else {
            0
        };
        self.seen.borrow_mut().push(on_disk);
        if self.fail.contains(i) {
            return Err(RunError::Prerequisite(format!("run {i} fails on purpose")));
        }
        WireThroughput.run(ctx, run)
    }
}

struct Indexed(usize, WireRun);

impl std::fmt::Display for Indexed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{} {}", self.0, self.1)
    }
}

fn context(results_dir: PathBuf) -> Context {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    Context {
        hw_reference: repo.join(hw_reference::DEFAULT_RELATIVE),
        repo,
        results_dir,
        quick: true,
        only_kernels: Vec::new(),
    }
}

fn hidden() -> MultiProgress {
    MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
}

#[test]
fn rows_are_on_disk_after_every_run_and_survive_a_later_failure() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path().to_owned());
    let exp = FailingOn {
        fail: vec![2],
        take: 4,
        seen: RefCell::new(vec![]),
    };
    let outcome = driver::execute(&exp, &ctx, "test-rev", &hidden());

    assert_eq!((outcome.runs_planned, outcome.runs_ok), (4, 3));
    assert_eq!(outcome.failures.len(), 1);
    assert!(
        outcome.failures[0].error.contains("run 2 fails"),
        "{:?}",
        outcome.failures
    );
    // Each hardware throughput file has 10 one-second rows; the file grew after every good run.
    assert_eq!(*exp.seen.borrow(), vec![0, 10, 20, 20]);
    let rows = results::read::<ThroughputRow>(&outcome.output).unwrap();
    assert_eq!(rows.len(), 30);
    assert!(rows.iter().all(|(_, s)| s.git_rev == "test-rev" && s.quick));
    let expected: Vec<(u64, u32)> = WireThroughput
        .plan(&ctx)
        .unwrap()
        .into_iter()
        .take(4)
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, run)| match run {
            WireRun::Hardware { name, .. } => (name.dma_len_bytes, name.cpus),
            other => panic!("the hardware runs come first, got {other}"),
        })
        .collect();
    let mut got: Vec<(u64, u32)> = rows.iter().map(|(r, _)| (r.size_bytes, r.cpus)).collect();
    got.dedup();
    assert_eq!(got, expected);
}

#[test]
fn a_run_that_finishes_nothing_leaves_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path().to_owned());
    let good = FailingOn {
        fail: vec![],
        take: 1,
        seen: RefCell::new(vec![]),
    };
    let first = driver::execute(&good, &ctx, "rev1", &hidden());
    assert!(first.succeeded());
    let before = std::fs::read(&first.output).unwrap();

    let bad = FailingOn {
        fail: vec![0, 1],
        take: 2,
        seen: RefCell::new(vec![]),
    };
    let second = driver::execute(&bad, &ctx, "rev2", &hidden());
    assert_eq!(second.failures.len(), 2);
    assert_eq!(std::fs::read(&second.output).unwrap(), before);
}

#[test]
fn a_missing_reference_fails_the_plan_with_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    let mut ctx = context(dir.path().to_owned());
    ctx.hw_reference = dir.path().join("absent");
    let outcome = driver::execute(&WireThroughput, &ctx, "rev", &hidden());
    assert_eq!(outcome.failures.len(), 1);
    assert!(
        outcome.failures[0].error.contains("--reference"),
        "{:?}",
        outcome.failures
    );
    assert!(!outcome.output.exists());
}
