//! Comparing `ps` rows with the guest's own `/proc` ground truth (`lab::truth`), and `lsmod`'s
//! modules with the guest's `/proc/modules` ([`module_columns`]: every column, no tolerance).
//!
//! Tolerance rules — the only differences accepted, because the truth is recorded moments
//! before the dump and the kernel keeps running in between:
//! 1. **Kernel threads that come and go**: a row with `kthread = true` present on one side only.
//! 2. **Workqueue worker descriptions**: a `kworker/...` name ends in `+desc` or `-desc`, the
//!    workqueue of the worker's most recent work item (`wq_worker_comm`), which changes each
//!    time the worker runs; such names are compared up to that suffix (but a missing suffix
//!    where the truth has one is a mismatch: that is a name we failed to reconstruct).
//! 3. **Kernel thread states**: a kernel thread that ran between the truth and the dump may be
//!    in another state (`I` → `R`, `R` → `I`, ...); only kernel threads get this allowance.
//! 4. **The recording agent's state**: the lab's agent (`comm` `nd-agent`) records the truth and
//!    then blocks on its control port; whether it is still `R` or already `S` when QEMU pauses
//!    the guest is a race, so its state may be either of those two.
//!
//! Everything else must be equal: pid, tgid, ppid, uid, state, comm (bytes), cmdline, kthread,
//! and start time at tick granularity (`floor(ns / 10 ms) == ticks`, USER_HZ = 100).
//!
//! Invariant: every truth row and every output row is accounted for exactly once — matched,
//! mismatched, missing, extra, or tolerated — and each tolerance names its rule.

use std::collections::BTreeMap;

use super::ps::Row;
use crate::lab::truth::Thread as TruthThread;

/// The lab's truth-recording agent (`harness/guest/agent.c`).
pub const AGENT: &str = "nd-agent";

fn is_r_or_s(s: &str) -> bool {
    s == "R" || s == "S"
}

/// Nanoseconds per USER_HZ tick.
pub const NS_PER_TICK: u64 = 10_000_000;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mismatch {
    pub pid: u32,
    pub field: &'static str,
    pub truth: String,
    pub ours: String,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Comparison {
    pub matched: usize,
    pub mismatches: Vec<Mismatch>,
    /// Truth rows with no output row (not tolerated).
    pub missing: Vec<u32>,
    /// Output rows with no truth row (not tolerated).
    pub extra: Vec<u32>,
    /// Differences accepted by a rule: (pid, rule).
    pub tolerated: Vec<(u32, &'static str)>,
}

impl Comparison {
    /// No unaccepted difference.
    pub fn is_exact(&self) -> bool {
        self.mismatches.is_empty() && self.missing.is_empty() && self.extra.is_empty()
    }

    /// A readable account of every unaccepted difference.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} matched, {} mismatched fields, {} missing, {} extra, {} tolerated\n",
            self.matched,
            self.mismatches.len(),
            self.missing.len(),
            self.extra.len(),
            self.tolerated.len()
        );
        for m in &self.mismatches {
            s.push_str(&format!("  pid {} {}: truth {:?}, ours {:?}\n", m.pid, m.field, m.truth, m.ours));
        }
        if !self.missing.is_empty() {
            s.push_str(&format!("  missing pids: {:?}\n", self.missing));
        }
        if !self.extra.is_empty() {
            s.push_str(&format!("  extra pids: {:?}\n", self.extra));
        }
        s
    }
}

/// A `kworker/...` name without its `+desc` / `-desc` suffix; `None` for other names.
pub fn kworker_base(comm: &str) -> Option<&str> {
    let rest = comm.strip_prefix("kworker/")?;
    let cut = rest.find(['+', '-']).map_or(comm.len(), |i| "kworker/".len() + i);
    Some(&comm[..cut])
}

/// Compare output rows with truth rows.
pub fn compare(rows: &[Row], truth: &[TruthThread]) -> Comparison {
    let ours: BTreeMap<u32, &Row> = rows.iter().filter(|r| r.pid >= 0).map(|r| (r.pid as u32, r)).collect();
    let truth_by: BTreeMap<u32, &TruthThread> = truth.iter().map(|t| (t.pid, t)).collect();
    let mut c = Comparison::default();
    for (&pid, t) in &truth_by {
        let Some(o) = ours.get(&pid) else {
            if t.kthread {
                c.tolerated.push((pid, "kernel thread gone before the dump"));
            } else {
                c.missing.push(pid);
            }
            continue;
        };
        let before = c.mismatches.len();
        let mut check = |field: &'static str, a: String, b: String| {
            if a != b {
                c.mismatches.push(Mismatch { pid, field, truth: a, ours: b });
            }
        };
        check("tgid", t.tgid.to_string(), o.tgid.to_string());
        check("ppid", t.ppid.to_string(), o.ppid.to_string());
        check("uid", t.uid.to_string(), o.uid.to_string());
        if t.state != o.state && t.kthread && o.kthread {
            c.tolerated.push((pid, "kernel thread state changed"));
        } else if t.state != o.state && t.comm == AGENT && o.comm == AGENT && is_r_or_s(&t.state) && is_r_or_s(&o.state) {
            c.tolerated.push((pid, "recording agent R/S race"));
        } else {
            check("state", t.state.clone(), o.state.clone());
        }
        check("cmdline", t.cmdline.clone(), o.cmdline.clone());
        check("kthread", t.kthread.to_string(), o.kthread.to_string());
        check("start_time", t.start_time.to_string(), (o.start_time / NS_PER_TICK).to_string());
        let truth_comm = String::from_utf8_lossy(&t.comm_bytes()).into_owned();
        match (kworker_base(&truth_comm), kworker_base(&o.comm)) {
            // A description we failed to produce is not a change.
            (Some(a), Some(b)) if a == b && truth_comm != o.comm && (o.comm != b || truth_comm == a) => {
                c.tolerated.push((pid, "kworker description changed"));
            }
            _ => check("comm", truth_comm, o.comm.clone()),
        }
        if c.mismatches.len() == before {
            c.matched += 1;
        }
    }
    for (&pid, o) in &ours {
        if !truth_by.contains_key(&pid) {
            if o.kthread {
                c.tolerated.push((pid, "kernel thread started after the truth"));
            } else {
                c.extra.push(pid);
            }
        }
    }
    c
}

/// Every column `/proc/modules` prints: name, size, refcount, used by, state, address, taints.
pub type ModuleColumns = (String, u64, Option<i64>, Option<Vec<String>>, String, u64, Option<String>);

/// A module `lsmod` listed, as its `/proc/modules` columns.
pub fn module_columns(m: &crate::introspect::modules::list::Module) -> ModuleColumns {
    (m.name.clone(), m.size, m.refcount, m.used_by.clone(), m.state.to_string(), m.address, m.taints.clone())
}

/// A line of the guest's `/proc/modules`, as the same columns.
pub fn truth_module_columns(t: &crate::lab::truth::Module) -> ModuleColumns {
    (t.name.clone(), t.size, t.refcount, Some(t.deps.clone()), t.state.clone(), t.address, Some(t.taints.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth(pid: u32, comm: &str, kthread: bool) -> TruthThread {
        TruthThread {
            pid,
            tgid: pid,
            ppid: 2,
            uid: 0,
            state: "I".into(),
            comm: comm.into(),
            comm_hex: comm.bytes().map(|b| format!("{b:02x}")).collect(),
            cmdline: String::new(),
            start_time: 12,
            start_time_ns: 120_000_000,
            kthread,
        }
    }

    fn row(pid: i32, comm: &str, kthread: bool) -> Row {
        Row {
            pid,
            tgid: pid,
            ppid: 2,
            uid: 0,
            state: "I".into(),
            comm: comm.into(),
            cmdline: String::new(),
            threads: Some(1),
            start_time: 129_999_999,
            kthread,
        }
    }

    #[test]
    fn kworker_suffix_rule() {
        assert_eq!(kworker_base("kworker/1:1-mm_percpu_wq"), Some("kworker/1:1"));
        assert_eq!(kworker_base("kworker/u4:0+events_unbound"), Some("kworker/u4:0"));
        assert_eq!(kworker_base("kworker/0:1H"), Some("kworker/0:1H"));
        assert_eq!(kworker_base("kthreadd"), None);
    }

    #[test]
    fn rules_are_narrow() {
        let t = vec![truth(10, "kworker/1:1-mm_percpu_wq", true), truth(11, "gone", true), truth(12, "sleep", false)];
        let r = vec![row(10, "kworker/1:1-events", true), row(13, "new", true), row(14, "user", false)];
        let c = compare(&r, &t);
        assert_eq!(c.matched, 1);
        assert_eq!(c.missing, vec![12]);
        assert_eq!(c.extra, vec![14]);
        assert_eq!(c.tolerated.len(), 3);
        assert!(!c.is_exact());
        // A missing description is not tolerated.
        let c = compare(&[row(10, "kworker/1:1", true)], &[truth(10, "kworker/1:1-events", true)]);
        assert_eq!(c.mismatches.len(), 1);
        // A different worker is not tolerated.
        let c = compare(&[row(10, "kworker/1:2-events", true)], &[truth(10, "kworker/1:1-events", true)]);
        assert_eq!(c.mismatches.len(), 1);
        // State: kernel threads and the agent (R/S only) get an allowance, nobody else.
        let mut t_agent = truth(20, AGENT, false);
        t_agent.state = "S".into();
        let mut r_agent = row(20, AGENT, false);
        r_agent.state = "R".into();
        r_agent.start_time = 120_000_000;
        assert!(compare(&[r_agent.clone()], &[t_agent.clone()]).is_exact());
        r_agent.state = "D".into();
        assert!(!compare(&[r_agent], &[t_agent]).is_exact());
        let mut user = row(21, "sleep", false);
        user.state = "R".into();
        user.start_time = 120_000_000;
        let mut t_user = truth(21, "sleep", false);
        t_user.state = "S".into();
        assert_eq!(compare(&[user], &[t_user]).mismatches[0].field, "state");
        // Start time compares at tick granularity.
        let mut late = row(12, "sleep", false);
        late.kthread = false;
        late.start_time = 130_000_000;
        let c = compare(&[late], &[truth(12, "sleep", false)]);
        assert_eq!(c.mismatches[0].field, "start_time");
    }
}
