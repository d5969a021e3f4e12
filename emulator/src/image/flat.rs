//! makedumpfile's "flattened" format: a stream of `(offset, size)` segments that together
//! describe another file (what `makedumpfile -F` and QEMU's `dump-guest-memory` kdump formats
//! write to a pipe, and what `makedumpfile -R` rearranges into a normal file).
//!
//! Layout: a 4096-byte header block starting with the 16-byte signature `"makedumpfile"`,
//! then big-endian `type` (1) and `version` (1); from offset 4096 a sequence of big-endian
//! `i64 offset, i64 size` headers each followed by `size` bytes destined for `offset`;
//! the sequence ends with `offset = size = -1`.
//!
//! Invariant: the index is built once, in one pass bounded by the file size (each segment
//! consumes at least 16 bytes) and an explicit segment limit. Overlapping segments resolve as
//! `makedumpfile -R` would: the later write wins. Bytes of the described file that no segment
//! covers read as zero (a hole in the rearranged file).

use std::collections::BinaryHeap;

use super::mapped::Mapped;
use super::{FileOffset, ParseError};

/// The 16-byte signature field starts with this (the rest is NUL padding).
pub(crate) const SIGNATURE: &[u8] = b"makedumpfile\0";
const HEADER_BLOCK: u64 = 4096;
const DATA_HEADER: u64 = 16;
/// Upper bound on segments (QEMU writes ~16 KiB per segment; this allows ~1 TiB of data).
const MAX_SEGMENTS: usize = 1 << 26;

pub(crate) fn is_flattened(head: &[u8]) -> bool {
    head.starts_with(SIGNATURE)
}

/// One piece of the described file: `[start, end)` of the described file is stored at `file`
/// in the flattened file on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Piece {
    start: FileOffset,
    end: FileOffset,
    file: FileOffset,
}

/// Segment index of a flattened file.
#[derive(Debug)]
pub(crate) struct FlatIndex {
    /// Sorted, non-overlapping.
    pieces: Vec<Piece>,
    len: u64,
}

/// The first data header, after the header block.
const FIRST_SEGMENT: FileOffset = FileOffset(HEADER_BLOCK);

impl FlatIndex {
    /// Index the flattened file `src` (as stored on disk).
    pub fn build(src: &Mapped) -> Result<FlatIndex, ParseError> {
        let hdr = src.fields(FileOffset(0), 32, "flattened header")?;
        let kind = hdr.i64_be(16)?;
        let version = hdr.i64_be(24)?;
        if kind != 1 {
            return Err(ParseError::invalid(
                hdr.at(16),
                "flattened header",
                format!("type {kind}, expected 1"),
            ));
        }
        if version != 1 {
            return Err(ParseError::unsupported(
                hdr.at(24),
                "flattened header",
                format!("version {version}"),
            ));
        }
        let file_len = src.len();
        let mut segs: Vec<Piece> = Vec::new();
        let mut at = FIRST_SEGMENT;
        loop {
            let dh = src.fields(at, DATA_HEADER, "flattened segment header")?;
            let (offset, size) = (dh.i64_be(0)?, dh.i64_be(8)?);
            if offset == -1 && size == -1 {
                break;
            }
            let (Ok(offset), Ok(size)) = (u64::try_from(offset), u64::try_from(size)) else {
                return Err(ParseError::invalid(
                    at,
                    "flattened segment header",
                    format!("negative offset {offset} or size {size}"),
                ));
            };
            let data = at + DATA_HEADER;
            let next =
                data.checked_add(size)
                    .filter(|&n| n.0 <= file_len)
                    .ok_or(ParseError::Truncated {
                        at: data,
                        what: "flattened segment data",
                        need: size,
                        len: file_len,
                    })?;
            let end = offset.checked_add(size).ok_or_else(|| {
                ParseError::invalid(at, "flattened segment header", "offset + size overflows")
            })?;
            if size > 0 {
                if segs.len() >= MAX_SEGMENTS {
                    return Err(ParseError::unsupported(
                        at,
                        "flattened file",
                        format!("more than {MAX_SEGMENTS} segments"),
                    ));
                }
                segs.push(Piece {
                    start: FileOffset(offset),
                    end: FileOffset(end),
                    file: data,
                });
            }
            at = next;
        }
        let len = segs.iter().map(|s| s.end.0).max().unwrap_or(0);
        Ok(FlatIndex {
            pieces: resolve(segs),
            len,
        })
    }

    /// Length of the described file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Fill `buf` from offset `at` of the described file. The caller checked
    /// `at + buf.len() <= len()`; gaps read as zero.
    pub fn read(&self, src: &Mapped, at: FileOffset, buf: &mut [u8]) {
        let mut i = self.pieces.partition_point(|p| p.end <= at);
        let mut pos = at;
        let mut done = 0usize;
        while done < buf.len() {
            let want = (buf.len() - done) as u64;
            match self.pieces.get(i) {
                Some(p) if p.start <= pos => {
                    let n = want.min(p.end.since(pos)) as usize;
                    src.copy_out(p.file + pos.since(p.start), &mut buf[done..done + n]);
                    done += n;
                    pos = pos + n as u64;
                    i += 1;
                }
                Some(p) => {
                    let n = want.min(p.start.since(pos)) as usize;
                    buf[done..done + n].fill(0);
                    done += n;
                    pos = pos + n as u64;
                }
                None => {
                    buf[done..].fill(0);
                    done = buf.len();
                }
            }
        }
    }
}

/// Turn segments in write order into sorted, non-overlapping pieces where the last write
/// of each byte wins. A sweep over segment endpoints, O(n log n).
fn resolve(segs: Vec<Piece>) -> Vec<Piece> {
    let sorted_disjoint = segs.windows(2).all(|w| w[0].end <= w[1].start);
    if sorted_disjoint {
        return segs;
    }
    // Endpoints: (position, segment index). Ends sort before starts at the same position.
    let mut events: Vec<(FileOffset, bool, usize)> = Vec::with_capacity(segs.len() * 2);
    for (i, s) in segs.iter().enumerate() {
        events.push((s.start, true, i));
        events.push((s.end, false, i));
    }
    events.sort_unstable();
    let mut active: BinaryHeap<usize> = BinaryHeap::new();
    let mut ended = vec![false; segs.len()];
    let mut out: Vec<Piece> = Vec::new();
    let mut k = 0;
    while k < events.len() {
        let pos = events[k].0;
        while k < events.len() && events[k].0 == pos {
            let (_, is_start, i) = events[k];
            if is_start {
                active.push(i);
            } else {
                ended[i] = true;
            }
            k += 1;
        }
        while active.peek().is_some_and(|&i| ended[i]) {
            active.pop();
        }
        let (Some(&winner), Some(&(next, _, _))) = (active.peek(), events.get(k)) else {
            continue;
        };
        let s = segs[winner];
        let piece = Piece {
            start: pos,
            end: next,
            file: s.file + pos.since(s.start),
        };
        match out.last_mut() {
            Some(last)
                if last.end == piece.start && last.file + last.end.since(last.start) == piece.file =>
            {
                last.end = piece.end;
            }
            _ if piece.start < piece.end => out.push(piece),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(start: u64, end: u64, file: u64) -> Piece {
        Piece { start: FileOffset(start), end: FileOffset(end), file: FileOffset(file) }
    }

    #[test]
    fn disjoint_segments_stay_as_written() {
        let segs = vec![p(0, 10, 100), p(10, 20, 200), p(30, 40, 300)];
        assert_eq!(resolve(segs.clone()), segs);
    }

    #[test]
    fn later_writes_win() {
        // [0,100) written, then [40,60) rewritten, then [90,120) rewritten.
        let out = resolve(vec![p(0, 100, 1000), p(40, 60, 5000), p(90, 120, 7000)]);
        assert_eq!(
            out,
            vec![
                p(0, 40, 1000),
                p(40, 60, 5000),
                p(60, 90, 1060),
                p(90, 120, 7000)
            ]
        );
    }

    #[test]
    fn an_earlier_segment_under_a_later_one_vanishes() {
        let out = resolve(vec![p(10, 20, 100), p(0, 30, 500)]);
        assert_eq!(out, vec![p(0, 30, 500)]);
    }
}
