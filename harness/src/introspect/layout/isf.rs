//! The `isf` layout method: offsets from a Volatility 3 Intermediate Symbol Format file
//! (`--isf PATH`, plain JSON as written by dwarf2json or by `harness profile --format isf`).
//!
//! Invariant: only `user_types.<struct>.size` and `.fields.<member>.{offset,type}` are read;
//! anonymous members (dwarf2json names them `unnamed_field_*`, their types `unnamed_*`) are
//! searched to a fixed depth. A file that lacks a required member is an error naming it.
//! Types are kept as their raw JSON text and parsed when asked for: a complete ISF (every BTF type,
//! ~10 MB) never becomes one tree of millions of small allocations, whose freeing used to cost the
//! next phase tens of milliseconds of allocator consolidation.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::build::{build, Field, TypeError, Types};
use super::{Layout, LayoutError, LayoutInputs, LayoutMethod, MethodKind};
use crate::introspect::kernel::Kernel;

const MAX_DEPTH: usize = 8;
const MAX_FILE: u64 = 1 << 30;

pub struct IsfMethod;

impl LayoutMethod for IsfMethod {
    fn kind(&self) -> MethodKind {
        MethodKind::Isf
    }

    fn layout(&self, _: &Kernel<'_>, inputs: &LayoutInputs) -> Result<Layout, LayoutError> {
        let path = inputs.isf.as_deref().ok_or_else(|| LayoutError::Unavailable {
            method: MethodKind::Isf,
            reason: "no ISF file given (--isf PATH)".into(),
        })?;
        let failed = |reason: String| LayoutError::Failed { method: MethodKind::Isf, reason };
        let isf = Isf::load(path).map_err(failed)?;
        build(&isf).map_err(|source| LayoutError::Build { method: MethodKind::Isf, file: Some(path.to_path_buf()), source })
    }
}

/// A loaded ISF document: its type tables, each type as raw JSON text.
pub struct Isf {
    user_types: HashMap<String, Box<RawValue>>,
    base_types: HashMap<String, Box<RawValue>>,
    enums: HashMap<String, Box<RawValue>>,
}

/// The parts of an ISF document this method reads; everything else is skipped unparsed.
#[derive(Deserialize)]
struct Tables {
    user_types: Option<HashMap<String, Box<RawValue>>>,
    #[serde(default)]
    base_types: HashMap<String, Box<RawValue>>,
    #[serde(default)]
    enums: HashMap<String, Box<RawValue>>,
}

impl Isf {
    pub fn load(path: &Path) -> Result<Isf, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.len() > MAX_FILE {
            return Err(format!("{}: larger than 1 GiB", path.display()));
        }
        if path.extension().is_some_and(|e| e == "xz") {
            return Err(format!("{}: compressed ISF not supported; unxz it first", path.display()));
        }
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Isf::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn from_slice(text: &[u8]) -> Result<Isf, String> {
        let tables: Tables = serde_json::from_slice(text).map_err(|e| {
            if e.is_data() {
                format!("not an ISF document: {e}")
            } else {
                e.to_string()
            }
        })?;
        let user_types = tables.user_types.ok_or("not an ISF document (no user_types object)")?;
        Ok(Isf { user_types, base_types: tables.base_types, enums: tables.enums })
    }

    pub fn from_value(doc: Value) -> Result<Isf, String> {
        Isf::from_slice(doc.to_string().as_bytes())
    }

    /// One entry of a type table, parsed (`None` if absent or not JSON an ISF would hold).
    fn entry(table: &HashMap<String, Box<RawValue>>, name: &str) -> Option<Value> {
        serde_json::from_str(table.get(name)?.get()).ok()
    }

    fn user_type(&self, name: &str) -> Option<Value> {
        Self::entry(&self.user_types, name)
    }

    /// Size of a type descriptor (`{"kind": "base"|"pointer"|"array"|"struct"|..., ...}`).
    fn type_size(&self, ty: &Value, depth: usize) -> Option<u64> {
        if depth > MAX_DEPTH {
            return None;
        }
        let name = ty.get("name").and_then(Value::as_str);
        match ty.get("kind")?.as_str()? {
            "pointer" => Some(8),
            "base" => Self::entry(&self.base_types, name?)?.get("size")?.as_u64(),
            "array" => ty.get("count")?.as_u64()?.checked_mul(self.type_size(ty.get("subtype")?, depth + 1)?),
            "struct" | "union" => self.user_type(name?)?.get("size")?.as_u64(),
            "enum" => Self::entry(&self.enums, name?)?.get("size")?.as_u64(),
            _ => None,
        }
    }

    fn find(&self, ty_name: &str, member: &str, depth: usize) -> Option<Field> {
        if depth > MAX_DEPTH {
            return None;
        }
        let ty = self.user_type(ty_name)?;
        let fields = ty.get("fields")?.as_object()?;
        if let Some(f) = fields.get(member) {
            let ty = f.get("type")?;
            if ty.get("kind").and_then(Value::as_str) == Some("bitfield") {
                return None;
            }
            return Some(Field { offset: f.get("offset")?.as_u64()?, size: self.type_size(ty, 0).unwrap_or(0) });
        }
        for (fname, f) in fields {
            let ty = f.get("type")?;
            let kind = ty.get("kind").and_then(Value::as_str);
            let tname = ty.get("name").and_then(Value::as_str).unwrap_or("");
            let anonymous = fname.starts_with("unnamed") || fname.is_empty() || tname.starts_with("unnamed");
            if anonymous && matches!(kind, Some("struct") | Some("union")) {
                if let Some(inner) = self.find(tname, member, depth + 1) {
                    let base = f.get("offset")?.as_u64()?;
                    return Some(Field { offset: base.checked_add(inner.offset)?, size: inner.size });
                }
            }
        }
        None
    }
}

impl Types for Isf {
    fn struct_size(&self, name: &str, _: &[&str]) -> Result<u64, TypeError> {
        self.user_type(name)
            .and_then(|t| t.get("size").and_then(Value::as_u64))
            .ok_or_else(|| TypeError::NoUserType { name: name.to_owned() })
    }

    fn member(&self, name: &str, _: &[&str], member: &str) -> Result<Option<Field>, TypeError> {
        Ok(self.find(name, member, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_members_through_unnamed_fields() {
        let isf = Isf::from_value(json!({
            "base_types": {"unsigned int": {"size": 4, "signed": false, "kind": "int", "endian": "little"}},
            "user_types": {
                "task_struct": {"kind": "struct", "size": 100, "fields": {
                    "unnamed_field_0": {"offset": 8, "type": {"kind": "union", "name": "unnamed_1234"}},
                    "pid": {"offset": 40, "type": {"kind": "base", "name": "int"}}
                }},
                "unnamed_1234": {"kind": "union", "size": 4, "fields": {
                    "__state": {"offset": 0, "type": {"kind": "base", "name": "unsigned int"}}
                }}
            }
        }))
        .unwrap();
        assert_eq!(isf.member("task_struct", &[], "__state").unwrap(), Some(Field { offset: 8, size: 4 }));
        assert_eq!(isf.member("task_struct", &[], "pid").unwrap().map(|f| f.offset), Some(40));
        assert_eq!(isf.member("task_struct", &[], "nope").unwrap(), None);
        assert_eq!(isf.struct_size("task_struct", &[]).unwrap(), 100);
        assert!(isf.struct_size("mm_struct", &[]).is_err());
        assert!(Isf::from_value(json!({"symbols": {}})).is_err());
    }
}
