//! `harness`: DMA requester, process listing from physical memory, and the guest lab.

mod cmd_dmesg;
mod cmd_lsmod;
mod cmd_ps;

use anyhow::Result;
use clap::Parser;

mod dma_cmd;

/// Agentless Linux introspection over NetTLP DMA.
#[derive(Parser)]
#[command(name = "harness", version, about)]
enum Cli {
    /// List the processes of a machine from its physical memory.
    Ps(cmd_ps::PsArgs),
    /// The kernel log (printk ring buffer) of a machine, from its physical memory.
    Dmesg(cmd_dmesg::DmesgArgs),
    /// The loaded kernel modules of a machine (as /proc/modules), from its physical memory.
    Lsmod(cmd_lsmod::LsmodArgs),
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse() {
        Cli::Ps(args) => cmd_ps::run(args)?,
        Cli::Dmesg(args) => cmd_dmesg::run(args)?,
        Cli::Lsmod(args) => cmd_lsmod::run(args)?,
        Cli::Profile(args) => cmd_ps::run_profile(args)?,
        Cli::Corpus(c) => harness::lab::cli::corpus(c)?,
        Cli::Lab(c) => harness::lab::cli::lab(c)?,
        Cli::Dma(c) => dma_cmd::dma(c)?,
    }
    Ok(())
}
