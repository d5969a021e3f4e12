//! The figures of the paper: which results file each one reads and how it turns rows into a
//! chart.
//!
//! Invariant: a figure reads only `results/*.csv`, through [`experiments::results::read`] with
//! the experiment's own row type, so a column it uses cannot be missing or renamed without an
//! error. A figure whose input file is absent is skipped with a note; a file with the wrong
//! schema or no rows is an error.

use std::path::{Path, PathBuf};

use experiments::results::{self, ResultsError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::chart::ChartError;
use crate::render::{Chart, RenderError};

mod baseline;
mod config_matrix;
mod faults;
mod fleet;
mod forensics;
mod live;
mod panic;
mod scaling;
mod timing;
mod wire_latency;
mod wire_throughput;

/// One figure of the paper.
pub struct Figure {
    /// Output files are `<stem>.svg` and `<stem>.png`.
    pub stem: &'static str,
    /// The results files it reads (`results/<input>.csv`).
    pub inputs: &'static [&'static str],
    /// Builds the chart from the results directory.
    pub build: fn(&Path) -> Result<Chart, FigureError>,
}

/// Every figure, in the order they are rendered.
pub fn all() -> Vec<Figure> {
    vec![
        Figure {
            stem: "config-matrix",
            inputs: &["config-matrix"],
            build: config_matrix::build,
        },
        Figure {
            stem: "timing-phases",
            inputs: &["timing"],
            build: timing::build,
        },
        Figure {
            stem: "baseline-volatility",
            inputs: &["baseline"],
            build: baseline::build,
        },
        Figure {
            stem: "panic-availability",
            inputs: &["panic"],
            build: panic::build,
        },
        Figure {
            stem: "scaling",
            inputs: &["scaling"],
            build: scaling::build,
        },
        Figure {
            stem: "faults-correctness",
            inputs: &["faults"],
            build: faults::build_correctness,
        },
        Figure {
            stem: "faults-time",
            inputs: &["faults"],
            build: faults::build_time,
        },
        Figure {
            stem: "forensics",
            inputs: &["forensics"],
            build: forensics::build,
        },
        Figure {
            stem: "fleet",
            inputs: &["fleet"],
            build: fleet::build,
        },
        Figure {
            stem: "live-watch",
            inputs: &["live"],
            build: live::build,
        },
        Figure {
            stem: "wire-latency-cdf",
            inputs: &["wire-latency"],
            build: wire_latency::build,
        },
        Figure {
            stem: "wire-throughput",
            inputs: &["wire-throughput"],
            build: wire_throughput::build,
        },
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum FigureError {
    #[error(transparent)]
    Results(#[from] ResultsError),
    #[error("{}: no rows", path.display())]
    Empty { path: PathBuf },
    #[error(transparent)]
    Chart(#[from] ChartError),
    #[error(transparent)]
    Render(#[from] RenderError),
}

/// A row of a corpus experiment drawn as a kernel × column heatmap, one panel per mode.
pub(crate) trait KernelCell {
    fn kernel(&self) -> &str;
    fn release(&self) -> &str;
    /// `running` or `panicked`.
    fn mode(&self) -> &str;
    /// Which column the row is in.
    fn column(&self) -> &str;
}

/// [`KernelCell`] for a row with `kernel`, `release` and `mode` fields, its column in `$column`.
#[macro_export]
macro_rules! kernel_cell {
    ($row:ty, $column:ident) => {
        impl KernelCell for $row {
            fn kernel(&self) -> &str {
                &self.kernel
            }
            fn release(&self) -> &str {
                &self.release
            }
            fn mode(&self) -> &str {
                &self.mode
            }
            fn column(&self) -> &str {
                &self.$column
            }
        }
    };
}

/// The kernels of `rows` as (name, label): grouped by Linux version, oldest first; within a
/// version, in the order the experiment ran them.
pub(crate) fn kernels_by_version<R: KernelCell>(rows: &[R], label: impl Fn(&R) -> String) -> Vec<(String, String)> {
    let mut kernels: Vec<(String, String, (u32, u32))> = Vec::new();
    for r in rows {
        if !kernels.iter().any(|k| k.0 == r.kernel()) {
            kernels.push((r.kernel().to_owned(), label(r), harness::introspect::layout::version_of(r.release())));
        }
    }
    kernels.sort_by_key(|k| k.2);
    kernels.into_iter().map(|(k, l, _)| (k, l)).collect()
}

/// One panel per mode that has rows: `kernels` × `columns` (value, label), each cell from the
/// row there (a grey "not run" where there is none).
pub(crate) fn mode_panels<R: KernelCell>(
    rows: &[R],
    kernels: &[(String, String)],
    columns: &[(&str, &str)],
    cell: impl Fn(&R) -> crate::heatmap::Cell,
    title: impl Fn(&str) -> String,
) -> Vec<crate::heatmap::HeatmapPanel> {
    let mut panels = Vec::new();
    for mode in ["running", "panicked", "infected"] {
        if !rows.iter().any(|r| r.mode() == mode) {
            continue;
        }
        let cells = kernels
            .iter()
            .map(|(k, _)| {
                columns
                    .iter()
                    .map(|(c, _)| match rows.iter().find(|r| r.kernel() == k && r.mode() == mode && r.column() == *c) {
                        Some(r) => cell(r),
                        None => crate::heatmap::Cell::Absent { text: "not run".into() },
                    })
                    .collect()
            })
            .collect();
        panels.push(crate::heatmap::HeatmapPanel {
            title: title(mode),
            rows: kernels.iter().map(|k| k.1.clone()).collect(),
            cols: columns.iter().map(|c| c.1.to_string()).collect(),
            cells,
        });
    }
    panels
}

/// Reads `results_dir/<name>.csv`, which must hold at least one row.
pub(crate) fn load<R: Serialize + DeserializeOwned>(results_dir: &Path, name: &str) -> Result<Vec<R>, FigureError> {
    let path = results::path_for(results_dir, name);
    let rows: Vec<R> = results::read::<R>(&path)?.into_iter().map(|(r, _)| r).collect();
    if rows.is_empty() {
        return Err(FigureError::Empty { path });
    }
    Ok(rows)
}
