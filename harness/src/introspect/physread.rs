//! Small helpers for reading physical memory in owned buffers and batches.
//!
//! Invariant: these add no policy — a helper returns exactly what the source returned, one
//! result per requested read, in order; batching only groups independent reads.

use emulator::mem::{MemError, PhysAddr, PhysMem, ReadOp};

/// Read `len` bytes at `addr` into a new buffer.
pub fn read_vec(mem: &dyn PhysMem, addr: PhysAddr, len: usize) -> Result<Vec<u8>, MemError> {
    let mut buf = vec![0u8; len];
    mem.read_phys(addr, &mut buf)?;
    Ok(buf)
}

/// Read a little-endian `u64`.
pub fn read_u64(mem: &dyn PhysMem, addr: PhysAddr) -> Result<u64, MemError> {
    let mut b = [0u8; 8];
    mem.read_phys(addr, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Read many `(addr, len)` regions in one batch; one result per region, in order.
pub fn read_many(mem: &dyn PhysMem, regions: &[(PhysAddr, usize)]) -> Vec<Result<Vec<u8>, MemError>> {
    let mut bufs: Vec<Vec<u8>> = regions.iter().map(|&(_, len)| vec![0u8; len]).collect();
    let results = {
        let mut ops: Vec<ReadOp<'_>> = bufs
            .iter_mut()
            .zip(regions)
            .map(|(buf, &(addr, _))| ReadOp { addr, buf: buf.as_mut_slice() })
            .collect();
        mem.read_batch(&mut ops)
    };
    results.into_iter().zip(bufs).map(|(r, b)| r.map(|()| b)).collect()
}
