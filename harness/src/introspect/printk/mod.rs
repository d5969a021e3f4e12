//! `dmesg` from physical memory: the kernel log in the lockless printk ring buffer (Linux 5.10
//! and later), with no prior knowledge of the kernel.
//!
//! ```text
//!   dmesg ─ scan, symbols   (as for ps: banner, kallsyms, KASLR, direct map)
//!         ─ layout          vmcoreinfo | btf | inferred  → PrbLayout + the ring's address
//!         ─ read            printk_ringbuffer, then descs, infos and text data in one batch
//!         ─ decode          ring::decode: ids tail..=head → Records, in seq order
//!         ▼
//!   render: `[    1.234567] text` per line (as the console and `dmesg -S` print), JSON, CSV
//! ```
//!
//! Invariant: guest memory is adversarial. Every size taken from it is capped before a read
//! (`ring::MAX_COUNT_BITS`, `ring::MAX_SIZE_BITS`, `layout::MAX_STRUCT`), every loop is bounded
//! by the descriptor count, and a failure names the address or the descriptor it concerns. A
//! ring whose arrays could be read only in part is still decoded: the records that could not be
//! are counted as invalid and `read_error` says what failed.

pub mod infer;
pub mod layout;
pub mod render;
pub mod ring;
pub mod snapshot;

use emulator::mem::{Counting, PhysMem};
use serde::Serialize;

use self::layout::PrbLayout;
use self::ring::{decode, Counts, Decoded, HeaderError, Problem, Record, RingBytes, RingHeader};
use super::addr::KVirt;
use super::kernel::{Kernel, KernelError, KernelInfo};
use super::kspace::KSpaceError;
use super::layout::{btf, LayoutError};
use super::ps::{Clock, Phase};
use super::scan::ScanConfig;

/// How the ring's layout and address are learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PrbMethod {
    /// The first of vmcoreinfo, btf, inferred that works.
    Auto,
    Vmcoreinfo,
    Btf,
    Inferred,
}

impl PrbMethod {
    pub fn name(self) -> &'static str {
        match self {
            PrbMethod::Auto => "auto",
            PrbMethod::Vmcoreinfo => "vmcoreinfo",
            PrbMethod::Btf => "btf",
            PrbMethod::Inferred => "inferred",
        }
    }
}

impl std::fmt::Display for PrbMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The order `auto` tries.
pub const AUTO_ORDER: &[PrbMethod] = &[PrbMethod::Vmcoreinfo, PrbMethod::Btf, PrbMethod::Inferred];

#[derive(Debug, Clone, Default)]
pub struct DmesgOptions {
    /// `None` is `auto`.
    pub method: Option<PrbMethod>,
    pub scan: ScanConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum DmesgError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The method's prerequisite is missing (what `auto` skips).
    #[error("method {method} unavailable: {reason}")]
    Unavailable { method: PrbMethod, reason: String },
    #[error("method {method} failed: {reason}")]
    Failed { method: PrbMethod, reason: String },
    #[error("no method found the printk ring: {0}")]
    NoneAvailable(String),
    #[error("reading {what}: {source}")]
    Read { what: &'static str, source: KSpaceError },
    #[error("printk_ringbuffer at {ring}: {source}")]
    Header { ring: KVirt, source: HeaderError },
}

/// The ring's address and layout, and how they were learned.
#[derive(Debug, Clone, Serialize)]
pub struct Located {
    pub method: PrbMethod,
    pub layout: PrbLayout,
    /// The `struct printk_ringbuffer` in use (what `prb` points to).
    pub ring: KVirt,
    pub how: String,
}

/// The `--stats` line.
#[derive(Debug, Clone, Serialize)]
pub struct DmesgStats {
    pub method: String,
    pub kernel_release: String,
    pub ring: String,
    pub how: String,
    pub header: RingHeader,
    pub records: usize,
    pub counts: Counts,
    pub problems: Vec<Problem>,
    pub read_error: Option<String>,
    pub dma_reads: u64,
    pub dma_bytes: u64,
    /// Dependent batches of reads, round trips over the wire.
    #[serde(rename = "dma_round_trips", alias = "dma_batches")]
    pub dma_batches: u64,
    pub wall_ms: f64,
    pub phases: Vec<Phase>,
}

#[derive(Debug)]
pub struct DmesgReport {
    pub records: Vec<Record>,
    pub located: Located,
    pub header: RingHeader,
    pub counts: Counts,
    pub problems: Vec<Problem>,
    /// An array of the ring that could not be read (its records are counted invalid).
    pub read_error: Option<String>,
    pub kernel: KernelInfo,
    pub stats: DmesgStats,
}

/// Find the ring with one method.
pub fn locate(kernel: &Kernel<'_>, method: PrbMethod) -> Result<Located, DmesgError> {
    let unavailable = |reason: String| DmesgError::Unavailable { method, reason };
    let failed = |reason: String| DmesgError::Failed { method, reason };
    let deref = |prb: KVirt| -> Result<KVirt, DmesgError> {
        kernel.space.read_u64(prb).map(KVirt).map_err(|e| failed(format!("reading prb at {prb}: {e}")))
    };
    match method {
        PrbMethod::Vmcoreinfo => {
            let v = kernel.info.vmcoreinfo.as_ref().ok_or_else(|| unavailable("no VMCOREINFO in memory".into()))?;
            let prb = v.symbol("prb").ok_or_else(|| unavailable("VMCOREINFO has no SYMBOL(prb) (kernel older than 5.10?)".into()))?;
            let layout = PrbLayout::from_vmcoreinfo(v).map_err(failed)?;
            let ring = deref(prb)?;
            Ok(Located { method, layout, ring, how: format!("VMCOREINFO SYMBOL(prb) {prb} → {ring}") })
        }
        PrbMethod::Btf => {
            let layout = btf::with_index_or_load(kernel, PrbLayout::from_btf).map_err(|e| match e {
                LayoutError::Unavailable { reason, .. } => unavailable(reason),
                other => failed(other.to_string()),
            })?;
            let layout = layout.map_err(failed)?;
            let prb = kernel.symbols(&["prb"]).map_err(|e| failed(e.to_string()))?[0]
                .ok_or_else(|| unavailable("kallsyms has no prb (kernel without CONFIG_KALLSYMS_ALL)".into()))?;
            let ring = deref(prb)?;
            Ok(Located { method, layout, ring, how: format!("BTF; kallsyms prb {prb} → {ring}") })
        }
        PrbMethod::Inferred => {
            let f = infer::find(kernel).map_err(failed)?;
            Ok(Located { method, layout: f.layout, ring: f.ring, how: f.how })
        }
        PrbMethod::Auto => {
            let mut skipped = Vec::new();
            for &m in AUTO_ORDER {
                match locate(kernel, m).and_then(|l| read_header(kernel, &l).map(|_| l)) {
                    Ok(l) => return Ok(l),
                    Err(e) => {
                        tracing::debug!(method = %m, error = %e, "auto: trying the next method");
                        skipped.push(e.to_string());
                    }
                }
            }
            Err(DmesgError::NoneAvailable(skipped.join("; ")))
        }
    }
}

fn read_header(kernel: &Kernel<'_>, l: &Located) -> Result<RingHeader, DmesgError> {
    let mut buf = vec![0u8; l.layout.ring_size as usize];
    kernel.space.read(l.ring, &mut buf).map_err(|source| DmesgError::Read { what: "printk_ringbuffer", source })?;
    RingHeader::parse(&l.layout, &buf).map_err(|source| DmesgError::Header { ring: l.ring, source })
}

/// The ring's three arrays, read in one batch; an array that fails is empty, with the error.
pub fn read_arrays(kernel: &Kernel<'_>, l: &PrbLayout, h: &RingHeader) -> ([Vec<u8>; 3], Option<String>) {
    let regions = [
        (KVirt(h.descs), h.count().saturating_mul(l.desc_size) as usize),
        (KVirt(h.infos), h.count().saturating_mul(l.info_size) as usize),
        (KVirt(h.data), h.data_size() as usize),
    ];
    let mut error = None;
    let mut out = kernel.space.read_many(&regions).into_iter().zip(["descriptors", "printk_info array", "text data ring"]).map(|(r, what)| {
        r.unwrap_or_else(|e| {
            error.get_or_insert_with(|| format!("reading the {what}: {e}"));
            Vec::new()
        })
    });
    let arrays = [out.next().unwrap_or_default(), out.next().unwrap_or_default(), out.next().unwrap_or_default()];
    (arrays, error)
}

/// The kernel log of the machine whose memory is `mem`.
pub fn dmesg(mem: &dyn PhysMem, opts: &DmesgOptions) -> Result<DmesgReport, DmesgError> {
    let counted = Counting::new(mem);
    let mut clock = Clock::new(&counted);
    let found = Kernel::scan(&counted, &opts.scan)?;
    clock.lap("scan");
    let kernel = Kernel::open(&counted, found)?;
    clock.lap("symbols");
    let located = locate(&kernel, opts.method.unwrap_or(PrbMethod::Auto))?;
    let header = read_header(&kernel, &located)?;
    clock.lap("layout");
    let ([descs, infos, data], read_error) = read_arrays(&kernel, &located.layout, &header);
    clock.lap("read");
    let Decoded { records, counts, problems } = decode(&located.layout, &header, RingBytes { descs: &descs, infos: &infos, data: &data });
    clock.lap("decode");
    let total = counted.snapshot();
    let stats = DmesgStats {
        method: located.method.to_string(),
        kernel_release: kernel.info.release.clone(),
        ring: format!("{:#x}", located.ring.0),
        how: located.how.clone(),
        header,
        records: records.len(),
        counts,
        problems: problems.clone(),
        read_error: read_error.clone(),
        dma_reads: total.reads,
        dma_bytes: total.bytes,
        dma_batches: total.batches,
        wall_ms: clock.t0.elapsed().as_secs_f64() * 1e3,
        phases: std::mem::take(&mut clock.phases),
    };
    Ok(DmesgReport { records, located, header, counts, problems, read_error, kernel: kernel.info.clone(), stats })
}
