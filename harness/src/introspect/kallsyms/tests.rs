//! kallsyms located and decoded from tables laid out here exactly as scripts/kallsyms.c (6.1)
//! lays them out, then corrupted. (The real tables are checked against /proc/kallsyms by the
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

fn token(i: usize) -> Vec<u8> {
    if (0x21..0x7f).contains(&i) {
        vec![i as u8]
    } else {
        format!("~{i:02x}").into_bytes()
    }
}

fn align8(x: u64) -> u64 {
    (x + 7) & !7
}

/// `n` symbols `T sym_<i>` at `BASE + 16 i`, absolute-percpu encoding.
fn build(n: usize, seqs: bool) -> Tables {
    let mut mem = VecMem::new(4 << 20);
    let offsets = RODATA + 0x1000;
    for i in 0..n {
        let v = -1i32 - 16 * i as i32;
        mem.write_u32(offsets + 4 * i as u64, v as u32);
    }
    let rb = align8(offsets + 4 * n as u64);
    mem.write_u64(rb, BASE);
    mem.write_u32(rb + 8, n as u32);
    let names = rb + 16;
    let mut stream = Vec::new();
    let mut markers = Vec::new();
    for i in 0..n {
        if i % 256 == 0 {
            markers.push(stream.len() as u32);
        }
        let name = format!("Tsym_{i}");
        stream.push(name.len() as u8);
        stream.extend(name.bytes());
    }
    mem.write(names, &stream);
    let m = align8(names + stream.len() as u64);
    for (k, v) in markers.iter().enumerate() {
        mem.write_u32(m + 4 * k as u64, *v);
    }
    let mut tt = align8(m + 4 * markers.len() as u64);
    if seqs {
        tt = align8(tt + 3 * n as u64);
    }
    let mut table = Vec::new();
    let mut index = Vec::new();
    for i in 0..256 {
        index.push(table.len() as u16);
        table.extend(token(i));
        table.push(0);
    }
    mem.write(tt, &table);
    let ti = align8(tt + table.len() as u64);
    for (i, v) in index.iter().enumerate() {
        mem.write(ti + 2 * i as u64, &v.to_le_bytes());
    }
    Tables { mem, offsets, names, markers: m, token_table: tt, token_index: ti }
}

fn cfg() -> LocateConfig {
    LocateConfig { stride: 512, span: 1 << 20, batch: 4 }
}

fn find(t: &Tables) -> Option<KallsymsLocation> {
    locate::locate(&t.mem, PhysAddr(RODATA), PhysAddr(RODATA + (1 << 20)), &cfg())
}

#[test]
fn locate_and_decode() {
    for seqs in [false, true] {
        let t = build(700, seqs);
        let loc = find(&t).expect("tables found");
        assert_eq!((loc.offsets, loc.num_syms, loc.relative_base, loc.names), (PhysAddr(t.offsets), 700, KVirt(BASE), PhysAddr(t.names)));
        assert_eq!(loc.mode, OffsetMode::AbsolutePercpu);
        let k = Kallsyms::load(&t.mem, loc).unwrap();
        assert_eq!(k.has_seqs_of_names, seqs);
        assert_eq!((k.markers, k.token_table, k.token_index), (PhysAddr(t.markers), PhysAddr(t.token_table), PhysAddr(t.token_index)));
        assert_eq!(k.symbol(699), Some(SymbolName { kind: 'T', name: "sym_699" }));
        assert_eq!(k.len(), 700);
        assert_eq!(k.addresses(&t.mem, &["sym_0", "sym_300"]).unwrap(), vec![KVirt(BASE), KVirt(BASE + 16 * 300)]);
        assert!(matches!(k.addresses(&t.mem, &["nope"]), Err(KallsymsError::NoSymbol { .. })));
        assert_eq!(k.all(&t.mem).unwrap().len(), 700);
    }
}

#[test]
fn wrong_marker_is_corrupt() {
    let mut t = build(700, false);
    t.mem.write_u32(t.markers + 4, 12345);
    let loc = find(&t).unwrap();
    assert!(matches!(Kallsyms::load(&t.mem, loc), Err(KallsymsError::Corrupt { .. })));
}

#[test]
fn zero_length_name_is_corrupt() {
    let mut t = build(700, false);
    // Entry 0 is [6, "Tsym_0"]: entry 1's length byte is at +7.
    t.mem.write(t.names + 7, &[0]);
    let loc = find(&t).unwrap();
    assert!(matches!(Kallsyms::load(&t.mem, loc), Err(KallsymsError::Corrupt { .. })));
}

#[test]
fn token_index_disagreeing_with_table_is_corrupt() {
    let mut t = build(700, false);
    t.mem.write(t.token_index + 10, &[0xff, 0xff]);
    let loc = find(&t).unwrap();
    assert!(matches!(Kallsyms::load(&t.mem, loc), Err(KallsymsError::Corrupt { .. })));
}

#[test]
fn implausible_counts_are_refused() {
    let t = build(700, false);
    let mut loc = find(&t).unwrap();
    loc.num_syms = u32::MAX;
    assert!(matches!(Kallsyms::load(&t.mem, loc), Err(KallsymsError::Corrupt { .. })));
    loc.num_syms = 0;
    assert!(matches!(Kallsyms::load(&t.mem, loc), Err(KallsymsError::Corrupt { .. })));
}

#[test]
fn names_running_off_memory_are_an_error() {
    let t = build(700, false);
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

#[test]
fn random_mutations_never_panic() {
    let t = build(700, true);
    let loc = find(&t).unwrap();
    let mut seed = 0x1234_5678u64;
    for _ in 0..300 {
        let mut mem = VecMem { base: 0, data: t.mem.data.clone() };
        for _ in 0..8 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Mutate inside the tables.
            let i = (t.offsets as usize) + (seed as usize) % (t.token_index as usize + 512 - t.offsets as usize);
            mem.data[i] = (seed >> 40) as u8;
        }
        if let Some(l) = locate::locate(&mem, PhysAddr(RODATA), PhysAddr(RODATA + (1 << 20)), &cfg()) {
            let _ = Kallsyms::load(&mem, l);
        }
        let _ = Kallsyms::load(&mem, loc);
    }
}
