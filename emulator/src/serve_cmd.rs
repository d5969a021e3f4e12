//! `emulator serve`: bind the endpoint on a listen address and serve an image until SIGINT or
//! SIGTERM, then print the counters.

use anyhow::{Context, Result};
use emulator::capture::Recorder;
use emulator::endpoint::{Endpoint, EndpointConfig, FaultSpec, Identity, ResponderConfig, Tap};
use emulator::image::{self, Format};
use emulator::mem::{PhysAddr, PhysMem};
use emulator::wire::tlp::DeviceId;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::SystemTime;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Serve a memory image as a NetTLP endpoint over UDP.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The memory image.
    #[arg(long)]
    image: PathBuf,
    /// Image format (raw, elf, kdump, lime, avml, live, live:q35); detected when omitted.
    #[arg(long)]
    format: Option<Format>,
    /// Physical address of the first byte of a raw image (hex with 0x, or decimal; default 0).
    #[arg(long, value_parser = parse_u64)]
    base: Option<u64>,
    /// IPv4 address to listen on (one endpoint per loopback address 127.0.0.x).
    #[arg(long, default_value = "127.0.0.1")]
    listen: Ipv4Addr,
    /// Max Payload Size of completions in bytes (64..=4096, multiple of 64; the adapter: 256).
    #[arg(long, default_value_t = 256, value_parser = parse_mps)]
    mps: u32,
    /// Apply Memory Writes to an in-memory copy-on-write overlay (never to the image file).
    #[arg(long)]
    allow_write: bool,
    /// Record every datagram in and out to this pcap file.
    #[arg(long)]
    pcap: Option<PathBuf>,
    /// Inject faults into outgoing datagrams, e.g. `loss=0.1,dup=0.1,reorder=0.1,delay=200us,seed=7`.
    #[arg(long)]
    fault: Option<FaultSpec>,
    /// Device ID answered to GET_DEV_ID (bus:dev.fn, e.g. 1a:00.0).
    #[arg(long, value_parser = parse_devid, default_value = "1a:00.0")]
    dev_id: DeviceId,
    /// Completer ID put in completions (bus:dev.fn; the root complex is 00:00.0).
    #[arg(long, value_parser = parse_devid, default_value = "00:00.0")]
    completer: DeviceId,
    /// Busy-poll this many microseconds for the next request before sleeping (0: always
    /// sleep; spinning helps only when both ends have a core to themselves).
    #[arg(long, default_value_t = 0)]
    spin_us: u64,
    /// Address answered to GET_BAR4_ADDR.
    #[arg(long, value_parser = parse_u64, default_value = "0")]
    bar4: u64,
}

fn parse_u64(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(&h.replace('_', ""), 16),
        None => s.replace('_', "").parse(),
    };
    r.map_err(|e| format!("{s:?}: {e}"))
}

fn parse_mps(s: &str) -> Result<u32, String> {
    let v: u32 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if (64..=4096).contains(&v) && v % 64 == 0 {
        Ok(v)
    } else {
        Err(format!("{v}: MPS must be a multiple of 64 in 64..=4096"))
    }
}

fn parse_devid(s: &str) -> Result<DeviceId, String> {
    let bad = || format!("{s:?}: expected bus:dev.fn like 1a:00.0");
    let (bus, rest) = s.split_once(':').ok_or_else(bad)?;
    let (dev, func) = rest.split_once('.').unwrap_or((rest, "0"));
    let bus = u8::from_str_radix(bus, 16).map_err(|_| bad())?;
    let dev = u8::from_str_radix(dev, 16).map_err(|_| bad())?;
    let func: u8 = func.parse().map_err(|_| bad())?;
    if dev > 31 || func > 7 {
        return Err(bad());
    }
    Ok(DeviceId::new(bus, dev, func))
}

fn open_image(args: &ServeArgs) -> Result<Box<dyn PhysMem>> {
    image::open(&args.image, args.format, args.base.map(PhysAddr))
        .with_context(|| format!("opening {}", args.image.display()))
}

static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// Records every datagram into a pcap file (errors are counted and logged once).
struct PcapTap {
    recorder: Recorder,
    errors: std::sync::atomic::AtomicU64,
}

impl Tap for PcapTap {
    fn datagram(&self, now: SystemTime, src: SocketAddrV4, dst: SocketAddrV4, bytes: &[u8]) {
        if let Err(e) = self.recorder.record(now, src, dst, bytes) {
            if self.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::error!("pcap recording failed: {e}");
            }
        }
    }
}

pub fn serve(args: ServeArgs) -> Result<()> {
    let mem = open_image(&args)?;
    let description = mem.describe();
    let ranges = mem.ranges();
    let fault = args.fault.unwrap_or_default();
    let cfg = EndpointConfig {
        listen: args.listen,
        responder: ResponderConfig {
            mps: args.mps,
            allow_write: args.allow_write,
            identity: Identity {
                completer: args.completer,
                dev_id: args.dev_id,
                bar4: args.bar4,
                ..Identity::default()
            },
        },
        fault,
        spin: Duration::from_micros(args.spin_us),
        ..EndpointConfig::default()
    };
    let mut ep = Endpoint::bind(mem, cfg).context("binding the endpoint")?;
    let tap = match &args.pcap {
        Some(p) => {
            let recorder = Recorder::create(p).with_context(|| format!("creating {}", p.display()))?;
            tracing::info!("recording every datagram to {}", p.display());
            let tap = Arc::new(PcapTap { recorder, errors: Default::default() });
            ep = ep.with_tap(tap.clone());
            Some(tap)
        }
        None => None,
    };
    tracing::info!("serving {description}");
    let total: u64 = ranges.iter().map(|r| r.len()).sum();
    tracing::info!("{} ranges, {total} bytes:", ranges.len());
    for r in ranges.iter().take(32) {
        tracing::info!("  {:#014x}..{:#014x} ({} bytes)", r.start.0, r.end.0, r.len());
    }
    if ranges.len() > 32 {
        tracing::info!("  ... {} more", ranges.len() - 32);
    }
    tracing::info!(
        "listening on {}: UDP ports {:#x}..={:#x} (0x3000 + tag, every tag 0..=255) and {:#x} (messaging)",
        args.listen,
        emulator::wire::nettlp::requester_port(0),
        emulator::wire::nettlp::requester_port(u8::MAX),
        emulator::wire::nettlp::MSG_PORT
    );
    tracing::info!(
        "MPS {} B, completer {}, device ID {}, writes {}, faults {}",
        args.mps,
        args.completer,
        args.dev_id,
        if args.allow_write { "to a copy-on-write overlay" } else { "refused" },
        if fault.is_active() { fault.to_string() } else { "none".into() }
    );
    install_signal_handlers();
    let running = ep.spawn();
    while !SIGNALLED.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if running.is_finished() {
            break;
        }
    }
    let counters = running.stop().context("serving")?;
    if let Some(tap) = tap {
        tap.recorder.flush().context("flushing the pcap file")?;
        tracing::info!("{} frames recorded to {}", tap.recorder.frames(), tap.recorder.path().display());
    }
    tracing::info!("stopped; counters: {counters}");
    println!("{}", serde_json::to_string(&counters)?);
    Ok(())
}
