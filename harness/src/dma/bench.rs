//! Read benchmarks over NetTLP, in the shape of tlpperf's (fixed or sequential addresses,
//! per-second throughput lines, per-read latency), for `results/wire-latency.csv` and
//! `results/wire-throughput.csv` (`source` = `<what was measured>-blocking` |
//! `<what was measured>-pipelined`, e.g. `emulator-blocking` when `harness dma bench --serve`
//! ran the endpoint itself, `nettlp-192.168.10.1-blocking` for whatever answers at that address).
//!
//! - blocking: one read outstanding at a time ([`Requester::read_blocking`]); each read's
//!   latency is timed around the call, like tlpperf's `gettimeofday` around `dma_read`;
//! - pipelined: batches of reads through [`PhysMem::read_batch`] with the target's `inflight`
//!   requests outstanding; latency is per request (MRd sent → last completion), from the
//!   requester's histogram (bucket resolution 1/16).
//!
//! Invariants: every number comes from a timed run; a read that fails stops the benchmark
//! with its error (a benchmark of errors is not a benchmark); with `verify`, the first and
//! last 8 bytes of every read are checked against the test pattern.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use emulator::pattern::pattern_bytes;
use emulator::mem::{MemError, PhysAddr, PhysMem, ReadOp};

use super::Requester;

/// How reads are issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Blocking,
    Pipelined,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Blocking => "blocking",
            Mode::Pipelined => "pipelined",
        }
    }
}

/// Where successive reads go (tlpperf's `-P`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Pattern {
    /// The same address every time.
    Fix,
    /// The next `size` bytes, wrapping at the end of the region.
    Seq,
}

/// One benchmark configuration.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// What is measured (`emulator`, `nettlp-ADDR`, ...): the `source` column is
    /// `<measured>-<mode>`.
    pub measured: String,
    pub mode: Mode,
    pub pattern: Pattern,
    pub sizes: Vec<u32>,
    /// Region read (tlpperf `-a`/`-s`).
    pub region_start: u64,
    pub region_len: u64,
    /// Time measured per size (after `warmup`).
    pub duration: Duration,
    pub warmup: Duration,
    /// Reads per `read_batch` call in pipelined mode.
    pub batch: usize,
    /// Check bytes against the test pattern.
    pub verify: bool,
    /// The endpoint's MPS, recorded with the results (the requester cannot see it).
    pub mps_bytes: u32,
}

impl BenchConfig {
    /// The `source` column value.
    pub fn source(&self) -> String {
        format!("{}-{}", self.measured, self.mode.name())
    }
}

/// A latency CDF step (`results/wire-latency.csv` columns).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LatencyRow {
    pub source: String,
    pub pattern: Pattern,
    pub size_bytes: u32,
    pub cpus: u32,
    pub inflight_per_cpu: u32,
    pub latency_us: f64,
    pub resolution_us: f64,
    pub reads: u64,
    pub cumulative_fraction: f64,
    pub mps_bytes: u32,
    pub mrrs_bytes: u32,
}

/// One second of a run (`results/wire-throughput.csv` columns).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ThroughputRow {
    pub source: String,
    pub pattern: Pattern,
    pub size_bytes: u32,
    pub cpus: u32,
    pub inflight_per_cpu: u32,
    pub elapsed_s: f64,
    pub interval_s: f64,
    pub throughput_gbps: f64,
    pub reads_per_s: f64,
    pub mps_bytes: u32,
    pub mrrs_bytes: u32,
}

/// Totals for one size.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    pub source: String,
    pub pattern: Pattern,
    pub size_bytes: u32,
    pub inflight_per_cpu: u32,
    pub mps_bytes: u32,
    pub mrrs_bytes: u32,
    pub reads: u64,
    pub seconds: f64,
    pub reads_per_s: f64,
    pub mb_per_s: f64,
    pub throughput_gbps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub retries: u64,
    pub timeouts: u64,
}

/// Everything one benchmark run produced.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BenchResult {
    pub latency: Vec<LatencyRow>,
    pub throughput: Vec<ThroughputRow>,
    pub summary: Vec<Summary>,
}

struct Addrs {
    pattern: Pattern,
    start: u64,
    len: u64,
    next: u64,
    size: u64,
}

impl Addrs {
    fn next(&mut self) -> u64 {
        let a = self.next;
        if self.pattern == Pattern::Seq {
            self.next += self.size;
            if self.next + self.size > self.start + self.len {
                self.next = self.start;
            }
        }
        a
    }
}

fn check(verify: bool, addr: u64, buf: &[u8]) -> Result<(), MemError> {
    if !verify {
        return Ok(());
    }
    let n = buf.len().min(8);
    let mut want = [0u8; 8];
    for (off, got) in [(0, &buf[..n]), (buf.len() - n, &buf[buf.len() - n..])] {
        pattern_bytes(addr + off as u64, &mut want[..n]);
        if got != &want[..n] {
            return Err(MemError::Corrupt { addr: PhysAddr(addr + off as u64), reason: "bytes differ from the test pattern".into() });
        }
    }
    Ok(())
}

/// Run `cfg` for every size against `req`.
pub fn run(req: &Requester, cfg: &BenchConfig) -> Result<BenchResult, MemError> {
    let mut out = BenchResult::default();
    for &size in &cfg.sizes {
        let size = size.clamp(1, 1 << 20);
        tracing::info!("{} {:?} {} B: {:?}", cfg.source(), cfg.pattern, size, cfg.duration);
        let inflight = match cfg.mode {
            Mode::Blocking => 1,
            Mode::Pipelined => u32::from(req.target().inflight),
        };
        let mut addrs = Addrs {
            pattern: cfg.pattern,
            start: cfg.region_start,
            len: cfg.region_len.max(u64::from(size)),
            next: cfg.region_start,
            size: u64::from(size),
        };
        let batch = match cfg.mode {
            Mode::Blocking => 1,
            Mode::Pipelined => cfg.batch.max(1),
        };
        let mut bufs = vec![vec![0u8; size as usize]; batch];
        let mut samples_100ns: BTreeMap<u64, u64> = BTreeMap::new();
        let mut intervals: Vec<(u64, u64)> = Vec::new(); // reads, bytes per second
        let mut one_round = |record: bool, samples: &mut BTreeMap<u64, u64>| -> Result<u64, MemError> {
            let addrs_now: Vec<u64> = (0..batch).map(|_| addrs.next()).collect();
            match cfg.mode {
                Mode::Blocking => {
                    let t = Instant::now();
                    req.read_blocking(PhysAddr(addrs_now[0]), &mut bufs[0])?;
                    if record {
                        *samples.entry((t.elapsed().as_nanos() / 100) as u64).or_default() += 1;
                    }
                    check(cfg.verify, addrs_now[0], &bufs[0])?;
                }
                Mode::Pipelined => {
                    let mut ops: Vec<ReadOp<'_>> = bufs
                        .iter_mut()
                        .zip(&addrs_now)
                        .map(|(b, &a)| ReadOp { addr: PhysAddr(a), buf: &mut b[..] })
                        .collect();
                    for r in req.read_batch(&mut ops) {
                        r?;
                    }
                    for (b, &a) in bufs.iter().zip(&addrs_now) {
                        check(cfg.verify, a, b)?;
                    }
                }
            }
            Ok(batch as u64)
        };
        let t0 = Instant::now();
        while t0.elapsed() < cfg.warmup {
            one_round(false, &mut samples_100ns)?;
        }
        req.reset_stats();
        let start = Instant::now();
        let mut tick = start + Duration::from_secs(1);
        let (mut reads, mut total_reads) = (0u64, 0u64);
        loop {
            let now = Instant::now();
            if now >= tick {
                intervals.push((reads, reads * u64::from(size)));
                total_reads += reads;
                reads = 0;
                tick += Duration::from_secs(1);
            }
            if now.duration_since(start) >= cfg.duration {
                break;
            }
            reads += one_round(true, &mut samples_100ns)?;
        }
        let seconds = start.elapsed().as_secs_f64();
        total_reads += reads;
        let stats = req.stats();
        let common = |r: &mut LatencyRow| {
            r.mps_bytes = cfg.mps_bytes;
            r.mrrs_bytes = req.target().mrrs;
        };
        // latency CDF rows
        let mut rows: Vec<LatencyRow> = Vec::new();
        let push = |rows: &mut Vec<LatencyRow>, lat_us: f64, res_us: f64, n: u64| {
            let mut r = LatencyRow {
                source: cfg.source(),
                pattern: cfg.pattern,
                size_bytes: size,
                cpus: 1,
                inflight_per_cpu: inflight,
                latency_us: lat_us,
                resolution_us: res_us,
                reads: n,
                cumulative_fraction: 0.0,
                mps_bytes: 0,
                mrrs_bytes: 0,
            };
            common(&mut r);
            rows.push(r);
        };
        match cfg.mode {
            Mode::Blocking => {
                for (&units, &n) in &samples_100ns {
                    push(&mut rows, units as f64 / 10.0, 0.1, n);
                }
            }
            Mode::Pipelined => {
                for (lo, hi, n) in stats.latency.buckets() {
                    let res = (hi - lo).as_secs_f64() * 1e6;
                    push(&mut rows, hi.as_secs_f64() * 1e6, res, n);
                }
            }
        }
        let total: u64 = rows.iter().map(|r| r.reads).sum();
        let mut seen = 0;
        for r in &mut rows {
            seen += r.reads;
            r.cumulative_fraction = seen as f64 / total.max(1) as f64;
        }
        let quantile = |q: f64| {
            rows.iter()
                .find(|r| r.cumulative_fraction >= q)
                .map_or(f64::NAN, |r| r.latency_us)
        };
        let (p50, p99) = (quantile(0.5), quantile(0.99));
        out.latency.extend(rows.iter().cloned());
        for (i, &(n, bytes)) in intervals.iter().enumerate() {
            out.throughput.push(ThroughputRow {
                source: cfg.source(),
                pattern: cfg.pattern,
                size_bytes: size,
                cpus: 1,
                inflight_per_cpu: inflight,
                elapsed_s: (i + 1) as f64,
                interval_s: 1.0,
                throughput_gbps: bytes as f64 * 8.0 / 1e9,
                reads_per_s: n as f64,
                mps_bytes: cfg.mps_bytes,
                mrrs_bytes: req.target().mrrs,
            });
        }
        let bytes = total_reads * u64::from(size);
        let s = Summary {
            source: cfg.source(),
            pattern: cfg.pattern,
            size_bytes: size,
            inflight_per_cpu: inflight,
            mps_bytes: cfg.mps_bytes,
            mrrs_bytes: req.target().mrrs,
            reads: total_reads,
            seconds,
            reads_per_s: total_reads as f64 / seconds,
            mb_per_s: bytes as f64 / seconds / 1e6,
            throughput_gbps: bytes as f64 * 8.0 / seconds / 1e9,
            p50_us: p50,
            p99_us: p99,
            retries: stats.retries,
            timeouts: stats.timeouts,
        };
        tracing::info!(
            "{} {} B: {:.0} reads/s, {:.1} MB/s, p50 {:.1} us, p99 {:.1} us",
            s.source, size, s.reads_per_s, s.mb_per_s, s.p50_us, s.p99_us
        );
        out.summary.push(s);
    }
    Ok(out)
}
