//! A printk ring cut out of guest memory into one self-contained byte string: the
//! `printk_ringbuffer` and a prefix of each of its arrays. The fuzz target's input format, and
//! its seeds' (cut from corpus dumps by `tests/corpus_dmesg.rs`).
//!
//! ```text
//!   "NDPRINTK" | desc_ring_size u8 | info_size u8 | ring_len u16 | ring
//!             | descs_len u32 | descs | infos_len u32 | infos | data (the rest)
//! ```
//!
//! Invariant: [`Snapshot::parse`] never panics and copies no more than its input; lengths are
//! checked against what is left.

use super::layout::PrbLayout;
use super::ring::{decode, Decoded, HeaderError, RingBytes, RingHeader};
use emulator::bytes::Bytes;

pub const MAGIC: &[u8; 8] = b"NDPRINTK";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The two sizes of [`PrbLayout::linux`].
    pub desc_ring_size: u8,
    pub info_size: u8,
    pub ring: Vec<u8>,
    pub descs: Vec<u8>,
    pub infos: Vec<u8>,
    pub data: Vec<u8>,
}

impl Snapshot {
    pub fn layout(&self) -> PrbLayout {
        PrbLayout::linux(self.desc_ring_size as u64, self.info_size as u64)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[self.desc_ring_size, self.info_size]);
        out.extend_from_slice(&(self.ring.len().min(u16::MAX as usize) as u16).to_le_bytes());
        out.extend_from_slice(&self.ring[..self.ring.len().min(u16::MAX as usize)]);
        for a in [&self.descs, &self.infos] {
            out.extend_from_slice(&(a.len() as u32).to_le_bytes());
            out.extend_from_slice(a);
        }
        out.extend_from_slice(&self.data);
        out
    }

    pub fn parse(bytes: &[u8]) -> Option<Snapshot> {
        let b = Bytes::new(bytes);
        if b.slice(0, 8).ok()? != MAGIC {
            return None;
        }
        let (desc_ring_size, info_size) = (b.u8(8).ok()?, b.u8(9).ok()?);
        let ring_len = b.u16(10).ok()? as usize;
        let ring = b.slice(12, ring_len).ok()?.to_vec();
        let mut at = 12 + ring_len;
        let mut arrays = Vec::new();
        for _ in 0..2 {
            let n = b.u32(at).ok()? as usize;
            arrays.push(b.slice(at + 4, n).ok()?.to_vec());
            at += 4 + n;
        }
        let data = bytes.get(at..)?.to_vec();
        let infos = arrays.pop()?;
        let descs = arrays.pop()?;
        Some(Snapshot { desc_ring_size, info_size, ring, descs, infos, data })
    }

    /// The ring's header and its records.
    pub fn decode(&self) -> Result<(RingHeader, Decoded), HeaderError> {
        let l = self.layout();
        let h = RingHeader::parse(&l, &self.ring)?;
        Ok((h, decode(&l, &h, RingBytes { descs: &self.descs, infos: &self.infos, data: &self.data })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let s = Snapshot { desc_ring_size: 48, info_size: 88, ring: vec![1; 88], descs: vec![2; 24], infos: vec![3; 5], data: vec![4; 7] };
        let e = s.encode();
        assert_eq!(Snapshot::parse(&e), Some(s));
        for n in 0..e.len() - 7 {
            assert_eq!(Snapshot::parse(&e[..n]), None, "cut at {n}");
        }
    }
}
