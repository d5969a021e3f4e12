//! Walking a red-black tree (`struct rb_root`: the CFS and deadline run queues, the module
//! address tree `mod_tree`) from bytes read through a caller-supplied reader.
//!
//! ```text
//!   rb_root.rb_node ──▶ rb_node { __rb_parent_color, rb_right, rb_left }
//!                        └ the structure holding it = node - offsetof(struct, node)
//! ```
//!
//! Invariant: [`walk`] reads at most [`MAX_NODES`] nodes and [`MAX_DEPTH`] levels, one level
//! per batch; every node's parent (`__rb_parent_color` without its colour bits) must be the
//! node it was reached from (null at the root) and no node is visited twice. The first node
//! that does not hold together ends the walk with the nodes before it and an error naming it.

use emulator::bytes::Bytes;

use super::ReadMany;

/// Most nodes read per tree.
pub const MAX_NODES: usize = 1 << 16;
/// Most levels (a red-black tree of n nodes is at most 2·log2(n+1) deep).
pub const MAX_DEPTH: usize = 64;
const KERNEL_HALF: u64 = 0xff00_0000_0000_0000;
/// `sizeof(struct rb_node)`.
pub const RB_NODE: u64 = 24;

/// What to read around each node: `before` bytes before it and `len` bytes in all (at least
/// the node's own 24), so that a field of the enclosing structure comes with the same read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub before: u64,
    pub len: u64,
}

impl Window {
    pub const NODE: Window = Window { before: 0, len: RB_NODE };
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RbError {
    #[error("reading rb_node at {node:#x}: {reason}")]
    Read { node: u64, reason: String },
    #[error("rb_node at {node:#x}: {reason}")]
    Bad { node: u64, reason: String },
    #[error("more than {MAX_NODES} nodes or {MAX_DEPTH} levels")]
    TooMany,
}

/// The nodes found (address, the window's bytes), level by level, and why the walk stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walked {
    pub nodes: Vec<(u64, Vec<u8>)>,
    pub error: Option<RbError>,
}

/// Walks the tree whose root node is `root` (the value of `rb_root.rb_node`; 0 is empty).
pub fn walk(root: u64, w: Window, read: &mut ReadMany<'_>) -> Walked {
    let mut out = Walked::default();
    if let Err(e) = walk_into(root, w, read, &mut out) {
        out.error = Some(e);
    }
    out
}

fn walk_into(root: u64, w: Window, read: &mut ReadMany<'_>, out: &mut Walked) -> Result<(), RbError> {
    if w.len < w.before.saturating_add(RB_NODE) || w.len > 1 << 16 {
        return Err(RbError::Bad { node: root, reason: format!("window of {} bytes with the node at {} cannot hold it", w.len, w.before) });
    }
    let mut level: Vec<(u64, u64)> = if root == 0 { Vec::new() } else { vec![(root, 0)] };
    let mut seen = std::collections::HashSet::new();
    let mut depth = 0;
    while !level.is_empty() {
        depth += 1;
        if depth > MAX_DEPTH || out.nodes.len().saturating_add(level.len()) > MAX_NODES {
            return Err(RbError::TooMany);
        }
        for &(node, _) in &level {
            if node < KERNEL_HALF || node % 8 != 0 || node < w.before || !seen.insert(node) {
                return Err(RbError::Bad { node, reason: "not an aligned kernel address, or reached twice".into() });
            }
        }
        let regions: Vec<(u64, usize)> = level.iter().map(|&(n, _)| (n - w.before, w.len as usize)).collect();
        let got = read(&regions);
        let mut next = Vec::new();
        for (i, &(node, parent)) in level.iter().enumerate() {
            let bytes = match got.get(i) {
                Some(Ok(b)) => b.clone(),
                Some(Err(reason)) => return Err(RbError::Read { node, reason: reason.clone() }),
                None => return Err(RbError::Read { node, reason: "no answer".into() }),
            };
            let b = Bytes::new(&bytes);
            let at = w.before as usize;
            let short = |_| RbError::Bad { node, reason: format!("outside the {} bytes read", bytes.len()) };
            let (pc, right, left) = (b.u64(at).map_err(short)?, b.u64(at + 8).map_err(short)?, b.u64(at + 16).map_err(short)?);
            if pc & !3 != parent {
                return Err(RbError::Bad { node, reason: format!("parent is {:#x}, not the node it hangs from ({parent:#x})", pc & !3) });
            }
            for child in [left, right] {
                if child != 0 {
                    next.push((child, node));
                }
            }
            out.nodes.push((node, bytes));
        }
        level = next;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn put(mem: &mut BTreeMap<u64, Vec<u8>>, at: u64, parent: u64, right: u64, left: u64) {
        let mut b = vec![0u8; 32];
        b[8..16].copy_from_slice(&(parent | 1).to_le_bytes());
        b[16..24].copy_from_slice(&right.to_le_bytes());
        b[24..32].copy_from_slice(&left.to_le_bytes());
        b[0..8].copy_from_slice(&at.to_le_bytes());
        mem.insert(at - 8, b);
    }

    fn run(root: u64, mem: &BTreeMap<u64, Vec<u8>>) -> Walked {
        walk(root, Window { before: 8, len: 32 }, &mut |regions: &[(u64, usize)]| {
            regions.iter().map(|&(a, len)| mem.get(&a).map(|b| b[..len.min(b.len())].to_vec()).ok_or_else(|| "unmapped".to_string())).collect()
        })
    }

    #[test]
    fn every_node_once_with_its_window() {
        let (a, b, c) = (0xffff_8880_0000_1008u64, 0xffff_8880_0000_2008u64, 0xffff_8880_0000_3008u64);
        let mut mem = BTreeMap::new();
        put(&mut mem, a, 0, c, b);
        put(&mut mem, b, a, 0, 0);
        put(&mut mem, c, a, 0, 0);
        let w = run(a, &mem);
        assert_eq!(w.error, None);
        let found: Vec<u64> = w.nodes.iter().map(|(_, bytes)| u64::from_le_bytes(bytes[..8].try_into().unwrap())).collect();
        assert_eq!(found, vec![a, b, c]);
        assert_eq!(run(0, &mem), Walked::default());
        // A child whose parent is wrong, and a child pointing back at the root.
        put(&mut mem, c, b, 0, 0);
        assert!(run(a, &mem).error.unwrap().to_string().contains("parent"));
        put(&mut mem, c, a, a, 0);
        assert!(run(a, &mem).error.is_some());
    }
}
