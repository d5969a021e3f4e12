//! BTF parser tests on blobs built here (the real kernel blob is exercised by the corpus tests).

use super::*;

/// Builds a BTF blob record by record.
#[derive(Default)]
struct Builder {
    types: Vec<u8>,
    strs: Vec<u8>,
    next_id: u32,
}

impl Builder {
    fn new() -> Self {
        Builder { types: Vec::new(), strs: vec![0], next_id: 1 }
    }
    fn s(&mut self, name: &str) -> u32 {
        if name.is_empty() {
            return 0;
        }
        let off = self.strs.len() as u32;
        self.strs.extend_from_slice(name.as_bytes());
        self.strs.push(0);
        off
    }
    fn rec(&mut self, name: &str, kind: u32, vlen: u32, kflag: bool, third: u32, extra: &[u32]) -> u32 {
        let n = self.s(name);
        let info = (kind << 24) | vlen | ((kflag as u32) << 31);
        for w in [n, info, third].iter().chain(extra) {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
        self.next_id += 1;
        self.next_id - 1
    }
    fn int(&mut self, name: &str, size: u32) -> u32 {
        self.rec(name, 1, 0, false, size, &[size * 8])
    }
    fn ptr(&mut self, to: u32) -> u32 {
        self.rec("", 2, 0, false, to, &[])
    }
    fn typedef(&mut self, name: &str, to: u32) -> u32 {
        self.rec(name, 8, 0, false, to, &[])
    }
    fn array(&mut self, elem: u32, n: u32) -> u32 {
        self.rec("", 3, 0, false, 0, &[elem, elem, n])
    }
    /// `members`: (name, type, bit offset, bitfield size)
    fn compound(&mut self, kind: u32, name: &str, size: u32, members: &[(&str, u32, u32, u32)]) -> u32 {
        let kflag = members.iter().any(|m| m.3 != 0);
        let mut extra = Vec::new();
        for &(mn, ty, off, bits) in members {
            extra.push(self.s(mn));
            extra.push(ty);
            extra.push(if kflag { (bits << 24) | off } else { off });
        }
        self.rec(name, kind, members.len() as u32, kflag, size, &extra)
    }
    fn blob(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for w in [24u32, 0, self.types.len() as u32, self.types.len() as u32, self.strs.len() as u32] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strs);
        out
    }
}

/// A miniature task_struct: anonymous union, bitfields, typedef'd fields, an array.
fn sample() -> (Vec<u8>, u32) {
    let mut b = Builder::new();
    let int = b.int("int", 4);
    let uint = b.int("unsigned int", 4);
    let pid_t = b.typedef("pid_t", int);
    let chr = b.int("char", 1);
    let comm = b.array(chr, 16);
    let list = b.compound(4, "list_head", 16, &[]);
    let lp = b.ptr(list);
    // list_head's members refer to itself through a pointer.
    let _ = lp;
    let anon = b.compound(5, "", 8, &[("state", uint, 0, 0), ("__state", uint, 0, 0)]);
    let task = b.compound(
        4,
        "task_struct",
        64,
        &[
            ("", anon, 0, 0),
            ("flags", uint, 64, 0),
            ("in_execve", uint, 96, 1),
            ("in_iowait", uint, 97, 1),
            ("pid", pid_t, 128, 0),
            ("tasks", list, 192, 0),
            ("comm", comm, 320, 0),
        ],
    );
    (b.blob(), task)
}

#[test]
fn finds_members_through_anonymous_unions_and_typedefs() {
    let (blob, task) = sample();
    let btf = Btf::parse(blob).unwrap();
    assert_eq!(btf.structs_named("task_struct"), &[task]);
    let m = btf.find_member(task, "__state").unwrap().unwrap();
    assert_eq!(m.bit_offset, 0);
    let pid = btf.find_member(task, "pid").unwrap().unwrap();
    assert_eq!(pid.bit_offset / 8, 16);
    assert_eq!(btf.size_of(pid.type_id).unwrap(), 4);
    assert_eq!(btf.name(&btf.resolve(pid.type_id).unwrap()).unwrap(), "int");
    let comm = btf.find_member(task, "comm").unwrap().unwrap();
    assert_eq!((comm.bit_offset / 8, btf.size_of(comm.type_id).unwrap()), (40, 16));
    let bf = btf.find_member(task, "in_iowait").unwrap().unwrap();
    assert_eq!((bf.bit_offset, bf.bitfield_size), (97, 1));
    assert_eq!(btf.find_member(task, "nonexistent").unwrap(), None);
    assert_eq!(btf.size_of(task).unwrap(), 64);
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let (blob, _) = sample();
    for len in 0..blob.len() {
        assert!(Btf::parse(blob[..len].to_vec()).is_err(), "truncated to {len} bytes parsed");
    }
}

#[test]
fn header_checks() {
    let (blob, _) = sample();
    let mut bad = blob.clone();
    bad[0] = 0;
    assert!(matches!(Btf::parse(bad), Err(BtfError::Header(_))));
    let mut bad = blob.clone();
    bad[2] = 2;
    assert!(matches!(Btf::parse(bad), Err(BtfError::Header(_))));
    let mut bad = blob.clone();
    bad[12..16].copy_from_slice(&u32::MAX.to_le_bytes()); // type_len
    assert!(Btf::parse(bad).is_err());
}

#[test]
fn unknown_kind_stops_iteration_with_error() {
    let mut b = Builder::new();
    b.int("int", 4);
    b.rec("weird", 31, 0, false, 0, &[]);
    b.int("never reached", 4);
    let blob = b.blob();
    let (header, _) = Header::parse(&blob).unwrap();
    let read = (header.type_len as usize, header.str_len as usize);
    let ix = Indexed { index: Vec::new(), structs_by_name: HashMap::new(), read, cut: (false, false), stop: (0, 1) };
    let btf = Btf { data: blob.clone().into(), header, ix: ix.into(), short: Default::default(), sparse: None, found: Default::default() };
    let items: Vec<_> = btf.records().collect();
    assert_eq!(items.len(), 2);
    assert!(items[0].is_ok());
    assert!(matches!(items[1], Err(BtfError::Type { id: 2, .. })));
    assert!(Btf::parse(blob).is_err());
}

#[test]
fn typedef_loops_and_bad_ids_are_bounded() {
    let mut b = Builder::new();
    let a = b.typedef("a", 2); // id 1 -> 2
    let _ = b.typedef("b", a); // id 2 -> 1
    let s = b.compound(4, "s", 8, &[("x", 99, 0, 0)]);
    let btf = Btf::parse(b.blob()).unwrap();
    assert!(btf.resolve(1).is_err());
    assert!(btf.size_of(1).is_err());
    assert!(matches!(btf.get(0), Err(BtfError::NoType { .. })));
    assert!(matches!(btf.get(1000), Err(BtfError::NoType { .. })));
    let m = btf.find_member(s, "x").unwrap().unwrap();
    assert!(btf.size_of(m.type_id).is_err());
}

#[test]
fn self_containing_anonymous_member_is_bounded() {
    let mut b = Builder::new();
    // Type 1: an anonymous union whose only member is itself.
    b.compound(5, "", 8, &[("", 1, 0, 0)]);
    let s = b.compound(4, "outer", 8, &[("", 1, 0, 0)]);
    let btf = Btf::parse(b.blob()).unwrap();
    assert!(btf.find_member(s, "anything").is_err());
}

#[test]
fn random_mutations_never_panic() {
    let (blob, task) = sample();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..2000 {
        let mut m = blob.clone();
        for _ in 0..1 + (seed % 4) as usize {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let i = (seed as usize) % m.len();
            m[i] = (seed >> 32) as u8;
        }
        if let Ok(btf) = Btf::parse(m) {
            // Every lookup on whatever parsed must return, not panic.
            let _ = btf.find_member(task, "comm");
            let _ = btf.size_of(task);
            for t in btf.records().flatten() {
                let _ = btf.members(&t);
                let _ = btf.resolve(t.id);
                let _ = btf.name(&t);
            }
        }
    }
}

/// Found by the `btf` fuzz target: an array whose element is itself sent the ISF writer's
/// type descriptor into unbounded recursion (a stack overflow), and a bitfield whose
/// storage type claims ~2^64 bytes overflowed its bit arithmetic.
#[test]
fn isf_of_self_referring_and_huge_types_is_bounded() {
    let mut b = Builder::new();
    let arr = b.array(1, 4); // id 1: an array of itself
    let p = b.ptr(3); // id 2 -> id 3
    let parr = b.array(p, 2); // id 3: array of pointers to itself
    let huge = b.rec("huge", 1, 0, false, u32::MAX, &[32]);
    let big = b.array(huge, u32::MAX);
    b.compound(4, "s", 8, &[("a", arr, 0, 0), ("b", parr, 64, 0), ("c", big, 3, 5)]);
    let btf = Btf::parse(b.blob()).unwrap();
    let (_, user, _) = crate::introspect::isf::from_btf(&btf).unwrap();
    let s = &user["s"]["fields"];
    assert_eq!(s["a"]["type"]["kind"], "array");
    assert_eq!(s["c"]["type"]["kind"], "bitfield");
}

/// Two structs of one name, the second with a member the first lacks, and a struct whose
/// member type comes late: a prefix answers only what the whole blob answers.
fn late_types() -> Vec<u8> {
    let mut b = Builder::new();
    let int = b.int("int", 4);
    b.compound(4, "early", 8, &[("a", int, 0, 0), ("b", int, 32, 0)]);
    b.compound(4, "dup", 4, &[("x", int, 0, 0)]);
    // `early2.late` has type id 6 (`long`), defined after it.
    b.compound(4, "early2", 8, &[("late", 6, 0, 0)]);
    b.compound(4, "dup", 8, &[("x", int, 0, 0), ("y", int, 32, 0)]);
    b.int("long", 8);
    b.blob()
}

#[rstest::rstest]
#[case::whole(usize::MAX, usize::MAX)]
#[case::types_cut_mid_record(60, usize::MAX)]
#[case::strings_cut(usize::MAX, 12)]
#[case::nothing(0, 0)]
fn a_prefix_answers_as_the_whole_blob_or_says_it_is_short(#[case] types: usize, #[case] strs: usize) {
    let blob = late_types();
    let whole = Btf::parse(blob.clone()).unwrap();
    let part = Btf::parse_prefix(blob, types, strs).unwrap();
    assert!(!whole.is_partial());
    // Every lookup either gives the whole blob's answer and leaves the prefix not short, or
    // marks it short.
    let lookups: [&dyn Fn(&Btf) -> String; 4] = [
        &|b| format!("{:?}", b.structs_named("early").first().map(|&id| b.find_member(id, "b"))),
        &|b| format!("{:?}", b.structs_named("dup").first()),
        &|b| format!("{:?}", b.structs_named("early2").first().map(|&id| b.find_member(id, "late").map(|m| m.map(|m| b.size_of(m.type_id))))),
        &|b| format!("{:?}", b.structs_named("dup").iter().find(|&&id| matches!(b.find_member(id, "y"), Ok(Some(_))))),
    ];
    for (i, f) in lookups.iter().enumerate() {
        let part = Btf::parse_prefix(late_types(), types, strs).unwrap();
        let got = f(&part);
        if !part.short() {
            assert_eq!(got, f(&whole), "lookup {i} on {types}/{strs} bytes");
        }
    }
    if (types, strs) == (usize::MAX, usize::MAX) {
        assert!(!part.is_partial());
    } else {
        assert!(part.is_partial());
    }
}

#[test]
fn a_prefix_stops_at_a_struct_whose_name_was_not_read() {
    let blob = late_types();
    // Strings (members before their struct): "\0int\0a\0b\0early\0x\0dup\0..." — 15 bytes hold
    // "int", "a", "b", "early" only.
    let part = Btf::parse_prefix(blob, usize::MAX, 15).unwrap();
    assert_eq!(part.type_count(), 2, "int and early: dup's name was not read");
    assert!(!part.structs_named("early").is_empty());
    assert!(!part.short());
    assert!(part.structs_named("dup").is_empty());
    assert!(part.short());
}

/// Reading more of a blob continues the index of the part read before: the same index as
/// parsing that much from the start, for every pair of growing prefixes.
#[test]
fn a_continued_index_equals_a_fresh_one() {
    let blob = late_types();
    let (h, _) = Header::parse(&blob).unwrap();
    let types: Vec<usize> = (0..=h.type_len as usize + 8).step_by(5).collect();
    let strs: Vec<usize> = (0..=h.str_len as usize + 4).step_by(3).collect();
    let mut compared = 0;
    for (i, &t0) in types.iter().enumerate() {
        for (j, &s0) in strs.iter().enumerate() {
            let Ok(first) = Btf::parse_prefix(blob.clone(), t0, s0) else { continue };
            for &t1 in &types[i..] {
                for &s1 in &strs[j..] {
                    let fresh = Btf::parse_prefix(blob.clone(), t1, s1);
                    let continued = Btf::parse_after(blob.clone(), t1, s1, Some(first.indexed()));
                    match (fresh, continued) {
                        (Ok(a), Ok(b)) => assert_eq!(a.ix, b.ix, "{t0}/{s0} then {t1}/{s1}"),
                        (Err(a), Err(b)) => assert_eq!(a, b),
                        (a, b) => panic!("{t0}/{s0} then {t1}/{s1}: fresh {a:?}, continued {b:?}"),
                    }
                    compared += 1;
                }
            }
        }
    }
    assert!(compared > 1000, "{compared}");
}

/// The header read ahead (`Kernel::open` reads it with the image's variables) is kept only if
/// it parses and its sections end within the blob; the bytes read are kept with it.
#[test]
fn a_header_read_ahead_is_kept_when_it_fits() {
    let (blob, _) = sample();
    let mut read = BtfRead::default();
    let h = read.take_header(blob.len(), &blob[..40]).expect("parses");
    assert_eq!((read.header, read.data.len(), &read.data[..40]), (Some(h), blob.len(), &blob[..40]));
    let parsed = Btf::parse_after(read.data.clone(), 0, 0, None).expect("the header alone parses");
    assert_eq!(parsed.header, h);
    let mut short = BtfRead::default();
    assert!(short.take_header(blob.len() - 1, &blob[..40]).is_err(), "sections past the blob");
    assert!(short.take_header(blob.len(), &[0u8; 40]).is_err(), "no magic");
    assert!(short.header.is_none());
}
