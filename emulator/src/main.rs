//! `emulator`: the software NetTLP endpoint's command line.

use anyhow::Result;
use clap::Parser;

mod serve_cmd;

/// Software NetTLP endpoint serving guest memory images.
#[derive(Parser)]
#[command(name = "emulator", version, about)]
enum Cli {
    /// Serve a memory image as a NetTLP endpoint: Memory Reads over UDP answered from it.
    Serve(serve_cmd::ServeArgs),
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse() {
        Cli::Serve(args) => serve_cmd::serve(args),
    }
}
