//! `ps` over the wire: a corpus dump served by the software NetTLP endpoint, read by the DMA
//! requester, gives the same listing as the image file; the capture of that session, replayed,
//! gives it again.

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;

use common::*;
use emulator::capture::recorder::Recorder;
use emulator::endpoint::{Endpoint, EndpointConfig, EndpointError, Tap};
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

#[rstest]
fn ps_over_the_wire_and_from_its_capture(
    #[values("deb-amd64", "deb7-amd64")] name: &str,
) {
    let e = entry(name);
    let m = harness::lab::corpus::Mode::Running;
    let opts = PsOptions {
        method: Some(MethodKind::Auto),
        inputs: LayoutInputs::default(),
        ..Default::default()
    };
    let local_rows = ps(dump(&e, m).as_ref(), &opts).unwrap_or_else(|err| panic!("{name}: {err}")).rows;

    let dir = tempfile::tempdir().expect("temporary directory");
    let pcap = dir.path().join("ps.pcap");
    let recorder = Recorder::create(&pcap).expect("pcap recorder");
    let mut served = None;
    for salt in 0..20 {
        let addr = loopback(salt);
        let cfg = EndpointConfig { listen: addr, ..Default::default() };
        match Endpoint::bind(dump(&e, m), cfg) {
            Ok(ep) => {
                served = Some((ep.with_tap(Arc::new(PcapTap(Recorder::create(&pcap).expect("pcap")))).spawn(), addr));
                break;
            }
            Err(EndpointError::Bind { .. }) => continue,
            Err(err) => panic!("endpoint: {err}"),
        }
    }
    drop(recorder);
    let (running, addr) = served.expect("no free loopback address");
    let mut wire = None;
    for salt in 100..120 {
        // Generous retries: the test machine is shared and loaded.
        let url = format!("nettlp://{addr}?local={}&retries=10&timeout=50ms", loopback(salt));
        match source::open_target(&url) {
            Ok(mem) => {
                wire = Some(mem);
                break;
            }
            Err(_) => continue,
        }
    }
    let wire = wire.expect("requester");
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
