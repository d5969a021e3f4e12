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
