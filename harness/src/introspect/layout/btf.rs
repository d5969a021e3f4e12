//! The `btf` layout method: offsets from the kernel's own BTF, read from `.BTF` in memory.
//!
//! Invariant: the blob read is exactly `__start_BTF..__stop_BTF` (bounded to 64 MiB); every
//! offset comes from a named member of a named struct, found through anonymous members.

use super::build::{build, Field, TypeError, Types};
use super::{Layout, LayoutError, LayoutInputs, LayoutMethod, MethodKind};
use crate::introspect::btf::{Btf, TypeId};
use crate::introspect::kernel::Kernel;

const MAX_BTF: u64 = 64 << 20;

pub struct BtfMethod;

impl LayoutMethod for BtfMethod {
    fn kind(&self) -> MethodKind {
        MethodKind::Btf
    }

    fn layout(&self, kernel: &Kernel<'_>, _: &LayoutInputs) -> Result<Layout, LayoutError> {
        let btf = load(kernel)?;
        build(&btf).map_err(|source| LayoutError::Build { method: MethodKind::Btf, file: None, source })
    }
}

/// Read and parse the kernel's BTF; the blob is read from memory once per [`Kernel`] (kept in
/// `Kernel::btf_blob`), parsed again for each caller.
pub fn load(kernel: &Kernel<'_>) -> Result<Btf, LayoutError> {
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
    let data = match kernel.btf_blob.get() {
        Some(d) => d.clone(),
        None => {
            let mut data = vec![0u8; len as usize];
            kernel.space.read(start, &mut data).map_err(|e| failed(format!("reading .BTF: {e}")))?;
            let _ = kernel.btf_blob.set(data.clone());
            data
        }
    };
    Btf::parse(data).map_err(|e| failed(format!("{e} (blob at {start})")))
}

impl Btf {
    fn struct_with(&self, name: &str, must_have: &[&str]) -> Result<TypeId, TypeError> {
        self.structs_named(name)
            .iter()
            .copied()
            .find(|&id| must_have.iter().all(|m| matches!(self.find_member(id, m), Ok(Some(_)))))
            .ok_or_else(|| TypeError::NoStruct { name: name.to_owned(), must_have: must_have.iter().map(|m| m.to_string()).collect() })
    }
}

impl Types for Btf {
    fn struct_size(&self, name: &str, must_have: &[&str]) -> Result<u64, TypeError> {
        let id = self.struct_with(name, must_have)?;
        Ok(self.size_of(id)?)
    }

    fn member(&self, name: &str, must_have: &[&str], member: &str) -> Result<Option<Field>, TypeError> {
        let id = self.struct_with(name, must_have)?;
        let Some(m) = self.find_member(id, member)? else { return Ok(None) };
        if m.bitfield_size != 0 || m.bit_offset % 8 != 0 {
            return Err(TypeError::Bitfield { name: name.to_owned(), member: member.to_owned() });
        }
        let size = self.size_of(m.type_id)?;
        Ok(Some(Field { offset: (m.bit_offset / 8) as u64, size }))
    }
}
