//! The infected mode (`lab::infected`): one Debian kernel per version booted with the lab's test
//! rootkit, which unlinked a process (`nd-victim`) from the task list and itself (`nd_rootkit`)
//! from the module list before the dump.
//!
//! The truth must name both, and show them before infecting (the agent's `/proc` view and
//! `/proc/modules`) and the guest's own confirmation after (`/proc/modules` without the module,
//! `/proc/PID` still there). In memory, the kernel's lists must have lost them: `ps` (the task
//! list) no longer shows the pid and `lsmod` (the module list) no longer shows the module, while
//! both still show everything else — which proves the DKOM happened in the dumped memory. Whether
//! a detector finds them anyway is another test's business.

mod common;

use common::*;
use harness::introspect::compare::{module_columns, truth_module_columns};
use harness::introspect::layout::MethodKind;
use harness::introspect::modules::{lsmod, LsmodOptions, ModMethod};
use harness::introspect::ps::{ps, PsOptions};
use harness::lab::corpus::{Entry, Mode};
use harness::lab::corpus::Infected;
use harness::lab::recipe::default_corpus;
use harness::lab::rootkit;
use rstest::rstest;

/// What the lab loads into every Debian guest (`lab::debian::GUEST_MODULES`).
const LOADED: &[&str] = &["fat", "msdos", "ts_bm", "ts_fsm", "ts_kmp"];

fn infected(e: &Entry) -> &Infected {
    e.infected.as_ref().unwrap_or_else(|| {
        panic!("{}: no infected mode (or one recorded for an older build of the entry); run `cargo run --release -p harness -- corpus build --only {}`", e.name, e.name)
    })
}

/// The corpus records the infected mode for one amd64 Debian kernel of every version.
#[test]
fn one_infected_kernel_per_version() {
    let names: Vec<&str> = default_corpus().into_iter().filter(|r| r.infected).map(|r| r.name).collect();
    assert_eq!(names, ["deb-amd64", "deb5.10-amd64", "deb6.12-amd64", "deb7-amd64"]);
}

#[rstest]
fn truth_names_what_was_hidden(#[values("deb5.10-amd64", "deb-amd64", "deb6.12-amd64", "deb7-amd64")] name: &str) {
    let e = entry(name);
    let i = infected(&e);
    let pid = i.hidden.pid;
    assert_eq!((i.hidden.comm.as_str(), i.hidden.module.as_str()), (rootkit::VICTIM_COMM, rootkit::MODULE));
    assert_eq!(i.release, e.release, "{name}: the infected boot ran another kernel");

    // Before infecting: the victim is a live single-threaded user process, the rootkit a Live module.
    let threads = truth(&e, Mode::Infected);
    let victim: Vec<_> = threads.iter().filter(|t| t.tgid == pid).collect();
    assert_eq!(victim.len(), 1, "{name}: pid {pid} in the truth: {victim:?}");
    assert_eq!((victim[0].pid, victim[0].comm.as_str(), victim[0].kthread), (pid, rootkit::VICTIM_COMM, false));
    assert_eq!(threads.iter().filter(|t| t.comm == rootkit::VICTIM_COMM).count(), 1, "{name}: one victim");
    let before = e.modules_truth(Mode::Infected).unwrap_or_else(|err| panic!("{name}: {err}"));
    let rk = before.iter().find(|m| m.name == rootkit::MODULE).unwrap_or_else(|| panic!("{name}: {} not in the truth", rootkit::MODULE));
    assert_eq!(rk.state, "Live");
    assert!(rk.address != 0 && rk.size > 0, "{name}: {rk:?}");
    for l in LOADED {
        assert!(before.iter().any(|m| m.name == *l && m.state == "Live"), "{name}: the lab's {l} is not in the truth");
    }

    // After: the guest itself no longer lists the module; /proc/PID (the pid allocator) remains.
    assert!(!i.confirmed.proc_modules_lists_module, "{name}: {:?}", i.confirmed);
    assert!(i.confirmed.proc_pid_exists, "{name}: {:?}", i.confirmed);
    assert_eq!(i.confirmed.proc_pid_comm, rootkit::VICTIM_COMM);
    assert_eq!(i.confirmed.rootkit_state, format!("{pid} 1"), "{name}: the rootkit's own parameters");
    let after = i.modules_after(&e).unwrap_or_else(|err| panic!("{name}: {err}"));
    let names = |v: &[harness::lab::truth::Module]| v.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
    let expected: Vec<String> = names(&before).into_iter().filter(|n| n != rootkit::MODULE).collect();
    assert_eq!(names(&after), expected, "{name}: /proc/modules after hiding is the list before, less the rootkit");
    // Killed after the dump, the hidden task exited without upsetting the kernel's list checks.
    assert!(matches!(i.victim_after_kill.as_str(), "gone" | "zombie"), "{name}: {}", i.victim_after_kill);
}

#[rstest]
fn ps_and_lsmod_miss_what_was_hidden(#[values("deb5.10-amd64", "deb-amd64", "deb6.12-amd64", "deb7-amd64")] name: &str) {
    let e = entry(name);
    let i = infected(&e);
    let pid = i.hidden.pid;
    let mem = dump(&e, Mode::Infected);

    let r = ps(mem.as_ref(), &PsOptions { method: Some(MethodKind::Auto), ..Default::default() })
        .unwrap_or_else(|err| panic!("{name} infected: ps: {err}"));
    assert!(r.walk_error.is_none(), "{name}: {:?}", r.walk_error);
    assert!(!r.rows.iter().any(|row| row.pid as u32 == pid || row.tgid as u32 == pid), "{name}: ps lists the hidden pid {pid}");
    assert!(!r.rows.iter().any(|row| row.comm == rootkit::VICTIM_COMM), "{name}: ps lists a {}", rootkit::VICTIM_COMM);
    // Every other user-space thread of the truth is still there: the walk itself is intact.
    let listed: std::collections::HashSet<(u32, &str)> = r.rows.iter().map(|row| (row.pid as u32, row.comm.as_str())).collect();
    for t in truth(&e, Mode::Infected).iter().filter(|t| !t.kthread && t.tgid != pid) {
        assert!(listed.contains(&(t.pid, t.comm.as_str())), "{name}: ps misses pid {} ({})", t.pid, t.comm);
    }

    let l = lsmod(mem.as_ref(), &LsmodOptions { method: Some(ModMethod::Auto), ..Default::default() })
        .unwrap_or_else(|err| panic!("{name} infected: lsmod: {err}"));
    assert_eq!(l.error, None, "{name}");
    assert!(!l.modules.iter().any(|m| m.name == rootkit::MODULE), "{name}: lsmod lists {}", rootkit::MODULE);
    // Exactly what the guest's /proc/modules showed after hiding, every column.
    let after = i.modules_after(&e).unwrap_or_else(|err| panic!("{name}: {err}"));
    let ours: Vec<_> = l.modules.iter().map(module_columns).collect();
    let theirs: Vec<_> = after.iter().map(truth_module_columns).collect();
    assert_eq!(ours, theirs, "{name} infected ({})", l.located.how);
}
