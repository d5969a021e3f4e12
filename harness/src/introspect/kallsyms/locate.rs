//! Finding the kallsyms tables in physical memory by their structure, reading little.
//!
//! `scripts/kallsyms.c` has written the tables into `.rodata` in two orders and three address
//! encodings over the kernels we read (5.10 to 7.x):
//!
//! ```text
//!   OffsetsFirst (to 6.3; ALGN 8)       NamesFirst (6.4 on; ALGN 8, then 4 with pc-relative)
//!   kallsyms_offsets     i32 × n        kallsyms_num_syms      u32
//!   kallsyms_relative_base u64          kallsyms_names         len + token codes, × n
//!   kallsyms_num_syms    u32            kallsyms_markers       u32 × ⌈n/256⌉
//!   kallsyms_names                      kallsyms_token_table   256 NUL-terminated strings
//!   kallsyms_markers                    kallsyms_token_index   u16 × 256
//!   [kallsyms_seqs_of_names 3 B × n]    kallsyms_offsets       i32 × n
//!   kallsyms_token_table                [kallsyms_relative_base u64]   (absent when pc-relative)
//!   kallsyms_token_index                kallsyms_seqs_of_names 3 B × n
//! ```
//!
//! Encodings of `kallsyms_offsets` ([`OffsetMode`]): relative to `kallsyms_relative_base`
//! (unsigned), the same with absolute per-CPU symbols (negative values are
//! `relative_base - 1 - v`), or, once `scripts/kallsyms --pc-relative` is used on 64-bit, each
//! entry relative to its own address (`&kallsyms_offsets[i] + v`, no base at all).
//!
//! Search: sample 256-byte blocks at a fixed stride from the start of `.rodata`; a block of 64
//! monotonic i32 (as stored, or after adding `4 i` for pc-relative entries) with small steps is a
//! candidate inside the offsets table. From a candidate, each order is tried by structure alone:
//! - OffsetsFirst: gallop forward and bisect to the table's end, then accept only a kernel
//!   address followed by a count `n` that makes the table end exactly there;
//! - NamesFirst: the first hit is within one stride of the table's start; find the token index
//!   just before that start (256
//!   increasing u16 from 0, each step the length of a NUL-terminated token of the table before
//!   it), the markers before the token table (increasing u32 from 0), and `kallsyms_num_syms`
//!   as the one count that makes the last 256-symbol block of names end exactly at the markers.
//!
//! Names, markers and tokens are verified again when decoded ([`super::Kallsyms::load`]).
//!
//! Invariant: the number of probes is bounded by `span / stride` plus a constant number of
//! bounded reads per candidate; a false candidate is rejected and the search continues after it.
//! Every address computed from guest data is checked for overflow.

use emulator::mem::{PhysAddr, PhysMem};

use crate::introspect::addr::KVirt;
use emulator::bytes::Bytes;
use crate::introspect::physread::{read_many, read_u64, read_vec};
use crate::introspect::vmcoreinfo::VmcoreInfo;

/// How symbol addresses are encoded in `kallsyms_offsets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum OffsetMode {
    /// `CONFIG_KALLSYMS_ABSOLUTE_PERCPU`: non-negative values are absolute (per-CPU symbols),
    /// negative ones are `relative_base - 1 - value`.
    AbsolutePercpu,
    /// Unsigned offsets from `relative_base`.
    Relative,
    /// Each value is relative to its own entry: `&kallsyms_offsets[i] + value`. The table's
    /// physical address is known, its virtual one only once the image is placed.
    PcRelative,
}

/// The order of the tables in `.rodata`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum TableOrder {
    /// Offsets, base and count first (to 6.3).
    OffsetsFirst,
    /// Count and names first, offsets after the token index (6.4 on).
    NamesFirst,
}

/// Where the kallsyms tables are; everything after `names` is found while decoding.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct KallsymsLocation {
    pub order: TableOrder,
    pub mode: OffsetMode,
    pub offsets: PhysAddr,
    pub num_syms: u32,
    /// `kallsyms_relative_base`; `None` for [`OffsetMode::PcRelative`].
    pub relative_base: Option<KVirt>,
    pub names: PhysAddr,
    /// `kallsyms_markers`, where the search found it on the way (names-first tables) or
    /// VMCOREINFO names it; verified again when decoded.
    pub markers: Option<PhysAddr>,
}

/// Search parameters.
#[derive(Debug, Clone, Copy)]
pub struct LocateConfig {
    /// Distance between sampled blocks; must be below the size of the offsets table.
    pub stride: u64,
    /// How far past the start to look.
    pub span: u64,
    /// Sampled blocks read in the first batch (later ones double, up to 8 times this).
    pub batch: usize,
}

impl Default for LocateConfig {
    fn default() -> Self {
        LocateConfig { stride: 32 << 10, span: 48 << 20, batch: 16 }
    }
}

const BLOCK: u64 = 256;
/// The lowest kernel-image address (`__START_KERNEL_map`).
const KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
/// At most this many bytes in one compressed name entry (length byte(s) and token codes); the
/// kernel allows 0x3fff, real entries are far below 64.
const MAX_ENTRY: u64 = 128;
/// Upper bound on the markers table (2 M symbols / 256 per marker, 4 bytes each).
const MAX_MARKERS_BYTES: u64 = (super::MAX_SYMS as u64).div_ceil(256) * 4;

/// Whether 256 bytes look like a run of `kallsyms_offsets`: 64 i32 all non-increasing or all
/// non-decreasing (as stored, or after adding `4 i` as pc-relative entries need), with steps
/// under 16 MiB and at least 8 distinct steps.
pub fn looks_like_offsets(block: &[u8]) -> bool {
    let b = Bytes::new(block);
    let vals: Vec<i64> = (0..block.len() / 4).filter_map(|i| b.i32(i * 4).ok().map(i64::from)).collect();
    if vals.len() < 16 {
        return false;
    }
    let monotonic = |vals: &[i64]| {
        let diffs: Vec<i64> = vals.windows(2).map(|w| w[1] - w[0]).collect();
        let up = diffs.iter().all(|&d| d >= 0);
        let down = diffs.iter().all(|&d| d <= 0);
        let small = diffs.iter().all(|&d| d.abs() < (16 << 20));
        (up || down) && small
    };
    // At least 8 distinct stored steps: a constant run (zeroed memory) is no table, although
    // adding `4 i` would make it increase.
    let distinct = vals.windows(2).filter(|w| w[1] != w[0]).count() >= 8;
    let adjusted: Vec<i64> = vals.iter().enumerate().map(|(i, v)| v + 4 * i as i64).collect();
    distinct && (monotonic(&vals) || monotonic(&adjusted))
}

/// Find the kallsyms tables in `[start, end)`.
pub fn locate(mem: &dyn PhysMem, start: PhysAddr, end: PhysAddr, cfg: &LocateConfig) -> Option<KallsymsLocation> {
    let limit = end.0.min(start.0.saturating_add(cfg.span));
    let mut next = start.0;
    let mut rejected_until = 0u64;
    // Batches double from `cfg.batch` to 8 times that: tables megabytes past the start of
    // `.rodata` (7.x) are reached in a few round trips, near ones in the first.
    let mut batch = cfg.batch.max(1) as u64;
    while next < limit {
        let addrs: Vec<(PhysAddr, usize)> = (0..batch)
            .filter_map(|i| next.checked_add(i.checked_mul(cfg.stride)?))
            .take_while(|&a| a.saturating_add(BLOCK) <= limit)
            .map(|a| (PhysAddr(a), BLOCK as usize))
            .collect();
        if addrs.is_empty() {
            break;
        }
        next = next.saturating_add(batch.saturating_mul(cfg.stride));
        batch = batch.saturating_mul(2).min(cfg.batch.max(1) as u64 * 8);
        for ((addr, _), res) in addrs.iter().zip(read_many(mem, &addrs)) {
            let Ok(block) = res else { continue };
            if addr.0 < rejected_until || !looks_like_offsets(&block) {
                continue;
            }
            // The run of table-like blocks this one is in: every hit inside it would be tried
            // the same way, so a rejected run is skipped as a whole.
            let Some(run_end) = boundary(mem, addr.0, start.0, limit, true) else { continue };
            let found = offsets_first(mem, start, *addr, run_end, limit)
                .or_else(|| names_first(mem, start, *addr, cfg.stride, limit, run_end));
            if let Some(loc) = found {
                tracing::debug!(?loc, "kallsyms tables found");
                return Some(loc);
            }
            rejected_until = run_end.saturating_add(BLOCK);
        }
    }
    None
}

/// Whether each 256-byte block inside `[start, limit)` looks like offsets; read in one batch.
fn blocks_good(mem: &dyn PhysMem, addrs: &[u64], start: u64, limit: u64) -> Vec<bool> {
    let inside = |a: u64| a >= start && a.saturating_add(BLOCK) <= limit;
    let regions: Vec<(PhysAddr, usize)> = addrs.iter().filter(|&&a| inside(a)).map(|&a| (PhysAddr(a), BLOCK as usize)).collect();
    let mut read = read_many(mem, &regions).into_iter();
    addrs
        .iter()
        .map(|&a| inside(a) && read.next().is_some_and(|r| r.is_ok_and(|b| looks_like_offsets(&b))))
        .collect()
}

/// Blocks probed per batch while bisecting (each batch narrows the interval 17-fold).
const BISECT_PROBES: u64 = 16;

/// The good/bad boundary next to `hit` (a good block), to `BLOCK` precision: walking forward,
/// the last good block; walking backward, the first good block. Probes go out in batches (a
/// gallop of doubling steps, then bisection 17 ways), a handful of round trips in all; the
/// first bad probe in the walking direction bounds the run, as if probed one by one.
fn boundary(mem: &dyn PhysMem, hit: u64, start: u64, limit: u64, forward: bool) -> Option<u64> {
    let step_from = |x: u64, s: u64| if forward { x.checked_add(s) } else { x.checked_sub(s) };
    let edge = if forward { limit } else { start.saturating_sub(BLOCK) };
    // Gallop: hit + (2^(j+1) - 1) blocks, j = 0..=18 (steps up to 64 MiB).
    let mut probes = Vec::with_capacity(19);
    let mut overflow = false;
    for j in 0..=18u32 {
        match step_from(hit, ((2u64 << j) - 1) * BLOCK) {
            Some(p) => probes.push(p),
            None => {
                overflow = true;
                break;
            }
        }
    }
    let mut good = hit;
    let mut bad = None;
    for (&p, ok) in probes.iter().zip(blocks_good(mem, &probes, start, limit)) {
        if !ok {
            bad = Some(p);
            break;
        }
        good = p;
    }
    let mut bad = match bad {
        Some(b) => b,
        None if overflow => edge,
        None => return None,
    };
    // Bisect in whole blocks from `good`; stops when `bad` is less than two blocks away.
    while good.abs_diff(bad) >= 2 * BLOCK {
        let n = good.abs_diff(bad) / BLOCK;
        let mut ks: Vec<u64> = (1..=BISECT_PROBES).map(|i| (i * n / (BISECT_PROBES + 1)).max(1)).filter(|&k| k < n).collect();
        ks.dedup();
        let mids: Vec<u64> = ks.iter().map(|&k| if forward { good + k * BLOCK } else { good - k * BLOCK }).collect();
        let oks = blocks_good(mem, &mids, start, limit);
        match oks.iter().position(|&ok| !ok) {
            Some(i) => {
                bad = mids[i];
                if i > 0 {
                    good = mids[i - 1];
                }
            }
            None => good = *mids.last()?,
        }
    }
    Some(good)
}

/// OffsetsFirst: the table ends within two blocks after `lo` (its last good block), then
/// `relative_base` and `num_syms` follow.
fn offsets_first(mem: &dyn PhysMem, start: PhysAddr, hit: PhysAddr, lo: u64, limit: u64) -> Option<KallsymsLocation> {
    // The table ends somewhere in (lo, lo + 2 BLOCK]; its header follows.
    let win_start = lo & !7;
    let win_len = usize::try_from(lo.checked_add(3 * BLOCK)?.min(limit).saturating_sub(win_start)).ok()?;
    let win = read_vec(mem, PhysAddr(win_start), win_len).ok()?;
    let w = Bytes::new(&win);
    let mut p = 0usize;
    while p + 12 <= win.len() {
        let pa = win_start + p as u64;
        let base = w.u64(p).ok()?;
        let n = u64::from(w.u32(p + 8).ok()?);
        if base >= KERNEL_MAP && n > 0 && n <= u64::from(super::MAX_SYMS) {
            let table_bytes = n * 4;
            if let Some(s) = pa.checked_sub(table_bytes).map(|x| x & !7) {
                let gap = pa - (s + table_bytes);
                if (gap == 0 || gap == 4) && s >= start.0 && s <= hit.0 {
                    let last_off = pa - gap - 4;
                    let last = Bytes::new(&read_vec(mem, PhysAddr(last_off), 4).ok()?).i32(0).ok()?;
                    let mode = if last < 0 { OffsetMode::AbsolutePercpu } else { OffsetMode::Relative };
                    return Some(KallsymsLocation {
                        order: TableOrder::OffsetsFirst,
                        mode,
                        offsets: PhysAddr(s),
                        num_syms: n as u32,
                        relative_base: Some(KVirt(base)),
                        names: PhysAddr(pa + 16),
                        markers: None,
                    });
                }
            }
        }
        p += 8;
    }
    None
}

/// NamesFirst: token index before the table's start, markers before the token table, and the
/// count before the names. `run_end` is the last good block of the table-like run the hit is
/// in: where that run is the markers (monotonic too), the token table and index follow it.
fn names_first(mem: &dyn PhysMem, start: PhysAddr, hit: PhysAddr, stride: u64, limit: u64, run_end: u64) -> Option<KallsymsLocation> {
    // Blocks are sampled in address order, so the first hit inside the offsets table lies less
    // than one stride after its start, and the token index right before that. (A backward
    // gallop cannot find the start: the markers before the token table read as monotonic too.)
    // Where the hit is in the markers, their run ends where the token table and index start.
    // Both windows are read in one batch.
    let before = (hit.0.saturating_sub(stride + 1024).max(start.0) & !3, hit.0.checked_add(BLOCK)?.min(limit), hit.0);
    let after = (run_end & !3, run_end.checked_add(AFTER_MARKERS)?.min(limit), limit);
    // A run as short as a markers table (an offsets table is n words, the markers n / 256).
    let windows: &[(u64, u64, u64)] = if run_end.saturating_sub(hit.0) < MAX_MARKERS_BYTES { &[before, after] } else { &[before] };
    let regions: Vec<(PhysAddr, usize)> =
        windows.iter().map(|&(from, to, _)| Some((PhysAddr(from), usize::try_from(to.checked_sub(from)?).ok()?))).collect::<Option<_>>()?;
    windows.iter().zip(read_many(mem, &regions)).find_map(|(&(from, _, offsets_max), win)| token_index_in(mem, start.0, from, &win.ok()?, offsets_max))
}

/// Bytes after a run of markers read for the token table and index that follow them (the
/// run's last good block is within two blocks of the markers' end; Debian's token tables are
/// under 3 KiB, and the index is 512 bytes).
const AFTER_MARKERS: u64 = 6 << 10;

/// The tables, from a token index in `win` (read at `from`) whose offsets table (right after
/// it) starts at most at `offsets_max`.
fn token_index_in(mem: &dyn PhysMem, lowest: u64, from: u64, win: &[u8], offsets_max: u64) -> Option<KallsymsLocation> {
    let mut p = 0usize;
    while p + 512 <= win.len() {
        let ti = from + p as u64;
        let offsets = ti + 512;
        if offsets <= offsets_max {
            if let Some(index) = token_index_at(&win[p..p + 512]) {
                if let Some(loc) = names_first_from(mem, lowest, ti, &index, offsets) {
                    return Some(loc);
                }
            }
        }
        p += 4;
    }
    None
}

/// 256 u16 from 0, strictly increasing by 2 to 128 (a token of 1 to 127 characters and its NUL).
fn token_index_at(bytes: &[u8]) -> Option<[u16; 256]> {
    let b = Bytes::new(bytes);
    let mut idx = [0u16; 256];
    // Word by word, giving up at the first that breaks the pattern (this runs at every 4-byte
    // position of a window).
    for i in 0..256 {
        let v = b.u16(2 * i).ok()?;
        let ok = match i {
            0 => v == 0,
            _ => v > idx[i - 1] && (2..=128).contains(&(v - idx[i - 1])),
        };
        if !ok {
            return None;
        }
        idx[i] = v;
    }
    Some(idx)
}

/// The start of the token table whose index `idx` sits at `ti`, checked token by token.
fn token_table_before(mem: &dyn PhysMem, lowest: u64, ti: u64, idx: &[u16; 256]) -> Option<u64> {
    let last = u64::from(idx[255]);
    let len = (last + MAX_ENTRY + 8).min(ti.saturating_sub(lowest));
    let from = ti.checked_sub(len)?;
    let raw = read_vec(mem, PhysAddr(from), usize::try_from(len).ok()?).ok()?;
    // Backward from the index: alignment zeros, then token 255's NUL and characters.
    let nonzero = raw.iter().rposition(|&b| b != 0)?;
    if raw.len() - nonzero - 1 > 8 {
        return None;
    }
    let tok255 = raw[..nonzero].iter().rposition(|&b| b == 0)? + 1;
    let tt = (from + tok255 as u64).checked_sub(last)?;
    let base = usize::try_from(tt.checked_sub(from)?).ok()?;
    for (i, &off) in idx.iter().enumerate() {
        let s = base + usize::from(off);
        let e = if i == 255 { nonzero + 1 } else { base + usize::from(idx[i + 1]) - 1 };
        let tok = raw.get(s..e)?;
        if tok.is_empty() || tok.contains(&0) || raw.get(e) != Some(&0) {
            return None;
        }
    }
    Some(tt)
}

/// Bytes of markers read first (2048 markers: half a million symbols; Debian's kernels have
/// under 200 000), before the bound [`MAX_MARKERS_BYTES`] if they do not reach the table's 0.
const FIRST_MARKERS_BYTES: u64 = 8 << 10;

fn names_first_from(mem: &dyn PhysMem, lowest: u64, ti: u64, idx: &[u16; 256], offsets: u64) -> Option<KallsymsLocation> {
    let tt = token_table_before(mem, lowest, ti, idx)?;
    // The markers end at the token table, or 4 bytes of alignment before it: a typical table's
    // worth read first, the bound only if the markers run past it.
    let most = MAX_MARKERS_BYTES.min(tt.saturating_sub(lowest)) & !3;
    for mlen in [FIRST_MARKERS_BYTES.min(most), most] {
        let mfrom = tt.checked_sub(mlen)?;
        let mraw = read_vec(mem, PhysAddr(mfrom), usize::try_from(mlen).ok()?).ok()?;
        let mb = Bytes::new(&mraw);
        let mut whole = false;
        for pad in [0u64, 4] {
            if pad == 4 && mb.u32(mraw.len().checked_sub(4)?).ok()? != 0 {
                continue;
            }
            let Some(markers) = super::stream::markers_ending_at(&mb, mraw.len().checked_sub(pad as usize)?) else { continue };
            // Markers that begin past the start of what was read are the whole table.
            whole |= 4 * markers.len() as u64 + pad < mlen;
            let markers_start = tt - pad - 4 * markers.len() as u64;
            if let Some(loc) = names_before(mem, lowest, markers_start, &markers, offsets) {
                return Some(loc);
            }
        }
        if whole || mlen == most {
            break;
        }
    }
    None
}

/// The names table ending at the markers (within 7 bytes of zero padding), and the count
/// stored just before it (4 bytes before with ALGN 4, 8 with ALGN 8).
fn names_before(mem: &dyn PhysMem, lowest: u64, markers_start: u64, markers: &[u32], offsets: u64) -> Option<KallsymsLocation> {
    // The last block is about as long as the others: twice their mean is read first, the bound
    // (256 entries of the longest) only if the names do not check out in that.
    let m = markers.len() as u64;
    let mean = u64::from(*markers.last()?) / (m - 1).max(1);
    let bound = 256 * MAX_ENTRY + 8;
    let first = mean.saturating_mul(2).saturating_add(64).min(bound);
    [first, bound].into_iter().take(if first < bound { 2 } else { 1 }).find_map(|len| names_within(mem, lowest, markers_start, markers, offsets, len))
}

/// [`names_before`], the last block of names looked for in the `tail_len` bytes before the
/// markers and the names' start in as many before where that block's marker puts it.
fn names_within(mem: &dyn PhysMem, lowest: u64, markers_start: u64, markers: &[u32], offsets: u64, tail_len: u64) -> Option<KallsymsLocation> {
    let m = markers.len() as u64;
    let last = u64::from(*markers.last()?);
    let (n_lo, n_hi) = (256 * (m - 1) + 1, 256 * m);
    // The last block of names (up to 256 entries) and the region its start may be in.
    let tail_from = markers_start.checked_sub(tail_len)?.max(lowest);
    let tail = read_vec(mem, PhysAddr(tail_from), usize::try_from(markers_start - tail_from).ok()?).ok()?;
    let head_to = markers_start.checked_sub(last)?;
    let head_from = head_to.checked_sub(tail_len + 8)?.max(lowest);
    let head = read_vec(mem, PhysAddr(head_from), usize::try_from(head_to - head_from).ok()?).ok()?;
    let hb = Bytes::new(&head);
    // Candidate names starts X, 4-aligned, nearest first.
    let mut x = head_to.checked_sub(1)? & !3;
    while x >= head_from + 8 {
        let at = |a: u64| hb.u32(usize::try_from(a - head_from).ok()?).ok();
        let counts = [at(x - 4), at(x - 8).filter(|_| at(x - 4) == Some(0))];
        for n in counts.into_iter().flatten().map(u64::from) {
            if n < n_lo || n > n_hi {
                continue;
            }
            let y = x.checked_add(last)?;
            if y < tail_from {
                continue;
            }
            let at = usize::try_from(y - tail_from).ok()?;
            let walked = tail.get(at..).and_then(|t| super::stream::walk(t, (n - 256 * (m - 1)) as usize));
            if let Some(end) = walked.map(|(_, e)| y + e as u64) {
                let pad = markers_start.checked_sub(end)?;
                let zeros = tail.get(usize::try_from(end - tail_from).ok()?..).is_some_and(|z| z.iter().all(|&b| b == 0));
                if pad < 8 && zeros {
                    return Some(finish_names_first(mem, x, n as u32, offsets, markers_start));
                }
            }
        }
        x -= 4;
    }
    None
}

/// The encoding: a kernel address right after the offsets table is `kallsyms_relative_base`;
/// without one the entries are pc-relative.
fn finish_names_first(mem: &dyn PhysMem, names: u64, n: u32, offsets: u64, markers: u64) -> KallsymsLocation {
    let end = offsets + 4 * u64::from(n);
    let base = read_u64(mem, PhysAddr((end + 7) & !7)).ok().filter(|&b| b >= KERNEL_MAP);
    let mode = mode_of(mem, offsets, n, base.is_some());
    KallsymsLocation {
        order: TableOrder::NamesFirst,
        mode,
        offsets: PhysAddr(offsets),
        num_syms: n,
        relative_base: base.map(KVirt),
        names: PhysAddr(names),
        markers: Some(PhysAddr(markers)),
    }
}

/// With a base, the last (highest) symbol's value tells the two base-relative encodings apart:
/// negative only with absolute per-CPU symbols. Without a base the entries are pc-relative.
fn mode_of(mem: &dyn PhysMem, offsets: u64, n: u32, has_base: bool) -> OffsetMode {
    let last_at = (offsets + 4 * u64::from(n)).saturating_sub(4);
    let last = read_vec(mem, PhysAddr(last_at), 4).ok().and_then(|b| Bytes::new(&b).i32(0).ok()).unwrap_or(0);
    match (has_base, last < 0) {
        (false, _) => OffsetMode::PcRelative,
        (true, true) => OffsetMode::AbsolutePercpu,
        (true, false) => OffsetMode::Relative,
    }
}

/// The tables as VMCOREINFO names them (`SYMBOL(kallsyms_names)`, `_num_syms`, `_offsets`,
/// `_relative_base`, with `NUMBER(phys_base)` to place them), for kernels that export them
/// (our 6.1 and later corpus kernels do). `None` if an entry is missing or the count read
/// through it is implausible; the tables are verified like any others when decoded.
pub fn from_vmcoreinfo(mem: &dyn PhysMem, info: &VmcoreInfo) -> Option<KallsymsLocation> {
    let phys = |name: &str| image_phys(info, name).map(|a| a.0);
    let (names, offsets, count) = (phys("kallsyms_names")?, phys("kallsyms_offsets")?, phys("kallsyms_num_syms")?);
    let n = read_vec(mem, PhysAddr(count), 4).ok().and_then(|b| Bytes::new(&b).u32(0).ok())?;
    if n == 0 || n > super::MAX_SYMS {
        return None;
    }
    let base = match phys("kallsyms_relative_base") {
        Some(at) => Some(KVirt(read_u64(mem, PhysAddr(at)).ok().filter(|&b| b >= KERNEL_MAP)?)),
        None => None,
    };
    Some(KallsymsLocation {
        order: if names < offsets { TableOrder::NamesFirst } else { TableOrder::OffsetsFirst },
        mode: mode_of(mem, offsets, n, base.is_some()),
        offsets: PhysAddr(offsets),
        num_syms: n,
        relative_base: base,
        names: PhysAddr(names),
        markers: phys("kallsyms_markers").map(PhysAddr),
    })
}

/// Whether VMCOREINFO's kallsyms entries (if it has them) put the tables where the structural
/// search found them.
pub fn agrees_with_vmcoreinfo(found: &KallsymsLocation, info: &VmcoreInfo) -> Option<bool> {
    Some(image_phys(info, "kallsyms_names")? == found.names && image_phys(info, "kallsyms_offsets")? == found.offsets)
}

/// Where VMCOREINFO's `SYMBOL(name)`, an image address, lies physically (through
/// `NUMBER(phys_base)`).
fn image_phys(info: &VmcoreInfo, name: &str) -> Option<PhysAddr> {
    let phys_base = info.number("phys_base")? as u64;
    Some(PhysAddr(info.symbol(name)?.0.checked_sub(KERNEL_MAP)?.wrapping_add(phys_base)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_of(vals: impl Iterator<Item = i32>) -> Vec<u8> {
        vals.take(64).flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn classifier() {
        assert!(looks_like_offsets(&block_of((0..).map(|i| -1 - i * 40))));
        assert!(looks_like_offsets(&block_of((0..).map(|i| i * 16))));
        // pc-relative: each entry 4 bytes further along, symbols 0 or 32 bytes apart.
        assert!(looks_like_offsets(&block_of((0..).map(|i| -0x10_0000 + (i / 2) * 32 - 4 * i))));
        assert!(!looks_like_offsets(&[0u8; 256]));
        assert!(!looks_like_offsets(&block_of((0..).map(|i| if i % 2 == 0 { i } else { -i }))));
        assert!(!looks_like_offsets(&block_of((0..).map(|i| i * (1 << 25)))));
    }

    #[test]
    fn token_index_shape() {
        let mut idx = Vec::new();
        for i in 0..256u16 {
            idx.extend_from_slice(&(i * 3).to_le_bytes());
        }
        assert!(token_index_at(&idx).is_some());
        idx[2] = 1; // a one-byte step: an empty token
        assert!(token_index_at(&idx).is_none());
    }
}
