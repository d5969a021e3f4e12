//! The task walker over a fuzzed memory, with a fixed layout (Debian 6.1's) and kernel space,
//! then the inference of the globals Volatility needs (`globals::infer_in`) over the same memory:
//! the input is `phys_base`, `page_offset_base`, `init_task` and the kernel page-table root (4 ×
//! u64 LE), then a sparse memory holding the tasks and page tables.
#![no_main]

use harness::introspect::addr::KVirt;
use harness::introspect::globals;
use harness::introspect::kspace::KernelSpace;
use harness::introspect::layout::fixed::debian_6_1_amd64;
use harness::introspect::paging::{PageTables, X86_64_4LEVEL};
use harness::introspect::walk::{walk, WalkConfig};
use emulator::mem::PhysAddr;
use libfuzzer_sys::fuzz_target;
use netdma_fuzz::{SparseMem, Take};

const HEAD: usize = 32;

fuzz_target!(|data: &[u8]| {
    let head = data.get(..HEAD).unwrap_or(data);
    let Some(mem) = SparseMem::decode(data.get(HEAD..).unwrap_or(&[])) else { return };
    let mut t = Take(head);
    let (phys_base, page_offset_base, init_task, root) = (t.u64(), KVirt(t.u64()), KVirt(t.u64()), t.u64());
    let mut space = KernelSpace::new(&mem, phys_base, Some(page_offset_base), &X86_64_4LEVEL);
    space.page_tables = Some(PageTables::new(PhysAddr(root), &X86_64_4LEVEL));
    let layout = debian_6_1_amd64();
    let out = walk(&space, &layout, init_task, WalkConfig::default());
    for th in &out.threads {
        let _ = harness::introspect::ps::Row::from_thread(th);
    }
    // The page-table root doubles as init_top_pgt; `.data` is taken to start at init_task.
    let top = KVirt(root | 0xffff_ffff_8000_0000);
    let start = globals::Start { init_task, data: Some((init_task, init_task.wrapping_add(1 << 20))), init_top_pgt: Some(top), init_mm: None, init_files: None };
    let _ = globals::infer_in(&space, &layout, start);
});
