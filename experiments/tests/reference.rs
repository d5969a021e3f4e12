//! The tlpperf parser against every published NetTLP hardware output, checked against what the
//! NetTLP authors report and against tlpperf's own arithmetic.

use std::path::PathBuf;

use experiments::hw_reference::{self, Kind, RefFile};
use experiments::tlpperf::Pattern;

fn reference_dir() -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    repo.join(hw_reference::DEFAULT_RELATIVE)
}

fn load(kind: Kind) -> Vec<RefFile> {
    hw_reference::load_all(&reference_dir(), kind).unwrap_or_else(|e| panic!("{e}"))
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[test]
fn every_latency_file_parses_completely() {
    let files = load(Kind::Latency);
    assert_eq!(files.len(), 10, "10 sizes, 1 to 1024 bytes");
    for f in &files {
        let o = &f.run.options;
        assert!(o.latency_mode && f.run.stopped, "{}", f.path.display());
        assert_eq!(f.run.latencies.len() as u64, o.count, "{}", f.path.display());
        // The count thread's tps lines count the same dma_read calls as the latency lines.
        let calls: u64 = f.run.seconds.iter().map(|s| s.calls).sum();
        assert_eq!(calls, o.count, "{}", f.path.display());
        // "about 12 us for 1-256 bytes" (reference README).
        if f.name.dma_len_bytes <= 256 {
            let m = median(f.run.latencies.iter().map(|s| s.usec).collect());
            assert!((11..=13).contains(&m), "{}: median {m} us", f.path.display());
        }
    }
}

#[test]
fn every_throughput_file_parses_completely() {
    let files = load(Kind::Throughput);
    assert_eq!(files.len(), 40, "fix/seq x 10 sizes x 1/16 cpus");
    for f in &files {
        let o = &f.run.options;
        assert!(f.run.stopped && !o.latency_mode, "{}", f.path.display());
        assert_eq!(
            f.run.seconds.len() as u64,
            o.duration_s,
            "{}: one line pair per second",
            f.path.display()
        );
        if f.name.cpus == 1 {
            // One thread, so bps and tps are sampled together: bits = calls * 8 * bytes per call,
            // where a call returns at most 512 bytes in these runs.
            let per_call = f.name.dma_len_bytes.min(512);
            for s in &f.run.seconds {
                assert_eq!(
                    s.bits,
                    s.calls * 8 * per_call,
                    "{} second {}",
                    f.path.display(),
                    s.second
                );
            }
        }
    }
}

#[test]
fn published_headline_numbers() {
    // "512-byte reads: about 0.33 Gbps on 1 core, 3.58 Gbps on 16 cores" (reference README).
    let files = load(Kind::Throughput);
    let gbps = |pattern, cpus| {
        let f = files
            .iter()
            .find(|f| f.name.pattern == pattern && f.name.cpus == cpus && f.name.dma_len_bytes == 512)
            .expect("512-byte run present");
        median(f.run.seconds.iter().map(|s| s.bits).collect()) as f64 / 1e9
    };
    for pattern in [Pattern::Fix, Pattern::Seq] {
        assert!(
            (0.32..0.34).contains(&gbps(pattern, 1)),
            "{pattern} x1: {}",
            gbps(pattern, 1)
        );
        assert!(
            (3.55..3.62).contains(&gbps(pattern, 16)),
            "{pattern} x16: {}",
            gbps(pattern, 16)
        );
    }
}

#[test]
fn per_file_statistics_are_pinned() {
    let mut lines = Vec::new();
    for f in load(Kind::Latency) {
        let mut v: Vec<u64> = f.run.latencies.iter().map(|s| s.usec).collect();
        v.sort_unstable();
        lines.push(format!(
            "latency    {:<6} {:>4} B x{:<2}: n={} min={} p50={} p99={} max={} us",
            f.name.pattern.as_str(),
            f.name.dma_len_bytes,
            f.name.cpus,
            v.len(),
            v[0],
            v[v.len() / 2],
            v[v.len() * 99 / 100],
            v[v.len() - 1]
        ));
    }
    for f in load(Kind::Throughput) {
        let bits: u64 = f.run.seconds.iter().map(|s| s.bits).sum();
        let calls: u64 = f.run.seconds.iter().map(|s| s.calls).sum();
        lines.push(format!(
            "throughput {:<6} {:>4} B x{:<2}: {} s, total {} bits, {} calls",
            f.name.pattern.as_str(),
            f.name.dma_len_bytes,
            f.name.cpus,
            f.run.seconds.len(),
            bits,
            calls
        ));
    }
    insta::assert_snapshot!(lines.join("\n"));
}
