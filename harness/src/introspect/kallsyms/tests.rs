//! kallsyms located and decoded from tables laid out here exactly as scripts/kallsyms.c lays
//! them out in each format (6.1 offsets-first, 6.12 names-first with a base, 7.x names-first
//! pc-relative), then corrupted. (The real tables are checked against /proc/kallsyms by the
//! corpus tests.)

use super::*;
use crate::introspect::testutil::VecMem;

const RODATA: u64 = 0x20_0000;
const BASE: u64 = 0xffff_ffff_8100_0000;

struct Tables {
    mem: VecMem,
    offsets: u64,
    names: u64,
    markers: u64,
    token_table: u64,
    token_index: u64,
}

/// The formats `scripts/kallsyms` writes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fmt {
    /// 6.1: offsets, base, count, names, markers, [seqs], tokens; ALGN 8, absolute per-CPU.
    OffsetsFirst { seqs: bool },
    /// 6.4 to 6.14: count, names, markers, tokens, offsets, base, seqs; ALGN 8.
    NamesFirst,
    /// 7.x: the same without the base, entries pc-relative; ALGN 4.
    PcRelative,
}

fn token(i: usize) -> Vec<u8> {
    if (0x21..0x7f).contains(&i) {
        vec![i as u8]
    } else {
        format!("~{i:02x}").into_bytes()
    }
}

fn word(mem: &VecMem, at: u64) -> u32 {
    u32::from_le_bytes(mem.data[at as usize..at as usize + 4].try_into().unwrap())
}

fn align(x: u64, a: u64) -> u64 {
    (x + a - 1) & !(a - 1)
}

/// Symbol `i` is `T sym_<i>` at `BASE + 16 i` (pc-relative: at physical `RODATA - 0x100000 + 16 i`).
/// `kallsyms_seqs_of_names`: entry indices in name order, as scripts/kallsyms writes them (3
/// bytes each, big-endian).
fn write_seqs(mem: &mut VecMem, at: u64, n: usize) {
    let mut by_name: Vec<usize> = (0..n).collect();
    by_name.sort_by_key(|i| format!("sym_{i}"));
    for (p, i) in by_name.into_iter().enumerate() {
        mem.write(at + 3 * p as u64, &[(i >> 16) as u8, (i >> 8) as u8, i as u8]);
    }
}

fn build(n: usize, fmt: Fmt) -> Tables {
    build_padded(n, fmt, 0)
}

/// [`build`] with every name `pad` bytes longer (`Tsym_<i>_____...`).
fn build_padded(n: usize, fmt: Fmt, pad: usize) -> Tables {
    let mut mem = VecMem::new(4 << 20);
    let a = if fmt == Fmt::PcRelative { 4 } else { 8 };
    let mut stream = Vec::new();
    let mut markers = Vec::new();
    for i in 0..n {
        if i % 256 == 0 {
            markers.push(stream.len() as u32);
        }
        let name = format!("Tsym_{i}{}", "_".repeat(pad));
        stream.push(name.len() as u8);
        stream.extend(name.bytes());
    }
    let mut table = Vec::new();
    let mut index = Vec::new();
    for i in 0..256 {
        index.push(table.len() as u16);
        table.extend(token(i));
        table.push(0);
    }
    let write_offsets = |mem: &mut VecMem, at: u64| {
        for i in 0..n {
            let v = match fmt {
                Fmt::PcRelative => ((RODATA - 0x10_0000 + 16 * i as u64) as i64 - (at + 4 * i as u64) as i64) as i32,
                _ => -1i32 - 16 * i as i32,
            };
            mem.write_u32(at + 4 * i as u64, v as u32);
        }
    };
    let write_markers = |mem: &mut VecMem, at: u64| {
        for (k, v) in markers.iter().enumerate() {
            mem.write_u32(at + 4 * k as u64, *v);
        }
    };
    let write_tokens = |mem: &mut VecMem, tt: u64| -> u64 {
        mem.write(tt, &table);
        let ti = align(tt + table.len() as u64, a);
        for (i, v) in index.iter().enumerate() {
            mem.write(ti + 2 * i as u64, &v.to_le_bytes());
        }
        ti
    };
    match fmt {
        Fmt::OffsetsFirst { seqs } => {
            let offsets = RODATA + 0x1000;
            write_offsets(&mut mem, offsets);
            let rb = align(offsets + 4 * n as u64, 8);
            mem.write_u64(rb, BASE);
            mem.write_u32(rb + 8, n as u32);
            let names = rb + 16;
            mem.write(names, &stream);
            let m = align(names + stream.len() as u64, 8);
            write_markers(&mut mem, m);
            let mut tt = align(m + 4 * markers.len() as u64, 8);
            if seqs {
                write_seqs(&mut mem, tt, n);
                tt = align(tt + 3 * n as u64, 8);
            }
            let ti = write_tokens(&mut mem, tt);
            Tables { mem, offsets, names, markers: m, token_table: tt, token_index: ti }
        }
        Fmt::NamesFirst | Fmt::PcRelative => {
            // Something before the tables, as the banner is before them in 7.x.
            mem.write(RODATA, b"Linux version 7.2.13 (test)\0");
            let count = RODATA + 0x1000;
            mem.write_u32(count, n as u32);
            let names = align(count + 4, a);
            mem.write(names, &stream);
            let m = align(names + stream.len() as u64, a);
            write_markers(&mut mem, m);
            let tt = align(m + 4 * markers.len() as u64, a);
            let ti = write_tokens(&mut mem, tt);
            let offsets = align(ti + 512, a);
            write_offsets(&mut mem, offsets);
            let mut seqs = offsets + 4 * n as u64;
            if fmt == Fmt::NamesFirst {
                let rb = align(seqs, 8);
                mem.write_u64(rb, BASE);
                seqs = rb + 8;
            }
            write_seqs(&mut mem, seqs, n);
            Tables { mem, offsets, names, markers: m, token_table: tt, token_index: ti }
        }
    }
}

fn cfg() -> LocateConfig {
    LocateConfig { stride: 512, span: 1 << 20, batch: 4 }
}

fn find(t: &Tables) -> Option<KallsymsLocation> {
    locate::locate(&t.mem, PhysAddr(RODATA), PhysAddr(RODATA + (1 << 20)), &cfg())
}

#[rstest::rstest]
#[case::v6_1(Fmt::OffsetsFirst { seqs: false }, 700)]
#[case::v6_2_seqs(Fmt::OffsetsFirst { seqs: true }, 700)]
#[case::v6_12(Fmt::NamesFirst, 700)]
#[case::v6_12_one_block(Fmt::NamesFirst, 200)]
#[case::v7(Fmt::PcRelative, 700)]
#[case::v7_one_marker_block(Fmt::PcRelative, 256)]
#[case::v7_odd(Fmt::PcRelative, 1029)]
// Enough markers to be probed for (32 or more) rather than found by walking every name.
#[case::v6_1_probed(Fmt::OffsetsFirst { seqs: false }, 20_000)]
#[case::v6_2_seqs_probed(Fmt::OffsetsFirst { seqs: true }, 20_000)]
#[case::v6_12_probed(Fmt::NamesFirst, 20_000)]
#[case::v7_probed(Fmt::PcRelative, 20_123)]
fn locate_and_decode(#[case] fmt: Fmt, #[case] n: usize) {
    let t = build(n, fmt);
    let loc = find(&t).expect("tables found");
    assert_eq!((loc.offsets, loc.num_syms as usize, loc.names), (PhysAddr(t.offsets), n, PhysAddr(t.names)));
    let (order, mode, base) = match fmt {
        Fmt::OffsetsFirst { .. } => (TableOrder::OffsetsFirst, OffsetMode::AbsolutePercpu, Some(KVirt(BASE))),
        Fmt::NamesFirst => (TableOrder::NamesFirst, OffsetMode::AbsolutePercpu, Some(KVirt(BASE))),
        Fmt::PcRelative => (TableOrder::NamesFirst, OffsetMode::PcRelative, None),
    };
    assert_eq!((loc.order, loc.mode, loc.relative_base), (order, mode, base));
    let mut k = Kallsyms::load(&t.mem, loc).unwrap();
    // Small tables are scanned; here the search is what is tested.
    k.search_above = 0;
    assert_eq!(k.has_seqs_of_names, fmt == Fmt::OffsetsFirst { seqs: true });
    // Where kallsyms_seqs_of_names is there (written sorted above), lookups search it.
    assert_eq!(k.searches_by_name(), fmt != Fmt::OffsetsFirst { seqs: false });
    assert_eq!((k.markers, k.token_table, k.token_index), (PhysAddr(t.markers), PhysAddr(t.token_table), PhysAddr(t.token_index)));
    let last = format!("sym_{}", n - 1);
    assert_eq!(k.symbol(&t.mem, n as u32 - 1).unwrap(), Some(SymbolName { kind: 'T', name: last }));
    // Found by search or scan alike, absent names too.
    let names: Vec<String> = (0..n).step_by(97).map(|i| format!("sym_{i}")).chain(["sym_".into(), "zzz".into(), "a".into()]).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let want: Vec<Option<u32>> = (0..n).step_by(97).map(|i| Some(i as u32)).chain([None, None, None]).collect();
    assert_eq!(k.indices_of(&t.mem, &refs).unwrap(), want);
    assert_eq!(k.indices_by_scan(&t.mem, &refs).unwrap(), want);
    assert_eq!(k.searches_by_name(), fmt != Fmt::OffsetsFirst { seqs: false }, "the search agreed with itself");
    assert_eq!(k.len(), n);
    if fmt == Fmt::PcRelative {
        assert!(k.needs_placement());
        assert!(matches!(k.addresses(&t.mem, &["sym_0"]), Err(KallsymsError::Unplaced { .. })));
        let phys = k.image_phys(&t.mem, &["sym_0", "sym_100", "nope"]).unwrap();
        assert_eq!(phys, vec![Some(PhysAddr(RODATA - 0x10_0000)), Some(PhysAddr(RODATA - 0x10_0000 + 1600)), None]);
        k.place_image(BASE.wrapping_sub(RODATA - 0x10_0000));
    }
    assert_eq!(k.addresses(&t.mem, &["sym_0", "sym_100"]).unwrap(), vec![KVirt(BASE), KVirt(BASE + 16 * 100)]);
    assert!(matches!(k.addresses(&t.mem, &["nope"]), Err(KallsymsError::NoSymbol { .. })));
    assert_eq!(k.all(&t.mem).unwrap().len(), n);
}

/// Names first, sampled so that the first table-like block is in the markers (which read as
/// monotonic too) and the next sample is past the offsets table: the token table and index are
/// found after the markers' run (Debian 7.2's layout against the default stride).
#[rstest::rstest]
fn names_first_found_from_a_hit_in_the_markers(#[values(Fmt::NamesFirst, Fmt::PcRelative)] fmt: Fmt) {
    let n = 20_000;
    let t = build(n, fmt);
    let stride = t.markers - RODATA;
    assert!(t.offsets + 4 * (n as u64) < t.markers + stride, "the next sample is past the offsets");
    let cfg = LocateConfig { stride, span: 1 << 20, batch: 4 };
    let loc = locate::locate(&t.mem, PhysAddr(RODATA), PhysAddr(RODATA + (1 << 20)), &cfg).expect("tables found");
    assert_eq!((loc.offsets, loc.num_syms as usize, loc.names, loc.markers), (PhysAddr(t.offsets), n, PhysAddr(t.names), Some(PhysAddr(t.markers))));
}

/// Names three times as long as the probe's guess: the markers are found through
/// `kallsyms_seqs_of_names` right after them (a few windows over the span, two bisections),
/// where a table without it takes the dense probe's many windows; a table whose seqs read as
/// something else from the front on is still found by the dense probe.
#[test]
fn markers_found_through_the_seqs_after_them() {
    let n = 20_000;
    let windows = |t: &Tables| {
        let loc = find(t).expect("tables found");
        let counted = emulator::mem::Counting::new(&t.mem);
        let k = Kallsyms::load(&counted, loc).expect("opened");
        assert_eq!((k.markers, k.token_table), (PhysAddr(t.markers), PhysAddr(t.token_table)));
        counted.snapshot().reads
    };
    let with = windows(&build_padded(n, Fmt::OffsetsFirst { seqs: true }, 20));
    let without = windows(&build_padded(n, Fmt::OffsetsFirst { seqs: false }, 20));
    assert!(with < 128 + 40 + 2 * 16 + 20, "{with} reads");
    assert!(without > 2 * 128, "{without} reads");
    // The first half of the seqs unlike a permutation: the bisection lands inside the table,
    // the markers are not where it points, and the dense probe finds them.
    let mut t = build_padded(n, Fmt::OffsetsFirst { seqs: true }, 20);
    let seqs = t.token_table - align(3 * n as u64, 8);
    t.mem.write(seqs, &vec![0xee; 3 * n / 2]);
    let loc = find(&t).expect("tables found");
    assert_eq!(Kallsyms::load(&t.mem, loc).expect("opened").markers, PhysAddr(t.markers));
}

/// A token table longer than the first read (256 tokens of 20 bytes: 5.25 KiB) is read again
/// whole; a table with an empty token is none.
#[test]
fn long_token_tables_are_read_again() {
    let mut mem = VecMem::new(1 << 20);
    let at = 0x1000u64;
    let mut table = Vec::new();
    let mut index = Vec::new();
    for i in 0..256 {
        index.push(table.len() as u16);
        table.extend(format!("tok{i:0>17}").bytes());
        table.push(0);
    }
    mem.write(at, &table);
    let ti = align(at + table.len() as u64, 8);
    for (i, v) in index.iter().enumerate() {
        mem.write(ti + 2 * i as u64, &v.to_le_bytes());
    }
    assert_eq!(token_table(&table[..4096], 16 << 10), Err(true), "cut short");
    let (tokens, ti_found) = read_tokens(&mem, &[(at, 8)]).unwrap().expect("found").1;
    assert_eq!((tokens.len(), tokens[255].as_slice(), ti_found), (256, &b"tok00000000000000255"[..], PhysAddr(ti)));
    let mut bad = table.clone();
    bad[21] = 0; // the second token's first byte: an empty token
    assert_eq!(token_table(&bad, 16 << 10), Err(false));
}

/// A symbol's address is read once: a later lookup of it (the pid index's of `init_pid_ns`,
/// after opening read it with the others) reads nothing.
#[test]
fn addresses_are_read_once() {
    let t = build(700, Fmt::OffsetsFirst { seqs: true });
    let counted = emulator::mem::Counting::new(&t.mem);
    let k = Kallsyms::load(&counted, find(&t).unwrap()).unwrap();
    let first = k.lookup(&counted, &["sym_1", "sym_600"]).unwrap();
    let reads = counted.snapshot().reads;
    assert_eq!(k.lookup(&counted, &["sym_600"]).unwrap(), vec![first[1]]);
    assert_eq!(counted.snapshot().reads, reads);
    assert_eq!(first, vec![Some(KVirt(BASE + 16)), Some(KVirt(BASE + 16 * 600))]);
}

#[test]
fn seqs_windows_are_distinct_indices_below_the_count() {
    let perm: Vec<u8> = (0..30u32).flat_map(|i| [0, 0, (i * 7 % 30) as u8]).collect();
    assert!(stream::looks_like_seqs(&perm[..64], 30));
    assert!(stream::looks_like_seqs(&perm[2..66], 30), "at another phase");
    assert!(!stream::looks_like_seqs(&perm[..64], 20), "an index past the count");
    assert!(!stream::looks_like_seqs(&[0u8; 64], 30), "zero padding repeats 0");
    let markers: Vec<u8> = (0..16u32).flat_map(|k| (k * 3000).to_le_bytes()).collect();
    assert!(!stream::looks_like_seqs(&markers, 100_000));
}

/// With the stream's end probed for, a sample of blocks is checked when opening and every other
/// block when first decoded: a wrong marker is an error either way, never a wrong name.
#[test]
fn wrong_marker_of_a_probed_stream_is_corrupt() {
    let n: usize = 20_000;
    let m = n.div_ceil(256) as u64;
    // Block 11 is in the sample checked when opening (0, 11, 22, ... of 78).
    let mut t = build(n, Fmt::OffsetsFirst { seqs: true });
    t.mem.write_u32(t.markers + 4 * 11, word(&t.mem, t.markers + 4 * 11) + 1);
    let loc = find(&t).unwrap();
    assert!(matches!(Kallsyms::load(&t.mem, loc), Err(KallsymsError::Corrupt { .. })));
    // Block 5 is not: a lookup that needs it fails.
    let mut t = build(n, Fmt::OffsetsFirst { seqs: true });
    let at = t.markers + 4 * 5;
    t.mem.write_u32(at, word(&t.mem, at) + 1);
    let loc = find(&t).unwrap();
    let k = Kallsyms::load(&t.mem, loc).expect("block 5 not checked yet");
    assert!(matches!(k.symbol(&t.mem, 5 * 256 + 3), Err(KallsymsError::Corrupt { .. })));
    assert!(matches!(k.all(&t.mem), Err(KallsymsError::Corrupt { .. })));
    assert!(m > 32);
}

#[test]
fn wrong_marker_is_corrupt() {
    let mut t = build(700, Fmt::OffsetsFirst { seqs: false });
    t.mem.write_u32(t.markers + 4, 12345);
    let loc = find(&t).unwrap();
    assert!(matches!(Kallsyms::load(&t.mem, loc), Err(KallsymsError::Corrupt { .. })));
}

#[test]
fn zero_length_name_is_corrupt() {
    let mut t = build(700, Fmt::OffsetsFirst { seqs: false });
    // Entry 0 is [6, "Tsym_0"]: entry 1's length byte is at +7.
    t.mem.write(t.names + 7, &[0]);
    let loc = find(&t).unwrap();
    assert!(matches!(Kallsyms::load(&t.mem, loc), Err(KallsymsError::Corrupt { .. })));
}

#[test]
fn token_index_disagreeing_with_table_is_corrupt() {
    let mut t = build(700, Fmt::OffsetsFirst { seqs: false });
    t.mem.write(t.token_index + 10, &[0xff, 0xff]);
    let loc = find(&t).unwrap();
    assert!(matches!(Kallsyms::load(&t.mem, loc), Err(KallsymsError::Corrupt { .. })));
}

#[test]
fn implausible_counts_are_refused() {
    let t = build(700, Fmt::OffsetsFirst { seqs: false });
    let mut loc = find(&t).unwrap();
    loc.num_syms = u32::MAX;
    assert!(matches!(Kallsyms::load(&t.mem, loc), Err(KallsymsError::Corrupt { .. })));
    loc.num_syms = 0;
    assert!(matches!(Kallsyms::load(&t.mem, loc), Err(KallsymsError::Corrupt { .. })));
}

#[test]
fn names_running_off_memory_are_an_error() {
    let t = build(700, Fmt::OffsetsFirst { seqs: false });
    let mut loc = find(&t).unwrap();
    loc.names = PhysAddr((4 << 20) - 100);
    assert!(Kallsyms::load(&t.mem, loc).is_err());
}

#[test]
fn no_tables_no_location() {
    let mem = VecMem::new(4 << 20);
    assert!(locate::locate(&mem, PhysAddr(RODATA), PhysAddr(RODATA + (1 << 20)), &cfg()).is_none());
    // Monotonic data that is not followed by a kallsyms header is rejected too.
    let mut mem = VecMem::new(4 << 20);
    for i in 0..2000u64 {
        mem.write_u32(RODATA + 0x1000 + 4 * i, (i * 8) as u32);
    }
    assert!(locate::locate(&mem, PhysAddr(RODATA), PhysAddr(RODATA + (1 << 20)), &cfg()).is_none());
}

#[rstest::rstest]
fn random_mutations_never_panic(#[values(Fmt::OffsetsFirst { seqs: true }, Fmt::NamesFirst, Fmt::PcRelative)] fmt: Fmt) {
    let t = build(700, fmt);
    let loc = find(&t).unwrap();
    let mut seed = 0x1234_5678u64;
    for _ in 0..100 {
        let mut mem = VecMem { base: 0, data: t.mem.data.clone() };
        for _ in 0..8 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Mutate inside the tables.
            let (lo, hi) = (t.offsets.min(t.names - 8), t.offsets.max(t.token_index) + 512 + 4 * 700);
            let i = lo as usize + (seed as usize) % (hi - lo) as usize;
            mem.data[i] = (seed >> 40) as u8;
        }
        if let Some(l) = locate::locate(&mem, PhysAddr(RODATA), PhysAddr(RODATA + (1 << 20)), &cfg()) {
            let _ = Kallsyms::load(&mem, l);
        }
        let _ = Kallsyms::load(&mem, loc);
    }
}

/// A `kallsyms_seqs_of_names` that is a permutation but not in name order is not searched:
/// lookups scan, and still find every symbol.
#[test]
fn unsorted_name_order_is_not_trusted() {
    let n = 700;
    let mut t = build(n, Fmt::NamesFirst);
    let loc = find(&t).expect("tables found");
    // After the offsets and the 8-aligned base: table order, not name order.
    let seqs = ((t.offsets + 4 * n as u64 + 7) & !7) + 8;
    for i in 0..n {
        t.mem.write(seqs + 3 * i as u64, &[0, (i >> 8) as u8, i as u8]);
    }
    let mut k = Kallsyms::load(&t.mem, loc).unwrap();
    k.search_above = 0;
    assert_eq!(k.indices_of(&t.mem, &["sym_99", "sym_650", "nope"]).unwrap(), vec![Some(99), Some(650), None]);
    assert!(!k.searches_by_name(), "the search saw names out of order and gave way to the scan");
}
