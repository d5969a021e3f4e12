//! The one way an experiment runs a child process to completion (`harness ps`, `harness
//! profile`, Volatility, a cold thesis run): stdout and stderr into files (no pipe can fill
//! up), timed from spawn to exit, killed at a timeout; and the one way it finds the workspace
//! binaries it runs ([`sibling_binary`]).
//!
//! Invariant: [`run`] returns after at most `timeout` (plus the time to kill and reap the
//! child), whatever the child does; a killed child is reported as such, never as a failure of
//! its own. (The long-lived `emulator serve` processes of [`served`](crate::served) are
//! servers, not runs: they live as long as their handle.)

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::experiment::RunError;

/// The binary `name` next to the running one (as `cargo build` lays them out), or
/// `$NETDMA_<NAME>` (e.g. `NETDMA_EMULATOR`).
pub fn sibling_binary(name: &str) -> Result<PathBuf, RunError> {
    if let Some(p) = std::env::var_os(format!("NETDMA_{}", name.to_ascii_uppercase())) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| RunError::Prerequisite(format!("current executable: {e}")))?;
    let mut dir = exe.parent();
    while let Some(d) = dir {
        let candidate = d.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        if d.file_name().is_some_and(|n| n == "target") {
            break;
        }
        dir = d.parent();
    }
    Err(RunError::Prerequisite(format!(
        "no `{name}` binary beside {}; run `cargo build --release -p {name}` (or set NETDMA_{})",
        exe.display(),
        name.to_ascii_uppercase()
    )))
}

/// A finished (or killed) child process.
pub struct Finished {
    /// `None` when it was killed at the timeout.
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub wall_ms: f64,
    /// The timeout it ran under.
    pub timeout: Duration,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
    /// The exit status, or how long it ran before it was killed.
    pub fn describe(&self) -> String {
        match self.status {
            Some(s) => s.to_string(),
            None => format!("killed after {} s", self.timeout.as_secs()),
        }
    }
}

/// Runs `cmd` with stdout and stderr in the files `<name>.stdout` and `<name>.stderr` under
/// `dir`, timed from spawn to exit, killed after `timeout`. Children log at `warn` and print no
/// backtraces.
pub fn run(mut cmd: Command, dir: &Path, name: &str, timeout: Duration) -> std::io::Result<Finished> {
    let (out_path, err_path) = (dir.join(format!("{name}.stdout")), dir.join(format!("{name}.stderr")));
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out_path)?)
        .stderr(File::create(&err_path)?)
        .env("RUST_LOG", "warn")
        .env_remove("RUST_BACKTRACE");
    let t0 = Instant::now();
    let mut child = cmd.spawn()?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let wall_ms = t0.elapsed().as_secs_f64() * 1e3;
    Ok(Finished {
        status,
        stdout: std::fs::read(&out_path)?,
        stderr: String::from_utf8_lossy(&std::fs::read(&err_path)?).into_owned(),
        wall_ms,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_reports_its_status_and_output_and_a_hang_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let done = run(cmd, dir.path(), "exit", Duration::from_secs(60)).unwrap();
        assert_eq!((done.status.and_then(|s| s.code()), done.stdout.as_slice(), done.stderr.as_str()), (Some(3), &b"out\n"[..], "err\n"));
        assert!(!done.success());
        let mut cmd = Command::new("sleep");
        cmd.arg("60");
        let done = run(cmd, dir.path(), "hang", Duration::from_millis(200)).unwrap();
        assert!(done.status.is_none() && done.wall_ms < 30_000.0, "{}", done.describe());
        assert_eq!(done.describe(), "killed after 0 s");
    }
}
