//! `faults`: does the NetTLP path stay correct when the network misbehaves? `emulator serve
//! --fault loss=…,dup=…,reorder=…` drops, duplicates and reorders its completions (seeded, so
//! each run is reproducible); the requester must still deliver the right bytes.
//!
//! For every point of a loss × duplication × reordering grid, two checks, each against its own
//! endpoint process:
//! - `readback`: a raw image holding the emulator's known pattern is read back in 4 KiB reads,
//!   pipelined; `bytes_exact` = every byte equals the pattern (checked independently of the
//!   endpoint, from the pattern's definition);
//! - `ps`: a corpus kernel's running memory (its raw dump) is served and listed over the wire
//!   with `harness::introspect::ps`; `tasks_match` = the listing equals the listing of the same
//!   dump read from the file, and `compare` finds it exact against the guest's truth.
//!
//! The requester runs with its defaults (since issue 10: all 256 tags, timed-out tags held for
//! a completion lifetime, only missing bytes asked again, RTO from the measured round trips); its own
//! counters give the retries, time-outs, duplicate and stale (incl. late) completions. Rows of
//! earlier runs name the settings of the time (`retries=10`, `retries=10&reuse=auto`); the
//! figures keep showing them when the results hold them.
//!
//! Each check has a time budget of 30 s — a monitor that needs longer to list processes is not
//! usable — past which every further read fails (`emulator::mem::Deadline`), so a path made too slow by
//! the faults ends as `ok = false` with that error instead of stalling the evaluation. Points
//! are repeated twice with different seeds (once in `--quick`, and once at the heaviest loss,
//! where both checks run into the budget).
//!
//! Invariant: `bytes_exact` and `tasks_match` are computed from what was read, never assumed
//! from the absence of errors; a read that failed is `ok = false` with its error.
//!
//! ```text
//! results/faults.csv  check,requester,loss,dup,reorder,delay_us,seed,repeat,ok,error,bytes_read,
//!                     bytes_exact,tasks_found,tasks_match,wall_ms,dma_reads,requests,retries,
//!                     timeouts,duplicates,stale, + stamp
//! ```

use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use emulator::mem::{Deadline, PhysAddr, PhysMem, ReadOp};
use harness::introspect::layout::MethodKind;
use harness::lab::corpus::{DumpFormat, Entry, Mode};
use serde::{Deserialize, Serialize};

use crate::analysis;
use crate::experiment::{Context, Experiment, RunError};
use crate::served::{PatternImage, Served};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultRow {
    /// `readback` (known pattern) or `ps` (a corpus kernel's process list over the wire).
    pub check: String,
    /// The requester's target options (empty: the defaults).
    pub requester: String,
    pub loss: f64,
    pub dup: f64,
    pub reorder: f64,
    pub delay_us: u64,
    pub seed: u64,
    pub repeat: u32,
    pub ok: bool,
    pub error: String,
    pub bytes_read: u64,
    /// readback: every byte equals the pattern.
    pub bytes_exact: Option<bool>,
    pub tasks_found: usize,
    /// ps: same listing as from the file, and exact against the truth.
    pub tasks_match: Option<bool>,
    pub wall_ms: f64,
    pub dma_reads: u64,
    /// MRd requests sent, retries included.
    pub requests: u64,
    pub retries: u64,
    pub timeouts: u64,
    pub duplicates: u64,
    pub stale: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultPoint {
    pub loss: f64,
    pub dup: f64,
    pub reorder: f64,
    pub delay_us: u64,
}

impl FaultPoint {
    pub fn spec(&self, seed: u64) -> String {
        format!(
            "loss={},dup={},reorder={},delay={}us,seed={seed}",
            self.loss, self.dup, self.reorder, self.delay_us
        )
    }
}

pub struct FaultRun {
    pub point: FaultPoint,
    pub requester: &'static str,
    pub repeat: u32,
    pub entry: Entry,
}

impl fmt::Display for FaultRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} #{}", self.point.spec(self.repeat as u64), self.requester, self.repeat)
    }
}

/// The requester settings rows may name, in the order figures show them: before issue 10,
/// `retries=10` (freed tags reused at once) and `retries=10&reuse=auto` (freed tags rest);
/// since, the defaults (empty), the only one run now ([`RUN`]).
pub const REQUESTERS: [&str; 3] = ["retries=10", "retries=10&reuse=auto", RUN];

/// The requester settings this experiment runs: the defaults.
pub const RUN: &str = "";

/// The fault settings: in `--quick`, none and each fault alone; otherwise every combination of
/// the rates.
pub fn grid(quick: bool) -> Vec<FaultPoint> {
    let p = |loss, dup, reorder| FaultPoint { loss, dup, reorder, delay_us: 0 };
    if quick {
        return vec![p(0.0, 0.0, 0.0), p(0.02, 0.0, 0.0), p(0.0, 0.05, 0.0), p(0.0, 0.0, 0.05)];
    }
    let mut out = Vec::new();
    for &l in &[0.0, 0.01, 0.05, 0.2] {
        for &d in &[0.0, 0.05, 0.2] {
            for &r in &[0.0, 0.2] {
                out.push(p(l, d, r));
            }
        }
    }
    out
}

/// Bytes read back per readback check.
pub fn readback_bytes(quick: bool) -> u64 {
    if quick {
        2 << 20
    } else {
        64 << 20
    }
}

/// The loss rate from which a point runs once: both checks spend their whole budget there.
pub const HEAVY_LOSS: f64 = 0.2;

/// Time allowed to each check of a run.
pub const BUDGET: Duration = Duration::from_secs(30);

pub struct Faults;

/// Loopback addresses of the two endpoints (pattern, corpus dump).
const PATTERN_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 78, 1);
const DUMP_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 78, 2);

impl Experiment for Faults {
    type Row = FaultRow;
    type Run = FaultRun;

    fn name(&self) -> &'static str {
        "faults"
    }
    fn module(&self) -> &'static str {
        "faults"
    }
    fn plan(&self, ctx: &Context) -> Result<Vec<FaultRun>, RunError> {
        // The first selected entry that has a raw running dump (what the endpoint serves).
        let entry = analysis::entries(ctx, usize::MAX)?
            .into_iter()
            .find(|e| e.dump_path(Mode::Running, DumpFormat::Raw).is_some())
            .ok_or_else(|| RunError::Prerequisite(format!("no selected corpus entry has a raw running dump; {}", analysis::BUILD_CORPUS)))?;
        let mut plan = Vec::new();
        for point in grid(ctx.quick) {
            let repeats = if ctx.quick || point.loss >= HEAVY_LOSS { 1 } else { 2 };
            for requester in [RUN] {
                for repeat in 1..=repeats {
                    plan.push(FaultRun { point, requester, repeat, entry: entry.clone() });
                }
            }
        }
        Ok(plan)
    }
    fn run(&self, ctx: &Context, run: &FaultRun) -> Result<Vec<FaultRow>, RunError> {
        let seed = run.repeat as u64;
        let spec = run.point.spec(seed);
        let base = FaultRow {
            requester: run.requester.into(),
            loss: run.point.loss,
            dup: run.point.dup,
            reorder: run.point.reorder,
            delay_us: run.point.delay_us,
            seed,
            repeat: run.repeat,
            ..FaultRow::default()
        };
        let budget = BUDGET;
        let image = PatternImage::create("faults", readback_bytes(ctx.quick))?;
        let rb = {
            let served = Served::start(&image.path, Some("raw"), PATTERN_ADDR, Some(&spec))?;
            readback(&served, run.requester, &image, budget, base.clone())?
        };
        let ps = {
            let (dump, truth, file_rows) = reference_listing(&run.entry)?;
            let served = Served::start(&dump, Some("raw"), DUMP_ADDR, Some(&spec))?;
            ps_over_wire(&served, run.requester, budget, base, &truth, &file_rows)?
        };
        Ok(vec![rb, ps])
    }
    fn headline(&self, rows: &[FaultRow]) -> Vec<String> {
        let mut out = Vec::new();
        for (check, requester) in ["readback", "ps"].into_iter().flat_map(|c| REQUESTERS.map(|r| (c, r))) {
            let of: Vec<&FaultRow> = rows.iter().filter(|r| r.check == check && r.requester == requester).collect();
            if of.is_empty() {
                continue;
            }
            let good = of
                .iter()
                .filter(|r| r.ok && r.bytes_exact.unwrap_or(true) && r.tasks_match.unwrap_or(true))
                .count();
            let worst = of.iter().map(|r| r.loss).fold(0.0, f64::max);
            let retries: u64 = of.iter().map(|r| r.retries).sum();
            let dup_bad = of.iter().filter(|r| r.dup > 0.0 && !(r.ok && r.bytes_exact.unwrap_or(true) && r.tasks_match.unwrap_or(true))).count();
            out.push(format!(
                "{check} [{requester}]: correct on {good}/{} runs (loss up to {worst}); wrong or failed with duplication on {dup_bad}; {retries} retries in all",
                of.len()
            ));
        }
        for s in slowdowns(rows, RUN) {
            out.push(format!(
                "{} [{}] at {}% loss: {:.1}x the fault-free time with loss alone ({:.0} ms vs {:.0} ms), {:.1}x in the worst cell with duplication and reordering",
                s.check,
                RUN,
                s.loss * 100.0,
                s.loss_alone,
                s.loss_alone_ms,
                s.fault_free_ms,
                s.worst
            ));
        }
        out
    }
}

/// How much slower one check got at one loss rate, against the fault-free runs of the same
/// results (medians over repeats).
#[derive(Clone, Debug, PartialEq)]
pub struct Slowdown {
    pub check: &'static str,
    pub loss: f64,
    pub fault_free_ms: f64,
    pub loss_alone_ms: f64,
    /// Median time with this loss and no other fault / fault-free median.
    pub loss_alone: f64,
    /// The largest such ratio over every duplication × reordering cell at this loss.
    pub worst: f64,
}

/// [`Slowdown`] per check and non-zero loss rate for one requester setting; only successful
/// runs count (a failed run has no meaningful time). Pure.
pub fn slowdowns(rows: &[FaultRow], requester: &str) -> Vec<Slowdown> {
    let mut out = Vec::new();
    for check in ["readback", "ps"] {
        let of: Vec<&FaultRow> = rows.iter().filter(|r| r.check == check && r.requester == requester && r.ok).collect();
        let cell = |loss: f64, dup: f64, reorder: f64| {
            let t: Vec<f64> = of.iter().filter(|r| r.loss == loss && r.dup == dup && r.reorder == reorder).map(|r| r.wall_ms).collect();
            (!t.is_empty()).then(|| crate::timing::median(t))
        };
        let Some(base) = cell(0.0, 0.0, 0.0) else { continue };
        let mut losses: Vec<f64> = of.iter().map(|r| r.loss).filter(|&l| l > 0.0).collect();
        losses.sort_by(f64::total_cmp);
        losses.dedup();
        for loss in losses {
            let mut cells: Vec<(f64, f64)> = of.iter().filter(|r| r.loss == loss).map(|r| (r.dup, r.reorder)).collect();
            cells.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
            cells.dedup();
            let worst = cells.iter().filter_map(|&(d, r)| cell(loss, d, r)).fold(0.0, f64::max) / base;
            let alone = cell(loss, 0.0, 0.0).unwrap_or(f64::NAN);
            out.push(Slowdown { check, loss, fault_free_ms: base, loss_alone_ms: alone, loss_alone: alone / base, worst });
        }
    }
    out
}

fn fill_stats(r: &mut FaultRow, s: &harness::dma::DmaStats) {
    r.dma_reads = s.reads;
    r.requests = s.requests;
    r.retries = s.retries;
    r.timeouts = s.timeouts;
    r.duplicates = s.duplicates;
    r.stale = s.stale + s.late;
}

/// Reads the whole pattern image back in 4 KiB pieces, 64 per batch, and checks every byte.
fn readback(served: &Served, options: &str, image: &PatternImage, budget: Duration, mut row: FaultRow) -> Result<FaultRow, RunError> {
    row.check = "readback".into();
    let requester = served.requester(options)?;
    let req = Deadline::new(&requester, budget);
    const PIECE: usize = 4096;
    const BATCH: usize = 64;
    let mut bufs = vec![vec![0u8; PIECE]; BATCH];
    let mut want = vec![0u8; PIECE];
    let mut exact = true;
    let t0 = Instant::now();
    let mut addr = 0u64;
    'outer: while addr < image.len {
        let n = (((image.len - addr) as usize).div_ceil(PIECE)).min(BATCH);
        let mut ops: Vec<ReadOp<'_>> = bufs
            .iter_mut()
            .take(n)
            .enumerate()
            .map(|(i, b)| ReadOp { addr: PhysAddr(addr + (i * PIECE) as u64), buf: &mut b[..] })
            .collect();
        for (i, r) in req.read_batch(&mut ops).into_iter().enumerate() {
            if let Err(e) = r {
                row.error = analysis::one_line(&e.to_string(), 300);
                break 'outer;
            }
            let a = addr + (i * PIECE) as u64;
            emulator::pattern::pattern_bytes(a, &mut want);
            if bufs[i] != want {
                exact = false;
            }
            row.bytes_read += PIECE as u64;
        }
        addr += (n * PIECE) as u64;
    }
    row.wall_ms = t0.elapsed().as_secs_f64() * 1e3;
    row.ok = row.error.is_empty();
    row.bytes_exact = Some(exact && row.ok);
    fill_stats(&mut row, &requester.stats());
    Ok(row)
}

/// The entry's raw running dump (ELF if it has none), its truth and its listing from the file.
fn reference_listing(e: &Entry) -> Result<(std::path::PathBuf, Vec<harness::lab::truth::Thread>, Vec<harness::introspect::ps::Row>), RunError> {
    let path = e.dump_path(Mode::Running, DumpFormat::Raw).ok_or_else(|| {
        RunError::Prerequisite(format!("{}: no raw running dump (the wire experiments serve raw dumps); pick an entry with one via --only-kernel", e.name))
    })?;
    let truth = analysis::truth(e, Mode::Running)?;
    let (mem, _) = analysis::open_dump(e, Mode::Running, DumpFormat::Raw)?;
    let from_file = analysis::run_ps(mem.as_ref(), MethodKind::Auto, &analysis::layout_inputs())
        .result
        .map_err(|err| RunError::Prerequisite(format!("{}: ps on the file: {err}", e.name)))?;
    Ok((path, truth, from_file.rows))
}

fn ps_over_wire(
    served: &Served,
    options: &str,
    budget: Duration,
    mut row: FaultRow,
    truth: &[harness::lab::truth::Thread],
    file_rows: &[harness::introspect::ps::Row],
) -> Result<FaultRow, RunError> {
    row.check = "ps".into();
    let requester = served.requester(options)?;
    let req = Deadline::new(&requester, budget);
    let timed = analysis::run_ps(&req as &dyn PhysMem, MethodKind::Auto, &analysis::layout_inputs());
    row.wall_ms = timed.wall_ms;
    row.bytes_read = timed.reads.bytes;
    fill_stats(&mut row, &requester.stats());
    match timed.result {
        Ok(report) => {
            let (s, _) = analysis::score(&report.rows, truth);
            row.ok = report.walk_error.is_none();
            row.error = report.walk_error.map(|e| e.to_string()).unwrap_or_default();
            row.tasks_found = report.rows.len();
            row.tasks_match = Some(report.rows == file_rows && s.exact);
        }
        Err(e) => row.error = analysis::one_line(&e.to_string(), 300),
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(check: &str, loss: f64, dup: f64, wall_ms: f64, ok: bool) -> FaultRow {
        FaultRow { check: check.into(), requester: RUN.into(), loss, dup, seed: 1, repeat: 1, ok, wall_ms, ..FaultRow::default() }
    }

    #[test]
    fn slowdown_is_against_the_fault_free_median_of_the_same_results() {
        let rows = [
            row("ps", 0.0, 0.0, 100.0, true),
            row("ps", 0.0, 0.0, 300.0, true),
            row("ps", 0.05, 0.0, 300.0, true),
            row("ps", 0.05, 0.2, 500.0, true),
            row("ps", 0.05, 0.05, 9000.0, false),
            row("readback", 0.05, 0.0, 1.0, true),
        ];
        let s = slowdowns(&rows, RUN);
        assert_eq!(s.len(), 1, "readback has no fault-free run: no ratio");
        assert_eq!((s[0].check, s[0].loss), ("ps", 0.05));
        assert_eq!((s[0].fault_free_ms, s[0].loss_alone), (200.0, 1.5));
        assert_eq!(s[0].worst, 2.5, "the failed run does not count");
    }
}
