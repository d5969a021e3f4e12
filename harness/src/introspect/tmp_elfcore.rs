//! TEMPORARY ELF-core reader, to be replaced by `emulator::image::open` once that lands.
//!
//! Invariant: maps the file read-only and serves each guest-physical address from the PT_LOAD
//! segment whose `p_paddr` range holds it; bytes beyond `p_filesz` or outside every segment
//! are `Unmapped`. The header is parsed with checked reads; a malformed file is an error.
//! This exists only so the introspection work is not blocked on the image module; it reads
//! ELF64 little-endian cores as written by QEMU's `dump-guest-memory` and nothing else.

use std::fs::File;
use std::path::{Path, PathBuf};

use emulator::mem::{MemError, PhysAddr, PhysMem, PhysRange};

use super::bytes::Bytes;

#[derive(Debug, thiserror::Error)]
pub enum ElfCoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not an ELF64 little-endian core ({reason})")]
    Format { path: PathBuf, reason: String },
}

struct Segment {
    paddr: u64,
    file_off: u64,
    filesz: u64,
}

/// An ELF core file served as physical memory.
pub struct ElfCore {
    path: PathBuf,
    map: memmap2::Mmap,
    segs: Vec<Segment>,
}

impl ElfCore {
    pub fn open(path: &Path) -> Result<Self, ElfCoreError> {
        let io = |source| ElfCoreError::Io { path: path.to_owned(), source };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the file is mapped read-only; a concurrent writer could change bytes under
        // us, which at worst yields wrong data, never unsoundness for `&[u8]` reads we copy.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let fmt = |reason: &str| ElfCoreError::Format { path: path.to_owned(), reason: reason.to_owned() };
        let b = Bytes::new(&map);
        let ident = b.slice(0, 16).map_err(|_| fmt("short header"))?;
        if &ident[..4] != b"\x7fELF" || ident[4] != 2 || ident[5] != 1 {
            return Err(fmt("bad ident"));
        }
        let e_type = b.u16(16).map_err(|_| fmt("short header"))?;
        if e_type != 4 {
            return Err(fmt("not ET_CORE"));
        }
        let phoff = b.u64(32).map_err(|_| fmt("short header"))? as usize;
        let phentsize = b.u16(54).map_err(|_| fmt("short header"))? as usize;
        let phnum = b.u16(56).map_err(|_| fmt("short header"))? as usize;
        if phentsize < 56 {
            return Err(fmt("program header too small"));
        }
        let mut segs = Vec::new();
        for i in 0..phnum {
            let ph = b.sub(phoff + i * phentsize, 56).map_err(|_| fmt("program header out of file"))?;
            let p_type = ph.u32(0).map_err(|_| fmt("ph"))?;
            if p_type != 1 {
                continue;
            }
            let file_off = ph.u64(8).map_err(|_| fmt("ph"))?;
            let paddr = ph.u64(24).map_err(|_| fmt("ph"))?;
            let filesz = ph.u64(32).map_err(|_| fmt("ph"))?;
            if file_off.checked_add(filesz).is_none_or(|end| end > map.len() as u64) {
                return Err(fmt("PT_LOAD beyond end of file"));
            }
            segs.push(Segment { paddr, file_off, filesz });
        }
        segs.sort_by_key(|s| s.paddr);
        Ok(ElfCore { path: path.to_owned(), map, segs })
    }
}

impl PhysMem for ElfCore {
    fn read_phys(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let mut done = 0usize;
        while done < buf.len() {
            let a = addr.0.checked_add(done as u64).ok_or(MemError::Unmapped { addr })?;
            let seg = self
                .segs
                .iter()
                .find(|s| s.paddr <= a && a < s.paddr + s.filesz)
                .ok_or(MemError::Unmapped { addr: PhysAddr(a) })?;
            let off = a - seg.paddr;
            let n = ((seg.filesz - off) as usize).min(buf.len() - done);
            let start = (seg.file_off + off) as usize;
            buf[done..done + n].copy_from_slice(&self.map[start..start + n]);
            done += n;
        }
        Ok(())
    }

    fn ranges(&self) -> Vec<PhysRange> {
        self.segs.iter().map(|s| PhysRange::new(s.paddr, s.paddr + s.filesz)).collect()
    }

    fn describe(&self) -> String {
        let total: u64 = self.segs.iter().map(|s| s.filesz).sum();
        format!("ELF core {}, {} ranges, {} MiB", self.path.display(), self.segs.len(), total >> 20)
    }
}
