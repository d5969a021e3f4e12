//! Where the fields of `struct module` sit, and the ways to learn it.
//!
//! | method       | prerequisite                                   | source                                    |
//! |--------------|------------------------------------------------|-------------------------------------------|
//! | `btf`        | `.BTF` and `modules` in kallsyms (`KALLSYMS_ALL`) | the kernel's struct definitions         |
//! | `vmcoreinfo` | `OFFSET(module.*)` entries in VMCOREINFO       | none of the corpus kernels exports them   |
//! | `inferred`   | `modules` in kallsyms                          | the modules' own structure (`infer`)      |
//!
//! `struct module` begins the same way in every kernel since 2.6 (`enum module_state state;
//! struct list_head list; char name[MODULE_NAME_LEN]`, 56 bytes on 64-bit). Where the module's
//! memory is described changed in 6.4: until then `struct module_layout core_layout, init_layout`
//! (`/proc/modules` prints `init_layout.size + core_layout.size` and `core_layout.base`), since
//! then `struct module_memory mem[MOD_MEM_NUM_TYPES]` (it prints the sum of every `mem[].size`
//! and `mem[MOD_TEXT].base`). 7.x added `bool is_rox` between `base` and `size`.
//!
//! Invariant: a [`ModuleLayout`] returned by any method has passed [`ModuleLayout::check`]:
//! every field lies inside the [`ModuleLayout::span`] bytes read per module, which is at most
//! [`MAX_STRUCT`].

use serde::Serialize;

use crate::introspect::btf::Btf;
use crate::introspect::vmcoreinfo::VmcoreInfo;

/// Largest `struct module` accepted (Debian's are about 1.3 KiB).
pub const MAX_STRUCT: u64 = 16 << 10;
/// Most `mem[]` entries accepted (Linux has 7).
pub const MAX_MEM_TYPES: u64 = 16;
/// Longest module name field accepted (`MODULE_NAME_LEN` is 56 on 64-bit, 60 on 32-bit).
pub const MAX_NAME_LEN: u64 = 256;

/// Where the module's memory and its size are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Memory {
    /// Linux 6.4 on: `mem[count]` at `offset`, `stride` bytes apart, each with `void *base` and
    /// `unsigned int size` at these offsets; the size shown is the sum of every `size`, the
    /// address `mem[0].base` (`MOD_TEXT`).
    Array { offset: u64, count: u64, stride: u64, base: u64, size: u64 },
    /// To 6.3: `core_layout` and `init_layout` (and `data_layout` where the architecture has
    /// one) of `struct module_layout`; the size shown is the sum of their `size`, the address
    /// `core_layout.base`.
    Layouts { core: u64, init: u64, data: Option<u64>, base: u64, size: u64 },
}

/// Where `/proc/modules`' "used by" column comes from (`CONFIG_MODULE_UNLOAD`): the
/// `struct module_use` entries on `module.source_list` (each naming a module that uses this one
/// in `source`), and `[permanent]` for a module with an `init` but no `exit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Users {
    /// `module.source_list`.
    pub source_list: u64,
    /// `module.init` (unknown to the inference when no sampled module has init code).
    pub init: Option<u64>,
    /// `module.exit`.
    pub exit: u64,
    /// `module_use.source_list` (the node on `module.source_list`).
    pub use_node: u64,
    /// `module_use.source`.
    pub use_source: u64,
}

/// Largest `struct module_use` offset accepted (it is 48 bytes).
pub const MAX_USE: u64 = 256;

/// Offsets (bytes) in `struct module` of the fields `lsmod` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ModuleLayout {
    /// Bytes read per module: `sizeof(struct module)`, or (inferred) enough for every field.
    pub span: u64,
    pub state: u64,
    pub list: u64,
    pub name: u64,
    pub name_len: u64,
    pub memory: Memory,
    /// `unsigned long taints`.
    pub taints: Option<u64>,
    /// `atomic_t refcnt` (`CONFIG_MODULE_UNLOAD`).
    pub refcnt: Option<u64>,
    /// The "used by" column (`CONFIG_MODULE_UNLOAD`).
    pub users: Option<Users>,
}

impl ModuleLayout {
    /// Every field inside [`Self::span`], the span and the name no longer than their caps.
    pub fn check(&self) -> Result<(), String> {
        if self.span == 0 || self.span > MAX_STRUCT {
            return Err(format!("struct module of {} bytes is implausible (at most {MAX_STRUCT})", self.span));
        }
        if self.name_len == 0 || self.name_len > MAX_NAME_LEN {
            return Err(format!("module.name of {} bytes is implausible", self.name_len));
        }
        let mut fields: Vec<(String, u64, u64)> = vec![
            ("module.state".into(), self.state, 4),
            ("module.list".into(), self.list, 16),
            ("module.name".into(), self.name, self.name_len),
        ];
        if let Some(t) = self.taints {
            fields.push(("module.taints".into(), t, 8));
        }
        if let Some(r) = self.refcnt {
            fields.push(("module.refcnt".into(), r, 4));
        }
        if let Some(u) = self.users {
            fields.push(("module.source_list".into(), u.source_list, 16));
            fields.push(("module.exit".into(), u.exit, 8));
            if let Some(i) = u.init {
                fields.push(("module.init".into(), i, 8));
            }
            if u.use_node > MAX_USE || u.use_source > MAX_USE {
                return Err(format!("module_use.source_list at {} or .source at {} is implausible", u.use_node, u.use_source));
            }
        }
        match self.memory {
            Memory::Array { offset, count, stride, base, size } => {
                if count == 0 || count > MAX_MEM_TYPES {
                    return Err(format!("module.mem has {count} entries (1..={MAX_MEM_TYPES} accepted)"));
                }
                if base.checked_add(8).is_none_or(|e| e > stride) || size.checked_add(4).is_none_or(|e| e > stride) {
                    return Err(format!("module_memory.base at {base} or .size at {size} runs past its {stride} bytes"));
                }
                let len = count.checked_mul(stride).ok_or("module.mem overflows")?;
                fields.push(("module.mem".into(), offset, len));
            }
            Memory::Layouts { core, init, data, base, size } => {
                for (n, o) in [("core_layout", Some(core)), ("init_layout", Some(init)), ("data_layout", data)] {
                    if let Some(o) = o {
                        fields.push((format!("module.{n}.base"), o.saturating_add(base), 8));
                        fields.push((format!("module.{n}.size"), o.saturating_add(size), 4));
                    }
                }
            }
        }
        for (name, off, len) in fields {
            if off.checked_add(len).is_none_or(|end| end > self.span) {
                return Err(format!("{name} at {off} ({len} bytes) runs past the {} bytes read per module", self.span));
            }
        }
        Ok(())
    }

    /// From the kernel's BTF.
    pub fn from_btf(btf: &Btf) -> Result<ModuleLayout, String> {
        let module = btf
            .structs_named("module")
            .iter()
            .copied()
            .find(|&id| matches!(btf.find_member(id, "list"), Ok(Some(_))) && matches!(btf.find_member(id, "name"), Ok(Some(_))))
            .ok_or("no struct module with list and name in BTF")?;
        let st = |name: &str| -> Result<u32, String> { btf.structs_named(name).first().copied().ok_or_else(|| format!("no struct {name} in BTF")) };
        // (byte offset, size in bytes) of a member that is not a bitfield.
        let member = |id: u32, sname: &str, field: &str| -> Result<Option<(u64, u64)>, String> {
            let Some(m) = btf.find_member(id, field).map_err(|e| e.to_string())? else { return Ok(None) };
            if m.bit_offset % 8 != 0 || m.bitfield_size != 0 {
                return Err(format!("{sname}.{field} is a bitfield"));
            }
            Ok(Some(((m.bit_offset / 8) as u64, btf.size_of(m.type_id).map_err(|e| e.to_string())?)))
        };
        let need = |id: u32, sname: &str, field: &str| -> Result<(u64, u64), String> {
            member(id, sname, field)?.ok_or_else(|| format!("BTF struct {sname} has no {field}"))
        };
        let (name, name_len) = need(module, "module", "name")?;
        let memory = if let Some((offset, len)) = member(module, "module", "mem")? {
            let mm = st("module_memory")?;
            let stride = btf.size_of(mm).map_err(|e| e.to_string())?;
            if stride == 0 || len % stride != 0 {
                return Err(format!("module.mem of {len} bytes is no array of {stride}-byte module_memory"));
            }
            Memory::Array { offset, count: len / stride, stride, base: need(mm, "module_memory", "base")?.0, size: need(mm, "module_memory", "size")?.0 }
        } else {
            let ml = st("module_layout")?;
            Memory::Layouts {
                core: need(module, "module", "core_layout")?.0,
                init: need(module, "module", "init_layout")?.0,
                data: member(module, "module", "data_layout")?.map(|m| m.0),
                base: need(ml, "module_layout", "base")?.0,
                size: need(ml, "module_layout", "size")?.0,
            }
        };
        let users = match (member(module, "module", "source_list")?, member(module, "module", "exit")?) {
            (Some((source_list, _)), Some((exit, _))) => {
                let mu = st("module_use")?;
                Some(Users {
                    source_list,
                    init: member(module, "module", "init")?.map(|m| m.0),
                    exit,
                    use_node: need(mu, "module_use", "source_list")?.0,
                    use_source: need(mu, "module_use", "source")?.0,
                })
            }
            _ => None,
        };
        let l = ModuleLayout {
            span: btf.size_of(module).map_err(|e| e.to_string())?,
            state: need(module, "module", "state")?.0,
            list: need(module, "module", "list")?.0,
            name,
            name_len,
            memory,
            taints: member(module, "module", "taints")?.map(|m| m.0),
            refcnt: member(module, "module", "refcnt")?.map(|m| m.0),
            users,
        };
        l.check()?;
        Ok(l)
    }

    /// From VMCOREINFO entries, for a kernel that exports them: `SIZE(module)`,
    /// `OFFSET(module.{state,list,name,taints,refcnt})`, `LENGTH(module.name)` (else 56), and
    /// either `OFFSET(module.mem)`, `LENGTH(module.mem)`, `SIZE(module_memory)`,
    /// `OFFSET(module_memory.{base,size})` or `OFFSET(module.{core_layout,init_layout})`,
    /// `OFFSET(module_layout.{base,size})`. Upstream Linux exports none of them.
    pub fn from_vmcoreinfo(v: &VmcoreInfo) -> Result<ModuleLayout, String> {
        let off = |f: &str| v.offset(f).ok_or_else(|| format!("VMCOREINFO has no OFFSET({f})"));
        let size = |s: &str| v.size(s).ok_or_else(|| format!("VMCOREINFO has no SIZE({s})"));
        let length = |f: &str| v.get(&format!("LENGTH({f})")).and_then(|s| s.trim().parse::<u64>().ok());
        let list = off("module.list")?;
        let memory = if let Some(offset) = v.offset("module.mem") {
            Memory::Array {
                offset,
                count: length("module.mem").ok_or("VMCOREINFO has no LENGTH(module.mem)")?,
                stride: size("module_memory")?,
                base: off("module_memory.base")?,
                size: off("module_memory.size")?,
            }
        } else {
            Memory::Layouts {
                core: off("module.core_layout")?,
                init: off("module.init_layout")?,
                data: None,
                base: off("module_layout.base")?,
                size: off("module_layout.size")?,
            }
        };
        let l = ModuleLayout {
            span: size("module")?,
            state: off("module.state")?,
            list,
            name: off("module.name")?,
            name_len: length("module.name").unwrap_or(56),
            memory,
            taints: v.offset("module.taints"),
            refcnt: v.offset("module.refcnt"),
            users: match (v.offset("module.source_list"), v.offset("module.exit")) {
                (Some(source_list), Some(exit)) => Some(Users {
                    source_list,
                    init: v.offset("module.init"),
                    exit,
                    use_node: off("module_use.source_list")?,
                    use_source: off("module_use.source")?,
                }),
                _ => None,
            },
        };
        l.check()?;
        Ok(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linux_6_12() -> ModuleLayout {
        ModuleLayout {
            span: 1280,
            state: 0,
            list: 8,
            name: 24,
            name_len: 56,
            memory: Memory::Array { offset: 320, count: 7, stride: 72, base: 0, size: 8 },
            taints: Some(832),
            refcnt: Some(1000),
            users: None,
        }
    }

    #[test]
    fn check_catches_fields_outside_the_struct() {
        linux_6_12().check().unwrap();
        let mut l = linux_6_12();
        l.memory = Memory::Array { offset: 320, count: 17, stride: 72, base: 0, size: 8 };
        assert!(l.check().unwrap_err().contains("entries"));
        l = linux_6_12();
        l.refcnt = Some(1278);
        assert!(l.check().unwrap_err().contains("module.refcnt"));
        l = linux_6_12();
        l.span = u64::MAX;
        assert!(l.check().is_err());
        l = linux_6_12();
        l.memory = Memory::Layouts { core: u64::MAX, init: 400, data: None, base: 0, size: 8 };
        assert!(l.check().unwrap_err().contains("core_layout"));
    }

    #[test]
    fn vmcoreinfo_without_module_entries_says_what_is_missing() {
        let v = VmcoreInfo::parse(b"OSRELEASE=6.1.0\nSYMBOL(prb)=ffffffff82000000\n");
        assert_eq!(ModuleLayout::from_vmcoreinfo(&v).unwrap_err(), "VMCOREINFO has no OFFSET(module.list)");
        let text = "OFFSET(module.list)=8\nOFFSET(module.state)=0\nOFFSET(module.name)=24\nSIZE(module)=1280\n\
            OFFSET(module.mem)=320\nLENGTH(module.mem)=7\nSIZE(module_memory)=72\nOFFSET(module_memory.base)=0\n\
            OFFSET(module_memory.size)=8\nOFFSET(module.taints)=832\nOFFSET(module.refcnt)=1000\n";
        assert_eq!(ModuleLayout::from_vmcoreinfo(&VmcoreInfo::parse(text.as_bytes())).unwrap(), linux_6_12());
    }
}
