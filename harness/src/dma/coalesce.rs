//! Reads of one batch that lie close together go out as one.
//!
//! A request costs the completer and the requester about the same whatever its size up to the
//! MRRS (a microsecond each on the emulator; the adapter's rate in requests per second is flat
//! from 1 to 256 bytes), and introspection asks many small reads in the same pages: a task's
//! fields, neighbouring list nodes, a table's entries. So a batch's reads are sorted by address
//! and grouped greedily into spans: the next read joins the span it overlaps, or one that ends
//! at most [`MAX_GAP`] bytes before it starts when the joined span needs fewer requests
//! ([`super::request::split`]) than the span and the read apart. The span is read once and
//! each read takes its bytes from it.
//!
//! Invariant: every read lies inside exactly one span, with the bytes it would have had alone
//! (a span holds the caller's bytes at their own addresses); a span never asks more requests
//! than its reads apart; the bytes between joined reads are fewer than [`MAX_GAP`] and lie in
//! the pages of the reads on either side (a gap shorter than a page touches no third page), so
//! a span reads no memory of another kind than its reads.

use std::ops::Range;

use super::request::{split, CUT_MPS};

/// Most bytes read between two joined reads (about what one more request costs in wire time).
pub const MAX_GAP: u64 = 256;

/// Reads joined into one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub addr: u64,
    pub len: usize,
    /// Its reads: a range of [`Plan::order`].
    pub members: Range<usize>,
}

/// How a batch's reads are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The reads' indices by address (empty reads and reads that wrap the address space left
    /// alone, each its own span).
    pub order: Vec<usize>,
    pub spans: Vec<Span>,
}

impl Plan {
    /// Whether no two reads were joined.
    pub fn is_identity(&self) -> bool {
        self.spans.iter().all(|s| s.members.len() == 1)
    }

    /// The reads of `span`.
    pub fn members(&self, span: &Span) -> &[usize] {
        &self.order[span.members.clone()]
    }
}

/// Requests `len` bytes at `addr` take at MRRS `mrrs`.
fn requests(addr: u64, len: u64, mrrs: u32) -> usize {
    split(addr, len as usize, mrrs, Some(CUT_MPS)).count()
}

/// Requests of the span `[s, new_end)`, that of `[s, e)` taking `n`: requests never cross a
/// page and start afresh at each page boundary, so only the span's last page is counted again
/// (the cost of a join does not grow with the span).
fn extended(s: u64, e: u64, n: usize, new_end: u64, mrrs: u32) -> usize {
    let last_page = (e.saturating_sub(1) & !0xfff).max(s);
    (n + requests(last_page, new_end - last_page, mrrs)).saturating_sub(requests(last_page, e - last_page, mrrs))
}

/// The spans of reads `(addr, len)` (see the module doc).
pub fn plan(reads: &[(u64, usize)], mrrs: u32) -> Plan {
    let mut order: Vec<usize> = (0..reads.len()).collect();
    let joinable = |i: usize| reads[i].1 > 0 && reads[i].0.checked_add(reads[i].1 as u64).is_some();
    order.sort_by_key(|&i| (!joinable(i), reads[i].0, reads[i].1));
    let mut spans: Vec<Span> = Vec::with_capacity(reads.len());
    // The open span: start, end, requests.
    let mut open: Option<(u64, u64, usize)> = None;
    for (k, &i) in order.iter().enumerate() {
        let (addr, len) = (reads[i].0, reads[i].1 as u64);
        if !joinable(i) {
            spans.push(Span { addr, len: reads[i].1, members: k..k + 1 });
            open = None;
            continue;
        }
        let end = addr + len;
        let alone = requests(addr, len, mrrs);
        if let (Some((s, e, n)), Some(last)) = (open, spans.last_mut()) {
            let joined_end = e.max(end);
            // The gap first: counting a far read's joined requests would walk the distance.
            let joined = (addr <= e.saturating_add(MAX_GAP)).then(|| extended(s, e, n, joined_end, mrrs));
            if let Some(joined) = joined.filter(|&j| addr < e || j < n + alone) {
                last.len = (joined_end - s) as usize;
                last.members.end = k + 1;
                open = Some((s, joined_end, joined));
                continue;
            }
        }
        spans.push(Span { addr, len: reads[i].1, members: k..k + 1 });
        open = Some((addr, end, alone));
    }
    Plan { order, spans }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn spans(reads: &[(u64, usize)]) -> Vec<(u64, usize, Vec<usize>)> {
        let p = plan(reads, 512);
        p.spans.iter().map(|s| (s.addr, s.len, p.members(s).to_vec())).collect()
    }

    /// Counting a span's requests page by page gives what counting it whole does.
    #[test]
    fn extending_counts_as_counting_whole() {
        for (s, e, new_end) in [(0x1010u64, 0x1200u64, 0x1300u64), (0x1010, 0x3204, 0x3ffc), (0x1ff8, 0x2000, 0x2400), (0x1000, 0x1001, 0x5000), (0x1068, 0x1268, 0x1468)] {
            let n = requests(s, e - s, 512);
            assert_eq!(extended(s, e, n, new_end, 512), requests(s, new_end - s, 512), "{s:#x} {e:#x} {new_end:#x}");
        }
    }

    /// Planning costs per read, not per byte between reads.
    #[test]
    fn far_reads_are_planned_at_once() {
        let reads: Vec<(u64, usize)> = (0..1000u64).map(|i| (i << 40, 8)).collect();
        assert_eq!(plan(&reads, 512).spans.len(), 1000);
    }

    #[test]
    fn fields_of_one_record_become_one_request() {
        // A task's fields: 24 bytes, then 888 bytes 100 bytes on, in one page.
        assert_eq!(spans(&[(0x1064, 888), (0x1000, 24)]), [(0x1000, 0x64 + 888, vec![1, 0])]);
    }

    #[rstest]
    #[case::far_apart(&[(0x1000, 8), (0x1200, 8)], 2)]
    #[case::no_request_saved(&[(0x1000, 512), (0x1200, 512)], 2)]
    #[case::across_a_page_each_alone(&[(0x1ff0, 8), (0x2008, 8)], 2)]
    #[case::overlapping(&[(0x1000, 64), (0x1020, 64), (0x1000, 64)], 1)]
    #[case::empty_and_wrapping_alone(&[(0x1000, 0), (u64::MAX - 3, 8), (0x1000, 8)], 3)]
    #[case::a_run_of_small_reads(&[(0x1000, 8), (0x1010, 8), (0x1020, 8), (0x1030, 8)], 1)]
    fn spans_form_only_where_they_save(#[case] reads: &[(u64, usize)], #[case] n: usize) {
        let p = plan(reads, 512);
        assert_eq!(p.spans.len(), n, "{:x?}", p.spans);
        // Every read inside exactly one span; no span costs more than its reads apart.
        let mut seen = vec![0; reads.len()];
        for s in &p.spans {
            for &i in p.members(s) {
                seen[i] += 1;
                let (a, l) = reads[i];
                assert!(a >= s.addr && a - s.addr + l as u64 <= s.len as u64 || p.members(s).len() == 1);
            }
            if p.members(s).len() > 1 {
                let apart: usize = p.members(s).iter().map(|&i| requests(reads[i].0, reads[i].1 as u64, 512)).sum();
                assert!(requests(s.addr, s.len as u64, 512) < apart);
            }
        }
        assert!(seen.iter().all(|&c| c == 1));
    }
}
