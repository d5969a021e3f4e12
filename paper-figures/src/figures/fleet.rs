//! A fleet sweep as the fleet grows: sweep time, DMA reads and CPU against the number of
//! machines, with and without the layout cache (`results/fleet.csv`), and the goal
//! (1,000 machines in 10 s) marked.

use std::path::Path;

use experiments::fleet::FleetRow;

use super::{load, FigureError};
use crate::chart::{log_log_panel, LineChart, Marker, Panel, Series};
use crate::render::Chart;
use crate::style;

/// One line per cache mode (and per extra measure), points sorted by machines.
fn lines(rows: &[FleetRow], what: &[(&str, fn(&FleetRow) -> f64, bool)]) -> Vec<Series> {
    let mut out = Vec::new();
    for (i, cache) in [true, false].into_iter().enumerate() {
        for (label, f, dashed) in what {
            let mut points: Vec<(f64, f64)> = rows.iter().filter(|r| r.cache == cache && r.error.is_empty()).map(|r| (r.machines as f64, f(r).max(1e-2))).collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            if points.is_empty() {
                continue;
            }
            out.push(Series {
                label: format!("{label}, layout cache {}", if cache { "on" } else { "off" }),
                color: style::CATEGORICAL[i % style::CATEGORICAL.len()],
                dashed: *dashed,
                step: false,
                marker: Some(if *dashed { Marker::Triangle } else { Marker::Circle }),
                points,
            });
        }
    }
    out
}

fn panel(title: &str, y_label: &str, series: Vec<Series>) -> Panel {
    log_log_panel(title, "machines in the fleet", y_label, series)
}

pub fn build(results_dir: &Path) -> Result<Chart, FigureError> {
    let rows: Vec<FleetRow> = load(results_dir, "fleet")?;
    let mut time = lines(&rows, &[("sweep", |r| r.wall_s, false)]);
    if time.is_empty() {
        return Err(FigureError::Empty { path: experiments::results::path_for(results_dir, "fleet") });
    }
    time.push(Series {
        label: "goal: 1,000 machines in 10 s".into(),
        color: style::CATEGORICAL[3 % style::CATEGORICAL.len()],
        dashed: true,
        step: false,
        marker: Some(Marker::Triangle),
        points: vec![(1000.0, 10.0)],
    });
    let reads = lines(&rows, &[("reads", |r| r.dma_reads as f64, false), ("MB", |r| r.dma_bytes as f64 / 1e6, true)]);
    let cpu = lines(&rows, &[("harness", |r| r.harness_cpu_s, false), ("emulator", |r| r.emulator_cpu_s, true)]);
    let panels = vec![
        panel("sweep time", "wall time of the sweep (s)", time),
        panel("DMA reads and bytes", "reads; MB read", reads),
        panel("CPU (2-core box, shared)", "CPU time, user + system (s)", cpu),
    ];
    let n = panels.len() as u32;
    Ok(Chart::Line(LineChart { title: "harness fleet: every machine of an emulated fleet listed, with and without the layout cache".into(), panels, rows: 1, size: (200 + 820 * n, 760) }))
}
