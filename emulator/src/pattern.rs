//! A known pseudo-random byte pattern for test and benchmark images, and an in-memory
//! [`PhysMem`] that serves it.
//!
//! Invariant: the byte at physical address `a` is a pure function of `a` alone
//! ([`pattern_bytes`]): the 8-byte word at `a & !7` is SplitMix64 of `a >> 3`, little-endian.
//! So any reader can check any bytes it got without holding the image, and no two nearby
//! words are equal (a misplaced chunk is always detected).

use crate::mem::{MemError, PhysAddr, PhysMem, PhysRange};
use std::io::Write;
use std::path::Path;

/// SplitMix64 of `x`.
pub const fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fill `buf` with the pattern bytes of `addr..addr+buf.len()` (wrapping at the top of the
/// address space).
pub fn pattern_bytes(addr: u64, buf: &mut [u8]) {
    let mut a = addr;
    let mut i = 0;
    // unaligned head
    while i < buf.len() && a & 7 != 0 {
        buf[i] = (splitmix64(a >> 3) >> (8 * (a & 7))) as u8;
        i += 1;
        a = a.wrapping_add(1);
    }
    let mut words = buf[i..].chunks_exact_mut(8);
    for w in &mut words {
        w.copy_from_slice(&splitmix64(a >> 3).to_le_bytes());
        a = a.wrapping_add(8);
    }
    let tail = words.into_remainder();
    for b in tail {
        *b = (splitmix64(a >> 3) >> (8 * (a & 7))) as u8;
        a = a.wrapping_add(1);
    }
}

/// Write a raw image of `len` bytes holding the pattern of physical `base..base+len`.
pub fn write_pattern_file(path: &Path, base: u64, len: u64) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        pattern_bytes(base + done, &mut buf[..n]);
        f.write_all(&buf[..n])?;
        done += n as u64;
    }
    f.flush()
}

/// The pattern over some ranges of physical memory, computed on read (nothing stored).
#[derive(Debug, Clone)]
pub struct PatternMem {
    ranges: Vec<PhysRange>,
}

impl PatternMem {
    /// The pattern over `ranges` (sorted, non-overlapping).
    pub fn new(ranges: Vec<PhysRange>) -> PatternMem {
        PatternMem { ranges }
    }
}

impl PhysMem for PatternMem {
    fn read_phys(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let len = buf.len() as u64;
        let covered = self.ranges.iter().any(|r| {
            r.start <= addr && addr.0.checked_add(len).is_some_and(|end| end <= r.end.0)
        });
        if !covered {
            let bad = (0..len.max(1))
                .map(|i| addr.0.wrapping_add(i))
                .find(|a| !self.ranges.iter().any(|r| r.contains(PhysAddr(*a))))
                .unwrap_or(addr.0);
            return Err(MemError::Unmapped { addr: PhysAddr(bad) });
        }
        pattern_bytes(addr.0, buf);
        Ok(())
    }

    fn ranges(&self) -> Vec<PhysRange> {
        self.ranges.clone()
    }

    fn describe(&self) -> String {
        format!("test pattern, {} ranges", self.ranges.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_window_agrees_with_bytewise_definition() {
        let mut whole = vec![0u8; 64];
        pattern_bytes(0x1000, &mut whole);
        for start in 0..16 {
            for len in 0..40 {
                let mut part = vec![0u8; len];
                pattern_bytes(0x1000 + start as u64, &mut part);
                assert_eq!(part, whole[start..start + len]);
            }
        }
        assert_eq!(&whole[..8], &splitmix64(0x1000 >> 3).to_le_bytes());
    }

    #[test]
    fn file_matches_pattern() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        write_pattern_file(&p, 0x10000, 3 << 20).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let mut want = vec![0u8; bytes.len()];
        pattern_bytes(0x10000, &mut want);
        assert_eq!(bytes, want);
    }
}
