//! `hidden`'s views on fuzzed kernel structures (`hidden::cut` format: layouts and roots, then
//! regions of memory): the pid layout's inference, the IDR walk, the run queues (red-black
//! trees and RT lists) and the module address tree; and the scan's test of whether bytes are a
//! `task_struct`, on every region (Debian 6.1's layout). The seed is what the views read on
//! deb-amd64's running dump.
#![no_main]

use harness::introspect::hidden::cut::Cut;
use harness::introspect::hidden::{memscan, rbtree, runqueue};
use harness::introspect::xarray;
use harness::introspect::layout::fixed::debian_6_1_amd64;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(cut) = Cut::parse(data) else { return };
    let (_, pids, rqs, tree) = cut.run();
    assert!(pids.nodes <= xarray::MAX_NODES);
    assert!(rqs.cpus.len() as u64 <= runqueue::MAX_CPUS);
    assert!(tree.nodes <= rbtree::MAX_NODES);
    let layout = debian_6_1_amd64();
    let kptr = |v: u64| v >= 0xff00_0000_0000_0000;
    for (addr, bytes) in cut.regions.iter().take(64) {
        let _ = memscan::validates(&layout, bytes, *addr, &kptr);
    }
});
