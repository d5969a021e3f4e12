//! What an experiment is: a plan of runs, each producing result rows.
//!
//! Invariant: an experiment never writes files itself. It returns rows; the driver
//! ([`crate::driver`]) persists them after every run, stamps them, and reports progress. Each
//! row type is a plain serde struct of scalars whose field names carry their units
//! (`latency_us`, `size_bytes`, `throughput_gbps`), so the CSV header documents itself.

use std::fmt;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Everything an experiment may depend on from its environment.
#[derive(Clone, Debug)]
pub struct Context {
    /// The repository root (revision recorded with every row).
    pub repo: PathBuf,
    /// Where `<name>.csv` files are written (normally `<repo>/results`).
    pub results_dir: PathBuf,
    /// The published NetTLP hardware measurements (normally
    /// `<repo>/../shared/reference/nettlp-hw-tlpperf`).
    pub hw_reference: PathBuf,
    /// Smaller inputs and fewer repetitions, so the whole chain finishes in minutes.
    pub quick: bool,
    /// Corpus entries to run on (`--only-kernel`); empty = the experiment's default selection.
    pub only_kernels: Vec<String>,
}

/// Why one run of an experiment failed. Earlier runs' rows are kept.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error(transparent)]
    Reference(#[from] crate::hw_reference::RefError),
    /// A prerequisite of the experiment is absent; the message says how to provide it.
    #[error("{0}")]
    Prerequisite(String),
}

/// One experiment: a named plan of runs, each producing rows of one schema.
pub trait Experiment {
    /// One result row: a plain struct of scalars, units in the field names.
    type Row: Serialize + DeserializeOwned;
    /// One unit of work; the rows of every finished run are on disk before the next starts.
    type Run: fmt::Display;

    /// The results file is `results/<name>.csv`; also the name on the command line.
    fn name(&self) -> &'static str;
    /// The module it belongs to, also accepted on the command line (`wire` runs both wire
    /// experiments).
    fn module(&self) -> &'static str;
    /// The runs to do, in order. Cheap: nothing is measured here.
    fn plan(&self, ctx: &Context) -> Result<Vec<Self::Run>, RunError>;
    /// Does one run and returns its rows.
    fn run(&self, ctx: &Context, run: &Self::Run) -> Result<Vec<Self::Row>, RunError>;
    /// A few lines summarising all rows so far, for the summary on stdout.
    fn headline(&self, _rows: &[Self::Row]) -> Vec<String> {
        Vec::new()
    }
}
