//! `paper-figures`: renders `results/*.csv` into `paper-figures/out/` (SVG and PNG).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use paper_figures::Outcome;

#[derive(Parser)]
#[command(about = "Renders results/*.csv into paper-figures/out/*.{svg,png}")]
struct Cli {
    /// Results directory (default: <repo>/results).
    #[arg(long)]
    results: Option<PathBuf>,
    /// Output directory (default: <repo>/paper-figures/out).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> anyhow::Result<ExitCode> {
    emulator::logging::init("warn");
    let cli = Cli::parse();
    let cwd = std::env::current_dir().context("current directory")?;
    let repo =
        || experiments::provenance::repo_root(&cwd).context("finding the repository root (pass --results and --out)");
    let results = match cli.results {
        Some(r) => r,
        None => repo()?.join("results"),
    };
    let out = match cli.out {
        Some(o) => o,
        None => repo()?.join("paper-figures/out"),
    };
    let mut ok = true;
    for outcome in paper_figures::render_all(&results, &out) {
        match outcome {
            Outcome::Rendered { stem, files } => {
                let shown: Vec<String> = files
                    .iter()
                    .map(|f| f.strip_prefix(&cwd).unwrap_or(f).display().to_string())
                    .collect();
                println!("rendered {stem}: {}", shown.join(", "));
            }
            Outcome::Skipped { stem, missing } => {
                println!(
                    "skipped  {stem}: {} absent (run its experiment first)",
                    missing.display()
                );
            }
            Outcome::Failed { stem, error } => {
                ok = false;
                eprintln!("FAILED   {stem}: {error}");
            }
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
