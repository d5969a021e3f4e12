//! Inferring `real_cred` and `cred.uid` (see [`find_cred`] for the rules).
//!
//! Invariant: bounded windows ([`CRED_WIN`]); a shuffled `struct cred` (RANDSTRUCT) is handled
//! by value classes, and every choice made without evidence is reported weak.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::probe::{failed, u32_at, Obj, Probe};
use super::task::Sample;
use super::super::LayoutError;
use crate::introspect::addr::KVirt;

/// Bytes of a `cred` searched.
pub const CRED_WIN: usize = 256;
/// Whether 32 bytes at `off` of `b` are the 8 ids of a cred (`uid gid suid sgid euid egid fsuid
/// fsgid`) where real, saved, effective and fs ids agree.
fn ids_agree(b: &[u8], off: u64) -> bool {
    let id = |k: u64| u32_at(b, off + 4 * k);
    (id(0) == id(2) && id(0) == id(4) && id(0) == id(6)) && (id(1) == id(3) && id(1) == id(5) && id(1) == id(7)) && id(7).is_some()
}

/// `2^n - 1` for a plausible capability count (not all ones: that is `RLIM_INFINITY`).
fn full_caps(v: u64) -> bool {
    (32..64).contains(&v.count_ones()) && (v & v.wrapping_add(1)) == 0
}

/// A user or group id as a task holds it (`(uid_t)-1` included).
fn id_like(v: u32) -> bool {
    v < 0x8000_0000 || v == u32::MAX
}

/// The ordered init_cred pattern: offsets `u` where 8 zero ids are followed by `securebits` 0,
/// `cap_inheritable` 0 and three full sets (`kernel_cap_t` of two `u32`, or one `u64` when
/// `wide`). RANDSTRUCT shuffles `struct cred`, and then nothing fits.
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

/// Whether an object holds the full capability set at least three times (`cap_permitted`,
/// `cap_effective`, `cap_bset` of `init_cred`), in any order.
fn has_full_caps(o: &Obj) -> bool {
    (0..CRED_WIN as u64 - 7).step_by(4).filter(|&k| o.u64(k).is_some_and(full_caps)).count() >= 3
}

/// Where the credentials are.
#[derive(Debug, Clone)]
pub struct CredFound {
    pub real_cred: u64,
    pub uid: u64,
    /// Fields chosen among value-identical candidates by declaration order on a layout that
    /// looks shuffled, or by lowest offset among value classes.
    pub weak: Vec<&'static str>,
}

/// `real_cred` and `cred.uid`.
///
/// Cred pointers: image pointers in `init_task` (`&init_cred`, the symbol when kallsyms has
/// it) that are heap pointers on every other task, shared by the threads of a group and (but
/// for 1 in 10) different between groups; their `init_task` target is `init_cred`, the one
/// holding the full capability set three times. `real_cred` and `cred` hold the same values but
/// during `override_creds`; the first is taken ([`declared_first`]).
///
/// `uid`: the ordered pattern of `init_cred` ([`init_cred_uids`]) where the ids of most creds
/// agree; a tie between the two `kernel_cap_t` widths is settled by the kernel version
/// (`caps_u64`). If nothing fits (a shuffled `struct cred`), the value classes: `u32` fields
/// that are 0 in `init_cred`, id-like everywhere and non-zero somewhere, grouped by equal values
/// on every cred; uid, euid, suid, fsuid form one class (with the gids if they agree too) — the
/// lowest offset of the largest class is taken and reported weak.
pub fn find_cred(
    p: &Probe<'_, '_>,
    s: &Sample<'_>,
    init_cred: Option<KVirt>,
    caps_u64: bool,
    shuffled: bool,
    signal: u64,
) -> Result<CredFound, LayoutError> {
    let init = s.init;
    let tasks: HashSet<KVirt> = s.all().map(|t| t.addr).collect();
    let x: Vec<u64> = (0..s.win.saturating_sub(7))
        .step_by(8)
        .filter(|&o| o != signal && init.ptr(o).is_some_and(|v| init_cred.map_or(p.image(v), |ic| ic == v)))
        .filter(|&o| {
            let vals: Option<Vec<KVirt>> = s.leaders.iter().map(|t| t.ptr(o)).collect();
            let Some(vals) = vals else { return false };
            let distinct: HashSet<KVirt> = vals.iter().copied().collect();
            vals.iter().all(|&v| p.heap(v) && !tasks.contains(&v))
                && distinct.len() * 10 >= vals.len() * 9
                && s.threads.iter().all(|(i, t)| t.u64(o).is_some() && t.u64(o) == s.leaders.get(*i).and_then(|l| l.u64(o)))
        })
        .collect();
    let firsts: BTreeSet<u64> = x.iter().filter_map(|&o| init.u64(o)).collect();
    let firsts: Vec<KVirt> = firsts.into_iter().map(KVirt).collect();
    let ics: Vec<Obj> = p.objs_lossy(&firsts, CRED_WIN).into_iter().flatten().filter(has_full_caps).collect();
    let [ic] = ics.as_slice() else {
        let at: Vec<String> = ics.iter().map(|o| o.addr.to_string()).collect();
        return Err(failed(format!("init_cred: {} objects behind init_task's per-process pointers hold the full capability set ({at:?})", ics.len())));
    };
    let ptrs: Vec<u64> = x.iter().copied().filter(|&o| init.u64(o) == Some(ic.addr.0)).collect();
    let targets: BTreeSet<u64> = s.all().flat_map(|t| ptrs.iter().filter_map(|&o| t.u64(o))).filter(|&v| v != ic.addr.0).collect();
    let targets: Vec<KVirt> = targets.into_iter().map(KVirt).collect();
    let mut creds: BTreeMap<u64, Obj> = p.objs(&targets, CRED_WIN, "cred")?.into_iter().map(|o| (o.addr.0, o)).collect();
    creds.insert(ic.addr.0, ic.clone());
    let all_creds: Vec<&Obj> = creds.values().collect();
    let mut weak = Vec::new();

    let from_init = init_cred_uids(ic);
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
    let uid = match uids.as_slice() {
        [u] => *u,
        [] => {
            weak.push("cred.uid");
            uid_by_classes(ic, &all_creds)?
        }
        many => return Err(failed(format!("ambiguous cred.uid: offsets {many:?}"))),
    };
    let real_cred = ptrs[0];
    if ptrs.len() > 1 && !declared_first(&ptrs, 8, shuffled) {
        weak.push("real_cred");
    }
    Ok(CredFound { real_cred, uid, weak })
}

/// Whether taking the first of value-identical candidates is justified by declaration order:
/// two candidates, adjacent (`gap` bytes apart), in a layout that does not look shuffled.
pub fn declared_first(cands: &[u64], gap: u64, shuffled: bool) -> bool {
    matches!(cands, [a, b] if b - a == gap) && !shuffled
}

/// The uid among value classes of a shuffled `struct cred` (see [`find_cred`]).
fn uid_by_classes(ic: &Obj, creds: &[&Obj]) -> Result<u64, LayoutError> {
    let mut classes: BTreeMap<Vec<u32>, Vec<u64>> = BTreeMap::new();
    for u in (0..CRED_WIN as u64 - 3).step_by(4) {
        if ic.u32(u) != Some(0) {
            continue;
        }
        let vals: Option<Vec<u32>> = creds.iter().map(|c| c.u32(u)).collect();
        let Some(vals) = vals else { continue };
        if vals.iter().all(|&v| id_like(v)) && vals.iter().any(|&v| v != 0) {
            classes.entry(vals).or_default().push(u);
        }
    }
    let biggest = classes.values().map(Vec::len).max().unwrap_or(0);
    let top: Vec<&Vec<u64>> = classes.values().filter(|c| c.len() == biggest && biggest >= 4).collect();
    match top.as_slice() {
        [c] => Ok(c[0]),
        _ => Err(failed(format!("cred.uid: no single class of at least 4 equal id fields ({} classes)", classes.len()))),
    }
}
