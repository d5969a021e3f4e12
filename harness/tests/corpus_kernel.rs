//! Finding the kernel in corpus dumps, checked against the kernel's own reference data (which
//! the analysis never sees): /proc/kallsyms and System.map, layout.json from kbuild.

mod common;

use common::*;
use emulator::mem::{Counting, Patched, PhysMem};
use harness::introspect::kernel::Kernel;
use harness::introspect::layout::build::build;
use harness::introspect::layout::btf;
use harness::introspect::scan::ScanConfig;
use harness::lab::corpus::Mode;
use rstest::rstest;


/// Every symbol decoded from memory equals the guest's own /proc/kallsyms line for line
/// (address, type, name), when the lab captured it; otherwise every symbol sits at its
/// System.map address plus one KASLR shift.
#[rstest]
fn kallsyms_decoded_from_memory_matches_the_guest(#[values(
        "deb-amd64",
        "deb-cloud-amd64",
        "deb-rt-amd64",
        "custom-thesis",
        "custom-randstruct",
        "deb5.10-amd64",
        "deb6.12-amd64",
        "deb7-amd64"
    )]
    name: &str) {
    let e = entry(name);
    let mem = dump(&e, Mode::Running);
    let k = kernel(mem.as_ref());
    let ours: Vec<String> = k
        .kallsyms
        .all(mem.as_ref())
        .unwrap()
        .into_iter()
        .map(|(a, s)| format!("{:016x} {} {}", a.0, s.kind, s.name))
        .collect();
    assert_eq!(ours.len() as u32, k.info.num_syms);
    match &e.reference.kallsyms {
        Some(rel) => {
            let text = std::fs::read_to_string(e.path(rel)).unwrap_or_else(|err| panic!("{rel}: {err}; {BUILD}"));
            let theirs: Vec<&str> = text.lines().filter(|l| !l.contains('[')).collect();
            let mismatch = ours.iter().zip(&theirs).position(|(a, b)| a != b);
            assert_eq!(ours.len(), theirs.len(), "{}: symbol count", e.name);
            assert_eq!(mismatch, None, "{}: first difference at line {mismatch:?}", e.name);
        }
        None => {
            let map = std::fs::read_to_string(e.system_map_path()).unwrap_or_else(|err| panic!("{err}; {BUILD}"));
            let shift = k.info.kaslr_virt_offset;
            let linked: std::collections::HashMap<&str, u64> = map
                .lines()
                .filter_map(|l| {
                    let mut w = l.split_whitespace();
                    let a = u64::from_str_radix(w.next()?, 16).ok()?;
                    let _ = w.next()?;
                    Some((w.next()?, a))
                })
                .collect();
            let mut checked = 0;
            for line in &ours {
                let mut w = line.split_whitespace();
                let addr = u64::from_str_radix(w.next().unwrap(), 16).unwrap();
                let name = w.nth(1).unwrap();
                if addr < 0xffff_ffff_8000_0000 {
                    continue; // per-CPU offsets are not shifted
                }
                if let Some(&a) = linked.get(name) {
                    assert_eq!(addr, a.wrapping_add(shift), "{}: {name}", e.name);
                    checked += 1;
                }
            }
            assert!(checked > 1000, "{}: only {checked} symbols comparable", e.name);
        }
    }
}

/// The scan that finds the kernel reads under 2 % of the guest's RAM.
#[rstest]
fn scan_reads_little(#[values(
        "deb-amd64",
        "deb-cloud-amd64",
        "deb-rt-amd64",
        "custom-thesis",
        "custom-randstruct",
        "deb5.10-amd64",
        "deb6.12-amd64",
        "deb7-amd64"
    )]
    name: &str) {
    let e = entry(name);
    let mem = dump(&e, Mode::Running);
    let ram: u64 = mem.ranges().iter().map(|r| r.len()).sum();
    let counted = Counting::new(mem.as_ref());
    Kernel::scan(&counted, &ScanConfig::default()).unwrap();
    let bytes = counted.snapshot().bytes;
    assert!(bytes * 50 < ram, "{}: scan read {bytes} of {ram} bytes ({:.2} %)", e.name, bytes as f64 * 100.0 / ram as f64);
}

/// The layout read from the kernel's BTF equals kbuild's offsets (reference/layout.json).
#[rstest]
fn btf_layout_equals_kbuild(#[values("deb-amd64", "deb-cloud-amd64", "deb-rt-amd64", "deb5.10-amd64", "deb6.12-amd64", "deb7-amd64")] name: &str) {
    let e = entry(name);
    assert!(e.flags.btf, "{} is expected to have BTF", e.name);
    let mem = dump(&e, Mode::Running);
    let k = kernel(mem.as_ref());
    let parsed = btf::load(&k).unwrap();
    assert!(parsed.type_count() > 10_000, "{}: only {} BTF types", e.name, parsed.type_count());
    let l = build(&parsed).unwrap();
    let reference = e.layout().unwrap();
    assert!(l.task.exit_state.is_some(), "{}: BTF gives exit_state", e.name);
    for (key, ours) in l.walker_offsets() {
        assert_eq!(Some(ours), reference.offset(key), "{}: {key}", e.name);
    }
    assert_eq!(Some(&l.task.size), reference.sizes.get("task_struct"), "{}: sizeof(task_struct)", e.name);
}

/// KASLR values derived from memory agree with the guest's own view and with vmcoreinfo.
#[rstest]
fn kaslr_values_agree(#[values(
        "deb-amd64",
        "deb-cloud-amd64",
        "deb-rt-amd64",
        "custom-thesis",
        "custom-randstruct",
        "deb5.10-amd64",
        "deb6.12-amd64",
        "deb7-amd64"
    )]
    name: &str) {
    let e = entry(name);
    let mem = dump(&e, Mode::Panicked);
    let k = kernel(mem.as_ref());
    if let Some(v) = &k.info.vmcoreinfo {
        assert_eq!(v.osrelease(), Some(e.release.as_str()));
        assert_eq!(v.kernel_offset(), Some(k.info.text_virt.0 - 0xffff_ffff_8100_0000));
    }
    assert_eq!(k.info.release, e.release);
    assert_eq!(k.info.text_phys.0 % (2 << 20), 0, "{}: _text not 2 MiB aligned physically", e.name);
    if !e.flags.kaslr {
        assert_eq!(k.info.text_virt.0, 0xffff_ffff_8100_0000, "{}: KASLR off but _text moved", e.name);
    }
}

/// Kernel-thread names come out the same when `struct kthread` / `struct worker` offsets are
/// inferred from memory instead of read from BTF, and the inferred offsets are BTF's.
#[rstest]
fn naming_inference_agrees_with_btf(#[values("deb-amd64", "deb-cloud-amd64", "deb-rt-amd64", "deb5.10-amd64", "deb6.12-amd64", "deb7-amd64")] name: &str) {
    use harness::introspect::walk::{walk, WalkConfig};
    let e = entry(name);
    let mem = dump(&e, Mode::Running);
    let k = kernel(mem.as_ref());
    let full = build(&btf::load(&k).unwrap()).unwrap();
    let mut bare = full.clone();
    bare.kthread = None;
    bare.worker = None;
    let init = k.info.init_task.unwrap();
    let a = walk(&k.space, &full, init, WalkConfig::default());
    let b = walk(&k.space, &bare, init, WalkConfig::default());
    assert!(a.error.is_none() && b.error.is_none());
    let names = |o: &harness::introspect::walk::WalkOutcome| o.threads.iter().map(|t| (t.pid, t.comm.clone())).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b), "{name}");
    assert!(a.threads.iter().any(|t| t.comm.starts_with(b"kworker/") && t.comm.contains(&b'-')), "{name}: no kworker description to check");
}

/// The `btf` layout method reads part of `.BTF` (well under half on Debian's 5.10 to 6.12, from
/// its start; a few percent on 7.x, whose BTF is sorted by name, through the kernel's own index
/// of it) and gives the whole blob's layout, and so does the pid index's BTF lookup; `struct
/// kthread` / `struct worker` are the whole blob's or left out for the walk to infer (checked
/// against BTF by `naming_inference_agrees_with_btf`), and found on a sorted BTF.
#[rstest]
#[case::deb_amd64("deb-amd64", 2)]
#[case::deb_cloud_amd64("deb-cloud-amd64", 2)]
#[case::deb_rt_amd64("deb-rt-amd64", 2)]
#[case::deb5_10("deb5.10-amd64", 2)]
#[case::deb6_12("deb6.12-amd64", 2)]
#[case::deb7_sorted_by_name("deb7-amd64", 10)]
fn btf_method_reads_part_of_the_blob(#[case] name: &str, #[case] at_most: u64) {
    use harness::introspect::layout::{Layout, LayoutInputs, LayoutMethod};
    use harness::introspect::pidns::PidLayout;
    let e = entry(name);
    let mem = dump(&e, Mode::Running);
    let counted = Counting::new(mem.as_ref());
    let k = kernel(&counted);
    let sorted = k.btf_blob.lock().unwrap().is_indexed();
    let before = counted.snapshot();
    let part = btf::BtfMethod.layout(&k, &LayoutInputs::default()).unwrap();
    let pid = btf::with_btf(&k, PidLayout::from_btf_core)
        .unwrap()
        .1
        .unwrap();
    let read = counted.snapshot().since(before).bytes;
    let (start, stop) = k.info.btf.unwrap();
    let blob = stop.0 - start.0;
    let parsed = btf::load(&k).unwrap();
    let whole = build(&parsed).unwrap();
    let core = |l: &Layout| Layout {
        kthread: None,
        worker: None,
        ..l.clone()
    };
    assert_eq!(core(&part), core(&whole), "{name}");
    assert_eq!(pid, PidLayout::from_btf_core(&parsed).unwrap(), "{name}");
    assert!(
        part.kthread.is_none() || part.kthread == whole.kthread,
        "{name}"
    );
    assert!(
        part.worker.is_none() || part.worker == whole.worker,
        "{name}"
    );
    if sorted {
        assert_eq!(
            (&part.kthread, &part.worker),
            (&whole.kthread, &whole.worker),
            "{name}: found by name"
        );
    }
    eprintln!(
        "BTF {name}: {read} of {blob} bytes read for the layout; kthread from BTF: {}",
        part.kthread.is_some()
    );
    assert!(
        read < blob / at_most,
        "{name}: read {read} of a {blob}-byte .BTF"
    );
    assert_eq!(
        sorted,
        name.starts_with("deb7"),
        "{name}: the kernel's index is used where BTF is sorted by name"
    );
}

/// A kernel index of BTF that misleads (a pointer to a record outside the type section) is
/// dropped: the layout comes from the blob, and equals its layout.
#[test]
fn a_misleading_btf_index_falls_back_to_the_blob() {
    use harness::introspect::layout::{LayoutInputs, LayoutMethod};
    let e = entry("deb7-amd64");
    let mem = dump(&e, Mode::Running);
    let k = kernel(mem.as_ref());
    let whole = build(&btf::load(&k).unwrap()).unwrap();
    let ix = k
        .btf_blob
        .lock()
        .unwrap()
        .index()
        .expect("Debian 7.2's BTF is indexed");
    // The pointer to the first named record, which the search reads first.
    let at = harness::introspect::addr::KVirt(ix.types + 8 * u64::from(ix.named));
    let victim = k.space.linear(at).expect("types[] in the direct map");
    let patched = Patched::new(
        mem.as_ref(),
        vec![(victim, 0x4141_4141_4141_4141u64.to_le_bytes().to_vec())],
    );
    let k = kernel(&patched);
    assert!(k.btf_blob.lock().unwrap().is_indexed());
    let l = btf::BtfMethod.layout(&k, &LayoutInputs::default()).unwrap();
    assert!(
        !k.btf_blob.lock().unwrap().is_indexed(),
        "the index is dropped"
    );
    assert_eq!(l, whole);
}

/// Corrupting the real task list (garbage pointer, a loop back to an earlier task) ends the
/// walk with an error and the tasks read before the corruption — no hang, no panic.
#[rstest]
fn corrupted_task_list_gives_partial_results(#[values("garbage", "loop")] how: &str) {
    use harness::introspect::ps::{ps, PsOptions};
    let e = entry("deb-amd64");
    let mem = dump(&e, Mode::Running);
    let k = kernel(mem.as_ref());
    let l = build(&btf::load(&k).unwrap()).unwrap();
    // The 10th and 3rd tasks on the list.
    let mut node = k.space.read_u64(k.info.init_task.unwrap().wrapping_add(l.task.tasks)).unwrap();
    let mut nodes = vec![];
    for _ in 0..10 {
        nodes.push(node);
        node = k.space.read_u64(harness::introspect::addr::KVirt(node)).unwrap();
    }
    let victim = k.space.linear(harness::introspect::addr::KVirt(nodes[9])).unwrap();
    let value = match how {
        "garbage" => 0x4141_4141_4141_4141u64,
        _ => nodes[2],
    };
    // One list pointer overwritten (an overlay; the image file is untouched).
    let patched = Patched::new(mem.as_ref(), vec![(victim, value.to_le_bytes().to_vec())]);
    let r = ps(&patched, &PsOptions { method: Some(harness::introspect::layout::MethodKind::Btf), ..Default::default() }).unwrap();
    let err = r.walk_error.expect("the corruption is reported").to_string();
    assert!(err.contains("tasks.next") || err.contains("prev") || err.contains("loops"), "{how}: {err}");
    let leaders = r.rows.iter().filter(|row| row.threads.is_some()).count();
    assert_eq!(leaders, 10, "{how}: the ten processes before the corruption are listed");
}

/// Where the kernel exports its kallsyms tables in VMCOREINFO (Debian's 6.1 and later), the
/// tables taken from those entries are the ones the structural search found, and the kernel
/// reports that they agree; 5.10 exports none.
#[rstest]
fn vmcoreinfo_kallsyms_entries_agree_with_the_search(#[values(
        "deb-amd64",
        "deb5.10-amd64",
        "deb6.12-amd64",
        "deb7-amd64"
    )]
    name: &str) {
    use harness::introspect::kallsyms::locate::from_vmcoreinfo;
    let e = entry(name);
    let mem = dump(&e, Mode::Running);
    let k = kernel(mem.as_ref());
    let info = k.info.vmcoreinfo.as_ref().unwrap_or_else(|| panic!("{name}: no VMCOREINFO"));
    match from_vmcoreinfo(mem.as_ref(), info) {
        Some(loc) => {
            let ours = &k.found.kallsyms;
            assert_eq!(
                (loc.order, loc.mode, loc.offsets, loc.names, loc.num_syms, loc.relative_base),
                (ours.order, ours.mode, ours.offsets, ours.names, ours.num_syms, ours.relative_base),
                "{name}"
            );
            assert!(k.info.kallsyms_format.contains("VMCOREINFO agrees"), "{name}: {}", k.info.kallsyms_format);
        }
        None => assert!(info.symbol("kallsyms_names").is_none(), "{name}: VMCOREINFO names kallsyms_names but gave no tables"),
    }
}

/// With the structural search kept from reaching the tables (a span of one page), the kernel
/// is still found: through VMCOREINFO's entries, with the same symbols.
#[rstest]
fn kallsyms_found_through_vmcoreinfo_alone(#[values("deb-amd64", "deb7-amd64")] name: &str) {
    let e = entry(name);
    let mem = dump(&e, Mode::Running);
    let mut cfg = ScanConfig::default();
    cfg.kallsyms.span = 4096;
    let found = Kernel::scan(mem.as_ref(), &cfg).unwrap_or_else(|err| panic!("{name}: {err}"));
    assert_eq!(found.kallsyms_from, "VMCOREINFO");
    let k = Kernel::open(mem.as_ref(), found).unwrap();
    let normal = kernel(mem.as_ref());
    let names = ["init_task", "linux_banner", "_text", "vmcoreinfo_data"];
    assert_eq!(k.symbols(&names).unwrap(), normal.symbols(&names).unwrap(), "{name}");
    assert_eq!(k.info.num_syms, normal.info.num_syms);
}

/// Lookups through `kallsyms_seqs_of_names` (6.2 on) give what a scan of every entry gives,
/// for symbols that exist (global, local, repeated) and for ones that do not.
#[rstest]
fn name_search_equals_scan(#[values("deb-amd64", "deb5.10-amd64", "deb6.12-amd64", "deb7-amd64", "custom-thesis")] name: &str) {
    let e = entry(name);
    let mem = dump(&e, Mode::Running);
    let mut k = kernel(mem.as_ref());
    // Whatever the stream's length, search (what is tested here).
    k.kallsyms.search_above = 0;
    let ks = &k.kallsyms;
    // Every names-first table (6.4 on) has kallsyms_seqs_of_names; offsets-first ones since 6.2
    // (and where a stable series took it: Debian's 6.1 has it, 5.10 not).
    let has = ks.has_seqs_of_names || ks.location.order == harness::introspect::kallsyms::TableOrder::NamesFirst;
    // Every 997th symbol's name, plus names that repeat or do not exist.
    let mem = mem.as_ref();
    let mut names: Vec<String> =
        (0..ks.len() as u32).step_by(997).filter_map(|i| ks.symbol(mem, i).unwrap()).map(|s| s.name).collect();
    names.extend(["init_task", "_text", "__func__", "cleanup_module", "no_such_symbol_anywhere", "a", ""].map(String::from));
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(ks.indices_of(mem, &refs).unwrap(), ks.indices_by_scan(mem, &refs).unwrap(), "{name}");
    assert_eq!(ks.searches_by_name(), has, "{name}: seqs_of_names used iff the kernel has it (and the search agreed with itself)");
}

/// The real-mode trampoline's page table maps the image where kallsyms says it is: its first
/// frame is `_text`'s, and the `.rodata` frame whose banner the scan finds comes before every
/// text frame in the order the hint is read (first of all where the kernel maps it with one
/// read-only no-execute entry, as Debian's do). With the hint the kernel is found among the
/// image's frames; without it the scan finds the same frame.
#[rstest]
fn trampoline_tables_map_the_image_kallsyms_places(
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
    #[values(Mode::Running, Mode::Panicked)] mode: Mode,
) {
    use harness::introspect::trampoline;
    let e = entry(name);
    let mem = dump(&e, mode);
    let image = trampoline::image_frames(mem.as_ref()).unwrap_or_else(|| panic!("{name}: no real-mode header or tables below 1 MiB"));
    let k = kernel(mem.as_ref());
    assert_eq!(image.frames[0].phys, k.info.text_phys, "{name}: first frame mapped");
    assert_eq!(image.frames[0].virt, k.info.text_virt.0, "{name}: its virtual address");
    let text = trampoline::Access { writable: false, executable: true };
    assert_eq!(image.frames[0].access, Some(text), "{name}: text is read-only and executable");
    let order = image.banner_order();
    let at = order.iter().position(|&f| f == k.info.rodata_phys).unwrap_or_else(|| panic!("{name}: .rodata frame not mapped"));
    let executable: Vec<_> = image.frames.iter().filter(|f| f.access.is_some_and(|a| a.executable)).map(|f| f.phys).collect();
    assert!(order[..at].iter().all(|f| !executable.contains(f)), "{name}: .rodata after text in {order:x?}");
    if name.starts_with("deb") {
        assert_eq!(at, 0, "{name}: .rodata mapped whole, read first");
    }
    let hinted = Kernel::scan(mem.as_ref(), &ScanConfig::default()).unwrap();
    assert!(hinted.candidates_probed <= image.frames.len(), "{name}: found among the image's frames");
    let scanned = Kernel::scan(mem.as_ref(), &ScanConfig { trampoline: false, ..ScanConfig::default() }).unwrap();
    assert_eq!((scanned.rodata, &scanned.banner.text), (hinted.rodata, &hinted.banner.text), "{name}");
}
