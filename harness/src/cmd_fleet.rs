//! `harness fleet`: argument parsing, progress and printing around `harness::fleet`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use harness::fleet::{parse_targets, sweep, SweepConfig};
use harness::introspect::layout::MethodKind;
use harness::introspect::ps::PsOptions;

#[derive(Args, Debug)]
pub struct FleetArgs {
    /// One target per line, `nettlp://ADDR[?options]`, ADDR possibly a range
    /// (`127.0.1.1-127.0.4.232`, `127.0.1.0/22`); `#` comments.
    #[arg(long)]
    targets: PathBuf,
    /// Machines read at once.
    #[arg(long, default_value_t = 16)]
    workers: usize,
    /// Tags (UDP ports) per machine (fewer cost time: see `harness::fleet`).
    #[arg(long, default_value_t = 256)]
    tags: u16,
    /// Requests in flight per machine (at most --tags).
    #[arg(long, default_value_t = 16)]
    inflight: u16,
    /// Learn every machine's layout, even when another machine runs the same kernel build.
    #[arg(long)]
    no_cache: bool,
    /// Time allowed for one machine (connecting included), e.g. 10s, 500ms.
    #[arg(long, default_value = "10s", value_parser = parse_budget)]
    budget: Duration,
    /// Put each machine's task rows in its JSON line.
    #[arg(long)]
    rows: bool,
    /// Bind each worker's ports without SO_REUSEADDR, worker w on tags w*N.. (then workers *
    /// --tags should stay within 256). The default shares the ports between workers, each
    /// socket connected to its machine, which also lets them sit beside `emulator serve
    /// --listen RANGE` on the same host.
    #[arg(long)]
    exclusive_ports: bool,
    #[arg(long, value_enum, default_value = "auto")]
    method: MethodKind,
    /// End stderr with one JSON line summing up the sweep (time, CPU, reads, failures).
    #[arg(long)]
    stats: bool,
}

fn parse_budget(s: &str) -> Result<Duration, String> {
    emulator::units::parse_duration(s).ok_or_else(|| format!("{s:?}: expected a duration like 10s, 500ms"))
}

pub fn run(args: FleetArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.targets).with_context(|| format!("reading {}", args.targets.display()))?;
    let targets = parse_targets(&text).with_context(|| format!("in {}", args.targets.display()))?;
    let cfg = SweepConfig {
        workers: args.workers,
        tags: args.tags,
        inflight: args.inflight,
        cache: !args.no_cache,
        budget: args.budget,
        rows: args.rows,
        reuseaddr: !args.exclusive_ports,
        ps: PsOptions { method: Some(args.method), ..Default::default() },
    };
    // drawn on stderr only when it is a terminal
    let bar = indicatif::ProgressBar::new(targets.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} machines {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let stdout = std::io::stdout();
    let mut failed = 0usize;
    let mut write_error = None;
    let summary = sweep(&targets, &cfg, |r| {
        if r.error.as_ref().is_some_and(|e| e.kind != harness::failure::FailureKind::Partial) {
            failed += 1;
            bar.set_message(format!("({failed} failed)"));
        }
        bar.inc(1);
        let line = serde_json::to_string(r).unwrap_or_default();
        let mut out = stdout.lock();
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            write_error.get_or_insert(e);
        }
    });
    bar.finish_and_clear();
    if let Some(e) = write_error {
        return Err(e).context("writing the reports");
    }
    tracing::info!(
        "{} machines in {:.0} ms: {} listed, {} failed, {} cache hits ({} kernel builds learned), {:.0} ms CPU",
        summary.machines,
        summary.wall_ms,
        summary.listed,
        summary.failed,
        summary.cache_hits,
        summary.kernels_learned,
        summary.cpu_ms
    );
    if args.stats {
        eprintln!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}
