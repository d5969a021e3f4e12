//! A structure copied out of an image file, read field by field through the one bounds-checked
//! reader ([`Bytes`]), and the one bounds check of a file range that every reader of image
//! files uses.
//!
//! Invariant: no accessor indexes the buffer unchecked; every error names the file offset of
//! the field that failed and the structure it belongs to (all [`Fields`] adds to [`Bytes`]).

use super::{FileOffset, ParseError};
use crate::bytes::{Bytes, OutOfBounds};

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

    /// A read past the structure's end, as an error at its file offset.
    fn truncated(&self, e: OutOfBounds) -> ParseError {
        ParseError::Truncated { at: self.at(e.offset), what: self.what, need: e.len as u64, len: e.size as u64 }
    }

    pub fn bytes(&self, off: usize, n: usize) -> Result<&[u8], ParseError> {
        Bytes::new(&self.buf).slice(off, n).map_err(|e| self.truncated(e))
    }

    /// An unsigned integer of `width` (1 to 8) bytes, big- or little-endian.
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
        Bytes::new(&self.buf).u32(off).map_err(|e| self.truncated(e))
    }

    pub fn u64(&self, off: usize) -> Result<u64, ParseError> {
        Bytes::new(&self.buf).u64(off).map_err(|e| self.truncated(e))
    }

    pub fn i64_be(&self, off: usize) -> Result<i64, ParseError> {
        Bytes::new(&self.buf).i64_be(off).map_err(|e| self.truncated(e))
    }
}
