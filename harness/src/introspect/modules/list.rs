//! Walking the kernel's `modules` list and decoding each `struct module`, from bytes read
//! through a caller-supplied reader (guest memory in `lsmod`, a cut of it in the fuzz target).
//!
//! ```text
//!   modules (list_head) ─next─▶ module.list ─next─▶ module.list ─next─▶ ... ─▶ back to modules
//!                               └ module = node - offsetof(struct module, list)
//! ```
//!
//! Invariant: [`walk`] follows at most [`MAX_MODULES`] nodes, visits no node twice, checks each
//! node's `prev` against the node it came from, and stops at the first node that does not hold
//! together with everything decoded so far and an error naming the node's address. [`decode`]
//! never panics: every offset it reads was checked by [`ModuleLayout::check`] and is read
//! through bounds-checked accessors.

use std::collections::HashSet;

use emulator::bytes::Bytes;
use serde::Serialize;

use super::layout::{Memory, ModuleLayout, Users};

/// Most modules followed (a loaded Linux machine has a few hundred).
pub const MAX_MODULES: usize = 8192;
/// Most users of one module followed.
pub const MAX_USERS: usize = 1024;
/// The lowest kernel address (x86-64: the upper half, 4- or 5-level).
pub const KERNEL_HALF: u64 = 0xff00_0000_0000_0000;

/// `enum module_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ModuleState {
    Live,
    Coming,
    Going,
    Unformed,
}

impl ModuleState {
    pub fn from_raw(v: u32) -> Option<ModuleState> {
        Some(match v {
            0 => ModuleState::Live,
            1 => ModuleState::Coming,
            2 => ModuleState::Going,
            3 => ModuleState::Unformed,
            _ => return None,
        })
    }
    /// As `/proc/modules` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleState::Live => "Live",
            ModuleState::Coming => "Loading",
            ModuleState::Going => "Unloading",
            ModuleState::Unformed => "Unformed",
        }
    }
}

/// One loaded module, as `/proc/modules` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Module {
    pub name: String,
    /// Bytes of its memory: what `/proc/modules` prints as the size.
    pub size: u64,
    /// `module_refcount()`: `refcnt - 1`; `None` when the layout has no `refcnt`.
    pub refcount: Option<i64>,
    /// `Live`, `Loading` or `Unloading`.
    pub state: &'static str,
    /// The core text address `/proc/modules` prints (`mem[MOD_TEXT].base` or `core_layout.base`).
    #[serde(serialize_with = "hex")]
    pub address: u64,
    /// The letters `/proc/modules` prints between parentheses (empty without taints); `None`
    /// when the layout has no `taints`.
    pub taints: Option<String>,
    /// The "used by" column: the modules using this one, then `[permanent]` if it has an init
    /// but no exit function; `None` when the layout cannot tell.
    pub used_by: Option<Vec<String>>,
    /// Where the `struct module` is.
    #[serde(serialize_with = "hex")]
    pub module: u64,
}

fn hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

/// The taint letters, by bit (`kernel/panic.c`, `taint_flags`, to Linux 7.x).
pub const TAINT_LETTERS: &[u8; 20] = b"PFSRMBUDAWCIOELKXTNJ";

/// What `module_flags()` prints between the parentheses, or the empty string for none.
pub fn taint_text(taints: u64, state: ModuleState) -> String {
    if taints == 0 {
        return String::new();
    }
    let mut s: String = (0..TAINT_LETTERS.len()).filter(|&b| taints & (1 << b) != 0).map(|b| TAINT_LETTERS[b] as char).collect();
    match state {
        ModuleState::Going => s.push('-'),
        ModuleState::Coming => s.push('+'),
        _ => {}
    }
    s
}

/// A `struct module` that cannot be right, or a list that does not hold together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    #[error("reading {what} at {addr:#x}: {reason}")]
    Read { what: &'static str, addr: u64, reason: String },
    #[error("struct module at {module:#x}: {reason}")]
    Bad { module: u64, reason: String },
    #[error("list node {node:#x} is not a kernel address (reached from {from:#x})")]
    NotKernel { node: u64, from: u64 },
    #[error("list node {node:#x}: prev is {prev:#x}, not the node it was reached from ({from:#x})")]
    BrokenLink { node: u64, prev: u64, from: u64 },
    #[error("list node {node:#x} seen twice: the list loops without returning to its head")]
    Loop { node: u64 },
    #[error("more than {MAX_MODULES} modules: the list does not end")]
    TooMany,
    #[error("struct module at {module:#x}: more than {MAX_USERS} users: its source_list does not end")]
    TooManyUsers { module: u64 },
}

impl ModuleError {
    /// The address the error concerns (`None` for [`ModuleError::TooMany`]).
    pub fn addr(&self) -> Option<u64> {
        match self {
            ModuleError::Read { addr, .. } => Some(*addr),
            ModuleError::Bad { module, .. } => Some(*module),
            ModuleError::NotKernel { node, .. } | ModuleError::BrokenLink { node, .. } | ModuleError::Loop { node } => Some(*node),
            ModuleError::TooManyUsers { module } => Some(*module),
            ModuleError::TooMany => None,
        }
    }
}

/// A module name: NUL-terminated inside its field, non-empty, printable ASCII without blanks.
pub fn module_name(field: &[u8]) -> Result<String, String> {
    let end = field.iter().position(|&b| b == 0).ok_or_else(|| format!("name is not NUL-terminated within {} bytes", field.len()))?;
    let name = &field[..end];
    if name.is_empty() {
        return Err("empty name".into());
    }
    if !name.iter().all(|b| b.is_ascii_graphic()) {
        return Err(format!("name {:?} has bytes outside printable ASCII", String::from_utf8_lossy(name)));
    }
    Ok(String::from_utf8_lossy(name).into_owned())
}

/// Decodes the `struct module` at `addr` from its bytes; `Ok(None)` for a module still being
/// formed (`MODULE_STATE_UNFORMED`, which `/proc/modules` skips too).
pub fn decode(l: &ModuleLayout, addr: u64, bytes: &[u8]) -> Result<Option<Module>, ModuleError> {
    let b = Bytes::new(bytes);
    let bad = |reason: String| ModuleError::Bad { module: addr, reason };
    let short = |what: &str| bad(format!("{what} outside the {} bytes read", bytes.len()));
    let u32_at = |off: u64, what: &str| b.u32(off as usize).map_err(|_| short(what));
    let u64_at = |off: u64, what: &str| b.u64(off as usize).map_err(|_| short(what));
    let raw_state = u32_at(l.state, "state")?;
    let state = ModuleState::from_raw(raw_state).ok_or_else(|| bad(format!("state {raw_state} is no module_state")))?;
    if state == ModuleState::Unformed {
        return Ok(None);
    }
    let name = module_name(b.slice(l.name as usize, l.name_len as usize).map_err(|_| short("name"))?).map_err(bad)?;
    let (size, address) = match l.memory {
        Memory::Array { offset, count, stride, base, size } => {
            let mut total = 0u64;
            for i in 0..count {
                total += u32_at(offset.saturating_add(i.saturating_mul(stride)).saturating_add(size), "mem[].size")? as u64;
            }
            (total, u64_at(offset.saturating_add(base), "mem[MOD_TEXT].base")?)
        }
        Memory::Layouts { core, init, data, base, size } => {
            let mut total = 0u64;
            for o in [Some(core), Some(init), data].into_iter().flatten() {
                total += u32_at(o.saturating_add(size), "module_layout.size")? as u64;
            }
            (total, u64_at(core.saturating_add(base), "core_layout.base")?)
        }
    };
    let refcount = match l.refcnt {
        Some(o) => Some(u32_at(o, "refcnt")? as i32 as i64 - 1),
        None => None,
    };
    let taints = match l.taints {
        Some(o) => Some(taint_text(u64_at(o, "taints")?, state)),
        None => None,
    };
    Ok(Some(Module { name, size, refcount, state: state.as_str(), address, taints, used_by: None, module: addr }))
}

/// Everything the walk decoded, and the error that stopped it early.
#[derive(Debug, Clone, Default)]
pub struct Walked {
    pub modules: Vec<Module>,
    /// Modules still being formed, skipped.
    pub unformed: usize,
    pub error: Option<ModuleError>,
}

/// Reads `len` bytes at a kernel virtual address (an error text on failure).
pub type Reader<'r> = dyn FnMut(u64, usize) -> Result<Vec<u8>, String> + 'r;

/// Follows the list from its head at `head` (the `modules` symbol).
pub fn walk(l: &ModuleLayout, head: u64, read: &mut Reader<'_>) -> Walked {
    let mut out = Walked::default();
    if let Err(e) = walk_into(l, head, read, &mut out) {
        out.error = Some(e);
    }
    out
}

fn walk_into(l: &ModuleLayout, head: u64, read: &mut Reader<'_>, out: &mut Walked) -> Result<(), ModuleError> {
    let first = read(head, 16).map_err(|reason| ModuleError::Read { what: "the modules list head", addr: head, reason })?;
    let b = Bytes::new(&first);
    let mut next = b.u64(0).map_err(|_| ModuleError::Read { what: "the modules list head", addr: head, reason: "short read".into() })?;
    let mut from = head;
    let mut seen = HashSet::new();
    for _ in 0..MAX_MODULES {
        if next == head {
            return Ok(());
        }
        if next < KERNEL_HALF || next < l.list {
            return Err(ModuleError::NotKernel { node: next, from });
        }
        if !seen.insert(next) {
            return Err(ModuleError::Loop { node: next });
        }
        let module = next - l.list;
        let bytes = read(module, l.span as usize).map_err(|reason| ModuleError::Read { what: "struct module", addr: module, reason })?;
        let b = Bytes::new(&bytes);
        let link = |o: u64| b.u64(l.list.saturating_add(o) as usize).map_err(|_| ModuleError::Bad { module, reason: "list outside the bytes read".into() });
        let (n, prev) = (link(0)?, link(8)?);
        if prev != from {
            return Err(ModuleError::BrokenLink { node: next, prev, from });
        }
        match decode(l, module, &bytes)? {
            Some(mut m) => {
                if let Some(u) = &l.users {
                    m.used_by = users(l, u, module, &bytes, read)?;
                }
                out.modules.push(m)
            }
            None => out.unformed += 1,
        }
        from = next;
        next = n;
    }
    if next == head {
        Ok(())
    } else {
        Err(ModuleError::TooMany)
    }
}

/// The "used by" column of the module at `module` (its bytes read): the names of the modules
/// on its `source_list`, then `[permanent]`; `None` when that depends on an `init` the layout
/// does not know. Bounded by [`MAX_USERS`], every node checked as in [`walk`].
fn users(l: &ModuleLayout, u: &Users, module: u64, bytes: &[u8], read: &mut Reader<'_>) -> Result<Option<Vec<String>>, ModuleError> {
    let b = Bytes::new(bytes);
    let field = |o: u64, what: &str| b.u64(o as usize).map_err(|_| ModuleError::Bad { module, reason: format!("{what} outside the bytes read") });
    let head = module.wrapping_add(u.source_list);
    let mut next = field(u.source_list, "source_list")?;
    let mut from = head;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let use_len = (u.use_node.max(u.use_source) + 16) as usize;
    loop {
        if next == head {
            break;
        }
        if out.len() >= MAX_USERS {
            return Err(ModuleError::TooManyUsers { module });
        }
        if next < KERNEL_HALF || next < u.use_node {
            return Err(ModuleError::NotKernel { node: next, from });
        }
        if !seen.insert(next) {
            return Err(ModuleError::Loop { node: next });
        }
        let use_addr = next - u.use_node;
        let ub = read(use_addr, use_len).map_err(|reason| ModuleError::Read { what: "struct module_use", addr: use_addr, reason })?;
        let ub = Bytes::new(&ub);
        let short = |_| ModuleError::Read { what: "struct module_use", addr: use_addr, reason: "short read".into() };
        let (n, prev, source) = (ub.u64(u.use_node as usize).map_err(short)?, ub.u64(u.use_node as usize + 8).map_err(short)?, ub.u64(u.use_source as usize).map_err(short)?);
        if prev != from {
            return Err(ModuleError::BrokenLink { node: next, prev, from });
        }
        if source < KERNEL_HALF {
            return Err(ModuleError::NotKernel { node: source, from: use_addr });
        }
        let name_at = source.wrapping_add(l.name);
        let name = read(name_at, l.name_len as usize).map_err(|reason| ModuleError::Read { what: "a user's name", addr: name_at, reason })?;
        out.push(module_name(&name).map_err(|reason| ModuleError::Bad { module: source, reason })?);
        from = next;
        next = n;
    }
    let exit = field(u.exit, "exit")?;
    let permanent = match u.init {
        _ if exit != 0 => false,
        Some(i) => field(i, "init")? != 0,
        None => return Ok(None),
    };
    if permanent {
        out.push("[permanent]".into());
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn layout() -> ModuleLayout {
        ModuleLayout {
            span: 256,
            state: 0,
            list: 8,
            name: 24,
            name_len: 56,
            memory: Memory::Array { offset: 96, count: 3, stride: 24, base: 0, size: 8 },
            taints: Some(168),
            refcnt: Some(176),
            users: None,
        }
    }

    const HEAD: u64 = 0xffff_ffff_8200_0000;

    /// A memory of modules at these addresses, linked in order from `HEAD`.
    fn memory(mods: &[(u64, &str, u32)]) -> BTreeMap<u64, Vec<u8>> {
        let mut m = BTreeMap::new();
        let node = |i: usize| if i == 0 || i > mods.len() { HEAD } else { mods[i - 1].0 + 8 };
        let mut head = vec![0u8; 16];
        head[..8].copy_from_slice(&node(1).to_le_bytes());
        head[8..].copy_from_slice(&node(mods.len()).to_le_bytes());
        m.insert(HEAD, head);
        for (i, &(addr, name, state)) in mods.iter().enumerate() {
            let mut s = vec![0u8; 256];
            s[..4].copy_from_slice(&state.to_le_bytes());
            s[8..16].copy_from_slice(&node(i + 2).to_le_bytes());
            s[16..24].copy_from_slice(&node(i).to_le_bytes());
            s[24..24 + name.len()].copy_from_slice(name.as_bytes());
            s[96..104].copy_from_slice(&0xffff_ffff_c000_0000u64.to_le_bytes());
            s[104..108].copy_from_slice(&4096u32.to_le_bytes());
            s[128..132].copy_from_slice(&8192u32.to_le_bytes());
            s[168..176].copy_from_slice(&(1u64 << 13).to_le_bytes());
            s[176..180].copy_from_slice(&3u32.to_le_bytes());
            m.insert(addr, s);
        }
        m
    }

    fn run(mem: &BTreeMap<u64, Vec<u8>>) -> Walked {
        walk(&layout(), HEAD, &mut |a, len| {
            mem.get(&a).map(|b| b[..len.min(b.len())].to_vec()).ok_or_else(|| "unmapped".to_string())
        })
    }

    #[test]
    fn walks_and_decodes() {
        let w = run(&memory(&[(0xffff_ffff_c100_0000, "ts_kmp", 0), (0xffff_ffff_c100_1000, "new", 1), (0xffff_ffff_c100_2000, "half", 3)]));
        assert_eq!(w.error, None);
        assert_eq!(w.unformed, 1);
        let m = &w.modules[0];
        assert_eq!((m.name.as_str(), m.size, m.refcount, m.state, m.address), ("ts_kmp", 12288, Some(2), "Live", 0xffff_ffff_c000_0000));
        assert_eq!(m.taints.as_deref(), Some("E"));
        assert_eq!((w.modules[1].state, w.modules[1].taints.as_deref()), ("Loading", Some("E+")));
    }

    /// A module with an init but no exit is `[permanent]`; without `init` in the layout that
    /// cannot be told, and "used by" is unknown; with an exit, it is empty.
    #[test]
    fn permanent_and_unknown_users() {
        let a = 0xffff_ffff_c100_0000;
        let mut mem = memory(&[(a, "perm", 0)]);
        let s = mem.get_mut(&a).unwrap();
        // source_list at 200 empty (self-pointing), init at 216 set, exit at 224 null.
        s[200..208].copy_from_slice(&(a + 200).to_le_bytes());
        s[208..216].copy_from_slice(&(a + 200).to_le_bytes());
        s[216..224].copy_from_slice(&0xffff_ffff_c000_0010u64.to_le_bytes());
        let users = |init| Users { source_list: 200, init, exit: 224, use_node: 0, use_source: 32 };
        let run_with = |u: Users| {
            let l = ModuleLayout { users: Some(u), ..layout() };
            walk(&l, HEAD, &mut |x, len| mem.get(&x).map(|b| b[..len.min(b.len())].to_vec()).ok_or_else(|| "unmapped".to_string()))
        };
        assert_eq!(run_with(users(Some(216))).modules[0].used_by, Some(vec!["[permanent]".to_string()]));
        assert_eq!(run_with(users(None)).modules[0].used_by, None);
        mem.get_mut(&a).unwrap()[224..232].copy_from_slice(&0xffff_ffff_c000_0020u64.to_le_bytes());
        let run_with = |u: Users| {
            let l = ModuleLayout { users: Some(u), ..layout() };
            walk(&l, HEAD, &mut |x, len| mem.get(&x).map(|b| b[..len.min(b.len())].to_vec()).ok_or_else(|| "unmapped".to_string()))
        };
        assert_eq!(run_with(users(None)).modules[0].used_by, Some(vec![]));
    }

    #[test]
    fn damage_stops_the_walk_with_the_address() {
        let a = 0xffff_ffff_c100_0000;
        let b = 0xffff_ffff_c100_1000;
        let mut mem = memory(&[(a, "one", 0), (b, "two", 0)]);
        // A loop: the second module points back to the first.
        mem.get_mut(&b).unwrap()[8..16].copy_from_slice(&(a + 8).to_le_bytes());
        let w = run(&mem);
        assert_eq!(w.modules.len(), 2);
        assert!(matches!(w.error, Some(ModuleError::Loop { node }) if node == a + 8), "{:?}", w.error);
        // The second module's prev is not the first.
        let mut mem = memory(&[(a, "one", 0), (b, "two", 0)]);
        mem.get_mut(&b).unwrap()[16..24].copy_from_slice(&HEAD.to_le_bytes());
        let w = run(&mem);
        assert_eq!(w.modules.len(), 1);
        assert!(matches!(w.error, Some(ModuleError::BrokenLink { node, .. }) if node == b + 8), "{:?}", w.error);
        // An unreadable module.
        let mut mem = memory(&[(a, "one", 0), (b, "two", 0)]);
        mem.remove(&b);
        let w = run(&mem);
        assert_eq!(w.error.as_ref().and_then(ModuleError::addr), Some(b));
        // A name without its NUL, a state out of range.
        let mut mem = memory(&[(a, "one", 0)]);
        mem.get_mut(&a).unwrap()[24..80].fill(b'x');
        assert!(run(&mem).error.unwrap().to_string().contains("NUL"));
        let mut mem = memory(&[(a, "one", 0)]);
        mem.get_mut(&a).unwrap()[0] = 9;
        assert!(run(&mem).error.unwrap().to_string().contains("state 9"));
        // A user-space pointer.
        let mut mem = memory(&[(a, "one", 0)]);
        mem.get_mut(&HEAD).unwrap()[..8].copy_from_slice(&0x1000u64.to_le_bytes());
        assert!(matches!(run(&mem).error, Some(ModuleError::NotKernel { node: 0x1000, .. })));
    }
}
