//! Image parsers on damaged input: real files from the QEMU guest (see `support::dumps`) with
//! header bytes mutated and the file truncated, in bounded loops. Errors are expected; panics
//! and hangs are bugs. An image that still opens is read (bounded) to exercise the reader too.

mod support;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use emulator::image::{self, Format, ImageError};
use emulator::mem::{PhysAddr, PhysMem, ReadOp};
use rstest::rstest;
use support::{Case, Rng, ScratchDir};

/// A writable copy of a case's file: complete for small files, and for large ones a sparse
/// file of the same length holding only the regions `keep` lists (headers), which is all a
/// parser reads at open.
fn work_copy(case: Case, keep: &[(u64, u64)]) -> (ScratchDir, PathBuf, u64) {
    let src = case.file();
    let len = std::fs::metadata(&src).unwrap().len();
    let dir = ScratchDir::new("robustness");
    let dst = dir.path().join(format!("{case:?}"));
    if len <= 64 << 20 {
        std::fs::copy(&src, &dst).unwrap();
        // Copies of read-only QEMU output must be writable here.
        let mut perm = std::fs::metadata(&dst).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perm.set_readonly(false);
        std::fs::set_permissions(&dst, perm).unwrap();
    } else {
        let mut input = File::open(&src).unwrap();
        let out = File::create(&dst).unwrap();
        out.set_len(len).unwrap();
        for &(at, n) in keep {
            let n = n.min(len.saturating_sub(at));
            let mut buf = vec![0u8; n as usize];
            input.seek(SeekFrom::Start(at)).unwrap();
            input.read_exact(&mut buf).unwrap();
            out.write_all_at(&buf, at).unwrap();
        }
    }
    (dir, dst, len)
}

/// Open with `format` and, if that works, read a bounded amount. Never panics unless the code
/// under test does.
fn exercise(path: &Path, format: Option<Format>, rng: &mut Rng) -> bool {
    let img = match image::open(path, format, None) {
        Ok(img) => img,
        Err(e) => {
            if let ImageError::Parse { source, .. } = &e {
                assert!(
                    e.to_string().contains("file offset 0x"),
                    "error without offset: {e}"
                );
                let _ = source.offset();
            }
            return false;
        }
    };
    let _ = img.describe();
    let ranges = img.ranges();
    let mut buf = vec![0u8; 8192];
    for r in ranges.iter().take(4) {
        let n = r.len().min(buf.len() as u64) as usize;
        let _ = img.read_phys(r.start, &mut buf[..n]);
        let _ = img.read_phys(PhysAddr(r.end.0.saturating_sub(16)), &mut buf[..16.min(n)]);
    }
    if let Some(r) = ranges.first() {
        let mut bufs = vec![vec![0u8; 100]; 16];
        let mut ops: Vec<ReadOp<'_>> = bufs
            .iter_mut()
            .map(|b| ReadOp {
                addr: PhysAddr(r.start.0 + rng.below(r.len().max(1))),
                buf: b,
            })
            .collect();
        let _ = img.read_batch(&mut ops);
    }
    true
}

/// Byte positions worth mutating in a case's file, and regions to keep in sparse copies.
fn targets(case: Case) -> (Vec<u64>, Vec<(u64, u64)>) {
    let src = case.file();
    let mut head = vec![0u8; 1 << 16];
    let n = File::open(&src).unwrap().read(&mut head).unwrap();
    head.truncate(n);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as u64;
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    match case {
        Case::Elf => {
            // ELF header, section headers, program headers; every 4th byte of the notes.
            let mut pos: Vec<u64> = (0..0x210).collect();
            pos.extend((0x210..0x480).step_by(4));
            (pos, vec![(0, 1 << 16)])
        }
        Case::KdumpZlib | Case::KdumpLzo | Case::KdumpSnappy => {
            let block = u32_at(&head, 428);
            let sub = u32_at(&head, 432);
            let bitmap_blocks = u32_at(&head, 436);
            let bitmap = (1 + sub) * block;
            let desc = bitmap + bitmap_blocks * block;
            // Signature and version, a sample of utsname, every field after it.
            let mut pos: Vec<u64> = (0..12).collect();
            pos.extend((12..402).step_by(16));
            pos.extend(402..464);
            pos.extend(block..block + 104);
            pos.extend(bitmap..bitmap + 16);
            pos.extend(bitmap + bitmap_blocks * block / 2..bitmap + bitmap_blocks * block / 2 + 16);
            pos.extend(desc..desc + 24 * 4);
            // Descriptors and data of a page holding a pattern (pfn 0x200 is in pattern 0).
            let data = std::fs::read(&src).unwrap();
            let rank = |pfn: u64| -> u64 {
                let b2 = (bitmap + bitmap_blocks * block / 2) as usize;
                (0..pfn)
                    .filter(|&p| data[b2 + (p / 8) as usize] >> (p % 8) & 1 == 1)
                    .count() as u64
            };
            let d = (desc + 24 * rank(0x200)) as usize;
            pos.extend(d as u64..d as u64 + 24);
            let off = u64_at(&data, d);
            pos.extend((off..off + 256).step_by(5));
            (pos, Vec::new())
        }
        Case::KdumpZlibFlat | Case::KdumpLzoFlat => {
            let data = std::fs::read(&src).unwrap();
            let mut pos: Vec<u64> = (0..32).collect();
            // The first segments' headers and data starts, and the end marker.
            let mut at = 4096usize;
            for i in 0.. {
                let off = i64::from_be_bytes(data[at..at + 8].try_into().unwrap());
                let size = i64::from_be_bytes(data[at + 8..at + 16].try_into().unwrap());
                if i < 6 || off == -1 {
                    pos.extend(at as u64..at as u64 + 24);
                }
                if off == -1 {
                    break;
                }
                at += 16 + size as usize;
            }
            pos.retain(|&p| p < data.len() as u64);
            (pos, Vec::new())
        }
        Case::Lime | Case::AvmlV1 => {
            // Walk the (intact) LiME headers.
            let mut f = File::open(&src).unwrap();
            let len = f.metadata().unwrap().len();
            let (mut pos, mut keep) = (Vec::new(), Vec::new());
            let mut at = 0u64;
            while at < len {
                let mut h = [0u8; 32];
                f.seek(SeekFrom::Start(at)).unwrap();
                f.read_exact(&mut h).unwrap();
                pos.extend(at..at + 32);
                keep.push((at, 4096));
                at += 32 + u64_at(&h, 16) - u64_at(&h, 8) + 1;
            }
            (pos, keep)
        }
        Case::Avml => {
            let mut pos: Vec<u64> = (0..32 + 64).collect();
            pos.extend((96..1 << 16).step_by(1009));
            (pos, Vec::new())
        }
        _ => (Vec::new(), Vec::new()),
    }
}

#[rstest]
#[case::elf(Case::Elf, Some(Format::Elf))]
#[case::kdump_zlib(Case::KdumpZlib, Some(Format::Kdump))]
#[case::kdump_zlib_flattened(Case::KdumpZlibFlat, Some(Format::Kdump))]
#[case::kdump_lzo(Case::KdumpLzo, Some(Format::Kdump))]
#[case::kdump_lzo_flattened(Case::KdumpLzoFlat, Some(Format::Kdump))]
#[case::kdump_snappy(Case::KdumpSnappy, Some(Format::Kdump))]
#[case::lime(Case::Lime, Some(Format::Lime))]
#[case::avml(Case::Avml, Some(Format::Avml))]
#[case::avml_v1(Case::AvmlV1, Some(Format::Avml))]
fn mutated_headers_give_errors_not_panics(#[case] case: Case, #[case] format: Option<Format>) {
    let (positions, keep) = targets(case);
    let (_dir, path, _) = work_copy(case, &keep);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut rng = Rng(0xbad ^ case as u64);
    assert!(
        exercise(&path, format, &mut rng),
        "{case:?}: the unmutated copy must open"
    );
    let (mut opened, mut failed) = (0, 0);
    for &pos in &positions {
        let mut orig = [0u8; 1];
        file.read_exact_at(&mut orig, pos).unwrap();
        for v in [0x00, 0xff, orig[0] ^ 0x01, orig[0] ^ 0x80] {
            if v == orig[0] {
                continue;
            }
            file.write_all_at(&[v], pos).unwrap();
            if exercise(&path, format, &mut rng) {
                opened += 1;
            } else {
                failed += 1;
            }
            // Auto-detection must cope too (sampled, to bound the run time).
            if pos % 4 == 0 {
                let _ = exercise(&path, None, &mut rng);
            }
        }
        file.write_all_at(&orig, pos).unwrap();
    }
    assert!(
        failed > 0,
        "{case:?}: no mutation was rejected ({opened} opened)"
    );
}

#[rstest]
#[case::elf(Case::Elf, Some(Format::Elf))]
#[case::kdump_zlib(Case::KdumpZlib, Some(Format::Kdump))]
#[case::kdump_zlib_flattened(Case::KdumpZlibFlat, Some(Format::Kdump))]
#[case::kdump_lzo(Case::KdumpLzo, Some(Format::Kdump))]
#[case::kdump_snappy(Case::KdumpSnappy, Some(Format::Kdump))]
#[case::lime(Case::Lime, Some(Format::Lime))]
#[case::avml(Case::Avml, Some(Format::Avml))]
fn truncated_files_give_errors_not_panics(#[case] case: Case, #[case] format: Option<Format>) {
    let (positions, keep) = targets(case);
    let (_dir, path, len) = work_copy(case, &keep);
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    let mut lengths: Vec<u64> = (0..=600).step_by(7).collect();
    lengths.extend((1..64).map(|i| len * i / 64));
    lengths.extend(
        positions
            .iter()
            .flat_map(|&p| [p, p + 1])
            .filter(|&p| p % 5 == 0),
    );
    lengths.extend([len - 1, len - 8, 4095, 4096, 4097, 4096 + 104]);
    lengths.retain(|&l| l < len);
    lengths.sort_unstable();
    lengths.dedup();
    let mut rng = Rng(0x7a11 ^ case as u64);
    let mut rejected = 0;
    // Longest first: each truncation only removes bytes.
    for &l in lengths.iter().rev() {
        file.set_len(l).unwrap();
        if !exercise(&path, format, &mut rng) {
            rejected += 1;
        }
    }
    assert!(
        rejected > lengths.len() / 2,
        "{case:?}: only {rejected} of {} truncations rejected",
        lengths.len()
    );
}

#[rstest]
#[case::raw(Format::Raw)]
#[case::elf(Format::Elf)]
#[case::kdump(Format::Kdump)]
#[case::lime(Format::Lime)]
#[case::avml(Format::Avml)]
fn noise_and_hostile_headers_give_errors_not_panics(#[case] format: Format) {
    let dir = ScratchDir::new("noise");
    let path = dir.path().join(format!("{format}"));
    let mut rng = Rng(0x4015e ^ format.to_string().len() as u64);
    let magic: &[u8] = match format {
        Format::Elf => b"\x7fELF\x02\x01\x01\0",
        Format::Kdump => b"KDUMP   ",
        Format::Lime => b"EMiL\x01\0\0\0",
        Format::Avml => b"AVML\x02\0\0\0",
        _ => b"",
    };
    for i in 0..400u64 {
        let len = [1, 7, 32, 64, 100, 464, 600, 4096, 4200, 9000, 70000][(i % 11) as usize];
        let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Half the files get the right magic, so parsers go past the first check; a quarter
        // get all-0xff or all-zero bodies (maximal counts, zero sizes).
        if i % 2 == 0 && data.len() >= magic.len() {
            data[..magic.len()].copy_from_slice(magic);
        }
        let body = magic.len().min(data.len());
        match i % 8 {
            1 => data[body..].fill(0xff),
            3 => data[body..].fill(0),
            _ => {}
        }
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&data)
            .unwrap();
        let _ = exercise(&path, Some(format), &mut rng);
        let _ = exercise(&path, None, &mut rng);
    }
}
