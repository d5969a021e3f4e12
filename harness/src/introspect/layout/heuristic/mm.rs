//! Heuristic step 3: `task_struct.mm` and the `mm_struct` fields (`pgd`, argument and
//! environment bounds), and `cred.uid`.
//!
//! - `pgd`: a page-aligned direct-map pointer whose page's kernel half (entries 256–511) is
//!   the same in every process — they all map the same kernel.
//! - `arg_end == env_start` for every process, both in the stack area at the top of user space;
//!   `arg_start` is the nearest field value below, `env_end` the nearest above.
//! - `real_cred`: a pointer whose targets all hold `CAP_FULL_SET` (the bounding set, which no
//!   workload drops) — true of every `struct cred`, shuffled or not;
//! - `uid`: 0 in `init_cred`, small ids elsewhere; where `struct cred` is in declaration order,
//!   the `uid, gid, suid, sgid, euid, egid, fsuid, fsgid` pattern pins it exactly.
//!
//! Invariant: an offset is accepted only if it fits every process (or every cred) read.

use std::collections::{BTreeSet, HashMap};

use super::fields::Tasks;
use super::Snap;
use crate::introspect::addr::KVirt;
use crate::introspect::kspace::KernelSpace;

const MM_SPAN: usize = 2048;
const CRED_SPAN: usize = 256;
/// Lowest address considered part of the user stack area on x86-64.
const STACK_AREA: u64 = 0x7000_0000_0000;
const USER_END: u64 = 0x0000_8000_0000_0000;
const ARG_AREA_MAX: u64 = 2 << 20;
/// `CAP_FULL_SET` in 6.1 (`CAP_LAST_CAP` = 40).
const CAP_FULL_SET: u64 = (1 << 41) - 1;

#[derive(Debug, Clone, Copy)]
pub struct MmFields {
    pub mm: u64,
    pub pgd: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct CredFields {
    pub real_cred: u64,
    pub uid: u64,
}

fn read(s: &KernelSpace<'_>, ptrs: &[u64], span: usize) -> Vec<Snap> {
    s.read_many(&ptrs.iter().map(|&p| (KVirt(p), span)).collect::<Vec<_>>())
        .into_iter()
        .zip(ptrs)
        .filter_map(|(r, &base)| r.ok().map(|data| Snap { base, data }))
        .collect()
}

pub fn infer(s: &KernelSpace<'_>, t: &Tasks) -> Result<(MmFields, CredFields), String> {
    let mut why = Vec::new();
    let mut mm = None;
    for &o in &t.f.mm_candidates {
        let ptrs: BTreeSet<u64> = t.all.iter().filter_map(|x| x.u64(o)).filter(|&v| v != 0).collect();
        let snaps = read(s, &ptrs.into_iter().collect::<Vec<_>>(), MM_SPAN);
        match mm_struct(s, &snaps) {
            Ok(f) => {
                mm = Some(MmFields { mm: o, ..f });
                break;
            }
            Err(e) => why.push(format!("mm at +{o:#x}: {e}")),
        }
    }
    let mm = mm.ok_or_else(|| format!("no mm_struct found ({})", why.join("; ")))?;
    // real_cred: of the candidates, one whose pointees all look like a struct cred.
    for &o in &t.f.cred_candidates {
        let ptrs: BTreeSet<u64> = t.all.iter().filter_map(|x| x.u64(o)).collect();
        let init_cred = t.all[0].u64(o).unwrap_or(0);
        let snaps = read(s, &ptrs.into_iter().collect::<Vec<_>>(), CRED_SPAN);
        // Every cred holds the full capability bounding set (`cap_bset`, CAP_FULL_SET).
        let has_bset = (0..CRED_SPAN as u64 - 8).step_by(4).any(|p| snaps.iter().all(|c| c.u64(p) == Some(CAP_FULL_SET)));
        if !has_bset {
            why.push(format!("cred at +{o:#x}: no capability bounding set"));
            continue;
        }
        match uid(&snaps, init_cred) {
            Ok(uid) => {
                tracing::debug!(real_cred = o, uid, ?mm, "heuristic: mm and cred");
                return Ok((mm, CredFields { real_cred: o, uid }));
            }
            Err(e) => why.push(format!("cred at +{o:#x}: {e}")),
        }
    }
    Err(format!("no real_cred found ({})", why.join("; ")))
}

fn mm_struct(s: &KernelSpace<'_>, mms: &[Snap]) -> Result<MmFields, String> {
    if mms.is_empty() {
        return Err("no process has an mm".into());
    }
    let offs = || (0..MM_SPAN as u64 - 8).step_by(8);
    // pgd: kernel halves identical across processes.
    let pgd = offs()
        .find(|&o| {
            let ptrs: Vec<u64> = mms.iter().filter_map(|m| m.u64(o)).collect();
            if ptrs.len() != mms.len() || !ptrs.iter().all(|&p| p % 4096 == 0 && s.in_direct_map(KVirt(p))) {
                return false;
            }
            let halves = s.read_many(&ptrs.iter().map(|&p| (KVirt(p + 2048), 2048)).collect::<Vec<_>>());
            let mut first: Option<Vec<u8>> = None;
            halves.into_iter().all(|h| match h {
                Ok(h) if h.iter().any(|&b| b != 0) => match &first {
                    Some(f) => *f == h,
                    None => {
                        first = Some(h);
                        true
                    }
                },
                _ => false,
            })
        })
        .ok_or("no page-table root whose kernel half all processes share")?;
    let stack = |v: u64| (STACK_AREA..USER_END).contains(&v);
    // arg_end / env_start: equal in every process, in the stack area.
    let pair = offs()
        .flat_map(|b| offs().filter(move |&c| c > b).map(move |c| (b, c)))
        .find(|&(b, c)| mms.iter().all(|m| matches!((m.u64(b), m.u64(c)), (Some(x), Some(y)) if x == y && stack(x))))
        .ok_or("no arg_end == env_start pair in the stack area")?;
    let (arg_end, env_start) = pair;
    // arg_start: the nearest value below arg_end, the same field in every process.
    let nearest = |m: &Snap, below: bool, pivot: u64| -> Option<u64> {
        offs()
            .filter_map(|o| Some((o, m.u64(o)?)))
            .filter(|&(_, v)| if below { v < pivot && pivot - v <= ARG_AREA_MAX } else { v > pivot && v - pivot <= ARG_AREA_MAX })
            .min_by_key(|&(o, v)| (if below { pivot - v } else { v - pivot }, o))
            .map(|(o, _)| o)
    };
    let agree = |below: bool, pivot_off: u64| -> Option<u64> {
        let mut votes: HashMap<u64, usize> = HashMap::new();
        for m in mms {
            *votes.entry(nearest(m, below, m.u64(pivot_off)?)?).or_default() += 1;
        }
        votes.into_iter().find(|&(_, n)| n == mms.len()).map(|(o, _)| o)
    };
    let arg_start = agree(true, arg_end).ok_or("no field consistently just below arg_end")?;
    let env_end = agree(false, env_start).ok_or("no field consistently just above env_start")?;
    Ok(MmFields { mm: 0, pgd, arg_start, arg_end, env_start, env_end })
}

fn uid(creds: &[Snap], init_cred: u64) -> Result<u64, String> {
    let init = creds.iter().find(|c| c.base == init_cred).ok_or("init_cred unreadable")?;
    let offs = || (0..CRED_SPAN as u64 - 4).step_by(4);
    let idlike = |v: u32| v < (1 << 20) || v == 65534;
    let basic: Vec<u64> = offs()
        .filter(|&o| {
            init.u32(o) == Some(0)
                && creds.iter().all(|c| c.u32(o).is_some_and(idlike))
                && creds.iter().any(|c| c.u32(o).is_some_and(|v| v != 0))
        })
        .collect();
    // uid, gid, suid, sgid, euid, egid, fsuid, fsgid in declaration order.
    let pattern = |o: u64| {
        creds.iter().all(|c| {
            let v = |k: u64| c.u32(o + 4 * k);
            v(0).is_some() && v(0) == v(2) && v(0) == v(4) && v(0) == v(6) && v(1).is_some() && v(1) == v(3) && v(1) == v(5) && v(1) == v(7)
        })
    };
    if let Some(o) = basic.iter().copied().find(|&o| pattern(o)) {
        return Ok(o);
    }
    // A shuffled struct cred: uid, suid, euid and fsuid hold the same values in every cred
    // that never changed identity partially; take the largest such class (gid's class is
    // indistinguishable when its values differ from uid's — a documented limit).
    let mut classes: HashMap<Vec<u32>, Vec<u64>> = HashMap::new();
    for &o in &basic {
        classes.entry(creds.iter().map(|c| c.u32(o).unwrap_or(0)).collect()).or_default().push(o);
    }
    classes
        .into_values()
        .max_by_key(|offs| (offs.len(), std::cmp::Reverse(offs[0])))
        .map(|offs| offs[0])
        .ok_or_else(|| "no uid in struct cred".into())
}
