//! The one virtual-memory reader: regions of a virtual address space read with one
//! level-synchronous page-table walk (one batch per level) and one batch of physical reads.
//! Kernel space ([`KernelSpace::read_many`](super::kspace::KernelSpace::read_many): linear
//! windows, else the kernel's page tables) and a process's user space
//! ([`read_user_many`](super::cmdline::read_user_many): its own page tables) are two
//! [`Translator`]s over it; [`read_virt`] is a third, for one read through given tables.
//!
//! Invariant: a region is split into 4 KiB pieces unless its translator says it is physically
//! contiguous; every piece is translated and read in the same two rounds whatever the
//! translator; a region's result holds either all its bytes, or the bytes of the pieces before
//! the first one that failed together with that piece's error (naming its virtual address).

use std::marker::PhantomData;

use emulator::mem::{MemError, PhysAddr, PhysMem, ReadOp};

use super::addr::Virt;
use super::paging::{translate_many, PageTables, PagingError};

const PAGE: u64 = 4096;

/// Where one piece of a read lies.
#[derive(Debug, Clone, Copy)]
pub enum Place {
    /// At this physical address, without a walk (a linear window).
    Phys(PhysAddr),
    /// Wherever these page tables map it.
    Walk(PageTables),
}

/// An address space a read goes through, its address type, and the errors of its addresses.
pub trait Translator {
    /// The virtual addresses of this space.
    type Addr: Virt;
    type Error;
    /// Whether `[va, va + len)` is read as one piece (it is physically contiguous).
    fn contiguous(&self, va: Self::Addr, len: usize) -> bool;
    /// Where the piece at `va` lies, or why it has no physical address at all.
    fn place(&self, va: Self::Addr) -> Result<Place, Self::Error>;
    /// The walk for `va` failed.
    fn paging_error(&self, va: Self::Addr, source: PagingError<Self::Addr>) -> Self::Error;
    /// The physical read of the piece at `va` (at `phys`) failed.
    fn mem_error(&self, va: Self::Addr, phys: PhysAddr, source: MemError) -> Self::Error;
}

/// The bytes of one region, or those read before the first failing piece and its error.
pub type RegionRead<E> = Result<Vec<u8>, (Vec<u8>, E)>;

/// Reads every `(translator, va, len)` region: one walk for all pieces that need one, then one
/// physical batch. One result per region, in order.
pub fn read_many<T: Translator>(mem: &dyn PhysMem, regions: &[(T, T::Addr, usize)]) -> Vec<RegionRead<T::Error>> {
    // Pieces: (region, va, len).
    let mut pieces: Vec<(usize, T::Addr, usize)> = Vec::new();
    for (i, (t, va, len)) in regions.iter().enumerate() {
        if t.contiguous(*va, *len) {
            pieces.push((i, *va, *len));
            continue;
        }
        let mut off = 0usize;
        while off < *len {
            let cur = T::Addr::from_raw(va.raw().wrapping_add(off as u64));
            let n = ((PAGE - (cur.raw() & (PAGE - 1))) as usize).min(len - off);
            pieces.push((i, cur, n));
            off += n;
        }
    }
    // Where each piece is: known, to be walked (all walks together), or nowhere.
    let mut phys: Vec<Result<PhysAddr, T::Error>> = Vec::with_capacity(pieces.len());
    let mut walks: Vec<(usize, (PageTables, T::Addr))> = Vec::new();
    for (k, &(i, va, _)) in pieces.iter().enumerate() {
        phys.push(match regions[i].0.place(va) {
            Ok(Place::Phys(p)) => Ok(p),
            Ok(Place::Walk(pt)) => {
                walks.push((k, (pt, va)));
                Ok(PhysAddr(0))
            }
            Err(e) => Err(e),
        });
    }
    if !walks.is_empty() {
        let reqs: Vec<(PageTables, T::Addr)> = walks.iter().map(|&(_, r)| r).collect();
        for (&(k, (_, va)), r) in walks.iter().zip(translate_many(mem, &reqs)) {
            let t = &regions[pieces[k].0].0;
            phys[k] = r.map(|t| t.phys).map_err(|source| t.paging_error(va, source));
        }
    }
    // Every placed piece in one batch.
    let mut bufs: Vec<Vec<u8>> = pieces.iter().map(|&(_, _, n)| vec![0u8; n]).collect();
    let readable: Vec<usize> = (0..pieces.len()).filter(|&k| phys[k].is_ok()).collect();
    let results = {
        let mut slots: Vec<Option<&mut Vec<u8>>> = bufs.iter_mut().map(Some).collect();
        let mut ops: Vec<ReadOp<'_>> = Vec::with_capacity(readable.len());
        for &k in &readable {
            if let (Ok(addr), Some(buf)) = (&phys[k], slots[k].take()) {
                ops.push(ReadOp { addr: *addr, buf: buf.as_mut_slice() });
            }
        }
        mem.read_batch(&mut ops)
    };
    for (&k, r) in readable.iter().zip(results) {
        if let Err(source) = r {
            let p = *phys[k].as_ref().unwrap_or(&PhysAddr(0));
            phys[k] = Err(regions[pieces[k].0].0.mem_error(pieces[k].1, p, source));
        }
    }
    // Reassemble per region; the first failing piece ends its region.
    let mut out: Vec<RegionRead<T::Error>> = regions.iter().map(|&(_, _, len)| Ok(Vec::with_capacity(len))).collect();
    for ((&(i, ..), p), buf) in pieces.iter().zip(phys).zip(bufs) {
        let slot = &mut out[i];
        if let Ok(v) = slot {
            match p {
                Ok(_) => v.extend_from_slice(&buf),
                Err(e) => *slot = Err((std::mem::take(v), e)),
            }
        }
    }
    out
}

/// Through one set of page tables only (user space, or [`read_virt`]), in the address space `V`.
#[derive(Debug, Clone, Copy)]
pub struct Tables<V>(pub PageTables, PhantomData<V>);

impl<V: Virt> Tables<V> {
    pub fn new(pt: PageTables) -> Self {
        Tables(pt, PhantomData)
    }
}

impl<V: Virt> Translator for Tables<V> {
    type Addr = V;
    type Error = PagingError<V>;
    fn contiguous(&self, _: V, _: usize) -> bool {
        false
    }
    fn place(&self, _: V) -> Result<Place, PagingError<V>> {
        Ok(Place::Walk(self.0))
    }
    fn paging_error(&self, _: V, source: PagingError<V>) -> PagingError<V> {
        source
    }
    fn mem_error(&self, va: V, _: PhysAddr, source: MemError) -> PagingError<V> {
        PagingError::Mem { va, level: "page", source }
    }
}

/// Read `buf.len()` bytes of virtual memory at `va` through `pt`. On failure, the bytes before
/// the first page that does not translate or read are filled and their count reported.
pub fn read_virt<V: Virt>(mem: &dyn PhysMem, pt: PageTables, va: V, buf: &mut [u8]) -> Result<(), (usize, PagingError<V>)> {
    match read_many(mem, &[(Tables::new(pt), va, buf.len())]).pop() {
        Some(Ok(bytes)) => {
            buf.copy_from_slice(&bytes);
            Ok(())
        }
        Some(Err((done, e))) => {
            buf[..done.len()].copy_from_slice(&done);
            Err((done.len(), e))
        }
        None => Err((0, PagingError::NonCanonical { va, format: pt.format.name })),
    }
}
