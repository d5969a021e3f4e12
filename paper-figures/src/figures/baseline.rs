//! netdma beside Volatility 3: the time of one process listing from the same dump, per kernel,
//! running and panicked (median of the warm repeats, whole processes). Volatility's bar also
//! carries, in its own colour, the ISF that `harness profile` derived from memory first —
//! without it Volatility cannot start. A tool that failed gets no bar and its reason.

use std::path::Path;

use experiments::baseline::{kernel_modes, warm_median_ms, BaselineRow, NETDMA, PROFILE, VOLATILITY};

use super::panic::duration;
use super::{load, FigureError};
use crate::bars::{BarChart, BarPanel, BarRow, Segment};
use crate::chart::{nice_ceil, Axis, Scale, TickFormat};
use crate::render::Chart;
use crate::style;

/// The legend, in segment order.
const KEYS: [&str; 3] = ["netdma: harness ps", "ISF derived from memory (harness profile, once per kernel)", "Volatility 3: linux.pslist"];

fn recall(rows: &[BaselineRow], kernel: &str, mode: &str, tool: &str) -> Option<f64> {
    rows.iter().find(|r| r.ok && r.kernel == kernel && r.mode == mode && r.tool == tool && r.repeat >= 1).and_then(|r| r.recall)
}

/// Why `tool` gave no listing on a kernel-mode, shortened for a bar note.
fn failure(rows: &[BaselineRow], kernel: &str, mode: &str, tool: &str) -> String {
    let Some(r) = rows.iter().find(|r| r.kernel == kernel && r.mode == mode && r.tool == tool && !r.ok) else {
        return "not measured".into();
    };
    if tool == VOLATILITY && !r.isf_missing.is_empty() {
        let missing: Vec<&str> = r.isf_missing.split_whitespace().collect();
        return format!("failed: the ISF lacks {} things Volatility reads ({}, …)", missing.len(), missing[0]);
    }
    let text: String = r.error.chars().take(50).collect();
    format!("failed: {text}")
}

pub fn build(results_dir: &Path) -> Result<Chart, FigureError> {
    let rows: Vec<BaselineRow> = load(results_dir, "baseline")?;
    let mut kernels: Vec<String> = Vec::new();
    for (k, _) in kernel_modes(&rows) {
        if !kernels.contains(&k) {
            kernels.push(k);
        }
    }
    let colour = |i: usize| style::CATEGORICAL[i % style::CATEGORICAL.len()];
    let s = |ms: f64| ms / 1e3;
    let mut panels = Vec::new();
    for mode in ["running", "panicked"] {
        if !rows.iter().any(|r| r.mode == mode) {
            continue;
        }
        let mut bars = Vec::new();
        for k in &kernels {
            let netdma = warm_median_ms(&rows, k, mode, NETDMA);
            let profile = warm_median_ms(&rows, k, mode, PROFILE);
            let vol = warm_median_ms(&rows, k, mode, VOLATILITY);
            let with_recall = |t: String, tool: &str| match recall(&rows, k, mode, tool) {
                Some(r) => format!("{t}, recall {r:.2}"),
                None => t,
            };
            bars.push(BarRow {
                label: format!("{k} · netdma"),
                segments: netdma.map(|v| vec![Segment { value: s(v), color: colour(0) }]).unwrap_or_default(),
                note: Some(match netdma {
                    Some(v) => with_recall(duration(v), NETDMA),
                    None => failure(&rows, k, mode, NETDMA),
                }),
            });
            let (segments, note) = match vol {
                Some(v) => {
                    let ratio = netdma.map(|n| format!(" ({:.0}× netdma)", v / n)).unwrap_or_default();
                    let isf = profile.map(|p| format!(" + ISF {}", duration(p))).unwrap_or_default();
                    (
                        vec![
                            Segment { value: profile.map_or(0.0, s), color: colour(1) },
                            Segment { value: s(v), color: colour(2) },
                        ],
                        with_recall(format!("pslist {}{ratio}{isf}", duration(v)), VOLATILITY),
                    )
                }
                None => (Vec::new(), failure(&rows, k, mode, VOLATILITY)),
            };
            bars.push(BarRow { label: format!("{k} · Volatility 3"), segments, note: Some(note) });
        }
        panels.push((mode, bars));
    }
    if panels.is_empty() {
        return Err(FigureError::Empty { path: experiments::results::path_for(results_dir, "baseline") });
    }
    // One value axis for both panels, with room on the right for the notes.
    let end = panels
        .iter()
        .flat_map(|(_, bars)| bars.iter().map(|b| b.segments.iter().map(|s| s.value).sum::<f64>()))
        .fold(0.0, f64::max);
    let max = nice_ceil(end * 2.6);
    let n = panels.iter().map(|(_, b)| b.len()).max().unwrap_or(1) as u32;
    let panels = panels
        .into_iter()
        .enumerate()
        .map(|(i, (mode, rows))| BarPanel {
            title: format!("{mode} guest"),
            x: Axis { label: "time per listing (s, whole process, median of warm runs)".into(), scale: Scale::Linear, min: 0.0, max, format: TickFormat::Number },
            rows,
            row_labels: i == 0,
        })
        .collect();
    Ok(Chart::Bars(BarChart {
        title: "One process listing from the same dump: netdma vs Volatility 3".into(),
        panels,
        legend: KEYS.iter().enumerate().map(|(i, k)| (k.to_string(), colour(i))).collect(),
        size: (2800, 300 + 44 * n),
    }))
}
