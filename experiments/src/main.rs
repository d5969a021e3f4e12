//! `experiments`: runs the evaluation and writes `results/<name>.csv`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use indicatif::{MultiProgress, ProgressDrawTarget};

use experiments::{hw_reference, provenance, registry, summary, Context};

#[derive(Parser)]
#[command(about = "Runs the netdma evaluation and writes results/<name>.csv")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run experiments: `all`, experiment names, or module names (e.g. `wire`).
    Run {
        #[arg(required = true, value_name = "all | NAME")]
        names: Vec<String>,
        /// Smaller inputs and fewer repetitions (the whole chain in minutes).
        #[arg(long)]
        quick: bool,
        /// Repository root (default: the git checkout containing the current directory).
        #[arg(long)]
        repo: Option<PathBuf>,
        /// Results directory (default: <repo>/results, or <repo>/results/quick with --quick so
        /// that a quick run never replaces the full results).
        #[arg(long)]
        results: Option<PathBuf>,
        /// NetTLP hardware tlpperf outputs (default: <repo>/../shared/reference/nettlp-hw-tlpperf).
        #[arg(long)]
        reference: Option<PathBuf>,
        /// Only these corpus entries (repeatable), for the experiments that run on the corpus.
        #[arg(long = "only-kernel", value_name = "NAME")]
        only_kernel: Vec<String>,
    },
    /// List the experiments, available and pending.
    List,
}

fn main() -> anyhow::Result<ExitCode> {
    emulator::logging::init("warn");
    match Cli::parse().command {
        Command::List => {
            for e in registry::available() {
                println!(
                    "{:<18} module {:<8} writes results/{}.csv",
                    e.name(),
                    e.module(),
                    e.name()
                );
            }
            for (name, needs) in registry::PENDING {
                println!("{name:<18} pending: needs {needs}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            names,
            quick,
            repo,
            results,
            reference,
            only_kernel,
        } => {
            let selected = registry::select(&names)?;
            let cwd = std::env::current_dir().context("current directory")?;
            let repo = match repo {
                Some(r) => r,
                None => provenance::repo_root(&cwd).context("finding the repository root (pass --repo)")?,
            };
            let ctx = Context {
                results_dir: results.unwrap_or_else(|| {
                    if quick {
                        repo.join("results").join("quick")
                    } else {
                        repo.join("results")
                    }
                }),
                hw_reference: reference.unwrap_or_else(|| repo.join(hw_reference::DEFAULT_RELATIVE)),
                repo,
                quick,
                only_kernels: only_kernel,
            };
            let git_rev = provenance::git_rev(&ctx.repo)?;
            let progress = MultiProgress::new();
            if !std::io::stderr().is_terminal() {
                progress.set_draw_target(ProgressDrawTarget::hidden());
            }
            let outcomes: Vec<_> = selected.iter().map(|e| e.execute(&ctx, &git_rev, &progress)).collect();
            print!("{}", summary::table(&outcomes, &cwd));
            Ok(if outcomes.iter().all(|o| o.succeeded()) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
