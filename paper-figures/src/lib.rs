//! Paper figures from `results/*.csv`.
//!
//! ```text
//!   results/<name>.csv ──(experiments::results::read, schema-checked)──▶ figures::<figure>::build
//!                                                                          │  rows → Chart (data):
//!                                                                          │  chart::LineChart,
//!                                                                          │  heatmap::Heatmap,
//!                                                                          │  bars::BarChart
//!   paper-figures/out/<stem>.{svg,png} ◀── render (SVG + PNG backends) ◀───┘  each draws with plotters
//! ```
//!
//! This crate never runs an experiment: it only reads what `experiments run` wrote.

pub mod bars;
pub mod chart;
pub mod figures;
pub mod heatmap;
pub mod render;
pub mod style;

use std::path::{Path, PathBuf};

use figures::FigureError;

/// What happened to one figure.
#[derive(Debug)]
pub enum Outcome {
    Rendered {
        stem: &'static str,
        files: [PathBuf; 2],
    },
    /// An input file is absent (its experiment has not run).
    Skipped {
        stem: &'static str,
        missing: PathBuf,
    },
    Failed {
        stem: &'static str,
        error: FigureError,
    },
}

/// Renders every figure whose inputs exist in `results_dir` into `out_dir`.
pub fn render_all(results_dir: &Path, out_dir: &Path) -> Vec<Outcome> {
    figures::all()
        .into_iter()
        .map(|fig| {
            let missing = fig
                .inputs
                .iter()
                .map(|name| experiments::results::path_for(results_dir, name))
                .find(|p| !p.exists());
            if let Some(missing) = missing {
                return Outcome::Skipped {
                    stem: fig.stem,
                    missing,
                };
            }
            match (fig.build)(results_dir).and_then(|chart| Ok(render::render(&chart, out_dir, fig.stem)?)) {
                Ok(files) => Outcome::Rendered { stem: fig.stem, files },
                Err(error) => Outcome::Failed { stem: fig.stem, error },
            }
        })
        .collect()
}
