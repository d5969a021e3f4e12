//! TEMPORARY: a minimal memory-mapped raw image, so `emulator serve` and the endpoint tests can
//! serve a raw file before `emulator::image` (raw, ELF, kdump, LiME, AVML, live) is merged.
//! Remove once `image::open` lands; nothing else should grow here.
//!
//! Invariant: physical `base + i` is byte `i` of the file; the file is mapped read-only and
//! never written.

use crate::mem::{MemError, PhysAddr, PhysMem, PhysRange};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct RawFile {
    map: memmap2::Mmap,
    base: u64,
    path: PathBuf,
}

impl RawFile {
    /// Map `path` read-only, physical address `base` at file offset 0.
    pub fn open(path: &Path, base: u64) -> std::io::Result<RawFile> {
        let f = std::fs::File::open(path)?;
        // SAFETY: mapped read-only; a concurrent writer could change bytes under us, which is
        // the nature of serving a live file and cannot cause memory unsafety for &[u8] reads
        // of a private read-only mapping beyond torn values.
        let map = unsafe { memmap2::Mmap::map(&f)? };
        Ok(RawFile { map, base, path: path.to_owned() })
    }
}

impl PhysMem for RawFile {
    fn read_phys(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let off = addr.0.checked_sub(self.base).ok_or(MemError::Unmapped { addr })?;
        let end = off.checked_add(buf.len() as u64).filter(|&e| e <= self.map.len() as u64);
        let Some(end) = end else {
            let first_bad = self.base.saturating_add(self.map.len() as u64).max(addr.0);
            return Err(MemError::Unmapped { addr: PhysAddr(first_bad) });
        };
        buf.copy_from_slice(&self.map[off as usize..end as usize]);
        Ok(())
    }

    fn ranges(&self) -> Vec<PhysRange> {
        vec![PhysRange::new(self.base, self.base + self.map.len() as u64)]
    }

    fn describe(&self) -> String {
        format!("raw image {} ({} bytes at {:#x}, temporary reader)", self.path.display(), self.map.len(), self.base)
    }
}
