//! [`Counting`]: counts what passes through to the source it wraps. Its
//! [`snapshot`](Counting::snapshot) is what `harness ps --stats` prints (in total and per
//! phase) and what experiments record ("how many DMA reads did `ps` need?").
//!
//! What is counted, the one definition for the workspace:
//! - a **read** is one request for bytes at one address: a `read_phys` call, or one op of a
//!   `read_batch` call;
//! - a **batch** is one call that reaches the source — a `read_batch` of at least one op, or a
//!   lone `read_phys` — so, for a pipelining backend, one round trip (an empty batch sends
//!   nothing and is not passed on);
//! - **bytes** are the bytes requested, **errors** the reads that failed.
//!
//! Invariant: every read that reaches the wrapped source is counted once with its requested
//! length, and nothing else changes: over `Counting<M>` an analysis behaves exactly as over `M`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::{MemError, PhysAddr, PhysMem, PhysRange, ReadOp};

/// Read counters at one moment.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Reads requested (each op of a batch counts once).
    pub reads: u64,
    /// Bytes requested.
    pub bytes: u64,
    /// Calls that reached the source: non-empty `read_batch` calls and lone `read_phys` calls.
    pub batches: u64,
    /// Reads that failed.
    pub errors: u64,
}

impl Counts {
    /// `self - earlier`, for the cost of one phase.
    pub fn since(self, earlier: Counts) -> Counts {
        Counts {
            reads: self.reads.saturating_sub(earlier.reads),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            batches: self.batches.saturating_sub(earlier.batches),
            errors: self.errors.saturating_sub(earlier.errors),
        }
    }
}

/// Counts every read that passes through.
#[derive(Debug)]
pub struct Counting<M> {
    inner: M,
    reads: AtomicU64,
    bytes: AtomicU64,
    batches: AtomicU64,
    errors: AtomicU64,
}

impl<M: PhysMem> Counting<M> {
    pub fn new(inner: M) -> Self {
        Counting {
            inner,
            reads: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> Counts {
        Counts {
            reads: self.reads.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            batches: self.batches.load(Relaxed),
            errors: self.errors.load(Relaxed),
        }
    }

    pub fn inner(&self) -> &M {
        &self.inner
    }

    pub fn into_inner(self) -> M {
        self.inner
    }
}

impl<M: PhysMem> PhysMem for Counting<M> {
    fn read_phys(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        self.batches.fetch_add(1, Relaxed);
        self.reads.fetch_add(1, Relaxed);
        self.bytes.fetch_add(buf.len() as u64, Relaxed);
        let r = self.inner.read_phys(addr, buf);
        if r.is_err() {
            self.errors.fetch_add(1, Relaxed);
        }
        r
    }

    fn read_batch(&self, ops: &mut [ReadOp<'_>]) -> Vec<Result<(), MemError>> {
        if ops.is_empty() {
            return Vec::new();
        }
        self.batches.fetch_add(1, Relaxed);
        self.reads.fetch_add(ops.len() as u64, Relaxed);
        self.bytes
            .fetch_add(ops.iter().map(|op| op.buf.len() as u64).sum(), Relaxed);
        let results = self.inner.read_batch(ops);
        self.errors.fetch_add(
            results.iter().filter(|r| r.is_err()).count() as u64,
            Relaxed,
        );
        results
    }

    same_memory_as_inner!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::PatternMem;

    #[test]
    fn a_lone_read_is_a_batch_of_one() {
        let c = Counting::new(PatternMem::new(vec![PhysRange::new(0, 4096)]));
        let mut a = [0u8; 10];
        let mut b = [0u8; 20];
        c.read_phys(PhysAddr(0), &mut a).unwrap();
        assert!(c.read_phys(PhysAddr(4090), &mut a).is_err());
        let results = c.read_batch(&mut [
            ReadOp {
                addr: PhysAddr(0),
                buf: &mut a,
            },
            ReadOp {
                addr: PhysAddr(100),
                buf: &mut b,
            },
        ]);
        assert!(results.iter().all(|r| r.is_ok()));
        assert!(c.read_batch(&mut []).is_empty(), "an empty batch is no round trip");
        assert_eq!(
            c.snapshot(),
            Counts {
                reads: 4,
                bytes: 50,
                batches: 3,
                errors: 1
            }
        );
    }
}
