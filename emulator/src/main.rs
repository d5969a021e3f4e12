//! `emulator`: the software NetTLP endpoint's command line.

use anyhow::{Context, Result};
use clap::Parser;
use std::path::{Path, PathBuf};

mod serve_cmd;

/// Software NetTLP endpoint serving guest memory images.
#[derive(Parser)]
#[command(name = "emulator", version, about)]
enum Cli {
    /// Serve a memory image as a NetTLP endpoint: Memory Reads over UDP answered from it.
    Serve(serve_cmd::ServeArgs),
    /// Decode a NetTLP capture (pcap/pcapng, Ethernet) to JSON Lines on stdout, one object
    /// per frame; frames that are not NetTLP or are cut short are reported, not dropped.
    Decode {
        /// The capture file.
        capture: PathBuf,
    },
}

fn main() -> Result<()> {
    emulator::logging::init("info");
    match Cli::parse() {
        Cli::Serve(args) => serve_cmd::serve(args),
        Cli::Decode { capture } => decode(&capture),
    }
}

fn decode(path: &Path) -> Result<()> {
    use emulator::capture::{write_jsonl, CaptureError};
    let out = std::io::BufWriter::new(std::io::stdout().lock());
    match write_jsonl(path, out) {
        Ok(frames) => {
            tracing::info!(frames, "decoded {}", path.display());
            Ok(())
        }
        // `emulator decode x.pcap | head` is not an error
        Err(CaptureError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).with_context(|| format!("decoding {}", path.display())),
    }
}
