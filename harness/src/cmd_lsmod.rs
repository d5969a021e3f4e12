//! `harness lsmod`: argument parsing and printing around `introspect::modules`.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use harness::introspect::modules::render::render;
use harness::introspect::modules::{lsmod, LsmodOptions, ModMethod};
use harness::failure::{Failure, FailureKind};
use harness::introspect::output::Format;

use crate::cmd_ps::MemoryArgs;

#[derive(Args, Debug)]
pub struct LsmodArgs {
    #[command(flatten)]
    mem: MemoryArgs,
    /// How the layout of `struct module` is learned.
    #[arg(long, value_enum, default_value = "auto")]
    method: ModMethod,
    /// `table`: the columns of /proc/modules; `json`: one module per line; `csv`.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// End stderr with one JSON line of statistics.
    #[arg(long)]
    stats: bool,
}

pub fn run(args: LsmodArgs) -> Result<()> {
    let mem = args.mem.open()?;
    let report = lsmod(mem.as_ref(), &LsmodOptions { method: Some(args.method), ..Default::default() })
        .map_err(|e| Failure::new(FailureKind::of_lsmod(&e), format!("listing modules: {e}")))?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(render(&report.modules, args.format).as_bytes())?;
    stdout.flush()?;
    let cut_short = report.error.as_ref().map(|e| format!("{e}; {} modules listed before it", report.modules.len()));
    if let Some(why) = &cut_short {
        tracing::error!("{why}");
    }
    crate::cmd_ps::finish(args.stats.then_some(&report.stats), cut_short)
}
