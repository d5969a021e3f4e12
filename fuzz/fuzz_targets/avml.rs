//! A avml image file, opened as `harness ps --image` opens it (forced format and by detection), and
//! read a little in every range it claims.
#![no_main]

use emulator::image::{self, Format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    netdma_fuzz::with_file(data, |path| {
        for format in [Some(Format::Avml), None] {
            if let Ok(mem) = image::open(path, format, None) {
                netdma_fuzz::exercise(&mem);
            }
        }
    });
});
