//! The `static` layout method: fixed offsets, the way libtlp's `process-list` hard-codes them —
//! the baseline that is right for one kernel build and silently wrong for others.
//!
//! The constants are those of Debian bookworm `linux-image-6.1.0-56-amd64` (6.1.192-2), read
//! once from that kernel's BTF. Any kernel with another configuration (other flavours, custom
//! builds, RANDSTRUCT) has other offsets; the walker's validation is what notices.
//!
//! Invariant: this method reads nothing and always returns the same layout.

use super::{
    CredLayout, KthreadLayout, Layout, LayoutError, LayoutInputs, LayoutMethod, MethodKind, MmLayout, SignalLayout,
    TaskLayout, WorkerLayout,
};
use crate::introspect::kernel::Kernel;

pub struct StaticMethod;

/// The kernel these offsets were taken from.
pub const STATIC_RELEASE: &str = "6.1.0-56-amd64";

/// Offsets of Debian's 6.1.0-56-amd64.
pub fn debian_6_1_amd64() -> Layout {
    Layout {
        task: TaskLayout {
            size: 9792,
            tasks: 2192,
            pid: 2416,
            tgid: 2420,
            real_parent: 2432,
            thread_node: 2608,
            signal: 3072,
            real_cred: 2952,
            state: 24,
            state_size: 4,
            exit_state: Some(2308),
            comm: 2976,
            mm: 2272,
            flags: 44,
            start_boottime: 2784,
            worker_private: Some(2648),
        },
        signal: SignalLayout { thread_head: 16, nr_threads: Some(8) },
        cred: CredLayout { uid: 8 },
        mm: MmLayout { pgd: 72, arg_start: 312, arg_end: 320, env_start: 328, env_end: 336 },
        kthread: Some(KthreadLayout { data: Some(24), full_name: Some(104) }),
        worker: Some(WorkerLayout { current_work: 16, pool: 72, desc: 116, desc_len: 24 }),
    }
}

impl LayoutMethod for StaticMethod {
    fn kind(&self) -> MethodKind {
        MethodKind::Static
    }

    fn layout(&self, _: &Kernel<'_>, _: &LayoutInputs) -> Result<Layout, LayoutError> {
        Ok(debian_6_1_amd64())
    }
}
