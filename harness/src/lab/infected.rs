//! The infected mode: a Debian kernel booted again, with the lab's test rootkit
//! ([`super::rootkit`]) hiding one process and itself, then dumped.
//!
//! ```text
//!   boot (entry's initramfs + shell port + nd-victim, nd-infect, nd_rootkit.ko) ── ready
//!   shell: nd-infect victim ── nd-infect load (insmod, idle) ── agent: truth infected
//!   shell: nd-infect hide PID ── nd-infect check PID ── cat /proc/modules
//!   stop, dump.elf ── cont ── shell: nd-infect kill PID (the hidden task exits: harmless)
//!   agent: panic ── sysrq c ── "end Kernel panic" ── quit
//! ```
//! Recorded in its own boot, never in the entry's: running and panicked stay exactly as they are
//! and their recipe hash (which covers the guest's sources) is unchanged. Everything lands in
//! `corpus/<name>/infected/` (staged in `corpus/<name>/.infected.tmp/`, renamed into place, with
//! `infected.json` written last); `entry.json` is not touched.
//!
//! Invariant: the truth (`infected/truth.jsonl`, `infected/modules.txt`) is the guest's own
//! `/proc` with the rootkit loaded but idle, so it lists the victim and `nd_rootkit`;
//! `infected.json` names what was then hidden, and holds what the guest itself saw afterwards
//! (`/proc/modules` without the module, `/proc/PID` still there: /proc finds tasks through the pid
//! allocator, not the task list). The dump is taken after that, the guest paused. After the dump,
//! as checks that the rootkit left a sound kernel, the victim is killed (its exit must not trip the
//! kernel's list checks) and the guest panicked by the agent; a recording where either fails is an
//! error, not an entry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};


use crate::lab::apt::Apt;
use crate::lab::build::Outcome;
use crate::lab::cache::{hash_parts, Cache};
use crate::lab::corpus::{Confirmed, Corpus, DumpFormat, Entry, Hidden, Infected, Mode, ModeRecord, INFECTED_RECORD as RECORD};
use crate::lab::cpio::Archive;
use crate::lab::error::io;
use crate::lab::recipe::{KernelRecipe, Recipe};
use crate::lab::shellport::{self, ShellGuest};
use crate::kbuild;
use crate::lab::{build, custom, debian, guest, record, rootkit, truth, Error, Result};

/// Bumped whenever the infected recording procedure changes; part of its hash only (entries'
/// running and panicked modes do not depend on it).
pub const INFECTED_VERSION: u32 = 1;

const SHELL_TIMEOUT: Duration = Duration::from_secs(120);
const TRUTH_TIMEOUT: Duration = Duration::from_secs(300);

/// Brings the infected mode of every recipe `opts` selects that has one up to date, after
/// [`build::build_corpus`] brought their entries up to date.
pub fn infect_corpus(cache: &Cache, opts: &build::BuildOptions) -> Result<Vec<(String, Outcome)>> {
    let _lock = crate::lab::cache::CacheLock::acquire(cache).map_err(io(cache.root().join("build.lock")))?;
    let apt = Apt::open(cache)?;
    let corpus = Corpus::open(cache.corpus());
    let mut outcomes = Vec::new();
    for r in build::selected(opts)?.iter().filter(|r| r.infected) {
        let e = corpus.entry(r.name)?;
        outcomes.push((format!("{} infected", r.name), ensure(cache, &apt, r, &e, opts.jobs, opts.force)?));
    }
    Ok(outcomes)
}

/// Hash of everything the infected recording of an entry depends on besides the entry itself.
pub fn infected_hash(entry_recipe_hash: &str) -> String {
    hash_parts(&[
        b"infected",
        &INFECTED_VERSION.to_le_bytes(),
        entry_recipe_hash.as_bytes(),
        rootkit::sources_hash().as_bytes(),
        shellport::SHELL_INIT.as_bytes(),
    ])
}

/// Records the infected mode of `entry` unless it is up to date (or `force`).
pub fn ensure(cache: &Cache, apt: &Apt, recipe: &Recipe, entry: &Entry, jobs: u32, force: bool) -> Result<Outcome> {
    let hash = infected_hash(&entry.recipe_hash);
    if let Some(i) = entry.infected.as_ref().filter(|_| !force) {
        if i.recipe_hash == hash && i.mode.dumps.iter().all(|d| entry.path(&d.path).is_file()) {
            tracing::info!("{}: infected mode up to date", recipe.name);
            return Ok(Outcome::UpToDate);
        }
    }
    let t0 = Instant::now();
    record_infected(cache, apt, recipe, entry, &hash, jobs)?;
    Ok(Outcome::Built { secs: t0.elapsed().as_secs_f64() })
}

/// The entry's initramfs with the shell port and the infected mode's guest files appended.
fn initramfs(cache: &Cache, base: &guest::Initramfs, ko: &Path) -> Result<PathBuf> {
    let ko_bytes = std::fs::read(ko).map_err(io(ko))?;
    let hash = hash_parts(&[base.hash.as_bytes(), shellport::SHELL_INIT.as_bytes(), rootkit::sources_hash().as_bytes(), &ko_bytes]);
    let dir = cache.initramfs(&format!("{}-infected", &hash[..16]));
    let path = dir.join("initramfs.cpio");
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let victim = guest::compile(&dir, "victim.c", rootkit::VICTIM_C, rootkit::VICTIM_COMM, &[])?;
    let mut a = Archive::new();
    shellport::add_shell(&mut a);
    a.file(&format!("bin/{}", rootkit::VICTIM_COMM), 0o755, &victim);
    a.file("bin/nd-infect", 0o755, rootkit::INFECT_SH.as_bytes());
    // Not under lib/modules/netdma/, which the agent loads at start: nd-infect loads it.
    for d in ["lib", "lib/modules", "lib/modules/netdma-rootkit"] {
        a.dir(d);
    }
    a.file(&format!("lib/modules/netdma-rootkit/{}.ko", rootkit::MODULE), 0o644, &ko_bytes);
    guest::write_appended(&base.path, a, &path)?;
    Ok(path)
}

/// `@@infect KEY VALUE` lines of one `nd-infect` step, which must exit 0.
fn step(g: &mut ShellGuest, args: &str) -> Result<BTreeMap<String, String>> {
    let a = g.run(&format!("nd-infect {args}"), SHELL_TIMEOUT)?;
    let lines: Vec<String> = a.lines.iter().map(|l| String::from_utf8_lossy(l).into_owned()).collect();
    if a.status != 0 {
        return Err(Error::Protocol(format!("nd-infect {args} exited {}: {}", a.status, lines.join(" | "))));
    }
    Ok(parse_step(&lines))
}

fn parse_step(lines: &[String]) -> BTreeMap<String, String> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("@@infect "))
        .map(|l| match l.split_once(' ') {
            Some((k, v)) => (k.to_string(), v.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

fn field<'a>(step: &'a BTreeMap<String, String>, key: &str, args: &str) -> Result<&'a str> {
    step.get(key).map(String::as_str).ok_or_else(|| Error::Protocol(format!("nd-infect {args}: no `{key}` in its answer")))
}

fn record_infected(cache: &Cache, apt: &Apt, recipe: &Recipe, entry: &Entry, hash: &str, jobs: u32) -> Result<Infected> {
    let KernelRecipe::Debian { series, flavour } = &recipe.kernel else {
        return Err(Error::Invalid {
            path: entry.dir().to_path_buf(),
            what: "the infected mode needs a Debian kernel: the rootkit takes tasklist_lock and module_mutex from /proc/kallsyms, which lists no data symbols on the custom kernels".into(),
        });
    };
    let resolved = debian::resolve(apt, series, flavour)?;
    let k = debian::fetch(cache, apt, &resolved)?;
    // A kernel whose kbuild programs do not run here (7.x) gets modpost from its own source.
    let host_tools = || -> Result<PathBuf> {
        let src = custom::resolve_source(apt, series)?;
        if src.version != resolved.version {
            return Err(Error::Invalid {
                path: k.headers.clone(),
                what: format!("its modpost needs a newer glibc, and {} {} is not the kernel's source ({})", src.package, src.version, resolved.version),
            });
        }
        let tree = custom::source_tree(cache, apt, &src)?;
        Ok(kbuild::prepare(&tree, &k.config)?)
    };
    let ko = rootkit::build(cache, &k.headers, &format!("{} {}", resolved.package, resolved.version), host_tools)?;
    let art = build::kernel(cache, apt, recipe, jobs)?;
    let (base, mut expected) = build::guest_initramfs(cache, apt, recipe)?;
    let initrd = initramfs(cache, &base, &ko.ko)?;
    expected.push(rootkit::MODULE.to_string());

    let stage = entry.dir().join(".infected.tmp");
    if stage.exists() {
        std::fs::remove_dir_all(&stage).map_err(io(&stage))?;
    }
    let logs = stage.join("infected").join("logs");
    std::fs::create_dir_all(&logs).map_err(io(&logs))?;
    let ram = record::ram_file(&format!("{}-infected", recipe.name));
    let spec = record::guest_spec(recipe, &art, &initrd, ram.clone(), logs);
    let t0 = Instant::now();
    let mut g = ShellGuest::launch(recipe.name, spec)?;
    let release = g.release.clone();
    let result = infect_and_dump(&mut g, &stage, &expected, &ram);
    let shut = g.shutdown();
    let (hidden, confirmed, mode, victim_after_kill) = result?;
    shut?;
    let record_secs = t0.elapsed().as_secs();
    tracing::info!("{}: infected mode recorded in {record_secs} s (pid {} and {} hidden)", recipe.name, hidden.pid, hidden.module);

    let infected = Infected {
        recipe_hash: hash.to_string(),
        entry_recipe_hash: entry.recipe_hash.clone(),
        release,
        hidden,
        confirmed,
        mode,
        modules_after: "infected/modules-after.txt".into(),
        rootkit_cc: ko.cc,
        victim_after_kill,
        record_secs,
    };
    let path = stage.join(RECORD);
    let text = serde_json::to_string_pretty(&infected).map_err(|e| Error::Invalid { path: path.clone(), what: e.to_string() })?;
    std::fs::write(&path, text + "\n").map_err(io(&path))?;
    let dest = entry.dir().join("infected");
    if dest.exists() {
        std::fs::remove_dir_all(&dest).map_err(io(&dest))?;
    }
    std::fs::rename(stage.join("infected"), &dest).map_err(io(&dest))?;
    std::fs::remove_dir_all(&stage).map_err(io(&stage))?;
    Ok(infected)
}

/// Console text of a kernel that found a corrupted list (`lib/list_debug.c`) or hit a BUG.
const CORRUPTION: &[&str] = &["list_del corruption", "list_add corruption", "BUG:", "kernel BUG at"];

/// The guest side of the recording, into `stage/infected/`; also how the victim ended when killed.
fn infect_and_dump(g: &mut ShellGuest, stage: &Path, expected: &[String], ram: &Path) -> Result<(Hidden, Confirmed, ModeRecord, String)> {
    let victim = step(g, "victim")?;
    let pid: u32 = field(&victim, "victim", "victim")?
        .parse()
        .map_err(|_| Error::Protocol(format!("nd-infect victim: bad pid in {victim:?}")))?;
    step(g, "load")?;

    let ctl = g.guest()?.control();
    let mods = ctl.section("truth infected", "modules", TRUTH_TIMEOUT)?;
    let modules = record::save_modules(stage, Mode::Infected, &mods, expected)?;
    let body = ctl.next_section("truth", TRUTH_TIMEOUT)?;
    let threads = record::save_truth(stage, Mode::Infected, &body)?;
    let truth_path = stage.join("infected/truth.jsonl");
    let victim_seen = truth::parse_jsonl(&body)
        .map_err(|what| Error::Invalid { path: truth_path.clone(), what })?
        .into_iter()
        .any(|t| t.pid == pid && t.tgid == pid && t.comm == rootkit::VICTIM_COMM);
    if !victim_seen {
        return Err(Error::Invalid { path: truth_path, what: format!("no {} with pid {pid} in the truth", rootkit::VICTIM_COMM) });
    }

    let args = format!("hide {pid}");
    let hidden = step(g, &args)?;
    if field(&hidden, "hidden", &args)? != format!("{pid} 1") {
        return Err(Error::Protocol(format!("nd-infect {args}: the rootkit says {hidden:?}")));
    }
    let args = format!("check {pid}");
    let check = step(g, &args)?;
    let confirmed = Confirmed {
        proc_modules_lists_module: field(&check, "proc_modules_lists_rootkit", &args)? == "yes",
        proc_pid_exists: field(&check, "proc_pid_exists", &args)? == "yes",
        proc_pid_comm: field(&check, "proc_pid_comm", &args)?.to_string(),
        rootkit_state: field(&check, "rootkit_state", &args)?.to_string(),
    };
    let after = g.run("cat /proc/modules", SHELL_TIMEOUT)?;
    let mut text = Vec::new();
    for l in &after.lines {
        text.extend_from_slice(l);
        text.push(b'\n');
    }
    let after_path = stage.join("infected/modules-after.txt");
    let listed = truth::parse_modules(&text).map_err(|what| Error::Invalid { path: after_path.clone(), what })?;
    std::fs::write(&after_path, &text).map_err(io(&after_path))?;
    if after.status != 0 || confirmed.proc_modules_lists_module || listed.iter().any(|m| m.name == rootkit::MODULE) {
        return Err(Error::Invalid { path: after_path, what: format!("{} is still in the guest's /proc/modules", rootkit::MODULE) });
    }

    let guest = g.guest()?;
    guest.qmp().stop()?;
    let dumps = record::dump_all(guest, &[DumpFormat::Elf], stage, Mode::Infected, ram)?;
    guest.qmp().cont()?;
    // The hidden task's exit goes through list_del_rcu() on its self-linked node: harmless.
    let args = format!("kill {pid}");
    let killed = step(g, &args)?;
    let after_kill = field(&killed, "victim_after_kill", &args)?.to_string();
    let console_path = g.spec.console_path();
    let console = String::from_utf8_lossy(&std::fs::read(&console_path).map_err(io(&console_path))?).into_owned();
    if after_kill == "alive" || CORRUPTION.iter().any(|c| console.contains(c)) {
        return Err(Error::Invalid { path: console_path, what: format!("killing the hidden pid {pid}: {after_kill}, or the kernel reported a corruption") });
    }
    // The infected kernel still panics as every lab guest does (the rootkit broke nothing the
    // panic path needs); the panicked guest is not dumped again.
    g.panic()?;
    let mode = ModeRecord { truth: "infected/truth.jsonl".into(), threads, dumps, modules: Some(modules) };
    let hidden = Hidden { pid, comm: rootkit::VICTIM_COMM.into(), module: rootkit::MODULE.into() };
    Ok((hidden, confirmed, mode, after_kill))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_answers_parse() {
        let lines = ["noise", "@@infect victim 123", "@@infect rootkit_state 123 1", "@@infect proc_pid_comm "]
            .map(String::from);
        let s = parse_step(&lines);
        assert_eq!(s["victim"], "123");
        assert_eq!(s["rootkit_state"], "123 1");
        assert_eq!(s["proc_pid_comm"], "");
        assert!(field(&s, "hidden", "hide 1").unwrap_err().to_string().contains("no `hidden`"));
    }

    #[test]
    fn stale_or_missing_records_are_ignored() {
        let dir = std::env::temp_dir().join(format!("netdma-infected-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("infected")).unwrap();
        assert_eq!(crate::lab::corpus::load_infected(&dir, "h"), None);
        let rec = Infected {
            recipe_hash: "i".into(),
            entry_recipe_hash: "h".into(),
            release: "6.1.0-57-amd64".into(),
            hidden: Hidden { pid: 300, comm: "nd-victim".into(), module: "nd_rootkit".into() },
            confirmed: Confirmed {
                proc_modules_lists_module: false,
                proc_pid_exists: true,
                proc_pid_comm: "nd-victim".into(),
                rootkit_state: "300 1".into(),
            },
            mode: ModeRecord { truth: "infected/truth.jsonl".into(), threads: 90, dumps: vec![], modules: None },
            modules_after: "infected/modules-after.txt".into(),
            rootkit_cc: "gcc".into(),
            victim_after_kill: "gone".into(),
            record_secs: 60,
        };
        std::fs::write(dir.join(RECORD), serde_json::to_string(&rec).unwrap()).unwrap();
        assert_eq!(crate::lab::corpus::load_infected(&dir, "h"), Some(rec));
        assert_eq!(crate::lab::corpus::load_infected(&dir, "another build"), None);
        std::fs::write(dir.join(RECORD), "{").unwrap();
        assert_eq!(crate::lab::corpus::load_infected(&dir, "h"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hash_follows_the_entry() {
        assert_ne!(infected_hash("a"), infected_hash("b"));
        assert_eq!(infected_hash("a"), infected_hash("a"));
    }
}
