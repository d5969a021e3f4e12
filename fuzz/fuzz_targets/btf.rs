//! A `.BTF` blob as read from guest memory: the parser, the layout built from it (the `btf`
//! method after its read), and the ISF type tables `harness profile` writes from it.
#![no_main]

use harness::introspect::btf::Btf;
use harness::introspect::isf;
use harness::introspect::layout::build::build;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A prefix of each section, as the `btf` method reads first: lookups that need more mark it
    // short, never panic (cut lengths from the blob's last bytes).
    let cut = |i: usize| data.len().checked_sub(i).and_then(|j| data.get(j)).map_or(usize::MAX, |&b| usize::from(b) * 64);
    if let Ok(part) = Btf::parse_prefix(data.to_vec(), cut(1), cut(2)) {
        let _ = build(&part);
        let _ = part.short();
    }
    let Ok(btf) = Btf::parse(data.to_vec()) else { return };
    let _ = btf.type_count();
    for r in btf.records().take(4096) {
        if r.is_err() {
            break;
        }
    }
    if let Ok(layout) = build(&btf) {
        let _ = isf::from_layout(&layout, &Default::default());
    }
    let _ = isf::from_btf(&btf);
});
