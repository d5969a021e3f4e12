//! Debian bookworm's stock kernels: `apt-get download` of the image, debug-symbol, headers and
//! kbuild packages, extracted with `dpkg-deb` into the cache.
//!
//! Invariant: every file comes from a Debian package fetched through apt; the version recorded
//! is the one apt resolved, and all packages of one kernel share it. The image package's
//! `/boot/System.map` is a placeholder on Debian, so the real one is taken from the matching
//! `-dbg` package (read up to that one member, the vmlinux is never unpacked).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::lab::cache::Cache;
use crate::lab::error::io;
use crate::lab::{Error, Result};

/// A stock kernel, extracted.
#[derive(Clone, Debug)]
pub struct DebianKernel {
    pub flavour: String,
    pub abi: u32,
    /// `linux-image-6.1.0-<abi>-<flavour>-unsigned`
    pub package: String,
    pub version: String,
    /// `6.1.0-<abi>-<flavour>`
    pub release: String,
    pub vmlinuz: PathBuf,
    pub system_map: PathBuf,
    pub config: PathBuf,
    /// The prepared headers tree for `kbuild::offsets`.
    pub headers: PathBuf,
}

fn run(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(io(shown.clone()))?;
    if !out.status.success() {
        return Err(Error::Command {
            cmd: shown,
            status: out.status.to_string(),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The newest ABI of `linux-image-6.1.0-<abi>-<flavour>-unsigned` apt knows, and its version.
pub fn resolve(flavour: &str) -> Result<(u32, String, String)> {
    let pattern = format!("^linux-image-6\\.1\\.0-[0-9]+-{}-unsigned$", regex_escape(flavour));
    let out = run(Command::new("apt-cache").args(["search", "--names-only", &pattern]))?;
    let prefix = "linux-image-6.1.0-";
    let suffix = format!("-{flavour}-unsigned");
    let abi = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|p| p.strip_prefix(prefix)?.strip_suffix(suffix.as_str())?.parse::<u32>().ok())
        .max()
        .ok_or_else(|| Error::Command {
            cmd: format!("apt-cache search --names-only '{pattern}'"),
            status: "no match".into(),
            detail: "no linux-image-6.1 package for this flavour; run `apt-get update`".into(),
        })?;
    let package = format!("linux-image-6.1.0-{abi}-{flavour}-unsigned");
    let version = package_version(&package)?;
    Ok((abi, package, version))
}

fn regex_escape(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_string() } else { format!("\\{c}") }).collect()
}

/// Fields of `apt-cache show --no-all-versions PKG`.
fn show_field(package: &str, field: &str) -> Result<String> {
    let out = run(Command::new("apt-cache").args(["show", "--no-all-versions", package]))?;
    let key = format!("{field}: ");
    out.lines().find_map(|l| l.strip_prefix(&key)).map(str::to_string).ok_or_else(|| Error::Command {
        cmd: format!("apt-cache show {package}"),
        status: "no field".into(),
        detail: format!("no `{field}` field"),
    })
}

fn package_version(package: &str) -> Result<String> {
    show_field(package, "Version")
}

/// Downloads `package=version` into the cache's debs/ unless already there.
fn download(cache: &Cache, package: &str, version: &str) -> Result<PathBuf> {
    let dir = cache.debs();
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let stem = format!("{package}_{}_", version.replace(':', "%3a"));
    let find = || -> Result<Option<PathBuf>> {
        for e in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let p = e.map_err(io(&dir))?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with(&stem) && name.ends_with(".deb") {
                return Ok(Some(p));
            }
        }
        Ok(None)
    };
    if let Some(p) = find()? {
        return Ok(p);
    }
    tracing::info!("apt-get download {package}={version}");
    run(Command::new("apt-get").current_dir(&dir).args(["download", "-q", &format!("{package}={version}")]))?;
    find()?.ok_or_else(|| Error::Invalid { path: dir.clone(), what: format!("apt-get download left no {stem}*.deb") })
}

/// Extracts `members` (tar patterns) of a .deb into `root`. With `first_only`, tar stops after the
/// first match (dpkg-deb then dies of SIGPIPE, which is expected).
fn extract(deb: &Path, root: &Path, members: &[&str], first_only: bool) -> Result<()> {
    std::fs::create_dir_all(root).map_err(io(root))?;
    if members.is_empty() {
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root))?;
        return Ok(());
    }
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io("dpkg-deb"))?;
    let stdout = dpkg.stdout.take().ok_or_else(|| Error::Invalid { path: deb.into(), what: "no pipe".into() })?;
    let status = {
        // The Command owns the pipe's read end: it must be dropped before waiting for dpkg-deb,
        // or dpkg-deb blocks forever on a pipe nobody reads once tar has stopped early.
        let mut tar = Command::new("tar");
        tar.arg("-x").arg("-C").arg(root).arg("--wildcards");
        if first_only {
            tar.arg("--occurrence=1");
        }
        tar.args(members).stdin(stdout).status().map_err(io("tar"))
    };
    let _ = dpkg.wait();
    let status = status?;
    if !status.success() {
        return Err(Error::Command {
            cmd: format!("dpkg-deb --fsys-tarfile {} | tar -x {}", deb.display(), members.join(" ")),
            status: status.to_string(),
            detail: String::new(),
        });
    }
    Ok(())
}

/// Downloads and extracts one stock kernel (cached: a `.complete` stamp marks a finished extract).
pub fn fetch(cache: &Cache, flavour: &str) -> Result<DebianKernel> {
    let (abi, package, version) = resolve(flavour)?;
    let release = format!("6.1.0-{abi}-{flavour}");
    let root = cache.deb_root(&package, &version);
    let headers = root.join(format!("usr/src/linux-headers-{release}"));
    let k = DebianKernel {
        flavour: flavour.into(),
        abi,
        package: package.clone(),
        version: version.clone(),
        release: release.clone(),
        vmlinuz: root.join(format!("boot/vmlinuz-{release}")),
        system_map: root.join(format!("dbg/usr/lib/debug/boot/System.map-{release}")),
        config: root.join(format!("boot/config-{release}")),
        headers: headers.clone(),
    };
    let stamp = root.join(".complete");
    if stamp.is_file() {
        return Ok(k);
    }
    if root.exists() {
        std::fs::remove_dir_all(&root).map_err(io(&root))?;
    }
    let image = download(cache, &package, &version)?;
    extract(&image, &root, &["./boot/*"], false)?;

    let dbg_pkg = format!("linux-image-{release}-dbg");
    let dbg = download(cache, &dbg_pkg, &version)?;
    extract(&dbg, &root.join("dbg"), &[&format!("./usr/lib/debug/boot/System.map-{release}")], true)?;

    let hdr_pkg = format!("linux-headers-{release}");
    let depends = show_field(&hdr_pkg, "Depends")?;
    let common = depends
        .split(',')
        .filter_map(|d| d.split_whitespace().next())
        .find(|d| d.starts_with("linux-headers-") && d.contains("-common"))
        .ok_or_else(|| Error::Invalid { path: root.clone(), what: format!("{hdr_pkg}: no -common dependency") })?
        .to_string();
    for p in [hdr_pkg.as_str(), common.as_str(), "linux-kbuild-6.1"] {
        let deb = download(cache, p, &version)?;
        extract(&deb, &root, &[], false)?;
    }
    // The flavour's Makefile includes the common tree by absolute path (/usr/src/...); point it
    // at the extracted copy.
    let mk = headers.join("Makefile");
    let text = std::fs::read_to_string(&mk).map_err(io(&mk))?;
    let fixed = text.replace("include /usr/src/", &format!("include {}/usr/src/", root.display()));
    std::fs::write(&mk, fixed).map_err(io(&mk))?;
    for p in [&k.vmlinuz, &k.system_map, &k.config] {
        if !p.is_file() {
            return Err(Error::Invalid { path: p.clone(), what: "missing after extraction".into() });
        }
    }
    std::fs::write(&stamp, format!("{package} {version}\n")).map_err(io(&stamp))?;
    Ok(k)
}
