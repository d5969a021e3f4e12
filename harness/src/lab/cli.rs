//! The `corpus` and `lab` subcommands of the `harness` binary.
//!
//! Invariant: these functions only parse arguments and print; the work is in `build`, `corpus`
//! and `live`.

use clap::{Subcommand, ValueEnum};
use serde::Serialize;

use crate::lab::build::{build_corpus, BuildOptions, Outcome};
use crate::lab::cache::Cache;
use crate::lab::corpus::{Corpus, Mode};
use crate::lab::recipe::Tier;
use crate::lab::{live, Result};

#[derive(Subcommand, Debug)]
pub enum CorpusCmd {
    /// Build (or bring up to date) the guest corpus in the cache.
    Build {
        /// Only this entry (e.g. deb-amd64).
        #[arg(long)]
        only: Option<String>,
        /// Parallel jobs for kernel builds.
        #[arg(long, default_value_t = 2)]
        jobs: u32,
        /// Rebuild even entries that are up to date.
        #[arg(long)]
        force: bool,
        /// `test`: the kernels the test suite needs (every version, a few configs); `eval`: the
        /// whole evaluation corpus.
        #[arg(long, value_enum, default_value_t = TierArg::Eval)]
        tier: TierArg,
        /// Fetch the package lists of the lab's private apt again (newer kernels rebuild).
        #[arg(long)]
        refresh_apt: bool,
        /// Only record the infected modes (beside their entries); an entry that is not up to
        /// date is an error, never rebuilt.
        #[arg(long)]
        infected_only: bool,
    },
    /// List the corpus: one row per (kernel, mode).
    List {
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TierArg {
    Test,
    Eval,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum LabCmd {
    /// Boot NAME and leave it running with its RAM in a shared memory file.
    Boot {
        name: String,
        #[arg(long, default_value_t = 2)]
        jobs: u32,
    },
    /// Record the live guest's /proc truth now.
    Truth { name: String },
    /// Panic the live guest (sysrq c); it stays panicked.
    Panic { name: String },
    /// Quit the live guest and remove its RAM file.
    Stop { name: String },
}

/// One row of `corpus list`.
#[derive(Serialize, Debug)]
pub struct Row {
    pub kernel: String,
    pub release: String,
    pub mode: Mode,
    pub dump: String,
    pub formats: Vec<String>,
    pub truth: String,
    pub threads: usize,
    pub btf: bool,
    pub ikconfig: bool,
    pub vmcoreinfo: bool,
    pub kaslr: bool,
    pub layout_digest: String,
}

pub fn rows(corpus: &Corpus) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for e in corpus.entries()? {
        for (mode, m) in e.all_modes() {
            rows.push(Row {
                kernel: e.name.clone(),
                release: e.release.clone(),
                mode,
                dump: m.dumps.first().map(|d| e.path(&d.path).display().to_string()).unwrap_or_default(),
                formats: m.dumps.iter().map(|d| d.format.as_str().to_string()).collect(),
                truth: e.path(&m.truth).display().to_string(),
                threads: m.threads,
                btf: e.flags.btf,
                ikconfig: e.flags.ikconfig,
                vmcoreinfo: e.flags.vmcoreinfo,
                kaslr: e.flags.kaslr,
                layout_digest: e.layout_digest.clone(),
            });
        }
    }
    Ok(rows)
}

pub fn table(rows: &[Row]) -> String {
    let yn = |b: bool| if b { "yes" } else { "no" }.to_string();
    let head = ["kernel", "release", "mode", "btf", "ikconfig", "vmcoreinfo", "kaslr", "layout_digest", "threads", "formats", "dump", "truth"];
    let mut cells: Vec<Vec<String>> = vec![head.iter().map(|s| s.to_string()).collect()];
    for r in rows {
        cells.push(vec![
            r.kernel.clone(),
            r.release.clone(),
            r.mode.as_str().into(),
            yn(r.btf),
            yn(r.ikconfig),
            yn(r.vmcoreinfo),
            yn(r.kaslr),
            r.layout_digest.clone(),
            r.threads.to_string(),
            r.formats.join(","),
            r.dump.clone(),
            r.truth.clone(),
        ]);
    }
    let widths: Vec<usize> =
        (0..head.len()).map(|i| cells.iter().map(|c| c[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for c in &cells {
        let line: Vec<String> = c.iter().zip(&widths).map(|(s, w)| format!("{s:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub fn corpus(cmd: CorpusCmd) -> Result<()> {
    let cache = Cache::open_default();
    match cmd {
        CorpusCmd::Build { only, jobs, force, tier, refresh_apt, infected_only } => {
            let t0 = std::time::Instant::now();
            let tier = match tier {
                TierArg::Test => Tier::Test,
                TierArg::Eval => Tier::Eval,
            };
            let opts = BuildOptions { only, jobs, force, tier, refresh_apt, infected_only };
            let mut outcomes = build_corpus(&cache, &opts)?;
            outcomes.extend(crate::lab::infected::infect_corpus(&cache, &opts)?);
            for (name, o) in outcomes {
                match o {
                    Outcome::UpToDate => println!("{name:<26} up to date"),
                    Outcome::Built { secs } => println!("{name:<26} built in {secs:.0} s"),
                }
            }
            println!("corpus at {} ({:.1} s)", cache.corpus().display(), t0.elapsed().as_secs_f64());
        }
        CorpusCmd::List { format } => {
            let rows = rows(&Corpus::open(cache.corpus()))?;
            match format {
                ListFormat::Table => print!("{}", table(&rows)),
                ListFormat::Json => {
                    println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_else(|e| format!("\"{e}\"")))
                }
            }
        }
    }
    Ok(())
}

pub fn lab(cmd: LabCmd) -> Result<()> {
    let cache = Cache::open_default();
    match cmd {
        LabCmd::Boot { name, jobs } => {
            let g = live::boot(&cache, &name, jobs)?;
            println!("guest {} ({}) running, QEMU pid {}", g.name, g.release, g.pid);
            println!("RAM (shared file, offset = guest physical address): {}", g.ram.display());
            println!("QMP socket: {}", g.qmp.display());
            println!("control port: {}   console: {}", g.ctl.display(), g.console.display());
            println!("serve it:   {}", g.serve_command());
            println!("truth now:  harness lab truth {name}");
            println!("panic it:   harness lab panic {name}");
            println!("stop it:    harness lab stop {name}");
        }
        LabCmd::Truth { name } => println!("{}", live::truth(&cache, &name)?.display()),
        LabCmd::Panic { name } => {
            let p = live::panic(&cache, &name)?;
            println!("guest {name} panicked; last pre-panic truth: {}", p.display());
        }
        LabCmd::Stop { name } => {
            live::stop(&cache, &name)?;
            println!("guest {name} stopped");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(mode: Mode) -> Row {
        Row {
            kernel: "custom-thesis".into(),
            release: "6.1.192-netdma-thesis".into(),
            mode,
            dump: format!("/cache/corpus/custom-thesis/{}/dump.elf", mode.as_str()),
            formats: vec!["elf".into(), "kdump-flattened".into(), "raw".into()],
            truth: format!("/cache/corpus/custom-thesis/{}/truth.jsonl", mode.as_str()),
            threads: 51,
            btf: false,
            ikconfig: true,
            vmcoreinfo: false,
            kaslr: false,
            layout_digest: "4dc1e2d77d17fec1".into(),
        }
    }

    #[test]
    fn list_table_and_json() {
        let rows = vec![row(Mode::Running), row(Mode::Panicked)];
        insta::assert_snapshot!("corpus_list_table", table(&rows));
        insta::assert_json_snapshot!("corpus_list_json", rows);
    }
}
