//! A module list cut out of guest memory into one self-contained byte string: the `modules`
//! list head, the first bytes of each `struct module`, and the `struct module_use` entries of
//! the modules in use. The fuzz target's input format, and
//! its seed's (cut from a corpus dump by `tests/corpus_lsmod.rs`).
//!
//! ```text
//!   "NDLSMOD1" | head u64 | head_bytes[16] | { addr u64 | len u16 | bytes[len] }*
//! ```
//!
//! Invariant: [`Snapshot::parse`] never panics and copies no more than its input; lengths are
//! checked against what is left, and at most [`MAX_REGIONS`] regions are kept.

use emulator::bytes::Bytes;

use super::infer::{infer, Inferred};
use super::layout::ModuleLayout;
use super::list::{walk, Walked};

pub const MAGIC: &[u8; 8] = b"NDLSMOD1";
/// Most module regions a snapshot holds.
pub const MAX_REGIONS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub head: u64,
    pub head_bytes: [u8; 16],
    /// (address of a `struct module` or `struct module_use`, its first bytes).
    pub modules: Vec<(u64, Vec<u8>)>,
}

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&self.head.to_le_bytes());
        out.extend_from_slice(&self.head_bytes);
        for (addr, bytes) in self.modules.iter().take(MAX_REGIONS) {
            let len = bytes.len().min(u16::MAX as usize);
            out.extend_from_slice(&addr.to_le_bytes());
            out.extend_from_slice(&(len as u16).to_le_bytes());
            out.extend_from_slice(&bytes[..len]);
        }
        out
    }

    pub fn parse(bytes: &[u8]) -> Option<Snapshot> {
        let b = Bytes::new(bytes);
        if b.slice(0, 8).ok()? != MAGIC {
            return None;
        }
        let head = b.u64(8).ok()?;
        let head_bytes: [u8; 16] = b.slice(16, 16).ok()?.try_into().ok()?;
        let mut modules = Vec::new();
        let mut at = 32usize;
        while at < bytes.len() && modules.len() < MAX_REGIONS {
            let addr = b.u64(at).ok()?;
            let len = b.u16(at + 8).ok()? as usize;
            let body = b.slice(at + 10, len).ok()?;
            modules.push((addr, body.to_vec()));
            at += 10 + len;
        }
        Some(Snapshot { head, head_bytes, modules })
    }

    /// Reads from the snapshot as guest memory: the head, or bytes inside one region.
    pub fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, String> {
        if addr == self.head && len <= 16 {
            return Ok(self.head_bytes[..len].to_vec());
        }
        self.modules
            .iter()
            .find_map(|(a, b)| {
                let at = usize::try_from(addr.checked_sub(*a)?).ok()?;
                b.get(at..at.checked_add(len)?)
            })
            .map(<[u8]>::to_vec)
            .ok_or_else(|| format!("{len} bytes at {addr:#x} are not in the snapshot"))
    }

    /// The list walked with `layout`.
    pub fn walk(&self, layout: &ModuleLayout) -> Walked {
        walk(layout, self.head, &mut |a, len| self.read(a, len))
    }

    /// The `inferred` method on the snapshot's modules, in list order from the head (as
    /// `lsmod` samples them).
    pub fn infer(&self) -> Result<Inferred, String> {
        let mut samples: Vec<(u64, &[u8])> = Vec::new();
        let mut next = u64::from_le_bytes(self.head_bytes[..8].try_into().unwrap_or_default());
        while next != self.head && samples.len() < super::infer::MAX_SAMPLES {
            let Some((a, b)) = self.modules.iter().find(|(a, _)| a.wrapping_add(8) == next) else { break };
            if samples.iter().any(|(s, _)| s == a) {
                break;
            }
            samples.push((*a, b.as_slice()));
            next = Bytes::new(b).u64(8).unwrap_or(self.head);
        }
        infer(&samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_short_input() {
        let s = Snapshot { head: 0xffff_ffff_8200_0000, head_bytes: [7; 16], modules: vec![(0xffff_ffff_c000_0000, vec![1, 2, 3])] };
        assert_eq!(Snapshot::parse(&s.encode()), Some(s.clone()));
        let enc = s.encode();
        assert_eq!(Snapshot::parse(&enc[..enc.len() - 1]), None);
        assert_eq!(Snapshot::parse(b"NDLSMOD1"), None);
        assert_eq!(s.read(0xffff_ffff_c000_0000, 4), Err("4 bytes at 0xffffffffc0000000 are not in the snapshot".into()));
    }
}
