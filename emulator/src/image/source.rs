//! The bytes of an image file: the file on disk ([`Mapped`]) seen directly or, for a
//! makedumpfile "flattened" file, through its segment index (see [`flat`](super::flat)).
//!
//! Invariant: every read is bounds-checked against the (virtual) file length and copies out
//! of the map (see [`mapped`](super::mapped)).

use std::path::{Path, PathBuf};

use super::fields::{check, Fields};
use super::flat::{self, FlatIndex};
use super::mapped::Mapped;
use super::{FileOffset, Format, ImageError, ParseError};

/// A mapped image file. Cheap to read from several threads at once.
pub struct Source {
    path: PathBuf,
    disk: Mapped,
    flat: Option<FlatIndex>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("path", &self.path)
            .field("file_len", &self.disk.len())
            .field("flattened", &self.flat.is_some())
            .finish()
    }
}

impl Source {
    /// Map `path` read-only. A file starting with the makedumpfile flattened signature is
    /// indexed here, once; afterwards reads see the file `makedumpfile -R` would produce.
    pub fn open(path: &Path) -> Result<Source, ImageError> {
        let disk = Mapped::open(path)?;
        let mut head = [0u8; 16];
        let n = (head.len() as u64).min(disk.len()) as usize;
        disk.copy_out(FileOffset(0), &mut head[..n]);
        let flat = if flat::is_flattened(&head[..n]) {
            let index = FlatIndex::build(&disk).map_err(|source| ImageError::Parse {
                path: path.to_path_buf(),
                format: Format::Kdump,
                source,
            })?;
            Some(index)
        } else {
            None
        };
        Ok(Source {
            path: path.to_path_buf(),
            disk,
            flat,
        })
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
        self.disk.len()
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
            Some(index) => index.read(&self.disk, at, buf),
            None => self.disk.copy_out(at, buf),
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
        Ok(Fields::new(self.read_vec(at, len, what)?, at, what))
    }

    /// Error unless `[at, at+n)` lies inside the (virtual) file.
    pub(crate) fn check(
        &self,
        at: FileOffset,
        n: u64,
        what: &'static str,
    ) -> Result<(), ParseError> {
        check(at, n, self.len(), what)
    }
}
