//! `panic`: the process list of a machine that has panicked — our analysis of its memory against
//! an in-guest agent, both *measured* on the same guest.
//!
//! Per kernel, one guest is booted with the lab's kernel and workload plus a shell on a third
//! serial port (`harness::lab::shellport`). Then:
//! 1. **running** — the host asks the guest's shell to run `ps -T -o pid,ppid,user,stat,comm,args`
//!    (busybox, the in-guest agent) and waits at most the answer timeout; the lab's agent then
//!    records the truth; QEMU is paused and `harness::introspect::ps` (method `auto`) reads the
//!    guest's live RAM file; QEMU continues;
//! 2. **panicked** — the lab's agent records its last truth and panics the kernel (sysrq `c`);
//!    once the console shows the end of the panic, the shell is asked again (it cannot answer:
//!    the row records the timeout) and the analysis reads the same RAM file.
//!
//! Scores: the analysis with [`crate::analysis::score`] (every field `compare` checks); the
//! in-guest `ps` on the fields it prints — ppid, uid, state letter, comm, cmdline — by
//! [`score_guest_ps`], with the same presence rule (kernel threads that come and go are not
//! charged) and `ps | cat` itself (the observer, gone before the truth) left out. Busybox decorates
//! args — `[comm]` for a task without a command line, a `{comm} ` prefix when comm is not
//! argv[0]'s base name — which [`guest_cmdline`] removes. What it cannot show is scored as
//! printed: comm as `/proc/PID/stat` gives it (15 bytes, so a long kernel-thread name such as
//! `kworker/0:1-events` is cut) and args cut at 2048 bytes.
//!
//! Invariant: `available` is true only when the observer actually answered within its
//! timeout; an unanswered request is a row with `available = false`, recall 0 and the waited
//! time, never an assumption.
//!
//! ```text
//! results/panic.csv  kernel,release,mode,observer,available,answer_ms,timeout_ms,error,
//!                    tasks_truth,tasks_found,true_positives,recall,fields_exact_fraction,
//!                    fields_compared,method_used,dma_reads,dma_bytes, + stamp
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use emulator::image::{Format, Machine};
use harness::introspect::layout::MethodKind;
use harness::lab::cache::Cache;
use harness::lab::shellport::{ShellGuest, ShellGuestOptions};
use harness::lab::truth::Thread;
use serde::{Deserialize, Serialize};

use crate::analysis;
use crate::experiment::{Context, Experiment, RunError};

/// The in-guest agent's command (piped, so busybox does not cut lines at a terminal width).
pub const GUEST_PS: &str = "ps -T -o pid,ppid,user,stat,comm,args | cat";
/// The fields the in-guest `ps` is scored on.
pub const GUEST_PS_FIELDS: &str = "ppid,uid,state,comm,cmdline";
/// The fields the analysis is scored on (`harness::introspect::compare`).
pub const NETDMA_FIELDS: &str = "tgid,ppid,uid,state,comm,cmdline,kthread,start_time";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PanicRow {
    pub kernel: String,
    pub release: String,
    /// `running` or `panicked`.
    pub mode: String,
    /// `netdma` (our analysis of the guest's memory) or `in-guest-ps` (busybox ps in the guest).
    pub observer: String,
    /// The observer produced a process list within its timeout.
    pub available: bool,
    /// From the request to the answer (or to the timeout when there was none).
    pub answer_ms: f64,
    pub timeout_ms: f64,
    pub error: String,
    pub tasks_truth: usize,
    pub tasks_found: usize,
    pub true_positives: usize,
    pub recall: f64,
    pub fields_exact_fraction: Option<f64>,
    pub fields_compared: String,
    pub method_used: String,
    pub dma_reads: u64,
    pub dma_bytes: u64,
}

pub struct PanicRun {
    pub kernel: String,
    pub release: String,
}

impl fmt::Display for PanicRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} boot, ps, panic, ps", self.kernel)
    }
}

pub struct Panic;

const QUICK_KERNELS: usize = 1;

impl Experiment for Panic {
    type Row = PanicRow;
    type Run = PanicRun;

    fn name(&self) -> &'static str {
        "panic"
    }
    fn module(&self) -> &'static str {
        "panic"
    }
    fn plan(&self, ctx: &Context) -> Result<Vec<PanicRun>, RunError> {
        Ok(analysis::entries(ctx, QUICK_KERNELS)?
            .into_iter()
            .map(|e| PanicRun { kernel: e.name, release: e.release })
            .collect())
    }
    fn run(&self, ctx: &Context, run: &PanicRun) -> Result<Vec<PanicRow>, RunError> {
        let timeout = Duration::from_secs(if ctx.quick { 15 } else { 60 });
        let lab = |what: &str, e: harness::lab::Error| RunError::Prerequisite(format!("{} {what}: {e}", run.kernel));
        let cache = Cache::open_default();
        let mut g = ShellGuest::boot(&cache, &run.kernel, &ShellGuestOptions::default()).map_err(|e| lab("boot", e))?;
        let mut rows = Vec::new();

        // Running: the in-guest agent, then the truth, then our analysis of the paused guest.
        let asked = g.run(GUEST_PS, timeout);
        let truth = g.truth().map_err(|e| lab("truth", e))?;
        rows.push(guest_row(run, "running", asked, timeout, &truth));
        g.guest().and_then(|q| q.qmp().stop()).map_err(|e| lab("pause", e))?;
        rows.push(netdma_row(run, "running", g.ram_path(), &truth));
        g.guest().and_then(|q| q.qmp().cont()).map_err(|e| lab("continue", e))?;

        // Panicked: the last truth, sysrq c, then the same two observers.
        let truth = g.panic().map_err(|e| lab("panic", e))?;
        let asked = g.run(GUEST_PS, timeout);
        rows.push(guest_row(run, "panicked", asked, timeout, &truth));
        g.guest().and_then(|q| q.qmp().stop()).map_err(|e| lab("pause", e))?;
        rows.push(netdma_row(run, "panicked", g.ram_path(), &truth));
        g.shutdown().map_err(|e| lab("shutdown", e))?;
        Ok(rows)
    }
    fn headline(&self, rows: &[PanicRow]) -> Vec<String> {
        let mut out = Vec::new();
        for mode in ["running", "panicked"] {
            for observer in ["in-guest-ps", "netdma"] {
                let of: Vec<&PanicRow> = rows.iter().filter(|r| r.mode == mode && r.observer == observer).collect();
                if of.is_empty() {
                    continue;
                }
                let avail = of.iter().filter(|r| r.available).count();
                let recall: f64 = of.iter().map(|r| r.recall).sum::<f64>() / of.len() as f64;
                out.push(format!(
                    "{mode:<8} {observer:<11}: answered on {avail}/{} kernels, mean recall {recall:.3}",
                    of.len()
                ));
            }
        }
        out
    }
}

fn base(run: &PanicRun, mode: &str, observer: &str, truth: &[Thread], timeout: Duration) -> PanicRow {
    PanicRow {
        kernel: run.kernel.clone(),
        release: run.release.clone(),
        mode: mode.into(),
        observer: observer.into(),
        available: false,
        answer_ms: 0.0,
        timeout_ms: timeout.as_secs_f64() * 1e3,
        error: String::new(),
        tasks_truth: truth.len(),
        tasks_found: 0,
        true_positives: 0,
        recall: 0.0,
        fields_exact_fraction: None,
        fields_compared: String::new(),
        method_used: String::new(),
        dma_reads: 0,
        dma_bytes: 0,
    }
}

fn guest_row(
    run: &PanicRun,
    mode: &str,
    asked: harness::lab::Result<harness::lab::shellport::ShellAnswer>,
    timeout: Duration,
    truth: &[Thread],
) -> PanicRow {
    let mut r = base(run, mode, "in-guest-ps", truth, timeout);
    r.fields_compared = GUEST_PS_FIELDS.into();
    match asked {
        Ok(a) => {
            r.answer_ms = a.elapsed.as_secs_f64() * 1e3;
            match parse_busybox_ps(&a.lines) {
                Ok(rows) => {
                    let s = score_guest_ps(&rows, truth);
                    r.available = a.status == 0 && !rows.is_empty();
                    r.tasks_found = rows.len();
                    r.true_positives = s.true_positives;
                    r.recall = s.recall;
                    r.fields_exact_fraction = Some(s.fields_exact_fraction);
                    if a.status != 0 {
                        r.error = format!("exit status {}", a.status);
                    }
                }
                Err(e) => r.error = analysis::one_line(&e, 300),
            }
        }
        Err(harness::lab::Error::Timeout { .. }) => {
            r.answer_ms = r.timeout_ms;
            r.error = format!("no answer within {} s", timeout.as_secs());
        }
        Err(e) => r.error = analysis::one_line(&e.to_string(), 300),
    }
    r
}

fn netdma_row(run: &PanicRun, mode: &str, ram: &std::path::Path, truth: &[Thread]) -> PanicRow {
    let mut r = base(run, mode, "netdma", truth, Duration::ZERO);
    r.fields_compared = NETDMA_FIELDS.into();
    let mem = match emulator::image::open(ram, Some(Format::Live(Machine::Pc)), None) {
        Ok(m) => m,
        Err(e) => {
            r.error = analysis::one_line(&e.to_string(), 300);
            return r;
        }
    };
    let timed = analysis::run_ps(mem.as_ref(), MethodKind::Auto, &analysis::layout_inputs());
    r.answer_ms = timed.wall_ms;
    r.dma_reads = timed.reads.reads;
    r.dma_bytes = timed.reads.bytes;
    match timed.result {
        Ok(report) => {
            let (s, _) = analysis::score(&report.rows, truth);
            r.available = !report.rows.is_empty();
            r.method_used = report.method.name().into();
            r.tasks_found = s.tasks_found;
            r.true_positives = s.true_positives;
            r.recall = s.recall;
            r.fields_exact_fraction = Some(s.fields_exact_fraction);
            r.error = report.walk_error.map(|e| e.to_string()).unwrap_or_default();
        }
        Err(e) => r.error = analysis::one_line(&e.to_string(), 300),
    }
    r
}

/// One line of busybox `ps -T -o pid,ppid,user,stat,comm,args`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestPsRow {
    pub pid: u32,
    pub ppid: u32,
    /// The USER column: a name, or the uid when the guest has no passwd entry.
    pub user: String,
    pub stat: String,
    pub comm: Vec<u8>,
    pub args: Vec<u8>,
}

/// Parses busybox's fixed-width output, locating the columns from its header line.
pub fn parse_busybox_ps(lines: &[Vec<u8>]) -> Result<Vec<GuestPsRow>, String> {
    let header = lines.first().ok_or("empty ps output")?;
    let h = String::from_utf8_lossy(header);
    let col = |name: &str| h.find(name).ok_or_else(|| format!("ps header {h:?} has no {name}"));
    let (user, stat, comm) = (col("USER")?, col("STAT")?, col("COMMAND")?);
    let args = h.rfind("COMMAND").filter(|&a| a > comm).ok_or_else(|| format!("ps header {h:?} has one COMMAND"))?;
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate().skip(1) {
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let bad = |what: &str| format!("ps line {}: {what}: {:?}", i + 1, String::from_utf8_lossy(line));
        let slice = |a: usize, b: usize| line.get(a.min(line.len())..b.min(line.len())).unwrap_or(&[]);
        let nums = String::from_utf8_lossy(slice(0, user)).into_owned();
        let mut it = nums.split_whitespace();
        let pid = it.next().and_then(|v| v.parse().ok()).ok_or_else(|| bad("no pid"))?;
        let ppid = it.next().and_then(|v| v.parse().ok()).ok_or_else(|| bad("no ppid"))?;
        let text = |a: usize, b: usize| String::from_utf8_lossy(slice(a, b)).trim().to_string();
        let comm_bytes = slice(comm, args);
        let comm_end = comm_bytes.iter().rposition(|b| *b != b' ').map_or(0, |p| p + 1);
        out.push(GuestPsRow {
            pid,
            ppid,
            user: text(user, stat),
            stat: text(stat, comm),
            comm: comm_bytes[..comm_end].to_vec(),
            args: slice(args, usize::MAX).to_vec(),
        });
    }
    Ok(out)
}

/// The command line busybox shows, without its decorations: `[comm]` for a task without one,
/// and the `{comm} ` prefix it adds when comm differs from argv[0]'s base name.
pub fn guest_cmdline(r: &GuestPsRow) -> &[u8] {
    if r.args.starts_with(b"[") && r.args.ends_with(b"]") {
        return b"";
    }
    let mut prefix = b"{".to_vec();
    prefix.extend_from_slice(&r.comm);
    prefix.extend_from_slice(b"} ");
    r.args.strip_prefix(prefix.as_slice()).unwrap_or(&r.args)
}

/// The in-guest `ps` against the truth (see the module documentation for the rules).
pub fn score_guest_ps(rows: &[GuestPsRow], truth: &[Thread]) -> analysis::Score {
    let by_pid: BTreeMap<u32, &Thread> = truth.iter().map(|t| (t.pid, t)).collect();
    // The observer itself: `ps | cat` exists only while it answers, before the truth is taken.
    let observer = |r: &GuestPsRow| r.comm == b"ps" || r.comm == b"cat";
    let rows: Vec<&GuestPsRow> = rows.iter().filter(|r| by_pid.contains_key(&r.pid) || !observer(r)).collect();
    let ours: BTreeSet<u32> = rows.iter().map(|r| r.pid).collect();
    let truth_only_kthreads = truth.iter().filter(|t| t.kthread && !ours.contains(&t.pid)).count();
    // A kernel thread's args are `[comm]`; a row not in the truth is charged unless it is one.
    let ours_only_kthreads = rows.iter().filter(|r| !by_pid.contains_key(&r.pid) && r.args.starts_with(b"[")).count();
    let mut tp = 0;
    let mut exact = 0;
    let mut mismatched = 0;
    for r in &rows {
        let Some(t) = by_pid.get(&r.pid) else { continue };
        tp += 1;
        let uid_ok = r.user.parse::<u32>().ok().or((r.user == "root").then_some(0)) == Some(t.uid);
        let state_ok = r.stat.chars().next().map(String::from).as_deref() == Some(t.state.as_str()) || t.kthread;
        let comm_ok = String::from_utf8_lossy(&r.comm) == String::from_utf8_lossy(&t.comm_bytes());
        let cmd_ok = String::from_utf8_lossy(guest_cmdline(r)) == t.cmdline.as_str();
        let ok = [r.ppid == t.ppid, uid_ok, state_ok, comm_ok, cmd_ok];
        let bad = ok.iter().filter(|v| !**v).count();
        if bad > 0 {
            tracing::debug!(
                pid = r.pid,
                ok = ?ok,
                ps_comm = %String::from_utf8_lossy(&r.comm),
                ps_args = %String::from_utf8_lossy(&r.args),
                truth_comm = %t.comm,
                truth_cmdline = %t.cmdline,
                "in-guest ps differs (ppid, uid, state, comm, cmdline)"
            );
        }
        mismatched += bad;
        if bad == 0 {
            exact += 1;
        }
    }
    let den = |n: usize, minus: usize| n.saturating_sub(minus);
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    analysis::Score {
        tasks_truth: truth.len(),
        tasks_found: rows.len(),
        true_positives: tp,
        precision: ratio(tp, den(rows.len(), ours_only_kthreads)),
        recall: ratio(tp, den(truth.len(), truth_only_kthreads)),
        fields_exact_fraction: ratio(exact, tp),
        exact: mismatched == 0 && tp == rows.len() - ours_only_kthreads,
        mismatched_fields: mismatched,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<Vec<u8>> {
        s.lines().map(|l| l.as_bytes().to_vec()).collect()
    }

    fn t(pid: u32, ppid: u32, comm: &str, cmdline: &str, kthread: bool) -> Thread {
        Thread {
            pid,
            tgid: pid,
            ppid,
            uid: 0,
            state: "S".into(),
            comm: comm.into(),
            comm_hex: comm.bytes().map(|b| format!("{b:02x}")).collect(),
            cmdline: cmdline.into(),
            start_time: 0,
            start_time_ns: 0,
            kthread,
        }
    }

    // The layout busybox 1.35 prints (columns from its header line).
    const OUT: &str = "PID   PPID  USER     STAT COMMAND          COMMAND
    1     0 0        S    init             {init} /bin/busybox sh /init
    2     0 0        SW   kthreadd         [kthreadd]
  131     1 1000     S    my worker        nd-named
  140   131 0        R    ps               ps -T -o pid,ppid,user,stat,comm,args";

    #[test]
    fn parses_columns_from_the_header() {
        let rows = parse_busybox_ps(&lines(OUT)).unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[2].comm, b"my worker");
        assert_eq!(rows[2].user, "1000");
        assert_eq!(rows[1].args, b"[kthreadd]");
        assert_eq!(rows[0].args, b"{init} /bin/busybox sh /init");
        assert!(parse_busybox_ps(&lines("garbage")).is_err());
        assert!(parse_busybox_ps(&[]).is_err());
    }

    #[test]
    fn scores_the_fields_ps_prints() {
        let rows = parse_busybox_ps(&lines(OUT)).unwrap();
        let mut named = t(131, 1, "my worker", "nd-named", false);
        named.uid = 1000;
        let truth = vec![
            t(1, 0, "init", "/bin/busybox sh /init", false),
            t(2, 0, "kthreadd", "", true),
            named,
            t(7, 2, "kworker/0:1", "", true),
        ];
        let s = score_guest_ps(&rows, &truth);
        // ps itself is left out; the kworker that is only in the truth is not charged.
        assert_eq!((s.tasks_found, s.true_positives, s.recall), (3, 3, 1.0));
        // init's "{init} " prefix is busybox decoration, not a difference.
        assert_eq!(s.fields_exact_fraction, 1.0);
        let mut wrong = truth.clone();
        wrong[2].cmdline = "nd-named --other".into();
        assert!((score_guest_ps(&rows, &wrong).fields_exact_fraction - 2.0 / 3.0).abs() < 1e-12);
    }
}
