//! The decoder against rings written the way printk_ringbuffer.c writes them (`Writer` follows
//! `desc_reserve`, `data_alloc` and `get_next_lpos`), then damaged.

use super::*;

const ID_MASK: u64 = (1 << 62) - 1;

/// A small ring written as the kernel writes one: 2^count_bits descriptors, 2^size_bits bytes.
struct Writer {
    l: PrbLayout,
    h: RingHeader,
    descs: Vec<u8>,
    infos: Vec<u8>,
    data: Vec<u8>,
    seq: u64,
}

impl Writer {
    fn new(count_bits: u32, size_bits: u32) -> Writer {
        let l = PrbLayout::linux(48, 88);
        let count = 1u64 << count_bits;
        let size = 1u64 << size_bits;
        // DESC0_ID and BLK0_LPOS: the ids and positions just before the first wrap.
        let id0 = count.wrapping_add(1).wrapping_neg() & ID_MASK;
        let lpos0 = size.wrapping_neg();
        let h = RingHeader { count_bits, descs: 0, infos: 0, head_id: id0, tail_id: id0, size_bits, data: 0, head_lpos: lpos0, tail_lpos: lpos0, fail: Some(0) };
        let mut w = Writer { l, h, descs: vec![0; (count * 24) as usize], infos: vec![0; (count * 88) as usize], data: vec![0; size as usize], seq: 0 };
        w.set_desc(count - 1, (3 << 62) | id0, 1, 1);
        w
    }

    fn set_desc(&mut self, index: u64, sv: u64, begin: u64, next: u64) {
        let d = (index * 24) as usize;
        self.descs[d..d + 8].copy_from_slice(&sv.to_le_bytes());
        self.descs[d + 8..d + 16].copy_from_slice(&begin.to_le_bytes());
        self.descs[d + 16..d + 24].copy_from_slice(&next.to_le_bytes());
    }

    fn desc(&self, index: u64) -> (u64, u64, u64) {
        let d = (index * 24) as usize;
        let u = |o: usize| u64::from_le_bytes(self.descs[d + o..d + o + 8].try_into().unwrap());
        (u(0), u(8), u(16))
    }

    /// Drop the oldest record (its descriptor becomes reusable).
    fn pop_tail(&mut self) {
        let index = self.h.tail_id & (self.h.count() - 1);
        let (sv, _, next) = self.desc(index);
        self.set_desc(index, (3 << 62) | (sv & ID_MASK), 1, 1);
        if next & 1 == 0 {
            self.h.tail_lpos = next;
        }
        self.h.tail_id = (self.h.tail_id + 1) & ID_MASK;
    }

    /// Append a record in `state` (2 = finalized); an empty text is an empty-line record.
    fn push(&mut self, text: &str, state: u64) -> u64 {
        let count = self.h.count();
        let size = self.h.data_size();
        let id = (self.h.head_id + 1) & ID_MASK;
        if id.wrapping_sub(self.h.tail_id) & ID_MASK >= count {
            self.pop_tail();
        }
        let index = id & (count - 1);
        let (begin, next) = if text.is_empty() {
            (EMPTY_LINE_LPOS, EMPTY_LINE_LPOS)
        } else {
            let need = (8 + text.len() as u64).div_ceil(8) * 8;
            let begin = self.h.head_lpos;
            let mut next = begin.wrapping_add(need);
            if next >> self.h.size_bits != begin >> self.h.size_bits {
                next = (next & !(size - 1)).wrapping_add(need);
            }
            while next.wrapping_sub(self.h.tail_lpos) > size {
                self.pop_tail();
            }
            let off = if next >> self.h.size_bits == begin >> self.h.size_bits { begin & (size - 1) } else { 0 };
            self.data[(begin & (size - 1)) as usize..][..8].copy_from_slice(&id.to_le_bytes());
            self.data[off as usize..][..8].copy_from_slice(&id.to_le_bytes());
            self.data[off as usize + 8..][..text.len()].copy_from_slice(text.as_bytes());
            self.h.head_lpos = next;
            (begin, next)
        };
        self.set_desc(index, (state << 62) | id, begin, next);
        let i = (index * 88) as usize;
        let info = &mut self.infos[i..i + 88];
        info[0..8].copy_from_slice(&self.seq.to_le_bytes());
        info[8..16].copy_from_slice(&(1_000_000 * (self.seq + 1)).to_le_bytes());
        info[16..18].copy_from_slice(&(text.len() as u16).to_le_bytes());
        info[18] = 0;
        info[19] = LOG_NEWLINE | (6 << 5);
        info[20..24].copy_from_slice(&(self.seq as u32 + 1).to_le_bytes());
        self.h.head_id = id;
        self.seq += 1;
        id
    }

    fn decode(&self) -> Decoded {
        decode(&self.l, &self.h, RingBytes { descs: &self.descs, infos: &self.infos, data: &self.data })
    }
}

fn texts(d: &Decoded) -> Vec<&str> {
    d.records.iter().map(|r| r.text.as_str()).collect()
}

#[test]
fn records_in_order_with_their_fields() {
    let mut w = Writer::new(3, 8);
    w.push("Linux version 6.1", 2);
    w.push("two\nlines", 2);
    w.push("", 2);
    let d = w.decode();
    assert_eq!(texts(&d), ["Linux version 6.1", "two\nlines", ""]);
    let r = &d.records[1];
    assert_eq!((r.seq, r.ts_nsec, r.level, r.facility, r.flags, r.caller.as_str(), r.finalized), (1, 2_000_000, 6, 0, LOG_NEWLINE, "T2", true));
    assert_eq!(d.counts, Counts { descriptors: 4, finalized: 3, reusable: 1, ..Default::default() });
}

#[test]
fn wrap_around_of_both_rings_keeps_the_newest_records() {
    let mut w = Writer::new(3, 8);
    let all: Vec<String> = (0..40).map(|i| format!("message number {i} {}", "x".repeat(i % 23))).collect();
    for t in &all {
        w.push(t, 2);
    }
    let d = w.decode();
    let got = texts(&d);
    assert!(!got.is_empty() && got.len() <= 8);
    assert_eq!(got, all[all.len() - got.len()..].iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(d.records.last().unwrap().seq, 39);
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    // Some block wrapped to the start of the data ring.
    assert!((0..8).any(|i| {
        let (_, b, n) = w.desc(i);
        b & 1 == 0 && b >> 8 != n >> 8
    }));
}

#[test]
fn reserved_is_skipped_and_committed_listed_as_not_final() {
    let mut w = Writer::new(3, 8);
    w.push("done", 2);
    w.push("still extending", 1);
    w.push("being written", 0);
    let d = w.decode();
    assert_eq!(texts(&d), ["done", "still extending"]);
    assert!(!d.records[1].finalized);
    assert_eq!((d.counts.committed, d.counts.reserved), (1, 1));
}

#[test]
fn damage_is_counted_not_decoded() {
    let mut w = Writer::new(3, 8);
    let ids: Vec<u64> = ["a", "bb", "ccc", "dddd"].iter().map(|t| w.push(t, 2)).collect();
    let count = w.h.count();
    // 0: its block now holds another id; 1: seq in the wrong slot; 2: block positions garbage;
    // 3: its slot holds another descriptor's id.
    let (_, b0, _) = w.desc(ids[0] & (count - 1));
    w.data[(b0 & 255) as usize..][..8].copy_from_slice(&99u64.to_le_bytes());
    w.infos[88..96].copy_from_slice(&5u64.to_le_bytes());
    w.set_desc(ids[2] & (count - 1), (2 << 62) | ids[2], 0x1000, 0x8);
    w.set_desc(ids[3] & (count - 1), (2 << 62) | 7, 0, 16);
    let d = w.decode();
    assert!(d.records.is_empty(), "{:?}", d.records);
    assert_eq!((d.counts.invalid, d.counts.id_mismatch), (3, 1));
    assert!(d.problems[0].reason.contains("overwritten"), "{}", d.problems[0].reason);
    assert!(d.problems[1].reason.contains("slot"), "{}", d.problems[1].reason);
    assert!(d.problems[2].reason.contains("neither"));
}

#[test]
fn lost_text_and_short_arrays() {
    let mut w = Writer::new(3, 8);
    w.push("kept", 2);
    let id = w.push("lost", 2);
    w.set_desc(id & 7, (2 << 62) | id, 3, 3); // NO_LPOS with a text_len of 4
    let d = w.decode();
    assert_eq!((texts(&d), d.counts.lost), (vec!["kept"], 1));
    // Arrays cut short (a partial read): nothing decoded past them, no panic.
    let d = decode(&w.l, &w.h, RingBytes { descs: &w.descs[..30], infos: &w.infos, data: &w.data[..3] });
    assert!(d.records.is_empty());
    assert_eq!(d.counts.invalid + d.counts.id_mismatch + d.counts.reusable, d.counts.descriptors);
}

#[test]
fn headers_that_cannot_be_right() {
    let l = PrbLayout::linux(48, 88);
    let mut ring = vec![0u8; 88];
    let put = |ring: &mut Vec<u8>, off: usize, v: u64| ring[off..off + 8].copy_from_slice(&v.to_le_bytes());
    put(&mut ring, 0, 12);
    put(&mut ring, 48, 17);
    assert!(RingHeader::parse(&l, &ring).is_ok());
    put(&mut ring, 24, 5000); // head_id 5000 past tail_id 0 in a ring of 4096
    assert!(matches!(RingHeader::parse(&l, &ring), Err(HeaderError::Ids { ahead: 5000, .. })));
    put(&mut ring, 24, 0);
    put(&mut ring, 0, 40);
    assert_eq!(RingHeader::parse(&l, &ring), Err(HeaderError::CountBits(40)));
    put(&mut ring, 0, 12);
    put(&mut ring, 48, 63);
    assert_eq!(RingHeader::parse(&l, &ring), Err(HeaderError::SizeBits(63)));
    put(&mut ring, 48, 17);
    put(&mut ring, 64, 1 << 40);
    assert!(matches!(RingHeader::parse(&l, &ring), Err(HeaderError::Lpos { .. })));
    assert!(matches!(RingHeader::parse(&l, &ring[..40]), Err(HeaderError::Short { .. })));
}
