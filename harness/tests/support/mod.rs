//! Shared setup for the DMA tests: a raw image file holding the known pattern, an endpoint
//! serving it on a loopback address of its own, a requester on another.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use emulator::pattern::{pattern_bytes, write_pattern_file};
use emulator::image::{self, Format};
use emulator::mem::PhysAddr;
use emulator::endpoint::{Endpoint, EndpointConfig, EndpointError, Running};
use harness::dma::{Requester, Target};

/// Image layout: 64 MiB starting 16 MiB below 4 GiB, so reads use 3DW and 4DW headers.
pub const BASE: u64 = 0xff00_0000;
pub const LEN: u64 = 64 << 20;

/// A pattern image in a temporary directory.
pub struct Image {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn image(len: u64) -> Image {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("pattern.raw");
    write_pattern_file(&path, BASE, len).expect("writing the pattern image");
    Image { dir, path }
}

pub fn pattern(addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    pattern_bytes(addr, &mut v);
    v
}

/// A random loopback address 127.a.b.c (a, b, c in 1..=254), from the process id, time and a
/// counter, so parallel test processes do not collide.
pub fn loopback() -> Ipv4Addr {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
        ^ N.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let x = emulator::pattern::splitmix64(seed);
    let o = |k: u32| ((x >> k) % 254 + 1) as u8;
    Ipv4Addr::new(127, o(0), o(8), o(16))
}

/// An endpoint serving `img` on a fresh loopback address (retrying if the address is taken).
pub fn serve(img: &Path, mut cfg: EndpointConfig) -> (Running, Ipv4Addr) {
    for _ in 0..20 {
        let addr = loopback();
        cfg.listen = addr;
        let mem = image::open(img, Some(Format::Raw), Some(PhysAddr(BASE))).expect("mapping the image");
        match Endpoint::bind(mem, cfg.clone()) {
            Ok(ep) => return (ep.spawn(), addr),
            Err(EndpointError::Bind { .. }) => continue,
            Err(e) => panic!("endpoint: {e}"),
        }
    }
    panic!("no free loopback address after 20 tries");
}

/// A requester towards `remote` with `options` (a `?`-query without the `?`), on a fresh
/// loopback address of its own.
pub fn requester(remote: Ipv4Addr, options: &str) -> Requester {
    for _ in 0..20 {
        let local = loopback();
        let t: Target = format!("nettlp://{remote}?local={local}&{options}").parse().expect("target");
        match Requester::connect(&t) {
            Ok(r) => return r,
            Err(harness::dma::DmaError::Bind { .. }) => continue,
            Err(e) => panic!("requester: {e}"),
        }
    }
    panic!("no free loopback address after 20 tries");
}
