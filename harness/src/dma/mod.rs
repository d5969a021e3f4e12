//! The NetTLP DMA requester: a remote machine's physical memory as a [`PhysMem`], read with
//! PCIe Memory Reads over UDP (what libtlp's `dma_read` does, pipelined).
//!
//! ```text
//!   PhysMem::read_batch / read_phys        Requester::read_blocking
//!              │                                   │
//!   coalesce   a batch's nearby reads joined into spans that need fewer requests
//!              │                                   │
//!   requester  engine: pieces → tags → MRd batches; completions → checks → reassembly;
//!              timeouts → hold the tag, ask again for the missing bytes only
//!     ├─ target     nettlp://ADDR[:TAG]?options  (what TAG means, defaults)
//!     ├─ request    split at 4 KiB and MRRS; completion checks and reassembly (pure)
//!     ├─ tags       when a tag may carry a request again: FIFO over all tags; on a suspect
//!     │             network never one whose recent requests the new one aliases (the
//!     │             stale-completion defence), cutting the request short if need be
//!     ├─ rto        adaptive retransmission timeout (RFC 6298 on request round trips)
//!     ├─ rack       loss detection by later answers (RFC 8985): missing bytes asked again
//!     │             once a request sent after them was answered, not after a timeout
//!     └─ stats      counters and latency histogram
//!   bench        blocking and pipelined read benchmarks, rows for results/wire-*.csv
//! ```
//!
//! Invariant: nothing here writes to the target, except [`Requester::write_for_testing`],
//! which exists only to test the emulator's `--allow-write`.
//!
//! [`PhysMem`]: emulator::mem::PhysMem

pub mod bench;
pub mod coalesce;
pub mod rack;
pub mod request;
pub mod requester;
pub mod rto;
pub mod stats;
pub mod tags;
pub mod target;

pub use requester::{query_dev_id, DmaError, Requester};
pub use stats::{DmaStats, Histogram};
pub use target::{PortRule, RequesterId, Target, TargetError};
