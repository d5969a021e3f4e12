//! `harness ps`: argument parsing and printing around `introspect::ps`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result};
use clap::Args;
use emulator::mem::PhysMem;
use harness::introspect::layout::{LayoutInputs, MethodKind};
use harness::introspect::output::{render, Format};
use harness::introspect::ps::{ps, PsOptions};
use harness::introspect::source;

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("memory").required(true).args(["image", "target", "pcap"]))]
pub struct PsArgs {
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
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// End stderr with one JSON line of statistics.
    #[arg(long)]
    stats: bool,
}

fn open(args: &PsArgs) -> Result<Box<dyn PhysMem>> {
    Ok(match (&args.image, &args.target, &args.pcap) {
        (Some(p), _, _) => source::open_image(p, args.format_image.as_deref())?,
        (_, Some(t), _) => source::open_target(t)?,
        (_, _, Some(p)) => source::open_pcap(p)?,
        _ => anyhow::bail!("one of --image, --target, --pcap is required"),
    })
}

pub fn run(args: PsArgs) -> Result<()> {
    if args.system_map.is_some() {
        tracing::info!("--system-map given but not needed: symbols come from kallsyms in memory");
    }
    let mem = open(&args)?;
    tracing::info!(source = mem.describe(), "memory opened");
    let opts = PsOptions {
        method: Some(args.method),
        inputs: LayoutInputs { kernel_source: args.kernel_source.clone(), isf: args.isf.clone() },
        ..Default::default()
    };
    let report = ps(mem.as_ref(), &opts).map_err(|e| anyhow::anyhow!("listing processes: {e}"))?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(render(&report.rows, args.format).as_bytes())?;
    stdout.flush()?;
    for t in &report.threads {
        for n in &t.notes {
            tracing::warn!(pid = t.pid, "{n}");
        }
    }
    if let Some(e) = &report.walk_error {
        tracing::error!("walk stopped early, {} tasks listed: {e}", report.rows.len());
    }
    if args.stats {
        eprintln!("{}", serde_json::to_string(&report.stats)?);
    }
    if report.walk_error.is_some() {
        std::process::exit(2);
    }
    Ok(())
}
