//! `harness`: DMA requester, process listing from physical memory, and the guest lab.

mod cmd_dmesg;
mod cmd_fleet;
mod cmd_hidden;
mod cmd_lsmod;
mod cmd_ps;
mod cmd_watch;

use anyhow::Result;
use clap::{Parser, ValueEnum};
use harness::failure::{Failure, FailureKind, EXIT_PARTIAL};

mod dma_cmd;

/// Agentless Linux introspection over NetTLP DMA.
#[derive(Parser)]
#[command(name = "harness", version, about)]
struct Cli {
    /// How a failure is reported on stderr: `text` (anyhow's message and its causes) or `json`
    /// (one last line `{"failure":{"kind":...,"message":...}}`, for programs; the exit statuses
    /// are the same: 1 failed, 2 stopped part-way; see `harness::failure`).
    #[arg(long, value_enum, default_value = "text", global = true)]
    errors: ErrorFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ErrorFormat {
    Text,
    Json,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// List the processes of a machine from its physical memory.
    Ps(cmd_ps::PsArgs),
    /// The kernel log (printk ring buffer) of a machine, from its physical memory.
    Dmesg(cmd_dmesg::DmesgArgs),
    /// The loaded kernel modules of a machine (as /proc/modules), from its physical memory.
    Lsmod(cmd_lsmod::LsmodArgs),
    /// List the processes of many machines at once over NetTLP (one JSON line per machine).
    Fleet(cmd_fleet::FleetArgs),
    /// Watch one machine: list it every interval and print processes started, exited, renamed or
    /// changing uid.
    Watch(cmd_watch::WatchArgs),
    /// Tasks and modules some view of memory sees and the kernel's lists do not (cross-view).
    Hidden(cmd_hidden::HiddenArgs),
    /// Write what was learned about the kernel (Volatility 3 ISF, or JSON).
    Profile(cmd_ps::ProfileArgs),
    /// The guest corpus: real kernels, ground truth, running and panicked dumps.
    #[command(subcommand)]
    Corpus(harness::lab::cli::CorpusCmd),
    /// Read physical memory over NetTLP; wire benchmarks.
    #[command(subcommand)]
    Dma(dma_cmd::DmaCmd),
    /// A live lab guest for serving over NetTLP.
    #[command(subcommand)]
    Lab(harness::lab::cli::LabCmd),
}

fn main() -> Result<()> {
    emulator::logging::init("info");
    let cli = Cli::parse();
    if cli.errors == ErrorFormat::Json {
        std::panic::set_hook(Box::new(|info| eprintln!("{}", Failure::new(FailureKind::Panic, info.to_string()).line())));
    }
    let done = match cli.cmd {
        Cmd::Ps(args) => cmd_ps::run(args),
        Cmd::Dmesg(args) => cmd_dmesg::run(args),
        Cmd::Lsmod(args) => cmd_lsmod::run(args),
        Cmd::Hidden(args) => cmd_hidden::run(args),
        Cmd::Profile(args) => cmd_ps::run_profile(args),
        Cmd::Fleet(args) => cmd_fleet::run(args),
        Cmd::Watch(args) => cmd_watch::run(args),
        Cmd::Corpus(c) => harness::lab::cli::corpus(c).map_err(anyhow::Error::from),
        Cmd::Lab(c) => harness::lab::cli::lab(c).map_err(anyhow::Error::from),
        Cmd::Dma(c) => dma_cmd::dma(c),
    };
    let Err(e) = done else { return Ok(()) };
    let failure = Failure::of(&e);
    match cli.errors {
        ErrorFormat::Json => {
            eprintln!("{}", failure.line());
            std::process::exit(failure.kind.exit_code())
        }
        // Stopped part-way: the command logged why and printed what it read.
        ErrorFormat::Text if failure.kind == FailureKind::Partial => std::process::exit(EXIT_PARTIAL),
        ErrorFormat::Text => Err(e),
    }
}
