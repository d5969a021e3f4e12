//! `dmesg` over every corpus kernel against independent truth: the guest's serial console
//! (`logs/console.log`, recorded by QEMU from boot through the panic, `printk.time` on).
//!
//! The console, the running dump and the panicked dump all come from one boot (the lab dumps the
//! running guest, lets it continue, then panics it): the tests below check that rather than
//! assume it — the running log must be a prefix of the panicked one, timestamps included.
//!
//! How a console line is matched (`harness::lab::console`), explicitly:
//! - the console line is the text from its first `[%5lu.%06lu] ` on, with the CR of the serial
//!   line discipline removed; what precedes it on the serial line is not the kernel's (the
//!   firmware's output and terminal resets before the first kernel line, `"Probing EDD ...
//!   o\x1bc\x1b[?7l\x1b[2J[    0.000000] Linux version"`, or the agent's report of a module it
//!   loaded as the module's own messages came).
//! - Lines without a timestamp are user space writing to the console (`netdma: init on ...`),
//!   not the kernel log, and are not expected in it.
//! - A record of several lines is printed by the kernel with the record's timestamp on each
//!   line, as `harness dmesg` does; the console lines must appear in `dmesg`'s lines in the
//!   same order (a subsequence: `dmesg` also has records below the console's log level).
//! - Truncation: the 8250 console prints each record whole (the longest corpus lines, the
//!   oops' `Code:` bytes, come through entire), and records are stored whole up to the ring's
//!   1024-byte limit, so lines are compared for equality, trailing blanks included; a console
//!   line cut or split differently would fail the test, not be skipped.

mod common;

use common::*;
use emulator::mem::{PhysAddr, PhysMem};
use harness::introspect::addr::KVirt;
use harness::introspect::printk::render::text;
use harness::introspect::printk::snapshot::Snapshot;
use harness::introspect::printk::{dmesg, locate, read_arrays, DmesgError, DmesgOptions, DmesgReport, PrbMethod};
use harness::lab::console::{kernel_lines, missing, timestamp_ns};
use harness::lab::corpus::{Entry, Mode};
use harness::lab::recipe::default_corpus;
use rstest::rstest;

/// Timestamped kernel lines of the console, in order (`harness::lab::console`).
fn console_lines(e: &Entry) -> Vec<String> {
    let raw = std::fs::read(e.path("logs/console.log")).unwrap_or_else(|err| panic!("{}: console.log: {err}; {BUILD}", e.name));
    kernel_lines(&raw)
}

fn run(e: &Entry, m: Mode, method: PrbMethod) -> Result<DmesgReport, DmesgError> {
    let mem = dump(e, m);
    dmesg(mem.as_ref(), &DmesgOptions { method: Some(method), ..Default::default() })
}

fn has(e: &Entry, method: PrbMethod) -> bool {
    match method {
        PrbMethod::Vmcoreinfo => e.flags.vmcoreinfo,
        PrbMethod::Btf => e.flags.btf,
        PrbMethod::Inferred | PrbMethod::Auto => true,
    }
}

/// The panicked dump's log holds every console line, the panic and its call trace included,
/// with each method that has its prerequisite; the others refuse as unavailable. With `auto`,
/// the running dump's log too (see [`running_log_is_a_prefix_of_the_panic`]).
#[rstest]
fn panicked_log_holds_every_console_line(
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
    #[values(PrbMethod::Auto, PrbMethod::Vmcoreinfo, PrbMethod::Btf, PrbMethod::Inferred)] method: PrbMethod,
) {
    let e = entry(name);
    let result = run(&e, Mode::Panicked, method);
    if !has(&e, method) {
        match result {
            Err(DmesgError::Unavailable { method: got, .. }) => assert_eq!(got, method),
            Err(other) => panic!("{name}: {method} should refuse as unavailable, got {other}"),
            Ok(_) => panic!("{name}: {method} has no prerequisite here but produced a log"),
        }
        return;
    }
    let report = result.unwrap_or_else(|err| panic!("{name} {method}: {err}"));
    assert_eq!(report.read_error, None);
    assert!(report.problems.is_empty(), "{name} {method}: {:?}", report.problems);
    if method == PrbMethod::Auto {
        let first = [PrbMethod::Vmcoreinfo, PrbMethod::Btf, PrbMethod::Inferred].into_iter().find(|m| has(&e, *m));
        assert_eq!(Some(report.located.method), first, "{name}: auto takes the first method available");
    }
    let out = text(&report.records);
    let ours: Vec<&str> = out.lines().collect();
    let console = console_lines(&e);
    assert!(console.len() > 50, "{name}: only {} console lines", console.len());
    let gone = missing(&console, &ours);
    assert!(gone.is_empty(), "{name} {method}: {} of {} console lines not in dmesg, first {:?}", gone.len(), console.len(), &gone[..gone.len().min(5)]);
    // The panic itself and the last line the kernel printed; the call trace wherever the kernel
    // printed one (the tinyconfig builds have no stack dumps: their console shows none).
    for needle in ["Kernel panic - not syncing: sysrq triggered crash", "---[ end Kernel panic - not syncing"] {
        assert!(ours.iter().any(|l| l.contains(needle)), "{name}: no {needle:?}");
    }
    let traced = console.iter().any(|l| l.contains("Call Trace:"));
    assert_eq!(traced, e.name.starts_with("deb"), "{name}: the Debian kernels print a call trace, the custom ones do not");
    for needle in ["Call Trace:", "sysrq_handle_crash"] {
        assert_eq!(ours.iter().any(|l| l.contains(needle)), traced, "{name}: {needle:?}");
    }
    assert_eq!(console.last().map(String::as_str), ours.last().copied(), "{name}: the last console line is the last record");
    // Sequence numbers are consecutive: nothing between the tail and the head was skipped.
    let seqs: Vec<u64> = report.records.iter().map(|r| r.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{name}: gaps in sequence numbers");
    assert_eq!(report.records.first().map(|r| r.seq), Some(0), "{name}: the ring has not wrapped; the log starts at seq 0");
    if method == PrbMethod::Auto {
        running_log_is_a_prefix_of_the_panic(&e, &report);
    }
}

/// Every method that is available finds the same ring and the same records.
#[rstest]
fn methods_agree(#[values("deb-amd64", "deb5.10-amd64", "deb6.12-amd64", "deb7-amd64")] name: &str) {
    let e = entry(name);
    let mem = dump(&e, Mode::Panicked);
    let reports: Vec<DmesgReport> = [PrbMethod::Vmcoreinfo, PrbMethod::Btf, PrbMethod::Inferred]
        .into_iter()
        .map(|m| dmesg(mem.as_ref(), &DmesgOptions { method: Some(m), ..Default::default() }).unwrap_or_else(|err| panic!("{name} {m}: {err}")))
        .collect();
    for r in &reports[1..] {
        assert_eq!(r.located.ring, reports[0].located.ring, "{name}: {} ring", r.located.method);
        assert_eq!(r.located.layout, reports[0].located.layout, "{name}: {} layout", r.located.method);
        assert!(r.records == reports[0].records, "{name}: {} records differ", r.located.method);
    }
}

/// The running dump was taken in the same boot as the panic (the lab dumps, lets the guest
/// continue, then panics it; checked here, not assumed): its log is a prefix of the panicked
/// dump's — same sequence numbers, timestamps and text — and holds every console line printed
/// before its newest record. Console lines with exactly the newest record's timestamp may have
/// been printed just after the dump and are not required.
fn running_log_is_a_prefix_of_the_panic(e: &Entry, panicked: &DmesgReport) {
    let name = &e.name;
    let running = run(e, Mode::Running, PrbMethod::Auto).unwrap_or_else(|err| panic!("{name} running: {err}"));
    let (r, p) = (&running.records, &panicked.records);
    assert!(r.len() > 50 && r.len() < p.len(), "{name}: {} records running, {} panicked", r.len(), p.len());
    assert!(r[..] == p[..r.len()], "{name}: the running log is not a prefix of the panicked one");
    assert!(r[0].text.starts_with(&format!("Linux version {} ", e.release)), "{name}: {:?}", r[0].text);
    let last = r[r.len() - 1].ts_nsec;
    let before: Vec<String> = console_lines(e).into_iter().filter(|l| ts_of(l) < last).collect();
    let out = text(r);
    let gone = missing(&before, &out.lines().collect::<Vec<_>>());
    assert!(gone.is_empty(), "{name}: console lines before the running dump missing from its log: {:?}", &gone[..gone.len().min(5)]);
    assert!(!out.contains("Kernel panic"), "{name}: a running guest's log has no panic");
}

fn ts_of(line: &str) -> u64 {
    timestamp_ns(line).unwrap_or_else(|| panic!("a console line without a timestamp: {line:?}"))
}

/// The first lines of one kernel's log, as `dmesg` prints them (what changes with KASLR or the
/// boot — addresses, timings — is in lines past these).
#[test]
fn snapshot_of_the_first_lines() {
    let e = entry("deb-amd64");
    let report = run(&e, Mode::Panicked, PrbMethod::Auto).unwrap_or_else(|err| panic!("{err}"));
    let first: Vec<_> = report.records.iter().take(8).cloned().collect();
    insta::assert_snapshot!("deb_amd64_first_lines", text(&first));
    insta::assert_snapshot!("deb_amd64_first_json", harness::introspect::printk::render::json_lines(&first[..2]));
}

/// The kernels `panicked_log_holds_every_console_line` names (rstest's values must be literals).
const NAMED: [&str; 23] = [
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
    "custom6.12-modules",
];

/// Every kernel named is a corpus recipe, and every corpus kernel built here is named.
#[test]
fn the_tests_name_every_corpus_kernel() {
    let recipes: Vec<&str> = default_corpus().iter().map(|r| r.name).collect();
    assert!(NAMED.iter().all(|n| recipes.contains(n)), "a named kernel is no corpus recipe");
    let built = harness::lab::corpus::Corpus::open_default().entries().unwrap_or_else(|err| panic!("{err}; {BUILD}"));
    let unnamed: Vec<&str> = built.iter().map(|b| b.name.as_str()).filter(|b| !NAMED.contains(b)).collect();
    assert!(unnamed.is_empty(), "corpus kernels the dmesg tests do not name: {unnamed:?}");
}

/// The fuzz target's seed is a ring cut from deb-amd64's panicked dump (its first 64
/// descriptors and their text); the cut decodes to the same first records as the dump, and the
/// committed seed (a cut of an earlier recording, perhaps) decodes as well.
/// `NETDMA_WRITE_SEEDS=1` writes it again.
#[test]
fn fuzz_seed_is_a_ring_cut_from_a_dump() {
    let e = entry("deb-amd64");
    let mem = dump(&e, Mode::Panicked);
    let k = kernel(mem.as_ref());
    let l = locate(&k, PrbMethod::Vmcoreinfo).unwrap_or_else(|err| panic!("{err}"));
    let mut ring = vec![0u8; l.layout.ring_size as usize];
    k.space.read(l.ring, &mut ring).unwrap();
    let h = harness::introspect::printk::ring::RingHeader::parse(&l.layout, &ring).unwrap();
    let ([descs, infos, data], err) = read_arrays(&k, &l.layout, &h);
    assert_eq!(err, None);
    let n = 64usize;
    let cut = Snapshot {
        desc_ring_size: l.layout.desc_ring_size as u8,
        info_size: l.layout.info_size as u8,
        ring,
        descs: descs[..n * l.layout.desc_size as usize].to_vec(),
        infos: infos[..n * l.layout.info_size as usize].to_vec(),
        data: data[..6 << 10].to_vec(),
    };
    let (_, decoded) = cut.decode().unwrap();
    let full = dmesg(mem.as_ref(), &DmesgOptions::default()).unwrap();
    assert!(decoded.records.len() >= 40, "{} records in the cut", decoded.records.len());
    assert!(decoded.records[..] == full.records[..decoded.records.len()]);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/printk/deb-amd64-panicked");
    if std::env::var_os("NETDMA_WRITE_SEEDS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, cut.encode()).unwrap();
    }
    // The committed seed is such a cut, though not necessarily of today's dump: every rebuild of
    // the corpus entry (a new boot) changes the dump's bytes.
    let committed = std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}; NETDMA_WRITE_SEEDS=1 writes it", path.display()));
    let seed = Snapshot::parse(&committed).expect("the committed seed parses");
    assert_eq!((seed.desc_ring_size, seed.info_size), (cut.desc_ring_size, cut.info_size), "the committed seed has another layout");
    let (_, seed_decoded) = seed.decode().unwrap_or_else(|err| panic!("the committed seed: {err}"));
    assert!(seed_decoded.records.len() >= 40, "{} records in the committed seed", seed_decoded.records.len());
}

/// The structural search of `.data` (what the kernels without data symbols need) finds, on the
/// kernels that do have symbols, the very `printk_rb_static` VMCOREINFO names, with the layout
/// BTF gives.
#[rstest]
fn structural_search_finds_printk_rb_static(
    #[values("deb-amd64", "deb-rt-amd64", "deb5.10-amd64", "deb6.12-amd64", "deb7-amd64")] name: &str,
) {
    let e = entry(name);
    let mem = dump(&e, Mode::Panicked);
    let k = kernel(mem.as_ref());
    let found = harness::introspect::printk::infer::scan(&k).unwrap_or_else(|err| panic!("{name}: {err}"));
    let v = k.info.vmcoreinfo.as_ref().expect("VMCOREINFO");
    assert_eq!(Some(found.ring), v.symbol("printk_rb_static"), "{name}: {}", found.how);
    let btf = locate(&k, PrbMethod::Btf).unwrap();
    assert_eq!(found.layout, btf.layout, "{name}");
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

/// Damage to a real ring: an overwritten text block and a descriptor pointing outside the data
/// ring cost exactly their records (each named in a problem); a ring header that cannot be
/// right is an error naming the ring's address; a garbage `prb` makes `auto` move on.
#[test]
fn a_damaged_ring_costs_only_what_is_damaged() {
    let e = entry("deb-amd64");
    let mem = dump(&e, Mode::Panicked);
    let k = kernel(mem.as_ref());
    let l = locate(&k, PrbMethod::Vmcoreinfo).unwrap();
    let full = dmesg(mem.as_ref(), &DmesgOptions::default()).unwrap();
    let mut ring = vec![0u8; l.layout.ring_size as usize];
    k.space.read(l.ring, &mut ring).unwrap();
    let h = harness::introspect::printk::ring::RingHeader::parse(&l.layout, &ring).unwrap();
    let phys = |v: u64| k.space.to_phys(KVirt(v)).unwrap().0;
    let slot = |seq: u64| (seq & (h.count() - 1)) * l.layout.desc_size;
    let lpos = |seq: u64| {
        let mut b = [0u8; 8];
        k.space.read(KVirt(h.descs + slot(seq) + l.layout.text_blk_lpos), &mut b).unwrap();
        u64::from_le_bytes(b)
    };
    let patches = vec![
        // Record 10's text block id.
        (phys(h.data + (lpos(10) & (h.data_size() - 1))), 0xdeadu64.to_le_bytes().to_vec()),
        // Record 20's block: begin far past next.
        (phys(h.descs + slot(20) + l.layout.text_blk_lpos), 0x7fff_0000_0000u64.to_le_bytes().to_vec()),
    ];
    let damaged = Overlay { inner: mem.as_ref(), patches };
    let r = dmesg(&damaged, &DmesgOptions { method: Some(PrbMethod::Vmcoreinfo), ..Default::default() }).unwrap();
    assert_eq!(r.counts.invalid, 2);
    assert_eq!(r.problems.iter().map(|p| p.index).collect::<Vec<_>>(), vec![10, 20]);
    assert!(r.problems[0].reason.contains("overwritten"), "{}", r.problems[0].reason);
    let kept: Vec<_> = full.records.iter().filter(|x| x.seq != 10 && x.seq != 20).cloned().collect();
    assert!(r.records == kept);

    // count_bits of 63: refused before anything is read, naming the ring.
    let at = phys(l.ring.0 + l.layout.desc_ring + l.layout.count_bits);
    let bad = Overlay { inner: mem.as_ref(), patches: vec![(at, vec![63])] };
    match dmesg(&bad, &DmesgOptions { method: Some(PrbMethod::Vmcoreinfo), ..Default::default() }) {
        Err(err @ DmesgError::Header { .. }) => assert!(err.to_string().contains(&format!("{:#x}", l.ring.0)), "{err}"),
        other => panic!("expected a header error, got {other:?}"),
    }
    // `auto` moves past VMCOREINFO and BTF (both read the damaged header) to... the same
    // header: every method fails, and the error names each.
    match dmesg(&bad, &DmesgOptions::default()) {
        Err(DmesgError::NoneAvailable(why)) => assert_eq!(why.matches("count_bits 63").count(), 2, "{why}"),
        other => panic!("expected every method to fail, got {other:?}"),
    }
}

/// A log buffer set up with `log_buf_len=` (`printk_rb_dynamic`, which `prb` then points to):
/// simulated on a real dump by a copy of the ring elsewhere in the image and `prb` redirected to
/// it. VMCOREINFO's `prb` and the structural search (which finds `printk_rb_static` first, then
/// the pointer next to it) both read the ring in use.
#[test]
fn prb_pointing_to_another_ring_is_followed() {
    let e = entry("deb-amd64");
    let mem = dump(&e, Mode::Panicked);
    let k = kernel(mem.as_ref());
    let v = k.info.vmcoreinfo.as_ref().expect("VMCOREINFO");
    let (prb, stat) = (v.symbol("prb").unwrap(), v.symbol("printk_rb_static").unwrap());
    let l = locate(&k, PrbMethod::Vmcoreinfo).unwrap();
    assert_eq!(l.ring, stat);
    let mut ring = vec![0u8; l.layout.ring_size as usize];
    k.space.read(stat, &mut ring).unwrap();
    let dynamic = stat.wrapping_add(4 << 20);
    let phys = |v: KVirt| k.space.to_phys(v).unwrap().0;
    let patches = vec![(phys(prb), dynamic.0.to_le_bytes().to_vec()), (phys(dynamic), ring)];
    let moved = Overlay { inner: mem.as_ref(), patches };
    let full = dmesg(mem.as_ref(), &DmesgOptions::default()).unwrap();
    let r = dmesg(&moved, &DmesgOptions { method: Some(PrbMethod::Vmcoreinfo), ..Default::default() }).unwrap();
    assert_eq!(r.located.ring, dynamic);
    assert!(r.records == full.records);
    let k2 = kernel(&moved);
    let found = harness::introspect::printk::infer::scan(&k2).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(found.ring, dynamic, "{}", found.how);
}
