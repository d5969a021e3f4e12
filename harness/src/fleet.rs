//! `harness fleet`: list the processes of many machines at once, over NetTLP.
//!
//! ```text
//!   targets file ──parse_targets──▶ [Target] ──▶ workers (threads, `workers` of them)
//!                                                  │ each: its own block of tags (ports)
//!                                                  │ Requester ─ Deadline ─ Counting
//!                                                  │ ps_cached(.., &LayoutCache)   (one cache, shared)
//!                                                  ▼
//!                                     MachineReport per machine, in completion order
//! ```
//!
//! Bounds: at most `workers` machines are read at once, each with at most `inflight` requests
//! outstanding on `tags` tags, so at most `workers * inflight` requests are in flight and
//! `workers * (tags + 1)` sockets open in total. With `reuseaddr` (the default) every worker
//! binds the same ports `0x3000 + tag` with SO_REUSEADDR, each socket connected to its own
//! machine, so the kernel hands each completion to the worker reading that machine; without it
//! worker `w` uses tags `w * tags ..` (modulo 256), disjoint while `workers * tags <= 256` (past
//! that a worker whose ports are taken falls back to the requester's next local address). Fewer
//! tags per machine cost time: a tag carries a request aliasing its last 8 only after they
//! aged (see `dma::tags`), and the scan's requests all alias.
//!
//! A machine whose kernel build another worker is learning is put back and read again once
//! the first pass is over (then waiting for the layout), so a slow layout (the heuristic's
//! thousands of reads) holds up one worker, not all.
//!
//! Invariants: one machine's failure (no answer, garbage, a walk cut short) is its own report
//! and never stops the sweep; every target gets exactly one report; a machine's reading ends
//! within its `budget` (reads fail after it, [`Deadline`]). Later commands that read machines
//! repeatedly (`watch`) reuse [`read_machine`] and the [`LayoutCache`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use emulator::fleet::{AddrRange, RangeError};
use emulator::mem::{Counting, Deadline};

use crate::dma::requester::Requester;
use crate::dma::target::{Target, TargetError};
use crate::failure::{Failure, FailureKind};
use crate::introspect::identity::{IdentitySource, LayoutCache};
use crate::introspect::ps::{ps_cached, CacheUse, PsError, PsOptions, Row};
use crate::introspect::watch::cpu_ms;

/// Most machines one targets file may name.
pub const MAX_TARGETS: usize = 1 << 16;

/// Why a targets file was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetsError {
    #[error("targets line {line}: {source}")]
    Range { line: usize, source: RangeError },
    #[error("targets line {line}: {source}")]
    Target { line: usize, source: TargetError },
    #[error("targets: more than {max} machines")]
    TooMany { max: usize },
    #[error("targets line {line}: {addr} is already a target")]
    Duplicate { line: usize, addr: std::net::Ipv4Addr },
    #[error("targets: no machine")]
    Empty,
}

/// Parse a targets file: one `nettlp://ADDR[:TAG][?options]` per line, where `ADDR` may be a
/// range (`127.0.1.1-127.0.4.232`, `127.0.1.0/22`) standing for one target per address with
/// the same options; `#` starts a comment.
pub fn parse_targets(text: &str) -> Result<Vec<Target>, TargetsError> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (k, raw) in text.lines().enumerate() {
        let line = k + 1;
        let t = raw.split('#').next().unwrap_or("").trim();
        if t.is_empty() {
            continue;
        }
        let syntax = || TargetsError::Target { line, source: TargetError::Syntax(t.to_owned()) };
        let rest = t.strip_prefix("nettlp://").ok_or_else(syntax)?;
        let host_end = rest.find([':', '?']).unwrap_or(rest.len());
        let (host, tail) = rest.split_at(host_end);
        let range = AddrRange::parse(host).map_err(|source| TargetsError::Range { line, source })?;
        if out.len() as u64 + range.len() > MAX_TARGETS as u64 {
            return Err(TargetsError::TooMany { max: MAX_TARGETS });
        }
        for a in range.iter() {
            if !seen.insert(a) {
                return Err(TargetsError::Duplicate { line, addr: a });
            }
            let target = format!("nettlp://{a}{tail}").parse::<Target>().map_err(|source| TargetsError::Target { line, source })?;
            out.push(target);
        }
    }
    if out.is_empty() {
        return Err(TargetsError::Empty);
    }
    Ok(out)
}

/// How a sweep reads.
#[derive(Debug, Clone)]
pub struct SweepConfig {
    /// Machines read at once.
    pub workers: usize,
    /// Tags (and so ports) per machine.
    pub tags: u16,
    /// Requests in flight per machine (at most `tags`).
    pub inflight: u16,
    /// Reuse layouts between machines running the same kernel build.
    pub cache: bool,
    /// Time allowed for one machine, connecting included.
    pub budget: Duration,
    /// Keep each machine's rows in its report.
    pub rows: bool,
    /// Bind the requesters' ports with SO_REUSEADDR (beside an emulated fleet on this host).
    pub reuseaddr: bool,
    pub ps: PsOptions,
}

impl Default for SweepConfig {
    fn default() -> SweepConfig {
        SweepConfig {
            workers: 16,
            tags: 256,
            inflight: 16,
            cache: true,
            budget: Duration::from_secs(10),
            rows: false,
            reuseaddr: true,
            ps: PsOptions::default(),
        }
    }
}

/// What one machine gave (one JSON line of `harness fleet`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MachineReport {
    /// `nettlp://ADDR`.
    pub target: String,
    /// The kernel release, when the kernel was found.
    pub kernel: Option<String>,
    /// How the build was identified (with a cache).
    pub identity: Option<IdentitySource>,
    /// The layout method that was used (learned now or cached).
    pub method: Option<String>,
    /// Tasks listed (also when the walk stopped early).
    pub tasks: Option<usize>,
    pub time_ms: f64,
    pub dma_reads: u64,
    pub dma_bytes: u64,
    /// Whether the layout came from the cache (`None`: no cache, or no kernel found).
    pub cache_hit: Option<bool>,
    /// Why the listing failed or is incomplete (kind `partial`: `rows` holds what was read).
    pub error: Option<Failure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<Vec<Row>>,
}

impl MachineReport {
    fn failed(target: String, t0: Instant, kind: FailureKind, message: String) -> MachineReport {
        MachineReport {
            target,
            kernel: None,
            identity: None,
            method: None,
            tasks: None,
            time_ms: t0.elapsed().as_secs_f64() * 1e3,
            dma_reads: 0,
            dma_bytes: 0,
            cache_hit: None,
            error: Some(Failure::new(kind, message)),
            rows: None,
        }
    }
}

/// The target a worker reads `t` with: its own tags, the sweep's bounds.
pub fn worker_target(t: &Target, worker: usize, cfg: &SweepConfig) -> Target {
    let tags = cfg.tags.clamp(1, 256);
    let mut t = t.clone();
    t.first_tag = if cfg.reuseaddr { 0 } else { ((worker * usize::from(tags)) % 256) as u8 };
    t.tags = tags.min(256 - u16::from(t.first_tag));
    t.stride = 1;
    t.inflight = cfg.inflight.clamp(1, t.tags);
    t.reuseaddr |= cfg.reuseaddr;
    t
}

/// Read one machine: connect, list within the budget, report (a failure is in the report),
/// or `None` if the cache does not wait and another machine is teaching it this machine's
/// kernel build (read it again later).
pub fn read_machine(target: &Target, cfg: &SweepConfig, cache: Option<CacheUse<'_>>) -> Option<MachineReport> {
    let name = format!("nettlp://{}", target.remote);
    let t0 = Instant::now();
    let req = match Requester::connect(target) {
        Ok(r) => r,
        Err(e) => return Some(MachineReport::failed(name, t0, FailureKind::Source, format!("connecting: {e}"))),
    };
    let budget = cfg.budget.saturating_sub(t0.elapsed());
    let counted = Counting::new(Deadline::new(req, budget));
    let result = ps_cached(&counted, &cfg.ps, cache);
    let counts = counted.snapshot();
    let time_ms = t0.elapsed().as_secs_f64() * 1e3;
    Some(match result {
        Ok(report) => {
            let error = report.walk_error.as_ref().map(|e| {
                Failure::new(FailureKind::Partial, format!("walk stopped early, {} tasks listed: {e}", report.rows.len()))
            });
            MachineReport {
                target: name,
                kernel: Some(report.kernel.release.clone()),
                identity: report.identity.as_ref().map(|i| i.source),
                method: Some(report.method.to_string()),
                tasks: Some(report.rows.len()),
                time_ms,
                dma_reads: counts.reads,
                dma_bytes: counts.bytes,
                cache_hit: report.cache_hit,
                error,
                rows: cfg.rows.then_some(report.rows),
            }
        }
        Err(PsError::LayoutBusy) => return None,
        Err(e) => MachineReport {
            dma_reads: counts.reads,
            dma_bytes: counts.bytes,
            time_ms,
            ..MachineReport::failed(name, t0, FailureKind::of_ps(&e), format!("listing processes: {e}"))
        },
    })
}

/// What a whole sweep cost.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SweepSummary {
    pub machines: usize,
    pub listed: usize,
    pub failed: usize,
    pub cache_hits: usize,
    /// Kernel builds the cache learned.
    pub kernels_learned: usize,
    pub wall_ms: f64,
    /// CPU time of this process (user + system) during the sweep.
    pub cpu_ms: f64,
    pub dma_reads: u64,
    pub dma_bytes: u64,
    pub workers: usize,
}

/// Read every target, `cfg.workers` at a time; `done` sees each report as it is finished (from
/// the worker threads, one at a time).
pub fn sweep(targets: &[Target], cfg: &SweepConfig, done: impl FnMut(&MachineReport) + Send) -> SweepSummary {
    let t0 = Instant::now();
    let cpu0 = cpu_ms();
    let cache = cfg.cache.then(LayoutCache::new);
    let next = AtomicUsize::new(0);
    // machines put back while another taught the cache their kernel build
    let later: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());
    // workers reading a machine of the first pass (which may yet be put back)
    let first_pass = AtomicUsize::new(0);
    let done = std::sync::Mutex::new((done, SweepSummary {
        machines: targets.len(),
        listed: 0,
        failed: 0,
        cache_hits: 0,
        kernels_learned: 0,
        wall_ms: 0.0,
        cpu_ms: 0.0,
        dma_reads: 0,
        dma_bytes: 0,
        workers: cfg.workers.clamp(1, targets.len().max(1)),
    }));
    let workers = cfg.workers.clamp(1, targets.len().max(1));
    std::thread::scope(|s| {
        for w in 0..workers {
            let (next, later, first_pass, done, cache) = (&next, &later, &first_pass, &done, cache.as_ref());
            s.spawn(move || loop {
                // first every machine once without waiting on the cache, then those put back
                first_pass.fetch_add(1, Ordering::SeqCst);
                let i = next.fetch_add(1, Ordering::SeqCst);
                let (i, wait) = if i < targets.len() {
                    (i, false)
                } else {
                    first_pass.fetch_sub(1, Ordering::SeqCst);
                    let put_back = later.lock().unwrap_or_else(|e| e.into_inner()).pop();
                    match put_back {
                        Some(i) => (i, true),
                        None if first_pass.load(Ordering::SeqCst) > 0 => {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                        None => break,
                    }
                };
                let Some(t) = targets.get(i) else { break };
                let cache_use = cache.map(|cache| CacheUse { cache, wait });
                let report = read_machine(&worker_target(t, w, cfg), cfg, cache_use);
                if !wait {
                    if report.is_none() {
                        later.lock().unwrap_or_else(|e| e.into_inner()).push(i);
                    }
                    first_pass.fetch_sub(1, Ordering::SeqCst);
                }
                let Some(report) = report else { continue };
                let mut g = done.lock().unwrap_or_else(|e| e.into_inner());
                let (f, sum) = &mut *g;
                match &report.error {
                    Some(e) if e.kind != FailureKind::Partial => sum.failed += 1,
                    _ => sum.listed += 1,
                }
                sum.cache_hits += usize::from(report.cache_hit == Some(true));
                sum.dma_reads += report.dma_reads;
                sum.dma_bytes += report.dma_bytes;
                f(&report);
            });
        }
    });
    let (_, mut sum) = done.into_inner().unwrap_or_else(|e| e.into_inner());
    sum.kernels_learned = cache.as_ref().map_or(0, LayoutCache::len);
    sum.wall_ms = t0.elapsed().as_secs_f64() * 1e3;
    sum.cpu_ms = cpu_ms() - cpu0;
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn ranges_expand_with_their_options() {
        let t = parse_targets("# fleet\nnettlp://127.0.1.1-127.0.1.3?mrrs=4096\n\nnettlp://10.0.0.7:16?tags=4 # one\nnettlp://127.0.2.0/31\n").unwrap();
        let addrs: Vec<String> = t.iter().map(|t| t.remote.to_string()).collect();
        assert_eq!(addrs, ["127.0.1.1", "127.0.1.2", "127.0.1.3", "10.0.0.7", "127.0.2.0", "127.0.2.1"]);
        assert!(t[..3].iter().all(|t| t.mrrs == 4096));
        assert_eq!((t[3].first_tag, t[3].tags), (16, 4));
    }

    #[test]
    fn the_issue_range_is_1000_machines() {
        assert_eq!(parse_targets("nettlp://127.0.1.1-127.0.4.232").unwrap().len(), 1000);
    }

    #[rstest]
    #[case("", "no machine")]
    #[case("127.0.0.1\n", "line 1: target")]
    #[case("nettlp://127.0.0.1\nnettlp://127.0.0.9-127.0.0.2\n", "line 2: address range")]
    #[case("nettlp://127.0.0.1-127.0.0.3?colour=red", "line 1: target: unknown option")]
    #[case("nettlp://127.0.0.0/8", "line 1: address range")]
    #[case("nettlp://127.0.0.0/16\nnettlp://127.1.0.0\n", "more than 65536")]
    #[case("nettlp://", "line 1: address range")]
    #[case("nettlp://1.2.3.4:300", "line 1: target")]
    #[case("nettlp://127.0.0.1-127.0.0.4\nnettlp://127.0.0.2?mrrs=64", "line 2: 127.0.0.2 is already a target")]
    fn bad_targets_are_errors(#[case] text: &str, #[case] want: &str) {
        let e = parse_targets(text).unwrap_err().to_string();
        assert!(e.contains(want), "{e:?} lacks {want:?}");
    }

    #[test]
    fn workers_get_disjoint_tags_within_bounds() {
        let t: Target = "nettlp://127.0.1.1".parse().unwrap();
        let cfg = SweepConfig { tags: 16, inflight: 32, reuseaddr: false, ..SweepConfig::default() };
        let mut seen = std::collections::HashSet::new();
        for w in 0..16 {
            let wt = worker_target(&t, w, &cfg);
            assert!(wt.validate().is_ok());
            assert_eq!((wt.tags, wt.inflight), (16, 16));
            assert!(wt.tag_list().into_iter().all(|tag| seen.insert(tag)), "worker {w} shares a tag");
        }
        let odd = worker_target(&t, 5, &SweepConfig { tags: 100, reuseaddr: false, ..SweepConfig::default() });
        assert!(odd.validate().is_ok(), "{odd}");
        let shared = worker_target(&t, 5, &SweepConfig::default());
        assert_eq!((shared.first_tag, shared.tags, shared.reuseaddr), (0, 256, true));
    }
}
