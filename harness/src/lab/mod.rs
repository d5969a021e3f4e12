//! The guest lab: real kernels booted under QEMU, with the guest's own view of its processes as
//! ground truth and memory dumps taken while running and after a real panic.
//!
//! ```text
//!   build     corpus build: per recipe, kernel → layout → initramfs → record → entry.json
//!   ├─ recipe     the default corpus (Debian stock kernels 5.10 to 7.x + custom builds), two tiers
//!   ├─ apt        a private apt configuration in the cache (bullseye, bookworm(-security), sid)
//!   ├─ debian     apt-get download / dpkg-deb of image, headers and kbuild packages
//!   ├─ custom     linux-source-<series> + config fragments → bzImage (kbuild, niced, with progress)
//!   ├─ guest      initramfs: busybox-static + static C workload and agent (harness/guest/),
//!   │             plus, for Debian kernels, modules from the kernel's own package (debian.rs)
//!   ├─ qemu       one QEMU process: QMP, control port (second serial), console log
//!   ├─ record     truth → dump (running) → truth → sysrq c → dump (panicked)
//!   └─ infected   (some Debian kernels) own boot: test rootkit (rootkit: kbuild against the
//!                 kernel's headers) hides a process and itself → dump (infected) → sysrq c
//!   console   the serial console as truth for the kernel log (kernel lines, subsequence check)
//!   corpus    the on-disk contract read by the introspection tests (Corpus, Entry)
//!   truth     one ground-truth record per thread (JSON Lines), and the guest's /proc/modules
//!   live      lab boot / panic / stop: a guest left running on a shared RAM file
//!   setup     the Debian packages the lab needs (installed as root, else the command to run)
//!   shellport a guest with a shell on ttyS2 (the experiments' in-guest agent), N sleepers, RAM size
//!   churn     on a shell guest: processes and threads started and exiting, their logged lives
//! ```
//! Invariant: everything in an entry comes from the guest (truth, dumps) or from the kernel's own
//! build or package (reference data); the analysis under test is never consulted.

pub mod apt;
pub mod build;
pub mod cache;
pub mod churn;
pub mod cli;
pub mod console;
pub mod corpus;
pub mod cpio;
pub mod custom;
pub mod debian;
mod error;
pub mod guest;
pub mod infected;
pub mod live;
pub mod qemu;
pub mod recipe;
pub mod record;
pub mod rootkit;
pub mod setup;
pub mod shellport;
pub mod truth;

pub use error::{Error, Result};

/// Bumped whenever the lab's recording procedure changes; part of every entry's recipe hash.
pub const LAB_VERSION: u32 = 2;
