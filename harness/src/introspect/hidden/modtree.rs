//! The module address tree's view of the modules: `mod_tree` (`CONFIG_MODULES_TREE_LOOKUP`,
//! which every kernel with perf events or tracing has), the latched red-black tree the kernel
//! searches to map a text or data address to its module (`__module_address`: oopses, kprobes,
//! `module_text_address`). A module removed from the `modules` list by DKOM (`list_del`) stays
//! in it unless the rootkit also knows to take its memory out of the tree.
//!
//! ```text
//!   mod_tree.root.tree[0] ─▶ rb_node ─▶ ... each one mod_tree_node.node.node[0]
//!                                      └ mod_tree_node.mod ─▶ struct module
//! ```
//!
//! Each module has one node per memory region (6.4 on: `mem[type].mtn` of each region with a
//! size; to 6.3: `core_layout.mtn`, and `init_layout.mtn` while it initialises); the view is the
//! set of distinct `mod` pointers. Layout from BTF only (`mod_tree_root.root`,
//! `latch_tree_root.tree`, `mod_tree_node.{mod,node}`); a kernel with modules but no BTF gets
//! the view as unavailable, saying so (no corpus kernel is such).
//!
//! Invariant: the tree walk is bounded and checked as [`rbtree::walk`] says; a `mod` pointer
//! must be an aligned kernel address to be kept.

use std::collections::BTreeSet;

use emulator::bytes::Bytes;
use serde::Serialize;

use super::rbtree::{self, RbError, Window};
use super::ReadMany;
use crate::introspect::btf::Btf;
use crate::introspect::layout::build::Types;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TreeLayout {
    /// `mod_tree.root.tree[0]` from `mod_tree`.
    pub root: u64,
    /// `mod_tree_node.node.node[0]` (the rb_node) minus `mod_tree_node.mod`: where `mod` sits
    /// before the node.
    pub mod_before: u64,
}

impl TreeLayout {
    pub fn from_btf(btf: &Btf) -> Result<TreeLayout, String> {
        let m = |s: &str, f: &str| -> Result<u64, String> {
            Ok(btf.member(s, &[f], f).map_err(|e| e.to_string())?.ok_or_else(|| format!("BTF struct {s} has no {f} (kernel without CONFIG_MODULES_TREE_LOOKUP?)"))?.offset)
        };
        let root = m("mod_tree_root", "root")? + m("latch_tree_root", "tree")?;
        let node = m("mod_tree_node", "node")? + m("latch_tree_node", "node")?;
        let module = m("mod_tree_node", "mod")?;
        let mod_before = node.checked_sub(module).ok_or("mod_tree_node.mod follows its node")?;
        if mod_before > 256 {
            return Err(format!("mod_tree_node.mod {mod_before} bytes before its node is implausible"));
        }
        Ok(TreeLayout { root, mod_before })
    }
}

/// The distinct modules the tree names, and why the walk stopped early.
#[derive(Debug, Clone, Default)]
pub struct TreeWalk {
    pub modules: BTreeSet<u64>,
    pub nodes: usize,
    pub error: Option<RbError>,
}

/// Walks `mod_tree` at `mod_tree`.
pub fn walk(l: &TreeLayout, mod_tree: u64, read: &mut ReadMany<'_>) -> TreeWalk {
    let mut out = TreeWalk::default();
    let at = mod_tree.wrapping_add(l.root);
    let root = match read(&[(at, 8)]).pop() {
        Some(Ok(b)) => Bytes::new(&b).u64(0).unwrap_or(0),
        Some(Err(reason)) => {
            out.error = Some(RbError::Read { node: at, reason });
            return out;
        }
        None => 0,
    };
    let w = rbtree::walk(root, Window { before: l.mod_before, len: l.mod_before.saturating_add(rbtree::RB_NODE) }, read);
    out.nodes = w.nodes.len();
    for (node, bytes) in &w.nodes {
        match Bytes::new(bytes).u64(0) {
            Ok(m) if m >= 0xff00_0000_0000_0000 && m % 8 == 0 => {
                out.modules.insert(m);
            }
            _ => {
                out.error = Some(RbError::Bad { node: *node, reason: "mod_tree_node.mod is not a kernel address".into() });
                return out;
            }
        }
    }
    out.error = w.error;
    out
}
