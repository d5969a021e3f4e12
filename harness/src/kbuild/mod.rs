//! True structure layouts of a kernel, computed by that kernel's own build system.
//!
//! Invariant: every number in a [`Layout`] was produced by the C compiler running under kbuild
//! against the configured tree (same flags, same gcc plugins such as randstruct, same config), never
//! by reading memory or guessing. The probe is a small C file compiled to assembly as an
//! external-module single target (`make -C TREE M=DIR probe.s`); each value is emitted with the
//! kernel's own `DEFINE()` marker (`include/linux/kbuild.h`, the asm-offsets trick) and read back
//! from the `.s` text.
//!
//! Without a config, the tree must be prepared: a kernel build directory (`O=` directory, or a
//! source tree after `make prepare`) or an installed headers tree such as Debian's
//! `linux-headers-*`. With a config, the tree is a clean source tree and [`offsets`] prepares an
//! out-of-tree build directory for that config inside it (`.netdma-kbuild/<hash>/`,
//! `olddefconfig` + `prepare`, a minute or two the first time, reused afterwards).

mod probe;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use probe::{host_cc_override, run_make, CcOverride};

/// One quantity to measure: a member offset or a type size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldSpec {
    /// `offsetof(struct ty, member)`; `optional` members missing from this kernel are reported in
    /// [`Layout::absent`] instead of failing. `older` are earlier names of the same member, tried
    /// in order when this kernel lacks `member`; the value is stored under `member`'s key.
    Offset { ty: String, member: String, optional: bool, older: Vec<String> },
    /// `sizeof(struct ty)`.
    Size { ty: String },
}

impl FieldSpec {
    pub fn offset(ty: &str, member: &str) -> Self {
        FieldSpec::Offset { ty: ty.into(), member: member.into(), optional: false, older: Vec::new() }
    }
    pub fn optional(ty: &str, member: &str) -> Self {
        FieldSpec::Offset { ty: ty.into(), member: member.into(), optional: true, older: Vec::new() }
    }
    /// A member that an older kernel calls `older` (the first name this kernel has is measured).
    pub fn renamed(ty: &str, member: &str, older: &[&str]) -> Self {
        FieldSpec::Offset {
            ty: ty.into(),
            member: member.into(),
            optional: false,
            older: older.iter().map(|o| o.to_string()).collect(),
        }
    }
    pub fn size(ty: &str) -> Self {
        FieldSpec::Size { ty: ty.into() }
    }
    /// The key under which the value is stored: `task_struct.tasks` or `task_struct` (sizes).
    pub fn key(&self) -> String {
        match self {
            FieldSpec::Offset { ty, member, .. } => format!("{ty}.{member}"),
            FieldSpec::Size { ty } => ty.clone(),
        }
    }
    /// The member's name in its `alt`-th form (0: current, then each older name).
    fn member_name(&self, alt: usize) -> &str {
        match self {
            FieldSpec::Offset { member, older, .. } => match alt {
                0 => member,
                k => older.get(k - 1).map(String::as_str).unwrap_or(member),
            },
            FieldSpec::Size { ty } => ty,
        }
    }
    fn c_expr_named(&self, alt: usize) -> String {
        match self {
            FieldSpec::Offset { ty, .. } => format!("offsetof(struct {ty}, {})", self.member_name(alt)),
            FieldSpec::Size { ty } => format!("sizeof(struct {ty})"),
        }
    }
}

/// The fields the process-listing analysis uses (the corpus' `layout.json` and `layout_digest`).
pub fn analysis_fields() -> Vec<FieldSpec> {
    let task = [
        "tasks", "pid", "tgid", "real_parent", "parent", "group_leader", "thread_node", "signal",
        "comm", "real_cred", "cred", "__state", "exit_state", "flags", "mm", "active_mm",
        "start_time", "start_boottime", "stack",
    ];
    // The state word is `__state` (unsigned int) since 5.14 (commit 2f064a59a11f, "sched: Change
    // task_struct::state") and `state` (long) before; both hold the same bits, so the offset of
    // either is the offset of the state word (its low 32 bits on little-endian x86-64).
    let mut v: Vec<FieldSpec> = task
        .iter()
        .map(|m| if *m == "__state" { FieldSpec::renamed("task_struct", m, &["state"]) } else { FieldSpec::offset("task_struct", m) })
        .collect();
    v.push(FieldSpec::optional("task_struct", "thread_group"));
    v.push(FieldSpec::size("task_struct"));
    v.extend(["pgd", "arg_start", "arg_end"].iter().map(|m| FieldSpec::offset("mm_struct", m)));
    v.push(FieldSpec::offset("cred", "uid"));
    v.push(FieldSpec::offset("signal_struct", "thread_head"));
    v.push(FieldSpec::offset("signal_struct", "nr_threads"));
    v.push(FieldSpec::size("list_head"));
    v
}

/// Measured offsets and sizes in bytes. Serialises canonically (sorted keys), which is what
/// [`Layout::digest`] hashes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// `struct.member` → byte offset.
    pub offsets: BTreeMap<String, u64>,
    /// `struct` → `sizeof`.
    pub sizes: BTreeMap<String, u64>,
    /// Optional members this kernel does not have (`struct.member`), sorted.
    pub absent: Vec<String>,
}

impl Layout {
    /// The canonical JSON text (compact, keys sorted).
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).expect("a Layout always serialises")
    }
    /// First 16 hex digits of SHA-256 over [`Layout::canonical_json`].
    pub fn digest(&self) -> String {
        let h = Sha256::digest(self.canonical_json().as_bytes());
        h.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
    pub fn offset(&self, key: &str) -> Option<u64> {
        self.offsets.get(key).copied()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KbuildError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("`{cmd}` failed ({status}); last output:\n{tail}")]
    Make { cmd: String, status: String, tail: String },
    #[error("{tree}: not a prepared kernel tree (no include/config/auto.conf); pass a config to prepare it")]
    Unprepared { tree: PathBuf },
    #[error("probe output {path}: no value for `{key}`")]
    MissingValue { path: PathBuf, key: String },
    #[error("probe output {path}: bad marker line `{line}`")]
    BadMarker { path: PathBuf, line: String },
}

/// Configures a clean source `tree` with `config` in an out-of-tree build directory and prepares
/// it (`olddefconfig`, `prepare`: the host programs, such as `scripts/mod/modpost`, are built with
/// this host's compiler); reused when already prepared. Returns the build directory.
pub fn prepare(tree: &Path, config: &Path) -> Result<PathBuf, KbuildError> {
    probe::prepare(tree, config)
}

/// Measures `fields` in `tree`. With `config`, `tree` is a source tree and an out-of-tree build
/// directory is configured with it (`olddefconfig`) and prepared (`prepare`) first;
/// without, `tree` must already be prepared.
pub fn offsets(tree: &Path, config: Option<&Path>, fields: &[FieldSpec]) -> Result<Layout, KbuildError> {
    let prepared;
    let tree = match config {
        Some(config) => {
            prepared = probe::prepare(tree, config)?;
            prepared.as_path()
        }
        None => tree,
    };
    if !tree.join("include/config/auto.conf").is_file() {
        return Err(KbuildError::Unprepared { tree: tree.to_path_buf() });
    }
    // Each attempt measures every wanted field under the name this kernel may use; a compile
    // error on a missing member drops it (optional) or moves to its older name, then retries.
    let mut wanted: Vec<(&FieldSpec, usize)> = fields.iter().map(|f| (f, 0)).collect();
    let mut absent = Vec::new();
    let attempts = 2 + fields.iter().map(|f| match f {
        FieldSpec::Offset { older, .. } => older.len(),
        FieldSpec::Size { .. } => 0,
    }).sum::<usize>();
    for _ in 0..attempts {
        let exprs: Vec<String> = wanted.iter().map(|(f, alt)| f.c_expr_named(*alt)).collect();
        match probe::compile(tree, &exprs)? {
            probe::Outcome::Values(values) => {
                let mut layout = Layout { absent, ..Layout::default() };
                for (i, (f, _)) in wanted.iter().enumerate() {
                    let v = values.get(&i).copied().ok_or_else(|| KbuildError::MissingValue {
                        path: tree.to_path_buf(),
                        key: f.key(),
                    })?;
                    match f {
                        FieldSpec::Offset { .. } => layout.offsets.insert(f.key(), v),
                        FieldSpec::Size { .. } => layout.sizes.insert(f.key(), v),
                    };
                }
                layout.absent.sort();
                return Ok(layout);
            }
            probe::Outcome::Failed { missing_members, error } => {
                let mut progressed = false;
                let mut next = Vec::with_capacity(wanted.len());
                for (f, alt) in wanted {
                    let FieldSpec::Offset { ty, optional, older, .. } = f else {
                        next.push((f, alt));
                        continue;
                    };
                    let name = f.member_name(alt);
                    if !missing_members.iter().any(|(t, m)| t == ty && m == name) {
                        next.push((f, alt));
                    } else if alt < older.len() {
                        next.push((f, alt + 1));
                        progressed = true;
                    } else if *optional {
                        absent.push(f.key());
                        progressed = true;
                    } else {
                        next.push((f, alt));
                    }
                }
                wanted = next;
                if !progressed {
                    return Err(error);
                }
            }
        }
    }
    Err(KbuildError::MissingValue { path: tree.to_path_buf(), key: "(too many retries)".into() })
}
