//! The kernel log and the module list from memory as a heatmap: kernels (rows, grouped by Linux
//! version, oldest first) × what was read (`dmesg`, `lsmod`) and where from (the dump file, or
//! the dump served over NetTLP), one panel per mode. A `dmesg` cell is the fraction of the
//! guest's console lines found verbatim and in order in the log, with the lines counted, whether
//! the panic message was found and the method `auto` used; an `lsmod` cell is 1 when the list
//! equals the guest's `/proc/modules` in every column, else 0, grey when the kernel has no
//! modules (built without `CONFIG_MODULES`, which `lsmod` reported). A `hidden` cell is 1 when
//! `harness hidden` reported exactly what the test rootkit hid (the infected mode) or nothing
//! (running, panicked), else the fraction right, with the views that saw the hidden task and
//! module. A failed run is orange.

use std::path::Path;

use experiments::forensics::ForensicsRow;
use harness::introspect::layout::version_of;

use super::{kernels_by_version, load, mode_panels, FigureError, KernelCell};
use crate::chart::TickFormat;
use crate::heatmap::{Cell, Heatmap};
use crate::kernel_cell;
use crate::render::Chart;

const COLUMNS: [(&str, &str); 6] = [
    ("dmesg image", "dmesg, dump"),
    ("dmesg wire", "dmesg, NetTLP"),
    ("lsmod image", "lsmod, dump"),
    ("lsmod wire", "lsmod, NetTLP"),
    ("hidden image", "hidden, dump"),
    ("hidden wire", "hidden, NetTLP"),
];

/// One cell of the figure: a row's `dmesg` or `lsmod` result.
struct Drawn {
    kernel: String,
    release: String,
    mode: String,
    /// `"dmesg image"`, ...: a key of [`COLUMNS`].
    column: String,
    cell: Cell,
}

kernel_cell!(Drawn, column);

pub fn dmesg_cell(r: &ForensicsRow) -> Cell {
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

pub fn lsmod_cell(r: &ForensicsRow) -> Cell {
    if r.modules_truth == 0 && r.modules_exact {
        return Cell::Absent { text: "no modules".into() };
    }
    if r.lsmod_method.starts_with("failed") {
        return Cell::Failed { text: "failed".into() };
    }
    let (v, word) = if r.modules_exact { (1.0, "exact") } else { (0.0, "differ") };
    Cell::Value { value: v, text: format!("{}/{} {word} ({})", r.modules_found, r.modules_truth, r.lsmod_method) }
}

pub fn hidden_cell(r: &ForensicsRow) -> Cell {
    if !r.hidden_ok && r.hidden_tasks_found + r.hidden_modules_found == 0 {
        return Cell::Failed { text: "failed".into() };
    }
    let truth = r.hidden_tasks_truth + r.hidden_modules_truth;
    let right = r.hidden_tasks_true + r.hidden_modules_true;
    let false_ = r.hidden_tasks_found + r.hidden_modules_found - right;
    // right answers over all there was to say: the truth, plus each false finding
    let v = if truth + false_ == 0 { 1.0 } else { right as f64 / (truth + false_) as f64 };
    let text = match (truth, false_) {
        (0, 0) => "none hidden, none found".to_string(),
        (_, 0) if right == truth => format!("{right}/{truth} ({})", r.hidden_seen_by.replace("task ", "").replace("module ", "")),
        _ => format!("{right}/{truth} found, {false_} false"),
    };
    Cell::Value { value: v, text }
}

pub fn build(results_dir: &Path) -> Result<Chart, FigureError> {
    let rows: Vec<ForensicsRow> = load(results_dir, "forensics")?;
    let drawn: Vec<Drawn> = rows
        .iter()
        .flat_map(|r| {
            let at = |what: &str, cell: Cell| Drawn {
                kernel: r.kernel.clone(),
                release: r.release.clone(),
                mode: r.mode.clone(),
                column: format!("{what} {}", r.source),
                cell,
            };
            [at("dmesg", dmesg_cell(r)), at("lsmod", lsmod_cell(r)), at("hidden", hidden_cell(r))]
        })
        .collect();
    let kernels = kernels_by_version(&drawn, |d| {
        let v = version_of(&d.release);
        format!("{}.{} · {}", v.0, v.1, d.kernel)
    });
    let panels = mode_panels(&drawn, &kernels, &COLUMNS, |d| d.cell.clone(), |mode| format!("{mode} guest"));
    let n = panels.len() as u32;
    let label_w = kernels.iter().map(|k| k.1.chars().count()).max().unwrap_or(10) as u32 * 11;
    Ok(Chart::Heatmap(Heatmap {
        title: "Kernel log, modules and hidden ones read from memory (no prior knowledge) vs the guest's console, /proc/modules and the rootkit's victims".into(),
        panels,
        x_label: "command, memory read".into(),
        y_label: "kernel".into(),
        scale_label: "fraction right".into(),
        min: 0.0,
        max: 1.0,
        format: TickFormat::Number,
        absent_note: "no modules:\nbuilt without\nCONFIG_MODULES;\nor not recorded\n(infected: Debian\nkernels only)".into(),
        failed_note: "failed\n(ring or list\nnot found)".into(),
        size: (label_w + 120 + 1800 * n + 300, 400 + 70 * kernels.len() as u32),
    }))
}
