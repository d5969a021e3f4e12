//! The default corpus: which kernels, built how, recorded how.
//!
//! Invariant: a recipe is pure data; everything that can change an entry's content (package
//! version, fragment text, guest sources, lab version) is hashed into the entry's recipe hash by
//! `build`, so an entry is rebuilt exactly when one of them changes.

use crate::lab::corpus::DumpFormat;

/// Where a kernel comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelRecipe {
    /// Debian bookworm's stock `linux-image-6.1.0-<abi>-<flavour>-unsigned`, newest ABI available.
    Debian { flavour: &'static str },
    /// Debian's `linux-source-6.1` configured as `tinyconfig` + `base.config` + this fragment
    /// (file name under `harness/guest/fragments/`).
    Custom { fragment: &'static str },
}

#[derive(Clone, Debug)]
pub struct Recipe {
    pub name: &'static str,
    pub kernel: KernelRecipe,
    /// Formats dumped in addition to ELF, in both modes.
    pub extra_formats: &'static [DumpFormat],
    /// Appended to [`APPEND`] for this kernel only.
    pub append_extra: &'static str,
}

impl Recipe {
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

pub fn default_corpus() -> Vec<Recipe> {
    use DumpFormat::{KdumpFlattened, Raw};
    use KernelRecipe::{Custom, Debian};
    vec![
        Recipe { name: "deb-amd64", kernel: Debian { flavour: "amd64" }, extra_formats: &[KdumpFlattened, Raw], append_extra: "" },
        Recipe { name: "deb-cloud-amd64", kernel: Debian { flavour: "cloud-amd64" }, extra_formats: &[], append_extra: "" },
        // PREEMPT_RT threads the 8250 interrupt; under TCG the edge-triggered UART interrupt then
        // fires faster than the thread drains it, the spurious-IRQ detector disables IRQ 3 and the
        // control port stalls. `noirqdebug` turns that detector off.
        Recipe {
            name: "deb-rt-amd64",
            kernel: Debian { flavour: "rt-amd64" },
            extra_formats: &[],
            append_extra: "noirqdebug",
        },
        Recipe {
            name: "custom-thesis",
            kernel: Custom { fragment: "thesis.config" },
            extra_formats: &[KdumpFlattened, Raw],
            append_extra: "",
        },
        Recipe {
            name: "custom-smp-preempt-kaslr",
            kernel: Custom { fragment: "smp-preempt-kaslr.config" },
            extra_formats: &[],
            append_extra: "",
        },
        Recipe { name: "custom-bare", kernel: Custom { fragment: "bare.config" }, extra_formats: &[], append_extra: "" },
        Recipe {
            name: "custom-randstruct",
            kernel: Custom { fragment: "randstruct.config" },
            extra_formats: &[],
            append_extra: "",
        },
    ]
}

pub fn find(name: &str) -> Option<Recipe> {
    default_corpus().into_iter().find(|r| r.name == name)
}
