//! A Volatility 3 ISF JSON document (`--isf`): loaded and turned into a layout.
#![no_main]

use harness::introspect::layout::build::build;
use harness::introspect::layout::isf::Isf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(isf) = Isf::from_slice(data) else { return };
    let _ = build(&isf);
});
