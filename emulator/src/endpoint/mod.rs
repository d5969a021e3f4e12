//! The software NetTLP endpoint: answers PCIe Memory Reads carried over UDP from a memory
//! image, as the NetTLP adapter answers them from a host's RAM.
//!
//! ```text
//!   server    sockets on ADDR:0x3000..0x30FF + 0x2FFF, recvmmsg/sendmmsg batches, time source
//!     │  fault    seeded loss / dup / reorder / delay on outgoing datagrams (--fault)
//!     │  Tap      every datagram in and out (pcap recording hooks in here)
//!   responder   one datagram → replies (MRd → CplD split at MPS, UR, MWr policy, messaging)
//!     │
//!   overlay     copy-on-write pages for --allow-write; backed-range checks
//!     │
//!   mem::PhysMem  (the image; never written)
//! ```
//!
//! Invariant: the image is never written; nothing a peer sends stops the endpoint; every
//! datagram is counted once ([`stats`]); time is passed in to everything below [`server`].
//!
//! # Use
//! ```no_run
//! use emulator::endpoint::{Endpoint, EndpointConfig};
//! use emulator::pattern::PatternMem;
//! use emulator::mem::PhysRange;
//! let mem = PatternMem::new(vec![PhysRange::new(0, 1 << 20)]);
//! let cfg = EndpointConfig { listen: "127.0.0.2".parse().unwrap(), ..Default::default() };
//! let running = Endpoint::bind(mem, cfg).unwrap().spawn();
//! // ... requests to 127.0.0.2:0x3000+tag ...
//! let counters = running.stop().unwrap();
//! println!("{counters}");
//! ```

pub mod fault;
pub mod outbox;
pub mod overlay;
pub mod responder;
pub mod server;
pub mod stats;

pub use fault::FaultSpec;
pub use responder::{Identity, Responder, ResponderConfig};
pub use server::{Behaviour, Endpoint, EndpointConfig, EndpointError, EndpointSnapshot, Handle, Running, Tap};
pub use stats::{Counters, Snapshot};
