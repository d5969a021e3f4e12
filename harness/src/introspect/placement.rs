//! Where the kernel image is mapped virtually, when kallsyms cannot say.
//!
//! A pc-relative kallsyms table (7.x) gives every symbol's *physical* address (the table's own
//! address plus the stored offset) but no virtual one, and KASLR moves the physical and the
//! virtual placement independently. Two independent answers, the first that exists wins:
//! 1. VMCOREINFO, where the kernel exports it and kallsyms has data symbols: `vmcoreinfo_data`
//!    (a direct-map pointer, translated with the `page_offset_base` variable) leads to the
//!    text whose `SYMBOL(kallsyms_offsets)` is the table's virtual address (6.x on export it).
//! 2. `.data` itself: an empty `struct list_head` points at
//! itself (`next == prev == &head`), and a kernel has hundreds of statically initialised heads
//! (`LIST_HEAD(x)`) that are empty or were never used. Each 16-byte pair `(x, x)` at physical
//! address `p` with `x` in the kernel-image range votes for `delta = x - p`; the image mapping is
//! one linear offset, so the true delta collects the votes while chance pairs scatter.
//!
//! Invariant: reads are bounded (`SPAN` bytes in `CHUNK` pieces from the start of `.data`); a
//! delta is returned only with at least `MIN_VOTES` votes, `DOMINANCE` times the runner-up's,
//! page aligned, and placing the start of the search inside the kernel-image range.

use std::collections::HashMap;

use emulator::mem::{PhysAddr, PhysMem};

use emulator::bytes::Bytes;
use super::kallsyms::{Kallsyms, KallsymsError};
use super::physread::{read_u64, read_vec};
use super::vmcoreinfo::{self, VmcoreInfo};

const SPAN: u64 = 4 << 20;
const CHUNK: u64 = 256 << 10;
const MIN_VOTES: usize = 4;
const DOMINANCE: usize = 3;
/// Enough votes to stop reading early.
const CONFIDENT: usize = 32;
/// `__START_KERNEL_map` and the end of the kernel-image range (`KERNEL_IMAGE_SIZE`, 1 GiB).
const IMAGE_START: u64 = 0xffff_ffff_8000_0000;
const IMAGE_END: u64 = 0xffff_ffff_c000_0000;

#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    #[error(transparent)]
    Kallsyms(#[from] KallsymsError),
    #[error("image placement: no self-pointing list heads agree in {span:#x} bytes of .data from {from} (best {best} votes, runner-up {second})")]
    NoConsensus { from: PhysAddr, span: u64, best: usize, second: usize },
}

/// The symbols [`image_delta`] looks up: VMCOREINFO's note and the direct map's base, then
/// the start of `.data`.
const FROM_VMCOREINFO: [&str; 2] = ["vmcoreinfo_data", "page_offset_base"];
const FROM_LIST_HEADS: [&str; 3] = ["_sdata", "__start_init_task", "init_task"];

/// Every symbol [`image_delta`] may look up (for a caller that looks them up ahead, together).
pub fn symbols() -> impl Iterator<Item = &'static str> {
    FROM_VMCOREINFO.into_iter().chain(FROM_LIST_HEADS)
}

/// `virtual - physical` of the kernel image, and which answer gave it.
pub fn image_delta(mem: &dyn PhysMem, kallsyms: &Kallsyms) -> Result<(u64, &'static str), PlacementError> {
    if let Some(d) = from_vmcoreinfo(mem, kallsyms)? {
        return Ok((d, "vmcoreinfo SYMBOL(kallsyms_offsets)"));
    }
    Ok((from_list_heads(mem, kallsyms)?, "self-pointing list heads in .data"))
}

/// The delta from VMCOREINFO's `SYMBOL(kallsyms_offsets)`; `None` when any step is missing.
fn from_vmcoreinfo(mem: &dyn PhysMem, kallsyms: &Kallsyms) -> Result<Option<u64>, PlacementError> {
    let syms = kallsyms.image_phys(mem, &FROM_VMCOREINFO)?;
    let (Some(data), Some(pob)) = (syms[0], syms[1]) else { return Ok(None) };
    let (Ok(ptr), Ok(base)) = (read_u64(mem, data), read_u64(mem, pob)) else { return Ok(None) };
    // The direct map lies in the kernel half, below the image; the note page is inside it.
    if base < 0xff00_0000_0000_0000 || ptr < base || base >= IMAGE_START {
        return Ok(None);
    }
    let Ok(page) = read_vec(mem, PhysAddr(ptr - base), vmcoreinfo::MAX_BYTES) else { return Ok(None) };
    let info = VmcoreInfo::parse(&page);
    let Some(virt) = info.symbol("kallsyms_offsets") else { return Ok(None) };
    let delta = virt.0.wrapping_sub(kallsyms.location.offsets.0);
    Ok((delta % 4096 == 0 && (IMAGE_START..IMAGE_END).contains(&virt.0)).then_some(delta))
}

/// `virtual - physical` of the kernel image, voted by the empty list heads of `.data`.
fn from_list_heads(mem: &dyn PhysMem, kallsyms: &Kallsyms) -> Result<u64, PlacementError> {
    // `.data` begins at `_sdata`, with `init_task` early in it; without those symbols (no
    // CONFIG_KALLSYMS_ALL), at the first 2 MiB boundary after the kallsyms tables, which are
    // the end of `.rodata`'s large objects.
    let syms = kallsyms.image_phys(mem, &FROM_LIST_HEADS)?;
    let from = syms.into_iter().flatten().min().unwrap_or(PhysAddr(kallsyms.end().0.saturating_add((2 << 20) - 1) & !((2 << 20) - 1)));
    let mut votes: HashMap<u64, usize> = HashMap::new();
    let mut off = 0u64;
    while off < SPAN {
        let at = PhysAddr(from.0.saturating_add(off));
        let Ok(chunk) = read_vec(mem, at, (CHUNK + 8) as usize) else { break };
        count_pairs(at, &chunk, &mut votes);
        off += CHUNK;
        if ranked(&votes).0 >= CONFIDENT {
            break;
        }
    }
    let (best, second, delta) = ranked(&votes);
    let in_image = from.0.wrapping_add(delta);
    if best >= MIN_VOTES && best >= DOMINANCE * second && (IMAGE_START..IMAGE_END).contains(&in_image) {
        tracing::debug!(delta = format!("{delta:#x}"), best, second, "image placed by self-pointing list heads");
        Ok(delta)
    } else {
        Err(PlacementError::NoConsensus { from, span: off, best, second })
    }
}

/// Votes of one chunk read at `at`: every 8-aligned `(x, x)` with `x` in the image range and
/// `x - p` page aligned.
fn count_pairs(at: PhysAddr, chunk: &[u8], votes: &mut HashMap<u64, usize>) {
    let b = Bytes::new(chunk);
    let mut p = 0usize;
    while p + 16 <= chunk.len() {
        if let (Ok(x), Ok(y)) = (b.u64(p), b.u64(p + 8)) {
            if x == y && (IMAGE_START..IMAGE_END).contains(&x) {
                let delta = x.wrapping_sub(at.0 + p as u64);
                if delta % 4096 == 0 {
                    *votes.entry(delta).or_default() += 1;
                }
            }
        }
        p += 8;
    }
}

/// (best count, runner-up count, best delta).
fn ranked(votes: &HashMap<u64, usize>) -> (usize, usize, u64) {
    let mut v: Vec<(usize, u64)> = votes.iter().map(|(&d, &c)| (c, d)).collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    (v.first().map_or(0, |x| x.0), v.get(1).map_or(0, |x| x.0), v.first().map_or(0, |x| x.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_pointing_heads_vote_for_one_delta() {
        let at = PhysAddr(0x300_0000);
        let delta = 0xffff_ffff_8000_0000u64 + 0x2a0_0000 - 0x300_0000;
        let mut chunk = vec![0u8; 4096];
        for k in [0usize, 5, 9, 40, 100] {
            let p = k * 32;
            let x = (at.0 + p as u64).wrapping_add(delta);
            chunk[p..p + 8].copy_from_slice(&x.to_le_bytes());
            chunk[p + 8..p + 16].copy_from_slice(&x.to_le_bytes());
        }
        // A stray pair of equal kernel pointers (two ops pointing at one function).
        chunk[2048..2056].copy_from_slice(&0xffff_ffff_8123_4560u64.to_le_bytes());
        chunk[2056..2064].copy_from_slice(&0xffff_ffff_8123_4560u64.to_le_bytes());
        let mut votes = HashMap::new();
        count_pairs(at, &chunk, &mut votes);
        let (best, second, d) = ranked(&votes);
        assert_eq!((best, d), (5, delta));
        assert!(second <= 1);
    }
}
