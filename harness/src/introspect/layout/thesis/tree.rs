//! Source trees and per-config build directories for the thesis method, with a cache.
//!
//! ```text
//!   thesis/src/<source-id>/<top>/     extracted tarball (once per tarball)
//!   thesis/obj/<source-id>-<cfg>/     make O= build directory, prepared for that config
//!   thesis/layout/<source-id>-<cfg>.json   kbuild's measurements (the cache hit path)
//!   thesis/lock/<key>/                mkdir lock, so parallel runs do not build the same thing
//! ```
//! Invariant: a directory or file under `thesis/` is published by renaming it into place only
//! once complete, so a crash leaves no half-extracted tree or half-written layout behind; every
//! producer holds the key's lock.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::kbuild::{self, FieldSpec};

/// Longest wait for another process holding a lock (a cold prepare takes minutes).
const LOCK_WAIT: Duration = Duration::from_secs(30 * 60);

fn hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A stable id for a source: path, size and mtime for a tarball; the path for a tree.
fn source_id(source: &Path) -> Result<String, String> {
    let canon = source.canonicalize().map_err(|e| format!("{}: {e}", source.display()))?;
    let meta = std::fs::metadata(&canon).map_err(|e| format!("{}: {e}", canon.display()))?;
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs()).unwrap_or(0);
    Ok(hex(format!("{}|{}|{}", canon.display(), meta.len(), mtime).as_bytes()))
}

/// A held `mkdir` lock; released on drop.
struct Lock(PathBuf);

impl Lock {
    fn take(dir: PathBuf) -> Result<Lock, String> {
        let start = Instant::now();
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        loop {
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    let _ = std::fs::write(dir.join("pid"), std::process::id().to_string());
                    return Ok(Lock(dir));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // A holder that died leaves its pid behind; take the lock over.
                    let holder = std::fs::read_to_string(dir.join("pid")).ok().and_then(|p| p.trim().parse::<u32>().ok());
                    if holder.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                        let _ = std::fs::remove_dir_all(&dir);
                        continue;
                    }
                    if start.elapsed() > LOCK_WAIT {
                        return Err(format!("{} held for over {} s", dir.display(), LOCK_WAIT.as_secs()));
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(format!("{}: {e}", dir.display())),
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The source tree for `source`, extracting a tarball into the cache once.
fn tree(root: &Path, source: &Path, id: &str) -> Result<PathBuf, String> {
    if source.is_dir() {
        if source.join(".config").exists() {
            return Err(format!("{}: source tree has an in-tree .config; `make O=` needs a clean tree (make mrproper)", source.display()));
        }
        return Ok(source.to_path_buf());
    }
    let dest = root.join("src").join(id);
    let _lock = Lock::take(root.join("lock").join(format!("src-{id}")))?;
    if !dest.is_dir() {
        let tmp = root.join("src").join(format!(".{id}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        tracing::info!(source = %source.display(), "thesis: extracting kernel source (once)");
        let st = Command::new("tar")
            .arg("-xf")
            .arg(source)
            .arg("-C")
            .arg(&tmp)
            .status()
            .map_err(|e| format!("tar: {e} (install tar and xz-utils: bash scripts/setup)"))?;
        if !st.success() {
            return Err(format!("tar -xf {} failed: {st}", source.display()));
        }
        std::fs::rename(&tmp, &dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    }
    // The tarball's single top-level directory.
    let mut tops = std::fs::read_dir(&dest)
        .map_err(|e| format!("{}: {e}", dest.display()))?
        .filter_map(|d| d.ok().map(|d| d.path()))
        .filter(|p| p.join("Makefile").is_file());
    tops.next().ok_or_else(|| format!("{}: no kernel tree (Makefile) inside", source.display()))
}

/// `nice make -C obj -j2 prepare` (a kernel build step: niced, two jobs, as on this machine).
fn prepare(obj: &Path) -> Result<(), String> {
    let out = Command::new("nice")
        .args(["-n", "10", "make", "-C"])
        .arg(obj)
        .args(["-j2", "prepare"])
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| format!("make: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = text.lines().rev().take(30).collect();
    Err(format!(
        "make -C {} prepare failed ({}):\n{}",
        obj.display(),
        out.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    ))
}

/// Measure `fields` for the kernel built from `source` with `config`, cached.
pub fn offsets_for(source: &Path, config: &str, fields: &[FieldSpec]) -> Result<kbuild::Layout, String> {
    let root = super::cache_root();
    let sid = source_id(source)?;
    let spec: Vec<String> = fields.iter().map(|f| f.key()).collect();
    let key = format!("{sid}-{}", hex(format!("{config}\n--\n{}", spec.join(",")).as_bytes()));
    let cached = root.join("layout").join(format!("{key}.json"));
    if let Some(l) = std::fs::read_to_string(&cached).ok().and_then(|t| serde_json::from_str(&t).ok()) {
        tracing::info!(cache = %cached.display(), "thesis: layout from cache");
        return Ok(l);
    }
    let src = tree(&root, source, &sid)?;
    let _lock = Lock::take(root.join("lock").join(format!("obj-{key}")))?;
    if let Some(l) = std::fs::read_to_string(&cached).ok().and_then(|t| serde_json::from_str(&t).ok()) {
        return Ok(l);
    }
    let obj = root.join("obj").join(&key);
    std::fs::create_dir_all(&obj).map_err(|e| format!("{}: {e}", obj.display()))?;
    let cfg_path = root.join("obj").join(format!("{key}.config"));
    std::fs::write(&cfg_path, config).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
    std::fs::copy(&cfg_path, obj.join(".config")).map_err(|e| format!("{}: {e}", obj.display()))?;
    tracing::info!(objdir = %obj.display(), "thesis: preparing a build directory for the recovered config (once per config)");
    // `make O=` writes the build directory's own Makefile and configures it; `prepare` then
    // generates the headers a probe needs (`modules_prepare` would be a no-op in kernels
    // without CONFIG_MODULES); kbuild::offsets probes the prepared directory.
    let o = format!("O={}", obj.display());
    kbuild::run_make(&src, &[o.as_str(), "olddefconfig"]).map_err(|e| e.to_string())?;
    prepare(&obj)?;
    let layout = kbuild::offsets(&obj, None, fields).map_err(|e| e.to_string())?;
    let dir = root.join("layout");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".{key}.tmp"));
    std::fs::write(&tmp, serde_json::to_string(&layout).unwrap_or_default()).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &cached).map_err(|e| format!("{}: {e}", cached.display()))?;
    Ok(layout)
}
