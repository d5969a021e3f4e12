//! What the endpoint answers to one datagram: the pure request → replies step, no sockets.
//!
//! - MRd → CplDs split at the MPS on 64-byte read-completion boundaries (byte count and lower
//!   address per PCIe), data read from the image (through the write overlay); an address the
//!   image does not back → one Cpl with status UR; a source read error → Cpl with status CA.
//! - MWr → refused and counted, unless writes are allowed; then applied to the copy-on-write
//!   overlay, honouring byte enables (never to the image file). Posted: no reply.
//! - Messaging port: GET_BAR4_ADDR, GET_DEV_ID, GET_MSIX_TABLE answered; unknown numbers counted.
//! - Anything else (truncated, malformed, Cpl/CplD, unknown Fmt/Type) → counted, logged at a
//!   limited rate, dropped.
//!
//! Invariant: [`Responder::handle`] never panics on any bytes and produces at most
//! [`MAX_REPLIES_PER_REQUEST`] datagrams per call; every datagram is counted exactly once in
//! the tally it is given (see [`super::stats`]).

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::outbox::{Outbox, MAX_REPLIES_PER_REQUEST};
use super::overlay::Overlay;
use super::stats::Snapshot;
use crate::mem::{MemError, PhysAddr, PhysMem};
use crate::wire::msg::{self, MsixEntry};
use crate::wire::nettlp::{self, PortClass};
use crate::wire::tlp::{self, Completion, CplStatus, DeviceId, MemRequest, Repr};
use crate::wire::WireError;

/// Who the endpoint says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Completer ID in completions: the host's root complex (00:00.0 in the real captures).
    pub completer: DeviceId,
    /// The adapter's own ID, answered to GET_DEV_ID (what libtlp then uses as requester ID).
    pub dev_id: DeviceId,
    /// Answered to GET_BAR4_ADDR.
    pub bar4: u64,
    /// Answered to GET_MSIX_TABLE (16 entries).
    pub msix: Vec<MsixEntry>,
}

impl Default for Identity {
    fn default() -> Identity {
        Identity {
            completer: DeviceId(0x0000),
            dev_id: DeviceId(0x1a00),
            bar4: 0,
            msix: vec![MsixEntry::default(); msg::MSIX_VECTORS],
        }
    }
}

/// How the endpoint answers.
#[derive(Debug, Clone)]
pub struct ResponderConfig {
    /// Max Payload Size of completions (64..=4096, multiple of 64).
    pub mps: u32,
    pub allow_write: bool,
    pub identity: Identity,
}

impl Default for ResponderConfig {
    fn default() -> ResponderConfig {
        ResponderConfig {
            mps: 256,
            allow_write: false,
            identity: Identity::default(),
        }
    }
}

/// Allows one log line per interval and counts what it suppressed.
#[derive(Debug)]
struct LogLimiter {
    state: Mutex<(Option<Instant>, u64)>,
    every: Duration,
}

impl LogLimiter {
    /// `Some(suppressed since last line)` if a line may be logged now.
    fn allow(&self, now: Instant) -> Option<u64> {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match g.0 {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                g.1 += 1;
                None
            }
            _ => {
                let suppressed = g.1;
                *g = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}

/// Answers datagrams from one memory image. Shared by the serve threads.
#[derive(Debug)]
pub struct Responder<M> {
    mem: Overlay<M>,
    cfg: ResponderConfig,
    seq: AtomicU32,
    start: Instant,
    log: LogLimiter,
}

/// Why a datagram was dropped.
#[derive(Debug, thiserror::Error)]
enum Dropped {
    #[error("malformed: {0}")]
    Malformed(WireError),
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
}

impl<M: PhysMem> Responder<M> {
    pub fn new(mem: M, cfg: ResponderConfig, start: Instant) -> Responder<M> {
        let mps = cfg.mps.clamp(64, 4096) & !63;
        Responder {
            mem: Overlay::new(mem),
            cfg: ResponderConfig { mps, ..cfg },
            seq: AtomicU32::new(0),
            start,
            log: LogLimiter {
                state: Mutex::new((None, 0)),
                every: Duration::from_secs(1),
            },
        }
    }

    pub fn config(&self) -> &ResponderConfig {
        &self.cfg
    }

    /// The memory served (image plus write overlay).
    pub fn memory(&self) -> &Overlay<M> {
        &self.mem
    }

    /// Answer one datagram received on a port of class `port` from `src`, appending replies
    /// to `out` (which must have [`MAX_REPLIES_PER_REQUEST`] free slots) and counting it in
    /// `tally`.
    pub fn handle(
        &self,
        now: Instant,
        port: PortClass,
        src: SocketAddrV4,
        dgram: &[u8],
        out: &mut Outbox,
        tally: &mut Snapshot,
    ) {
        tally.datagrams += 1;
        let result = if out.free() < MAX_REPLIES_PER_REQUEST {
            Err(Dropped::Unsupported("no room for replies (caller bug)"))
        } else {
            match port {
                PortClass::Messaging => self.message(dgram, out, tally),
                PortClass::Requester { .. } => self.transaction(now, dgram, out, tally),
                PortClass::Adapter { .. } => Err(Dropped::Unsupported("adapter-issued port")),
            }
        };
        if let Err(why) = result {
            match &why {
                Dropped::Malformed(_) => tally.malformed += 1,
                Dropped::Unsupported(_) => tally.unsupported += 1,
            }
            if let Some(suppressed) = self.log.allow(now) {
                tracing::warn!(%src, ?port, len = dgram.len(), suppressed, "dropped datagram: {why}");
            }
        }
    }

    fn message(&self, dgram: &[u8], out: &mut Outbox, tally: &mut Snapshot) -> Result<(), Dropped> {
        let p = msg::Packet::new_checked(dgram).map_err(Dropped::Malformed)?;
        let id = &self.cfg.identity;
        let reply = match msg::Request::parse(&p).map_err(Dropped::Malformed)? {
            msg::Request::GetBar4Addr => msg::Response::Bar4Addr(id.bar4),
            msg::Request::GetDevId => msg::Response::DevId(id.dev_id),
            msg::Request::GetMsixTable => msg::Response::MsixTable(id.msix.clone()),
            msg::Request::Unknown(_) => return Err(Dropped::Unsupported("unknown message number")),
        };
        let len = reply.buffer_len();
        let slot = out.begin().ok_or(Dropped::Unsupported("outbox full"))?;
        reply.emit(&mut slot[..len]);
        out.commit(len);
        tally.messages += 1;
        Ok(())
    }

    fn transaction(
        &self,
        now: Instant,
        dgram: &[u8],
        out: &mut Outbox,
        tally: &mut Snapshot,
    ) -> Result<(), Dropped> {
        let outer = nettlp::Packet::new_checked(dgram).map_err(Dropped::Malformed)?;
        let p = tlp::Packet::new_checked(outer.payload()).map_err(Dropped::Malformed)?;
        match Repr::parse(&p) {
            Ok(Repr::MemRead(req)) => {
                self.read(now, &req, out, tally);
                Ok(())
            }
            Ok(Repr::MemWrite(req)) => self.write(&req, p.payload(), p.payload_truncated(), tally),
            Ok(Repr::Completion(_)) => Err(Dropped::Unsupported("completion sent to the completer")),
            Err(WireError::Unsupported { .. }) => Err(Dropped::Unsupported("TLP type not MRd/MWr")),
            Err(e) => Err(Dropped::Malformed(e)),
        }
    }

    /// Write the NetTLP header and `cpl` into the next slot; returns the slot's payload area
    /// and the datagram length. The caller commits.
    fn begin_completion<'o>(&self, now: Instant, cpl: &Completion, out: &'o mut Outbox) -> Option<(&'o mut [u8], usize)> {
        let repr = Repr::Completion(*cpl);
        let total = nettlp::HEADER_LEN + repr.buffer_len();
        let slot = out.begin()?.get_mut(..total)?;
        let mut outer = nettlp::Packet::new_unchecked(&mut *slot);
        nettlp::Repr {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) as u16,
            // free-running microseconds, like the adapter's opaque timestamp
            timestamp: now.saturating_duration_since(self.start).as_micros() as u32,
        }
        .emit(&mut outer);
        let mut inner = tlp::Packet::new_unchecked(outer.payload_mut());
        repr.emit(&mut inner);
        let payload = &mut slot[nettlp::HEADER_LEN + repr.header_len()..total];
        Some((payload, total))
    }

    fn error_completion(&self, now: Instant, req: &MemRequest, status: CplStatus, out: &mut Outbox) {
        let cpl = Completion::error(req, self.cfg.identity.completer, status);
        if let Some((_, total)) = self.begin_completion(now, &cpl, out) {
            out.commit(total);
        }
    }

    fn read(&self, now: Instant, req: &MemRequest, out: &mut Outbox, tally: &mut Snapshot) {
        let (addr, len) = req.bytes();
        if let Err(bad) = self.mem.check_backed(addr, u64::from(len)) {
            tracing::trace!(addr, len, bad = %bad, "read not backed: UR");
            tally.reads_ur += 1;
            tally.completions += 1;
            self.error_completion(now, req, CplStatus::UR, out);
            return;
        }
        let mark = out.mark();
        let completer = self.cfg.identity.completer;
        let mut sent = 0u64;
        for chunk in req.completion_chunks(self.cfg.mps) {
            let cpl = Completion::for_chunk(req, completer, &chunk);
            let Some((payload, total)) = self.begin_completion(now, &cpl, out) else {
                out.rollback(mark);
                tally.reads_ca += 1;
                tally.completions += 1;
                self.error_completion(now, req, CplStatus::CA, out);
                return;
            };
            // padding bytes before and after the data are zero, not stale slot contents
            let off = chunk.payload_offset();
            let n = chunk.len as usize;
            payload[..off].fill(0);
            payload[off + n..].fill(0);
            if n > 0 {
                if let Err(e) = self.mem.read(PhysAddr(chunk.addr), &mut payload[off..off + n]) {
                    out.rollback(mark);
                    let status = match e {
                        MemError::Unmapped { .. } => {
                            tally.reads_ur += 1;
                            CplStatus::UR
                        }
                        _ => {
                            tally.reads_ca += 1;
                            CplStatus::CA
                        }
                    };
                    tracing::debug!(addr, len, "read failed: {e}; answering {status}");
                    tally.completions += 1;
                    self.error_completion(now, req, status, out);
                    return;
                }
            }
            out.commit(total);
            tally.completions += 1;
            sent += n as u64;
        }
        tally.reads_ok += 1;
        tally.payload_bytes += sent;
    }

    fn write(&self, req: &MemRequest, payload: &[u8], truncated: bool, tally: &mut Snapshot) -> Result<(), Dropped> {
        if truncated {
            return Err(Dropped::Malformed(WireError::Truncated {
                what: "MWr payload",
                need: usize::from(req.length_dw) * 4,
                have: payload.len(),
            }));
        }
        if !self.cfg.allow_write {
            tally.writes_refused += 1;
            tracing::debug!(addr = req.address, "MWr refused (no --allow-write)");
            return Ok(());
        }
        // apply each run of enabled bytes; check them all first so a write is all or nothing
        let runs = enabled_runs(req.length_dw, req.first_be, req.last_be);
        let base = req.address;
        let all_backed = runs.iter().all(|&(off, n)| {
            base.checked_add(off as u64)
                .is_some_and(|a| self.mem.check_backed(a, n as u64).is_ok())
        });
        if !all_backed {
            tally.writes_unbacked += 1;
            return Ok(());
        }
        for &(off, n) in &runs {
            if let Err(e) = self.mem.write(PhysAddr(base + off as u64), &payload[off..off + n]) {
                tracing::warn!("MWr at {:#x} failed: {e}", base + off as u64);
                tally.writes_unbacked += 1;
                return Ok(());
            }
        }
        tally.writes_applied += 1;
        Ok(())
    }
}

/// Runs `(offset, len)` of enabled bytes in a write payload of `length_dw` DWs: the first DW
/// by `first_be`, the last by `last_be` (a one-DW write uses `first_be` alone), all bytes of
/// the DWs between.
pub fn enabled_runs(length_dw: u16, first_be: u8, last_be: u8) -> Vec<(usize, usize)> {
    let dws = usize::from(length_dw.clamp(1, 1024));
    let be_of = |i: usize| -> u8 {
        if i == 0 {
            first_be & 0xf
        } else if i == dws - 1 {
            last_be & 0xf
        } else {
            0xf
        }
    };
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for i in 0..dws {
        let be = be_of(i);
        for b in 0..4 {
            if be & (1 << b) != 0 {
                let at = i * 4 + b;
                match runs.last_mut() {
                    Some((start, len)) if *start + *len == at => *len += 1,
                    _ => runs.push((at, 1)),
                }
            }
        }
    }
    runs
}

#[cfg(test)]
mod tests;
