//! A lab guest with a shell on a third serial port: the *in-guest agent* the experiments compare
//! the analysis with, and the knobs that scale the guest (processes, RAM).
//!
//! ```text
//!   ttyS0  console.log            (as every lab guest)
//!   ttyS1  ctl.sock   nd-agent    (as every lab guest: truth, panic)
//!   ttyS2  sh.sock    /bin/sh     a shell the host sends command lines to (`ShellGuest::run`)
//!   RAM    /dev/shm/netdma-shell-<name>-<pid>.ram   (memory-backend-file, share=on)
//! ```
//! The guest boots the lab's own kernel and initramfs unchanged; a second cpio archive appended
//! to it (the kernel unpacks concatenated archives in order) adds `/nd-shell-init` — started as
//! `rdinit=`, it puts a shell on ttyS2 and then execs the lab's `/init` — `/bin/nd-sleepers`,
//! a static program that leaves N processes sleeping (the scaling workload), and `/bin/nd-churn`
//! (processes and threads started and exiting continuously, see `lab::churn`).
//!
//! Invariant: every exchange has a deadline. A shell command is answered only when its end
//! marker arrives; a guest that cannot answer (e.g. after a kernel panic) yields
//! [`Error::Timeout`], never a hang. The QEMU child is killed and its RAM file removed when the
//! [`ShellGuest`] is dropped.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::lab::cache::{hash_parts, Cache};
use crate::lab::cpio::Archive;
use crate::lab::error::io;
use crate::lab::qemu::{Guest, GuestSpec};
use crate::lab::truth::{self, Thread};
use crate::lab::{build, guest, recipe, record, Error, Result};

/// `rdinit` of the shell guest: a shell on ttyS2 (no echo), then the lab's `/init` as PID 1.
pub const SHELL_INIT: &str = r#"#!/bin/busybox sh
# rdinit of a lab guest with an in-guest shell (harness/src/lab/shellport.rs): a shell on the third
# serial port, then the lab's own /init (exec, so it stays PID 1).
export PATH=/bin
/bin/busybox setsid /bin/busybox sh -c '/bin/busybox stty -F /dev/ttyS2 -echo; PS1= exec /bin/busybox sh </dev/ttyS2 >/dev/ttyS2 2>&1' &
exec /init
"#;

/// `nd-sleepers N`: leaves N processes sleeping in `pause()` under one holder process, prints
/// `@@sleepers M` (M = how many it could fork) and exits 0 if M == N.
pub const SLEEPERS_C: &str = r#"/* nd-sleepers N: fork N processes that sleep forever (harness/src/lab/shellport.rs). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 0;
    int p[2];
    if (n < 0 || pipe(p) != 0)
        return 1;
    pid_t holder = fork();
    if (holder < 0)
        return 1;
    if (holder == 0) {
        close(p[0]);
        setsid();
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        long made = 0;
        for (; made < n; made++) {
            pid_t c = fork();
            if (c < 0)
                break;
            if (c == 0) {
                close(p[1]);
                for (;;)
                    pause();
            }
        }
        dprintf(p[1], "%ld\n", made);
        close(p[1]);
        for (;;)
            pause();
    }
    close(p[1]);
    char buf[32];
    ssize_t r = read(p[0], buf, sizeof buf - 1);
    if (r <= 0)
        return 1;
    buf[r] = 0;
    printf("@@sleepers %s", buf);
    return atol(buf) == n ? 0 : 2;
}
"#;

const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
const TRUTH_TIMEOUT: Duration = Duration::from_secs(600);
const PANIC_TIMEOUT: Duration = Duration::from_secs(300);
/// A shell answer line longer than this is a protocol error.
const MAX_LINE: usize = 1 << 20;
/// At most this many lines in one answer.
const MAX_LINES: usize = 1_000_000;

/// How to boot the guest.
#[derive(Clone, Debug)]
pub struct ShellGuestOptions {
    /// Guest RAM; `None` = the lab's default ([`recipe::MEMORY_MIB`]).
    pub memory_mib: Option<u32>,
    /// `make -j` if the kernel must be built first.
    pub jobs: u32,
}

impl Default for ShellGuestOptions {
    fn default() -> Self {
        ShellGuestOptions { memory_mib: None, jobs: 2 }
    }
}

/// The lab initramfs with the shell overlay appended; built once per input hash.
pub fn overlay_initramfs(cache: &Cache) -> Result<PathBuf> {
    let base = guest::initramfs(cache)?;
    let hash = hash_parts(&[base.hash.as_bytes(), SHELL_INIT.as_bytes(), SLEEPERS_C.as_bytes(), guest::CHURN_C.as_bytes()]);
    let dir = cache.root().join("shellport").join(&hash[..16]);
    let path = dir.join("initramfs.cpio");
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let sleepers = guest::compile(&dir, "sleepers.c", SLEEPERS_C, "nd-sleepers", &[])?;
    let churn = guest::compile(&dir, "churn.c", guest::CHURN_C, "nd-churn", &["-pthread"])?;
    let mut a = Archive::new();
    add_shell(&mut a);
    a.file("bin/nd-sleepers", 0o755, &sleepers);
    a.file("bin/nd-churn", 0o755, &churn);
    guest::write_appended(&base.path, a, &path)?;
    Ok(path)
}

/// Adds the shell port's files (`/nd-shell-init`, `/dev/ttyS2`) to an archive that is appended to
/// a lab initramfs; [`ShellGuest::launch`] boots it.
pub fn add_shell(a: &mut Archive) {
    a.file("nd-shell-init", 0o755, SHELL_INIT.as_bytes());
    a.char_dev("dev/ttyS2", 0o660, 4, 66);
}

/// What the shell printed for one command, and its exit status.
#[derive(Clone, Debug)]
pub struct ShellAnswer {
    /// Output lines (`\r` removed), without the markers.
    pub lines: Vec<Vec<u8>>,
    pub status: i32,
    /// From sending the command to receiving its end marker.
    pub elapsed: Duration,
}

/// A booted guest with the shell port, the agent's control port and QMP.
pub struct ShellGuest {
    pub name: String,
    pub release: String,
    pub spec: GuestSpec,
    guest: Option<Guest>,
    child: Option<Child>,
    shell: BufReader<UnixStream>,
    shell_w: UnixStream,
    /// Commands sent so far (numbers the markers).
    requests: u64,
}

impl ShellGuest {
    /// Builds (or reuses) the kernel of corpus recipe `name`, boots it with the shell overlay and
    /// waits until the agent reports ready.
    pub fn boot(cache: &Cache, name: &str, opts: &ShellGuestOptions) -> Result<ShellGuest> {
        let r = recipe::find(name).ok_or_else(|| Error::UnknownEntry(name.into()))?;
        let art = build::kernel(cache, &crate::lab::apt::Apt::open(cache)?, &r, opts.jobs)?;
        let initrd = overlay_initramfs(cache)?;
        let pid = std::process::id();
        let run_dir = cache.root().join("shellport").join(format!("run-{name}-{pid}"));
        let shm = Path::new("/dev/shm");
        let ram_dir = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
        let ram = ram_dir.join(format!("netdma-shell-{name}-{pid}.ram"));
        let mut spec = record::guest_spec(&r, &art, &initrd, ram, run_dir);
        if let Some(m) = opts.memory_mib {
            spec.memory_mib = m;
        }
        Self::launch(name, spec)
    }

    /// Boots `spec`, whose initramfs carries the shell port ([`add_shell`]), as `rdinit=/nd-shell-init`
    /// and waits until the agent reports ready.
    pub fn launch(name: &str, mut spec: GuestSpec) -> Result<ShellGuest> {
        spec.append = format!("{} rdinit=/nd-shell-init", spec.append);
        let run_dir = spec.run_dir.clone();
        std::fs::create_dir_all(&run_dir).map_err(io(&run_dir))?;
        let sh_sock = run_dir.join("sh.sock");
        for p in [spec.qmp_path(), spec.ctl_path(), spec.console_path(), sh_sock.clone()] {
            let _ = std::fs::remove_file(p);
        }
        let log = run_dir.join("qemu.log");
        let logf = std::fs::File::create(&log).map_err(io(&log))?;
        let logf2 = logf.try_clone().map_err(io(&log))?;
        let mut cmd = spec.command();
        cmd.arg("-chardev")
            .arg(format!("socket,id=sh,path={},server=on,wait=off", sh_sock.display()))
            .arg("-serial")
            .arg("chardev:sh");
        cmd.stdin(Stdio::null()).stdout(logf).stderr(logf2);
        tracing::debug!("{cmd:?}");
        let mut child = cmd.spawn().map_err(|_| Error::MissingPackages {
            install: "apt-get install -y qemu-system-x86".into(),
        })?;
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(30);
        let shell = loop {
            if let Ok(s) = UnixStream::connect(&sh_sock) {
                break s;
            }
            if let Ok(Some(st)) = child.try_wait() {
                let _ = std::fs::remove_file(&spec.ram_path);
                let detail = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(Error::Command { cmd: "qemu-system-x86_64".into(), status: st.to_string(), detail });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_file(&spec.ram_path);
                return Err(Error::Timeout { what: sh_sock.display().to_string(), secs: 30, console: log });
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let shell_w = shell.try_clone().map_err(io(&sh_sock))?;
        let mut g = ShellGuest {
            name: name.into(),
            release: String::new(),
            spec: spec.clone(),
            guest: None,
            child: Some(child),
            shell: BufReader::new(shell),
            shell_w,
            requests: 0,
        };
        // QMP and the control port exist once the shell socket does (QEMU creates them together).
        g.guest = Some(Guest::attach(spec)?);
        g.release = g.guest()?.control().wait_ready(BOOT_TIMEOUT)?;
        tracing::info!(name, release = %g.release, secs = t0.elapsed().as_secs_f64(), "shell guest ready");
        Ok(g)
    }

    /// QMP and the agent's control port.
    pub fn guest(&mut self) -> Result<&mut Guest> {
        self.guest.as_mut().ok_or_else(|| Error::Protocol("guest already shut down".into()))
    }

    /// The guest's RAM file (`emulator` format `live:pc`).
    pub fn ram_path(&self) -> &Path {
        &self.spec.ram_path
    }

    /// Runs one command line in the guest shell and waits at most `timeout` for its end marker.
    pub fn run(&mut self, command: &str, timeout: Duration) -> Result<ShellAnswer> {
        if command.contains('\n') {
            return Err(Error::Protocol("a shell command must be one line".into()));
        }
        let t0 = Instant::now();
        let deadline = t0 + timeout;
        self.requests += 1;
        let n = self.requests;
        // The markers carry the request number, so a late answer to an earlier request is never
        // taken for this one, and are assembled by the shell (the quotes split them), so an
        // echoed command line could not be mistaken for them.
        let line = format!("echo '@@nd-sh'' {n} begin'; {command}; echo \"@@nd-sh\"' {n} end' $?\n");
        self.shell_w.write_all(line.as_bytes()).map_err(io("sh.sock"))?;
        let what = format!("shell answer to `{command}`");
        let begin = format!("@@nd-sh {n} begin");
        let end = format!("@@nd-sh {n} end ");
        // The shell is interactive (its input is a tty): a prompt may precede the begin marker.
        loop {
            let l = self.read_line(deadline, &what, timeout)?;
            if l.ends_with(begin.as_bytes()) {
                break;
            }
        }
        let mut lines = Vec::new();
        loop {
            let l = self.read_line(deadline, &what, timeout)?;
            if let Some(rest) = l.strip_prefix(end.as_bytes()) {
                let status = String::from_utf8_lossy(rest)
                    .trim()
                    .parse()
                    .map_err(|_| Error::Protocol(format!("bad end marker {:?}", String::from_utf8_lossy(&l))))?;
                return Ok(ShellAnswer { lines, status, elapsed: t0.elapsed() });
            }
            if lines.len() >= MAX_LINES {
                return Err(Error::Protocol(format!("answer longer than {MAX_LINES} lines")));
            }
            lines.push(l);
        }
    }

    fn read_line(&mut self, deadline: Instant, what: &str, timeout: Duration) -> Result<Vec<u8>> {
        let timed_out = || Error::Timeout { what: what.into(), secs: timeout.as_secs(), console: self.spec.console_path() };
        let mut line = Vec::new();
        loop {
            if self.shell.buffer().is_empty() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(timed_out());
                }
                self.shell.get_ref().set_read_timeout(Some(left)).map_err(io("sh.sock"))?;
            }
            let buf = match self.shell.fill_buf() {
                Ok(b) => b,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    if Instant::now() >= deadline {
                        return Err(timed_out());
                    }
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Io { path: "sh.sock".into(), source: e }),
            };
            if buf.is_empty() {
                return Err(Error::Protocol(format!("shell port closed while waiting for {what}")));
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(pos) => (pos, true),
                None => (buf.len(), false),
            };
            line.extend_from_slice(&buf[..take]);
            self.shell.consume(if done { take + 1 } else { take });
            if line.len() > MAX_LINE {
                return Err(Error::Protocol(format!("shell line longer than {MAX_LINE} bytes")));
            }
            if done {
                line.retain(|&b| b != b'\r');
                return Ok(line);
            }
        }
    }

    /// Leaves `n` more processes sleeping in the guest (`nd-sleepers`); returns when they exist.
    pub fn add_sleepers(&mut self, n: u32, timeout: Duration) -> Result<()> {
        let a = self.run(&format!("nd-sleepers {n}"), timeout)?;
        if a.status != 0 {
            let out: Vec<String> = a.lines.iter().map(|l| String::from_utf8_lossy(l).into_owned()).collect();
            return Err(Error::Protocol(format!("nd-sleepers {n} exited {}: {}", a.status, out.join(" | "))));
        }
        Ok(())
    }

    /// The agent's truth now (the guest's own /proc, every thread).
    pub fn truth(&mut self) -> Result<Vec<Thread>> {
        let body = self.guest()?.control().section("truth running", "truth", TRUTH_TIMEOUT)?;
        truth::parse_jsonl(&body).map_err(|what| Error::Invalid { path: self.spec.console_path(), what })
    }

    /// Panics the kernel through the agent (sysrq `c`); returns the agent's last truth, taken
    /// right before, once the console shows the end of the panic.
    pub fn panic(&mut self) -> Result<Vec<Thread>> {
        let console = self.spec.console_path();
        let g = self.guest()?;
        let body = g.control().section("panic", "truth", TRUTH_TIMEOUT)?;
        g.wait_panic(PANIC_TIMEOUT)?;
        truth::parse_jsonl(&body).map_err(|what| Error::Invalid { path: console, what })
    }

    /// Quits QEMU, reaps it and removes the RAM file and sockets.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop();
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(mut g) = self.guest.take() {
            let _ = g.qmp().execute("quit", serde_json::json!({}));
            g.detach();
        }
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.spec.ram_path);
        for sock in ["qmp.sock", "ctl.sock", "sh.sock"] {
            let _ = std::fs::remove_file(self.spec.run_dir.join(sock));
        }
    }
}

impl Drop for ShellGuest {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_scripts_are_well_formed() {
        assert!(SHELL_INIT.starts_with("#!/bin/busybox sh\n"));
        assert!(SHELL_INIT.trim_end().ends_with("exec /init"));
        // The markers the host waits for never appear literally in the command it sends.
        let sent = "echo '@@nd-sh'' 1 begin'; ps; echo \"@@nd-sh\"' 1 end' $?";
        assert!(!sent.contains("@@nd-sh 1 begin") && !sent.contains("@@nd-sh 1 end"));
    }
}
