//! The one bounds-checked reader of untrusted bytes (image headers, guest memory): checked
//! little- and big-endian reads from a byte buffer.
//!
//! Invariant: nothing here indexes a slice directly or panics; every read returns
//! `Err(OutOfBounds)` naming the offset and length that did not fit. Parsers of image files
//! (through `image`'s `Fields`), BTF, kallsyms, vmcoreinfo and task structures (through
//! `harness`'s `Record` and the heuristic's `Obj`) read through [`Bytes`]; those wrappers only
//! add the base address or file offset of their buffer to the error.

/// A read past the end of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("read of {len} bytes at offset {offset:#x} exceeds buffer of {size:#x} bytes")]
pub struct OutOfBounds {
    pub offset: usize,
    pub len: usize,
    pub size: usize,
}

/// A view over untrusted bytes with checked accessors.
#[derive(Clone, Copy, Debug)]
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn as_slice(&self) -> &'a [u8] {
        self.data
    }

    /// `len` bytes at `offset`.
    pub fn slice(&self, offset: usize, len: usize) -> Result<&'a [u8], OutOfBounds> {
        let err = OutOfBounds { offset, len, size: self.data.len() };
        let end = offset.checked_add(len).ok_or(err)?;
        self.data.get(offset..end).ok_or(err)
    }

    /// A sub-view of `len` bytes at `offset`.
    pub fn sub(&self, offset: usize, len: usize) -> Result<Bytes<'a>, OutOfBounds> {
        self.slice(offset, len).map(Bytes::new)
    }

    fn array<const N: usize>(&self, offset: usize) -> Result<[u8; N], OutOfBounds> {
        let s = self.slice(offset, N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    pub fn u8(&self, offset: usize) -> Result<u8, OutOfBounds> {
        Ok(self.array::<1>(offset)?[0])
    }
    pub fn u16(&self, offset: usize) -> Result<u16, OutOfBounds> {
        self.array(offset).map(u16::from_le_bytes)
    }
    pub fn u32(&self, offset: usize) -> Result<u32, OutOfBounds> {
        self.array(offset).map(u32::from_le_bytes)
    }
    pub fn i32(&self, offset: usize) -> Result<i32, OutOfBounds> {
        self.array(offset).map(i32::from_le_bytes)
    }
    pub fn u64(&self, offset: usize) -> Result<u64, OutOfBounds> {
        self.array(offset).map(u64::from_le_bytes)
    }
    pub fn i64_be(&self, offset: usize) -> Result<i64, OutOfBounds> {
        self.array(offset).map(i64::from_be_bytes)
    }

    /// An unsigned little-endian integer of 1, 2, 4 or 8 bytes.
    pub fn uint(&self, offset: usize, size: usize) -> Result<u64, OutOfBounds> {
        match size {
            1 => self.u8(offset).map(u64::from),
            2 => self.u16(offset).map(u64::from),
            4 => self.u32(offset).map(u64::from),
            _ => self.u64(offset),
        }
    }

    /// The bytes from `offset` up to (not including) the first NUL, looking at most `max`
    /// bytes; `None` if no NUL was found within the bound or the buffer.
    pub fn cstr(&self, offset: usize, max: usize) -> Option<&'a [u8]> {
        let rest = self.data.get(offset..)?;
        let window = &rest[..rest.len().min(max)];
        let nul = window.iter().position(|&b| b == 0)?;
        Some(&window[..nul])
    }

    /// Like [`Bytes::cstr`] but without requiring a terminator: everything up to the first NUL
    /// or the end of the window.
    pub fn cstr_lossy_end(&self, offset: usize, max: usize) -> &'a [u8] {
        let Some(rest) = self.data.get(offset..) else { return &[] };
        let window = &rest[..rest.len().min(max)];
        match window.iter().position(|&b| b == 0) {
            Some(n) => &window[..n],
            None => window,
        }
    }
}

/// Round `x` up to a multiple of `align` (a power of two), or `None` on overflow.
pub fn align_up(x: u64, align: u64) -> Option<u64> {
    Some(x.checked_add(align - 1)? & !(align - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_checked() {
        let b = Bytes::new(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(b.u32(0).unwrap(), 0x0403_0201);
        assert_eq!(b.u64(1).unwrap(), 0x0908_0706_0504_0302);
        assert_eq!(b.u64(2), Err(OutOfBounds { offset: 2, len: 8, size: 9 }));
        assert!(b.u8(usize::MAX).is_err());
        assert!(b.slice(usize::MAX, 2).is_err());
    }

    #[test]
    fn cstr_needs_terminator_within_bound() {
        let b = Bytes::new(b"abc\0def");
        assert_eq!(b.cstr(0, 16), Some(&b"abc"[..]));
        assert_eq!(b.cstr(4, 16), None);
        assert_eq!(b.cstr(0, 2), None);
        assert_eq!(b.cstr_lossy_end(4, 16), b"def");
        assert_eq!(b.cstr_lossy_end(100, 16), b"");
    }

    #[test]
    fn align() {
        assert_eq!(align_up(9, 8), Some(16));
        assert_eq!(align_up(16, 8), Some(16));
        assert_eq!(align_up(u64::MAX, 8), None);
    }
}
