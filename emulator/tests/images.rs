//! Every image format serves the same real QEMU guest identically.
//!
//! Truth is independent of the code under test: QEMU's own `pmemsave` of guest-physical
//! memory, and the pseudo-random patterns the test loaded into the guest with
//! `-device loader`. See `support::dumps` for how each file was produced (and which ones come
//! from test converters because no real producer exists on this host).

mod support;

use emulator::image::{self, Format, ImageError, Source};
use emulator::mem::{Cache, Counting};
use emulator::mem::{MemError, PhysAddr, PhysMem, PhysRange, ReadOp};
use rstest::rstest;
use support::{dump_ranges, dumps, first_unbacked, pattern, Case, Rng, Truth};

const CHUNK: usize = 1 << 20;

/// The parts of `full` (sorted, disjoint) that `covered` (sorted, disjoint) leaves out.
fn gaps(full: &[PhysRange], covered: &[PhysRange]) -> Vec<PhysRange> {
    let mut out = Vec::new();
    for f in full {
        let mut a = f.start.0;
        for c in covered
            .iter()
            .filter(|c| c.end.0 > f.start.0 && c.start.0 < f.end.0)
        {
            if c.start.0 > a {
                out.push(PhysRange::new(a, c.start.0));
            }
            a = a.max(c.end.0);
        }
        if a < f.end.0 {
            out.push(PhysRange::new(a, f.end.0));
        }
    }
    out
}

/// Compare `[start, end)` of `img` with the truth, 1 MiB at a time.
fn assert_region_matches(case: Case, img: &dyn PhysMem, truth: &Truth, start: u64, end: u64) {
    let mut buf = vec![0u8; CHUNK];
    let mut a = start;
    while a < end {
        let n = (CHUNK as u64).min(end - a) as usize;
        img.read_phys(PhysAddr(a), &mut buf[..n])
            .unwrap_or_else(|e| panic!("{case:?}: read {a:#x}+{n:#x}: {e}"));
        let want = truth
            .get(a, n)
            .unwrap_or_else(|| panic!("{case:?}: no truth for {a:#x}+{n:#x}"));
        if buf[..n] != *want {
            let i = buf[..n]
                .iter()
                .zip(want)
                .position(|(x, y)| x != y)
                .unwrap_or(0);
            panic!(
                "{case:?}: byte at {:#x} is {:#04x}, pmemsave has {:#04x}",
                a + i as u64,
                buf[i],
                want[i]
            );
        }
        a += n as u64;
    }
}

#[rstest]
#[case::raw(Case::Raw)]
#[case::raw_base(Case::RawBase)]
#[case::elf(Case::Elf)]
#[case::kdump_zlib_flattened(Case::KdumpZlibFlat)]
#[case::kdump_zlib(Case::KdumpZlib)]
#[case::kdump_lzo(Case::KdumpLzo)]
#[case::kdump_lzo_flattened(Case::KdumpLzoFlat)]
#[case::kdump_snappy(Case::KdumpSnappy)]
#[case::kdump_zero_pages_excluded(Case::KdumpZeroExcluded)]
#[case::elf_filtered(Case::ElfFiltered)]
#[case::elf_flattened(Case::ElfFlat)]
#[case::elf_zero_pages_excluded(Case::ElfZeroExcluded)]
#[case::lime(Case::Lime)]
#[case::avml(Case::Avml)]
#[case::avml_v1(Case::AvmlV1)]
#[case::live(Case::Live)]
fn every_byte_matches_pmemsave(#[case] case: Case) {
    let truth = Truth::load();
    let img = case.open();
    let ranges = img.ranges();
    match case.expected_ranges() {
        Some(expected) => assert_eq!(ranges, expected, "{case:?} ranges"),
        None => {
            // AVML omits all-zero blocks: its ranges lie inside the dump's, and everything it
            // omitted is zero in the truth and unmapped in the image.
            for r in &ranges {
                assert!(
                    first_unbacked(&dump_ranges(), r.start.0, r.len()).is_none(),
                    "{case:?}: {r:?} outside the guest"
                );
            }
            let mut omitted = 0u64;
            for gap in gaps(&dump_ranges(), &ranges) {
                let (a, n) = (gap.start.0, gap.len());
                let zeros = truth.get(a, n as usize).expect("truth");
                assert!(
                    zeros.iter().all(|&b| b == 0),
                    "{case:?} omitted non-zero memory in {gap:?}"
                );
                for probe in [a, a + n / 2, a + n - 1] {
                    let mut one = [0u8; 1];
                    let r = img.read_phys(PhysAddr(probe), &mut one);
                    assert!(
                        matches!(r, Err(MemError::Unmapped { addr }) if addr == PhysAddr(probe)),
                        "{case:?}: {probe:#x}: {r:?}"
                    );
                }
                omitted += n;
            }
            assert!(
                omitted > 0,
                "{case:?}: the guest has all-zero 16 MiB blocks, AVML must omit some"
            );
        }
    }
    for r in &ranges {
        match case.differs_from_truth() {
            Some(w) if r.contains(w.start) => {
                assert_region_matches(case, &*img, &truth, r.start.0, w.start.0);
                assert_region_matches(case, &*img, &truth, w.end.0, r.end.0);
            }
            _ => assert_region_matches(case, &*img, &truth, r.start.0, r.end.0),
        }
    }
}

#[rstest]
#[case::raw(Case::Raw)]
#[case::raw_base(Case::RawBase)]
#[case::elf(Case::Elf)]
#[case::kdump_zlib_flattened(Case::KdumpZlibFlat)]
#[case::kdump_zlib(Case::KdumpZlib)]
#[case::kdump_lzo(Case::KdumpLzo)]
#[case::kdump_lzo_flattened(Case::KdumpLzoFlat)]
#[case::kdump_snappy(Case::KdumpSnappy)]
#[case::kdump_zero_pages_excluded(Case::KdumpZeroExcluded)]
#[case::elf_filtered(Case::ElfFiltered)]
#[case::elf_flattened(Case::ElfFlat)]
#[case::elf_zero_pages_excluded(Case::ElfZeroExcluded)]
#[case::lime(Case::Lime)]
#[case::avml(Case::Avml)]
#[case::avml_v1(Case::AvmlV1)]
#[case::live(Case::Live)]
fn patterns_are_where_the_loader_put_them(#[case] case: Case) {
    let img = case.open();
    let ranges = img.ranges();
    let mut checked = 0;
    for (seed, addr, len) in dumps::PATTERNS {
        if first_unbacked(&ranges, addr, len as u64).is_some() {
            continue;
        }
        let mut buf = vec![0u8; len];
        img.read_phys(PhysAddr(addr), &mut buf).unwrap();
        assert!(
            buf == pattern(seed, len),
            "{case:?}: pattern {seed} not at {addr:#x}"
        );
        checked += 1;
    }
    let all = if matches!(case, Case::RawBase | Case::ElfFiltered) {
        1
    } else {
        dumps::PATTERNS.len()
    };
    assert_eq!(checked, all, "{case:?}: patterns inside the image");
}

#[rstest]
#[case::raw(Case::Raw)]
#[case::raw_base(Case::RawBase)]
#[case::elf(Case::Elf)]
#[case::kdump_zlib_flattened(Case::KdumpZlibFlat)]
#[case::kdump_zlib(Case::KdumpZlib)]
#[case::kdump_lzo(Case::KdumpLzo)]
#[case::kdump_lzo_flattened(Case::KdumpLzoFlat)]
#[case::kdump_snappy(Case::KdumpSnappy)]
#[case::kdump_zero_pages_excluded(Case::KdumpZeroExcluded)]
#[case::elf_filtered(Case::ElfFiltered)]
#[case::elf_flattened(Case::ElfFlat)]
#[case::elf_zero_pages_excluded(Case::ElfZeroExcluded)]
#[case::lime(Case::Lime)]
#[case::avml(Case::Avml)]
#[case::avml_v1(Case::AvmlV1)]
#[case::live(Case::Live)]
fn random_reads_match_and_holes_are_unmapped(#[case] case: Case) {
    let truth = Truth::load();
    let img = case.open();
    let ranges = img.ranges();
    // Boundaries worth probing: every range edge, pattern edges, and the 4 GiB line.
    let mut edges: Vec<u64> = ranges.iter().flat_map(|r| [r.start.0, r.end.0]).collect();
    edges.extend(
        dumps::PATTERNS
            .iter()
            .flat_map(|&(_, a, n)| [a, a + n as u64]),
    );
    edges.extend([0, 0xa_0000, 0xc_0000, 0x10_0000, 1 << 32]);
    let mut rng = Rng(0x5eed ^ case as u64);
    let mut probes: Vec<(u64, usize)> = Vec::new();
    for i in 0..3000 {
        let len = match i % 4 {
            0 => [1, 2, 3, 4, 7, 8, 64, 4095, 4096, 4097, 8193][rng.below(11) as usize],
            _ => 1 + rng.below(3 * 4096) as usize,
        };
        let addr = match i % 3 {
            0 => rng.below(dumps::RAM + (64 << 10)),
            1 => edges[rng.below(edges.len() as u64) as usize]
                .saturating_sub(rng.below(2 * len as u64)),
            _ => (rng.below(dumps::RAM / 4096) * 4096).saturating_sub(rng.below(16)),
        };
        probes.push((addr, len));
    }
    let check = |addr: u64, buf: &[u8], r: &Result<(), MemError>| match first_unbacked(
        &ranges,
        addr,
        buf.len() as u64,
    ) {
        Some(hole) => match r {
            Err(MemError::Unmapped { addr: at }) => assert_eq!(
                *at,
                PhysAddr(hole),
                "{case:?}: read {addr:#x}+{:#x}",
                buf.len()
            ),
            other => panic!(
                "{case:?}: read {addr:#x}+{:#x} reaching {hole:#x} gave {other:?}",
                buf.len()
            ),
        },
        None => {
            assert!(
                r.is_ok(),
                "{case:?}: read {addr:#x}+{:#x}: {r:?}",
                buf.len()
            );
            let skip = case
                .differs_from_truth()
                .is_some_and(|w| addr < w.end.0 && w.start.0 < addr + buf.len() as u64);
            if !skip {
                let want = truth.get(addr, buf.len()).expect("truth covers the image");
                assert!(
                    buf == want,
                    "{case:?}: bytes at {addr:#x}+{:#x} differ from pmemsave",
                    buf.len()
                );
            }
        }
    };
    for &(addr, len) in &probes {
        let mut buf = vec![0u8; len];
        let r = img.read_phys(PhysAddr(addr), &mut buf);
        check(addr, &buf, &r);
    }
    // The same reads in batches of 16 give the same results.
    for group in probes.chunks(16) {
        let mut bufs: Vec<Vec<u8>> = group.iter().map(|&(_, n)| vec![0u8; n]).collect();
        let mut ops: Vec<ReadOp<'_>> = group
            .iter()
            .zip(bufs.iter_mut())
            .map(|(&(addr, _), buf)| ReadOp {
                addr: PhysAddr(addr),
                buf,
            })
            .collect();
        let results = img.read_batch(&mut ops);
        drop(ops);
        for ((&(addr, _), buf), r) in group.iter().zip(&bufs).zip(&results) {
            check(addr, buf, r);
        }
    }
}

#[rstest]
#[case::raw(Case::Raw)]
#[case::elf(Case::Elf)]
#[case::kdump_zlib_flattened(Case::KdumpZlibFlat)]
#[case::kdump_lzo(Case::KdumpLzo)]
#[case::kdump_snappy(Case::KdumpSnappy)]
#[case::elf_filtered(Case::ElfFiltered)]
#[case::lime(Case::Lime)]
#[case::avml(Case::Avml)]
#[case::live(Case::Live)]
fn reads_past_the_end_and_in_holes_are_unmapped_at_the_first_missing_byte(#[case] case: Case) {
    let img = case.open();
    let end = img.ranges().last().unwrap().end.0;
    let probe = |addr: u64, len: usize| -> Option<PhysAddr> {
        let mut buf = vec![0u8; len];
        match img.read_phys(PhysAddr(addr), &mut buf) {
            Err(MemError::Unmapped { addr }) => Some(addr),
            Err(e) => panic!("{case:?}: {addr:#x}+{len}: {e}"),
            Ok(()) => None,
        }
    };
    assert_eq!(probe(end, 1), Some(PhysAddr(end)));
    assert_eq!(probe(end - 8, 16), Some(PhysAddr(end)));
    assert_eq!(
        probe(end + 0x1234_5678, 4096),
        Some(PhysAddr(end + 0x1234_5678))
    );
    assert!(
        probe(u64::MAX - 3, 8).is_some(),
        "{case:?}: read wrapping around 2^64"
    );
    if case.expected_ranges() == Some(dump_ranges()) {
        // Between RAM and the BIOS ROM.
        assert_eq!(probe(dumps::RAM - 4, 8), Some(PhysAddr(dumps::RAM)));
        assert_eq!(
            probe(dumps::BIOS.0 - 1, 2),
            Some(PhysAddr(dumps::BIOS.0 - 1))
        );
        assert_eq!(probe(0xe000_0000, 4), Some(PhysAddr(0xe000_0000)));
    }
}

#[rstest]
#[case::raw(Case::Raw)]
#[case::elf(Case::Elf)]
#[case::kdump_zlib_flattened(Case::KdumpZlibFlat)]
#[case::kdump_zlib(Case::KdumpZlib)]
#[case::kdump_lzo(Case::KdumpLzo)]
#[case::kdump_lzo_flattened(Case::KdumpLzoFlat)]
#[case::kdump_snappy(Case::KdumpSnappy)]
#[case::kdump_zero_pages_excluded(Case::KdumpZeroExcluded)]
#[case::elf_filtered(Case::ElfFiltered)]
#[case::elf_flattened(Case::ElfFlat)]
#[case::elf_zero_pages_excluded(Case::ElfZeroExcluded)]
#[case::lime(Case::Lime)]
#[case::avml(Case::Avml)]
#[case::avml_v1(Case::AvmlV1)]
#[case::live(Case::Live)]
fn formats_are_detected_by_magic_and_described(#[case] case: Case) {
    let head: Vec<u8> = std::fs::read(case.file())
        .unwrap()
        .into_iter()
        .take(16)
        .collect();
    assert_eq!(image::detect(&head), case.detected(), "{case:?}");
    let img = case.open();
    let path = case.file().display().to_string();
    let text = img.describe().replace(&path, "<path>");
    insta::assert_snapshot!(format!("describe_{case:?}"), text);
}

#[test]
fn a_base_address_is_for_raw_images_only() {
    let err = image::open(&Case::Elf.file(), None, Some(PhysAddr(0x1000)))
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::BaseNotRaw {
                format: Format::Elf,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_flattened_file_reads_like_its_makedumpfile_r_rearrangement() {
    let flat = Source::open(&Case::KdumpZlibFlat.file()).unwrap();
    assert!(flat.is_flattened());
    let rearranged = std::fs::read(Case::KdumpZlib.file()).unwrap();
    assert_eq!(flat.len(), rearranged.len() as u64);
    let mut virt = vec![0u8; rearranged.len()];
    // Odd-sized pieces so reads straddle segment boundaries.
    for (i, chunk) in virt.chunks_mut(12_345).enumerate() {
        flat.read_at(image::FileOffset(i as u64 * 12_345), chunk, "test")
            .unwrap();
    }
    assert!(
        virt == rearranged,
        "flattened view differs from makedumpfile -R output"
    );
}

#[test]
fn notes_are_exposed_and_agree_between_elf_and_kdump() {
    let elf = image::elf::open(Source::open(&Case::Elf.file()).unwrap()).unwrap();
    let elf_notes = elf.notes().unwrap();
    let names: Vec<&str> = elf_notes.iter().map(|n| n.name.as_str()).collect();
    // One vCPU: its NT_PRSTATUS ("CORE", type 1) and QEMU's CPU state note.
    assert_eq!(names, ["CORE", "QEMU"]);
    assert_eq!(elf_notes[0].n_type, 1);
    // The test guest runs no kernel, so there is no VMCOREINFO.
    assert_eq!(elf.vmcoreinfo().unwrap(), None);
    for case in [Case::KdumpZlib, Case::KdumpZlibFlat, Case::KdumpLzo] {
        let k = image::kdump::open(Source::open(&case.file()).unwrap()).unwrap();
        let notes = k.notes().unwrap();
        let strip = |v: &[image::notes::Note]| {
            v.iter()
                .map(|n| (n.name.clone(), n.n_type, n.desc.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(&notes), strip(&elf_notes), "{case:?} notes");
        assert_eq!(k.vmcoreinfo().unwrap(), None);
    }
}

#[test]
fn kdump_headers_say_what_the_producers_wrote() {
    let open = |c: Case| image::kdump::open(Source::open(&c.file()).unwrap()).unwrap();
    let q = open(Case::KdumpZlibFlat);
    assert!(q.layout().is_flattened());
    assert_eq!(
        (
            q.layout().compression(),
            q.layout().page_size(),
            q.layout().header_version()
        ),
        ("zlib", 4096, 6)
    );
    let pages = dump_ranges().iter().map(|r| r.len() / 4096).sum::<u64>();
    assert_eq!(
        (q.layout().present_pages(), q.layout().dumped_pages()),
        (pages, pages)
    );
    let l = open(Case::KdumpLzo);
    assert_eq!(
        (l.layout().compression(), l.layout().dump_level()),
        ("lzo", 0)
    );
    let l1 = open(Case::KdumpLzoFlat);
    assert_eq!(
        (
            l1.layout().compression(),
            l1.layout().dump_level(),
            l1.layout().is_flattened()
        ),
        ("lzo", 1, true)
    );
    assert_eq!(open(Case::KdumpSnappy).layout().compression(), "snappy");
}

#[test]
fn counting_and_cache_layers_preserve_reads_over_a_real_dump() {
    let truth = Truth::load();
    let img = Case::KdumpLzo.open();
    let counted = Counting::new(&img);
    let cached = Cache::new(&counted, 64);
    let mut rng = Rng(99);
    let mut buf = vec![0u8; 300];
    for _ in 0..2000 {
        // Mostly inside a few pages, so the cache has something to hit.
        let addr = 0x1f_0000 + rng.below(16 * 4096);
        cached.read_phys(PhysAddr(addr), &mut buf).unwrap();
        assert!(buf == truth.get(addr, buf.len()).unwrap());
    }
    let mut past = [0u8; 8];
    assert!(
        matches!(cached.read_phys(PhysAddr(dumps::RAM - 4), &mut past), Err(MemError::Unmapped { addr }) if addr == PhysAddr(dumps::RAM))
    );
    let stats = cached.stats();
    let counts = counted.snapshot();
    assert!(stats.pages <= 64 && stats.hits > stats.misses, "{stats:?}");
    assert!(
        counts.reads >= stats.misses && counts.reads < 2000,
        "{counts:?} {stats:?}"
    );
    assert_eq!(counted.ranges(), dump_ranges());
}

#[test]
fn pages_excluded_at_a_dump_level_beyond_zero_pages_are_unknown_not_zero() {
    // The same exclusion of zero pages, recorded as dump level 31 (cache, user, free pages
    // too): the reader cannot know excluded pages were zero, so it says so.
    let truth = Truth::load();
    let d1 = Case::KdumpZeroExcluded.open();
    let d31 = image::open(&dumps::dump_set().path("kdump-zlib-d31"), None, None).unwrap();
    assert_eq!(d31.ranges(), dump_ranges());
    let k = image::kdump::open(Source::open(&dumps::dump_set().path("kdump-zlib-d31")).unwrap())
        .unwrap();
    assert!(k.layout().dumped_pages() < k.layout().present_pages());
    let (mut zero_pages, mut data_pages) = (0, 0);
    let mut page = vec![0u8; 4096];
    for pfn in 0..dumps::RAM / 4096 {
        let addr = pfn * 4096 + 100;
        let want = truth.get(addr, 200).unwrap();
        let r = d31.read_phys(PhysAddr(addr), &mut page[..200]);
        if truth.get(pfn * 4096, 4096).unwrap().iter().all(|&b| b == 0) {
            zero_pages += 1;
            assert!(
                matches!(r, Err(MemError::Unknown { addr: a, .. }) if a == PhysAddr(addr)),
                "pfn {pfn:#x}: {r:?}"
            );
            d1.read_phys(PhysAddr(addr), &mut page[..200]).unwrap();
            assert!(page[..200].iter().all(|&b| b == 0));
        } else {
            data_pages += 1;
            r.unwrap();
            assert!(page[..200] == *want);
        }
    }
    assert!(
        zero_pages > 1000 && data_pages > 1000,
        "{zero_pages} zero, {data_pages} data pages"
    );
}

#[test]
fn makedumpfile_elf_output_leaves_zero_pages_out_as_zero_filled_tails() {
    let full = image::elf::open(Source::open(&Case::Elf.file()).unwrap()).unwrap();
    let d1 = image::elf::open(Source::open(&Case::ElfZeroExcluded.file()).unwrap()).unwrap();
    let zero_bytes = |pieces: &[image::Piece]| {
        pieces
            .iter()
            .filter(|p| p.loc == image::Location::Zero)
            .map(|p| p.len())
            .sum::<u64>()
    };
    assert_eq!(zero_bytes(full.layout().pieces()), 0);
    // Most of the 128 MiB guest is zero and no longer in the file, yet it reads back as zero
    // (every_byte_matches_pmemsave covers the contents).
    assert!(zero_bytes(d1.layout().pieces()) > 64 << 20);
    let file_len = std::fs::metadata(Case::ElfZeroExcluded.file())
        .unwrap()
        .len();
    assert!(file_len < 32 << 20, "{file_len}");
}
