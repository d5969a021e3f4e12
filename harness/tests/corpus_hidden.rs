//! `hidden` over the corpus: no false positive on a clean kernel, and true positives from DKOM
//! done on real dumps in memory (a `Patched` overlay that unlinks one task from the task list
//! and one module from the module list, as `list_del` does).
//!
//! Independent truth: the guest's own `/proc` (`MODE/truth.jsonl`) and `/proc/modules`, which
//! the lab's agent records right before each dump. The task list is held against `/proc` (as
//! the ps tests do), and every other view against the list: on a clean kernel the pid allocator
//! has exactly the listed threads, the run queues only listed or idle tasks, the scan every
//! listed task, and the module tree exactly the listed modules.

mod common;

use std::collections::{BTreeSet, HashSet};

use common::*;
use emulator::mem::{Patched, PhysAddr, PhysMem};
use harness::introspect::addr::KVirt;
use harness::introspect::compare::compare;
use harness::introspect::hidden::cut::{Cut, Header};
use harness::introspect::hidden::{hidden, modtree, runqueue, HiddenOptions, HiddenReport, Kind, Status, View};
use harness::introspect::pidns;
use harness::introspect::layout::btf;
use harness::introspect::modules::{lsmod, LsmodOptions};
use harness::introspect::ps::{ps, PsOptions, Row};
use harness::lab::corpus::Mode;
use rstest::rstest;

const LIST_POISON1: u64 = 0xdead_0000_0000_0100;
const LIST_POISON2: u64 = 0xdead_0000_0000_0122;

fn run(mem: &dyn PhysMem, scan: bool) -> HiddenReport {
    hidden(mem, &HiddenOptions { scan, ..Default::default() }).unwrap_or_else(|err| panic!("{err}"))
}

fn view(r: &HiddenReport, v: View) -> &harness::introspect::hidden::ViewReport {
    r.views.iter().find(|x| x.view == v).unwrap_or_else(|| panic!("no view {v:?}"))
}

/// On every corpus kernel, running and panicked: nothing hidden; every view ran where its
/// prerequisites are (the pid allocator and the scan everywhere, run queues and the module
/// tree on the Debian kernels) and says why not elsewhere; each view's tasks agree with the
/// list, and the list with the guest's `/proc`.
#[rstest]
fn clean_kernels_hide_nothing(
    #[values(
        "deb-amd64",
        "deb-cloud-amd64",
        "deb-rt-amd64",
        "deb5.10-amd64",
        "deb6.12-amd64",
        "deb6.12-rt-amd64",
        "deb7-amd64",
        "deb7-cloud-amd64",
        "custom-thesis",
        "custom-randstruct",
        "custom-bare",
        "custom5.10-thesis",
        "custom5.10-bare",
        "custom6.12-thesis",
        "custom6.12-bare",
        "custom7-thesis",
        "custom7-randstruct",
        "custom7-bare",
        "custom-smp-preempt-kaslr",
        "custom7-modules",
        "custom-modules",
        "custom5.10-modules",
        "custom6.12-modules"
    )]
    name: &str,
    #[values("running", "panicked")] m: &str,
) {
    let e = entry(name);
    let m = mode(m);
    let mem = dump(&e, m);
    let r = run(mem.as_ref(), true);
    let tag = format!("{name} {}", m.as_str());
    assert!(r.findings.is_empty(), "{tag}: false positives {:#?}\nviews {:#?}", r.findings, r.views);
    assert_eq!(r.incomplete(), None, "{tag}");
    let debian = e.flags.btf;
    let t = e.modules_truth(m).unwrap_or_else(|err| panic!("{tag}: {err}"));
    let modules = !t.is_empty();
    let ran = |yes: bool| if yes { Status::Ran } else { Status::Unavailable };
    for (v, want) in [
        (View::List, Status::Ran),
        (View::Pid, Status::Ran),
        (View::Runqueue, ran(debian)),
        (View::Scan, Status::Ran),
        (View::Modules, ran(modules)),
        (View::ModTree, ran(debian)),
        (View::ModuleArea, ran(modules)),
    ] {
        assert_eq!(view(&r, v).status, want, "{tag}: view {v:?}: {:?}", view(&r, v));
    }
    if !debian {
        assert!(view(&r, View::Runqueue).how.contains("kallsyms has no runqueues") || view(&r, View::Runqueue).how.contains("BTF"), "{tag}");
        let why = if modules { "BTF" } else { "CONFIG_MODULES" };
        assert!(view(&r, View::ModTree).how.contains(why), "{tag}: {}", view(&r, View::ModTree).how);
    }
    if modules {
        // The module area has exactly the listed modules, which are /proc/modules.
        let (mods, area) = (view(&r, View::Modules), view(&r, View::ModuleArea));
        assert_eq!((mods.seen, area.seen, area.off_list), (t.len(), t.len(), 0), "{tag}: {mods:?} {area:?}");
    }

    // The list against /proc.
    let mut rows: Vec<Row> = r.listed.iter().map(Row::from_thread).collect();
    rows.sort_by_key(|x| (x.pid, x.tgid));
    let c = compare(&rows, &truth(&e, m));
    assert!(c.is_exact(), "{tag}: the task list against /proc: {c:?}");

    // The pid allocator holds exactly the listed threads (init_task, pid 0, is never allocated).
    let listed: BTreeSet<KVirt> = r.listed.iter().filter(|t| t.pid > 0).map(|t| t.addr).collect();
    let pid: BTreeSet<KVirt> = r.seen[&View::Pid].iter().copied().collect();
    assert_eq!(pid, listed, "{tag}: the pid view differs from the list");
    assert_eq!(view(&r, View::Pid).off_list, 0, "{tag}");

    // The scan finds every listed thread; what else it finds is freed or a stale copy.
    let scan: HashSet<KVirt> = r.seen[&View::Scan].iter().copied().collect();
    let missed: Vec<i32> = r.listed.iter().filter(|t| t.pid > 0 && !scan.contains(&t.addr)).map(|t| t.pid).collect();
    assert!(missed.is_empty(), "{tag}: the scan missed listed pids {missed:?}");

    if debian {
        // The run queues hold listed or idle tasks only, and every CPU's current task.
        let rq = view(&r, View::Runqueue);
        assert_eq!(rq.off_list, r.stats.set_aside.idle.min(rq.off_list), "{tag}: {rq:?}");
        assert!(rq.seen >= 1, "{tag}");
        // The module tree has exactly the listed modules, which are /proc/modules.
        let (mods, tree) = (view(&r, View::Modules), view(&r, View::ModTree));
        assert_eq!((mods.seen, tree.seen, tree.off_list), (t.len(), t.len(), 0), "{tag}: {mods:?} {tree:?}");
    }
}

/// Physical address of a kernel virtual address (direct map, image, or the page tables).
fn phys(k: &harness::introspect::kernel::Kernel<'_>, v: u64) -> PhysAddr {
    k.space.to_phys(KVirt(v)).unwrap_or_else(|err| panic!("{err}"))
}

/// The patches `list_del` would make to unlink the list node at `node`.
fn unlink(k: &harness::introspect::kernel::Kernel<'_>, node: u64) -> Vec<(PhysAddr, Vec<u8>)> {
    let next = k.space.read_u64(KVirt(node)).unwrap();
    let prev = k.space.read_u64(KVirt(node + 8)).unwrap();
    vec![
        (phys(k, prev), next.to_le_bytes().to_vec()),
        (phys(k, next + 8), prev.to_le_bytes().to_vec()),
        (phys(k, node), LIST_POISON1.to_le_bytes().to_vec()),
        (phys(k, node + 8), LIST_POISON2.to_le_bytes().to_vec()),
    ]
}

/// DKOM on a real dump: one single-threaded user process unlinked from the task list, and on
/// the kernels with modules one module (`ts_kmp` of Debian's, `configfs` of a custom kernel's)
/// unlinked from the module list. `ps` and `lsmod` then miss them; `hidden` reports exactly
/// that pid (seen by the pid allocator and the scan) and that module (seen by the module tree
/// where BTF describes it, and the module area), and nothing else.
#[rstest]
fn dkom_unlinked_task_and_module_are_found(
    #[values("deb-amd64", "deb5.10-amd64", "deb7-amd64", "custom5.10-bare", "custom7-bare", "custom-randstruct", "custom7-modules")] name: &str,
) {
    let e = entry(name);
    let mem = dump(&e, Mode::Running);
    let before = ps(mem.as_ref(), &PsOptions::default()).unwrap_or_else(|err| panic!("{name}: {err}"));
    let victim = before
        .threads
        .iter()
        .rfind(|t| !t.kthread && t.threads == Some(1) && t.pid > 1 && t.comm.iter().all(u8::is_ascii_graphic))
        .unwrap_or_else(|| panic!("{name}: no single-threaded user process"))
        .clone();
    let mut k = kernel(mem.as_ref());
    // Without data symbols the direct map is found from init_task with the layout.
    harness::introspect::anchor::complete(&mut k, &before.layout).unwrap();
    // Without data symbols the page tables (which map the modules) are searched for too.
    harness::introspect::modules::area::ensure_page_tables(&mut k).unwrap_or_else(|err| panic!("{name}: {err}"));
    let mut patches = unlink(&k, victim.addr.0 + before.layout.task.tasks);
    let loaded = e.modules_truth(Mode::Running).unwrap_or_else(|err| panic!("{name}: {err}"));
    let module = if !loaded.is_empty() {
        let unlinked = if e.flags.btf { "ts_kmp" } else { "configfs" };
        let l = lsmod(mem.as_ref(), &LsmodOptions::default()).unwrap();
        let m = l.modules.iter().find(|m| m.name == unlinked).unwrap_or_else(|| panic!("{name}: {unlinked} not loaded")).clone();
        patches.extend(unlink(&k, m.module + l.located.layout.list));
        Some(m)
    } else {
        None
    };
    drop(k);
    let infected = Patched::new(mem.as_ref(), patches);

    // What the kernel's lists now say.
    let after = ps(&infected, &PsOptions::default()).unwrap();
    assert_eq!(after.walk_error.as_ref().map(ToString::to_string), None, "{name}");
    assert!(!after.threads.iter().any(|t| t.pid == victim.pid), "{name}: ps still lists the victim");
    assert_eq!(after.threads.len() + 1, before.threads.len(), "{name}");

    let r = run(&infected, true);
    assert_eq!(r.incomplete(), None, "{name}");
    let tasks: Vec<_> = r.findings.iter().filter(|f| f.kind == Kind::Task).collect();
    assert_eq!(tasks.len(), 1, "{name}: {:#?}", r.findings);
    let f = tasks[0];
    assert_eq!((f.pid, f.tgid, f.address), (Some(victim.pid), Some(victim.tgid), victim.addr.0), "{name}");
    assert_eq!(f.name.as_bytes(), &victim.comm[..f.name.len()], "{name}");
    assert!(f.seen_by.contains(&View::Pid) && f.seen_by.contains(&View::Scan), "{name}: {:?}", f.seen_by);
    assert!(f.seen_by.iter().all(|v| matches!(v, View::Pid | View::Scan | View::Runqueue)), "{name}: {:?}", f.seen_by);
    let mods: Vec<_> = r.findings.iter().filter(|f| f.kind == Kind::Module).collect();
    match module {
        Some(m) => {
            assert_eq!(mods.len(), 1, "{name}: {:#?}", r.findings);
            let views: &[View] = if e.flags.btf { &[View::ModTree, View::ModuleArea] } else { &[View::ModuleArea] };
            assert_eq!((mods[0].name.as_str(), mods[0].address, mods[0].seen_by.as_slice()), (m.name.as_str(), m.module, views), "{name}");
            assert_eq!(mods[0].state, "Live");
        }
        None => assert!(mods.is_empty(), "{name}"),
    }
}

/// The pid view's layout inferred by structure equals BTF's on every kernel with BTF, and the
/// inferred view sees the same tasks.
#[rstest]
fn inferred_pid_layout_is_btfs(
    #[values("deb-amd64", "deb-cloud-amd64", "deb-rt-amd64", "deb5.10-amd64", "deb6.12-amd64", "deb6.12-rt-amd64", "deb7-amd64", "deb7-cloud-amd64")]
    name: &str,
) {
    let e = entry(name);
    let mem = dump(&e, Mode::Running);
    let b = run(mem.as_ref(), false);
    let i = hidden(mem.as_ref(), &HiddenOptions { infer_pid_layout: true, ..Default::default() }).unwrap();
    let (bl, il) = (b.stats.pid_layout.expect("BTF pid layout"), i.stats.pid_layout.expect("inferred pid layout"));
    assert_eq!(il.chunk, None);
    assert_eq!(pidns::PidLayout { chunk: bl.chunk, ..il }, bl, "{name}: {}", view(&i, View::Pid).how);
    assert!(view(&i, View::Pid).how.contains("inferred"), "{name}");
    assert_eq!(i.seen[&View::Pid], b.seen[&View::Pid], "{name}");
    assert!(i.findings.is_empty());
}

/// The fuzz seed: every byte the views read on deb-amd64's running dump, recorded, cut into
/// one input; the cut walks to what the dump gives, and so does the committed seed.
#[test]
fn cut_the_fuzz_seed() {
    let e = entry("deb-amd64");
    let mem = dump(&e, Mode::Running);
    let report = run(mem.as_ref(), false);
    let k = kernel(mem.as_ref());
    let b = btf::load(&k).unwrap();
    let sym = |n: &str| k.symbols(&[n]).unwrap()[0].unwrap_or_else(|| panic!("no {n}")).0;
    let task_size = ps(mem.as_ref(), &PsOptions::default()).unwrap().layout.task.size;
    let samples: Vec<(u64, i32)> = report.listed.iter().filter(|t| t.pid > 0).step_by(7).take(pidns::MAX_SAMPLES).map(|t| (t.addr.0, t.pid)).collect();
    let header = Header {
        pid: pidns::PidLayout::from_btf(&b).unwrap(),
        chunk: 64,
        init_pid_ns: sym("init_pid_ns"),
        rq: runqueue::RqLayout::from_btf(&b).unwrap(),
        runqueues: sym("runqueues"),
        per_cpu_offset: Some(sym("__per_cpu_offset")),
        nr_cpus: u64::from(k.space.read_u32(KVirt(sym("nr_cpu_ids"))).unwrap()),
        init_task: k.info.init_task.unwrap().0,
        tree: modtree::TreeLayout::from_btf(&b).unwrap(),
        mod_tree: sym("mod_tree"),
        samples,
        task_size,
    };
    // Record every read the views make through the dump.
    let recorded = std::cell::RefCell::new(Vec::new());
    let mut read = |regions: &[(u64, usize)]| -> Vec<Result<Vec<u8>, String>> {
        let r: Vec<(KVirt, usize)> = regions.iter().map(|&(a, l)| (KVirt(a), l)).collect();
        let got: Vec<Result<Vec<u8>, String>> = k.space.read_many(&r).into_iter().map(|x| x.map_err(|e| e.to_string())).collect();
        for (&(a, _), g) in regions.iter().zip(&got) {
            if let Ok(bytes) = g {
                recorded.borrow_mut().push((a, bytes.clone()));
            }
        }
        got
    };
    for &(a, _) in &header.samples {
        let _ = read(&[(a, task_size as usize)]);
    }
    let kptr = |v: u64| v.is_multiple_of(8) && (k.space.in_direct_map(KVirt(v)) || k.space.in_image(KVirt(v)));
    let bytes: Vec<(u64, i32, Vec<u8>)> = header.samples.iter().map(|&(a, p)| (a, p, { let mut v = vec![0u8; task_size as usize]; k.space.read(KVirt(a), &mut v).unwrap(); v })).collect();
    let samples: Vec<pidns::Sample<'_>> = bytes.iter().map(|(a, p, b)| pidns::Sample { addr: *a, pid: *p, bytes: b }).collect();
    let inferred = pidns::infer(&samples, &kptr, &mut read).unwrap();
    let x = pidns::locate_xarray(inferred.ns, &mut read).unwrap();
    assert_eq!((x.0, x.1), (header.pid.ns_xarray, header.pid.xa_head));
    let pids = pidns::walk(&header.pid, header.chunk, header.init_pid_ns, &mut read);
    let rqs = runqueue::walk(&header.rq, header.runqueues, header.per_cpu_offset, header.nr_cpus, header.init_task, &mut read);
    let tree = modtree::walk(&header.tree, header.mod_tree, &mut read);
    assert_eq!((pids.error.clone(), rqs.error.clone(), tree.error.clone()), (None, None, None));
    let cut = Cut { header, regions: std::mem::take(&mut *recorded.borrow_mut()) };
    let again = Cut::parse(&cut.encode()).expect("the cut parses");
    let (i2, p2, r2, t2) = again.run();
    assert_eq!(i2.unwrap(), inferred);
    assert_eq!((p2.pids, r2.tasks, t2.modules), (pids.pids.clone(), rqs.tasks.clone(), tree.modules.clone()));
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/hidden/deb-amd64-running");
    if std::env::var_os("NETDMA_WRITE_SEEDS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, cut.encode()).unwrap();
    }
    // The committed seed is such a cut of some build of deb-amd64's dump.
    let committed = std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}; NETDMA_WRITE_SEEDS=1 writes it", path.display()));
    let seed = Cut::parse(&committed).expect("the committed seed parses");
    let (si, sp, sr, st) = seed.run();
    assert!(si.is_ok() && sp.error.is_none() && sr.error.is_none() && st.error.is_none(), "the committed seed: {si:?}");
    assert!(sp.pids.len() > 50 && !sr.tasks.is_empty() && st.modules.len() == 5, "the committed seed");
}

/// DKOM of the task a CPU was running when the machine panicked (the shell that wrote to
/// `sysrq-trigger`): the run queues see it too (`rq->curr`), so the finding names all three task
/// views.
#[rstest]
fn dkom_of_the_running_task_is_seen_by_the_run_queues(#[values("deb-amd64", "deb5.10-amd64", "deb7-amd64")] name: &str) {
    let e = entry(name);
    let mem = dump(&e, Mode::Panicked);
    let clean = run(mem.as_ref(), false);
    let running: HashSet<KVirt> = clean.seen[&View::Runqueue].iter().copied().collect();
    let victim = clean
        .listed
        .iter()
        .find(|t| running.contains(&t.addr) && !t.kthread && t.threads == Some(1))
        .unwrap_or_else(|| panic!("{name}: no single-threaded user task on a CPU"))
        .clone();
    let before = ps(mem.as_ref(), &PsOptions::default()).unwrap();
    let k = kernel(mem.as_ref());
    let patches = unlink(&k, victim.addr.0 + before.layout.task.tasks);
    drop(k);
    let infected = Patched::new(mem.as_ref(), patches);
    let r = run(&infected, true);
    assert_eq!(r.incomplete(), None, "{name}");
    assert_eq!(r.findings.len(), 1, "{name}: {:#?}", r.findings);
    let f = &r.findings[0];
    assert_eq!((f.kind, f.pid, f.address), (Kind::Task, Some(victim.pid), victim.addr.0), "{name}");
    assert_eq!(f.seen_by, vec![View::Pid, View::Runqueue, View::Scan], "{name}");
}

/// The lab's real rootkit (`nd_rootkit`, the infected mode: DKOM of `nd-victim` on the task list
/// and of itself on the module list, in its own boot): `hidden` reports exactly the pid and the
/// module the truth names, each with the views that saw it, and nothing else.
#[rstest]
fn the_rootkits_task_and_module_are_found(#[values("deb5.10-amd64", "deb-amd64", "deb6.12-amd64", "deb7-amd64")] name: &str) {
    let e = entry(name);
    let i = e.infected.as_ref().unwrap_or_else(|| panic!("{name}: no infected mode; run `cargo run --release -p harness -- corpus build --only {name}`"));
    let r = run(dump(&e, Mode::Infected).as_ref(), true);
    assert_eq!(r.incomplete(), None, "{name}");
    let tasks: Vec<_> = r.findings.iter().filter(|f| f.kind == Kind::Task).collect();
    assert_eq!(tasks.len(), 1, "{name}: {:#?}", r.findings);
    assert_eq!((tasks[0].pid, tasks[0].tgid, tasks[0].name.as_str()), (Some(i.hidden.pid as i32), Some(i.hidden.pid as i32), i.hidden.comm.as_str()), "{name}");
    assert!(tasks[0].seen_by.contains(&View::Pid) && tasks[0].seen_by.contains(&View::Scan), "{name}: {:?}", tasks[0].seen_by);
    let mods: Vec<_> = r.findings.iter().filter(|f| f.kind == Kind::Module).collect();
    assert_eq!(mods.len(), 1, "{name}: {:#?}", r.findings);
    assert_eq!((mods[0].name.as_str(), mods[0].seen_by.as_slice(), mods[0].state.as_str()), (i.hidden.module.as_str(), &[View::ModTree, View::ModuleArea][..], "Live"), "{name}");
}
