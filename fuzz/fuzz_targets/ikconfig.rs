//! An IKCONFIG blob (`IKCFG_ST`, gzip, `IKCFG_ED`): decoded with its output cap.
#![no_main]

use harness::introspect::addr::KVirt;
use harness::introspect::ikconfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = ikconfig::decode(data, KVirt(0xffff_ffff_8100_0000)) {
        let _ = (c.get("SMP"), c.get("HZ"), c.get("RANDSTRUCT"));
    }
});
