//! The fleet's text inputs: a targets file (`harness fleet --targets`), an emulator manifest
//! (`emulator serve --manifest`) and one address range. Errors are fine, panics are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(t) = harness::fleet::parse_targets(text) {
        assert!(!t.is_empty() && t.len() <= harness::fleet::MAX_TARGETS);
    }
    if let Ok(m) = emulator::fleet::parse_manifest(text, std::path::Path::new("/")) {
        assert!(m.iter().all(|e| e.addrs.len() >= 1));
    }
    if let Ok(r) = emulator::fleet::AddrRange::parse(text) {
        assert!(r.first <= r.last && r.len() <= emulator::fleet::MAX_RANGE);
    }
});
