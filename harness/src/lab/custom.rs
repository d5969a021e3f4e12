//! Custom kernels from Debian's `linux-source-<series>` (5.10, 6.1, 6.12, 7.x, fetched through the
//! lab's private apt): tinyconfig + `base.config` + one or more fragments (`bare.config+modules.config`:
//! merged in that order), built with the host's gcc 12. A kernel whose fragments set
//! `CONFIG_MODULES=y` also builds its modules; [`GUEST_MODULES`] of them go into its guest.
//!
//! Invariant: a build directory is reused only when its `kernel.json` records the same kernel
//! hash (source version, fragments, compiler); after `olddefconfig` every option the fragments
//! name is checked against the resulting `.config`, and any difference stops the build loudly.
//! The randstruct seed is fixed (derived from a constant), so the shuffled layout is reproducible.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::kbuild::{self, Layout};
use crate::lab::apt::{self, Apt};
use crate::lab::cache::{hash_parts, Cache};
use crate::lab::error::io;
use crate::lab::guest;
use crate::lab::record::KernelArtifacts;
use crate::lab::{Error, Result};

/// Bumped when the build procedure below changes.
const BUILD_VERSION: u32 = 1;
/// The constant the randstruct seed is derived from.
const RANDSTRUCT_SEED_INPUT: &str = "netdma lab randstruct seed v1";

/// Debian's `linux-source-<major.minor>` of one series, as apt resolves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// `linux-source-7.2`
    pub package: String,
    /// The Debian version, `7.2.13-1`.
    pub version: String,
}

impl Source {
    /// `linux-source-7.2`'s upstream series, `7.2`.
    pub fn series(&self) -> &str {
        self.package.trim_start_matches("linux-source-")
    }
}

/// The newest `linux-source-<series>` apt knows; `series` is `major.minor` or a major alone
/// (`7`: the newest 7.x).
pub fn resolve_source(apt: &Apt, series: &str) -> Result<Source> {
    let exact = format!("linux-source-{series}");
    let candidates: Vec<String> = apt
        .search(&format!("^linux-source-{}", series.replace('.', "\\.")))?
        .into_iter()
        .filter(|p| {
            let rest = p.strip_prefix(&exact).unwrap_or("x");
            rest.is_empty() || (!series.contains('.') && rest.strip_prefix('.').is_some_and(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit())))
        })
        .collect();
    let best = apt.newest(candidates.into_iter().map(|p| ((), p))).map(|((), package, version)| Source { package, version });
    best.ok_or_else(|| Error::Command {
        cmd: format!("apt-cache search linux-source-{series}"),
        status: "no match".into(),
        detail: format!("no linux-source package of series {series} in {:?}", apt::SUITES),
    })
}

/// The source tree, downloaded and unpacked once into the cache (`src/<version>/<package>/`).
pub fn source_tree(cache: &Cache, apt: &Apt, src: &Source) -> Result<PathBuf> {
    let dir = cache.source(&src.version);
    let tree = dir.join(&src.package);
    let stamp = dir.join(".complete");
    if stamp.is_file() {
        return Ok(tree);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let deb = apt.download(&cache.debs(), &src.package, &src.version)?;
    let tarball = format!("./usr/src/{}.tar.xz", src.package);
    tracing::info!("unpacking {tarball} of {} into {}", deb.display(), dir.display());
    // dpkg-deb streams the package's data archive; the first tar takes the source tarball out
    // of it and the second unpacks that.
    let st = Command::new("sh")
        .arg("-c")
        .arg("dpkg-deb --fsys-tarfile \"$1\" | tar -xO \"$2\" | tar -xJ -C \"$3\"")
        .arg("sh")
        .arg(&deb)
        .arg(&tarball)
        .arg(&dir)
        .status()
        .map_err(io("tar"))?;
    if !st.success() || !tree.join("Makefile").is_file() {
        return Err(Error::Command {
            cmd: format!("dpkg-deb --fsys-tarfile {} | tar -xO {tarball} | tar -xJ", deb.display()),
            status: st.to_string(),
            detail: format!("expected {}", tree.display()),
        });
    }
    std::fs::write(&stamp, &src.version).map_err(io(&stamp))?;
    Ok(tree)
}

/// Modules the lab loads into the guest of a custom kernel built with `CONFIG_MODULES=y`, by
/// path in its build directory without `.ko` (what `modules.config` builds as modules on 5.10
/// to 7.x): small, and without dependencies except `nls_utf8`, which uses `nls_base` (so that
/// one is in use: refcount 1, used by `nls_utf8`). The agent loads them in file-name order.
pub const GUEST_MODULES: &[&str] = &["fs/binfmt_misc", "fs/configfs/configfs", "fs/nls/nls_base", "fs/nls/nls_utf8"];

/// The [`GUEST_MODULES`] of the custom kernel built in `build_dir`: `(file name, bytes)` in the
/// list's order.
pub fn guest_modules(build_dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    GUEST_MODULES
        .iter()
        .map(|m| {
            let p = build_dir.join(format!("{m}.ko"));
            let bytes = std::fs::read(&p).map_err(io(&p))?;
            Ok((format!("{}.ko", crate::lab::debian::module_name(m)), bytes))
        })
        .collect()
}

/// The fragment files a recipe's `fragment` names (`bare.config+modules.config`), in merge order.
pub fn fragment_names(fragment: &str) -> impl Iterator<Item = &str> {
    fragment.split('+')
}

/// The texts of `fragment`'s files, in merge order.
fn fragment_texts(fragment: &str) -> Result<Vec<&'static str>> {
    fragment_names(fragment)
        .map(|n| guest::fragment(n).ok_or_else(|| Error::Invalid { path: n.into(), what: "no such fragment".into() }))
        .collect()
}

/// Whether a kernel built from `fragment` loads modules (its fragments set `CONFIG_MODULES=y`).
pub fn has_modules(fragment: &str) -> bool {
    fragment_texts(fragment).is_ok_and(|t| merged_options(&t).get("CONFIG_MODULES").map(String::as_str) == Some("y"))
}

/// Hash of everything a custom kernel build depends on. (One fragment hashes as it always has,
/// so that adding multi-fragment recipes rebuilt no existing kernel.)
pub fn kernel_hash(source_version: &str, fragment: &str) -> Result<String> {
    let base = guest::fragment("base.config").unwrap_or_default();
    let frag = fragment_texts(fragment)?.concat();
    let gcc = Command::new("gcc").arg("--version").output().map_err(io("gcc"))?;
    Ok(hash_parts(&[
        &BUILD_VERSION.to_le_bytes(),
        source_version.as_bytes(),
        base.as_bytes(),
        fragment.as_bytes(),
        frag.as_bytes(),
        &gcc.stdout,
    ]))
}

#[derive(Serialize, Deserialize)]
struct KernelStamp {
    kernel_hash: String,
    layout: Layout,
    build_log_lines: u64,
}

/// Builds (or reuses) the custom kernel `name` from `src` and `fragment`.
pub fn build(cache: &Cache, apt: &Apt, src: &Source, name: &str, fragment: &str, jobs: u32) -> Result<KernelArtifacts> {
    let version = src.version.clone();
    let hash = kernel_hash(&version, fragment)?;
    let b = cache.build(name);
    let art = |layout: Layout| KernelArtifacts {
        kernel: format!("{}+{}", src.package, fragment_names(fragment).map(|f| f.trim_end_matches(".config")).collect::<Vec<_>>().join("+")),
        kernel_version: version.clone(),
        kernel_hash: hash.clone(),
        vmlinuz: b.join("arch/x86/boot/bzImage"),
        system_map: b.join("System.map"),
        config: b.join(".config"),
        layout,
    };
    let stamp_path = b.join("kernel.json");
    let old: Option<KernelStamp> =
        std::fs::read_to_string(&stamp_path).ok().and_then(|t| serde_json::from_str(&t).ok());
    if let Some(s) = &old {
        if s.kernel_hash == hash && b.join("arch/x86/boot/bzImage").is_file() {
            return Ok(art(s.layout.clone()));
        }
    }
    let _ = std::fs::remove_file(&stamp_path);
    let tree = source_tree(cache, apt, src)?;
    std::fs::create_dir_all(b.join("fragments")).map_err(io(&b))?;

    configure(&tree, &b, fragment)?;
    let expected_lines = old.map(|s| s.build_log_lines).unwrap_or(1100);
    let lines = make_with_progress(&b, name, jobs, expected_lines, has_modules(fragment))?;
    let layout = kbuild::offsets(&b, None, &kbuild::analysis_fields())?;
    let stamp = KernelStamp { kernel_hash: hash.clone(), layout: layout.clone(), build_log_lines: lines };
    let text = serde_json::to_string_pretty(&stamp).map_err(|e| Error::Invalid { path: stamp_path.clone(), what: e.to_string() })?;
    std::fs::write(&stamp_path, text).map_err(io(&stamp_path))?;
    Ok(art(layout))
}

/// tinyconfig's inputs + base + fragments via merge_config.sh (allnoconfig mode), then checks.
fn configure(tree: &Path, b: &Path, fragment: &str) -> Result<()> {
    let base = guest::fragment("base.config").unwrap_or_default();
    let texts: Vec<&str> = std::iter::once(base).chain(fragment_texts(fragment)?).collect();
    let mut paths = Vec::new();
    for (name, text) in std::iter::once("base.config").chain(fragment_names(fragment)).zip(&texts) {
        let path = b.join("fragments").join(name);
        std::fs::write(&path, text).map_err(io(&path))?;
        paths.push(path);
    }
    let _ = std::fs::remove_file(b.join(".config"));
    let out = Command::new("scripts/kconfig/merge_config.sh")
        .current_dir(tree)
        .arg("-n")
        .arg("-O")
        .arg(b)
        .args(["kernel/configs/tiny-base.config", "kernel/configs/tiny.config", "arch/x86/configs/tiny.config"])
        .args(&paths)
        .env("ARCH", "x86_64")
        .env_remove("MAKEFLAGS")
        .env_remove("MAKELEVEL")
        .output()
        .map_err(io("merge_config.sh"))?;
    let log = b.join("config.log");
    let mut text = out.stdout.clone();
    text.extend_from_slice(&out.stderr);
    std::fs::write(&log, &text).map_err(io(&log))?;
    if !out.status.success() {
        return Err(Error::Command {
            cmd: "merge_config.sh".into(),
            status: out.status.to_string(),
            detail: format!("see {}", log.display()),
        });
    }
    let config_path = b.join(".config");
    let config = std::fs::read_to_string(&config_path).map_err(io(&config_path))?;
    let wanted = merged_options(&texts);
    let problems = check_config(&config, &wanted);
    if !problems.is_empty() {
        return Err(Error::ConfigMismatch { path: config_path, problems: problems.join("; ") });
    }
    if wanted.get("CONFIG_RANDSTRUCT_FULL").map(String::as_str) == Some("y") {
        fix_randstruct_seed(b)?;
    }
    Ok(())
}

/// `CONFIG_X` → value (`n` for "is not set"); later fragments win.
pub fn merged_options(fragments: &[&str]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for f in fragments {
        for line in f.lines().map(str::trim) {
            if let Some(sym) = line.strip_prefix("# ").and_then(|l| l.strip_suffix(" is not set")) {
                m.insert(sym.to_string(), "n".to_string());
            } else if let Some((k, v)) = line.split_once('=') {
                if k.starts_with("CONFIG_") {
                    m.insert(k.to_string(), v.to_string());
                }
            }
        }
    }
    m
}

/// Differences between the wanted options and a `.config` text.
pub fn check_config(config: &str, wanted: &BTreeMap<String, String>) -> Vec<String> {
    let mut actual = BTreeMap::new();
    for line in config.lines() {
        if let Some((k, v)) = line.split_once('=') {
            if k.starts_with("CONFIG_") {
                actual.insert(k, v);
            }
        }
    }
    let mut problems = Vec::new();
    for (k, v) in wanted {
        let got = actual.get(k.as_str()).copied().unwrap_or("n");
        if got != v {
            problems.push(format!("{k} wanted {v}, got {got}"));
        }
    }
    problems
}

/// Generates the randstruct seed files kbuild would make from /dev/urandom, from a constant.
fn fix_randstruct_seed(b: &Path) -> Result<()> {
    kbuild::run_make(b, &["scripts_basic"])?;
    let seed: String = Sha256::digest(RANDSTRUCT_SEED_INPUT.as_bytes()).iter().map(|x| format!("{x:02x}")).collect();
    let hashed: String = Sha256::digest(seed.as_bytes()).iter().map(|x| format!("{x:02x}")).collect();
    let seed_path = b.join("scripts/basic/randstruct.seed");
    let hash_path = b.join("include/generated/randstruct_hash.h");
    if !seed_path.is_file() {
        return Err(Error::Invalid { path: seed_path, what: "kbuild did not generate the randstruct seed".into() });
    }
    if std::fs::read_to_string(&seed_path).map_err(io(&seed_path))?.trim() == seed {
        return Ok(()); // already ours: leave timestamps alone so nothing rebuilds
    }
    std::fs::write(&seed_path, format!("{seed}\n")).map_err(io(&seed_path))?;
    std::fs::write(&hash_path, format!("#define RANDSTRUCT_HASHED_SEED \"{hashed}\"\n")).map_err(io(&hash_path))?;
    // Stale plugin seed header (from an earlier seed) must be regenerated.
    let _ = std::fs::remove_file(b.join("scripts/gcc-plugins/randomize_layout_seed.h"));
    Ok(())
}

/// `nice make -jN bzImage` (and `modules`) with the output in build.log and a bar fed by its
/// line count.
fn make_with_progress(b: &Path, name: &str, jobs: u32, expected_lines: u64, modules: bool) -> Result<u64> {
    let log_path = b.join("build.log");
    let t0 = Instant::now();
    let mut child = Command::new("nice")
        .args(["-n", "10", "make", "-C"])
        .arg(b)
        .arg(format!("-j{jobs}"))
        .arg("bzImage")
        .args(modules.then_some("modules"))
        .env_remove("MAKEFLAGS")
        .env_remove("MAKELEVEL")
        .env("LC_ALL", "C")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io("make"))?;
    let stderr = child.stderr.take();
    // stderr is appended to the same log by a second thread.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let tx2 = tx.clone();
    let err_thread = std::thread::spawn(move || {
        if let Some(e) = stderr {
            for l in BufReader::new(e).lines().map_while(|l| l.ok()) {
                let _ = tx2.send(l);
            }
        }
    });
    let stdout = child.stdout.take();
    let out_thread = std::thread::spawn(move || {
        if let Some(o) = stdout {
            for l in BufReader::new(o).lines().map_while(|l| l.ok()) {
                let _ = tx.send(l);
            }
        }
    });
    let bar = ProgressBar::new(expected_lines.max(1));
    bar.set_style(
        ProgressStyle::with_template("{prefix:>26} [{elapsed_precise}] {bar:40} {pos}/{len} lines {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(name.to_string());
    let mut log = std::fs::File::create(&log_path).map_err(io(&log_path))?;
    let mut lines = 0u64;
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(l) => {
                use std::io::Write;
                writeln!(log, "{l}").map_err(io(&log_path))?;
                lines += 1;
                if lines > bar.length().unwrap_or(0) {
                    bar.set_length(lines + 1);
                }
                bar.set_position(lines);
                bar.set_message(l.chars().take(50).collect::<String>());
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = out_thread.join();
    let _ = err_thread.join();
    let status = child.wait().map_err(io("make"))?;
    bar.finish_and_clear();
    if !status.success() {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        return Err(Error::Command {
            cmd: format!("make -C {} bzImage", b.display()),
            status: status.to_string(),
            detail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    tracing::info!("{name}: kernel built in {:.0} s ({lines} log lines)", t0.elapsed().as_secs_f64());
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_merge_later_wins_and_mismatches_are_reported() {
        let m = merged_options(&["CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\n", "# CONFIG_C is not set\nCONFIG_D=\"x\"\n"]);
        assert_eq!(m["CONFIG_A"], "y");
        assert_eq!(m["CONFIG_B"], "n");
        assert_eq!(m["CONFIG_C"], "n");
        assert_eq!(m["CONFIG_D"], "\"x\"");
        let config = "CONFIG_A=y\nCONFIG_C=y\nCONFIG_D=\"x\"\n";
        assert_eq!(check_config(config, &m), vec!["CONFIG_C wanted n, got y".to_string()]);
    }

    #[test]
    fn every_fragment_is_embedded_and_parses() {
        for (name, text) in guest::FRAGMENTS {
            assert!(!merged_options(&[text]).is_empty(), "{name} has no options");
        }
    }
}
