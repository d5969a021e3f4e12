//! A BTF blob read record by record, through the kernel's own index of it.
//!
//! A kernel parses its vmlinux BTF once (`btf_vmlinux`, a private `struct btf` in
//! kernel/bpf/btf.c) and keeps `types`, a pointer to each record by id. Since 7.x the build
//! sorts the named types by name after the anonymous ones, and the kernel keeps the first named
//! id (`named_start_id`). Then a name's records are found by a search over ids, and any record
//! by its id, without reading the megabytes before it (`layout::sorted` reads; [`super::Btf::sparse`]
//! answers lookups from what it read).
//!
//! Invariant: a [`Sparse`] holds only records read whole at their own offsets (each checked to
//! end where the kernel's pointer to the next record points), string spans read at their own
//! offsets, and for each name searched every id of that name (the run that the sorted order
//! makes contiguous), or none.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use emulator::bytes::Bytes;

use super::{Header, TypeId, MAX_NAME};

/// Bytes of `*btf_vmlinux` read when opening (the fields up to `data_size` are in the first
/// 100 on every kernel so far).
pub const KERNEL_STRUCT_READ: usize = 128;

/// Where the kernel keeps its index of a name-sorted vmlinux BTF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelIndex {
    /// Address of `types`: `nr` pointers, the record of each id (0 is `void`, not in the blob).
    pub types: u64,
    pub nr: u32,
    /// The first named id (`named_start_id`): named types sorted by name from here on.
    pub named: u32,
}

impl KernelIndex {
    /// The index, from the first bytes of the kernel's `struct btf` (`raw`), if that is the
    /// parsed form of the blob at `start` of `len` bytes whose first bytes are `head` (a header
    /// that parsed as `header`), and the kernel sorted it: `None` otherwise.
    ///
    /// The struct starts with `data` (the blob itself, for vmlinux) and `types`, and holds a
    /// copy of the blob's header, then `nr_types`, `named_start_id` (7.x), `types_size` (the
    /// array's capacity) and `data_size`; the header copy grew by two words in 7.x, so the
    /// fields are found from the header copy and from `data_size`, the blob's length.
    pub fn parse(raw: &[u8], start: u64, len: u64, head: &[u8], header: &Header) -> Option<KernelIndex> {
        let b = Bytes::new(raw);
        if b.u64(0).ok()? != start {
            return None;
        }
        let types = b.u64(8).ok()?;
        let copy = head.get(..24)?;
        let h = (16..=64).step_by(8).find(|&h| raw.get(h..h + 24) == Some(copy))?;
        let len = u32::try_from(len).ok()?;
        let d = (h + 24 + 12..raw.len().min(h + 24 + 64)).step_by(4).find(|&o| b.u32(o).ok() == Some(len))?;
        let (nr, named, size) = (b.u32(d - 12).ok()?, b.u32(d - 8).ok()?, b.u32(d - 4).ok()?);
        // Every record is at least 12 bytes; `void` has none.
        let most = header.type_len / 12 + 1;
        (types.is_multiple_of(8) && 1 < named && named < nr && nr <= size && nr <= most).then_some(KernelIndex { types, nr, named })
    }
}

/// The ids of a name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Named {
    /// Every id of the name, ascending.
    pub ids: Vec<TypeId>,
    /// Those that are structs.
    pub structs: Vec<TypeId>,
}

/// What was read of a blob through the kernel's index (kept in the kernel's `BtfRead`; the
/// bytes themselves are in its buffer, at their own offsets).
#[derive(Debug, Clone, PartialEq)]
pub struct Sparse {
    pub index: KernelIndex,
    /// Offset in the type section of each record read whole.
    pub records: HashMap<TypeId, u32>,
    /// Spans of the string section read: start to end, disjoint and not touching.
    strs: BTreeMap<u32, u32>,
    /// The names searched.
    pub named: HashMap<Vec<u8>, Named>,
    /// The search's first probes: (id, record address, name offset), ascending.
    pub pivots: Vec<(TypeId, u64, u32)>,
}

/// What lookups on a sparse blob needed that was not read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wants {
    pub ids: BTreeSet<TypeId>,
    pub strs: BTreeSet<u32>,
    pub names: BTreeSet<Vec<u8>>,
}

impl Wants {
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.strs.is_empty() && self.names.is_empty()
    }
}

impl Sparse {
    pub fn new(index: KernelIndex) -> Sparse {
        Sparse { index, records: HashMap::new(), strs: BTreeMap::new(), named: HashMap::new(), pivots: Vec::new() }
    }

    /// Note that `strs[start..end]` (the string section's bytes) was read.
    pub fn add_str(&mut self, start: u32, end: u32) {
        if end <= start {
            return;
        }
        let (mut s, mut e) = (start, end);
        let joined: Vec<u32> = self.strs.range(..=end).rev().take_while(|&(_, &b)| b >= start).map(|(&a, _)| a).collect();
        for a in joined {
            let b = self.strs.remove(&a).unwrap_or(a);
            (s, e) = (s.min(a), e.max(b));
        }
        self.strs.insert(s, e);
    }

    /// The bytes read of the string at `off` (of the section `strs`), and whether they end
    /// with its NUL (the NUL not included); `None` if nothing at `off` was read.
    pub fn known_str<'a>(&self, strs: Bytes<'a>, off: u32) -> Option<(&'a [u8], bool)> {
        let (_, &end) = self.strs.range(..=off).next_back().filter(|&(_, &e)| e > off)?;
        let bytes = strs.slice(off as usize, (end - off) as usize).ok()?;
        Some(match bytes.iter().position(|&c| c == 0) {
            Some(n) => (&bytes[..n], true),
            None => (bytes, false),
        })
    }

    /// The string at `off`: `Err(true)` if more of it must be read, `Err(false)` if it is no
    /// name (outside the section, or unterminated within [`MAX_NAME`] or the section).
    pub fn str_at<'a>(&self, strs: Bytes<'a>, off: u32) -> Result<&'a [u8], bool> {
        if off as usize >= strs.len() {
            return Err(false);
        }
        match self.known_str(strs, off) {
            Some((name, true)) if name.len() < MAX_NAME => Ok(name),
            Some((name, _)) => Err(name.len() < MAX_NAME && off as usize + name.len() < strs.len()),
            None => Err(true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: u64 = 0xffff_ffff_8200_0000;
    const TYPES: u64 = 0xffff_8880_0200_0000;

    /// A blob header (24 bytes) and the matching parsed header.
    fn head(type_len: u32, str_len: u32) -> (Vec<u8>, Header) {
        let mut h = vec![0x9f, 0xeb, 1, 0];
        for w in [24u32, 0, type_len, type_len, str_len] {
            h.extend_from_slice(&w.to_le_bytes());
        }
        let (parsed, _) = Header::parse(&h).unwrap();
        (h, parsed)
    }

    /// The first bytes of a kernel's `struct btf`: `data`, `types`, four more pointers, the
    /// header copy (`copy_len` bytes: 24, or 32 with 7.x's layout section), then `words`.
    fn kernel_struct(head: &[u8], copy_len: usize, words: &[u32]) -> Vec<u8> {
        let mut raw = Vec::new();
        for p in [START, TYPES, 0, 0, START + 0x30_0000, START + 24] {
            raw.extend_from_slice(&p.to_le_bytes());
        }
        raw.extend_from_slice(head);
        raw.resize(48 + copy_len, 0);
        for w in words {
            raw.extend_from_slice(&w.to_le_bytes());
        }
        raw.resize(KERNEL_STRUCT_READ, 0xaa);
        raw
    }

    #[test]
    fn the_index_of_a_sorted_blob_is_found_past_either_header_copy() {
        let (h, parsed) = head(3_000_000, 2_000_000);
        let len = 24 + 5_000_000u64;
        // 7.x: nr_types, named_start_id, types_size, data_size after a 32-byte header copy.
        let raw = kernel_struct(&h, 32, &[124_640, 55_242, 155_718, len as u32, 1]);
        assert_eq!(KernelIndex::parse(&raw, START, len, &h, &parsed), Some(KernelIndex { types: TYPES, nr: 124_640, named: 55_242 }));
        // named_start_id after the 24-byte copy.
        let raw = kernel_struct(&h, 24, &[124_640, 55_242, 155_718, len as u32, 1]);
        assert_eq!(KernelIndex::parse(&raw, START, len, &h, &parsed).map(|i| i.named), Some(55_242));
    }

    #[test]
    fn no_index_where_the_blob_is_not_sorted_or_not_this_one() {
        let (h, parsed) = head(3_000_000, 2_000_000);
        let len = 24 + 5_000_000u64;
        // 6.x: nr_types, types_size, data_size (no named_start_id).
        let unsorted = kernel_struct(&h, 24, &[124_640, 155_718, len as u32, 1]);
        assert_eq!(KernelIndex::parse(&unsorted, START, len, &h, &parsed), None);
        let sorted = kernel_struct(&h, 32, &[124_640, 55_242, 155_718, len as u32, 1]);
        assert_eq!(KernelIndex::parse(&sorted, START + 8, len, &h, &parsed), None, "another blob");
        assert_eq!(KernelIndex::parse(&sorted, START, len + 4, &h, &parsed), None, "another length");
        let (other, _) = head(3_000_004, 2_000_000);
        assert_eq!(KernelIndex::parse(&sorted, START, len, &other, &parsed), None, "another header");
        // More types than the type section can hold, or named_start_id past them.
        let many = kernel_struct(&h, 32, &[300_000, 55_242, 400_000, len as u32, 1]);
        assert_eq!(KernelIndex::parse(&many, START, len, &h, &parsed), None);
        let past = kernel_struct(&h, 32, &[124_640, 124_640, 155_718, len as u32, 1]);
        assert_eq!(KernelIndex::parse(&past, START, len, &h, &parsed), None);
        assert_eq!(KernelIndex::parse(&sorted[..60], START, len, &h, &parsed), None, "cut short");
    }

    #[test]
    fn string_spans_join_and_say_what_is_left_to_read() {
        let sec = b"\0task_struct\0cred\0a_name_unterminated_in_the_section";
        let strs = Bytes::new(sec);
        let mut s = Sparse::new(KernelIndex { types: TYPES, nr: 10, named: 2 });
        assert_eq!(s.str_at(strs, 1), Err(true), "nothing read");
        s.add_str(1, 8);
        assert_eq!(s.known_str(strs, 1), Some((&b"task_st"[..], false)));
        assert_eq!(s.str_at(strs, 1), Err(true), "cut by the span's end");
        s.add_str(8, 16);
        s.add_str(20, 24);
        s.add_str(16, 20);
        assert_eq!(s.strs.len(), 1, "touching spans joined: {:?}", s.strs);
        assert_eq!(s.str_at(strs, 1), Ok(&b"task_struct"[..]));
        assert_eq!(s.str_at(strs, 13), Ok(&b"cred"[..]));
        assert_eq!(s.str_at(strs, 19), Err(true), "a string cut at the span's end");
        s.add_str(0, sec.len() as u32);
        assert_eq!(s.str_at(strs, 19), Err(false), "unterminated at the section's end");
        assert_eq!(s.str_at(strs, sec.len() as u32), Err(false), "outside the section");
    }
}
