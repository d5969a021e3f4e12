//! The lab's test rootkit (`harness/guest/rootkit/`): a GPL kernel module built with each
//! kernel's own kbuild, and the guest programs of the infected mode.
//!
//! ```text
//!   nd_rootkit.c  Kbuild   → make -C <headers tree> M=<cache>/rootkit/<hash>/ modules → nd_rootkit.ko
//!   victim.c               → gcc -static → /bin/nd-victim (the process the rootkit hides)
//!   nd-infect              → /bin/nd-infect (busybox sh: the in-guest steps, run through the shell port)
//! ```
//! Invariant: a built module is a function of its sources, the kernel's headers package (name and
//! version) and the host's gcc; their hash keys its cache directory, which is complete exactly
//! when its `.complete` stamp exists.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::kbuild;
use crate::lab::cache::{hash_parts, Cache};
use crate::lab::error::io;
use crate::lab::{Error, Result};

pub const ROOTKIT_C: &str = include_str!("../../guest/rootkit/nd_rootkit.c");
pub const KBUILD: &str = include_str!("../../guest/rootkit/Kbuild");
pub const VICTIM_C: &str = include_str!("../../guest/rootkit/victim.c");
pub const INFECT_SH: &str = include_str!("../../guest/rootkit/nd-infect");

/// The module's name (in `/proc/modules`, `struct module.name`).
pub const MODULE: &str = "nd_rootkit";
/// The hidden process's comm (its file name in the guest).
pub const VICTIM_COMM: &str = "nd-victim";

/// Hash of every guest-side source of the infected mode.
pub fn sources_hash() -> String {
    hash_parts(&[ROOTKIT_C.as_bytes(), KBUILD.as_bytes(), VICTIM_C.as_bytes(), INFECT_SH.as_bytes()])
}

/// A module built for one kernel.
#[derive(Clone, Debug)]
pub struct Built {
    pub ko: PathBuf,
    /// How it was compiled: the compiler the kernel was configured with, and the one used.
    pub cc: String,
    /// Seconds the kbuild run took (0 when it came from the cache).
    pub secs: f64,
}

fn first_line(cmd: &str, arg: &str) -> Result<String> {
    let out = Command::new(cmd).arg(arg).output().map_err(|_| Error::MissingPackages {
        install: format!("apt-get install -y {}", if cmd == "make" { "make" } else { "gcc libc6-dev libelf-dev" }),
    })?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").to_string())
}

/// The kbuild host programs a module build runs that Debian's kbuild package ships prebuilt:
/// `(program the package runs, make variable naming it, the same program in a build directory)`.
const HOST_PROGRAMS: &[(&str, &str, &str)] = &[
    ("scripts/mod/modpost.real-lsb-64", "MODPOST", "scripts/mod/modpost"),
    ("tools/objtool/objtool.real-x86", "objtool", "tools/objtool/objtool"),
];

/// Whether a prebuilt program of the headers tree runs on this host: Debian 7.x's are linked
/// against a newer glibc than bookworm's (`version GLIBC_2.38 not found (required by ...)`).
fn runs_here(program: &Path) -> bool {
    !program.is_file()
        || Command::new(program).output().is_ok_and(|o| !String::from_utf8_lossy(&o.stderr).contains("(required by"))
}

/// Builds `nd_rootkit.ko` against the prepared headers tree `headers` of the kernel `identity`
/// (`package version`), or returns the cached build. The tree's configured compiler is used
/// when this host has it, else the host's gcc through kbuild's shim (see `kbuild::host_cc_override`).
/// When the headers' `modpost` or `objtool` cannot run here, `host_tools` gives a build directory
/// of the same kernel's source whose host programs were built on this host (`kbuild::prepare`),
/// and those are used instead (make variables on the command line override the tree's).
pub fn build(cache: &Cache, headers: &Path, identity: &str, host_tools: impl FnOnce() -> Result<PathBuf>) -> Result<Built> {
    if !headers.join("Makefile").is_file() {
        return Err(Error::Invalid {
            path: headers.to_path_buf(),
            what: "no prepared kernel headers tree here (Debian's linux-headers and linux-kbuild packages); `harness corpus build --only NAME` fetches them".into(),
        });
    }
    let gcc = first_line("gcc", "--version")?;
    let make = first_line("make", "--version")?;
    let hash = hash_parts(&[ROOTKIT_C.as_bytes(), KBUILD.as_bytes(), identity.as_bytes(), gcc.as_bytes(), make.as_bytes()]);
    let dir = cache.root().join("rootkit").join(&hash[..16]);
    let ko = dir.join(format!("{MODULE}.ko"));
    let stamp = dir.join(".complete");
    if let Ok(cc) = std::fs::read_to_string(&stamp) {
        if ko.is_file() {
            return Ok(Built { ko, cc: cc.trim().to_string(), secs: 0.0 });
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    for (name, text) in [("nd_rootkit.c", ROOTKIT_C), ("Kbuild", KBUILD)] {
        std::fs::write(dir.join(name), text).map_err(io(dir.join(name)))?;
    }
    let t0 = Instant::now();
    // No BTF for the module: it would need pahole, and nothing reads it (a command-line variable
    // overrides the tree's auto.conf).
    let mut args = vec![format!("M={}", dir.display()), "modules".to_string(), "CONFIG_DEBUG_INFO_BTF_MODULES=".to_string()];
    let mut cc = match kbuild::host_cc_override(headers, &dir)? {
        Some(o) => {
            args.push(o.make_arg);
            format!("configured for {}, which this host lacks: built with {gcc} (options it rejects dropped)", o.configured)
        }
        None => format!("the configured compiler ({gcc} on this host)"),
    };
    let foreign: Vec<_> = HOST_PROGRAMS.iter().filter(|(p, ..)| !runs_here(&headers.join(p))).collect();
    if !foreign.is_empty() {
        let prepared = host_tools()?;
        let mut names = Vec::new();
        for (_, var, built) in foreign {
            let path = prepared.join(built);
            if !path.is_file() {
                return Err(Error::Invalid { path, what: "the prepared source tree lacks this host program".into() });
            }
            args.push(format!("{var}={}", path.display()));
            names.push(*built);
        }
        cc.push_str(&format!("; {} built here from the kernel's linux-source (the package's need a newer glibc)", names.join(", ")));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = kbuild::run_make(headers, &args)?;
    std::fs::write(dir.join("build.log"), &log).map_err(io(dir.join("build.log")))?;
    if !ko.is_file() {
        return Err(Error::Invalid { path: ko, what: format!("kbuild succeeded but wrote no module; log:\n{log}") });
    }
    std::fs::write(&stamp, format!("{cc}\n")).map_err(io(&stamp))?;
    let secs = t0.elapsed().as_secs_f64();
    tracing::info!("{MODULE}.ko for {identity}: built in {secs:.1} s ({cc})");
    Ok(Built { ko, cc, secs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_what_the_guest_expects() {
        // The module's name is the Kbuild object's, and the script loads it under that name.
        assert_eq!(KBUILD.trim(), format!("obj-m := {MODULE}.o"));
        assert!(INFECT_SH.contains(&format!("/{MODULE}.ko")));
        assert!(INFECT_SH.contains(&format!("/sys/module/{MODULE}/parameters")));
        assert!(INFECT_SH.contains(VICTIM_COMM));
        assert!(INFECT_SH.starts_with("#!/bin/busybox sh\n"));
        assert!(ROOTKIT_C.contains("MODULE_LICENSE(\"GPL\")"));
        // The hidden task's node ends linked to itself (its exit is then harmless), never poisoned.
        assert!(ROOTKIT_C.contains("INIT_LIST_HEAD(&t->tasks)") && !ROOTKIT_C.contains("list_del(&"));
    }

    #[test]
    fn host_programs_that_run_or_are_absent_are_kept() {
        assert!(runs_here(Path::new("/bin/true")));
        assert!(runs_here(Path::new("/nonexistent/modpost.real-lsb-64")), "nothing to replace");
        // A program whose loader refuses it names the library version it lacks.
        let dir = std::env::temp_dir().join(format!("netdma-rootkit-runs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("modpost");
        std::fs::write(&fake, "#!/bin/sh\necho \"$0: version \\`GLIBC_2.38' not found (required by $0)\" >&2\nexit 1\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(!runs_here(&fake));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn infected_recipes_are_debian_kernels() {
        use crate::lab::recipe::{default_corpus, KernelRecipe};
        for r in default_corpus().iter().filter(|r| r.infected) {
            assert!(matches!(r.kernel, KernelRecipe::Debian { .. }), "{}: the rootkit needs a Debian kernel (data symbols in /proc/kallsyms)", r.name);
        }
    }

    #[test]
    fn missing_headers_say_how_to_fetch_them() {
        let dir = std::env::temp_dir().join(format!("netdma-rootkit-test-{}", std::process::id()));
        let err = build(&Cache::at(&dir), &dir.join("no-such-tree"), "x 1", || unreachable!()).unwrap_err().to_string();
        assert!(err.contains("corpus build --only"), "{err}");
    }
}
