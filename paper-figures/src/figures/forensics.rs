//! The kernel log from memory as a heatmap: kernels (rows, grouped by Linux version, oldest
//! first) × where the memory was read (the dump file, or the dump served over NetTLP), one panel
//! per mode; each cell the fraction of the guest's console lines found verbatim and in order in
//! `harness dmesg`'s log, with the lines counted, whether the panic message was found, and the
//! method `auto` used. A failed run is orange.

use std::path::Path;

use experiments::forensics::ForensicsRow;
use harness::introspect::layout::version_of;

use super::{kernels_by_version, load, mode_panels, FigureError, KernelCell};
use crate::kernel_cell;
use crate::chart::TickFormat;
use crate::heatmap::{Cell, Heatmap};
use crate::render::Chart;

const SOURCES: [(&str, &str); 2] = [("image", "from the dump"), ("wire", "over NetTLP")];

pub fn cell(r: &ForensicsRow) -> Cell {
    if !r.ok {
        return Cell::Failed { text: "failed".into() };
    }
    let v = if r.console_lines == 0 { 0.0 } else { r.matched as f64 / r.console_lines as f64 };
    let panic = match (r.panic_expected, r.panic_found) {
        (true, true) => ", panic found",
        (true, false) => ", NO panic",
        (false, true) => ", a panic?",
        (false, false) => "",
    };
    Cell::Value { value: v.clamp(0.0, 1.0), text: format!("{}/{}{panic} ({})", r.matched, r.console_lines, r.method) }
}

kernel_cell!(ForensicsRow, source);

pub fn build(results_dir: &Path) -> Result<Chart, FigureError> {
    let rows: Vec<ForensicsRow> = load(results_dir, "forensics")?;
    let kernels = kernels_by_version(&rows, |r| {
        let v = version_of(&r.release);
        format!("{}.{} · {}", v.0, v.1, r.kernel)
    });
    let panels = mode_panels(&rows, &kernels, &SOURCES, cell, |mode| format!("{mode} guest: console lines in the log"));
    let n = panels.len() as u32;
    let label_w = kernels.iter().map(|k| k.1.chars().count()).max().unwrap_or(10) as u32 * 11;
    Ok(Chart::Heatmap(Heatmap {
        title: "Kernel log read from memory (harness dmesg, no prior knowledge) vs the guest's serial console".into(),
        panels,
        x_label: "memory read".into(),
        y_label: "kernel".into(),
        scale_label: "console lines found".into(),
        min: 0.0,
        max: 1.0,
        format: TickFormat::Number,
        absent_note: "not run".into(),
        failed_note: "no log\n(ring not found\nor unreadable)".into(),
        size: (label_w + 120 + 760 * n + 260, 240 + 70 * kernels.len() as u32),
    }))
}
