//! Walking an XArray (the radix tree under every `struct idr`, such as the pid allocator
//! `init_pid_ns.idr`) from bytes read through a caller-supplied reader.
//!
//! ```text
//!   xarray.xa_head ──▶ (node | 2) ──▶ xa_node { shift, offset, count, parent, array, slots[N] }
//!                                        slots[i] ──▶ (node | 2)   when shift > 0
//!                                        slots[i] ──▶ entry        index = base + (i << shift)
//! ```
//!
//! Invariant: [`walk`] reads at most [`MAX_NODES`] nodes, one tree level per batch, and keeps
//! at most [`MAX_ENTRIES`] entries; every node must hold together before its slots are used: its
//! `parent` is the node it was reached from (null at the root), its `array` the XArray walked,
//! its `offset` the slot it was reached through, its `shift` the parent's minus the chunk's bits. The first node that does not ends
//! the walk, with the entries of the nodes before it and an error naming the node's address.

use emulator::bytes::Bytes;

use super::kspace::ReadMany;

/// Most nodes read (a machine with every pid of `PID_MAX_LIMIT` in use needs 66,000 with
/// 64-slot nodes; a guest a few).
pub const MAX_NODES: usize = 1 << 17;
/// Most entries kept (`PID_MAX_LIMIT` on 64-bit).
pub const MAX_ENTRIES: usize = 1 << 22;
/// Largest `XA_CHUNK_SIZE` accepted (Linux: 16 or 64).
pub const MAX_CHUNK: u64 = 256;
/// The lowest kernel address (x86-64).
const KERNEL_HALF: u64 = 0xff00_0000_0000_0000;

/// `struct xa_node`: where its fields sit and how many slots it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct NodeLayout {
    pub shift: u64,
    pub offset: u64,
    pub parent: u64,
    pub array: u64,
    pub slots: u64,
    /// `XA_CHUNK_SIZE`: 64, or 16 with `CONFIG_BASE_SMALL`.
    pub chunk: u64,
}

impl NodeLayout {
    /// `struct xa_node` as every kernel from 4.20 to 7.x lays it out (`unsigned char shift,
    /// offset, count, nr_values; parent; array; a list_head/rcu_head union; slots[]`).
    pub const fn linux(chunk: u64) -> NodeLayout {
        NodeLayout { shift: 0, offset: 1, parent: 8, array: 16, slots: 40, chunk }
    }

    /// Bytes read per node: the header and every slot.
    pub fn span(&self) -> u64 {
        self.slots.saturating_add(self.chunk.saturating_mul(8))
    }

    fn chunk_bits(&self) -> u64 {
        u64::from(self.chunk.trailing_zeros())
    }

    /// Fields inside the span, a power-of-two chunk no larger than [`MAX_CHUNK`].
    pub fn check(&self) -> Result<(), String> {
        if !self.chunk.is_power_of_two() || self.chunk < 2 || self.chunk > MAX_CHUNK {
            return Err(format!("XA_CHUNK_SIZE {} is not a power of two in 2..={MAX_CHUNK}", self.chunk));
        }
        for (what, off, len) in [("shift", self.shift, 1), ("offset", self.offset, 1), ("parent", self.parent, 8), ("array", self.array, 8)] {
            if off.saturating_add(len) > self.slots {
                return Err(format!("xa_node.{what} at {off} is not before slots at {}", self.slots));
            }
        }
        if self.slots > 4096 {
            return Err(format!("xa_node.slots at {} is implausible", self.slots));
        }
        Ok(())
    }
}

/// A node that does not hold together, or one that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XaError {
    #[error("reading xa_node at {node:#x}: {reason}")]
    Read { node: u64, reason: String },
    #[error("xa_node at {node:#x}: {reason}")]
    Bad { node: u64, reason: String },
    #[error("more than {MAX_NODES} xa_nodes or {MAX_ENTRIES} entries")]
    TooMany,
}

/// The entries found (index, entry), in index order, and why the walk stopped early.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walked {
    pub entries: Vec<(u64, u64)>,
    pub nodes: usize,
    /// Internal entries that are neither nodes nor null (retry, zero, sibling) and value
    /// entries: skipped.
    pub skipped: usize,
    pub error: Option<XaError>,
}

fn is_node(entry: u64) -> bool {
    entry & 3 == 2 && entry > 4096
}

/// Walks the XArray at `array` whose `xa_head` holds `head`.
pub fn walk(l: &NodeLayout, array: u64, head: u64, read: &mut ReadMany<'_>) -> Walked {
    let mut out = Walked::default();
    if let Err(e) = l.check() {
        out.error = Some(XaError::Bad { node: head, reason: e });
        return out;
    }
    if head == 0 {
        return out;
    }
    if !is_node(head) {
        push_entry(&mut out, 0, head);
        return out;
    }
    if let Err(e) = walk_nodes(l, array, head - 2, &mut out, read) {
        out.error = Some(e);
    }
    out.entries.sort_unstable();
    out
}

fn push_entry(out: &mut Walked, index: u64, entry: u64) {
    if entry == 0 {
        return;
    }
    if entry & 3 != 0 {
        out.skipped += 1;
    } else {
        out.entries.push((index, entry));
    }
}

/// One node to read: its address, the node it hangs from, the slot it fills there, the shift
/// it must have (`None` at the root), and the first index it covers.
struct Pending {
    node: u64,
    parent: u64,
    offset: u64,
    shift: Option<u64>,
    base: u64,
}

fn walk_nodes(l: &NodeLayout, array: u64, root: u64, out: &mut Walked, read: &mut ReadMany<'_>) -> Result<(), XaError> {
    let bits = l.chunk_bits();
    let mut level = vec![Pending { node: root, parent: 0, offset: 0, shift: None, base: 0 }];
    let mut seen = std::collections::HashSet::new();
    while !level.is_empty() {
        if out.nodes.saturating_add(level.len()) > MAX_NODES {
            return Err(XaError::TooMany);
        }
        let regions: Vec<(u64, usize)> = level.iter().map(|p| (p.node, l.span() as usize)).collect();
        let got = read(&regions);
        let mut next = Vec::new();
        for (i, p) in level.iter().enumerate() {
            let bad = |reason: String| XaError::Bad { node: p.node, reason };
            if p.node < KERNEL_HALF || !seen.insert(p.node) {
                return Err(bad("not a kernel address, or reached twice".into()));
            }
            let bytes = match got.get(i) {
                Some(Ok(b)) => b,
                Some(Err(reason)) => return Err(XaError::Read { node: p.node, reason: reason.clone() }),
                None => return Err(XaError::Read { node: p.node, reason: "no answer".into() }),
            };
            out.nodes += 1;
            let b = Bytes::new(bytes);
            let short = |_| bad(format!("header outside the {} bytes read", bytes.len()));
            let shift = u64::from(b.u8(l.shift as usize).map_err(short)?);
            let offset = u64::from(b.u8(l.offset as usize).map_err(short)?);
            let (parent, arr) = (b.u64(l.parent as usize).map_err(short)?, b.u64(l.array as usize).map_err(short)?);
            if arr != array {
                return Err(bad(format!("array is {arr:#x}, not the XArray walked ({array:#x})")));
            }
            if parent != p.parent {
                return Err(bad(format!("parent is {parent:#x}, not the node it hangs from ({:#x})", p.parent)));
            }
            match p.shift {
                Some(want) if shift != want => return Err(bad(format!("shift {shift}, expected {want}"))),
                None if shift % bits != 0 || shift >= 64 => return Err(bad(format!("root shift {shift} is no multiple of {bits} below 64"))),
                _ => {}
            }
            if p.shift.is_some() && offset != p.offset {
                return Err(bad(format!("offset {offset}, but it fills slot {}", p.offset)));
            }
            for slot in 0..l.chunk {
                let at = l.slots.saturating_add(slot * 8) as usize;
                let entry = b.u64(at).map_err(|_| bad(format!("slot {slot} outside the {} bytes read", bytes.len())))?;
                let index = p.base | (slot << shift);
                if shift > 0 && is_node(entry) {
                    next.push(Pending { node: entry - 2, parent: p.node, offset: slot, shift: Some(shift - bits), base: index });
                } else if shift == 0 && is_node(entry) {
                    // A node pointer below the last level: not a valid tree.
                    return Err(bad(format!("slot {slot} holds a node at the last level")));
                } else {
                    if out.entries.len() >= MAX_ENTRIES {
                        return Err(XaError::TooMany);
                    }
                    push_entry(out, index, entry);
                }
            }
        }
        level = next;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const ARRAY: u64 = 0xffff_ffff_8300_0008;

    fn node(mem: &mut BTreeMap<u64, Vec<u8>>, l: &NodeLayout, at: u64, shift: u8, offset: u8, parent: u64, slots: &[(u64, u64)]) {
        let mut b = vec![0u8; l.span() as usize];
        b[0] = shift;
        b[1] = offset;
        b[8..16].copy_from_slice(&parent.to_le_bytes());
        b[16..24].copy_from_slice(&ARRAY.to_le_bytes());
        for &(i, v) in slots {
            let o = (40 + i * 8) as usize;
            b[o..o + 8].copy_from_slice(&v.to_le_bytes());
        }
        mem.insert(at, b);
    }

    fn run(l: &NodeLayout, head: u64, mem: &BTreeMap<u64, Vec<u8>>) -> Walked {
        walk(l, ARRAY, head, &mut |regions: &[(u64, usize)]| {
            regions.iter().map(|&(a, len)| mem.get(&a).map(|b| b[..len.min(b.len())].to_vec()).ok_or_else(|| "unmapped".to_string())).collect()
        })
    }

    #[test]
    fn two_levels_of_16_slots() {
        let l = NodeLayout::linux(16);
        let (root, leaf) = (0xffff_8880_0100_0000u64, 0xffff_8880_0100_1000u64);
        let mut mem = BTreeMap::new();
        node(&mut mem, &l, root, 4, 0, 0, &[(0, 0xffff_8880_0200_0000), (2, leaf | 2), (3, 0x402)]);
        node(&mut mem, &l, leaf, 0, 2, root, &[(1, 0xffff_8880_0200_0040), (15, 0xffff_8880_0200_0080), (4, 0x21)]);
        let w = run(&l, root | 2, &mem);
        assert_eq!(w.error, None);
        assert_eq!(w.entries, vec![(0, 0xffff_8880_0200_0000), (33, 0xffff_8880_0200_0040), (47, 0xffff_8880_0200_0080)]);
        // The retry entry (0x402) and the value entry (0x21) are skipped.
        assert_eq!((w.nodes, w.skipped), (2, 2));
    }

    #[test]
    fn a_node_that_does_not_hold_together_stops_the_walk() {
        let l = NodeLayout::linux(64);
        let (root, leaf) = (0xffff_8880_0100_0000u64, 0xffff_8880_0100_1000u64);
        let mut mem = BTreeMap::new();
        node(&mut mem, &l, root, 6, 0, 0, &[(1, leaf | 2)]);
        node(&mut mem, &l, leaf, 0, 1, 0xdead, &[]);
        assert!(run(&l, root | 2, &mem).error.unwrap().to_string().contains("parent"));
        node(&mut mem, &l, leaf, 0, 5, root, &[]);
        assert!(run(&l, root | 2, &mem).error.unwrap().to_string().contains("offset 5"));
        // A loop back to the root.
        node(&mut mem, &l, root, 6, 0, 0, &[(1, root | 2)]);
        assert!(run(&l, root | 2, &mem).error.is_some());
        node(&mut mem, &l, root, 5, 0, 0, &[]);
        assert!(run(&l, root | 2, &mem).error.unwrap().to_string().contains("root shift 5"));
        mem.remove(&root);
        assert!(matches!(run(&l, root | 2, &mem).error, Some(XaError::Read { .. })));
        assert!(NodeLayout::linux(48).check().is_err());
    }
}
