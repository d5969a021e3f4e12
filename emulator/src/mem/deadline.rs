//! [`Deadline`]: refuses every read once a deadline has passed, so a run over a path that has
//! become too slow still ends: the analysis gets errors and returns what it has.
//!
//! Invariant: before the deadline the wrapper is transparent; after it, every read fails with
//! a [`MemError::Io`] (`TimedOut`) naming the read's own address, and the source is not asked.

use std::time::{Duration, Instant};

use super::{MemError, PhysAddr, PhysMem, PhysRange, ReadOp};

/// `inner` until `deadline`, errors afterwards.
pub struct Deadline<M> {
    pub inner: M,
    pub deadline: Instant,
}

impl<M: PhysMem> Deadline<M> {
    /// `inner` for `budget` from now.
    pub fn new(inner: M, budget: Duration) -> Self {
        Deadline { inner, deadline: Instant::now() + budget }
    }

    fn expired(&self, addr: PhysAddr) -> Option<MemError> {
        (Instant::now() >= self.deadline).then(|| MemError::Io {
            addr,
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "the experiment's time budget for this run is spent"),
        })
    }
}

impl<M: PhysMem> PhysMem for Deadline<M> {
    fn read_phys(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        match self.expired(addr) {
            Some(e) => Err(e),
            None => self.inner.read_phys(addr, buf),
        }
    }
    fn read_batch(&self, ops: &mut [ReadOp<'_>]) -> Vec<Result<(), MemError>> {
        if Instant::now() >= self.deadline {
            return ops.iter().map(|op| Err(self.expired(op.addr).expect("deadline passed"))).collect();
        }
        self.inner.read_batch(ops)
    }
    same_memory_as_inner!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::PatternMem;

    #[test]
    fn reads_fail_with_their_own_address_once_the_budget_is_spent() {
        let mem = PatternMem::new(vec![PhysRange::new(0, 4096)]);
        let mut buf = [0u8; 8];
        assert!(Deadline::new(&mem, Duration::from_secs(60)).read_phys(PhysAddr(8), &mut buf).is_ok());
        let spent = Deadline::new(&mem, Duration::ZERO);
        let err = spent.read_phys(PhysAddr(16), &mut buf).unwrap_err();
        assert!(matches!(err, MemError::Io { addr: PhysAddr(16), .. }), "{err}");
        let results = spent.read_batch(&mut [ReadOp { addr: PhysAddr(24), buf: &mut buf }]);
        assert_eq!(results[0].as_ref().unwrap_err().addr(), PhysAddr(24));
    }
}
