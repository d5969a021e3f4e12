//! The `btf` layout method: offsets from the kernel's own BTF, read from `.BTF` in memory.
//!
//! A kernel's BTF is megabytes (5–6 MB for Debian's), but the structures a layout needs are
//! described near the start of both sections (a kernel's BTF lists types in the order its
//! first compilation units meet them, and `task_struct` is met at once): [`with_btf`] reads the
//! header and the first [`FIRST_READ`] bytes of each section, and reads twice as much of a
//! section (at last all of it) only while a lookup needs what was not read there
//! ([`Btf::short_of`]). The answer is the one the whole blob gives (see `btf`'s module doc);
//! what was read is kept in the [`Kernel`] for the next caller, and [`load`] (every type: ISF,
//! modules, printk) reads the rest.
//!
//! A kernel whose BTF lists its named types sorted by name (7.x: the build sorts vmlinux BTF so
//! that the kernel can search it by name) describes `task_struct` near the end, and a record's
//! offset is known only by walking every record before it (the records differ in length and
//! the blob has no index). There the kernel's own index of its parsed blob
//! (`btf_vmlinux->types`, located when opening) finds the records instead ([`super::sorted`]:
//! 0.2 MB read instead of 5.3 MB on Debian's 7.2); without it (BPF never initialised, an index
//! that misleads) the reads go on to the whole blob.
//!
//! Two structures are the exception: `struct kthread` and `struct worker`, private to
//! kernel/kthread.c and the workqueue, which only kernel threads' names need. A kernel's BTF
//! describes them late (Debian 6.1: past 2 MB of a 2.5 MB type section, with the whole string
//! section before them), so reading BTF for them would read nearly all of it. They are taken
//! from the part read for the rest when it describes them, else left out: the walk then infers
//! their few offsets from memory, as for the methods without BTF (`names`, `naming`).
//!
//! Invariant: the blob read is exactly `__start_BTF..__stop_BTF` (bounded to 64 MiB); every
//! offset comes from a named member of a named struct, found through anonymous members.

use super::build::{build_core, private_structs, Field, TypeError, Types};
use super::sorted;
use super::{Layout, LayoutError, LayoutInputs, LayoutMethod, MethodKind};
use crate::introspect::addr::KVirt;
use crate::introspect::btf::{Btf, TypeId, HEAD_READ};
use crate::introspect::kernel::Kernel;

const MAX_BTF: u64 = 64 << 20;
/// Bytes of each section read first.
pub const FIRST_READ: usize = 64 << 10;

pub struct BtfMethod;

impl LayoutMethod for BtfMethod {
    fn kind(&self) -> MethodKind {
        MethodKind::Btf
    }

    fn layout(&self, kernel: &Kernel<'_>, _: &LayoutInputs) -> Result<Layout, LayoutError> {
        // Records read one by one find kernel threads' private structures as cheaply as the
        // rest: they are looked up with it.
        let (btf, built) = with_btf(kernel, |b| Ok((build_core(b)?, b.is_sparse().then(|| private_structs(b)))))?;
        let (core, private) = built.map_err(|source| LayoutError::Build { method: MethodKind::Btf, file: None, source })?;
        // Else kernel threads' private structures, if the part read describes them (see the
        // module doc).
        let (kthread, worker) = private.unwrap_or_else(|| private_structs(&btf));
        Ok(if btf.short() { core } else { Layout { kthread, worker, ..core } })
    }
}

/// Reads `.BTF` up to `types`/`strs` bytes of its sections (all of it for `usize::MAX`) into the
/// kernel's [`BtfRead`](crate::introspect::btf::BtfRead), and parses what is read.
fn read_prefix(kernel: &Kernel<'_>, types: usize, strs: usize) -> Result<Btf, LayoutError> {
    let unavailable = |reason: String| LayoutError::Unavailable { method: MethodKind::Btf, reason };
    let failed = |reason: String| LayoutError::Failed { method: MethodKind::Btf, reason };
    let (start, stop) = kernel
        .info
        .btf
        .ok_or_else(|| unavailable("no __start_BTF/__stop_BTF in kallsyms (kernel built without CONFIG_DEBUG_INFO_BTF)".into()))?;
    let len = stop.0.checked_sub(start.0).ok_or_else(|| failed(format!("__stop_BTF {stop} is below __start_BTF {start}")))?;
    if !(24..=MAX_BTF).contains(&len) {
        return Err(failed(format!("implausible .BTF size {len:#x}")));
    }
    let mut got = kernel.btf_blob.lock().unwrap_or_else(|p| p.into_inner());
    // A header kept for a blob of this length (read ahead when opening, or by an earlier
    // call); else read it, which starts the kept blob afresh.
    let header = match got.header.filter(|_| got.data.len() == len as usize) {
        Some(h) => h,
        None => {
            let mut head = vec![0u8; len.min(HEAD_READ) as usize];
            kernel.space.read(start, &mut head).map_err(|e| failed(format!("reading the .BTF header: {e}")))?;
            got.take_header(len as usize, &head).map_err(|e| failed(format!("{e} (blob at {start})")))?
        }
    };
    let want = (types.min(header.type_len as usize), strs.min(header.str_len as usize));
    let sections = [
        (header.hdr_len as usize + header.type_off as usize, got.types, want.0),
        (header.hdr_len as usize + header.str_off as usize, got.strs, want.1),
    ];
    let regions: Vec<(KVirt, usize)> =
        sections.iter().filter(|s| s.2 > s.1).map(|&(at, have, want)| (start.wrapping_add((at + have) as u64), want - have)).collect();
    if !regions.is_empty() {
        let parts = kernel.space.read_many(&regions);
        let mut parts = parts.into_iter();
        for &(at, have, want) in sections.iter().filter(|s| s.2 > s.1) {
            let bytes = parts.next().ok_or_else(|| failed("no answer reading .BTF".into()))?.map_err(|e| failed(format!("reading .BTF: {e}")))?;
            let bytes = bytes.get(..want - have).ok_or_else(|| failed("short read of .BTF".into()))?;
            std::sync::Arc::make_mut(&mut got.data)[at + have..at + want].copy_from_slice(bytes);
        }
        (got.types, got.strs) = (got.types.max(want.0), got.strs.max(want.1));
    }
    let (types, strs) = if got.whole() { (usize::MAX, usize::MAX) } else { (got.types, got.strs) };
    let btf = Btf::parse_after(got.data.clone(), types, strs, got.indexed.take()).map_err(|e| failed(format!("{e} (blob at {start})")))?;
    got.indexed = Some(btf.indexed());
    Ok(btf)
}

/// `f` answered from as little of the kernel's BTF as answers it (see the module doc), with
/// the part of the BTF that answered: the outer error says the BTF could not be read, the
/// inner result is `f`'s on enough of it.
pub fn with_btf<T, E>(kernel: &Kernel<'_>, f: impl Fn(&Btf) -> Result<T, E>) -> Result<(Btf, Result<T, E>), LayoutError> {
    if let Some(answered) = sorted::with_index(kernel, &f) {
        return Ok(answered);
    }
    let (mut types, mut strs) = (FIRST_READ, FIRST_READ);
    loop {
        let btf = read_prefix(kernel, types, strs)?;
        let r = f(&btf);
        if !btf.is_partial() || !btf.short() {
            return Ok((btf, r));
        }
        let (t_len, s_len) = (btf.header.type_len as usize, btf.header.str_len as usize);
        let (more_types, more_strs) = btf.short_of();
        let next = (
            if more_types { types.saturating_mul(2) } else { types }.min(t_len),
            if more_strs { strs.saturating_mul(2) } else { strs }.min(s_len),
        );
        // Every round reads more, or the last one reads the rest.
        (types, strs) = if next == (types.min(t_len), strs.min(s_len)) { (usize::MAX, usize::MAX) } else { next };
    }
}

/// `f` on the kernel's BTF: on what it looks up, read through the kernel's index of a
/// name-sorted blob (see [`sorted`]), else on the whole blob (for structures described anywhere
/// in it, where a growing prefix would cost more round trips than it saves).
pub fn with_index_or_load<T, E>(kernel: &Kernel<'_>, f: impl Fn(&Btf) -> Result<T, E>) -> Result<Result<T, E>, LayoutError> {
    match sorted::with_index(kernel, &f) {
        Some((_, answered)) => Ok(answered),
        None => Ok(f(&load(kernel)?)),
    }
}

/// Read and parse the kernel's whole BTF; the blob is read from memory once per [`Kernel`]
/// (kept in `Kernel::btf_blob`, with what [`with_btf`] read of it and its index, which each
/// caller shares or continues rather than redoing).
pub fn load(kernel: &Kernel<'_>) -> Result<Btf, LayoutError> {
    read_prefix(kernel, usize::MAX, usize::MAX)
}

impl Btf {
    fn struct_with(&self, name: &str, must_have: &[&str]) -> Result<TypeId, TypeError> {
        let key = (name.to_owned(), must_have.iter().map(|m| m.to_string()).collect::<Vec<_>>());
        if let Some(&id) = self.found.borrow().get(&key) {
            return Ok(id);
        }
        let id = self.first_struct_with(name, must_have)?;
        self.found.borrow_mut().insert(key, id);
        Ok(id)
    }

    /// `r`, or once the blob is short, `stand_in` (see [`SHORT_SIZE`]).
    fn or_short<T>(&self, r: Result<T, TypeError>, stand_in: T) -> Result<T, TypeError> {
        match r {
            Err(_) if self.short() => Ok(stand_in),
            r => r,
        }
    }

    fn first_struct_with(&self, name: &str, must_have: &[&str]) -> Result<TypeId, TypeError> {
        self.structs_named(name)
            .iter()
            .copied()
            .find(|&id| must_have.iter().all(|m| matches!(self.find_member(id, m), Ok(Some(_)))))
            .ok_or_else(|| {
                // A later struct of the name, not read yet, may have them.
                self.note_short();
                TypeError::NoStruct { name: name.to_owned(), must_have: must_have.iter().map(|m| m.to_string()).collect() }
            })
    }
}

/// What a lookup answers once the blob is [`Btf::short`]: its caller's answer is then thrown
/// away (the blob is read further and the caller asked again), so the answer only lets the
/// caller go on to its other lookups, whose needs are then read in the same batch.
const SHORT_SIZE: u64 = 4096;
const SHORT_FIELD: Field = Field { offset: 0, size: 1 };

impl Types for Btf {
    fn struct_size(&self, name: &str, must_have: &[&str]) -> Result<u64, TypeError> {
        let size = self.struct_with(name, must_have).and_then(|id| Ok(self.size_of(id)?));
        self.or_short(size, SHORT_SIZE)
    }

    fn member(&self, name: &str, must_have: &[&str], member: &str) -> Result<Option<Field>, TypeError> {
        let field = (|| {
            let id = self.struct_with(name, must_have)?;
            let Some(m) = self.find_member(id, member)? else { return Ok(None) };
            if m.bitfield_size != 0 || m.bit_offset % 8 != 0 {
                return Err(TypeError::Bitfield { name: name.to_owned(), member: member.to_owned() });
            }
            let size = self.size_of(m.type_id)?;
            Ok(Some(Field { offset: (m.bit_offset / 8) as u64, size }))
        })();
        self.or_short(field, Some(SHORT_FIELD))
    }
}
