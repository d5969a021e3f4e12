//! Writing what was learned as a Volatility 3 Intermediate Symbol Format (ISF) document, so a
//! user can run Volatility on the same image (`harness profile --format isf`).
//!
//! With BTF, every type is converted (base types, structs, unions, enums; typedefs and
//! qualifiers resolved as dwarf2json does; bitfields as `bitfield` descriptors). Without BTF
//! only the structures and fields of the learned [`Layout`] are written. Symbols come from
//! kallsyms, at their link-time addresses (runtime address minus the KASLR shift, like a
//! System.map), and `linux_banner` carries the banner as `constant_data` for Volatility's
//! banner matching.
//!
//! Invariant: the output is deterministic (sorted maps), every type descriptor names a type
//! present in the document (anonymous and duplicate-named types get unique synthesized
//! names), and conversion never recurses without bound (descriptors are built iteratively
//! over alias chains capped at [`MAX_DEPTH`]).

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

use super::btf::{Btf, Kind, Type, TypeId};
use emulator::bytes::Bytes;
use super::kernel::Kernel;
use super::globals::Globals;
use super::layout::Layout;

const MAX_DEPTH: usize = 32;
/// ISF schema version written.
pub const FORMAT: &str = "6.2.0";

#[derive(Debug, thiserror::Error)]
pub enum IsfError {
    #[error("BTF: {0}")]
    Btf(#[from] super::btf::BtfError),
    #[error("kallsyms: {0}")]
    Kallsyms(#[from] super::kallsyms::KallsymsError),
}

/// Names for every struct/union/enum id, unique across the document.
struct Names {
    by_id: HashMap<TypeId, String>,
}

impl Names {
    fn new(btf: &Btf) -> Result<Names, IsfError> {
        let mut by_id = HashMap::new();
        let mut taken: HashMap<(u8, String), TypeId> = HashMap::new();
        for t in btf.records() {
            let t = t?;
            let ns = match t.kind {
                Kind::Struct | Kind::Union | Kind::Fwd => 0u8,
                Kind::Enum | Kind::Enum64 => 1,
                _ => continue,
            };
            let raw = btf.name(&t)?;
            let name = if raw.is_empty() {
                format!("unnamed_{}_{}", kind_word(t.kind), t.id)
            } else if taken.contains_key(&(ns, raw.clone())) {
                format!("{raw}__btf{}", t.id)
            } else {
                raw
            };
            taken.insert((ns, name.clone()), t.id);
            by_id.insert(t.id, name);
        }
        Ok(Names { by_id })
    }

    fn of(&self, id: TypeId) -> String {
        self.by_id.get(&id).cloned().unwrap_or_else(|| format!("unnamed_{id}"))
    }
}

fn kind_word(k: Kind) -> &'static str {
    match k {
        Kind::Union => "union",
        Kind::Enum | Kind::Enum64 => "enum",
        _ => "struct",
    }
}

/// The `base_types` name and entry of a BTF INT/FLOAT.
fn base_entry(btf: &Btf, t: &Type) -> Result<(String, Value), IsfError> {
    let name = btf.name(t)?;
    let size = t.size_or_type;
    let v = if t.kind == Kind::Float {
        json!({"kind": "float", "size": size, "signed": true, "endian": "little"})
    } else {
        let enc = btf.int_encoding(t).unwrap_or(0);
        let kind = if enc & 4 != 0 {
            "bool"
        } else if enc & 2 != 0 || name.contains("char") {
            "char"
        } else {
            "int"
        };
        json!({"kind": kind, "size": size, "signed": enc & 1 != 0, "endian": "little"})
    };
    Ok((name, v))
}

/// The type descriptor for `id` (resolving typedefs and qualifiers).
fn desc(btf: &Btf, names: &Names, id: TypeId) -> Result<Value, IsfError> {
    desc_within(btf, names, id, MAX_DEPTH)
}

/// [`desc`] with `budget` steps left: every alias followed and every array or pointer
/// descended into spends one, shared across the recursion, so a type graph that refers to
/// itself (an array of itself, a pointer to an array of pointers to it) ends as `void`
/// instead of exhausting the stack.
fn desc_within(btf: &Btf, names: &Names, id: TypeId, budget: usize) -> Result<Value, IsfError> {
    let mut id = id;
    for left in (0..budget).rev() {
        if id == 0 {
            return Ok(json!({"kind": "base", "name": "void"}));
        }
        let t = btf.get(id)?;
        match t.kind {
            k if k.is_alias() => id = t.size_or_type,
            Kind::Int | Kind::Float => return Ok(json!({"kind": "base", "name": btf.name(&t)?})),
            Kind::Ptr => {
                let sub = shallow(btf, names, t.size_or_type, left)?;
                return Ok(json!({"kind": "pointer", "subtype": sub}));
            }
            Kind::Array => {
                let (elem, _, n) = btf.array(&t)?;
                return Ok(json!({"kind": "array", "count": n, "subtype": desc_within(btf, names, elem, left)?}));
            }
            Kind::Struct | Kind::Union | Kind::Fwd => {
                let word = if t.kind == Kind::Union || (t.kind == Kind::Fwd && t.kind_flag) { "union" } else { "struct" };
                return Ok(json!({"kind": word, "name": names.of(t.id)}));
            }
            Kind::Enum | Kind::Enum64 => return Ok(json!({"kind": "enum", "name": names.of(t.id)})),
            Kind::FuncProto | Kind::Func => return Ok(json!({"kind": "function"})),
            _ => return Ok(json!({"kind": "base", "name": "void"})),
        }
    }
    Ok(json!({"kind": "base", "name": "void"}))
}

/// A pointer's subtype, without descending into arrays of pointers indefinitely (shares
/// [`desc_within`]'s budget).
fn shallow(btf: &Btf, names: &Names, id: TypeId, budget: usize) -> Result<Value, IsfError> {
    let mut id = id;
    for left in (0..budget).rev() {
        if id == 0 {
            return Ok(json!({"kind": "base", "name": "void"}));
        }
        let t = btf.get(id)?;
        if t.kind.is_alias() {
            id = t.size_or_type;
            continue;
        }
        return match t.kind {
            Kind::Ptr => Ok(json!({"kind": "pointer", "subtype": {"kind": "base", "name": "void"}})),
            _ => desc_within(btf, names, id, left),
        };
    }
    Ok(json!({"kind": "base", "name": "void"}))
}

/// ISF `base_types`, `user_types` and `enums`.
pub type TypeMaps = (Map<String, Value>, Map<String, Value>, Map<String, Value>);

/// Convert every BTF type.
pub fn from_btf(btf: &Btf) -> Result<TypeMaps, IsfError> {
    let names = Names::new(btf)?;
    let mut base = Map::new();
    base.insert("void".into(), json!({"kind": "void", "size": 0, "signed": false, "endian": "little"}));
    base.insert("pointer".into(), json!({"kind": "int", "size": 8, "signed": false, "endian": "little"}));
    let mut user = Map::new();
    let mut enums = Map::new();
    for t in btf.records() {
        let t = t?;
        match t.kind {
            Kind::Int | Kind::Float => {
                let (n, v) = base_entry(btf, &t)?;
                base.entry(n).or_insert(v);
            }
            Kind::Struct | Kind::Union => {
                let mut fields = Map::new();
                for (i, m) in btf.members(&t)?.into_iter().enumerate() {
                    let mname = String::from_utf8_lossy(btf.str_at(m.name_off)?).into_owned();
                    let mname = if mname.is_empty() { format!("unnamed_field_{i}") } else { mname };
                    let field = if m.bitfield_size != 0 || (m.bit_offset % 8 != 0) {
                        let storage = btf.size_of(m.type_id).unwrap_or(4).clamp(1, u64::from(u32::MAX));
                        let unit_bits = storage * 8;
                        let unit = (m.bit_offset as u64 / unit_bits) * storage;
                        let bits = if m.bitfield_size != 0 { m.bitfield_size as u64 } else { unit_bits };
                        json!({
                            "offset": unit,
                            "type": {"kind": "bitfield", "bit_position": m.bit_offset as u64 - unit * 8, "bit_length": bits, "type": desc(btf, &names, m.type_id)?}
                        })
                    } else {
                        json!({"offset": m.bit_offset / 8, "type": desc(btf, &names, m.type_id)?})
                    };
                    fields.insert(mname, field);
                }
                let kind = if t.kind == Kind::Union { "union" } else { "struct" };
                user.insert(names.of(t.id), json!({"kind": kind, "size": t.size_or_type, "fields": fields}));
            }
            Kind::Fwd => {
                let kind = if t.kind_flag { "union" } else { "struct" };
                user.entry(names.of(t.id)).or_insert(json!({"kind": kind, "size": 0, "fields": {}}));
            }
            Kind::Enum | Kind::Enum64 => {
                let consts = btf.enum_values(&t)?;
                let signed = consts.iter().any(|(_, v)| *v < 0);
                let base_name = match (t.size_or_type, signed) {
                    (8, true) => "long",
                    (8, false) => "unsigned long",
                    (_, true) => "int",
                    (_, false) => "unsigned int",
                };
                base.entry(base_name.to_string()).or_insert(json!({"kind": "int", "size": t.size_or_type.max(4), "signed": signed, "endian": "little"}));
                let constants: Map<String, Value> = consts.into_iter().map(|(k, v)| (k, json!(v))).collect();
                enums.insert(names.of(t.id), json!({"size": t.size_or_type, "base": base_name, "constants": constants}));
            }
            _ => {}
        }
    }
    Ok((base, user, enums))
}

/// Only the learned layout (methods other than BTF).
pub fn from_layout(l: &Layout, g: &Globals) -> (Map<String, Value>, Map<String, Value>) {
    let base: Map<String, Value> = [
        ("void", json!({"kind": "void", "size": 0, "signed": false, "endian": "little"})),
        ("pointer", json!({"kind": "int", "size": 8, "signed": false, "endian": "little"})),
        ("int", json!({"kind": "int", "size": 4, "signed": true, "endian": "little"})),
        ("unsigned int", json!({"kind": "int", "size": 4, "signed": false, "endian": "little"})),
        ("unsigned long", json!({"kind": "int", "size": 8, "signed": false, "endian": "little"})),
        ("char", json!({"kind": "char", "size": 1, "signed": true, "endian": "little"})),
        // The names GCC gives (and BTF carries), which Volatility's plugins cast to.
        ("long unsigned int", json!({"kind": "int", "size": 8, "signed": false, "endian": "little"})),
        ("long int", json!({"kind": "int", "size": 8, "signed": true, "endian": "little"})),
        ("long long unsigned int", json!({"kind": "int", "size": 8, "signed": false, "endian": "little"})),
        ("long long int", json!({"kind": "int", "size": 8, "signed": true, "endian": "little"})),
        ("short unsigned int", json!({"kind": "int", "size": 2, "signed": false, "endian": "little"})),
        ("short int", json!({"kind": "int", "size": 2, "signed": true, "endian": "little"})),
        ("unsigned char", json!({"kind": "char", "size": 1, "signed": false, "endian": "little"})),
        ("_Bool", json!({"kind": "bool", "size": 1, "signed": false, "endian": "little"})),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let b = |n: &str| json!({"kind": "base", "name": n});
    let ptr = |s: &str| json!({"kind": "pointer", "subtype": {"kind": "struct", "name": s}});
    let list = json!({"kind": "struct", "name": "list_head"});
    let t = &l.task;
    let mut task = vec![
        ("tasks", t.tasks, list.clone()),
        ("pid", t.pid, b("int")),
        ("tgid", t.tgid, b("int")),
        ("real_parent", t.real_parent, ptr("task_struct")),
        ("thread_node", t.thread_node, list.clone()),
        ("signal", t.signal, ptr("signal_struct")),
        ("real_cred", t.real_cred, ptr("cred")),
        ("__state", t.state, b("unsigned int")),
        ("comm", t.comm, json!({"kind": "array", "count": 16, "subtype": b("char")})),
        ("mm", g.mm.unwrap_or(t.mm), ptr("mm_struct")),
        ("flags", t.flags, b("unsigned int")),
        ("start_boottime", t.start_boottime, b("unsigned long")),
    ];
    if let Some(e) = t.exit_state {
        task.push(("exit_state", e, b("int")));
    }
    if let Some(w) = t.worker_private {
        task.push(("worker_private", w, json!({"kind": "pointer", "subtype": b("void")})));
    }
    if let Some(o) = g.active_mm {
        task.push(("active_mm", o, ptr("mm_struct")));
    }
    if let Some(o) = g.files {
        task.push(("files", o, ptr("files_struct")));
    }
    if let Some(o) = g.cred {
        task.push(("cred", o, ptr("cred")));
    }
    // A struct whose size the method did not learn gets the smallest size holding its fields
    // (every field written here is at most 16 bytes).
    let record = |size: u64, v: Vec<(&str, u64, Value)>| -> Value {
        let size = if size > 0 { size } else { v.iter().map(|(_, o, _)| o + 16).max().unwrap_or(0) };
        let m: Map<String, Value> = v.into_iter().map(|(n, o, ty)| (n.to_string(), json!({"offset": o, "type": ty}))).collect();
        json!({"kind": "struct", "size": size, "fields": m})
    };
    let mut user = Map::new();
    user.insert("list_head".into(), record(16, vec![("next", 0, ptr("list_head")), ("prev", 8, ptr("list_head"))]));
    user.insert("task_struct".into(), record(t.size, task));
    user.insert("signal_struct".into(), record(0, vec![("thread_head", l.signal.thread_head, list.clone())]));
    let mut cred = vec![("uid", l.cred.uid, b("unsigned int"))];
    if let Some([gid, euid, egid]) = g.cred_ids {
        cred.extend([("gid", gid, b("unsigned int")), ("euid", euid, b("unsigned int")), ("egid", egid, b("unsigned int"))]);
    }
    user.insert("cred".into(), record(0, cred));
    user.insert("files_struct".into(), record(0, vec![("count", 0, b("int"))]));
    // Types Volatility's Linux symbol table binds its classes to when it loads (it refuses a
    // table without them); their fields are not learned here, so they are declared opaque.
    for name in VOLATILITY_REQUIRED_TYPES {
        user.entry(name.to_string()).or_insert_with(|| json!({"kind": "struct", "size": 0, "fields": {}}));
    }
    let m = &l.mm;
    user.insert(
        "mm_struct".into(),
        record(
            0,
            vec![
                ("pgd", m.pgd, json!({"kind": "pointer", "subtype": b("void")})),
                ("arg_start", m.arg_start, b("unsigned long")),
                ("arg_end", m.arg_end, b("unsigned long")),
                ("env_start", m.env_start, b("unsigned long")),
                ("env_end", m.env_end, b("unsigned long")),
            ],
        ),
    );
    (base, user)
}

/// The types `LinuxKernelIntermedSymbols` (Volatility 3) sets classes on unconditionally.
const VOLATILITY_REQUIRED_TYPES: &[&str] = &[
    "file", "list_head", "hlist_head", "mm_struct", "super_block", "task_struct", "vm_area_struct", "qstr", "dentry",
    "fs_struct", "files_struct", "kobject", "cred", "inode", "idr", "address_space", "page", "vfsmount", "net", "socket",
    "sock", "inet_sock", "unix_sock",
];

/// Types of well-known global variables, which vmlinux BTF does not describe (it lists only
/// per-CPU variables); Volatility's Linux plugins start from these.
/// `(symbol, struct, is a pointer to it)`: `linux.kmsg` starts from `prb` (5.10+), `linux.lsmod`
/// from `modules`, `linux.pslist` from `init_task`.
const KNOWN_SYMBOL_TYPES: &[(&str, &str, bool)] = &[
    ("init_task", "task_struct", false),
    ("init_mm", "mm_struct", false),
    ("init_cred", "cred", false),
    ("init_files", "files_struct", false),
    ("modules", "list_head", false),
    ("prb", "printk_ringbuffer", true),
];

/// Symbols at link-time addresses, typed where BTF or [`KNOWN_SYMBOL_TYPES`] say how;
/// `linux_banner` with its bytes.
pub fn symbols(kernel: &Kernel<'_>, btf: Option<&Btf>, g: &Globals) -> Result<Map<String, Value>, IsfError> {
    let shift = kernel.info.kaslr_virt_offset;
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    let all = kernel.kallsyms.all(kernel.space.mem())?;
    // The extent of `taint_flags`: up to the next symbol's address.
    let taint_flags_span = all.iter().find(|(_, s)| s.name == "taint_flags").and_then(|(at, _)| {
        all.iter().map(|(a, _)| a.0).filter(|&a| a > at.0).min().map(|next| next - at.0)
    });
    for (addr, s) in all {
        let a = if addr.0 >= 0xffff_ffff_8000_0000 { addr.0.wrapping_sub(shift) } else { addr.0 };
        out.entry(s.name).or_insert_with(|| json!({"address": a}));
    }
    if let Some(btf) = btf {
        let names = Names::new(btf)?;
        // `linux.lsmod` decodes taints through `taint_flags[TAINT_FLAGS_COUNT]`, whose count
        // (18 to 20 across versions) only the symbol's extent tells: the gap to the next
        // symbol, in whole elements (alignment padding can add at most one element of the
        // 3-byte form, whose letters no module taint bit reaches).
        let elem = btf.structs_named("taint_flag").first().and_then(|&id| btf.size_of(id).ok()).filter(|&n| n > 0);
        if let (Some(span), Some(elem), Some(Value::Object(o))) = (taint_flags_span, elem, out.get_mut("taint_flags")) {
            let count = (span / elem).min(64);
            o.insert("type".into(), json!({"kind": "array", "count": count, "subtype": {"kind": "struct", "name": "taint_flag"}}));
        }
        for t in btf.records() {
            let t = t?;
            if t.kind == Kind::Var {
                let n = btf.name(&t)?;
                if let Some(Value::Object(o)) = out.get_mut(&n) {
                    o.insert("type".into(), desc(btf, &names, t.size_or_type)?);
                }
            }
        }
    }
    // Without data symbols in kallsyms: the banner the scan found, and init_task found by search.
    let banner_virt = kernel.info.rodata_virt.0.wrapping_add(kernel.info.banner_phys.0.wrapping_sub(kernel.info.rodata_phys.0));
    out.entry("linux_banner".into()).or_insert_with(|| json!({"address": banner_virt.wrapping_sub(shift)}));
    if let Some(it) = kernel.info.init_task {
        out.entry("init_task".into()).or_insert_with(|| json!({"address": it.0.wrapping_sub(shift)}));
    }
    // And the globals inferred from memory ([`super::globals`]).
    for (name, v) in [("init_top_pgt", g.init_top_pgt), ("init_mm", g.init_mm), ("init_files", g.init_files)] {
        if let Some(v) = v {
            out.entry(name.into()).or_insert_with(|| json!({"address": v.0.wrapping_sub(shift)}));
        }
    }
    for &(sym, ty, pointer) in KNOWN_SYMBOL_TYPES {
        if let Some(Value::Object(o)) = out.get_mut(sym) {
            let st = json!({"kind": "struct", "name": ty});
            o.entry("type").or_insert(if pointer { json!({"kind": "pointer", "subtype": st}) } else { st });
        }
    }
    let mut banner = kernel.info.banner.clone().into_bytes();
    banner.extend_from_slice(b"\n\0");
    if let Some(Value::Object(o)) = out.get_mut("linux_banner") {
        o.insert("constant_data".into(), Value::String(base64(&banner)));
    }
    Ok(out.into_iter().collect())
}

/// The whole document. Without BTF, the globals and fields Volatility's stacker needs beyond
/// the layout are inferred from memory ([`super::globals`]).
pub fn document(kernel: &Kernel<'_>, btf: Option<&Btf>, layout: &Layout, method: &str) -> Result<Value, IsfError> {
    let g = match btf {
        Some(_) => Globals::default(),
        None => super::globals::infer(kernel, layout),
    };
    let (base, user, enums) = match btf {
        Some(b) => from_btf(b)?,
        None => {
            let (b, u) = from_layout(layout, &g);
            (b, u, Map::new())
        }
    };
    Ok(json!({
        "metadata": {
            "format": FORMAT,
            "producer": {"name": "netdma-harness", "version": env!("CARGO_PKG_VERSION"), "method": method},
            "linux": {"symbols": [{"kind": "kallsyms", "name": kernel.info.release, "banner": kernel.info.banner}]}
        },
        "base_types": base,
        "user_types": user,
        "enums": enums,
        "symbols": symbols(kernel, btf, &g)?,
    }))
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for k in 0..4 {
            if k <= c.len() {
                s.push(T[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Little-endian bytes helper for BTF extras.
fn le(b: &Bytes<'_>, off: usize) -> Option<u32> {
    b.u32(off).ok()
}

impl Btf {
    /// The encoding bits of an INT (signed 1, char 2, bool 4).
    pub fn int_encoding(&self, t: &Type) -> Option<u32> {
        if t.kind != Kind::Int {
            return None;
        }
        le(&self.type_bytes(), t.extra_off).map(|v| (v >> 24) & 0xf)
    }

    /// An ARRAY's (element type, index type, count).
    pub fn array(&self, t: &Type) -> Result<(TypeId, TypeId, u32), super::btf::BtfError> {
        let b = self.type_bytes();
        let err = || super::btf::BtfError::Type { id: t.id, offset: t.extra_off, reason: "array outside section".into() };
        Ok((le(&b, t.extra_off).ok_or_else(err)?, le(&b, t.extra_off + 4).ok_or_else(err)?, le(&b, t.extra_off + 8).ok_or_else(err)?))
    }

    /// An ENUM's or ENUM64's (name, value) pairs.
    pub fn enum_values(&self, t: &Type) -> Result<Vec<(String, i128)>, super::btf::BtfError> {
        let b = self.type_bytes();
        let step = if t.kind == Kind::Enum64 { 12 } else { 8 };
        let signed = t.kind_flag;
        (0..t.vlen as usize)
            .map(|i| {
                let o = t.extra_off + step * i;
                let err = || super::btf::BtfError::Type { id: t.id, offset: o, reason: "enum value outside section".into() };
                let name = String::from_utf8_lossy(self.str_at(le(&b, o).ok_or_else(err)?)?).into_owned();
                let lo = le(&b, o + 4).ok_or_else(err)?;
                let v = if t.kind == Kind::Enum64 {
                    let hi = le(&b, o + 8).ok_or_else(err)?;
                    let u = (u64::from(hi) << 32) | u64::from(lo);
                    if signed { i128::from(u as i64) } else { i128::from(u) }
                } else if signed {
                    i128::from(lo as i32)
                } else {
                    i128::from(lo)
                };
                Ok((name, v))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
