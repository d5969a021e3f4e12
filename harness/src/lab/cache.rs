//! Where the lab keeps everything: `$XDG_CACHE_HOME/netdma` or `~/.cache/netdma`.
//!
//! ```text
//!   debs/                 downloaded .deb files (apt-get download)
//!   deb/<pkg>_<ver>/      extracted image + headers + kbuild packages of one Debian kernel
//!   src/<ver>/            linux-source-6.1 unpacked once
//!   build/<name>/         O= build directory of one custom kernel, build.log, kernel.json
//!   initramfs/<hash>/     compiled guest programs and the initramfs.cpio
//!   corpus/<name>/        the entries (see corpus.rs for the contract)
//!   live/<name>/          a guest left running by `lab boot`
//! ```

use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// The default cache root from the environment.
    pub fn default_root() -> PathBuf {
        match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            Some(x) => PathBuf::from(x).join("netdma"),
            None => {
                let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| "/tmp".into());
                home.join(".cache").join("netdma")
            }
        }
    }
    pub fn open_default() -> Self {
        Self::at(Self::default_root())
    }
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Cache { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn debs(&self) -> PathBuf {
        self.root.join("debs")
    }
    pub fn deb_root(&self, package: &str, version: &str) -> PathBuf {
        self.root.join("deb").join(format!("{package}_{version}"))
    }
    pub fn source(&self, version: &str) -> PathBuf {
        self.root.join("src").join(version)
    }
    pub fn build(&self, name: &str) -> PathBuf {
        self.root.join("build").join(name)
    }
    pub fn initramfs(&self, hash: &str) -> PathBuf {
        self.root.join("initramfs").join(hash)
    }
    pub fn corpus(&self) -> PathBuf {
        self.root.join("corpus")
    }
    pub fn live(&self, name: &str) -> PathBuf {
        self.root.join("live").join(name)
    }
}

/// Hex SHA-256 of the parts, each length-prefixed so that boundaries matter.
pub fn hash_parts(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// An exclusive lock on the cache for one writer (`corpus build`), held while this value lives.
/// The lock file holds the owner's pid; a lock whose owner is gone is taken over.
pub struct CacheLock {
    path: PathBuf,
}

impl CacheLock {
    /// Waits until the lock is free, then takes it.
    pub fn acquire(cache: &Cache) -> std::io::Result<CacheLock> {
        std::fs::create_dir_all(cache.root())?;
        let path = cache.root().join("build.lock");
        let mut told = false;
        loop {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    use std::io::Write;
                    write!(f, "{}", std::process::id())?;
                    return Ok(CacheLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(&path).unwrap_or_default();
                    let alive = owner.trim().parse::<u32>().is_ok_and(|p| Path::new(&format!("/proc/{p}")).exists());
                    // An empty file is a writer between create and write, unless it is old.
                    let old = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t.elapsed().is_ok_and(|d| d.as_secs() > 10));
                    if !alive && (!owner.is_empty() || old) {
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    if !told {
                        tracing::info!("waiting for another corpus build (pid {}) to finish", owner.trim());
                        told = true;
                    }
                    std::thread::sleep(std::time::Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for CacheLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
