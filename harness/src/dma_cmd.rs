//! `harness dma`: read physical memory over NetTLP, and benchmark the wire.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use emulator::endpoint::{Endpoint, EndpointConfig, ResponderConfig};
use emulator::mem::{PhysAddr, PhysMem};
use harness::dma::bench::{self, BenchConfig, Mode, Pattern};
use harness::dma::{Requester, Target};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum DmaCmd {
    /// Read LEN bytes at ADDR from a NetTLP target; hexdump them or write them to --out.
    Read {
        /// nettlp://ADDR[:TAG][?options] (see harness::dma::target).
        target: Target,
        #[arg(value_parser = parse_u64)]
        addr: u64,
        #[arg(value_parser = parse_u64)]
        len: u64,
        #[arg(long)]
        out: Option<PathBuf>,
        /// One request in flight at a time (libtlp's dma_read).
        #[arg(long)]
        blocking: bool,
    },
    /// Read benchmarks (tlpperf-like): requests/s, MB/s and latency per size; JSON results.
    Bench(BenchArgs),
    /// Write a raw image holding the test pattern of physical BASE..BASE+LEN (for `emulator
    /// serve` and `bench --verify`).
    MakePattern {
        path: PathBuf,
        #[arg(long, value_parser = parse_u64, default_value = "0")]
        base: u64,
        #[arg(long, value_parser = parse_u64, default_value = "8388608")]
        len: u64,
    },
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// nettlp://ADDR[:TAG][?options]; its inflight is the pipelined depth.
    #[arg(long)]
    target: Target,
    #[arg(long, value_enum, default_value = "blocking")]
    mode: Mode,
    #[arg(long, value_enum, default_value = "fix")]
    pattern: Pattern,
    /// Read sizes in bytes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "4,8,16,32,64,128,256,512,1024,2048,4096")]
    sizes: Vec<u32>,
    /// Seconds measured per size.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    #[arg(long, default_value_t = 0.5)]
    warmup_seconds: f64,
    /// Region read (physical start and length).
    #[arg(long, value_parser = parse_u64, default_value = "0")]
    region_start: u64,
    #[arg(long, value_parser = parse_u64, default_value = "8388608")]
    region_len: u64,
    /// Reads per batch in pipelined mode.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Check every read's first and last 8 bytes against the test pattern.
    #[arg(long)]
    verify: bool,
    /// The endpoint's MPS (recorded in the results; used when --serve starts one).
    #[arg(long, default_value_t = 256)]
    mps: u32,
    /// Serve this raw image in-process at the target address (base = --region-start).
    #[arg(long)]
    serve: Option<PathBuf>,
    /// With --serve: create the image with the test pattern if it does not exist.
    #[arg(long)]
    make_image: bool,
    /// Write the results (latency CDF rows, per-second throughput rows, summary) as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// What is measured, the first part of the `source` column (default: `emulator` with
    /// --serve, otherwise `nettlp-ADDR`: whatever answers at the target).
    #[arg(long)]
    label: Option<String>,
}

fn parse_u64(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s:?}: {e}"))
}

pub fn dma(cmd: DmaCmd) -> Result<()> {
    match cmd {
        DmaCmd::Read { target, addr, len, out, blocking } => read(&target, addr, len, out, blocking),
        DmaCmd::Bench(args) => run_bench(args),
        DmaCmd::MakePattern { path, base, len } => {
            emulator::pattern::write_pattern_file(&path, base, len)
                .with_context(|| format!("writing {}", path.display()))
        }
    }
}

fn read(target: &Target, addr: u64, len: u64, out: Option<PathBuf>, blocking: bool) -> Result<()> {
    let req = Requester::connect(target).context("connecting")?;
    tracing::info!("{}", req.describe());
    let mut buf = vec![0u8; usize::try_from(len).context("length")?];
    let r = if blocking {
        req.read_blocking(PhysAddr(addr), &mut buf)
    } else {
        req.read_phys(PhysAddr(addr), &mut buf)
    };
    tracing::info!("{}", req.stats());
    r.with_context(|| format!("reading {len} bytes at {addr:#x}"))?;
    match out {
        Some(p) => std::fs::write(&p, &buf).with_context(|| format!("writing {}", p.display()))?,
        None => {
            let mut o = std::io::stdout().lock();
            for (i, line) in buf.chunks(16).enumerate() {
                let hex: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
                writeln!(o, "{:016x}  {}", addr + 16 * i as u64, hex.join(" "))?;
            }
        }
    }
    Ok(())
}

fn run_bench(a: BenchArgs) -> Result<()> {
    let served = match &a.serve {
        Some(img) => {
            if a.make_image && !img.exists() {
                tracing::info!("writing {} bytes of test pattern to {}", a.region_len, img.display());
                emulator::pattern::write_pattern_file(img, a.region_start, a.region_len)?;
            }
            let mem = emulator::image::open(img, Some(emulator::image::Format::Raw), Some(PhysAddr(a.region_start)))
                .with_context(|| format!("opening {}", img.display()))?;
            let cfg = EndpointConfig {
                listen: a.target.remote,
                responder: ResponderConfig { mps: a.mps, ..Default::default() },
                ..Default::default()
            };
            Some(Endpoint::bind(mem, cfg).context("binding the in-process endpoint")?.spawn())
        }
        None => None,
    };
    let req = Requester::connect(&a.target).context("connecting")?;
    tracing::info!("{}", req.describe());
    if a.mode == Mode::Pipelined && a.target.inflight <= 1 {
        bail!("pipelined mode needs inflight > 1 in the target");
    }
    let measured = match (&a.label, &a.serve) {
        (Some(l), _) => l.clone(),
        (None, Some(_)) => "emulator".into(),
        (None, None) => format!("nettlp-{}", a.target.remote),
    };
    let cfg = BenchConfig {
        measured,
        mode: a.mode,
        pattern: a.pattern,
        sizes: a.sizes.clone(),
        region_start: a.region_start,
        region_len: a.region_len,
        duration: Duration::from_secs_f64(a.seconds),
        warmup: Duration::from_secs_f64(a.warmup_seconds),
        batch: a.batch,
        verify: a.verify,
        mps_bytes: a.mps,
    };
    let result = bench::run(&req, &cfg).context("benchmark read failed")?;
    let summary = result.summary();
    if let Some(p) = &a.json {
        let f = std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?;
        serde_json::to_writer_pretty(std::io::BufWriter::new(f), &serde_json::json!({ "samples": &result, "summary": &summary }))?;
    }
    let mut o = std::io::stdout().lock();
    writeln!(o, "source,pattern,size_bytes,inflight,mps,mrrs,reads_per_s,mb_per_s,gbps,p50_us,p99_us,retries")?;
    for s in &summary {
        writeln!(
            o,
            "{},{:?},{},{},{},{},{:.0},{:.1},{:.3},{:.1},{:.1},{}",
            s.source, s.pattern, s.size_bytes, s.inflight_per_cpu, s.mps_bytes, s.mrrs_bytes,
            s.reads_per_s, s.mb_per_s, s.throughput_gbps, s.p50_us, s.p99_us, s.retries
        )?;
    }
    if let Some(ep) = served {
        let c = ep.stop()?;
        tracing::info!("endpoint: {c}");
    }
    Ok(())
}
