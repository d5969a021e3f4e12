//! The whole `ps` engine (scan, kallsyms, KASLR, every layout method `auto` tries, the walk,
//! names and command lines) over a small fuzzed physical memory.
#![no_main]

use harness::introspect::ps::{ps, PsOptions};
use libfuzzer_sys::fuzz_target;
use netdma_fuzz::SparseMem;

fuzz_target!(|data: &[u8]| {
    let Some(mem) = SparseMem::decode(data) else { return };
    if let Ok(report) = ps(&mem, &PsOptions::default()) {
        let _ = serde_json::to_string(&report.stats);
    }
});
