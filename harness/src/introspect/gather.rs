//! Reading scattered fields of many structures of one type with few, batched reads.
//!
//! A [`Plan`] merges the fields of a structure into a few contiguous ranges (fields closer than
//! `max_gap` share one read); [`Plan::read_many`] reads those ranges for many structures in one
//! batch, and a [`Record`] answers field reads from the bytes it got.
//!
//! Invariant: a `Record` only answers for offsets that the plan covered; asking for anything
//! else is an error, not a silent zero.

use super::addr::KVirt;
use emulator::bytes::Bytes;
use super::kspace::{KSpaceError, KernelSpace};

/// Which byte ranges of a structure to read.
#[derive(Debug, Clone)]
pub struct Plan {
    ranges: Vec<(u64, usize)>,
}

impl Plan {
    /// Cover every `(offset, len)` field, merging fields separated by less than `max_gap`.
    pub fn new(fields: &[(u64, usize)], max_gap: u64) -> Plan {
        // Offsets and lengths come from a layout (type information is untrusted): saturate
        // rather than wrap; a range past the struct then fails its read, it does not alias.
        let mut fs: Vec<(u64, u64)> = fields.iter().map(|&(o, l)| (o, o.saturating_add(l as u64))).collect();
        fs.sort_unstable();
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for (s, e) in fs {
            match ranges.last_mut() {
                Some(last) if s <= last.1.saturating_add(max_gap) => last.1 = last.1.max(e),
                _ => ranges.push((s, e)),
            }
        }
        Plan { ranges: ranges.into_iter().map(|(s, e)| (s, (e - s) as usize)).collect() }
    }

    /// Number of reads per structure.
    pub fn reads_per_struct(&self) -> usize {
        self.ranges.len()
    }

    /// Read the planned ranges of every structure in `bases`, in one batch.
    pub fn read_many(&self, space: &KernelSpace<'_>, bases: &[KVirt]) -> Vec<Result<Record, KSpaceError>> {
        self.records(bases, &mut space.read_many(&self.regions(bases)).into_iter())
    }

    /// The ranges to read for `bases`, in order (for a caller that adds them to a larger
    /// batch and hands the answers to [`Plan::records`]).
    pub fn regions(&self, bases: &[KVirt]) -> Vec<(KVirt, usize)> {
        bases.iter().flat_map(|b| self.ranges.iter().map(move |&(o, l)| (b.wrapping_add(o), l))).collect()
    }

    /// The records of `bases` from the answers to their [`Plan::regions`], taken from `results`.
    pub fn records(&self, bases: &[KVirt], results: &mut impl Iterator<Item = Result<Vec<u8>, KSpaceError>>) -> Vec<Result<Record, KSpaceError>> {
        bases
            .iter()
            .map(|&base| {
                let mut parts = Vec::with_capacity(self.ranges.len());
                let mut err = None;
                for &(o, _) in &self.ranges {
                    match results.next() {
                        Some(Ok(bytes)) => parts.push((o, bytes)),
                        Some(Err(e)) => {
                            err.get_or_insert(e);
                        }
                        None => {
                            err.get_or_insert(KSpaceError::Unmapped { addr: base });
                        }
                    }
                }
                match err {
                    Some(e) => Err(e),
                    None => Ok(Record { base, parts }),
                }
            })
            .collect()
    }
}

/// A field read from outside what the plan covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("field at +{offset:#x} ({len} bytes) of the structure at {base} was not read")]
pub struct NotRead {
    pub base: KVirt,
    pub offset: u64,
    pub len: usize,
}

/// The planned bytes of one structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub base: KVirt,
    parts: Vec<(u64, Vec<u8>)>,
}

impl Record {
    pub fn bytes(&self, offset: u64, len: usize) -> Result<&[u8], NotRead> {
        let nr = NotRead { base: self.base, offset, len };
        let end = offset.checked_add(len as u64).ok_or(nr)?;
        let (start, data) = self.parts.iter().find(|(s, d)| *s <= offset && end <= s + d.len() as u64).ok_or(nr)?;
        Bytes::new(data).slice((offset - start) as usize, len).map_err(|_| nr)
    }

    pub fn uint(&self, offset: u64, size: u64) -> Result<u64, NotRead> {
        let b = self.bytes(offset, size as usize)?;
        Ok(Bytes::new(b).uint(0, size as usize).unwrap_or(0))
    }

    pub fn u64(&self, offset: u64) -> Result<u64, NotRead> {
        self.uint(offset, 8)
    }

    pub fn u32(&self, offset: u64) -> Result<u32, NotRead> {
        Ok(self.uint(offset, 4)? as u32)
    }

    pub fn i32(&self, offset: u64) -> Result<i32, NotRead> {
        Ok(self.uint(offset, 4)? as u32 as i32)
    }

    pub fn ptr(&self, offset: u64) -> Result<KVirt, NotRead> {
        self.u64(offset).map(KVirt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_merges_close_fields() {
        let p = Plan::new(&[(2416, 4), (24, 4), (2420, 4), (44, 4), (3072, 8), (2976, 16)], 512);
        assert_eq!(p.ranges, vec![(24, 24), (2416, 8), (2976, 104)]);
        let p = Plan::new(&[(0, 8), (4, 8)], 0);
        assert_eq!(p.ranges, vec![(0, 12)]);
        // Offsets near 2^64 (from untrusted type information) saturate instead of wrapping.
        let p = Plan::new(&[(u64::MAX - 2, 8), (0, 8)], u64::MAX);
        assert_eq!(p.ranges, vec![(0, (u64::MAX) as usize)]);
    }

    #[test]
    fn record_refuses_unread_fields() {
        let r = Record { base: KVirt(0x1000), parts: vec![(16, vec![1, 0, 0, 0, 2, 0, 0, 0])] };
        assert_eq!(r.u32(16), Ok(1));
        assert_eq!(r.u32(20), Ok(2));
        assert!(r.u32(22).is_err());
        assert!(r.u64(8).is_err());
        assert!(r.u32(u64::MAX - 1).is_err());
    }
}
