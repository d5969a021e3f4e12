//! Linux introspection from physical memory alone: find the kernel, learn its layout, walk its
//! tasks.
//!
//! ```text
//!   ps::run ──────────────────────────────────────────────────────────────┐
//!     │ scan      banner in the frames the real-mode trampoline's tables    │ mem::Counting
//!     │           map, else on 2 MiB boundaries → kallsyms by structure     │
//!     │ kallsyms  decode names/tokens/offsets → symbol addresses            │ (per-phase
//!     │ placement image virtual offset from .data (pc-relative kallsyms)    │
//!     │ kspace    KASLR shifts, direct map, page tables → read KVirt        │  reads/bytes)
//!     │ vread     one virtual reader: walk batched, then one physical batch │
//!     │ layout    btf | thesis | isf | static | heuristic → Layout          │
//!     │ walk      init_task.tasks → thread groups → rows                    │
//!     │ cmdline   mm->pgd walk → user argv                                  │
//!     ▼                                                                      │
//!   emulator::mem::PhysMem (image, live guest, replay, NetTLP) ◀────────────┘
//! ```
//!
//! `printk::dmesg` shares `scan`, `kallsyms`, `kspace` and `Counting`, then reads the printk ring
//! buffer instead of walking tasks (see [`printk`]); `modules::lsmod` walks the `modules` list
//! (see [`modules`]); `hidden::hidden` compares the task list with the pid allocator, the run
//! queues and a scan of memory, and the module list with the module address tree (see
//! [`hidden`]). `watch::Watcher` learns a machine once and walks it again and again, reporting
//! what changed (the walk re-reads what changed under it: see [`walk`]); `smear` checks such
//! listings of a running guest against its own churn log.
//!
//! Invariant: guest memory is adversarial. Every parser is bounds-checked, every loop bounded,
//! and a failure part-way returns what was read so far together with an error naming the
//! address that failed.

pub mod addr;
pub mod anchor;
pub mod btf;
pub mod cmdline;
pub mod compare;
pub mod gather;
pub mod globals;
pub mod hidden;
pub mod identity;
pub mod ikconfig;
pub mod isf;
pub mod kallsyms;
pub mod kernel;
pub mod kspace;
pub mod layout;
pub mod modules;
pub mod names;
pub mod naming;
pub mod output;
pub mod paging;
pub mod printk;
pub mod physread;
pub mod pidindex;
pub mod pidns;
pub mod placement;
pub mod profile;
pub mod ps;
pub mod scan;
pub mod smear;
pub mod source;
pub mod state;
pub mod trampoline;
pub mod vmcoreinfo;
pub mod vread;
pub mod walk;
pub mod watch;
pub mod xarray;

#[cfg(test)]
pub(crate) mod testutil;
