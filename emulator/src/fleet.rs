//! Addresses of many endpoints: ranges (`127.0.1.1-127.0.4.232`, `127.0.1.0/22`, one address)
//! and the manifest of an emulated fleet (which image each address serves, or how it
//! misbehaves). Shared by `emulator serve` (what to serve) and `harness fleet` (what to read).
//!
//! Manifest: one entry per line, `#` starts a comment, blank lines ignored:
//!
//! ```text
//! # addresses                 what
//! 127.0.1.1-127.0.1.100       /path/to/dump.elf            # an image (format detected)
//! 127.0.1.101                 /path/to/dump.raw format=raw base=0x0
//! 127.0.2.0/24                silent                       # never answers
//! 127.0.3.7                   random                       # serves pseudo-random bytes
//! ```
//!
//! Relative image paths are relative to the manifest's directory.
//!
//! Invariant: parsing never panics; a range is never empty, never reversed and holds at most
//! [`MAX_RANGE`] addresses; every error names the line (manifest) or the text (range).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Most addresses one range may name (a /16), so a typo cannot ask for four billion endpoints.
pub const MAX_RANGE: u64 = 1 << 16;

/// Why an address range was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("address range {0:?}: expected ADDR, ADDR-ADDR or ADDR/PREFIX")]
    Syntax(String),
    #[error("address range {0:?}: the last address is before the first")]
    Reversed(String),
    #[error("address range {text:?}: {count} addresses, more than {max}")]
    TooLarge { text: String, count: u64, max: u64 },
}

/// Consecutive IPv4 addresses, `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrRange {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

impl AddrRange {
    pub fn single(a: Ipv4Addr) -> AddrRange {
        AddrRange { first: a, last: a }
    }

    /// How many addresses (at least 1).
    pub fn len(&self) -> u64 {
        u64::from(u32::from(self.last)) - u64::from(u32::from(self.first)) + 1
    }

    /// Never empty; for symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn iter(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.first)..=u32::from(self.last)).map(Ipv4Addr::from)
    }

    /// Parse `A`, `A-B` (inclusive) or `A/N` (every address of the prefix, network and
    /// broadcast included: on loopback they are ordinary addresses).
    pub fn parse(text: &str) -> Result<AddrRange, RangeError> {
        let t = text.trim();
        let syntax = || RangeError::Syntax(text.to_owned());
        let addr = |s: &str| s.trim().parse::<Ipv4Addr>().map_err(|_| syntax());
        let r = if let Some((a, b)) = t.split_once('-') {
            let (first, last) = (addr(a)?, addr(b)?);
            if last < first {
                return Err(RangeError::Reversed(text.to_owned()));
            }
            AddrRange { first, last }
        } else if let Some((a, n)) = t.split_once('/') {
            let a = u32::from(addr(a)?);
            let n: u32 = n.trim().parse().map_err(|_| syntax())?;
            if n > 32 {
                return Err(syntax());
            }
            let host_bits = 32 - n;
            let mask = if host_bits == 32 { 0 } else { u32::MAX << host_bits };
            let first = a & mask;
            let last = first | !mask;
            AddrRange { first: first.into(), last: last.into() }
        } else {
            AddrRange::single(addr(t)?)
        };
        if r.len() > MAX_RANGE {
            return Err(RangeError::TooLarge { text: text.to_owned(), count: r.len(), max: MAX_RANGE });
        }
        Ok(r)
    }
}

impl std::fmt::Display for AddrRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// What the endpoints of one manifest line do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serves {
    /// Answer from an image (format detected when `None`, as `emulator serve --format`).
    Image { path: PathBuf, format: Option<String>, base: Option<u64> },
    /// Never answer.
    Silent,
    /// Answer every read with pseudo-random bytes (the [`crate::pattern`] over 256 MiB).
    Random,
}

/// One manifest line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub addrs: AddrRange,
    pub serves: Serves,
}

/// Why a manifest was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest line {line}: {source}")]
    Range { line: usize, source: RangeError },
    #[error("manifest line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("manifest line {line}: address {addr} already given on line {first}")]
    Duplicate { line: usize, addr: Ipv4Addr, first: usize },
    #[error("manifest: {count} endpoints, more than {max}")]
    TooMany { count: u64, max: u64 },
    #[error("manifest: no endpoint")]
    Empty,
}

/// Parse a manifest; relative image paths are taken from `dir`.
pub fn parse_manifest(text: &str, dir: &Path) -> Result<Vec<Entry>, ManifestError> {
    let mut entries = Vec::new();
    let mut seen: std::collections::HashMap<Ipv4Addr, usize> = std::collections::HashMap::new();
    for (k, raw) in text.lines().enumerate() {
        let line = k + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let mut words = content.split_whitespace();
        let (Some(addrs), Some(what)) = (words.next(), words.next()) else {
            return Err(ManifestError::Line { line, reason: format!("expected ADDRESSES WHAT, got {content:?}") });
        };
        let addrs = AddrRange::parse(addrs).map_err(|source| ManifestError::Range { line, source })?;
        let bad = |reason: String| ManifestError::Line { line, reason };
        let serves = match what {
            "silent" | "random" => {
                if let Some(extra) = words.next() {
                    return Err(bad(format!("{what} takes no options, got {extra:?}")));
                }
                if what == "silent" { Serves::Silent } else { Serves::Random }
            }
            path => {
                let (mut format, mut base) = (None, None);
                for opt in words {
                    match opt.split_once('=') {
                        Some(("format", v)) if !v.is_empty() => format = Some(v.to_owned()),
                        Some(("base", v)) => base = Some(parse_u64(v).ok_or_else(|| bad(format!("base={v:?}: not a number")))?),
                        _ => return Err(bad(format!("unknown option {opt:?} (known: format=, base=)"))),
                    }
                }
                let p = Path::new(path);
                Serves::Image { path: if p.is_absolute() { p.to_owned() } else { dir.join(p) }, format, base }
            }
        };
        if seen.len() as u64 + addrs.len() > MAX_RANGE {
            return Err(ManifestError::TooMany { count: seen.len() as u64 + addrs.len(), max: MAX_RANGE });
        }
        for a in addrs.iter() {
            if let Some(&first) = seen.get(&a) {
                return Err(ManifestError::Duplicate { line, addr: a, first });
            }
            seen.insert(a, line);
        }
        entries.push(Entry { addrs, serves });
    }
    if entries.is_empty() {
        return Err(ManifestError::Empty);
    }
    Ok(entries)
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Move the calling thread into a new, empty network namespace with its loopback interface
/// up: a wildcard-bound fleet there takes no port from anyone else on the host, and every
/// 127.0.0.0/8 address is its own. Threads and processes it starts afterwards inherit the
/// namespace; others join with `setns` on `/proc/PID/ns/net`. Needs CAP_SYS_ADMIN (root).
/// Only system calls (no allocation): usable between `fork` and `exec` (`pre_exec`).
pub fn enter_private_network() -> std::io::Result<()> {
    // SAFETY: unshare, socket, ioctl and close with valid arguments; `ifr` is a live,
    // zero-initialised ifreq whose name is NUL-terminated.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        let mut r = libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut ifr);
        if r == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            r = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &ifr);
        }
        let e = std::io::Error::last_os_error();
        libc::close(fd);
        if r != 0 {
            return Err(e);
        }
    }
    Ok(())
}

/// Move the calling thread into the network namespace of process `pid` (which called
/// [`enter_private_network`]).
pub fn join_network_of(pid: u32) -> std::io::Result<()> {
    let f = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    join_network(&f)
}

/// [`join_network_of`] with the namespace file already open (no allocation: `pre_exec`).
pub fn join_network(ns: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setns on an open namespace descriptor.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("127.0.1.1", "127.0.1.1", "127.0.1.1", 1)]
    #[case("127.0.1.1-127.0.4.232", "127.0.1.1", "127.0.4.232", 3 * 256 + 232)]
    #[case(" 10.0.0.1 - 10.0.0.3 ", "10.0.0.1", "10.0.0.3", 3)]
    #[case("127.0.1.0/22", "127.0.0.0", "127.0.3.255", 1024)]
    #[case("127.0.1.9/32", "127.0.1.9", "127.0.1.9", 1)]
    #[case("127.0.4.0/24", "127.0.4.0", "127.0.4.255", 256)]
    fn ranges_parse(#[case] text: &str, #[case] first: &str, #[case] last: &str, #[case] len: u64) {
        let r = AddrRange::parse(text).unwrap();
        assert_eq!((r.first, r.last, r.len()), (first.parse().unwrap(), last.parse().unwrap(), len));
        assert_eq!(r.iter().count() as u64, len);
    }

    #[rstest]
    #[case("", RangeError::Syntax(String::new()))]
    #[case("127.0.0.300", RangeError::Syntax("127.0.0.300".into()))]
    #[case("127.0.0.9-127.0.0.1", RangeError::Reversed("127.0.0.9-127.0.0.1".into()))]
    #[case("10.0.0.0/33", RangeError::Syntax("10.0.0.0/33".into()))]
    #[case("10.0.0.0/8", RangeError::TooLarge { text: "10.0.0.0/8".into(), count: 1 << 24, max: MAX_RANGE })]
    #[case("0.0.0.0/0", RangeError::TooLarge { text: "0.0.0.0/0".into(), count: 1 << 32, max: MAX_RANGE })]
    #[case("1.2.3.4-", RangeError::Syntax("1.2.3.4-".into()))]
    #[case("1.2.3.4/x", RangeError::Syntax("1.2.3.4/x".into()))]
    fn bad_ranges_are_errors(#[case] text: &str, #[case] want: RangeError) {
        assert_eq!(AddrRange::parse(text), Err(want));
    }

    #[test]
    fn manifest_parses_images_and_behaviours() {
        let text = "# fleet\n127.0.1.1-127.0.1.3  a/dump.elf\n\n127.0.1.4 /abs/dump.raw format=raw base=0x1000 # raw\n127.0.2.0/31 silent\n127.0.3.1 random\n";
        let m = parse_manifest(text, Path::new("/d")).unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].serves, Serves::Image { path: "/d/a/dump.elf".into(), format: None, base: None });
        assert_eq!(m[1].serves, Serves::Image { path: "/abs/dump.raw".into(), format: Some("raw".into()), base: Some(0x1000) });
        assert_eq!((m[2].addrs.len(), &m[2].serves), (2, &Serves::Silent));
        assert_eq!(m[3].serves, Serves::Random);
    }

    #[rstest]
    #[case("127.0.0.1\n", "line 1: expected ADDRESSES WHAT")]
    #[case("x dump.elf\n", "line 1: address range")]
    #[case("127.0.0.1 silent loud\n", "line 1: silent takes no options")]
    #[case("127.0.0.1 d.elf colour=red\n", "line 1: unknown option")]
    #[case("127.0.0.1 d.elf base=zz\n", "line 1: base=")]
    #[case("127.0.0.1-127.0.0.5 d.elf\n127.0.0.3 silent\n", "line 2: address 127.0.0.3 already given on line 1")]
    #[case("# nothing\n\n", "no endpoint")]
    #[case("127.0.0.0/16 silent\n127.1.0.0 silent\n", "more than 65536")]
    fn bad_manifests_are_errors(#[case] text: &str, #[case] want: &str) {
        let e = parse_manifest(text, Path::new("/")).unwrap_err().to_string();
        assert!(e.contains(want), "{e:?} lacks {want:?}");
    }
}
