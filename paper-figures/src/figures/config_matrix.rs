//! The config matrix as a heatmap: kernels (rows, grouped by Linux version, oldest first) ×
//! layout methods (columns), one panel per mode;
//! each cell the fraction of the guest's tasks listed with every field right (recall × fields
//! exact), a refusal (prerequisite absent) in grey, a failure in orange.

use std::path::Path;

use experiments::analysis::METHODS;
use experiments::config_matrix::MatrixRow;

use super::{load, FigureError};
use crate::chart::TickFormat;
use crate::heatmap::{Cell, Heatmap, HeatmapPanel};
use crate::render::Chart;

/// The value of one cell: tasks listed with all fields exact / tasks in the truth (after the
/// documented tolerances).
pub fn exact_fraction(r: &MatrixRow) -> Option<f64> {
    Some(r.recall? * r.fields_exact_fraction?)
}

/// `(major, minor)` of a release such as `6.12.57+deb13-amd64` (`(0, 0)` if it has none).
pub fn version_of(release: &str) -> (u32, u32) {
    let mut it = release.split(|c: char| !c.is_ascii_digit()).map(|n| n.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
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

pub fn build(results_dir: &Path) -> Result<Chart, FigureError> {
    let rows: Vec<MatrixRow> = load(results_dir, "config-matrix")?;
    let mut kernels: Vec<(String, String, (u32, u32))> = Vec::new();
    for r in &rows {
        if !kernels.iter().any(|k| k.0 == r.kernel) {
            kernels.push((r.kernel.clone(), kernel_label(r), version_of(&r.release)));
        }
    }
    // Grouped by version; within a version, in the order the experiment ran them.
    kernels.sort_by_key(|k| k.2);
    let methods: Vec<&str> = METHODS.iter().map(|m| m.name()).filter(|m| rows.iter().any(|r| r.method == *m)).collect();
    let mut panels = Vec::new();
    for mode in ["running", "panicked"] {
        if !rows.iter().any(|r| r.mode == mode) {
            continue;
        }
        let cells = kernels
            .iter()
            .map(|(k, _, _)| {
                methods
                    .iter()
                    .map(|m| match rows.iter().find(|r| &r.kernel == k && r.mode == mode && r.method == *m) {
                        Some(r) => cell(r),
                        None => Cell::Absent { text: "not run".into() },
                    })
                    .collect()
            })
            .collect();
        panels.push(HeatmapPanel {
            title: format!("{mode} guest"),
            rows: kernels.iter().map(|k| k.1.clone()).collect(),
            cols: methods.iter().map(|m| m.to_string()).collect(),
            cells,
        });
    }
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
