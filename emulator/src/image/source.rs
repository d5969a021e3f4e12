//! The bytes of an image file: a read-only memory map, seen directly or, for a makedumpfile
//! "flattened" file, through its segment index (see [`flat`](super::flat)).
//!
//! Invariant: every read is bounds-checked against the (virtual) file length and *copies* out
//! of the map; no reference into the mapping outlives a call. A file that changes while it is
//! served (a running guest's RAM file) therefore yields fresh bytes on every read, never
//! stale ones. Nothing writes through the map (it is mapped read-only).

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::flat::{self, FlatIndex};
use super::{FileOffset, Format, ImageError, ParseError};

/// Copies at least this large hint the kernel to read their range ahead.
const WILLNEED_MIN: usize = 64 << 10;

/// A mapped image file. Cheap to read from several threads at once.
pub struct Source {
    path: PathBuf,
    map: Mmap,
    flat: Option<FlatIndex>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("path", &self.path)
            .field("file_len", &self.map.len())
            .field("flattened", &self.flat.is_some())
            .finish()
    }
}

impl Source {
    /// Map `path` read-only. A file starting with the makedumpfile flattened signature is
    /// indexed here, once; afterwards reads see the file `makedumpfile -R` would produce.
    pub fn open(path: &Path) -> Result<Source, ImageError> {
        let open_err = |source| ImageError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        let len = file.metadata().map_err(open_err)?.len();
        if len == 0 {
            return Err(ImageError::Empty {
                path: path.to_path_buf(),
            });
        }
        // SAFETY: the map is read-only and private to this struct. Its contents may change
        // underneath us (a live guest writing its RAM file), so we never hand out references
        // into it: `copy_out` copies with raw pointer reads after a bounds check. If the file
        // is truncated while mapped, reads of the lost pages raise SIGBUS; image files must
        // not be truncated while served.
        let map = unsafe { Mmap::map(&file) }.map_err(open_err)?;
        // Analyses and DMA requests read scattered pages. Without this hint every page fault
        // reads ahead (and maps, by fault-around) up to 128 KiB, so a few thousand scattered
        // reads of a sparse 16 GiB image would make hundreds of MiB resident.
        if let Err(e) = map.advise(memmap2::Advice::Random) {
            tracing::debug!(path = %path.display(), error = %e, "madvise(MADV_RANDOM) failed");
        }
        let mut src = Source {
            path: path.to_path_buf(),
            map,
            flat: None,
        };
        let mut head = [0u8; 16];
        let n = head.len().min(src.map.len());
        src.copy_out(0, &mut head[..n]);
        if flat::is_flattened(&head[..n]) {
            let index = FlatIndex::build(&src).map_err(|source| ImageError::Parse {
                path: path.to_path_buf(),
                format: Format::Kdump,
                source,
            })?;
            src.flat = Some(index);
        }
        Ok(src)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Length of the (virtual, if flattened) file.
    pub fn len(&self) -> u64 {
        match &self.flat {
            Some(index) => index.len(),
            None => self.file_len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Length of the file on disk.
    pub fn file_len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Whether this is a makedumpfile-flattened file served through its segment index.
    pub fn is_flattened(&self) -> bool {
        self.flat.is_some()
    }

    /// Fill `buf` from offset `at` of the (virtual) file. `what` names the structure read,
    /// for the error.
    pub fn read_at(
        &self,
        at: FileOffset,
        buf: &mut [u8],
        what: &'static str,
    ) -> Result<(), ParseError> {
        self.check(at, buf.len() as u64, what)?;
        match &self.flat {
            Some(index) => index.read(self, at.0, buf),
            None => self.copy_out(at.0, buf),
        }
        Ok(())
    }

    /// Copy `n` bytes at `at` into a new vector (the bounds are checked before allocating).
    pub fn read_vec(
        &self,
        at: FileOffset,
        n: u64,
        what: &'static str,
    ) -> Result<Vec<u8>, ParseError> {
        self.check(at, n, what)?;
        let len = usize::try_from(n).map_err(|_| ParseError::invalid(at, what, "too large"))?;
        let mut buf = vec![0u8; len];
        self.read_at(at, &mut buf, what)?;
        Ok(buf)
    }

    /// Little-endian fields of a `len`-byte structure at `at`.
    pub(crate) fn fields(
        &self,
        at: FileOffset,
        len: u64,
        what: &'static str,
    ) -> Result<Fields, ParseError> {
        Ok(Fields {
            buf: self.read_vec(at, len, what)?,
            base: at,
            what,
        })
    }

    /// Error unless `[at, at+n)` lies inside the (virtual) file.
    pub(crate) fn check(
        &self,
        at: FileOffset,
        n: u64,
        what: &'static str,
    ) -> Result<(), ParseError> {
        let len = self.len();
        match at.0.checked_add(n) {
            Some(end) if end <= len => Ok(()),
            _ => Err(ParseError::Truncated {
                at,
                what,
                need: n,
                len,
            }),
        }
    }

    /// Copy bytes of the file on disk (not the virtual file). Callers have checked bounds
    /// against `file_len`; out-of-range requests are clamped and zero-filled defensively.
    pub(crate) fn copy_out(&self, off: u64, buf: &mut [u8]) {
        let map_len = self.map.len() as u64;
        let avail = map_len.saturating_sub(off).min(buf.len() as u64) as usize;
        if avail >= WILLNEED_MIN {
            // The map is MADV_RANDOM (see `open`); a large copy asks the kernel to read its
            // range, and as much again after it (the next read of a scan), ahead in one go
            // instead of faulting it in 4 KiB at a time.
            let ahead = (2 * avail as u64).min(map_len - off) as usize;
            let _ = self
                .map
                .advise_range(memmap2::Advice::WillNeed, off as usize, ahead);
        }
        if avail > 0 {
            // SAFETY: `off + avail <= map.len()`, so the source range lies inside the
            // mapping; `buf` is a distinct, writable Rust slice of at least `avail` bytes.
            // Raw-pointer copying avoids creating a reference to memory another process
            // may be writing (see `open`).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.map.as_ptr().add(off as usize),
                    buf.as_mut_ptr(),
                    avail,
                );
            }
        }
        buf[avail..].fill(0);
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
