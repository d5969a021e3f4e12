//! `sizeof(struct task_struct)` on x86-64, from where each task's FPU register state sits —
//! memory alone, no version table. Three arrangements exist, told apart by structure:
//!
//! - **fpstate inside, last** (5.16 to 6.15; `struct fpu` with its `fpstate` pointer and the
//!   `__fpstate` it points at ends `thread_struct`, which ends `task_struct`): `init_task`
//!   itself holds a pointer to a 64-byte aligned spot `x` inside it whose 64-byte header (size,
//!   user size, xfeatures: x87|SSE, or 0 without XSAVE) precedes the 4 KiB static register area
//!   that ends the struct: size = x + 64 + 4096.
//! - **fpu after the struct** (6.16 on, "x86/fpu: Make task_struct::thread constant size",
//!   Ingo Molnar, 2025: `x86_task_fpu(t) = (void *)t + sizeof(*t)`): the idle task's FPU is a
//!   separate static object, so `init_task` holds no such pointer, while every forked task
//!   does, at the same offset `f`, in the `struct fpu` that starts at the first 64-byte
//!   boundary at or below `f` (the pointer is among its first 64 bytes; `task_struct` is a
//!   multiple of 64 bytes): size = f rounded down to 64.
//! - **no fpstate pointer** (up to 5.15: `union fpregs_state` ends `struct fpu`, the last member):
//!   tasks that have used the FPU hold an FXSAVE image at the same 64-byte aligned `r` (MXCSR_MASK
//!   with the architectural bits 7-15 set and nothing above bit 17, MXCSR within it, FCW with
//!   its reserved bits 13-15 clear); kernel threads that never did hold zeros there (the state
//!   is cleared at fork and saved only when used); `fpu.last_cpu`, 64 bytes before, is a CPU
//!   number or -1 in every task. At least two tasks must show the image: size = r + 4096.
//!
//! Where kallsyms has `arch_task_struct_size` and the default xstate size, the kernel's own
//! allocation size follows; its static part is where the register area ends (x + 64 + 4096)
//! in every arrangement, and must agree with what memory says.
//!
//! Invariant: a size is returned only when exactly one offset passes in `init_task` (first
//! arrangement) or in every sampled forked task (the others); every offset taken from guest
//! memory is bounded by [`MAX_TASK_SIZE`] before any arithmetic on it.

use std::collections::BTreeSet;

use super::probe::{failed, Obj, MAX_TASK_SIZE};
use super::super::LayoutError;

/// `sizeof(union fpregs_state)`: the static register area.
pub const FPREGS_STATE: u64 = 4096;
/// Header of `struct fpstate` before its `__aligned(64)` register area.
pub const FPSTATE_HEADER: u64 = 64;
/// Bytes of an FXSAVE image (the legacy area every format starts with). Nothing after it is
/// looked at: a task's allocation holds only the xstate size the CPU needs (512 bytes without
/// XSAVE), so the next object in the slab may follow.
const FXSAVE: u64 = 512;

/// Where the struct ends, and the bytes of each task worth searching for fields (up to the
/// FPU state, which holds nothing the walker reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSize {
    pub size: u64,
    pub win: u64,
    /// The static end of the FPU state (`__fpstate` + 64 + 4096), to compare with kallsyms.
    pub fpu_end: u64,
    pub how: &'static str,
}

/// `(f, x)` pairs: the word at `f` of `t` points at `t + x`, a 64-byte aligned `struct fpstate`
/// header after it.
fn fpstate_pointers(t: &Obj) -> BTreeSet<(u64, u64)> {
    let len = t.bytes.len() as u64;
    (0..len.saturating_sub(7))
        .step_by(8)
        .filter_map(|f| {
            let x = t.u64(f)?.checked_sub(t.addr.0)?;
            // x comes from guest memory: bound it before any arithmetic on it.
            let fits = x <= MAX_TASK_SIZE && x > f + 8 && x - f <= 128 && x % 64 == 0;
            if !fits {
                return None;
            }
            let (size, user) = (t.u32(x)?, t.u32(x + 4)?);
            let xfeatures = t.u64(x + 8)?;
            ((512..=8192).contains(&size) && (512..=size).contains(&user) && (xfeatures == 0 || xfeatures & 3 == 3)).then_some((f, x))
        })
        .collect()
}

/// First arrangement: the pointer in `init_task` itself.
pub fn from_init(init: &Obj) -> Option<TaskSize> {
    let xs = fpstate_pointers(init);
    match xs.iter().collect::<Vec<_>>().as_slice() {
        [(_, x)] if x + FPSTATE_HEADER + FPREGS_STATE <= MAX_TASK_SIZE => {
            let end = x + FPSTATE_HEADER + FPREGS_STATE;
            Some(TaskSize { size: end, win: *x, fpu_end: end, how: "fpstate in init_task" })
        }
        _ => None,
    }
}

/// Whether `t` holds a plausible FXSAVE image at `r`.
fn fxsave_image(t: &Obj, r: u64) -> bool {
    let (Some(fcw), Some(mxcsr), Some(mask)) = (t.u32(r), t.u32(r + 24), t.u32(r + 28)) else { return false };
    mask >> 18 == 0 && mask & 0xff80 == 0xff80 && mxcsr & !mask == 0 && fcw & 0xe000 == 0 && fcw & 0xffff != 0
}

/// Offsets `r` where at least two of `tasks` hold an FXSAVE image, every other one zeros, and
/// every one a CPU number or -1 as `fpu.last_cpu` at `r - 64`.
fn fxsave_offsets(tasks: &[&Obj]) -> BTreeSet<u64> {
    let len = tasks.iter().map(|t| t.bytes.len() as u64).min().unwrap_or(0);
    (FPSTATE_HEADER..len.saturating_sub(FXSAVE - 1))
        .step_by(64)
        .filter(|&r| {
            let mut images = 0;
            for t in tasks {
                let cpu_ok = t.u32(r - FPSTATE_HEADER).is_some_and(|c| c == u32::MAX || c < 8192);
                let zero = t.slice(r, FXSAVE).is_some_and(|b| b.iter().all(|&x| x == 0));
                if !cpu_ok {
                    return false;
                }
                if fxsave_image(t, r) {
                    images += 1;
                } else if !zero {
                    return false;
                }
            }
            images >= 2
        })
        .collect()
}

/// The other two arrangements, from forked tasks (`init_task` excluded by the caller).
pub fn from_forked(tasks: &[&Obj]) -> Result<TaskSize, LayoutError> {
    if tasks.is_empty() {
        return Err(failed("cannot size task_struct: no fpstate pointer in init_task and no other task to look at"));
    }
    let common = |sets: Vec<BTreeSet<(u64, u64)>>| sets.into_iter().reduce(|a, b| a.intersection(&b).copied().collect()).unwrap_or_default();
    let ptrs = common(tasks.iter().map(|t| fpstate_pointers(t)).collect());
    match ptrs.iter().collect::<Vec<_>>().as_slice() {
        [(f, x)] => {
            let size = f & !63;
            return (size >= 1024).then_some(TaskSize { size, win: size, fpu_end: x + FPSTATE_HEADER + FPREGS_STATE, how: "fpu after the struct" }).ok_or_else(|| failed(format!("fpstate pointer at {f} in every task: too small a task_struct")));
        }
        [] => {}
        many => return Err(failed(format!("cannot size task_struct: fpstate pointers at {many:?} in every task"))),
    }
    let rs = fxsave_offsets(tasks);
    match rs.iter().copied().collect::<Vec<_>>().as_slice() {
        &[r] if r >= 1024 && r + FPREGS_STATE <= MAX_TASK_SIZE => {
            Ok(TaskSize { size: r + FPREGS_STATE, win: r, fpu_end: r + FPREGS_STATE, how: "FXSAVE image ends the struct" })
        }
        other => Err(failed(format!(
            "cannot size task_struct: no fpstate pointer in init_task, none common to {} tasks, FXSAVE images (zeros elsewhere) at {other:?}",
            tasks.len()
        ))),
    }
}

/// The kernel's own number (`arch_task_struct_size` minus the dynamic xstate plus the static
/// register area), where kallsyms gives it, must match the FPU state's end.
pub fn check_symbols(ts: &TaskSize, sym_end: Option<u64>) -> Result<(), LayoutError> {
    match sym_end {
        Some(n) if n != ts.fpu_end => Err(failed(format!("task_struct size: {} ({}) puts the FPU state's end at {}, kallsyms at {n}", ts.size, ts.how, ts.fpu_end))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::introspect::addr::KVirt;

    fn task(addr: u64) -> Obj {
        Obj { addr: KVirt(addr), bytes: vec![0u8; MAX_TASK_SIZE as usize] }
    }

    fn put_fpstate(t: &mut Obj, f: u64, x: u64) {
        let a = t.addr.0 + x;
        t.bytes[f as usize..f as usize + 8].copy_from_slice(&a.to_le_bytes());
        t.bytes[x as usize..x as usize + 4].copy_from_slice(&832u32.to_le_bytes());
        t.bytes[x as usize + 4..x as usize + 8].copy_from_slice(&832u32.to_le_bytes());
        t.bytes[x as usize + 8..x as usize + 16].copy_from_slice(&7u64.to_le_bytes());
    }

    fn put_fxsave(t: &mut Obj, r: u64) {
        t.bytes[r as usize..r as usize + 2].copy_from_slice(&0x037fu16.to_le_bytes());
        t.bytes[r as usize + 24..r as usize + 28].copy_from_slice(&0x1f80u32.to_le_bytes());
        t.bytes[r as usize + 28..r as usize + 32].copy_from_slice(&0xffffu32.to_le_bytes());
    }

    #[test]
    fn embedded_fpstate_in_init_task() {
        let mut init = task(0xffff_8000_0000_0000);
        put_fpstate(&mut init, 3000, 3072);
        let ts = from_init(&init).expect("sized");
        assert_eq!((ts.size, ts.win), (3072 + 64 + 4096, 3072));
    }

    #[test]
    fn fpu_after_the_struct_in_forked_tasks() {
        let mut a = task(0xffff_8880_0001_0000);
        let mut b = task(0xffff_8880_0002_0000);
        for t in [&mut a, &mut b] {
            put_fpstate(t, 6080 + 16, 6080 + 64);
        }
        let ts = from_forked(&[&a, &b]).expect("sized");
        assert_eq!((ts.size, ts.fpu_end), (6080, 6080 + 64 + 64 + 4096));
        assert!(check_symbols(&ts, Some(6080 + 4224)).is_ok());
        assert!(check_symbols(&ts, Some(6080)).is_err());
    }

    #[test]
    fn fxsave_image_when_there_is_no_pointer() {
        let mut a = task(0xffff_8880_0001_0000);
        let mut b = task(0xffff_8880_0002_0000);
        // A kernel thread that never used the FPU: zeros, last_cpu -1.
        let mut k = task(0xffff_8880_0003_0000);
        for t in [&mut a, &mut b] {
            put_fxsave(t, 5312);
            t.bytes[5248..5252].copy_from_slice(&1u32.to_le_bytes());
        }
        k.bytes[5248..5252].copy_from_slice(&u32::MAX.to_le_bytes());
        // Another image-like spot in one task only does not count.
        put_fxsave(&mut a, 1024);
        let ts = from_forked(&[&a, &k, &b]).expect("sized");
        assert_eq!(ts.size, 5312 + 4096);
        // One image alone is not enough.
        assert!(from_forked(&[&a, &k]).is_err());
    }

    /// `fpu.fpstate` holding a pointer far above the task: not a candidate, and no overflow.
    #[test]
    fn fpstate_pointer_far_away_is_ignored() {
        let mut init = task(0x40);
        // addr + x with x = 2^64 - 128: 64-byte aligned, past every field, and x + 4 KiB wraps.
        init.bytes[8..16].copy_from_slice(&0xffff_ffff_ffff_ffc0u64.to_le_bytes());
        assert_eq!(from_init(&init), None);
    }

    #[test]
    fn nothing_to_go_on_is_an_error() {
        let a = task(0xffff_8880_0001_0000);
        let e = from_forked(&[&a]).expect_err("no evidence");
        assert!(e.to_string().contains("cannot size task_struct"), "{e}");
        assert!(from_forked(&[]).is_err());
    }
}
