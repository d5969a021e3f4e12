//! One Memory Read on the wire: how a read is split into requests, and how the completions of
//! one request are checked and put back together.
//!
//! Splitting: a request never crosses a 4 KiB boundary (PCIe forbids it) and asks for at most
//! the max read request size.
//!
//! Reassembly: a completion belongs to the request whose tag it carries (the requester checks
//! tag, requester and completer IDs), and must fit it: Byte Count in `1..=len` (so it names
//! the offset `len - BC` of its first byte); Lower Address equal to the low 7 bits of that
//! byte's address; data length from the PCIe rule ([`Completion::data_range`]) inside the
//! request and present in the datagram; a completion that does not finish the request ends on
//! a Read Completion Boundary ([`RCB`]), the one that does carries exactly the DWs its Byte
//! Count needs; and none of its DWs already received. Completions may arrive in any order
//! (UDP reorders). A completion all of whose DWs were received is a [`Verdict::Repeat`], for
//! the requester to compare with the bytes it took. What is still missing after a timeout is
//! [`Reassembly::missing`], so only that is asked again.
//!
//! Invariant: [`Reassembly::accept`] never panics, never reports data outside `0..len`, and
//! reports each byte of the request at most once; the request is done when every byte was;
//! `missing` is exactly the bytes not reported.

use core::ops::Range;
use emulator::wire::tlp::{Completion, CplStatus, RCB};

/// The adapter's Max Payload Size: the completion boundaries a read's requests are cut on.
pub const CUT_MPS: u64 = 256;

/// Split `len` bytes at `addr` into requests `(addr, len)` that stay inside one 4 KiB page
/// and ask for at most `mrrs` bytes. With `grid` (an MPS), a request cut short by `mrrs` ends
/// where a completer of that MPS would end one of its completions anyway (its first ends at the
/// RCB boundary at most MPS past the request's first DW, the others MPS apart): cut at
/// `addr + mrrs` instead, each request of a misaligned read would end in a short completion of
/// its own (512 bytes at 0x..68: 216 + 256 + 40), a third more datagrams on long reads. The
/// boundaries of MPS 256 are boundaries of MPS 128 and 64 too.
pub fn split(addr: u64, len: usize, mrrs: u32, grid: Option<u64>) -> impl Iterator<Item = (u64, u32)> {
    let mrrs = u64::from(mrrs.clamp(4, 4096));
    let end = addr.saturating_add(len as u64);
    let mut cur = addr;
    std::iter::from_fn(move || {
        if cur >= end {
            return None;
        }
        let page_end = (cur | 0xfff).saturating_add(1);
        let mut n = (end - cur).min(mrrs).min(page_end - cur);
        let first = grid.and_then(|mps| (cur & !3).checked_add(mps)).map(|f| f & !(RCB - 1));
        if let (Some(mps), Some(first)) = (grid, first) {
            if n == mrrs && cur + n < end && cur + n > first {
                n = first + (cur + n - first) / mps * mps - cur;
            }
        }
        let piece = (cur, n as u32);
        cur += n;
        Some(piece)
    })
}

/// Why a completion was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Byte Count, Lower Address or length do not fit this request (a stale completion of an
    /// earlier request on the same tag, or a broken completer). The requester also uses it for
    /// a requester or completer ID that is not ours, or a tag with no request outstanding.
    Mismatch,
    /// Some of its bytes were already received, not all (a copy cut differently: stale).
    Duplicate,
    /// The datagram holds fewer payload bytes than the header declares.
    Truncated,
}

/// What a completion means for its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Copy `payload[src]` to offset `offset` of the request; `done` if it was the last part.
    Data { offset: usize, src: Range<usize>, done: bool },
    /// Every byte of it was received before: `payload[src]` should equal what offset
    /// `offset` of the request holds (a copy of the same answer), or one of the two copies is
    /// not this request's (see [`super::tags`]).
    Repeat { offset: usize, src: Range<usize> },
    /// The completer answered with an error status.
    Failed(CplStatus),
    Reject(Reject),
}

/// DWs a request of at most 4096 bytes can touch: 1024 + 1 for an unaligned start.
const MAX_DW: usize = 1025;

/// The completions received so far for one request.
#[derive(Debug, Clone)]
pub struct Reassembly {
    addr: u64,
    len: u32,
    got: u32,
    seen: [u64; MAX_DW.div_ceil(64)],
}

impl Reassembly {
    /// A request for `len` (1..=4096) bytes at `addr`.
    pub fn new(addr: u64, len: u32) -> Reassembly {
        Reassembly {
            addr,
            len: len.clamp(1, 4096),
            got: 0,
            seen: [0; MAX_DW.div_ceil(64)],
        }
    }

    pub fn received(&self) -> u32 {
        self.got
    }

    /// The bits of `dws` in each word of the DW bitmap: (word index, mask).
    fn masks(dws: Range<usize>) -> impl Iterator<Item = (usize, u64)> {
        let (lo, hi) = (dws.start, dws.end);
        (lo / 64..hi.div_ceil(64)).map(move |w| {
            let from = lo.max(w * 64) - w * 64;
            let to = hi.min(w * 64 + 64) - w * 64; // 1..=64
            let upto = if to == 64 { u64::MAX } else { (1u64 << to) - 1 };
            (w, upto & !((1u64 << from) - 1))
        })
    }

    fn any_seen(&self, dws: Range<usize>) -> bool {
        Self::masks(dws).any(|(w, m)| self.seen[w] & m != 0)
    }

    fn all_seen(&self, dws: Range<usize>) -> bool {
        Self::masks(dws).all(|(w, m)| self.seen[w] & m == m)
    }

    fn mark_seen(&mut self, dws: Range<usize>) {
        for (w, m) in Self::masks(dws) {
            self.seen[w] |= m;
        }
    }

    /// Offset in the request of a completion's first byte, if its Byte Count and Lower
    /// Address fit.
    fn offset_of(&self, cpl: &Completion) -> Option<u32> {
        let bc = u32::from(cpl.byte_count);
        let offset = self.len.checked_sub(bc)?;
        let first = self.addr.wrapping_add(u64::from(offset));
        (bc >= 1 && u64::from(cpl.lower_address) == first & 0x7f).then_some(offset)
    }

    /// Judge `cpl`, whose datagram carried `payload_present` bytes after the header.
    pub fn accept(&mut self, cpl: &Completion, payload_present: usize) -> Verdict {
        let Some(offset) = self.offset_of(cpl) else {
            return Verdict::Reject(Reject::Mismatch);
        };
        if cpl.status != CplStatus::SC {
            return Verdict::Failed(cpl.status);
        }
        if !cpl.has_data() {
            return Verdict::Reject(Reject::Mismatch);
        }
        let src = cpl.data_range();
        let n = src.len() as u32;
        if n == 0 || offset + n > self.len {
            return Verdict::Reject(Reject::Mismatch);
        }
        let first = self.addr + u64::from(offset);
        let fits_boundary = if offset + n == self.len {
            // the last one: exactly the DWs its bytes need
            usize::from(cpl.length_dw) == (src.start + n as usize).div_ceil(4)
        } else {
            (first + u64::from(n)).is_multiple_of(RCB)
        };
        if !fits_boundary {
            return Verdict::Reject(Reject::Mismatch);
        }
        if src.end > payload_present {
            return Verdict::Reject(Reject::Truncated);
        }
        // DWs covered, relative to the request's first DW
        let base_dw = self.addr & !3;
        let dws = ((first - base_dw) / 4) as usize..((first + u64::from(n) - 1 - base_dw) / 4 + 1) as usize;
        if dws.end > MAX_DW {
            return Verdict::Reject(Reject::Mismatch);
        }
        if self.all_seen(dws.clone()) {
            return Verdict::Repeat { offset: offset as usize, src };
        }
        if self.any_seen(dws.clone()) {
            return Verdict::Reject(Reject::Duplicate);
        }
        self.mark_seen(dws);
        self.got += n;
        Verdict::Data {
            offset: offset as usize,
            src,
            done: self.got == self.len,
        }
    }
}

impl Reassembly {
    /// The byte ranges `(offset, len)` of the request not received yet, ascending and merged.
    pub fn missing(&self) -> Vec<(u32, u32)> {
        let mut out: Vec<(u32, u32)> = Vec::new();
        let base_dw = self.addr & !3;
        let end = self.addr + u64::from(self.len);
        let dws = ((end - 1 - base_dw) / 4 + 1) as usize;
        for d in 0..dws {
            if self.seen[d / 64] & (1 << (d % 64)) != 0 {
                continue;
            }
            let lo = (base_dw + 4 * d as u64).max(self.addr);
            let hi = (base_dw + 4 * d as u64 + 4).min(end);
            let (off, n) = ((lo - self.addr) as u32, (hi - lo) as u32);
            match out.last_mut() {
                Some((o, l)) if *o + *l == off => *l += n,
                _ => out.push((off, n)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use emulator::wire::tlp::{completion_chunks, DeviceId, MemRequest};

    #[test]
    fn split_respects_pages_and_mrrs() {
        let v: Vec<_> = split(0x0ffe, 0x1010, 512, None).collect();
        assert_eq!(v[0], (0x0ffe, 2));
        assert_eq!(v[1], (0x1000, 512));
        assert_eq!(v.last(), Some(&(0x2000, 14)));
        assert_eq!(v.iter().map(|p| p.1 as usize).sum::<usize>(), 0x1010);
        assert!(v.iter().all(|&(a, n)| a >> 12 == (a + u64::from(n) - 1) >> 12));
        assert_eq!(split(0x10, 0, 512, None).count(), 0);
        assert_eq!(split(u64::MAX - 2, 8, 512, Some(CUT_MPS)).collect::<Vec<_>>(), vec![(u64::MAX - 2, 2)]);
    }

    /// Cut on the completion grid: never more datagrams (requests + completions at MPS 64,
    /// 128, 256) than cutting every `mrrs` bytes, fewer on misaligned reads longer than `mrrs`;
    /// pieces stay contiguous, within `mrrs` and within a page.
    #[test]
    fn split_cuts_where_completions_end() {
        let old = |addr: u64, len: usize, mrrs: u32| -> Vec<(u64, u32)> { split(addr, len, mrrs, None).collect() };
        let datagrams = |v: &[(u64, u32)], mps: u32| v.len() + v.iter().map(|&(a, n)| completion_chunks(a, n, mps).count()).sum::<usize>();
        let mut fewer = 0;
        for addr in (0x1000u64..0x1200).step_by(4) {
            for len in [4usize, 100, 512, 513, 688, 888, 1024, 3000, 8192] {
                let v: Vec<_> = split(addr, len, 512, Some(CUT_MPS)).collect();
                assert_eq!(v.iter().map(|p| p.1 as usize).sum::<usize>(), len);
                assert!(v.windows(2).all(|w| w[0].0 + u64::from(w[0].1) == w[1].0));
                assert!(v.iter().all(|&(a, n)| n <= 512 && a >> 12 == (a + u64::from(n) - 1) >> 12));
                let o = old(addr, len, 512);
                for mps in [64, 128, 256] {
                    assert!(datagrams(&v, mps) <= datagrams(&o, mps), "{addr:#x}+{len} at MPS {mps}: {v:x?} vs {o:x?}");
                }
                fewer += usize::from(datagrams(&v, 256) < datagrams(&o, 256));
            }
        }
        assert!(fewer > 0);
        // 888 bytes at 0x1068 (a task record): 2 requests and 4 completions, not 5.
        assert_eq!(split(0x1068, 888, 512, Some(CUT_MPS)).collect::<Vec<_>>(), vec![(0x1068, 472), (0x1240, 416)]);
    }

    fn cpls(addr: u64, len: u32, mps: u32) -> Vec<Completion> {
        let req = MemRequest::new(DeviceId(0x1a00), 1, addr, len).unwrap();
        completion_chunks(addr, len, mps)
            .map(|c| Completion::for_chunk(&req, DeviceId(0), &c))
            .collect()
    }

    #[test]
    fn in_any_order_each_byte_once() {
        let (addr, len) = (0x1003u64, 1000u32);
        let mut cs = cpls(addr, len, 128);
        cs.reverse();
        let mut r = Reassembly::new(addr, len);
        let mut covered = vec![false; len as usize];
        for (i, c) in cs.iter().enumerate() {
            let Verdict::Data { offset, src, done } = r.accept(c, 4096) else { panic!() };
            for b in &mut covered[offset..offset + src.len()] {
                assert!(!*b);
                *b = true;
            }
            assert_eq!(done, i + 1 == cs.len());
            // the same completion again is a repeat of the same bytes
            assert_eq!(r.accept(c, 4096), Verdict::Repeat { offset, src: c.data_range() });
        }
        assert!(covered.iter().all(|&b| b));
    }

    #[test]
    fn stale_completions_that_do_not_fit_are_rejected() {
        // a completion of a 512-byte read at 0x2000 offered to a 300-byte read at 0x1003
        let mut r = Reassembly::new(0x1003, 300);
        for c in cpls(0x2000, 512, 256) {
            assert_eq!(r.accept(&c, 4096), Verdict::Reject(Reject::Mismatch));
        }
        // same byte count, wrong lower address
        let mut c = cpls(0x1003, 300, 256)[0];
        c.lower_address = 0x04;
        assert_eq!(r.accept(&c, 4096), Verdict::Reject(Reject::Mismatch));
        // cut short by the network
        let c = cpls(0x1003, 300, 256)[0];
        assert_eq!(r.accept(&c, 100), Verdict::Reject(Reject::Truncated));
        assert_eq!(r.received(), 0);
    }

    #[rstest::rstest]
    #[case::aligned_4k_mps_256(0x3000, 4096, 256, &[7])]
    #[case::unaligned_mps_128(0x1003, 1000, 128, &[0, 3, 8])]
    #[case::last_only(0x2ffe, 700, 256, &[2])]
    #[case::all_lost(0x10, 512, 64, &[0, 1, 2, 3, 4, 5, 6, 7, 8])]
    fn missing_is_what_was_lost(#[case] addr: u64, #[case] len: u32, #[case] mps: u32, #[case] lost: &[usize]) {
        let cs = cpls(addr, len, mps);
        let mut r = Reassembly::new(addr, len);
        let mut want = Vec::new();
        for (i, c) in cs.iter().enumerate() {
            let first = (u64::from(len) - u64::from(c.byte_count)) as u32;
            let n = c.data_range().len() as u32;
            if lost.contains(&i) {
                match want.last_mut() {
                    Some((o, l)) if *o + *l == first => *l += n,
                    _ => want.push((first, n)),
                }
            } else {
                assert!(matches!(r.accept(c, 4096), Verdict::Data { .. }));
            }
        }
        assert_eq!(r.missing(), want);
        // asking for exactly the missing ranges completes the request
        for (off, n) in r.missing() {
            for c in cpls(addr + u64::from(off), n, mps) {
                let Verdict::Data { offset, src, done: _ } = Reassembly::new(addr + u64::from(off), n).accept(&c, 4096) else { panic!() };
                assert!(offset + src.len() <= n as usize);
            }
        }
        assert_eq!(Reassembly::new(addr, len).missing(), vec![(0, len)]);
    }

    #[test]
    fn completions_that_break_the_boundary_rules_are_rejected() {
        // a 512-byte read at 0x1000 in two 256-byte CplDs
        let good = cpls(0x1000, 512, 256);
        // the first one cut short: 63 DWs, so it would end off the RCB
        let mut short = good[0];
        short.length_dw -= 1;
        assert_eq!(Reassembly::new(0x1000, 512).accept(&short, 4096), Verdict::Reject(Reject::Mismatch));
        // the last one padded with a DW more than its byte count needs
        let mut padded = good[1];
        padded.length_dw += 1;
        assert_eq!(Reassembly::new(0x1000, 512).accept(&padded, 4096), Verdict::Reject(Reject::Mismatch));
        // byte count short by 4: the lower address no longer fits
        let mut bc = good[0];
        bc.byte_count -= 4;
        assert_eq!(Reassembly::new(0x1000, 512).accept(&bc, 4096), Verdict::Reject(Reject::Mismatch));
        let mut r = Reassembly::new(0x1000, 512);
        assert!(matches!(r.accept(&good[1], 4096), Verdict::Data { done: false, .. }));
        assert!(matches!(r.accept(&good[0], 4096), Verdict::Data { done: true, .. }));
        assert!(r.missing().is_empty());
    }

    #[test]
    fn bitmap_masks_cover_exactly_the_range() {
        for lo in [0usize, 1, 63, 64, 65, 500] {
            for len in [1usize, 2, 63, 64, 65, 128, 500] {
                let hi = (lo + len).min(MAX_DW);
                let mut bits = vec![false; MAX_DW];
                for (w, m) in Reassembly::masks(lo..hi) {
                    for b in 0..64 {
                        if m & (1 << b) != 0 {
                            bits[w * 64 + b] = true;
                        }
                    }
                }
                let want: Vec<bool> = (0..MAX_DW).map(|d| (lo..hi).contains(&d)).collect();
                assert_eq!(bits, want, "{lo}..{hi}");
            }
        }
    }

    #[test]
    fn error_status_fails_the_request() {
        let req = MemRequest::new(DeviceId(0x1a00), 1, 0x7000, 64).unwrap();
        let ur = Completion::error(&req, DeviceId(0), CplStatus::UR);
        assert_eq!(Reassembly::new(0x7000, 64).accept(&ur, 0), Verdict::Failed(CplStatus::UR));
        // an error completion for some other request's bytes is stale, not a failure
        assert_eq!(Reassembly::new(0x7004, 64).accept(&ur, 0), Verdict::Reject(Reject::Mismatch));
    }
}
