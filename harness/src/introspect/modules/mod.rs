//! `lsmod` from physical memory: the kernel's loaded modules as `/proc/modules` shows them
//! (name, size, refcount, state, core address, taints), with no prior knowledge of the kernel.
//!
//! ```text
//!   lsmod ─ scan, symbols   (as for ps: banner, kallsyms, KASLR, direct map, page tables)
//!         ─ head            `modules` from kallsyms, else VMCOREINFO, else the one list node the
//!         │                 struct modules in the module area link to (area.rs; a kernel whose
//!         │                 kallsyms has no data symbols); none: no CONFIG_MODULES
//!         ─ layout          btf | vmcoreinfo | inferred  → ModuleLayout (layout.rs, infer.rs)
//!         ─ walk            modules.next → struct module → ... → back to the head (list.rs)
//!         ▼
//!   render: a table, JSON Lines, CSV (render.rs)
//! ```
//!
//! Invariant: guest memory is adversarial. The walk follows at most `list::MAX_MODULES` nodes,
//! reads at most `layout::MAX_STRUCT` bytes per module, and stops at the first node that does
//! not hold together, keeping the modules decoded so far and an error naming the address.

pub mod area;
pub mod infer;
pub mod layout;
pub mod list;
pub mod render;
pub mod snapshot;

use emulator::mem::{Counting, PhysMem};
use serde::Serialize;

use self::layout::ModuleLayout;
use self::list::{walk, Module, ModuleError};
use super::addr::KVirt;
use super::kernel::{Kernel, KernelError, KernelInfo};
use super::layout::{btf, LayoutError};
use super::paging::PageTables;
use super::ps::{Clock, Phase};
use super::scan::ScanConfig;

/// How the layout of `struct module` is learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModMethod {
    /// The first of btf, vmcoreinfo, inferred that works.
    Auto,
    /// The kernel's `.BTF` (Debian kernels).
    Btf,
    /// `OFFSET(module.*)` entries in VMCOREINFO (Linux exports none).
    Vmcoreinfo,
    /// From the loaded modules' own structure.
    Inferred,
}

impl ModMethod {
    pub fn name(self) -> &'static str {
        match self {
            ModMethod::Auto => "auto",
            ModMethod::Btf => "btf",
            ModMethod::Vmcoreinfo => "vmcoreinfo",
            ModMethod::Inferred => "inferred",
        }
    }
}

impl std::fmt::Display for ModMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The order `auto` tries.
pub const AUTO_ORDER: &[ModMethod] = &[ModMethod::Btf, ModMethod::Vmcoreinfo, ModMethod::Inferred];

#[derive(Debug, Clone, Default)]
pub struct LsmodOptions {
    /// `None` is `auto`.
    pub method: Option<ModMethod>,
    pub scan: ScanConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum LsmodError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// No list of modules to walk.
    #[error("no modules list: {0}")]
    NoModules(String),
    /// The method's prerequisite is missing (what `auto` skips).
    #[error("method {method} unavailable: {reason}")]
    Unavailable { method: ModMethod, reason: String },
    #[error("method {method} failed: {reason}")]
    Failed { method: ModMethod, reason: String },
    #[error("no method learned struct module: {0}")]
    NoneAvailable(String),
}

/// The layout and how it was learned.
#[derive(Debug, Clone, Serialize)]
pub struct Located {
    pub method: ModMethod,
    pub layout: ModuleLayout,
    pub how: String,
}

/// The `--stats` line.
#[derive(Debug, Clone, Serialize)]
pub struct LsmodStats {
    pub method: String,
    pub kernel_release: String,
    /// The `modules` list head, and where it was found.
    pub head: String,
    pub head_from: String,
    pub how: String,
    pub layout: ModuleLayout,
    pub modules: usize,
    pub unformed: usize,
    pub error: Option<String>,
    pub dma_reads: u64,
    pub dma_bytes: u64,
    /// Dependent batches of reads, round trips over the wire.
    #[serde(rename = "dma_round_trips", alias = "dma_batches")]
    pub dma_batches: u64,
    pub wall_ms: f64,
    pub phases: Vec<Phase>,
}

#[derive(Debug)]
pub struct LsmodReport {
    /// In list order (the most recently loaded first, as `/proc/modules`).
    pub modules: Vec<Module>,
    pub located: Located,
    pub head: Head,
    /// What stopped the walk early (the modules before it are in `modules`).
    pub error: Option<ModuleError>,
    pub kernel: KernelInfo,
    pub stats: LsmodStats,
}

/// The `modules` list head and where it was found.
#[derive(Debug, Clone)]
pub struct Head {
    pub addr: KVirt,
    /// `kallsyms`, `VMCOREINFO`, or the module area scan that found it.
    pub from: String,
    /// The page tables that scan walked (searched for where kallsyms has no `init_top_pgt`):
    /// the modules are read through them.
    pub tables: Option<PageTables>,
}

/// The `modules` list head, from kallsyms, VMCOREINFO's `SYMBOL(modules)` where a kernel
/// exports it, or (kallsyms without data symbols) the module area ([`area::head`]).
pub fn modules_head(kernel: &Kernel<'_>) -> Result<Head, LsmodError> {
    modules_head_with(kernel, &mut || area::scan(kernel))
}

/// [`modules_head`] with the module area scanned by `area_scan` (called only when needed).
pub fn modules_head_with(kernel: &Kernel<'_>, area_scan: &mut dyn FnMut() -> Result<area::AreaScan, String>) -> Result<Head, LsmodError> {
    let sym = kernel.symbols(&["modules"]).map_err(|e| LsmodError::NoModules(format!("looking up modules in kallsyms: {e}")))?[0];
    if let Some(addr) = sym {
        return Ok(Head { addr, from: "kallsyms".into(), tables: None });
    }
    if let Some(addr) = kernel.info.vmcoreinfo.as_ref().and_then(|v| v.symbol("modules")) {
        return Ok(Head { addr, from: "VMCOREINFO".into(), tables: None });
    }
    // The module loader's functions are in kallsyms whenever CONFIG_MODULES is: without
    // them the kernel cannot have loaded a module at all.
    let loader = kernel
        .symbols(&["load_module", "do_init_module"])
        .map_err(|e| LsmodError::NoModules(format!("looking up the module loader in kallsyms: {e}")))?;
    let release = &kernel.info.release;
    let why = if loader.iter().all(Option::is_none) {
        format!("kernel {release} was built without CONFIG_MODULES: kallsyms has no `modules` list and no module loader (load_module, do_init_module), so nothing can be loaded")
    } else if !kernel.info.kallsyms_all {
        // No data symbols: the modules themselves, in the module area, link to the head.
        let found = area_scan().map_err(|e| LsmodError::NoModules(format!("kernel {release}: kallsyms lists no data symbols, and the module area cannot be scanned: {e}")))?;
        let addr = area::head(&found, |a| kernel.space.in_image(KVirt(a)))
            .map_err(|e| LsmodError::NoModules(format!("kernel {release}: kallsyms lists no data symbols (no CONFIG_KALLSYMS_ALL), and {e}")))?;
        let linked = found.modules.iter().filter(|m| m.linked).count();
        let from = format!("the module area: {linked} struct modules linked to it in {} writable pages of {} mapped", found.pages, found.mapped);
        return Ok(Head { addr: KVirt(addr), from, tables: found.tables });
    } else {
        format!("kernel {release} has a module loader and data symbols in kallsyms, but no `modules`")
    };
    Err(LsmodError::NoModules(why))
}

/// Reads a kernel virtual range, as the list walker wants it.
pub(crate) fn reader<'k>(kernel: &'k Kernel<'_>) -> impl FnMut(u64, usize) -> Result<Vec<u8>, String> + 'k {
    move |addr, len| {
        let mut buf = vec![0u8; len];
        kernel.space.read(KVirt(addr), &mut buf).map(|()| buf).map_err(|e| e.to_string())
    }
}

/// Up to `infer::MAX_SAMPLES` modules from the list (address, bytes), each read up to
/// `infer::SAMPLE_SPAN` bytes or the end of the last page that could be read.
pub fn sample_modules(kernel: &Kernel<'_>, head: KVirt) -> Result<Vec<(u64, Vec<u8>)>, String> {
    const LIST: u64 = 8;
    let mut out = Vec::new();
    let mut next = kernel.space.read_u64(head).map_err(|e| format!("reading the modules list head: {e}"))?;
    let mut seen = std::collections::HashSet::new();
    while next != head.0 && out.len() < infer::MAX_SAMPLES {
        if next < list::KERNEL_HALF || !seen.insert(next) {
            return Err(format!("list node {next:#x} is not a kernel address or was seen twice"));
        }
        let addr = next - LIST;
        let first = (0x1000 - (addr & 0xfff)) as usize;
        let regions = [(KVirt(addr), first.min(infer::SAMPLE_SPAN)), (KVirt(addr.wrapping_add(first as u64)), infer::SAMPLE_SPAN.saturating_sub(first))];
        let mut got = kernel.space.read_many(&regions).into_iter();
        let mut bytes = got.next().unwrap_or(Err(super::kspace::KSpaceError::Unmapped { addr: KVirt(addr) })).map_err(|e| format!("reading the module at {addr:#x}: {e}"))?;
        if let Some(Ok(rest)) = got.next() {
            bytes.extend_from_slice(&rest);
        }
        next = emulator::bytes::Bytes::new(&bytes).u64(LIST as usize).map_err(|_| format!("module at {addr:#x}: list outside the bytes read"))?;
        out.push((addr, bytes));
    }
    Ok(out)
}

/// Learn the layout with one method.
pub fn locate(kernel: &Kernel<'_>, head: KVirt, method: ModMethod) -> Result<Located, LsmodError> {
    let unavailable = |reason: String| LsmodError::Unavailable { method, reason };
    let failed = |reason: String| LsmodError::Failed { method, reason };
    match method {
        ModMethod::Btf => {
            let layout = btf::with_index_or_load(kernel, ModuleLayout::from_btf).map_err(|e| match e {
                LayoutError::Unavailable { reason, .. } => unavailable(reason),
                other => failed(other.to_string()),
            })?;
            let layout = layout.map_err(failed)?;
            Ok(Located { method, layout, how: "BTF struct module".into() })
        }
        ModMethod::Vmcoreinfo => {
            let v = kernel.info.vmcoreinfo.as_ref().ok_or_else(|| unavailable("no VMCOREINFO in memory".into()))?;
            if v.offset("module.list").is_none() {
                return Err(unavailable("VMCOREINFO has no OFFSET(module.*) entries (Linux exports none)".into()));
            }
            let layout = ModuleLayout::from_vmcoreinfo(v).map_err(failed)?;
            Ok(Located { method, layout, how: "VMCOREINFO OFFSET(module.*)".into() })
        }
        ModMethod::Inferred => {
            let samples = sample_modules(kernel, head).map_err(failed)?;
            if samples.is_empty() {
                return Err(unavailable("the modules list is empty: no module to infer struct module from".into()));
            }
            let refs: Vec<(u64, &[u8])> = samples.iter().map(|(a, b)| (*a, b.as_slice())).collect();
            let i = infer::infer(&refs).map_err(failed)?;
            Ok(Located { method, layout: i.layout, how: i.how })
        }
        ModMethod::Auto => {
            let mut skipped = Vec::new();
            for &m in AUTO_ORDER {
                match locate(kernel, head, m) {
                    Ok(l) => return Ok(l),
                    Err(e) => {
                        tracing::debug!(method = %m, error = %e, "auto: trying the next method");
                        skipped.push(e.to_string());
                    }
                }
            }
            Err(LsmodError::NoneAvailable(skipped.join("; ")))
        }
    }
}

/// The loaded modules of the machine whose memory is `mem`.
pub fn lsmod(mem: &dyn PhysMem, opts: &LsmodOptions) -> Result<LsmodReport, LsmodError> {
    let counted = Counting::new(mem);
    let mut clock = Clock::new(&counted);
    let found = Kernel::scan(&counted, &opts.scan)?;
    clock.lap("scan");
    let mut kernel = Kernel::open(&counted, found)?;
    clock.lap("symbols");
    let head = modules_head(&kernel)?;
    // A head found in the module area: the modules (outside the image) are read through the
    // page tables that scan found, where kallsyms has no `init_top_pgt`.
    kernel.space.page_tables = kernel.space.page_tables.or(head.tables);
    clock.lap("head");
    let located = locate(&kernel, head.addr, opts.method.unwrap_or(ModMethod::Auto))?;
    clock.lap("layout");
    let w = walk(&located.layout, head.addr.0, &mut reader(&kernel));
    clock.lap("walk");
    let total = counted.snapshot();
    let stats = LsmodStats {
        method: located.method.to_string(),
        kernel_release: kernel.info.release.clone(),
        head: format!("{:#x}", head.addr.0),
        head_from: head.from.clone(),
        how: located.how.clone(),
        layout: located.layout,
        modules: w.modules.len(),
        unformed: w.unformed,
        error: w.error.as_ref().map(ToString::to_string),
        dma_reads: total.reads,
        dma_bytes: total.bytes,
        dma_batches: total.batches,
        wall_ms: clock.t0.elapsed().as_secs_f64() * 1e3,
        phases: std::mem::take(&mut clock.phases),
    };
    Ok(LsmodReport { modules: w.modules, located, head, error: w.error, kernel: kernel.info.clone(), stats })
}
