//! Read latency CDFs: one panel per requester setup (hardware, emulator blocking, emulator
//! pipelined), one line per transfer size, on shared axes.

use std::collections::BTreeMap;
use std::path::Path;

use experiments::wire::{group_latency, LatencyRow, Source};

use super::{load, FigureError};
use crate::chart::{decade_bounds, Axis, LegendAt, LineChart, Panel, Scale, Series, TickFormat};
use crate::render::Chart;
use crate::style;

pub fn build(results_dir: &Path) -> Result<Chart, FigureError> {
    let rows: Vec<LatencyRow> = load(results_dir, "wire-latency")?;
    let groups = group_latency(&rows);
    let sizes: Vec<f64> = groups.keys().map(|s| s.size_bytes as f64).collect();
    let (lo, hi) = (
        sizes.iter().copied().fold(f64::INFINITY, f64::min),
        sizes.iter().copied().fold(0.0, f64::max),
    );
    let min_us = rows.iter().map(|r| r.latency_us).fold(f64::INFINITY, f64::min);
    let max_us = rows.iter().map(|r| r.latency_us).fold(0.0, f64::max);
    // Log scale: the hardware's 12 µs and a loaded host's millisecond tail on one axis.
    let (xmin, xmax) = decade_bounds(min_us.max(0.01), max_us.max(0.02), 10.0);
    let x = Axis {
        label: "latency per read (µs, log scale)".into(),
        scale: Scale::Log10,
        min: xmin,
        max: xmax,
        format: TickFormat::Number,
    };
    let y = Axis {
        label: "fraction of reads ≤ latency".into(),
        scale: Scale::Linear,
        min: 0.0,
        max: 1.0,
        format: TickFormat::Number,
    };

    let mut panels: BTreeMap<_, Panel> = BTreeMap::new();
    for (setup, group) in &groups {
        let key = (setup.source, setup.pattern, setup.cpus, setup.inflight_per_cpu);
        let panel = panels.entry(key).or_insert_with(|| Panel {
            title: panel_title(setup.source, setup.pattern.as_str(), setup.cpus, setup.inflight_per_cpu),
            x: x.clone(),
            y: y.clone(),
            series: Vec::new(),
            legend: Some(LegendAt::LowerRight),
        });
        let t = if hi > lo {
            (setup.size_bytes as f64 / lo).log2() / (hi / lo).log2()
        } else {
            0.0
        };
        let mut points = vec![(group[0].latency_us, 0.0)];
        points.extend(group.iter().map(|r| (r.latency_us, r.cumulative_fraction)));
        panel.series.push(Series {
            label: format!("{} B", setup.size_bytes),
            color: style::sequential(t),
            dashed: false,
            step: true,
            marker: None,
            points,
        });
    }
    let n = panels.len() as u32;
    Ok(Chart::Line(LineChart {
        title: "DMA read latency (CDF)".into(),
        panels: panels.into_values().collect(),
        rows: 1,
        size: (200 + 900 * n, 720),
    }))
}

fn panel_title(source: Source, pattern: &str, cpus: u32, inflight: u32) -> String {
    let who = match source {
        Source::NettlpHw => "NetTLP hardware (tlpperf)",
        Source::EmulatorBlocking => "emulator, blocking",
        Source::EmulatorPipelined => "emulator, pipelined",
        Source::EmulatorBatched => "emulator, batched (MPS 4096, GSO)",
    };
    let cpus = if cpus == 1 {
        "1 CPU".to_string()
    } else {
        format!("{cpus} CPUs")
    };
    format!("{who}: {pattern} address, {cpus}, {inflight} in flight")
}
