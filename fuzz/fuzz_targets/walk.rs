//! The task walker over a fuzzed memory, with a fixed layout (Debian 6.1's) and kernel space:
//! the input is `phys_base`, `page_offset_base`, `init_task` and the kernel page-table root (4 ×
//! u64 LE), then a sparse memory holding the tasks and page tables.
#![no_main]

use harness::introspect::addr::KVirt;
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
});
