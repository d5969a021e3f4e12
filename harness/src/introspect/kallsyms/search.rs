//! Lookups by name through `kallsyms_seqs_of_names`: one binary search per name, all names in
//! lockstep, so that each step is one batch of reads (the ranks' entries, the names they need)
//! whatever the number of names.
//!
//! A rank's entry index is read from the table (3 bytes, big-endian) one step ahead, in the
//! batch of the names a step compares: the ranks within [`WINDOW`] of the middles of both
//! halves the step may leave (or a whole narrow range at once), so that a step costs one round
//! trip. A step need not turn on its exact middle: any rank of the range's middle quarter
//! splits it well enough, so it turns on the read rank near the middle whose name is cheapest
//! to have. A name is expanded from its block of 256 entries, and a
//! block is read only as far as that entry (its first entries are walked from the block's
//! marker: the prefix read is the block's mean entry length times the entries needed, half
//! again); a rank whose block, or enough of it, is decoded costs nothing, and one early in
//! its block little. On Debian's 6.1, ~20 names cost 0.17 MB this way against 0.4 MB when every
//! block visited was read whole. After the search every name's run of equal names is read to
//! its end, to prefer a global definition, then the first in table order, as the kernel's own
//! lookup does.
//!
//! Invariant: a name found is an entry whose expanded name equals it, walked from its block's
//! marker. The table is trusted only as far as what was read of it agrees with itself: an
//! index past the table, or two ranks read whose names are out of order, returns `None` (the
//! caller scans instead); a block read whole is checked against its next marker, a prefix
//! only as far as its entries walk. The number of steps is bounded by `log2(n) / log2(8/5) + 1`
//! plus the longest run of equal names.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use emulator::mem::{PhysAddr, PhysMem};

use super::stream::{block_count, block_span, Block};
use super::{corrupt, Kallsyms, KallsymsError};
use crate::introspect::physread::read_many;

/// A range at most this wide is read whole.
const NARROW: u32 = 24;
/// Ranks of a run of equal names read per step (the first is the one the search ended on).
const RUN_STEP: u32 = 2;
/// Ranks on each side of a step's middle that are read with it: the step turns on whichever
/// of them (within the middle quarter of its range) has the name that is cheapest to read.
const WINDOW: u32 = 16;
/// Bytes read past the estimated end of the entries a block's prefix must hold.
const PREFIX_SLACK: u64 = 32;

/// Entry indices by rank: a search reads thousands of ranks (the windows of every name's next
/// levels), so the map hashes a rank with one multiplication rather than SipHash (ranks come
/// from our own arithmetic, not from the guest).
pub(super) type RankMap = HashMap<u32, u32, std::hash::BuildHasherDefault<RankHasher>>;

/// Fibonacci hashing of a `u32` key (see [`RankMap`]).
#[derive(Default)]
pub(super) struct RankHasher(u64);

impl std::hash::Hasher for RankHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = u64::from(v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The indices of `names` (see the module doc), or `None` if the table contradicted itself.
pub(super) fn by_name(k: &Kallsyms, mem: &dyn PhysMem, seqs: PhysAddr, names: &[&str]) -> Result<Option<Vec<Option<u32>>>, KallsymsError> {
    let n = k.location.num_syms;
    let mut index = k.ranks.lock().unwrap_or_else(|p| p.into_inner());
    let mut prefixes = k.prefixes.lock().unwrap_or_else(|p| p.into_inner());
    // Entries decodable from the start of each block: every one of a block decoded whole.
    let mut covered: HashMap<u32, usize> = k.cache().keys().map(|&b| (b, usize::MAX)).collect();
    covered.extend(prefixes.iter().map(|(&b, p)| (b, p.entries())));
    let mut s = Search { k, mem, seqs, n, index: &mut index, prefixes: &mut prefixes, covered, seen: Vec::new(), buf: Vec::with_capacity(256) };
    let wants: Vec<&[u8]> = names.iter().map(|w| w.as_bytes()).collect();
    // First rank whose name is not below the one wanted.
    let mut range: Vec<(u32, u32)> = vec![(0, n); names.len()];
    // The ranks around the first middle; from then on each step's batch reads, beside the
    // names it compares, the ranks around the middles of both halves its range may become.
    let mut ahead = Vec::new();
    window(0, n, n, &mut ahead);
    if !s.read_ranks(&ahead)? {
        return Ok(None);
    }
    loop {
        let open: Vec<usize> = (0..names.len()).filter(|&i| range[i].0 < range[i].1).collect();
        if open.is_empty() {
            break;
        }
        let pivots: Vec<u32> = open.iter().map(|&i| s.pivot(range[i])).collect();
        let mut ahead = Vec::new();
        for (&i, &pivot) in open.iter().zip(&pivots) {
            let (lo, hi) = range[i];
            for (a, b) in [(lo, pivot), (pivot + 1, hi)] {
                if a < b && !s.index.contains_key(&((a + b) / 2)) {
                    window(a, b, n, &mut ahead);
                }
            }
        }
        if !s.fetch(&pivots, &ahead)? {
            return Ok(None);
        }
        for (&i, &pivot) in open.iter().zip(&pivots) {
            let Some(below) = s.with_name(pivot, |name| name < wants[i]) else { return Ok(None) };
            range[i] = if below { (pivot + 1, range[i].1) } else { (range[i].0, pivot) };
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
        if !s.read_ranks(&step)? || !s.fetch(&step, &[])? {
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

/// The ranks read for a step of `[lo, hi)` (of `n`): those within [`reach`] of its middle, or
/// the whole range when it is at most [`NARROW`] wide (with the [`RUN_STEP`] ranks after it,
/// where the run of equal names the search ends on is read).
fn window(lo: u32, hi: u32, n: u32, out: &mut Vec<u32>) {
    if hi - lo <= NARROW {
        out.extend(lo..(hi + RUN_STEP).min(n));
    } else {
        let mid = (lo + hi) / 2;
        out.extend(mid - reach(lo, hi)..=mid + reach(lo, hi));
    }
}

/// How far from the middle of `[lo, hi)` a step may turn: [`WINDOW`] ranks, and no further
/// than the range's middle quarter.
fn reach(lo: u32, hi: u32) -> u32 {
    WINDOW.min((hi - lo) / 8)
}

struct Search<'a> {
    k: &'a Kallsyms,
    mem: &'a dyn PhysMem,
    seqs: PhysAddr,
    n: u32,
    /// Entry index by rank, as read (kept by the [`Kallsyms`] for later searches).
    index: &'a mut RankMap,
    /// Blocks read in part, by number (kept by the [`Kallsyms`] too).
    prefixes: &'a mut HashMap<u32, Arc<Block>>,
    /// How many entries of each block, from its start, are decoded (whole or in part).
    covered: HashMap<u32, usize>,
    /// Ranks whose names were compared, with the names (for [`Search::in_order`]).
    seen: Vec<(u32, Vec<u8>)>,
    buf: Vec<u8>,
}

impl Search<'_> {
    /// Read the entry indices of `ranks` not known yet (adjacent ones in one read); false if
    /// one is past the table.
    fn read_ranks(&mut self, ranks: &[u32]) -> Result<bool, KallsymsError> {
        self.fetch(&[], ranks)
    }

    /// The runs of adjacent ranks among `ranks` whose entry indices are not known yet.
    fn rank_runs(&self, ranks: &[u32]) -> Vec<(u32, u32)> {
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
        runs
    }

    /// Where the entries of `runs` are in `kallsyms_seqs_of_names`.
    fn rank_regions(&self, runs: &[(u32, u32)]) -> Vec<(PhysAddr, usize)> {
        runs.iter().map(|&(a, b)| (PhysAddr(self.seqs.0 + 3 * u64::from(a)), 3 * (b - a) as usize)).collect()
    }

    /// Record the entry indices read for `runs`; false if one is past the table.
    fn take_ranks(&mut self, runs: &[(u32, u32)], raw: &[Vec<u8>]) -> bool {
        for (&(a, _), raw) in runs.iter().zip(raw) {
            for (j, e) in raw.chunks_exact(3).enumerate() {
                let idx = u32::from(e[0]) << 16 | u32::from(e[1]) << 8 | u32::from(e[2]);
                if idx >= self.n {
                    return false;
                }
                self.index.insert(a + j as u32, idx);
            }
        }
        true
    }

    /// The rank a step of `[lo, hi)` turns on: of the ranks read within `WINDOW` of the middle
    /// and inside the range's middle quarter, the one whose name costs the fewest bytes to read
    /// (nothing if its block, or enough of it, is decoded), the nearest the middle among equals.
    fn pivot(&self, (lo, hi): (u32, u32)) -> u32 {
        let mid = (lo + hi) / 2;
        let reach = reach(lo, hi);
        // Outward from the middle, lower rank first: the first free one wins.
        let mut best: Option<(u64, u32)> = None;
        for r in (0..=reach).flat_map(|d| [mid - d, mid + d].into_iter().take(if d == 0 { 1 } else { 2 })) {
            let Some(&idx) = self.index.get(&r) else { continue };
            let c = self.cost(idx);
            if c == 0 {
                return r;
            }
            if best.is_none_or(|(b, _)| c < b) {
                best = Some((c, r));
            }
        }
        best.map_or(mid, |(_, r)| r)
    }

    /// The entries of `idx`'s block decoded so far, if they reach it.
    fn entry_block(&self, idx: u32) -> Option<Arc<Block>> {
        let j = (idx % 256) as usize;
        self.k.block_of(idx).or_else(|| self.prefixes.get(&(idx / 256)).filter(|p| p.entries() > j).cloned())
    }

    /// Whether entry `idx` can be expanded from what is decoded of its block.
    fn decoded(&self, idx: u32) -> bool {
        self.covered.get(&(idx / 256)).is_some_and(|&c| c > (idx % 256) as usize)
    }

    /// Bytes to read for the name of entry `idx`: none if decoded, else an estimate of the
    /// block's prefix up to it ([`Search::prefix_len`]).
    fn cost(&self, idx: u32) -> u64 {
        if self.decoded(idx) {
            return 0;
        }
        self.prefix_len(idx / 256, (idx % 256) as usize + 1).map_or(u64::MAX, |(_, len, _)| len as u64)
    }

    /// Where block `b` starts, the bytes to read for its first `count` entries (the block's own
    /// mean entry length, half again, plus [`PREFIX_SLACK`]; at most the whole block) and the
    /// whole block's length.
    fn prefix_len(&self, b: u32, count: usize) -> Result<(PhysAddr, usize, usize), KallsymsError> {
        let (at, whole) = block_span(self.k.location.names, self.k.names_len, &self.k.marks, b)?;
        let entries = block_count(self.n, b).max(1) as u64;
        let guess = (count as u64).saturating_mul(whole as u64).saturating_mul(3) / (2 * entries) + PREFIX_SLACK;
        Ok((at, guess.min(whole as u64) as usize, whole))
    }

    /// Make the names of `ranks` (whose indices are read) expandable: each block's prefix
    /// holding the entries wanted of it, read in one batch with the entry indices of `ahead`
    /// (false if one is past the table); a block whose prefix fell short of its estimate is
    /// read whole (checked against its marker), in a second batch.
    fn fetch(&mut self, ranks: &[u32], ahead: &[u32]) -> Result<bool, KallsymsError> {
        let mut need: BTreeMap<u32, usize> = BTreeMap::new();
        for idx in ranks.iter().filter_map(|r| self.index.get(r).copied()) {
            if !self.decoded(idx) {
                let c = need.entry(idx / 256).or_default();
                *c = (*c).max((idx % 256) as usize + 1);
            }
        }
        let runs = self.rank_runs(ahead);
        if need.is_empty() && runs.is_empty() {
            return Ok(true);
        }
        let mut plan = Vec::with_capacity(need.len());
        for (&b, &count) in &need {
            plan.push((b, count, self.prefix_len(b, count)?));
        }
        let mut regions = self.rank_regions(&runs);
        regions.extend(plan.iter().map(|&(_, _, (at, len, _))| (at, len)));
        let mut reads = read_many(self.mem, &regions).into_iter();
        let raw: Vec<_> = reads.by_ref().take(runs.len()).collect::<Result<_, _>>()?;
        if !self.take_ranks(&runs, &raw) {
            return Ok(false);
        }
        let mut short = Vec::new();
        for (&(b, count, (at, len, whole)), read) in plan.iter().zip(reads) {
            let bytes = read?;
            if len == whole {
                let block = Block::parse(bytes, block_count(self.n, b))
                    .ok_or_else(|| corrupt(at, format!("block {b} of names does not walk to its marker")))?;
                self.k.adopt(b, block);
                self.covered.insert(b, usize::MAX);
                continue;
            }
            match Block::prefix(bytes, count) {
                Some(p) if p.entries() >= count => {
                    self.covered.insert(b, p.entries());
                    self.prefixes.insert(b, Arc::new(p));
                }
                _ => short.push(b),
            }
        }
        self.k.decode(self.mem, &short)?;
        self.covered.extend(short.into_iter().map(|b| (b, usize::MAX)));
        Ok(true)
    }

    /// `f` of the name (without its type letter) at `rank`, whose entry is decoded; `None` if
    /// the rank was not read.
    fn with_name<T>(&mut self, rank: u32, f: impl FnOnce(&[u8]) -> T) -> Option<T> {
        self.with_name_kind(rank, f).map(|(t, _)| t)
    }

    /// As [`Search::with_name`], with whether the symbol is global (upper-case type letter).
    fn with_name_kind<T>(&mut self, rank: u32, f: impl FnOnce(&[u8]) -> T) -> Option<(T, bool)> {
        let idx = *self.index.get(&rank)?;
        let block = self.entry_block(idx)?;
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
    fn a_window_around_the_middle_or_a_narrow_range_whole() {
        let mut out = Vec::new();
        window(0, 100, 1000, &mut out);
        assert_eq!(out, (38..63).collect::<Vec<u32>>(), "the middle quarter");
        out.clear();
        window(0, 1000, 1000, &mut out);
        assert_eq!(out, (484..517).collect::<Vec<u32>>(), "WINDOW ranks each side");
        out.clear();
        window(10, 30, 1000, &mut out);
        assert_eq!(out, (10..32).collect::<Vec<u32>>(), "with the ranks a run of equal names may reach");
        out.clear();
        window(990, 1000, 1000, &mut out);
        assert_eq!(out, (990..1000).collect::<Vec<u32>>());
    }
}
