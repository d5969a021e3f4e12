//! The bytes of an image file as stored on disk: a read-only memory map, read by copying.
//!
//! Invariant: every read is bounds-checked against the file length and *copies* out of the
//! map; no reference into the mapping outlives a call. A file that changes while it is served
//! (a running guest's RAM file) therefore yields fresh bytes on every read, never stale ones.
//! Nothing writes through the map (it is mapped read-only).

use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use super::fields::{check, Fields};
use super::{FileOffset, ImageError, ParseError};

/// Copies at least this large hint the kernel to read their range ahead.
const WILLNEED_MIN: usize = 64 << 10;

/// A mapped file. Cheap to read from several threads at once.
pub(crate) struct Mapped {
    map: Mmap,
}

impl Mapped {
    /// Map `path` read-only.
    pub fn open(path: &Path) -> Result<Mapped, ImageError> {
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
        Ok(Mapped { map })
    }

    /// Length of the file on disk.
    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Little-endian fields of a `len`-byte structure at `at` of the file on disk.
    pub fn fields(&self, at: FileOffset, len: u64, what: &'static str) -> Result<Fields, ParseError> {
        check(at, len, self.len(), what)?;
        let n = usize::try_from(len).map_err(|_| ParseError::invalid(at, what, "too large"))?;
        let mut buf = vec![0u8; n];
        self.copy_out(at, &mut buf);
        Ok(Fields::new(buf, at, what))
    }

    /// Copy bytes of the file on disk (not the virtual file). Callers have checked bounds
    /// against `len`; out-of-range requests are clamped and zero-filled defensively.
    pub fn copy_out(&self, at: FileOffset, buf: &mut [u8]) {
        let off = at.0;
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
