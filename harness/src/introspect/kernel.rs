//! The located kernel: symbols, KASLR shifts, direct-map base, paging mode, vmcoreinfo.
//!
//! Derivation, from memory alone:
//! 1. [`scan`](super::scan) finds `.rodata` and the kallsyms tables' physical address;
//! 2. kallsyms gives each symbol's *virtual* address, including `__start_rodata` (or, without
//!    `CONFIG_KALLSYMS_ALL`, `_etext` rounded up to 2 MiB, which is where `.rodata` starts),
//!    whose physical frame the scan already knows — so `phys_base = phys - (virt -
//!    __START_KERNEL_map)`. When
//!    `linux_banner` is in kallsyms the candidate must also map it onto a banner of the scanned
//!    release (a weak copy of the banner in `init/version.o` means the first banner found need
//!    not be `linux_banner` itself);
//! 3. variables read through the image mapping when kallsyms has data symbols
//!    (`CONFIG_KALLSYMS_ALL`): `page_offset_base` (direct-map base, randomized under KASLR),
//!    `__pgtable_l5_enabled`, `phys_base` (checked against step 2), and the `vmcoreinfo_data`
//!    page (its `KERNELOFFSET` is checked too). Without data symbols, `init_task` and the
//!    direct-map base are found later from the layout ([`super::anchor`]).
//!
//! Invariant: a [`Kernel`] is returned only with an image mapping that is consistent with
//! every check available for this kernel (banner, 2 MiB alignment of `.rodata`).

use emulator::mem::{PhysAddr, PhysMem};

use super::addr::KVirt;
use super::btf::sparse::KERNEL_STRUCT_READ;
use super::btf::{BtfRead, KernelIndex, HEAD_READ};
use super::kallsyms::{Kallsyms, KallsymsError};
use super::kspace::{KSpaceError, KernelSpace, START_KERNEL_MAP};
use super::paging::{PageTables, X86_64_4LEVEL, X86_64_5LEVEL};
use super::physread::read_vec;
use super::placement::{image_delta, PlacementError};
use super::scan::{find_kernel, parse_banner, Banner, Found, ScanConfig, ScanError};
use super::kallsyms::locate::agrees_with_vmcoreinfo;
use super::vmcoreinfo::{self, VmcoreInfo};

/// `CONFIG_PHYSICAL_START` default: where `_text` sits without KASLR (x86-64).
pub const DEFAULT_PHYSICAL_START: u64 = 0x100_0000;
const ALIGN_2M: u64 = 2 << 20;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error(transparent)]
    Kallsyms(#[from] KallsymsError),
    #[error("kallsyms has none of linux_banner, __start_rodata, _etext: cannot place the image physically")]
    CannotPlaceImage,
    #[error("reading {what}: {source}")]
    Read { what: &'static str, source: KSpaceError },
    #[error("inconsistent kernel: {0}")]
    Inconsistent(String),
    #[error(transparent)]
    Placement(#[from] PlacementError),
}

/// Facts about the kernel, all derived from memory.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KernelInfo {
    pub release: String,
    pub banner: String,
    pub banner_phys: PhysAddr,
    pub rodata_phys: PhysAddr,
    pub rodata_virt: KVirt,
    pub num_syms: u32,
    /// How kallsyms is laid out and encoded, and how its addresses became virtual.
    pub kallsyms_format: String,
    /// Whether kallsyms lists data symbols (`CONFIG_KALLSYMS_ALL`).
    pub kallsyms_all: bool,
    /// Virtual address of `_text`.
    pub text_virt: KVirt,
    /// Physical address of `_text`.
    pub text_phys: PhysAddr,
    /// `phys_base`: physical address of `__START_KERNEL_map`.
    pub phys_base: u64,
    /// Virtual KASLR shift, `_text - (__START_KERNEL_map + CONFIG_PHYSICAL_START)` (vmcoreinfo's
    /// `KERNELOFFSET` when present, else computed with the default `CONFIG_PHYSICAL_START`).
    pub kaslr_virt_offset: u64,
    /// Physical shift: `_text`'s physical address minus `CONFIG_PHYSICAL_START`.
    pub kaslr_phys_offset: i64,
    /// Direct-map base; `None` until found (kernels without data symbols).
    pub page_offset_base: Option<KVirt>,
    /// How `page_offset_base` was learned.
    pub page_offset_base_from: &'static str,
    pub paging: &'static str,
    pub init_task: Option<KVirt>,
    /// How `init_task` was learned.
    pub init_task_from: &'static str,
    pub init_top_pgt: Option<KVirt>,
    pub btf: Option<(KVirt, KVirt)>,
    pub ikconfig: Option<(KVirt, KVirt)>,
    /// Start of `.data` (`__start_init_task`), where `init_task` is searched for.
    pub data_start: Option<KVirt>,
    /// End of the read-only sections that may hold IKCONFIG (`__start___ksymtab`, else
    /// `_sinittext`).
    pub rodata_search_end: Option<KVirt>,
    pub vmcoreinfo: Option<VmcoreInfo>,
    pub scan_candidates: usize,
}

/// The located kernel and the means to read its memory.
pub struct Kernel<'m> {
    pub info: KernelInfo,
    pub found: Found,
    pub kallsyms: Kallsyms,
    pub space: KernelSpace<'m>,
    /// What has been read of the `.BTF` blob (`layout::btf`): a command that needs BTF for its
    /// layout and again for its own structures (`hidden`) reads each byte once.
    pub btf_blob: std::sync::Mutex<crate::introspect::btf::BtfRead>,
}

const WANTED: &[&str] = &[
    "__start_rodata",
    "_text",
    "linux_banner",
    "init_task",
    "page_offset_base",
    "phys_base",
    "init_top_pgt",
    "__pgtable_l5_enabled",
    "vmcoreinfo_data",
    "vmcoreinfo_size",
    "__start_BTF",
    "__stop_BTF",
    "kernel_config_data",
    "kernel_config_data_end",
    "__start_init_task",
    "__start___ksymtab",
    "_etext",
    "_sinittext",
    "btf_vmlinux",
];

/// The initial pid namespace, which the walk's pid index (`pidindex`) looks up right after
/// opening: looked up with [`WANTED`], in the same search, and its address read with theirs.
pub const INIT_PID_NS: &str = "init_pid_ns";

impl<'m> Kernel<'m> {
    /// Find the kernel in `mem` (the scan phase).
    pub fn scan(mem: &dyn PhysMem, cfg: &ScanConfig) -> Result<Found, KernelError> {
        Ok(find_kernel(mem, cfg)?)
    }

    /// Decode kallsyms and derive the address space (the symbols phase).
    pub fn open(mem: &'m dyn PhysMem, found: Found) -> Result<Kernel<'m>, KernelError> {
        let mut kallsyms = Kallsyms::load(mem, found.kallsyms)?;
        // Every name looked up while opening (the image's placement's too, for pc-relative
        // tables) and the walk's pid index's, in one search: one search's round trips, not three
        // (see `Kallsyms::indices_of`).
        let first: Vec<&str> =
            WANTED.iter().copied().chain(super::placement::symbols()).chain([INIT_PID_NS]).collect();
        kallsyms.indices_of(mem, &first)?;
        let mut placed_by = "kallsyms_relative_base";
        if kallsyms.needs_placement() {
            let (delta, how) = image_delta(mem, &kallsyms)?;
            kallsyms.place_image(delta);
            placed_by = how;
        }
        // With the pid index's name, whose address it reads next.
        let addrs = kallsyms.lookup(mem, &[WANTED, &[INIT_PID_NS]].concat())?;
        let sym = |name: &str| WANTED.iter().position(|w| *w == name).and_then(|i| addrs[i]);
        // Without CONFIG_KALLSYMS_ALL only text symbols remain (plus a stray `__init_begin`).
        let kallsyms_all = kallsyms.data_symbols() > 100;

        // `.rodata` starts at the first 2 MiB boundary after `_etext` (X86_ALIGN_RODATA_BEGIN);
        // `_etext` is a text symbol, so kallsyms has it even without data symbols.
        let start_rodata = sym("__start_rodata").or_else(|| {
            let etext = sym("_etext")?;
            Some(KVirt(etext.0.checked_add(ALIGN_2M - 1)? & !(ALIGN_2M - 1)))
        });
        let (phys_base, banner) = place_image(mem, &found, start_rodata, sym("linux_banner"))?;
        let mut space = KernelSpace::new(mem, phys_base, None, &X86_64_4LEVEL);

        // The image's variables read here, in one batch (all through the image mapping), with
        // the BTF's header, which the layout reads first.
        let pair = |a: &str, b: &str| Some((sym(a)?, sym(b)?)).filter(|(s, e)| e.0 > s.0);
        let btf = pair("__start_BTF", "__stop_BTF");
        let btf_head = btf.map(|(s, e)| (s, (e.0 - s.0).min(HEAD_READ) as usize));
        let ([stored_base, l5, pob, vmci_data, vmci_size, btf_vmlinux], head) = image_vars(
            &space,
            [
                ("phys_base", 8),
                ("__pgtable_l5_enabled", 4),
                ("page_offset_base", 8),
                ("vmcoreinfo_data", 8),
                ("vmcoreinfo_size", 8),
                ("btf_vmlinux", 8),
            ],
            &sym,
            btf_head,
        );
        let mut btf_blob = BtfRead::default();
        if let (Some((s, e)), Some(Ok(head))) = (btf, head) {
            // A header that does not parse is read again, and reported, by the layout.
            let _ = btf_blob.take_header((e.0 - s.0) as usize, &head);
        }
        let var = |v: Option<Result<u64, KSpaceError>>, what: &'static str| v.transpose().map_err(|source| KernelError::Read { what, source });
        if let Some(stored) = var(stored_base, "phys_base")? {
            if stored != phys_base {
                tracing::warn!(stored = format!("{stored:#x}"), derived = format!("{phys_base:#x}"), "phys_base variable differs from derived value");
            }
        }
        let l5 = var(l5, "__pgtable_l5_enabled")?.is_some_and(|v| v != 0);
        let format = if l5 { &X86_64_5LEVEL } else { &X86_64_4LEVEL };
        space.format = format;
        let page_offset_base = match var(pob, "page_offset_base")? {
            Some(p) => {
                if !KVirt(p).is_canonical(format.va_bits()) || p < 0xff00_0000_0000_0000 {
                    return Err(KernelError::Inconsistent(format!("page_offset_base {p:#x} is not a kernel address")));
                }
                Some(KVirt(p))
            }
            None => None,
        };
        space.page_offset_base = page_offset_base;
        if let Some(v) = sym("init_top_pgt") {
            if let Some(p) = space.linear(v) {
                space.page_tables = Some(PageTables::new(p, format));
            }
        }

        // With the kernel's parsed BTF (`*btf_vmlinux`, absent until BPF first needs it), whose
        // index of a name-sorted blob spares reading all of it (`layout::sorted`).
        let parsed_btf = btf_vmlinux.and_then(Result::ok).filter(|&p| p != 0).map(|p| (KVirt(p), KERNEL_STRUCT_READ));
        let (vmcoreinfo, parsed_btf) =
            read_vmcoreinfo(&space, vmci_data.and_then(Result::ok), vmci_size.and_then(Result::ok), parsed_btf);
        if let (Some((s, e)), Some(raw), Some(h)) = (btf, parsed_btf, btf_blob.header) {
            let head = btf_blob.data.get(..24).unwrap_or_default();
            if let Some(ix) = KernelIndex::parse(&raw, s.0, e.0 - s.0, head, &h) {
                btf_blob.use_index(ix);
            }
        }
        let vmcoreinfo_check = match vmcoreinfo.as_ref().and_then(|v| agrees_with_vmcoreinfo(&found.kallsyms, v)) {
            Some(true) => ", VMCOREINFO agrees",
            Some(false) => {
                tracing::warn!("VMCOREINFO's kallsyms entries point elsewhere than the tables found (and verified) in memory");
                ", VMCOREINFO disagrees"
            }
            None => "",
        };
        let text_virt = sym("_text")
            .or(found.kallsyms.relative_base)
            .ok_or_else(|| KernelError::Inconsistent("kallsyms has no _text and no relative base".into()))?;
        let text_phys = space.linear(text_virt).unwrap_or(PhysAddr(0));
        let computed_offset = text_virt.0.wrapping_sub(START_KERNEL_MAP + DEFAULT_PHYSICAL_START);
        let kaslr_virt_offset = match vmcoreinfo.as_ref().and_then(|v| v.kernel_offset()) {
            Some(k) => {
                if k != computed_offset {
                    tracing::warn!(vmcoreinfo = format!("{k:#x}"), computed = format!("{computed_offset:#x}"), "KERNELOFFSET differs (CONFIG_PHYSICAL_START not the default?)");
                }
                k
            }
            None => computed_offset,
        };
        let info = KernelInfo {
            release: banner.release().to_owned(),
            banner: banner.text.clone(),
            banner_phys: banner.phys,
            rodata_phys: found.rodata,
            rodata_virt: KVirt(found.rodata.0.wrapping_sub(phys_base).wrapping_add(START_KERNEL_MAP)),
            num_syms: found.kallsyms.num_syms,
            kallsyms_format: format!(
                "{:?}, {:?}, found by {}, placed by {placed_by}{vmcoreinfo_check}",
                found.kallsyms.order, found.kallsyms.mode, found.kallsyms_from
            ),
            kallsyms_all,
            text_virt,
            text_phys,
            phys_base,
            kaslr_virt_offset,
            kaslr_phys_offset: (text_phys.0 as i64).wrapping_sub(DEFAULT_PHYSICAL_START as i64),
            page_offset_base,
            page_offset_base_from: if page_offset_base.is_some() { "kallsyms page_offset_base" } else { "unknown" },
            paging: format.name,
            init_task: sym("init_task"),
            init_task_from: if sym("init_task").is_some() { "kallsyms" } else { "unknown" },
            init_top_pgt: sym("init_top_pgt"),
            btf,
            ikconfig: pair("kernel_config_data", "kernel_config_data_end"),
            // Without the symbol: .data starts on a 2 MiB boundary after .rodata, which holds
            // the kallsyms tables.
            data_start: sym("__start_init_task").or_else(|| {
                let end = kallsyms.end().0.wrapping_sub(phys_base).wrapping_add(START_KERNEL_MAP);
                Some(KVirt(end.checked_add(ALIGN_2M - 1)? & !(ALIGN_2M - 1)))
            }),
            // IKCONFIG is in .rodata, before `__ksymtab`; without that (a data symbol), before
            // `.init.text`, which follows `.rodata` and `.data` (the kallsyms tables are not a
            // bound: they sit anywhere in .rodata, before or after IKCONFIG).
            rodata_search_end: sym("__start___ksymtab").or(sym("_sinittext")),
            vmcoreinfo,
            scan_candidates: found.candidates_probed,
        };
        Ok(Kernel { info, found, kallsyms, space, btf_blob: std::sync::Mutex::new(btf_blob) })
    }

    /// Addresses of named symbols (`None` where absent).
    pub fn symbols(&self, names: &[&str]) -> Result<Vec<Option<KVirt>>, KallsymsError> {
        self.kallsyms.lookup(self.space.mem(), names)
    }

    /// Record the direct-map base once known (see [`super::anchor`]).
    pub fn set_page_offset_base(&mut self, pob: KVirt, from: &'static str) {
        self.space.page_offset_base = Some(pob);
        self.info.page_offset_base = Some(pob);
        self.info.page_offset_base_from = from;
        if pob.0 < 0xff80_0000_0000_0000 {
            self.space.format = &X86_64_5LEVEL;
            self.info.paging = X86_64_5LEVEL.name;
        }
    }

    /// Record `init_task` once found.
    pub fn set_init_task(&mut self, v: KVirt, from: &'static str) {
        self.info.init_task = Some(v);
        self.info.init_task_from = from;
    }
}

/// Find `phys_base` and the real banner.
fn place_image(
    mem: &dyn PhysMem,
    found: &Found,
    start_rodata: Option<KVirt>,
    linux_banner: Option<KVirt>,
) -> Result<(u64, Banner), KernelError> {
    let pairs = [(start_rodata, Some(found.rodata)), (linux_banner, Some(found.banner.phys))];
    let candidates: Vec<u64> = pairs
        .iter()
        .filter_map(|&(v, p)| Some(p?.0.wrapping_sub(v?.0.wrapping_sub(START_KERNEL_MAP))))
        .collect();
    if candidates.is_empty() {
        return Err(KernelError::CannotPlaceImage);
    }
    match linux_banner {
        Some(bv) => candidates
            .into_iter()
            .find_map(|pb| {
                let p = PhysAddr(bv.0.wrapping_sub(START_KERNEL_MAP).wrapping_add(pb));
                let text = parse_banner(&read_vec(mem, p, 512).ok()?)?;
                let b = Banner { phys: p, text };
                (b.release() == found.banner.release()).then_some((pb, b))
            })
            .ok_or_else(|| KernelError::Inconsistent("no placement of the image puts a banner at linux_banner".into())),
        None => {
            // Only `__start_rodata`: both it and the frame must be 2 MiB aligned (x86-64).
            let v = start_rodata.ok_or(KernelError::CannotPlaceImage)?;
            if v.0 % ALIGN_2M != 0 || found.rodata.0 % ALIGN_2M != 0 {
                return Err(KernelError::Inconsistent(format!("__start_rodata {v} is not 2 MiB aligned")));
            }
            Ok((candidates[0], found.banner.clone()))
        }
    }
}

/// The values of the image's variables `(name, bytes)` that kallsyms names (`sym`), read in
/// one batch, little-endian (`None` for a variable without a symbol), and the bytes of `raw`
/// in the same batch.
fn image_vars<const N: usize>(
    space: &KernelSpace<'_>,
    vars: [(&str, usize); N],
    sym: &dyn Fn(&str) -> Option<KVirt>,
    raw: Option<(KVirt, usize)>,
) -> ([Option<Result<u64, KSpaceError>>; N], Option<Result<Vec<u8>, KSpaceError>>) {
    let at: [Option<(KVirt, usize)>; N] = vars.map(|(name, len)| Some((sym(name)?, len)));
    let mut read = space.read_many(&at.iter().flatten().copied().chain(raw).collect::<Vec<_>>()).into_iter();
    let vals = at.map(|a| {
        let (addr, _) = a?;
        Some(read.next().unwrap_or(Err(KSpaceError::Unmapped { addr })).map(|b| b.iter().rev().fold(0u64, |v, &x| v << 8 | u64::from(x))))
    });
    (vals, raw.and_then(|_| read.next()))
}

/// The VMCOREINFO text, from the values of `vmcoreinfo_data` (its address) and
/// `vmcoreinfo_size`, and the bytes of `with`, read in the same batch.
fn read_vmcoreinfo(
    space: &KernelSpace<'_>,
    data: Option<u64>,
    size: Option<u64>,
    with: Option<(KVirt, usize)>,
) -> (Option<VmcoreInfo>, Option<Vec<u8>>) {
    let text = data.zip(size).filter(|&(p, n)| p != 0 && n != 0).map(|(p, n)| (KVirt(p), (n as usize).min(vmcoreinfo::MAX_BYTES)));
    let mut got = space.read_many(&text.into_iter().chain(with).collect::<Vec<_>>()).into_iter();
    let v = text.and_then(|_| got.next()?.ok()).map(|b| VmcoreInfo::parse(&b)).filter(|v| !v.is_empty());
    (v, with.and_then(|_| got.next()?.ok()))
}
