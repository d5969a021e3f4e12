//! The churn workload of a live shell guest (`nd-churn`, `harness/guest/churn.c`): processes and
//! threads started and exiting continuously, and the truth it logs about each of them.
//!
//! ```text
//!   host                                   guest (shell port)
//!   Churn::start(rate) ── nd-churn RATE /tmp/nd-churn.log & ──▶ forks RATE/s, logs F S T J E
//!   GuestClock::sample ── nd-churn clock ──▶ CLOCK_BOOTTIME ns   (host time before/after)
//!   Churn::stop        ── kill; wait; cat log ──▶ ChurnLog: one Life per task
//! ```
//! Invariant: a [`Life`] bounds when its task existed from both sides: `born` is at or after the
//! kernel's `start_boottime` of the task (the log line is written after `fork`), `ended` is
//! before it exited (it lived at least until then), `gone` is after it stopped existing (reaped
//! or joined). A task listed at guest time `t` is one of these only
//! if `start_boottime <= born` (close to it) and `t <= gone`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::lab::shellport::ShellGuest;
use crate::lab::{Error, Result};

/// Where the guest writes the log (the initramfs root is RAM).
const LOG: &str = "/tmp/nd-churn.log";

/// One churn task: a process (`tid == tgid`) or its one thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Life {
    pub tid: i32,
    pub tgid: i32,
    /// Guest ns (CLOCK_BOOTTIME): when the task was known to exist (fork returned, thread ran).
    pub born: u64,
    /// Guest ns: when it was known to be about to exit (it lived until then at least).
    pub ended: Option<u64>,
    /// Guest ns: when it was known to exist no more (reaped, joined); `None` if never logged.
    pub gone: Option<u64>,
    /// The uid the process took (2000 + pid % 50).
    pub uid: u32,
}

impl Life {
    pub fn is_thread(&self) -> bool {
        self.tid != self.tgid
    }
    /// The name the task gives itself (`nd-c<pid>`, `nd-t<tid>`).
    pub fn comm(&self) -> String {
        if self.is_thread() { format!("nd-t{}", self.tid) } else { format!("nd-c{}", self.tid) }
    }
}

/// Every task the churn started, by tid (a tid reused within a run keeps each life apart).
#[derive(Debug, Clone, Default)]
pub struct ChurnLog {
    pub lives: Vec<Life>,
    /// The churn parent's pid.
    pub parent: i32,
}

impl ChurnLog {
    /// Parse the log's lines (see `churn.c`). A line that does not parse is an error naming it.
    pub fn parse(text: &str, parent: i32) -> std::result::Result<ChurnLog, String> {
        let mut lives: Vec<Life> = Vec::new();
        // The current life of each pid (by index into `lives`).
        let mut current: HashMap<i32, usize> = HashMap::new();
        let mut thread_of: HashMap<i32, usize> = HashMap::new();
        let mut live_thread: HashMap<i32, usize> = HashMap::new();
        for (k, line) in text.lines().enumerate() {
            let bad = || format!("churn log line {}: {line:?}", k + 1);
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            let num = |i: usize| -> std::result::Result<u64, String> { f.get(i).and_then(|s| s.parse().ok()).ok_or_else(bad) };
            let pid = |i: usize| -> std::result::Result<i32, String> { f.get(i).and_then(|s| s.parse().ok()).ok_or_else(bad) };
            match f.first().copied() {
                Some("F") => {
                    // The parent logs a reap (E) before the fork that reuses the pid, so a life of
                    // this pid not yet gone is this one, begun by the child's own S line.
                    let (p, t) = (pid(1)?, num(2)?);
                    match current.get(&p).map(|&i| &mut lives[i]) {
                        Some(l) if l.gone.is_none() => l.born = l.born.min(t),
                        _ => {
                            current.insert(p, lives.len());
                            lives.push(Life { tid: p, tgid: p, born: t, ended: None, gone: None, uid: 2000 + (p % 50) as u32 });
                        }
                    }
                }
                Some("S") => {
                    // The child's own line can precede the parent's F (see F).
                    let (p, uid) = (pid(1)?, num(2)? as u32);
                    let t = num(3)?;
                    match current.get(&p).map(|&i| &mut lives[i]) {
                        Some(l) if l.gone.is_none() => l.born = l.born.min(t),
                        _ => {
                            current.insert(p, lives.len());
                            lives.push(Life { tid: p, tgid: p, born: t, ended: None, gone: None, uid });
                        }
                    }
                }
                Some("T") => {
                    let (tid, tgid, t) = (pid(1)?, pid(2)?, num(3)?);
                    let uid = current.get(&tgid).map(|&i| lives[i].uid).unwrap_or(2000 + (tgid % 50) as u32);
                    thread_of.insert(tgid, lives.len());
                    live_thread.insert(tid, lives.len());
                    lives.push(Life { tid, tgid, born: t, ended: None, gone: None, uid });
                }
                Some("X") => {
                    let (tid, t) = (pid(1)?, num(2)?);
                    let i = match (live_thread.get(&tid), current.get(&tid)) {
                        (Some(&i), _) if lives[i].gone.is_none() => i,
                        (_, Some(&i)) if lives[i].gone.is_none() => i,
                        _ => return Err(bad()),
                    };
                    lives[i].ended = Some(t);
                }
                Some("J") => {
                    let (p, t) = (pid(1)?, num(2)?);
                    let i = *thread_of.get(&p).ok_or_else(bad)?;
                    lives[i].gone = Some(t);
                    live_thread.remove(&lives[i].tid);
                }
                Some("E") => {
                    let (p, t) = (pid(1)?, num(2)?);
                    let i = *current.get(&p).ok_or_else(bad)?;
                    lives[i].gone = Some(t);
                    // A thread not joined (its process exited first) is gone with it.
                    if let Some(&j) = thread_of.get(&p) {
                        lives[j].gone.get_or_insert(t);
                        live_thread.remove(&lives[j].tid);
                    }
                    thread_of.remove(&p);
                }
                _ => return Err(bad()),
            }
        }
        Ok(ChurnLog { lives, parent })
    }

    /// The churn's lives of tid `tid` that could be the task listed with start time `start`
    /// (guest ns): born within `slack` after it.
    pub fn find(&self, tid: i32, start: u64, slack: Duration) -> Option<&Life> {
        let slack = slack.as_nanos() as u64;
        self.lives.iter().filter(|l| l.tid == tid && l.born >= start && l.born - start <= slack).min_by_key(|l| l.born - start)
    }
}

/// The guest's CLOCK_BOOTTIME against the host's wall clock: samples taken through the shell
/// port, each bracketed by the host time before and after.
#[derive(Debug, Clone, Default)]
pub struct GuestClock {
    /// (host ns since the epoch at the middle of the exchange, guest ns, half the round trip).
    samples: Vec<(i128, i128, i128)>,
}

impl GuestClock {
    /// Adds the best (shortest round trip) of `n` exchanges.
    pub fn sample(&mut self, g: &mut ShellGuest, n: usize) -> Result<()> {
        let mut best: Option<(i128, i128, i128)> = None;
        for _ in 0..n.max(1) {
            let before = epoch_ns(SystemTime::now());
            let a = g.run("nd-churn clock", Duration::from_secs(30))?;
            let after = epoch_ns(SystemTime::now());
            let guest: i128 = a
                .lines
                .first()
                .and_then(|l| std::str::from_utf8(l).ok()?.trim().parse().ok())
                .ok_or_else(|| Error::Protocol("nd-churn clock printed no number".into()))?;
            let s = ((before + after) / 2, guest, (after - before) / 2);
            if best.is_none_or(|b| s.2 < b.2) {
                best = Some(s);
            }
        }
        self.samples.extend(best);
        Ok(())
    }

    /// Host time (ns since the epoch) of guest time `guest_ns`: linear through the first and last
    /// samples (the guest clock's rate under emulation need not be exactly the host's).
    pub fn host_ns(&self, guest_ns: u64) -> Option<i128> {
        let (a, b) = (self.samples.first()?, self.samples.last()?);
        let g = guest_ns as i128;
        if a.1 == b.1 {
            return Some(a.0 + (g - a.1));
        }
        Some(a.0 + (g - a.1) * (b.0 - a.0) / (b.1 - a.1))
    }

    /// Largest uncertainty of a sample (half its round trip), in ms.
    pub fn error_ms(&self) -> f64 {
        self.samples.iter().map(|s| s.2).max().unwrap_or(0) as f64 / 1e6
    }
}

pub fn epoch_ns(t: SystemTime) -> i128 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0)
}

/// A running churn workload.
pub struct Churn {
    pid: i32,
}

impl Churn {
    /// Starts `rate` processes per second in the background.
    pub fn start(g: &mut ShellGuest, rate: u32) -> Result<Churn> {
        let a = g.run(&format!("nd-churn {rate} {LOG} </dev/null >/tmp/nd-churn.out 2>&1 & echo $!"), Duration::from_secs(30))?;
        let pid = a
            .lines
            .first()
            .and_then(|l| std::str::from_utf8(l).ok()?.trim().parse().ok())
            .ok_or_else(|| Error::Protocol("starting nd-churn printed no pid".into()))?;
        Ok(Churn { pid })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Stops starting processes, waits until every one has exited, and returns the log.
    pub fn stop(self, g: &mut ShellGuest) -> Result<ChurnLog> {
        let p = self.pid;
        g.run(&format!("kill {p}; while kill -0 {p} 2>/dev/null; do sleep 0.1; done"), Duration::from_secs(120))?;
        let a = g.run(&format!("cat {LOG}"), Duration::from_secs(600))?;
        let text: String = a.lines.iter().map(|l| format!("{}\n", String::from_utf8_lossy(l))).collect();
        ChurnLog::parse(&text, p).map_err(Error::Protocol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lives_from_a_log() {
        let log = "F 10 100\nS 10 2010 105\nT 11 10 110\nS 12 2012 200\nF 12 201\nX 11 250\nJ 10 300\nX 10 305\nE 10 310\nE 12 400\nF 10 500\n";
        let l = ChurnLog::parse(log, 1).unwrap();
        let got: Vec<(i32, i32, u64, Option<u64>, Option<u64>, u32)> = l.lives.iter().map(|x| (x.tid, x.tgid, x.born, x.ended, x.gone, x.uid)).collect();
        assert_eq!(
            got,
            vec![
                (10, 10, 100, Some(305), Some(310), 2010),
                (11, 10, 110, Some(250), Some(300), 2010),
                (12, 12, 200, None, Some(400), 2012),
                (10, 10, 500, None, None, 2010)
            ]
        );
        assert!(ChurnLog::parse("X 7 5\n", 1).is_err());
        assert_eq!(l.find(10, 95, Duration::from_nanos(10)).map(|x| x.born), Some(100));
        assert_eq!(l.find(10, 480, Duration::from_nanos(50)).map(|x| x.born), Some(500));
        assert!(l.find(10, 101, Duration::from_nanos(10)).is_none());
        assert_eq!(l.lives[1].comm(), "nd-t11");
        assert!(ChurnLog::parse("Q 1 2\n", 1).is_err());
        assert!(ChurnLog::parse("E 99 5\n", 1).is_err());
        assert!(ChurnLog::parse("F x 5\n", 1).is_err());
    }

    #[test]
    fn the_clock_maps_through_two_samples() {
        let c = GuestClock { samples: vec![(1_000_000, 100, 5), (2_000_000, 1_000_100, 7)] };
        assert_eq!(c.host_ns(100), Some(1_000_000));
        assert_eq!(c.host_ns(500_100), Some(1_500_000));
    }
}
