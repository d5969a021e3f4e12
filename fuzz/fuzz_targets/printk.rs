//! The printk ring decoder on a fuzzed ring (`printk::snapshot` format: the
//! `printk_ringbuffer`, prefixes of its descriptor and info arrays, and its text data): the
//! header's checks, the record decoder, the renderings, and the `inferred` method's structural
//! test and `sizeof(printk_info)` inference. Seeds are rings cut from corpus dumps.
#![no_main]

use harness::introspect::output::Format;
use harness::introspect::printk::infer::{candidate, info_size, sample};
use harness::introspect::printk::render::render;
use harness::introspect::printk::ring::{decode, RingBytes, RingHeader};
use harness::introspect::printk::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

/// Rings up to 2^16 descriptors: the decoder's work is linear in the count (bounded at 2^22 in
/// the harness), and a fuzzing run wants many small inputs.
const MAX_FUZZ_COUNT_BITS: u32 = 16;

fuzz_target!(|data: &[u8]| {
    let Some(s) = Snapshot::parse(data) else { return };
    for tr in [40, 48] {
        let _ = candidate(&s.ring, 0, tr);
    }
    let l = s.layout();
    if l.check().is_err() {
        return;
    }
    let Ok(h) = RingHeader::parse(&l, &s.ring) else { return };
    if h.count_bits > MAX_FUZZ_COUNT_BITS {
        return;
    }
    let d = decode(&l, &h, RingBytes { descs: &s.descs, infos: &s.infos, data: &s.data });
    assert!(d.records.len() as u64 <= h.count());
    assert!(d.records.windows(2).all(|w| w[0].seq <= w[1].seq));
    for f in [Format::Table, Format::Json, Format::Csv] {
        let _ = render(&d.records, f);
    }
    let samples = sample(&l, &h, &s.descs);
    let _ = info_size(&h, &samples, &s.infos);
});
