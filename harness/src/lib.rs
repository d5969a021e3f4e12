//! The requester side and the analysis.
//!
//! ```text
//!   ps / profile / dmesg / lsmod / hidden (CLI) ── failure: the typed failure line (`--errors json`) and exit statuses
//!        │
//!   introspect   find the kernel, learn the layout (btf | thesis | isf | static | heuristic), walk tasks;
//!                printk: the kernel log from the printk ring (vmcoreinfo | btf | inferred)
//!                hidden: the task list against the pid allocator, run queues, a scan; modules against mod_tree and the module area
//!        │
//!   emulator::mem::PhysMem  ◀── image files, replayed captures, dma::Requester (NetTLP over UDP)
//!
//!   fleet        many machines at once over NetTLP: bounded workers, one layout cache per kernel build
//!
//!   lab          builds kernels and initramfs, boots QEMU guests, records /proc truth, dumps memory
//! ```

pub mod dma;
pub mod failure;
pub mod fleet;
pub mod kbuild;
pub mod lab;
pub mod introspect;
