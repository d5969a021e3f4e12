//! An `emulator serve` process on a loopback address, and a NetTLP requester connected to it —
//! the software stand-in for the NetTLP adapter that the wire, faults and scaling experiments
//! read through.
//!
//! Invariant: a [`Served`] endpoint is its own OS process (the same binary a user runs), ready
//! when it answered the requester's GET_DEV_ID; it is stopped (and reaped) when dropped.
//! Images served are only ever read: the emulator never writes its image file.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::dma::{Requester, Target};

use crate::experiment::RunError;

/// Both ends busy-poll this long for the next datagram before sleeping (`emulator serve
/// --spin-us`, the requester's `spin=`) in [`Served::start_polling`]. The endpoint and the
/// requester each have a core of this 2-core machine; without it every read pays two vCPU
/// wake-ups from idle (measured: a blocking 4 B read 60 µs p50 instead of 11 µs, on an otherwise
/// idle box).
pub const SPIN_US: u32 = 50;

/// A running `emulator serve`.
pub struct Served {
    child: Child,
    pub listen: Ipv4Addr,
    pub log: PathBuf,
    /// The endpoint busy-polls this long; its requesters do the same.
    spin_us: Option<u32>,
}

impl Served {
    /// Starts `emulator serve --image IMAGE [--format F] --listen ADDR [--fault SPEC]` and waits
    /// until it answers (at most 20 s).
    pub fn start(image: &Path, format: Option<&str>, listen: Ipv4Addr, fault: Option<&str>) -> Result<Served, RunError> {
        Self::start_with(image, format, listen, fault, &[])
    }

    /// As [`Served::start`] without faults, with both ends busy-polling [`SPIN_US`]: the endpoint
    /// gets `--spin-us`, and every [`Served::requester`] of it `spin=`. `extra`: further
    /// `emulator serve` arguments (e.g. `--mps 4096`).
    pub fn start_polling(image: &Path, format: Option<&str>, listen: Ipv4Addr, extra: &[&str]) -> Result<Served, RunError> {
        let spin = SPIN_US.to_string();
        let args: Vec<&str> = ["--spin-us", spin.as_str()].into_iter().chain(extra.iter().copied()).collect();
        let mut served = Self::start_with(image, format, listen, None, &args)?;
        served.spin_us = Some(SPIN_US);
        Ok(served)
    }

    /// As [`Served::start`], with further `emulator serve` arguments.
    pub fn start_with(image: &Path, format: Option<&str>, listen: Ipv4Addr, fault: Option<&str>, extra: &[&str]) -> Result<Served, RunError> {
        let bin = crate::process::sibling_binary("emulator")?;
        let log = std::env::temp_dir().join(format!("netdma-serve-{listen}-{}.log", std::process::id()));
        let logf = std::fs::File::create(&log).map_err(|e| RunError::Prerequisite(format!("{}: {e}", log.display())))?;
        let logf2 = logf.try_clone().map_err(|e| RunError::Prerequisite(format!("{}: {e}", log.display())))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("serve").arg("--image").arg(image).arg("--listen").arg(listen.to_string());
        if let Some(f) = format {
            cmd.arg("--format").arg(f);
        }
        if let Some(f) = fault {
            cmd.arg("--fault").arg(f);
        }
        cmd.args(extra);
        cmd.env("RUST_LOG", "warn").stdin(Stdio::null()).stdout(logf).stderr(logf2);
        let child = cmd
            .spawn()
            .map_err(|e| RunError::Prerequisite(format!("starting {}: {e}", bin.display())))?;
        let mut s = Served { child, listen, log, spin_us: None };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = s.child.try_wait() {
                let text = std::fs::read_to_string(&s.log).unwrap_or_default();
                return Err(RunError::Prerequisite(format!("emulator serve exited ({status}): {}", text.trim())));
            }
            // GET_DEV_ID over the messaging port answers once the sockets are bound.
            if harness::dma::query_dev_id(probe_local(listen), listen, Duration::from_millis(200)).is_ok() {
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err(RunError::Prerequisite(format!("emulator serve on {listen} did not answer in 20 s (log {})", s.log.display())));
            }
        }
    }

    /// A requester for this endpoint with `options` (the query part of a target string, e.g.
    /// `inflight=16&retries=10`), busy-polling when the endpoint does.
    pub fn requester(&self, options: &str) -> Result<Requester, RunError> {
        let url = target_url(self.listen, options, self.spin_us);
        let target: Target = url.parse().map_err(|e| RunError::Prerequisite(format!("{url}: {e}")))?;
        Requester::connect(&target).map_err(|e| RunError::Prerequisite(format!("{url}: {e}")))
    }
}

/// The target string of a requester of the endpoint at `listen`: `options`, plus `spin=` when the
/// endpoint busy-polls.
fn target_url(listen: Ipv4Addr, options: &str, spin_us: Option<u32>) -> String {
    let spin = spin_us.map(|us| format!("spin={us}us"));
    let query: Vec<&str> = [Some(options), spin.as_deref()].into_iter().flatten().filter(|o| !o.is_empty()).collect();
    if query.is_empty() {
        format!("nettlp://{listen}")
    } else {
        format!("nettlp://{listen}?{}", query.join("&"))
    }
}

/// The loopback address the requester side binds for a probe (distinct from the endpoint's).
fn probe_local(listen: Ipv4Addr) -> Ipv4Addr {
    let o = listen.octets();
    Ipv4Addr::new(127, o[1], o[2], o[3].wrapping_add(100))
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A raw image of `len` bytes holding the emulator's known test pattern (byte at offset `a` =
/// pattern byte of physical address `a`), in a temporary file removed on drop.
pub struct PatternImage {
    pub path: PathBuf,
    pub len: u64,
}

impl PatternImage {
    pub fn create(tag: &str, len: u64) -> Result<PatternImage, RunError> {
        let path = std::env::temp_dir().join(format!("netdma-pattern-{tag}-{}.raw", std::process::id()));
        emulator::pattern::write_pattern_file(&path, 0, len)
            .map_err(|e| RunError::Prerequisite(format!("{}: {e}", path.display())))?;
        Ok(PatternImage { path, len })
    }
}

impl Drop for PatternImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requesters_of_a_polling_endpoint_poll_too() {
        let at = Ipv4Addr::new(127, 0, 77, 1);
        assert_eq!(target_url(at, "", None), "nettlp://127.0.77.1");
        assert_eq!(target_url(at, "tags=16", None), "nettlp://127.0.77.1?tags=16");
        assert_eq!(target_url(at, "", Some(SPIN_US)), format!("nettlp://127.0.77.1?spin={SPIN_US}us"));
        assert_eq!(target_url(at, "tags=16&inflight=16", Some(50)), "nettlp://127.0.77.1?tags=16&inflight=16&spin=50us");
    }
}
