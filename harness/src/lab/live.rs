//! `lab boot|truth|panic|stop`: one guest left running on a shared RAM file, for live serving.
//!
//! Invariant: a live guest is described by `live/<name>/guest.json`; commands after `boot`
//! reattach through its QMP and control sockets and never start a second QEMU for the same name.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::lab::cache::Cache;
use crate::lab::error::io;
use crate::lab::qemu::{Guest, GuestSpec};
use crate::lab::record::guest_spec;
use crate::lab::{build, recipe, Error, Result};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LiveGuest {
    pub name: String,
    pub release: String,
    pub pid: u32,
    pub ram: PathBuf,
    pub memory_mib: u32,
    pub qmp: PathBuf,
    pub ctl: PathBuf,
    pub console: PathBuf,
    pub run_dir: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub append: String,
    pub smp: u32,
}

impl LiveGuest {
    fn spec(&self) -> GuestSpec {
        GuestSpec {
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            append: self.append.clone(),
            memory_mib: self.memory_mib,
            smp: self.smp,
            ram_path: self.ram.clone(),
            run_dir: self.run_dir.clone(),
        }
    }
    pub fn alive(&self) -> bool {
        PathBuf::from(format!("/proc/{}", self.pid)).exists()
    }
    /// The command that serves this guest's memory over NetTLP.
    pub fn serve_command(&self) -> String {
        format!("emulator serve --image {} --format live", self.ram.display())
    }
}

fn state_path(cache: &Cache, name: &str) -> PathBuf {
    cache.live(name).join("guest.json")
}

pub fn load(cache: &Cache, name: &str) -> Result<LiveGuest> {
    let p = state_path(cache, name);
    let text = std::fs::read_to_string(&p)
        .map_err(|_| Error::Invalid { path: p.clone(), what: format!("no live guest; run `harness lab boot {name}`") })?;
    let g: LiveGuest = serde_json::from_str(&text).map_err(|e| Error::Invalid { path: p.clone(), what: e.to_string() })?;
    if !g.alive() {
        return Err(Error::Invalid { path: p, what: format!("QEMU (pid {}) is gone; run `harness lab boot {name}`", g.pid) });
    }
    Ok(g)
}

/// Boots `name` and leaves it running with the workload started and the agent waiting.
pub fn boot(cache: &Cache, name: &str, jobs: u32) -> Result<LiveGuest> {
    let r = recipe::find(name).ok_or_else(|| Error::UnknownEntry(name.into()))?;
    if let Ok(g) = load(cache, name) {
        return Err(Error::Invalid {
            path: state_path(cache, name),
            what: format!("already running (pid {}); `harness lab stop {name}` first", g.pid),
        });
    }
    crate::lab::setup::ensure_packages()?;
    let art = build::kernel(cache, &crate::lab::apt::Apt::open(cache)?, &r, jobs)?;
    let (initrd, _modules) = build::guest_initramfs(cache, &crate::lab::apt::Apt::open(cache)?, &r)?;
    let run_dir = cache.live(name);
    std::fs::create_dir_all(&run_dir).map_err(io(&run_dir))?;
    let shm = std::path::Path::new("/dev/shm");
    let ram = if shm.is_dir() { shm.join(format!("netdma-{name}.ram")) } else { run_dir.join("guest.ram") };
    let spec = guest_spec(&r, &art, &initrd.path, ram, run_dir.clone());
    let mut g = Guest::launch(spec.clone(), true)?;
    let release = g.control().wait_ready(Duration::from_secs(600))?;
    g.control().section("truth running", "truth", Duration::from_secs(300)).map(|t| {
        let p = run_dir.join("boot-truth.jsonl");
        let _ = std::fs::write(p, t);
    })?;
    let live = LiveGuest {
        name: name.into(),
        release,
        pid: g.pid().unwrap_or(0),
        ram: spec.ram_path.clone(),
        memory_mib: spec.memory_mib,
        qmp: spec.qmp_path(),
        ctl: spec.ctl_path(),
        console: spec.console_path(),
        run_dir: run_dir.clone(),
        kernel: spec.kernel.clone(),
        initrd: spec.initrd.clone(),
        append: spec.append.clone(),
        smp: spec.smp,
    };
    let p = state_path(cache, name);
    let text = serde_json::to_string_pretty(&live).map_err(|e| Error::Invalid { path: p.clone(), what: e.to_string() })?;
    std::fs::write(&p, text).map_err(io(&p))?;
    g.detach();
    Ok(live)
}

/// Records the live guest's truth now; returns the file written.
pub fn truth(cache: &Cache, name: &str) -> Result<PathBuf> {
    let live = load(cache, name)?;
    let mut g = Guest::attach(live.spec())?;
    let body = g.control().section("truth running", "truth", Duration::from_secs(300))?;
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let p = live.run_dir.join(format!("truth-{secs}.jsonl"));
    std::fs::write(&p, body).map_err(io(&p))?;
    g.detach();
    Ok(p)
}

/// Panics the live guest (sysrq c) after recording its last truth; returns that truth's path.
pub fn panic(cache: &Cache, name: &str) -> Result<PathBuf> {
    let live = load(cache, name)?;
    let mut g = Guest::attach(live.spec())?;
    let body = g.control().section("panic", "truth", Duration::from_secs(300))?;
    let p = live.run_dir.join("panicked-truth.jsonl");
    std::fs::write(&p, body).map_err(io(&p))?;
    g.wait_panic(Duration::from_secs(300))?;
    g.detach();
    Ok(p)
}

/// Quits QEMU and removes the RAM file.
pub fn stop(cache: &Cache, name: &str) -> Result<()> {
    let live = load(cache, name)?;
    let mut g = Guest::attach(live.spec())?;
    let _ = g.qmp().execute("quit", serde_json::json!({}));
    g.detach();
    for _ in 0..100 {
        if !live.alive() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_file(&live.ram);
    let _ = std::fs::remove_file(state_path(cache, name));
    Ok(())
}
