//! Cut the memory seeds of the `ps`, `walk`, `paging`, `kallsyms` and `trampoline` targets from
//! a real dump: run the engine on it and keep exactly the 4 KiB pages each part read, as
//! `SparseMem` encodings (with the target's header where it has one).
//!
//!     cargo run --release --manifest-path fuzz/Cargo.toml --example record_reads -- DUMP OUTDIR NAME
//!
//! Writes OUTDIR/{ps,walk,paging,kallsyms,trampoline}/NAME. `ps` uses the `static` layout method where its
//! offsets fit, else `heuristic` (neither reads BTF, so the seed stays a few MB before
//! compression).
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;

use emulator::mem::{MemError, PhysAddr, PhysMem, PhysRange};
use harness::introspect::addr::KVirt;
use harness::introspect::kernel::Kernel;
use harness::introspect::kspace::KernelSpace;
use harness::introspect::layout::fixed::debian_6_1_amd64;
use harness::introspect::layout::MethodKind;
use harness::introspect::paging::translate_many;
use harness::introspect::ps::{ps, PsOptions};
use harness::introspect::scan::ScanConfig;
use harness::introspect::walk::{walk, WalkConfig};
use netdma_fuzz::{SparseMem, PAGE};

struct Recording<'m> {
    inner: &'m dyn PhysMem,
    pages: Mutex<BTreeSet<u64>>,
}

impl<'m> Recording<'m> {
    fn new(inner: &'m dyn PhysMem) -> Self {
        Recording { inner, pages: Mutex::new(BTreeSet::new()) }
    }
    /// The pages read so far, with their bytes (all-zero pages left out: they read as zeros).
    fn take(&self) -> SparseMem {
        let ram = self.inner.ranges().iter().map(|r| r.end.0).max().unwrap_or(0);
        let mut mem = SparseMem { ram, pages: Default::default() };
        for n in std::mem::take(&mut *self.pages.lock().unwrap()) {
            let mut page = vec![0u8; PAGE as usize];
            if self.inner.read_phys(PhysAddr(n * PAGE), &mut page).is_ok() && page.iter().any(|&b| b != 0) {
                mem.pages.insert(n, page.into_boxed_slice());
            }
        }
        mem
    }
}

impl PhysMem for Recording<'_> {
    fn read_phys(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        if !buf.is_empty() {
            let mut p = self.pages.lock().unwrap();
            for n in addr.0 / PAGE..=(addr.0 + buf.len() as u64 - 1) / PAGE {
                p.insert(n);
            }
        }
        self.inner.read_phys(addr, buf)
    }
    fn ranges(&self) -> Vec<PhysRange> {
        self.inner.ranges()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

fn write(dir: &Path, target: &str, name: &str, head: &[u8], mem: &SparseMem) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("creating the seed directory");
    let mut bytes = head.to_vec();
    bytes.extend(mem.encode());
    eprintln!("{target}/{name}: {} pages, {} bytes", mem.pages.len(), bytes.len());
    std::fs::write(d.join(name), bytes).expect("writing the seed");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dump), Some(out), Some(name)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: record_reads DUMP OUTDIR NAME");
        std::process::exit(2);
    };
    let out = Path::new(out);
    let img = emulator::image::open(dump.as_ref(), None, None).expect("opening the dump");
    let rec = Recording::new(&img);

    // ps: the whole engine.
    // `static` where its offsets fit (6.1), else the heuristic (reads no BTF either).
    let report = ps(&rec, &PsOptions { method: Some(MethodKind::Static), ..Default::default() })
        .or_else(|_| {
            let _ = rec.take();
            ps(&rec, &PsOptions { method: Some(MethodKind::Heuristic), ..Default::default() })
        })
        .expect("ps on the dump");
    eprintln!("ps: {} tasks, walk error {:?}", report.rows.len(), report.walk_error);
    write(out, "ps", name, &[], &rec.take());

    // kallsyms: what finding and decoding the tables reads, from .rodata on (the target searches
    // the span of the pages it is given).
    let _ = rec.take();
    let found = Kernel::scan(&rec, &ScanConfig::default()).expect("scan");
    let rodata_page = found.rodata.0 / PAGE;
    let kernel = Kernel::open(&rec, found).expect("kernel");
    let mut ks = rec.take();
    ks.pages.retain(|&n, _| n >= rodata_page);
    write(out, "kallsyms", name, &[], &ks);

    // walk: the tasks and their page tables, from init_task, with the kernel's own space.
    let space = kernel.space.clone();
    let init_task = kernel.info.init_task.expect("init_task in kallsyms");
    let root = space.page_tables.map(|p| p.root.0).unwrap_or(0);
    let pob = space.page_offset_base.expect("page_offset_base");
    let rec2 = Recording::new(&img);
    let mut walk_space = KernelSpace::new(&rec2, space.phys_base, Some(pob), space.format);
    walk_space.page_tables = space.page_tables;
    let w = walk(&walk_space, &debian_6_1_amd64(), init_task, WalkConfig::default());
    eprintln!("walk: {} threads", w.threads.len());
    let mut head = Vec::new();
    for v in [space.phys_base, pob.0, init_task.0, root] {
        head.extend_from_slice(&v.to_le_bytes());
    }
    write(out, "walk", name, &head, &rec2.take());

    // paging: the kernel page tables, translating init_task and a few other kernel addresses.
    let pt = space.page_tables.expect("kernel page tables");
    let vas = [init_task.0, kernel.info.text_virt.0, pob.0 + 0x1000, pob.0 + (64 << 20), 0xffff_ffff_ff5f_c000, 0x7fff_0000_0000];
    let rec3 = Recording::new(&img);
    let _ = translate_many(&rec3, &vas.iter().map(|&v| (pt, KVirt(v))).collect::<Vec<_>>());
    let mut head = Vec::new();
    head.extend_from_slice(&pt.root.0.to_le_bytes());
    head.push(0);
    for v in &vas {
        head.extend_from_slice(&v.to_le_bytes());
    }
    head.resize(64, 0);
    write(out, "paging", name, &head, &rec3.take());

    // trampoline: the low pages, the real-mode header and the tables that map the image.
    let rec4 = Recording::new(&img);
    let image = harness::introspect::trampoline::image_frames(&rec4).expect("the image's frames from the trampoline");
    eprintln!("trampoline: {} frames", image.frames.len());
    write(out, "trampoline", name, &[], &rec4.take());
}
