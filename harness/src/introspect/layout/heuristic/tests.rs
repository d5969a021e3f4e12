//! Tests of the heuristic method: against each corpus kernel's true offsets (reference
//! `layout.json`, from the kernel's own build — read here only, never by the method), against
//! the kernel's own BTF where it has one, against the guest's `/proc` truth through the walker,
//! and on adversarial memory (a real dump with its lists broken, and memory built by hand).

use std::collections::BTreeMap;

use emulator::mem::{Counting, Counts, Patched, PhysAddr, PhysMem};
use rstest::rstest;

use super::probe::{find_ring, is_comm, swapper_names, Obj, Probe};
use super::{ground, signal};
use super::signal::follow_many;
use super::task::{pid_tgid, start_boottime, Sample};
use super::*;
use crate::introspect::compare::compare;
use crate::introspect::kernel::Kernel;
use crate::introspect::kspace::{KernelSpace, START_KERNEL_MAP};
use crate::introspect::layout::btf;
use crate::introspect::layout::build::build;

/// The layout the kernel's whole BTF gives (the `btf` method reads less of it, see its doc).
fn whole_btf_layout(kernel: &Kernel<'_>) -> Layout {
    build(&btf::load(kernel).expect("BTF")).expect("layout from BTF")
}
use crate::introspect::paging::X86_64_4LEVEL;
use crate::introspect::ps::{ps, PsOptions, Row};
use crate::introspect::scan::ScanConfig;
use crate::introspect::source;
use crate::introspect::testutil::VecMem;
use crate::introspect::walk::{walk, WalkConfig};
use crate::lab::corpus::{Corpus, DumpFormat, Entry, Mode};

const BUILD: &str = "run `cargo run --release -p harness -- corpus build`";

fn entry(name: &str) -> Entry {
    Corpus::open_default().entry(name).unwrap_or_else(|e| panic!("corpus entry {name} is not available ({e}); {BUILD}"))
}

fn mode(m: &str) -> Mode {
    match m {
        "running" => Mode::Running,
        "panicked" => Mode::Panicked,
        other => panic!("unknown mode {other}"),
    }
}

fn dump(e: &Entry, m: Mode) -> Box<dyn PhysMem> {
    let path = e.dump_path(m, DumpFormat::Elf).unwrap_or_else(|| panic!("{}: no {} ELF dump; {BUILD}", e.name, m.as_str()));
    source::open_image(&path, None).unwrap_or_else(|err| panic!("{err}; {BUILD}"))
}

fn open(mem: &dyn PhysMem) -> Kernel<'_> {
    let found = Kernel::scan(mem, &ScanConfig::default()).expect("scan");
    Kernel::open(mem, found).expect("kernel")
}

/// The heuristic's offsets under the reference's names.
fn named(l: &Layout) -> BTreeMap<&'static str, u64> {
    let mut m: BTreeMap<&'static str, u64> = l.walker_offsets().into_iter().collect();
    if let Some(n) = l.signal.nr_threads {
        m.insert("signal_struct.nr_threads", n);
    }
    m
}

/// The method on a dump, with the reads it cost (the scan's and kallsyms' excluded).
fn infer_counted(mem: &dyn PhysMem, data_symbols: bool) -> (Result<Inference, LayoutError>, Counts) {
    let counted = Counting::new(mem);
    let kernel = open(&counted);
    let before = counted.snapshot();
    let r = infer(&kernel, data_symbols);
    (r, counted.snapshot().since(before))
}

/// Every offset the reference has for a field the walker reads equals ours, and so does the
/// size of `task_struct` — with kallsyms' data symbols and without them.
#[rstest]
fn offsets_equal_the_kernels_own(
    #[values(
        "deb-amd64",
        "deb-cloud-amd64",
        "deb-rt-amd64",
        "custom-thesis",
        "custom-randstruct",
        "deb5.10-amd64",
        "deb6.12-amd64",
        "deb7-amd64"
    )]
    name: &str,
    #[values("running", "panicked")] m: &str,
    #[values(true, false)] data_symbols: bool,
) {
    let e = entry(name);
    let reference = e.layout().unwrap_or_else(|err| panic!("{name}: {err}; {BUILD}"));
    let mem = dump(&e, mode(m));
    let (r, cost) = infer_counted(mem.as_ref(), data_symbols);
    let inf = r.unwrap_or_else(|err| panic!("{name} {m} (data symbols {data_symbols}): {err}"));
    eprintln!(
        "COST {name} {m} data_symbols={data_symbols}: {} reads, {} bytes, {} batches; {} leaders + {} threads sampled; weak {:?}; {:?}",
        cost.reads, cost.bytes, cost.batches, inf.sampled_leaders, inf.sampled_threads, inf.weak, inf.notes
    );
    // Weak fields (chosen among value-identical candidates) may differ from the truth only where
    // structures are shuffled; elsewhere declaration order holds and there must be none.
    let config = std::fs::read_to_string(e.config_path()).unwrap_or_else(|err| panic!("{name}: config: {err}; {BUILD}"));
    let randstruct = config.lines().any(|l| l.trim() == "CONFIG_RANDSTRUCT_FULL=y");
    if !randstruct {
        assert!(inf.weak.iter().all(|w| *w == "worker.current_work"), "{name}: weak fields on an unshuffled layout: {:?}", inf.weak);
    }
    let weak_key = |k: &str| match k {
        "task_struct.real_parent" => inf.weak.contains(&"real_parent"),
        "task_struct.real_cred" => inf.weak.contains(&"real_cred"),
        "task_struct.mm" => inf.weak.contains(&"mm"),
        "task_struct.start_boottime" => inf.weak.contains(&"start_boottime"),
        "cred.uid" => inf.weak.contains(&"cred.uid"),
        "mm_struct.arg_end" => inf.weak.contains(&"mm_struct.arg_end/env_start"),
        _ => false,
    };
    let ours = named(&inf.layout);
    let mut wrong: Vec<String> = ours
        .iter()
        .filter(|(k, v)| reference.offset(k) != Some(**v) && !(randstruct && weak_key(k)))
        .map(|(k, v)| format!("{k}: ours {v}, true {:?}", reference.offset(k)))
        .collect();
    for (field, missing) in [
        ("signal_struct.nr_threads", inf.layout.signal.nr_threads.is_none()),
        ("task_struct.exit_state", inf.layout.task.exit_state.is_none()),
    ] {
        if missing && reference.offset(field).is_some() {
            wrong.push(format!("{field}: not inferred"));
        }
    }
    if reference.sizes.get("task_struct") != Some(&inf.layout.task.size) {
        wrong.push(format!("sizeof(task_struct): ours {}, true {:?}", inf.layout.task.size, reference.sizes.get("task_struct")));
    }
    assert!(wrong.is_empty(), "{name} {m} (data symbols {data_symbols}): {wrong:#?}");
}

/// Where the kernel has BTF, the whole layout — also the fields the reference does not list
/// (`env_*`, `worker_private`, `struct kthread`, `struct worker`) — equals the BTF method's.
#[rstest]
fn whole_layout_equals_btf_where_there_is_btf(
    #[values("deb-amd64", "deb-cloud-amd64", "deb-rt-amd64", "deb6.12-amd64")] name: &str,
    #[values("running", "panicked")] m: &str,
) {
    let e = entry(name);
    assert!(e.flags.btf, "{name} is listed here as a kernel with BTF; its entry says otherwise");
    let mem = dump(&e, mode(m));
    let kernel = open(mem.as_ref());
    let btf = whole_btf_layout(&kernel);
    let ours = infer(&kernel, true).unwrap_or_else(|err| panic!("{name} {m}: {err}")).layout;
    assert_eq!(ours, btf, "{name} {m}");
}

/// `ps` with the heuristic layout lists what the guest's `/proc` listed (with exactly the
/// tolerances of `introspect::compare`).
#[rstest]
fn ps_matches_truth(
    #[values(
        "deb-amd64",
        "deb-cloud-amd64",
        "deb-rt-amd64",
        "custom-thesis",
        "custom-randstruct",
        "deb5.10-amd64",
        "deb6.12-amd64",
        "deb7-amd64"
    )]
    name: &str,
    #[values("running", "panicked")] m: &str,
) {
    let e = entry(name);
    let m = mode(m);
    let mem = dump(&e, m);
    let report = ps(mem.as_ref(), &PsOptions { method: Some(MethodKind::Heuristic), ..Default::default() })
        .unwrap_or_else(|err| panic!("{name} {}: {err}", m.as_str()));
    assert!(report.walk_error.is_none(), "{name}: walk stopped early: {:?}", report.walk_error);
    let truth = e.truth(m).unwrap_or_else(|err| panic!("{name}: {err}; {BUILD}"));
    let c = compare(&report.rows, &truth);
    assert!(c.is_exact(), "{name} {}:\n{}", m.as_str(), c.describe());
    let layout_phase = report.stats.phases.iter().find(|p| p.name == "layout").map(|p| (p.reads, p.bytes, p.batches));
    eprintln!("PS {name} {}: {} rows, layout phase (reads, bytes, batches) {layout_phase:?}", m.as_str(), report.rows.len());
}

/// The walker over the layout inferred without data symbols, from the `init_task` and
/// direct-map base the inference found itself, also lists the truth.
#[rstest]
fn walk_without_data_symbols_matches_truth(#[values("deb-amd64", "deb-cloud-amd64")] name: &str, #[values("running", "panicked")] m: &str) {
    let e = entry(name);
    let m = mode(m);
    let mem = dump(&e, m);
    let kernel = open(mem.as_ref());
    let inf = infer(&kernel, false).unwrap_or_else(|err| panic!("{name}: {err}"));
    assert_eq!(Some(inf.init_task), kernel.info.init_task, "init_task found in .data is kallsyms' init_task");
    assert_eq!(inf.page_offset_base, kernel.info.page_offset_base, "direct-map base");
    let mut space = kernel.space.clone();
    space.page_offset_base = inf.page_offset_base;
    let out = walk(&space, &inf.layout, inf.init_task, WalkConfig::default());
    assert!(out.error.is_none(), "{:?}", out.error);
    let mut rows: Vec<Row> = out.threads.iter().map(Row::from_thread).collect();
    rows.sort_by_key(|r| (r.pid, r.tgid));
    let c = compare(&rows, &e.truth(m).unwrap_or_else(|err| panic!("{err}; {BUILD}")));
    assert!(c.is_exact(), "{name}:\n{}", c.describe());
}

// ---------------------------------------------------------------------------------------------
// Adversarial memory.

/// The real deb-amd64 running dump, its kernel, its true layout and `init_task`.
fn patched_setup() -> (Box<dyn PhysMem>, Layout, KVirt) {
    let e = entry("deb-amd64");
    let mem = dump(&e, Mode::Running);
    let (layout, init) = {
        let kernel = open(mem.as_ref());
        (whole_btf_layout(&kernel), kernel.info.init_task.expect("init_task"))
    };
    (mem, layout, init)
}

fn phys_of(mem: &dyn PhysMem, v: u64) -> u64 {
    let kernel = open(mem);
    kernel.space.to_phys(KVirt(v)).expect("translate").0
}

fn read_u64(mem: &dyn PhysMem, phys: u64) -> u64 {
    let mut b = [0u8; 8];
    mem.read_phys(PhysAddr(phys), &mut b).expect("read");
    u64::from_le_bytes(b)
}

fn expect_failed(mem: &dyn PhysMem, what: &str) -> String {
    let kernel = open(mem);
    match infer(&kernel, true) {
        Err(LayoutError::Failed { method: MethodKind::Heuristic, reason }) => reason,
        Err(other) => panic!("{what}: expected Failed, got {other}"),
        Ok(inf) => panic!("{what}: inferred a layout from broken memory: {:?}", inf.layout),
    }
}

/// `init_task.tasks` made an empty list: no task list can be found.
#[test]
fn init_task_without_its_list_fails() {
    let (mem, l, init) = patched_setup();
    let head = init.0 + l.task.tasks;
    let p = phys_of(mem.as_ref(), head);
    let mut bytes = head.to_le_bytes().to_vec();
    bytes.extend_from_slice(&head.to_le_bytes());
    let broken = Patched::new(mem.as_ref(), vec![(PhysAddr(p), bytes)]);
    let reason = expect_failed(&broken, "empty task list");
    assert!(reason.contains("list") || reason.contains("ambiguous"), "{reason}");
}

/// The task list bent into a loop that never returns to `init_task` (back links kept
/// consistent, so only the visited set can notice): an error, not a hang.
#[test]
fn task_list_loop_fails() {
    let (mem, l, init) = patched_setup();
    let off = l.task.tasks;
    // Nodes of the first members.
    let mut nodes = vec![init.0 + off];
    for _ in 0..6 {
        let last = *nodes.last().unwrap_or(&0);
        nodes.push(read_u64(mem.as_ref(), phys_of(mem.as_ref(), last)));
    }
    // member 5 → member 2, and member 2's prev ← member 5.
    let (n2, n5) = (nodes[2], nodes[5]);
    let patches = vec![(PhysAddr(phys_of(mem.as_ref(), n5)), n2.to_le_bytes().to_vec()), (PhysAddr(phys_of(mem.as_ref(), n2) + 8), n5.to_le_bytes().to_vec())];
    let broken = Patched::new(mem.as_ref(), patches);
    expect_failed(&broken, "task list loop");
}

/// Every sampled task's `comm` erased: the list no longer names tasks.
#[test]
fn nameless_tasks_fail() {
    let (mem, l, init) = patched_setup();
    let off = l.task.tasks;
    let mut node = read_u64(mem.as_ref(), phys_of(mem.as_ref(), init.0 + off));
    let mut patches = Vec::new();
    for _ in 0..4 {
        patches.push((PhysAddr(phys_of(mem.as_ref(), node - off + l.task.comm)), vec![0x01; 16]));
        node = read_u64(mem.as_ref(), phys_of(mem.as_ref(), node));
    }
    let broken = Patched::new(mem.as_ref(), patches);
    expect_failed(&broken, "nameless tasks");
}

/// Hand-built memory: `init_task` in the image, its list heads leading into the direct map.
const POB: u64 = 0xffff_8880_0000_0000;
const INIT_PHYS: u64 = 0x1000;
const TASKS: u64 = 0x200;
const COMM: u64 = 0x210;

fn image(phys: u64) -> u64 {
    START_KERNEL_MAP + phys
}

fn fabricated(size: usize) -> VecMem {
    let mut m = VecMem::new(size);
    m.write(INIT_PHYS + COMM, b"swapper/0\0\0\0\0\0\0\0");
    m
}

fn space(m: &VecMem) -> KernelSpace<'_> {
    KernelSpace::new(m, 0, Some(KVirt(POB)), &X86_64_4LEVEL)
}

fn init_obj(s: &KernelSpace<'_>) -> Obj {
    Probe { space: s }.objs(&[KVirt(image(INIT_PHYS))], 0x1000, "init").expect("init").remove(0)
}

/// A list from `init_task` through a chain of named nodes longer than any bound, never
/// returning: `find_ring` gives up after `MAX_RING` nodes with an error.
#[test]
fn endless_list_is_bounded() {
    let n = probe::MAX_RING + 8;
    let mut m = fabricated(0x10000 + 32 * (n + 1));
    let node = |k: usize| 0x10000 + 32 * k as u64;
    let head = image(INIT_PHYS + TASKS);
    m.write_u64(INIT_PHYS + TASKS, POB + node(0));
    m.write_u64(INIT_PHYS + TASKS + 8, POB + node(n - 1));
    for k in 0..n {
        m.write_u64(node(k), POB + node(k + 1));
        m.write_u64(node(k) + 8, if k == 0 { head } else { POB + node(k - 1) });
        m.write(node(k) + 16, b"task\0"); // comm at task + COMM = node + 16
    }
    let s = space(&m);
    let err = find_ring(&Probe { space: &s }, &init_obj(&s), &[COMM]).expect_err("no ring");
    assert!(err.to_string().contains("init_task.tasks not found"), "{err}");
}

/// A three-node cycle off `init_task` that never comes back: an error.
#[test]
fn cycle_without_head_fails() {
    let mut m = fabricated(0x20000);
    let head = image(INIT_PHYS + TASKS);
    let nodes = [0x10000u64, 0x10020, 0x10040];
    m.write_u64(INIT_PHYS + TASKS, POB + nodes[0]);
    m.write_u64(INIT_PHYS + TASKS + 8, POB + nodes[2]);
    for (k, &nd) in nodes.iter().enumerate() {
        m.write_u64(nd, POB + nodes[(k + 1) % 3]);
        m.write_u64(nd + 8, if k == 0 { head } else { POB + nodes[k - 1] });
        m.write(nd + 16, b"t\0");
    }
    let s = space(&m);
    assert!(find_ring(&Probe { space: &s }, &init_obj(&s), &[COMM]).is_err());
    // The same cycle as a thread list: follow_many stops too.
    let r = follow_many(&Probe { space: &s }, &[(KVirt(head), KVirt(POB + nodes[0]))], 0, 1 << 14);
    assert!(r[0].is_err(), "{r:?}");
}

/// A proper two-member ring is found, with its comm offset; list pointers outside memory or
/// misaligned kill a candidate without an error escaping.
#[test]
fn small_ring_is_found() {
    let mut m = fabricated(0x20000);
    let head = image(INIT_PHYS + TASKS);
    let (a, b) = (0x10000u64, 0x11000u64);
    m.write_u64(INIT_PHYS + TASKS, POB + a + TASKS);
    m.write_u64(INIT_PHYS + TASKS + 8, POB + b + TASKS);
    m.write_u64(a + TASKS, POB + b + TASKS);
    m.write_u64(a + TASKS + 8, head);
    m.write_u64(b + TASKS, head);
    m.write_u64(b + TASKS + 8, POB + a + TASKS);
    m.write(a + COMM, b"init\0");
    m.write(b + COMM, b"kthreadd\0");
    // A decoy list head pointing past the end of memory, and a misaligned one.
    m.write_u64(INIT_PHYS + 0x300, POB + 0x7fff_0000);
    m.write_u64(INIT_PHYS + 0x308, POB + 0x7fff_0000);
    m.write_u64(INIT_PHYS + 0x310, POB + 0x10003);
    m.write_u64(INIT_PHYS + 0x318, POB + 0x10003);
    let s = space(&m);
    let ring = find_ring(&Probe { space: &s }, &init_obj(&s), &[COMM]).expect("ring");
    assert_eq!((ring.tasks, ring.comm), (TASKS, COMM));
    assert_eq!(ring.members, vec![KVirt(POB + a), KVirt(POB + b)]);
}

#[test]
fn names() {
    assert_eq!(swapper_names(b"xxswapper/0\0\0\0\0\0\0\0yy"), vec![2]);
    assert_eq!(swapper_names(b"swapper\0\0\0\0\0\0\0\0\0"), vec![0]);
    assert!(swapper_names(b"swapper/\0\0\0\0\0\0\0\0").is_empty());
    assert!(swapper_names(b"swapper/0x\0\0\0\0\0\0").is_empty());
    assert!(swapper_names(b"swapper/0\0\0\0\0\0\0z").is_empty(), "stale bytes after an idle name");
    assert!(is_comm(b"na\xc3\xafve\xff\0garbage\x01\x02\x03\x04"));
    assert!(!is_comm(b"\0abc"));
    assert!(!is_comm(b"abcdefghijklmnop"), "no NUL within 16 bytes");
    assert!(!is_comm(b"ab\x01\0"));
}

fn obj(addr: u64, words: &[(u64, u64)], len: usize) -> Obj {
    let mut bytes = vec![0u8; len];
    for &(o, v) in words {
        bytes[o as usize..o as usize + 8].copy_from_slice(&v.to_le_bytes());
    }
    Obj { addr: KVirt(addr), bytes }
}

/// With no threads, two pid-like offsets are pid then tgid; three are an error naming them.
#[test]
fn pid_tgid_ambiguity_is_an_error() {
    let init = obj(0, &[], 64);
    let leaders: Vec<Obj> = (1..=3u64).map(|p| obj(p * 0x1000, &[(8, p | p << 32), (16, p)], 64)).collect();
    let s = Sample { init: &init, leaders: &leaders, threads: &[], win: 64, comm: 32 };
    assert_eq!(pid_tgid(&s, &[8, 12]).expect("two"), (8, 12));
    let err = pid_tgid(&s, &[8, 12, 16]).expect_err("three");
    assert!(err.to_string().contains("[8, 12, 16]"), "{err}");
}

/// A constant is not a clock; `start_time`/`start_boottime` with equal values: the later.
#[test]
fn start_boottime_rules() {
    let init = obj(0, &[], 64);
    let leaders: Vec<Obj> = (1..=4u64).map(|k| obj(k * 0x1000, &[(8, 50_000), (16, k * 1_000_000), (24, k * 1_000_000)], 64)).collect();
    let s = Sample { init: &init, leaders: &leaders, threads: &[], win: 64, comm: 40 };
    assert_eq!(start_boottime(&s, &[]).expect("clock"), (24, vec![16, 24]));
    assert_eq!(start_boottime(&s, &[(24, 8)]).expect("clock"), (16, vec![16]));
}

/// Several long named chains off `init_task` at once: the ring search stops at its total
/// budget, not after each chain's own bound.
#[test]
fn ring_search_has_a_total_budget() {
    let (chains, n) = (5usize, probe::MAX_RING);
    let base = 0x10000u64;
    let stride = n + 8;
    let mut m = fabricated(base as usize + 32 * chains * stride);
    for c in 0..chains {
        let node = |k: usize| base + 32 * (c * stride + k) as u64;
        // Heads below COMM, 64 bytes apart: member k's name (node - head_off + COMM) is then the
        // name field (+16) of the same chain's slot k + 2c.
        let head_off = COMM - 16 - 64 * c as u64;
        let head = image(INIT_PHYS + head_off);
        m.write_u64(INIT_PHYS + head_off, POB + node(0));
        m.write_u64(INIT_PHYS + head_off + 8, POB + node(n - 1));
        for k in 0..stride {
            m.write(node(k) + 16, b"t\0");
        }
        for k in 0..n {
            m.write_u64(node(k), POB + node(k + 1));
            m.write_u64(node(k) + 8, if k == 0 { head } else { POB + node(k - 1) });
        }
    }
    let s = space(&m);
    let err = find_ring(&Probe { space: &s }, &init_obj(&s), &[COMM]).expect_err("budget");
    assert!(err.to_string().contains("list nodes followed"), "{err}");
}

/// Thread lists: a total node budget across all groups.
#[test]
fn thread_lists_have_a_total_budget() {
    let n = signal::MAX_NODES / 2 + 8;
    let mut m = VecMem::new(0x1000 + 2 * 16 * (n + 1) + 0x1000);
    let mut lists = Vec::new();
    for l in 0..3u64 {
        // Two chains of n nodes; the third list shares the first's nodes (it dies on the back link).
        let c = l.min(1);
        let node = |k: usize| 0x1000 + 16 * (c * (n as u64 + 1) + k as u64);
        let head = POB + 0x100 + 16 * l;
        for k in 0..n {
            m.write_u64(node(k), POB + node(k + 1));
            m.write_u64(node(k) + 8, if k == 0 { POB + 0x100 + 16 * c } else { POB + node(k - 1) });
        }
        lists.push((KVirt(head), KVirt(POB + node(0))));
    }
    let s = space(&m);
    let r = follow_many(&Probe { space: &s }, &lists, 0, 1 << 20);
    assert!(r.iter().all(|x| x.is_err()), "{:?}", r.iter().map(|x| x.as_ref().map(|v| v.len())).collect::<Vec<_>>());
    assert!(r[0].as_ref().expect_err("budget").contains("in all"));
}

/// `.data` with `init_task` in it (three words pointing at its own start, its name 2 KiB in)
/// after decoys: a "swapper" name with too few self-pointers, and non-idle names.
#[test]
fn init_task_is_found_in_data() {
    let mut m = VecMem::new(0x60000); // the search reads .data in 256 KiB chunks
    let data = 0x10000u64;
    m.write(data + 0x100, b"swapper/0\0\0\0\0\0\0\0"); // decoy: no task around it
    m.write(data + 0x800, b"swapperX\0\0\0\0\0\0\0\0");
    let task = data + 0x4000;
    for o in [0x500u64, 0x508, 0x540] {
        m.write_u64(task + o, image(task));
    }
    m.write(task + 0x800, b"swapper/0\0\0\0\0\0\0\0");
    let s = space(&m);
    let found = ground::search_init_task(&s, KVirt(image(data))).expect("init_task");
    assert_eq!(found, KVirt(image(task)));
}

/// `.data` full of idle-task names: the search gives up after a bounded number of them.
#[test]
fn init_task_search_is_bounded() {
    let mut m = VecMem::new(0x80000);
    for k in 0..0x4000u64 {
        m.write(0x10000 + 16 * k, b"swapper/0\0\0\0\0\0\0\0");
    }
    let s = space(&m);
    let err = ground::search_init_task(&s, KVirt(image(0x10000))).expect_err("bounded");
    assert!(err.to_string().contains("idle-task names"), "{err}");
}

/// The direct-map base: list heads whose nodes point back only under one 1 GiB-aligned base.
#[test]
fn direct_map_base_by_votes() {
    let pob = 0xffff_9b00_0000_0000u64; // 1 GiB aligned, as CONFIG_RANDOMIZE_MEMORY places it
    let mut m = fabricated(0x20000);
    for (k, phys) in [(0u64, 0x10000u64), (1, 0x11000)] {
        let head = image(INIT_PHYS + TASKS + 16 * k);
        m.write_u64(INIT_PHYS + TASKS + 16 * k, pob + phys);
        m.write_u64(INIT_PHYS + TASKS + 16 * k + 8, pob + phys);
        m.write_u64(phys, head);
        m.write_u64(phys + 8, head);
    }
    let mut s = space(&m);
    s.page_offset_base = None;
    let init = Probe { space: &s }.objs(&[KVirt(image(INIT_PHYS))], 0x1000, "init").expect("init").remove(0);
    assert_eq!(ground::direct_map_base(&s, &init).expect("base"), KVirt(pob));
}
