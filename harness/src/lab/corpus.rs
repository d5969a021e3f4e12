//! The on-disk corpus contract, read by the introspection tests and experiments.
//!
//! ```text
//!   corpus/<name>/entry.json            Entry (this module), paths inside relative to the entry dir
//!   corpus/<name>/running/truth.jsonl   guest /proc view right before the running dump (truth.rs)
//!   corpus/<name>/running/modules.txt   guest /proc/modules right before that view (Debian kernels: a few loaded)
//!   corpus/<name>/running/dump.elf      QMP dump-guest-memory, ELF, paging=false
//!   corpus/<name>/running/dump.kdump    (some entries) kdump-compressed zlib, flattened by QEMU 7.2
//!   corpus/<name>/running/dump.raw      (some entries) guest RAM file: file offset == guest physical address
//!   corpus/<name>/panicked/...          same, after sysrq `c`; truth is the last pre-panic view
//!   corpus/<name>/infected/             (some Debian entries) its own boot with the test rootkit:
//!                                       infected.json (what was hidden), truth.jsonl and modules.txt
//!                                       (before infecting), modules-after.txt, dump.elf, logs/ (infected.rs)
//!   corpus/<name>/reference/            System.map, config, layout.json, vmlinuz, kallsyms (if captured)
//!   corpus/<name>/logs/console.log      the guest's serial console
//! ```
//! Invariant: an entry directory holding an `entry.json` is complete — `build` writes entries into
//! a temporary directory and renames it into place only after every file exists. Reference data
//! is for validation only: an analysis under test is never handed it. The infected mode is
//! additive: `entry.json` never names it (its `modes` are running and panicked); it is read from
//! `infected/infected.json`, written last, and ignored when it was recorded for another build of
//! the entry (its `entry_recipe_hash`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::kbuild::Layout;
use crate::lab::cache::Cache;
use crate::lab::error::io;
/// Entries record their dumps' formats; the type lives with the recipes that choose them.
pub use crate::lab::recipe::DumpFormat;
use crate::lab::truth::{self, Thread};
use crate::lab::{Error, Result};

/// When the dump was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Running,
    Panicked,
    /// After the lab's test rootkit hid a process and itself (own boot; see `lab::infected`).
    Infected,
}

impl Mode {
    /// The modes every entry records (one boot, `entry.json`'s `modes`); [`Mode::Infected`] is
    /// recorded for some entries only.
    pub const ALL: [Mode; 2] = [Mode::Running, Mode::Panicked];
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Running => "running",
            Mode::Panicked => "panicked",
            Mode::Infected => "infected",
        }
    }
}

/// What a tool can find in this kernel's memory, from the kernel's own config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flags {
    /// `CONFIG_DEBUG_INFO_BTF=y`: `.BTF` in the kernel image (and so in memory).
    pub btf: bool,
    /// `CONFIG_IKCONFIG=y`: the gzipped config is in the kernel image.
    pub ikconfig: bool,
    /// `CONFIG_CRASH_CORE=y` (to 6.8) or `CONFIG_VMCORE_INFO=y` (6.9 on): the kernel keeps a
    /// `vmcoreinfo` note in memory.
    pub vmcoreinfo: bool,
    /// `CONFIG_RANDOMIZE_BASE=y` and no `nokaslr` on the command line.
    pub kaslr: bool,
}

impl Flags {
    /// Reads the flags from a kernel `.config` text and the kernel command line.
    pub fn from_config(config: &str, append: &str) -> Flags {
        let on = |sym: &str| config.lines().any(|l| l.trim() == format!("CONFIG_{sym}=y"));
        Flags {
            btf: on("DEBUG_INFO_BTF"),
            ikconfig: on("IKCONFIG"),
            // The vmcoreinfo part of CRASH_CORE became its own VMCORE_INFO in 6.9.
            vmcoreinfo: on("CRASH_CORE") || on("VMCORE_INFO"),
            kaslr: on("RANDOMIZE_BASE") && !append.split_whitespace().any(|w| w == "nokaslr"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dump {
    pub format: DumpFormat,
    /// Relative to the entry directory.
    pub path: String,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeRecord {
    /// Relative to the entry directory.
    pub truth: String,
    pub threads: usize,
    /// ELF first, then the extra formats.
    pub dumps: Vec<Dump>,
    /// Relative to the entry directory: the guest's `/proc/modules`, taken right before the
    /// thread truth (entries recorded before the agent read it have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    pub system_map: String,
    pub config: String,
    pub layout: String,
    pub vmlinuz: String,
    /// The guest's /proc/kallsyms as read by root in the guest, when it had one.
    pub kallsyms: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QemuParams {
    pub machine: String,
    pub memory_mib: u32,
    pub smp: u32,
    pub append: String,
}

/// One kernel of the corpus with its running and panicked recordings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    /// `linux-image-6.1.0-56-amd64-unsigned` or `linux-source-6.1+<fragment>`.
    pub kernel: String,
    /// Debian package version of the image or source package.
    pub kernel_version: String,
    /// `uname -r` inside the guest.
    pub release: String,
    pub recipe_hash: String,
    pub flags: Flags,
    /// First 16 hex of SHA-256 over `reference/layout.json` (canonical JSON).
    pub layout_digest: String,
    pub modes: BTreeMap<Mode, ModeRecord>,
    pub reference: Reference,
    pub qemu: QemuParams,
    /// The infected mode, from `infected/infected.json` (not part of `entry.json`).
    #[serde(skip)]
    pub infected: Option<Infected>,
    #[serde(skip)]
    pub(crate) dir: PathBuf,
}

impl Entry {
    pub(crate) fn with_dir(mut self, dir: PathBuf) -> Self {
        self.dir = dir;
        self
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }
    pub fn mode(&self, mode: Mode) -> Option<&ModeRecord> {
        match mode {
            Mode::Infected => self.infected.as_ref().map(|i| &i.mode),
            m => self.modes.get(&m),
        }
    }
    /// Every recorded mode: running and panicked, then infected where recorded.
    pub fn all_modes(&self) -> impl Iterator<Item = (Mode, &ModeRecord)> {
        self.modes.iter().map(|(m, r)| (*m, r)).chain(self.infected.as_ref().map(|i| (Mode::Infected, &i.mode)))
    }
    pub fn dump_path(&self, mode: Mode, format: DumpFormat) -> Option<PathBuf> {
        let m = self.mode(mode)?;
        m.dumps.iter().find(|d| d.format == format).map(|d| self.path(&d.path))
    }
    pub fn truth_path(&self, mode: Mode) -> Option<PathBuf> {
        self.mode(mode).map(|m| self.path(&m.truth))
    }
    /// The ground truth of one mode, parsed.
    pub fn truth(&self, mode: Mode) -> Result<Vec<Thread>> {
        let path = self.truth_path(mode).ok_or_else(|| Error::Invalid {
            path: self.dir.join("entry.json"),
            what: format!("no {} mode", mode.as_str()),
        })?;
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        truth::parse_jsonl(&bytes).map_err(|what| Error::Invalid { path, what })
    }
    /// The guest's `/proc/modules` of one mode, parsed; an error names the entry when it was
    /// recorded without it (rebuild it: `harness corpus build --only NAME`).
    pub fn modules_truth(&self, mode: Mode) -> Result<Vec<truth::Module>> {
        let rel = self.mode(mode).and_then(|m| m.modules.clone()).ok_or_else(|| Error::Invalid {
            path: self.dir.join("entry.json"),
            what: format!(
                "no /proc/modules truth for {} mode (recorded before the agent read it): harness corpus build --only {}",
                mode.as_str(),
                self.name
            ),
        })?;
        let path = self.path(&rel);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        truth::parse_modules(&bytes).map_err(|what| Error::Invalid { path, what })
    }
    /// The true layout from the kernel's own build (`reference/layout.json`).
    pub fn layout(&self) -> Result<Layout> {
        let path = self.path(&self.reference.layout);
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        serde_json::from_str(&text).map_err(|e| Error::Invalid { path, what: e.to_string() })
    }
    pub fn system_map_path(&self) -> PathBuf {
        self.path(&self.reference.system_map)
    }
    pub fn config_path(&self) -> PathBuf {
        self.path(&self.reference.config)
    }
}

/// The corpus directory.
#[derive(Clone, Debug)]
pub struct Corpus {
    root: PathBuf,
}

impl Corpus {
    /// `corpus/` under the default cache root.
    pub fn open_default() -> Self {
        Corpus { root: Cache::open_default().corpus() }
    }
    pub fn open(root: impl Into<PathBuf>) -> Self {
        Corpus { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Every complete entry, in the default corpus order, then any others by name.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::Io { path: self.root.clone(), source: e }),
        };
        for d in rd {
            let d = d.map_err(io(&self.root))?;
            if d.path().join("entry.json").is_file() {
                out.push(Self::load(&d.path())?);
            }
        }
        let order: Vec<&str> = crate::lab::recipe::default_corpus().iter().map(|r| r.name).collect();
        out.sort_by_key(|e| (order.iter().position(|n| *n == e.name).unwrap_or(usize::MAX), e.name.clone()));
        Ok(out)
    }
    pub fn entry(&self, name: &str) -> Result<Entry> {
        let dir = self.root.join(name);
        if !dir.join("entry.json").is_file() {
            return Err(Error::UnknownEntry(name.to_string()));
        }
        Self::load(&dir)
    }
    fn load(dir: &Path) -> Result<Entry> {
        let path = dir.join("entry.json");
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let mut e: Entry = serde_json::from_str(&text).map_err(|e| Error::Invalid { path, what: e.to_string() })?;
        e.infected = load_infected(dir, &e.recipe_hash);
        Ok(e.with_dir(dir.to_path_buf()))
    }
}


// The infected mode's record (recorded by `lab::infected`, its own boot beside the entry).

/// The file, under `infected/`, that describes the mode.
pub const INFECTED_RECORD: &str = "infected/infected.json";

/// What the rootkit hid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hidden {
    /// The victim's pid (a single-threaded process: pid = tgid), unlinked from `init_task.tasks`.
    pub pid: u32,
    pub comm: String,
    /// The rootkit's module name, unlinked from `modules`.
    pub module: String,
}

/// What the guest itself saw after the rootkit hid them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmed {
    /// `/proc/modules` still listed the module (false: it is hidden).
    pub proc_modules_lists_module: bool,
    /// `/proc/PID` still existed (true: /proc walks the pid allocator, not the task list).
    pub proc_pid_exists: bool,
    /// `/proc/PID/comm` then.
    pub proc_pid_comm: String,
    /// The rootkit's own `hide_pid` and `hide_module` parameters then (`PID 1`).
    pub rootkit_state: String,
}

/// `infected/infected.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Infected {
    /// Hash of what this recording depends on (see `lab::infected::infected_hash`).
    pub recipe_hash: String,
    /// The entry's recipe hash it was recorded for; another one makes this record stale.
    pub entry_recipe_hash: String,
    /// `uname -r` in the guest.
    pub release: String,
    pub hidden: Hidden,
    pub confirmed: Confirmed,
    /// Truth (before infecting), modules (before infecting, the rootkit listed) and the dump
    /// (after); paths relative to the entry directory.
    pub mode: ModeRecord,
    /// `/proc/modules` after hiding (relative to the entry directory).
    pub modules_after: String,
    /// How the module was compiled (`lab::rootkit::Built::cc`).
    pub rootkit_cc: String,
    /// After the dump, the victim was killed (SIGKILL) to exercise the hidden task's exit:
    /// `gone` (reaped) or `zombie`, with no list corruption reported on the console.
    pub victim_after_kill: String,
    /// Seconds from launching QEMU to its exit.
    pub record_secs: u64,
}

impl Infected {
    /// The guest's `/proc/modules` after hiding, parsed.
    pub fn modules_after(&self, entry: &Entry) -> Result<Vec<truth::Module>> {
        let path = entry.path(&self.modules_after);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        truth::parse_modules(&bytes).map_err(|what| Error::Invalid { path, what })
    }
}

/// The infected record of the entry in `dir` whose recipe hash is `entry_recipe_hash`: `None`
/// when absent, unreadable (said in the log) or recorded for another build of the entry.
pub fn load_infected(dir: &Path, entry_recipe_hash: &str) -> Option<Infected> {
    let path = dir.join(INFECTED_RECORD);
    let text = std::fs::read_to_string(&path).ok()?;
    match serde_json::from_str::<Infected>(&text) {
        Ok(i) if i.entry_recipe_hash == entry_recipe_hash => Some(i),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!("{}: {e}; ignored", path.display());
            None
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_from_config() {
        let c = "CONFIG_DEBUG_INFO_BTF=y\nCONFIG_IKCONFIG=m\nCONFIG_CRASH_CORE=y\nCONFIG_RANDOMIZE_BASE=y\n";
        assert_eq!(
            Flags::from_config(c, "console=ttyS0"),
            Flags { btf: true, ikconfig: false, vmcoreinfo: true, kaslr: true }
        );
        assert!(!Flags::from_config(c, "console=ttyS0 nokaslr").kaslr);
    }
}
