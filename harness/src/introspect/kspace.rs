//! The guest kernel's virtual address space: kernel virtual → physical, and typed reads.
//!
//! x86-64 Linux maps (Documentation/x86/x86_64/mm.rst):
//! - the kernel image at `__START_KERNEL_map` (0xffffffff80000000): `phys = virt -
//!   __START_KERNEL_map + phys_base`, for `KERNEL_IMAGE_SIZE` (1 GiB);
//! - all of RAM linearly at `page_offset_base` (randomized under KASLR): `phys = virt -
//!   page_offset_base`;
//! - everything else (vmalloc, vmemmap, modules) only through the page tables at
//!   `init_top_pgt`.
//!
//! Invariant: [`KernelSpace::to_phys`] either returns the physical address the guest's own
//! MMU would use for that kernel virtual address, or an error naming the address; the two
//! linear windows are exactly the ones the kernel itself uses for `__pa` / `__pa_symbol`, and the
//! page-table fallback uses the kernel's own tables.

use emulator::mem::{MemError, PhysAddr, PhysMem};

use super::addr::KVirt;
use super::paging::{translate_many, PageTables, PagingError, PagingFormat};
use super::vread::{self, Place, Translator};

/// `__START_KERNEL_map`.
pub const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
/// `KERNEL_IMAGE_SIZE` with `CONFIG_RANDOMIZE_BASE`.
pub const KERNEL_IMAGE_SIZE: u64 = 1 << 30;
/// `__PAGE_OFFSET_BASE_L4`, the direct-map base without memory randomization.
pub const PAGE_OFFSET_L4: KVirt = KVirt(0xffff_8880_0000_0000);
/// `__PAGE_OFFSET_BASE_L5`.
pub const PAGE_OFFSET_L5: KVirt = KVirt(0xff11_0000_0000_0000);
/// Longest single read (the largest `.BTF` accepted): lengths come from guest memory and type
/// information, so a region longer than this is an error before anything is allocated.
pub const MAX_READ: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum KSpaceError {
    #[error("{addr}: outside the image and direct map, and no kernel page tables to walk")]
    Unmapped { addr: KVirt },
    #[error("{addr}: {source}")]
    Paging { addr: KVirt, source: PagingError<KVirt> },
    #[error("{addr} (at {phys}): {source}")]
    Mem { addr: KVirt, phys: PhysAddr, source: MemError },
    #[error("{addr}: a read of {len:#x} bytes is longer than the {MAX_READ:#x} allowed")]
    TooLong { addr: KVirt, len: usize },
}

impl KSpaceError {
    /// The kernel virtual address that failed.
    pub fn addr(&self) -> KVirt {
        match self {
            KSpaceError::Unmapped { addr }
            | KSpaceError::Paging { addr, .. }
            | KSpaceError::Mem { addr, .. }
            | KSpaceError::TooLong { addr, .. } => *addr,
        }
    }
}

/// How kernel virtual addresses map to physical ones in one guest.
#[derive(Clone)]
pub struct KernelSpace<'m> {
    mem: &'m dyn PhysMem,
    /// `phys_base`: physical address of `__START_KERNEL_map`.
    pub phys_base: u64,
    /// `page_offset_base`: virtual address of physical 0 in the direct map (`None` until known).
    pub page_offset_base: Option<KVirt>,
    /// Bytes of physical address space the direct map covers (end of the highest range).
    pub direct_map_size: u64,
    /// The kernel's page tables (`init_top_pgt`), for addresses outside both windows.
    pub page_tables: Option<PageTables>,
    pub format: &'static PagingFormat,
}

impl<'m> KernelSpace<'m> {
    pub fn new(
        mem: &'m dyn PhysMem,
        phys_base: u64,
        page_offset_base: Option<KVirt>,
        format: &'static PagingFormat,
    ) -> Self {
        // The direct map spans RAM; of a machine whose RAM is not known (over the wire, or a
        // capture of such a session), the architecture's 64 TiB.
        let known = if mem.ranges_are_ram() { mem.ranges().iter().map(|r| r.end.0).max() } else { None };
        let direct_map_size = known.unwrap_or(1 << 46);
        KernelSpace { mem, phys_base, page_offset_base, direct_map_size, page_tables: None, format }
    }

    pub fn mem(&self) -> &'m dyn PhysMem {
        self.mem
    }

    /// Whether `v` lies in the direct map of RAM (where slab objects such as tasks live).
    pub fn in_direct_map(&self, v: KVirt) -> bool {
        self.page_offset_base.is_some_and(|pob| v >= pob && v.0 - pob.0 < self.direct_map_size)
    }

    /// Whether `v` can point at kernel data: 8-byte aligned, in the direct map or the image.
    pub fn kernel_ptr(&self, v: KVirt) -> bool {
        v.0.is_multiple_of(8) && (self.in_direct_map(v) || self.in_image(v))
    }

    /// Whether `v` lies in the kernel image window.
    pub fn in_image(&self, v: KVirt) -> bool {
        v.0 >= START_KERNEL_MAP && v.0 - START_KERNEL_MAP < KERNEL_IMAGE_SIZE
    }

    /// The physical address of an image symbol, or of a direct-map address, without reading.
    pub fn linear(&self, v: KVirt) -> Option<PhysAddr> {
        if self.in_image(v) {
            Some(PhysAddr((v.0 - START_KERNEL_MAP).wrapping_add(self.phys_base)))
        } else if self.in_direct_map(v) {
            Some(PhysAddr(v.0 - self.page_offset_base.unwrap_or_default().0))
        } else {
            None
        }
    }

    /// Translate one address.
    pub fn to_phys(&self, v: KVirt) -> Result<PhysAddr, KSpaceError> {
        if let Some(p) = self.linear(v) {
            return Ok(p);
        }
        let pt = self.page_tables.ok_or(KSpaceError::Unmapped { addr: v })?;
        match translate_many(self.mem, &[(pt, v)]).pop() {
            Some(Ok(t)) => Ok(t.phys),
            Some(Err(source)) => Err(KSpaceError::Paging { addr: v, source }),
            None => Err(KSpaceError::Unmapped { addr: v }),
        }
    }

    /// Read `buf.len()` bytes at `v`. Reads that would cross a 4 KiB page outside the linear
    /// windows are split per page.
    pub fn read(&self, v: KVirt, buf: &mut [u8]) -> Result<(), KSpaceError> {
        let mut out = self.read_many(&[(v, buf.len())]);
        let bytes = out.pop().unwrap_or(Err(KSpaceError::Unmapped { addr: v }))?;
        buf.copy_from_slice(&bytes);
        Ok(())
    }

    pub fn read_u64(&self, v: KVirt) -> Result<u64, KSpaceError> {
        let mut b = [0u8; 8];
        self.read(v, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    pub fn read_u32(&self, v: KVirt) -> Result<u32, KSpaceError> {
        let mut b = [0u8; 4];
        self.read(v, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Read many regions in one physical batch (plus one batch per page-table level for
    /// addresses outside the linear windows), through the one virtual-memory reader
    /// ([`vread`](super::vread)). One result per region, in order; a region longer than
    /// [`MAX_READ`] fails without allocating.
    pub fn read_many(&self, regions: &[(KVirt, usize)]) -> Vec<Result<Vec<u8>, KSpaceError>> {
        let ok: Vec<(&KernelSpace<'m>, KVirt, usize)> =
            regions.iter().filter(|&&(_, len)| len <= MAX_READ).map(|&(v, len)| (self, v, len)).collect();
        let mut read = vread::read_many(self.mem, &ok).into_iter();
        regions
            .iter()
            .map(|&(addr, len)| {
                if len > MAX_READ {
                    return Err(KSpaceError::TooLong { addr, len });
                }
                read.next().unwrap_or(Err((Vec::new(), KSpaceError::Unmapped { addr }))).map_err(|(_, e)| e)
            })
            .collect()
    }
}

/// Kernel space as the virtual-memory reader sees it: a region inside one linear window is one
/// piece; a piece outside them is walked through the kernel's page tables, if known.
impl Translator for &KernelSpace<'_> {
    type Addr = KVirt;
    type Error = KSpaceError;
    fn contiguous(&self, v: KVirt, len: usize) -> bool {
        len == 0
            || (self.linear(v).is_some()
                && v.checked_add(len as u64 - 1).is_some_and(|e| self.linear(e).is_some() && self.in_image(e) == self.in_image(v)))
    }
    fn place(&self, addr: KVirt) -> Result<Place, KSpaceError> {
        match (self.linear(addr), self.page_tables) {
            (Some(p), _) => Ok(Place::Phys(p)),
            (None, Some(pt)) => Ok(Place::Walk(pt)),
            (None, None) => Err(KSpaceError::Unmapped { addr }),
        }
    }
    fn paging_error(&self, addr: KVirt, source: PagingError<KVirt>) -> KSpaceError {
        KSpaceError::Paging { addr, source }
    }
    fn mem_error(&self, addr: KVirt, phys: PhysAddr, source: MemError) -> KSpaceError {
        KSpaceError::Mem { addr, phys, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::introspect::paging::X86_64_4LEVEL;
    use crate::introspect::testutil::VecMem;

    #[test]
    fn a_read_longer_than_the_cap_fails_before_allocating() {
        let mut mem = VecMem::new(1 << 20);
        mem.write_u64(0x1000, 0x1122_3344_5566_7788);
        let space = KernelSpace::new(&mem, 0, Some(PAGE_OFFSET_L4), &X86_64_4LEVEL);
        let at = KVirt(PAGE_OFFSET_L4.0 + 0x1000);
        // A length from guest memory (a BTF member size, a `desc_len`) near usize::MAX.
        let out = space.read_many(&[(at, usize::MAX), (at, 8), (at, MAX_READ + 1)]);
        assert!(matches!(out[0], Err(KSpaceError::TooLong { len: usize::MAX, .. })));
        assert_eq!(out[1].as_ref().unwrap(), &0x1122_3344_5566_7788u64.to_le_bytes());
        assert!(matches!(out[2], Err(KSpaceError::TooLong { .. })));
        assert_eq!(out[0].as_ref().unwrap_err().addr(), at);
    }
}

/// What a read of many ranges returns: one result per range, an error text on failure.
pub type Reads = Vec<Result<Vec<u8>, String>>;
/// Reads many kernel virtual ranges at once (the walkers of kernel data structures take one).
pub type ReadMany<'r> = dyn FnMut(&[(u64, usize)]) -> Reads + 'r;

/// A [`ReadMany`] through a kernel address space.
pub fn space_reader<'k>(space: &'k KernelSpace<'_>) -> impl FnMut(&[(u64, usize)]) -> Reads + 'k {
    move |regions: &[(u64, usize)]| {
        let r: Vec<(KVirt, usize)> = regions.iter().map(|&(a, l)| (KVirt(a), l)).collect();
        space.read_many(&r).into_iter().map(|x| x.map_err(|e| e.to_string())).collect()
    }
}
