//! The kernel's build configuration embedded by `CONFIG_IKCONFIG`: `"IKCFG_ST"`, a gzip stream
//! of the `.config` text, `"IKCFG_ED"` (kernel/configs.c).
//!
//! Found through the `kernel_config_data` symbol when kallsyms has data symbols; otherwise by a
//! search of `.rodata` (up to `__start___ksymtab`, else `_sinittext`) for the start marker.
//!
//! Invariant: decompression output is capped at [`MAX_CONFIG`] and the search at
//! [`SEARCH_SPAN`]; a missing or corrupt blob is an error, never a panic.

use std::io::Read;

use emulator::mem::PhysAddr;

use super::addr::KVirt;
use super::kernel::Kernel;
use super::physread::read_vec;

pub const MAX_CONFIG: u64 = 4 << 20;
const MAX_BLOB: u64 = 4 << 20;
const SEARCH_SPAN: u64 = 64 << 20;
const START: &[u8] = b"IKCFG_ST";
const END: &[u8] = b"IKCFG_ED";

#[derive(Debug, thiserror::Error)]
pub enum IkconfigError {
    #[error("no IKCONFIG in the kernel image (searched {searched:#x} bytes from {from})")]
    Absent { from: PhysAddr, searched: u64 },
    #[error("no IKCONFIG in the kernel image: kallsyms lists data symbols but not kernel_config_data (CONFIG_IKCONFIG off, or built as the module configs.ko)")]
    NoSymbol,
    #[error("IKCONFIG at {at}: {reason}")]
    Corrupt { at: KVirt, reason: String },
}

/// The recovered `.config` text.
#[derive(Debug, Clone)]
pub struct KernelConfig {
    pub text: String,
}

impl KernelConfig {
    /// The value of `CONFIG_<name>` (`y`, `m`, a number, a quoted string), if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        let key = format!("CONFIG_{name}=");
        self.text.lines().find_map(|l| l.strip_prefix(key.as_str()))
    }
}

/// Gunzip the payload between the markers, capped at [`MAX_CONFIG`].
pub fn decode(blob: &[u8], at: KVirt) -> Result<KernelConfig, IkconfigError> {
    let corrupt = |reason: String| IkconfigError::Corrupt { at, reason };
    let payload = blob.strip_prefix(START).ok_or_else(|| corrupt("missing IKCFG_ST".into()))?;
    let payload = payload.strip_suffix(END).unwrap_or(payload);
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(payload)
        .take(MAX_CONFIG)
        .read_to_end(&mut out)
        .map_err(|e| corrupt(format!("gzip: {e}")))?;
    let text = String::from_utf8(out).map_err(|_| corrupt("config is not UTF-8".into()))?;
    if !text.contains("CONFIG_") {
        return Err(corrupt("decompressed text has no CONFIG_ lines".into()));
    }
    Ok(KernelConfig { text })
}

/// Recover the configuration from the kernel in memory.
pub fn read(kernel: &Kernel<'_>) -> Result<KernelConfig, IkconfigError> {
    if let Some((start, end)) = kernel.info.ikconfig {
        let len = end
            .0
            .checked_sub(start.0)
            .ok_or_else(|| IkconfigError::Corrupt { at: start, reason: format!("kernel_config_data_end {end} is below its start") })?
            .min(MAX_BLOB) as usize;
        let mut blob = vec![0u8; len];
        kernel.space.read(start, &mut blob).map_err(|e| IkconfigError::Corrupt { at: start, reason: e.to_string() })?;
        // kernel_config_data_end may sit after the end marker; cut at the marker.
        if let Some(p) = find(&blob, END) {
            blob.truncate(p + END.len());
        }
        return decode(&blob, start);
    }
    if kernel.info.kallsyms_all {
        // kallsyms lists data symbols, so kernel_config_data would be there.
        return Err(IkconfigError::NoSymbol);
    }
    search(kernel)
}

/// Look for the start marker through `.rodata`, 256 KiB at a time, then read the blob up to
/// its end marker 64 KiB at a time.
fn search(kernel: &Kernel<'_>) -> Result<KernelConfig, IkconfigError> {
    const CHUNK: u64 = 256 << 10;
    const BLOB_CHUNK: usize = 64 << 10;
    let mem = kernel.space.mem();
    let from = kernel.info.rodata_phys;
    // IKCONFIG is in .rodata, which ends before __ksymtab (or, without that, before .init.text).
    let span = kernel
        .info
        .rodata_search_end
        .map(|e| e.0.saturating_sub(kernel.info.rodata_virt.0))
        .filter(|&s| s > 0)
        .unwrap_or(SEARCH_SPAN)
        .min(SEARCH_SPAN);
    let mut off = 0u64;
    while off < span {
        let len = (CHUNK + START.len() as u64).min(span - off + START.len() as u64) as usize;
        let Some(chunk_at) = from.checked_add(off) else { break };
        let Ok(chunk) = read_vec(mem, chunk_at, len) else { break };
        if let Some(p) = find(&chunk, START) {
            let at = PhysAddr(chunk_at.0 + p as u64); // within the chunk just read
            let virt = KVirt(kernel.info.text_virt.0.wrapping_add(at.0.wrapping_sub(kernel.info.text_phys.0)));
            let corrupt = |reason: String| IkconfigError::Corrupt { at: virt, reason };
            let mut blob: Vec<u8> = Vec::new();
            let end = loop {
                if let Some(e) = find(&blob[blob.len().saturating_sub(BLOB_CHUNK + END.len())..], END) {
                    break blob.len().saturating_sub(BLOB_CHUNK + END.len()) + e;
                }
                if blob.len() as u64 >= MAX_BLOB {
                    return Err(corrupt("no IKCFG_ED within 4 MiB".into()));
                }
                let next_at = at.checked_add(blob.len() as u64).ok_or_else(|| corrupt("runs past the end of the physical address space".into()))?;
                let next = read_vec(mem, next_at, BLOB_CHUNK).map_err(|e| corrupt(e.to_string()))?;
                blob.extend_from_slice(&next);
            };
            return decode(&blob[..end + END.len()], virt);
        }
        off += CHUNK;
    }
    Err(IkconfigError::Absent { from, searched: off.min(span) })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn blob(text: &str) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(text.as_bytes()).unwrap();
        let mut b = START.to_vec();
        b.extend(gz.finish().unwrap());
        b.extend_from_slice(END);
        b
    }

    #[test]
    fn decodes_and_answers() {
        let c = decode(&blob("# comment\nCONFIG_SMP=y\nCONFIG_HZ=250\n"), KVirt(0)).unwrap();
        assert_eq!(c.get("SMP"), Some("y"));
        assert_eq!(c.get("HZ"), Some("250"));
        assert_eq!(c.get("KASAN"), None);
    }

    #[test]
    fn corrupt_blobs_are_errors() {
        let good = blob("CONFIG_SMP=y\n");
        for len in [0, 4, 8, 12, good.len() / 2] {
            assert!(decode(&good[..len], KVirt(0)).is_err(), "len {len}");
        }
        let mut flipped = good.clone();
        flipped[20] ^= 0xff;
        assert!(decode(&flipped, KVirt(0)).is_err());
    }
}
