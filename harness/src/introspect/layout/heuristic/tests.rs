//! Tests of the heuristic method: against each corpus kernel's true offsets (reference
//! `layout.json`, from the kernel's own build — read here only, never by the method), against
//! the guest's `/proc` truth through the walker, and on adversarial memory built by hand.

use std::collections::BTreeMap;

use emulator::mem::PhysMem;
use rstest::rstest;

use super::*;
use crate::introspect::compare::compare;
use crate::introspect::counting::CountingMem;
use crate::introspect::kernel::Kernel;
use crate::introspect::layout::{learn, LayoutInputs};
use crate::introspect::ps::{ps, PsOptions};
use crate::introspect::scan::ScanConfig;
use crate::introspect::source;
use crate::lab::corpus::{Corpus, DumpFormat, Entry, Mode};

const BUILD: &str = "run `cargo run --release -p harness -- corpus build`";

fn entry(name: &str) -> Entry {
    Corpus::open_default().entry(name).unwrap_or_else(|e| panic!("corpus entry {name} is not available ({e}); {BUILD}"))
}

fn mode(m: &str) -> Mode {
    match m {
        "running" => Mode::Running,
        _ => Mode::Panicked,
    }
}

fn dump(e: &Entry, m: Mode) -> Box<dyn PhysMem> {
    let path = e.dump_path(m, DumpFormat::Elf).unwrap_or_else(|| panic!("{}: no {} ELF dump; {BUILD}", e.name, m.as_str()));
    source::open_image(&path, None).unwrap_or_else(|err| panic!("{err}; {BUILD}"))
}

/// The heuristic's offsets under the reference's names.
fn ours(l: &Layout) -> BTreeMap<&'static str, u64> {
    let mut m = BTreeMap::from([
        ("task_struct.tasks", l.task.tasks),
        ("task_struct.pid", l.task.pid),
        ("task_struct.tgid", l.task.tgid),
        ("task_struct.real_parent", l.task.real_parent),
        ("task_struct.thread_node", l.task.thread_node),
        ("task_struct.signal", l.task.signal),
        ("task_struct.real_cred", l.task.real_cred),
        ("task_struct.__state", l.task.state),
        ("task_struct.exit_state", l.task.exit_state),
        ("task_struct.comm", l.task.comm),
        ("task_struct.mm", l.task.mm),
        ("task_struct.flags", l.task.flags),
        ("task_struct.start_boottime", l.task.start_boottime),
        ("mm_struct.pgd", l.mm.pgd),
        ("mm_struct.arg_start", l.mm.arg_start),
        ("mm_struct.arg_end", l.mm.arg_end),
        ("cred.uid", l.cred.uid),
        ("signal_struct.thread_head", l.signal.thread_head),
    ]);
    if let Some(n) = l.signal.nr_threads {
        m.insert("signal_struct.nr_threads", n);
    }
    m
}

/// Run the method on a dump, counting its reads separately from the scan's.
fn infer_on(mem: &dyn PhysMem) -> (Result<Inference, LayoutError>, crate::introspect::counting::ReadCount) {
    let counted = CountingMem::new(mem);
    let found = Kernel::scan(&counted, &ScanConfig::default()).expect("scan");
    let kernel = Kernel::open(&counted, found).expect("kernel");
    let before = counted.count();
    let r = infer(&kernel);
    (r, counted.count().since(before))
}

#[rstest]
fn offsets_equal_the_kernels_own(
    #[values("deb-amd64", "deb-cloud-amd64")] name: &str,
    #[values("running", "panicked")] m: &str,
) {
    let e = entry(name);
    let reference = e.layout().unwrap_or_else(|err| panic!("{name}: {err}; {BUILD}"));
    let mem = dump(&e, mode(m));
    let (r, cost) = infer_on(mem.as_ref());
    if let Err(e) = &r {
        let counted = CountingMem::new(mem.as_ref());
        let kernel = Kernel::open(&counted, Kernel::scan(&counted, &ScanConfig::default()).unwrap()).unwrap();
        let g = ground::ground(&kernel);
        eprintln!("{e}: ground notes {:?}", g.map(|g| g.notes));
    }
    let inf = r.unwrap_or_else(|err| panic!("{name} {m}: {err}"));
    eprintln!("{name} {m}: {cost:?}, sampled {} leaders + {} threads, weak {:?}", inf.sampled_leaders, inf.sampled_threads, inf.weak);
    eprintln!("{:#?}", inf.layout);
    let mut wrong = Vec::new();
    for (k, v) in ours(&inf.layout) {
        match reference.offset(k) {
            Some(r) if r == v => {}
            r => wrong.push(format!("{k}: ours {v}, true {r:?}")),
        }
    }
    assert_eq!(reference.sizes.get("task_struct"), Some(&inf.layout.task.size), "{name}: task_struct size");
    assert!(wrong.is_empty(), "{name} {m}: {wrong:#?}");
}
