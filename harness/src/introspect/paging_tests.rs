//! Page-table walks against tables built here by hand, including the edges.

use super::*;
use crate::introspect::addr::{KVirt, UVirt};
use crate::introspect::vread::read_virt;
use emulator::mem::Counting;
use crate::introspect::testutil::VecMem;

const P: u64 = 1; // present
const RW: u64 = 2;
const PS: u64 = 1 << 7;
const PAT_LARGE: u64 = 1 << 12;
const NX: u64 = 1 << 63;

/// Builds x86-64 page tables in a `VecMem`, allocating table pages from `next`.
struct Builder {
    mem: VecMem,
    next: u64,
    root: u64,
    levels: usize,
}

impl Builder {
    fn new(levels: usize) -> Self {
        let mut b = Builder { mem: VecMem::new(16 << 20), next: 0x10_0000, root: 0, levels };
        b.root = b.alloc();
        b
    }

    fn alloc(&mut self) -> u64 {
        let a = self.next;
        self.next += 0x1000;
        a
    }

    fn entry_addr(table: u64, va: u64, shift: u32) -> u64 {
        table + ((va >> shift) & 0x1ff) * 8
    }

    fn read(&self, addr: u64) -> u64 {
        let mut b = [0u8; 8];
        self.mem.read_phys(PhysAddr(addr), &mut b).unwrap();
        u64::from_le_bytes(b)
    }

    /// Map `va` to `pa` with a page of `size` (4 KiB, 2 MiB or 1 GiB); `extra` flags on the leaf.
    fn map(&mut self, va: u64, pa: u64, size: u64, extra: u64) {
        let shifts: Vec<u32> = if self.levels == 5 { vec![48, 39, 30, 21, 12] } else { vec![39, 30, 21, 12] };
        let leaf_shift = size.trailing_zeros();
        let mut table = self.root;
        for &shift in &shifts {
            let ea = Self::entry_addr(table, va, shift);
            if shift == leaf_shift {
                let ps = if shift > 12 { PS } else { 0 };
                self.mem.write_u64(ea, pa | P | RW | ps | extra);
                return;
            }
            let e = self.read(ea);
            table = if e & P != 0 {
                e & X86_64_4LEVEL.addr_mask
            } else {
                let t = self.alloc();
                self.mem.write_u64(ea, t | P | RW);
                t
            };
        }
    }

    fn pt(&self) -> PageTables {
        let fmt = if self.levels == 5 { &X86_64_5LEVEL } else { &X86_64_4LEVEL };
        PageTables::new(PhysAddr(self.root), fmt)
    }
}

#[test]
fn four_kib_page() {
    let mut b = Builder::new(4);
    b.map(0xffff_8880_0012_3000, 0x45_6000, 0x1000, NX);
    let t = b.pt().translate(&b.mem, KVirt(0xffff_8880_0012_3abc)).unwrap();
    assert_eq!(t, Translation { phys: PhysAddr(0x45_6abc), page_size: 0x1000 });
    assert_eq!(t.remaining_in_page(), 0x1000 - 0xabc);
}

#[test]
fn two_mib_page_ignores_pat_bit() {
    let mut b = Builder::new(4);
    b.map(0xffff_ffff_8100_0000, 0x0200_0000, 2 << 20, PAT_LARGE);
    let t = b.pt().translate(&b.mem, KVirt(0xffff_ffff_8112_3456)).unwrap();
    assert_eq!(t, Translation { phys: PhysAddr(0x0212_3456), page_size: 2 << 20 });
}

#[test]
fn one_gib_page() {
    let mut b = Builder::new(4);
    b.map(0xffff_8880_0000_0000, 0x4000_0000, 1 << 30, 0);
    let t = b.pt().translate(&b.mem, KVirt(0xffff_8880_3fff_fff0)).unwrap();
    assert_eq!(t, Translation { phys: PhysAddr(0x7fff_fff0), page_size: 1 << 30 });
}

#[test]
fn five_level() {
    let mut b = Builder::new(5);
    b.map(0xff11_0000_0010_0000, 0x30_0000, 0x1000, 0);
    let t = b.pt().translate(&b.mem, KVirt(0xff11_0000_0010_0008)).unwrap();
    assert_eq!(t.phys, PhysAddr(0x30_0008));
    // The same address is not canonical for 4-level paging.
    let four = PageTables::new(PhysAddr(b.root), &X86_64_4LEVEL);
    assert!(matches!(
        four.translate(&b.mem, KVirt(0xff11_0000_0010_0008)),
        Err(PagingError::NonCanonical { .. })
    ));
}

#[test]
fn not_present_at_each_level_names_the_level() {
    let mut b = Builder::new(4);
    b.map(0x0000_7f00_0000_0000, 0x50_0000, 0x1000, 0);
    let pt = b.pt();
    let cases = [
        (0x0000_0000_0000_1000u64, "PML4"),
        (0x0000_7f40_0000_0000, "PDPT"),
        (0x0000_7f00_0020_0000, "PD"),
        (0x0000_7f00_0000_1000, "PT"),
    ];
    for (va, want) in cases {
        match pt.translate(&b.mem, UVirt(va)) {
            Err(PagingError::NotPresent { level, va: got, .. }) => {
                assert_eq!((level, got), (want, UVirt(va)));
            }
            other => panic!("{va:#x}: expected not present at {want}, got {other:?}"),
        }
    }
}

#[test]
fn non_canonical_is_refused_without_reading() {
    let b = Builder::new(4);
    let counted = Counting::new(&b.mem);
    let r = b.pt().translate(&counted, KVirt(0x0000_8000_0000_0000));
    assert!(matches!(r, Err(PagingError::NonCanonical { va: KVirt(0x0000_8000_0000_0000), .. })));
    assert_eq!(counted.snapshot().reads, 0);
}

#[test]
fn self_referencing_table_terminates() {
    // Recursive mapping: PML4 slot 510 points at the PML4 itself. A walk through it ends
    // after four levels, at a page-table page, exactly as the hardware would.
    let mut b = Builder::new(4);
    let root = b.root;
    b.mem.write_u64(root + 510 * 8, root | P | RW);
    let va = 0xffff_ff7f_bfdf_e000u64; // indices 510,510,510,510
    let counted = Counting::new(&b.mem);
    let t = b.pt().translate(&counted, KVirt(va)).unwrap();
    assert_eq!(t.phys, PhysAddr(root));
    assert_eq!(counted.snapshot().reads, 4);
}

#[test]
fn entry_outside_memory_is_a_memory_error() {
    let mut b = Builder::new(4);
    let root = b.root;
    b.mem.write_u64(root, 0x000f_0000_0000_0000 | P);
    match b.pt().translate(&b.mem, UVirt(0x1000)) {
        Err(PagingError::Mem { level: "PDPT", source, .. }) => {
            assert_eq!(source.addr(), PhysAddr(0x000f_0000_0000_0000));
        }
        other => panic!("expected memory error at PDPT, got {other:?}"),
    }
}

#[test]
fn batched_walks_take_one_batch_per_level() {
    let mut b = Builder::new(4);
    for i in 0..10u64 {
        b.map(0x40_0000 + i * 0x1000, 0x80_0000 + i * 0x2000, 0x1000, 0);
    }
    b.map(0xffff_ffff_8000_0000, 0x20_0000, 2 << 20, 0);
    let pt = b.pt();
    let counted = Counting::new(&b.mem);
    let mut reqs: Vec<(PageTables, KVirt)> = (0..10u64).map(|i| (pt, KVirt(0x40_0000 + i * 0x1000 + 7))).collect();
    reqs.push((pt, KVirt(0xffff_ffff_8000_0010)));
    reqs.push((pt, KVirt(0x1234_5000))); // not mapped
    let out = translate_many(&counted, &reqs);
    for i in 0..10u64 {
        assert_eq!(out[i as usize].as_ref().unwrap().phys, PhysAddr(0x80_0000 + i * 0x2000 + 7));
    }
    assert_eq!(out[10].as_ref().unwrap().phys, PhysAddr(0x20_0010));
    assert!(out[11].is_err());
    assert_eq!(counted.snapshot().batches, 4);
}

/// Walks through the same entries read each of them once: two addresses in one page cost one
/// walk's reads, and an entry that fails fails every walk through it.
#[test]
fn walks_sharing_entries_read_each_entry_once() {
    let mut b = Builder::new(4);
    b.map(0x40_0000, 0x80_0000, 0x1000, 0);
    let root = b.root;
    b.mem.write_u64(root + 8 * 3, 0x000f_0000_0000_0000 | P); // PML4 slot 3 -> outside memory
    let pt = b.pt();
    let counted = Counting::new(&b.mem);
    let bad = |k: u64| UVirt((3 << 39) + k * 0x1000);
    let out = translate_many(&counted, &[(pt, UVirt(0x40_0010)), (pt, UVirt(0x40_0ff8)), (pt, bad(0)), (pt, bad(5))]);
    assert_eq!(out[0].as_ref().unwrap().phys, PhysAddr(0x80_0010));
    assert_eq!(out[1].as_ref().unwrap().phys, PhysAddr(0x80_0ff8));
    for (k, va) in [(2, bad(0)), (3, bad(5))] {
        match &out[k] {
            Err(PagingError::Mem { va: at, level: "PDPT", source }) => {
                assert_eq!(*at, va);
                assert_eq!(source.addr(), PhysAddr(0x000f_0000_0000_0000));
            }
            other => panic!("walk {k}: expected a memory error at PDPT, got {other:?}"),
        }
    }
    // PML4: 2 distinct entries; PDPT: 1 good, 1 failing; PD: 1; PT: 1
    assert_eq!(counted.snapshot().reads, 6);
}

#[test]
fn read_virt_crosses_pages_and_reports_progress() {
    let mut b = Builder::new(4);
    b.map(0x7000_0000, 0x90_0000, 0x1000, 0);
    b.map(0x7000_1000, 0x70_0000, 0x1000, 0);
    b.mem.write(0x90_0ffc, b"abcd");
    b.mem.write(0x70_0000, b"efgh");
    let mut buf = [0u8; 8];
    read_virt(&b.mem, b.pt(), UVirt(0x7000_0ffc), &mut buf).unwrap();
    assert_eq!(&buf, b"abcdefgh");
    let mut buf = [0u8; 8];
    let (done, err) = read_virt(&b.mem, b.pt(), UVirt(0x7000_1ffc), &mut buf).unwrap_err();
    assert_eq!(done, 4);
    // The error carries the address of the page that failed, in its own space.
    assert_eq!(err.va(), UVirt(0x7000_2000));
    assert!(err.to_string().starts_with("virtual address 0x70002000:"), "{err}");
}

#[test]
fn root_near_the_top_of_the_address_space_is_an_error_not_a_wrap() {
    // A root derived from a guest `phys_base` (wrapping image translation) can sit within a page
    // of 2^64: the entry address must not wrap to low memory (or panic in debug builds).
    let b = Builder::new(4);
    let counted = Counting::new(&b.mem);
    let pt = PageTables::new(PhysAddr(u64::MAX - 0x7ff), &X86_64_4LEVEL);
    let va = KVirt(0xffff_ffff_8100_0000); // PML4 index 511: entry at root + 0xff8
    match pt.translate(&counted, va) {
        Err(PagingError::TableOutOfRange { level: "PML4", index: 511, .. }) => {}
        other => panic!("expected TableOutOfRange at PML4, got {other:?}"),
    }
    assert_eq!(counted.snapshot().reads, 0);
    // Other walks of the same batch are unaffected.
    let ok = translate_many(&b.mem, &[(pt, va), (b.pt(), KVirt(0x1000))]);
    assert!(matches!(ok[0], Err(PagingError::TableOutOfRange { .. })));
    assert!(matches!(ok[1], Err(PagingError::NotPresent { .. })));
}

#[test]
fn mapped_lists_the_pages_of_a_range_and_only_those() {
    let mut b = Builder::new(4);
    let area = 0xffff_ffff_a000_0000u64;
    b.map(area + 0x5000, 0x40_0000, 0x1000, 0);
    b.map(area + 0x6000, 0x40_1000, 0x1000, NX);
    b.map(area + 0x20_0000, 0x60_0000, 0x20_0000, 0);
    b.map(area - 0x1000, 0x50_0000, 0x1000, 0); // just below the range
    b.map(0xffff_ffff_ff00_0000, 0x51_0000, 0x1000, 0); // at its end
    // a read-only leaf
    b.map(area + 0x40_0000, 0x52_0000, 0x1000, 0);
    let pt = PageTables::new(PhysAddr(b.root), &X86_64_4LEVEL);
    let va = area + 0x40_0000;
    let mut table = b.root;
    for shift in [39, 30, 21] {
        table = b.read(Builder::entry_addr(table, va, shift)) & X86_64_4LEVEL.addr_mask;
    }
    let leaf = Builder::entry_addr(table, va, 12);
    let v = b.read(leaf);
    b.mem.write_u64(leaf, v & !RW);
    let m = mapped(&b.mem, pt, area, 0xffff_ffff_ff00_0000, 64, 64);
    let got: Vec<(u64, u64, u64, bool)> = m.pages.iter().map(|p| (p.va, p.phys.0, p.size, p.writable)).collect();
    assert_eq!(
        got,
        vec![
            (area + 0x5000, 0x40_0000, 0x1000, true),
            (area + 0x6000, 0x40_1000, 0x1000, true),
            (area + 0x20_0000, 0x60_0000, 0x20_0000, true),
            (area + 0x40_0000, 0x52_0000, 0x1000, false),
        ]
    );
    assert!(!m.truncated && m.unreadable == 0);
    // Bounds: pages and tables.
    let m = mapped(&b.mem, pt, area, 0xffff_ffff_ff00_0000, 64, 2);
    assert!(m.truncated && m.pages.len() == 2);
    let m = mapped(&b.mem, pt, area, 0xffff_ffff_ff00_0000, 2, 64);
    assert!(m.truncated && m.tables <= 2);
}

#[test]
fn mapped_stays_bounded_on_tables_that_point_at_themselves() {
    let mut b = Builder::new(4);
    // Every entry of the root points back at the root: 512 "tables" per level, all one page.
    for i in 0..512u64 {
        b.mem.write_u64(b.root + i * 8, b.root | P | RW);
    }
    let pt = PageTables::new(PhysAddr(b.root), &X86_64_4LEVEL);
    let m = mapped(&b.mem, pt, 0xffff_8000_0000_0000, 0xffff_ffff_ffff_f000, 1000, 10_000);
    assert!(m.truncated);
    assert!(m.tables <= 1000 && m.pages.len() <= 10_000);
}
