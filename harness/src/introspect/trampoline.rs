//! Where the kernel's own page tables say its image lies: x86-64's real-mode trampoline.
//!
//! ```text
//!   low memory (< 1 MiB)            the kernel image's tables (in its .data)
//!   real_mode_header ── u32s ──▶ trampoline_pgd[511] ─▶ PDPT[510] ─▶ PD: 2 MiB frames
//!   (start of the real-mode blob)   (= init_top_pgt[511])              .text (RO, X), .rodata (RO, NX), .data ...
//! ```
//!
//! At boot the kernel copies its real-mode blob to a page-aligned place below 1 MiB (allocated
//! top-down, so usually just under the EBDA) and keeps it for waking secondary CPUs, resume and
//! reboot. The blob starts with `real_mode_header`: a run of u32 physical addresses inside the
//! blob, one of which is `trampoline_pgd`, a top-level page table whose last entry is the
//! kernel's own (`init_top_pgt[511]`). The header's fields changed with versions and configs
//! (`trampoline_status`, `sev_es_trampoline_start`, `trampoline_start64`), so no field is taken
//! by its index: each page-aligned address in the header is walked as a page table over the
//! kernel image's gigabyte (`__START_KERNEL_map`), and one that maps 2 MiB frames there
//! answers. Those frames, in virtual order, are the image: `.text` (read-only, executable)
//! first, `.rodata` (read-only, no-execute) from the 2 MiB boundary after it, where
//! `linux_banner` is. A frame the kernel split into 4 KiB pages (where sections share a frame)
//! is placed by the image's physical continuity from its first frame; its table is not read.
//!
//! It is a hint and nothing more: [`super::scan`] reads these frames first, and trusts one only
//! once kallsyms is found after its banner, as for any frame; without a header, or with tables
//! that map nothing, the scan reads every frame as before. The cost does not grow with RAM:
//! one batch of 64 bytes from each low page (the 128 KiB under 640 KiB first, where the blob
//! lands on PCs), then three dependent reads (8 B, 8 B, and the PD's entries for the image).
//!
//! Invariant: reads are bounded (at most [`LOW_PAGES`] header windows, [`MAX_HEADERS`] headers
//! whose [`MAX_TABLES_TRIED`] page tables are walked with at most 3 tables each per paging
//! format, [`MAX_FRAMES`] frames returned), so low memory made of fake headers costs a few dozen
//! round trips; an address from guest memory is only read, never trusted.

use emulator::mem::{PhysAddr, PhysMem};

use super::paging::{self, PageTables, X86_64_4LEVEL, X86_64_5LEVEL};
use super::physread::read_many;
use emulator::bytes::Bytes;

/// Pages below 1 MiB (the real-mode blob must be there).
pub const LOW_PAGES: u64 = 256;
/// Pages read in the first batch: the 128 KiB under 640 KiB (the EBDA and the legacy hole
/// above it are the firmware's), where a PC's top-down allocation puts the blob.
const FIRST_PAGES: std::ops::Range<u64> = 0x80..0xa0;
/// Bytes of each page read as a possible header (16 u32; the header has 7 to 12).
const HEADER_BYTES: usize = 64;
/// Largest real-mode blob: every address in its header lies this close above its start.
const BLOB_MAX: u64 = 64 << 10;
/// Leading words of a header that must all point inside its blob (text start, read-only end,
/// trampoline start, trampoline header: present in every version).
const LEADING: usize = 4;
/// Page tables tried per header (its page-aligned addresses other than its text).
pub const MAX_TABLES_TRIED: usize = 4;
/// Headers whose tables are walked (the kernel keeps one blob; more are garbage or hostile).
pub const MAX_HEADERS: usize = 4;
/// Most frames returned (the image's gigabyte holds 512).
pub const MAX_FRAMES: usize = 512;
/// Bytes of a frame (a PD entry's page).
const FRAME: u64 = 2 << 20;
/// The kernel image's gigabyte of virtual addresses (`__START_KERNEL_map` to the modules).
const IMAGE_MAP: (u64, u64) = (0xffff_ffff_8000_0000, 0xffff_ffff_c000_0000);

/// The kernel image's 2 MiB frames as its page tables map them, in virtual order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFrames {
    /// Where the real-mode header was.
    pub header: PhysAddr,
    /// The page table that mapped the image (`trampoline_pgd`).
    pub root: PhysAddr,
    pub frames: Vec<Frame>,
}

/// One 2 MiB frame of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub virt: u64,
    pub phys: PhysAddr,
    /// The frame's permissions where one entry maps it whole; `None` where it is split into
    /// 4 KiB pages (its table is not read: its place is `phys` by the image's continuity).
    pub access: Option<Access>,
}

/// What a 2 MiB mapping allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub writable: bool,
    pub executable: bool,
}

impl ImageFrames {
    /// The frames in the order a banner search should try them: read-only no-execute ones
    /// (`.rodata`) first; then the split ones after the last executable frame (a `.rodata`
    /// start that shares its frame with other sections); then the rest in virtual order.
    pub fn banner_order(&self) -> Vec<PhysAddr> {
        let text_end = self.frames.iter().filter(|f| f.access.is_some_and(|a| a.executable)).map(|f| f.virt).max().unwrap_or(0);
        let rank = |f: &Frame| match f.access {
            Some(Access { writable: false, executable: false }) => 0,
            None if f.virt > text_end => 1,
            _ => 2,
        };
        let mut order: Vec<&Frame> = self.frames.iter().collect();
        order.sort_by_key(|f| (rank(f), f.virt));
        order.into_iter().map(|f| f.phys).collect()
    }
}

/// Whether `words`, read at page `base`, look like a `real_mode_header`: its leading fields
/// point inside a blob starting there, its text start on a page boundary after the header.
fn is_header(base: u64, words: &[u32]) -> bool {
    let inside = |v: u32| (base..base + BLOB_MAX).contains(&u64::from(v));
    words.len() >= LEADING
        && words[..LEADING].iter().all(|&v| inside(v))
        && u64::from(words[0]) > base
        && words[0].is_multiple_of(4096)
        && words[1] > words[0]
}

/// Page-aligned addresses inside the blob named by the header (candidates for its page table):
/// every word of the header's run of in-blob words but the text start, in order, deduplicated.
fn table_candidates(base: u64, words: &[u32]) -> Vec<PhysAddr> {
    let mut out: Vec<PhysAddr> = Vec::new();
    for &v in words.iter().skip(1).take_while(|&&v| (base..base + BLOB_MAX).contains(&u64::from(v))) {
        let a = PhysAddr(u64::from(v));
        if v.is_multiple_of(4096) && v != words[0] && !out.contains(&a) && out.len() < MAX_TABLES_TRIED {
            out.push(a);
        }
    }
    out
}

/// The kernel image's frames, from the real-mode trampoline's page table; `None` if no header
/// is found below 1 MiB or none of its tables maps 2 MiB frames of the image.
pub fn image_frames(mem: &dyn PhysMem) -> Option<ImageFrames> {
    let first: Vec<u64> = FIRST_PAGES.rev().collect();
    let rest: Vec<u64> = (1..LOW_PAGES).rev().filter(|p| !FIRST_PAGES.contains(p)).collect();
    let mut headers = 0;
    for pages in [first, rest] {
        let regions: Vec<(PhysAddr, usize)> = pages.iter().map(|&p| (PhysAddr(p * 4096), HEADER_BYTES)).collect();
        for (&page, read) in pages.iter().zip(read_many(mem, &regions)) {
            let Ok(bytes) = read else { continue };
            let b = Bytes::new(&bytes);
            let words: Vec<u32> = (0..HEADER_BYTES / 4).map_while(|i| b.u32(4 * i).ok()).collect();
            let base = page * 4096;
            if !is_header(base, &words) {
                continue;
            }
            if let Some(found) = walk_tables(mem, PhysAddr(base), &table_candidates(base, &words)) {
                return Some(found);
            }
            headers += 1;
            if headers == MAX_HEADERS {
                return None;
            }
        }
    }
    None
}

/// The first of `tables` that maps 2 MiB frames in the image's gigabyte (4-level, then 5-level).
fn walk_tables(mem: &dyn PhysMem, header: PhysAddr, tables: &[PhysAddr]) -> Option<ImageFrames> {
    for format in [&X86_64_4LEVEL, &X86_64_5LEVEL] {
        for &root in tables {
            // Down to the PD: its 2 MiB frames; the frames it splits are placed by continuity.
            let levels = format.levels.len() - 1;
            let m = paging::mapped(mem, PageTables::new(root, format), IMAGE_MAP.0, IMAGE_MAP.1, levels, MAX_FRAMES);
            let large: Vec<Frame> = m
                .pages
                .iter()
                .filter(|p| p.size == FRAME)
                .map(|p| Frame { virt: p.va, phys: p.phys, access: Some(Access { writable: p.writable, executable: p.executable }) })
                .collect();
            let Some(first) = large.first().copied() else { continue };
            let split = m.unread.iter().filter(|&&(va, _)| va >= first.virt).filter_map(|&(virt, _)| {
                let phys = first.phys.0.checked_add(virt - first.virt)?;
                Some(Frame { virt, phys: PhysAddr(phys), access: None })
            });
            let mut frames: Vec<Frame> = large.iter().copied().chain(split).collect();
            frames.sort_by_key(|f| f.virt);
            frames.truncate(MAX_FRAMES);
            tracing::debug!(%header, %root, frames = frames.len(), "kernel image frames from the real-mode trampoline");
            return Some(ImageFrames { header, root, frames });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::introspect::testutil::VecMem;

    /// A low-memory header at 0x98000 naming a page table at 0x9c000 that maps the image's
    /// gigabyte through a PDPT and a PD: text at 0x5c00000 (2 frames), rodata (2), a split
    /// frame, data (1).
    fn machine(header_words: &[u32]) -> VecMem {
        let mut m = VecMem::new(0x800_0000);
        for (i, &w) in header_words.iter().enumerate() {
            m.write_u32(0x98000 + 4 * i as u64, w);
        }
        let (pdpt, pd) = (0x761_5000u64, 0x761_6000u64);
        m.write_u64(0x9c000 + 8 * 511, pdpt | 0x67);
        m.write_u64(pdpt + 8 * 510, pd | 0x63);
        let large = |phys: u64, flags: u64| phys | flags | 0x1e1;
        let nx = 1u64 << 63;
        let entries = [(316, large(0x5c0_0000, 0)), (317, large(0x5e0_0000, 0)), (318, large(0x600_0000, nx)), (319, large(0x620_0000, nx)), (320, 0x2aa_0063), (321, large(0x660_0000, nx | 2))];
        for (i, e) in entries {
            m.write_u64(pd + 8 * i, e);
        }
        m
    }

    const HEADER_61: [u32; 12] = [0x99000, 0x9a0f4, 0x99000, 0x9d000, 0x99050, 0x9a0e0, 0x9c000, 0x991f0, 0x9b010, 0x9a080, 0x8, 0];

    #[test]
    fn frames_come_from_the_trampoline_tables_rodata_first() {
        let f = image_frames(&machine(&HEADER_61)).expect("found");
        assert_eq!((f.header, f.root), (PhysAddr(0x98000), PhysAddr(0x9c000)));
        let phys: Vec<u64> = f.frames.iter().map(|f| f.phys.0).collect();
        // The split frame (entry 320) is placed by continuity from the first.
        assert_eq!(phys, [0x5c0_0000, 0x5e0_0000, 0x600_0000, 0x620_0000, 0x640_0000, 0x660_0000]);
        assert_eq!(f.frames[0].virt, 0xffff_ffff_8000_0000 + 316 * (2 << 20));
        assert_eq!(f.frames[4].access, None);
        let order: Vec<u64> = f.banner_order().iter().map(|a| a.0).collect();
        assert_eq!(order, [0x600_0000, 0x620_0000, 0x640_0000, 0x5c0_0000, 0x5e0_0000, 0x660_0000]);
    }

    /// Other versions' headers: without `sev_es_trampoline_start`, with `trampoline_status`.
    #[test]
    fn the_table_is_found_whatever_its_field() {
        for header in [[0x99000u32, 0x9a0f4, 0x99000, 0x9d000, 0x9a0e0, 0x9c000, 0x991f0], [0x99000, 0x9a0f4, 0x99000, 0x9d010, 0x9d000, 0x9c000, 0x991f0]] {
            assert_eq!(image_frames(&machine(&header)).map(|f| f.root), Some(PhysAddr(0x9c000)));
        }
    }

    /// An image whose `.rodata` frame is split into pages: the split frames after the text
    /// come first.
    #[test]
    fn split_frames_after_the_text_come_first() {
        let mut m = machine(&HEADER_61);
        m.write_u64(0x761_6000 + 8 * 318, 0x2ab_0063);
        m.write_u64(0x761_6000 + 8 * 319, 0x2ab_1063);
        let order: Vec<u64> = image_frames(&m).expect("found").banner_order().iter().map(|a| a.0).collect();
        assert_eq!(order, [0x600_0000, 0x620_0000, 0x640_0000, 0x5c0_0000, 0x5e0_0000, 0x660_0000]);
    }

    #[test]
    fn no_header_or_empty_tables_give_none() {
        assert_eq!(image_frames(&VecMem::new(0x10_0000)), None);
        // A header whose table maps nothing (the table page is zero).
        let mut m = VecMem::new(0x10_0000);
        for (i, &w) in HEADER_61.iter().enumerate() {
            m.write_u32(0x98000 + 4 * i as u64, w);
        }
        assert_eq!(image_frames(&m), None);
        // Words that leave the blob are not a header.
        assert!(!is_header(0x98000, &[0x99000, 0x9a0f4, 0x99000, 0x200000]));
        assert!(!is_header(0x98000, &[0x99001, 0x9a0f4, 0x99000, 0x9d000]));
    }

    /// Low memory full of headers whose tables map nothing: only the first few are walked.
    #[test]
    fn fake_headers_cost_a_bounded_walk() {
        let mut m = VecMem::new(0x10_0000);
        for page in 1..LOW_PAGES {
            let base = (page * 4096) as u32;
            for (i, w) in [base + 0x1000, base + 0x2000, base + 0x1000, base + 0x3000, base + 0x4000, base + 0x5000].into_iter().enumerate() {
                m.write_u32(u64::from(base) + 4 * i as u64, w);
            }
        }
        let counted = emulator::mem::Counting::new(&m);
        assert_eq!(image_frames(&counted), None);
        let c = counted.snapshot();
        // Two batches of header windows, then per header at most its tables' roots, 2 formats.
        assert!(c.batches <= 2 + (MAX_HEADERS * MAX_TABLES_TRIED * 2) as u64, "{} round trips", c.batches);
    }

    /// Tables that point anywhere (at themselves, past memory) end the walk without a frame.
    #[test]
    fn hostile_tables_end() {
        let mut m = machine(&HEADER_61);
        m.write_u64(0x9c000 + 8 * 511, 0x9c000 | 0x67);
        m.write_u64(0x9c000 + 8 * 510, 0xffff_ffff_f000 | 0x67);
        assert_eq!(image_frames(&m), None);
    }
}
