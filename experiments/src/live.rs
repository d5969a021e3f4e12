//! `live`: watching a machine that keeps running while it is read (issue 13's smear check).
//!
//! Per kernel, one lab guest (`harness::lab::shellport`) boots and is NOT paused: `emulator serve
//! --format live` serves its RAM file while its vCPU runs `nd-churn` (`harness::lab::churn`),
//! which starts `RATE` processes per second, a third with a thread, each living 5 ms to 4 s and
//! logging its life on the guest's own clock. For each interval, `harness::introspect::watch`
//! learns the machine once over the wire and lists it `ROUNDS` more times, one round per
//! interval; then the churn stops, its log comes back over the shell port, and the agent's
//! `/proc` truth taken before and after gives the long-lived tasks.
//!
//! Every listing and the watch's events are checked by `harness::introspect::smear` (its rules:
//! no row that is not a task the guest had, torn rows included; every long-lived task; a
//! `started` and an `exited` event for every churn task that lived two periods), delays on the
//! host's clock through [`GuestClock`] (its uncertainty is `clock_error_ms`).
//!
//! ```text
//! results/live.csv  kernel,release,interval_ms,period_ms,rounds,rate_per_s,churn_tasks,listings_exact,
//!                   walk_errors,false_tasks,stale_tasks,unverified_kthreads,missing_long_lived,
//!                   rereads,relinks,torn,eligible,starts_reported,exits_reported,
//!                   start_delay_p50_ms,start_delay_p95_ms,start_delay_max_ms,exit_delay_p50_ms,
//!                   exit_delay_p95_ms,exit_delay_max_ms,first_bytes,round_bytes,round_reads,
//!                   round_batches,round_wall_ms,round_cpu_ms,clock_error_ms,error + stamp
//! ```

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use emulator::mem::Counting;
use harness::introspect::ps::{PsOptions, Row};
use harness::introspect::smear;
use harness::introspect::watch::{Event, RoundStats, Watcher};
use harness::lab::cache::Cache;
use harness::lab::churn::{Churn, ChurnLog, GuestClock};
use harness::lab::shellport::{ShellGuest, ShellGuestOptions};
use harness::lab::truth::Thread;
use serde::{Deserialize, Serialize};

use crate::analysis;
use crate::experiment::{Context, Experiment, RunError};
use crate::served::Served;

/// Kernels watched unless `--only-kernel` names others: the 6.1 baseline and the newest.
pub const KERNELS: &[&str] = &["deb-amd64", "deb7-amd64"];
/// Processes started per second by the churn.
pub const RATE: u32 = 200;
const ADDR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 81, 1);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveRow {
    pub kernel: String,
    pub release: String,
    pub interval_ms: u64,
    /// The period achieved: the longest start-to-start gap between two rounds after the initial
    /// listing (at least the
    /// interval; longer when a round took longer than the interval).
    pub period_ms: f64,
    /// Rounds after the initial listing.
    pub rounds: u64,
    /// Processes the churn started per second, as achieved.
    pub rate_per_s: f64,
    /// Churn processes and threads born while the watch ran.
    pub churn_tasks: usize,
    /// Listings (initial one included) with no false or stale task, every long-lived task, and
    /// a walk that reached the end.
    pub listings_exact: u64,
    pub walk_errors: u64,
    /// Rows that are no task the guest had.
    pub false_tasks: u64,
    /// Churn rows listed although the task was gone (reaped) before the listing began.
    pub stale_tasks: u64,
    /// Kernel threads (children of kthreadd) the agent never saw: short-lived workers.
    pub unverified_kthreads: u64,
    pub missing_long_lived: u64,
    pub rereads: u64,
    pub relinks: u64,
    pub torn: u64,
    /// Churn tasks that lived at least two periods, wholly inside the watched time.
    pub eligible: usize,
    pub starts_reported: usize,
    pub exits_reported: usize,
    pub start_delay_p50_ms: f64,
    pub start_delay_p95_ms: f64,
    pub start_delay_max_ms: f64,
    pub exit_delay_p50_ms: f64,
    pub exit_delay_p95_ms: f64,
    pub exit_delay_max_ms: f64,
    /// DMA bytes of the initial listing (scan, symbols, layout, walk).
    pub first_bytes: u64,
    /// Means over the rounds after the first.
    pub round_bytes: f64,
    pub round_reads: f64,
    pub round_batches: f64,
    pub round_wall_ms: f64,
    pub round_cpu_ms: f64,
    pub clock_error_ms: f64,
    pub error: String,
}

/// One guest boot: a kernel and the intervals watched on it.
pub struct LiveRun {
    pub kernel: String,
    pub intervals: Vec<Duration>,
    pub rounds: u64,
}

impl fmt::Display for LiveRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let iv: Vec<String> = self.intervals.iter().map(|d| format!("{}ms", d.as_millis())).collect();
        write!(f, "{} every {} x {} rounds", self.kernel, iv.join("/"), self.rounds)
    }
}

pub struct Live;

/// One round as the experiment saw it: host times around it, its rows, events and cost.
struct Seen {
    began: SystemTime,
    ended: SystemTime,
    rows: Vec<Row>,
    events: Vec<Event>,
    stats: RoundStats,
}

impl Experiment for Live {
    type Row = LiveRow;
    type Run = LiveRun;

    fn name(&self) -> &'static str {
        "live"
    }
    fn module(&self) -> &'static str {
        "live"
    }
    fn plan(&self, ctx: &Context) -> Result<Vec<LiveRun>, RunError> {
        let kernels: Vec<String> =
            if ctx.only_kernels.is_empty() { KERNELS.iter().map(|s| s.to_string()).collect() } else { ctx.only_kernels.clone() };
        let (intervals, rounds) = if ctx.quick {
            (vec![Duration::from_millis(100)], 30)
        } else {
            (vec![Duration::from_millis(100), Duration::from_secs(1)], 100)
        };
        Ok(kernels.into_iter().map(|kernel| LiveRun { kernel, intervals: intervals.clone(), rounds }).collect())
    }
    fn run(&self, _ctx: &Context, run: &LiveRun) -> Result<Vec<LiveRow>, RunError> {
        let lab = |what: &str, e: harness::lab::Error| RunError::Prerequisite(format!("{} {what}: {e}", run.kernel));
        let cache = Cache::open_default();
        let mut g = ShellGuest::boot(&cache, &run.kernel, &ShellGuestOptions::default()).map_err(|e| lab("boot", e))?;
        let served = Served::start(g.ram_path(), Some("live"), ADDR, None)?;
        let mut rows = Vec::new();
        for &interval in &run.intervals {
            rows.push(watch_once(&mut g, &served, run, interval)?);
        }
        drop(served);
        g.shutdown().map_err(|e| lab("shutdown", e))?;
        Ok(rows)
    }
    fn headline(&self, rows: &[LiveRow]) -> Vec<String> {
        rows.iter()
            .map(|r| {
                format!(
                    "{} every {} ms (achieved {:.0} ms): {}/{} listings exact ({} false, {} missing, {} torn dropped, {} re-reads), starts {}/{} exits {}/{} reported, start delay p50 {:.0} ms max {:.0} ms, {:.0} kB and {:.1} ms CPU per round",
                    r.kernel,
                    r.interval_ms,
                    r.period_ms,
                    r.listings_exact,
                    r.rounds + 1,
                    r.false_tasks + r.stale_tasks,
                    r.missing_long_lived,
                    r.torn,
                    r.rereads,
                    r.starts_reported,
                    r.eligible,
                    r.exits_reported,
                    r.eligible,
                    r.start_delay_p50_ms,
                    r.start_delay_max_ms,
                    r.round_bytes / 1e3,
                    r.round_cpu_ms
                )
            })
            .collect()
    }
}

fn watch_once(g: &mut ShellGuest, served: &Served, run: &LiveRun, interval: Duration) -> Result<LiveRow, RunError> {
    let lab = |what: &str, e: harness::lab::Error| RunError::Prerequisite(format!("{} {what}: {e}", run.kernel));
    let before = g.truth().map_err(|e| lab("truth", e))?;
    let mut clock = GuestClock::default();
    clock.sample(g, 5).map_err(|e| lab("clock", e))?;
    let churn = Churn::start(g, RATE).map_err(|e| lab("nd-churn", e))?;
    std::thread::sleep(Duration::from_secs(1));

    let req = served.requester("")?;
    let counted = Counting::new(&req);
    let opts = PsOptions { inputs: analysis::layout_inputs(), ..Default::default() };
    let mut seen = Vec::new();
    let began = SystemTime::now();
    let started = Watcher::start(&counted, &opts);
    let (mut w, first) = match started {
        Ok(x) => x,
        Err(e) => {
            let log = churn.stop(g).unwrap_or_default();
            let mut row = score(run, g.release.clone(), interval, &[], &log, &clock, &before, &before);
            row.error = analysis::one_line(&format!("learning the live machine: {e}"), 300);
            return Ok(row);
        }
    };
    seen.push(Seen { began, ended: SystemTime::now(), rows: first.rows, events: first.events, stats: first.stats });
    let mut next = Instant::now() + interval;
    for _ in 0..run.rounds {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next = (next + interval).max(Instant::now());
        let began = SystemTime::now();
        let r = w.round();
        seen.push(Seen { began, ended: SystemTime::now(), rows: r.rows, events: r.events, stats: r.stats });
    }
    let log = churn.stop(g).map_err(|e| lab("nd-churn log", e))?;
    clock.sample(g, 5).map_err(|e| lab("clock", e))?;
    let after = g.truth().map_err(|e| lab("truth", e))?;
    Ok(score(run, g.release.clone(), interval, &seen, &log, &clock, &before, &after))
}

/// Percentile `p` (0..=100) of `v` (nearest rank); 0 for none.
fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let k = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[k.clamp(1, v.len()) - 1]
}

#[allow(clippy::too_many_arguments)]
fn score(run: &LiveRun, release: String, interval: Duration, seen: &[Seen], log: &ChurnLog, clock: &GuestClock, before: &[Thread], after: &[Thread]) -> LiveRow {
    let truth = smear::Truth { log, clock, before, after };
    let mut r = LiveRow {
        kernel: run.kernel.clone(),
        release,
        interval_ms: interval.as_millis() as u64,
        period_ms: 0.0,
        rounds: seen.len().saturating_sub(1) as u64,
        rate_per_s: 0.0,
        churn_tasks: 0,
        listings_exact: 0,
        walk_errors: 0,
        false_tasks: 0,
        stale_tasks: 0,
        unverified_kthreads: 0,
        missing_long_lived: 0,
        rereads: 0,
        relinks: 0,
        torn: 0,
        eligible: 0,
        starts_reported: 0,
        exits_reported: 0,
        start_delay_p50_ms: 0.0,
        start_delay_p95_ms: 0.0,
        start_delay_max_ms: 0.0,
        exit_delay_p50_ms: 0.0,
        exit_delay_p95_ms: 0.0,
        exit_delay_max_ms: 0.0,
        first_bytes: seen.first().map_or(0, |s| s.stats.dma_bytes),
        round_bytes: 0.0,
        round_reads: 0.0,
        round_batches: 0.0,
        round_wall_ms: 0.0,
        round_cpu_ms: 0.0,
        clock_error_ms: clock.error_ms(),
        error: String::new(),
    };
    let mut problems: Vec<String> = Vec::new();
    for s in seen {
        r.rereads += s.stats.consistency.rereads;
        r.relinks += s.stats.consistency.relinks;
        r.torn += s.stats.consistency.torn;
        if let Some(e) = &s.stats.walk_error {
            r.walk_errors += 1;
            problems.push(format!("round {}: {e}", s.stats.round));
        }
        let v = truth.listing(&s.rows, s.began, s.stats.walk_error.is_none());
        r.false_tasks += v.false_tasks;
        r.stale_tasks += v.stale_tasks;
        r.unverified_kthreads += v.unverified_kthreads;
        r.missing_long_lived += v.missing_long_lived;
        if v.exact() && s.stats.walk_error.is_none() {
            r.listings_exact += 1;
        }
        problems.extend(v.problems.into_iter().map(|p| format!("round {}: {p}", s.stats.round)));
    }
    let (Some(first), Some(last)) = (seen.first(), seen.last()) else { return r };
    let (tasks, processes) = truth.born_between(first.ended, last.began);
    r.churn_tasks = tasks;
    let secs = last.began.duration_since(first.ended).map_or(0.0, |d| d.as_secs_f64());
    if secs > 0.0 {
        r.rate_per_s = processes as f64 / secs;
    }
    let noticed: Vec<smear::Noticed<'_>> = seen.iter().flat_map(|s| s.events.iter().map(move |e| (s.ended, e))).collect();
    let gap = seen[1..].windows(2).filter_map(|w| w[1].began.duration_since(w[0].began).ok()).max().unwrap_or_default();
    let period = interval.max(gap);
    r.period_ms = period.as_secs_f64() * 1e3;
    let mut ev = truth.events(&noticed, first.ended, last.began, period);
    r.eligible = ev.eligible;
    r.starts_reported = ev.starts;
    r.exits_reported = ev.exits;
    r.start_delay_p50_ms = pct(&mut ev.start_delays_ms, 50.0);
    r.start_delay_p95_ms = pct(&mut ev.start_delays_ms, 95.0);
    r.start_delay_max_ms = pct(&mut ev.start_delays_ms, 100.0);
    r.exit_delay_p50_ms = pct(&mut ev.exit_delays_ms, 50.0);
    r.exit_delay_p95_ms = pct(&mut ev.exit_delays_ms, 95.0);
    r.exit_delay_max_ms = pct(&mut ev.exit_delays_ms, 100.0);
    problems.extend(ev.problems);
    let later: Vec<&RoundStats> = seen.iter().skip(1).map(|s| &s.stats).collect();
    if !later.is_empty() {
        let n = later.len() as f64;
        r.round_bytes = later.iter().map(|s| s.dma_bytes as f64).sum::<f64>() / n;
        r.round_reads = later.iter().map(|s| s.dma_reads as f64).sum::<f64>() / n;
        r.round_batches = later.iter().map(|s| s.dma_batches as f64).sum::<f64>() / n;
        r.round_wall_ms = later.iter().map(|s| s.wall_ms).sum::<f64>() / n;
        r.round_cpu_ms = later.iter().map(|s| s.cpu_ms).sum::<f64>() / n;
    }
    if !problems.is_empty() {
        for p in problems.iter().take(20) {
            tracing::warn!(kernel = %run.kernel, "{p}");
        }
        r.error = analysis::one_line(&format!("{} problems; first: {}", problems.len(), problems[0]), 300);
    }
    r
}
