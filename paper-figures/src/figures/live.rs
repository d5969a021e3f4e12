//! Watching running guests (`results/live.csv`): how soon `harness watch` reports a process
//! start and exit, whether every listing of a machine that changes under the walk was exact,
//! and what a round costs next to the first listing.

use std::path::Path;

use experiments::live::LiveRow;

use super::{load, FigureError};
use crate::bars::{BarChart, BarPanel, BarRow, Segment};
use crate::chart::{nice_ceil, Axis, Scale, TickFormat};
use crate::render::Chart;
use crate::style;

fn axis(label: &str, max: f64) -> Axis {
    Axis { label: label.into(), scale: Scale::Linear, min: 0.0, max: nice_ceil(max.max(1e-9) * 1.15), format: TickFormat::Number }
}

pub fn build(results_dir: &Path) -> Result<Chart, FigureError> {
    let rows: Vec<LiveRow> = load(results_dir, "live")?;
    let rows: Vec<&LiveRow> = rows.iter().filter(|r| r.rounds > 0).collect();
    if rows.is_empty() {
        return Err(FigureError::Empty { path: experiments::results::path_for(results_dir, "live") });
    }
    let label = |r: &LiveRow| format!("{} · {} ms", r.kernel, r.interval_ms);
    let (p50, p95) = (style::CATEGORICAL[0], style::CATEGORICAL[1]);

    let mut delay = Vec::new();
    for r in &rows {
        for (what, a, b, max, got) in [
            ("start", r.start_delay_p50_ms, r.start_delay_p95_ms, r.start_delay_max_ms, r.starts_reported),
            ("exit", r.exit_delay_p50_ms, r.exit_delay_p95_ms, r.exit_delay_max_ms, r.exits_reported),
        ] {
            delay.push(BarRow {
                label: format!("{} · {what}", label(r)),
                segments: vec![Segment { value: a, color: p50 }, Segment { value: (b - a).max(0.0), color: p95 }],
                note: Some(format!("max {max:.0} ms; {got}/{} reported", r.eligible)),
            });
        }
    }
    let dmax = rows.iter().map(|r| r.start_delay_p95_ms.max(r.exit_delay_p95_ms)).fold(0.0, f64::max);

    let exact: Vec<BarRow> = rows
        .iter()
        .map(|r| BarRow {
            label: label(r),
            segments: vec![Segment { value: r.listings_exact as f64 / (r.rounds + 1) as f64, color: p50 }],
            note: Some(format!(
                "{}/{} exact; {} false; {} torn dropped, {} re-read",
                r.listings_exact,
                r.rounds + 1,
                r.false_tasks + r.stale_tasks + r.missing_long_lived,
                r.torn,
                r.rereads
            )),
        })
        .collect();

    let cost: Vec<BarRow> = rows
        .iter()
        .map(|r| BarRow {
            label: label(r),
            segments: vec![Segment { value: r.round_bytes / 1e3, color: p50 }],
            note: Some(format!("first listing {:.1} MB; {:.0} ms, {:.1} ms CPU a round", r.first_bytes as f64 / 1e6, r.round_wall_ms, r.round_cpu_ms)),
        })
        .collect();
    let cmax = rows.iter().map(|r| r.round_bytes / 1e3).fold(0.0, f64::max);

    let n = delay.len() as u32;
    Ok(Chart::Bars(BarChart {
        title: "harness watch on running guests churning 200 processes/s (over NetTLP, guest not paused)".into(),
        panels: vec![
            BarPanel { title: "detection delay".into(), x: axis("ms from the event in the guest to its report (p50, p95), every 100 ms or 1,000 ms", dmax * 1.6), rows: delay, row_labels: true },
            BarPanel {
                title: "listings exact".into(),
                x: Axis { label: "share of listings with no false, torn or missing task".into(), scale: Scale::Linear, min: 0.0, max: 1.0, format: TickFormat::Number },
                rows: exact,
                row_labels: true,
            },
            BarPanel { title: "DMA per round".into(), x: axis("kB read per round after the first", cmax * 4.5), rows: cost, row_labels: true },
        ],
        legend: vec![("p50".into(), p50), ("p95".into(), p95)],
        size: (2600, 300 + 46 * n),
    }))
}
