//! Where the time of one listing goes: horizontal stacked bars per kernel and method, one segment
//! per engine phase (median over the repeats), and — when measured — the thesis method cold
//! (fresh cache: extract, configure, prepare, probe) beside its warm runs.

use std::path::Path;

use experiments::analysis::METHODS;
use experiments::timing::{median, TimingRow, PHASES};

use super::{load, FigureError};
use crate::bars::{BarChart, BarPanel, BarRow, Segment};
use crate::chart::{nice_ceil, Axis, Scale, TickFormat};
use crate::render::Chart;
use crate::style;

fn phase_median(rows: &[TimingRow], kernel: &str, method: &str, cache: &str, phase: &str) -> Option<f64> {
    let v: Vec<f64> = rows
        .iter()
        .filter(|r| r.ok && r.kernel == kernel && r.method == method && r.cache == cache && r.phase == phase)
        .map(|r| r.wall_ms)
        .collect();
    (!v.is_empty()).then(|| median(v))
}

pub fn build(results_dir: &Path) -> Result<Chart, FigureError> {
    let rows: Vec<TimingRow> = load(results_dir, "timing")?;
    let mut kernels: Vec<String> = Vec::new();
    for r in &rows {
        if !kernels.contains(&r.kernel) {
            kernels.push(r.kernel.clone());
        }
    }
    let phases = &PHASES[..4];
    let colour = |i: usize| style::CATEGORICAL[i % style::CATEGORICAL.len()];
    let legend: Vec<(String, _)> = phases.iter().enumerate().map(|(i, p)| (p.to_string(), colour(i))).collect();

    let mut warm_rows = Vec::new();
    let mut cold_rows = Vec::new();
    for k in &kernels {
        for m in METHODS.iter().map(|m| m.name()) {
            let cache = if m == "thesis" { "warm" } else { "none" };
            let Some(total) = phase_median(&rows, k, m, cache, "total") else { continue };
            let used = rows
                .iter()
                .find(|r| r.ok && &r.kernel == k && r.method == m)
                .map(|r| r.method_used.clone())
                .unwrap_or_default();
            let label = if m == "auto" { format!("{k} · auto ({used})") } else { format!("{k} · {m}") };
            let segments = phases
                .iter()
                .enumerate()
                .map(|(i, p)| Segment { value: phase_median(&rows, k, m, cache, p).unwrap_or(0.0), color: colour(i) })
                .collect();
            warm_rows.push(BarRow { label, segments, note: Some(format!("{total:.0} ms")) });
        }
        if let Some(cold) = phase_median(&rows, k, "thesis", "cold", "total") {
            let seg = |cache: &str| {
                phases
                    .iter()
                    .enumerate()
                    .map(|(i, p)| Segment { value: phase_median(&rows, k, "thesis", cache, p).unwrap_or(0.0) / 1e3, color: colour(i) })
                    .collect::<Vec<_>>()
            };
            cold_rows.push(BarRow { label: format!("{k} · thesis cold"), segments: seg("cold"), note: Some(format!("{:.0} s", cold / 1e3)) });
            if let Some(warm) = phase_median(&rows, k, "thesis", "warm", "total") {
                cold_rows.push(BarRow { label: format!("{k} · thesis warm"), segments: seg("warm"), note: Some(format!("{warm:.0} ms")) });
            }
        }
    }
    if warm_rows.is_empty() {
        return Err(FigureError::Empty { path: experiments::results::path_for(results_dir, "timing") });
    }
    // Room on the right for the notes.
    let stack_max = |rs: &[BarRow]| rs.iter().map(|r| r.segments.iter().map(|s| s.value).sum::<f64>()).fold(0.0, f64::max);
    let mut panels = vec![BarPanel {
        title: "every method, layout cache warm (median of repeats)".into(),
        x: Axis {
            label: "time per listing (ms)".into(),
            scale: Scale::Linear,
            min: 0.0,
            max: nice_ceil(stack_max(&warm_rows) * 1.15),
            format: TickFormat::Number,
        },
        rows: warm_rows.clone(),
        row_labels: true,
    }];
    if !cold_rows.is_empty() {
        panels.push(BarPanel {
            title: "thesis method: first run on a config (cold) vs cached".into(),
            x: Axis {
                label: "time per listing (s)".into(),
                scale: Scale::Linear,
                min: 0.0,
                max: nice_ceil(stack_max(&cold_rows) * 1.2),
                format: TickFormat::Number,
            },
            rows: cold_rows.clone(),
            row_labels: true,
        });
    }
    let n_rows = warm_rows.len().max(cold_rows.len()) as u32;
    let width = if panels.len() == 2 { 2600 } else { 1500 };
    Ok(Chart::Bars(BarChart {
        title: "Time of one process listing by phase (scan → symbols → layout → walk)".into(),
        panels,
        legend,
        size: (width, 310 + 44 * n_rows),
    }))
}
