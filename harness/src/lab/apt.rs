//! Debian's archive through a private apt configuration inside the cache.
//!
//! The lab's kernels span Debian suites the machine's own apt does not list (bullseye for 5.10,
//! bookworm and bookworm-security for 6.1 and 6.12, sid for 7.x). Every apt command here runs
//! with its own sources list, lists directory, package cache and (empty) preferences under
//! `apt/` in the cache, so the machine's apt configuration and state are never read for
//! sources nor written:
//!
//! ```text
//!   apt/sources.list      one `deb` line per suite in SUITES, signed by Debian's archive keyring
//!   apt/sources.list.d/   empty (SourceParts)
//!   apt/preferences.d/    empty
//!   apt/lists/            Dir::State::Lists
//!   apt/cache/            Dir::Cache (pkgcache.bin, archives/)
//!   apt/.updated          stamp: the sources text the lists were fetched for
//!   apt/answers.json      apt-cache answers for these lists (each call parses every list: seconds)
//! ```
//!
//! Invariant: the lists are fetched once per sources text (a warm cache resolves the same package
//! versions, so entries are not rebuilt because the archive moved on); `corpus build --refresh-apt`
//! fetches them again and forgets the remembered answers. Every command's failure names the
//! command and its stderr.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::lab::cache::Cache;
use crate::lab::error::io;
use crate::lab::{Error, Result};

/// The suites the lab fetches kernels and sources from (amd64, main).
pub const SUITES: &[(&str, &str)] = &[
    ("http://deb.debian.org/debian", "bullseye"),
    ("http://deb.debian.org/debian-security", "bullseye-security"),
    ("http://deb.debian.org/debian", "bookworm"),
    ("http://deb.debian.org/debian-security", "bookworm-security"),
    ("http://deb.debian.org/debian", "sid"),
];
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The private apt configuration.
#[derive(Debug)]
pub struct Apt {
    root: PathBuf,
    /// `apt-cache` arguments → its output, for the current lists (`answers.json`).
    answers: Mutex<BTreeMap<String, String>>,
}

impl Apt {
    /// The configuration under `cache`, with its lists fetched if they are not yet.
    pub fn open(cache: &Cache) -> Result<Apt> {
        let root = cache.root().join("apt");
        let answers = std::fs::read_to_string(root.join("answers.json")).ok().and_then(|t| serde_json::from_str(&t).ok());
        let apt = Apt { root, answers: Mutex::new(answers.unwrap_or_default()) };
        apt.write_config()?;
        let stamp = apt.root.join(".updated");
        let sources = sources_text();
        if std::fs::read_to_string(&stamp).ok().as_deref() != Some(sources.as_str()) {
            apt.update()?;
            std::fs::write(&stamp, &sources).map_err(io(&stamp))?;
        }
        Ok(apt)
    }

    /// Fetch the package lists again (the newest kernels of each suite).
    pub fn update(&self) -> Result<()> {
        tracing::info!("apt-get update (private lists in {})", self.root.display());
        self.run(Command::new("apt-get").args(["update", "-q"]))?;
        self.answers.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let _ = std::fs::remove_file(self.root.join("answers.json"));
        Ok(())
    }

    fn write_config(&self) -> Result<()> {
        for d in ["sources.list.d", "preferences.d", "lists/partial", "cache/archives/partial"] {
            let p = self.root.join(d);
            std::fs::create_dir_all(&p).map_err(io(&p))?;
        }
        if !Path::new(KEYRING).is_file() {
            return Err(Error::MissingPackages { install: "apt-get install -y debian-archive-keyring".into() });
        }
        let list = self.root.join("sources.list");
        std::fs::write(&list, sources_text()).map_err(io(&list))?;
        Ok(())
    }

    /// `-o` options that point apt at this configuration only.
    fn options(&self) -> Vec<String> {
        let r = self.root.display();
        vec![
            format!("Dir::Etc::SourceList={r}/sources.list"),
            format!("Dir::Etc::SourceParts={r}/sources.list.d"),
            format!("Dir::Etc::Preferences={r}/preferences"),
            format!("Dir::Etc::PreferencesParts={r}/preferences.d"),
            format!("Dir::State::Lists={r}/lists"),
            format!("Dir::Cache={r}/cache"),
            "Acquire::Languages=none".into(),
            "APT::Get::List-Cleanup=false".into(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect()
    }

    fn run(&self, cmd: &mut Command) -> Result<String> {
        cmd.args(self.options()).env("LC_ALL", "C");
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

    /// `apt-cache ARGS`, answered from `answers.json` when asked before for these lists.
    fn cached(&self, args: &[&str]) -> Result<String> {
        let key = args.join(" ");
        if let Some(a) = self.answers.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(a.clone());
        }
        let out = self.run(Command::new("apt-cache").args(args))?;
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        answers.insert(key, out.clone());
        let path = self.root.join("answers.json");
        let text = serde_json::to_string(&*answers).unwrap_or_default();
        std::fs::write(&path, text).map_err(io(&path))?;
        Ok(out)
    }

    /// Names of packages matching the extended regular expression `pattern`.
    pub fn search(&self, pattern: &str) -> Result<Vec<String>> {
        let out = self.cached(&["search", "--names-only", pattern])?;
        Ok(out.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect())
    }

    /// Whether apt knows a real (not purely virtual) package of this name.
    pub fn exists(&self, package: &str) -> bool {
        self.field(package, "Version").is_ok()
    }

    /// One field of the candidate version of `package`.
    pub fn field(&self, package: &str, field: &str) -> Result<String> {
        // A purely virtual package makes apt-cache fail: remembered as an empty answer.
        let out = match self.cached(&["show", "--no-all-versions", package]) {
            Ok(o) => o,
            Err(Error::Command { .. }) => {
                let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
                answers.insert(format!("show --no-all-versions {package}"), String::new());
                String::new()
            }
            Err(e) => return Err(e),
        };
        let key = format!("{field}: ");
        out.lines().find_map(|l| l.strip_prefix(&key)).map(str::to_string).ok_or_else(|| Error::Command {
            cmd: format!("apt-cache show {package}"),
            status: "no field".into(),
            detail: format!("no `{field}` field for {package}"),
        })
    }

    /// Of `(key, package)` candidates, the one whose package has the highest candidate version:
    /// `(key, package, version)`. Packages apt has no version for are skipped.
    pub fn newest<K>(&self, candidates: impl IntoIterator<Item = (K, String)>) -> Option<(K, String, String)> {
        let mut best: Option<(K, String, String)> = None;
        for (key, package) in candidates {
            let Ok(version) = self.field(&package, "Version") else { continue };
            if best.as_ref().is_none_or(|b| version_gt(&version, &b.2)) {
                best = Some((key, package, version));
            }
        }
        best
    }

    /// The package names `package` depends on (alternatives and version constraints dropped).
    pub fn depends(&self, package: &str) -> Result<Vec<String>> {
        let d = self.field(package, "Depends").unwrap_or_default();
        Ok(d.split(',')
            .filter_map(|alt| alt.split('|').next()?.split_whitespace().next())
            .map(str::to_string)
            .collect())
    }

    /// Downloads `package=version` into `dir` unless a matching `.deb` is there already.
    pub fn download(&self, dir: &Path, package: &str, version: &str) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let stem = format!("{package}_{}_", version.replace(':', "%3a"));
        let find = || -> Result<Option<PathBuf>> {
            for e in std::fs::read_dir(dir).map_err(io(dir))? {
                let p = e.map_err(io(dir))?.path();
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
        self.run(Command::new("apt-get").current_dir(dir).args(["download", "-q", &format!("{package}={version}")]))?;
        find()?.ok_or_else(|| Error::Invalid { path: dir.to_path_buf(), what: format!("apt-get download left no {stem}*.deb") })
    }
}

fn sources_text() -> String {
    SUITES.iter().map(|(uri, suite)| format!("deb [arch=amd64 signed-by={KEYRING}] {uri} {suite} main\n")).collect()
}

/// `dpkg --compare-versions a gt b`.
pub fn version_gt(a: &str, b: &str) -> bool {
    Command::new("dpkg").args(["--compare-versions", a, "gt", b]).status().is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_name_every_suite_with_the_archive_keyring() {
        let t = sources_text();
        assert_eq!(t.lines().count(), SUITES.len());
        assert!(t.lines().all(|l| l.starts_with("deb [arch=amd64 signed-by=") && l.ends_with(" main")));
        assert!(t.contains(" sid main") && t.contains(" bullseye main"));
    }

    #[test]
    fn debian_version_order() {
        assert!(version_gt("6.12.118-1~deb12u1", "6.12.117-1~deb12u1"));
        assert!(version_gt("5.10.262-1", "5.10.251-1"));
        assert!(!version_gt("7.2.13-1", "7.2.13-1"));
    }
}
