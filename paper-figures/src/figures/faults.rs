//! Correctness and cost of reading over a faulty path: a heatmap of the share of correct runs
//! (bytes read back exact, process list matching) per loss rate × (duplication, reordering), one
//! panel per requester setting; and the time of one check against the loss rate.

use std::collections::BTreeMap;
use std::path::Path;

use experiments::faults::{FaultRow, REQUESTERS};
use experiments::timing::median;

use super::{load, FigureError};
use crate::chart::{decade_bounds, Axis, LegendAt, LineChart, Marker, Panel, Scale, Series, TickFormat};
use crate::heatmap::{Cell, Heatmap, HeatmapPanel};
use crate::render::Chart;
use crate::style;

fn correct(r: &FaultRow) -> bool {
    r.ok && r.bytes_exact.unwrap_or(true) && r.tasks_match.unwrap_or(true)
}

fn requester_title(r: &str) -> String {
    if r.is_empty() {
        "requester defaults (256 tags, quarantine, partial re-requests)".into()
    } else if r.contains("reuse=auto") {
        "requester with reuse=auto (freed tags rest)".into()
    } else {
        "requester defaults (freed tags reused at once)".into()
    }
}

fn rate(v: f64) -> String {
    format!("{}%", (v * 1000.0).round() / 10.0)
}

pub fn build_correctness(results_dir: &Path) -> Result<Chart, FigureError> {
    let rows: Vec<FaultRow> = load(results_dir, "faults")?;
    let mut losses: Vec<f64> = rows.iter().map(|r| r.loss).collect();
    losses.sort_by(f64::total_cmp);
    losses.dedup();
    let mut others: Vec<(f64, f64)> = rows.iter().map(|r| (r.dup, r.reorder)).collect();
    others.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    others.dedup();
    let mut panels = Vec::new();
    for req in REQUESTERS {
        if !rows.iter().any(|r| r.requester == req) {
            continue;
        }
        let cells = others
            .iter()
            .map(|&(dup, reorder)| {
                losses
                    .iter()
                    .map(|&loss| {
                        let of: Vec<&FaultRow> = rows
                            .iter()
                            .filter(|r| r.requester == req && r.loss == loss && r.dup == dup && r.reorder == reorder)
                            .collect();
                        if of.is_empty() {
                            return Cell::Absent { text: "not run".into() };
                        }
                        let good = of.iter().filter(|r| correct(r)).count();
                        let frac = good as f64 / of.len() as f64;
                        let secs = median(of.iter().filter(|r| r.check == "ps").map(|r| r.wall_ms / 1e3).collect());
                        Cell::Value { value: frac, text: format!("{good}/{} · ps {secs:.1} s", of.len()) }
                    })
                    .collect()
            })
            .collect();
        panels.push(HeatmapPanel {
            title: requester_title(req),
            rows: others.iter().map(|(d, r)| format!("dup {} · reorder {}", rate(*d), rate(*r))).collect(),
            cols: losses.iter().map(|l| format!("loss {}", rate(*l))).collect(),
            cells,
        });
    }
    let n = panels.len() as u32;
    let cols = losses.len() as u32;
    Ok(Chart::Heatmap(Heatmap {
        title: "Correct results over a faulty NetTLP path (readback of a known pattern + ps of a guest)".into(),
        panels,
        x_label: "completions lost by the endpoint".into(),
        y_label: "completions duplicated · reordered".into(),
        scale_label: "runs correct".into(),
        min: 0.0,
        max: 1.0,
        format: TickFormat::Number,
        absent_note: "not measured".into(),
        failed_note: String::new(),
        size: (500 + n * cols * 230 + 260, 260 + 80 * others.len() as u32),
    }))
}

pub fn build_time(results_dir: &Path) -> Result<Chart, FigureError> {
    let rows: Vec<FaultRow> = load(results_dir, "faults")?;
    let mut panels = Vec::new();
    // Readback runs read 4 MiB before issue 10 and 64 MiB since: its time is shown per MiB.
    for (check, title, ylabel) in [
        ("readback", "read back a known pattern", "time per MiB read (ms, median of correct runs)"),
        ("ps", "list a guest's processes", "time (ms, median of correct runs)"),
    ] {
        let mut series = Vec::new();
        for (ri, req) in REQUESTERS.iter().enumerate() {
            // Loss alone, and loss with the largest duplication and reordering measured.
            let max_dup = rows.iter().map(|r| r.dup).fold(0.0, f64::max);
            let max_reorder = rows.iter().map(|r| r.reorder).fold(0.0, f64::max);
            for (dashed, dup, reorder) in [(false, 0.0, 0.0), (true, max_dup, max_reorder)] {
                let mut by_loss: BTreeMap<u64, (f64, Vec<f64>)> = BTreeMap::new();
                for r in rows.iter().filter(|r| r.check == check && r.requester == *req && r.dup == dup && r.reorder == reorder && correct(r)) {
                    by_loss.entry(r.loss.to_bits()).or_insert((r.loss, Vec::new())).1.push(if check == "readback" { r.wall_ms / (r.bytes_read as f64 / f64::from(1u32 << 20)) } else { r.wall_ms });
                }
                if by_loss.is_empty() {
                    continue;
                }
                let mut points: Vec<(f64, f64)> = by_loss.into_values().map(|(l, v)| (l * 100.0, median(v))).collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                let who = if req.is_empty() {
                    "defaults since issue 10"
                } else if req.contains("reuse=auto") {
                    "reuse=auto"
                } else {
                    "defaults"
                };
                let label = if dashed {
                    format!("{who}, + dup {} reorder {}", rate(dup), rate(reorder))
                } else {
                    format!("{who}, loss only")
                };
                series.push(Series {
                    label,
                    color: style::CATEGORICAL[ri],
                    dashed,
                    step: false,
                    marker: Some(if dashed { Marker::Triangle } else { Marker::Circle }),
                    points,
                });
            }
        }
        if series.is_empty() {
            continue;
        }
        let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
        let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
        let xmax = xs.fold(0.0, f64::max);
        let (ylo, yhi) = decade_bounds(ys.clone().fold(f64::INFINITY, f64::min), ys.fold(0.0, f64::max), 10.0);
        panels.push(Panel {
            title: title.into(),
            x: Axis { label: "completions lost (%)".into(), scale: Scale::Linear, min: 0.0, max: crate::chart::nice_ceil(xmax.max(1.0) * 1.05), format: TickFormat::Number },
            y: Axis { label: ylabel.into(), scale: Scale::Log10, min: ylo, max: yhi, format: TickFormat::Number },
            series,
            legend: Some(LegendAt::UpperLeft),
        });
    }
    if panels.is_empty() {
        return Err(FigureError::Empty { path: experiments::results::path_for(results_dir, "faults") });
    }
    let n = panels.len() as u32;
    Ok(Chart::Line(LineChart { title: "Time over a faulty NetTLP path".into(), panels, rows: 1, size: (200 + 900 * n, 760) }))
}
