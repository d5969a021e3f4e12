//! One real guest, dumped in every format, cached on disk for all test processes.
//!
//! A paused `-machine pc -m 128` QEMU guest (RAM in a shared file) gets three pseudo-random
//! patterns loaded with `-device loader`. Then, through QMP:
//! - `dump-guest-memory` ELF and kdump-zlib (QEMU 7.2 writes kdump in the flattened form),
//! - `pmemsave` of `[0, 128 MiB)`, of the BIOS ROM `[0xfffc0000, 4 GiB)` and of a window at
//!   1 MiB: the truth every format is compared with, and the raw (and raw `--base`) images,
//! - the RAM file itself after QEMU quits (the live image's bytes).
//!
//! Derived with real tools: `makedumpfile -R` (standard kdump-zlib from the flattened one),
//! `makedumpfile -l` and `makedumpfile -F -l -d 1` on the (re-laid-out) ELF core (kdump-lzo,
//! standard and flattened), `makedumpfile -F -E` (flattened ELF) and `makedumpfile -E -d 1`
//! (ELF with zero pages left out as `p_memsz > p_filesz`). Derived with test converters (no real producer here): LiME, AVML
//! v2 and v1 from the ELF core; kdump-snappy, and kdump-zlib with zero pages excluded at dump
//! levels 1 and 31, from the standard kdump-zlib (see `convert`). Plus a filtered ELF core
//! (`begin`/`length`), QEMU's own partial dump.
//!
//! Files live in `$CARGO_TARGET_TMPDIR/image-dumps-<key>`; the key changes with this
//! generator's version and the QEMU/makedumpfile versions. A file lock makes concurrent test
//! processes wait for one generator.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use super::convert::{self, LimeKind};
use super::pattern;
use super::qemu::{self, Guest, GuestConfig};

/// Bump when the generated set changes.
const GENERATOR: &str = "v3";

pub const RAM: u64 = 128 << 20;
/// (seed, guest-physical address, length) of each loaded pattern. The first starts unaligned
/// and spans many pages, the second ends exactly at the end of RAM, the third sits in the
/// first 640 KiB.
pub const PATTERNS: [(u64, u64, usize); 3] = [
    (1, 0x1f_ff10, 0x30_0123),
    (2, RAM - 0x10_0000, 0x10_0000),
    (3, 0x9_0100, 0x2345),
];
/// The BIOS ROM at the top of the 32-bit space (pc.bios, 256 KiB).
pub const BIOS: (u64, u64) = (0xfffc_0000, 0x4_0000);
/// The window dumped with `dump-guest-memory`'s begin/length filter.
pub const FILTERED: (u64, u64) = (0x1f_0000, 0x40_0000);
/// The window saved as the raw image with a base address.
pub const RAW_BASE: (u64, u64) = (0x10_0000, 0x100_0000);

/// The generated files.
pub struct DumpSet {
    pub dir: PathBuf,
}

impl DumpSet {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The dump set, generated on first use (by whichever test process gets the lock first).
pub fn dump_set() -> &'static DumpSet {
    static SET: OnceLock<DumpSet> = OnceLock::new();
    SET.get_or_init(|| match generate_cached() {
        Ok(set) => set,
        Err(e) => panic!("could not produce the QEMU test dumps: {e:#}"),
    })
}

fn version_of(tool: &Path, arg: &str) -> String {
    Command::new(tool)
        .arg(arg)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_default()
}

fn generate_cached() -> Result<DumpSet> {
    let qemu = qemu::qemu_binary();
    let makedumpfile = qemu::tool("makedumpfile");
    let key_text = format!(
        "{GENERATOR}|{}|{}",
        version_of(&qemu, "--version"),
        version_of(&makedumpfile, "-v")
    );
    let key = key_text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&root)?;
    let dir = root.join(format!("image-dumps-{key:016x}"));
    let done = dir.join("complete");
    let lock = std::fs::File::create(root.join("image-dumps.lock"))?;
    // SAFETY: flock on a file descriptor we own; released when `lock` is dropped.
    let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    ensure!(rc == 0, "flock failed: {}", std::io::Error::last_os_error());
    if !done.exists() {
        let tmp = root.join(format!("image-dumps-{key:016x}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        generate(&tmp, &makedumpfile)
            .with_context(|| format!("generating dumps in {}", tmp.display()))?;
        std::fs::write(tmp.join("key.txt"), &key_text)?;
        std::fs::write(tmp.join("complete"), b"")?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir)?;
        // Sets made for other generator or tool versions (and abandoned attempts) go.
        for entry in std::fs::read_dir(&root)?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with("image-dumps-") && entry.path() != dir && entry.path().is_dir() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    drop(lock);
    Ok(DumpSet { dir })
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn generate(dir: &Path, makedumpfile: &Path) -> Result<()> {
    let mut cfg = GuestConfig::new("pc", RAM >> 20);
    cfg.ram_file = Some(dir.join("ram.live"));
    for (i, &(seed, addr, len)) in PATTERNS.iter().enumerate() {
        let file = dir.join(format!("pattern{i}.bin"));
        std::fs::write(&file, pattern(seed, len))?;
        cfg.loaders.push((file, addr));
    }
    let mut guest = Guest::start(&cfg, dir)?;
    let timeout = Duration::from_secs(300);
    guest
        .qmp
        .dump_guest_memory(&dir.join("guest.elf"), "elf", timeout)?;
    // QEMU's kdump writer failed once in a fresh-clone CI run while other test processes were
    // busy ("status": "failed", nothing written); it is fixture generation, so ask once more and
    // say so, rather than fail every test that needs the set.
    let kdump = dir.join("kdump-zlib.flat");
    if let Err(first) = guest.qmp.dump_guest_memory(&kdump, "kdump-zlib", timeout) {
        eprintln!("dump-guest-memory kdump-zlib failed ({first:#}); trying once more");
        guest.qmp.dump_guest_memory(&kdump, "kdump-zlib", timeout)?;
    }
    guest.pmemsave(0, RAM, &dir.join("truth-low.raw"))?;
    guest.pmemsave(BIOS.0, BIOS.1, &dir.join("truth-bios.raw"))?;
    guest.pmemsave(RAW_BASE.0, RAW_BASE.1, &dir.join("raw-base.raw"))?;
    // QEMU's begin/length filter: a core holding only FILTERED.
    guest.qmp.execute(
        "dump-guest-memory",
        serde_json::json!({ "paging": false, "protocol": format!("file:{}", dir.join("guest-filtered.elf").display()),
                            "begin": FILTERED.0, "length": FILTERED.1 }),
    )?;
    guest.quit()?;

    let file_in = |p: &Path| -> Result<Stdio> { Ok(Stdio::from(std::fs::File::open(p)?)) };
    let file_out = |p: &Path| -> Result<Stdio> { Ok(Stdio::from(std::fs::File::create(p)?)) };
    run(Command::new(makedumpfile)
        .arg("-R")
        .arg(dir.join("kdump-zlib"))
        .stdin(file_in(&dir.join("kdump-zlib.flat"))?))?;

    let md_elf = dir.join("guest-makedumpfile.elf");
    convert::relayout_elf(&dir.join("guest.elf"), &md_elf)?;
    run(Command::new(makedumpfile)
        .args(["-l", "-d", "0"])
        .arg(&md_elf)
        .arg(dir.join("kdump-lzo")))?;
    run(Command::new(makedumpfile)
        .args(["-F", "-l", "-d", "1"])
        .arg(&md_elf)
        .stdout(file_out(&dir.join("kdump-lzo-d1.flat"))?))?;
    // ELF output: flattened, and with zero pages excluded (p_memsz > p_filesz).
    run(Command::new(makedumpfile)
        .args(["-F", "-E", "-d", "0"])
        .arg(&md_elf)
        .stdout(file_out(&dir.join("guest-elf.flat"))?))?;
    run(Command::new(makedumpfile)
        .args(["-E", "-d", "1"])
        .arg(&md_elf)
        .arg(dir.join("guest-d1.elf")))?;
    std::fs::remove_file(&md_elf)?;

    convert::elf_to_lime(
        &dir.join("guest.elf"),
        &dir.join("guest.lime"),
        LimeKind::Lime,
    )?;
    convert::elf_to_lime(
        &dir.join("guest.elf"),
        &dir.join("guest-v1.avml"),
        LimeKind::AvmlV1,
    )?;
    convert::elf_to_lime(
        &dir.join("guest.elf"),
        &dir.join("guest.avml"),
        LimeKind::AvmlV2,
    )?;
    let zlib = dir.join("kdump-zlib");
    let rewrite = |snappy, exclude_zero_pages, dump_level| convert::KdumpRewrite {
        snappy,
        exclude_zero_pages,
        dump_level,
    };
    convert::kdump_rewrite(&zlib, &dir.join("kdump-snappy"), rewrite(true, false, 1))?;
    convert::kdump_rewrite(&zlib, &dir.join("kdump-zlib-d1"), rewrite(false, true, 1))?;
    convert::kdump_rewrite(&zlib, &dir.join("kdump-zlib-d31"), rewrite(false, true, 31))?;
    Ok(())
}
