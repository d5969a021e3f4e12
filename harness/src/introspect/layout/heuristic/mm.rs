//! Inferring `mm` (with `flags`), `mm_struct.pgd` and the argument area.
//!
//! - `mm` / `pgd`: a user `mm->pgd` is a page whose kernel half (entries 256..511) copies the
//!   kernel's top-level table (`init_top_pgt`); `init_mm.pgd` holds that table when kallsyms
//!   names `init_mm`.
//! - `arg_start..env_end`: user addresses with `arg_start < arg_end == env_start <= env_end`
//!   (set together by `create_elf_tables`), 0 in `init_mm`, and the bytes at `arg_start`
//!   (through the process's page tables) a NUL-separated printable argv; see [`find_args`].
//!
//! Invariant: bounded windows ([`MM_WIN`], 256 bytes of user memory per check, 4 processes per
//! check); an offset is returned only if exactly one fits or the tie is reported weak.

use std::collections::{BTreeSet, HashMap};

use super::cred::declared_first;
use super::probe::{failed, u64_at, Obj, Probe};
use super::task::one;
use super::super::LayoutError;
use crate::introspect::addr::{KVirt, UVirt};
use crate::introspect::cmdline::read_user_many;
use crate::introspect::paging::PageTables;

/// Bytes of an `mm_struct` searched.
pub const MM_WIN: usize = 2048;
/// User addresses are below this (47-bit user space; 56-bit with 5-level paging).
const USER_TOP: u64 = 1 << 56;

/// How many of `init`'s kernel-half entries a user page directory copies, of how many present.
fn kernel_half_match(init_top: &[u8], user_top: &[u8]) -> (usize, usize) {
    let mut present = 0;
    let mut same = 0;
    for k in 0..256u64 {
        let a = u64_at(init_top, 8 * k).unwrap_or(0);
        if a & 1 != 0 {
            present += 1;
            if u64_at(user_top, 8 * k) == Some(a) {
                same += 1;
            }
        }
    }
    (same, present)
}

/// Where the address space is.
#[derive(Debug, Clone)]
pub struct MmFound {
    pub mm: u64,
    pub flags: u64,
    pub pgd: u64,
    /// The distinct user `mm_struct`s of the sample.
    pub mms: Vec<Obj>,
    pub weak: bool,
}

/// `mm` (with `flags`) and `mm_struct.pgd`: of the `(mm, flags)` candidates, those whose every
/// non-NULL target has, at one offset `pgd`, a page whose kernel half copies the top-level
/// table's (all but at most 2 present entries) — and where `init_mm` is known, it holds the
/// table at that offset. `active_mm` equals `mm` on every task but a kernel thread running on
/// borrowed memory at the time of the dump (a switched-out kernel thread's `active_mm` is reset
/// to NULL); when no sampled task tells them apart, the first is `mm` ([`declared_first`]).
pub fn find_mm(
    p: &Probe<'_, '_>,
    tasks: &[&Obj],
    cands: &[(u64, u64)],
    top: KVirt,
    init_mm: Option<&(Obj, u64)>,
    shuffled: bool,
) -> Result<MmFound, LayoutError> {
    let top = p.objs(&[top.wrapping_add(2048)], 2048, "top-level page table")?.remove(0);
    let mut ms: Vec<u64> = cands.iter().map(|c| c.0).collect();
    ms.dedup();
    let mut good: Vec<(u64, u64, Vec<Obj>)> = Vec::new();
    for m in ms {
        let vals: BTreeSet<u64> = tasks.iter().filter_map(|t| t.u64(m)).filter(|&v| v != 0).take(512).collect();
        let addrs: Vec<KVirt> = vals.into_iter().map(KVirt).collect();
        let Some(objs): Option<Vec<Obj>> = p.objs_lossy(&addrs, MM_WIN).into_iter().collect() else { continue };
        let gs: Vec<u64> = (0..MM_WIN as u64 - 7)
            .step_by(8)
            .filter(|&g| init_mm.is_none_or(|(o, pg)| *pg == g && o.u64(g).is_some()))
            .filter(|&g| !objs.is_empty() && objs.iter().all(|o| o.ptr(g).is_some_and(|r| r.0 % 4096 == 0 && p.heap(r))))
            .collect();
        let mut fit = Vec::new();
        for g in gs {
            let halves: Vec<KVirt> = objs.iter().filter_map(|o| o.u64(g)).map(|r| KVirt(r + 2048)).collect();
            let ok = p.objs_lossy(&halves, 2048).iter().all(|h| {
                h.as_ref().is_some_and(|h| {
                    let (same, present) = kernel_half_match(&top.bytes, &h.bytes);
                    present >= 2 && same + 2 >= present
                })
            });
            if ok {
                fit.push(g);
            }
        }
        if let [g] = fit.as_slice() {
            good.push((m, *g, objs));
        }
    }
    let offs: Vec<u64> = good.iter().map(|x| x.0).collect();
    let agree = good.iter().all(|(m, g, _)| *g == good[0].1 && tasks.iter().all(|t| t.u64(*m) == t.u64(good[0].0)));
    let (m, pgd, mms) = match good.len() {
        1 => good.remove(0),
        n if n > 1 && agree => good.remove(0),
        _ => return Err(failed(format!("mm: offsets {offs:?} fit (each with one pgd), need exactly one or agreeing ones"))),
    };
    let weak = offs.len() > 1 && !declared_first(&offs, 8, shuffled);
    let flags: Vec<u64> = cands.iter().filter(|c| c.0 == m).map(|c| c.1).collect();
    Ok(MmFound { mm: m, flags: one("flags", &flags)?, pgd, mms, weak })
}

/// The argument and environment area of `mm_struct`.
#[derive(Debug, Clone)]
pub struct ArgsFound {
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    /// `arg_end` and `env_start` hold equal values; without the ordered pattern, which is which
    /// is not known.
    pub weak: bool,
}

/// The argument area. First the ordered pattern: four words `arg_start < arg_end == env_start
/// <= env_end` (set together by `create_elf_tables`, declared together), user addresses, with
/// readable argv. If nothing fits (a shuffled `mm_struct`): two offsets equal on every mm
/// (`arg_end`, `env_start`, the lower taken as `arg_end`, weak), an offset below them whose
/// bytes up to them are a printable argv (`arg_start`), and one at or above them whose bytes
/// from them are `KEY=VALUE` strings (`env_end`) — `saved_auxv` entries excluded.
/// `init_mm`, when known, has all four 0.
pub fn find_args(p: &Probe<'_, '_>, mms: &[Obj], init_mm: Option<&Obj>, pgd: u64) -> Result<ArgsFound, LayoutError> {
    let len = mms.iter().map(|m| m.bytes.len()).min().unwrap_or(0) as u64;
    let zero_in_init = |a: u64| init_mm.is_none_or(|i| i.u64(a) == Some(0));
    let words = |m: &Obj, a: u64| Some([m.u64(a)?, m.u64(a + 8)?, m.u64(a + 16)?, m.u64(a + 24)?]);
    let shaped: Vec<u64> = (0..len.saturating_sub(31))
        .step_by(8)
        .filter(|&a| (0..4).all(|k| zero_in_init(a + 8 * k)))
        .filter(|&a| {
            let mut contiguous = 0;
            let all = mms.iter().all(|m| match words(m, a) {
                Some([s, e, es, ee]) => {
                    contiguous += usize::from(e == es);
                    0 < s && s < e && e <= es && es <= ee && ee < USER_TOP && ee - s < 1 << 30
                }
                None => false,
            });
            all && contiguous * 10 >= mms.len() * 9
        })
        .collect();
    let fits: Vec<u64> = shaped.into_iter().filter(|&a| user_text(p, mms, pgd, a, Some(a + 8), Text::Argv)).collect();
    if let [a] = fits.as_slice() {
        return Ok(ArgsFound { arg_start: *a, arg_end: a + 8, env_start: a + 16, env_end: a + 24, weak: false });
    }
    if fits.len() > 1 {
        return Err(failed(format!("ambiguous mm_struct.arg_start: offsets {fits:?}")));
    }
    // Shuffled: find the four separately. `saved_auxv` entries pointing into the same stack area
    // (recognised by their AT_* tag in the word before) are not fields.
    let auxv = |a: u64| a >= 8 && mms.iter().all(|m| m.u64(a - 8).is_some_and(|t| AUXV_STACK_TAGS.contains(&t)));
    let user: Vec<u64> = (0..len.saturating_sub(7))
        .step_by(8)
        .filter(|&a| zero_in_init(a) && !auxv(a) && mms.iter().all(|m| m.u64(a).is_some_and(|v| v > 0 && v < USER_TOP)))
        .collect();
    let val = |m: &Obj, a: u64| m.u64(a).unwrap_or(0);
    let pairs: Vec<(u64, u64)> = user
        .iter()
        .enumerate()
        .flat_map(|(i, &x)| user[i + 1..].iter().map(move |&y| (x, y)))
        .filter(|&(x, y)| mms.iter().all(|m| val(m, x) == val(m, y)))
        .collect();
    if pairs.len() > MAX_EQUAL_PAIRS {
        return Err(failed(format!("mm_struct: {} pairs of equal user addresses, more than {MAX_EQUAL_PAIRS}", pairs.len())));
    }
    // Each (from, to, kind) is checked once: at most |user| argv and |user| env checks per pair.
    let mut checked: HashMap<(u64, u64, Text), bool> = HashMap::new();
    let mut text = |from: u64, to: u64, kind: Text| *checked.entry((from, to, kind)).or_insert_with(|| user_text(p, mms, pgd, from, Some(to), kind));
    let mut found = Vec::new();
    for (x, y) in pairs {
        let starts: Vec<u64> = user
            .iter()
            .copied()
            .filter(|&a| mms.iter().all(|m| val(m, a) < val(m, x) && val(m, x) - val(m, a) < 1 << 30))
            .filter(|&a| text(a, x, Text::Argv))
            .collect();
        let ends: Vec<u64> = user
            .iter()
            .copied()
            .filter(|&b| b != x && b != y && mms.iter().all(|m| val(m, b) >= val(m, x) && val(m, b) - val(m, x) < 1 << 30))
            .filter(|&b| mms.iter().any(|m| val(m, b) > val(m, x)) && text(x, b, Text::Env))
            .collect();
        for &a in &starts {
            for &b in &ends {
                found.push((a, x, y, b));
            }
        }
    }
    match found.as_slice() {
        [(a, x, y, b)] => Ok(ArgsFound { arg_start: *a, arg_end: *x, env_start: *y, env_end: *b, weak: true }),
        [] => Err(failed("mm_struct: no argument area fits")),
        many => Err(failed(format!("ambiguous argument area (arg_start, arg_end|env_start, env_end): {many:?}"))),
    }
}

/// `AT_PLATFORM`, `AT_BASE_PLATFORM`, `AT_RANDOM`, `AT_EXECFN`: auxv entries whose values point
/// at strings and bytes `create_elf_tables` puts next to argv and envp.
const AUXV_STACK_TAGS: [u64; 4] = [15, 24, 25, 31];

/// Most pairs of equal-valued user-address fields considered as `arg_end`/`env_start`.
const MAX_EQUAL_PAIRS: usize = 16;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Text {
    /// NUL-separated printable strings.
    Argv,
    /// `KEY=VALUE` strings.
    Env,
}

/// Whether, for up to 4 of the mms, the user bytes from the address at `from` (to the address
/// at `to`, at most 256 bytes) read through the process's page tables as `kind`. Unreadable
/// pages are skipped; at least one mm must be readable.
fn user_text(p: &Probe<'_, '_>, mms: &[Obj], pgd: u64, from: u64, to: Option<u64>, kind: Text) -> bool {
    let mut reqs = Vec::new();
    for m in mms.iter().take(4) {
        let (Some(root), Some(s)) = (m.u64(pgd), m.u64(from)) else { return false };
        let e = to.and_then(|t| m.u64(t)).unwrap_or(s + 256);
        let Some(root) = p.space.linear(KVirt(root)) else { return false };
        if e <= s {
            continue;
        }
        reqs.push((PageTables::new(root, p.space.format), UVirt(s), (e - s).min(256) as usize));
    }
    let reads: Vec<Vec<u8>> = read_user_many(p.space, &reqs).into_iter().filter_map(Result::ok).collect();
    !reads.is_empty()
        && reads.iter().all(|b| {
            let printable = b.iter().all(|&c| c == 0 || c >= 0x20 || c == b'\t' || c == b'\n');
            let first = b.split(|&c| c == 0).next().unwrap_or(&[]);
            printable && !first.is_empty() && (kind == Text::Argv || first.contains(&b'='))
        })
}
