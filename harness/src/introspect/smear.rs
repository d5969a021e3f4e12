//! Checking listings of a machine that kept running while it was read (the "smear" check) and
//! the events `watch` drew from them, against the guest's own truth: the churn workload's log of
//! every task it started ([`ChurnLog`], guest clock), the agent's `/proc` before and after
//! (long-lived tasks), and the guest clock mapped to the host's ([`GuestClock`]).
//!
//! Rules for one listing (taken between host times `began` and its end):
//! - every row is a long-lived task (pid, tgid, start; and comm unless a kernel thread, whose
//!   worker description changes), the churn's parent, a churn task, or a kernel thread child of
//!   kthreadd (`unverified` if the agent never saw it: kernel workers come and go);
//! - a churn row has the churn's tgid, a name the churn gives it (before or after its rename),
//!   the uid the churn gives it (or root, a process before its `setuid`), the churn parent as
//!   parent, a start at most [`SLACK`] before its logged birth, and was not reaped before the
//!   listing began (allowing for the clock's uncertainty);
//! - every long-lived task is in the listing, unless its walk was cut short.
//!
//! Rules for the events: every churn task that lived at least two periods (from its logged
//! birth to its logged last moment) within the watched time has a `started` and an `exited`
//! event for its (pid, tgid) with its start time; the delay is from its birth (its last logged
//! moment) to the host time the event was noticed.
//!
//! Invariant: every row of a listing is counted in exactly one class (long-lived, parent, churn
//! ok, false, stale, kernel thread); every problem is also named in `problems`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use super::ps::Row;
use super::watch::{Event, EventKind};
use crate::lab::churn::{epoch_ns, ChurnLog, GuestClock, Life};
use crate::lab::truth::Thread;

/// A listed churn task's start time may precede its logged birth by at most this much.
pub const SLACK: Duration = Duration::from_millis(500);

/// The guest's truth for one watched period.
pub struct Truth<'a> {
    pub log: &'a ChurnLog,
    pub clock: &'a GuestClock,
    /// The agent's `/proc` before the churn started and after it stopped.
    pub before: &'a [Thread],
    pub after: &'a [Thread],
}

/// The verdict on one listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub false_tasks: u64,
    pub stale_tasks: u64,
    pub unverified_kthreads: u64,
    pub missing_long_lived: u64,
    pub problems: Vec<String>,
}

impl Listing {
    /// No false or stale row and no long-lived task missing.
    pub fn exact(&self) -> bool {
        self.false_tasks == 0 && self.stale_tasks == 0 && self.missing_long_lived == 0
    }
}

/// The verdict on the events of a watch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Events {
    /// Churn tasks that lived two periods within the watched time.
    pub eligible: usize,
    pub starts: usize,
    pub exits: usize,
    /// Per reported start (exit): ms from the birth (reaping) to when it was noticed.
    pub start_delays_ms: Vec<f64>,
    pub exit_delays_ms: Vec<f64>,
    pub problems: Vec<String>,
}

/// An event and the host time the round that reported it ended.
pub type Noticed<'e> = (SystemTime, &'e Event);

impl Truth<'_> {
    fn host(&self, guest_ns: u64) -> i128 {
        self.clock.host_ns(guest_ns).unwrap_or(0)
    }

    /// The long-lived tasks: in the agent's truth before and after, the same task.
    fn long_lived(&self) -> Vec<&Thread> {
        let after: HashMap<u32, &Thread> = self.after.iter().map(|t| (t.pid, t)).collect();
        self.before.iter().filter(|t| after.get(&t.pid).is_some_and(|a| same_task(a, t))).collect()
    }

    /// Checks one listing, begun at host time `began`; `complete`: its walk reached the end.
    pub fn listing(&self, rows: &[Row], began: SystemTime, complete: bool) -> Listing {
        let mut v = Listing::default();
        let long = self.long_lived();
        let kthreads: HashSet<u32> = self.before.iter().chain(self.after).filter(|t| t.kthread).map(|t| t.pid).collect();
        let margin = (self.clock.error_ms() * 1e6) as i128 + 5_000_000;
        let began = epoch_ns(began);
        let by_pid: HashMap<i32, &Row> = rows.iter().map(|r| (r.pid, r)).collect();
        if complete {
            for t in &long {
                if !by_pid.get(&(t.pid as i32)).is_some_and(|r| is_row_of(r, t)) {
                    v.missing_long_lived += 1;
                    v.problems.push(format!("long-lived {} {} missing", t.pid, t.comm));
                }
            }
        }
        let parent = self.log.parent;
        for row in rows {
            if long.iter().any(|t| is_row_of(row, t)) || (row.pid == parent && row.tgid == parent && row.comm == "nd-churn") {
                continue;
            }
            if let Some(l) = self.log.find(row.pid, row.start_time, SLACK) {
                if !churn_row_ok(row, l, parent) {
                    v.false_tasks += 1;
                    v.problems.push(format!("{row:?} does not match churn task {l:?}"));
                } else if l.gone.is_some_and(|gone| self.host(gone) + margin < began) {
                    v.stale_tasks += 1;
                    v.problems.push(format!("{} {} listed after it was reaped", row.pid, row.comm));
                }
                continue;
            }
            if row.kthread && (row.ppid == 2 || row.pid == 2) {
                if !kthreads.contains(&(row.pid as u32)) {
                    v.unverified_kthreads += 1;
                }
                continue;
            }
            v.false_tasks += 1;
            v.problems.push(format!("unexplained {row:?}"));
        }
        v
    }

    /// Checks the events of a watch whose rounds after the first ran from host time `from` (the
    /// end of the initial listing) to `to` (the start of the last round), one round starting at
    /// most every `period` after the one before (the interval, or longer if rounds took longer).
    /// A task living `2 * period` is read by at least one complete round: two reads of the same
    /// task are at most a start-to-start gap plus one round apart.
    pub fn events(&self, events: &[Noticed<'_>], from: SystemTime, to: SystemTime, period: Duration) -> Events {
        let mut v = Events::default();
        let (from, to) = (epoch_ns(from), epoch_ns(to));
        let two = 2 * period.as_nanos() as i128;
        let mut starts: HashMap<(i32, i32), Vec<(u64, i128)>> = HashMap::new();
        let mut exits: HashMap<(i32, i32), Vec<(u64, i128)>> = HashMap::new();
        for (at, e) in events {
            let into = match e.event {
                EventKind::Started => &mut starts,
                EventKind::Exited => &mut exits,
                _ => continue,
            };
            into.entry((e.pid, e.tgid)).or_default().push((e.start_time, epoch_ns(*at)));
        }
        let slack = SLACK.as_nanos() as u64;
        let find = |m: &HashMap<(i32, i32), Vec<(u64, i128)>>, l: &Life| -> Option<i128> {
            m.get(&(l.tid, l.tgid))?.iter().find(|(st, _)| *st <= l.born && l.born - st <= slack).map(|&(_, at)| at)
        };
        for l in &self.log.lives {
            let (Some(ended), Some(gone)) = (l.ended, l.gone) else { continue };
            let (b, e, g) = (self.host(l.born), self.host(ended), self.host(gone));
            if b < from || g > to || e - b < two {
                continue;
            }
            v.eligible += 1;
            match find(&starts, l) {
                Some(at) => {
                    v.starts += 1;
                    v.start_delays_ms.push((at - b) as f64 / 1e6);
                }
                None => v.problems.push(format!("no started event for {l:?}")),
            }
            match find(&exits, l) {
                Some(at) => {
                    v.exits += 1;
                    v.exit_delays_ms.push((at - e) as f64 / 1e6);
                }
                None => v.problems.push(format!("no exited event for {l:?}")),
            }
        }
        v
    }

    /// Churn tasks born between host times `from` and `to`, and of those the processes.
    pub fn born_between(&self, from: SystemTime, to: SystemTime) -> (usize, usize) {
        let (from, to) = (epoch_ns(from), epoch_ns(to));
        let inside: Vec<&Life> = self.log.lives.iter().filter(|l| (from..=to).contains(&self.host(l.born))).collect();
        (inside.len(), inside.iter().filter(|l| !l.is_thread()).count())
    }
}

/// The agent saw the same task before and after (kernel threads: not comparing the name).
fn same_task(a: &Thread, b: &Thread) -> bool {
    a.tgid == b.tgid && a.start_time == b.start_time && (a.kthread || a.comm == b.comm)
}

fn is_row_of(row: &Row, t: &Thread) -> bool {
    row.pid == t.pid as i32 && row.tgid == t.tgid as i32 && (t.kthread || row.comm == t.comm)
}

/// A row that can be churn task `l` at some moment of its life.
fn churn_row_ok(row: &Row, l: &Life, parent: i32) -> bool {
    let names: [String; 2] = if l.is_thread() { [l.comm(), format!("nd-c{}", l.tgid)] } else { [l.comm(), "nd-churn".into()] };
    let uid_ok = row.uid == l.uid || (!l.is_thread() && row.uid == 0);
    row.tgid == l.tgid && names.contains(&row.comm) && uid_ok && row.ppid == parent
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pid: i32, tgid: i32, ppid: i32, uid: u32, comm: &str, start: u64) -> Row {
        Row {
            pid,
            tgid,
            ppid,
            uid,
            state: "S".into(),
            comm: comm.into(),
            cmdline: String::new(),
            threads: None,
            start_time: start,
            kthread: false,
        }
    }

    #[test]
    fn rows_of_churn_tasks_are_judged_by_their_own_bytes() {
        let log = ChurnLog::parse("F 10 1000\nS 10 2010 1005\nT 11 10 1100\n", 5).unwrap();
        let clock = GuestClock::default();
        let t = Truth { log: &log, clock: &clock, before: &[], after: &[] };
        let ok = [row(5, 5, 1, 0, "nd-churn", 1), row(10, 10, 5, 2010, "nd-c10", 990), row(11, 10, 5, 2010, "nd-t11", 1090)];
        assert_eq!(t.listing(&ok, SystemTime::UNIX_EPOCH, true), Listing::default());
        // A torn row: pid 10's start, another task's name; a pid the churn never had.
        let bad = [row(10, 10, 5, 2010, "nd-c77", 990), row(12, 12, 5, 0, "x", 1)];
        let v = t.listing(&bad, SystemTime::UNIX_EPOCH, true);
        assert_eq!((v.false_tasks, v.problems.len()), (2, 2));
    }
}
