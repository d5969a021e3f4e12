//! The live format against running and paused real QEMU guests: the RAM file is served while
//! the guest runs (every read fresh), and the x86 `pc`/`q35` RAM split puts the file's bytes
//! where the guest sees them (checked with patterns loaded by QEMU and with `pmemsave`).

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use emulator::image::{self, Format, Machine};
use emulator::mem::{MemError, PhysAddr, PhysMem, PhysRange};
use rstest::rstest;
use serde_json::json;
use support::qemu::{Guest, GuestConfig};
use support::{pattern, ScratchDir};

const GIB: u64 = 1 << 30;

fn work_dir(name: &str) -> ScratchDir {
    ScratchDir::new(&format!("live-{name}"))
}

/// A boot sector that counts forever: `cli; mov ax,0x8000; mov ds,ax; l: inc dword [0]; jmp l`,
/// i.e. increments the 32-bit word at physical 0x80000.
fn counter_disk(dir: &std::path::Path) -> PathBuf {
    let mut disk = vec![0u8; 1 << 20];
    let code = [
        0xfa, 0xb8, 0x00, 0x80, 0x8e, 0xd8, 0x66, 0xff, 0x06, 0x00, 0x00, 0xeb, 0xf9,
    ];
    disk[..code.len()].copy_from_slice(&code);
    disk[510] = 0x55;
    disk[511] = 0xaa;
    let path = dir.join("counter.img");
    std::fs::write(&path, disk).unwrap();
    path
}

const COUNTER: u64 = 0x8_0000;

fn counter(img: &dyn PhysMem) -> u32 {
    let mut b = [0u8; 4];
    img.read_phys(PhysAddr(COUNTER), &mut b).unwrap();
    u32::from_le_bytes(b)
}

/// Poll until the counter differs from `from` (the guest is running), or fail.
fn wait_for_change(img: &dyn PhysMem, from: u32, what: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = counter(img);
        if now != from {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the counter at {COUNTER:#x} stayed {from} for 120 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_running_guest_is_served_fresh_from_its_ram_file() {
    let scratch = work_dir("running");
    let dir = scratch.path();
    let ram = dir.join("ram.live");
    let pat = pattern(42, 1 << 20);
    std::fs::write(dir.join("pattern.bin"), &pat).unwrap();
    let mut cfg = GuestConfig::new("pc", 128);
    cfg.ram_file = Some(ram.clone());
    cfg.loaders.push((dir.join("pattern.bin"), 0x20_0000));
    cfg.boot_disk = Some(counter_disk(dir));
    cfg.paused = false;
    let mut guest = Guest::start(&cfg, dir).unwrap();

    let img = image::open(&ram, Some(Format::Live(Machine::Pc)), None).unwrap();
    assert_eq!(img.ranges(), vec![PhysRange::new(0, 128 << 20)]);
    // The BIOS boots the counter; the same image object sees it move.
    let c0 = counter(&*img);
    let c1 = wait_for_change(&*img, c0, "booting");
    let _ = wait_for_change(&*img, c1, "running");

    // Paused: the counter holds still, and the whole RAM above 1 MiB equals pmemsave.
    guest.qmp.execute("stop", json!({})).unwrap();
    let held = counter(&*img);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        counter(&*img),
        held,
        "counter moved while the guest was stopped"
    );
    let saved = dir.join("pmem.raw");
    guest
        .pmemsave(0x10_0000, (128 << 20) - 0x10_0000, &saved)
        .unwrap();
    let truth = std::fs::read(&saved).unwrap();
    let mut mine = vec![0u8; truth.len()];
    img.read_phys(PhysAddr(0x10_0000), &mut mine).unwrap();
    assert!(
        mine == truth,
        "live view of a stopped guest differs from pmemsave"
    );
    let mut loaded = vec![0u8; pat.len()];
    img.read_phys(PhysAddr(0x20_0000), &mut loaded).unwrap();
    assert!(loaded == pat, "loader pattern not at 0x200000");

    // Running again: fresh bytes once more.
    guest.qmp.execute("cont", json!({})).unwrap();
    let _ = wait_for_change(&*img, held, "resumed");
    guest.quit().unwrap();
}

/// Guests whose RAM does or does not fit below the PCI hole, on both machine types.
#[rstest]
#[case::pc_4g_splits_at_3g("pc", Machine::Pc, 4 * GIB, 3 * GIB)]
#[case::pc_3_25g_stays_low("pc", Machine::Pc, 3 * GIB + GIB / 4, 3 * GIB + GIB / 4)]
#[case::q35_3g_splits_at_2g("q35", Machine::Q35, 3 * GIB, 2 * GIB)]
#[case::q35_2_5g_stays_low("q35", Machine::Q35, 2 * GIB + GIB / 2, 2 * GIB + GIB / 2)]
fn the_ram_split_matches_qemus(
    #[case] qemu_machine: &'static str,
    #[case] machine: Machine,
    #[case] ram: u64,
    #[case] below: u64,
) {
    let scratch = work_dir(&format!("{qemu_machine}-{}", ram >> 20));
    let dir = scratch.path();
    let above = ram - below;
    const N: usize = 8192;
    // Patterns at the last bytes below the split, and the first and last bytes above 4 GiB.
    let mut places = vec![(1u64, below - N as u64)];
    if above > 0 {
        places.push((2, 4 * GIB));
        places.push((3, 4 * GIB + above - N as u64));
    }
    let mut cfg = GuestConfig::new(qemu_machine, ram >> 20);
    let ram_file = dir.join("ram.live");
    cfg.ram_file = Some(ram_file.clone());
    for &(seed, addr) in &places {
        let f = dir.join(format!("p{seed}.bin"));
        std::fs::write(&f, pattern(seed, N)).unwrap();
        cfg.loaders.push((f, addr));
    }
    let mut guest = Guest::start(&cfg, dir).unwrap();

    let img = image::open(&ram_file, Some(Format::Live(machine)), None).unwrap();
    let mut expected = vec![PhysRange::new(0, below)];
    if above > 0 {
        expected.push(PhysRange::new(4 * GIB, 4 * GIB + above));
    }
    assert_eq!(img.ranges(), expected);
    for &(seed, addr) in &places {
        let mut buf = vec![0u8; N];
        img.read_phys(PhysAddr(addr), &mut buf).unwrap();
        assert!(buf == pattern(seed, N), "pattern {seed} not at {addr:#x}");
        let saved = dir.join(format!("pmem-{seed}.raw"));
        guest.pmemsave(addr, N as u64, &saved).unwrap();
        assert!(
            buf == std::fs::read(&saved).unwrap(),
            "live view differs from pmemsave at {addr:#x}"
        );
    }
    // The first byte past low RAM is unmapped, and so is the gap below 4 GiB.
    let mut two = [0u8; 2];
    assert!(
        matches!(img.read_phys(PhysAddr(below - 1), &mut two), Err(MemError::Unmapped { addr }) if addr == PhysAddr(below))
    );
    if above > 0 {
        assert!(
            matches!(img.read_phys(PhysAddr(4 * GIB - 1), &mut two), Err(MemError::Unmapped { addr }) if addr == PhysAddr(4 * GIB - 1))
        );
        // Read with the other machine's layout, the high pattern is not at 4 GiB.
        let other = if machine == Machine::Pc {
            Machine::Q35
        } else {
            Machine::Pc
        };
        let wrong = image::open(&ram_file, Some(Format::Live(other)), None).unwrap();
        let mut buf = vec![0u8; N];
        let found = wrong.read_phys(PhysAddr(4 * GIB), &mut buf).is_ok() && buf == pattern(2, N);
        assert!(
            !found,
            "the {other} layout should not place this {qemu_machine} guest's RAM the same way"
        );
    }
    guest.quit().unwrap();
}
