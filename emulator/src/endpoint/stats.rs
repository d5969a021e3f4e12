//! The endpoint's counters: what it received, answered, refused and dropped.
//!
//! Invariant: every datagram the endpoint receives is counted exactly once in `datagrams`, and
//! then in exactly one outcome: a read (`reads_ok`, `reads_ur` or `reads_ca`), a write
//! (`writes_applied`, `writes_refused` or `writes_unbacked`), a message (`messages`), or a drop
//! (`malformed`, `unsupported`, `oversized`). Counters only grow. Threads add to them with
//! relaxed atomics; a [`Snapshot`] is a consistent-enough copy for reporting.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters, shared between the serve threads and whoever reports them.
#[derive(Debug, Default)]
pub struct Counters {
    pub datagrams: AtomicU64,
    pub reads_ok: AtomicU64,
    pub reads_ur: AtomicU64,
    pub reads_ca: AtomicU64,
    pub writes_applied: AtomicU64,
    pub writes_refused: AtomicU64,
    pub writes_unbacked: AtomicU64,
    pub messages: AtomicU64,
    pub malformed: AtomicU64,
    pub unsupported: AtomicU64,
    pub oversized: AtomicU64,
    /// Completion TLPs handed to the network (before fault injection).
    pub completions: AtomicU64,
    /// Read payload bytes returned in successful completions.
    pub payload_bytes: AtomicU64,
    /// Datagrams the fault injector dropped, duplicated, reordered or delayed.
    pub fault_dropped: AtomicU64,
    pub fault_duplicated: AtomicU64,
    pub fault_reordered: AtomicU64,
    pub fault_delayed: AtomicU64,
    /// Datagrams the kernel refused to send (counted, not retried).
    pub send_errors: AtomicU64,
}

/// A copy of [`Counters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Snapshot {
    pub datagrams: u64,
    pub reads_ok: u64,
    pub reads_ur: u64,
    pub reads_ca: u64,
    pub writes_applied: u64,
    pub writes_refused: u64,
    pub writes_unbacked: u64,
    pub messages: u64,
    pub malformed: u64,
    pub unsupported: u64,
    pub oversized: u64,
    pub completions: u64,
    pub payload_bytes: u64,
    pub fault_dropped: u64,
    pub fault_duplicated: u64,
    pub fault_reordered: u64,
    pub fault_delayed: u64,
    pub send_errors: u64,
}

impl Counters {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            datagrams: self.datagrams.load(Relaxed),
            reads_ok: self.reads_ok.load(Relaxed),
            reads_ur: self.reads_ur.load(Relaxed),
            reads_ca: self.reads_ca.load(Relaxed),
            writes_applied: self.writes_applied.load(Relaxed),
            writes_refused: self.writes_refused.load(Relaxed),
            writes_unbacked: self.writes_unbacked.load(Relaxed),
            messages: self.messages.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            unsupported: self.unsupported.load(Relaxed),
            oversized: self.oversized.load(Relaxed),
            completions: self.completions.load(Relaxed),
            payload_bytes: self.payload_bytes.load(Relaxed),
            fault_dropped: self.fault_dropped.load(Relaxed),
            fault_duplicated: self.fault_duplicated.load(Relaxed),
            fault_reordered: self.fault_reordered.load(Relaxed),
            fault_delayed: self.fault_delayed.load(Relaxed),
            send_errors: self.send_errors.load(Relaxed),
        }
    }

    /// Add a batch's local tallies (one atomic add per non-zero field).
    pub fn add(&self, d: &Snapshot) {
        let pairs: [(&AtomicU64, u64); 18] = [
            (&self.datagrams, d.datagrams),
            (&self.reads_ok, d.reads_ok),
            (&self.reads_ur, d.reads_ur),
            (&self.reads_ca, d.reads_ca),
            (&self.writes_applied, d.writes_applied),
            (&self.writes_refused, d.writes_refused),
            (&self.writes_unbacked, d.writes_unbacked),
            (&self.messages, d.messages),
            (&self.malformed, d.malformed),
            (&self.unsupported, d.unsupported),
            (&self.oversized, d.oversized),
            (&self.completions, d.completions),
            (&self.payload_bytes, d.payload_bytes),
            (&self.fault_dropped, d.fault_dropped),
            (&self.fault_duplicated, d.fault_duplicated),
            (&self.fault_reordered, d.fault_reordered),
            (&self.fault_delayed, d.fault_delayed),
            (&self.send_errors, d.send_errors),
        ];
        for (c, v) in pairs {
            if v != 0 {
                c.fetch_add(v, Relaxed);
            }
        }
    }
}

impl Snapshot {
    /// Reads answered (with data or an error status).
    pub fn reads(&self) -> u64 {
        self.reads_ok + self.reads_ur + self.reads_ca
    }
    /// Datagrams dropped without an answer because they were not valid requests.
    pub fn dropped(&self) -> u64 {
        self.malformed + self.unsupported + self.oversized
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "datagrams {} | reads {} (ok {}, UR {}, CA {}) | completions {} | payload {} B | \
             writes applied {} refused {} unbacked {} | messages {} | malformed {} unsupported {} \
             oversized {} | faults: dropped {} duplicated {} reordered {} delayed {} | send errors {}",
            self.datagrams,
            self.reads(),
            self.reads_ok,
            self.reads_ur,
            self.reads_ca,
            self.completions,
            self.payload_bytes,
            self.writes_applied,
            self.writes_refused,
            self.writes_unbacked,
            self.messages,
            self.malformed,
            self.unsupported,
            self.oversized,
            self.fault_dropped,
            self.fault_duplicated,
            self.fault_reordered,
            self.fault_delayed,
            self.send_errors,
        )
    }
}
