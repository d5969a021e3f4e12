//! Inferring `task_struct` scalar fields from the bytes of many tasks at once.
//!
//! Each function enumerates every aligned offset of the task window and keeps those where the
//! values on *all* sampled tasks obey what the kernel guarantees about that field (see the
//! rules on each function). A function returns the single surviving offset, or an error that
//! lists the survivors: a tie is never broken silently, only by a documented rule (declaration
//! order of fields that hold equal values on every sampled task).
//!
//! Invariant: pure functions of the sampled bytes; no reads, no panics on short windows (an
//! offset whose bytes are missing on any task is not a candidate).

use std::collections::HashSet;

use super::probe::{failed, Obj};
use super::super::LayoutError;
use crate::introspect::state::{PF_KTHREAD, PF_WQ_WORKER};
use crate::introspect::state::PID_MAX_LIMIT;

/// `PF_IDLE`: set on idle tasks (`init_idle`).
pub const PF_IDLE: u32 = 0x2;
/// `PF_EXITING`: set by `do_exit`; an exiting user task has dropped its `mm`.
pub const PF_EXITING: u32 = 0x4;
/// `TASK_DEAD` in `__state` (`do_task_dead`).
pub const TASK_DEAD: u32 = 0x80;
/// `TASK_IDLE` = `TASK_UNINTERRUPTIBLE | TASK_NOLOAD`.
pub const TASK_IDLE: u32 = 0x402;
/// Every `__state` bit Linux 4.14–6.x defines (0x1..0x8000 without 0x4000).
pub const STATE_BITS: u32 = 0xbfff;

/// The tasks a field is inferred from.
pub struct Sample<'a> {
    /// `init_task` (pid 0, the boot CPU's idle task).
    pub init: &'a Obj,
    /// Group leaders from `init_task.tasks`, in list (= creation) order: `[0]` is pid 1
    /// (`init`), `[1]` pid 2 (`kthreadd`).
    pub leaders: &'a [Obj],
    /// Non-leader threads, each with the index of its leader in `leaders`.
    pub threads: &'a [(usize, Obj)],
    /// The task window length (bytes read of every task).
    pub win: u64,
    pub comm: u64,
}

impl<'a> Sample<'a> {
    /// `init_task`, the leaders, then the threads.
    pub fn all(&self) -> impl Iterator<Item = &'a Obj> + 'a {
        let (init, leaders, threads) = (self.init, self.leaders, self.threads);
        std::iter::once(init).chain(leaders.iter()).chain(threads.iter().map(|(_, t)| t))
    }

    pub fn name<'t>(&self, t: &'t Obj) -> &'t [u8] {
        let b = t.slice(self.comm, 16).unwrap_or(&[]);
        &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())]
    }

    fn offsets(&self, align: u64, size: u64) -> impl Iterator<Item = u64> {
        (0..self.win.saturating_sub(size - 1)).step_by(align as usize)
    }
}

/// Keep exactly one survivor, or fail naming them all.
pub fn one(field: &str, survivors: &[u64]) -> Result<u64, LayoutError> {
    match survivors {
        [x] => Ok(*x),
        [] => Err(failed(format!("no offset fits {field}"))),
        many => Err(failed(format!("ambiguous {field}: offsets {many:?} all fit"))),
    }
}

/// Offsets holding pid-like values on the leaders: 0 on `init_task`, 1 and 2 on the first two
/// members, all distinct, within `PID_MAX_LIMIT`, and increasing along the list (creation
/// order) but for at most 1 in 16 steps (pid wrap-around). Both `pid` and `tgid` qualify.
pub fn pid_like(s: &Sample<'_>) -> Vec<u64> {
    let n = s.leaders.len();
    s.offsets(4, 4)
        .filter(|&o| {
            let vals: Option<Vec<u32>> = s.leaders.iter().map(|t| t.u32(o)).collect();
            let Some(vals) = vals else { return false };
            if s.init.u32(o) != Some(0) || vals.first() != Some(&1) || vals.get(1) != Some(&2) {
                return false;
            }
            let distinct: HashSet<u32> = vals.iter().copied().collect();
            let drops = vals.windows(2).filter(|w| w[1] <= w[0]).count();
            distinct.len() == n && vals.iter().all(|&v| v as i32 > 0 && v as i32 <= PID_MAX_LIMIT) && drops * 16 <= n
        })
        .collect()
}

/// `pid` and `tgid` among the pid-like offsets: on a thread, `tgid` equals its leader's value
/// and `pid` is its own. Without sampled threads the two cannot be told apart by value; then
/// the lower offset is `pid` (declared first in every version).
pub fn pid_tgid(s: &Sample<'_>, like: &[u64]) -> Result<(u64, u64), LayoutError> {
    if s.threads.is_empty() {
        return match like {
            [pid, tgid] => Ok((*pid, *tgid)),
            _ => Err(failed(format!("pid/tgid: {} pid-like offsets {like:?} and no threads to tell them apart", like.len()))),
        };
    }
    let leader_val = |i: usize, o: u64| s.leaders.get(i).and_then(|l| l.u32(o));
    let tgid: Vec<u64> =
        like.iter().copied().filter(|&o| s.threads.iter().all(|(i, t)| t.u32(o).is_some() && t.u32(o) == leader_val(*i, o))).collect();
    let pid: Vec<u64> = like
        .iter()
        .copied()
        .filter(|&o| {
            let mut seen: HashSet<u32> = s.leaders.iter().filter_map(|l| l.u32(o)).collect();
            s.threads.iter().all(|(_, t)| t.u32(o).is_some_and(|v| v > 0 && seen.insert(v)))
        })
        .collect();
    Ok((one("pid", &pid)?, one("tgid", &tgid)?))
}

/// `real_parent`: `init_task`, `init` and `kthreadd` all point at `init_task`; every other
/// task at a heap address, most of them (half at least) at a task of the sample. `parent`
/// holds the same values except under ptrace; when several offsets fit, the lowest is taken
/// (`real_parent` is declared before `parent`) if they agree on every task. Returns it with
/// every offset that fitted.
pub fn real_parent(s: &Sample<'_>, heap: impl Fn(u64) -> bool) -> Result<(u64, Vec<u64>), LayoutError> {
    let known: HashSet<u64> = s.all().map(|t| t.addr.0).collect();
    let init = s.init.addr.0;
    let fits: Vec<u64> = s
        .offsets(8, 8)
        .filter(|&o| {
            let first_three = [Some(s.init), s.leaders.first(), s.leaders.get(1)];
            if !first_three.iter().all(|t| t.is_some_and(|t| t.u64(o) == Some(init))) {
                return false;
            }
            let rest: Vec<u64> = s.all().skip(3).filter_map(|t| t.u64(o)).collect();
            let to_known = rest.iter().filter(|v| known.contains(v)).count();
            rest.len() + 3 == s.all().count() && rest.iter().all(|&v| v == init || heap(v)) && 2 * to_known >= rest.len()
        })
        .collect();
    agreeing_lowest("real_parent", s, &fits, 8).map(|o| (o, fits))
}

/// The lowest of several offsets, if they hold the same bytes on every task; else an error.
fn agreeing_lowest(field: &str, s: &Sample<'_>, fits: &[u64], size: u64) -> Result<u64, LayoutError> {
    let Some(&lo) = fits.first() else { return one(field, fits) };
    let same = fits.iter().all(|&o| s.all().all(|t| t.slice(o, size) == t.slice(lo, size)));
    if same {
        Ok(lo)
    } else {
        Err(failed(format!("ambiguous {field}: offsets {fits:?} fit but disagree")))
    }
}

/// Whether a task's `comm` says it is a workqueue worker (`kworker/...`).
pub fn is_kworker(name: &[u8]) -> bool {
    name.starts_with(b"kworker/")
}

/// `(mm, flags)` pairs. `mm`: NULL on `init_task` and `kthreadd`, a heap pointer on `init`,
/// NULL or a heap pointer everywhere. `flags`: `PF_KTHREAD` on `init_task` and `kthreadd`, not
/// on `init`, `PF_KTHREAD | PF_WQ_WORKER` on every `kworker/*`. Together: a task with
/// `PF_KTHREAD` has no `mm`, and a task without `mm` is a kernel thread or exiting
/// (`PF_EXITING`, e.g. a zombie).
pub fn mm_flags(s: &Sample<'_>, heap: impl Fn(u64) -> bool) -> Vec<(u64, u64)> {
    let (Some(init1), Some(kthreadd)) = (s.leaders.first(), s.leaders.get(1)) else { return Vec::new() };
    let all: Vec<&Obj> = s.all().collect();
    let mms: Vec<u64> = s
        .offsets(8, 8)
        .filter(|&o| {
            s.init.u64(o) == Some(0)
                && kthreadd.u64(o) == Some(0)
                && init1.u64(o).is_some_and(&heap)
                && all.iter().all(|t| t.u64(o).is_some_and(|v| v == 0 || heap(v)))
        })
        .collect();
    let kworkers: Vec<&Obj> = all.iter().copied().filter(|t| is_kworker(s.name(t))).collect();
    let flags: Vec<u64> = s
        .offsets(4, 4)
        .filter(|&o| {
            let has = |t: &Obj, bits: u32| t.u32(o).is_some_and(|v| v & bits == bits);
            has(s.init, PF_KTHREAD)
                && has(kthreadd, PF_KTHREAD)
                && init1.u32(o).is_some_and(|v| v & PF_KTHREAD == 0)
                && kworkers.iter().all(|t| has(t, PF_KTHREAD | PF_WQ_WORKER))
        })
        .collect();
    let mut out = Vec::new();
    for &m in &mms {
        for &f in &flags {
            let consistent = all.iter().all(|t| {
                let (Some(mm), Some(fl)) = (t.u64(m), t.u32(f)) else { return false };
                let kthread = fl & PF_KTHREAD != 0;
                !(kthread && mm != 0) && (mm != 0 || kthread || fl & PF_EXITING != 0)
            });
            if consistent {
                out.push((m, f));
            }
        }
    }
    out
}

/// The state word (`__state`, 4 bytes, since 5.14; `state`, 8 bytes, before): 0 on `init_task`
/// (the idle task never sleeps); on every task only defined state bits; among the tasks both
/// `S` (1) and `I` (`TASK_IDLE`) occur — an idle kernel always has sleeping tasks and idle kernel
/// workers. Every state fits in 32 bits, so the low half of the older `long` obeys the same rules
/// and both are found as a 4-byte word, with no version test. When several offsets fit, the
/// lowest is taken: in every version the state word is the first member after `thread_info`,
/// ahead of the part of `task_struct` that RANDSTRUCT shuffles.
pub fn state(s: &Sample<'_>) -> Result<u64, LayoutError> {
    let fits: Vec<u64> = s
        .offsets(4, 4)
        .filter(|&o| {
            let vals: Option<Vec<u32>> = s.all().map(|t| t.u32(o)).collect();
            let Some(vals) = vals else { return false };
            vals[0] == 0 && vals.iter().all(|&v| v & !STATE_BITS == 0) && vals.contains(&1) && vals.contains(&TASK_IDLE)
        })
        .collect();
    match fits.first() {
        Some(&o) => Ok(o),
        None => one("__state", &fits),
    }
}

/// `exit_state`: 0, `EXIT_DEAD`, `EXIT_ZOMBIE` (or both); non-zero exactly on tasks whose
/// `__state` is `TASK_DEAD`. With no dead task in the sample every always-zero field fits and
/// nothing tells them apart: `None` (the walker then reports no zombies).
pub fn exit_state(s: &Sample<'_>, state: u64) -> Result<Option<u64>, LayoutError> {
    let dead = |t: &Obj| t.u32(state).is_some_and(|v| v & TASK_DEAD != 0);
    if !s.all().any(dead) {
        return Ok(None);
    }
    let fits: Vec<u64> = s
        .offsets(4, 4)
        .filter(|&o| o != state)
        .filter(|&o| {
            s.all().all(|t| match t.u32(o) {
                Some(v) => [0, 0x10, 0x20, 0x30].contains(&v) && (v != 0) == dead(t),
                None => false,
            })
        })
        .collect();
    one("exit_state", &fits).map(Some)
}

/// `start_boottime` (ns since boot, suspend included): 0 on `init_task`; at least 10 µs on
/// every leader, below 2^62, non-decreasing along the list (creation order) but for at most 1
/// in 16 steps, and the last leader later than the first (a clock, not a constant); a thread
/// starts no earlier than its leader. `start_time` (monotonic) fits the
/// same rules; boot time is never behind it, so the offset with the larger values is taken, and
/// on equal values the later one (`start_boottime` is declared after `start_time`). Offsets
/// overlapping fields already placed (`taken`: offset, size) are not candidates — `pid` and
/// `tgid` read as one `u64` also grow with creation order.
/// Returns it with the offsets that tied with it (equal values on every task).
pub fn start_boottime(s: &Sample<'_>, taken: &[(u64, u64)]) -> Result<(u64, Vec<u64>), LayoutError> {
    let n = s.leaders.len();
    let fits: Vec<u64> = s
        .offsets(8, 8)
        .filter(|&o| taken.iter().all(|&(t, len)| o + 8 <= t || o >= t + len))
        .filter(|&o| {
            let vals: Option<Vec<u64>> = s.leaders.iter().map(|t| t.u64(o)).collect();
            let Some(vals) = vals else { return false };
            let drops = vals.windows(2).filter(|w| w[1] < w[0]).count();
            s.init.u64(o) == Some(0)
                && vals.last() > vals.first()
                && vals.iter().all(|&v| (10_000..1 << 62).contains(&v))
                && drops * 16 <= n
                && s.threads.iter().all(|(i, t)| t.u64(o).is_some_and(|v| Some(v) >= s.leaders.get(*i).and_then(|l| l.u64(o))))
        })
        .collect();
    let sum = |o: u64| -> u128 { s.leaders.iter().filter_map(|t| t.u64(o)).map(u128::from).sum() };
    let best = fits.iter().map(|&o| sum(o)).max();
    let top: Vec<u64> = fits.iter().copied().filter(|&o| Some(sum(o)) == best).collect();
    // Equal sums: the fields must agree on every task to be the same clock.
    match top.as_slice() {
        [] => one("start_boottime", &[]).map(|o| (o, Vec::new())),
        [.., last] if top.iter().all(|&o| s.all().all(|t| t.u64(o) == t.u64(*last))) => Ok((*last, top.clone())),
        many => Err(failed(format!("ambiguous start_boottime: offsets {many:?}"))),
    }
}
