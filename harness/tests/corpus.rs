//! The guest corpus against independent truth: the guest's own /proc view, the kernel's
//! System.map and its build-time layout (reference data, validation only).
//!
//! Needs the corpus: `cargo run --release -p harness -- corpus build` (scripts/test runs it).

mod labsupport;

use std::collections::{BTreeSet, HashMap};

use labsupport::{entry, place_kernel, system_map, walk_tasks, ElfDump, BUILD_HINT};
use harness::kbuild::Layout;
use harness::lab::corpus::{Corpus, DumpFormat, Flags, Mode};
use harness::lab::recipe::{corpus_of, Tier};
use harness::lab::truth::Thread;
use rstest::rstest;

fn truth(name: &str, mode: Mode) -> Vec<Thread> {
    entry(name).truth(mode).unwrap_or_else(|e| panic!("{name} {mode:?} truth: {e}; {BUILD_HINT}"))
}

fn by_comm<'a>(t: &'a [Thread], comm: &str) -> Vec<&'a Thread> {
    t.iter().filter(|x| x.comm == comm).collect()
}

fn one<'a>(t: &'a [Thread], comm: &str) -> &'a Thread {
    let v = by_comm(t, comm);
    assert_eq!(v.len(), 1, "exactly one thread named {comm:?}, got {v:?}");
    v[0]
}

#[test]
fn corpus_has_every_test_entry() {
    let entries = Corpus::open_default().entries().unwrap_or_else(|e| panic!("{e}; {BUILD_HINT}"));
    let have: BTreeSet<String> = entries.iter().map(|e| e.name.clone()).collect();
    for r in corpus_of(Tier::Test) {
        assert!(have.contains(r.name), "corpus entry {} missing; {BUILD_HINT}", r.name);
    }
}

/// The kernels the tests below name are exactly the test tier (so neither list drifts).
#[test]
fn tests_cover_the_test_tier() {
    let named: BTreeSet<&str> = ["deb-amd64", "deb-cloud-amd64", "deb-rt-amd64", "custom-thesis", "custom-randstruct", "deb5.10-amd64", "deb6.12-amd64", "deb7-amd64", "custom7-modules"].into_iter().collect();
    let tier: BTreeSet<&str> = corpus_of(Tier::Test).iter().map(|r| r.name).collect();
    assert_eq!(named, tier);
}

/// The test tier spans kernel versions: at least four upstream series, every kallsyms format.
#[test]
fn test_tier_spans_versions() {
    let series: BTreeSet<String> = corpus_of(Tier::Test)
        .iter()
        .map(|r| entry(r.name).release.split('.').take(2).collect::<Vec<_>>().join("."))
        .collect();
    assert!(series.len() >= 4, "test tier versions: {series:?}");
}

#[test]
fn layouts_are_distinct_and_digests_match() {
    let mut digests = BTreeSet::new();
    for r in corpus_of(Tier::Test) {
        let e = entry(r.name);
        let layout = e.layout().expect("reference/layout.json");
        assert_eq!(layout.digest(), e.layout_digest, "{}: digest of layout.json", e.name);
        digests.insert(e.layout_digest.clone());
    }
    assert!(digests.len() >= 4, "only {} distinct layouts: {digests:?}", digests.len());
}

#[test]
fn at_least_one_kernel_without_btf() {
    assert!(corpus_of(Tier::Test).iter().any(|r| !entry(r.name).flags.btf));
}

#[rstest]
fn flags_follow_the_kernel_config(
    #[values("deb-amd64", "deb-cloud-amd64", "deb-rt-amd64", "custom-thesis", "custom-randstruct", "deb5.10-amd64", "deb6.12-amd64", "deb7-amd64", "custom7-modules")]
    name: &str,
) {
    let e = entry(name);
    let config = std::fs::read_to_string(e.config_path()).expect("reference/config");
    assert_eq!(Flags::from_config(&config, &e.qemu.append), e.flags);
    let expected = match name {
        "custom-thesis" => Some(Flags { btf: false, ikconfig: true, vmcoreinfo: false, kaslr: false }),
        "custom-smp-preempt-kaslr" | "custom-randstruct" => {
            Some(Flags { btf: false, ikconfig: true, vmcoreinfo: false, kaslr: true })
        }
        "custom-bare" | "custom7-bare" | "custom7-modules" | "custom-modules" | "custom5.10-modules" | "custom6.12-modules" => {
            Some(Flags { btf: false, ikconfig: false, vmcoreinfo: false, kaslr: true })
        }
        _ => None,
    };
    if let Some(f) = expected {
        assert_eq!(e.flags, f, "{name}: the fragment's intent");
    }
    if name.starts_with("deb") {
        assert!(e.flags.btf && e.flags.kaslr, "{name}: Debian stock kernels have BTF and KASLR");
    }
}

#[rstest]
fn truth_is_sane(
    #[values("deb-amd64", "deb-cloud-amd64", "deb-rt-amd64", "custom-thesis", "custom-randstruct", "deb5.10-amd64", "deb6.12-amd64", "deb7-amd64", "custom7-modules")]
    name: &str,
    #[values(Mode::Running, Mode::Panicked)] mode: Mode,
) {
    let t = truth(name, mode);
    let pid = |p: u32| t.iter().find(|x| x.pid == p).unwrap_or_else(|| panic!("no pid {p}"));
    // Kernel side: kthreadd is pid 2, every kernel thread descends from it and has no cmdline.
    let kthreadd = pid(2);
    assert_eq!((kthreadd.comm.as_str(), kthreadd.kthread, kthreadd.ppid), ("kthreadd", true, 0));
    assert!(t.iter().filter(|x| x.kthread).count() >= 5);
    for k in t.iter().filter(|x| x.kthread) {
        assert!(k.cmdline.is_empty(), "kernel thread {k:?} has a cmdline");
        assert!(k.pid == 2 || k.ppid == 2, "kernel thread {k:?} not a child of kthreadd");
    }
    let init = pid(1);
    assert!(!init.kthread && init.cmdline.contains("/init"));

    // The workload: a tree 4 levels deep (1 + 2 + 4 + 8 processes).
    let tree = by_comm(&t, "nd-tree");
    assert_eq!(tree.len(), 15);
    let depth = |mut p: u32| {
        let mut d = 0;
        while let Some(x) = tree.iter().find(|x| x.pid == p) {
            p = x.ppid;
            d += 1;
        }
        d
    };
    assert_eq!(tree.iter().map(|x| depth(x.pid)).max(), Some(4));

    // Threads under several uids: (uid, threads incl. main).
    let mut groups: Vec<(u32, usize)> = t
        .iter()
        .filter(|x| x.comm == "nd-threads")
        .map(|x| (x.uid, t.iter().filter(|y| y.tgid == x.tgid).count()))
        .collect();
    groups.sort();
    assert_eq!(groups, vec![(0, 5), (1000, 3), (65534, 4)]);
    for w in t.iter().filter(|x| x.comm.starts_with("worker-")) {
        assert_ne!(w.pid, w.tgid, "worker threads are not group leaders");
        assert_eq!(w.cmdline, pid(w.tgid).cmdline);
    }

    // comm with a space, and with non-ASCII + invalid UTF-8 bytes.
    let named = one(&t, "my worker");
    assert_eq!(named.uid, 1001);
    let naive = t.iter().find(|x| x.comm_hex == "6e61c3af7665ff").expect("thread na\\xc3\\xafve\\xff");
    assert_eq!(naive.comm, "na\u{ef}ve\u{fffd}");
    assert_eq!(naive.comm_bytes(), b"na\xc3\xafve\xff");
    assert_eq!((naive.tgid, naive.uid), (named.pid, 1001));

    // States: stopped, zombie (no cmdline), busy.
    assert_eq!(one(&t, "nd-stopped").state, "T");
    let zombie = one(&t, "nd-zchild");
    assert_eq!((zombie.state.as_str(), zombie.cmdline.as_str()), ("Z", ""));
    assert_eq!(zombie.ppid, one(&t, "nd-zombie").pid);
    assert_eq!(one(&t, "nd-spin").state, "R");
    // The agent is blocked on its port at the running dump and is the panicking task after.
    let agent = one(&t, "nd-agent");
    assert_eq!(agent.state, if mode == Mode::Running { "S" } else { "R" });

    // Long command line, other uid.
    let long = one(&t, "nd-longargs");
    assert!(long.cmdline.len() > 4096, "cmdline only {} bytes", long.cmdline.len());
    assert!(long.cmdline.ends_with("argument-0700"));
    assert_eq!(long.uid, 1000);

    for x in &t {
        assert_eq!(x.start_time_ns, x.start_time * 10_000_000, "{x:?}");
    }
}

#[rstest]
fn dumps_hold_the_kernel_and_its_tasks(
    #[values("deb-amd64", "deb-cloud-amd64", "deb-rt-amd64", "custom-thesis", "custom-randstruct", "deb5.10-amd64", "deb6.12-amd64", "deb7-amd64", "custom7-modules")]
    name: &str,
    #[values(Mode::Running, Mode::Panicked)] mode: Mode,
) {
    let e = entry(name);
    let path = e.dump_path(mode, DumpFormat::Elf).expect("an ELF dump");
    let dump = ElfDump::open(&path).unwrap_or_else(|err| panic!("{err}; {BUILD_HINT}"));
    let sm = system_map(&e);
    let layout: Layout = e.layout().expect("layout.json");
    let place = place_kernel(&dump, &e, &sm, &layout).unwrap_or_else(|err| panic!("{name}: {err}"));
    // The System.map's view and the dump agree: the banner at linux_banner, init_task pid 0.
    let banner = dump.read(place.phys_text + (sm["linux_banner"] - sm["_text"]), 14).unwrap();
    assert_eq!(banner, b"Linux version ");
    assert_eq!(dump.u32(place.init_task_pa + layout.offset("task_struct.pid").unwrap()), Some(0));
    // Without KASLR the kernel sits at its link-time physical address (16 MiB).
    if !e.flags.kaslr {
        assert_eq!(place.phys_text, 0x100_0000);
    }

    // Walking the task list with the reference layout finds exactly the truth's processes.
    let tasks = walk_tasks(&dump, &sm, &layout, &place).unwrap_or_else(|err| panic!("{name}: {err}"));
    let t = truth(name, mode);
    let user_truth: BTreeSet<(u32, Vec<u8>, u32)> =
        t.iter().filter(|x| !x.kthread && x.pid == x.tgid).map(|x| (x.pid, x.comm_bytes(), x.uid)).collect();
    let user_mem: BTreeSet<(u32, Vec<u8>, u32)> = tasks
        .iter()
        .filter(|m| m.flags & 0x0020_0000 == 0)
        .map(|m| (m.pid, m.comm.clone(), m.uid))
        .collect();
    assert_eq!(user_mem, user_truth, "{name} {mode:?}: user processes in memory vs /proc");
    let threads_truth: HashMap<u32, usize> =
        t.iter().filter(|x| !x.kthread).fold(HashMap::new(), |mut m, x| {
            *m.entry(x.tgid).or_default() += 1;
            m
        });
    for m in tasks.iter().filter(|m| m.flags & 0x0020_0000 == 0) {
        if m.exit_state == 0 {
            assert_eq!(Some(&m.threads), threads_truth.get(&m.pid), "{name}: threads of {}", m.pid);
        }
    }
    let stopped = tasks.iter().find(|m| m.comm == b"nd-stopped").unwrap();
    assert_ne!(stopped.state & 0x4, 0, "nd-stopped has __TASK_STOPPED");
    let zombie = tasks.iter().find(|m| m.comm == b"nd-zchild").unwrap();
    assert_ne!(zombie.exit_state & 0x20, 0, "nd-zchild has EXIT_ZOMBIE");
    // Kernel threads: nearly all of the truth's are in memory (workers may come and go).
    let k_truth: BTreeSet<u32> = t.iter().filter(|x| x.kthread && x.pid == x.tgid).map(|x| x.pid).collect();
    let k_mem: BTreeSet<u32> = tasks.iter().filter(|m| m.flags & 0x0020_0000 != 0).map(|m| m.pid).collect();
    let common = k_truth.intersection(&k_mem).count();
    assert!(common * 10 >= k_truth.len() * 9, "{name}: only {common}/{} kernel threads found", k_truth.len());
}

#[rstest]
fn kallsyms_shift_is_consistent(
    #[values("deb-amd64", "deb-cloud-amd64", "deb-rt-amd64", "custom-thesis", "custom-randstruct", "deb5.10-amd64", "deb6.12-amd64", "deb7-amd64", "custom7-modules")]
    name: &str,
) {
    let e = entry(name);
    let Some(rel) = &e.reference.kallsyms else { panic!("{name}: no kallsyms captured; {BUILD_HINT}") };
    let text = std::fs::read_to_string(e.path(rel)).unwrap();
    let sm = system_map(&e);
    let mut shifts = BTreeSet::new();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        let (Some(a), Some(_), Some(n)) = (w.next(), w.next(), w.next()) else { continue };
        if ["_text", "init_task", "linux_banner", "start_kernel"].contains(&n) {
            if let (Ok(a), Some(s)) = (u64::from_str_radix(a, 16), sm.get(n)) {
                shifts.insert(a.wrapping_sub(*s));
            }
        }
    }
    assert_eq!(shifts.len(), 1, "{name}: one virtual KASLR shift for all symbols, got {shifts:x?}");
    let shift = *shifts.iter().next().unwrap();
    assert_eq!(shift % 0x20_0000, 0, "{name}: shift {shift:#x} is 2 MiB aligned");
    if !e.flags.kaslr {
        assert_eq!(shift, 0, "{name}: no KASLR, no shift");
    }
}

/// For entries with extra formats: the raw file holds the same bytes as the ELF dump, and the
/// kdump file carries its format's signature.
#[rstest]
fn extra_formats_agree(#[values("deb-amd64", "custom-thesis")] name: &str, #[values(Mode::Running, Mode::Panicked)] mode: Mode) {
    let e = entry(name);
    let elf = ElfDump::open(&e.dump_path(mode, DumpFormat::Elf).unwrap()).unwrap();
    let raw_path = e.dump_path(mode, DumpFormat::Raw).expect("raw dump");
    let raw_file = std::fs::File::open(&raw_path).unwrap();
    // SAFETY: corpus files are not modified while tests run.
    let raw = unsafe { memmap2::Mmap::map(&raw_file) }.unwrap();
    assert_eq!(raw.len() as u64, u64::from(e.qemu.memory_mib) << 20);
    let mut compared = 0;
    for &(pa, _, size) in elf.segments() {
        if pa + size <= raw.len() as u64 && size >= 0x10000 {
            for probe in [pa, pa + size / 2, pa + size - 4096] {
                assert_eq!(elf.read(probe, 4096), raw.get(probe as usize..probe as usize + 4096), "{name}: page {probe:#x}");
                compared += 1;
            }
        }
    }
    assert!(compared > 0);
    let kdump = e.modes[&mode].dumps.iter().find(|d| matches!(d.format, DumpFormat::Kdump | DumpFormat::KdumpFlattened)).expect("a kdump");
    let head = std::fs::read(e.path(&kdump.path)).unwrap();
    let sig: &[u8] = if kdump.format == DumpFormat::KdumpFlattened { b"makedumpfile" } else { b"KDUMP   " };
    assert!(head.starts_with(sig));
}

/// `scripts/test` without `--eval` leaves out, by name, the cases on kernels that only the
/// evaluation tier builds: its list is exactly those kernels, as rstest spells them.
#[test]
fn the_test_tier_filter_names_the_evaluation_kernels() {
    let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/test")).expect("scripts/test");
    let line = script.lines().find_map(|l| l.strip_prefix("EVAL_KERNELS='")).expect("an EVAL_KERNELS line");
    let mut listed: Vec<&str> = line.trim_end_matches('\'').split('|').collect();
    listed.sort_unstable();
    let test: Vec<String> = corpus_of(Tier::Test).into_iter().map(|r| r.name.to_string()).collect();
    let mut eval: Vec<String> =
        corpus_of(Tier::Eval).into_iter().map(|r| r.name.to_string()).filter(|n| !test.contains(n)).map(|n| n.replace(['-', '.'], "_")).collect();
    eval.sort_unstable();
    assert_eq!(listed, eval);
}
