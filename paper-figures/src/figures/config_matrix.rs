//! The config matrix as a heatmap: kernels (rows, grouped by Linux version, oldest first) ×
//! layout methods (columns), one panel per mode;
//! each cell the fraction of the guest's tasks listed with every field right (recall × fields
//! exact), a refusal (prerequisite absent) in grey, a failure in orange.

use std::path::Path;

use experiments::analysis::METHODS;
use harness::introspect::layout::version_of;
use experiments::config_matrix::MatrixRow;

use super::{kernels_by_version, load, mode_panels, FigureError, KernelCell};
use crate::kernel_cell;
use crate::chart::TickFormat;
use crate::heatmap::{Cell, Heatmap};
use crate::render::Chart;

/// The value of one cell: tasks listed with all fields exact / tasks in the truth (after the
/// documented tolerances).
pub fn exact_fraction(r: &MatrixRow) -> Option<f64> {
    Some(r.recall? * r.fields_exact_fraction?)
}

/// "6.1 · deb-amd64" + what the kernel offers, e.g. "6.1 · deb-amd64 (BTF, KASLR)".
pub fn kernel_label(r: &MatrixRow) -> String {
    let mut has = Vec::new();
    if r.btf {
        has.push("BTF");
    }
    if r.ikconfig {
        has.push("IKCONFIG");
    }
    if r.kaslr {
        has.push("KASLR");
    }
    let (major, minor) = version_of(&r.release);
    let name = format!("{major}.{minor} · {}", r.kernel);
    if has.is_empty() {
        name
    } else {
        format!("{name} ({})", has.join(", "))
    }
}

pub fn cell(r: &MatrixRow) -> Cell {
    if !r.ok {
        return if r.unavailable { Cell::Absent { text: "n/a".into() } } else { Cell::Failed { text: "failed".into() } };
    }
    let v = exact_fraction(r).unwrap_or(0.0).clamp(0.0, 1.0);
    let mut text = format!("{v:.2}");
    if r.method == "auto" && !r.method_used.is_empty() {
        text = format!("{text} ({})", r.method_used);
    }
    Cell::Value { value: v, text }
}

kernel_cell!(MatrixRow, method);

pub fn build(results_dir: &Path) -> Result<Chart, FigureError> {
    let rows: Vec<MatrixRow> = load(results_dir, "config-matrix")?;
    let kernels = kernels_by_version(&rows, kernel_label);
    let methods: Vec<(&str, &str)> =
        METHODS.iter().map(|m| (m.name(), m.name())).filter(|m| rows.iter().any(|r| r.method == m.0)).collect();
    let panels = mode_panels(&rows, &kernels, &methods, cell, |mode| format!("{mode} guest"));
    let n = panels.len() as u32;
    let label_w = kernels.iter().map(|k| k.1.chars().count()).max().unwrap_or(10) as u32 * 11;
    Ok(Chart::Heatmap(Heatmap {
        title: "Process list from memory vs the guest's own /proc, per kernel and layout method".into(),
        panels,
        x_label: "layout method".into(),
        y_label: "kernel (what it offers)".into(),
        scale_label: "tasks exact".into(),
        min: 0.0,
        max: 1.0,
        format: TickFormat::Number,
        absent_note: "method's prerequisite\nabsent: refused".into(),
        failed_note: "method ran\nand failed".into(),
        size: (label_w + 120 + 900 * n + 260, 240 + 95 * kernels.len() as u32),
    }))
}
