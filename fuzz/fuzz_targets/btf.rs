//! A `.BTF` blob as read from guest memory: the parser, the layout built from it (the `btf`
//! method after its read), the ISF type tables `harness profile` writes from it, and the kernel's
//! parsed `struct btf` with a blob read record by record through its index.
#![no_main]

use std::sync::Arc;

use harness::introspect::addr::KVirt;
use harness::introspect::btf::sparse::Named;
use harness::introspect::btf::{Btf, BtfRead, Header, KernelIndex, Sparse};
use harness::introspect::isf;
use harness::introspect::kspace::KSpaceError;
use harness::introspect::layout::build::build;
use harness::introspect::layout::sorted;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A prefix of each section, as the `btf` method reads first: lookups that need more mark it
    // short, never panic (cut lengths from the blob's last bytes).
    let cut = |i: usize| data.len().checked_sub(i).and_then(|j| data.get(j)).map_or(usize::MAX, |&b| usize::from(b) * 64);
    if let Ok(part) = Btf::parse_prefix(data.to_vec(), cut(1), cut(2)) {
        let _ = build(&part);
        let _ = part.short();
    }
    if let Ok((h, _)) = Header::parse(data) {
        // The input past the header as a kernel's `struct btf`.
        let _ = KernelIndex::parse(data.get(24..).unwrap_or_default(), 0, data.len() as u64, data, &h);
        // Records at offsets and string spans taken from the input (misaligned, cut, past the
        // sections): lookups note what they want or fail, never panic.
        let mut s = Sparse::new(KernelIndex { types: 0, nr: 64, named: 1 });
        for (i, w) in data.chunks_exact(4).take(63).enumerate() {
            s.records.insert(i as u32 + 1, u32::from_le_bytes([w[0], w[1], w[2], w[3]]) % (data.len() as u32 + 16));
            s.add_str(u32::from(w[0]) * 4, u32::from(w[0]) * 4 + u32::from(w[1]));
        }
        s.named.insert(b"task_struct".to_vec(), Named { ids: vec![1, 2], structs: vec![1, 2] });
        if let Ok(b) = Btf::sparse(data.to_vec(), Arc::new(s)) {
            let _ = build(&b);
            let _ = b.take_wants();
        }
        // The blob read through a kernel index whose pointers are the input's words (guest memory:
        // anything): the reader drops an index that misleads, never panics or loops.
        const START: u64 = 0xffff_ffff_8300_0000;
        const TYPES: u64 = 0xffff_8880_0400_0000;
        let table: Vec<u8> = data
            .chunks_exact(4)
            .flat_map(|w| (START + u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]]) % (data.len() as u32 + 8))).to_le_bytes())
            .collect();
        let nr = (table.len() / 8) as u32;
        let mem = |regions: &[(KVirt, usize)]| -> Vec<Result<Vec<u8>, KSpaceError>> {
            let at = |a: KVirt, n: usize, base: u64, bytes: &[u8]| {
                Some(bytes.get(usize::try_from(a.0.checked_sub(base)?).ok()?..)?.get(..n)?.to_vec())
            };
            regions
                .iter()
                .map(|&(a, n)| at(a, n, START, data).or_else(|| at(a, n, TYPES, &table)).ok_or(KSpaceError::Unmapped { addr: a }))
                .collect()
        };
        let mut got = BtfRead::default();
        if nr > 2 && got.take_header(data.len(), data).is_ok() {
            got.use_index(KernelIndex { types: TYPES, nr, named: 1 + u32::from(data[4]) % (nr - 1) });
            let _ = sorted::answer(&mut got, KVirt(START), &mem, &|b| build(b));
        }
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
