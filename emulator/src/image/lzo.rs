//! LZO1X decompression (the format liblzo2's `lzo1x_1_compress` writes, used by kdump
//! `DUMP_DH_COMPRESSED_LZO` pages), written for untrusted input.
//!
//! Why our own: the pure-Rust crates on crates.io were either GPL (`lzo1x`, `rust-lzo`,
//! `minilzo-rs`, incompatible with this workspace's MIT/Apache licence) or index and subtract
//! without checks on malformed input (`lzokay-native` 0.1: `result[lbcur + i]` and
//! `len - dist` underflow), i.e. panic on a hostile page. This decoder follows the
//! instruction encoding as documented in lzokay and the Linux kernel's `lzo1x_decompress_safe`.
//!
//! Invariant: output goes only into the caller's fixed buffer; every step consumes at least one
//! input byte, so decoding ends within `input.len()` instructions; any out-of-range length,
//! distance or read is an [`LzoError`].

/// Why an LZO stream did not decode to exactly the expected bytes.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LzoError {
    #[error("input ends inside an instruction at byte {0}")]
    InputOverrun(usize),
    #[error("instruction at input byte {at} writes past {limit} output bytes")]
    OutputOverrun { at: usize, limit: usize },
    #[error(
        "instruction at input byte {at} copies from {dist} bytes back with only {have} written"
    )]
    LookBehind { at: usize, dist: usize, have: usize },
    #[error("end marker has length {0}, expected 3")]
    BadEndMarker(usize),
    #[error("stream ends after {got} of {want} bytes")]
    Short { got: usize, want: usize },
    #[error("{0} bytes follow the end marker")]
    TrailingInput(usize),
}

struct Input<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> Result<u8, LzoError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(LzoError::InputOverrun(self.pos))?;
        self.pos += 1;
        Ok(b)
    }
    fn le16(&mut self) -> Result<usize, LzoError> {
        let lo = self.byte()? as usize;
        let hi = self.byte()? as usize;
        Ok(lo | hi << 8)
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], LzoError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(LzoError::InputOverrun(self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    /// A length extension: each zero byte adds 255, the first non-zero byte ends it.
    fn extension(&mut self) -> Result<usize, LzoError> {
        let mut n = 0usize;
        loop {
            match self.byte()? {
                0 => n = n.saturating_add(255),
                b => return Ok(n.saturating_add(b as usize)),
            }
        }
    }
}

struct Output<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Output<'_> {
    fn literals(&mut self, src: &[u8], at: usize) -> Result<(), LzoError> {
        let end = self.end(src.len(), at)?;
        self.buf[self.pos..end].copy_from_slice(src);
        self.pos = end;
        Ok(())
    }
    fn back_copy(&mut self, dist: usize, len: usize, at: usize) -> Result<(), LzoError> {
        if dist == 0 || dist > self.pos {
            return Err(LzoError::LookBehind {
                at,
                dist,
                have: self.pos,
            });
        }
        let end = self.end(len, at)?;
        // Byte by byte: source and destination may overlap (run-length copies).
        for i in self.pos..end {
            self.buf[i] = self.buf[i - dist];
        }
        self.pos = end;
        Ok(())
    }
    fn end(&self, len: usize, at: usize) -> Result<usize, LzoError> {
        self.pos
            .checked_add(len)
            .filter(|&e| e <= self.buf.len())
            .ok_or(LzoError::OutputOverrun {
                at,
                limit: self.buf.len(),
            })
    }
}

/// Decode the LZO1X stream `input` into all of `out`.
pub fn decompress(input: &[u8], out: &mut [u8]) -> Result<(), LzoError> {
    let want = out.len();
    let mut ip = Input { buf: input, pos: 0 };
    let mut op = Output { buf: out, pos: 0 };
    // Literals copied by the previous instruction: 0..=3, or 4 meaning "a run of 4 or more".
    let mut state = 0usize;

    if let Some(&first) = input.first() {
        if first > 17 {
            ip.pos = 1;
            let n = (first - 17) as usize;
            op.literals(ip.take(n)?, 0)?;
            state = if n < 4 { n } else { 4 };
        }
    }
    loop {
        let at = ip.pos;
        let inst = ip.byte()? as usize;
        let (len, dist, next);
        if inst >= 64 {
            // M2: 3..8 bytes from within 2 KiB.
            let h = ip.byte()? as usize;
            len = (inst >> 5) + 1;
            dist = (h << 3) + ((inst >> 2) & 7) + 1;
            next = inst & 3;
        } else if inst >= 32 {
            // M3: from within 16 KiB.
            let mut l = inst & 31;
            if l == 0 {
                l = 31usize.saturating_add(ip.extension()?);
            }
            len = l + 2;
            let d = ip.le16()?;
            dist = (d >> 2) + 1;
            next = d & 3;
        } else if inst >= 16 {
            // M4: from 16..48 KiB back, or the end-of-stream marker.
            let mut l = inst & 7;
            if l == 0 {
                l = 7usize.saturating_add(ip.extension()?);
            }
            len = l + 2;
            let d = ip.le16()?;
            let far = ((inst & 8) << 11) + (d >> 2);
            if far == 0 {
                if len != 3 {
                    return Err(LzoError::BadEndMarker(len));
                }
                break;
            }
            dist = far + 0x4000;
            next = d & 3;
        } else if state == 0 {
            // A literal run of 4 or more bytes.
            let mut l = inst;
            if l == 0 {
                l = 15usize.saturating_add(ip.extension()?);
            }
            let n = l.saturating_add(3);
            op.literals(ip.take(n)?, at)?;
            state = 4;
            continue;
        } else {
            let h = ip.byte()? as usize;
            next = inst & 3;
            if state < 4 {
                // M1 after a short literal run: 2 bytes from within 1 KiB.
                len = 2;
                dist = (h << 2) + (inst >> 2) + 1;
            } else {
                // M1 after a long literal run: 3 bytes from 2..3 KiB back.
                len = 3;
                dist = (h << 2) + (inst >> 2) + 2049;
            }
        }
        op.back_copy(dist, len, at)?;
        op.literals(ip.take(next)?, at)?;
        state = next;
    }
    if ip.pos != input.len() {
        return Err(LzoError::TrailingInput(input.len() - ip.pos));
    }
    if op.pos != want {
        return Err(LzoError::Short { got: op.pos, want });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xorshift(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    /// Inputs that exercise literal runs, short and long matches, and long length extensions.
    fn samples() -> Vec<Vec<u8>> {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let random: Vec<u8> = (0..4096).map(|_| xorshift(&mut seed) as u8).collect();
        let text = b"the quick brown fox jumps over the lazy dog; ".repeat(200);
        let mut mixed = Vec::new();
        for i in 0..64u32 {
            mixed.extend_from_slice(&random[(i as usize * 37) % 3000..][..(i as usize % 50) + 1]);
            mixed.extend(vec![(i % 7) as u8; (i as usize * 13) % 700]);
            mixed.extend_from_slice(&text[..(i as usize * 11) % 400]);
        }
        let mut far = random.clone();
        far.extend(vec![0u8; 20000]);
        far.extend_from_slice(&random);
        vec![
            vec![0u8; 4096],
            vec![0xabu8; 70000],
            random,
            text,
            mixed,
            far,
            vec![1, 2, 3],
        ]
    }

    #[test]
    fn round_trips_streams_from_an_independent_compressor() {
        for (i, data) in samples().iter().enumerate() {
            let compressed = lzokay_native::compress(data).unwrap();
            let mut out = vec![0u8; data.len()];
            decompress(&compressed, &mut out).unwrap_or_else(|e| panic!("sample {i}: {e}"));
            assert_eq!(&out, data, "sample {i}");
        }
    }

    #[test]
    fn wrong_output_size_is_an_error() {
        let data = b"hello hello hello hello hello".repeat(10);
        let compressed = lzokay_native::compress(&data).unwrap();
        let mut short = vec![0u8; data.len() - 1];
        assert!(decompress(&compressed, &mut short).is_err());
        let mut long = vec![0u8; data.len() + 1];
        assert_eq!(
            decompress(&compressed, &mut long),
            Err(LzoError::Short {
                got: data.len(),
                want: data.len() + 1
            })
        );
    }

    #[test]
    fn mutated_streams_never_panic() {
        let mut seed = 42u64;
        for data in samples() {
            let compressed = lzokay_native::compress(&data).unwrap();
            let mut out = vec![0u8; data.len()];
            for cut in 0..compressed.len().min(300) {
                let _ = decompress(&compressed[..cut], &mut out);
            }
            for _ in 0..2000 {
                let mut bad = compressed.clone();
                let i = (xorshift(&mut seed) as usize) % bad.len();
                bad[i] = xorshift(&mut seed) as u8;
                let _ = decompress(&bad, &mut out);
            }
        }
        // Pure noise, including streams of zero bytes (long length extensions).
        for n in 0..200 {
            let noise: Vec<u8> = (0..n * 7).map(|_| xorshift(&mut seed) as u8).collect();
            let _ = decompress(&noise, &mut [0u8; 4096]);
            let _ = decompress(&vec![0u8; n * 50], &mut [0u8; 4096]);
        }
    }
}
