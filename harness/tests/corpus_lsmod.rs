//! `lsmod` over every corpus kernel against independent truth: the guest's own `/proc/modules`,
//! which the lab's agent records right before each dump (`MODE/modules.txt`). The Debian guests
//! load `fat`, `msdos`, `ts_bm`, `ts_fsm` and `ts_kmp` from the kernel's own package (`ts_bm`
//! with its signature removed, so the kernel taints it `E`); the `custom*-modules` kernels load
//! `binfmt_misc`, `configfs`, `nls_base` and `nls_utf8` built from their own tree, and have no
//! symbol for the `modules` list (found in the module area); the other custom kernels are built
//! without `CONFIG_MODULES`, and `lsmod` must say so.
//!
//! Compared per module, in list order, every column: name, size, refcount, "used by" (`msdos`
//! uses `fat`), state, the core address (the agent runs as root, so `/proc/modules` shows it)
//! and the taint letters.

mod common;

use common::*;
use emulator::mem::{PhysAddr, PhysMem};
use harness::introspect::addr::KVirt;
use harness::introspect::modules::list::{Module, ModuleError};
use harness::introspect::modules::snapshot::Snapshot;
use harness::introspect::modules::{locate, lsmod, modules_head, LsmodError, LsmodOptions, LsmodReport, ModMethod};
use harness::lab::corpus::{Entry, Mode};
use harness::lab::recipe::default_corpus;
use harness::lab::truth;
use harness::introspect::compare::{module_columns, truth_module_columns};
use rstest::rstest;

const DEBIAN: &[&str] =
    &["deb-amd64", "deb-cloud-amd64", "deb-rt-amd64", "deb5.10-amd64", "deb6.12-amd64", "deb6.12-rt-amd64", "deb7-amd64", "deb7-cloud-amd64"];
const CUSTOM: &[&str] = &[
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
];
/// The custom kernels built with `CONFIG_MODULES` (`modules.config`).
const CUSTOM_MODULES: &[&str] = &["custom7-modules", "custom-modules", "custom5.10-modules", "custom6.12-modules"];
/// What the lab loads into every Debian guest (`lab::debian::GUEST_MODULES`).
const LOADED: &[&str] = &["fat", "msdos", "ts_bm", "ts_fsm", "ts_kmp"];

fn run(e: &Entry, m: Mode, method: ModMethod) -> Result<LsmodReport, LsmodError> {
    let mem = dump(e, m);
    lsmod(mem.as_ref(), &LsmodOptions { method: Some(method), ..Default::default() })
}

fn modules_truth(e: &Entry, m: Mode) -> Vec<truth::Module> {
    e.modules_truth(m).unwrap_or_else(|err| panic!("{}: {err}", e.name))
}


/// On every Debian kernel, running and panicked, with every method whose prerequisite the
/// kernel has: `lsmod` lists exactly the guest's `/proc/modules`, in its order. VMCOREINFO
/// exports no `struct module` offsets on any of them: that method refuses as unavailable.
#[rstest]
fn lsmod_equals_proc_modules(
    #[values(
        "deb-amd64",
        "deb-cloud-amd64",
        "deb-rt-amd64",
        "deb5.10-amd64",
        "deb6.12-amd64",
        "deb6.12-rt-amd64",
        "deb7-amd64",
        "deb7-cloud-amd64"
    )]
    name: &str,
    #[values("running", "panicked")] m: &str,
    #[values(ModMethod::Auto, ModMethod::Btf, ModMethod::Vmcoreinfo, ModMethod::Inferred)] method: ModMethod,
) {
    let e = entry(name);
    let m = mode(m);
    let t = modules_truth(&e, m);
    for l in LOADED {
        assert!(t.iter().any(|x| x.name == *l && x.state == "Live"), "{name}: the lab's {l} is not in the truth; rebuild: harness corpus build --only {name}");
    }
    // msdos uses fat: a module in use, with a "used by" column, in every truth.
    assert!(
        t.iter().any(|x| x.name == "fat" && x.refcount == Some(1) && x.deps == ["msdos"]),
        "{name}: fat is not used by msdos; rebuild: harness corpus build --only {name}"
    );
    // The lab loads ts_bm without its signature: a tainted module in every truth.
    assert!(
        t.iter().any(|x| x.name == "ts_bm" && x.taints == "E"),
        "{name}: ts_bm is not tainted E (recorded before the lab loaded it unsigned?); rebuild: harness corpus build --only {name}"
    );
    assert!(t.iter().all(|x| x.address != 0), "{name}: the truth hides addresses");
    let r = match (run(&e, m, method), method) {
        (Err(LsmodError::Unavailable { reason, .. }), ModMethod::Vmcoreinfo) => {
            assert!(reason.contains("OFFSET(module"), "{reason}");
            return;
        }
        (r, _) => r.unwrap_or_else(|err| panic!("{name} {method}: {err}")),
    };
    assert_eq!(r.error, None, "{name} {method}");
    let ours: Vec<_> = r.modules.iter().map(module_columns).collect();
    let truth: Vec<_> = t.iter().map(truth_module_columns).collect();
    assert_eq!(ours, truth, "{name} {} {method} ({})", m.as_str(), r.located.how);
}

/// The structural inference finds every field BTF names at the same offset, on every Debian
/// kernel (the 6.1 and 5.10 `core_layout`, 6.12's `mem[]`, 7.2's `mem[]` with `is_rox`).
#[rstest]
fn inferred_layout_is_btfs(
    #[values(
        "deb-amd64",
        "deb-cloud-amd64",
        "deb-rt-amd64",
        "deb5.10-amd64",
        "deb6.12-amd64",
        "deb6.12-rt-amd64",
        "deb7-amd64",
        "deb7-cloud-amd64"
    )]
    name: &str,
) {
    let e = entry(name);
    let mem = dump(&e, Mode::Running);
    let k = kernel(mem.as_ref());
    let head = modules_head(&k).unwrap().addr;
    let btf = locate(&k, head, ModMethod::Btf).unwrap().layout;
    let inferred = locate(&k, head, ModMethod::Inferred).unwrap_or_else(|err| panic!("{name}: {err}"));
    let i = inferred.layout;
    assert!(i.span <= btf.span, "{name}: {} bytes needed, struct module has {}", i.span, btf.span);
    assert_eq!((i.state, i.list, i.name, i.name_len, i.memory, i.taints, i.refcnt), (btf.state, btf.list, btf.name, btf.name_len, btf.memory, btf.taints, btf.refcnt), "{name}: {}", inferred.how);
    let (iu, bu) = (i.users.expect("inferred users"), btf.users.expect("BTF users"));
    assert_eq!((iu.source_list, iu.init, iu.exit, iu.use_node, iu.use_source), (bu.source_list, bu.init, bu.exit, bu.use_node, bu.use_source), "{name}: {}", inferred.how);
}

/// The custom kernels are built without `CONFIG_MODULES` (their configs say so): `lsmod` is an
/// error that says exactly that, with every method.
#[rstest]
fn custom_kernels_have_no_modules(
    #[values(
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
        "custom-smp-preempt-kaslr"
    )]
    name: &str,
    #[values(ModMethod::Auto, ModMethod::Inferred)] method: ModMethod,
) {
    let e = entry(name);
    let config = std::fs::read_to_string(e.config_path()).unwrap_or_else(|err| panic!("{name}: {err}; {BUILD}"));
    assert!(config.lines().any(|l| l == "# CONFIG_MODULES is not set"), "{name}: built with CONFIG_MODULES; this test expects none");
    match run(&e, Mode::Running, method) {
        Err(err @ LsmodError::NoModules(_)) => {
            let text = err.to_string();
            assert!(text.contains("without CONFIG_MODULES") && text.contains("`modules`"), "{name}: {text}");
        }
        other => panic!("{name}: expected an error naming the missing CONFIG_MODULES, got {other:?}"),
    }
}

/// The custom kernels with modules (no BTF, no VMCOREINFO, kallsyms without data symbols): the
/// `modules` head is found in the module area and the layout inferred, and `lsmod` lists
/// exactly the guest's `/proc/modules` (every column, `nls_base` used by `nls_utf8`), running
/// and panicked; the btf and vmcoreinfo methods refuse as unavailable.
#[rstest]
fn custom_kernels_with_modules_list_them(
    #[values("custom7-modules", "custom-modules", "custom5.10-modules", "custom6.12-modules")] name: &str,
    #[values("running", "panicked")] m: &str,
    #[values(ModMethod::Auto, ModMethod::Btf, ModMethod::Vmcoreinfo, ModMethod::Inferred)] method: ModMethod,
) {
    let e = entry(name);
    let m = mode(m);
    let t = modules_truth(&e, m);
    let loaded: Vec<&str> = harness::lab::custom::GUEST_MODULES.iter().map(|p| harness::lab::debian::module_name(p)).collect();
    for l in &loaded {
        assert!(t.iter().any(|x| x.name == *l && x.state == "Live"), "{name}: the lab's {l} is not in the truth; rebuild: harness corpus build --only {name}");
    }
    assert!(t.iter().any(|x| x.name == "nls_base" && x.refcount == Some(1) && x.deps == ["nls_utf8"]), "{name}: nls_base is not used by nls_utf8");
    let r = match (run(&e, m, method), method) {
        (Err(LsmodError::Unavailable { .. }), ModMethod::Btf | ModMethod::Vmcoreinfo) => return,
        (r, _) => r.unwrap_or_else(|err| panic!("{name} {method}: {err}")),
    };
    assert_eq!(r.error, None, "{name} {method}");
    assert!(r.head.from.starts_with("the module area"), "{name}: head from {}", r.head.from);
    let ours: Vec<_> = r.modules.iter().map(module_columns).collect();
    let truth: Vec<_> = t.iter().map(truth_module_columns).collect();
    assert_eq!(ours, truth, "{name} {} {method} ({})", m.as_str(), r.located.how);
}

/// Every kernel named is a corpus recipe, and every corpus kernel built here is named.
#[test]
fn the_tests_name_every_corpus_kernel() {
    let recipes: Vec<&str> = default_corpus().iter().map(|r| r.name).collect();
    let named = |n: &&str| DEBIAN.contains(n) || CUSTOM.contains(n) || CUSTOM_MODULES.contains(n);
    assert!(DEBIAN.iter().chain(CUSTOM).chain(CUSTOM_MODULES).all(|n| recipes.contains(n)), "a named kernel is no corpus recipe");
    let built = harness::lab::corpus::Corpus::open_default().entries().unwrap_or_else(|err| panic!("{err}; {BUILD}"));
    let unnamed: Vec<&str> = built.iter().map(|b| b.name.as_str()).filter(|b| !named(b)).collect();
    assert!(unnamed.is_empty(), "corpus kernels the lsmod tests do not name: {unnamed:?}");
}

/// A real dump with some bytes overwritten (an overlay; the image file is untouched).
struct Overlay<'a> {
    inner: &'a dyn PhysMem,
    patches: Vec<(u64, Vec<u8>)>,
}

impl PhysMem for Overlay<'_> {
    fn read_phys(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), emulator::mem::MemError> {
        self.inner.read_phys(addr, buf)?;
        for (at, bytes) in &self.patches {
            for (i, b) in bytes.iter().enumerate() {
                if let Some(k) = (at + i as u64).checked_sub(addr.0).filter(|k| (*k as usize) < buf.len()) {
                    buf[k as usize] = *b;
                }
            }
        }
        Ok(())
    }
    fn ranges(&self) -> Vec<emulator::mem::PhysRange> {
        self.inner.ranges()
    }
    fn describe(&self) -> String {
        format!("{} with {} patches", self.inner.describe(), self.patches.len())
    }
}

/// Damage to a real list: a module whose `next` loops back to the first, one whose `prev` is
/// not the module before it, one whose name lost its NUL, one whose `next` points to user
/// space, a user (`struct module_use`) whose `source` points to user space. Each stops the walk with the modules before
/// it listed and an error naming the address.
#[test]
fn a_damaged_list_stops_with_the_address() {
    let e = entry("deb-amd64");
    let mem = dump(&e, Mode::Running);
    let k = kernel(mem.as_ref());
    let full = lsmod(mem.as_ref(), &LsmodOptions::default()).unwrap();
    let l = full.located.layout;
    let [a, b, _] = [full.modules[0].module, full.modules[1].module, full.modules[2].module];
    let phys = |v: u64| k.space.to_phys(KVirt(v)).unwrap().0;
    let with = |patches: Vec<(u64, Vec<u8>)>| {
        let o = Overlay { inner: mem.as_ref(), patches };
        lsmod(&o, &LsmodOptions { method: Some(ModMethod::Btf), ..Default::default() }).unwrap()
    };
    // The second module's next points back to the first: a loop, caught at the first node.
    let r = with(vec![(phys(b + l.list), (a + l.list).to_le_bytes().to_vec())]);
    assert_eq!(r.modules, full.modules[..2]);
    assert!(matches!(r.error, Some(ModuleError::Loop { node }) if node == a + l.list), "{:?}", r.error);
    // The second module's prev does not point to the first.
    let r = with(vec![(phys(b + l.list + 8), (b + l.list).to_le_bytes().to_vec())]);
    assert_eq!(r.modules, full.modules[..1]);
    assert!(matches!(r.error, Some(ModuleError::BrokenLink { node, .. }) if node == b + l.list), "{:?}", r.error);
    // The second module's name fills its field.
    let r = with(vec![(phys(b + l.name), vec![b'x'; l.name_len as usize])]);
    assert_eq!(r.modules, full.modules[..1]);
    let err = r.error.unwrap();
    assert_eq!(err.addr(), Some(b));
    assert!(err.to_string().contains(&format!("{b:#x}")) && err.to_string().contains("NUL"), "{err}");
    // The first module's next points to user space.
    let r = with(vec![(phys(a + l.list), 0x1000u64.to_le_bytes().to_vec())]);
    assert_eq!(r.modules, full.modules[..1]);
    assert!(matches!(r.error, Some(ModuleError::NotKernel { node: 0x1000, .. })), "{:?}", r.error);
    // fat's user list: its module_use names a source in user space.
    let u = l.users.expect("BTF users");
    let at = full.modules.iter().position(|m| m.name == "fat").expect("fat");
    let fat = full.modules[at].module;
    let node = k.space.read_u64(KVirt(fat + u.source_list)).unwrap();
    let r = with(vec![(phys(node - u.use_node + u.use_source), 0x2000u64.to_le_bytes().to_vec())]);
    assert_eq!(r.modules, full.modules[..at]);
    assert!(matches!(r.error, Some(ModuleError::NotKernel { node: 0x2000, .. })), "{:?}", r.error);
}

/// The fuzz target's seed is deb-amd64's module list cut from its running dump; walked and
/// inferred from the cut, it gives what `lsmod` gives from the dump, and the committed seed (a
/// cut of an earlier recording, perhaps) lists the same modules. `NETDMA_WRITE_SEEDS=1` writes
/// it again.
#[test]
fn fuzz_seed_is_a_list_cut_from_a_dump() {
    let e = entry("deb-amd64");
    let mem = dump(&e, Mode::Running);
    let k = kernel(mem.as_ref());
    let full = lsmod(mem.as_ref(), &LsmodOptions::default()).unwrap();
    let head = full.head.addr;
    let mut head_bytes = [0u8; 16];
    k.space.read(head, &mut head_bytes).unwrap();
    let span = full.located.layout.span as usize;
    let mut modules: Vec<(u64, Vec<u8>)> = full
        .modules
        .iter()
        .map(|m| {
            let mut b = vec![0u8; span];
            k.space.read(KVirt(m.module), &mut b).unwrap();
            (m.module, b)
        })
        .collect();
    // The module_use entries on each source_list (fat's, used by msdos).
    let u = full.located.layout.users.expect("BTF users");
    for m in &full.modules {
        let head = m.module + u.source_list;
        let mut next = k.space.read_u64(KVirt(head)).unwrap();
        while next != head && modules.len() < 64 {
            let mut b = vec![0u8; 48];
            k.space.read(KVirt(next - u.use_node), &mut b).unwrap();
            modules.push((next - u.use_node, b));
            next = k.space.read_u64(KVirt(next)).unwrap();
        }
    }
    let cut = Snapshot { head: head.0, head_bytes, modules };
    let walked = cut.walk(&full.located.layout);
    assert_eq!(walked.error, None);
    assert_eq!(walked.modules, full.modules);
    let inferred = cut.infer().unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(cut.walk(&inferred.layout).modules, full.modules);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/lsmod/deb-amd64-running");
    if std::env::var_os("NETDMA_WRITE_SEEDS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, cut.encode()).unwrap();
    }
    // The committed seed is such a cut, though not necessarily of today's dump: every rebuild of
    // the corpus entry (a new boot) changes the dump's bytes.
    let committed = std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}; NETDMA_WRITE_SEEDS=1 writes it", path.display()));
    let seed = Snapshot::parse(&committed).expect("the committed seed parses");
    let names = |m: &[Module]| m.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
    let seed_walk = seed.walk(&full.located.layout);
    assert_eq!(seed_walk.error, None, "the committed seed");
    assert_eq!(names(&seed_walk.modules), names(&full.modules), "the committed seed lists other modules");
    let seed_inferred = seed.infer().unwrap_or_else(|err| panic!("the committed seed: {err}"));
    assert_eq!(seed.walk(&seed_inferred.layout).modules, seed_walk.modules);
}

/// Modules that never had init code leave `init_layout` all zero (its tree node was never
/// set): the inference then takes `struct module_layout`'s size, and still finds 6.1's layout.
#[test]
fn inferred_without_init_code() {
    use harness::introspect::modules::layout::Memory;
    let e = entry("deb-amd64");
    let mem = dump(&e, Mode::Running);
    let k = kernel(mem.as_ref());
    let full = lsmod(mem.as_ref(), &LsmodOptions { method: Some(ModMethod::Btf), ..Default::default() }).unwrap();
    let Memory::Layouts { init, .. } = full.located.layout.memory else { panic!("deb-amd64 (6.1) has core_layout") };
    let mut head_bytes = [0u8; 16];
    k.space.read(full.head.addr, &mut head_bytes).unwrap();
    let modules = full
        .modules
        .iter()
        .map(|m| {
            let mut b = vec![0u8; 4096.min(0x1000 - (m.module & 0xfff) as usize + 0x1000)];
            k.space.read(KVirt(m.module), &mut b).unwrap();
            b[init as usize..init as usize + 80].fill(0);
            (m.module, b)
        })
        .collect();
    let cut = Snapshot { head: full.head.addr.0, head_bytes, modules };
    let i = cut.infer().unwrap_or_else(|err| panic!("{err}"));
    let b = full.located.layout;
    assert_eq!((i.layout.memory, i.layout.taints, i.layout.refcnt), (b.memory, b.taints, b.refcnt), "{}", i.how);
}
