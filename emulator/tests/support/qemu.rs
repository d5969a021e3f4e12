//! Starting real QEMU guests for tests: `qemu-system-x86_64` (TCG), no default devices, a QMP
//! socket, RAM optionally in a shared file (`memory-backend-file,share=on`), files loaded into
//! guest RAM with `-device loader`, and an optional raw boot disk.
//!
//! The guest is killed when the `Guest` is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use super::qmp::Qmp;

/// The QEMU binary; a test FAILS (never skips) if it is missing.
pub fn qemu_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("qemu-system-x86_64");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("qemu-system-x86_64 is not installed: run `bash scripts/setup`");
}

/// A tool from a Debian package listed in scripts/apt-packages.txt; FAILS if missing.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in
        std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
    {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{name} is not installed: run `bash scripts/setup`");
}

/// How to start a guest.
#[derive(Clone, Debug)]
pub struct GuestConfig {
    /// `pc` or `q35`.
    pub machine: &'static str,
    pub mem_mib: u64,
    /// Put guest RAM in this file (created by QEMU, shared), the "live" image.
    pub ram_file: Option<PathBuf>,
    /// Files loaded into guest RAM at these physical addresses before the CPU starts.
    pub loaders: Vec<(PathBuf, u64)>,
    /// A raw disk image attached as the first IDE disk (the BIOS boots from it).
    pub boot_disk: Option<PathBuf>,
    /// Start with the CPU stopped (`-S`).
    pub paused: bool,
}

impl GuestConfig {
    pub fn new(machine: &'static str, mem_mib: u64) -> Self {
        GuestConfig {
            machine,
            mem_mib,
            ram_file: None,
            loaders: Vec::new(),
            boot_disk: None,
            paused: true,
        }
    }
}

/// A running QEMU process and its QMP session.
pub struct Guest {
    child: Child,
    pub qmp: Qmp,
    log: PathBuf,
}

impl Guest {
    /// Start QEMU with `cfg`, keeping its socket and log in `dir`.
    pub fn start(cfg: &GuestConfig, dir: &Path) -> Result<Guest> {
        std::fs::create_dir_all(dir)?;
        let sock = dir.join(format!("qmp-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&sock);
        let log = dir.join(format!("qemu-{}.log", std::process::id()));
        let mut cmd = Command::new(qemu_binary());
        let mut machine = cfg.machine.to_string();
        if let Some(ram) = &cfg.ram_file {
            let _ = std::fs::remove_file(ram);
            cmd.args([
                "-object",
                &format!(
                    "memory-backend-file,id=ram,size={}M,mem-path={},share=on",
                    cfg.mem_mib,
                    ram.display()
                ),
            ]);
            machine.push_str(",memory-backend=ram");
        }
        cmd.args(["-machine", &machine, "-m", &format!("{}M", cfg.mem_mib)]);
        cmd.args(["-nodefaults", "-display", "none", "-accel", "tcg"]);
        cmd.args([
            "-qmp",
            &format!("unix:{},server=on,wait=off", sock.display()),
        ]);
        if cfg.paused {
            cmd.arg("-S");
        }
        for (file, addr) in &cfg.loaders {
            cmd.args([
                "-device",
                &format!("loader,file={},addr={addr:#x},force-raw=on", file.display()),
            ]);
        }
        if let Some(disk) = &cfg.boot_disk {
            cmd.args([
                "-drive",
                &format!("file={},format=raw,if=ide,index=0", disk.display()),
            ]);
        }
        let logf = std::fs::File::create(&log)?;
        cmd.stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf);
        let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
        match Qmp::connect(&sock, Duration::from_secs(30)) {
            Ok(qmp) => Ok(Guest { child, qmp, log }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                Err(e.context(format!("QEMU did not come up; its log:\n{text}")))
            }
        }
    }

    /// `pmemsave`: write `len` bytes of guest-physical memory from `addr` to `path`.
    pub fn pmemsave(&mut self, addr: u64, len: u64, path: &Path) -> Result<()> {
        self.qmp.execute(
            "pmemsave",
            json!({ "val": addr, "size": len, "filename": path.display().to_string() }),
        )?;
        Ok(())
    }

    /// Ask QEMU to quit and wait for it.
    pub fn quit(mut self) -> Result<()> {
        let _ = self.qmp.execute("quit", json!({}));
        for _ in 0..200 {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
