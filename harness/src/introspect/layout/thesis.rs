//! The `thesis` layout method: the kernel configuration recovered from memory (IKCONFIG) plus
//! the kernel source (`--kernel-source`, a tree or a tarball), compiled by the kernel's own build
//! system to obtain the offsets — the seed thesis' method, made automatic.
//!
//! Pipeline: IKCONFIG → `.config` → `make O=<objdir> olddefconfig` + `modules_prepare` in a
//! build directory keyed by the config's hash → `kbuild::offsets` (offsetof through kbuild) →
//! [`Layout`]. Results are cached per (source, config) under
//! `$XDG_CACHE_HOME/netdma/thesis/`, so only the first run per config pays for the build.
//! `struct kthread` and `struct worker` are private to kernel/*.c and cannot be probed through
//! headers; their few offsets are left to the walker's naming inference (see `naming`).
//!
//! Without `--kernel-source`, the source is Debian's `linux-source-<major.minor>` of the
//! banner's release, fetched through the lab's private apt and unpacked into the cache on first
//! use (as the thesis put it: given only the kernel version).
//!
//! Invariant: the method is available only when both prerequisites exist — IKCONFIG decodes
//! from memory and a kernel source is given or can be fetched for the banner's version; any
//! later failure is `Failed`, with the build's own error text.

use std::path::{Path, PathBuf};

use super::build::{build, Field, TypeError, Types};
use super::{Layout, LayoutError, LayoutInputs, LayoutMethod, MethodKind};
use crate::introspect::ikconfig;
use crate::introspect::kernel::Kernel;
use crate::kbuild::{self, FieldSpec};

mod tree;

pub struct ThesisMethod;

impl LayoutMethod for ThesisMethod {
    fn kind(&self) -> MethodKind {
        MethodKind::Thesis
    }

    fn layout(&self, kernel: &Kernel<'_>, inputs: &LayoutInputs) -> Result<Layout, LayoutError> {
        let unavailable = |reason: String| LayoutError::Unavailable { method: MethodKind::Thesis, reason };
        let failed = |reason: String| LayoutError::Failed { method: MethodKind::Thesis, reason };
        let config = ikconfig::read(kernel).map_err(|e| unavailable(e.to_string()))?;
        let source = match inputs.kernel_source.clone() {
            Some(s) => s,
            None => debian_source(&kernel.info.release).map_err(unavailable)?,
        };
        tracing::info!(config_lines = config.text.lines().count(), source = %source.display(), "thesis: config recovered from memory");
        let measured = tree::offsets_for(&source, &config.text, &fields()).map_err(failed)?;
        build(&Measured(measured)).map_err(|source| LayoutError::Build { method: MethodKind::Thesis, file: None, source })
    }
}

/// What the probe measures: every member `layout::build` asks for.
pub fn fields() -> Vec<FieldSpec> {
    let mut v: Vec<FieldSpec> = [
        "tasks", "pid", "tgid", "real_parent", "thread_node", "signal", "real_cred", "__state", "exit_state", "comm",
        "mm", "flags", "start_boottime",
    ]
    .iter()
    // The state word is `state` before 5.14 (see `kbuild::analysis_fields`).
    .map(|m| if *m == "__state" { FieldSpec::renamed("task_struct", m, &["state"]) } else { FieldSpec::offset("task_struct", m) })
    .collect();
    // `set_child_tid` held the kthread pointer before `worker_private` (see `build`).
    v.push(FieldSpec::Offset {
        ty: "task_struct".into(),
        member: "worker_private".into(),
        optional: true,
        older: vec!["set_child_tid".into()],
    });
    v.push(FieldSpec::size("task_struct"));
    v.push(FieldSpec::offset("signal_struct", "thread_head"));
    v.push(FieldSpec::optional("signal_struct", "nr_threads"));
    v.push(FieldSpec::size("signal_struct"));
    v.push(FieldSpec::offset("cred", "uid"));
    v.push(FieldSpec::offset("cred", "euid"));
    v.push(FieldSpec::size("cred"));
    v.extend(["pgd", "arg_start", "arg_end", "env_start", "env_end"].iter().map(|m| FieldSpec::offset("mm_struct", m)));
    v.push(FieldSpec::size("mm_struct"));
    v
}

/// kbuild's measurements as a [`Types`] source. Member sizes are not measured; the walker only
/// needs `__state`'s, which is `unsigned int` in every kernel that has the field.
struct Measured(kbuild::Layout);

impl Types for Measured {
    fn struct_size(&self, name: &str, _: &[&str]) -> Result<u64, TypeError> {
        self.0.sizes.get(name).copied().ok_or_else(|| TypeError::NotMeasured { name: name.to_owned() })
    }

    fn member(&self, name: &str, _: &[&str], member: &str) -> Result<Option<Field>, TypeError> {
        Ok(self.0.offset(&format!("{name}.{member}")).map(|offset| Field { offset, size: 0 }))
    }
}

/// `major.minor` of a kernel release (`7.2.13+deb14-amd64` → `7.2`).
pub fn series_of(release: &str) -> Option<String> {
    let (major, minor) = super::version_of(release);
    (major > 0).then(|| format!("{major}.{minor}"))
}

/// Debian's source tree of the release's series, fetched and unpacked into the cache once.
fn debian_source(release: &str) -> Result<PathBuf, String> {
    let series = series_of(release).ok_or_else(|| format!("no kernel version in the release {release:?}"))?;
    let cache = crate::lab::cache::Cache::open_default();
    let apt = crate::lab::apt::Apt::open(&cache).map_err(|e| e.to_string())?;
    let src = crate::lab::custom::resolve_source(&apt, &series).map_err(|e| format!("linux-source-{series}: {e}"))?;
    crate::lab::custom::source_tree(&cache, &apt, &src).map_err(|e| e.to_string())
}

/// Where the thesis method keeps extracted sources, build directories and layouts.
pub fn cache_root() -> PathBuf {
    crate::lab::cache::Cache::open_default().root().join("thesis")
}

/// Whether `p` looks like a kernel source (tree or tarball).
pub fn is_source(p: &Path) -> bool {
    p.join("Makefile").is_file() || p.is_file()
}

#[cfg(test)]
mod tests {
    #[test]
    fn series_of_releases() {
        assert_eq!(super::series_of("7.2.13+deb14-amd64").as_deref(), Some("7.2"));
        assert_eq!(super::series_of("5.10.0-46-amd64").as_deref(), Some("5.10"));
        assert_eq!(super::series_of("6.12.118-netdma-bare").as_deref(), Some("6.12"));
        assert_eq!(super::series_of("x"), None);
    }
}
