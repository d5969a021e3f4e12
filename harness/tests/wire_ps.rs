//! `ps`, `dmesg` and `lsmod` over the wire: a corpus dump served by the software NetTLP endpoint,
//! read by the DMA requester, gives the same listing, kernel log and modules as the image file;
//! the capture of a session, replayed, gives them again.

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;

use common::*;
use emulator::capture::recorder::Recorder;
use emulator::endpoint::{Endpoint, EndpointConfig, EndpointError, Running, Tap};
use harness::introspect::compare::compare;
use harness::introspect::layout::{LayoutInputs, MethodKind};
use harness::introspect::ps::{ps, PsOptions};
use harness::introspect::source;
use rstest::rstest;

struct PcapTap(Recorder);

impl Tap for PcapTap {
    fn datagram(&self, now: std::time::SystemTime, src: std::net::SocketAddrV4, dst: std::net::SocketAddrV4, bytes: &[u8]) {
        let _ = self.0.record(now, src, dst, bytes);
    }
}

/// A loopback address of our own, 127.x.y.z, varied by process and call.
fn loopback(salt: u32) -> Ipv4Addr {
    let x = std::process::id().wrapping_mul(2_654_435_761).wrapping_add(salt.wrapping_mul(40_503));
    Ipv4Addr::new(127, (x % 250 + 2) as u8, (x / 250 % 250 + 2) as u8, (x / 62_500 % 250 + 2) as u8)
}

/// A salt per test case: the cases of one test run side by side in one process, so a local
/// address from the pid alone is the same for all of them (`Address already in use`).
fn salt_of(name: &str) -> u32 {
    name.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32)) % 97
}

/// Serve a corpus dump over NetTLP on a free loopback address (recording a capture if asked).
fn serve(e: &harness::lab::corpus::Entry, m: harness::lab::corpus::Mode, pcap: Option<&std::path::Path>) -> (Running, Ipv4Addr) {
    for salt in 0..20 {
        let addr = loopback(salt);
        let cfg = EndpointConfig { listen: addr, ..Default::default() };
        match Endpoint::bind(dump(e, m), cfg) {
            Ok(ep) => {
                let ep = match pcap {
                    Some(p) => ep.with_tap(Arc::new(PcapTap(Recorder::create(p).expect("pcap")))),
                    None => ep,
                };
                return (ep.spawn(), addr);
            }
            Err(EndpointError::Bind { .. }) => continue,
            Err(err) => panic!("endpoint: {err}"),
        }
    }
    panic!("no free loopback address");
}

/// What `harness CMD SRC...` prints, which must succeed.
fn harness_stdout(name: &str, cmd: &str, src: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_harness")).arg(cmd).args(src).output().expect("running harness");
    assert!(out.status.success(), "{name} {cmd} {src:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// A requester reading from the endpoint at `addr`.
fn connect(addr: Ipv4Addr) -> Box<dyn emulator::mem::PhysMem> {
    // Generous retries: the test machine is shared and loaded.
    (100..120)
        .find_map(|salt| source::open_target(&format!("nettlp://{addr}?local={}&retries=10&timeout=50ms", loopback(salt))).ok())
        .expect("requester")
}

/// On every corpus kernel (the evaluation tier's with `scripts/test --eval`), running and
/// panicked: the same rows as from the image, the guest's truth, and again from the capture.
#[rstest]
fn ps_over_the_wire_and_from_its_capture(
    #[values(
        "deb-amd64",
        "deb-cloud-amd64",
        "deb-rt-amd64",
        "custom-thesis",
        "custom-randstruct",
        "deb5.10-amd64",
        "deb6.12-amd64",
        "deb7-amd64",
        // the evaluation tier (`scripts/test --eval`)
        "custom-smp-preempt-kaslr",
        "custom7-modules",
        "custom-modules",
        "custom5.10-modules",
        "custom6.12-modules",
        "custom-bare",
        "deb6.12-rt-amd64",
        "deb7-cloud-amd64",
        "custom5.10-thesis",
        "custom5.10-bare",
        "custom6.12-thesis",
        "custom6.12-bare",
        "custom7-thesis",
        "custom7-bare",
        "custom7-randstruct",
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
    let opts = PsOptions {
        method: Some(MethodKind::Auto),
        inputs: LayoutInputs::default(),
        ..Default::default()
    };
    let local_rows = ps(dump(&e, m).as_ref(), &opts).unwrap_or_else(|err| panic!("{name}: {err}")).rows;

    let dir = tempfile::tempdir().expect("temporary directory");
    let pcap = dir.path().join("ps.pcap");
    let (running, addr) = serve(&e, m, Some(&pcap));
    let wire = connect(addr);
    let report = ps(wire.as_ref(), &opts).unwrap_or_else(|err| panic!("{name} over the wire: {err}"));
    drop(wire);
    running.stop().expect("endpoint stopped cleanly");
    assert!(report.walk_error.is_none(), "{name} over the wire");
    assert_eq!(report.rows.len(), local_rows.len(), "{name}: row count over the wire");
    assert!(report.rows == local_rows, "{name}: the wire listing differs from the image's");
    assert!(compare(&report.rows, &truth(&e, m)).is_exact());

    // The capture holds every byte the analysis read: replaying it lists the same tasks.
    let replay = source::open_pcap(&pcap).expect("replaying the capture");
    let again = ps(replay.as_ref(), &opts).unwrap_or_else(|err| panic!("{name} from the capture: {err}"));
    assert!(again.walk_error.is_none(), "{name} from the capture");
    assert!(again.rows == local_rows, "{name}: the replayed listing differs");
}

/// `dmesg --target` through the emulator prints exactly what `dmesg --image` prints, with every
/// layout method, on a kernel with symbols and one found by the structural search alone; the
/// capture of the session, replayed with `--pcap`, prints it again.
#[rstest]
fn dmesg_over_the_wire_equals_the_image(#[values("deb-amd64", "custom-randstruct", "custom7-bare")] name: &str) {
    use harness::introspect::printk::{dmesg, render::text, DmesgOptions, PrbMethod};
    let e = entry(name);
    let m = harness::lab::corpus::Mode::Panicked;
    let methods: &[PrbMethod] = if e.flags.btf { &[PrbMethod::Vmcoreinfo, PrbMethod::Btf, PrbMethod::Inferred] } else { &[PrbMethod::Inferred] };
    let dir = tempfile::tempdir().expect("temporary directory");
    let pcap = dir.path().join("dmesg.pcap");
    let (running, addr) = serve(&e, m, Some(&pcap));
    let wire = connect(addr);
    for &method in methods {
        let opts = DmesgOptions { method: Some(method), ..Default::default() };
        let local = dmesg(dump(&e, m).as_ref(), &opts).unwrap_or_else(|err| panic!("{name} {method}: {err}"));
        let remote = dmesg(wire.as_ref(), &opts).unwrap_or_else(|err| panic!("{name} {method} over the wire: {err}"));
        assert_eq!(remote.read_error, None);
        assert!(remote.records == local.records, "{name} {method}: the log over the wire differs");
        assert_eq!(text(&remote.records), text(&local.records));
        assert!(remote.stats.dma_reads > 0);
    }
    drop(wire);
    // The command itself: `harness dmesg --target` prints what `--image` prints.
    let image = e.dump_path(m, harness::lab::corpus::DumpFormat::Elf).expect("ELF dump");
    let cli = |src: &[&str]| harness_stdout(name, "dmesg", src);
    let from_image = cli(&["--image", image.to_str().expect("UTF-8 path")]);
    let url = format!("nettlp://{addr}?local={}&retries=10&timeout=50ms", loopback(200 + salt_of(name)));
    assert!(cli(&["--target", &url]) == from_image, "{name}: `dmesg --target` differs from `--image`");
    assert!(String::from_utf8_lossy(&from_image).contains("Kernel panic - not syncing"));
    running.stop().expect("endpoint stopped cleanly");
    // `--pcap`: the session's capture holds every byte read, and replays to the same log.
    let pcap = pcap.to_str().expect("UTF-8 path");
    assert!(cli(&["--pcap", pcap]) == from_image, "{name}: `dmesg --pcap` differs from `--image`");
}

/// `lsmod --target` through the emulator lists exactly what `lsmod --image` lists (the module
/// structures are in the module area, read through the kernel's page tables over the wire),
/// with both methods that work on a Debian kernel; the capture, replayed with `--pcap`, lists
/// them again. The table equals the guest's own `/proc/modules` (see `corpus_lsmod.rs`).
#[rstest]
fn lsmod_over_the_wire_equals_the_image(#[values("deb-amd64", "deb7-amd64")] name: &str) {
    use harness::introspect::modules::{lsmod, render::table, LsmodOptions, ModMethod};
    let e = entry(name);
    let m = harness::lab::corpus::Mode::Panicked;
    let dir = tempfile::tempdir().expect("temporary directory");
    let pcap = dir.path().join("lsmod.pcap");
    let (running, addr) = serve(&e, m, Some(&pcap));
    let wire = connect(addr);
    for method in [ModMethod::Btf, ModMethod::Inferred] {
        let opts = LsmodOptions { method: Some(method), ..Default::default() };
        let local = lsmod(dump(&e, m).as_ref(), &opts).unwrap_or_else(|err| panic!("{name} {method}: {err}"));
        let remote = lsmod(wire.as_ref(), &opts).unwrap_or_else(|err| panic!("{name} {method} over the wire: {err}"));
        assert_eq!(remote.error, None);
        assert!(!remote.modules.is_empty());
        assert!(remote.modules == local.modules, "{name} {method}: the modules over the wire differ");
        assert_eq!(table(&remote.modules), table(&local.modules));
    }
    drop(wire);
    let image = e.dump_path(m, harness::lab::corpus::DumpFormat::Elf).expect("ELF dump");
    let cli = |src: &[&str]| harness_stdout(name, "lsmod", src);
    let from_image = cli(&["--image", image.to_str().expect("UTF-8 path")]);
    let url = format!("nettlp://{addr}?local={}&retries=10&timeout=50ms", loopback(300 + salt_of(name)));
    assert!(cli(&["--target", &url]) == from_image, "{name}: `lsmod --target` differs from `--image`");
    assert!(String::from_utf8_lossy(&from_image).contains("ts_kmp"));
    running.stop().expect("endpoint stopped cleanly");
    let pcap = pcap.to_str().expect("UTF-8 path");
    assert!(cli(&["--pcap", pcap]) == from_image, "{name}: `lsmod --pcap` differs from `--image`");
}

/// `hidden --target` through the emulator finds what `hidden --image` finds (nothing, on a clean
/// kernel) with the same views seeing the same tasks, on a kernel with BTF and symbols and on
/// one without either (the pid layout inferred); the scan too, its RAM bounded by `max_pfn`
/// over the wire (a NetTLP target reports no RAM ranges) or by the pages that answer.
#[rstest]
fn hidden_over_the_wire_equals_the_image(#[values("deb-amd64", "custom-randstruct", "custom7-bare", "custom7-modules")] name: &str) {
    use harness::introspect::hidden::{hidden, HiddenOptions, Status, View};
    let e = entry(name);
    let m = harness::lab::corpus::Mode::Running;
    let (running, addr) = serve(&e, m, None);
    let wire = connect(addr);
    let opts = HiddenOptions { scan: e.flags.btf, ..Default::default() };
    let local = hidden(dump(&e, m).as_ref(), &opts).unwrap_or_else(|err| panic!("{name}: {err}"));
    let remote = hidden(wire.as_ref(), &opts).unwrap_or_else(|err| panic!("{name} over the wire: {err}"));
    drop(wire);
    assert!(remote.findings.is_empty() && local.findings.is_empty(), "{name}: {:#?}", remote.findings);
    assert_eq!(remote.incomplete(), None, "{name}");
    for v in [View::List, View::Pid, View::Runqueue, View::Modules, View::ModTree, View::ModuleArea] {
        let (a, b) = (remote.views.iter().find(|x| x.view == v).unwrap(), local.views.iter().find(|x| x.view == v).unwrap());
        assert_eq!((a.status, a.seen, a.off_list, &a.how), (b.status, b.seen, b.off_list, &b.how), "{name}: view {v:?}");
    }
    assert_eq!(remote.seen.get(&View::Pid), local.seen.get(&View::Pid));
    if opts.scan {
        let s = remote.views.iter().find(|x| x.view == View::Scan).unwrap();
        assert_eq!(s.status, Status::Ran, "{name}: {s:?}");
        assert!(s.how.contains("max_pfn"), "{name}: {}", s.how);
        let listed: std::collections::HashSet<_> = remote.seen[&View::Scan].iter().collect();
        assert!(remote.listed.iter().filter(|t| t.pid > 0).all(|t| listed.contains(&t.addr)), "{name}: the scan over the wire missed a listed task");
    }
    // The command: `hidden --target` prints what `--image` prints (no --scan: its text names
    // where the RAM's extent came from).
    let image = e.dump_path(m, harness::lab::corpus::DumpFormat::Elf).expect("ELF dump");
    let cli = |src: &[&str]| harness_stdout(name, "hidden", src);
    let from_image = cli(&["--image", image.to_str().expect("UTF-8 path")]);
    let url = format!("nettlp://{addr}?local={}&retries=10&timeout=50ms", loopback(400 + salt_of(name)));
    assert!(cli(&["--target", &url]) == from_image, "{name}: `hidden --target` differs from `--image`");
    let text = String::from_utf8_lossy(&from_image);
    assert!(text.starts_with("KIND") && text.lines().filter(|l| l.starts_with("# view ")).count() == 7, "{name}: {text}");
    assert!(text.contains("# view pid ran:"), "{name}: {text}");
    running.stop().expect("endpoint stopped cleanly");
}

/// Over the wire, the lab's real rootkit is found as from the dump: the same findings (the
/// hidden pid and module, and the views that saw them).
#[test]
fn hidden_finds_the_rootkit_over_the_wire() {
    use harness::introspect::hidden::{hidden, HiddenOptions, View};
    let e = entry("deb7-amd64");
    let m = harness::lab::corpus::Mode::Infected;
    let i = e.infected.as_ref().expect("deb7-amd64 has an infected mode; run `corpus build --only deb7-amd64`");
    let (running, addr) = serve(&e, m, None);
    let wire = connect(addr);
    let opts = HiddenOptions::default();
    let local = hidden(dump(&e, m).as_ref(), &opts).unwrap();
    let remote = hidden(wire.as_ref(), &opts).unwrap();
    drop(wire);
    running.stop().expect("endpoint stopped cleanly");
    assert_eq!(remote.findings, local.findings);
    let names: Vec<(&str, &[View])> = remote.findings.iter().map(|f| (f.name.as_str(), f.seen_by.as_slice())).collect();
    assert_eq!(names, [(i.hidden.comm.as_str(), &[View::Pid][..]), (i.hidden.module.as_str(), &[View::ModTree, View::ModuleArea][..])]);
}
