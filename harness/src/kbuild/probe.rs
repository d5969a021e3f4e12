//! Running kbuild: preparing a tree, compiling the probe to assembly and reading its markers.
//!
//! Invariant: the probe's values come only from `->nd_probe_N VALUE` lines the compiler wrote; a
//! line that names a probe but does not parse is an error, never skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::KbuildError;

/// Headers that declare every structure [`super::analysis_fields`] names.
const HEADERS: &[&str] = &[
    "linux/kbuild.h",
    "linux/stddef.h",
    "linux/list.h",
    "linux/sched.h",
    "linux/sched/signal.h",
    "linux/cred.h",
    "linux/mm_types.h",
];

pub(super) enum Outcome {
    Values(BTreeMap<usize, u64>),
    /// Compilation failed; `missing_members` lists `(struct, member)` pairs gcc reported absent.
    Failed { missing_members: Vec<(String, String)>, error: KbuildError },
}

/// Runs `make` with `args` in `dir` with a neutral environment (no inherited jobserver, C
/// locale so diagnostics are ASCII). Returns the combined output, or an error with its tail.
pub fn run_make(dir: &Path, args: &[&str]) -> Result<String, KbuildError> {
    let out = Command::new("make")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .env("LC_ALL", "C")
        .output()
        .map_err(|source| KbuildError::Io { path: PathBuf::from("make"), source })?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(text)
    } else {
        Err(KbuildError::Make {
            cmd: format!("make -C {} {}", dir.display(), args.join(" ")),
            status: out.status.to_string(),
            tail: tail(&text, 40),
        })
    }
}

fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Configures and prepares an out-of-tree build directory for `config` under
/// `tree/.netdma-kbuild/<hash of config>/` (the source tree itself stays clean, so other `O=`
/// builds from it keep working). Reused when already prepared. Returns the build directory.
pub(super) fn prepare(tree: &Path, config: &Path) -> Result<PathBuf, KbuildError> {
    use sha2::{Digest, Sha256};
    let text = std::fs::read(config).map_err(|source| KbuildError::Io { path: config.to_path_buf(), source })?;
    let hash: String = Sha256::digest(&text).iter().take(8).map(|b| format!("{b:02x}")).collect();
    let build = tree.join(".netdma-kbuild").join(hash);
    // Versioned: a directory prepared by an older procedure is prepared again.
    let stamp = build.join(".netdma-prepared-v2");
    if stamp.is_file() {
        return Ok(build);
    }
    std::fs::create_dir_all(&build).map_err(|source| KbuildError::Io { path: build.clone(), source })?;
    let dot = build.join(".config");
    std::fs::write(&dot, &text).map_err(|source| KbuildError::Io { path: dot.clone(), source })?;
    let o = format!("O={}", build.display());
    run_make(tree, &[o.as_str(), "olddefconfig"])?;
    // `prepare`, not `modules_prepare`: the latter does nothing when CONFIG_MODULES is off.
    run_make(tree, &[o.as_str(), "-j2", "prepare"])?;
    std::fs::write(&stamp, b"").map_err(|source| KbuildError::Io { path: stamp.clone(), source })?;
    Ok(build)
}

static PROBE_SEQ: AtomicU32 = AtomicU32::new(0);

/// Stands in for the compiler a Debian headers package was configured with when this host lacks
/// it (7.x headers name `gcc-16`; the host has gcc 12): the host's gcc, retried without each
/// command-line option it rejects (newer code-generation flags such as
/// `-fmin-function-alignment`). Structure layout does not depend on those options, only on the
/// types, the config and layout plugins, which are all still in force.
const HOST_CC: &str = r#"#!/bin/bash
args=("$@")
err=$(mktemp)
for _ in $(seq 32); do
  gcc "${args[@]}" 2>"$err"; st=$?
  if [ $st = 0 ]; then cat "$err" >&2; rm -f "$err"; exit 0; fi
  bad=$(sed -nE "s/.*unrecognized command[- ]line option (‘|')(-[^’']*)(’|').*/\2/p" "$err" | head -n1)
  if [ -z "$bad" ]; then cat "$err" >&2; rm -f "$err"; exit $st; fi
  new=(); for a in "${args[@]}"; do [ "$a" = "$bad" ] || new+=("$a"); done
  args=("${new[@]}")
done
cat "$err" >&2; rm -f "$err"; exit 1
"#;

/// The `gcc-N` a Debian headers tree was configured with (`.kernelvariables`), if this host
/// has no such command.
fn missing_configured_cc(tree: &Path) -> Option<String> {
    let vars = std::fs::read_to_string(tree.join(".kernelvariables")).ok()?;
    let line = vars.lines().find(|l| l.trim_start().starts_with("CC ") || l.trim_start().starts_with("CC="))?;
    let gcc = line.split(|c: char| c.is_whitespace() || c == ')').find(|w| w.starts_with("gcc-"))?;
    let on_path = |name: &str| {
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
    };
    (!on_path(gcc) && !on_path(&format!("x86_64-linux-gnu-{gcc}"))).then(|| gcc.to_string())
}

/// Compiling in a tree configured for a gcc this host lacks: `make_arg` (`CC=SHIM`) runs the
/// host's gcc through the `HOST_CC` shim, written into the scratch directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CcOverride {
    /// The `gcc-N` the tree was configured with.
    pub configured: String,
    pub make_arg: String,
}

/// The `CC=` override a kbuild run in `tree` needs on this host, if any (the shim is written to
/// `scratch/host-cc`).
pub fn host_cc_override(tree: &Path, scratch: &Path) -> Result<Option<CcOverride>, KbuildError> {
    let Some(gcc) = missing_configured_cc(tree) else { return Ok(None) };
    let shim = scratch.join("host-cc");
    let io = |source| KbuildError::Io { path: shim.clone(), source };
    std::fs::write(&shim, HOST_CC).map_err(io)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
    tracing::debug!("{}: configured for {gcc}, which this host lacks; compiling with the host's gcc", tree.display());
    Ok(Some(CcOverride { configured: gcc, make_arg: format!("CC={}", shim.display()) }))
}

pub(super) fn compile(tree: &Path, exprs: &[String]) -> Result<Outcome, KbuildError> {
    let dir = std::env::temp_dir().join(format!(
        "netdma-kbuild-{}-{}",
        std::process::id(),
        PROBE_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KbuildError::Io { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let mut src = String::new();
    for h in HEADERS {
        src.push_str(&format!("#include <{h}>\n"));
    }
    src.push_str("\nvoid nd_probe(void);\nvoid nd_probe(void)\n{\n");
    for (i, e) in exprs.iter().enumerate() {
        src.push_str(&format!("\tDEFINE(nd_probe_{i}, {e});\n"));
    }
    src.push_str("}\n");
    std::fs::write(dir.join("ndprobe.c"), src).map_err(io(&dir.join("ndprobe.c")))?;
    std::fs::write(dir.join("Kbuild"), "obj-m := ndprobe.o\n").map_err(io(&dir.join("Kbuild")))?;
    let m = format!("M={}", dir.display());
    let mut args = vec![m, "ndprobe.s".to_string()];
    if let Some(cc) = host_cc_override(tree, &dir)? {
        args.push(cc.make_arg);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = run_make(tree, &args);
    let outcome = match result {
        Ok(_) => {
            let s_path = dir.join("ndprobe.s");
            let text = std::fs::read_to_string(&s_path).map_err(io(&s_path))?;
            Outcome::Values(parse_markers(&s_path, &text)?)
        }
        Err(error) => {
            let missing_members = match &error {
                KbuildError::Make { tail, .. } => missing_members(tail),
                _ => Vec::new(),
            };
            Outcome::Failed { missing_members, error }
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    Ok(outcome)
}

/// Parses `.ascii "->nd_probe_N $VALUE ..."` lines (the `$` is absent on some assemblers' syntax).
pub(super) fn parse_markers(path: &Path, text: &str) -> Result<BTreeMap<usize, u64>, KbuildError> {
    let mut values = BTreeMap::new();
    for line in text.lines() {
        let Some(pos) = line.find("->nd_probe_") else { continue };
        let bad = || KbuildError::BadMarker { path: path.to_path_buf(), line: line.trim().to_string() };
        let mut words = line[pos + "->nd_probe_".len()..].split_whitespace();
        let index: usize = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
        let value = words.next().ok_or_else(bad)?.trim_start_matches('$');
        let value: u64 = value.parse().map_err(|_| bad())?;
        values.insert(index, value);
    }
    Ok(values)
}

/// `(struct, member)` pairs from gcc's "'struct S' has no member named 'M'" diagnostics.
fn missing_members(log: &str) -> Vec<(String, String)> {
    // The kernel's Makefile unexports LC_ALL, so gcc may quote with ‘ ’ (a UTF-8 locale).
    let log = log.replace(['\u{2018}', '\u{2019}'], "'");
    let mut v = Vec::new();
    for line in log.lines() {
        let Some(rest) = line.split("error: 'struct ").nth(1) else { continue };
        let Some((ty, rest)) = rest.split_once("' has no member named '") else { continue };
        let Some((member, _)) = rest.split_once('\'') else { continue };
        v.push((ty.to_string(), member.to_string()));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_parse_and_reject_garbage() {
        let p = Path::new("x.s");
        let ok = ".ascii \"->nd_probe_0 $2192 offsetof(struct task_struct, tasks)\"\t#\n\
                  .ascii \"->nd_probe_1 $9792 sizeof(struct task_struct)\"\t#\n";
        let v = parse_markers(p, ok).unwrap();
        assert_eq!(v.get(&0), Some(&2192));
        assert_eq!(v.get(&1), Some(&9792));
        assert!(parse_markers(p, ".ascii \"->nd_probe_x $1\"").is_err());
        assert!(parse_markers(p, ".ascii \"->nd_probe_2 $-1\"").is_err());
    }

    #[test]
    fn missing_member_diagnostics() {
        let log = "/tmp/x/ndprobe.c:9:9: error: 'struct task_struct' has no member named 'thread_group'\n";
        assert_eq!(missing_members(log), vec![("task_struct".into(), "thread_group".into())]);
        let utf8 = "ndprobe.c:31:58: error: \u{2018}struct task_struct\u{2019} has no member named \u{2018}thread_group\u{2019}; did you mean \u{2018}thread_node\u{2019}?\n";
        assert_eq!(missing_members(utf8), vec![("task_struct".into(), "thread_group".into())]);
    }
}
