//! A [`PhysMem`] wrapper that counts what the analysis reads.
//!
//! Invariant: every read that reaches the wrapped source — single or batched, successful or
//! not — is counted once with its requested length, and nothing else changes: the wrapper is
//! transparent, so an analysis over `CountingMem<M>` behaves exactly as over `M`.

use std::sync::atomic::{AtomicU64, Ordering};

use emulator::mem::{MemError, PhysAddr, PhysMem, PhysRange, ReadOp};

/// Counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReadCount {
    /// Number of reads (one per op in a batch).
    pub reads: u64,
    /// Bytes requested.
    pub bytes: u64,
    /// Number of `read_batch` calls (round trips for a pipelining backend).
    pub batches: u64,
}

impl ReadCount {
    /// `self - earlier`, for the cost of one phase.
    pub fn since(self, earlier: ReadCount) -> ReadCount {
        ReadCount {
            reads: self.reads.saturating_sub(earlier.reads),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            batches: self.batches.saturating_sub(earlier.batches),
        }
    }
}

/// Counts reads going to `inner`.
pub struct CountingMem<M> {
    inner: M,
    reads: AtomicU64,
    bytes: AtomicU64,
    batches: AtomicU64,
}

impl<M: PhysMem> CountingMem<M> {
    pub fn new(inner: M) -> Self {
        CountingMem { inner, reads: AtomicU64::new(0), bytes: AtomicU64::new(0), batches: AtomicU64::new(0) }
    }

    pub fn count(&self) -> ReadCount {
        ReadCount {
            reads: self.reads.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
        }
    }

    pub fn inner(&self) -> &M {
        &self.inner
    }
}

impl<M: PhysMem> PhysMem for CountingMem<M> {
    fn read_phys(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.inner.read_phys(addr, buf)
    }

    fn read_batch(&self, ops: &mut [ReadOp<'_>]) -> Vec<Result<(), MemError>> {
        self.reads.fetch_add(ops.len() as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        let bytes: u64 = ops.iter().map(|op| op.buf.len() as u64).sum();
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.inner.read_batch(ops)
    }

    fn ranges(&self) -> Vec<PhysRange> {
        self.inner.ranges()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}
