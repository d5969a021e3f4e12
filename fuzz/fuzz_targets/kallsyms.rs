//! kallsyms tables in a fuzzed physical memory, through the public entry points only (`locate`,
//! `Kallsyms::load`, the lookups): the tables are found by structure (the names stream's end by
//! probing for its markers), decoded block by block, and searched through the name order.
#![no_main]

use emulator::mem::{PhysAddr, PhysMem};
use harness::introspect::kallsyms::locate::locate;
use harness::introspect::kallsyms::{Kallsyms, LocateConfig};
use libfuzzer_sys::fuzz_target;
use netdma_fuzz::{SparseMem, PAGE};

fuzz_target!(|data: &[u8]| {
    let Some(mem) = SparseMem::decode(data) else { return };
    // Search the span of the pages the input sets (a seed holds the kallsyms tables of a dump).
    let (Some(&first), Some(&last)) = (mem.pages.keys().next(), mem.pages.keys().next_back()) else { return };
    let (start, end) = (PhysAddr(first * PAGE), PhysAddr((last + 1) * PAGE));
    let cfg = LocateConfig::default();
    let Some(loc) = locate(&mem, start, end, &cfg) else { return };
    let Ok(mut ks) = Kallsyms::load(&mem as &dyn PhysMem, loc) else { return };
    // Search the name order whatever the stream's length (the seeds' streams are short).
    ks.search_above = 0;
    let _ = ks.symbol(&mem, ks.location.num_syms / 2);
    let _ = ks.lookup(&mem, &["init_task", "linux_banner", "__start_BTF", "_text"]);
    let _ = ks.indices_by_scan(&mem, &["init_task"]);
    let _ = ks.all(&mem);
});
