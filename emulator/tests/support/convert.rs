//! Converters for formats that have no real producer on this host. Each is written from the
//! format's description, independently of the code under test (own header parsing):
//!
//! - `relayout_elf`: QEMU 7.2 writes its section headers before the program headers
//!   (`e_phoff` = 192); makedumpfile 1.7.2 assumes program headers right after the ELF header
//!   and rejects the file ("Can't get the number of PT_LOAD"). This rewrites only the layout
//!   (program headers at 64, no section headers, data moved, offsets fixed), so the real
//!   makedumpfile can compress the real QEMU core.
//! - `elf_to_lime`: LiME / AVML from an ELF core's PT_LOADs, following AVML's writer
//!   (src/image.rs): version 2 cuts ranges into 16 MiB blocks, writes each as a snappy frame
//!   stream plus its u64 length, and omits all-zero blocks; version 1 omits all-zero ranges of
//!   at most 16 MiB; plain LiME writes every range.
//! - `kdump_rewrite`: Debian's QEMU 7.2 and makedumpfile 1.7.2 are both built without
//!   snappy, so this re-encodes the pages of a real kdump file with snappy (raw blocks, as
//!   QEMU's `snappy_compress` writes them), keeping headers, bitmaps and notes. It also
//!   excludes zero pages from the 2nd bitmap with a chosen dump level: makedumpfile only
//!   excludes pages by bitmap when it knows the kernel (VMCOREINFO), which this guest lacks.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// A PT_LOAD or PT_NOTE of a little-endian ELF64 core.
#[derive(Clone, Copy, Debug)]
pub struct Phdr {
    pub p_type: u32,
    pub offset: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

/// The ELF header bytes and program headers of a little-endian ELF64 core.
pub fn read_phdrs(path: &Path) -> Result<(Vec<u8>, Vec<Phdr>)> {
    let mut f = File::open(path)?;
    let mut eh = vec![0u8; 64];
    f.read_exact(&mut eh)?;
    ensure!(
        &eh[..4] == b"\x7fELF" && eh[4] == 2 && eh[5] == 1,
        "{} is not an ELF64 LE file",
        path.display()
    );
    let phoff = u64_at(&eh, 32);
    let (phentsize, phnum) = (u16_at(&eh, 54), u16_at(&eh, 56));
    ensure!(phentsize == 56, "unexpected e_phentsize {phentsize}");
    let mut table = vec![0u8; 56 * phnum as usize];
    f.seek(SeekFrom::Start(phoff))?;
    f.read_exact(&mut table)?;
    let phdrs = table
        .chunks(56)
        .map(|p| Phdr {
            p_type: u32_at(p, 0),
            offset: u64_at(p, 8),
            paddr: u64_at(p, 24),
            filesz: u64_at(p, 32),
            memsz: u64_at(p, 40),
        })
        .collect();
    Ok((eh, phdrs))
}

/// Rewrite an ELF64 core with the program headers right after the ELF header.
pub fn relayout_elf(src: &Path, dst: &Path) -> Result<()> {
    let (mut eh, phdrs) = read_phdrs(src)?;
    let raw_table = {
        let mut f = File::open(src)?;
        let mut t = vec![0u8; 56 * phdrs.len()];
        f.seek(SeekFrom::Start(u64_at(&eh, 32)))?;
        f.read_exact(&mut t)?;
        t
    };
    let data_start = phdrs
        .iter()
        .filter(|p| p.filesz > 0)
        .map(|p| p.offset)
        .min()
        .context("no segment data")?;
    let new_start = 64 + 56 * phdrs.len() as u64;
    eh[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    eh[40..48].copy_from_slice(&0u64.to_le_bytes()); // e_shoff
    eh[60..64].copy_from_slice(&[0, 0, 0, 0]); // e_shnum, e_shstrndx
    let mut out = BufWriter::new(File::create(dst)?);
    out.write_all(&eh)?;
    for (i, p) in phdrs.iter().enumerate() {
        let mut entry = raw_table[i * 56..(i + 1) * 56].to_vec();
        ensure!(
            p.offset >= data_start || p.filesz == 0,
            "segment before the data area"
        );
        let moved = p.offset.saturating_sub(data_start) + new_start;
        entry[8..16].copy_from_slice(&moved.to_le_bytes());
        out.write_all(&entry)?;
    }
    let mut f = File::open(src)?;
    f.seek(SeekFrom::Start(data_start))?;
    std::io::copy(&mut f, &mut out)?;
    out.flush()?;
    Ok(())
}

/// Which LiME-family file to write.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LimeKind {
    /// LiME: every range, verbatim.
    Lime,
    /// AVML version 1 (uncompressed): like LiME, but all-zero ranges of ≤ 16 MiB are omitted.
    AvmlV1,
    /// AVML version 2: 16 MiB blocks, snappy frames, all-zero blocks omitted.
    AvmlV2,
}

const AVML_BLOCK: u64 = 0x1000 * 0x1000;

fn range_header(magic: &[u8; 4], version: u32, start: u64, end_exclusive: u64) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[..4].copy_from_slice(magic);
    h[4..8].copy_from_slice(&version.to_le_bytes());
    h[8..16].copy_from_slice(&start.to_le_bytes());
    h[16..24].copy_from_slice(&(end_exclusive - 1).to_le_bytes());
    h
}

/// Convert an ELF core's PT_LOADs into a LiME or AVML file.
pub fn elf_to_lime(src: &Path, dst: &Path, kind: LimeKind) -> Result<()> {
    let (_, mut phdrs) = read_phdrs(src)?;
    phdrs.retain(|p| p.p_type == 1 && p.filesz > 0);
    phdrs.sort_by_key(|p| p.paddr);
    let mut input = File::open(src)?;
    let mut out = BufWriter::new(File::create(dst)?);
    for p in phdrs {
        ensure!(p.filesz == p.memsz, "PT_LOAD with p_filesz != p_memsz");
        let blocks: Vec<(u64, u64)> = match kind {
            LimeKind::AvmlV2 => (0..p.filesz.div_ceil(AVML_BLOCK))
                .map(|i| (i * AVML_BLOCK, ((i + 1) * AVML_BLOCK).min(p.filesz)))
                .collect(),
            _ => vec![(0, p.filesz)],
        };
        for (from, to) in blocks {
            let mut data = vec![0u8; (to - from) as usize];
            input.seek(SeekFrom::Start(p.offset + from))?;
            input.read_exact(&mut data)?;
            let (start, end) = (p.paddr + from, p.paddr + to);
            let zero = data.iter().all(|&b| b == 0);
            match kind {
                LimeKind::Lime => {
                    out.write_all(&range_header(b"EMiL", 1, start, end))?;
                    out.write_all(&data)?;
                }
                LimeKind::AvmlV1 => {
                    if zero && data.len() as u64 <= AVML_BLOCK {
                        continue;
                    }
                    out.write_all(&range_header(b"EMiL", 1, start, end))?;
                    out.write_all(&data)?;
                }
                LimeKind::AvmlV2 => {
                    if zero {
                        continue;
                    }
                    out.write_all(&range_header(b"AVML", 2, start, end))?;
                    let mut framed = Vec::new();
                    {
                        let mut enc = snap::write::FrameEncoder::new(&mut framed);
                        enc.write_all(&data)?;
                        enc.flush()?;
                    }
                    out.write_all(&framed)?;
                    out.write_all(&(framed.len() as u64).to_le_bytes())?;
                }
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// How to rewrite a kdump file.
#[derive(Clone, Copy, Debug)]
pub struct KdumpRewrite {
    /// Re-encode every page with snappy (raw if snappy does not shrink it).
    pub snappy: bool,
    /// Drop all-zero pages from the 2nd bitmap (and their descriptors), as makedumpfile's
    /// dump levels do.
    pub exclude_zero_pages: bool,
    /// The sub header's dump level to record.
    pub dump_level: u32,
}

/// Rewrite a standard (non-flattened) kdump file's pages: re-encode and/or exclude zero
/// pages, keeping headers, the 1st bitmap and notes.
pub fn kdump_rewrite(src: &Path, dst: &Path, how: KdumpRewrite) -> Result<()> {
    let data = std::fs::read(src)?;
    ensure!(
        data.starts_with(b"KDUMP   "),
        "{} is not a standard kdump file",
        src.display()
    );
    let block = u32_at(&data, 428) as usize;
    let sub_hdr_size = u32_at(&data, 432) as usize;
    let bitmap_blocks = u32_at(&data, 436) as usize;
    let max_mapnr = u64_at(&data, block + 96) as usize;
    let bitmap2 = (1 + sub_hdr_size) * block + bitmap_blocks * block / 2;
    let bit = |b: &[u8], pfn: usize| b[bitmap2 + pfn / 8] >> (pfn % 8) & 1 == 1;
    let dumped: Vec<usize> = (0..max_mapnr).filter(|&p| bit(&data, p)).collect();
    let desc_at = (1 + sub_hdr_size + bitmap_blocks) * block;
    let mut out = data[..desc_at].to_vec();
    if how.snappy {
        out[424..428].copy_from_slice(&4u32.to_le_bytes()); // status: DUMP_DH_COMPRESSED_SNAPPY
    }
    out[block + 8..block + 12].copy_from_slice(&how.dump_level.to_le_bytes());
    let mut descs = Vec::new();
    let mut pages = Vec::new();
    let mut page = vec![0u8; block];
    let mut enc = snap::raw::Encoder::new();
    let (mut snappy_pages, mut excluded) = (0, 0);
    for (i, &pfn) in dumped.iter().enumerate() {
        let d = &data[desc_at + 24 * i..desc_at + 24 * (i + 1)];
        let (off, size, flags) = (u64_at(d, 0) as usize, u32_at(d, 8) as usize, u32_at(d, 12));
        let stored = &data[off..off + size];
        match flags {
            0 => page.copy_from_slice(stored),
            1 => {
                let mut z = flate2::read::ZlibDecoder::new(stored);
                z.read_exact(&mut page)?;
            }
            f => bail!("page {i}: flags {f:#x}, expected zlib or raw"),
        }
        if how.exclude_zero_pages && page.iter().all(|&b| b == 0) {
            out[bitmap2 + pfn / 8] &= !(1 << (pfn % 8));
            excluded += 1;
            continue;
        }
        let (flags, body): (u32, Vec<u8>) = if how.snappy {
            let compressed = enc.compress_vec(&page)?;
            if compressed.len() < block {
                snappy_pages += 1;
                (4, compressed)
            } else {
                (0, page.clone())
            }
        } else {
            (flags, stored.to_vec())
        };
        descs.push((pages.len() as u64, body.len() as u32, flags));
        pages.extend_from_slice(&body);
    }
    ensure!(
        !how.snappy || snappy_pages > 0,
        "no page was snappy-compressed"
    );
    ensure!(
        !how.exclude_zero_pages || excluded > 0,
        "no zero page to exclude"
    );
    let data_at = (desc_at + 24 * descs.len()) as u64;
    for (off, size, flags) in descs {
        out.extend_from_slice(&(data_at + off).to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
    }
    out.extend_from_slice(&pages);
    std::fs::write(dst, out)?;
    Ok(())
}
