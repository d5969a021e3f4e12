//! A structure copied out of an image file, read field by field with bounds checks, and the
//! one bounds check of a file range that every reader of image files uses.
//!
//! Invariant: no accessor indexes the buffer unchecked; every error names the file offset of
//! the field that failed and the structure it belongs to.

use super::{FileOffset, ParseError};

/// Error unless `[at, at+n)` lies inside a file of `len` bytes.
pub(crate) fn check(at: FileOffset, n: u64, len: u64, what: &'static str) -> Result<(), ParseError> {
    match at.0.checked_add(n) {
        Some(end) if end <= len => Ok(()),
        _ => Err(ParseError::Truncated { at, what, need: n, len }),
    }
}

/// A structure copied out of the file, read field by field with bounds checks.
/// Offsets passed to the accessors are relative to the structure's start.
pub(crate) struct Fields {
    buf: Vec<u8>,
    base: FileOffset,
    what: &'static str,
}

impl Fields {
    /// `buf`, copied from the file at `base`.
    pub(crate) fn new(buf: Vec<u8>, base: FileOffset, what: &'static str) -> Fields {
        Fields { buf, base, what }
    }

    /// File offset of the field at `off`.
    pub fn at(&self, off: usize) -> FileOffset {
        FileOffset(self.base.0.saturating_add(off as u64))
    }

    pub fn bytes(&self, off: usize, n: usize) -> Result<&[u8], ParseError> {
        off.checked_add(n)
            .and_then(|end| self.buf.get(off..end))
            .ok_or(ParseError::Truncated {
                at: self.at(off),
                what: self.what,
                need: n as u64,
                len: self.buf.len() as u64,
            })
    }

    /// An unsigned integer of `width` (1, 2, 4 or 8) bytes, big- or little-endian.
    pub fn uint(&self, off: usize, width: usize, big_endian: bool) -> Result<u64, ParseError> {
        let b = self.bytes(off, width.min(8))?;
        let fold = |acc: u64, &x: &u8| acc << 8 | u64::from(x);
        Ok(if big_endian {
            b.iter().fold(0, fold)
        } else {
            b.iter().rev().fold(0, fold)
        })
    }

    pub fn u32(&self, off: usize) -> Result<u32, ParseError> {
        let b = self.bytes(off, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&self, off: usize) -> Result<u64, ParseError> {
        let b = self.bytes(off, 8)?;
        Ok(u64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    }

    pub fn i64_be(&self, off: usize) -> Result<i64, ParseError> {
        let b = self.bytes(off, 8)?;
        Ok(i64::from_be_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    }
}
