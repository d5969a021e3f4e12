//! Read benchmarks over NetTLP, in the shape of tlpperf's (fixed or sequential addresses,
//! per-second read counts, per-read latency). A run returns its samples ([`BenchResult`]:
//! a latency distribution and reads per second for each size); whoever records them builds its
//! own rows from them (`experiments::wire` for `results/wire-*.csv`), and [`BenchResult::summary`]
//! is the one derived view this module gives (`harness dma bench` prints it).
//!
//! - blocking: one read outstanding at a time ([`Requester::read_blocking`]); each read's
//!   latency is timed around the call, like tlpperf's `gettimeofday` around `dma_read`
//!   (resolution 0.1 µs);
//! - pipelined: batches of reads through [`Requester::read_batch_as_asked`] (each read its own
//!   requests: adjacent reads are not joined as [`emulator::mem::PhysMem::read_batch`] joins them) with the
//!   target's `inflight` requests outstanding; latency is per request (MRd sent → last completion), from the
//!   requester's histogram (bucket resolution 1/16).
//!
//! Invariants: every number comes from a timed run; a read that fails stops the benchmark
//! with its error (a benchmark of errors is not a benchmark); with `verify`, the first and
//! last 8 bytes of every read are checked against the test pattern.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use emulator::pattern::pattern_bytes;
use emulator::mem::{MemError, PhysAddr, ReadOp};

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

/// Reads whose latency fell in one bin: `reads` reads took `latency_us` (to `resolution_us`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LatencyBin {
    pub latency_us: f64,
    pub resolution_us: f64,
    pub reads: u64,
}

/// What one size measured, nothing derived.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SizeSamples {
    pub size_bytes: u32,
    /// Reads outstanding at once (1 when blocking).
    pub inflight_per_cpu: u32,
    /// The requester's MRRS.
    pub mrrs_bytes: u32,
    /// The latency distribution, ascending.
    pub latency: Vec<LatencyBin>,
    /// Reads completed in each whole second of the measured time.
    pub reads_per_second: Vec<u64>,
    /// Reads completed in the measured time (its last, partial second included), and that time.
    pub reads: u64,
    pub seconds: f64,
    pub retries: u64,
    pub timeouts: u64,
}

impl SizeSamples {
    /// The latency (µs) below which fraction `q` of the reads fall: the first bin whose
    /// cumulative fraction reaches `q` (NaN with no reads).
    pub fn latency_quantile(&self, q: f64) -> f64 {
        let total: u64 = self.latency.iter().map(|b| b.reads).sum();
        let mut seen = 0;
        for b in &self.latency {
            seen += b.reads;
            if seen as f64 / total.max(1) as f64 >= q {
                return b.latency_us;
            }
        }
        f64::NAN
    }
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

/// Everything one benchmark run measured: the samples of each size, in order.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    /// The `source` value (`<measured>-<mode>`).
    pub source: String,
    pub pattern: Pattern,
    /// The endpoint's MPS, as configured.
    pub mps_bytes: u32,
    pub sizes: Vec<SizeSamples>,
}

impl BenchResult {
    /// Totals per size.
    pub fn summary(&self) -> Vec<Summary> {
        self.sizes
            .iter()
            .map(|z| {
                let bytes = z.reads * u64::from(z.size_bytes);
                Summary {
                    source: self.source.clone(),
                    pattern: self.pattern,
                    size_bytes: z.size_bytes,
                    inflight_per_cpu: z.inflight_per_cpu,
                    mps_bytes: self.mps_bytes,
                    mrrs_bytes: z.mrrs_bytes,
                    reads: z.reads,
                    seconds: z.seconds,
                    reads_per_s: z.reads as f64 / z.seconds,
                    mb_per_s: bytes as f64 / z.seconds / 1e6,
                    throughput_gbps: bytes as f64 * 8.0 / z.seconds / 1e9,
                    p50_us: z.latency_quantile(0.5),
                    p99_us: z.latency_quantile(0.99),
                    retries: z.retries,
                    timeouts: z.timeouts,
                }
            })
            .collect()
    }
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
    let mut out = BenchResult { source: cfg.source(), pattern: cfg.pattern, mps_bytes: cfg.mps_bytes, sizes: Vec::new() };
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
        let mut per_second: Vec<u64> = Vec::new();
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
                    for r in req.read_batch_as_asked(&mut ops) {
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
                per_second.push(reads);
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
        let latency: Vec<LatencyBin> = match cfg.mode {
            Mode::Blocking => samples_100ns
                .iter()
                .map(|(&units, &n)| LatencyBin { latency_us: units as f64 / 10.0, resolution_us: 0.1, reads: n })
                .collect(),
            Mode::Pipelined => stats
                .latency
                .buckets()
                .map(|(lo, hi, n)| LatencyBin { latency_us: hi.as_secs_f64() * 1e6, resolution_us: (hi - lo).as_secs_f64() * 1e6, reads: n })
                .collect(),
        };
        let z = SizeSamples {
            size_bytes: size,
            inflight_per_cpu: inflight,
            mrrs_bytes: req.target().mrrs,
            latency,
            reads_per_second: per_second,
            reads: total_reads,
            seconds,
            retries: stats.retries,
            timeouts: stats.timeouts,
        };
        tracing::info!(
            "{} {} B: {:.0} reads/s, p50 {:.1} us, p99 {:.1} us",
            cfg.source(),
            size,
            z.reads as f64 / z.seconds,
            z.latency_quantile(0.5),
            z.latency_quantile(0.99)
        );
        out.sizes.push(z);
    }
    Ok(out)
}
