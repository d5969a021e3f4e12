//! The kernel image's frames from the real-mode trampoline's page table, over fuzzed physical
//! memory (low pages, header, tables): whatever they hold, the frames stay bounded and each is
//! ordered once.
#![no_main]

use harness::introspect::trampoline::{image_frames, MAX_FRAMES};
use libfuzzer_sys::fuzz_target;
use netdma_fuzz::SparseMem;

fuzz_target!(|data: &[u8]| {
    let Some(mem) = SparseMem::decode(data) else { return };
    if let Some(image) = image_frames(&mem) {
        assert!(!image.frames.is_empty() && image.frames.len() <= MAX_FRAMES, "{} frames", image.frames.len());
        assert_eq!(image.banner_order().len(), image.frames.len());
    }
});
