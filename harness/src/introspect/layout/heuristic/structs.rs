//! Inferring the fields of `signal_struct`, `cred` and `mm_struct`, and the task fields that
//! point at them, by following the pointers and checking what the kernel guarantees about the
//! structures at the other end.
//!
//! - `signal` / `thread_node` / `thread_head`: `init_task.thread_node` is the only node of
//!   `init_signals.thread_head` (both set by `INIT_TASK`), so a one-node list in `init_task`
//!   whose head lies `th` bytes into the static object another field of `init_task` points at,
//!   with that head pointing back, fixes all three. Every sampled leader must then sit on its
//!   own signal's thread list.
//! - `real_cred` / `cred.uid`: `init_task`'s cred pointers hold `&init_cred`; in `init_cred`
//!   the eight ids are 0 and `cap_permitted`, `cap_effective`, `cap_bset` are the full set
//!   (`2^n - 1`) right after `securebits` and `cap_inheritable` (0); in every cred the real,
//!   saved, effective and fs ids mostly agree.
//! - `mm` / `mm_struct.pgd`: `init_mm.pgd` holds `&init_top_pgt`; a user `mm->pgd` is a page
//!   whose kernel half (entries 256..511) copies `init_top_pgt`'s.
//! - `arg_start..env_end`: four words, user addresses with `arg_start < arg_end == env_start <=
//!   env_end` (set together by `create_elf_tables`), all 0 in `init_mm`, and the bytes at
//!   `arg_start` (through the process's page tables) a NUL-separated printable argv.
//!
//! Invariant: bounded windows ([`SIGNAL_WIN`], [`CRED_WIN`], [`MM_WIN`]), bounded lists, one
//! batch per hop; an offset is returned only if exactly one fits.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::probe::{failed, u32_at, u64_at, Obj, Probe};
use super::task::one;
use super::super::LayoutError;
use crate::introspect::addr::{KVirt, UVirt};
use crate::introspect::cmdline::read_user_many;
use crate::introspect::paging::PageTables;

/// Bytes of a `signal_struct` searched for `thread_head` / `nr_threads`.
pub const SIGNAL_WIN: usize = 512;
/// Bytes of a `cred` searched.
pub const CRED_WIN: usize = 256;
/// Bytes of an `mm_struct` searched.
pub const MM_WIN: usize = 2048;
/// Most threads followed per thread group.
pub const MAX_THREADS: usize = 1 << 14;
/// User addresses are below this (47-bit user space; 56-bit with 5-level paging).
const USER_TOP: u64 = 1 << 56;

/// Where the thread-group fields are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalFound {
    pub signal: u64,
    pub thread_node: u64,
    pub thread_head: u64,
}

/// `signal`, `thread_node` and `signal_struct.thread_head` from `init_task` and the static
/// signal struct it points at (`init_signals`, checked against the symbol when there is one).
pub fn find_signal(p: &Probe<'_, '_>, init: &Obj, init_signals: Option<KVirt>) -> Result<SignalFound, LayoutError> {
    let len = init.bytes.len() as u64;
    let offs = || (0..len.saturating_sub(15)).step_by(8);
    // One-node lists into the image: next == prev, not self.
    let nodes: Vec<(u64, u64)> = offs()
        .filter_map(|n| {
            let (a, b) = (init.u64(n)?, init.u64(n + 8)?);
            (a == b && a != init.at(n) && p.image(a)).then_some((n, a))
        })
        .collect();
    let mut triples = Vec::new();
    let mut targets: BTreeSet<u64> = BTreeSet::new();
    let mut pairs = Vec::new();
    for s in offs() {
        let Some(ptr) = init.u64(s).filter(|&v| p.image(v)) else { continue };
        if init_signals.is_some_and(|sym| sym.0 != ptr) {
            continue;
        }
        for &(n, head) in &nodes {
            let th = head.wrapping_sub(ptr);
            if th < (SIGNAL_WIN as u64 - 16) && s != n && s != n + 8 {
                pairs.push((s, n, ptr, th));
                targets.insert(ptr);
            }
        }
    }
    let targets: Vec<KVirt> = targets.into_iter().map(KVirt).collect();
    let objs: HashMap<u64, Obj> = p.objs_lossy(&targets, SIGNAL_WIN).into_iter().flatten().map(|o| (o.addr.0, o)).collect();
    for (s, n, ptr, th) in pairs {
        let Some(sig) = objs.get(&ptr) else { continue };
        if sig.u64(th) == Some(init.at(n)) && sig.u64(th + 8) == Some(init.at(n)) {
            triples.push(SignalFound { signal: s, thread_node: n, thread_head: th });
        }
    }
    match triples.as_slice() {
        [one] => Ok(*one),
        [] => Err(failed("signal: no field of init_task points at a signal struct whose thread list holds init_task")),
        many => Err(failed(format!("ambiguous signal/thread_node: {many:?}"))),
    }
}

/// One thread group of the sample.
#[derive(Debug, Clone)]
pub struct Group {
    /// Index into the leaders.
    pub leader: usize,
    pub signal: Obj,
    /// Every task on `signal->thread_head`, in list order.
    pub members: Vec<KVirt>,
}

/// The thread group of every leader: its `signal` struct read, its thread list followed (all
/// groups advancing together). A leader whose signal or list is broken fails the method.
pub fn groups(p: &Probe<'_, '_>, leaders: &[Obj], sf: SignalFound) -> Result<Vec<Group>, LayoutError> {
    let sigs: Vec<KVirt> = leaders
        .iter()
        .map(|l| match l.u64(sf.signal) {
            Some(v) if p.heap(v) => Ok(KVirt(v)),
            v => Err(failed(format!("task {}: signal {v:#x?} is not a heap pointer", l.addr))),
        })
        .collect::<Result<_, _>>()?;
    let objs = p.objs(&sigs, SIGNAL_WIN, "signal_struct")?;
    let lists: Vec<(u64, u64)> = objs.iter().map(|o| (o.at(sf.thread_head), o.u64(sf.thread_head).unwrap_or(0))).collect();
    let walked = follow_many(p, &lists, sf.thread_node, MAX_THREADS);
    let mut out = Vec::with_capacity(leaders.len());
    for (i, (sig, members)) in objs.into_iter().zip(walked).enumerate() {
        let members = members.map_err(|e| failed(format!("thread list of task {}: {e}", leaders[i].addr)))?;
        if !members.contains(&leaders[i].addr) {
            return Err(failed(format!("task {} is not on its own signal's thread list", leaders[i].addr)));
        }
        out.push(Group { leader: i, signal: sig, members });
    }
    Ok(out)
}

/// Follow many circular lists together, one batched read per hop: for each `(head, first)`,
/// the members (node minus `node_off`) in order, or why the list is broken.
pub fn follow_many(p: &Probe<'_, '_>, lists: &[(u64, u64)], node_off: u64, limit: usize) -> Vec<Result<Vec<KVirt>, String>> {
    struct L {
        head: u64,
        prev: u64,
        node: u64,
        seen: HashSet<u64>,
        out: Result<Vec<KVirt>, String>,
    }
    let mut ls: Vec<L> =
        lists.iter().map(|&(head, first)| L { head, prev: head, node: first, seen: HashSet::new(), out: Ok(Vec::new()) }).collect();
    loop {
        let mut active = Vec::new();
        for (i, l) in ls.iter_mut().enumerate() {
            let Ok(out) = &l.out else { continue };
            if l.node == l.head {
                continue;
            }
            if !p.heap(l.node) {
                l.out = Err(format!("node {:#x} after {:#x} is not a heap pointer", l.node, l.prev));
            } else if !l.seen.insert(l.node) || out.len() >= limit {
                l.out = Err(format!("does not return to its head {:#x} within {limit} nodes", l.head));
            } else {
                active.push(i);
            }
        }
        if active.is_empty() {
            break;
        }
        let regions: Vec<(KVirt, usize)> = active.iter().map(|&i| (KVirt(ls[i].node), 16)).collect();
        for (&i, r) in active.iter().zip(p.space.read_many(&regions)) {
            let l = &mut ls[i];
            let Ok(b) = r else {
                l.out = Err(format!("node {:#x} unreadable", l.node));
                continue;
            };
            let (next, back) = (u64_at(&b, 0).unwrap_or(0), u64_at(&b, 8).unwrap_or(0));
            if back != l.prev {
                l.out = Err(format!("node {:#x}: prev {back:#x}, expected {:#x}", l.node, l.prev));
                continue;
            }
            if let Ok(out) = &mut l.out {
                out.push(KVirt(l.node.wrapping_sub(node_off)));
            }
            l.prev = l.node;
            l.node = next;
        }
    }
    ls.into_iter().map(|l| l.out).collect()
}

/// `signal_struct.nr_threads`: an `int` before `thread_head` equal to the thread count of
/// every group (1 for `init_signals`). `sigcnt` and `live` often hold the same values (a zombie
/// leader tells `live` apart: 0 against 1); if exactly two offsets still fit and agree on
/// every group, the later one is taken (`sigcnt` is declared first); otherwise `None`.
pub fn nr_threads(init_signals: &Obj, groups: &[Group], thread_head: u64) -> Option<u64> {
    let fits: Vec<u64> = (0..thread_head)
        .step_by(4)
        .filter(|&o| init_signals.u32(o) == Some(1) && groups.iter().all(|g| g.signal.u32(o) == Some(g.members.len() as u32)))
        .collect();
    match fits.as_slice() {
        [x] => Some(*x),
        [_, b] => Some(*b),
        _ => None,
    }
}

/// Whether 32 bits at `off` of `b` are the 8 ids of a cred (`uid gid suid sgid euid egid fsuid
/// fsgid`) where real, saved, effective and fs ids agree.
fn ids_agree(b: &[u8], off: u64) -> bool {
    let id = |k: u64| u32_at(b, off + 4 * k);
    (id(0) == id(2) && id(0) == id(4) && id(0) == id(6)) && (id(1) == id(3) && id(1) == id(5) && id(1) == id(7)) && id(7).is_some()
}

/// `2^n - 1` for a plausible capability count.
fn full_caps(v: u64) -> bool {
    v.count_ones() >= 32 && (v & v.wrapping_add(1)) == 0
}

/// The init_cred pattern: offsets `u` where 8 zero ids are followed by `securebits` 0,
/// `cap_inheritable` 0 and three full sets (`kernel_cap_t` of two `u32`, or one `u64` when
/// `wide`).
fn init_cred_uids(ic: &Obj) -> Vec<(u64, bool)> {
    (0..CRED_WIN as u64 - 80)
        .step_by(4)
        .flat_map(|u| [(u, false), (u, true)])
        .filter(|&(u, wide)| {
            let caps = if wide { u + 40 } else { u + 36 };
            (0..8).all(|k| ic.u32(u + 4 * k) == Some(0))
                && ic.u32(u + 32) == Some(0)
                && ic.u64(caps) == Some(0)
                && (1..=3).all(|k| ic.u64(caps + 8 * k).is_some_and(full_caps))
        })
        .collect()
}

/// `(real_cred, cred.uid)`. `tasks[0]` is `init_task`; `init_cred` is the symbol if kallsyms
/// has it, else the one image object `init_task` points at that fits the init_cred pattern.
/// `caps_u64`: whether `kernel_cap_t` is one `u64` (6.3+) rather than two `u32` — used only to
/// break a tie that the sampled creds leave open.
pub fn find_cred(
    p: &Probe<'_, '_>,
    tasks: &[&Obj],
    init_cred: Option<KVirt>,
    caps_u64: bool,
) -> Result<(u64, u64), LayoutError> {
    let init = tasks.first().ok_or_else(|| failed("no tasks"))?;
    let len = init.bytes.len() as u64;
    let image_ptrs: Vec<(u64, u64)> = (0..len.saturating_sub(7))
        .step_by(8)
        .filter_map(|o| Some((o, init.u64(o)?)))
        .filter(|&(_, v)| init_cred.map_or(p.image(v), |ic| ic.0 == v))
        .collect();
    let firsts: BTreeSet<u64> = image_ptrs.iter().map(|x| x.1).collect();
    let firsts: Vec<KVirt> = firsts.into_iter().map(KVirt).collect();
    let ics: Vec<Obj> = p
        .objs_lossy(&firsts, CRED_WIN)
        .into_iter()
        .flatten()
        .filter(|o| !init_cred_uids(o).is_empty())
        .collect();
    let [ic] = ics.as_slice() else {
        let at: Vec<String> = ics.iter().map(|o| o.addr.to_string()).collect();
        return Err(failed(format!("init_cred: {} objects behind init_task fit ({at:?})", ics.len())));
    };
    let ptrs: Vec<u64> = image_ptrs
        .iter()
        .filter(|&&(_, v)| v == ic.addr.0)
        .map(|&(o, _)| o)
        .filter(|&o| tasks.iter().all(|t| t.u64(o).is_some_and(|v| v == ic.addr.0 || p.heap(v))))
        .collect();
    if ptrs.is_empty() {
        return Err(failed("real_cred: no field points at init_cred on init_task and at creds elsewhere"));
    }
    let targets: BTreeSet<u64> = tasks.iter().flat_map(|t| ptrs.iter().filter_map(|&o| t.u64(o))).filter(|&v| v != ic.addr.0).collect();
    let targets: Vec<KVirt> = targets.into_iter().map(KVirt).collect();
    let mut creds: HashMap<u64, Obj> = p.objs(&targets, CRED_WIN, "cred")?.into_iter().map(|o| (o.addr.0, o)).collect();
    creds.insert(ic.addr.0, ic.clone());
    let from_init = init_cred_uids(ic);
    let all_creds: Vec<&Obj> = creds.values().collect();
    let agreeing = |u: u64| all_creds.iter().filter(|c| ids_agree(&c.bytes, u)).count() * 10 >= all_creds.len() * 9;
    let nonzero = |u: u64| all_creds.iter().any(|c| (0..8).any(|k| c.u32(u + 4 * k).is_some_and(|v| v != 0)));
    let mut fits: Vec<(u64, bool)> = from_init.iter().copied().filter(|&(u, _)| agreeing(u) && nonzero(u)).collect();
    if fits.is_empty() {
        // Every sampled task is root: the ids cannot place uid; the capability width can.
        fits = from_init.iter().copied().filter(|&(u, _)| agreeing(u)).collect();
    }
    let mut uids: Vec<u64> = fits.iter().map(|&(u, _)| u).collect();
    uids.dedup();
    if uids.len() > 1 {
        uids = fits.iter().filter(|&&(_, wide)| wide == caps_u64).map(|&(u, _)| u).collect();
    }
    let uid = one("cred.uid", &uids)?;
    // real_cred and cred both point at creds; real_cred is declared first.
    Ok((ptrs[0], uid))
}

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

/// `mm` (with `flags`): of the `(mm, flags)` candidates, the one whose every non-NULL target
/// has at `pgd` (where `init_mm` holds the top-level table `top`) a page whose kernel half
/// copies `top`'s (all but at most 2 present entries); `active_mm` is told apart only by a
/// running kernel thread, else by declaration order (see below).
pub fn find_mm(p: &Probe<'_, '_>, tasks: &[&Obj], cands: &[(u64, u64)], pgd: u64, top: KVirt) -> Result<(u64, u64), LayoutError> {
    let top = p.objs(&[top.wrapping_add(2048)], 2048, "top-level page table")?.remove(0);
    let mut ms: Vec<u64> = cands.iter().map(|c| c.0).collect();
    ms.dedup();
    let mut good_m = Vec::new();
    for m in ms {
        let mms: BTreeSet<u64> = tasks.iter().filter_map(|t| t.u64(m)).filter(|&v| v != 0).collect();
        let mms: Vec<u64> = mms.into_iter().collect();
        let roots: Vec<Option<u64>> = p.words(&mms.iter().map(|v| v.wrapping_add(pgd)).collect::<Vec<_>>());
        let Some(roots): Option<Vec<u64>> = roots.into_iter().collect() else { continue };
        if roots.is_empty() || !roots.iter().all(|&r| r % 4096 == 0 && p.heap(r)) {
            continue;
        }
        let halves: Vec<KVirt> = roots.iter().map(|&r| KVirt(r + 2048)).collect();
        let ok = p.objs_lossy(&halves, 2048).iter().all(|h| {
            h.as_ref().is_some_and(|h| {
                let (same, present) = kernel_half_match(&top.bytes, &h.bytes);
                present >= 2 && same + 2 >= present
            })
        });
        if ok {
            good_m.push(m);
        }
    }
    // `active_mm` equals `mm` on every task but a kernel thread running on borrowed memory at
    // the time of the dump (a switched-out kernel thread's `active_mm` is reset to NULL); when
    // no sampled task tells them apart, the first is `mm` (declared right before `active_mm`).
    let agree = good_m.iter().all(|&m| tasks.iter().all(|t| t.u64(m) == t.u64(good_m[0])));
    let m = if agree && !good_m.is_empty() { good_m[0] } else { one("mm", &good_m)? };
    let flags: Vec<u64> = cands.iter().filter(|c| c.0 == m).map(|c| c.1).collect();
    Ok((m, one("flags", &flags)?))
}

/// `mm_struct.arg_start` (the other three follow it): see the module doc. `mms` are user
/// mm_structs (at least one), `init_mm` the kernel's.
pub fn find_args(p: &Probe<'_, '_>, mms: &[Obj], init_mm: &Obj, pgd: u64) -> Result<u64, LayoutError> {
    let len = mms.iter().map(|m| m.bytes.len()).chain([init_mm.bytes.len()]).min().unwrap_or(0) as u64;
    let words = |m: &Obj, a: u64| Some([m.u64(a)?, m.u64(a + 8)?, m.u64(a + 16)?, m.u64(a + 24)?]);
    let shaped: Vec<u64> = (0..len.saturating_sub(31))
        .step_by(8)
        .filter(|&a| words(init_mm, a) == Some([0; 4]))
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
    // The argv check, for up to 4 processes per candidate.
    let fits: Vec<u64> = shaped.into_iter().filter(|&a| argv_readable(p, mms, a, pgd)).collect();
    one("mm_struct.arg_start", &fits)
}

fn argv_readable(p: &Probe<'_, '_>, mms: &[Obj], a: u64, pgd: u64) -> bool {
    let mut reqs = Vec::new();
    for m in mms.iter().take(4) {
        let (Some(root), Some(s), Some(e)) = (m.u64(pgd), m.u64(a), m.u64(a + 8)) else { return false };
        let Some(root) = p.space.linear(KVirt(root)) else { return false };
        let n = (e - s).min(256) as usize;
        reqs.push((PageTables::new(root, p.space.format), UVirt(s), n));
    }
    let reads = read_user_many(p.space, &reqs);
    reads.iter().all(|r| match r {
        Ok(b) => !b.is_empty() && b[0] != 0 && b.iter().all(|&c| c == 0 || c >= 0x20 || c == b'\t' || c == b'\n'),
        Err(_) => false,
    })
}
