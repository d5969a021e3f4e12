//! Lookups by name through `kallsyms_seqs_of_names`: one binary search per name, all names in
//! lockstep, so that each step is one batch of reads (the ranks' entries, the blocks holding
//! them) whatever the number of names.
//!
//! A rank's entry index is read from the table (3 bytes, big-endian), a few levels of the
//! search ahead (the ranks the next three steps may visit, or a whole narrow range at once);
//! its name is expanded from its block, decoded (and checked against its marker) the first time
//! a step needs it. After the search every name's run of equal names is read to its end, to
//! prefer a global definition, then the first in table order, as the kernel's own lookup does.
//!
//! Invariant: a name found is an entry whose expanded name equals it. The table is trusted only
//! as far as what was read of it agrees with itself: an index past the table, or two ranks
//! read whose names are out of order, returns `None` (the caller scans instead). The number of
//! steps is bounded by `log2(n) + 1` plus the longest run of equal names.

use std::collections::HashMap;

use emulator::mem::{PhysAddr, PhysMem};

use super::{Kallsyms, KallsymsError};
use crate::introspect::physread::read_many;

/// Levels of the search whose ranks are read ahead in one batch.
const AHEAD: u32 = 3;
/// A range at most this wide is read whole.
const NARROW: u32 = 24;
/// Ranks of a run of equal names read per step.
const RUN_STEP: u32 = 4;

/// The indices of `names` (see the module doc), or `None` if the table contradicted itself.
pub(super) fn by_name(k: &Kallsyms, mem: &dyn PhysMem, seqs: PhysAddr, names: &[&str]) -> Result<Option<Vec<Option<u32>>>, KallsymsError> {
    let n = k.location.num_syms;
    let mut index = k.ranks.lock().unwrap_or_else(|p| p.into_inner());
    let mut s = Search { k, mem, seqs, n, index: &mut index, seen: Vec::new(), buf: Vec::with_capacity(256) };
    let wants: Vec<&[u8]> = names.iter().map(|w| w.as_bytes()).collect();
    // First rank whose name is not below the one wanted.
    let mut range: Vec<(u32, u32)> = vec![(0, n); names.len()];
    loop {
        let open: Vec<usize> = (0..names.len()).filter(|&i| range[i].0 < range[i].1).collect();
        if open.is_empty() {
            break;
        }
        // The ranks of the next levels, for the names whose next rank is not known yet.
        let mut ahead = Vec::new();
        for &i in &open {
            let (lo, hi) = range[i];
            if s.index.contains_key(&((lo + hi) / 2)) {
                continue;
            }
            if hi - lo <= NARROW {
                ahead.extend(lo..hi);
            } else {
                tree_mids(lo, hi, AHEAD, &mut ahead);
            }
        }
        let mids: Vec<u32> = open.iter().map(|&i| (range[i].0 + range[i].1) / 2).collect();
        if !s.learn(&ahead, &mids)? {
            return Ok(None);
        }
        for (&i, &mid) in open.iter().zip(&mids) {
            let Some(below) = s.with_name(mid, |name| name < wants[i]) else { return Ok(None) };
            range[i] = if below { (mid + 1, range[i].1) } else { (range[i].0, mid) };
        }
    }
    // The run of ranks named as wanted, from the first.
    let mut best: Vec<Option<(u32, bool)>> = vec![None; names.len()];
    let mut next: Vec<Option<u32>> = range.iter().map(|&(lo, _)| (lo < n).then_some(lo)).collect();
    loop {
        let open: Vec<usize> = (0..names.len()).filter(|&i| next[i].is_some()).collect();
        if open.is_empty() {
            break;
        }
        let step: Vec<u32> = open.iter().flat_map(|&i| next[i].map(|r| r..(r + RUN_STEP).min(n)).unwrap_or(0..0)).collect();
        if !s.learn(&step, &step)? {
            return Ok(None);
        }
        for &i in &open {
            let from = next[i].unwrap_or(n);
            next[i] = None;
            for r in from..(from + RUN_STEP).min(n) {
                let Some((equal, global)) = s.with_name_kind(r, |name| name == wants[i]) else { return Ok(None) };
                if !equal {
                    break;
                }
                let idx = s.index[&r];
                let better = match best[i] {
                    None => true,
                    Some((j, g)) => (global && !g) || (global == g && idx < j),
                };
                if better {
                    best[i] = Some((idx, global));
                }
                if r + 1 == from + RUN_STEP && r + 1 < n {
                    next[i] = Some(r + 1);
                }
            }
        }
    }
    if !s.in_order() {
        return Ok(None);
    }
    Ok(Some(best.into_iter().map(|b| b.map(|(i, _)| i)).collect()))
}

/// The ranks a binary search of `[lo, hi)` visits in its next `depth` steps.
fn tree_mids(lo: u32, hi: u32, depth: u32, out: &mut Vec<u32>) {
    if depth == 0 || lo >= hi {
        return;
    }
    let mid = (lo + hi) / 2;
    out.push(mid);
    tree_mids(lo, mid, depth - 1, out);
    tree_mids(mid + 1, hi, depth - 1, out);
}

struct Search<'a> {
    k: &'a Kallsyms,
    mem: &'a dyn PhysMem,
    seqs: PhysAddr,
    n: u32,
    /// Entry index by rank, as read (kept by the [`Kallsyms`] for later searches).
    index: &'a mut HashMap<u32, u32>,
    /// Ranks whose names were compared, with the names (for [`Search::in_order`]).
    seen: Vec<(u32, Vec<u8>)>,
    buf: Vec<u8>,
}

impl Search<'_> {
    /// Read the entry indices of `ranks` not known yet (adjacent ones in one read), then decode
    /// the blocks of `named`'s entries; false if an index is past the table.
    fn learn(&mut self, ranks: &[u32], named: &[u32]) -> Result<bool, KallsymsError> {
        let mut want: Vec<u32> = ranks.iter().copied().filter(|r| *r < self.n && !self.index.contains_key(r)).collect();
        want.sort_unstable();
        want.dedup();
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for r in want {
            match runs.last_mut() {
                Some((_, end)) if *end == r => *end = r + 1,
                _ => runs.push((r, r + 1)),
            }
        }
        let regions: Vec<(PhysAddr, usize)> =
            runs.iter().map(|&(a, b)| (PhysAddr(self.seqs.0 + 3 * u64::from(a)), 3 * (b - a) as usize)).collect();
        let read = if regions.is_empty() { Vec::new() } else { read_many(self.mem, &regions) };
        for (&(a, _), raw) in runs.iter().zip(read) {
            for (j, e) in raw?.chunks_exact(3).enumerate() {
                let idx = u32::from(e[0]) << 16 | u32::from(e[1]) << 8 | u32::from(e[2]);
                if idx >= self.n {
                    return Ok(false);
                }
                self.index.insert(a + j as u32, idx);
            }
        }
        let blocks: Vec<u32> = named.iter().filter_map(|r| self.index.get(r)).map(|i| i / 256).collect();
        self.k.decode(self.mem, &blocks)?;
        Ok(true)
    }

    /// `f` of the name (without its type letter) at `rank`, whose block is decoded; `None` if
    /// the rank was not read.
    fn with_name<T>(&mut self, rank: u32, f: impl FnOnce(&[u8]) -> T) -> Option<T> {
        self.with_name_kind(rank, f).map(|(t, _)| t)
    }

    /// As [`Search::with_name`], with whether the symbol is global (upper-case type letter).
    fn with_name_kind<T>(&mut self, rank: u32, f: impl FnOnce(&[u8]) -> T) -> Option<(T, bool)> {
        let idx = *self.index.get(&rank)?;
        let block = self.k.block_of(idx)?;
        self.k.expand_in(&block, (idx % 256) as usize, &mut self.buf, usize::MAX);
        let (&kind, name) = self.buf.split_first()?;
        self.seen.push((rank, name.to_vec()));
        Some((f(name), kind.is_ascii_uppercase()))
    }

    /// Whether the names compared are in rank order.
    fn in_order(&mut self) -> bool {
        self.seen.sort_unstable_by_key(|(r, _)| *r);
        self.seen.windows(2).all(|w| w[0].1 <= w[1].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_levels_ahead() {
        let mut out = Vec::new();
        tree_mids(0, 100, 3, &mut out);
        assert_eq!(out, vec![50, 25, 12, 38, 75, 63, 88]);
        out.clear();
        tree_mids(5, 6, 3, &mut out);
        assert_eq!(out, vec![5]);
    }
}
