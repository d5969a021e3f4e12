//! The guest side: sources embedded in the binary, compiled into an initramfs.
//!
//! Invariant: the initramfs is a function of the embedded sources, the host's busybox-static
//! binary and gcc; its hash (`Initramfs::hash`) covers all of them and keys its cache directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::lab::cache::{hash_parts, Cache};
use crate::lab::cpio::Archive;
use crate::lab::error::io;
use crate::lab::{Error, Result};

pub const INIT: &str = include_str!("../../guest/init");
pub const WORKLOAD_C: &str = include_str!("../../guest/workload.c");
pub const AGENT_C: &str = include_str!("../../guest/agent.c");
/// The churn workload of live shell guests (`lab::churn`); in the shell overlay, not in the
/// corpus initramfs.
pub const CHURN_C: &str = include_str!("../../guest/churn.c");

/// Config fragments by file name (`harness/guest/fragments/`).
pub const FRAGMENTS: &[(&str, &str)] = &[
    ("base.config", include_str!("../../guest/fragments/base.config")),
    ("thesis.config", include_str!("../../guest/fragments/thesis.config")),
    ("smp-preempt-kaslr.config", include_str!("../../guest/fragments/smp-preempt-kaslr.config")),
    ("bare.config", include_str!("../../guest/fragments/bare.config")),
    ("bare-lazy.config", include_str!("../../guest/fragments/bare-lazy.config")),
    ("randstruct.config", include_str!("../../guest/fragments/randstruct.config")),
    ("modules.config", include_str!("../../guest/fragments/modules.config")),
];

pub fn fragment(name: &str) -> Option<&'static str> {
    FRAGMENTS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Roles of the workload binary (symlinks to `/bin/nd-work`).
pub const WORKLOAD_ROLES: &[&str] =
    &["nd-tree", "nd-threads", "nd-uid", "nd-stopped", "nd-zombie", "nd-named", "nd-longargs", "nd-spin"];

const BUSYBOX: &str = "/bin/busybox";

pub struct Initramfs {
    pub path: PathBuf,
    pub hash: String,
}

/// Hash of everything that goes into the initramfs.
pub fn workload_hash() -> Result<String> {
    let busybox = std::fs::read(BUSYBOX).map_err(|_| Error::MissingPackages {
        install: "apt-get install -y busybox-static".into(),
    })?;
    let gcc = tool_version("gcc")?;
    Ok(hash_parts(&[INIT.as_bytes(), WORKLOAD_C.as_bytes(), AGENT_C.as_bytes(), &busybox, gcc.as_bytes()]))
}

fn tool_version(tool: &str) -> Result<String> {
    let out = Command::new(tool).arg("--version").output().map_err(|_| Error::MissingPackages {
        install: format!("apt-get install -y {tool}"),
    })?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").to_string())
}

/// Builds (or reuses) the initramfs in the cache.
pub fn initramfs(cache: &Cache) -> Result<Initramfs> {
    let hash = workload_hash()?;
    let dir = cache.initramfs(&hash[..16]);
    let path = dir.join("initramfs.cpio");
    if path.is_file() {
        return Ok(Initramfs { path, hash });
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let work = compile(&dir, "workload.c", WORKLOAD_C, "nd-work", &["-pthread"])?;
    let agent = compile(&dir, "agent.c", AGENT_C, "nd-agent", &[])?;
    let busybox = std::fs::read(BUSYBOX).map_err(io(BUSYBOX))?;

    let mut a = Archive::new();
    for d in ["bin", "dev", "proc", "sys", "tmp", "root"] {
        a.dir(d);
    }
    a.char_dev("dev/console", 0o600, 5, 1);
    a.char_dev("dev/null", 0o666, 1, 3);
    a.char_dev("dev/ttyS0", 0o660, 4, 64);
    a.char_dev("dev/ttyS1", 0o660, 4, 65);
    a.file("bin/busybox", 0o755, &busybox);
    a.symlink("bin/sh", "busybox");
    a.file("bin/nd-work", 0o755, &work);
    for role in WORKLOAD_ROLES {
        a.symlink(&format!("bin/{role}"), "nd-work");
    }
    a.file("bin/nd-agent", 0o755, &agent);
    a.file("init", 0o755, INIT.as_bytes());
    let tmp = dir.join("initramfs.cpio.tmp");
    std::fs::write(&tmp, a.finish()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(Initramfs { path, hash })
}

/// The initramfs with `modules` (`(file name, bytes)`) appended under `lib/modules/netdma/`,
/// where the agent loads them from at start; built once per input hash. Without modules it is
/// [`initramfs`] itself.
pub fn initramfs_with_modules(cache: &Cache, modules: &[(String, Vec<u8>)]) -> Result<Initramfs> {
    let base = initramfs(cache)?;
    if modules.is_empty() {
        return Ok(base);
    }
    let mut parts: Vec<&[u8]> = vec![base.hash.as_bytes()];
    for (name, bytes) in modules {
        parts.push(name.as_bytes());
        parts.push(bytes);
    }
    let hash = hash_parts(&parts);
    let dir = cache.initramfs(&format!("{}-modules", &hash[..16]));
    let path = dir.join("initramfs.cpio");
    if path.is_file() {
        return Ok(Initramfs { path, hash });
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let mut a = Archive::new();
    for d in ["lib", "lib/modules", "lib/modules/netdma"] {
        a.dir(d);
    }
    for (name, bytes) in modules {
        a.file(&format!("lib/modules/netdma/{name}"), 0o644, bytes);
    }
    write_appended(&base.path, a, &path)?;
    Ok(Initramfs { path, hash })
}

/// Writes `base` (an initramfs) with archive `a` appended to `path`, through a temporary file
/// renamed into place. The kernel unpacks concatenated newc archives in order, so `a` adds files
/// and replaces those of the same name.
pub(crate) fn write_appended(base: &Path, a: Archive, path: &Path) -> Result<()> {
    let mut bytes = std::fs::read(base).map_err(io(base))?;
    bytes.extend_from_slice(&a.finish());
    let tmp = path.with_extension("cpio.tmp");
    std::fs::write(&tmp, &bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// `src` written to `dir/src_name` and compiled with `gcc -static -O2 -Wall` (and `extra`) to
/// `dir/out_name`; the binary's bytes.
pub(crate) fn compile(dir: &Path, src_name: &str, src: &str, out_name: &str, extra: &[&str]) -> Result<Vec<u8>> {
    let src_path = dir.join(src_name);
    std::fs::write(&src_path, src).map_err(io(&src_path))?;
    let out_path = dir.join(out_name);
    let out = Command::new("gcc")
        .args(["-static", "-O2", "-Wall", "-o"])
        .arg(&out_path)
        .arg(&src_path)
        .args(extra)
        .output()
        .map_err(|_| Error::MissingPackages { install: "apt-get install -y gcc libc6-dev".into() })?;
    if !out.status.success() {
        return Err(Error::Command {
            cmd: format!("gcc -static {}", src_path.display()),
            status: out.status.to_string(),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    std::fs::read(&out_path).map_err(io(&out_path))
}
