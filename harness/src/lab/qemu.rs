//! One QEMU guest: the process, its QMP socket, its control port and its console log.
//!
//! ```text
//!   ttyS0  -serial file:console.log        kernel console (panic detection, debugging)
//!   ttyS1  -chardev socket ctl.sock        control port: nd-agent (harness/guest/agent.c)
//!   QMP    -qmp unix:qmp.sock              stop / cont / dump-guest-memory / quit
//!   RAM    memory-backend-file share=on    the file `emulator serve --format live` reads
//! ```
//! Invariant: every wait has a deadline and reports the console log on timeout; the QEMU child is
//! killed when a `Guest` is dropped unless it was explicitly detached.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::lab::error::io;
use crate::lab::{Error, Result};

/// What to boot and where to put the sockets and logs.
#[derive(Clone, Debug)]
pub struct GuestSpec {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub append: String,
    pub memory_mib: u32,
    pub smp: u32,
    /// The memory-backend-file (in /dev/shm for speed).
    pub ram_path: PathBuf,
    /// Holds qmp.sock, ctl.sock, console.log, qemu.log.
    pub run_dir: PathBuf,
}

impl GuestSpec {
    pub fn qmp_path(&self) -> PathBuf {
        self.run_dir.join("qmp.sock")
    }
    pub fn ctl_path(&self) -> PathBuf {
        self.run_dir.join("ctl.sock")
    }
    pub fn console_path(&self) -> PathBuf {
        self.run_dir.join("console.log")
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new("qemu-system-x86_64");
        c.args(["-machine", "pc,memory-backend=ram", "-nographic", "-monitor", "none", "-no-reboot"])
            .arg("-m")
            .arg(self.memory_mib.to_string())
            .arg("-smp")
            .arg(self.smp.to_string())
            .arg("-object")
            .arg(format!(
                "memory-backend-file,id=ram,size={}M,mem-path={},share=on",
                self.memory_mib,
                self.ram_path.display()
            ))
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&self.initrd)
            .arg("-append")
            .arg(&self.append)
            .arg("-serial")
            .arg(format!("file:{}", self.console_path().display()))
            .arg("-chardev")
            .arg(format!("socket,id=ctl,path={},server=on,wait=off", self.ctl_path().display()))
            .arg("-serial")
            .arg("chardev:ctl")
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", self.qmp_path().display()));
        c
    }
}

/// A running guest.
pub struct Guest {
    pub spec: GuestSpec,
    child: Option<Child>,
    qmp: Qmp,
    ctl: Control,
}

impl Guest {
    /// Starts QEMU and connects QMP and the control port. A `detached` QEMU runs in its own
    /// process group, so it outlives this process and its terminal's Ctrl-C.
    pub fn launch(spec: GuestSpec, detached: bool) -> Result<Guest> {
        std::fs::create_dir_all(&spec.run_dir).map_err(io(&spec.run_dir))?;
        for p in [spec.qmp_path(), spec.ctl_path(), spec.console_path()] {
            let _ = std::fs::remove_file(p);
        }
        let log = spec.run_dir.join("qemu.log");
        let logf = std::fs::File::create(&log).map_err(io(&log))?;
        let logf2 = logf.try_clone().map_err(io(&log))?;
        let mut cmd = spec.command();
        cmd.stdin(Stdio::null()).stdout(logf).stderr(logf2);
        if detached {
            cmd.process_group(0);
        }
        tracing::debug!("{cmd:?}");
        let mut child = cmd.spawn().map_err(|_| Error::MissingPackages {
            install: "apt-get install -y qemu-system-x86".into(),
        })?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let connect = |p: &Path, child: &mut Child| -> Result<UnixStream> {
            loop {
                if let Ok(s) = UnixStream::connect(p) {
                    return Ok(s);
                }
                if let Ok(Some(st)) = child.try_wait() {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    return Err(Error::Command { cmd: "qemu-system-x86_64".into(), status: st.to_string(), detail: text });
                }
                if Instant::now() > deadline {
                    return Err(Error::Timeout { what: format!("{}", p.display()), secs: 30, console: log.clone() });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        let ctl = connect(&spec.ctl_path(), &mut child)?;
        let qmp = connect(&spec.qmp_path(), &mut child)?;
        let qmp = Qmp::handshake(qmp)?;
        let ctl = Control::new(ctl, spec.console_path())?;
        Ok(Guest { spec, child: Some(child), qmp, ctl })
    }

    /// Reattaches to a guest left running by `lab boot`.
    pub fn attach(spec: GuestSpec) -> Result<Guest> {
        let qmp = UnixStream::connect(spec.qmp_path()).map_err(io(spec.qmp_path()))?;
        let ctl = UnixStream::connect(spec.ctl_path()).map_err(io(spec.ctl_path()))?;
        Ok(Guest { qmp: Qmp::handshake(qmp)?, ctl: Control::new(ctl, spec.console_path())?, spec, child: None })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
    pub fn qmp(&mut self) -> &mut Qmp {
        &mut self.qmp
    }
    pub fn control(&mut self) -> &mut Control {
        &mut self.ctl
    }

    /// Waits until the console shows the end of a kernel panic.
    pub fn wait_panic(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let console = self.spec.console_path();
        loop {
            let text = std::fs::read(&console).unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            if text.contains("---[ end Kernel panic") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout { what: "kernel panic".into(), secs: timeout.as_secs(), console });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Leaves QEMU running after this `Guest` is dropped.
    pub fn detach(mut self) {
        self.child.take();
    }

    /// Quits QEMU and reaps it.
    pub fn quit(mut self) -> Result<()> {
        let _ = self.qmp.execute("quit", json!({}));
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A QMP connection (JSON objects, one per line).
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn handshake(s: UnixStream) -> Result<Qmp> {
        s.set_read_timeout(Some(Duration::from_secs(600))).map_err(io("qmp.sock"))?;
        let writer = s.try_clone().map_err(io("qmp.sock"))?;
        let mut q = Qmp { reader: BufReader::new(s), writer };
        let greeting = q.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(Error::Qmp(format!("unexpected greeting {greeting}")));
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn read_message(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).map_err(io("qmp.sock"))?;
        if n == 0 {
            return Err(Error::Qmp("connection closed".into()));
        }
        serde_json::from_str(&line).map_err(|e| Error::Qmp(format!("bad reply {line:?}: {e}")))
    }

    /// Runs one command and returns its `return` value (events in between are logged).
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let msg = json!({"execute": command, "arguments": arguments});
        writeln!(self.writer, "{msg}").map_err(io("qmp.sock"))?;
        loop {
            let m = self.read_message()?;
            if let Some(r) = m.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = m.get("error") {
                return Err(Error::Qmp(format!("{command}: {e}")));
            }
            tracing::debug!("QMP event {m}");
        }
    }

    pub fn stop(&mut self) -> Result<()> {
        self.execute("stop", json!({})).map(|_| ())
    }
    pub fn cont(&mut self) -> Result<()> {
        self.execute("cont", json!({})).map(|_| ())
    }
    /// Synchronous `dump-guest-memory`, paging off. `format` is QMP's (`elf`, `kdump-zlib`, ...).
    pub fn dump(&mut self, path: &Path, format: &str) -> Result<()> {
        let _ = std::fs::remove_file(path);
        self.execute(
            "dump-guest-memory",
            json!({"paging": false, "protocol": format!("file:{}", path.display()), "format": format}),
        )
        .map(|_| ())
    }
}

/// The control port, speaking nd-agent's line protocol.
pub struct Control {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    console: PathBuf,
}

/// Lines beyond this many bytes are a protocol error (kallsyms lines are < 300, truth < 32 KiB).
const MAX_LINE: usize = 1 << 20;
/// At most this many lines in one section.
const MAX_SECTION_LINES: usize = 2_000_000;

impl Control {
    fn new(s: UnixStream, console: PathBuf) -> Result<Control> {
        let writer = s.try_clone().map_err(io("ctl.sock"))?;
        Ok(Control { reader: BufReader::new(s), writer, console })
    }

    fn read_line(&mut self, deadline: Instant, what: &str) -> Result<Vec<u8>> {
        let mut line = Vec::new();
        loop {
            if self.reader.buffer().is_empty() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::Timeout { what: what.into(), secs: 0, console: self.console.clone() });
                }
                self.reader.get_ref().set_read_timeout(Some(left)).map_err(io("ctl.sock"))?;
            }
            let buf = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    continue
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Io { path: "ctl.sock".into(), source: e }),
            };
            if buf.is_empty() {
                return Err(Error::Protocol(format!("closed while waiting for {what}")));
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(pos) => (pos, true),
                None => (buf.len(), false),
            };
            line.extend_from_slice(&buf[..take]);
            self.reader.consume(if done { take + 1 } else { take });
            if line.len() > MAX_LINE {
                return Err(Error::Protocol(format!("line longer than {MAX_LINE} bytes")));
            }
            if done {
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
        }
    }

    pub fn send(&mut self, command: &str) -> Result<()> {
        writeln!(self.writer, "{command}").map_err(io("ctl.sock"))
    }

    /// Waits for the agent's `ready RELEASE` line and returns RELEASE.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let l = self.read_line(deadline, "guest agent ready").map_err(|e| with_secs(e, timeout))?;
            if let Some(r) = l.strip_prefix(b"@@netdma ready ") {
                return Ok(String::from_utf8_lossy(r).trim().to_string());
            }
        }
    }

    /// Sends `command` and collects the section `name` that answers it (body lines, each with its
    /// newline). Lines before the section's `begin` (e.g. repeated `ready`) are skipped.
    pub fn section(&mut self, command: &str, name: &str, timeout: Duration) -> Result<Vec<u8>> {
        self.send(command)?;
        self.next_section(name, timeout)
    }

    /// Collects the next section `name` without sending anything (the agent answers some
    /// commands with several sections). Lines before its begin line are skipped.
    pub fn next_section(&mut self, name: &str, timeout: Duration) -> Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let what = format!("section {name}");
        let begin = format!("@@netdma begin {name}");
        loop {
            let l = self.read_line(deadline, &what).map_err(|e| with_secs(e, timeout))?;
            if l.starts_with(begin.as_bytes()) {
                break;
            }
            if l.starts_with(b"@@netdma error") {
                return Err(Error::Protocol(String::from_utf8_lossy(&l).into_owned()));
            }
        }
        let end = format!("@@netdma end {name} ");
        let mut body = Vec::new();
        let mut lines = 0usize;
        loop {
            let l = self.read_line(deadline, &what).map_err(|e| with_secs(e, timeout))?;
            if let Some(count) = l.strip_prefix(end.as_bytes()) {
                let count: usize = String::from_utf8_lossy(count)
                    .trim()
                    .parse()
                    .map_err(|_| Error::Protocol(format!("bad end line {:?}", String::from_utf8_lossy(&l))))?;
                if count != lines {
                    return Err(Error::Protocol(format!("section {name}: {lines} lines, agent said {count}")));
                }
                return Ok(body);
            }
            if l.starts_with(b"@@netdma ") {
                return Err(Error::Protocol(format!("inside {name}: {:?}", String::from_utf8_lossy(&l))));
            }
            lines += 1;
            if lines > MAX_SECTION_LINES {
                return Err(Error::Protocol(format!("section {name} longer than {MAX_SECTION_LINES} lines")));
            }
            body.extend_from_slice(&l);
            body.push(b'\n');
        }
    }
}

fn with_secs(e: Error, timeout: Duration) -> Error {
    match e {
        Error::Timeout { what, console, .. } => Error::Timeout { what, secs: timeout.as_secs(), console },
        e => e,
    }
}
