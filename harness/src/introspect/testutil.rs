//! Test support: a physical memory we build ourselves, byte by byte.
//!
//! Invariant: [`VecMem`] backs exactly `[base, base + data.len())`; reads outside fail with
//! `Unmapped` naming the first missing address, like a real image with a hole.

use emulator::mem::{MemError, PhysAddr, PhysMem, PhysRange};

pub struct VecMem {
    pub base: u64,
    pub data: Vec<u8>,
}

impl VecMem {
    pub fn new(size: usize) -> Self {
        VecMem { base: 0, data: vec![0; size] }
    }

    pub fn write(&mut self, addr: u64, bytes: &[u8]) {
        let off = (addr - self.base) as usize;
        self.data[off..off + bytes.len()].copy_from_slice(bytes);
    }

    pub fn write_u64(&mut self, addr: u64, v: u64) {
        self.write(addr, &v.to_le_bytes());
    }

    pub fn write_u32(&mut self, addr: u64, v: u32) {
        self.write(addr, &v.to_le_bytes());
    }
}

impl PhysMem for VecMem {
    fn read_phys(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let start = addr.0.checked_sub(self.base).ok_or(MemError::Unmapped { addr })? as usize;
        match start.checked_add(buf.len()).and_then(|end| self.data.get(start..end)) {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(MemError::Unmapped { addr: PhysAddr(self.base + self.data.len() as u64).max(addr) }),
        }
    }

    fn ranges(&self) -> Vec<PhysRange> {
        vec![PhysRange::new(self.base, self.base + self.data.len() as u64)]
    }

    fn describe(&self) -> String {
        format!("test memory, {} bytes", self.data.len())
    }
}
