//! The evaluation of the workbench: experiments that measure it and write `results/*.csv`.
//!
//! ```text
//!   experiments run NAME... (main.rs, clap)
//!        │
//!   registry   names → experiments (available now, or pending with what they wait for)
//!        │
//!   driver     plan → run → rewrite results/<name>.csv after every run → Outcome → summary
//!        │            │
//!        │       experiment::Experiment   one module per experiment, rows as serde structs
//!        │            │
//!        │       baseline ── volatility     (Volatility 3 linux.pslist beside `harness ps`,
//!        │                                   both as processes on the same dump)
//!        │       config_matrix, timing ──┐
//!        │       panic, scaling ─────────┴── analysis  (harness::introspect::ps on corpus
//!        │             │                                memory, scored with compare)
//!        │             └── harness::lab::shellport      (a booted guest with a shell port)
//!        │       wire ── hw_reference ── tlpperf   (published NetTLP hardware runs)
//!        │         └─┬── served   `emulator serve` processes + harness::dma::Requester
//!        │       faults ┘          (loopback; faults injected by the endpoint)
//!        │       forensics ── harness::introspect::printk + lab::console (dmesg vs the console)
//!        │       fleet ── `emulator serve --manifest` (private netns) + `harness fleet`, vs truth
//!        │       live ── served + lab::shellport + lab::churn + introspect::watch (a running guest)
//!        │
//!   results    CSV exporter/reader (schema = row fields + git_rev,date_utc,quick)
//!   provenance git revision and UTC date;  schema: column names from serde
//! ```
//!
//! `paper-figures` reads the CSV files through [`results::read`] with the row types defined
//! here, so a figure and the experiment that feeds it cannot disagree about a column.

pub mod analysis;
pub mod baseline;
pub mod config_matrix;
pub mod driver;
pub mod faults;
pub mod fleet;
pub mod forensics;
pub mod experiment;
pub mod hw_reference;
pub mod live;
pub mod panic;
pub mod plugins;
pub mod process;
pub mod provenance;
pub mod registry;
pub mod results;
pub mod scaling;
pub mod served;
pub mod schema;
pub mod summary;
pub mod timing;
pub mod tlpperf;
pub mod volatility;
pub mod wire;

pub use experiment::{Context, Experiment, RunError};
