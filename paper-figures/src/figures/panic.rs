//! Availability of the process list on a running and on a panicked guest: our analysis of the
//! guest's memory vs busybox `ps` asked through the guest's serial console. Bar length = recall;
//! an observer that did not answer gets no bar and a note.

use std::path::Path;

use experiments::panic::PanicRow;

use super::{load, FigureError};
use crate::bars::{BarChart, BarPanel, BarRow, Segment};
use crate::chart::{Axis, Scale, TickFormat};
use crate::render::Chart;
use crate::style;

pub const OBSERVERS: [(&str, &str); 2] = [("in-guest-ps", "in-guest ps (serial console)"), ("netdma", "netdma (memory)")];

pub fn build(results_dir: &Path) -> Result<Chart, FigureError> {
    let rows: Vec<PanicRow> = load(results_dir, "panic")?;
    let mut kernels: Vec<String> = Vec::new();
    for r in &rows {
        if !kernels.contains(&r.kernel) {
            kernels.push(r.kernel.clone());
        }
    }
    let colour = |i: usize| style::CATEGORICAL[[1, 0][i]];
    let mut panels = Vec::new();
    for (pi, mode) in ["running", "panicked"].into_iter().enumerate() {
        let mut bars = Vec::new();
        for k in &kernels {
            for (oi, (obs, name)) in OBSERVERS.iter().enumerate() {
                let Some(r) = rows.iter().find(|r| &r.kernel == k && r.mode == mode && r.observer == *obs) else { continue };
                let note = if r.available {
                    let exact = r.fields_exact_fraction.map(|f| format!(", {:.0}% of tasks exact", f * 100.0)).unwrap_or_default();
                    format!("recall {:.2}{exact}, {}", r.recall, duration(r.answer_ms))
                } else if r.error.starts_with("no answer") {
                    format!("no answer in {}", duration(r.timeout_ms))
                } else {
                    "failed".to_string()
                };
                bars.push(BarRow {
                    label: format!("{k} · {name}"),
                    segments: vec![Segment { value: if r.available { r.recall } else { 0.0 }, color: colour(oi) }],
                    note: Some(note),
                });
            }
        }
        if bars.is_empty() {
            continue;
        }
        panels.push(BarPanel {
            title: format!("{mode} guest"),
            x: Axis {
                label: "recall (share of the guest's tasks listed)".into(),
                scale: Scale::Linear,
                min: 0.0,
                max: 1.0,
                format: TickFormat::Number,
            },
            rows: bars,
            row_labels: pi == 0,
        });
    }
    if panels.is_empty() {
        return Err(FigureError::Empty { path: experiments::results::path_for(results_dir, "panic") });
    }
    let n = panels.iter().map(|p| p.rows.len()).max().unwrap_or(1) as u32;
    Ok(Chart::Bars(BarChart {
        title: "Who can list the processes of a panicked machine?".into(),
        panels,
        legend: Vec::new(),
        size: (2300, 240 + 52 * n),
    }))
}

/// "87 ms", "1.2 s", "60 s".
pub fn duration(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if ms < 10_000.0 {
        format!("{:.1} s", ms / 1e3)
    } else {
        format!("{:.0} s", ms / 1e3)
    }
}
