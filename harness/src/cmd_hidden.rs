//! `harness hidden`: argument parsing and printing around `introspect::hidden`.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use harness::failure::{Failure, FailureKind};
use harness::introspect::hidden::render::render;
use harness::introspect::hidden::{hidden, HiddenOptions};
use harness::introspect::output::Format;

use crate::cmd_ps::SourceArgs;

#[derive(Args, Debug)]
pub struct HiddenArgs {
    #[command(flatten)]
    src: SourceArgs,
    /// Also scan all of physical memory for task_structs (reads every byte of RAM).
    #[arg(long)]
    scan: bool,
    /// `table`: findings, then one `# view` line per view; `json`: one object per line; `csv`.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// End stderr with one JSON line of statistics.
    #[arg(long)]
    stats: bool,
}

pub fn run(args: HiddenArgs) -> Result<()> {
    let mem = args.src.open()?;
    let opts = HiddenOptions { ps: args.src.options(), scan: args.scan, ..Default::default() };
    let report = hidden(mem.as_ref(), &opts).map_err(|e| Failure::new(FailureKind::of_hidden(&e), format!("looking for hidden tasks and modules: {e}")))?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(render(&report.findings, &report.views, args.format).as_bytes())?;
    stdout.flush()?;
    let cut_short = report.incomplete();
    if let Some(why) = &cut_short {
        tracing::error!("{why}");
    }
    crate::cmd_ps::finish(args.stats.then_some(&report.stats), cut_short)
}
