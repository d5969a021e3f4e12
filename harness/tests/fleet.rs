//! The emulated fleet and `harness fleet`: many endpoints from one emulator (one wildcard socket
//! per port, IP_PKTINFO telling them apart), each answering with its own image and counting
//! its own traffic; a sweep over a small fleet of corpus kernels, exact against each dump's
//! truth, with broken endpoints reported and the layout cache paying each build once.
//!
//! Every test runs in a private network namespace (`enter_private_network`, root), so the
//! fleet's wildcard ports never touch anyone else's endpoints on this shared host.

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use emulator::endpoint::{Behaviour, Endpoint, EndpointConfig};
use emulator::fleet::enter_private_network;
use emulator::mem::{Deadline, PhysAddr, PhysMem, PhysRange, Patched};
use emulator::pattern::PatternMem;
use harness::dma::{Requester, Target};
use harness::failure::FailureKind;
use harness::fleet::{parse_targets, sweep, MachineReport, SweepConfig};
use harness::introspect::compare::compare;
use harness::introspect::identity::{identify, IdentitySource};
use harness::lab::corpus::Mode;

const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

fn private_network() {
    enter_private_network().expect("a private network namespace (needs root: CAP_SYS_ADMIN)");
}

fn marked(text: &[u8]) -> Arc<dyn PhysMem> {
    Arc::new(Patched::new(PatternMem::new(vec![PhysRange::new(0, 1 << 20)]), vec![(PhysAddr(0x1000), text.to_vec())]))
}

fn connect(addr: &str, options: &str) -> Requester {
    let t: Target = format!("nettlp://{addr}?reuseaddr=1&timeout=20ms&retries=3{options}").parse().unwrap();
    Requester::connect(&t).unwrap_or_else(|e| panic!("{addr}: {e}"))
}

fn read_at(mem: &dyn PhysMem, addr: u64, len: usize) -> Result<Vec<u8>, emulator::mem::MemError> {
    let mut buf = vec![0u8; len];
    mem.read_phys(PhysAddr(addr), &mut buf).map(|()| buf)
}

#[test]
fn each_address_answers_with_its_own_image_and_counts_its_own_traffic() {
    private_network();
    let endpoints = vec![
        ("127.0.1.1".parse().unwrap(), Behaviour::Serve(marked(b"endpoint A"))),
        ("127.0.1.2".parse().unwrap(), Behaviour::Serve(marked(b"endpoint B"))),
        ("127.0.1.3".parse().unwrap(), Behaviour::Silent),
    ];
    let running = Endpoint::bind_fleet(ANY, endpoints, EndpointConfig::default()).expect("fleet").spawn();
    let (a, b) = (connect("127.0.1.1", ""), connect("127.0.1.2", ""));
    for _ in 0..3 {
        assert_eq!(read_at(&a, 0x1000, 10).unwrap(), b"endpoint A");
    }
    assert_eq!(read_at(&b, 0x1000, 10).unwrap(), b"endpoint B");
    // around the mark, each serves the shared pattern
    assert_eq!(read_at(&b, 0x2000, 64).unwrap(), read_at(&a, 0x2000, 64).unwrap());

    // a silent endpoint: no device ID, and reads time out cleanly within their budget
    let t: Target = "nettlp://127.0.1.3?reuseaddr=1".parse().unwrap();
    let err = Requester::connect(&t).expect_err("a silent endpoint gives no device ID");
    assert!(err.to_string().contains("no reply"), "{err}");
    let silent = connect("127.0.1.3", "&requester=1a:00.0");
    let started = std::time::Instant::now();
    assert!(read_at(&Deadline::new(&silent, Duration::from_secs(2)), 0x1000, 8).is_err());
    assert!(started.elapsed() < Duration::from_secs(5));

    let per = running.handle.endpoints();
    assert_eq!(per.iter().map(|e| e.addr.to_string()).collect::<Vec<_>>(), ["127.0.1.1", "127.0.1.2", "127.0.1.3"]);
    assert_eq!((per[0].counters.reads_ok, per[1].counters.reads_ok, per[2].counters.reads_ok), (4, 2, 0));
    assert_eq!((per[0].counters.messages, per[1].counters.messages), (1, 1), "one GET_DEV_ID each");
    assert!(per[2].ignored >= 4, "the silent endpoint counted what it ignored: {}", per[2].ignored);
    assert_eq!(per[2].counters.datagrams, 0);
    drop((a, b, silent));
    let total = running.stop().unwrap();
    assert_eq!(total.reads_ok, 6);
}

#[test]
fn fault_injection_is_per_endpoint() {
    private_network();
    let endpoints = (1..=2).map(|k| (Ipv4Addr::new(127, 0, 2, k), Behaviour::Serve(marked(b"x")))).collect();
    let fault = "loss=0.3,seed=5".parse().unwrap();
    let running = Endpoint::bind_fleet(ANY, endpoints, EndpointConfig { fault, ..Default::default() }).unwrap().spawn();
    let a = connect("127.0.2.1", "&requester=1a:00.0&retries=16");
    for k in 0..64u64 {
        assert_eq!(read_at(&a, 0x4000 + k * 64, 64).unwrap(), read_at(&PatternMem::new(vec![PhysRange::new(0, 1 << 20)]), 0x4000 + k * 64, 64).unwrap());
    }
    let per = running.handle.endpoints();
    assert!(per[0].counters.fault_dropped > 0, "endpoint A lost some of its answers");
    assert_eq!(per[1].counters, Default::default(), "endpoint B saw nothing and dropped nothing");
    drop(a);
    running.stop().unwrap();
}

/// The kernels of the small fleet, with how many machines run each.
const FLEET: &[(&str, u8)] = &[("deb-amd64", 3), ("deb7-amd64", 2), ("deb5.10-amd64", 1)];

#[test]
fn a_sweep_of_a_small_fleet_is_exact_and_reports_the_broken_endpoints() {
    private_network();
    let mut endpoints = Vec::new();
    let mut truth_of = std::collections::HashMap::new();
    let mut k = 1u8;
    for &(name, count) in FLEET {
        let e = entry(name);
        let mem: Arc<dyn PhysMem> = Arc::from(dump(&e, Mode::Running));
        for _ in 0..count {
            let addr = Ipv4Addr::new(127, 0, 3, k);
            endpoints.push((addr, Behaviour::Serve(mem.clone())));
            truth_of.insert(format!("nettlp://{addr}"), (name, truth(&e, Mode::Running)));
            k += 1;
        }
    }
    let (silent, random) = (Ipv4Addr::new(127, 0, 3, k), Ipv4Addr::new(127, 0, 3, k + 1));
    endpoints.push((silent, Behaviour::Silent));
    endpoints.push((random, Behaviour::Serve(Arc::new(PatternMem::new(vec![PhysRange::new(0, 64 << 20)])))));
    let running = Endpoint::bind_fleet(ANY, endpoints, EndpointConfig { responder: Default::default(), ..Default::default() }).unwrap().spawn();

    let targets = parse_targets(&format!("nettlp://127.0.3.1-127.0.3.{}?timeout=20ms", k + 1)).unwrap();
    for cache in [true, false] {
        let cfg = SweepConfig { workers: 4, cache, rows: true, budget: Duration::from_secs(60), ..SweepConfig::default() };
        let mut reports: Vec<MachineReport> = Vec::new();
        let summary = sweep(&targets, &cfg, |r| reports.push(r.clone()));
        assert_eq!(reports.len(), targets.len(), "one report per machine");
        for r in &reports {
            match truth_of.get(&r.target) {
                Some((name, truth)) => {
                    assert!(r.error.is_none(), "{} ({name}): {:?}", r.target, r.error);
                    let c = compare(r.rows.as_deref().unwrap(), truth);
                    assert!(c.is_exact(), "{} ({name}): {}", r.target, c.describe());
                }
                None if r.target == format!("nettlp://{silent}") => {
                    assert_eq!(r.error.as_ref().map(|e| e.kind), Some(FailureKind::Source), "{r:?}")
                }
                None => assert_eq!(r.error.as_ref().map(|e| e.kind), Some(FailureKind::Kernel), "{r:?}"),
            }
        }
        assert_eq!((summary.listed, summary.failed), (6, 2));
        if cache {
            assert_eq!((summary.kernels_learned, summary.cache_hits), (3, 3), "{summary:?}");
            let learned_bytes: u64 = reports.iter().filter(|r| r.cache_hit == Some(false)).map(|r| r.dma_bytes).max().unwrap();
            let hit_bytes: u64 = reports.iter().filter(|r| r.cache_hit == Some(true)).map(|r| r.dma_bytes).max().unwrap();
            assert!(hit_bytes < learned_bytes, "a hit reads less: {hit_bytes} vs {learned_bytes}");
        } else {
            assert!(reports.iter().all(|r| r.cache_hit.is_none()));
        }
    }
    running.stop().unwrap();
}

/// The identity is per build: the same dump twice is one identity; Debian 6.1 amd64 and cloud
/// (one version, two builds) and a custom kernel are three; kernels with VMCOREINFO give its
/// build ID, 7.x custom ones the `.notes` note, 6.1 custom ones (no data symbols) the digest.
#[test]
fn identities_tell_builds_apart() {
    let id = |name: &str, mode| {
        let e = entry(name);
        let mem = dump(&e, mode);
        let k = kernel(mem.as_ref());
        identify(&k).unwrap_or_else(|err| panic!("{name}: {err}"))
    };
    let a = id("deb-amd64", Mode::Running);
    assert_eq!(a.source, IdentitySource::Vmcoreinfo);
    assert_eq!(a, id("deb-amd64", Mode::Panicked), "one boot, one build");
    let cloud = id("deb-cloud-amd64", Mode::Running);
    assert_ne!(a, cloud);
    assert_ne!(a.id, cloud.id);
}

/// Builds without VMCOREINFO: a build ID from the ELF notes where the build kept one (7.x
/// custom), else a digest of kallsyms that neither KASLR nor the boot changes (6.1 bare).
#[rstest::rstest]
fn identities_of_builds_without_vmcoreinfo(#[values("custom7-bare")] notes: &str, #[values("custom-bare")] digest: &str) {
    let id = |name: &str, mode| {
        let e = entry(name);
        let mem = dump(&e, mode);
        let k = kernel(mem.as_ref());
        identify(&k).unwrap_or_else(|err| panic!("{name}: {err}"))
    };
    let n = id(notes, Mode::Running);
    assert_eq!(n.source, IdentitySource::Notes);
    assert_eq!(n.id.len(), 40, "a SHA-1 build ID");
    let randstruct = id("custom7-randstruct", Mode::Running);
    assert_ne!(n.id, randstruct.id);
    let d = id(digest, Mode::Running);
    assert_eq!(d.source, IdentitySource::KallsymsDigest);
    assert_eq!(d, id(digest, Mode::Panicked), "the digest does not depend on KASLR or the boot");
}
