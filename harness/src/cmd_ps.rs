//! `harness ps` and `harness profile`: argument parsing and printing around `introspect`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use emulator::mem::PhysMem;
use harness::failure::{Failure, FailureKind};
use harness::introspect::layout::{LayoutInputs, MethodKind};
use harness::introspect::output::{render, Format};
use harness::introspect::ps::{ps, PsOptions};
use harness::introspect::{profile, source};

/// Where the memory comes from (shared by every command that reads a machine's memory).
#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("memory").required(true).args(["image", "target", "pcap"]))]
pub struct MemoryArgs {
    /// A memory image: ELF core, kdump, raw, LiME, AVML, or a live QEMU RAM file.
    #[arg(long)]
    image: Option<PathBuf>,
    /// The image's format when it cannot be detected (raw, elf, kdump, lime, avml, live, live:q35).
    #[arg(long, requires = "image")]
    format_image: Option<String>,
    /// A live machine over NetTLP: nettlp://ADDR[:TAG].
    #[arg(long)]
    target: Option<String>,
    /// A recorded capture, replayed.
    #[arg(long)]
    pcap: Option<PathBuf>,
}

/// Where the memory comes from, and what the layout methods may use.
#[derive(Args, Debug)]
pub struct SourceArgs {
    #[command(flatten)]
    mem: MemoryArgs,
    /// Kernel source tree or tarball (thesis method).
    #[arg(long)]
    kernel_source: Option<PathBuf>,
    /// A System.map. Not used by the analysis (everything comes from memory); accepted for
    /// comparison with tools that need one.
    #[arg(long)]
    system_map: Option<PathBuf>,
    /// A Volatility 3 ISF JSON file (isf method).
    #[arg(long)]
    isf: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    method: MethodKind,
}

impl SourceArgs {
    pub(crate) fn open(&self) -> Result<Box<dyn PhysMem>> {
        if self.system_map.is_some() {
            tracing::info!("--system-map given but not needed: symbols come from kallsyms in memory");
        }
        self.mem.open()
    }

    pub(crate) fn options(&self) -> PsOptions {
        PsOptions {
            method: Some(self.method),
            inputs: LayoutInputs { kernel_source: self.kernel_source.clone(), isf: self.isf.clone() },
            ..Default::default()
        }
    }
}

impl MemoryArgs {
    pub fn open(&self) -> Result<Box<dyn PhysMem>> {
        let mem = match (&self.image, &self.target, &self.pcap) {
            (Some(p), _, _) => source::open_image(p, self.format_image.as_deref())?,
            (_, Some(t), _) => source::open_target(t)?,
            (_, _, Some(p)) => source::open_pcap(p)?,
            _ => anyhow::bail!("one of --image, --target, --pcap is required"),
        };
        tracing::info!(source = mem.describe(), "memory opened");
        Ok(mem)
    }
}

#[derive(Args, Debug)]
pub struct PsArgs {
    #[command(flatten)]
    src: SourceArgs,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// End stderr with one JSON line of statistics.
    #[arg(long)]
    stats: bool,
}

pub fn run(args: PsArgs) -> Result<()> {
    let mem = args.src.open()?;
    let report = ps(mem.as_ref(), &args.src.options())
        .map_err(|e| Failure::new(FailureKind::of_ps(&e), format!("listing processes: {e}")))?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(render(&report.rows, args.format).as_bytes())?;
    stdout.flush()?;
    for t in &report.threads {
        for n in &t.notes {
            tracing::warn!(pid = t.pid, "{n}");
        }
    }
    let cut_short = report.walk_error.as_ref().map(|e| format!("walk stopped early, {} tasks listed: {e}", report.rows.len()));
    if let Some(why) = &cut_short {
        tracing::error!("{why}");
    }
    finish(args.stats.then_some(&report.stats), cut_short)
}

/// The end of a command that printed what it read (`ps`, `dmesg`, `lsmod`, `hidden`): the `--stats` line if asked
/// for, then, if the reading was cut short, a failure of kind `partial` (exit status 2).
pub fn finish(stats: Option<&impl serde::Serialize>, cut_short: Option<String>) -> Result<()> {
    if let Some(s) = stats {
        eprintln!("{}", serde_json::to_string(s)?);
    }
    match cut_short {
        Some(why) => Err(Failure::new(FailureKind::Partial, why).into()),
        None => Ok(()),
    }
}

#[derive(Args, Debug)]
pub struct ProfileArgs {
    #[command(flatten)]
    src: SourceArgs,
    /// `isf`: a Volatility 3 symbol table; `json`: the kernel facts and the learned layout.
    #[arg(long, value_enum, default_value = "isf")]
    format: profile::ProfileFormat,
    /// Write here instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

pub fn run_profile(args: ProfileArgs) -> Result<()> {
    let mem = args.src.open()?;
    let doc = profile::profile(mem.as_ref(), &args.src.options(), args.format)
        .map_err(|e| Failure::new(FailureKind::of_profile(&e), format!("profiling: {e}")))?;
    let text = serde_json::to_string(&doc)?;
    match &args.output {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}
