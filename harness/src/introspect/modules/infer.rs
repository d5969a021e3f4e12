//! The `inferred` method: the layout of `struct module` from the loaded modules themselves,
//! with no BTF or VMCOREINFO.
//!
//! What is taken as known (true of every x86-64 kernel since 2.6): the structure starts with
//! `enum module_state state` (0), `struct list_head list` (8) and `char name[56]` (24), and
//! since 6.4 `mem[]` has `MOD_MEM_NUM_TYPES` = 7 entries. Everything else is found by structure
//! in the modules on the list (`samples`), each field required to hold in every one of them:
//!
//! - the memory: the first 8-aligned offset `X` after the name whose value is, in every module, a
//!   page-aligned address in the module area, followed by a `struct mod_tree_node` whose `mod`
//!   points back to the module itself — at `X + 24` in a `struct module_layout` (to 6.3: the
//!   module lies inside `[base, base + size)` of `core_layout`), at `X + 16` in a
//!   `struct module_memory` (6.4 on: the module lies inside `mem[MOD_DATA]`, which gives the
//!   stride; `size` at 8, or at 12 where a `bool is_rox` precedes it, 7.x);
//! - `taints`: after the memory and x86's `struct mod_arch_specific` (whose size varies), right
//!   before `bug_list`, which links the modules to each other and to `module_bug_list`; only
//!   known taint bits may be set;
//! - `refcnt`: after `source_list` and `target_list` (two list heads, empty in a module nothing
//!   uses) and the `exit` pointer (null or in the module area): a small positive count.
//!
//! Invariant: [`infer`] never panics and reads only the sample bytes it is given; a field that
//! does not hold in every sample is not returned (`refcnt` may be `None`, with the reason).

use emulator::bytes::Bytes;

use super::layout::{Memory, ModuleLayout, Users};
use super::list::{module_name, KERNEL_HALF};

/// The x86-64 module area (`MODULES_VADDR` without KASLR's larger image, to `MODULES_END`).
pub const MODULES_START: u64 = 0xffff_ffff_a000_0000;
pub const MODULES_END: u64 = 0xffff_ffff_ff00_0000;
/// Bytes of each module read for the inference.
pub const SAMPLE_SPAN: usize = 4096;
/// Modules sampled at most.
pub const MAX_SAMPLES: usize = 64;
/// `MOD_MEM_NUM_TYPES` (6.4 to 7.x).
pub const MOD_MEM_NUM_TYPES: u64 = 7;
const NAME: u64 = 24;
/// `__START_KERNEL_map`.
const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
const NAME_LEN: u64 = 56;

fn in_modules(v: u64) -> bool {
    (MODULES_START..MODULES_END).contains(&v)
}

/// One sampled module: its address and the bytes read from it.
pub struct Sample<'a> {
    pub addr: u64,
    pub bytes: Bytes<'a>,
}

impl Sample<'_> {
    fn u64(&self, off: u64) -> Option<u64> {
        self.bytes.u64(usize::try_from(off).ok()?).ok()
    }
    fn u32(&self, off: u64) -> Option<u32> {
        self.bytes.u32(usize::try_from(off).ok()?).ok()
    }
}

/// The inferred layout and how each part was found.
#[derive(Debug, Clone)]
pub struct Inferred {
    pub layout: ModuleLayout,
    pub how: String,
}

/// Infers the layout from modules on the list (address, bytes from that address).
pub fn infer(samples: &[(u64, &[u8])]) -> Result<Inferred, String> {
    if samples.is_empty() {
        return Err("no module on the list to infer struct module from".into());
    }
    let s: Vec<Sample<'_>> = samples.iter().take(MAX_SAMPLES).map(|&(addr, b)| Sample { addr, bytes: Bytes::new(b) }).collect();
    for m in &s {
        let state = m.u32(0).ok_or_else(|| format!("module at {:#x}: fewer than 4 bytes read", m.addr))?;
        if state > 3 {
            return Err(format!("module at {:#x}: state {state} is no module_state", m.addr));
        }
        let name = m.bytes.slice(NAME as usize, NAME_LEN as usize).map_err(|_| format!("module at {:#x}: name outside the bytes read", m.addr))?;
        module_name(name).map_err(|e| format!("module at {:#x}: {e}", m.addr))?;
    }
    let span = s.iter().map(|m| m.bytes.len() as u64).min().unwrap_or(0);
    let all = |f: &dyn Fn(&Sample<'_>) -> bool| s.iter().all(f);
    let page_base = |m: &Sample<'_>, o: u64| m.u64(o).is_some_and(|v| in_modules(v) && v & 0xfff == 0);

    let mut how = Vec::new();
    let mut found = None;
    let mut x = NAME + NAME_LEN;
    while x + 32 <= span {
        if all(&|m| page_base(m, x)) {
            if all(&|m| m.u64(x + 24) == Some(m.addr) && m.u32(x + 8).is_some_and(|sz| contains(m, x, sz))) {
                found = Some((x, 24));
                break;
            }
            if all(&|m| m.u64(x + 16) == Some(m.addr)) {
                found = Some((x, 16));
                break;
            }
        }
        x += 8;
    }
    let (x, self_off) = found.ok_or("no memory descriptor: no page-aligned module-area address followed by a tree node pointing back to its module in every module")?;
    let (memory, mem_end) = if self_off == 24 {
        // init_layout's tree node points back too in a module that had init code; without one,
        // `struct module_layout` is 80 bytes (base, four sizes, the node's mod and two rb_nodes).
        let init_ok = |d: u64| all(&|m| m.u64(x + d + 24).is_some_and(|v| v == 0 || v == m.addr) && m.u64(x + d).is_some_and(|v| v == 0 || in_modules(v)));
        let d = (32..=160).step_by(8).find(|&d| init_ok(d) && s.iter().any(|m| m.u64(x + d + 24) == Some(m.addr)));
        let d = match d {
            Some(d) => d,
            None if init_ok(80) => 80,
            None => return Err("core_layout found, but no init_layout after it".into()),
        };
        how.push(format!("core_layout at {x}, init_layout at {} (struct module_layout of {d} bytes)", x + d));
        (Memory::Layouts { core: x, init: x + d, data: None, base: 0, size: 8 }, x + 2 * d)
    } else {
        let size = if all(&|m| m.u32(x + 8).is_some_and(|v| v <= 1) && m.u32(x + 12).is_some_and(|v| v > 1)) { 12 } else { 8 };
        let stride = (24..=256)
            .step_by(8)
            .find(|&d| all(&|m| page_base(m, x + d) && m.u64(x + d + 16) == Some(m.addr) && m.u32(x + d + size).is_some_and(|sz| contains(m, x + d, sz))))
            .ok_or("mem[MOD_TEXT] found, but no mem[MOD_DATA] holding the module after it")?;
        for i in 0..MOD_MEM_NUM_TYPES {
            let e = x + i * stride;
            let ok = all(&|m| {
                let (Some(base), Some(sz), Some(back)) = (m.u64(e), m.u32(e + size), m.u64(e + 16)) else { return false };
                (base == 0 || in_modules(base)) && sz <= 1 << 30 && (sz == 0 || back == m.addr)
            });
            if !ok {
                return Err(format!("mem[{i}] at {e} (stride {stride}) is no module_memory in every module"));
            }
        }
        how.push(format!("mem[{MOD_MEM_NUM_TYPES}] at {x}, {stride} bytes each, size at {size}"));
        (Memory::Array { offset: x, count: MOD_MEM_NUM_TYPES, stride, base: 0, size }, x + MOD_MEM_NUM_TYPES * stride)
    };
    let init = find_init(&s, x);
    match init {
        Some(i) => how.push(format!("init at {i} (before the memory)")),
        None => how.push("no init found (no module with init code sampled)".into()),
    }
    let taints = find_taints(&s, mem_end.next_multiple_of(8), &memory)?;
    how.push(format!("taints at {taints} (by bug_list)"));
    let mut refcnt = None;
    let mut y = taints + 8;
    while y + 44 <= span {
        let list_ok = |m: &Sample<'_>, o: u64| matches!((m.u64(o), m.u64(o + 8)), (Some(n), Some(p)) if n >= KERNEL_HALF && p >= KERNEL_HALF);
        let empty = |m: &Sample<'_>, o: u64| m.u64(o) == Some(m.addr.wrapping_add(o)) && m.u64(o + 8) == Some(m.addr.wrapping_add(o));
        if all(&|m| {
            list_ok(m, y)
                && list_ok(m, y + 16)
                && m.u64(y + 32).is_some_and(|v| v == 0 || in_modules(v))
                && m.u32(y + 40).is_some_and(|r| (1..=1 << 20).contains(&(r as i32)))
        }) && s.iter().any(|m| empty(m, y) && empty(m, y + 16))
        {
            refcnt = Some(y + 40);
            break;
        }
        y += 8;
    }
    match refcnt {
        Some(r) => how.push(format!("refcnt at {r} (after source_list, target_list, exit)")),
        None => how.push("no refcnt found (kernel without CONFIG_MODULE_UNLOAD?)".into()),
    }
    let end = refcnt.map(|r| r + 4).unwrap_or(taints + 8).max(mem_end);
    // `struct module_use` has had the same four fields since 2.6.35: source_list, target_list,
    // source, target.
    let users = refcnt.map(|r| Users { source_list: r - 40, init, exit: r - 8, use_node: 0, use_source: 32 });
    let layout = ModuleLayout { span: end.next_multiple_of(8), state: 0, list: 8, name: NAME, name_len: NAME_LEN, memory, taints: Some(taints), refcnt, users };
    layout.check()?;
    Ok(Inferred { layout, how: format!("inferred from {} modules: {}", s.len(), how.join("; ")) })
}

/// `unsigned long taints`: after the memory and `struct mod_arch_specific` (whose size varies:
/// nothing, ORC's count and two pointers, 7.x's ITS pages too), before `bug_list`
/// (`CONFIG_GENERIC_BUG`), which links every module into `module_bug_list`. `bug_list` is the
/// first list node whose links are other sampled modules' `bug_list`, the list head in the
/// kernel image, or (a module not sampled) the module area. Then either `taints; bug_list;
/// bug_table; unsigned num_bugs` (to 6.x: a u32 after `bug_table`) or `taints; unsigned
/// num_bugs; bug_list; bug_table; kallsyms` (a pointer after `bug_table`).
fn find_taints(s: &[Sample<'_>], from: u64, memory: &Memory) -> Result<u64, String> {
    let base = |m: &Sample<'_>| match *memory {
        Memory::Array { offset, base, .. } => m.u64(offset + base),
        Memory::Layouts { core, base, .. } => m.u64(core + base),
    };
    // The image lies below the module area: 512 MiB below its start, or 1 GiB under KASLR.
    let area = s.iter().filter_map(base).min().unwrap_or(MODULES_START) & !((512 << 20) - 1);
    let image = START_KERNEL_MAP..area;
    let taint_bits = |o: u64| s.iter().all(|m| m.u64(o).is_some_and(|v| v >> 20 == 0));
    let u32_word = |o: u64| s.iter().all(|m| m.u64(o).is_some_and(|v| v >> 32 == 0));
    for b in (from + 8..from + 264).step_by(8) {
        let to_sample = |v: u64| s.iter().any(|o| o.addr.wrapping_add(b) == v);
        let fits = s.iter().all(|m| {
            let (Some(n), Some(p)) = (m.u64(b), m.u64(b + 8)) else { return false };
            [n, p].iter().all(|&l| l != m.addr.wrapping_add(b) && (to_sample(l) || image.contains(&l) || in_modules(l)))
        });
        let linked = if s.len() > 1 {
            s.iter().any(|m| m.u64(b).is_some_and(to_sample))
        } else {
            s.iter().all(|m| m.u64(b).is_some_and(|n| image.contains(&n) && m.u64(b + 8) == Some(n)))
        };
        if !(fits && linked) {
            continue;
        }
        let taints = if u32_word(b + 24) { b - 8 } else if u32_word(b - 8) && b >= from + 16 { b - 16 } else {
            return Err(format!("bug_list at {b}, but neither a num_bugs after bug_table nor before bug_list"));
        };
        if !taint_bits(taints) {
            return Err(format!("taints at {taints} (bug_list at {b}) has bits no taint has in some module"));
        }
        return Ok(taints);
    }
    Err(format!("no bug_list in {from}..{}: no list node linking the modules to each other or to module_bug_list", from + 264))
}

/// `int (*init)(void)`: the field right before the memory descriptor at `mem` (`mem[]` or
/// `core_layout`), which may be cache-line aligned after it. It is the last word before `mem`
/// that is not null in some module, a module-area address or null in every one (a module
/// without init code has none; the pointer stays after its init code is freed), with only
/// zeros between it and `mem`, after `extable` (null or a module-area address). `None` when
/// no sampled module has init code: then nothing tells it from the padding.
fn find_init(s: &[Sample<'_>], mem: u64) -> Option<u64> {
    let null_or_module = |o: u64| s.iter().all(|m| m.u64(o).is_some_and(|v| v == 0 || in_modules(v)));
    let lowest = mem.saturating_sub(64).max(NAME + NAME_LEN + 8);
    let mut o = mem.checked_sub(8)?;
    while o >= lowest {
        if s.iter().any(|m| m.u64(o).is_some_and(|v| v != 0)) {
            return (null_or_module(o) && null_or_module(o - 8)).then_some(o);
        }
        o -= 8;
    }
    None
}

/// Whether the module lies inside `[base, base + size)`, `base` read at `base_off`.
fn contains(m: &Sample<'_>, base_off: u64, size: u32) -> bool {
    m.u64(base_off).is_some_and(|b| m.addr >= b && m.addr - b < size as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_to_infer_from_is_an_error() {
        assert!(infer(&[]).unwrap_err().contains("no module"));
        let zeros = vec![0u8; 64];
        assert!(infer(&[(0xffff_ffff_c000_0000, &zeros)]).unwrap_err().contains("name"));
        let mut named = vec![0u8; 4096];
        named[24..30].copy_from_slice(b"ts_kmp");
        assert!(infer(&[(0xffff_ffff_c000_0000, &named)]).unwrap_err().contains("no memory descriptor"));
    }
}
