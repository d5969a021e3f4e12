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
//!                                           mem::PhysMem  (one trait for all memory)
//!                                              ▲
//!                                           image   (raw, ELF core, kdump, LiME, AVML, live)
//! ```
//!
//! The [`mem`] module is the one physical-memory abstraction shared with the `harness` crate:
//! a dump file, a live guest, a replayed capture and the DMA requester all implement
//! [`mem::PhysMem`], so an analysis runs unchanged against any of them.

pub mod capture;
pub mod endpoint;
pub mod image;
pub mod layers;
pub mod mem;
pub mod wire;
