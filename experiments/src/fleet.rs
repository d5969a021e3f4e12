//! `fleet` (issue 13): `harness fleet` over an emulated fleet of 1 to 1,000 machines, with and
//! without the layout cache: sweep time, reads and CPU, every listing checked against its
//! dump's truth, broken endpoints reported and nothing else affected.
//!
//! The fleet is one `emulator serve --manifest` process (MPS 4096) in a private network
//! namespace of its own (so its wildcard ports 0x2FFF..0x30FF touch no other endpoint on this
//! shared host); `harness fleet` joins that namespace and reads `nettlp://127.0.1.1-...`
//! (`mrrs=4096`, 16 workers, 256 tags each sharing ports with SO_REUSEADDR). The machines run
//! the running dumps of [`KERNELS`] (or the `--only-kernel` ones; a Debian kernel of every corpus version, 5.10 to 7.2, and
//! the cloud builds of 6.1 and 7.2: two builds per version there), in turn; one machine in 200
//! (at least one from 10 machines on) never answers and as many serve random bytes.
//!
//! Measured per run: the sweep's wall time (the `harness fleet` process, from spawn to exit),
//! its CPU (user + system, its own rusage) and the emulator's (from `/proc/PID/stat`), DMA reads
//! and bytes, the load average before and after (the box is shared).

use std::fmt;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::failure::{Failure, FailureKind};
use harness::fleet::{MachineReport, SweepSummary};
use harness::introspect::compare::compare;
use harness::lab::corpus::{Corpus, DumpFormat, Mode};
use harness::lab::truth::Thread;
use serde::{Deserialize, Serialize};

use crate::analysis;
use crate::experiment::{Context, Experiment, RunError};

/// The kernels the machines run, in turn.
pub const KERNELS: &[&str] = &["deb5.10-amd64", "deb-amd64", "deb-cloud-amd64", "deb6.12-amd64", "deb7-amd64", "deb7-cloud-amd64"];
const SIZES: &[usize] = &[1, 10, 100, 1000];
const QUICK_SIZES: &[usize] = &[1, 10];
const WORKERS: usize = 16;
const SWEEP_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetRow {
    pub machines: usize,
    /// The layout cache was on.
    pub cache: bool,
    /// Kernel builds among the machines.
    pub kernels: usize,
    /// Endpoints that never answer or serve random bytes.
    pub broken: usize,
    pub workers: usize,
    pub wall_s: f64,
    pub harness_cpu_s: f64,
    pub emulator_cpu_s: f64,
    pub dma_reads: u64,
    pub dma_bytes: u64,
    /// Machines listed exactly as their truth.
    pub exact: usize,
    /// Working machines not listed exactly (or not listed).
    pub wrong: usize,
    /// Broken endpoints reported as failed.
    pub broken_reported: usize,
    pub cache_hits: usize,
    pub kernels_learned: usize,
    /// Slowest machine's time, connecting included.
    pub max_machine_ms: f64,
    pub median_machine_ms: f64,
    pub load_before: f64,
    pub load_after: f64,
    pub error: String,
}

pub struct FleetRun {
    pub machines: usize,
    pub cache: bool,
}

impl fmt::Display for FleetRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} machines, layout cache {}", self.machines, if self.cache { "on" } else { "off" })
    }
}

pub struct Fleet;

/// What one address of the fleet is.
#[derive(Clone, Debug, PartialEq)]
enum Role {
    Kernel(usize),
    Silent,
    Random,
}

/// The machines of a fleet of `n`: `kernels` kernels in turn, then the broken ones.
fn roles(n: usize, kernels: usize) -> Vec<Role> {
    let broken_each = if n >= 10 { (n / 200).max(1) } else { 0 };
    let good = n - 2 * broken_each;
    let mut v: Vec<Role> = (0..good).map(|i| Role::Kernel(i % kernels.max(1))).collect();
    v.extend(std::iter::repeat_n(Role::Silent, broken_each));
    v.extend(std::iter::repeat_n(Role::Random, broken_each));
    v
}

/// Address of machine `i`: 127.0.1.1 onwards.
fn addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 1, 1)) + i as u32)
}

impl Experiment for Fleet {
    type Row = FleetRow;
    type Run = FleetRun;

    fn name(&self) -> &'static str {
        "fleet"
    }
    fn module(&self) -> &'static str {
        "fleet"
    }
    fn plan(&self, ctx: &Context) -> Result<Vec<FleetRun>, RunError> {
        let sizes = if ctx.quick { QUICK_SIZES } else { SIZES };
        Ok(sizes.iter().flat_map(|&machines| [true, false].map(|cache| FleetRun { machines, cache })).collect())
    }
    fn run(&self, ctx: &Context, run: &FleetRun) -> Result<Vec<FleetRow>, RunError> {
        let corpus = Corpus::open_default();
        // `--only-kernel` names the kernels the fleet runs, else [`KERNELS`].
        let names: Vec<&str> = if ctx.only_kernels.is_empty() { KERNELS.to_vec() } else { ctx.only_kernels.iter().map(String::as_str).collect() };
        let mut dumps: Vec<(PathBuf, Vec<Thread>, String)> = Vec::new();
        for name in names {
            let e = corpus.entry(name).map_err(|err| RunError::Prerequisite(format!("{name}: {err}; {}", analysis::BUILD_CORPUS)))?;
            let path = e.dump_path(Mode::Running, DumpFormat::Elf).ok_or_else(|| RunError::Prerequisite(format!("{name}: no running ELF dump; {}", analysis::BUILD_CORPUS)))?;
            let truth = e.truth(Mode::Running).map_err(|err| RunError::Prerequisite(format!("{name}: {err}")))?;
            dumps.push((path, truth, name.to_owned()));
        }
        let roles = roles(run.machines, dumps.len());
        let dir = std::env::temp_dir().join(format!("netdma-fleet-{}-{}", std::process::id(), run.machines));
        std::fs::create_dir_all(&dir).map_err(|e| RunError::Prerequisite(format!("{}: {e}", dir.display())))?;
        let row = sweep_once(&dir, &roles, &dumps, run);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(vec![row?])
    }
    fn headline(&self, rows: &[FleetRow]) -> Vec<String> {
        rows.iter()
            .map(|r| {
                format!(
                    "{:>5} machines, cache {:<3}: {:6.2} s, CPU harness {:.1} s + emulator {:.1} s, {} reads, {:.0} MB; exact {}/{}, broken reported {}/{}{}",
                    r.machines,
                    if r.cache { "on" } else { "off" },
                    r.wall_s,
                    r.harness_cpu_s,
                    r.emulator_cpu_s,
                    r.dma_reads,
                    r.dma_bytes as f64 / 1e6,
                    r.exact,
                    r.machines - r.broken,
                    r.broken_reported,
                    r.broken,
                    if r.error.is_empty() { String::new() } else { format!(" ({})", r.error) }
                )
            })
            .collect()
    }
}

fn prereq(what: impl fmt::Display) -> RunError {
    RunError::Prerequisite(what.to_string())
}

/// The one-minute load average.
fn load() -> f64 {
    std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().next()?.parse().ok()).unwrap_or(f64::NAN)
}

/// CPU seconds (user + system) process `pid` has used.
fn cpu_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return f64::NAN };
    // fields after the command name (which may hold spaces) start at state, field 3
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { return f64::NAN };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(14) + ticks(15)) / hz
}

/// The emulator of the fleet, in its own network namespace; stopped (SIGINT) and reaped on drop.
struct FleetServer {
    child: Child,
}

impl FleetServer {
    fn start(manifest: &Path, log: &Path, machines: usize) -> Result<FleetServer, RunError> {
        let bin = crate::process::sibling_binary("emulator")?;
        let logf = std::fs::File::create(log).map_err(|e| prereq(format!("{}: {e}", log.display())))?;
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--mps", "4096", "--manifest"]).arg(manifest).stdin(Stdio::null()).stdout(Stdio::null()).stderr(logf).env("RUST_LOG", "info");
        // SAFETY: the closure only makes system calls (no allocation, no locks).
        unsafe {
            cmd.pre_exec(emulator::fleet::enter_private_network);
        }
        let child = cmd.spawn().map_err(|e| prereq(format!("starting emulator serve: {e}")))?;
        let server = FleetServer { child };
        let t0 = Instant::now();
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains("fleet of") {
                return Ok(server);
            }
            if t0.elapsed() > Duration::from_secs(60) || text.contains("Error") {
                return Err(prereq(format!("the fleet of {machines} did not start (a private network namespace needs root): {}", analysis::one_line(&text, 400))));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for FleetServer {
    fn drop(&mut self) {
        // SAFETY: signalling our own child, which we have not reaped yet.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sweep_once(dir: &Path, roles: &[Role], dumps: &[(PathBuf, Vec<Thread>, String)], run: &FleetRun) -> Result<FleetRow, RunError> {
    let io = |e: std::io::Error| prereq(format!("{}: {e}", dir.display()));
    let manifest = dir.join("manifest");
    let mut m = std::fs::File::create(&manifest).map_err(io)?;
    for (i, role) in roles.iter().enumerate() {
        let what = match role {
            Role::Kernel(k) => dumps[*k].0.display().to_string(),
            Role::Silent => "silent".into(),
            Role::Random => "random".into(),
        };
        writeln!(m, "{} {what}", addr(i)).map_err(io)?;
    }
    drop(m);
    let targets = dir.join("targets");
    std::fs::write(&targets, format!("nettlp://{}-{}?mrrs=4096\n", addr(0), addr(roles.len() - 1))).map_err(io)?;

    let server = FleetServer::start(&manifest, &dir.join("emulator.log"), roles.len())?;
    let ns = std::fs::File::open(format!("/proc/{}/ns/net", server.pid())).map_err(io)?;
    let mut cmd = Command::new(crate::process::sibling_binary("harness")?);
    cmd.args(["--errors", "json", "fleet", "--rows", "--stats", "--workers", &WORKERS.to_string(), "--targets"]).arg(&targets);
    if !run.cache {
        cmd.arg("--no-cache");
    }
    // SAFETY: the closure only makes a system call on a descriptor it owns.
    unsafe {
        cmd.pre_exec(move || emulator::fleet::join_network(&ns));
    }
    let load_before = load();
    let emu_cpu0 = cpu_s(server.pid());
    let done = crate::process::run(cmd, dir, "harness-fleet", SWEEP_TIMEOUT).map_err(io)?;
    let emulator_cpu_s = cpu_s(server.pid()) - emu_cpu0;
    let load_after = load();
    drop(server);

    let mut row = FleetRow {
        machines: roles.len(),
        cache: run.cache,
        kernels: roles.iter().filter_map(|r| if let Role::Kernel(k) = r { Some(*k) } else { None }).collect::<std::collections::BTreeSet<_>>().len(),
        broken: roles.iter().filter(|r| !matches!(r, Role::Kernel(_))).count(),
        workers: WORKERS,
        wall_s: done.wall_ms / 1e3,
        emulator_cpu_s,
        load_before,
        load_after,
        ..FleetRow::default()
    };
    if !done.success() {
        row.error = match Failure::last_in(&done.stderr) {
            Some(f) => analysis::one_line(&f.message, 300),
            None => format!("harness fleet: {}", done.describe()),
        };
    }
    let summary = done.stderr.lines().rev().find_map(|l| serde_json::from_str::<SweepSummary>(l.trim()).ok());
    if let Some(s) = &summary {
        row.harness_cpu_s = s.cpu_ms / 1e3;
        row.dma_reads = s.dma_reads;
        row.dma_bytes = s.dma_bytes;
        row.cache_hits = s.cache_hits;
        row.kernels_learned = s.kernels_learned;
    }
    let reports: Vec<MachineReport> = String::from_utf8_lossy(&done.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let mut times: Vec<f64> = reports.iter().map(|r| r.time_ms).collect();
    times.sort_by(f64::total_cmp);
    row.max_machine_ms = times.last().copied().unwrap_or(0.0);
    row.median_machine_ms = times.get(times.len() / 2).copied().unwrap_or(0.0);
    let mut seen = 0;
    for (i, role) in roles.iter().enumerate() {
        let target = format!("nettlp://{}", addr(i));
        let Some(r) = reports.iter().find(|r| r.target == target) else {
            if !matches!(role, Role::Kernel(_)) {
                continue;
            }
            row.wrong += 1;
            continue;
        };
        seen += 1;
        match role {
            Role::Kernel(k) => {
                let ok = r.error.is_none() && r.rows.as_deref().is_some_and(|rows| compare(rows, &dumps[*k].1).is_exact());
                if ok {
                    row.exact += 1;
                } else {
                    row.wrong += 1;
                    if row.error.is_empty() {
                        row.error = format!("{target} ({}): {}", dumps[*k].2, r.error.as_ref().map_or("listing differs from truth".into(), |e| analysis::one_line(&e.message, 200)));
                    }
                }
            }
            Role::Silent | Role::Random => {
                if r.error.as_ref().is_some_and(|e| e.kind != FailureKind::Partial) {
                    row.broken_reported += 1;
                }
            }
        }
    }
    if seen != roles.len() && row.error.is_empty() {
        row.error = format!("{} of {} machines reported", seen, roles.len());
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleets_mix_every_kernel_and_a_few_broken_endpoints() {
        assert_eq!(roles(1, KERNELS.len()), vec![Role::Kernel(0)]);
        assert_eq!(roles(3, 1), vec![Role::Kernel(0); 3]);
        let ten = roles(10, KERNELS.len());
        assert_eq!(ten.iter().filter(|r| **r == Role::Silent).count(), 1);
        assert_eq!(ten.iter().filter(|r| **r == Role::Random).count(), 1);
        let thousand = roles(1000, KERNELS.len());
        assert_eq!(thousand.len(), 1000);
        assert_eq!(thousand.iter().filter(|r| !matches!(r, Role::Kernel(_))).count(), 10);
        for k in 0..KERNELS.len() {
            assert!(thousand.contains(&Role::Kernel(k)));
        }
        assert_eq!(addr(999), Ipv4Addr::new(127, 0, 4, 232), "the issue's range");
    }
}
