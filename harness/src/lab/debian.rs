//! Debian's stock kernels of any series (5.10, 6.1, 6.12, 7.x): `apt-get download` of the image,
//! debug-symbol, headers and kbuild packages through the lab's private apt ([`super::apt`]),
//! extracted with `dpkg-deb` into the cache.
//!
//! Package names, by release `R` (`5.10.0-46-amd64`, `6.12.118+deb12-amd64`, `7.2.13+deb14-rt-amd64`):
//! - image: `linux-image-R-unsigned` where it exists (5.10 to 6.12: `boot/vmlinuz-R`,
//!   `boot/config-R`), else `linux-image-R`, which newer Debian splits into the packages it
//!   depends on: `linux-binary-R` (`usr/lib/modules/R/vmlinuz`) and `linux-base-R`
//!   (`usr/lib/modules/R/config`). The dependencies named `linux-binary-*`/`linux-base-*` are
//!   followed, so either shape yields the same three files;
//! - `linux-image-R-dbg`: the real `System.map` (the image's is a placeholder), under
//!   `usr/lib/debug/boot/` or `usr/lib/debug/lib/modules/R/`; tar stops at the first match, the
//!   debug vmlinux is never unpacked;
//! - `linux-headers-R` and the `linux-headers-*` and `linux-kbuild-*` packages it depends on: the
//!   prepared headers tree `kbuild::offsets` measures the reference layout in.
//!
//! Invariant: every file comes from a Debian package fetched through apt; the version recorded
//! is the one apt resolved for the image package, and all packages of one kernel share it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::lab::apt::{self, Apt};
use crate::lab::cache::Cache;
use crate::lab::error::io;
use crate::lab::{Error, Result};

/// A stock kernel as apt knows it, before anything is downloaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// `6.12.118+deb12-amd64`
    pub release: String,
    /// The image package: the kernel's identity in the corpus.
    pub package: String,
    pub version: String,
}

/// A stock kernel, extracted.
#[derive(Clone, Debug)]
pub struct DebianKernel {
    pub resolved: Resolved,
    pub vmlinuz: PathBuf,
    pub system_map: PathBuf,
    pub config: PathBuf,
    /// The prepared headers tree for `kbuild::offsets`.
    pub headers: PathBuf,
}

/// Whether `release` is a kernel release of `series` (`5.10`, `6.12`, or a major such as `7`)
/// and `flavour`: `<series>[.N]*` then `-ABI` or `+debN`, then `-<flavour>` and nothing more.
pub fn release_matches(release: &str, series: &str, flavour: &str) -> bool {
    let Some(rest) = release.strip_suffix(flavour).and_then(|r| r.strip_suffix('-')) else { return false };
    let Some(rest) = rest.strip_prefix(series) else { return false };
    let Some(rest) = rest.strip_prefix('.') else { return false };
    // Version digits and dots, then the ABI or Debian suffix.
    let split = rest.find(['-', '+']).unwrap_or(rest.len());
    let (nums, abi) = rest.split_at(split);
    let digits_dots = !nums.is_empty() && nums.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let abi_ok = match abi.as_bytes().first() {
        Some(b'-') => abi[1..].bytes().all(|b| b.is_ascii_digit()) && abi.len() > 1,
        Some(b'+') => abi.strip_prefix("+deb").is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())),
        _ => false,
    };
    digits_dots && abi_ok
}

/// The newest kernel of `series` and `flavour` apt knows.
pub fn resolve(apt: &Apt, series: &str, flavour: &str) -> Result<Resolved> {
    let pattern = format!("^linux-image-{}\\.", regex_escape(series));
    let mut releases: Vec<String> = apt
        .search(&pattern)?
        .into_iter()
        .filter_map(|p| {
            let r = p.strip_prefix("linux-image-")?;
            let r = r.strip_suffix("-unsigned").unwrap_or(r);
            release_matches(r, series, flavour).then(|| r.to_string())
        })
        .collect();
    releases.sort();
    releases.dedup();
    let candidates = releases.into_iter().map(|release| {
        let unsigned = format!("linux-image-{release}-unsigned");
        let package = if apt.exists(&unsigned) { unsigned } else { format!("linux-image-{release}") };
        (release, package)
    });
    let best = apt.newest(candidates).map(|(release, package, version)| Resolved { release, package, version });
    best.ok_or_else(|| Error::Command {
        cmd: format!("apt-cache search --names-only '{pattern}'"),
        status: "no match".into(),
        detail: format!("no linux-image package of series {series}, flavour {flavour} in {:?}", apt::SUITES),
    })
}

fn regex_escape(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_string() } else { format!("\\{c}") }).collect()
}

/// Member names of a .deb's data archive.
fn members(deb: &Path) -> Result<Vec<String>> {
    let out = Command::new("sh")
        .arg("-c")
        .arg("dpkg-deb --fsys-tarfile \"$1\" | tar -t")
        .arg("sh")
        .arg(deb)
        .output()
        .map_err(io(deb))?;
    if !out.status.success() {
        return Err(Error::Command {
            cmd: format!("dpkg-deb --fsys-tarfile {} | tar -t", deb.display()),
            status: out.status.to_string(),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect())
}

/// Extracts `members` (tar patterns) of a .deb into `root` (all of it when empty). With
/// `first_only`, tar stops after the first match (dpkg-deb then dies of SIGPIPE, as expected).
fn extract(deb: &Path, root: &Path, members: &[&str], first_only: bool) -> Result<()> {
    std::fs::create_dir_all(root).map_err(io(root))?;
    if members.is_empty() {
        let out = Command::new("dpkg-deb").arg("-x").arg(deb).arg(root).output().map_err(io(deb))?;
        if !out.status.success() {
            return Err(Error::Command {
                cmd: format!("dpkg-deb -x {}", deb.display()),
                status: out.status.to_string(),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
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

/// The first of `candidates` (relative to `root`) that is a file.
fn first_file(root: &Path, candidates: &[String]) -> Result<PathBuf> {
    candidates.iter().map(|c| root.join(c)).find(|p| p.is_file()).ok_or_else(|| Error::Invalid {
        path: root.to_path_buf(),
        what: format!("none of {candidates:?} after extraction"),
    })
}

/// Downloads and extracts one stock kernel (cached: a `.complete` stamp marks a finished extract).
pub fn fetch(cache: &Cache, apt: &Apt, k: &Resolved) -> Result<DebianKernel> {
    let Resolved { release, package, version } = k;
    let root = cache.deb_root(package, version);
    let headers = root.join(format!("usr/src/linux-headers-{release}"));
    let vmlinuz = [format!("boot/vmlinuz-{release}"), format!("usr/lib/modules/{release}/vmlinuz")];
    let config = [format!("boot/config-{release}"), format!("usr/lib/modules/{release}/config")];
    let system_map = [
        format!("dbg/usr/lib/debug/boot/System.map-{release}"),
        format!("dbg/usr/lib/debug/lib/modules/{release}/System.map"),
    ];
    let done = |root: &Path| -> Result<DebianKernel> {
        Ok(DebianKernel {
            resolved: k.clone(),
            vmlinuz: first_file(root, &vmlinuz)?,
            system_map: first_file(root, &system_map)?,
            config: first_file(root, &config)?,
            headers: headers.clone(),
        })
    };
    let stamp = root.join(".complete");
    if stamp.is_file() {
        return done(&root);
    }
    if root.exists() {
        std::fs::remove_dir_all(&root).map_err(io(&root))?;
    }
    let debs = cache.debs();
    // The image: vmlinuz and config, from the package itself or the ones it is split into.
    let image = apt.download(&debs, package, version)?;
    let wanted: Vec<String> = members(&image)?
        .into_iter()
        .filter(|m| (m.starts_with("./boot/") && !m.ends_with('/')) || vmlinuz.iter().chain(&config).any(|c| m == &format!("./{c}")))
        .collect();
    if !wanted.is_empty() {
        let refs: Vec<&str> = wanted.iter().map(String::as_str).collect();
        extract(&image, &root, &refs, false)?;
    }
    for dep in apt.depends(package)? {
        if dep == format!("linux-binary-{release}") || dep == format!("linux-base-{release}") {
            let deb = apt.download(&debs, &dep, version)?;
            extract(&deb, &root, &[], false)?;
        }
    }

    let dbg = apt.download(&debs, &format!("linux-image-{release}-dbg"), version)?;
    extract(&dbg, &root.join("dbg"), &["./usr/lib/debug/*System.map*"], true)?;

    let hdr_pkg = format!("linux-headers-{release}");
    let mut header_pkgs = vec![hdr_pkg.clone()];
    header_pkgs.extend(
        apt.depends(&hdr_pkg)?.into_iter().filter(|d| d.starts_with("linux-headers-") || d.starts_with("linux-kbuild-")),
    );
    for p in &header_pkgs {
        let deb = apt.download(&debs, p, version)?;
        extract(&deb, &root, &[], false)?;
    }
    // The flavour's Makefile names the common tree (and, from 7.x, its own output directory) by
    // absolute path (/usr/src/...); point them at the extracted copy.
    let mk = headers.join("Makefile");
    let text = std::fs::read_to_string(&mk).map_err(io(&mk))?;
    let fixed = text.replace(" /usr/src/", &format!(" {}/usr/src/", root.display())).replace("=/usr/src/", &format!("={}/usr/src/", root.display()));
    std::fs::write(&mk, fixed).map_err(io(&mk))?;
    let kernel = done(&root)?;
    std::fs::write(&stamp, format!("{package} {version}\n")).map_err(io(&stamp))?;
    Ok(kernel)
}

/// Modules the lab loads into every Debian guest, by path under `lib/modules/R/kernel/`: built as
/// modules in every Debian kernel of the corpus (5.10 to 7.x: `CONFIG_FAT_FS`, `CONFIG_MSDOS_FS`,
/// `CONFIG_TEXTSEARCH_{BM,FSM,KMP}=m`), small, and without dependencies except `msdos`, which
/// depends on `fat` alone (so `fat` is in use: refcount 1, used by `msdos`). The agent loads
/// them in file-name order, `fat` before `msdos`.
pub const GUEST_MODULES: &[&str] = &["fs/fat/fat", "fs/fat/msdos", "lib/ts_bm", "lib/ts_fsm", "lib/ts_kmp"];

/// The module name of a [`GUEST_MODULES`] path.
pub fn module_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}
/// Of those, the ones loaded with their signature removed: the kernel (`CONFIG_MODULE_SIG=y`,
/// not forced) loads them and taints them `E`, so the truth has a tainted module.
pub const UNSIGNED_GUEST_MODULES: &[&str] = &["ts_bm"];

/// The marker at the end of a signed module (`include/linux/module_signature.h`).
const SIG_MARKER: &[u8] = b"~Module signature appended~\n";

/// A signed module without its signature: the marker, `struct module_signature` (12 bytes:
/// `algo, hash, id_type, signer_len, key_id_len, pad[3], __be32 sig_len`) and the signer, key
/// id and signature it counts, taken off the end.
pub fn strip_signature(ko: &[u8]) -> std::result::Result<&[u8], String> {
    let body = ko.strip_suffix(SIG_MARKER).ok_or("no module signature marker at the end")?;
    let info = body.len().checked_sub(12).map(|at| &body[at..]).ok_or("shorter than struct module_signature")?;
    let sig_len = u32::from_be_bytes([info[8], info[9], info[10], info[11]]) as usize;
    let total = 12 + info[3] as usize + info[4] as usize + sig_len;
    body.len().checked_sub(total).map(|end| &body[..end]).ok_or_else(|| format!("signature of {total} bytes is longer than the module"))
}

/// The [`GUEST_MODULES`] of `k` from its own packages, uncompressed: `(file name, bytes)` in
/// the list's order (extracted once into `netdma-modules/`, whose stamp names the list). The
/// image package holds them up to 6.12; 7.x splits them into `linux-modules-R`, which is
/// downloaded then. Debian compresses them with xz from 6.12 on;
/// they are uncompressed here so that loading needs no `CONFIG_MODULE_DECOMPRESS`.
pub fn guest_modules(cache: &Cache, apt: &Apt, k: &Resolved) -> Result<Vec<(String, Vec<u8>)>> {
    let Resolved { release, package, version } = k;
    let dir = cache.deb_root(package, version).join("netdma-modules");
    let stamp = dir.join(".complete");
    let stamp_text = format!("{package} {version} {}\n", GUEST_MODULES.join(","));
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(stamp_text.as_str()) {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        let mut debs = vec![apt.download(&cache.debs(), package, version)?];
        let modules_pkg = format!("linux-modules-{release}");
        if apt.depends(package)?.contains(&modules_pkg) {
            debs.push(apt.download(&cache.debs(), &modules_pkg, version)?);
        }
        let mut found = Vec::new();
        for deb in &debs {
            for m in members(deb)? {
                if GUEST_MODULES.iter().any(|g| m.ends_with(&format!("/kernel/{g}.ko")) || m.ends_with(&format!("/kernel/{g}.ko.xz"))) {
                    found.push((deb.clone(), m));
                }
            }
        }
        let missing: Vec<&str> = GUEST_MODULES
            .iter()
            .copied()
            .filter(|g| !found.iter().any(|(_, m)| m.contains(&format!("/kernel/{g}.ko"))))
            .collect();
        if !missing.is_empty() {
            return Err(Error::Invalid {
                path: debs[0].clone(),
                what: format!("modules {missing:?} are in none of {:?}", debs),
            });
        }
        let raw = dir.join("raw");
        for (deb, m) in &found {
            extract(deb, &raw, &[m.as_str()], false)?;
            let src = raw.join(m.trim_start_matches("./"));
            let file = src.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
            let bytes = if let Some(stem) = file.strip_suffix(".xz") {
                let out = Command::new("xz").arg("-dc").arg(&src).output().map_err(|_| Error::MissingPackages {
                    install: "apt-get install -y xz-utils".into(),
                })?;
                if !out.status.success() {
                    return Err(Error::Command {
                        cmd: format!("xz -dc {}", src.display()),
                        status: out.status.to_string(),
                        detail: String::from_utf8_lossy(&out.stderr).into_owned(),
                    });
                }
                std::fs::write(dir.join(stem), &out.stdout).map_err(io(dir.join(stem)))?;
                continue;
            } else {
                std::fs::read(&src).map_err(io(&src))?
            };
            std::fs::write(dir.join(&file), bytes).map_err(io(dir.join(&file)))?;
        }
        std::fs::remove_dir_all(&raw).map_err(io(&raw))?;
        std::fs::write(&stamp, &stamp_text).map_err(io(&stamp))?;
    }
    GUEST_MODULES
        .iter()
        .map(|g| {
            let g = module_name(g);
            let name = format!("{g}.ko");
            let p = dir.join(&name);
            let bytes = std::fs::read(&p).map_err(io(&p))?;
            if UNSIGNED_GUEST_MODULES.contains(&g) {
                let unsigned = strip_signature(&bytes).map_err(|what| Error::Invalid { path: p.clone(), what })?;
                return Ok((name, unsigned.to_vec()));
            }
            Ok((name, bytes))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_stripped() {
        let mut ko = b"\x7fELF...module".to_vec();
        let signed_len = ko.len();
        ko.extend_from_slice(b"SIGNER" /* signer */);
        ko.extend_from_slice(b"KEY" /* key id */);
        ko.extend_from_slice(&[0xab; 5] /* signature */);
        ko.extend_from_slice(&[0, 0, 2, 6, 3, 0, 0, 0, 0, 0, 0, 5]);
        ko.extend_from_slice(SIG_MARKER);
        assert_eq!(strip_signature(&ko).unwrap(), &ko[..signed_len]);
        assert!(strip_signature(b"\x7fELF").is_err());
        let mut short = SIG_MARKER.to_vec();
        short.splice(0..0, [0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        assert!(strip_signature(&short).unwrap_err().contains("longer"));
    }

    #[test]
    fn releases_of_every_naming_scheme() {
        assert!(release_matches("5.10.0-46-amd64", "5.10", "amd64"));
        assert!(release_matches("6.1.0-57-rt-amd64", "6.1", "rt-amd64"));
        assert!(release_matches("6.12.118+deb12-cloud-amd64", "6.12", "cloud-amd64"));
        assert!(release_matches("7.2.13+deb14-amd64", "7", "amd64"));
        // another flavour, a bullseye backport, a meta package, a different series
        assert!(!release_matches("6.12.118+deb12-cloud-amd64", "6.12", "amd64"));
        assert!(!release_matches("6.1.0-0.deb11.52-amd64", "6.1", "amd64"));
        assert!(!release_matches("6.12-amd64", "6.12", "amd64"));
        assert!(!release_matches("6.12.118+deb12-amd64", "6.1", "amd64"));
        assert!(!release_matches("6.1.0-57-amd64-dbg", "6.1", "amd64"));
    }
}
