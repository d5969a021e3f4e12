//! A small QMP (QEMU Machine Protocol) client: JSON objects, one per line, over a Unix socket.
//!
//! Usage: `Qmp::connect(sock, timeout)` waits for QEMU's socket, reads the greeting and
//! negotiates capabilities; `execute(cmd, args)` returns the command's `return` value or its
//! `error` as an `Err`. Asynchronous events seen meanwhile are kept in `events`.
//! Reusable by anything that drives QEMU from tests (copy, don't depend: it is ~100 lines).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

/// A connected, capability-negotiated QMP session.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Events (`{"event": ...}`) received so far, oldest first.
    pub events: Vec<Value>,
}

impl Qmp {
    /// Connect to `path`, retrying until QEMU has created it or `timeout` passes.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("QMP socket {} never came up", path.display()))
                }
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        let writer = stream.try_clone()?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
            events: Vec::new(),
        };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            bail!("unexpected QMP greeting {greeting}");
        }
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    /// Run `cmd` with `args` (an object, or `null` for none) and return its result.
    pub fn execute(&mut self, cmd: &str, args: Value) -> Result<Value> {
        let mut msg = json!({ "execute": cmd });
        if !args.is_null() && args != json!({}) {
            msg["arguments"] = args;
        }
        let mut line = serde_json::to_vec(&msg)?;
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .with_context(|| format!("sending QMP {cmd}"))?;
        loop {
            let reply = self
                .read_message()
                .with_context(|| format!("waiting for the reply to QMP {cmd}"))?;
            if reply.get("event").is_some() {
                self.events.push(reply);
                continue;
            }
            if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = reply.get("error") {
                return Err(anyhow!(
                    "QMP {cmd} failed: {} ({})",
                    err["desc"],
                    err["class"]
                ));
            }
            bail!("unexpected QMP reply to {cmd}: {reply}");
        }
    }

    /// HMP command through QMP's `human-monitor-command`.
    pub fn hmp(&mut self, command_line: &str) -> Result<String> {
        let out = self.execute(
            "human-monitor-command",
            json!({ "command-line": command_line }),
        )?;
        Ok(out.as_str().unwrap_or_default().to_string())
    }

    /// `dump-guest-memory` to `path` in `format` (elf, kdump-zlib, …), detached, polling
    /// `query-dump` until it completes.
    pub fn dump_guest_memory(
        &mut self,
        path: &Path,
        format: &str,
        timeout: Duration,
    ) -> Result<()> {
        self.execute(
            "dump-guest-memory",
            json!({ "paging": false, "protocol": format!("file:{}", path.display()), "detach": true, "format": format }),
        )?;
        let deadline = Instant::now() + timeout;
        loop {
            let q = self.execute("query-dump", json!({}))?;
            match q["status"].as_str() {
                Some("completed") => return Ok(()),
                Some("failed") => bail!(
                    "dump-guest-memory {format} to {} failed: {q}",
                    path.display()
                ),
                _ if Instant::now() > deadline => {
                    bail!("dump-guest-memory {format} still running after {timeout:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn read_message(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line)?;
        if n == 0 {
            bail!("QEMU closed the QMP connection");
        }
        serde_json::from_str(&line).with_context(|| format!("bad QMP line {line:?}"))
    }
}
