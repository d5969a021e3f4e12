//! The `wire` experiments: DMA read latency and throughput against transfer size, for the real
//! NetTLP adapter (published tlpperf runs) and for the emulator: `emulator serve` started as its
//! own process on a loopback address over a raw image of the known test pattern, read by
//! `harness::dma::Requester` through `harness::dma::bench` — blocking (one read outstanding, as
//! tlpperf) and pipelined (16 tags in flight), with the adapter's MPS (256 B) and MRRS (512 B);
//! for throughput also `batched`, the emulator unbound from the adapter's limits (MPS/MRRS 4096,
//! every request on one UDP port, `port=first`, GSO/GRO). Every byte read is checked against the pattern. All sources share one
//! row schema per measure, told apart by the `source` column ([`Source::emulator_setup`]). Both
//! ends busy-poll before sleeping ([`crate::served::Served::start_polling`]).
//!
//! Invariant: every row is derived from a measurement — a parsed tlpperf line or a timed read —
//! and nothing else; the conversions ([`latency_rows`], [`binned_latency_rows`], [`throughput_rows`],
//! [`from_bench`])
//! are pure and lossless at the stated resolution.
//!
//! ```text
//! results/wire-latency.csv     source,pattern,size_bytes,cpus,inflight_per_cpu,
//!                              latency_us,resolution_us,reads,cumulative_fraction, + stamp
//! results/wire-throughput.csv  source,pattern,size_bytes,cpus,inflight_per_cpu,
//!                              elapsed_s,interval_s,throughput_gbps,reads_per_s, + stamp
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use harness::dma::bench::{BenchConfig, BenchResult, Mode as BenchMode, Pattern as BenchPattern};

use crate::experiment::{Context, Experiment, RunError};
use crate::hw_reference::{self, Kind, RefName};
pub use crate::tlpperf::Pattern;

/// Who served the reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The real NetTLP adapter (published tlpperf outputs; libtlp's blocking `dma_read`).
    NettlpHw,
    /// `emulator serve` over loopback, read by `harness::dma` one read at a time per thread.
    EmulatorBlocking,
    /// `emulator serve` over loopback, read by `harness::dma` with many tags in flight.
    EmulatorPipelined,
    /// As `EmulatorPipelined`, but not bound to the adapter's limits: MPS and MRRS 4096 and all
    /// 16 tags on one UDP port, so the endpoint batches completions with UDP GSO and the
    /// requester receives them coalesced (GRO) — what the emulator itself can serve.
    EmulatorBatched,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::NettlpHw => "nettlp-hw",
            Source::EmulatorBlocking => "emulator-blocking",
            Source::EmulatorPipelined => "emulator-pipelined",
            Source::EmulatorBatched => "emulator-batched",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The configuration a measurement was taken under; the leading columns of both row types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Setup {
    pub source: Source,
    pub pattern: Pattern,
    /// Bytes requested per transfer (tlpperf `-L`).
    pub size_bytes: u64,
    /// Requester threads, one per CPU.
    pub cpus: u32,
    /// Reads outstanding per thread at once (1 = blocking).
    pub inflight_per_cpu: u32,
}

/// One step of a latency distribution: `reads` reads took `latency_us` (to `resolution_us`),
/// and `cumulative_fraction` of all reads of this setup took at most that long.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyRow {
    pub source: Source,
    pub pattern: Pattern,
    pub size_bytes: u64,
    pub cpus: u32,
    pub inflight_per_cpu: u32,
    pub latency_us: f64,
    pub resolution_us: f64,
    pub reads: u64,
    pub cumulative_fraction: f64,
}

impl LatencyRow {
    pub fn setup(&self) -> Setup {
        Setup {
            source: self.source,
            pattern: self.pattern,
            size_bytes: self.size_bytes,
            cpus: self.cpus,
            inflight_per_cpu: self.inflight_per_cpu,
        }
    }
}

/// Totals over all threads for one interval of a throughput run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThroughputRow {
    pub source: Source,
    pub pattern: Pattern,
    pub size_bytes: u64,
    pub cpus: u32,
    pub inflight_per_cpu: u32,
    /// End of the interval, seconds since the run started.
    pub elapsed_s: f64,
    pub interval_s: f64,
    /// Payload bits returned per second, / 1e9.
    pub throughput_gbps: f64,
    /// Completed read calls per second (tlpperf's `tps`).
    pub reads_per_s: f64,
}

impl ThroughputRow {
    pub fn setup(&self) -> Setup {
        Setup {
            source: self.source,
            pattern: self.pattern,
            size_bytes: self.size_bytes,
            cpus: self.cpus,
            inflight_per_cpu: self.inflight_per_cpu,
        }
    }
}

/// The distribution of `samples` (latencies in units of `resolution_us`) as rows, one per
/// distinct value, ascending. Pure and exact.
pub fn latency_rows(setup: Setup, resolution_us: f64, samples: impl IntoIterator<Item = u64>) -> Vec<LatencyRow> {
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    for s in samples {
        *counts.entry(s).or_default() += 1;
    }
    binned_latency_rows(setup, counts.into_iter().map(|(units, reads)| (units as f64 * resolution_us, resolution_us, reads)))
}

/// A latency distribution already binned — (latency µs, resolution µs, reads), ascending — as
/// rows with their cumulative fractions. Pure.
pub fn binned_latency_rows(setup: Setup, bins: impl IntoIterator<Item = (f64, f64, u64)>) -> Vec<LatencyRow> {
    let bins: Vec<(f64, f64, u64)> = bins.into_iter().collect();
    let total: u64 = bins.iter().map(|b| b.2).sum();
    let mut seen = 0u64;
    bins.into_iter()
        .map(|(latency_us, resolution_us, reads)| {
            seen += reads;
            LatencyRow {
                source: setup.source,
                pattern: setup.pattern,
                size_bytes: setup.size_bytes,
                cpus: setup.cpus,
                inflight_per_cpu: setup.inflight_per_cpu,
                latency_us,
                resolution_us,
                reads,
                cumulative_fraction: seen as f64 / total.max(1) as f64,
            }
        })
        .collect()
}

/// Per-interval counters (end time s, interval s, payload bits, read calls) as rows. Pure.
pub fn throughput_rows(setup: Setup, intervals: impl IntoIterator<Item = (f64, f64, u64, u64)>) -> Vec<ThroughputRow> {
    intervals
        .into_iter()
        .filter(|&(_, interval_s, _, _)| interval_s > 0.0)
        .map(|(elapsed_s, interval_s, bits, calls)| ThroughputRow {
            source: setup.source,
            pattern: setup.pattern,
            size_bytes: setup.size_bytes,
            cpus: setup.cpus,
            inflight_per_cpu: setup.inflight_per_cpu,
            elapsed_s,
            interval_s,
            throughput_gbps: bits as f64 / interval_s / 1e9,
            reads_per_s: calls as f64 / interval_s,
        })
        .collect()
}

/// The latency (µs) below which fraction `q` of the reads of one setup fall: the smallest
/// `latency_us` whose cumulative fraction reaches `q`. `rows` must be one setup, ascending.
pub fn latency_quantile(rows: &[&LatencyRow], q: f64) -> Option<f64> {
    rows.iter()
        .find(|r| r.cumulative_fraction >= q - 1e-12)
        .map(|r| r.latency_us)
}

/// The median, minimum and maximum of per-interval throughput for one setup.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ThroughputSummary {
    pub setup: Setup,
    pub intervals: usize,
    pub median_gbps: f64,
    pub min_gbps: f64,
    pub max_gbps: f64,
    pub median_reads_per_s: f64,
}

/// Groups rows by setup and summarises each group (ordered by setup).
pub fn summarize_throughput(rows: &[ThroughputRow]) -> Vec<ThroughputSummary> {
    let mut groups: BTreeMap<Setup, Vec<&ThroughputRow>> = BTreeMap::new();
    for r in rows {
        groups.entry(r.setup()).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|(setup, rs)| {
            let gbps: Vec<f64> = rs.iter().map(|r| r.throughput_gbps).collect();
            let rps: Vec<f64> = rs.iter().map(|r| r.reads_per_s).collect();
            ThroughputSummary {
                setup,
                intervals: rs.len(),
                median_gbps: median(&gbps),
                min_gbps: gbps.iter().copied().fold(f64::INFINITY, f64::min),
                max_gbps: gbps.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                median_reads_per_s: median(&rps),
            }
        })
        .collect()
}

/// Groups latency rows by setup, each group ascending by latency.
pub fn group_latency(rows: &[LatencyRow]) -> BTreeMap<Setup, Vec<&LatencyRow>> {
    let mut groups: BTreeMap<Setup, Vec<&LatencyRow>> = BTreeMap::new();
    for r in rows {
        groups.entry(r.setup()).or_default().push(r);
    }
    for g in groups.values_mut() {
        g.sort_by(|a, b| a.latency_us.total_cmp(&b.latency_us));
    }
    groups
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One unit of work of a wire experiment.
#[derive(Clone, Debug)]
pub enum WireRun {
    /// Convert one published tlpperf output.
    Hardware { name: RefName, path: PathBuf },
    /// Benchmark the emulator over loopback: every size for `seconds` each.
    Emulator { source: Source, pattern: Pattern, sizes: Vec<u32>, seconds: f64 },
}

impl fmt::Display for WireRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireRun::Hardware { name, .. } => {
                write!(
                    f,
                    "nettlp-hw {} {} B x{} cpu",
                    name.pattern, name.dma_len_bytes, name.cpus
                )
            }
            WireRun::Emulator { source, pattern, sizes, seconds } => write!(
                f,
                "{source} {pattern} {}-{} B, {seconds} s each",
                sizes.first().unwrap_or(&0),
                sizes.last().unwrap_or(&0)
            ),
        }
    }
}

/// Transfer sizes the emulator is measured at.
pub fn emulator_sizes(quick: bool) -> Vec<u32> {
    if quick {
        vec![4, 64, 512, 4096]
    } else {
        (2..=12).map(|e| 1u32 << e).collect()
    }
}

/// The emulator runs of one wire experiment.
fn emulator_plan(ctx: &Context, sources: &[Source], patterns: &[Pattern], seconds: (f64, f64)) -> Vec<WireRun> {
    let secs = if ctx.quick { seconds.0 } else { seconds.1 };
    let mut out = Vec::new();
    for &source in sources {
        for &pattern in patterns {
            out.push(WireRun::Emulator { source, pattern, sizes: emulator_sizes(ctx.quick), seconds: secs });
        }
    }
    out
}

/// Loopback addresses of the endpoints (one per experiment, so they never share ports).
const LATENCY_ADDR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 77, 1);
const THROUGHPUT_ADDR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 77, 2);
/// The pattern image: big enough that sequential reads of every size stream through memory.
const PATTERN_BYTES: u64 = 64 << 20;
/// Reads per `read_batch` call in pipelined mode.
const PIPELINE_BATCH: usize = 64;

/// Runs the emulator benchmark of one run.
fn bench_emulator(addr: std::net::Ipv4Addr, source: Source, pattern: Pattern, sizes: &[u32], seconds: f64) -> Result<BenchResult, RunError> {
    let Some(setup) = source.emulator_setup() else {
        return Err(RunError::Prerequisite(format!("{source} is not served by the emulator")));
    };
    let bench_pattern = match pattern {
        Pattern::Fix => BenchPattern::Fix,
        Pattern::Seq => BenchPattern::Seq,
        other => return Err(RunError::Prerequisite(format!("the emulator benchmark has no {other} pattern"))),
    };
    let image = crate::served::PatternImage::create(&format!("wire-{addr}"), PATTERN_BYTES)?;
    let mps = setup.mps_bytes.to_string();
    let served = crate::served::Served::start_polling(&image.path, Some("raw"), addr, &["--mps", &mps])?;
    let req = served.requester(setup.requester)?;
    let cfg = BenchConfig {
        measured: "emulator".into(),
        mode: setup.mode,
        pattern: bench_pattern,
        sizes: sizes.to_vec(),
        region_start: 0,
        region_len: image.len,
        duration: std::time::Duration::from_secs_f64(seconds),
        warmup: std::time::Duration::from_millis(200),
        batch: PIPELINE_BATCH,
        verify: true,
        mps_bytes: setup.mps_bytes,
    };
    harness::dma::bench::run(&req, &cfg).map_err(|e| RunError::Prerequisite(format!("emulator benchmark {source} {pattern}: {e}")))
}

/// The rows of a benchmark's samples: per size, its latency distribution and one throughput row
/// per whole second (`reads × size` bytes in 1 s). Pure.
pub fn from_bench(source: Source, result: &BenchResult) -> (Vec<LatencyRow>, Vec<ThroughputRow>) {
    let pattern = match result.pattern {
        BenchPattern::Fix => Pattern::Fix,
        BenchPattern::Seq => Pattern::Seq,
    };
    let (mut lat, mut thr) = (Vec::new(), Vec::new());
    for z in &result.sizes {
        let setup = Setup { source, pattern, size_bytes: u64::from(z.size_bytes), cpus: 1, inflight_per_cpu: z.inflight_per_cpu };
        lat.extend(binned_latency_rows(setup, z.latency.iter().map(|b| (b.latency_us, b.resolution_us, b.reads))));
        let size = u64::from(z.size_bytes);
        thr.extend(throughput_rows(
            setup,
            z.reads_per_second.iter().enumerate().map(|(i, &n)| ((i + 1) as f64, 1.0, n * size * 8, n)),
        ));
    }
    (lat, thr)
}

fn hw_setup(name: &RefName) -> Setup {
    Setup {
        source: Source::NettlpHw,
        pattern: name.pattern,
        size_bytes: name.dma_len_bytes,
        cpus: name.cpus,
        // tlpperf threads call libtlp's blocking dma_read: one read in flight each.
        inflight_per_cpu: 1,
    }
}

fn hw_plan(ctx: &Context, kind: Kind) -> Result<Vec<WireRun>, RunError> {
    Ok(hw_reference::list(&ctx.hw_reference, kind)?
        .into_iter()
        .map(|(name, path)| WireRun::Hardware { name, path })
        .collect())
}

/// How `emulator serve` and the requester are set up for one emulator source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmulatorSetup {
    pub mode: BenchMode,
    /// The endpoint's `--mps` (bytes per completion).
    pub mps_bytes: u32,
    /// The requester's target options.
    pub requester: &'static str,
}


impl Source {
    /// The setup of an emulator source; `None` for the hardware.
    pub fn emulator_setup(self) -> Option<EmulatorSetup> {
        // The adapter's limits: MPS 256, MRRS 512 and 16 requests in flight, with all 256 tags
        // on their own ports 0x3000+tag, as libtlp (and tlpperf) use it.
        let adapter = |mode| EmulatorSetup { mode, mps_bytes: 256, requester: "port=tag&inflight=16" };
        match self {
            Source::NettlpHw => None,
            Source::EmulatorBlocking => Some(adapter(BenchMode::Blocking)),
            Source::EmulatorPipelined => Some(adapter(BenchMode::Pipelined)),
            Source::EmulatorBatched => Some(EmulatorSetup {
                mode: BenchMode::Pipelined,
                mps_bytes: 4096,
                requester: "port=first&inflight=16&mrrs=4096",
            }),
        }
    }
}

/// Read latency distributions: `results/wire-latency.csv`.
pub struct WireLatency;

impl Experiment for WireLatency {
    type Row = LatencyRow;
    type Run = WireRun;

    fn name(&self) -> &'static str {
        "wire-latency"
    }
    fn module(&self) -> &'static str {
        "wire"
    }
    fn plan(&self, ctx: &Context) -> Result<Vec<WireRun>, RunError> {
        let mut plan = hw_plan(ctx, Kind::Latency)?;
        // tlpperf's latency runs read a fixed address.
        plan.extend(emulator_plan(ctx, &[Source::EmulatorBlocking, Source::EmulatorPipelined], &[Pattern::Fix], (1.0, 2.0)));
        Ok(plan)
    }
    fn run(&self, _ctx: &Context, run: &WireRun) -> Result<Vec<LatencyRow>, RunError> {
        match run {
            WireRun::Emulator { source, pattern, sizes, seconds } => {
                Ok(from_bench(*source, &bench_emulator(LATENCY_ADDR, *source, *pattern, sizes, *seconds)?).0)
            }
            WireRun::Hardware { name, path } => {
                let file = hw_reference::load(Kind::Latency, *name, path)?;
                // tlpperf measures with gettimeofday and prints whole microseconds.
                Ok(latency_rows(
                    hw_setup(name),
                    1.0,
                    file.run.latencies.iter().map(|s| s.usec),
                ))
            }
        }
    }
    fn headline(&self, rows: &[LatencyRow]) -> Vec<String> {
        // (source, pattern, cpus, in flight) → [(size, p50, p99)]
        type BySource = BTreeMap<(Source, Pattern, u32, u32), Vec<(u64, f64, f64)>>;
        let mut by_source = BySource::new();
        for (setup, group) in group_latency(rows) {
            let (Some(p50), Some(p99)) = (latency_quantile(&group, 0.5), latency_quantile(&group, 0.99)) else {
                continue;
            };
            by_source
                .entry((setup.source, setup.pattern, setup.cpus, setup.inflight_per_cpu))
                .or_default()
                .push((setup.size_bytes, p50, p99));
        }
        by_source
            .into_iter()
            .map(|((source, pattern, cpus, inflight), v)| {
                let range = |f: fn(&(u64, f64, f64)) -> f64| {
                    let lo = v.iter().map(f).fold(f64::INFINITY, f64::min);
                    let hi = v.iter().map(f).fold(f64::NEG_INFINITY, f64::max);
                    if lo == hi {
                        format!("{lo}")
                    } else {
                        format!("{lo}-{hi}")
                    }
                };
                let sizes = (
                    v.iter().map(|x| x.0).min().unwrap_or(0),
                    v.iter().map(|x| x.0).max().unwrap_or(0),
                );
                format!(
                    "{source} {pattern} x{cpus} cpu, {inflight} in flight: median {} us, p99 {} us over {}-{} B",
                    range(|x| x.1),
                    range(|x| x.2),
                    sizes.0,
                    sizes.1
                )
            })
            .collect()
    }
}

/// Read throughput per second: `results/wire-throughput.csv`.
pub struct WireThroughput;

impl Experiment for WireThroughput {
    type Row = ThroughputRow;
    type Run = WireRun;

    fn name(&self) -> &'static str {
        "wire-throughput"
    }
    fn module(&self) -> &'static str {
        "wire"
    }
    fn plan(&self, ctx: &Context) -> Result<Vec<WireRun>, RunError> {
        let mut plan = hw_plan(ctx, Kind::Throughput)?;
        let sources = [Source::EmulatorBlocking, Source::EmulatorPipelined, Source::EmulatorBatched];
        plan.extend(emulator_plan(ctx, &sources, &[Pattern::Fix, Pattern::Seq], (1.1, 3.1)));
        Ok(plan)
    }
    fn run(&self, _ctx: &Context, run: &WireRun) -> Result<Vec<ThroughputRow>, RunError> {
        match run {
            WireRun::Emulator { source, pattern, sizes, seconds } => {
                Ok(from_bench(*source, &bench_emulator(THROUGHPUT_ADDR, *source, *pattern, sizes, *seconds)?).1)
            }
            WireRun::Hardware { name, path } => {
                let file = hw_reference::load(Kind::Throughput, *name, path)?;
                // tlpperf's count thread sleeps 1 s between samples of the counters.
                Ok(throughput_rows(
                    hw_setup(name),
                    file.run.seconds.iter().map(|s| (s.second as f64, 1.0, s.bits, s.calls)),
                ))
            }
        }
    }
    fn headline(&self, rows: &[ThroughputRow]) -> Vec<String> {
        summarize_throughput(rows)
            .into_iter()
            .filter(|s| s.setup.size_bytes == 512)
            .map(|s| {
                format!(
                    "{} {} {} B x{} cpu: {:.3} Gbps, {:.0} reads/s (median of {} s, range {:.3}-{:.3})",
                    s.setup.source,
                    s.setup.pattern,
                    s.setup.size_bytes,
                    s.setup.cpus,
                    s.median_gbps,
                    s.median_reads_per_s,
                    s.intervals,
                    s.min_gbps,
                    s.max_gbps
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETUP: Setup = Setup {
        source: Source::NettlpHw,
        pattern: Pattern::Fix,
        size_bytes: 64,
        cpus: 1,
        inflight_per_cpu: 1,
    };

    #[test]
    fn histogram_is_exact() {
        let rows = latency_rows(SETUP, 1.0, [12, 11, 12, 24, 12]);
        let got: Vec<(f64, u64, f64)> = rows
            .iter()
            .map(|r| (r.latency_us, r.reads, r.cumulative_fraction))
            .collect();
        assert_eq!(got, vec![(11.0, 1, 0.2), (12.0, 3, 0.8), (24.0, 1, 1.0)]);
        let refs: Vec<&LatencyRow> = rows.iter().collect();
        assert_eq!(latency_quantile(&refs, 0.5), Some(12.0));
        assert_eq!(latency_quantile(&refs, 1.0), Some(24.0));
    }

    #[test]
    fn bench_samples_become_rows_unchanged() {
        use harness::dma::bench::{LatencyBin, SizeSamples};
        let bin = |latency_us, reads| LatencyBin { latency_us, resolution_us: 0.1, reads };
        let result = BenchResult {
            source: "emulator-blocking".into(),
            pattern: BenchPattern::Seq,
            mps_bytes: 256,
            sizes: vec![SizeSamples {
                size_bytes: 512,
                inflight_per_cpu: 1,
                mrrs_bytes: 512,
                latency: vec![bin(3.0 / 10.0, 1), bin(17.0 / 10.0, 3)],
                reads_per_second: vec![4000, 4022],
                reads: 8100,
                seconds: 2.01,
                retries: 0,
                timeouts: 0,
            }],
        };
        let (lat, thr) = from_bench(Source::EmulatorBlocking, &result);
        let got: Vec<(f64, f64, u64, f64)> = lat.iter().map(|r| (r.latency_us, r.resolution_us, r.reads, r.cumulative_fraction)).collect();
        assert_eq!(got, vec![(0.3, 0.1, 1, 0.25), (1.7, 0.1, 3, 1.0)]);
        assert!(lat.iter().all(|r| r.setup() == Setup { source: Source::EmulatorBlocking, pattern: Pattern::Seq, size_bytes: 512, cpus: 1, inflight_per_cpu: 1 }));
        let got: Vec<(f64, f64, f64, f64)> = thr.iter().map(|r| (r.elapsed_s, r.interval_s, r.throughput_gbps, r.reads_per_s)).collect();
        assert_eq!(got, vec![(1.0, 1.0, (4000u64 * 512) as f64 * 8.0 / 1e9, 4000.0), (2.0, 1.0, (4022u64 * 512) as f64 * 8.0 / 1e9, 4022.0)]);
        let summary = result.summary();
        assert_eq!((summary[0].p50_us, summary[0].p99_us, summary[0].reads), (1.7, 1.7, 8100));
    }

    #[test]
    fn throughput_units() {
        let rows = throughput_rows(SETUP, [(1.0, 1.0, 3_587_592_192, 875_877), (2.0, 0.0, 1, 1)]);
        assert_eq!(rows.len(), 1, "zero-length intervals are dropped");
        assert_eq!(rows[0].throughput_gbps, 3.587592192);
        assert_eq!(rows[0].reads_per_s, 875_877.0);
    }
}

