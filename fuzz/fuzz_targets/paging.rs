//! The page-table walker over fuzzed physical memory: a root and virtual addresses taken from
//! the input's first bytes, the tables from the rest (a sparse memory), 4- and 5-level; and the
//! enumeration of a range's mappings (`paging::mapped`, as the module area scan uses it), whose
//! bounds must hold whatever the tables hold.
#![no_main]

use harness::introspect::addr::KVirt;
use harness::introspect::paging::{mapped, translate_many, PageTables, X86_64_4LEVEL, X86_64_5LEVEL};
use harness::introspect::vread::read_virt;
use emulator::mem::PhysAddr;
use libfuzzer_sys::fuzz_target;
use netdma_fuzz::{SparseMem, Take};

fuzz_target!(|data: &[u8]| {
    let head = data.get(..64).unwrap_or(data);
    let Some(mem) = SparseMem::decode(data.get(64..).unwrap_or(&[])) else { return };
    let mut t = Take(head);
    let root = PhysAddr(t.u64());
    let format = if t.u8() & 1 == 0 { &X86_64_4LEVEL } else { &X86_64_5LEVEL };
    let pt = PageTables::new(root, format);
    let vas: Vec<KVirt> = (0..6).map(|_| KVirt(t.u64())).collect();
    let reqs: Vec<(PageTables, KVirt)> = vas.iter().map(|&va| (pt, va)).collect();
    for r in translate_many(&mem, &reqs).into_iter().flatten() {
        let _ = r.remaining_in_page();
    }
    let mut buf = vec![0u8; 3 * 4096];
    let _ = read_virt(&mem, pt, vas[0], &mut buf);
    let (start, end) = (vas[1].0.min(vas[2].0), vas[1].0.max(vas[2].0));
    let m = mapped(&mem, pt, start, end, 64, 256);
    assert!(m.tables <= 64 && m.pages.len() <= 256, "mapped exceeded its bounds: {} tables, {} pages", m.tables, m.pages.len());
});
