//! Host prerequisites: the Debian packages the lab runs on.
//!
//! Invariant: nothing is fetched from anywhere but apt. As root, missing packages are installed
//! with apt-get; otherwise the lab stops with the exact command to run.

use std::process::Command;

use crate::lab::{Error, Result};

/// Debian packages the lab needs (also listed in scripts/apt-packages.txt).
pub const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "debian-archive-keyring",
    "gcc",
    "libc6-dev",
    "make",
    "bc",
    "bison",
    "flex",
    "libelf-dev",
    "libssl-dev",
    "xz-utils",
    "gcc-12-plugin-dev",
];

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

/// Installs (as root) or reports the missing packages.
pub fn ensure_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_root() {
        return Err(Error::MissingPackages { install: format!("sudo apt-get update && sudo apt-get install -y {list}") });
    }
    tracing::info!("installing {list}");
    let st = Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|_| Error::MissingPackages { install: format!("apt-get install -y {list}") })?;
    if !st.success() {
        return Err(Error::MissingPackages { install: format!("apt-get update && apt-get install -y {list}") });
    }
    Ok(())
}
