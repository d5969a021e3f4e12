//! Writes a chart as SVG and PNG.
//!
//! Invariant: both files come from the same [`Chart`] drawn by the same code; a file is only
//! reported once plotters has flushed it.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::bars::BarChart;
use crate::chart::{ChartError, LineChart};
use crate::heatmap::Heatmap;

/// Any figure this crate draws.
#[derive(Clone, Debug)]
pub enum Chart {
    Line(LineChart),
    Heatmap(Heatmap),
    Bars(BarChart),
}

impl Chart {
    pub fn size(&self) -> (u32, u32) {
        match self {
            Chart::Line(c) => c.size,
            Chart::Heatmap(c) => c.size,
            Chart::Bars(c) => c.size,
        }
    }

    pub fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), ChartError>
    where
        DB::ErrorType: 'static,
    {
        match self {
            Chart::Line(c) => c.draw(root),
            Chart::Heatmap(c) => c.draw(root),
            Chart::Bars(c) => c.draw(root),
        }
    }
}

/// Why a chart could not be written.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Chart(#[from] ChartError),
    #[error(transparent)]
    Font(#[from] crate::style::FontError),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// Renders `chart` to `<out_dir>/<stem>.svg` and `.png`; returns both paths.
pub fn render(chart: &Chart, out_dir: &Path, stem: &str) -> Result<[PathBuf; 2], RenderError> {
    crate::style::load_fonts()?;
    std::fs::create_dir_all(out_dir).map_err(|source| RenderError::Io {
        path: out_dir.to_owned(),
        source,
    })?;
    let svg = out_dir.join(format!("{stem}.svg"));
    let png = out_dir.join(format!("{stem}.png"));
    chart.draw(&SVGBackend::new(&svg, chart.size()).into_drawing_area())?;
    chart.draw(&BitMapBackend::new(&png, chart.size()).into_drawing_area())?;
    Ok([svg, png])
}
