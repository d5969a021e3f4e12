//! Memory images: files that hold a machine's physical memory, each served through
//! [`PhysMem`](crate::mem::PhysMem).
//!
//! ```text
//!   image::open(path, format, base) ──▶ detect (magic)  ──▶ format parser
//!                                                              │ builds a Layout: "physical range →
//!                                                              │ where its bytes are" (file offset,
//!                                                              │ compressed unit, zero, excluded)
//!                                                              ▼
//!   MappedImage<Layout>  (one generic reader: PhysMem)  ◀── Source (mmap of the file; the
//!        │  Stored → copy from the map                        makedumpfile "flattened" variant
//!        │  Compressed → decompress one unit (small cache)    is indexed once and read through
//!        ▼                                                    its segment map)
//!   bytes
//! ```
//!
//! Invariants:
//! - Files are memory-mapped, never loaded: opening reads only headers and index metadata
//!   (ELF program headers, kdump bitmaps, LiME/AVML range headers, snappy chunk headers).
//! - Every parser treats the file as untrusted: all reads are bounds-checked and return a
//!   [`ParseError`] naming the [`FileOffset`] that failed; loops are bounded by the file size.
//! - A [`FileOffset`] (position in the file) and a [`PhysAddr`] (guest-physical address) are
//!   distinct types and never convert implicitly.
//! - Nothing here writes to the image file.

pub mod codec;
pub mod elf;
mod fields;
mod flat;
pub mod kdump;
pub mod lime;
pub mod live;
mod lzo;
mod mapped;
pub mod notes;
pub mod raw;
mod reader;
mod source;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::mem::{PhysAddr, PhysMem};

pub use live::Machine;
pub use reader::{ExtentMap, Layout, Location, MappedImage, Piece};
pub use source::Source;

/// A position in an image file (or, for a flattened kdump, in the file it describes).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FileOffset(pub u64);

crate::address_impls!(FileOffset, "file offset");

impl FileOffset {
    /// Bytes from `base` up to `self` (`self >= base`).
    pub const fn since(self, base: FileOffset) -> u64 {
        self.0 - base.0
    }
}

/// `self + n` for offsets already checked to lie in a file (overflow panics in debug builds).
impl std::ops::Add<u64> for FileOffset {
    type Output = FileOffset;
    fn add(self, n: u64) -> FileOffset {
        FileOffset(self.0 + n)
    }
}

/// An image file format (`--format`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Format {
    /// Physical memory byte for byte; physical 0 at file offset 0 unless a base is given.
    Raw,
    /// ELF core, e.g. QEMU `dump-guest-memory` (PT_LOAD `p_paddr` → file offset).
    Elf,
    /// kdump-compressed (diskdump) file, standard or makedumpfile-flattened.
    Kdump,
    /// LiME (uncompressed ranges; also AVML's uncompressed output).
    Lime,
    /// Microsoft AVML (LiME-like headers, snappy-compressed ranges; also version 1 = LiME).
    Avml,
    /// A running QEMU guest's RAM file (`memory-backend-file,share=on`), laid out as the
    /// given machine type maps RAM into guest-physical space.
    Live(Machine),
}

impl Format {
    /// The names `FromStr` accepts, for help texts.
    pub const NAMES: &'static str = "raw, elf, kdump, lime, avml, live (= live:pc), live:q35";

    /// For a CLI with `--format live --machine q35`: a live format takes `machine`'s layout;
    /// other formats are unchanged.
    pub fn with_machine(self, machine: Machine) -> Format {
        match self {
            Format::Live(_) => Format::Live(machine),
            other => other,
        }
    }

    /// Whether this format can be recognised by its magic bytes (all but raw and live).
    pub fn has_magic(self) -> bool {
        !matches!(self, Format::Raw | Format::Live(_))
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Format::Raw => f.write_str("raw"),
            Format::Elf => f.write_str("elf"),
            Format::Kdump => f.write_str("kdump"),
            Format::Lime => f.write_str("lime"),
            Format::Avml => f.write_str("avml"),
            Format::Live(m) => write!(f, "live:{m}"),
        }
    }
}

/// `--format` parse failure.
#[derive(Debug, thiserror::Error)]
#[error("unknown image format {0:?} (expected one of: {names})", names = Format::NAMES)]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        Ok(match lower.as_str() {
            "raw" => Format::Raw,
            "elf" => Format::Elf,
            "kdump" => Format::Kdump,
            "lime" => Format::Lime,
            "avml" => Format::Avml,
            "live" => Format::Live(Machine::Pc),
            other => match other.strip_prefix("live:").map(Machine::from_str) {
                Some(Ok(m)) => Format::Live(m),
                _ => return Err(UnknownFormat(s.to_string())),
            },
        })
    }
}

/// Why a file could not be parsed. Every variant names the file offset that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// A structure runs past the end of the file.
    #[error("{at}: {what} needs {need} bytes but the file ends at {len:#x}")]
    Truncated {
        at: FileOffset,
        what: &'static str,
        need: u64,
        len: u64,
    },
    /// A structure is malformed.
    #[error("{at}: {what}: {reason}")]
    Invalid {
        at: FileOffset,
        what: &'static str,
        reason: String,
    },
    /// A structure is valid but uses a feature this reader does not implement.
    #[error("{at}: {what}: unsupported: {reason}")]
    Unsupported {
        at: FileOffset,
        what: &'static str,
        reason: String,
    },
}

impl ParseError {
    /// The file offset that failed.
    pub fn offset(&self) -> FileOffset {
        match self {
            ParseError::Truncated { at, .. }
            | ParseError::Invalid { at, .. }
            | ParseError::Unsupported { at, .. } => *at,
        }
    }
    pub(crate) fn invalid(at: FileOffset, what: &'static str, reason: impl Into<String>) -> Self {
        ParseError::Invalid {
            at,
            what,
            reason: reason.into(),
        }
    }
    pub(crate) fn unsupported(
        at: FileOffset,
        what: &'static str,
        reason: impl Into<String>,
    ) -> Self {
        ParseError::Unsupported {
            at,
            what,
            reason: reason.into(),
        }
    }
}

/// Why an image could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: empty file", path.display())]
    Empty { path: PathBuf },
    #[error("{}: not a valid {format} image: {source}", path.display())]
    Parse {
        path: PathBuf,
        format: Format,
        source: ParseError,
    },
    #[error("{}: a base address applies to raw images only, not {format}", path.display())]
    BaseNotRaw { path: PathBuf, format: Format },
}

/// Recognise a format by the magic bytes at the start of a file (`head` = its first bytes;
/// 16 are enough). Raw is the fallback when nothing matches; a live RAM file has no magic
/// and is only ever chosen explicitly.
pub fn detect(head: &[u8]) -> Format {
    if head.starts_with(elf::MAGIC) {
        Format::Elf
    } else if head.starts_with(kdump::SIGNATURE) || head.starts_with(flat::SIGNATURE) {
        // A flattened file is almost always a kdump; `open` looks inside it instead.
        Format::Kdump
    } else if head.starts_with(lime::LIME_MAGIC) {
        Format::Lime
    } else if head.starts_with(lime::AVML_MAGIC) {
        Format::Avml
    } else {
        Format::Raw
    }
}

/// Open a memory image. `format` overrides detection; `base` (raw images only) is the
/// physical address of the file's first byte.
///
/// A makedumpfile-flattened file is indexed first and its contents detected and served
/// like the file `makedumpfile -R` would rebuild.
pub fn open(
    path: &Path,
    format: Option<Format>,
    base: Option<PhysAddr>,
) -> Result<Box<dyn PhysMem>, ImageError> {
    let parse_err = |format, source| ImageError::Parse {
        path: path.to_path_buf(),
        format,
        source,
    };
    let src = Source::open(path)?;
    let format = match format {
        Some(f) => f,
        None => {
            let mut head = [0u8; 16];
            let n = head
                .len()
                .min(usize::try_from(src.len()).unwrap_or(usize::MAX));
            src.read_at(FileOffset(0), &mut head[..n], "magic")
                .map_err(|e| parse_err(Format::Raw, e))?;
            detect(&head[..n])
        }
    };
    if base.is_some() && format != Format::Raw {
        return Err(ImageError::BaseNotRaw {
            path: path.to_path_buf(),
            format,
        });
    }
    tracing::debug!(path = %path.display(), %format, flattened = src.is_flattened(), "opening image");
    let image: Box<dyn PhysMem> = match format {
        Format::Raw => {
            Box::new(raw::open(src, base.unwrap_or_default()).map_err(|e| parse_err(format, e))?)
        }
        Format::Elf => Box::new(elf::open(src).map_err(|e| parse_err(format, e))?),
        Format::Kdump => Box::new(kdump::open(src).map_err(|e| parse_err(format, e))?),
        Format::Lime => Box::new(lime::open(src, false).map_err(|e| parse_err(format, e))?),
        Format::Avml => Box::new(lime::open(src, true).map_err(|e| parse_err(format, e))?),
        Format::Live(m) => Box::new(live::open(src, m).map_err(|e| parse_err(format, e))?),
    };
    Ok(image)
}

/// `n` bytes as a short human-readable size ("128 MiB", "4.5 GiB", "123 B").
pub(crate) fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 || v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip() {
        for f in [
            Format::Raw,
            Format::Elf,
            Format::Kdump,
            Format::Lime,
            Format::Avml,
            Format::Live(Machine::Pc),
            Format::Live(Machine::Q35),
        ] {
            assert_eq!(f.to_string().parse::<Format>().unwrap(), f);
        }
        assert_eq!("live".parse::<Format>().unwrap(), Format::Live(Machine::Pc));
        assert_eq!("KDUMP".parse::<Format>().unwrap(), Format::Kdump);
        assert!("qcow2".parse::<Format>().is_err());
        assert!("live:isapc".parse::<Format>().is_err());
        assert_eq!(
            Format::Live(Machine::Pc).with_machine(Machine::Q35),
            Format::Live(Machine::Q35)
        );
        assert_eq!(Format::Elf.with_machine(Machine::Q35), Format::Elf);
    }

    #[test]
    fn detect_by_magic_with_raw_fallback() {
        assert_eq!(detect(b"\x7fELF\x02\x01\x01"), Format::Elf);
        assert_eq!(detect(b"KDUMP   \x06\0\0\0"), Format::Kdump);
        assert_eq!(detect(b"makedumpfile\0\0\0\0"), Format::Kdump);
        assert_eq!(detect(b"EMiL\x01\0\0\0"), Format::Lime);
        assert_eq!(detect(b"AVML\x02\0\0\0"), Format::Avml);
        assert_eq!(detect(b"KDUMP  "), Format::Raw);
        assert_eq!(detect(b""), Format::Raw);
        assert_eq!(detect(&[0u8; 16]), Format::Raw);
    }

    #[test]
    fn offsets_display_as_file_offsets() {
        assert_eq!(FileOffset(0x1a8).to_string(), "file offset 0x1a8");
        assert_eq!(FileOffset(u64::MAX).checked_add(1), None);
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(128 << 20), "128 MiB");
        assert_eq!(human_size((4 << 30) + (512 << 20)), "4.5 GiB");
    }
}
