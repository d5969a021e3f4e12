//! Software NetTLP adapter: a PCIe endpoint reached over UDP that answers Memory Reads from a
//! guest's physical memory, exactly as the NetTLP FPGA card answers them from a host's RAM.
//!
//! ```text
//!   requester (harness::dma, libtlp)            this crate
//!   ───────────────────────────────         ─────────────────────────────────────────
//!        UDP datagrams  ─────────────────▶  endpoint   (serve loop, MPS split, faults)
//!                                              │  wire   (NetTLP header + TLP codec)
//!                                              │  capture (pcap record / decode / replay)
//!                                              ▼
//!                                           mem::PhysMem  (one trait for all memory, and its
//!                                                          wrappers: counting, cache, deadline)
//!                                              ▲
//!                                           image   (raw, ELF core, kdump, LiME, AVML, live)
//!
//!   shared by the endpoint, the images and the requester, below all of them:
//!     bytes    the one bounds-checked reader of untrusted bytes
//!     udp      batched UDP I/O (recvmmsg/sendmmsg, epoll)
//!     pattern  the test pattern (a pure function of the address) and a PhysMem serving it
//!     units    durations as written on command lines and in target URLs
//!     fleet    address ranges and the manifest of an emulated fleet (many endpoints, one process)
//!     logging  how every binary of the workspace logs (stderr, RUST_LOG)
//! ```
//!
//! The [`mem`] module is the one physical-memory abstraction shared with the `harness` crate:
//! a dump file, a live guest, a replayed capture and the DMA requester all implement
//! [`mem::PhysMem`], so an analysis runs unchanged against any of them.

pub mod bytes;
pub mod capture;
pub mod endpoint;
pub mod fleet;
pub mod image;
pub mod logging;
pub mod mem;
pub mod pattern;
pub mod udp;
pub mod units;
pub mod wire;
