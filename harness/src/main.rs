//! `harness`: DMA requester, process listing from physical memory, and the guest lab.

use anyhow::Result;
use clap::Parser;

/// Agentless Linux introspection over NetTLP DMA.
#[derive(Parser)]
#[command(name = "harness", version, about)]
enum Cli {}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse() {}
}
