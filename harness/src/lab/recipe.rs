//! The default corpus: which kernels, built how, recorded how.
//!
//! Two tiers: [`Tier::Test`] is what the test suite builds from an empty cache within CI's
//! time (every version, every kallsyms format, every kind of layout source); [`Tier::Eval`]
//! adds the rest of the evaluation corpus, which the main command builds.
//!
//! Invariant: a recipe is pure data; everything that can change an entry's content (package
//! version, fragment text, guest sources, lab version) is hashed into the entry's recipe hash by
//! `build`, so an entry is rebuilt exactly when one of them changes.

use serde::{Deserialize, Serialize};

/// The file format of one dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DumpFormat {
    /// ELF core (QMP `dump-guest-memory` format `elf`, paging=false): PT_LOAD p_paddr = physical.
    Elf,
    /// kdump-compressed (QMP format `kdump-zlib`), plain diskdump layout (`KDUMP   ` signature).
    Kdump,
    /// kdump-compressed (QMP format `kdump-zlib`) in makedumpfile's *flattened* framing
    /// (`makedumpfile` signature), which is what Debian's QEMU 7.2 writes.
    KdumpFlattened,
    /// Plain guest RAM (copy of the memory-backend-file taken while paused): offset = physical address.
    Raw,
}

impl DumpFormat {
    pub fn file_name(self) -> &'static str {
        match self {
            DumpFormat::Elf => "dump.elf",
            DumpFormat::Kdump | DumpFormat::KdumpFlattened => "dump.kdump",
            DumpFormat::Raw => "dump.raw",
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            DumpFormat::Elf => "elf",
            DumpFormat::Kdump => "kdump",
            DumpFormat::KdumpFlattened => "kdump-flattened",
            DumpFormat::Raw => "raw",
        }
    }
}

/// Where a kernel comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelRecipe {
    /// Debian's stock kernel of upstream `series` (`5.10`, `6.1`, `6.12`, or a major such as `7`
    /// for the newest 7.x) and `flavour` (`amd64`, `cloud-amd64`, `rt-amd64`): the newest release
    /// apt knows (see [`crate::lab::debian`]).
    Debian { series: &'static str, flavour: &'static str },
    /// Debian's `linux-source-<series>` configured as `tinyconfig` + `base.config` + this
    /// fragment (file name under `harness/guest/fragments/`; several joined by `+` are merged
    /// in that order).
    Custom { series: &'static str, fragment: &'static str },
}

/// Which corpus a recipe belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    /// Built by the test suite (`scripts/test`) and CI: every kernel version, every kallsyms
    /// format, every kind of layout source, within CI's time from an empty cache.
    Test,
    /// Built by the main command (`scripts/main`) in addition: the whole evaluation corpus.
    Eval,
}

#[derive(Clone, Debug)]
pub struct Recipe {
    pub name: &'static str,
    pub kernel: KernelRecipe,
    pub tier: Tier,
    /// Formats dumped in addition to ELF, in both modes.
    pub extra_formats: &'static [DumpFormat],
    /// Appended to [`APPEND`] for this kernel only.
    pub append_extra: &'static str,
    /// Also record the infected mode (own boot with the lab's test rootkit; Debian kernels only,
    /// whose `/proc/kallsyms` has the data symbols the rootkit takes its locks from). Not part
    /// of the recipe hash: it adds `infected/` beside the entry.
    pub infected: bool,
}

impl Recipe {
    /// This recipe with the infected mode.
    fn with_infected(mut self) -> Self {
        self.infected = true;
        self
    }

    /// The full kernel command line.
    pub fn append(&self) -> String {
        if self.append_extra.is_empty() {
            APPEND.to_string()
        } else {
            format!("{APPEND} {}", self.append_extra)
        }
    }
}

/// Guest RAM in MiB and vCPUs for every recording.
pub const MEMORY_MIB: u32 = 256;
pub const SMP: u32 = 2;
/// Kernel command line for every guest. No `nokaslr`, no `oops=panic`: KASLR stays whatever the
/// kernel's config makes it; `panic=0` keeps a panicked guest panicked.
pub const APPEND: &str = "console=ttyS0 panic=0";

/// PREEMPT_RT threads the 8250 interrupt; under TCG the edge-triggered UART interrupt then fires
/// faster than the thread drains it, the spurious-IRQ detector disables IRQ 3 and the control
/// port stalls. `noirqdebug` turns that detector off.
const RT_APPEND: &str = "noirqdebug";

pub fn default_corpus() -> Vec<Recipe> {
    use DumpFormat::{KdumpFlattened, Raw};
    use KernelRecipe::{Custom, Debian};
    use Tier::{Eval, Test};
    let deb = |name, series, flavour, tier, extra_formats, append_extra| Recipe {
        name,
        kernel: Debian { series, flavour },
        tier,
        extra_formats,
        append_extra,
        infected: false,
    };
    let custom = |name, series, fragment, tier, extra_formats| Recipe {
        name,
        kernel: Custom { series, fragment },
        tier,
        extra_formats,
        append_extra: "",
        infected: false,
    };
    vec![
        // Linux 6.1 (bookworm): the original corpus. One amd64 kernel per version also has the
        // infected mode.
        deb("deb-amd64", "6.1", "amd64", Test, &[KdumpFlattened, Raw], "").with_infected(),
        deb("deb-cloud-amd64", "6.1", "cloud-amd64", Test, &[], ""),
        deb("deb-rt-amd64", "6.1", "rt-amd64", Test, &[], RT_APPEND),
        custom("custom-thesis", "6.1", "thesis.config", Test, &[KdumpFlattened, Raw]),
        custom("custom-smp-preempt-kaslr", "6.1", "smp-preempt-kaslr.config", Eval, &[]),
        custom("custom-bare", "6.1", "bare.config", Eval, &[]),
        custom("custom-randstruct", "6.1", "randstruct.config", Test, &[]),
        // Linux 5.10 (bullseye), 6.12 (bookworm-security), 7.x (sid).
        deb("deb5.10-amd64", "5.10", "amd64", Test, &[], "").with_infected(),
        deb("deb6.12-amd64", "6.12", "amd64", Test, &[], "").with_infected(),
        deb("deb6.12-rt-amd64", "6.12", "rt-amd64", Eval, &[], RT_APPEND),
        deb("deb7-amd64", "7", "amd64", Test, &[], "").with_infected(),
        deb("deb7-cloud-amd64", "7", "cloud-amd64", Eval, &[], ""),
        custom("custom5.10-thesis", "5.10", "thesis.config", Eval, &[]),
        custom("custom5.10-bare", "5.10", "bare.config", Eval, &[]),
        custom("custom6.12-thesis", "6.12", "thesis.config", Eval, &[]),
        custom("custom6.12-bare", "6.12", "bare.config", Eval, &[]),
        custom("custom7-thesis", "7", "thesis.config", Eval, &[]),
        custom("custom7-bare", "7", "bare-lazy.config", Eval, &[]),
        custom("custom7-randstruct", "7", "randstruct.config", Eval, &[]),
        // Loadable modules on a bare kernel of each version: the `modules` list head is in no
        // symbol table (kallsyms without data symbols, no BTF, no vmcoreinfo).
        custom("custom7-modules", "7", "bare-lazy.config+modules.config", Test, &[]),
        custom("custom-modules", "6.1", "bare.config+modules.config", Eval, &[]),
        custom("custom5.10-modules", "5.10", "bare.config+modules.config", Eval, &[]),
        custom("custom6.12-modules", "6.12", "bare.config+modules.config", Eval, &[]),
    ]
}

/// The recipes of `tier` and every tier below it (the test corpus is part of the evaluation's).
pub fn corpus_of(tier: Tier) -> Vec<Recipe> {
    default_corpus().into_iter().filter(|r| r.tier <= tier).collect()
}

pub fn find(name: &str) -> Option<Recipe> {
    default_corpus().into_iter().find(|r| r.name == name)
}
