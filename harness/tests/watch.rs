//! `harness watch` as a user runs it. On a corpus dump nothing changes: no event, and every round
//! after the first costs a small fraction of it. On a running lab guest (not paused; its live RAM
//! file served by the software NetTLP endpoint) with the churn workload starting 200 processes a
//! second, every event is checked against the churn's own log and the agent's `/proc`
//! (`introspect::smear`): no event for a task the guest did not have, and a `started` and an
//! `exited` event for every churn task that lived two periods (the interval, or the longest gap
//! between two rounds' starts when rounds took longer).

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use common::*;
use emulator::endpoint::{Endpoint, EndpointConfig, EndpointError};
use emulator::image::{Format, Machine};
use harness::introspect::ps::Row;
use harness::introspect::smear::Truth;
use harness::introspect::watch::{Event, EventKind};
use harness::lab::cache::Cache;
use harness::lab::churn::{Churn, GuestClock};
use harness::lab::corpus::{DumpFormat, Mode};
use harness::lab::shellport::{ShellGuest, ShellGuestOptions};
use rstest::rstest;

/// A `--stats` line of `harness watch`.
#[derive(serde::Deserialize)]
struct StatsLine {
    time_unix_ms: u64,
    #[serde(flatten)]
    stats: harness::introspect::watch::RoundStats,
}

/// A `--format jsonl` line.
#[derive(serde::Deserialize)]
struct EventLine {
    time_unix_ms: u64,
    #[serde(flatten)]
    event: Event,
}

/// Runs `harness watch ARGS --format jsonl --stats`, which must succeed.
fn watch(args: &[&str]) -> (Vec<EventLine>, Vec<StatsLine>) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_harness"))
        .arg("watch")
        .args(args)
        .args(["--format", "jsonl", "--stats"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("running harness");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "harness watch {args:?}: {stderr}");
    let events = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect();
    let stats = stderr.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect();
    (events, stats)
}

fn at(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

#[rstest]
fn a_dump_never_changes_and_later_rounds_cost_little(#[values("deb-amd64", "deb7-amd64")] name: &str) {
    let e = entry(name);
    let path = e.dump_path(Mode::Running, DumpFormat::Elf).expect("running ELF dump");
    let (events, stats) = watch(&["--image", path.to_str().unwrap(), "--rounds", "3", "--interval", "10ms"]);
    assert!(events.is_empty(), "{} events on a dump", events.len());
    assert_eq!(stats.iter().map(|s| s.stats.round).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    let first = &stats[0].stats;
    assert!(first.tasks > 50 && first.walk_error.is_none(), "{:?}", first.walk_error);
    // The first listing finds the kernel, decodes kallsyms and reads BTF (1.0 MB on Debian 6.1,
    // 6.4 MB on 7.2); a round only walks: no more than `ps`'s walk phase of the same dump.
    let ps = std::process::Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["ps", "--image", path.to_str().unwrap(), "--format", "json", "--stats"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("running harness ps");
    let line = String::from_utf8_lossy(&ps.stderr).lines().rfind(|l| l.starts_with('{')).map(str::to_owned).expect("ps --stats line");
    let ps_stats: harness::introspect::ps::Stats = serde_json::from_str(&line).expect("ps stats");
    let walk = ps_stats.phases.iter().find(|p| p.name == "walk").expect("walk phase").bytes;
    assert!(walk * 3 < first.dma_bytes, "the walk ({walk} bytes) is a small part of the first listing ({})", first.dma_bytes);
    for s in &stats[1..] {
        assert_eq!((s.stats.tasks, s.stats.consistency), (first.tasks, Default::default()));
        assert!(s.stats.dma_bytes <= walk + walk / 10, "round {}: {} bytes, a listing's walk {walk}", s.stats.round, s.stats.dma_bytes);
    }
}

/// A free loopback address for the endpoint, varied by kernel so the cases can run side by side.
fn serve(ram: &std::path::Path, salt: u8) -> (emulator::endpoint::Running, Ipv4Addr) {
    for k in 0..50u8 {
        let addr = Ipv4Addr::new(127, 83, salt, 10 + k);
        let image = emulator::image::open(ram, Some(Format::Live(Machine::Pc)), None).expect("live RAM file");
        match Endpoint::bind(image, EndpointConfig { listen: addr, ..Default::default() }) {
            Ok(ep) => return (ep.spawn(), addr),
            Err(EndpointError::Bind { .. }) => continue,
            Err(err) => panic!("endpoint: {err}"),
        }
    }
    panic!("no free loopback address");
}

fn row_of(e: &Event) -> Row {
    Row {
        pid: e.pid,
        tgid: e.tgid,
        ppid: e.ppid,
        uid: e.uid,
        state: String::new(),
        comm: e.comm.clone(),
        cmdline: e.cmdline.clone(),
        threads: None,
        start_time: e.start_time,
        kthread: e.kthread,
    }
}

#[rstest]
#[case::v6_1("deb-amd64", 1)]
#[case::v7("deb7-amd64", 2)]
fn a_churning_guest_is_watched_exactly(#[case] name: &str, #[case] salt: u8) {
    let cache = Cache::open_default();
    let mut g = ShellGuest::boot(&cache, name, &ShellGuestOptions::default())
        .unwrap_or_else(|e| panic!("{name}: booting a shell guest: {e}; run `cargo run -p harness -- corpus build --tier test`"));
    let (_endpoint, addr) = serve(g.ram_path(), salt);
    let before = g.truth().expect("truth");
    let mut clock = GuestClock::default();
    clock.sample(&mut g, 3).expect("guest clock");
    let churn = Churn::start(&mut g, 200).expect("nd-churn");
    std::thread::sleep(Duration::from_millis(500));
    let interval = Duration::from_millis(100);
    let (events, stats) = watch(&["--target", &format!("nettlp://{addr}?retries=10"), "--rounds", "20", "--interval", "100ms"]);
    let log = churn.stop(&mut g).expect("nd-churn log");
    clock.sample(&mut g, 3).expect("guest clock");
    let after = g.truth().expect("truth");
    g.shutdown().expect("shutdown");

    assert_eq!(stats.len(), 21);
    for s in &stats {
        assert!(s.stats.walk_error.is_none(), "round {}: {:?}", s.stats.round, s.stats.walk_error);
    }
    let truth = Truth { log: &log, clock: &clock, before: &before, after: &after };
    // Every event is of a task the guest had when it was noticed (rows judged one by one).
    for e in &events {
        let v = truth.listing(&[row_of(&e.event)], at(0), false);
        assert_eq!(v.false_tasks, 0, "{:?}: {:?}", e.event, v.problems);
    }
    let from = at(stats[0].time_unix_ms);
    let last = stats.last().unwrap();
    let to = at(last.time_unix_ms - last.stats.wall_ms.ceil() as u64);
    let noticed: Vec<(SystemTime, &Event)> = events.iter().map(|e| (at(e.time_unix_ms), &e.event)).collect();
    // The period achieved: the longest start-to-start gap between the rounds after the initial
    // listing, at least the interval.
    let starts: Vec<u64> = stats[1..].iter().map(|s| s.time_unix_ms - s.stats.wall_ms.ceil() as u64).collect();
    let gap = starts.windows(2).map(|w| w[1].saturating_sub(w[0])).max().unwrap_or(0);
    let period = interval.max(Duration::from_millis(gap + 1));
    let v = truth.events(&noticed, from, to, period);
    assert!(v.eligible >= 20, "only {} churn tasks lived two periods ({period:?})", v.eligible);
    assert_eq!((v.starts, v.exits), (v.eligible, v.eligible), "{:?}", v.problems);
    assert!(events.iter().any(|e| e.event.event == EventKind::Exited));
}
