//! Support for the fuzz targets: fuzzed bytes as an image file, and as a small sparse physical
//! memory.
//!
//! ```text
//!   fuzz_targets/<name>.rs   one parser each, fed libFuzzer's bytes
//!        │
//!   this lib   with_file (bytes → a temp file, for the mmap-based image parsers)
//!              SparseMem (bytes → a physical memory: RAM size + 4 KiB pages, the rest zero)
//!              exercise  (read every range of a PhysMem a little, so lazy decoders run)
//! ```
//!
//! Invariant: nothing here panics on any input; every size taken from the input is capped
//! ([`MAX_PAGES`], [`MAX_RAM`]), so a target's memory use is bounded by the input's length.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use emulator::mem::{MemError, PhysAddr, PhysMem, PhysRange, ReadOp};

/// Most 4 KiB pages a [`SparseMem`] holds (16 MiB).
pub const MAX_PAGES: usize = 4096;
/// Largest RAM size a [`SparseMem`] reports (4 GiB): `ps` probes every 2 MiB frame of RAM for
/// the banner, so a fuzzed terabyte made single inputs run for tens of seconds.
pub const MAX_RAM: u64 = 4 << 30;
pub const PAGE: u64 = 4096;
/// The magic that starts a [`SparseMem`] encoding.
pub const SPARSE_MAGIC: &[u8; 8] = b"NDSPARS1";

thread_local! {
    static FILE: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// Write `data` to this process's scratch file (on tmpfs when there is one) and call `f` with
/// its path. The image parsers map files, so this is how they see fuzzed bytes.
pub fn with_file<R>(data: &[u8], f: impl FnOnce(&std::path::Path) -> R) -> R {
    let path = FILE.with(|p| {
        p.borrow_mut()
            .get_or_insert_with(|| {
                let dir = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
                dir.join(format!("netdma-fuzz-{}.img", std::process::id()))
            })
            .clone()
    });
    let mut file = std::fs::File::create(&path).expect("creating the fuzz scratch file");
    file.write_all(data).expect("writing the fuzz scratch file");
    drop(file);
    f(&path)
}

/// Open the image at `path` as `harness ps --image` does, with `format` forced and by
/// detection, and [`exercise`] whatever opens.
pub fn open_both_ways(path: &std::path::Path, format: emulator::image::Format) {
    for format in [Some(format), None] {
        if let Ok(mem) = emulator::image::open(path, format, None) {
            exercise(&mem);
        }
    }
}

/// Read a little of every range of `mem` (first and last page, and one batch across ranges), so
/// that lazily decoded formats decode something. Errors are fine; panics are bugs.
pub fn exercise(mem: &dyn PhysMem) {
    let ranges = mem.ranges();
    let mut page = vec![0u8; PAGE as usize];
    for r in ranges.iter().take(64) {
        let _ = mem.read_phys(r.start, &mut page[..(r.len().min(PAGE)) as usize]);
        if r.len() > PAGE {
            let _ = mem.read_phys(PhysAddr(r.end.0 - PAGE), &mut page);
        }
        // A read that runs past the end of the range.
        if r.len() >= 16 {
            let _ = mem.read_phys(PhysAddr(r.end.0 - 8), &mut page[..16]);
        }
    }
    let mut bufs: Vec<[u8; 64]> = ranges.iter().take(16).map(|_| [0u8; 64]).collect();
    let mut ops: Vec<ReadOp<'_>> = ranges.iter().zip(bufs.iter_mut()).map(|(r, b)| ReadOp { addr: r.start, buf: &mut b[..] }).collect();
    let _ = mem.read_batch(&mut ops);
    let _ = mem.describe();
}

/// A physical memory made of fuzzed bytes: RAM `[0, ram)` of which the listed 4 KiB pages hold
/// bytes and every other page reads as zeros; reads past `ram` fail.
///
/// Encoding: [`SPARSE_MAGIC`], `ram: u64 LE`, then records `page number: u32 LE, 4096 bytes`
/// (a short last record is zero-padded). Anything else decodes to nothing.
#[derive(Debug, Default, Clone)]
pub struct SparseMem {
    pub ram: u64,
    pub pages: BTreeMap<u64, Box<[u8]>>,
}

impl SparseMem {
    pub fn decode(data: &[u8]) -> Option<SparseMem> {
        let rest = data.strip_prefix(SPARSE_MAGIC.as_slice())?;
        let ram = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?).min(MAX_RAM) & !(PAGE - 1);
        let mut mem = SparseMem { ram, pages: BTreeMap::new() };
        let mut rest = &rest[8..];
        while rest.len() >= 4 && mem.pages.len() < MAX_PAGES {
            let n = u64::from(u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]));
            let body = &rest[4..];
            let take = body.len().min(PAGE as usize);
            let mut page = vec![0u8; PAGE as usize].into_boxed_slice();
            page[..take].copy_from_slice(&body[..take]);
            mem.pages.insert(n, page);
            rest = &body[take..];
        }
        Some(mem)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = SPARSE_MAGIC.to_vec();
        out.extend_from_slice(&self.ram.to_le_bytes());
        for (&n, page) in &self.pages {
            out.extend_from_slice(&(n as u32).to_le_bytes());
            out.extend_from_slice(page);
        }
        out
    }
}

impl PhysMem for SparseMem {
    fn read_phys(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let end = addr.0.checked_add(buf.len() as u64).ok_or(MemError::Unmapped { addr })?;
        if end > self.ram {
            return Err(MemError::Unmapped { addr: PhysAddr(addr.0.max(self.ram)) });
        }
        let mut done = 0usize;
        while done < buf.len() {
            let a = addr.0 + done as u64;
            let off = (a % PAGE) as usize;
            let n = (PAGE as usize - off).min(buf.len() - done);
            match self.pages.get(&(a / PAGE)) {
                Some(p) => buf[done..done + n].copy_from_slice(&p[off..off + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn ranges(&self) -> Vec<PhysRange> {
        if self.ram == 0 {
            Vec::new()
        } else {
            vec![PhysRange::new(0, self.ram)]
        }
    }

    fn describe(&self) -> String {
        format!("fuzzed sparse memory, {} bytes of RAM, {} pages set", self.ram, self.pages.len())
    }
}

/// A little-endian cursor over fuzz bytes that yields zeros once they run out.
pub struct Take<'a>(pub &'a [u8]);

impl Take<'_> {
    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let n = self.0.len().min(8);
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        u64::from_le_bytes(b)
    }
    pub fn u8(&mut self) -> u8 {
        let v = self.0.first().copied().unwrap_or(0);
        self.0 = self.0.get(1..).unwrap_or(&[]);
        v
    }
}
