//! The kernel structures `hidden`'s views read, cut out of guest memory into one
//! self-contained byte string: the fuzz target's input format, and its seed's (cut from
//! deb-amd64's running dump by `tests/corpus_hidden.rs` with a reader that records every read).
//!
//! ```text
//!   "NDHIDDN1" | header_len u32 | header (JSON: layouts and roots) | { addr u64 | len u32 | bytes[len] }*
//! ```
//!
//! Invariant: [`Cut::parse`] never panics and copies no more than its input; lengths are checked
//! against what is left, at most [`MAX_REGIONS`] regions of at most [`MAX_REGION`] bytes kept.

use emulator::bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::modtree::{self, TreeLayout};
use crate::introspect::pidns::{self, PidLayout};
use super::runqueue::{self, RqLayout};

pub const MAGIC: &[u8; 8] = b"NDHIDDN1";
pub const MAX_REGIONS: usize = 8192;
pub const MAX_REGION: usize = 64 << 10;
const MAX_HEADER: usize = 64 << 10;

/// What the views start from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub pid: PidLayout,
    pub chunk: u64,
    pub init_pid_ns: u64,
    pub rq: RqLayout,
    pub runqueues: u64,
    pub per_cpu_offset: Option<u64>,
    pub nr_cpus: u64,
    pub init_task: u64,
    pub tree: TreeLayout,
    pub mod_tree: u64,
    /// Listed tasks (address, pid) for the pid layout's inference, `task_size` bytes each.
    pub samples: Vec<(u64, i32)>,
    pub task_size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub header: Header,
    pub regions: Vec<(u64, Vec<u8>)>,
}

impl Cut {
    pub fn encode(&self) -> Vec<u8> {
        let h = serde_json::to_vec(&self.header).unwrap_or_default();
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(h.len() as u32).to_le_bytes());
        out.extend_from_slice(&h);
        for (addr, bytes) in self.regions.iter().take(MAX_REGIONS) {
            let len = bytes.len().min(MAX_REGION);
            out.extend_from_slice(&addr.to_le_bytes());
            out.extend_from_slice(&(len as u32).to_le_bytes());
            out.extend_from_slice(&bytes[..len]);
        }
        out
    }

    pub fn parse(bytes: &[u8]) -> Option<Cut> {
        let b = Bytes::new(bytes);
        if b.slice(0, 8).ok()? != MAGIC {
            return None;
        }
        let hlen = b.u32(8).ok()? as usize;
        if hlen > MAX_HEADER {
            return None;
        }
        let header: Header = serde_json::from_slice(b.slice(12, hlen).ok()?).ok()?;
        let mut regions = Vec::new();
        let mut at = 12 + hlen;
        while at < bytes.len() && regions.len() < MAX_REGIONS {
            let addr = b.u64(at).ok()?;
            let len = b.u32(at + 8).ok()? as usize;
            if len > MAX_REGION {
                return None;
            }
            regions.push((addr, b.slice(at + 12, len).ok()?.to_vec()));
            at += 12 + len;
        }
        Some(Cut { header, regions })
    }

    /// Reads from the cut as guest memory: bytes inside one region.
    pub fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, String> {
        self.regions
            .iter()
            .find_map(|(a, b)| {
                let at = usize::try_from(addr.checked_sub(*a)?).ok()?;
                b.get(at..at.checked_add(len)?)
            })
            .map(<[u8]>::to_vec)
            .ok_or_else(|| format!("{len} bytes at {addr:#x} are not in the cut"))
    }

    fn read_many(&self, regions: &[(u64, usize)]) -> super::Reads {
        regions.iter().map(|&(a, l)| self.read(a, l)).collect()
    }

    /// Every view on the cut: the pid layout inferred from the samples (`Err` if not), the pid
    /// walk with the header's layout, the run queues and `mod_tree`.
    pub fn run(&self) -> (Result<pidns::Inferred, String>, pidns::PidWalk, runqueue::RqWalk, modtree::TreeWalk) {
        let h = &self.header;
        let mut read = |r: &[(u64, usize)]| self.read_many(r);
        let bytes: Vec<(u64, i32, Vec<u8>)> =
            h.samples.iter().take(pidns::MAX_SAMPLES).filter_map(|&(a, p)| Some((a, p, self.read(a, h.task_size.min(1 << 15) as usize).ok()?))).collect();
        let samples: Vec<pidns::Sample<'_>> = bytes.iter().map(|(a, p, b)| pidns::Sample { addr: *a, pid: *p, bytes: b }).collect();
        let kptr = |v: u64| v.is_multiple_of(8) && v >= 0xff00_0000_0000_0000;
        let inferred = pidns::infer(&samples, &kptr, &mut read);
        if let Ok(i) = &inferred {
            if let Ok((x, head)) = pidns::locate_xarray(i.ns, &mut read) {
                if let Ok(b) = self.read(i.ns.wrapping_add(x).wrapping_add(head), 8) {
                    let _ = pidns::chunk_of_root(Bytes::new(&b).u64(0).unwrap_or(0).wrapping_sub(2), &mut read);
                }
            }
        }
        let pids = pidns::walk(&h.pid, h.chunk, h.init_pid_ns, &mut read);
        let rqs = runqueue::walk(&h.rq, h.runqueues, h.per_cpu_offset, h.nr_cpus, h.init_task, &mut read);
        let tree = modtree::walk(&h.tree, h.mod_tree, &mut read);
        (inferred, pids, rqs, tree)
    }
}
