//! The `inferred` method: find the ring and learn its two variable sizes from memory alone.
//!
//! 1. The ring: `prb` (a pointer) or `printk_rb_static` from kallsyms when it has data symbols;
//!    otherwise a search of the image's `.data` (from `__start_init_task`, or its estimate, in
//!    1 MiB steps up to [`SCAN_LIMIT`]) for the statically initialized `printk_rb_static`:
//!    `count_bits` in 5..=22, `descs` and `infos` kernel pointers, `tail_id..=head_id` within one
//!    lap, then at 40 or 48 bytes (before and after `last_finalized_seq`) a `prb_data_ring`
//!    whose `size_bits` is `count_bits + 5` (`PRB_AVGBITS`, for the static and the dynamic
//!    ring alike) and whose data pointer is a kernel address. `prb` itself is looked for among
//!    the pointers within [`PRB_WINDOW`] of it: when one leads to another ring that validates
//!    (a buffer set up with `log_buf_len=`), that ring is the one in use.
//! 2. Its head descriptor must carry `head_id` in its state word.
//! 3. `sizeof(struct printk_info)`: the one size (8 to 256, multiple of 8) at which every
//!    sampled descriptor's info holds a `seq` congruent to its slot (`prb_reserve` keeps
//!    `seq % count == index`).
//!
//! Invariant: every candidate read is bounded ([`SCAN_LIMIT`], [`PRB_WINDOW`], at most
//! [`MAX_TARGETS`] pointers followed and [`MAX_CANDIDATES`] structures checked per step,
//! [`SAMPLES`] descriptors sampled, reads longer than `kspace::MAX_READ` refused), and a ring is reported
//! only when the structure and the sizes are each the only ones that fit.

use super::layout::PrbLayout;
use super::ring::{RingHeader, MAX_COUNT_BITS};
use crate::introspect::addr::KVirt;
use emulator::bytes::Bytes;
use crate::introspect::kernel::Kernel;

/// How far past the start of `.data` the ring is searched for.
pub const SCAN_LIMIT: u64 = 64 << 20;
const CHUNK: u64 = 1 << 20;
/// Bytes either side of `printk_rb_static` searched for `prb`.
pub const PRB_WINDOW: u64 = 4096;
/// Most pointers near `printk_rb_static` followed to another ring.
pub const MAX_TARGETS: usize = 256;
/// Most structures in one 1 MiB step of `.data` that may look like a ring before the search
/// gives up (each costs a read to check its head descriptor).
pub const MAX_CANDIDATES: usize = 64;
/// Descriptors whose info is checked to learn `sizeof(struct printk_info)`.
pub const SAMPLES: usize = 64;
const MAX_INFO: u64 = 256;
const PRB_AVGBITS: u32 = 5;

/// A ring found in memory.
#[derive(Debug, Clone)]
pub struct Found {
    pub layout: PrbLayout,
    pub ring: KVirt,
    pub how: String,
}

fn kernel_ptr(v: u64) -> bool {
    v >= 0xff00_0000_0000_0000 && v.is_multiple_of(8)
}

/// Whether `buf[o..]` looks like a `printk_ringbuffer` with `text_data_ring` at `tr`; its header
/// if so.
pub fn candidate(buf: &[u8], o: usize, tr: u64) -> Option<RingHeader> {
    let b = Bytes::new(buf);
    let count_bits = b.u32(o).ok()?;
    if !(PRB_AVGBITS..=MAX_COUNT_BITS).contains(&count_bits) || b.u32(o + 4).ok()? != 0 {
        return None;
    }
    let t = o + tr as usize;
    if b.u32(t).ok()? != count_bits + PRB_AVGBITS || b.u32(t + 4).ok()? != 0 {
        return None;
    }
    let h = RingHeader::parse(&PrbLayout::linux(tr, 88), b.slice(o, tr as usize + 40).ok()?).ok()?;
    (kernel_ptr(h.descs) && kernel_ptr(h.infos) && kernel_ptr(h.data) && h.descs != h.infos).then_some(h)
}

/// Find the ring.
pub fn find(kernel: &Kernel<'_>) -> Result<Found, String> {
    let syms = kernel.symbols(&["prb", "printk_rb_static"]).map_err(|e| e.to_string())?;
    let space = &kernel.space;
    if let Some(prb) = syms[0] {
        let ring = KVirt(space.read_u64(prb).map_err(|e| format!("reading prb: {e}"))?);
        return at(kernel, ring, format!("kallsyms prb {prb} → {ring}"));
    }
    if let Some(ring) = syms[1] {
        return at(kernel, ring, format!("kallsyms printk_rb_static {ring}"));
    }
    scan(kernel)
}

/// Find the ring by structure alone, without symbols (step 1's search of `.data`).
pub fn scan(kernel: &Kernel<'_>) -> Result<Found, String> {
    let space = &kernel.space;
    let start = kernel.info.data_start.ok_or("the start of .data is unknown")?;
    let mut off = 0;
    while off < SCAN_LIMIT {
        let base = start.wrapping_add(off);
        let mut buf = vec![0u8; CHUNK as usize + 128];
        if let Err(e) = space.read(base, &mut buf) {
            return Err(format!("no printk_ringbuffer in {:#x} bytes of .data from {start} (stopped at {e})", off));
        }
        let mut hits = Vec::new();
        for o in (0..CHUNK as usize).step_by(8) {
            for tr in [40u64, 48] {
                if let Some(h) = candidate(&buf, o, tr) {
                    hits.push((base.wrapping_add(o as u64), tr, h));
                }
            }
            if hits.len() > MAX_CANDIDATES {
                return Err(format!("more than {MAX_CANDIDATES} structures in 1 MiB of .data at {base} look like a printk_ringbuffer"));
            }
        }
        let mut valid = Vec::new();
        for (addr, tr, h) in hits {
            if head_holds_its_id(kernel, &PrbLayout::linux(tr, 88), &h) {
                valid.push((addr, tr));
            }
        }
        // The first is `printk_rb_static` (initialized `.data` comes before `.bss`); a second can
        // only be `printk_rb_dynamic`, which `prb` must then point to.
        let (addr, tr) = match valid.as_slice() {
            [] => {
                off += CHUNK;
                continue;
            }
            [first] | [first, _] => *first,
            many => return Err(format!("{} structures in .data validate as printk_ringbuffer: {:?}", many.len(), many.iter().map(|(a, _)| *a).collect::<Vec<_>>())),
        };
        let ring = follow_prb(kernel, addr, tr).unwrap_or(addr);
        if valid.len() == 2 && ring == addr {
            return Err(format!("two structures in .data validate as printk_ringbuffer ({addr}, {}) and no prb points to the second", valid[1].0));
        }
        let how = if ring == addr { format!("printk_rb_static found in .data at {addr}") } else { format!("printk_rb_static at {addr}, prb → {ring}") };
        return at(kernel, ring, how);
    }
    Err(format!("no printk_ringbuffer in the first {SCAN_LIMIT:#x} bytes of .data from {start}"))
}

/// The ring `prb` points to, when a pointer near `printk_rb_static` leads to another ring.
fn follow_prb(kernel: &Kernel<'_>, stat: KVirt, tr: u64) -> Option<KVirt> {
    let from = stat.0.saturating_sub(PRB_WINDOW);
    let mut buf = vec![0u8; 2 * PRB_WINDOW as usize];
    kernel.space.read(KVirt(from), &mut buf).ok()?;
    let b = Bytes::new(&buf);
    let mut targets: Vec<u64> = (0..buf.len()).step_by(8).filter_map(|o| b.u64(o).ok()).filter(|&v| kernel_ptr(v) && v != stat.0).collect();
    targets.sort_unstable();
    targets.dedup();
    targets.truncate(MAX_TARGETS);
    let l = PrbLayout::linux(tr, 88);
    let regions: Vec<(KVirt, usize)> = targets.iter().map(|&t| (KVirt(t), l.ring_size as usize)).collect();
    let others: Vec<KVirt> = kernel
        .space
        .read_many(&regions)
        .into_iter()
        .zip(&targets)
        .filter_map(|(r, &t)| {
            let bytes = r.ok()?;
            let h = candidate(&bytes, 0, tr)?;
            head_holds_its_id(kernel, &l, &h).then_some(KVirt(t))
        })
        .collect();
    match others.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

fn head_holds_its_id(kernel: &Kernel<'_>, l: &PrbLayout, h: &RingHeader) -> bool {
    let index = h.head_id & (h.count() - 1);
    let at = KVirt(h.descs).wrapping_add(index * l.desc_size + l.state_var);
    kernel.space.read_u64(at).is_ok_and(|sv| sv & ((1 << 62) - 1) == h.head_id)
}

/// Validate the ring at `ring` and learn its layout.
fn at(kernel: &Kernel<'_>, ring: KVirt, how: String) -> Result<Found, String> {
    let mut buf = vec![0u8; 96];
    kernel.space.read(ring, &mut buf).map_err(|e| format!("reading the ring at {ring}: {e}"))?;
    let trs: Vec<(u64, RingHeader)> = [40u64, 48].into_iter().filter_map(|tr| Some((tr, candidate(&buf, 0, tr)?))).collect();
    let (tr, h) = match trs.as_slice() {
        [one] => *one,
        [] => return Err(format!("the structure at {ring} ({how}) is not a printk_ringbuffer")),
        _ => return Err(format!("the ring at {ring} fits both prb_desc_ring sizes")),
    };
    let l = PrbLayout::linux(tr, 88);
    if !head_holds_its_id(kernel, &l, &h) {
        return Err(format!("the ring at {ring}: descriptor of head_id {:#x} does not hold it", h.head_id));
    }
    // Reads through `read_many`, which refuses an over-long region before allocating it.
    let read = |at: u64, len: u64, what: &str| -> Result<Vec<u8>, String> {
        kernel.space.read_many(&[(KVirt(at), len as usize)]).pop().unwrap_or_else(|| Ok(Vec::new())).map_err(|e| format!("reading {what}: {e}"))
    };
    let descs = read(h.descs, h.count() * l.desc_size, "descriptors")?;
    let samples = sample(&l, &h, &descs);
    let last = samples.iter().copied().max().unwrap_or(0);
    let infos = read(h.infos, (last + 1) * MAX_INFO, "printk_info")?;
    let info_size = info_size(&h, &samples, &infos)?;
    let layout = PrbLayout::linux(tr, info_size);
    layout.check()?;
    Ok(Found { layout, ring, how: format!("{how}; prb_desc_ring {tr} bytes, printk_info {info_size} bytes") })
}

/// The lowest [`SAMPLES`] slots holding a committed or finalized descriptor of `tail_id..=head_id`
/// (the lowest, so that the infos read to check them stay short: records fill the slots from 0).
pub fn sample(l: &PrbLayout, h: &RingHeader, descs: &[u8]) -> Vec<u64> {
    const ID_MASK: u64 = (1 << 62) - 1;
    let b = Bytes::new(descs);
    let span = h.head_id.wrapping_sub(h.tail_id) & ID_MASK;
    (0..h.count())
        .filter(|&index| {
            b.u64((index * l.desc_size + l.state_var) as usize).is_ok_and(|sv| {
                let id = sv & ID_MASK;
                id & (h.count() - 1) == index && id.wrapping_sub(h.tail_id) & ID_MASK <= span && matches!(sv >> 62, 1 | 2)
            })
        })
        .take(SAMPLES)
        .collect()
}

/// The one `sizeof(struct printk_info)` at which every sampled slot's `seq` is congruent to the
/// slot; `infos` starts at the array and holds at least `(max slot + 1) * 256` bytes.
pub fn info_size(h: &RingHeader, samples: &[u64], infos: &[u8]) -> Result<u64, String> {
    if samples.len() < 2 {
        return Err(format!("only {} records in the ring: too few to learn sizeof(printk_info)", samples.len()));
    }
    let b = Bytes::new(infos);
    let fits: Vec<u64> = (3..=MAX_INFO / 8)
        .map(|w| w * 8)
        .filter(|&size| samples.iter().all(|&i| b.u64((i * size) as usize).is_ok_and(|seq| seq & (h.count() - 1) == i)))
        .collect();
    match fits.as_slice() {
        [one] => Ok(*one),
        [] => Err("no sizeof(printk_info) from 24 to 256 puts each record's seq in its slot".into()),
        many => Err(format!("sizeof(printk_info) is ambiguous: {many:?} all fit")),
    }
}
