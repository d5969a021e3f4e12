//! Raw images: physical memory byte for byte, the file's first byte at physical `base`
//! (0 unless `--base` says otherwise), e.g. QEMU's `pmemsave` output or `dd` of `/dev/mem`.
//!
//! Invariant: exactly `[base, base + file length)` is backed; nothing is read at open.

use super::reader::{ExtentMap, Extents, Location, MappedImage, Piece};
use super::source::Source;
use super::{FileOffset, ParseError};
use crate::mem::PhysAddr;

/// Layout of a raw image.
#[derive(Debug)]
pub struct RawLayout {
    map: ExtentMap,
    flattened: bool,
}

/// Serve `src` as raw memory starting at physical `base`.
pub fn open(src: Source, base: PhysAddr) -> Result<MappedImage<RawLayout>, ParseError> {
    let len = src.len();
    let end = base.checked_add(len).ok_or_else(|| {
        ParseError::invalid(
            FileOffset(0),
            "raw image",
            format!("{len:#x} bytes at base {:#x} overflow 64 bits", base.0),
        )
    })?;
    let piece = Piece {
        start: base,
        end,
        loc: Location::Stored(FileOffset(0)),
    };
    let map = ExtentMap::new(vec![(piece, FileOffset(0))], "raw image")?;
    let flattened = src.is_flattened();
    Ok(MappedImage::new(src, RawLayout { map, flattened }))
}

impl Extents for RawLayout {
    fn map(&self) -> &ExtentMap {
        &self.map
    }
    fn label(&self) -> String {
        if self.flattened {
            "raw image (flattened)".into()
        } else {
            "raw image".into()
        }
    }
}
