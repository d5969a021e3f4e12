//! Finding the running kernel's image in physical memory, reading as little as possible.
//!
//! First where the kernel's own page tables say it is: the real-mode trampoline below 1 MiB
//! names a page table that maps the image ([`super::trampoline`]), so the `.rodata` frame is
//! read first (its whole first page, wherever the banner sits in it), then the image's other
//! frames. That costs the same few round trips wherever KASLR put the kernel in however much
//! RAM. The scan below is what finds the kernel when the hint is missing or wrong.
//!
//! On x86-64 the kernel is loaded at a 2 MiB-aligned physical address (KASLR randomizes which)
//! and its `.rodata` starts on a 2 MiB boundary too (`X86_ALIGN_RODATA_BEGIN`). `linux_banner`
//! ("Linux version ...") is among the first objects of `.rodata` (from `init/`), so reading the
//! first page of every 2 MiB-aligned frame finds `.rodata` candidates for about 0.2 % of RAM.
//! The banner sits a few hundred bytes in (224 on Debian's 6.12 and 7.x, 416 on 6.1, 512 on
//! 5.10, 128 to 288 on our own builds), so the passes read growing windows of each frame: its
//! first 512 bytes (0.025 % of RAM), then the rest of its first KiB, 2 KiB and page, each
//! window overlapping the one before by a banner's prefix, until a pass finds the kernel. A
//! banner that runs past its window's end is read again whole at its own address (one more
//! round trip). Against one pass over the first KiB, a kernel whose banner is in the first
//! 498 bytes costs half the bytes, one further in about 1.5 times (by where the kernel lies).
//! From a candidate, the kallsyms tables are found by their structure
//! ([`kallsyms::locate`](super::kallsyms::locate)); the first candidate that yields them wins.
//! If none does (a table format the search does not know), the VMCOREINFO text is looked for
//! at the start of every page (`OSRELEASE=` and the banner's release) and the tables are taken
//! from its `SYMBOL(kallsyms_*)` entries, where the kernel exports them.
//!
//! Invariant: the number of bytes read is bounded by `RAM / align × (probe_len + 64)` (the
//! windows and their overlaps) plus a banner's re-read and the kallsyms search's own bound per
//! candidate; nothing here trusts a banner until kallsyms has been found after it.

use emulator::mem::{PhysAddr, PhysMem, PhysRange};

use super::kallsyms::locate::{from_vmcoreinfo, locate, KallsymsLocation, LocateConfig};
use super::physread::read_many;
use super::trampoline;
use super::vmcoreinfo::{self, VmcoreInfo};

/// Most aligned frames probed for the banner (2 TiB of RAM at 2 MiB).
pub const MAX_CANDIDATES: usize = 1 << 20;

/// Scan parameters.
#[derive(Debug, Clone, Copy)]
pub struct ScanConfig {
    /// Alignment of the kernel's physical load address and of `.rodata` (x86-64: 2 MiB).
    pub align: u64,
    /// Bytes read at each aligned candidate.
    pub probe_len: usize,
    /// Bytes read at each candidate in a first pass (at most `probe_len`); each later pass
    /// reads up to twice as far, the last to `probe_len`.
    pub first_probe_len: usize,
    /// Candidates read in the first batch (later ones double, up to 8 times this).
    pub batch: usize,
    /// Physical memory assumed when the source cannot list its ranges (a remote machine).
    pub assumed_ram: u64,
    pub kallsyms: LocateConfig,
    /// Read the frames the real-mode trampoline's page table maps before scanning.
    pub trampoline: bool,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig { align: 2 << 20, probe_len: 4096, first_probe_len: 512, batch: 32, assumed_ram: 4 << 30, kallsyms: LocateConfig::default(), trampoline: true }
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
    /// How the tables were found: "structure" or "VMCOREINFO".
    pub kallsyms_from: &'static str,
    /// Candidates probed before the kernel was found.
    pub candidates_probed: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("no Linux banner found at any {align:#x}-aligned frame of {ram_bytes:#x} bytes of RAM ({probed} probed)")]
    NoBanner { align: u64, ram_bytes: u64, probed: usize },
    #[error("found a Linux banner ({release}) at {banners:?} but no kallsyms tables of a known format after any of them, and {vmcoreinfo}")]
    NoKallsyms { banners: Vec<PhysAddr>, release: String, vmcoreinfo: String },
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

/// Aligned candidate frames whose first `need` bytes lie inside one of the source's ranges
/// (or the assumed RAM).
fn candidates(mem: &dyn PhysMem, cfg: &ScanConfig, need: usize) -> (Vec<(PhysAddr, PhysRange)>, u64) {
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
        while a.checked_add(need as u64).is_some_and(|end| end <= r.end.0) {
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

/// Banners seen so far, and the first with its frame.
#[derive(Default)]
struct Seen {
    banners: Vec<PhysAddr>,
    first: Option<(Banner, PhysAddr)>,
    probed: usize,
}

/// The window of each frame one pass reads: `[from, to)` bytes from the frame's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    from: usize,
    to: usize,
}

/// The windows of the passes (see the module doc): `[0, first)`, then up to twice as far each
/// time, the last to `probe_len`, each from a banner's prefix before the last one's end.
fn windows(cfg: &ScanConfig) -> Vec<Window> {
    let full = cfg.probe_len.max(1);
    let (mut out, mut end) = (Vec::new(), cfg.first_probe_len.clamp(1, full));
    out.push(Window { from: 0, to: end });
    while end < full {
        let next = end.saturating_mul(2).min(full);
        out.push(Window { from: end.saturating_sub(BANNER.len() - 1), to: next });
        end = next;
    }
    out
}

/// Longest banner read (`parse_banner` looks this far for its end).
const BANNER_MAX: usize = 512;

/// Probe one batch of candidate frames: the kernel if a banner there has kallsyms after it
/// (searched up to `top`); also whether any frame of the batch could be read.
fn probe(mem: &dyn PhysMem, cfg: &ScanConfig, w: Window, chunk: &[(PhysAddr, PhysRange)], top: PhysAddr, seen: &mut Seen) -> (Option<Found>, bool) {
    let regions: Vec<(PhysAddr, usize)> = chunk.iter().map(|&(a, _)| (PhysAddr(a.0 + w.from as u64), w.to - w.from)).collect();
    let results = read_many(mem, &regions);
    seen.probed += chunk.len();
    let mut any = false;
    for (&(frame, _), res) in chunk.iter().zip(results) {
        let Ok(page) = res else { continue };
        any = true;
        let mut from = 0usize;
        while let Some(pos) = find(&page[from..], BANNER.as_bytes()).map(|p| p + from) {
            from = pos + 1;
            let phys = PhysAddr(frame.0 + (w.from + pos) as u64);
            let text = match parse_banner(&page[pos..]) {
                Some(text) => text,
                // Cut off by the window's end: read it whole where it is.
                None if page.len() - pos < BANNER_MAX && !page[pos..].iter().any(|&b| b == 0 || b == b'\n') => {
                    match read_many(mem, &[(phys, BANNER_MAX)]).pop().and_then(Result::ok).and_then(|b| parse_banner(&b)) {
                        Some(text) => text,
                        None => continue,
                    }
                }
                None => continue,
            };
            let banner = Banner { phys, text };
            if seen.banners.contains(&banner.phys) {
                break; // searched after in an earlier pass
            }
            tracing::debug!(phys = %banner.phys, release = banner.release(), "banner candidate");
            seen.banners.push(banner.phys);
            if let Some(kallsyms) = locate(mem, frame, top, &cfg.kallsyms) {
                return (Some(Found { banner, rodata: frame, kallsyms, kallsyms_from: "structure", candidates_probed: seen.probed }), any);
            }
            seen.first.get_or_insert((banner, frame));
            break;
        }
    }
    (None, any)
}

/// The largest batch of frames probed, in multiples of [`ScanConfig::batch`].
const GROWTH: usize = 8;

/// Bytes after a banner frame past RAM's assumed end searched for kallsyms (the kernel image).
const IMAGE_SPAN: u64 = 256 << 20;

/// Find the kernel: banner frame, then kallsyms after it. Of a source that cannot list its
/// ranges (a remote machine), the assumed RAM is probed first, then the frames above it while
/// they answer: above 4 GiB a PC's RAM is one range (physical KASLR may load the kernel there),
/// and the first batch of frames with no RAM ends it.
pub fn find_kernel(mem: &dyn PhysMem, cfg: &ScanConfig) -> Result<Found, ScanError> {
    let mut seen = Seen::default();
    if cfg.trampoline {
        if let Some(found) = hinted(mem, cfg, &mut seen) {
            return Ok(found);
        }
    }
    let mut ram = 0;
    for w in windows(cfg) {
        let (found, r) = pass(mem, cfg, w, &mut seen);
        if let Some(found) = found {
            return Ok(found);
        }
        ram = r;
    }
    let Seen { banners, first, probed } = seen;
    let Some((banner, rodata)) = first else {
        return Err(ScanError::NoBanner { align: cfg.align, ram_bytes: ram, probed });
    };
    let release = banner.release().to_owned();
    let vmcoreinfo = match find_vmcoreinfo(mem, &release, cfg) {
        None => "no VMCOREINFO page for this release".to_string(),
        Some((at, info)) => match from_vmcoreinfo(mem, &info) {
            Some(kallsyms) => {
                tracing::info!(%at, "kallsyms tables from VMCOREINFO");
                return Ok(Found { banner, rodata, kallsyms, kallsyms_from: "VMCOREINFO", candidates_probed: probed });
            }
            None => format!("VMCOREINFO at {at} names no usable kallsyms tables"),
        },
    };
    Err(ScanError::NoKallsyms { banners, release, vmcoreinfo })
}

/// The kernel, if it is in the frames the real-mode trampoline's page table maps: the first
/// `.rodata`-like frame's first page, then the first window of the others, and the later
/// windows (banners found here are not searched after again by the scan).
fn hinted(mem: &dyn PhysMem, cfg: &ScanConfig, seen: &mut Seen) -> Option<Found> {
    let image = trampoline::image_frames(mem)?;
    let ranges = mem.ranges();
    let align = cfg.align.max(1);
    // Each frame with the range it lies in; of a source without ranges, its own frame.
    let frames: Vec<(PhysAddr, PhysRange)> = image
        .banner_order()
        .into_iter()
        .filter(|f| f.0.is_multiple_of(align))
        .filter_map(|f| match ranges.is_empty() {
            true => Some((f, PhysRange::new(f.0, f.0.saturating_add(align)))),
            false => ranges.iter().find(|r| r.start <= f && f.0.saturating_add(cfg.probe_len as u64) <= r.end.0).map(|r| (f, *r)),
        })
        .collect();
    let top = match ranges.iter().map(|r| r.end).max() {
        Some(end) => end,
        None => frames.iter().map(|(f, _)| PhysAddr(f.0.saturating_add(IMAGE_SPAN))).max().unwrap_or(PhysAddr(0)).max(PhysAddr(cfg.assumed_ram)),
    };
    let (first, rest) = frames.split_first()?;
    let page = Window { from: 0, to: cfg.probe_len.max(1) };
    if let (Some(found), _) = probe(mem, cfg, page, std::slice::from_ref(first), top, seen) {
        return Some(found);
    }
    for w in windows(cfg) {
        if let (Some(found), _) = probe(mem, cfg, w, rest, top, seen) {
            return Some(found);
        }
    }
    None
}

/// One pass over the candidate frames, reading window `w` of each (banners already in `seen`
/// are not searched after again): the kernel, or none and the RAM size probed.
fn pass(mem: &dyn PhysMem, cfg: &ScanConfig, w: Window, seen: &mut Seen) -> (Option<Found>, u64) {
    let (cands, mut ram) = candidates(mem, cfg, w.to);
    // Search for kallsyms up to the end of the highest range, not just the candidate's own:
    // sparse sources (a replayed capture) list many small ranges.
    let top = cands.iter().map(|(_, r)| r.end).max().unwrap_or(PhysAddr(0));
    // Batches double from `cfg.batch` to `GROWTH` times that: a kernel that physical KASLR put
    // high in a large RAM is reached in a few round trips, one put low in the first.
    let (mut at, mut size) = (0usize, cfg.batch.max(1));
    while at < cands.len() {
        let chunk = &cands[at..at.saturating_add(size).min(cands.len())];
        if let (Some(found), _) = probe(mem, cfg, w, chunk, top, seen) {
            return (Some(found), ram);
        }
        at += chunk.len();
        size = size.saturating_mul(2).min(cfg.batch.max(1).saturating_mul(GROWTH));
    }
    if seen.first.is_none() && mem.ranges().is_empty() {
        let start = seen.probed;
        let align = cfg.align.max(1);
        let mut a = cfg.assumed_ram.div_ceil(align).saturating_mul(align);
        while seen.probed - start < MAX_CANDIDATES {
            let chunk: Vec<(PhysAddr, PhysRange)> = (0..cfg.batch.max(1) as u64)
                .filter_map(|i| a.checked_add(i.checked_mul(align)?))
                .map(|f| (PhysAddr(f), PhysRange::new(f, f.saturating_add(align))))
                .collect();
            let Some(&(last, _)) = chunk.last() else { break };
            let top = PhysAddr(last.0.saturating_add(IMAGE_SPAN));
            match probe(mem, cfg, w, &chunk, top, seen) {
                (Some(found), _) => return (Some(found), ram),
                (None, false) => break,
                (None, true) => {}
            }
            ram = last.0.saturating_add(align);
            let Some(next) = last.0.checked_add(align) else { break };
            a = next;
        }
    }
    (None, ram)
}

/// Most pages whose start is read looking for VMCOREINFO (16 GiB of RAM).
pub const MAX_VMCOREINFO_PAGES: usize = 1 << 22;

/// The page holding VMCOREINFO's text for `release` (it starts with `OSRELEASE=<release>\n`):
/// the start of every page is read, in batches, up to [`MAX_VMCOREINFO_PAGES`].
fn find_vmcoreinfo(mem: &dyn PhysMem, release: &str, cfg: &ScanConfig) -> Option<(PhysAddr, VmcoreInfo)> {
    let want = format!("OSRELEASE={release}\n");
    let mut ranges = mem.ranges();
    if ranges.is_empty() {
        ranges = vec![PhysRange::new(0, cfg.assumed_ram)];
    }
    let pages = ranges.iter().flat_map(|r| {
        let first = r.start.0.div_ceil(4096);
        let last = r.end.0 / 4096;
        (first..last).map(|p| PhysAddr(p * 4096))
    });
    let pages: Vec<PhysAddr> = pages.take(MAX_VMCOREINFO_PAGES).collect();
    for chunk in pages.chunks(1024) {
        let regions: Vec<(PhysAddr, usize)> = chunk.iter().map(|&a| (a, want.len())).collect();
        for (&at, r) in chunk.iter().zip(read_many(mem, &regions)) {
            if r.is_ok_and(|b| b == want.as_bytes()) {
                let page = read_many(mem, &[(at, vmcoreinfo::MAX_BYTES)]).pop()?.ok()?;
                return Some((at, VmcoreInfo::parse(&page)));
            }
        }
    }
    None
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
        let cfg = ScanConfig::default();
        let (cands, ram) = candidates(&Huge, &cfg, cfg.probe_len);
        assert_eq!(cands.len(), MAX_CANDIDATES);
        assert_eq!(cands[0].0, PhysAddr(2 << 20));
        assert!(ram > 1 << 62);
    }

    /// A remote machine (no ranges) whose RAM ends at `end`, with a banner at `banner`.
    struct Remote {
        end: u64,
        banner: u64,
        reads: std::sync::atomic::AtomicU64,
    }
    impl PhysMem for Remote {
        fn read_phys(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), emulator::mem::MemError> {
            self.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if addr.0 + buf.len() as u64 > self.end {
                return Err(emulator::mem::MemError::Unmapped { addr });
            }
            buf.fill(0);
            let text = b"Linux version 6.1.0-57-amd64 (x@y) #1 SMP\n\0";
            if (addr.0..addr.0 + buf.len() as u64).contains(&self.banner) {
                let at = (self.banner - addr.0) as usize;
                let n = text.len().min(buf.len() - at);
                buf[at..at + n].copy_from_slice(&text[..n]);
            }
            Ok(())
        }
        fn ranges(&self) -> Vec<PhysRange> {
            Vec::new()
        }
        fn describe(&self) -> String {
            "remote".into()
        }
    }

    #[test]
    fn a_remote_machines_kernel_above_4_gib_is_found_and_the_probe_stops_where_ram_ends() {
        let cfg = ScanConfig::default();
        let frames_below = (cfg.assumed_ram / cfg.align) as usize;
        // The banner 96 MiB above 4 GiB, RAM to 5 GiB: seen (no kallsyms in this memory).
        let high = Remote { end: 5 << 30, banner: (4 << 30) + (96 << 20) + 0x40, reads: Default::default() };
        match find_kernel(&high, &cfg) {
            Err(ScanError::NoKallsyms { banners, .. }) => assert_eq!(banners, vec![PhysAddr(high.banner)]),
            other => panic!("{:?}", other.map(|f| f.banner.phys)),
        }
        // RAM ends at 4 GiB: one batch above it, unanswered, ends the probe (in each pass).
        let low = Remote { end: 4 << 30, banner: u64::MAX, reads: Default::default() };
        match find_kernel(&low, &cfg) {
            Err(ScanError::NoBanner { probed, .. }) => assert_eq!(probed, windows(&cfg).len() * (frames_below + cfg.batch)),
            other => panic!("{:?}", other.map(|f| f.banner.phys)),
        }
    }

    /// The first pass reads the first 512 bytes of each frame; a banner further into its page
    /// (or across a window's end) is found by a later pass, and searched after only once.
    #[test]
    fn a_banner_past_the_first_window_is_found_by_a_later_pass() {
        let cfg = ScanConfig::default();
        assert_eq!(windows(&cfg), [Window { from: 0, to: 512 }, Window { from: 499, to: 1024 }, Window { from: 1011, to: 2048 }, Window { from: 2035, to: 4096 }]);
        for offset in [0x100u64, 0x1e0, 0x1f8, 0x200, 0x3f0, 0x800, 0xf80] {
            let m = Remote { end: 4 << 30, banner: (96 << 20) + offset, reads: Default::default() };
            match find_kernel(&m, &cfg) {
                Err(ScanError::NoKallsyms { banners, .. }) => assert_eq!(banners, vec![PhysAddr(m.banner)], "offset {offset:#x}"),
                other => panic!("{:?}", other.map(|f| f.banner.phys)),
            }
        }
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
