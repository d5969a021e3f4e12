//! Decompression of one stored unit (a kdump page, one chunk of a snappy frame stream) into
//! exactly the number of bytes the image's index promises.
//!
//! Invariant: output is written only into the caller's buffer of the promised size (so a
//! hostile stream cannot make us allocate), input is never read out of bounds, and every
//! failure — short output, long output, bad checksum — is a [`CodecError`], never a panic.

use std::fmt;

/// How a unit's bytes are encoded.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Codec {
    /// zlib stream (kdump `DUMP_DH_COMPRESSED_ZLIB`).
    Zlib,
    /// LZO1X (kdump `DUMP_DH_COMPRESSED_LZO`), as written by liblzo2's `lzo1x_1_compress`.
    Lzo,
    /// Raw snappy block (kdump `DUMP_DH_COMPRESSED_SNAPPY`).
    Snappy,
    /// Body of a snappy *frame format* compressed chunk (type 0x00): masked CRC-32C of the
    /// uncompressed data, then a raw snappy block. Used by AVML.
    SnappyFrameCompressed,
    /// Body of a snappy frame format uncompressed chunk (type 0x01): masked CRC-32C, then
    /// the data itself.
    SnappyFrameStored,
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::Zlib => "zlib",
            Codec::Lzo => "lzo",
            Codec::Snappy => "snappy",
            Codec::SnappyFrameCompressed => "snappy frame chunk",
            Codec::SnappyFrameStored => "snappy frame stored chunk",
        })
    }
}

/// A unit that does not decode to the promised bytes.
#[derive(Debug, thiserror::Error)]
#[error("{codec} data is corrupt: {reason}")]
pub struct CodecError {
    pub codec: Codec,
    pub reason: String,
}

/// Decode `input` into all of `out`: exactly `out.len()` bytes must come out.
pub fn decompress(codec: Codec, input: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    let err = |reason: String| CodecError { codec, reason };
    match codec {
        Codec::Zlib => zlib(input, out).map_err(err),
        Codec::Lzo => super::lzo::decompress(input, out).map_err(|e| err(e.to_string())),
        Codec::Snappy => snappy_raw(input, out).map_err(err),
        Codec::SnappyFrameCompressed => {
            let (crc, body) = split_crc(input).map_err(err)?;
            snappy_raw(body, out).map_err(err)?;
            check_crc(crc, out).map_err(err)
        }
        Codec::SnappyFrameStored => {
            let (crc, body) = split_crc(input).map_err(err)?;
            if body.len() != out.len() {
                return Err(err(format!(
                    "stored chunk holds {} bytes, expected {}",
                    body.len(),
                    out.len()
                )));
            }
            out.copy_from_slice(body);
            check_crc(crc, out).map_err(err)
        }
    }
}

fn zlib(input: &[u8], out: &mut [u8]) -> Result<(), String> {
    let mut z = flate2::Decompress::new(true);
    let status = z
        .decompress(input, out, flate2::FlushDecompress::Finish)
        .map_err(|e| e.to_string())?;
    let produced = z.total_out();
    match status {
        flate2::Status::StreamEnd if produced == out.len() as u64 => Ok(()),
        flate2::Status::StreamEnd => Err(format!(
            "stream ends after {produced} of {} bytes",
            out.len()
        )),
        _ if produced == out.len() as u64 => {
            Err(format!("stream continues past {} bytes", out.len()))
        }
        _ => Err(format!(
            "stream is cut short after {produced} of {} bytes",
            out.len()
        )),
    }
}

fn snappy_raw(input: &[u8], out: &mut [u8]) -> Result<(), String> {
    let len = snap::raw::decompress_len(input).map_err(|e| e.to_string())?;
    if len != out.len() {
        return Err(format!(
            "block decodes to {len} bytes, expected {}",
            out.len()
        ));
    }
    let n = snap::raw::Decoder::new()
        .decompress(input, out)
        .map_err(|e| e.to_string())?;
    if n != out.len() {
        return Err(format!("block decoded {n} of {} bytes", out.len()));
    }
    Ok(())
}

fn split_crc(input: &[u8]) -> Result<(u32, &[u8]), String> {
    match input {
        [a, b, c, d, rest @ ..] => Ok((u32::from_le_bytes([*a, *b, *c, *d]), rest)),
        _ => Err(format!("chunk of {} bytes has no checksum", input.len())),
    }
}

fn check_crc(expected: u32, data: &[u8]) -> Result<(), String> {
    let got = masked_crc32c(data);
    if got == expected {
        Ok(())
    } else {
        Err(format!(
            "checksum {got:#010x} does not match {expected:#010x}"
        ))
    }
}

/// CRC-32C (Castagnoli); hardware-accelerated where the CPU has it (SSE 4.2).
fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// The snappy frame format's masked checksum.
pub(crate) fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The CRC catalogue's check value for CRC-32C over "123456789".
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn snappy_frames_from_the_snap_encoder_decode() {
        use std::io::Write;
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut framed = Vec::new();
        snap::write::FrameEncoder::new(&mut framed)
            .write_all(&data)
            .unwrap();
        // Walk the chunks by hand: stream identifier, then data chunks.
        let mut pos = 0;
        let mut out = Vec::new();
        while pos < framed.len() {
            let kind = framed[pos];
            let len =
                u32::from_le_bytes([framed[pos + 1], framed[pos + 2], framed[pos + 3], 0]) as usize;
            let body = &framed[pos + 4..pos + 4 + len];
            let codec = match kind {
                0xff => None,
                0x00 => Some(Codec::SnappyFrameCompressed),
                0x01 => Some(Codec::SnappyFrameStored),
                k => panic!("unexpected chunk {k:#x}"),
            };
            if let Some(codec) = codec {
                let n = if codec == Codec::SnappyFrameStored {
                    len - 4
                } else {
                    snap::raw::decompress_len(&body[4..]).unwrap()
                };
                let mut chunk = vec![0u8; n];
                decompress(codec, body, &mut chunk).unwrap();
                out.extend_from_slice(&chunk);
                // A flipped data byte must fail (bad checksum or bad block), never panic.
                let mut bad = body.to_vec();
                let last = bad.len() - 1;
                bad[last] ^= 0x55;
                assert!(decompress(codec, &bad, &mut chunk).is_err());
            }
            pos += 4 + len;
        }
        assert_eq!(out, data);
    }

    #[test]
    fn zlib_length_must_match_exactly() {
        use std::io::Write;
        let data = vec![0x5au8; 4096];
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&data).unwrap();
        let z = enc.finish().unwrap();
        let mut out = vec![0u8; 4096];
        decompress(Codec::Zlib, &z, &mut out).unwrap();
        assert_eq!(out, data);
        let mut short = vec![0u8; 4095];
        assert!(decompress(Codec::Zlib, &z, &mut short).is_err());
        let mut long = vec![0u8; 4097];
        assert!(decompress(Codec::Zlib, &z, &mut long).is_err());
        for cut in [0, 1, 2, z.len() / 2, z.len() - 1] {
            assert!(
                decompress(Codec::Zlib, &z[..cut], &mut out).is_err(),
                "cut at {cut}"
            );
        }
    }
}
