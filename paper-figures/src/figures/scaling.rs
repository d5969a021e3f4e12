//! How the cost of one listing grows: time, DMA reads and round trips against the number of
//! tasks in the guest; time and the bytes each phase reads against guest RAM size (medians over
//! repeats; one line per read target).

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
        let mut counts = one_if_identical(series(medians(&rows, "processes", tasks, |r| r.dma_reads as f64), "reads", false, 3), "reads (image = wire)");
        // Round trips are the same batches whatever the target; rows of before issue 14 have none.
        let with_trips: Vec<ScalingRow> = rows.iter().filter(|r| r.round_trips > 0).cloned().collect();
        counts.extend(one_if_identical(series(medians(&with_trips, "processes", tasks, |r| r.round_trips as f64), "round trips", true, 3), "round trips (image = wire)"));
        panels.push(against_tasks("reads and round trips against tasks", "per listing", counts));
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
    // Bytes per phase (the same for every target: one target's rows), against 2 % of RAM.
    let wire: Vec<ScalingRow> = rows.iter().filter(|r| r.target == "wire" && r.walk_bytes > 0).cloned().collect();
    let mb = |b: u64| b as f64 / 1e6;
    let phases: [(&str, fn(&ScalingRow) -> u64); 5] = [
        ("total", |r| r.dma_bytes),
        ("scan", |r| r.scan_bytes),
        ("symbols (kallsyms)", |r| r.symbols_bytes),
        ("layout (BTF)", |r| r.layout_bytes),
        ("walk", |r| r.walk_bytes),
    ];
    let mut bytes: Vec<Series> = phases
        .iter()
        .enumerate()
        .filter_map(|(i, (name, f))| {
            let points = medians(&wire, "ram", ram, |r| mb(f(r))).remove("wire")?;
            Some(Series { label: (*name).into(), color: style::CATEGORICAL[i % style::CATEGORICAL.len()], dashed: false, step: false, marker: Some(Marker::Circle), points })
        })
        .collect();
    if !bytes.is_empty() {
        let xs: Vec<f64> = bytes[0].points.iter().map(|p| p.0).collect();
        bytes.push(Series {
            label: "2 % of guest RAM".into(),
            color: style::CATEGORICAL[6],
            dashed: true,
            step: false,
            marker: None,
            points: xs.iter().map(|&x| (x, x * 1048576.0 * 0.02 / 1e6)).collect(),
        });
        let ((x0, x1), (y0, y1)) = data_bounds(&bytes);
        let (xmin, xmax) = log_padded(x0, x1, 0.05);
        let (ymin, ymax) = crate::chart::decade_bounds(y0, y1, 10.0);
        panels.push(Panel {
            title: "bytes read per phase against guest RAM".into(),
            x: Axis { label: "guest RAM (MiB)".into(), scale: Scale::Log2, min: xmin, max: xmax, format: TickFormat::Number },
            y: Axis { label: "MB read per listing".into(), scale: Scale::Log10, min: ymin, max: ymax, format: TickFormat::Number },
            series: bytes,
            legend: Some(LegendAt::UpperLeft),
        });
    }
    if panels.is_empty() {
        return Err(FigureError::Empty { path: experiments::results::path_for(results_dir, "scaling") });
    }
    let rows_of = if panels.len() > 2 { 2 } else { 1 };
    let cols = panels.len().div_ceil(rows_of) as u32;
    Ok(Chart::Line(LineChart {
        title: "Cost of one process listing as the machine grows".into(),
        panels,
        rows: rows_of,
        size: (200 + 820 * cols, 60 + 700 * rows_of as u32),
    }))
}
