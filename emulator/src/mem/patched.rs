//! [`Patched`]: some bytes of the source replaced, for adversarial tests on real dumps (the
//! dump file itself is never written).
//!
//! Invariant: a read returns the source's bytes with every patch that overlaps it applied
//! (later patches over earlier ones); errors are the source's, unchanged.

use super::{MemError, PhysAddr, PhysMem, PhysRange, ReadOp};

/// `inner` with `patches` (address, bytes) laid over it.
pub struct Patched<M> {
    inner: M,
    patches: Vec<(PhysAddr, Vec<u8>)>,
}

impl<M: PhysMem> Patched<M> {
    pub fn new(inner: M, patches: Vec<(PhysAddr, Vec<u8>)>) -> Self {
        Patched { inner, patches }
    }

    /// Lays every patch overlapping `[addr, addr + buf.len())` over `buf`.
    fn apply(&self, addr: PhysAddr, buf: &mut [u8]) {
        let (lo, hi) = (addr.0, addr.0.saturating_add(buf.len() as u64));
        for (at, bytes) in &self.patches {
            for (k, &b) in bytes.iter().enumerate() {
                let a = at.0.saturating_add(k as u64);
                if (lo..hi).contains(&a) {
                    buf[(a - lo) as usize] = b;
                }
            }
        }
    }
}

impl<M: PhysMem> PhysMem for Patched<M> {
    fn read_phys(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        self.inner.read_phys(addr, buf)?;
        self.apply(addr, buf);
        Ok(())
    }
    fn read_batch(&self, ops: &mut [ReadOp<'_>]) -> Vec<Result<(), MemError>> {
        let results = self.inner.read_batch(ops);
        for (op, r) in ops.iter_mut().zip(&results) {
            if r.is_ok() {
                self.apply(op.addr, op.buf);
            }
        }
        results
    }
    fn ranges(&self) -> Vec<PhysRange> {
        self.inner.ranges()
    }
    fn ranges_are_ram(&self) -> bool {
        self.inner.ranges_are_ram()
    }
    fn describe(&self) -> String {
        format!("patched {}", self.inner.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::{pattern_bytes, PatternMem};

    #[test]
    fn patches_show_in_single_and_batched_reads_and_nowhere_else() {
        let mem = PatternMem::new(vec![PhysRange::new(0, 4096)]);
        let p = Patched::new(&mem, vec![(PhysAddr(10), vec![0xaa; 4]), (PhysAddr(12), vec![0xbb; 4])]);
        let mut want = [0u8; 32];
        pattern_bytes(0, &mut want);
        want[10..12].fill(0xaa);
        want[12..16].fill(0xbb);
        let mut got = [0u8; 32];
        p.read_phys(PhysAddr(0), &mut got).unwrap();
        assert_eq!(got, want);
        let (mut a, mut b) = ([0u8; 8], [0u8; 8]);
        let r = p.read_batch(&mut [ReadOp { addr: PhysAddr(8), buf: &mut a }, ReadOp { addr: PhysAddr(4092), buf: &mut b }]);
        assert_eq!(a, want[8..16]);
        assert!(r[0].is_ok() && r[1].is_err());
    }
}
