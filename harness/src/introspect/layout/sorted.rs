//! The `btf` layout method on a kernel that keeps its BTF sorted by name (7.x): records found
//! through the kernel's own index of the blob (`btf_vmlinux->types`, see `btf::sparse`)
//! instead of reading the blob up to them (6.2 MB on Debian's 7.2, where `task_struct` is
//! described near the end).
//!
//! A lookup runs on what was read ([`Btf::sparse`]); what it needed and did not find (a name's
//! records, a record by id, a string) is read in batches, and the lookup runs again, until it
//! needs nothing more. What a batch reads:
//! - a name: a search over the named ids. First [`PIVOTS`] ids spread over them (their
//!   pointers, their records' heads and their names: three round trips, once per kernel); then
//!   the records between the two pivots around the name, read as one span and walked (every id
//!   in it becomes known); then the names of those records, [`NARROW`] per round trip, down to
//!   the run of ids of that name.
//! - a record: the kernel's pointers to it and to the next record (its end), then the record.
//!   A record brings what a lookup asks next with it: the type an alias names, an array's
//!   element type, and of an anonymous or searched struct or union its member names and its
//!   anonymous members' types.
//! - a string: [`STR_READ`] bytes at its offset, then up to [`MAX_NAME`] if it is longer.
//!
//! Invariant: every pointer is checked to lie in the type section, 4-byte aligned, before its
//! record is read; a record is kept only if it parses and ends where the next one starts; the
//! pivots' names must ascend. Anything else is an error: the caller then reads the blob
//! instead, so an index that misleads costs reading, never an answer from bytes that are not
//! a record.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::Arc;

use emulator::bytes::Bytes;

use crate::introspect::addr::KVirt;
use crate::introspect::btf::types::Kind;
use crate::introspect::btf::{parse_record, Btf, BtfRead, Header, Sparse, Type, TypeId, Wants, MAX_NAME};
use crate::introspect::kernel::Kernel;
use crate::introspect::kspace::KSpaceError;

/// Ids probed first, spread over the named ids (the records between two are read as one span:
/// on Debian's 7.2, 69,000 named ids in 1.7 MB, about 13 KB).
pub const PIVOTS: u64 = 128;
/// Names read per round trip when narrowing a span down to a name.
pub const NARROW: usize = 48;
/// Bytes read of a string first.
pub const STR_READ: usize = 48;
/// The structures a listing looks up (its layout: `layout::build`; its pid index:
/// `pidns::PidLayout::from_btf_core`): a search for one of them looks them all up, whichever
/// asks first, since each search costs its own round trips and together they cost one search's.
/// Other names (`lsmod`'s, `dmesg`'s) are searched as asked for.
pub const SEARCHED_TOGETHER: &[&str] =
    &["task_struct", "signal_struct", "cred", "mm_struct", "kthread", "worker", "upid", "pid", "pid_namespace", "idr", "xarray"];
/// Most bytes of records between two pivots read as one span.
const MAX_SPAN: u64 = 4 << 20;
/// Most bytes of one record (a struct of 65,535 members).
const MAX_RECORD: u64 = 12 + 12 * 0xffff;
/// Most batches of records and strings one fetch follows (alias chains, nested anonymous
/// members); what is left is asked for again by the next lookup.
const MAX_LEVELS: usize = 8;
/// Most times a lookup is run before the blob is read instead.
const MAX_ROUNDS: usize = 32;

/// `f` answered from records read through the kernel's index (see the module doc), with the
/// blob that answered; `None` if the kernel has no usable index, or it misled, or `f` failed on
/// what was read (the index is then dropped, and the caller reads the blob).
pub fn with_index<T, E>(kernel: &Kernel<'_>, f: &dyn Fn(&Btf) -> Result<T, E>) -> Option<(Btf, Result<T, E>)> {
    let mut got = kernel.btf_blob.lock().unwrap_or_else(|p| p.into_inner());
    let (start, _) = kernel.info.btf?;
    answer(&mut got, start, &|regions| kernel.space.read_many(regions), f)
}

/// Reads of kernel memory, one batch (one round trip) per call.
pub type ReadMany<'r> = dyn Fn(&[(KVirt, usize)]) -> Vec<Result<Vec<u8>, KSpaceError>> + 'r;

/// [`with_index`] on what `got` holds of the blob at `start`, reading through `mem`.
pub fn answer<T, E>(got: &mut BtfRead, start: KVirt, mem: &ReadMany<'_>, f: &dyn Fn(&Btf) -> Result<T, E>) -> Option<(Btf, Result<T, E>)> {
    for _ in 0..MAX_ROUNDS {
        let (sparse, header) = (got.sparse.clone()?, got.header?);
        let btf = match Btf::sparse(got.data.clone(), sparse) {
            Ok(b) => b,
            Err(e) => return drop_index(got, &e.to_string()),
        };
        let r = f(&btf);
        let wants = btf.take_wants();
        if wants.is_empty() && r.is_err() {
            // A name the search missed would look absent: the blob decides.
            return drop_index(got, "the lookups failed on the records read");
        }
        if wants.is_empty() {
            return Some((btf, r));
        }
        // The buffer is shared with `btf`: dropped first, it is filled in place.
        drop((btf, r));
        let reader = Reader::new(mem, start, header);
        if let Err(e) = reader.fetch(got, wants) {
            return drop_index(got, &e);
        }
    }
    drop_index(got, &format!("lookups still short after {MAX_ROUNDS} rounds"))
}

fn drop_index<T>(got: &mut BtfRead, why: &str) -> Option<T> {
    tracing::debug!(why, "the kernel's index of its BTF is not used; reading the blob");
    got.sparse = None;
    None
}

/// Put `n` bytes read at blob offset `off` into the blob's buffer `data`.
fn put(data: &mut [u8], off: u64, n: usize, bytes: Result<Vec<u8>, KSpaceError>) -> Read {
    let bytes = bytes.map_err(|e| format!("reading BTF at blob offset {off:#x}: {e}"))?;
    let to = data.get_mut(off as usize..off as usize + n).ok_or_else(|| format!("BTF read at {off:#x} past the blob"))?;
    to.copy_from_slice(bytes.get(..n).ok_or_else(|| format!("short BTF read at {off:#x}"))?);
    Ok(())
}

/// Reads through the kernel's index of the blob at `start`.
struct Reader<'k, 'm> {
    mem: &'k ReadMany<'m>,
    /// Offsets in the blob of the two sections, and their lengths.
    types: (u64, u64),
    strs: (u64, u64),
    start: KVirt,
}

type Read = Result<(), String>;

impl<'k, 'm> Reader<'k, 'm> {
    fn new(mem: &'k ReadMany<'m>, start: KVirt, h: Header) -> Self {
        let (hl, tl, sl) = (h.hdr_len as u64, h.type_len as u64, h.str_len as u64);
        Reader { mem, types: (hl + h.type_off as u64, tl), strs: (hl + h.str_off as u64, sl), start }
    }

    fn at(&self, off: u64) -> KVirt {
        self.start.wrapping_add(off)
    }

    /// Read `regions` (blob offsets, lengths) in one batch into `data` at their offsets.
    fn read(&self, data: &mut [u8], regions: &[(u64, usize)]) -> Read {
        let got = (self.mem)(&regions.iter().map(|&(o, n)| (self.at(o), n)).collect::<Vec<_>>());
        regions.iter().zip(got).try_for_each(|(&(off, n), bytes)| put(data, off, n, bytes))
    }

    /// Read what `wants` names into `got` (see the module doc).
    fn fetch(&self, got: &mut BtfRead, wants: Wants) -> Read {
        let mut s: Sparse = got.sparse.as_deref().cloned().ok_or("no index")?;
        let data = Arc::make_mut(&mut got.data);
        let (mut ids, mut strs) = (wants.ids, wants.strs);
        if !wants.names.is_empty() {
            let listing = wants.names.iter().any(|n| SEARCHED_TOGETHER.iter().any(|t| t.as_bytes() == n.as_slice()));
            let together = SEARCHED_TOGETHER.iter().filter(|_| listing).map(|n| n.as_bytes().to_vec());
            let names: BTreeSet<Vec<u8>> = wants.names.into_iter().chain(together).collect();
            for id in self.search(&mut s, data, &names)? {
                self.follow(&s, data, id, true, &mut ids, &mut strs);
            }
        }
        self.records(&mut s, data, ids, strs)?;
        got.sparse = Some(Arc::new(s));
        Ok(())
    }

    /// Read the records `ids` and the strings `strs`, and what they bring (see the module doc).
    fn records(&self, s: &mut Sparse, data: &mut [u8], mut ids: BTreeSet<TypeId>, mut strs: BTreeSet<u32>) -> Read {
        let nr = s.index.nr;
        for _ in 0..MAX_LEVELS {
            ids.retain(|id| !s.records.contains_key(id) && *id != 0 && *id < nr);
            if ids.is_empty() && strs.is_empty() {
                break;
            }
            // The pointers to each record and to the next (its end), in one batch with the strings.
            let ptrs: Vec<(TypeId, u64)> = ids.iter().map(|&id| (id, self.pointer(s, id))).collect();
            let str_regions = self.str_regions(s, data, &strs);
            let batch: Vec<(KVirt, usize)> = ptrs
                .iter()
                .map(|&(id, p)| (KVirt(p), if id + 1 < nr { 16 } else { 8 }))
                .chain(str_regions.iter().map(|&(o, n)| (self.at(self.strs.0 + o as u64), n)))
                .collect();
            let mut got = (self.mem)(&batch).into_iter();
            let mut scratch: Vec<Vec<u8>> = Vec::new();
            // `ptrs` first: a zip takes from its first iterator before finding the second ended.
            for (&(id, p), bytes) in ptrs.iter().zip(got.by_ref()) {
                scratch.push(bytes.map_err(|e| format!("reading the pointer to BTF type {id} at {p:#x}: {e}"))?);
            }
            self.store_strs(s, data, &str_regions, got.collect())?;
            strs.clear();
            let mut regions: Vec<(u64, usize)> = Vec::new();
            let mut spans = Vec::new();
            for (bytes, &(id, _)) in scratch.iter().zip(&ptrs) {
                let b = Bytes::new(bytes);
                let from = self.offset_of(b.u64(0).map_err(|_| "short pointer read")?)?;
                let to = match b.u64(8) {
                    Ok(next) => self.offset_of(next)?,
                    Err(_) => self.types.0 + self.types.1,
                };
                if to <= from || to - from > MAX_RECORD {
                    return Err(format!("BTF type {id}: the kernel's pointers give a record of {from:#x}..{to:#x}"));
                }
                regions.push((from, (to - from) as usize));
                spans.push((id, from, to));
            }
            self.read(data, &regions)?;
            let mut next = BTreeSet::new();
            for &(id, from, to) in &spans {
                self.keep(s, data, id, from, to)?;
                self.follow(s, data, id, false, &mut next, &mut strs);
            }
            ids = next;
        }
        Ok(())
    }

    /// Address of the kernel's pointer to record `id`.
    fn pointer(&self, s: &Sparse, id: TypeId) -> u64 {
        s.index.types.wrapping_add(8 * id as u64)
    }

    /// The blob offset of a record's address, checked to lie in the type section.
    fn offset_of(&self, addr: u64) -> Result<u64, String> {
        let off = addr.wrapping_sub(self.start.0);
        let (t, len) = self.types;
        if off < t || off >= t + len || (off - t) % 4 != 0 {
            return Err(format!("the kernel's index points at {addr:#x}, not at a record of the type section"));
        }
        Ok(off)
    }

    /// Keep record `id` read at blob offsets `from..to`, checked to be a whole record there.
    fn keep(&self, s: &mut Sparse, data: &[u8], id: TypeId, from: u64, to: u64) -> Read {
        let sec = self.type_section(data);
        let (off, end) = ((from - self.types.0) as usize, (to - self.types.0) as usize);
        let t = parse_record(sec, off, id).map_err(|e| e.to_string())?;
        let len = 12 + t.kind.extra_len(t.vlen).unwrap_or(0);
        if off + len != end {
            return Err(format!("BTF type {id} at {off:#x}: a record of {len} bytes where the index gives {}", end - off));
        }
        s.records.insert(id, off as u32);
        Ok(())
    }

    fn type_section<'d>(&self, data: &'d [u8]) -> Bytes<'d> {
        Bytes::new(data).sub(self.types.0 as usize, self.types.1 as usize).unwrap_or(Bytes::new(&[]))
    }

    fn str_section<'d>(&self, data: &'d [u8]) -> Bytes<'d> {
        Bytes::new(data).sub(self.strs.0 as usize, self.strs.1 as usize).unwrap_or(Bytes::new(&[]))
    }

    /// What a lookup will ask after record `id` (see the module doc); `named`: a struct or
    /// union whose members are looked up by name though it has a name.
    fn follow(&self, s: &Sparse, data: &[u8], id: TypeId, named: bool, ids: &mut BTreeSet<TypeId>, strs: &mut BTreeSet<u32>) {
        let Some(t) = self.record(s, data, id) else {
            return;
        };
        let sec = self.type_section(data);
        match t.kind {
            Kind::Struct | Kind::Union if named || t.name_off == 0 => {
                for i in 0..t.vlen as usize {
                    let o = t.extra_off + 12 * i;
                    let (Ok(name), Ok(ty)) = (sec.u32(o), sec.u32(o + 4)) else {
                        break;
                    };
                    if name == 0 {
                        ids.insert(ty);
                    } else if !matches!(s.known_str(self.str_section(data), name), Some((_, true))) {
                        strs.insert(name);
                    }
                }
            }
            k if k.is_alias() => _ = ids.insert(t.size_or_type),
            Kind::Array => {
                if let Ok(elem) = sec.u32(t.extra_off) {
                    ids.insert(elem);
                }
            }
            _ => {}
        }
    }

    /// Read the strings at `offs` (more of one already read in part).
    fn read_strs(&self, s: &mut Sparse, data: &mut [u8], offs: &BTreeSet<u32>) -> Read {
        let regions = self.str_regions(s, data, offs);
        let got = (self.mem)(&regions.iter().map(|&(o, n)| (self.at(self.strs.0 + o as u64), n)).collect::<Vec<_>>());
        self.store_strs(s, data, &regions, got)
    }

    /// What to read of the strings at `offs` (string-section offsets, lengths).
    fn str_regions(&self, s: &Sparse, data: &[u8], offs: &BTreeSet<u32>) -> Vec<(u32, usize)> {
        let sec_len = self.strs.1;
        let mut regions = Vec::new();
        for &off in offs.iter().filter(|&&o| (o as u64) < sec_len) {
            let want = match s.known_str(self.str_section(data), off) {
                Some((_, true)) => continue,
                // Cut by the end of a span read for another string.
                Some((cut, _)) if cut.len() < STR_READ => STR_READ,
                Some(_) => MAX_NAME,
                None => STR_READ,
            };
            let n = (want as u64).min(sec_len - off as u64) as usize;
            regions.push((off, n));
        }
        regions
    }

    /// Keep the strings of `regions` read as `got`.
    fn store_strs(&self, s: &mut Sparse, data: &mut [u8], regions: &[(u32, usize)], got: Vec<Result<Vec<u8>, KSpaceError>>) -> Read {
        for (&(off, n), bytes) in regions.iter().zip(got) {
            put(data, self.strs.0 + off as u64, n, bytes)?;
            s.add_str(off, off + n as u32);
        }
        Ok(())
    }

    /// Where the name at `off` sorts against `target` (`None`: not read far enough).
    fn order(&self, s: &Sparse, data: &[u8], off: u32, target: &[u8]) -> Option<Ordering> {
        let (name, whole) = s.known_str(self.str_section(data), off)?;
        let n = name.len().min(target.len());
        match name[..n].cmp(&target[..n]) {
            Ordering::Equal if whole => Some(name.len().cmp(&target.len())),
            Ordering::Equal if name.len() > target.len() => Some(Ordering::Greater),
            Ordering::Equal => None,
            o => Some(o),
        }
    }

    /// Find every id of each of `names` (kept in `s.named`); the structs found.
    fn search(&self, s: &mut Sparse, data: &mut [u8], names: &BTreeSet<Vec<u8>>) -> Result<Vec<TypeId>, String> {
        if s.pivots.is_empty() {
            self.pivots(s, data)?;
        }
        let names: Vec<&Vec<u8>> = names.iter().filter(|n| !s.named.contains_key(*n)).collect();
        // The span between the pivots around each name.
        let mut brackets = Vec::new();
        for name in &names {
            let below = s.pivots.iter().rposition(|p| self.order(s, data, p.2, name) == Some(Ordering::Less));
            let above = s.pivots.iter().position(|p| self.order(s, data, p.2, name) == Some(Ordering::Greater));
            let first = below.unwrap_or(0);
            let (from_id, from) = (s.pivots[first].0, s.pivots[first].1);
            let (to_id, to) = match above {
                Some(a) => (s.pivots[a].0, self.offset_of(s.pivots[a].1)?),
                None => (s.index.nr, self.types.0 + self.types.1),
            };
            if to_id < from_id {
                return Err(format!("BTF names around {:?} do not ascend: not sorted", String::from_utf8_lossy(name)));
            }
            brackets.push((from_id, self.offset_of(from)?, to_id, to));
        }
        let mut spans: Vec<(TypeId, u64, TypeId, u64)> = brackets.clone();
        spans.sort_unstable();
        spans.dedup();
        spans.retain(|&(id, _, to_id, _)| (id..to_id).any(|i| !s.records.contains_key(&i)));
        let regions: Vec<(u64, usize)> = spans
            .iter()
            .map(|&(_, from, _, to)| {
                let n =
                    to.checked_sub(from).filter(|&n| n <= MAX_SPAN).ok_or_else(|| format!("BTF span {from:#x}..{to:#x} between pivots"))?;
                Ok((from, n as usize))
            })
            .collect::<Result<_, String>>()?;
        self.read(data, &regions)?;
        // Walk each span from its first record: every id in it is known.
        for &(mut id, from, to_id, to) in &spans {
            let mut off = from;
            while off < to && id < to_id {
                let t = parse_record(self.type_section(data), (off - self.types.0) as usize, id).map_err(|e| e.to_string())?;
                s.records.insert(id, (off - self.types.0) as u32);
                off = self.types.0 + (t.extra_off + t.kind.extra_len(t.vlen).unwrap_or(0)) as u64;
                id += 1;
            }
            if off != to || id != to_id {
                return Err(format!("BTF records from {from:#x} end at {off:#x} (id {id}), not at the next pivot {to:#x} (id {to_id})"));
            }
        }
        // Narrow each span down to the name's run.
        let name_of = |s: &Sparse, data: &[u8], id: TypeId| Some(self.record(s, data, id)?.name_off);
        let mut open: Vec<(&Vec<u8>, TypeId, TypeId)> = names.iter().zip(&brackets).map(|(n, b)| (*n, b.0, b.2)).collect();
        let mut found = Vec::new();
        for _ in 0..MAX_ROUNDS {
            if open.is_empty() {
                break;
            }
            // Probes: every id of a short range, else NARROW spread over it.
            let probes: Vec<Vec<TypeId>> = open
                .iter()
                .map(|&(_, lo, hi)| {
                    let n = (hi - lo) as usize;
                    if n <= NARROW {
                        (lo..hi).collect()
                    } else {
                        (0..NARROW).map(|i| lo + (i * (n - 1) / (NARROW - 1)) as TypeId).collect()
                    }
                })
                .collect();
            let offs: BTreeSet<u32> = probes.iter().flatten().filter_map(|&id| name_of(s, data, id)).collect();
            self.read_strs(s, data, &offs)?;
            let mut still = Vec::new();
            for (&(name, lo, hi), probe) in open.iter().zip(&probes) {
                let ord = |id: TypeId| name_of(s, data, id).and_then(|o| self.order(s, data, o, name));
                if probe.len() == (hi - lo) as usize {
                    if probe.iter().any(|&id| ord(id).is_none()) {
                        still.push((name, lo, hi));
                        continue;
                    }
                    let ids: Vec<TypeId> = probe.iter().copied().filter(|&id| ord(id) == Some(Ordering::Equal)).collect();
                    let structs = ids.iter().copied().filter(|&id| self.kind_of(s, data, id) == Some(Kind::Struct)).collect();
                    found.extend(&ids);
                    s.named.insert(name.clone(), crate::introspect::btf::sparse::Named { ids, structs });
                    continue;
                }
                let below = probe.iter().rposition(|&id| ord(id) == Some(Ordering::Less));
                let above = probe.iter().position(|&id| ord(id) == Some(Ordering::Greater));
                let lo2 = below.map_or(lo, |i| probe[i]);
                let hi2 = above.map_or(hi, |i| probe[i]);
                still.push((name, lo2, hi2.max(lo2)));
            }
            open = still;
        }
        if !open.is_empty() {
            return Err("the name search did not converge".into());
        }
        Ok(found.into_iter().filter(|&id| self.kind_of(s, data, id).is_some_and(|k| matches!(k, Kind::Struct | Kind::Union))).collect())
    }

    fn kind_of(&self, s: &Sparse, data: &[u8], id: TypeId) -> Option<Kind> {
        Some(self.record(s, data, id)?.kind)
    }

    /// The head of record `id`, if it was kept.
    fn record(&self, s: &Sparse, data: &[u8], id: TypeId) -> Option<Type> {
        parse_record(self.type_section(data), *s.records.get(&id)? as usize, id).ok()
    }

    /// The search's first probes (see the module doc), checked to ascend by name.
    fn pivots(&self, s: &mut Sparse, data: &mut [u8]) -> Read {
        let (lo, hi) = (s.index.named as u64, s.index.nr as u64 - 1);
        let mut ids: Vec<TypeId> = (0..PIVOTS).map(|i| (lo + (hi - lo) * i / (PIVOTS - 1)) as TypeId).collect();
        ids.dedup();
        let got = (self.mem)(&ids.iter().map(|&id| (KVirt(self.pointer(s, id)), 8)).collect::<Vec<_>>());
        let mut addrs = Vec::new();
        for (bytes, &id) in got.into_iter().zip(&ids) {
            let b = bytes.map_err(|e| format!("reading the pointer to BTF type {id}: {e}"))?;
            let a = Bytes::new(&b).u64(0).map_err(|_| "short pointer read")?;
            let off = self.offset_of(a)?;
            if addrs.last().is_some_and(|&(_, last)| off <= last) {
                return Err(format!("the kernel's pointers to BTF records do not ascend at type {id}"));
            }
            addrs.push((a, off));
        }
        let got = (self.mem)(&addrs.iter().map(|&(a, _)| (KVirt(a), 12)).collect::<Vec<_>>());
        let mut pivots = Vec::new();
        for ((bytes, &id), &(a, _)) in got.into_iter().zip(&ids).zip(&addrs) {
            let b = bytes.map_err(|e| format!("reading BTF type {id} at {a:#x}: {e}"))?;
            let name = Bytes::new(&b).u32(0).map_err(|_| "short record read")?;
            if name == 0 {
                return Err(format!("BTF type {id}, past the first named type, has no name"));
            }
            pivots.push((id, a, name));
        }
        self.read_strs(s, data, &pivots.iter().map(|p| p.2).collect())?;
        let strs = self.str_section(data);
        for w in pivots.windows(2) {
            let (a, b) = (s.known_str(strs, w[0].2), s.known_str(strs, w[1].2));
            if let (Some((a, true)), Some((b, true))) = (a, b) {
                if a > b {
                    return Err(format!("BTF names do not ascend from type {} to {}: not sorted", w[0].0, w[1].0));
                }
            }
        }
        s.pivots = pivots;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::introspect::btf::KernelIndex;
    use crate::introspect::layout::build::{build_core, private_structs, Field, TypeError, Types};
    use crate::introspect::pidns::PidLayout;

    const START: u64 = 0xffff_ffff_8300_0000;
    const TYPES: u64 = 0xffff_8880_0400_0000;

    /// A BTF blob sorted as 7.x sorts it (anonymous types first, then named ones by name) and
    /// the kernel's pointer to each record (`types[]`, id 0 pointing elsewhere).
    fn sorted_blob() -> (Vec<u8>, Vec<u64>) {
        let mut strs = vec![0u8];
        let mut s = |n: &str| {
            let off = strs.len() as u32;
            strs.extend_from_slice(n.as_bytes());
            strs.push(0);
            off
        };
        let (pid, tgid, next, prev, tasks, comm, state, a) =
            (s("pid"), s("tgid"), s("next"), s("prev"), s("tasks"), s("comm"), s("state"), s("a"));
        let (char_, int, list_head, pid_t, task_struct, zzz) =
            (s("char"), s("int"), s("list_head"), s("pid_t"), s("task_struct"), s("zzz"));
        let info = |kind: u32, vlen: u32| (kind << 24) | vlen;
        let records: Vec<Vec<u32>> = vec![
            vec![0, info(2, 0), 6],                                                                 // 1: list_head *
            vec![0, info(3, 0), 0, 4, 5, 16],                                                       // 2: char[16]
            vec![0, info(4, 2), 8, pid, 5, 0, tgid, 5, 32],                                         // 3: struct { int pid; int tgid; }
            vec![char_, info(1, 0), 1, 8],                                                          // 4: char
            vec![int, info(1, 0), 4, 32],                                                           // 5: int
            vec![list_head, info(4, 2), 16, next, 1, 0, prev, 1, 64],                               // 6: struct list_head
            vec![pid_t, info(8, 0), 5],                                                             // 7: pid_t
            vec![task_struct, info(4, 4), 64, tasks, 6, 0, 0, 3, 128, comm, 2, 192, state, 7, 320], // 8
            vec![zzz, info(4, 1), 4, a, 5, 0],                                                      // 9: struct zzz
        ];
        let mut types = Vec::new();
        let mut ptrs = vec![0xffff_ffff_8400_0000u64];
        for r in &records {
            ptrs.push(START + 24 + types.len() as u64);
            types.extend(r.iter().flat_map(|w| w.to_le_bytes()));
        }
        let mut blob = vec![0x9f, 0xeb, 1, 0];
        for w in [24u32, 0, types.len() as u32, types.len() as u32, strs.len() as u32] {
            blob.extend_from_slice(&w.to_le_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(&strs);
        (blob, ptrs)
    }

    /// Memory holding the blob at START and the pointers at TYPES; counts the batches.
    fn memory<'a>(
        blob: &'a [u8],
        ptrs: &'a [u64],
        batches: &'a std::cell::Cell<usize>,
    ) -> impl Fn(&[(KVirt, usize)]) -> Vec<Result<Vec<u8>, KSpaceError>> + 'a {
        let table: Vec<u8> = ptrs.iter().flat_map(|p| p.to_le_bytes()).collect();
        move |regions: &[(KVirt, usize)]| {
            batches.set(batches.get() + 1);
            regions
                .iter()
                .map(|&(a, n)| {
                    let from = |base: u64, bytes: &[u8]| {
                        let o = usize::try_from(a.0.checked_sub(base)?).ok()?;
                        bytes.get(o..o.checked_add(n)?).map(<[u8]>::to_vec)
                    };
                    from(START, blob).or_else(|| from(TYPES, &table)).ok_or(KSpaceError::Unmapped { addr: a })
                })
                .collect()
        }
    }

    fn indexed(blob: &[u8], nr: u32, named: u32) -> BtfRead {
        let mut got = BtfRead::default();
        got.take_header(blob.len(), &blob[..24]).unwrap();
        got.use_index(KernelIndex { types: TYPES, nr, named });
        got
    }

    type Answer = (Option<Field>, Option<Field>, Option<Field>, Option<Field>, Option<Field>, u64, u64);

    fn lookups(b: &Btf) -> Result<Answer, TypeError> {
        let m = |s: &str, f: &str| b.member(s, &["tasks"], f);
        Ok((
            m("task_struct", "tasks")?,
            m("task_struct", "tgid")?,
            m("task_struct", "comm")?,
            m("task_struct", "state")?,
            m("task_struct", "nope")?,
            b.struct_size("list_head", &[])?,
            b.struct_size("zzz", &["a"])?,
        ))
    }

    /// Records found through the index answer as the whole blob does (members through an
    /// anonymous struct, typedef and array sizes, a member that is not there), in a few batches.
    #[test]
    fn lookups_through_the_index_equal_the_whole_blobs() {
        let (blob, ptrs) = sorted_blob();
        let batches = std::cell::Cell::new(0);
        let mem = memory(&blob, &ptrs, &batches);
        let mut got = indexed(&blob, 10, 4);
        let (btf, found) = answer(&mut got, KVirt(START), &mem, &lookups).expect("the index is used");
        let whole = lookups(&Btf::parse(blob.clone()).unwrap()).unwrap();
        assert_eq!(found.unwrap(), whole);
        assert_eq!(whole.1, Some(Field { offset: 20, size: 4 }), "tgid in the anonymous struct at 16");
        assert_eq!((whole.2, whole.3), (Some(Field { offset: 24, size: 16 }), Some(Field { offset: 40, size: 4 })));
        assert!(btf.is_sparse() && got.sparse.is_some());
        assert!(batches.get() <= 12, "{} batches", batches.get());
        // A name that is not there: the blob decides (and says so too).
        let absent = |b: &Btf| b.struct_size("nothing", &[]);
        assert!(answer(&mut got, KVirt(START), &mem, &absent).is_none());
        assert!(Btf::parse(blob.clone()).unwrap().struct_size("nothing", &[]).is_err());
    }

    /// An index that misleads is dropped, whatever the lie: a pointer outside the type section,
    /// pointers that do not ascend, a record that does not end where the next begins, names
    /// that do not ascend.
    #[test]
    fn an_index_that_misleads_is_dropped() {
        let (blob, ptrs) = sorted_blob();
        let lies: Vec<(&str, Vec<u64>, Vec<u8>)> = vec![
            (
                "outside",
                {
                    let mut p = ptrs.clone();
                    p[8] = START - 64;
                    p
                },
                blob.clone(),
            ),
            (
                "descending",
                {
                    let mut p = ptrs.clone();
                    p.swap(5, 6);
                    p
                },
                blob.clone(),
            ),
            (
                "a record cut",
                {
                    let mut p = ptrs.clone();
                    p[3] += 4;
                    p
                },
                blob.clone(),
            ),
            ("unsorted", ptrs.clone(), {
                // task_struct's name offset given to char (type 4): names no longer ascend.
                let mut b = blob.clone();
                let (t8, t4) = ((ptrs[8] - START) as usize, (ptrs[4] - START) as usize);
                let name8: [u8; 4] = b[t8..t8 + 4].try_into().unwrap();
                b[t4..t4 + 4].copy_from_slice(&name8);
                b
            }),
        ];
        for (what, ptrs, blob) in lies {
            let batches = std::cell::Cell::new(0);
            let mem = memory(&blob, &ptrs, &batches);
            let mut got = indexed(&blob, 10, 4);
            assert!(answer(&mut got, KVirt(START), &mem, &lookups).is_none(), "{what}");
            assert!(got.sparse.is_none(), "{what}: dropped");
        }
    }

    /// Every structure a listing looks up is searched with the first (so that one search
    /// serves the layout and the pid index), and nothing else is.
    #[test]
    fn the_names_searched_together_are_every_name_a_listing_looks_up() {
        let mut blob = vec![0x9f, 0xeb, 1, 0];
        for w in [24u32, 0, 12, 12, 1] {
            blob.extend_from_slice(&w.to_le_bytes());
        }
        blob.resize(24 + 13, 0);
        let nothing = Arc::new(Sparse::new(KernelIndex { types: 0, nr: 2, named: 1 }));
        let btf = Btf::sparse(blob, nothing).unwrap();
        let _ = build_core(&btf);
        let _ = private_structs(&btf);
        let _ = PidLayout::from_btf_core(&btf);
        let asked: BTreeSet<Vec<u8>> = btf.take_wants().names;
        let together: BTreeSet<Vec<u8>> = SEARCHED_TOGETHER.iter().map(|n| n.as_bytes().to_vec()).collect();
        assert_eq!(asked, together);
    }
}
