//! Building a [`Layout`] from any source of type information (BTF, an ISF file, ...).
//!
//! Invariant: this is the one place that decides which struct members the walker needs and
//! which alternative names (renamed fields across versions) are accepted; sources only answer
//! "where is member M of struct S, and how big is it".

use super::{CredLayout, KthreadLayout, Layout, MmLayout, SignalLayout, TaskLayout, WorkerLayout};
use crate::introspect::btf::BtfError;

/// Largest struct size accepted from a type source (`task_struct` is about 10 KiB; type
/// information is untrusted, and sizes and offsets become read lengths).
pub const MAX_STRUCT: u64 = 1 << 20;

/// A member's byte offset and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub offset: u64,
    pub size: u64,
}

/// Why a source of type information could not answer.
#[derive(Debug, thiserror::Error)]
pub enum TypeError {
    /// BTF has no struct of that name with those members.
    #[error("no struct {name} with members {must_have:?} in BTF")]
    NoStruct { name: String, must_have: Vec<String> },
    /// The kbuild probe did not measure the struct's size.
    #[error("kbuild did not measure sizeof(struct {name})")]
    NotMeasured { name: String },
    /// The ISF file has no such user type, or none with a size.
    #[error("ISF has no user type {name} with a size")]
    NoUserType { name: String },
    /// The member is a bitfield: it has no byte offset.
    #[error("{name}.{member} is a bitfield")]
    Bitfield { name: String, member: String },
    /// BTF could not be read at this type.
    #[error(transparent)]
    Btf(#[from] BtfError),
}

/// Why no [`Layout`] could be built from a source's types.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Types(#[from] TypeError),
    #[error("struct {name} has an implausible size {size:#x} (at most {MAX_STRUCT:#x})")]
    ImplausibleSize { name: &'static str, size: u64 },
    #[error("{name}.{member} at {offset} is past the struct's size {size}")]
    PastEnd { name: &'static str, member: &'static str, offset: u64, size: u64 },
    #[error("{name}.{member} at {offset} with size {field_size} runs past the struct's size {size}")]
    RunsPast { name: &'static str, member: &'static str, offset: u64, field_size: u64, size: u64 },
    #[error("struct {name} has none of {alts:?}")]
    Missing { name: &'static str, alts: Vec<&'static str> },
    #[error("struct task_struct has neither __state nor state")]
    NoState,
    #[error("task_struct.{member} has size {size}, not an integer's")]
    StateSize { member: &'static str, size: u64 },
}

/// A source of struct layouts.
pub trait Types {
    /// Size of the struct `name` having all of `must_have` (sources with several structs of
    /// one name pick the one that has them).
    fn struct_size(&self, name: &str, must_have: &[&str]) -> Result<u64, TypeError>;
    /// Member `member` of that struct (found through anonymous members), or `None`.
    fn member(&self, name: &str, must_have: &[&str], member: &str) -> Result<Option<Field>, TypeError>;
}

struct S<'t> {
    types: &'t dyn Types,
    name: &'static str,
    must: &'static [&'static str],
    size: u64,
}

impl<'t> S<'t> {
    fn new(types: &'t dyn Types, name: &'static str, must: &'static [&'static str]) -> Result<Self, BuildError> {
        let size = types.struct_size(name, must)?;
        if size == 0 || size > MAX_STRUCT {
            return Err(BuildError::ImplausibleSize { name, size });
        }
        Ok(S { types, name, must, size })
    }
    fn opt_field(&self, alts: &[&'static str]) -> Result<Option<(Field, &'static str)>, BuildError> {
        let name = self.name;
        for &member in alts {
            if let Some(f) = self.types.member(name, self.must, member)? {
                if f.offset >= self.size {
                    return Err(BuildError::PastEnd { name, member, offset: f.offset, size: self.size });
                }
                // Sizes reach the walker as read lengths: a member must end inside its struct.
                if f.offset.checked_add(f.size).is_none_or(|end| end > self.size) {
                    return Err(BuildError::RunsPast { name, member, offset: f.offset, field_size: f.size, size: self.size });
                }
                return Ok(Some((f, member)));
            }
        }
        Ok(None)
    }
    fn opt(&self, alts: &[&'static str]) -> Result<Option<u64>, BuildError> {
        Ok(self.opt_field(alts)?.map(|(f, _)| f.offset))
    }
    fn off(&self, alts: &[&'static str]) -> Result<u64, BuildError> {
        self.opt(alts)?.ok_or_else(|| BuildError::Missing { name: self.name, alts: alts.to_vec() })
    }
}

/// The layout the walker needs, from `types`.
pub fn build(types: &dyn Types) -> Result<Layout, BuildError> {
    let (kthread, worker) = private_structs(types);
    Ok(Layout { kthread, worker, ..build_core(types)? })
}

/// The layout without the private structures of kernel threads (`kthread`, `worker`: `None`).
pub fn build_core(types: &dyn Types) -> Result<Layout, BuildError> {
    let t = S::new(types, "task_struct", &["tasks", "pid", "tgid", "comm"])?;
    let (state, state_name) =
        t.opt_field(&["__state", "state"])?.ok_or(BuildError::NoState)?;
    let task = TaskLayout {
        size: t.size,
        tasks: t.off(&["tasks"])?,
        pid: t.off(&["pid"])?,
        tgid: t.off(&["tgid"])?,
        real_parent: t.off(&["real_parent"])?,
        thread_node: t.off(&["thread_node"])?,
        signal: t.off(&["signal"])?,
        real_cred: t.off(&["real_cred"])?,
        state: state.offset,
        state_size: match state.size {
            0 => if state_name == "__state" { 4 } else { 8 },
            n @ (1 | 2 | 4 | 8) => n,
            n => return Err(BuildError::StateSize { member: state_name, size: n }),
        },
        exit_state: Some(t.off(&["exit_state"])?),
        comm: t.off(&["comm"])?,
        mm: t.off(&["mm"])?,
        flags: t.off(&["flags"])?,
        start_boottime: t.off(&["start_boottime", "real_start_time"])?,
        // Before `worker_private` (5.17), a kernel thread's `struct kthread` pointer was kept in
        // `set_child_tid`, which kernel threads do not otherwise use.
        worker_private: t.opt(&["worker_private", "set_child_tid"])?,
    };
    let s = S::new(types, "signal_struct", &["thread_head"])?;
    let signal = SignalLayout { thread_head: s.off(&["thread_head"])?, nr_threads: s.opt(&["nr_threads"])? };
    let c = S::new(types, "cred", &["uid", "euid"])?;
    let cred = CredLayout { uid: c.off(&["uid"])? };
    let m = S::new(types, "mm_struct", &["pgd", "arg_start"])?;
    let mm = MmLayout {
        pgd: m.off(&["pgd"])?,
        arg_start: m.off(&["arg_start"])?,
        arg_end: m.off(&["arg_end"])?,
        env_start: m.off(&["env_start"])?,
        env_end: m.off(&["env_end"])?,
    };
    Ok(Layout { task, signal, cred, mm, kthread: None, worker: None })
}

/// `struct kthread` and `struct worker` (kernel-thread names only: each `None` where `types`
/// does not describe it fully).
pub fn private_structs(types: &dyn Types) -> (Option<KthreadLayout>, Option<WorkerLayout>) {
    let kthread = S::new(types, "kthread", &["full_name", "data"])
        .and_then(|k| Ok(KthreadLayout { data: Some(k.off(&["data"])?), full_name: Some(k.off(&["full_name"])?) }))
        .ok();
    let worker = S::new(types, "worker", &["desc", "current_work", "pool"])
        .and_then(|w| {
            let (desc, _) = w.opt_field(&["desc"])?.ok_or(BuildError::Missing { name: "worker", alts: vec!["desc"] })?;
            Ok(WorkerLayout { current_work: w.off(&["current_work"])?, pool: w.off(&["pool"])?, desc: desc.offset, desc_len: desc.size })
        })
        .ok()
        .filter(|w| w.desc_len > 0);
    (kthread, worker)
}
