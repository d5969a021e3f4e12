//! `harness dmesg`: argument parsing and printing around `introspect::printk`.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use harness::failure::{Failure, FailureKind};
use harness::introspect::output::Format;
use harness::introspect::printk::{dmesg, render::render, DmesgOptions, PrbMethod};

use crate::cmd_ps::MemoryArgs;

#[derive(Args, Debug)]
pub struct DmesgArgs {
    #[command(flatten)]
    mem: MemoryArgs,
    /// How the ring's layout and address are learned.
    #[arg(long, value_enum, default_value = "auto")]
    method: PrbMethod,
    /// `table`: as `dmesg` prints the log; `json`: one record per line; `csv`.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// End stderr with one JSON line of statistics.
    #[arg(long)]
    stats: bool,
}

pub fn run(args: DmesgArgs) -> Result<()> {
    let mem = args.mem.open()?;
    let report = dmesg(mem.as_ref(), &DmesgOptions { method: Some(args.method), ..Default::default() })
        .map_err(|e| Failure::new(FailureKind::of_dmesg(&e), format!("reading the kernel log: {e}")))?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(render(&report.records, args.format).as_bytes())?;
    stdout.flush()?;
    for p in &report.problems {
        tracing::warn!(id = format!("{:#x}", p.id), index = p.index, "record skipped: {}", p.reason);
    }
    let cut_short = report.read_error.as_ref().map(|e| format!("{e}; {} records decoded", report.records.len()));
    if let Some(why) = &cut_short {
        tracing::error!("{why}");
    }
    crate::cmd_ps::finish(args.stats.then_some(&report.stats), cut_short)
}
