//! Writes a chart as SVG and PNG.
//!
//! Invariant: both files come from the same [`LineChart`] drawn by the same code; a file is
//! only reported once plotters has flushed it.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::chart::LineChart;
use crate::figures::FigureError;

/// Renders `chart` to `<out_dir>/<stem>.svg` and `.png`; returns both paths.
pub fn render(chart: &LineChart, out_dir: &Path, stem: &str) -> Result<[PathBuf; 2], FigureError> {
    crate::style::load_fonts()?;
    std::fs::create_dir_all(out_dir).map_err(|source| FigureError::Io {
        path: out_dir.to_owned(),
        source,
    })?;
    let svg = out_dir.join(format!("{stem}.svg"));
    let png = out_dir.join(format!("{stem}.png"));
    chart.draw(&SVGBackend::new(&svg, chart.size).into_drawing_area())?;
    chart.draw(&BitMapBackend::new(&png, chart.size).into_drawing_area())?;
    Ok([svg, png])
}
