//! Read throughput and read rate against transfer size (log-log): the median of the per-second
//! samples of each setup, one line per (source, CPUs, reads in flight, pattern).

use std::collections::BTreeMap;
use std::path::Path;

use experiments::tlpperf::Pattern;
use experiments::wire::{summarize_throughput, Source, ThroughputRow};

use super::{load, FigureError};
use crate::chart::{decade_bounds, log_padded, Axis, LegendAt, LineChart, Marker, Panel, Scale, Series, TickFormat};
use crate::render::Chart;
use crate::style;

pub fn build(results_dir: &Path) -> Result<Chart, FigureError> {
    let rows: Vec<ThroughputRow> = load(results_dir, "wire-throughput")?;
    let summaries = summarize_throughput(&rows);

    // One colour per (source, cpus, inflight), in a stable order.
    let mut colours = BTreeMap::new();
    for s in &summaries {
        let n = colours.len();
        colours
            .entry((s.setup.source, s.setup.cpus, s.setup.inflight_per_cpu))
            .or_insert(n);
    }
    let mut gbps: BTreeMap<_, Series> = BTreeMap::new();
    let mut mrps: BTreeMap<_, Series> = BTreeMap::new();
    for s in &summaries {
        let st = s.setup;
        let key = (st.source, st.cpus, st.inflight_per_cpu, st.pattern);
        let colour = style::CATEGORICAL[colours[&(st.source, st.cpus, st.inflight_per_cpu)] % style::CATEGORICAL.len()];
        let new_series = || Series {
            label: series_label(st.source, st.cpus, st.inflight_per_cpu, st.pattern),
            color: colour,
            dashed: st.pattern != Pattern::Fix,
            step: false,
            marker: Some(if st.pattern == Pattern::Fix {
                Marker::Circle
            } else {
                Marker::Triangle
            }),
            points: Vec::new(),
        };
        gbps.entry(key)
            .or_insert_with(new_series)
            .points
            .push((st.size_bytes as f64, s.median_gbps));
        mrps.entry(key)
            .or_insert_with(new_series)
            .points
            .push((st.size_bytes as f64, s.median_reads_per_s / 1e6));
    }

    let sizes = summaries.iter().map(|s| s.setup.size_bytes as f64);
    let (smin, smax) = (sizes.clone().fold(f64::INFINITY, f64::min), sizes.fold(0.0, f64::max));
    let (xmin, xmax) = log_padded(smin, smax, 0.03);
    let x = Axis {
        label: "bytes requested per read".into(),
        scale: Scale::Log2,
        min: xmin,
        max: xmax,
        format: TickFormat::Bytes,
    };
    // `room`: decades added below the data (for the legend).
    let y_axis = |label: &str, series: &BTreeMap<_, Series>, room: i32| {
        let vals = series.values().flat_map(|s| s.points.iter().map(|p| p.1));
        let (lo, hi) = (vals.clone().fold(f64::INFINITY, f64::min), vals.fold(0.0, f64::max));
        let (min, max) = decade_bounds(lo, hi, 10.0);
        let min = min / 10f64.powi(room);
        Axis {
            label: label.into(),
            scale: Scale::Log10,
            min,
            max,
            format: TickFormat::Number,
        }
    };
    let panels = vec![
        Panel {
            title: "throughput (median of 1-s samples)".into(),
            x: x.clone(),
            y: y_axis("throughput (Gbit/s)", &gbps, 0),
            series: gbps.into_values().collect(),
            legend: None,
        },
        Panel {
            title: "read rate (same lines)".into(),
            x,
            y: y_axis("reads per second (millions)", &mrps, 2),
            series: mrps.into_values().collect(),
            // Under the read rates, in the two decades added below them.
            legend: Some(LegendAt::LowerLeft),
        },
    ];
    Ok(Chart::Line(LineChart {
        title: "DMA read throughput against transfer size".into(),
        panels,
        rows: 1,
        size: (1800, 760),
    }))
}

fn series_label(source: Source, cpus: u32, inflight: u32, pattern: Pattern) -> String {
    let who = match source {
        Source::NettlpHw => "hardware",
        Source::EmulatorBlocking => "emulator blocking",
        Source::EmulatorPipelined => "emulator pipelined",
        Source::EmulatorBatched => "emulator batched (MPS 4096, GSO)",
    };
    let cpus = if cpus == 1 {
        "1 CPU".to_string()
    } else {
        format!("{cpus} CPUs")
    };
    if inflight == 1 {
        format!("{who}, {cpus}, {pattern}")
    } else {
        format!("{who}, {cpus} x {inflight} in flight, {pattern}")
    }
}
