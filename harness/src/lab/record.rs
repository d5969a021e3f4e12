//! Recording one entry: boot, truth, running dump, truth, panic, panicked dump.
//!
//! ```text
//!   boot ── ready ── truth running ── stop, dump(s), cont ── kallsyms ── panic ─┬─ truth panicked
//!                                                                             └─ sysrq c ── "end Kernel panic" ── stop, dump(s)
//! ```
//! Invariant: each truth is the guest's own /proc view taken immediately before its dump (for the
//! panicked mode: the last view before the agent writes `c` to /proc/sysrq-trigger), its
//! `/proc/modules` right before the threads; the guest is paused (`stop`) for every dump, so all
//! formats of one mode hold the same memory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::kbuild::Layout;
use crate::lab::corpus::{Dump, DumpFormat, Entry, Flags, Mode, ModeRecord, QemuParams, Reference};
use crate::lab::error::io;
use crate::lab::qemu::{Guest, GuestSpec};
use crate::lab::recipe::{Recipe, MEMORY_MIB, SMP};
use crate::lab::truth;
use crate::lab::{Error, Result};

/// A kernel ready to boot, with its reference data.
#[derive(Clone, Debug)]
pub struct KernelArtifacts {
    /// Package name or `linux-source-6.1+<fragment>`.
    pub kernel: String,
    pub kernel_version: String,
    /// Hash of everything the kernel build depends on.
    pub kernel_hash: String,
    pub vmlinuz: PathBuf,
    pub system_map: PathBuf,
    pub config: PathBuf,
    pub layout: Layout,
}

const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
const TRUTH_TIMEOUT: Duration = Duration::from_secs(300);
const KALLSYMS_TIMEOUT: Duration = Duration::from_secs(900);
const PANIC_TIMEOUT: Duration = Duration::from_secs(300);

/// A RAM file name unique to this process and entry. RAM files of this entry left behind by a
/// recording process that no longer exists (killed mid-run) are removed.
pub fn ram_file(name: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
    let prefix = format!("netdma-{name}-");
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for f in rd.flatten() {
            let file_name = f.file_name();
            let n = file_name.to_string_lossy();
            let pid = n.strip_prefix(&prefix).and_then(|r| r.strip_suffix(".ram")).and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
    }
    dir.join(format!("netdma-{name}-{}.ram", std::process::id()))
}

pub fn guest_spec(recipe: &Recipe, art: &KernelArtifacts, initrd: &Path, ram_path: PathBuf, run_dir: PathBuf) -> GuestSpec {
    GuestSpec {
        kernel: art.vmlinuz.clone(),
        initrd: initrd.to_path_buf(),
        append: recipe.append(),
        memory_mib: MEMORY_MIB,
        smp: SMP,
        ram_path,
        run_dir,
    }
}

/// Records `recipe` into `dir` (created; must not exist) and returns the entry (entry.json written
/// last).
///
/// `modules` are the modules the guest's agent loads; each must be `Live` in both modes' truth.
pub fn record(recipe: &Recipe, art: &KernelArtifacts, initrd: &Path, modules: &[String], recipe_hash: &str, dir: &Path) -> Result<Entry> {
    for sub in ["running", "panicked", "reference", "logs"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(io(dir.join(sub)))?;
    }
    let ram = ram_file(recipe.name);
    let spec = guest_spec(recipe, art, initrd, ram.clone(), dir.join("logs"));
    let result = record_guest(recipe, spec, modules, dir);
    let _ = std::fs::remove_file(&ram);
    for sock in ["qmp.sock", "ctl.sock"] {
        let _ = std::fs::remove_file(dir.join("logs").join(sock));
    }
    let (release, modes, kallsyms) = result?;

    let copy = |from: &Path, to: &str| -> Result<String> {
        std::fs::copy(from, dir.join(to)).map_err(io(from))?;
        Ok(to.to_string())
    };
    let config_text = std::fs::read_to_string(&art.config).map_err(io(&art.config))?;
    let layout_rel = "reference/layout.json";
    let layout_path = dir.join(layout_rel);
    std::fs::write(&layout_path, art.layout.canonical_json() + "\n").map_err(io(&layout_path))?;
    let reference = Reference {
        system_map: copy(&art.system_map, "reference/System.map")?,
        config: copy(&art.config, "reference/config")?,
        layout: layout_rel.to_string(),
        vmlinuz: copy(&art.vmlinuz, "reference/vmlinuz")?,
        kallsyms,
    };
    let entry = Entry {
        name: recipe.name.to_string(),
        kernel: art.kernel.clone(),
        kernel_version: art.kernel_version.clone(),
        release,
        recipe_hash: recipe_hash.to_string(),
        flags: Flags::from_config(&config_text, &recipe.append()),
        layout_digest: art.layout.digest(),
        modes,
        reference,
        qemu: QemuParams {
            machine: "pc".into(),
            memory_mib: MEMORY_MIB,
            smp: SMP,
            append: recipe.append(),
        },
        infected: None,
        dir: dir.to_path_buf(),
    };
    let path = dir.join("entry.json");
    let text = serde_json::to_string_pretty(&entry).map_err(|e| Error::Invalid { path: path.clone(), what: e.to_string() })?;
    std::fs::write(&path, text + "\n").map_err(io(&path))?;
    Ok(entry)
}

type Recorded = (String, std::collections::BTreeMap<Mode, ModeRecord>, Option<String>);

fn record_guest(recipe: &Recipe, spec: GuestSpec, expected_modules: &[String], dir: &Path) -> Result<Recorded> {
    let t0 = Instant::now();
    let ram = spec.ram_path.clone();
    let mut guest = Guest::launch(spec, false)?;
    let release = guest.control().wait_ready(BOOT_TIMEOUT)?;
    tracing::info!("{}: guest {release} ready after {:.1} s", recipe.name, t0.elapsed().as_secs_f64());
    let mut modes = std::collections::BTreeMap::new();

    let mods = guest.control().section("truth running", "modules", TRUTH_TIMEOUT)?;
    let modules = Some(save_modules(dir, Mode::Running, &mods, expected_modules)?);
    let truth = guest.control().next_section("truth", TRUTH_TIMEOUT)?;
    let threads = save_truth(dir, Mode::Running, &truth)?;
    guest.qmp().stop()?;
    let dumps = dump_all(&mut guest, &formats(recipe), dir, Mode::Running, &ram)?;
    guest.qmp().cont()?;
    modes.insert(Mode::Running, ModeRecord { truth: "running/truth.jsonl".into(), threads, dumps, modules });

    let t1 = Instant::now();
    let syms = guest.control().section("kallsyms", "kallsyms", KALLSYMS_TIMEOUT)?;
    tracing::info!("{}: kallsyms {} bytes in {:.1} s", recipe.name, syms.len(), t1.elapsed().as_secs_f64());
    let kallsyms = if has_addresses(&syms) {
        let p = dir.join("reference/kallsyms");
        std::fs::write(&p, &syms).map_err(io(&p))?;
        Some("reference/kallsyms".to_string())
    } else {
        None
    };

    let mods = guest.control().section("panic", "modules", TRUTH_TIMEOUT)?;
    let modules = Some(save_modules(dir, Mode::Panicked, &mods, expected_modules)?);
    let truth = guest.control().next_section("truth", TRUTH_TIMEOUT)?;
    let threads = save_truth(dir, Mode::Panicked, &truth)?;
    guest.wait_panic(PANIC_TIMEOUT)?;
    guest.qmp().stop()?;
    let dumps = dump_all(&mut guest, &formats(recipe), dir, Mode::Panicked, &ram)?;
    modes.insert(Mode::Panicked, ModeRecord { truth: "panicked/truth.jsonl".into(), threads, dumps, modules });
    guest.quit()?;
    tracing::info!("{}: recorded in {:.1} s", recipe.name, t0.elapsed().as_secs_f64());
    Ok((release, modes, kallsyms))
}

/// True when kallsyms text has at least one non-zero address (not hidden by kptr_restrict).
fn has_addresses(syms: &[u8]) -> bool {
    String::from_utf8_lossy(syms)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .any(|a| a.bytes().any(|b| b != b'0'))
}

/// Saves the guest's thread truth as `MODE/truth.jsonl` after checking that it parses; the
/// number of threads.
pub(crate) fn save_truth(dir: &Path, mode: Mode, body: &[u8]) -> Result<usize> {
    let path = dir.join(mode.as_str()).join("truth.jsonl");
    let threads = truth::parse_jsonl(body).map_err(|what| Error::Invalid { path: path.clone(), what })?;
    if threads.is_empty() {
        return Err(Error::Invalid { path, what: "the guest reported no threads".into() });
    }
    std::fs::write(&path, body).map_err(io(&path))?;
    Ok(threads.len())
}

/// Saves the guest's `/proc/modules` as `MODE/modules.txt` after checking that it parses and
/// that every module the agent was given is there and `Live` (a module that failed to load
/// is named on the console by the agent).
pub(crate) fn save_modules(dir: &Path, mode: Mode, body: &[u8], expected: &[String]) -> Result<String> {
    let rel = format!("{}/modules.txt", mode.as_str());
    let path = dir.join(&rel);
    let modules = truth::parse_modules(body).map_err(|what| Error::Invalid { path: path.clone(), what })?;
    for name in expected {
        if !modules.iter().any(|m| &m.name == name && m.state == "Live") {
            return Err(Error::Invalid {
                path: path.clone(),
                what: format!("module {name} is not Live in the guest's /proc/modules (see logs/console.log)"),
            });
        }
    }
    std::fs::write(&path, body).map_err(io(&path))?;
    Ok(rel)
}

/// ELF, then the recipe's extra formats.
fn formats(recipe: &Recipe) -> Vec<DumpFormat> {
    std::iter::once(DumpFormat::Elf).chain(recipe.extra_formats.iter().copied()).collect()
}

/// Dumps the paused guest in `formats` as `dir/MODE/dump.*`.
pub(crate) fn dump_all(guest: &mut Guest, formats: &[DumpFormat], dir: &Path, mode: Mode, ram: &Path) -> Result<Vec<Dump>> {
    let mut out = Vec::new();
    for &format in formats {
        let rel = format!("{}/{}", mode.as_str(), format.file_name());
        let path = dir.join(&rel);
        let actual = match format {
            DumpFormat::Elf => {
                guest.qmp().dump(&path, "elf")?;
                DumpFormat::Elf
            }
            DumpFormat::Kdump | DumpFormat::KdumpFlattened => {
                guest.qmp().dump(&path, "kdump-zlib")?;
                kdump_kind(&path)?
            }
            DumpFormat::Raw => {
                std::fs::copy(ram, &path).map_err(io(ram))?;
                DumpFormat::Raw
            }
        };
        // QEMU creates dumps owner-read-only; the corpus is read by other users and tools.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).map_err(io(&path))?;
        let bytes = std::fs::metadata(&path).map_err(io(&path))?.len();
        if bytes == 0 {
            return Err(Error::Invalid { path, what: "empty dump".into() });
        }
        out.push(Dump { format: actual, path: rel, bytes });
    }
    Ok(out)
}

/// Which kdump framing QEMU wrote, from the file's signature.
fn kdump_kind(path: &Path) -> Result<DumpFormat> {
    use std::io::Read;
    let mut sig = [0u8; 12];
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    f.read_exact(&mut sig).map_err(io(path))?;
    match &sig {
        b"makedumpfile" => Ok(DumpFormat::KdumpFlattened),
        s if &s[..8] == b"KDUMP   " => Ok(DumpFormat::Kdump),
        _ => Err(Error::Invalid { path: path.into(), what: format!("unknown kdump signature {sig:?}") }),
    }
}
