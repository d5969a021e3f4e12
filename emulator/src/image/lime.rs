//! LiME and Microsoft AVML images: a sequence of ranges, each a 32-byte header
//! `{magic u32, version u32, start u64, end u64 (inclusive), reserved u64 = 0}` (little-endian)
//! followed by the range's bytes.
//!
//! - LiME (`"EMiL"` = 0x4C694D45, version 1): the bytes follow verbatim. AVML's uncompressed
//!   output is this format.
//! - AVML (`"AVML"` = 0x4C4D5641, version 2): the bytes follow as a snappy *frame format*
//!   stream, then a u64 with the stream's length in bytes. AVML cuts ranges into blocks of at
//!   most 16 MiB and omits blocks that are entirely zero, so gaps in an AVML image may have
//!   been zeros on the machine; they read as unmapped here.
//!
//! Invariants: headers are walked once, each step advancing by at least 32 bytes (LiME) or
//! 4 bytes (snappy chunk headers), with an explicit piece limit. For AVML each snappy chunk
//! (≤ 64 KiB of memory) becomes one compressed unit, so a read decodes at most the chunks it
//! touches; chunk checksums are verified on decode.

use super::codec::Codec;
use super::reader::{ExtentMap, Extents, Location, MappedImage, Piece};
use super::source::Source;
use super::{FileOffset, ParseError};
use crate::mem::PhysAddr;

/// LiME magic as stored (0x4C694D45 little-endian).
pub const LIME_MAGIC: &[u8] = b"EMiL";
/// AVML magic as stored (0x4C4D5641 little-endian).
pub const AVML_MAGIC: &[u8] = b"AVML";
const HEADER_LEN: u64 = 32;
/// Upper bound on ranges plus snappy chunks indexed.
const MAX_PIECES: usize = 1 << 26;
/// Largest uncompressed size of one snappy frame chunk.
const MAX_CHUNK: u64 = 65536;
const STREAM_ID: &[u8] = b"sNaPpY";

/// Layout of a LiME or AVML image.
#[derive(Debug)]
pub struct LimeLayout {
    map: ExtentMap,
    headers: usize,
    compressed: usize,
    flattened: bool,
}

impl LimeLayout {
    /// Range headers in the file.
    pub fn headers(&self) -> usize {
        self.headers
    }
    /// How many of them are AVML (snappy-compressed) ranges.
    pub fn compressed_headers(&self) -> usize {
        self.compressed
    }
}

/// Parse a LiME file; with `allow_compressed`, AVML version 2 ranges too.
pub fn open(src: Source, allow_compressed: bool) -> Result<MappedImage<LimeLayout>, ParseError> {
    let len = src.len();
    let mut pieces: Vec<(Piece, FileOffset)> = Vec::new();
    let (mut headers, mut compressed) = (0usize, 0usize);
    let mut pos = 0u64;
    while pos < len {
        let at = FileOffset(pos);
        let h = src.fields(at, HEADER_LEN, "LiME range header")?;
        let (magic, version) = (h.bytes(0, 4)?, h.u32(4)?);
        let (start, last, reserved) = (h.u64(8)?, h.u64(16)?, h.u64(24)?);
        let is_avml = match (magic, version) {
            (LIME_MAGIC, 1) => false,
            (AVML_MAGIC, 2) if allow_compressed => true,
            (AVML_MAGIC, 2) => {
                return Err(ParseError::unsupported(
                    at,
                    "LiME range header",
                    "AVML-compressed range; open it as avml",
                ))
            }
            _ => {
                return Err(ParseError::invalid(
                    at,
                    "LiME range header",
                    format!("magic {:02x?} version {version}", magic),
                ))
            }
        };
        if reserved != 0 {
            return Err(ParseError::invalid(
                h.at(24),
                "LiME range header",
                format!("reserved field {reserved:#x}"),
            ));
        }
        let size = last
            .checked_sub(start)
            .and_then(|d| d.checked_add(1))
            .ok_or_else(|| {
                ParseError::invalid(
                    h.at(8),
                    "LiME range header",
                    format!("range {start:#x}..={last:#x}"),
                )
            })?;
        if start.checked_add(size).is_none() {
            return Err(ParseError::unsupported(
                h.at(16),
                "LiME range header",
                "range ends at the top of the address space",
            ));
        }
        let data = pos + HEADER_LEN;
        headers += 1;
        pos = if is_avml {
            compressed += 1;
            index_snappy_frames(&src, FileOffset(data), PhysAddr(start), size, &mut pieces)?
        } else {
            src.check(FileOffset(data), size, "LiME range data")?;
            push(
                &mut pieces,
                Piece {
                    start: PhysAddr(start),
                    end: PhysAddr(start + size),
                    loc: Location::Stored(FileOffset(data)),
                },
                at,
            )?;
            data + size
        };
    }
    let map = ExtentMap::new(pieces, "LiME range")?;
    let flattened = src.is_flattened();
    Ok(MappedImage::new(
        src,
        LimeLayout {
            map,
            headers,
            compressed,
            flattened,
        },
    ))
}

fn push(pieces: &mut Vec<(Piece, FileOffset)>, p: Piece, at: FileOffset) -> Result<(), ParseError> {
    if pieces.len() >= MAX_PIECES {
        return Err(ParseError::unsupported(
            at,
            "LiME/AVML image",
            format!("more than {MAX_PIECES} ranges and chunks"),
        ));
    }
    pieces.push((p, at));
    Ok(())
}

/// Index the snappy frame stream at `at` holding `size` bytes of memory from `start`; each
/// data chunk becomes a piece. Returns the offset after the stream's trailing length.
fn index_snappy_frames(
    src: &Source,
    at: FileOffset,
    start: PhysAddr,
    size: u64,
    pieces: &mut Vec<(Piece, FileOffset)>,
) -> Result<u64, ParseError> {
    let mut pos = at.0;
    let mut produced = 0u64;
    let mut seen_id = false;
    while produced < size {
        let chunk_at = FileOffset(pos);
        let h = src.fields(chunk_at, 4, "snappy chunk header")?;
        let head = h.bytes(0, 4)?;
        let kind = head[0];
        let body_len = u64::from(u32::from_le_bytes([head[1], head[2], head[3], 0]));
        let body = pos + 4;
        src.check(FileOffset(body), body_len, "snappy chunk")?;
        let bad = |reason: String| ParseError::invalid(chunk_at, "snappy chunk", reason);
        let out_len = match kind {
            0xff => {
                let id = src.read_vec(
                    FileOffset(body),
                    body_len.min(16),
                    "snappy stream identifier",
                )?;
                if id != STREAM_ID {
                    return Err(bad(format!("stream identifier {id:02x?}")));
                }
                seen_id = true;
                None
            }
            0x00 | 0x01 if !seen_id => return Err(bad("data before the stream identifier".into())),
            0x00 => {
                if body_len < 5 {
                    return Err(bad(format!("compressed chunk of {body_len} bytes")));
                }
                // The raw block starts with its uncompressed length as a varint (≤ 5 bytes).
                let pre = src.read_vec(
                    FileOffset(body + 4),
                    (body_len - 4).min(10),
                    "snappy block length",
                )?;
                let n = snap::raw::decompress_len(&pre).map_err(|e| bad(e.to_string()))? as u64;
                Some((n, Codec::SnappyFrameCompressed))
            }
            0x01 => {
                if body_len < 4 {
                    return Err(bad(format!("stored chunk of {body_len} bytes")));
                }
                Some((body_len - 4, Codec::SnappyFrameStored))
            }
            0x02..=0x7f => return Err(bad(format!("reserved unskippable chunk type {kind:#04x}"))),
            _ => None, // padding (0xfe) and skippable chunks (0x80..=0xfd)
        };
        if let Some((n, codec)) = out_len {
            if n > MAX_CHUNK || produced + n > size {
                return Err(bad(format!(
                    "chunk of {n} bytes overruns the range ({produced} of {size} done)"
                )));
            }
            let piece = Piece {
                start: PhysAddr(start.0 + produced),
                end: PhysAddr(start.0 + produced + n),
                loc: Location::Compressed {
                    codec,
                    at: FileOffset(body),
                    len: body_len as u32,
                },
            };
            push(pieces, piece, chunk_at)?;
            produced += n;
        }
        pos = body + body_len;
    }
    let t = src.fields(FileOffset(pos), 8, "AVML stream length")?;
    let recorded = t.u64(0)?;
    if recorded != pos - at.0 {
        return Err(ParseError::invalid(
            FileOffset(pos),
            "AVML stream length",
            format!("records {recorded} bytes, the stream has {}", pos - at.0),
        ));
    }
    Ok(pos + 8)
}

impl Extents for LimeLayout {
    fn map(&self) -> &ExtentMap {
        &self.map
    }
    fn label(&self) -> String {
        let kind = if self.compressed > 0 {
            "AVML (snappy)"
        } else {
            "LiME"
        };
        let flat = if self.flattened { " (flattened)" } else { "" };
        format!("{kind}{flat} image ({} range headers)", self.headers)
    }
}
