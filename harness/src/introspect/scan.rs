//! Finding the running kernel's image in physical memory, reading as little as possible.
//!
//! On x86-64 the kernel is loaded at a 2 MiB-aligned physical address (KASLR randomizes which)
//! and its `.rodata` starts on a 2 MiB boundary too (`X86_ALIGN_RODATA_BEGIN`). `linux_banner`
//! ("Linux version ...") is among the first objects of `.rodata` (from `init/`), so reading the
//! first page of every 2 MiB-aligned frame finds `.rodata` candidates for about 0.2 % of RAM.
//! From a candidate, the kallsyms tables are found by their structure
//! ([`kallsyms::locate`](super::kallsyms::locate)); the first candidate that yields them wins.
//!
//! Invariant: the number of bytes read is bounded by `RAM / align × probe_len` plus the
//! kallsyms search's own bound per candidate; nothing here trusts a banner until kallsyms
//! has been found after it.

use emulator::mem::{PhysAddr, PhysMem, PhysRange};

use super::kallsyms::locate::{locate, KallsymsLocation, LocateConfig};
use super::physread::read_many;

/// Most aligned frames probed for the banner (2 TiB of RAM at 2 MiB).
pub const MAX_CANDIDATES: usize = 1 << 20;

/// Scan parameters.
#[derive(Debug, Clone, Copy)]
pub struct ScanConfig {
    /// Alignment of the kernel's physical load address and of `.rodata` (x86-64: 2 MiB).
    pub align: u64,
    /// Bytes read at each aligned candidate.
    pub probe_len: usize,
    /// Candidates read per batch.
    pub batch: usize,
    /// Physical memory assumed when the source cannot list its ranges (a remote machine).
    pub assumed_ram: u64,
    pub kallsyms: LocateConfig,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig { align: 2 << 20, probe_len: 4096, batch: 32, assumed_ram: 4 << 30, kallsyms: LocateConfig::default() }
    }
}

/// The kernel's banner, as found in `.rodata`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Banner {
    pub phys: PhysAddr,
    pub text: String,
}

impl Banner {
    /// The release ("6.1.0-56-amd64"): the word after "Linux version ".
    pub fn release(&self) -> &str {
        self.text.strip_prefix(BANNER).and_then(|r| r.split_whitespace().next()).unwrap_or("")
    }
}

/// What the scan found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Found {
    pub banner: Banner,
    /// Start of the 2 MiB frame holding the banner (the start of `.rodata`).
    pub rodata: PhysAddr,
    pub kallsyms: KallsymsLocation,
    /// Candidates probed before the kernel was found.
    pub candidates_probed: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("no Linux banner found at any {align:#x}-aligned frame of {ram_bytes:#x} bytes of RAM ({probed} probed)")]
    NoBanner { align: u64, ram_bytes: u64, probed: usize },
    #[error("found a Linux banner at {banners:?} but no kallsyms tables after any of them")]
    NoKallsyms { banners: Vec<PhysAddr> },
}

const BANNER: &str = "Linux version ";

/// Parse a banner at the start of `bytes` (up to NUL or newline, printable ASCII only).
pub fn parse_banner(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().take(512).position(|&b| b == 0 || b == b'\n')?;
    let text = &bytes[..end];
    if !text.starts_with(BANNER.as_bytes()) || text.len() < BANNER.len() + 3 {
        return None;
    }
    if !text.iter().all(|&b| (0x20..0x7f).contains(&b)) {
        return None;
    }
    let s = String::from_utf8(text.to_vec()).ok()?;
    let release = s[BANNER.len()..].split_whitespace().next()?;
    release.chars().next()?.is_ascii_digit().then_some(s)
}

/// Aligned candidate frames inside the source's ranges (or the assumed RAM).
fn candidates(mem: &dyn PhysMem, cfg: &ScanConfig) -> (Vec<(PhysAddr, PhysRange)>, u64) {
    let mut ranges = mem.ranges();
    if ranges.is_empty() {
        ranges = vec![PhysRange::new(0, cfg.assumed_ram)];
    }
    // Ranges come from the image's headers (untrusted): sum, align and step without wrapping,
    // and stop listing at MAX_CANDIDATES (2 TiB of RAM at 2 MiB).
    let ram: u64 = ranges.iter().fold(0u64, |acc, r| acc.saturating_add(r.end.0.saturating_sub(r.start.0)));
    let align = cfg.align.max(1);
    let mut out = Vec::new();
    'ranges: for r in &ranges {
        let Some(mut a) = r.start.0.div_ceil(align).checked_mul(align) else { continue };
        while a.checked_add(cfg.probe_len as u64).is_some_and(|end| end <= r.end.0) {
            if out.len() >= MAX_CANDIDATES {
                break 'ranges;
            }
            out.push((PhysAddr(a), *r));
            let Some(next) = a.checked_add(align) else { break };
            a = next;
        }
    }
    (out, ram)
}

/// Find the kernel: banner frame, then kallsyms after it.
pub fn find_kernel(mem: &dyn PhysMem, cfg: &ScanConfig) -> Result<Found, ScanError> {
    let (cands, ram) = candidates(mem, cfg);
    // Search for kallsyms up to the end of the highest range, not just the candidate's own:
    // sparse sources (a replayed capture) list many small ranges.
    let top = cands.iter().map(|(_, r)| r.end).max().unwrap_or(PhysAddr(0));
    let mut banners = Vec::new();
    let mut probed = 0usize;
    for chunk in cands.chunks(cfg.batch.max(1)) {
        let regions: Vec<(PhysAddr, usize)> = chunk.iter().map(|&(a, _)| (a, cfg.probe_len)).collect();
        let results = read_many(mem, &regions);
        probed += chunk.len();
        for (&(frame, _), res) in chunk.iter().zip(results) {
            let Ok(page) = res else { continue };
            let mut from = 0usize;
            while let Some(pos) = find(&page[from..], BANNER.as_bytes()).map(|p| p + from) {
                from = pos + 1;
                let Some(text) = parse_banner(&page[pos..]) else { continue };
                let banner = Banner { phys: PhysAddr(frame.0 + pos as u64), text };
                tracing::debug!(phys = %banner.phys, release = banner.release(), "banner candidate");
                banners.push(banner.phys);
                if let Some(kallsyms) = locate(mem, frame, top, &cfg.kallsyms) {
                    return Ok(Found { banner, rodata: frame, kallsyms, candidates_probed: probed });
                }
                break;
            }
        }
    }
    if banners.is_empty() {
        Err(ScanError::NoBanner { align: cfg.align, ram_bytes: ram, probed })
    } else {
        Err(ScanError::NoKallsyms { banners })
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A memory whose ranges (from an image's headers) reach 2^64 and span far more than any RAM.
    struct Huge;
    impl PhysMem for Huge {
        fn read_phys(&self, addr: PhysAddr, _: &mut [u8]) -> Result<(), emulator::mem::MemError> {
            Err(emulator::mem::MemError::Unmapped { addr })
        }
        fn ranges(&self) -> Vec<PhysRange> {
            vec![PhysRange::new(0x1000, 1 << 62), PhysRange::new(u64::MAX - (3 << 20), u64::MAX)]
        }
        fn describe(&self) -> String {
            "huge".into()
        }
    }

    #[test]
    fn candidates_are_capped_and_never_wrap() {
        let (cands, ram) = candidates(&Huge, &ScanConfig::default());
        assert_eq!(cands.len(), MAX_CANDIDATES);
        assert_eq!(cands[0].0, PhysAddr(2 << 20));
        assert!(ram > 1 << 62);
    }

    #[test]
    fn banner_parsing() {
        let b = parse_banner(b"Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP\n\0").unwrap();
        let banner = Banner { phys: PhysAddr(0), text: b };
        assert_eq!(banner.release(), "6.1.0-56-amd64");
        assert!(parse_banner(b"Linux version %s\0").is_none());
        assert!(parse_banner(b"Linux version 6.1\x01x\0").is_none());
        assert!(parse_banner(b"Linux version 6.1.0 no terminator").is_none());
    }
}
