//! Runs experiments: executes each planned run, rewrites the results file after every finished
//! run, shows progress, and collects an [`Outcome`] for the summary.
//!
//! Invariant: after run *k* finishes, `results/<name>.csv` holds exactly the rows of the runs
//! finished so far (in this invocation), each stamped with the git revision and the time its run
//! finished. A failing run is recorded as a [`Failure`] and the next run still happens; if no
//! run finishes, an existing results file is left untouched.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::experiment::{Context, Experiment};
use crate::results::{self, Stamp};

/// A run (or the plan, or the writing of results) that failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub run: String,
    pub error: String,
}

/// What happened when one experiment was executed.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub name: &'static str,
    pub output: PathBuf,
    pub runs_planned: usize,
    pub runs_ok: usize,
    pub rows: usize,
    pub wall: Duration,
    pub failures: Vec<Failure>,
    pub headline: Vec<String>,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.failures.is_empty()
    }
}

/// An experiment with its row type erased, so experiments of all kinds fit in one list.
pub trait Runnable {
    fn name(&self) -> &'static str;
    fn module(&self) -> &'static str;
    fn execute(&self, ctx: &Context, git_rev: &str, progress: &MultiProgress) -> Outcome;
}

impl<E: Experiment> Runnable for E {
    fn name(&self) -> &'static str {
        Experiment::name(self)
    }
    fn module(&self) -> &'static str {
        Experiment::module(self)
    }
    fn execute(&self, ctx: &Context, git_rev: &str, progress: &MultiProgress) -> Outcome {
        execute(self, ctx, git_rev, progress)
    }
}

/// Executes every run of `exp`, persisting rows after each one.
pub fn execute<E: Experiment>(exp: &E, ctx: &Context, git_rev: &str, progress: &MultiProgress) -> Outcome {
    let start = Instant::now();
    let name = exp.name();
    let mut outcome = Outcome {
        name,
        output: results::path_for(&ctx.results_dir, name),
        runs_planned: 0,
        runs_ok: 0,
        rows: 0,
        wall: Duration::ZERO,
        failures: Vec::new(),
        headline: Vec::new(),
    };
    let plan = match exp.plan(ctx) {
        Ok(plan) => plan,
        Err(e) => {
            tracing::error!(experiment = name, error = %e, "planning failed");
            outcome.failures.push(Failure {
                run: "plan".into(),
                error: e.to_string(),
            });
            outcome.wall = start.elapsed();
            return outcome;
        }
    };
    outcome.runs_planned = plan.len();
    let bar = progress.add(ProgressBar::new(plan.len() as u64));
    bar.set_style(
        ProgressStyle::with_template("{prefix:>16} [{bar:30}] {pos}/{len} {elapsed:>4} {msg}")
            .expect("static progress template")
            .progress_chars("=> "),
    );
    bar.set_prefix(name);

    let mut rows: Vec<(E::Row, Stamp)> = Vec::new();
    for run in &plan {
        let label = run.to_string();
        bar.set_message(label.clone());
        let t = Instant::now();
        match exp.run(ctx, run) {
            Ok(new_rows) => {
                let stamp = Stamp {
                    git_rev: git_rev.to_owned(),
                    date_utc: crate::provenance::now_utc(),
                    quick: ctx.quick,
                };
                tracing::info!(experiment = name, run = %label, rows = new_rows.len(), ms = t.elapsed().as_millis() as u64, "run finished");
                rows.extend(new_rows.into_iter().map(|r| (r, stamp.clone())));
                outcome.runs_ok += 1;
                let written = results::to_csv(&rows).and_then(|bytes| results::write_atomic(&outcome.output, &bytes));
                if let Err(e) = written {
                    tracing::error!(experiment = name, error = %e, "cannot write results; stopping this experiment");
                    outcome.failures.push(Failure {
                        run: label,
                        error: format!("writing results: {e}"),
                    });
                    break;
                }
            }
            Err(e) => {
                tracing::error!(experiment = name, run = %label, error = %e, "run failed");
                outcome.failures.push(Failure {
                    run: label,
                    error: e.to_string(),
                });
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    outcome.rows = rows.len();
    let plain: Vec<E::Row> = rows.into_iter().map(|(r, _)| r).collect();
    outcome.headline = exp.headline(&plain);
    outcome.wall = start.elapsed();
    outcome
}
