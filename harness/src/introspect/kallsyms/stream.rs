//! The compressed names stream, in blocks of 256 entries, and how its end is found.
//!
//! Each entry is a ULEB128 length (one or two bytes) and that many token numbers;
//! `kallsyms_markers[k]` is the offset of entry `256 k`, so block `k` is the bytes from marker
//! `k` to marker `k + 1` (the last one: to the end of the stream) and decodes by itself.
//!
//! The stream's end is where the markers start (after at most 7 bytes of zero padding). It is
//! found without reading the stream ([`probe_markers`]): the markers table is a run of
//! increasing words whose steps are block sizes (at least 512 bytes: 256 entries of at least 2),
//! which compressed names (token numbers) are not; 64-byte windows are read at a stride shorter
//! than the table, outward from where names of a typical length would end, until one holds
//! such a run. From there the table's start is its 0, its length is `⌈n / 256⌉`, and the last
//! block, walked for its `n - 256 (m - 1)` entries, must end exactly before it. A stream too
//! short to be worth probing, or one the probe misses, is read whole and walked
//! ([`walk_whole`]).
//!
//! Invariant: a [`Block`] exists only if it walks exactly its entry count to exactly its end (no
//! zero-length entry); every read size is bounded (a probe window, the markers table, a block
//! of at most 256 maximal entries, a stream of at most `MAX_NAMES_BYTES`); the probed span is
//! bounded by a maximal average entry length, so the probe ends.

use emulator::bytes::Bytes;
use emulator::mem::{PhysAddr, PhysMem};

use super::{corrupt, KallsymsError, KallsymsLocation, TableOrder, MAX_NAMES_BYTES};
use crate::introspect::physread::{read_many, read_vec};

/// Most bytes an entry may take (two length bytes, 0x3fff token numbers).
const MAX_ENTRY_BYTES: u64 = 2 + 0x3fff;
/// Most bytes a block of 256 entries may take.
pub const MAX_BLOCK_BYTES: u64 = 256 * MAX_ENTRY_BYTES;
/// Markers tables with fewer entries are not probed for: the stream (at most 8,192 entries) is
/// read whole.
const MIN_PROBED_MARKERS: u64 = 32;
/// Bytes of one probe window (16 markers).
const PROBE: u64 = 64;
/// Probe windows read per round trip.
const PROBES_PER_BATCH: u64 = 128;
/// Windows read per round trip while bisecting for the start of `kallsyms_seqs_of_names`.
const BISECT_WINDOWS: u64 = 16;
/// Where the probing starts: the end of names averaging this many bytes (8.5 on our builds,
/// about 14 on Debian's).
const GUESS_AVG_ENTRY: u64 = 10;
/// Where it stops: names averaging this many bytes (beyond, the stream is read whole).
const MAX_AVG_ENTRY: u64 = 64;
/// A block's plausible size range while probing: 256 entries of 2 to 130 bytes. (A real block
/// outside it only makes the probe miss; the stream is then read whole.)
const PROBE_BLOCK: std::ops::RangeInclusive<u32> = 512..=256 * 130;
/// At the first read of a whole stream, bytes per entry guessed.
const WALK_GUESS_AVG: u64 = 8;

/// One decoded block: its bytes and where each entry starts in them.
#[derive(Debug)]
pub struct Block {
    bytes: Vec<u8>,
    starts: Vec<u32>,
}

impl Block {
    /// `bytes` as exactly `count` entries, or `None`.
    pub fn parse(bytes: Vec<u8>, count: usize) -> Option<Block> {
        let (starts, end) = walk(&bytes, count)?;
        (end == bytes.len()).then_some(Block { bytes, starts })
    }

    /// The first entries of a block from `bytes` (which start at the block's marker): at most
    /// `count`, as many as `bytes` holds whole (an entry cut off by its end, and those after
    /// it, are left out), or `None` if one of them is empty. Unlike [`Block::parse`] nothing
    /// checks the entries against the next marker: a name search ([`super::search`]) reads only
    /// the part of a block that holds the names it compares.
    pub fn prefix(mut bytes: Vec<u8>, count: usize) -> Option<Block> {
        let mut starts = Vec::with_capacity(count.min(bytes.len()));
        let mut pos = 0usize;
        while starts.len() < count && pos < bytes.len() {
            let (hdr, len) = entry_header(&bytes, pos);
            if hdr == 2 && pos + 2 > bytes.len() {
                break;
            }
            if len == 0 {
                return None;
            }
            let end = pos.checked_add(hdr + len)?;
            if end > bytes.len() {
                break;
            }
            starts.push(u32::try_from(pos).ok()?);
            pos = end;
        }
        bytes.truncate(pos);
        Some(Block { bytes, starts })
    }

    /// The token numbers of entry `j` of the block.
    pub fn codes(&self, j: usize) -> &[u8] {
        let Some(&off) = self.starts.get(j) else { return &[] };
        let (hdr, len) = entry_header(&self.bytes, off as usize);
        self.bytes.get(off as usize + hdr..off as usize + hdr + len).unwrap_or(&[])
    }

    /// Entries in the block.
    pub fn entries(&self) -> usize {
        self.starts.len()
    }
}

/// Walk `count` entries from the start of `buf`: where each starts and where the last ends, or
/// `None` if one is empty or runs past `buf`.
pub(super) fn walk(buf: &[u8], count: usize) -> Option<(Vec<u32>, usize)> {
    let mut starts = Vec::with_capacity(count.min(buf.len()));
    let mut pos = 0usize;
    for _ in 0..count {
        if pos + 1 > buf.len() {
            return None;
        }
        let (hdr, len) = entry_header(buf, pos);
        if len == 0 || hdr == 2 && pos + 2 > buf.len() {
            return None;
        }
        starts.push(u32::try_from(pos).ok()?);
        pos = pos.checked_add(hdr + len)?;
    }
    (pos <= buf.len()).then_some((starts, pos))
}

/// `(header bytes, token count)` of the entry at `off`: a one- or two-byte ULEB128 length
/// (bytes past the end read as 0).
pub fn entry_header(names: &[u8], off: usize) -> (usize, usize) {
    let b0 = names.get(off).copied().unwrap_or(0);
    if b0 & 0x80 != 0 {
        (2, ((b0 & 0x7f) as usize) | ((names.get(off + 1).copied().unwrap_or(0) as usize) << 7))
    } else {
        (1, b0 as usize)
    }
}

/// The end of the stream and the markers after it.
#[derive(Debug)]
pub struct Found {
    /// Bytes of names.
    pub names_len: u64,
    /// Where the markers table starts, for each alignment it may have been placed at (8, then
    /// 4; one address may be both).
    pub markers_at: Vec<(PhysAddr, u64)>,
    /// The markers: as the probe read them, or each block's start as a walk found it (the
    /// table read after the stream must then equal them).
    pub marks: Vec<u32>,
    /// Blocks decoded on the way, by number (every block if the stream was read whole).
    pub blocks: Vec<(u32, Block)>,
}

/// Entries in block `b` of `n`.
pub fn block_count(n: u32, b: u32) -> usize {
    (n - 256 * b).min(256) as usize
}

/// Find the markers table by probing (see the module doc); `None` if the stream is too short to
/// be worth it or no probe window held a table that checks out.
pub fn probe_markers(mem: &dyn PhysMem, loc: &KallsymsLocation) -> Result<Option<Found>, KallsymsError> {
    let n = u64::from(loc.num_syms);
    let m = n.div_ceil(256);
    if m < MIN_PROBED_MARKERS {
        return Ok(None);
    }
    let s = loc.names.0;
    let table = 4 * m;
    // Every 4-aligned window of 16 words inside the table is one of `m - 15` positions: a
    // stride of that many words always lands one inside.
    let stride = 4 * (m - 15);
    let span = |avg: u64| s.checked_add(avg.saturating_mul(n)).map(|a| a & !3);
    let (Some(lo), Some(hi)) = (span(2), span(MAX_AVG_ENTRY).and_then(|h| h.checked_add(table))) else { return Ok(None) };
    let hi = hi.min(s.saturating_add(MAX_NAMES_BYTES));
    let start = span(GUESS_AVG_ENTRY).unwrap_or(lo).clamp(lo, hi);
    let (mut up, mut down) = (start, start);
    let mut upward = true;
    // With the first batch, the windows that find `kallsyms_seqs_of_names` where it follows.
    let mut seqs = if loc.order == TableOrder::OffsetsFirst { seqs_windows(loc) } else { Vec::new() };
    while up + PROBE <= hi || down >= lo + stride {
        let mut windows = Vec::with_capacity(PROBES_PER_BATCH as usize);
        if upward && up + PROBE <= hi || down < lo + stride {
            while windows.len() < PROBES_PER_BATCH as usize && up + PROBE <= hi {
                windows.push(up);
                up += stride;
            }
        } else {
            while windows.len() < PROBES_PER_BATCH as usize && down >= lo + stride {
                down -= stride;
                windows.push(down);
            }
        }
        upward = !upward;
        let probes = windows.len();
        windows.append(&mut seqs);
        let regions: Vec<(PhysAddr, usize)> = windows.iter().map(|&a| (PhysAddr(a), PROBE as usize)).collect();
        let reads = read_many(mem, &regions);
        for (&at, read) in windows.iter().zip(&reads).take(probes) {
            let Ok(w) = read else { continue };
            if looks_like_markers(w, at - s) {
                if let Some(found) = markers_around(mem, loc, at)? {
                    return Ok(Some(found));
                }
            }
        }
        let seqs_hit = windows.iter().zip(&reads).skip(probes).find_map(|(&a, r)| r.as_ref().ok().filter(|w| looks_like_seqs(w, n)).map(|_| a));
        if let Some(hit) = seqs_hit {
            if let Some(found) = markers_before_seqs(mem, loc, hit)? {
                return Ok(Some(found));
            }
        }
    }
    Ok(None)
}

/// Windows that find `kallsyms_seqs_of_names` where it follows the markers (offsets-first
/// tables from 6.2 to 6.3, and Debian's 6.1): one every `3 n` bytes less two windows over the
/// span the table may start in (after the markers and at most 14 bytes of padding), so that one
/// lies inside it (about 21 windows).
fn seqs_windows(loc: &KallsymsLocation) -> Vec<u64> {
    let (s, n) = (loc.names.0, u64::from(loc.num_syms));
    let table = 4 * n.div_ceil(256);
    let stride = 3 * n - 2 * PROBE;
    let (Some(lo), Some(hi)) = (s.checked_add(2 * n + table), s.checked_add((MAX_AVG_ENTRY * n).min(MAX_NAMES_BYTES) + table + 16)) else {
        return Vec::new();
    };
    (0u64..).map_while(|k| k.checked_mul(stride).and_then(|d| lo.checked_add(d))).take_while(|&a| a <= hi).collect()
}

/// The markers just before `kallsyms_seqs_of_names`, whose `3 n` bytes hold the window at
/// `hit`: the table's start is bisected ([`BISECT_WINDOWS`] windows per round trip, each
/// round dividing the interval by 17: two rounds for Debian's 6.1) until the markers' last
/// word is known to within the table, and [`markers_around`] checks the table from there.
/// `None` if the windows contradict each other or the table does not check out.
fn markers_before_seqs(mem: &dyn PhysMem, loc: &KallsymsLocation, hit: u64) -> Result<Option<Found>, KallsymsError> {
    let (s, n) = (loc.names.0, u64::from(loc.num_syms));
    let table = 4 * n.div_ceil(256);
    // The window at `inside` lies in the table; the table starts after `below`.
    let (mut below, mut inside) = (hit.saturating_add(PROBE).saturating_sub(3 * n + 1).max(s), hit);
    while inside - below > table.saturating_sub(80) {
        if inside - below <= BISECT_WINDOWS {
            return Ok(None);
        }
        let step = (inside - below) / (BISECT_WINDOWS + 1);
        let probes: Vec<u64> = (1..=BISECT_WINDOWS).map(|k| below + k * step).collect();
        let regions: Vec<(PhysAddr, usize)> = probes.iter().map(|&a| (PhysAddr(a), PROBE as usize)).collect();
        let mut first_inside = None;
        for (k, r) in read_many(mem, &regions).into_iter().enumerate() {
            match r {
                Ok(w) if looks_like_seqs(&w, n) => {
                    first_inside = Some(k);
                    break;
                }
                Ok(_) => {}
                Err(_) => return Ok(None),
            }
        }
        match first_inside {
            Some(0) => inside = probes[0],
            Some(k) => (below, inside) = (probes[k - 1], probes[k]),
            None => below = probes[BISECT_WINDOWS as usize - 1],
        }
    }
    // A window that looked like the table may start up to a window before it: the markers'
    // words reach at least to `inside + PROBE - table`, and the last lies past `below - 12`.
    let Some(at) = inside.saturating_add(PROBE).saturating_sub(table).checked_next_multiple_of(4) else { return Ok(None) };
    markers_around(mem, loc, at)
}

/// 64 bytes of `kallsyms_seqs_of_names` (see [`seqs_windows`]): at one of the three phases,
/// every whole 3-byte big-endian value is below `n` and no two are equal (the table is a
/// permutation of the entry indices). Zero padding, the markers (little-endian words) and names
/// (token numbers) fail it.
pub(super) fn looks_like_seqs(window: &[u8], n: u64) -> bool {
    (0..3).any(|phase| {
        let mut vals: Vec<u64> = window[phase.min(window.len())..]
            .chunks_exact(3)
            .map(|e| u64::from(e[0]) << 16 | u64::from(e[1]) << 8 | u64::from(e[2]))
            .collect();
        if vals.len() < 16 || vals.iter().any(|&v| v >= n) {
            return false;
        }
        vals.sort_unstable();
        vals.windows(2).all(|w| w[0] != w[1])
    })
}

/// 16 strictly increasing words, steps of a block's size, the first below `dist` (markers are
/// offsets of entries that come before the table).
fn looks_like_markers(window: &[u8], dist: u64) -> bool {
    let b = Bytes::new(window);
    let vals: Vec<u32> = (0..window.len() / 4).filter_map(|i| b.u32(4 * i).ok()).collect();
    vals.len() == 16 && u64::from(vals[0]) < dist && vals.windows(2).all(|w| w[1] > w[0] && PROBE_BLOCK.contains(&(w[1] - w[0])))
}

/// The markers table that the window at `at` (or the table's start, where known) lies in: back
/// to its 0, `m` increasing words from there, and a last block that ends exactly before it.
pub fn markers_around(mem: &dyn PhysMem, loc: &KallsymsLocation, at: u64) -> Result<Option<Found>, KallsymsError> {
    let (s, n) = (loc.names.0, loc.num_syms);
    let m = u64::from(n).div_ceil(256);
    let table = 4 * m;
    let from = at.saturating_sub(table).max(s);
    let Some(to) = at.checked_add(PROBE + table) else { return Ok(None) };
    let Ok(raw) = read_vec(mem, PhysAddr(from), (to - from) as usize) else { return Ok(None) };
    let b = Bytes::new(&raw);
    // Back from the window (its first word included) to the table's 0, then `m` words on.
    let Some(back) = markers_ending_at(&b, (at + 4 - from) as usize) else { return Ok(None) };
    let t = at + 4 - 4 * back.len() as u64;
    let Some(marks) = (0..m).map(|k| b.u32((t + 4 * k - from) as usize).ok()).collect::<Option<Vec<u32>>>() else { return Ok(None) };
    if !marks.windows(2).all(|w| w[1] > w[0]) {
        return Ok(None);
    }
    // The last block, up to the table (padding included).
    let last = *marks.last().unwrap_or(&0);
    let tail_from = s + u64::from(last);
    if tail_from >= t || t - tail_from > MAX_BLOCK_BYTES + 8 {
        return Ok(None);
    }
    let Ok(tail) = read_vec(mem, PhysAddr(tail_from), (t - tail_from) as usize) else { return Ok(None) };
    let Some((starts, end)) = walk(&tail, block_count(n, m as u32 - 1)) else { return Ok(None) };
    let names_end = tail_from + end as u64;
    let aligned = [8u64, 4].into_iter().filter(|&a| names_end.div_ceil(a) * a == t).collect::<Vec<_>>();
    if aligned.is_empty() || tail[end..].iter().any(|&z| z != 0) {
        return Ok(None);
    }
    let block = Block { bytes: tail[..end].to_vec(), starts };
    Ok(Some(Found {
        names_len: names_end - s,
        markers_at: aligned.into_iter().map(|a| (PhysAddr(t), a)).collect(),
        marks,
        blocks: vec![(m as u32 - 1, block)],
    }))
}

/// Markers ending at byte `end` of `b`: walking back, strictly decreasing values down to a 0.
pub(super) fn markers_ending_at(b: &Bytes<'_>, end: usize) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    let mut pos = end;
    let mut above = u32::MAX;
    loop {
        pos = pos.checked_sub(4)?;
        let v = b.u32(pos).ok()?;
        if v >= above {
            return None;
        }
        out.push(v);
        if v == 0 {
            out.reverse();
            return Some(out);
        }
        above = v;
    }
}

/// Read the whole stream and walk its `n` entries: its length, its bytes, and where each block
/// of 256 entries starts (the markers must equal them).
pub fn walk_whole(mem: &dyn PhysMem, loc: &KallsymsLocation) -> Result<(u64, Vec<u8>, Vec<u32>), KallsymsError> {
    let n = loc.num_syms as usize;
    let guess = (n as u64 * WALK_GUESS_AVG).min(MAX_NAMES_BYTES) as usize;
    let mut names: Vec<u8> = read_vec(mem, loc.names, guess).unwrap_or_default();
    let mut block_starts: Vec<u32> = Vec::with_capacity(n.div_ceil(256));
    let mut pos = 0usize;
    for i in 0..n {
        if names.len() < pos + 2 {
            // Read what the rest takes at the average length so far (one more round trip, not
            // one per chunk).
            let rest = (pos as u64 / i.max(1) as u64 + 1) * (n - i) as u64;
            let want = (pos as u64 + rest + rest / 8).min(MAX_NAMES_BYTES) as usize;
            ensure(mem, loc.names, &mut names, want.max(pos + 2))?;
        }
        let (hdr, len) = entry_header(&names, pos);
        if len == 0 {
            return Err(corrupt(PhysAddr(loc.names.0 + pos as u64), "zero-length symbol".into()));
        }
        if i % 256 == 0 {
            block_starts.push(pos as u32);
        }
        pos += hdr + len;
    }
    ensure(mem, loc.names, &mut names, pos)?;
    names.truncate(pos);
    Ok((pos as u64, names, block_starts))
}

/// Make sure `buf` (the names stream read so far, from `base`) holds at least `need` bytes: one
/// read of the rest, or if that runs past the end of memory, of exactly what is needed.
fn ensure(mem: &dyn PhysMem, base: PhysAddr, buf: &mut Vec<u8>, need: usize) -> Result<(), KallsymsError> {
    if buf.len() >= need {
        return Ok(());
    }
    if need as u64 > MAX_NAMES_BYTES {
        return Err(corrupt(base, format!("names stream longer than {MAX_NAMES_BYTES} bytes")));
    }
    let at = PhysAddr(base.0 + buf.len() as u64);
    let more = read_vec(mem, at, need - buf.len())?;
    buf.extend_from_slice(&more);
    Ok(())
}

/// The whole stream cut into blocks at `marks`; `None` if a block does not walk to its marker.
pub fn blocks_of(stream: &[u8], marks: &[u32], n: u32) -> Option<Vec<(u32, Block)>> {
    let m = marks.len();
    (0..m)
        .map(|k| {
            let from = marks[k] as usize;
            let to = marks.get(k + 1).map_or(stream.len(), |&e| e as usize);
            let bytes = stream.get(from..to)?.to_vec();
            Some((k as u32, Block::parse(bytes, block_count(n, k as u32))?))
        })
        .collect()
}

/// Read blocks `which` (by number) in one batch and decode each; `None` for one that does not
/// walk to its end.
/// Where block `b` starts and how many bytes it has (bounded by [`MAX_BLOCK_BYTES`]).
pub fn block_span(names: PhysAddr, names_len: u64, marks: &[u32], b: u32) -> Result<(PhysAddr, usize), KallsymsError> {
    let from = u64::from(*marks.get(b as usize).ok_or_else(|| corrupt(names, format!("no block {b}")))?);
    let to = marks.get(b as usize + 1).map_or(names_len, |&e| u64::from(e));
    if to <= from || to - from > MAX_BLOCK_BYTES {
        return Err(corrupt(PhysAddr(names.0 + from), format!("block {b} of names is {} bytes", to.saturating_sub(from))));
    }
    Ok((PhysAddr(names.0 + from), (to - from) as usize))
}

pub fn read_blocks(
    mem: &dyn PhysMem,
    names: PhysAddr,
    names_len: u64,
    marks: &[u32],
    n: u32,
    which: &[u32],
) -> Result<Vec<Option<Block>>, KallsymsError> {
    let mut regions = Vec::with_capacity(which.len());
    for &b in which {
        regions.push(block_span(names, names_len, marks, b)?);
    }
    let mut out = Vec::with_capacity(which.len());
    for (&b, r) in which.iter().zip(read_many(mem, &regions)) {
        out.push(Block::parse(r?, block_count(n, b)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_keeps_only_whole_entries() {
        // Entries: [7, 8], [9], [0xff] (two-byte length header 0x81 0x00 = 1 token).
        let bytes = vec![2, 7, 8, 1, 9, 0x81, 0, 0xff];
        let whole = Block::prefix(bytes.clone(), 3).unwrap();
        assert_eq!((whole.entries(), whole.codes(2)), (3, &[0xff][..]));
        let two = Block::prefix(bytes.clone(), 2).unwrap();
        assert_eq!((two.entries(), two.codes(1)), (2, &[9][..]));
        // Cut inside the third entry's header, then inside the first entry.
        assert_eq!(Block::prefix(bytes[..6].to_vec(), 3).unwrap().entries(), 2);
        assert_eq!(Block::prefix(bytes[..2].to_vec(), 3).unwrap().entries(), 0);
        assert!(Block::prefix(vec![2, 7, 8, 0, 1], 3).is_none(), "an empty entry is corrupt");
    }

    #[test]
    fn a_block_walks_exactly_its_entries() {
        let bytes = vec![2, 7, 8, 1, 9, 0x81, 0, 0xff];
        let b = Block::parse(bytes.clone(), 3).expect("three entries");
        assert_eq!((b.codes(0), b.codes(1)), (&[7u8, 8][..], &[9u8][..]));
        assert_eq!(b.codes(2), &[0xffu8][..]);
        assert!(Block::parse(bytes.clone(), 2).is_none(), "bytes left over");
        assert!(Block::parse(bytes[..7].to_vec(), 3).is_none(), "runs past the end");
        assert!(Block::parse(vec![1, 5, 0, 3], 2).is_none(), "zero-length entry");
    }

    #[test]
    fn markers_look_like_block_sizes() {
        let run = |step: u32, first: u32| -> Vec<u8> { (0..16).flat_map(|i| (first + i * step).to_le_bytes()).collect() };
        assert!(looks_like_markers(&run(3000, 0), 1 << 20));
        assert!(!looks_like_markers(&run(3000, 900_000), 800_000), "points past the table");
        assert!(!looks_like_markers(&run(100, 0), 1 << 20), "blocks under 512 bytes");
        assert!(!looks_like_markers(&run(0, 0), 1 << 20));
    }

    #[test]
    fn markers_walk_back_to_zero() {
        let raw: Vec<u8> = [7u32, 0, 900, 1800, 2700].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(markers_ending_at(&Bytes::new(&raw), raw.len()), Some(vec![0, 900, 1800, 2700]));
        assert_eq!(markers_ending_at(&Bytes::new(&raw[..8]), 8), Some(vec![0]));
        let bad: Vec<u8> = [5u32, 900, 800].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(markers_ending_at(&Bytes::new(&bad), bad.len()), None);
    }
}
