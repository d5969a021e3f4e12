//! Finding the kallsyms tables in physical memory by their structure, reading little.
//!
//! The 6.1 tables sit in `.rodata` in this order, each 8-byte aligned (scripts/kallsyms.c):
//! `kallsyms_offsets` (`num_syms` × i32, sorted by address so monotonic), `kallsyms_relative_base`
//! (u64, a kernel text address), `kallsyms_num_syms` (u32), `kallsyms_names`, `kallsyms_markers`,
//! optionally `kallsyms_seqs_of_names`, `kallsyms_token_table`, `kallsyms_token_index`.
//!
//! Search: sample 256-byte blocks at a fixed stride from the start of `.rodata`; a block of 64
//! monotonic i32 with small steps is a candidate inside the offsets table. Gallop forward and
//! bisect to the table's end, then accept only a position where a kernel address is followed
//! by a count `n` that makes the table end exactly there. The names and token tables are
//! verified afterwards, when decoded ([`super::Kallsyms::load`]).
//!
//! Invariant: the number of probes is bounded by `span / stride` plus a constant per candidate;
//! a false candidate is rejected and the search continues after it.

use emulator::mem::{PhysAddr, PhysMem};

use crate::introspect::addr::KVirt;
use crate::introspect::bytes::Bytes;
use crate::introspect::physread::{read_many, read_vec};

/// How symbol addresses are encoded in `kallsyms_offsets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum OffsetMode {
    /// `CONFIG_KALLSYMS_ABSOLUTE_PERCPU`: non-negative values are absolute (per-CPU symbols),
    /// negative ones are `relative_base - 1 - value`.
    AbsolutePercpu,
    /// Unsigned offsets from `relative_base`.
    Relative,
}

/// Where the kallsyms tables begin; everything after `names` is found while decoding.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct KallsymsLocation {
    pub offsets: PhysAddr,
    pub num_syms: u32,
    pub relative_base: KVirt,
    pub names: PhysAddr,
    pub mode: OffsetMode,
}

/// Search parameters.
#[derive(Debug, Clone, Copy)]
pub struct LocateConfig {
    /// Distance between sampled blocks; must be below the size of the offsets table.
    pub stride: u64,
    /// How far past the start to look.
    pub span: u64,
    /// Sampled blocks read per batch.
    pub batch: usize,
}

impl Default for LocateConfig {
    fn default() -> Self {
        LocateConfig { stride: 32 << 10, span: 48 << 20, batch: 16 }
    }
}

const BLOCK: u64 = 256;

/// Whether 256 bytes look like a run of `kallsyms_offsets`: 64 i32 all non-increasing or all
/// non-decreasing, with steps under 16 MiB and at least 8 distinct steps.
pub fn looks_like_offsets(block: &[u8]) -> bool {
    let b = Bytes::new(block);
    let vals: Vec<i64> = (0..block.len() / 4).filter_map(|i| b.i32(i * 4).ok().map(i64::from)).collect();
    if vals.len() < 16 {
        return false;
    }
    let diffs: Vec<i64> = vals.windows(2).map(|w| w[1] - w[0]).collect();
    let up = diffs.iter().all(|&d| d >= 0);
    let down = diffs.iter().all(|&d| d <= 0);
    let nonzero = diffs.iter().filter(|&&d| d != 0).count();
    let small = diffs.iter().all(|&d| d.abs() < (16 << 20));
    (up || down) && nonzero >= 8 && small
}

/// Find the kallsyms tables in `[start, end)`.
pub fn locate(mem: &dyn PhysMem, start: PhysAddr, end: PhysAddr, cfg: &LocateConfig) -> Option<KallsymsLocation> {
    let limit = end.0.min(start.0.saturating_add(cfg.span));
    let mut next = start.0;
    while next < limit {
        let addrs: Vec<(PhysAddr, usize)> = (0..cfg.batch as u64)
            .map(|i| next + i * cfg.stride)
            .take_while(|&a| a + BLOCK <= limit)
            .map(|a| (PhysAddr(a), BLOCK as usize))
            .collect();
        if addrs.is_empty() {
            break;
        }
        next += cfg.batch as u64 * cfg.stride;
        for ((addr, _), res) in addrs.iter().zip(read_many(mem, &addrs)) {
            let Ok(block) = res else { continue };
            if !looks_like_offsets(&block) {
                continue;
            }
            if let Some(loc) = refine(mem, start, *addr, limit) {
                tracing::debug!(?loc, "kallsyms offsets table found");
                return Some(loc);
            }
        }
    }
    None
}

fn block_good(mem: &dyn PhysMem, addr: u64, limit: u64) -> bool {
    if addr + BLOCK > limit {
        return false;
    }
    read_vec(mem, PhysAddr(addr), BLOCK as usize).is_ok_and(|b| looks_like_offsets(&b))
}

/// From a block inside the offsets table, find the table's end and its header.
fn refine(mem: &dyn PhysMem, start: PhysAddr, hit: PhysAddr, limit: u64) -> Option<KallsymsLocation> {
    // Gallop: lo is known good, hi the first known bad.
    let mut lo = hit.0;
    let mut step = BLOCK;
    let hi = loop {
        let probe = lo.checked_add(step)?;
        if !block_good(mem, probe, limit) {
            break probe;
        }
        lo = probe;
        step = step.checked_mul(2)?;
        if step > (64 << 20) {
            return None;
        }
    };
    let (mut lo, mut hi) = (lo, hi);
    while hi - lo > BLOCK {
        let mid = lo + ((hi - lo) / BLOCK / 2) * BLOCK;
        if block_good(mem, mid, limit) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    // The table ends somewhere in (lo, hi + BLOCK]; its header follows.
    let win_start = lo & !7;
    let win_len = (hi + 2 * BLOCK).min(limit).saturating_sub(win_start) as usize;
    let win = read_vec(mem, PhysAddr(win_start), win_len).ok()?;
    let w = Bytes::new(&win);
    let mut p = 0usize;
    while p + 12 <= win.len() {
        let pa = win_start + p as u64;
        let base = w.u64(p).ok()?;
        let n = w.u32(p + 8).ok()? as u64;
        if base >= 0xffff_ffff_8000_0000 && n > 0 {
            let table_bytes = n * 4;
            if let Some(s) = pa.checked_sub(table_bytes).map(|x| x & !7) {
                let gap = pa - (s + table_bytes);
                if (gap == 0 || gap == 4) && s >= start.0 && s <= hit.0 {
                    let last_off = pa - gap - 4;
                    let last = Bytes::new(&read_vec(mem, PhysAddr(last_off), 4).ok()?).i32(0).ok()?;
                    let mode = if last < 0 { OffsetMode::AbsolutePercpu } else { OffsetMode::Relative };
                    return Some(KallsymsLocation {
                        offsets: PhysAddr(s),
                        num_syms: n as u32,
                        relative_base: KVirt(base),
                        names: PhysAddr(pa + 16),
                        mode,
                    });
                }
            }
        }
        p += 8;
    }
    None
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
        assert!(!looks_like_offsets(&[0u8; 256]));
        assert!(!looks_like_offsets(&block_of((0..).map(|i| if i % 2 == 0 { i } else { -i }))));
        assert!(!looks_like_offsets(&block_of((0..).map(|i| i * (1 << 25)))));
    }
}
