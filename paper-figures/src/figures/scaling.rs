//! How the cost of one listing grows: time and DMA reads against the number of tasks in the
//! guest, and time against guest RAM size (medians over repeats; one line per read target).

use std::collections::BTreeMap;
use std::path::Path;

use experiments::scaling::ScalingRow;
use experiments::timing::median;

use super::{load, FigureError};
use crate::chart::{data_bounds, log_log_panel, log_padded, nice_ceil, Axis, LegendAt, LineChart, Marker, Panel, Scale, Series, TickFormat};
use crate::render::Chart;
use crate::style;

/// (target, x) → median of `f` over the repeats, for the rows of one axis.
fn medians(rows: &[ScalingRow], axis: &str, x: impl Fn(&ScalingRow) -> f64, f: impl Fn(&ScalingRow) -> f64) -> BTreeMap<String, Vec<(f64, f64)>> {
    let mut groups: BTreeMap<(String, u64), (f64, Vec<f64>)> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.axis == axis && r.ok) {
        let xv = x(r);
        groups.entry((r.target.clone(), xv.to_bits())).or_insert((xv, Vec::new())).1.push(f(r));
    }
    let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for ((target, _), (xv, v)) in groups {
        out.entry(target).or_default().push((xv, median(v)));
    }
    for pts in out.values_mut() {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

fn series(lines: BTreeMap<String, Vec<(f64, f64)>>, what: &str, dashed: bool, offset: usize) -> Vec<Series> {
    lines
        .into_iter()
        .enumerate()
        .map(|(i, (target, points))| Series {
            label: format!("{what}, {target}"),
            color: style::CATEGORICAL[(i + offset) % style::CATEGORICAL.len()],
            dashed,
            step: false,
            marker: Some(if dashed { Marker::Triangle } else { Marker::Circle }),
            points,
        })
        .collect()
}

/// One line labelled `label` when every series has the same points (drawn apart they would hide
/// each other); the series unchanged otherwise.
fn one_if_identical(mut series: Vec<Series>, label: &str) -> Vec<Series> {
    if series.len() > 1 && series.windows(2).all(|w| w[0].points == w[1].points) {
        series.truncate(1);
        series[0].label = label.into();
    }
    series
}

/// A log-log panel of `series` against the guest's task count, axes on whole decades.
fn against_tasks(title: &str, y_label: &str, series: Vec<Series>) -> Panel {
    log_log_panel(title, "tasks in the guest (threads, its own count)", y_label, series)
}

pub fn build(results_dir: &Path) -> Result<Chart, FigureError> {
    let rows: Vec<ScalingRow> = load(results_dir, "scaling")?;
    let mut panels = Vec::new();

    let tasks = |r: &ScalingRow| r.tasks_truth as f64;
    let mut time = series(medians(&rows, "processes", tasks, |r| r.wall_ms), "total", false, 0);
    time.extend(series(medians(&rows, "processes", tasks, |r| r.walk_ms), "walk phase", true, 0));
    if !time.is_empty() {
        panels.push(against_tasks("time against tasks", "time per listing (ms)", time));
        let reads = one_if_identical(series(medians(&rows, "processes", tasks, |r| r.dma_reads as f64), "reads", false, 2), "reads, image = wire (same addresses)");
        panels.push(against_tasks("DMA reads against tasks", "physical-memory reads per listing", reads));
    }

    let ram = |r: &ScalingRow| r.guest_ram_mib as f64;
    let mut by_ram = series(medians(&rows, "ram", ram, |r| r.wall_ms), "total", false, 0);
    by_ram.extend(series(medians(&rows, "ram", ram, |r| r.scan_ms), "scan phase", true, 0));
    if !by_ram.is_empty() {
        let ((x0, x1), (_, y1)) = data_bounds(&by_ram);
        let (xmin, xmax) = log_padded(x0, x1, 0.05);
        panels.push(Panel {
            title: "time against guest RAM".into(),
            x: Axis { label: "guest RAM (MiB)".into(), scale: Scale::Log2, min: xmin, max: xmax, format: TickFormat::Number },
            y: Axis { label: "time per listing (ms)".into(), scale: Scale::Linear, min: 0.0, max: nice_ceil(y1 * 1.1), format: TickFormat::Number },
            series: by_ram,
            legend: Some(LegendAt::UpperLeft),
        });
    }
    if panels.is_empty() {
        return Err(FigureError::Empty { path: experiments::results::path_for(results_dir, "scaling") });
    }
    let n = panels.len() as u32;
    Ok(Chart::Line(LineChart { title: "Cost of one process listing as the machine grows".into(), panels, size: (200 + 820 * n, 760) }))
}
