//! Physical memory: typed addresses, the one trait every memory source implements, and every
//! wrapper over it (memflow-style middleware: each implements the trait it wraps, so an
//! analysis runs unchanged with or without it).
//!
//! ```text
//!   analysis ──▶ Counting ──▶ Cache ──▶ Deadline ──▶ any PhysMem (image, replay, requester)
//!                (reads,      (pages)    (time        Patched (tests: bytes replaced)
//!                 batches)               budget)
//! ```
//!
//! Invariant: a [`PhysAddr`] is a guest-physical address and nothing else; kernel virtual
//! addresses and file offsets have their own types elsewhere and never convert implicitly.
//! [`PhysMem`] is read-only: nothing reached through it can modify the target. A wrapper never
//! changes what a successful read returns (except [`Patched`], whose purpose that is) and keeps
//! batches as batches, so pipelining backends keep pipelining underneath.

/// `ranges` and `describe` for a wrapper whose memory is that of its `inner` field: a wrapper
/// changes how reads go, never which memory there is.
macro_rules! same_memory_as_inner {
    () => {
        fn ranges(&self) -> Vec<PhysRange> {
            self.inner.ranges()
        }
        fn ranges_are_ram(&self) -> bool {
            self.inner.ranges_are_ram()
        }
        fn describe(&self) -> String {
            self.inner.describe()
        }
    };
}

pub mod cache;
pub mod counting;
pub mod deadline;
pub mod patched;

pub use cache::{Cache, CacheStats, CACHE_PAGE};
pub use counting::{Counting, Counts};
pub use deadline::Deadline;
pub use patched::Patched;

/// What every typed address or offset of the workspace (`PhysAddr`, `FileOffset`, harness's
/// `KVirt` and `UVirt`: a `pub u64` newtype) has, one way: `new`, `get`, `checked_add`, and how
/// it prints: `Debug` as `Name(0x…)`, `Display` as `<label> 0x…` (the space named), `LowerHex`
/// as the bare number.
#[macro_export]
macro_rules! address_impls {
    ($name:ident, $label:literal) => {
        impl $name {
            pub const fn new(raw: u64) -> Self {
                $name(raw)
            }
            pub const fn get(self) -> u64 {
                self.0
            }
            /// `self + off`, or `None` on overflow.
            pub fn checked_add(self, off: u64) -> Option<Self> {
                self.0.checked_add(off).map($name)
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, concat!($label, " {:#x}"), self.0)
            }
        }

        impl ::std::fmt::LowerHex for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::LowerHex::fmt(&self.0, f)
            }
        }
    };
}

/// A guest-physical address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct PhysAddr(pub u64);

address_impls!(PhysAddr, "phys");

impl PhysAddr {
    /// Offset of `self` inside a page of `page_size` bytes (a power of two).
    pub const fn page_offset(self, page_size: u64) -> u64 {
        self.0 & (page_size - 1)
    }
}

/// A half-open range `[start, end)` of physical addresses.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct PhysRange {
    pub start: PhysAddr,
    pub end: PhysAddr,
}

impl PhysRange {
    pub fn new(start: u64, end: u64) -> Self {
        PhysRange { start: PhysAddr(start), end: PhysAddr(end) }
    }
    pub fn len(&self) -> u64 {
        self.end.0.saturating_sub(self.start.0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn contains(&self, addr: PhysAddr) -> bool {
        self.start <= addr && addr < self.end
    }
}

/// Why a physical read failed. Every variant carries the address that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemError {
    /// No backing for this address (hole in a dump, past the end of RAM, PCIe UR).
    #[error("{addr}: not backed by this memory source")]
    Unmapped { addr: PhysAddr },
    /// The source's bytes for this address are malformed (corrupt compressed page, bad header).
    #[error("{addr}: corrupt source data: {reason}")]
    Corrupt { addr: PhysAddr, reason: String },
    /// Reading the underlying file or device failed.
    #[error("{addr}: I/O error: {source}")]
    Io { addr: PhysAddr, source: std::io::Error },
    /// The bytes exist but are unknown (e.g. cut off by a capture's snap length).
    #[error("{addr}: bytes unknown in this source ({reason})")]
    Unknown { addr: PhysAddr, reason: String },
    /// A DMA completion reported an error status (UR, CA, CRS).
    #[error("{addr}: completion status {status}")]
    Completion { addr: PhysAddr, status: String },
    /// No completion arrived in time, after all retries.
    #[error("{addr}: timed out after {attempts} attempts")]
    Timeout { addr: PhysAddr, attempts: u32 },
}

/// A copy of the error (an I/O error keeps its kind and message), for the reads of a batch
/// that one failed read answers.
impl Clone for MemError {
    fn clone(&self) -> MemError {
        match self {
            MemError::Unmapped { addr } => MemError::Unmapped { addr: *addr },
            MemError::Corrupt { addr, reason } => MemError::Corrupt { addr: *addr, reason: reason.clone() },
            MemError::Io { addr, source } => MemError::Io { addr: *addr, source: std::io::Error::new(source.kind(), source.to_string()) },
            MemError::Unknown { addr, reason } => MemError::Unknown { addr: *addr, reason: reason.clone() },
            MemError::Completion { addr, status } => MemError::Completion { addr: *addr, status: status.clone() },
            MemError::Timeout { addr, attempts } => MemError::Timeout { addr: *addr, attempts: *attempts },
        }
    }
}

impl MemError {
    /// The address that failed.
    pub fn addr(&self) -> PhysAddr {
        match self {
            MemError::Unmapped { addr }
            | MemError::Corrupt { addr, .. }
            | MemError::Io { addr, .. }
            | MemError::Unknown { addr, .. }
            | MemError::Completion { addr, .. }
            | MemError::Timeout { addr, .. } => *addr,
        }
    }
}

/// One read in a batch: fill `buf` from `addr`.
#[derive(Debug)]
pub struct ReadOp<'a> {
    pub addr: PhysAddr,
    pub buf: &'a mut [u8],
}

/// Read-only access to a machine's physical memory.
///
/// Implementations: memory images (`image::*`), replayed captures, and the NetTLP DMA requester
/// in `harness`. Reads are batched by default so a high-latency backend can pipeline them;
/// wrappers (caching, counting, delay) implement the same trait they wrap.
pub trait PhysMem: Send + Sync {
    /// Fill `buf` with the bytes at `addr..addr+buf.len()`. Either all bytes are read or an
    /// error names the first address that failed.
    fn read_phys(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MemError>;

    /// Perform every read in `ops`, returning one result per op, in order. Backends with
    /// latency override this to keep many reads in flight.
    fn read_batch(&self, ops: &mut [ReadOp<'_>]) -> Vec<Result<(), MemError>> {
        ops.iter_mut().map(|op| self.read_phys(op.addr, op.buf)).collect()
    }

    /// The physical ranges this source backs, sorted and non-overlapping. Sources that cannot
    /// know (a remote machine) return what they were told or an empty list.
    fn ranges(&self) -> Vec<PhysRange>;

    /// Whether [`ranges`](PhysMem::ranges) are the machine's RAM (an image of it), rather than
    /// what was seen of it (a capture) or nothing (a remote machine). Analyses bound addresses
    /// by the end of RAM only when it is known, so that a capture replays what the live
    /// session saw.
    fn ranges_are_ram(&self) -> bool {
        true
    }

    /// A short human description ("ELF core /path, 3 ranges, 512 MiB").
    fn describe(&self) -> String;
}

/// A pointer to a memory source is that source: every method forwarded.
macro_rules! pointer_is_its_memory {
    ($($ptr:ty),*) => {$(
        impl<T: PhysMem + ?Sized> PhysMem for $ptr {
            fn read_phys(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
                (**self).read_phys(addr, buf)
            }
            fn read_batch(&self, ops: &mut [ReadOp<'_>]) -> Vec<Result<(), MemError>> {
                (**self).read_batch(ops)
            }
            fn ranges(&self) -> Vec<PhysRange> {
                (**self).ranges()
            }
            fn ranges_are_ram(&self) -> bool {
                (**self).ranges_are_ram()
            }
            fn describe(&self) -> String {
                (**self).describe()
            }
        }
    )*};
}

pointer_is_its_memory!(&T, Box<T>, std::sync::Arc<T>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_contains_is_half_open() {
        let r = PhysRange::new(0x1000, 0x2000);
        assert!(r.contains(PhysAddr(0x1000)));
        assert!(r.contains(PhysAddr(0x1fff)));
        assert!(!r.contains(PhysAddr(0x2000)));
        assert_eq!(r.len(), 0x1000);
    }

    #[test]
    fn errors_carry_their_address() {
        let e = MemError::Unmapped { addr: PhysAddr(0xdead000) };
        assert_eq!(e.addr(), PhysAddr(0xdead000));
        assert_eq!(e.to_string(), "phys 0xdead000: not backed by this memory source");
    }
}
