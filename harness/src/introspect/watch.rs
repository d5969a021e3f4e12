//! `watch`: one machine listed again and again, and what changed between two listings.
//!
//! ```text
//!   round 0   prepare (scan, symbols, layout)  ─▶ walk ─▶ listing 0            (no events)
//!   round k                                      walk ─▶ listing k ─ diff ─▶ events
//!                                                 ▲ command lines of processes already seen
//!                                                 └ come from the CmdlineCache, not the wire
//! ```
//! A task is known by its pid and start time (`start_boottime`), so a pid reused by a new task
//! is an exit and a start, not a change. Events: `started`, `exited`, and for a task seen in both
//! listings a change of `comm` (exec, `prctl`) or of real uid (`setuid`).
//!
//! Invariant: the events of a round are exactly the difference between its listing and the
//! last complete one, except that a round whose walk was cut short reports no exits (absence
//! from a partial listing proves nothing) and keeps the tasks it did not reach for the next
//! round. Memory that changes under a walk is handled by the walk itself ([`Consistency`]).

use std::collections::HashMap;
use std::time::Instant;

use emulator::mem::{Counting, PhysMem};

use super::addr::KVirt;
use super::ps::{prepare, Clock, PsError, PsOptions, Row};
use super::pidindex::PidIndex;
use super::walk::{walk_again, CmdlineCache, Consistency, IndexUse};

/// What happened to one task between two rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Started,
    Exited,
    Comm,
    Uid,
}

/// One event: the task as the round that noticed it saw it (as last seen, for `exited`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// The round that noticed it (1 = the first after the initial listing).
    pub round: u64,
    pub event: EventKind,
    pub pid: i32,
    pub tgid: i32,
    pub ppid: i32,
    pub uid: u32,
    pub comm: String,
    pub cmdline: String,
    /// The task's start, ns since the guest booted (`start_boottime`).
    pub start_time: u64,
    pub kthread: bool,
    /// For `comm` and `uid`: the value before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub was: Option<String>,
}

impl Event {
    fn of(round: u64, event: EventKind, r: &Row, was: Option<String>) -> Event {
        Event {
            round,
            event,
            pid: r.pid,
            tgid: r.tgid,
            ppid: r.ppid,
            uid: r.uid,
            comm: r.comm.clone(),
            cmdline: r.cmdline.clone(),
            start_time: r.start_time,
            kthread: r.kthread,
            was,
        }
    }
}

/// The cost and outcome of one round (`harness watch --stats` prints one JSON line per round).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoundStats {
    pub round: u64,
    pub wall_ms: f64,
    /// CPU time of this process (all threads) during the round.
    pub cpu_ms: f64,
    pub dma_reads: u64,
    pub dma_bytes: u64,
    /// Dependent batches of reads, round trips over the wire.
    #[serde(rename = "dma_round_trips", alias = "dma_batches")]
    pub dma_batches: u64,
    pub tasks: usize,
    pub events: usize,
    pub consistency: Consistency,
    /// How much the walk's index of tasks saved it.
    #[serde(default)]
    pub index: IndexUse,
    pub walk_error: Option<String>,
}

/// One round's listing, events and cost.
#[derive(Debug, Clone)]
pub struct Round {
    pub rows: Vec<Row>,
    pub events: Vec<Event>,
    pub stats: RoundStats,
}

/// A machine being watched: its kernel and layout, learned once, and the last listing.
pub struct Watcher<'m, M: PhysMem> {
    counted: &'m Counting<M>,
    kernel: super::kernel::Kernel<'m>,
    layout: super::layout::Layout,
    init_task: KVirt,
    opts: PsOptions,
    cmdlines: CmdlineCache,
    /// The pid allocator as the walk's index, learned once.
    index: PidIndex,
    known: HashMap<(i32, u64), Row>,
    round: u64,
}

impl<'m, M: PhysMem> Watcher<'m, M> {
    /// Learns the machine (as `ps` does) and takes the initial listing (round 0, no events).
    pub fn start(counted: &'m Counting<M>, opts: &PsOptions) -> Result<(Self, Round), PsError> {
        let t0 = Instant::now();
        let cpu0 = cpu_ms();
        let start = counted.snapshot();
        let mut clock = Clock::new(counted);
        let p = prepare(counted, opts, None, &mut clock)?;
        let init_task = p.kernel.info.init_task.ok_or(PsError::NoInitTask)?;
        let mut w = Watcher {
            counted,
            kernel: p.kernel,
            layout: p.layout,
            init_task,
            opts: opts.clone(),
            cmdlines: CmdlineCache::default(),
            index: p.index,
            known: HashMap::new(),
            round: 0,
        };
        let mut first = w.list(t0, cpu0, start);
        first.events.clear();
        first.stats.events = 0;
        Ok((w, first))
    }

    /// Lists again and reports what changed since the last listing.
    pub fn round(&mut self) -> Round {
        self.round += 1;
        self.list(Instant::now(), cpu_ms(), self.counted.snapshot())
    }

    fn list(&mut self, t0: Instant, cpu0: f64, start: emulator::mem::Counts) -> Round {
        let out = walk_again(&self.kernel.space, &self.layout, self.init_task, self.opts.walk, &mut self.cmdlines, Some(&mut self.index));
        let mut rows: Vec<Row> = out.threads.iter().map(Row::from_thread).collect();
        rows.sort_by_key(|r| (r.pid, r.tgid));
        let complete = out.error.is_none();
        let events = diff(&mut self.known, self.round, &rows, complete);
        let d = self.counted.snapshot().since(start);
        let stats = RoundStats {
            round: self.round,
            wall_ms: t0.elapsed().as_secs_f64() * 1e3,
            cpu_ms: cpu_ms() - cpu0,
            dma_reads: d.reads,
            dma_bytes: d.bytes,
            dma_batches: d.batches,
            tasks: rows.len(),
            events: events.len(),
            consistency: out.consistency,
            index: out.index,
            walk_error: out.error.map(|e| e.to_string()),
        };
        Round { rows, events, stats }
    }
}

/// CPU time this process has used, in ms.
pub fn cpu_ms() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a live rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Events from the last listing (`known`) to `rows`, noticed in `round`; `known` becomes the
/// new last listing (merged with the tasks not reached when the walk was cut short).
fn diff(known: &mut HashMap<(i32, u64), Row>, round: u64, rows: &[Row], complete: bool) -> Vec<Event> {
    let mut events = Vec::new();
    let mut now: HashMap<(i32, u64), Row> = HashMap::with_capacity(rows.len());
    for r in rows {
        let key = (r.pid, r.start_time);
        match known.get(&key) {
            None => events.push(Event::of(round, EventKind::Started, r, None)),
            Some(old) => {
                if old.comm != r.comm {
                    events.push(Event::of(round, EventKind::Comm, r, Some(old.comm.clone())));
                }
                if old.uid != r.uid {
                    events.push(Event::of(round, EventKind::Uid, r, Some(old.uid.to_string())));
                }
            }
        }
        now.insert(key, r.clone());
    }
    let mut gone: Vec<Row> = known.iter().filter(|(k, _)| !now.contains_key(k)).map(|(_, r)| r.clone()).collect();
    gone.sort_by_key(|r| (r.pid, r.start_time));
    if complete {
        events.extend(gone.iter().map(|r| Event::of(round, EventKind::Exited, r, None)));
    } else {
        for r in gone {
            now.insert((r.pid, r.start_time), r);
        }
    }
    *known = now;
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pid: i32, start: u64, comm: &str, uid: u32) -> Row {
        Row {
            pid,
            tgid: pid,
            ppid: 1,
            uid,
            state: "S".into(),
            comm: comm.into(),
            cmdline: String::new(),
            threads: Some(1),
            start_time: start,
            kthread: false,
        }
    }

    /// The diff alone, on listings written here (the walk is tested in `walk_tests`, the whole
    /// watch on corpus dumps and live guests in `tests/watch.rs`).
    fn changes(known: &[Row], now: &[Row], complete: bool) -> (Vec<(EventKind, i32)>, usize) {
        let mut m: HashMap<(i32, u64), Row> = known.iter().map(|r| ((r.pid, r.start_time), r.clone())).collect();
        let ev = super::diff(&mut m, 1, now, complete);
        (ev.iter().map(|e| (e.event, e.pid)).collect(), m.len())
    }

    #[test]
    fn starts_exits_and_changes() {
        let before = [row(1, 10, "init", 0), row(5, 50, "sh", 0), row(7, 70, "job", 0)];
        let after = [row(1, 10, "init", 0), row(5, 50, "ls", 1000), row(7, 99, "job", 0), row(8, 80, "new", 0)];
        let (ev, n) = changes(&before, &after, true);
        assert_eq!(
            ev,
            vec![
                (EventKind::Comm, 5),
                (EventKind::Uid, 5),
                (EventKind::Started, 7),
                (EventKind::Started, 8),
                (EventKind::Exited, 7)
            ]
        );
        assert_eq!(n, 4);
    }

    #[test]
    fn a_partial_listing_reports_no_exit_and_keeps_what_it_missed() {
        let before = [row(1, 10, "init", 0), row(5, 50, "sh", 0)];
        let (ev, n) = changes(&before, &[row(1, 10, "init", 0), row(9, 90, "new", 0)], false);
        assert_eq!(ev, vec![(EventKind::Started, 9)]);
        assert_eq!(n, 3);
    }
}
