//! `harness`: DMA requester, process listing from physical memory, and the guest lab.

use anyhow::Result;
use clap::Parser;

/// Agentless Linux introspection over NetTLP DMA.
#[derive(Parser)]
#[command(name = "harness", version, about)]
enum Cli {
    /// The guest corpus: real kernels, ground truth, running and panicked dumps.
    #[command(subcommand)]
    Corpus(harness::lab::cli::CorpusCmd),
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
        Cli::Corpus(c) => harness::lab::cli::corpus(c)?,
        Cli::Lab(c) => harness::lab::cli::lab(c)?,
    }
    Ok(())
}
