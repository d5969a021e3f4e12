//! The `heuristic` layout method: the offsets the walker needs, inferred from memory alone —
//! for kernels with neither BTF nor IKCONFIG, and for RANDSTRUCT kernels whose layout no
//! configuration can predict.
//!
//! Each offset is the one whose values, across every task in memory, fit what the kernel
//! guarantees about that field (all searches assume no field order, so they work on shuffled
//! structures):
//!
//! | field            | evidence                                                              |
//! |------------------|-----------------------------------------------------------------------|
//! | init_task, comm  | "swapper[/0]" in `.data`; the image pointer found ≥ 3 times just before it is init_task itself (`real_parent`, `parent`, `group_leader`) |
//! | tasks            | the list_head in init_task whose ring, every node minus the offset, lands on tasks with valid names |
//! | pid, tgid        | 0 in init_task, 1, 2, then distinct and (up to SMP fork races) increasing along the task list; threads share tgid |
//! | real_parent      | init_task for pids 1 and 2, a listed task for everyone                |
//! | signal + thread lists | a per-process pointer whose `thread_head` ring holds the task first, closes, shares parent and signal, and is counted by a `nr_threads`; of several, the one holding the most threads |
//! | flags            | `PF_KTHREAD` set exactly for init_task, kthreadd and kthreadd's children; no pointer halves |
//! | __state          | task states only (`S`, `I`, ...), init_task running                  |
//! | exit_state       | `EXIT_ZOMBIE` exactly on tasks in `TASK_DEAD` (needs a zombie)        |
//! | start_boottime   | 0 in init_task, (mostly) non-decreasing in creation order, threads after leaders, children after parents |
//! | mm + mm_struct   | NULL for kernel threads, shared by threads; `pgd` a page whose kernel half all processes share; `arg_end == env_start` |
//! | real_cred, uid   | a per-task pointer (init_cred in the image for init_task) to structs holding CAP_FULL_SET; uid 0 in `init_cred`, the id pattern or the largest class of equal ids |
//! | worker_private   | a distinct pointer for each kernel thread, NULL for user tasks; the one through which workqueue workers resolve |
//!
//! Limits (inherent, documented rather than guessed around): `real_parent` vs `parent` and
//! `start_time` vs `start_boottime` are told apart only by declaration order, which RANDSTRUCT
//! shuffles — they hold equal values unless a task is ptraced or the machine has suspended; `uid`
//! vs `euid`/`suid`/`fsuid` likewise when a kernel shuffles `struct cred`.
//!
//! Invariant: every search is bounded (window sizes, ring lengths, candidate counts) and an
//! offset is accepted only if it fits every task read; ambiguity that matters is an error.

mod anchor;
mod fields;
mod mm;

use super::{Layout, LayoutError, LayoutInputs, LayoutMethod, MethodKind};
use crate::introspect::bytes::Bytes;
use crate::introspect::kernel::Kernel;

/// Bytes of each task_struct examined (x86-64 6.1 task_structs are 6–10 KiB).
pub const TASK_SPAN: usize = 12 << 10;

pub struct HeuristicMethod;

impl LayoutMethod for HeuristicMethod {
    fn kind(&self) -> MethodKind {
        MethodKind::Heuristic
    }

    fn layout(&self, kernel: &Kernel<'_>, _: &LayoutInputs) -> Result<Layout, LayoutError> {
        infer(kernel).map_err(|reason| LayoutError::Failed { method: MethodKind::Heuristic, reason })
    }
}

/// One structure's bytes, read at `base`.
#[derive(Debug, Clone)]
pub struct Snap {
    pub base: u64,
    pub data: Vec<u8>,
}

impl Snap {
    pub fn u32(&self, off: u64) -> Option<u32> {
        Bytes::new(&self.data).u32(off as usize).ok()
    }
    pub fn u64(&self, off: u64) -> Option<u64> {
        Bytes::new(&self.data).u64(off as usize).ok()
    }
}

/// Run every inference step.
pub fn infer(kernel: &Kernel<'_>) -> Result<Layout, String> {
    let found = anchor::find(kernel)?;
    tracing::info!(
        init_task = %found.init,
        tasks = found.tasks_off,
        comm = found.comm_off,
        processes = found.leaders.len(),
        "heuristic: task list found"
    );
    let tasks = fields::infer(&found)?;
    let (mm, cred) = mm::infer(&found.space, &tasks)?;
    Ok(fields::layout(&found, &tasks, mm, cred))
}
