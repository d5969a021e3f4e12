//! Shared helpers of the corpus-driven introspection tests.
//!
//! A missing corpus entry or prerequisite is a test failure saying how to get it, never a skip.
#![allow(dead_code)]


use emulator::mem::PhysMem;
use harness::introspect::layout::{LayoutInputs, MethodKind};
use harness::introspect::ps::{ps, PsError, PsOptions, PsReport, Row};
use harness::introspect::source;
use harness::lab::corpus::{Corpus, DumpFormat, Entry, Mode};
use harness::lab::truth::Thread;

pub const BUILD: &str = "run `cargo run --release -p harness -- corpus build`";

/// Whether the `static` method's constants equal a kernel's true offsets (every field of the
/// reference layout that `static` also has).
pub fn static_fits(reference: &harness::kbuild::Layout) -> bool {
    let l = harness::introspect::layout::fixed::debian_6_1_amd64();
    assert!(l.task.exit_state.is_some(), "static knows exit_state");
    l.walker_offsets().iter().all(|(k, v)| reference.offset(k).is_none_or(|r| r == *v))
}

pub fn entry(name: &str) -> Entry {
    Corpus::open_default()
        .entry(name)
        .unwrap_or_else(|e| panic!("corpus entry {name} is not available ({e}); {BUILD}"))
}

pub fn mode(m: &str) -> Mode {
    match m {
        "running" => Mode::Running,
        "panicked" => Mode::Panicked,
        other => panic!("unknown mode {other}"),
    }
}

pub fn dump(e: &Entry, m: Mode) -> Box<dyn PhysMem> {
    let path = e
        .dump_path(m, DumpFormat::Elf)
        .unwrap_or_else(|| panic!("{}: no {} ELF dump; {BUILD}", e.name, m.as_str()));
    source::open_image(&path, None).unwrap_or_else(|err| panic!("{err}; {BUILD}"))
}

/// The kernel in `mem`, found and opened with the default scan.
pub fn kernel(mem: &dyn PhysMem) -> harness::introspect::kernel::Kernel<'_> {
    let found = harness::introspect::kernel::Kernel::scan(mem, &harness::introspect::scan::ScanConfig::default()).unwrap_or_else(|err| panic!("scan: {err}"));
    harness::introspect::kernel::Kernel::open(mem, found).unwrap_or_else(|err| panic!("open: {err}"))
}

pub fn truth(e: &Entry, m: Mode) -> Vec<Thread> {
    e.truth(m).unwrap_or_else(|err| panic!("{}: {err}; {BUILD}", e.name))
}

pub fn run(e: &Entry, m: Mode, method: MethodKind, inputs: LayoutInputs) -> Result<PsReport, PsError> {
    let mem = dump(e, m);
    ps(mem.as_ref(), &PsOptions { method: Some(method), inputs, ..Default::default() })
}

/// A projection of the workload's rows that does not depend on pids or timing: every user
/// thread with its parent's name instead of the parent's pid, sorted.
pub fn workload_projection(rows: &[Row]) -> Vec<String> {
    let by_pid: std::collections::HashMap<i32, &Row> = rows.iter().map(|r| (r.pid, r)).collect();
    let mut out: Vec<String> = rows
        .iter()
        .filter(|r| !r.kthread)
        .map(|r| {
            let parent = by_pid.get(&r.ppid).map(|p| p.comm.as_str()).unwrap_or("-");
            let cmd = if r.cmdline.len() > 72 {
                format!("{}… ({} bytes)", &r.cmdline[..60], r.cmdline.len())
            } else {
                r.cmdline.clone()
            };
            // The agent's R/S state is a race with the dump (see compare.rs, rule 4).
            let state = if r.comm == harness::introspect::compare::AGENT { "R|S" } else { r.state.as_str() };
            let role = match r.threads {
                Some(n) => format!("leader of {n}"),
                None => "thread".to_string(),
            };
            format!("{:<16} uid={:<5} {:<3} {:<12} parent={:<12} {}", r.comm, r.uid, state, role, parent, cmd)
        })
        .collect();
    out.sort();
    out
}
