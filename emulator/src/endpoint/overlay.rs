//! A page-granular copy-on-write overlay over a read-only memory image, for `--allow-write`.
//!
//! Invariants:
//! - the image underneath is only ever read: a write copies the page it touches into memory
//!   (once) and changes the copy; reads see the copies first and the image elsewhere;
//! - only bytes the image backs can be written or read: the backed ranges are taken from the
//!   image once ([`PhysMem::ranges`]), merged, and every access is checked against them; an
//!   access that leaves them fails with [`MemError::Unmapped`] naming the first unbacked byte.
//!   (A source that reports no ranges is trusted to say so itself on read.)
//! - until the first write, reads go straight to the image (one atomic load of overhead).

use crate::mem::{MemError, PhysAddr, PhysMem, PhysRange};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

/// Granularity of the overlay.
pub const PAGE: u64 = 4096;

/// An image plus the pages written over it.
#[derive(Debug)]
pub struct Overlay<M> {
    base: M,
    /// Backed ranges, sorted, adjacent ones merged.
    backed: Vec<PhysRange>,
    pages: RwLock<HashMap<u64, Box<[u8]>>>,
    dirty: AtomicBool,
}

/// Sort and merge touching ranges.
fn merge(mut ranges: Vec<PhysRange>) -> Vec<PhysRange> {
    ranges.retain(|r| !r.is_empty());
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<PhysRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

impl<M: PhysMem> Overlay<M> {
    pub fn new(base: M) -> Overlay<M> {
        let backed = merge(base.ranges());
        Overlay {
            base,
            backed,
            pages: RwLock::new(HashMap::new()),
            dirty: AtomicBool::new(false),
        }
    }

    /// The image underneath.
    pub fn base(&self) -> &M {
        &self.base
    }

    /// The backed ranges (merged).
    pub fn backed(&self) -> &[PhysRange] {
        &self.backed
    }

    /// Number of pages copied by writes.
    pub fn pages_written(&self) -> usize {
        self.pages.read().map(|p| p.len()).unwrap_or_else(|e| e.into_inner().len())
    }

    /// `Ok` if every byte of `addr..addr+len` is backed, else the first byte that is not.
    pub fn check_backed(&self, addr: u64, len: u64) -> Result<(), PhysAddr> {
        if self.backed.is_empty() || len == 0 {
            return Ok(());
        }
        let end = addr.checked_add(len).ok_or(PhysAddr(u64::MAX))?;
        // the range containing addr: the last one starting at or below it
        let i = self.backed.partition_point(|r| r.start.0 <= addr);
        match i.checked_sub(1).map(|i| self.backed[i]) {
            Some(r) if r.contains(PhysAddr(addr)) => {
                if end <= r.end.0 {
                    Ok(())
                } else {
                    Err(r.end)
                }
            }
            _ => Err(PhysAddr(addr)),
        }
    }

    /// Fill `buf` from `addr`: overlay pages where written, the image elsewhere.
    pub fn read(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        self.check_backed(addr.0, buf.len() as u64)
            .map_err(|a| MemError::Unmapped { addr: a })?;
        if !self.dirty.load(Ordering::Acquire) {
            return self.base.read_phys(addr, buf);
        }
        let pages = self.pages.read().unwrap_or_else(|e| e.into_inner());
        let mut done = 0usize;
        while done < buf.len() {
            let a = addr.0 + done as u64;
            let in_page = (PAGE - (a % PAGE)) as usize;
            let n = in_page.min(buf.len() - done);
            let out = &mut buf[done..done + n];
            match pages.get(&(a / PAGE)) {
                Some(page) => {
                    let off = (a % PAGE) as usize;
                    out.copy_from_slice(&page[off..off + n]);
                }
                None => self.base.read_phys(PhysAddr(a), out)?,
            }
            done += n;
        }
        Ok(())
    }

    /// Write `data` at `addr` into the overlay (never into the image). Fails, changing
    /// nothing, if any byte is not backed or a page cannot be read from the image.
    pub fn write(&self, addr: PhysAddr, data: &[u8]) -> Result<(), MemError> {
        self.check_backed(addr.0, data.len() as u64)
            .map_err(|a| MemError::Unmapped { addr: a })?;
        let mut pages = self.pages.write().unwrap_or_else(|e| e.into_inner());
        // copy in every page first, so a failure leaves the overlay unchanged
        let first = addr.0 / PAGE;
        let last = (addr.0 + data.len().max(1) as u64 - 1) / PAGE;
        for pno in first..=last {
            if let std::collections::hash_map::Entry::Vacant(slot) = pages.entry(pno) {
                slot.insert(self.copy_page(pno)?);
            }
        }
        let mut done = 0usize;
        while done < data.len() {
            let a = addr.0 + done as u64;
            let off = (a % PAGE) as usize;
            let n = (PAGE as usize - off).min(data.len() - done);
            if let Some(page) = pages.get_mut(&(a / PAGE)) {
                page[off..off + n].copy_from_slice(&data[done..done + n]);
            }
            done += n;
        }
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// A copy of page `pno` from the image: the backed parts read, the rest zero.
    fn copy_page(&self, pno: u64) -> Result<Box<[u8]>, MemError> {
        let start = pno * PAGE;
        let mut page = vec![0u8; PAGE as usize].into_boxed_slice();
        if self.backed.is_empty() {
            self.base.read_phys(PhysAddr(start), &mut page)?;
            return Ok(page);
        }
        for r in &self.backed {
            let lo = r.start.0.max(start);
            // The last page below 2^64 ends at 2^64: saturate (a half-open range never holds
            // u64::MAX itself, so nothing is lost).
            let hi = r.end.0.min(start.saturating_add(PAGE));
            if lo < hi {
                let off = (lo - start) as usize;
                self.base
                    .read_phys(PhysAddr(lo), &mut page[off..off + (hi - lo) as usize])?;
            }
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::PatternMem;

    fn mem() -> Overlay<PatternMem> {
        // two ranges with a hole: [0x1000, 0x3000) and [0x5000, 0x5800)
        Overlay::new(PatternMem::new(vec![PhysRange::new(0x1000, 0x3000), PhysRange::new(0x5000, 0x5800)]))
    }

    #[test]
    fn reads_pass_through_until_written() {
        let o = mem();
        let mut a = [0u8; 100];
        let mut b = [0u8; 100];
        o.read(PhysAddr(0x1ff0), &mut a).unwrap();
        o.base().read_phys(PhysAddr(0x1ff0), &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(o.pages_written(), 0);
    }

    #[test]
    fn writes_cross_pages_and_leave_the_image_alone() {
        let o = mem();
        let data: Vec<u8> = (0..40u8).collect();
        o.write(PhysAddr(0x1ff0), &data).unwrap();
        assert_eq!(o.pages_written(), 2);
        let mut got = [0u8; 60];
        o.read(PhysAddr(0x1fe6), &mut got).unwrap();
        let mut img = [0u8; 60];
        o.base().read_phys(PhysAddr(0x1fe6), &mut img).unwrap();
        assert_eq!(&got[..10], &img[..10]);
        assert_eq!(&got[10..50], &data[..]);
        assert_eq!(&got[50..], &img[50..]);
        assert_ne!(&img[10..50], &data[..], "pattern must differ from the written bytes");
    }

    #[test]
    fn holes_are_refused_with_the_first_bad_address() {
        let o = mem();
        let mut buf = [0u8; 16];
        let e = o.read(PhysAddr(0x2ff8), &mut buf).unwrap_err();
        assert_eq!(e.addr(), PhysAddr(0x3000));
        let e = o.write(PhysAddr(0x4000), &[1, 2, 3]).unwrap_err();
        assert_eq!(e.addr(), PhysAddr(0x4000));
        let e = o.write(PhysAddr(0x57ff), &[1, 2]).unwrap_err();
        assert_eq!(e.addr(), PhysAddr(0x5800));
        assert_eq!(o.pages_written(), 0);
        // a partly backed page is copied with its hole, and reads of the hole still fail
        o.write(PhysAddr(0x5000), &[9; 8]).unwrap();
        assert!(o.read(PhysAddr(0x5800), &mut buf).is_err());
        let e = o.read(PhysAddr(u64::MAX - 3), &mut buf).unwrap_err();
        assert!(matches!(e, MemError::Unmapped { .. }));
    }

    /// Found by the `nettlp` fuzz target: a write into the last page below 2^64 of a backed
    /// range overflowed `start + PAGE` while copying that page in.
    #[test]
    fn write_into_the_last_page_below_2_64() {
        let top = PhysRange::new(0xffff_ffff_ffff_0000, u64::MAX);
        let o = Overlay::new(PatternMem::new(vec![top]));
        o.write(PhysAddr(0xffff_ffff_ffff_fff0), &[7; 8]).unwrap();
        let mut got = [0u8; 8];
        o.read(PhysAddr(0xffff_ffff_ffff_fff0), &mut got).unwrap();
        assert_eq!(got, [7; 8]);
        assert_eq!(o.pages_written(), 1);
    }
}
