//! An ELF note section from guest memory (`.notes` between `__start_notes` and `__stop_notes`):
//! the GNU build ID a layout cache keys on.
#![no_main]

use harness::introspect::identity::build_id_note;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(id) = build_id_note(data) {
        assert!(id.len() <= data.len());
    }
});
