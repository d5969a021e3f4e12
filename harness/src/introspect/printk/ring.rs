//! Decoding the lockless `printk_ringbuffer` (kernel/printk/printk_ringbuffer.{h,c}, Linux 5.10
//! on) from bytes already read: the `struct printk_ringbuffer` itself, its descriptor and info
//! arrays and its text data ring.
//!
//! ```text
//!   printk_ringbuffer ─ desc_ring: count_bits, descs ─▶ [prb_desc; 2^count_bits]   state_var = state:2 | id:62
//!                     │            infos ─▶ [printk_info; 2^count_bits]         seq, ts_nsec, text_len, ...
//!                     │            head_id, tail_id     (records are the ids tail..=head)
//!                     └ text_data_ring: size_bits, data ─▶ [u8; 2^size_bits]   blocks: id:u64 | text
//!                                  head_lpos, tail_lpos  (a descriptor's text_blk_lpos = begin, next)
//! ```
//!
//! Invariant: [`decode`] never panics and does work bounded by the descriptor count it is given
//! (at most 2^[`MAX_COUNT_BITS`]); every value from the guest is checked before it is used as an
//! index, and a record whose descriptor or data block does not hold together is skipped and
//! counted (with a [`Problem`] naming the descriptor), never guessed at.

use serde::Serialize;

use super::layout::PrbLayout;
use emulator::bytes::Bytes;

/// Largest `count_bits` accepted (4 Mi descriptors; Linux's LOG_BUF_SHIFT tops out at 25, which
/// gives 20).
pub const MAX_COUNT_BITS: u32 = 22;
/// Largest `size_bits` accepted (64 MiB of text, the longest single read `kspace` allows).
pub const MAX_SIZE_BITS: u32 = 26;
/// Problems kept per decode (the rest are only counted).
pub const MAX_PROBLEMS: usize = 64;

const DESC_FLAGS_SHIFT: u32 = 62;
const DESC_ID_MASK: u64 = (1 << DESC_FLAGS_SHIFT) - 1;
/// `FAILED_LPOS`, `NO_LPOS`, `EMPTY_LINE_LPOS`: data-less blocks have bit 0 set.
const EMPTY_LINE_LPOS: u64 = 0x5;
/// `LOG_NEWLINE` and `LOG_CONT` in `printk_info.flags`.
pub const LOG_NEWLINE: u8 = 2;
pub const LOG_CONT: u8 = 8;

/// The fields of `struct printk_ringbuffer` the decoder needs (addresses, ids and positions
/// serialize as hex strings, as `ps --stats` writes addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RingHeader {
    pub count_bits: u32,
    #[serde(serialize_with = "hex")]
    pub descs: u64,
    #[serde(serialize_with = "hex")]
    pub infos: u64,
    #[serde(serialize_with = "hex")]
    pub head_id: u64,
    #[serde(serialize_with = "hex")]
    pub tail_id: u64,
    pub size_bits: u32,
    #[serde(serialize_with = "hex")]
    pub data: u64,
    #[serde(serialize_with = "hex")]
    pub head_lpos: u64,
    #[serde(serialize_with = "hex")]
    pub tail_lpos: u64,
    /// `fail`: reservations that failed (messages lost when the ring was full or busy).
    pub fail: Option<u64>,
}

fn hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

/// A `struct printk_ringbuffer` that cannot be right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("printk_ringbuffer of {len} bytes is shorter than its layout's {need}")]
    Short { len: usize, need: u64 },
    #[error("desc_ring.count_bits {0} outside 1..={MAX_COUNT_BITS}")]
    CountBits(u32),
    #[error("text_data_ring.size_bits {0} outside 3..={MAX_SIZE_BITS}")]
    SizeBits(u32),
    #[error("desc_ring head_id {head:#x} is {ahead} descriptors past tail_id {tail:#x}, more than the ring's {count}")]
    Ids { head: u64, tail: u64, ahead: u64, count: u64 },
    #[error("text_data_ring head_lpos {head:#x} is {ahead:#x} bytes past tail_lpos {tail:#x}, more than the ring's {size:#x}")]
    Lpos { head: u64, tail: u64, ahead: u64, size: u64 },
}

impl RingHeader {
    /// Parse and check the ring's own invariants: counts in range, `tail_id..=head_id` within
    /// one lap of the descriptor ring and `tail_lpos..=head_lpos` within one lap of the data.
    pub fn parse(l: &PrbLayout, ring: &[u8]) -> Result<RingHeader, HeaderError> {
        let b = Bytes::new(ring);
        let short = |_| HeaderError::Short { len: ring.len(), need: l.ring_size };
        let at = |base: u64, off: u64| base.saturating_add(off) as usize;
        let dr = l.desc_ring;
        let tr = l.text_data_ring;
        let h = RingHeader {
            count_bits: b.u32(at(dr, l.count_bits)).map_err(short)?,
            descs: b.u64(at(dr, l.descs)).map_err(short)?,
            infos: b.u64(at(dr, l.infos)).map_err(short)?,
            head_id: b.u64(at(dr, l.head_id)).map_err(short)?,
            tail_id: b.u64(at(dr, l.tail_id)).map_err(short)?,
            size_bits: b.u32(at(tr, l.size_bits)).map_err(short)?,
            data: b.u64(at(tr, l.data)).map_err(short)?,
            head_lpos: b.u64(at(tr, l.head_lpos)).map_err(short)?,
            tail_lpos: b.u64(at(tr, l.tail_lpos)).map_err(short)?,
            fail: l.fail.and_then(|f| b.u64(f as usize).ok()),
        };
        if !(1..=MAX_COUNT_BITS).contains(&h.count_bits) {
            return Err(HeaderError::CountBits(h.count_bits));
        }
        if !(3..=MAX_SIZE_BITS).contains(&h.size_bits) {
            return Err(HeaderError::SizeBits(h.size_bits));
        }
        let ahead = h.head_id.wrapping_sub(h.tail_id) & DESC_ID_MASK;
        if ahead >= h.count() {
            return Err(HeaderError::Ids { head: h.head_id, tail: h.tail_id, ahead, count: h.count() });
        }
        let ahead = h.head_lpos.wrapping_sub(h.tail_lpos);
        if ahead > h.data_size() {
            return Err(HeaderError::Lpos { head: h.head_lpos, tail: h.tail_lpos, ahead, size: h.data_size() });
        }
        Ok(h)
    }

    /// Descriptors in the ring, `2^count_bits`.
    pub fn count(&self) -> u64 {
        1u64 << self.count_bits.min(MAX_COUNT_BITS)
    }

    /// Bytes of text data, `2^size_bits`.
    pub fn data_size(&self) -> u64 {
        1u64 << self.size_bits.min(MAX_SIZE_BITS)
    }
}

/// What a descriptor's state bits say (`enum desc_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DescState {
    /// Being written: the text may be incomplete.
    Reserved,
    /// Written, but the writer may still extend it (a line without its newline yet).
    Committed,
    /// Complete.
    Finalized,
    /// Recycled: the data may already be overwritten.
    Reusable,
}

impl DescState {
    fn from_bits(sv: u64) -> DescState {
        match sv >> DESC_FLAGS_SHIFT {
            0 => DescState::Reserved,
            1 => DescState::Committed,
            2 => DescState::Finalized,
            _ => DescState::Reusable,
        }
    }
}

/// One record of the kernel log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Record {
    pub seq: u64,
    /// Nanoseconds since boot (`local_clock()` at `printk` time).
    pub ts_nsec: u64,
    /// Syslog level, 0 (emerg) to 7 (debug).
    pub level: u8,
    /// Syslog facility: 0 for the kernel, 1 for user messages written to /dev/kmsg.
    pub facility: u8,
    /// `printk_info.flags` (`LOG_NEWLINE` 2, `LOG_CONT` 8).
    pub flags: u8,
    /// `T<pid>` (task context) or `C<cpu>` (interrupt context): the kernel records it whether or
    /// not `CONFIG_PRINTK_CALLER` shows it.
    pub caller: String,
    /// `false` for the newest record when its writer could still extend it (no newline yet).
    pub finalized: bool,
    /// The text, invalid UTF-8 as U+FFFD; lines of one record are separated by `\n`.
    pub text: String,
}

/// A descriptor in `tail_id..=head_id` that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub id: u64,
    /// Index into the descriptor array.
    pub index: u64,
    pub reason: String,
}

/// Descriptors seen, by what became of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Descriptors from tail to head.
    pub descriptors: u64,
    pub finalized: u64,
    /// Committed, not yet finalized (listed).
    pub committed: u64,
    /// Reserved by a writer that had not committed (not listed).
    pub reserved: u64,
    /// Recycled for data that was overwritten (not listed).
    pub reusable: u64,
    /// Descriptor holds another id than its slot should (not listed).
    pub id_mismatch: u64,
    /// No text: a data-less block (`FAILED_LPOS`/`NO_LPOS`) for a non-empty line (not listed).
    pub lost: u64,
    /// Descriptor or data block inconsistent (not listed; see `problems`).
    pub invalid: u64,
}

/// Everything decoded from one ring.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Decoded {
    /// In sequence order.
    pub records: Vec<Record>,
    pub counts: Counts,
    /// The first [`MAX_PROBLEMS`] skipped descriptors with their reasons.
    pub problems: Vec<Problem>,
}

/// The ring's arrays as read from the guest: `descs` and `infos` hold the whole descriptor and
/// info arrays (or a prefix: entries past the end are treated as unreadable), `data` the text
/// data ring.
#[derive(Debug, Clone, Copy)]
pub struct RingBytes<'a> {
    pub descs: &'a [u8],
    pub infos: &'a [u8],
    pub data: &'a [u8],
}

/// Decode every record from `tail_id` to `head_id`.
pub fn decode(l: &PrbLayout, h: &RingHeader, bytes: RingBytes<'_>) -> Decoded {
    let mut out = Decoded::default();
    let count = h.count();
    let n = (h.head_id.wrapping_sub(h.tail_id) & DESC_ID_MASK).min(count - 1) + 1;
    for k in 0..n {
        let id = h.tail_id.wrapping_add(k) & DESC_ID_MASK;
        let index = id & (count - 1);
        out.counts.descriptors += 1;
        match record(l, h, bytes, id, index) {
            Ok(Some(r)) => {
                if r.finalized {
                    out.counts.finalized += 1;
                } else {
                    out.counts.committed += 1;
                }
                out.records.push(r);
            }
            Ok(None) => {}
            Err(Skip::State(DescState::Reserved)) => out.counts.reserved += 1,
            Err(Skip::State(_)) => out.counts.reusable += 1,
            Err(Skip::Mismatch) => out.counts.id_mismatch += 1,
            Err(Skip::Lost) => out.counts.lost += 1,
            Err(Skip::Invalid(why)) => {
                out.counts.invalid += 1;
                if out.problems.len() < MAX_PROBLEMS {
                    out.problems.push(Problem { id, index, reason: why.to_string() });
                }
            }
        }
    }
    out.records.sort_by_key(|r| r.seq);
    out
}

enum Skip {
    State(DescState),
    Mismatch,
    Lost,
    Invalid(Invalid),
}

/// Why a descriptor's record cannot be decoded (formatted only for the problems kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("{0} of the descriptor is outside what was read")]
    Unread(&'static str),
    #[error("printk_info.seq {0} does not belong in this slot")]
    Seq(u64),
    #[error("text block {begin:#x}..{next:#x} is neither in one lap nor wrapping once")]
    Positions { begin: u64, next: u64 },
    #[error("text block {begin:#x}..{next:#x} is misaligned or shorter than its id")]
    Misaligned { begin: u64, next: u64 },
    #[error("text block {begin:#x}..{next:#x} lies outside the {size:#x}-byte data ring")]
    Outside { begin: u64, next: u64, size: u64 },
    #[error("text block at {begin:#x} holds id {found:#x}, not {id:#x} (overwritten)")]
    Overwritten { begin: u64, found: u64, id: u64 },
}

fn record(l: &PrbLayout, h: &RingHeader, bytes: RingBytes<'_>, id: u64, index: u64) -> Result<Option<Record>, Skip> {
    let descs = Bytes::new(bytes.descs);
    let infos = Bytes::new(bytes.infos);
    let d = index.saturating_mul(l.desc_size) as usize;
    let i = index.saturating_mul(l.info_size) as usize;
    let oob = |what: &'static str| Skip::Invalid(Invalid::Unread(what));
    let sv = descs.u64(d.saturating_add(l.state_var as usize)).map_err(|_| oob("state_var"))?;
    if sv & DESC_ID_MASK != id {
        return Err(Skip::Mismatch);
    }
    let state = DescState::from_bits(sv);
    if !matches!(state, DescState::Committed | DescState::Finalized) {
        return Err(Skip::State(state));
    }
    let lpos = d.saturating_add(l.text_blk_lpos as usize);
    let begin = descs.u64(lpos.saturating_add(l.lpos_begin as usize)).map_err(|_| oob("text_blk_lpos"))?;
    let next = descs.u64(lpos.saturating_add(l.lpos_next as usize)).map_err(|_| oob("text_blk_lpos"))?;
    let field = |off: u64, size: u64| infos.uint(i.saturating_add(off as usize), size as usize).map_err(|_| oob("printk_info"));
    let seq = field(l.seq, 8)?;
    if seq & (h.count() - 1) != index {
        return Err(Skip::Invalid(Invalid::Seq(seq)));
    }
    let ts_nsec = field(l.ts_nsec, 8)?;
    let text_len = field(l.text_len, l.text_len_size)?;
    let facility = field(l.facility, 1)? as u8;
    let level = (field(l.level.byte, 1)? >> l.level.shift) as u8 & mask(l.level.bits);
    let flags = (field(l.flags.byte, 1)? >> l.flags.shift) as u8 & mask(l.flags.bits);
    let caller_id = field(l.caller_id, 4)? as u32;
    let text = text(h, bytes.data, id, begin, next, text_len)?;
    Ok(Some(Record {
        seq,
        ts_nsec,
        level,
        facility,
        flags,
        caller: caller(caller_id),
        finalized: state == DescState::Finalized,
        text: String::from_utf8_lossy(text).into_owned(),
    }))
}

fn mask(bits: u8) -> u8 {
    if bits >= 8 {
        0xff
    } else {
        (1u8 << bits) - 1
    }
}

/// `printk_caller_id()`: bit 31 set for a CPU number, clear for a task's pid.
pub fn caller(id: u32) -> String {
    if id & 0x8000_0000 != 0 {
        format!("C{}", id & 0x7fff_ffff)
    } else {
        format!("T{id}")
    }
}

/// The text of the block `begin..next` (`get_data()` and `copy_data()` in
/// printk_ringbuffer.c), at most `text_len` bytes.
fn text<'d>(h: &RingHeader, data: &'d [u8], id: u64, begin: u64, next: u64, text_len: u64) -> Result<&'d [u8], Skip> {
    let size = h.data_size();
    let wraps = |lpos: u64| lpos >> h.size_bits;
    let index = |lpos: u64| lpos & (size - 1);
    if begin & 1 == 1 {
        // Data-less: an empty line, or text that was never stored.
        return if (begin == EMPTY_LINE_LPOS && next == EMPTY_LINE_LPOS) || text_len == 0 { Ok(&[]) } else { Err(Skip::Lost) };
    }
    let (off, len) = if wraps(begin) == wraps(next) && begin < next {
        (index(begin), next - begin)
    } else if wraps(begin.wrapping_add(size)) == wraps(next) {
        (0, index(next))
    } else {
        return Err(Skip::Invalid(Invalid::Positions { begin, next }));
    };
    if !begin.is_multiple_of(8) || !next.is_multiple_of(8) || len < 8 {
        return Err(Skip::Invalid(Invalid::Misaligned { begin, next }));
    }
    let d = Bytes::new(data);
    let outside = |_| Skip::Invalid(Invalid::Outside { begin, next, size });
    let block_id = d.u64(off as usize).map_err(outside)?;
    if block_id & DESC_ID_MASK != id {
        return Err(Skip::Invalid(Invalid::Overwritten { begin, found: block_id, id }));
    }
    let n = (len - 8).min(text_len);
    d.slice(off as usize + 8, n as usize).map_err(outside)
}

#[cfg(test)]
#[path = "ring_tests.rs"]
mod tests;
