//! Structure layouts: where the fields the walker reads sit in this kernel's structures, and the
//! pluggable methods that learn them.
//!
//! | method      | prerequisite                                  | source of offsets               |
//! |-------------|-----------------------------------------------|---------------------------------|
//! | `btf`       | `.BTF` in the image (`CONFIG_DEBUG_INFO_BTF`) | the kernel's own type info      |
//! | `isf`       | a Volatility 3 ISF file (`--isf`)             | the file's `user_types`         |
//! | `thesis`    | IKCONFIG in memory + `--kernel-source`        | kbuild with the recovered config|
//! | `heuristic` | none (tasks in memory)                        | inferred from the tasks' values |
//! | `static`    | none                                          | constants for one Debian kernel |
//!
//! Invariant: a method either returns a complete [`Layout`] (every required field found, each
//! offset inside its structure) or an error; [`LayoutError::Unavailable`] means the method's
//! prerequisite is missing and is what `auto` skips over, any other error is a real failure.

pub mod btf;
pub mod build;
pub mod fixed;
pub mod heuristic;
pub mod isf;
pub mod sorted;
pub mod thesis;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::kernel::Kernel;

/// Offsets (bytes) of `task_struct` fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLayout {
    pub size: u64,
    pub tasks: u64,
    pub pid: u64,
    pub tgid: u64,
    pub real_parent: u64,
    pub thread_node: u64,
    pub signal: u64,
    pub real_cred: u64,
    /// `__state` (5.14+) or `state`.
    pub state: u64,
    pub state_size: u64,
    /// `None` when the method could not learn it (then no task is reported as a zombie).
    pub exit_state: Option<u64>,
    pub comm: u64,
    pub mm: u64,
    pub flags: u64,
    pub start_boottime: u64,
    /// `worker_private` (points at `struct kthread` for kernel threads), for their long names.
    pub worker_private: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalLayout {
    pub thread_head: u64,
    pub nr_threads: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredLayout {
    pub uid: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmLayout {
    pub pgd: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
}

/// `struct kthread` (kernel/kthread.c): the thread's data pointer and untruncated name (each
/// `None` when the method could not learn it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KthreadLayout {
    pub data: Option<u64>,
    pub full_name: Option<u64>,
}

/// `struct worker` (kernel/workqueue_internal.h), for "kworker/0:1-events" names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerLayout {
    pub current_work: u64,
    pub pool: u64,
    pub desc: u64,
    pub desc_len: u64,
}

/// Everything the walker needs to know about structure layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub task: TaskLayout,
    pub signal: SignalLayout,
    pub cred: CredLayout,
    pub mm: MmLayout,
    pub kthread: Option<KthreadLayout>,
    pub worker: Option<WorkerLayout>,
}

impl Layout {
    /// The offsets the walker reads, under the kernel's own `struct.member` names (those
    /// `kbuild::Layout::offset` and an ISF use); `task_struct.exit_state` only where learned.
    pub fn walker_offsets(&self) -> Vec<(&'static str, u64)> {
        let l = self;
        let mut v = vec![
            ("task_struct.tasks", l.task.tasks),
            ("task_struct.pid", l.task.pid),
            ("task_struct.tgid", l.task.tgid),
            ("task_struct.real_parent", l.task.real_parent),
            ("task_struct.thread_node", l.task.thread_node),
            ("task_struct.signal", l.task.signal),
            ("task_struct.real_cred", l.task.real_cred),
            ("task_struct.__state", l.task.state),
            ("task_struct.comm", l.task.comm),
            ("task_struct.mm", l.task.mm),
            ("task_struct.flags", l.task.flags),
            ("task_struct.start_boottime", l.task.start_boottime),
            ("mm_struct.pgd", l.mm.pgd),
            ("mm_struct.arg_start", l.mm.arg_start),
            ("mm_struct.arg_end", l.mm.arg_end),
            ("cred.uid", l.cred.uid),
            ("signal_struct.thread_head", l.signal.thread_head),
        ];
        v.extend(l.task.exit_state.map(|n| ("task_struct.exit_state", n)));
        v
    }
}

/// The methods, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MethodKind {
    Auto,
    Btf,
    Thesis,
    Isf,
    Static,
    Heuristic,
}

impl MethodKind {
    pub fn name(self) -> &'static str {
        match self {
            MethodKind::Auto => "auto",
            MethodKind::Btf => "btf",
            MethodKind::Thesis => "thesis",
            MethodKind::Isf => "isf",
            MethodKind::Static => "static",
            MethodKind::Heuristic => "heuristic",
        }
    }
}

impl std::fmt::Display for MethodKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a method may use besides the kernel in memory.
#[derive(Debug, Clone, Default)]
pub struct LayoutInputs {
    /// `--kernel-source`: a kernel tree or tarball (thesis).
    pub kernel_source: Option<PathBuf>,
    /// `--isf`: a Volatility 3 ISF JSON file (isf).
    pub isf: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// The method's prerequisite is not there; `auto` moves on.
    #[error("method {method} unavailable: {reason}")]
    Unavailable { method: MethodKind, reason: String },
    /// The prerequisite is there but the method failed.
    #[error("method {method} failed: {reason}")]
    Failed { method: MethodKind, reason: String },
    /// The method's type information (from `file`, if it came from one) gave no layout.
    #[error("method {method} failed: {}{source}", file.as_ref().map(|f| format!("{}: ", f.display())).unwrap_or_default())]
    Build { method: MethodKind, file: Option<PathBuf>, source: build::BuildError },
    /// `auto` found no method that gave a layout fitting this kernel: what each one did.
    #[error("no layout method available: {}", attempts(.0))]
    NoneAvailable(Vec<Attempt>),
}

/// What one method did for `auto` when it gave no layout.
#[derive(Debug, thiserror::Error)]
pub enum Attempt {
    /// Its prerequisite is not there.
    #[error("{method}: {reason}")]
    Unavailable { method: MethodKind, reason: String },
    /// Its layout did not fit this kernel (`auto`'s validation said why).
    #[error("{method}: layout rejected: {reason}")]
    Rejected { method: MethodKind, reason: Box<dyn std::error::Error + Send + Sync> },
    /// It failed.
    #[error(transparent)]
    Failed(LayoutError),
}

impl LayoutError {
    /// Whether this means only "no method's prerequisite is here" (a valid outcome): a
    /// method unavailable, or `auto` with every method unavailable — not one whose layout was
    /// rejected or that failed.
    pub fn is_unavailable(&self) -> bool {
        match self {
            LayoutError::Unavailable { .. } => true,
            LayoutError::NoneAvailable(tried) => tried.iter().all(|a| matches!(a, Attempt::Unavailable { .. })),
            _ => false,
        }
    }
}

fn attempts(tried: &[Attempt]) -> String {
    tried.iter().map(|a| a.to_string()).collect::<Vec<_>>().join("; ")
}

/// A way to learn a [`Layout`].
pub trait LayoutMethod {
    fn kind(&self) -> MethodKind;
    fn layout(&self, kernel: &Kernel<'_>, inputs: &LayoutInputs) -> Result<Layout, LayoutError>;
}

/// `(major, minor)` of a release string such as `6.1.0-56-amd64` or `7.2.13+deb14-amd64`
/// (`(0, 0)` where it has no number).
pub fn version_of(release: &str) -> (u32, u32) {
    let mut it = release.split(|c: char| !c.is_ascii_digit()).map(|n| n.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// The method object for a kind (`Auto` has none: see [`learn`]).
pub fn method(kind: MethodKind) -> Option<Box<dyn LayoutMethod>> {
    match kind {
        MethodKind::Btf => Some(Box::new(btf::BtfMethod)),
        MethodKind::Isf => Some(Box::new(isf::IsfMethod)),
        MethodKind::Thesis => Some(Box::new(thesis::ThesisMethod)),
        MethodKind::Static => Some(Box::new(fixed::StaticMethod)),
        MethodKind::Heuristic => Some(Box::new(heuristic::HeuristicMethod)),
        MethodKind::Auto => None,
    }
}

/// Order in which `auto` tries methods: the kernel's own data first, then the user's, then the
/// source build. `static` is never chosen automatically: it is right for one kernel only.
pub const AUTO_ORDER: &[MethodKind] = &[MethodKind::Btf, MethodKind::Isf, MethodKind::Thesis, MethodKind::Heuristic];

/// Learn the layout with `kind`; for `Auto`, the first method in [`AUTO_ORDER`] that is
/// available and whose layout passes `validate` on this kernel (a wrong layout — e.g. a config
/// build of a RANDSTRUCT kernel — is skipped, with its reason logged). Returns the method used.
pub fn learn<E: std::error::Error + Send + Sync + 'static>(
    kind: MethodKind,
    kernel: &mut Kernel<'_>,
    inputs: &LayoutInputs,
    validate: &dyn Fn(&mut Kernel<'_>, &Layout) -> Result<(), E>,
) -> Result<(MethodKind, Layout), LayoutError> {
    if let Some(m) = method(kind) {
        return m.layout(kernel, inputs).map(|l| (kind, l));
    }
    let mut skipped = Vec::new();
    for &k in AUTO_ORDER {
        let Some(m) = method(k) else { continue };
        match m.layout(kernel, inputs) {
            Ok(l) => match validate(kernel, &l) {
                Ok(()) => return Ok((k, l)),
                Err(reason) => {
                    tracing::info!(method = %k, %reason, "auto: layout does not fit this kernel; trying the next method");
                    skipped.push(Attempt::Rejected { method: k, reason: Box::new(reason) });
                }
            },
            Err(LayoutError::Unavailable { reason, .. }) => {
                tracing::debug!(method = %k, %reason, "auto: skipping");
                skipped.push(Attempt::Unavailable { method: k, reason });
            }
            Err(e) => {
                tracing::warn!(method = %k, error = %e, "auto: method failed");
                skipped.push(Attempt::Failed(e));
            }
        }
    }
    Err(LayoutError::NoneAvailable(skipped))
}
