//! A sparse 16 GiB raw image is served by mapping, not loading: the process's resident set
//! grows only by the pages actually read (measured in /proc/self/statm, not by timing).

use std::fs::File;
use std::os::unix::fs::FileExt;

mod support;

use support::ScratchDir;

use emulator::image::{self, Format};
use emulator::mem::{MemError, PhysAddr, PhysMem, PhysRange};

const SIZE: u64 = 16 << 30;

/// Resident set size of this process in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("statm resident field");
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    pages * page
}

/// Marker bytes written into the sparse file: (offset, bytes).
fn markers() -> Vec<(u64, Vec<u8>)> {
    vec![
        (0, b"first bytes of the image".to_vec()),
        (8 << 30, b"straddles 8 GiB".to_vec()), // written at 8 GiB - 3, see below
        (SIZE - 4096, vec![0xa5; 4096]),
    ]
}

#[test]
fn a_sparse_16_gib_raw_image_is_served_with_a_small_resident_set() {
    let dir = ScratchDir::new("sparse-16g");
    let path = dir.path().join("image.raw");
    let file = File::create(&path).unwrap();
    file.set_len(SIZE).unwrap();
    let mut placed = Vec::new();
    for (i, (off, bytes)) in markers().into_iter().enumerate() {
        let off = if i == 1 { off - 3 } else { off };
        file.write_all_at(&bytes, off).unwrap();
        placed.push((off, bytes));
    }
    drop(file);

    let before = rss();
    let img = image::open(&path, None, None).unwrap();
    assert_eq!(img.ranges(), vec![PhysRange::new(0, SIZE)]);
    let after_open = rss();

    for (off, bytes) in &placed {
        let mut buf = vec![0u8; bytes.len()];
        img.read_phys(PhysAddr(*off), &mut buf).unwrap();
        assert_eq!(&buf, bytes, "marker at {off:#x}");
    }
    // 4000 scattered small reads across all 16 GiB: zeros away from the markers.
    let mut state = 0x1234_5678_9abc_def1u64;
    let mut buf = [0u8; 64];
    for _ in 0..4000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let addr = (state % (SIZE - (1 << 20))) & !63;
        img.read_phys(PhysAddr(addr), &mut buf).unwrap();
        let near_marker = placed
            .iter()
            .any(|(o, b)| addr < o + b.len() as u64 && *o < addr + 64);
        if !near_marker {
            assert_eq!(buf, [0u8; 64], "hole at {addr:#x}");
        }
    }
    let mut tail = [0u8; 8];
    match img.read_phys(PhysAddr(SIZE - 4), &mut tail) {
        Err(MemError::Unmapped { addr }) => assert_eq!(addr, PhysAddr(SIZE)),
        other => panic!("read across the end: {other:?}"),
    }
    let after_reads = rss();

    // Each scattered read touches one 4 KiB page of the map: at most ~16 MiB. Loading the
    // file would cost 16 GiB.
    let grown = after_reads.saturating_sub(before);
    eprintln!(
        "RSS: before {} MiB, after open +{} KiB, after reads +{} MiB",
        before >> 20,
        after_open.saturating_sub(before) >> 10,
        grown >> 20
    );
    assert!(
        after_open.saturating_sub(before) < 4 << 20,
        "open grew RSS by {} bytes",
        after_open - before
    );
    assert!(
        grown < 64 << 20,
        "RSS grew by {} MiB serving a sparse 16 GiB image",
        grown >> 20
    );

    // The same file with a base address moves every byte.
    let based = image::open(&path, Some(Format::Raw), Some(PhysAddr(1 << 32))).unwrap();
    assert_eq!(
        based.ranges(),
        vec![PhysRange::new(1 << 32, (1 << 32) + SIZE)]
    );
    let mut first = vec![0u8; placed[0].1.len()];
    based.read_phys(PhysAddr(1 << 32), &mut first).unwrap();
    assert_eq!(first, placed[0].1);
    assert!(matches!(
        based.read_phys(PhysAddr(0), &mut first),
        Err(MemError::Unmapped { addr: PhysAddr(0) })
    ));
}
