//! `corpus build`: bring every entry of the default corpus up to date.
//!
//! Invariant: an entry is rebuilt exactly when its recipe hash changes. The hash covers the lab
//! version, the recipe (name, extra formats), the kernel identity (Debian package + version, or
//! source version + fragments + compiler), the initramfs inputs, QEMU's version and the guest
//! parameters. Checking it needs no kernel build, so a warm run takes seconds. A recipe with the
//! infected mode then brings `infected/` up to date beside the entry (`infected::ensure`: its own
//! hash, over the entry's and the rootkit's sources), without touching the entry.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::kbuild::{self, Layout};
use crate::lab::cache::{hash_parts, Cache};
use crate::lab::corpus::{Corpus, Entry};
use crate::lab::error::io;
use crate::lab::apt::Apt;
use crate::lab::recipe::{self, KernelRecipe, Recipe, Tier, MEMORY_MIB, SMP};
use crate::lab::record::{self, KernelArtifacts};
use crate::lab::{custom, debian, guest, Error, Result, LAB_VERSION};

#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Only this entry.
    pub only: Option<String>,
    /// `make -j` for kernel builds.
    pub jobs: u32,
    /// Rebuild even if up to date.
    pub force: bool,
    /// Build the recipes of this tier and the tiers below it.
    pub tier: Tier,
    /// Fetch the private apt lists again first (newer kernels may then rebuild entries).
    pub refresh_apt: bool,
    /// Only the infected modes: an entry that is not up to date is an error instead of being
    /// rebuilt (its running and panicked data are never rewritten).
    pub infected_only: bool,
}

#[derive(Clone, Debug)]
pub enum Outcome {
    UpToDate,
    Built { secs: f64 },
}

/// Kernel identity without building anything.
pub fn kernel_hash(apt: &Apt, recipe: &Recipe) -> Result<String> {
    match &recipe.kernel {
        KernelRecipe::Debian { series, flavour } => Ok(debian_hash(&debian::resolve(apt, series, flavour)?)),
        KernelRecipe::Custom { series, fragment } => {
            custom::kernel_hash(&custom::resolve_source(apt, series)?.version, fragment)
        }
    }
}

fn debian_hash(k: &debian::Resolved) -> String {
    hash_parts(&[b"debian", k.package.as_bytes(), k.version.as_bytes()])
}

fn qemu_version() -> Result<String> {
    let out = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .map_err(|_| Error::MissingPackages { install: "apt-get install -y qemu-system-x86".into() })?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").to_string())
}

pub fn recipe_hash(recipe: &Recipe, kernel_hash: &str, workload_hash: &str, qemu: &str) -> String {
    let formats: Vec<&str> = recipe.extra_formats.iter().map(|f| f.as_str()).collect();
    let mut params = format!("{MEMORY_MIB} {SMP} {} {}", recipe.append(), formats.join(","));
    match recipe.kernel {
        KernelRecipe::Debian { .. } => {
            params.push_str(&format!(" modules={} unsigned={}", debian::GUEST_MODULES.join(","), debian::UNSIGNED_GUEST_MODULES.join(",")))
        }
        KernelRecipe::Custom { fragment, .. } if custom::has_modules(fragment) => {
            params.push_str(&format!(" modules={}", custom::GUEST_MODULES.join(",")))
        }
        KernelRecipe::Custom { .. } => {}
    }
    hash_parts(&[
        &LAB_VERSION.to_le_bytes(),
        recipe.name.as_bytes(),
        kernel_hash.as_bytes(),
        workload_hash.as_bytes(),
        qemu.as_bytes(),
        params.as_bytes(),
    ])
}

/// Fetches or builds the kernel of `recipe` and measures its layout.
pub fn kernel(cache: &Cache, apt: &Apt, recipe: &Recipe, jobs: u32) -> Result<KernelArtifacts> {
    match &recipe.kernel {
        KernelRecipe::Debian { series, flavour } => {
            let resolved = debian::resolve(apt, series, flavour)?;
            let k = debian::fetch(cache, apt, &resolved)?;
            let layout = debian_layout(&k.headers)?;
            Ok(KernelArtifacts {
                kernel: resolved.package.clone(),
                kernel_version: resolved.version.clone(),
                kernel_hash: debian_hash(&resolved),
                vmlinuz: k.vmlinuz,
                system_map: k.system_map,
                config: k.config,
                layout,
            })
        }
        KernelRecipe::Custom { series, fragment } => {
            let src = custom::resolve_source(apt, series)?;
            custom::build(cache, apt, &src, recipe.name, fragment, jobs)
        }
    }
}

/// The initramfs `recipe`'s guest boots, and the names of the modules its agent loads: the
/// [`debian::GUEST_MODULES`] from a Debian kernel's own packages, the [`custom::GUEST_MODULES`]
/// from a custom kernel's build directory when its fragments enable `CONFIG_MODULES`, else none.
pub fn guest_initramfs(cache: &Cache, apt: &Apt, recipe: &Recipe) -> Result<(guest::Initramfs, Vec<String>)> {
    let modules = match &recipe.kernel {
        KernelRecipe::Debian { series, flavour } => debian::guest_modules(cache, apt, &debian::resolve(apt, series, flavour)?)?,
        KernelRecipe::Custom { fragment, .. } if custom::has_modules(fragment) => custom::guest_modules(&cache.build(recipe.name))?,
        KernelRecipe::Custom { .. } => Vec::new(),
    };
    let names = modules.iter().map(|(f, _)| f.trim_end_matches(".ko").to_string()).collect();
    Ok((guest::initramfs_with_modules(cache, &modules)?, names))
}

/// Layout of a stock kernel from its headers packages, cached next to them.
fn debian_layout(headers: &Path) -> Result<Layout> {
    let fields = kbuild::analysis_fields();
    let key: Vec<String> = fields.iter().map(|f| f.key()).collect();
    let cached = headers.with_extension(format!("layout-{}.json", &hash_parts(&[key.join(",").as_bytes()])[..12]));
    if let Some(l) = std::fs::read_to_string(&cached).ok().and_then(|t| serde_json::from_str(&t).ok()) {
        return Ok(l);
    }
    let layout = kbuild::offsets(headers, None, &fields)?;
    std::fs::write(&cached, layout.canonical_json()).map_err(io(&cached))?;
    Ok(layout)
}

/// The recipes `opts` selects (`--only`, else the tier's).
pub fn selected(opts: &BuildOptions) -> Result<Vec<Recipe>> {
    Ok(match &opts.only {
        Some(n) => vec![recipe::find(n).ok_or_else(|| Error::UnknownEntry(n.clone()))?],
        None => recipe::corpus_of(opts.tier),
    })
}

/// Builds the corpus entries (running and panicked modes); returns one outcome per selected
/// recipe. The infected modes come after, from `lab::infected::infect_corpus`.
pub fn build_corpus(cache: &Cache, opts: &BuildOptions) -> Result<Vec<(String, Outcome)>> {
    let recipes = selected(opts)?;
    crate::lab::setup::ensure_packages()?;
    let _lock = crate::lab::cache::CacheLock::acquire(cache).map_err(io(cache.root().join("build.lock")))?;
    let apt = Apt::open(cache)?;
    if opts.refresh_apt {
        apt.update()?;
    }
    let workload = guest::workload_hash()?;
    let qemu = qemu_version()?;
    let corpus = Corpus::open(cache.corpus());
    let mut outcomes = Vec::new();
    for r in &recipes {
        if opts.infected_only {
            if !r.infected {
                continue;
            }
            let rhash = recipe_hash(r, &kernel_hash(&apt, r)?, &workload, &qemu);
            let current = corpus.entry(r.name).is_ok_and(|e| e.recipe_hash == rhash && entry_files_present(&e));
            if !current {
                return Err(Error::Invalid {
                    path: cache.corpus().join(r.name),
                    what: format!("not up to date, and --infected-only never rebuilds an entry: corpus build --only {}", r.name),
                });
            }
        } else {
            let outcome = build_entry(cache, &apt, &corpus, r, opts, &workload, &qemu)?;
            outcomes.push((r.name.to_string(), outcome));
        }
    }
    Ok(outcomes)
}

/// Brings one entry's running and panicked modes up to date.
fn build_entry(cache: &Cache, apt: &Apt, corpus: &Corpus, r: &Recipe, opts: &BuildOptions, workload: &str, qemu: &str) -> Result<Outcome> {
    let t0 = Instant::now();
    let khash = kernel_hash(apt, r)?;
    let rhash = recipe_hash(r, &khash, workload, qemu);
    if !opts.force {
        if let Ok(e) = corpus.entry(r.name) {
            if e.recipe_hash == rhash && entry_files_present(&e) {
                tracing::info!("{}: up to date", r.name);
                return Ok(Outcome::UpToDate);
            }
        }
    }
    tracing::info!("{}: building (recipe {})", r.name, &rhash[..16]);
    let art = kernel(cache, apt, r, opts.jobs)?;
    let (initrd, modules) = guest_initramfs(cache, apt, r)?;
    let final_dir = cache.corpus().join(r.name);
    let tmp_dir = cache.corpus().join(format!(".{}.tmp", r.name));
    if tmp_dir.exists() {
        std::fs::remove_dir_all(&tmp_dir).map_err(io(&tmp_dir))?;
    }
    record::record(r, &art, &initrd.path, &modules, &rhash, &tmp_dir)?;
    // The old entry goes, its infected mode with it (that one is recorded again after).
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
    }
    std::fs::rename(&tmp_dir, &final_dir).map_err(io(&final_dir))?;
    let secs = t0.elapsed().as_secs_f64();
    tracing::info!("{}: done in {secs:.0} s", r.name);
    Ok(Outcome::Built { secs })
}

fn entry_files_present(e: &Entry) -> bool {
    e.modes.values().all(|m| e.path(&m.truth).is_file() && m.dumps.iter().all(|d| e.path(&d.path).is_file()))
        && e.path(&e.reference.layout).is_file()
        && e.system_map_path().is_file()
}
