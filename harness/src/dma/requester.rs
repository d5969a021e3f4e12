//! The DMA requester: physical memory read over NetTLP, with many tags in flight.
//!
//! ```text
//!   read_batch(ops) ─▶ pieces (4 KiB pages, MRRS) ─▶ tag ─▶ MRd on UDP 0x3000+tag ─▶ adapter
//!        ▲                                                                            │
//!        └── bytes copied into the caller's buffer ◀── Reassembly (per tag) ◀── CplD/Cpl ◀─┘
//!          losses found by later answers ([`super::rack`]) or timeouts (adaptive,
//!          [`super::rto`]) ─▶ the missing bytes only, asked again with a new tag (each byte
//!          at most 1 + retries times)
//! ```
//!
//! One engine behind a mutex does all I/O: it keeps up to `inflight` requests outstanding,
//! waits in epoll until a completion or the earliest deadline, takes completions in batches
//! (`recvmmsg`, UDP GRO) and sends requests in batches per port (`sendmmsg`, UDP GSO).
//!
//! A completion reaches a caller's buffer only if everything about it fits the request it
//! claims to answer: its tag has a request outstanding, it came from the target on that tag's
//! port, it names our requester ID and the completer ID the target has used so far, and its
//! status, length, Byte Count and Lower Address fit bytes of that request still missing
//! ([`super::request`]). Anything else is dropped and counted (`stale`, `duplicates`,
//! `malformed`); the bytes it claimed are asked again if their own completion never comes.
//! Which tag a request gets, and whether it is cut a few bytes short so that no stale copy on
//! that tag can fit it, is [`super::tags`]'s decision (a cut's rest starts the next request).
//! While the network is suspect, pieces inside a page are split to end at varied addresses
//! ([`spread_end`]), so that few requests alias one another and tags seldom wait.
//!
//! Invariants: the requester never sends a Memory Write except through the explicitly named
//! [`Requester::write_for_testing`]; a caller's buffer only receives bytes of completions that
//! fit the request they answer; every read returns, with the bytes or an error naming the
//! lowest failed address, after each of its bytes was asked at most `1 + retries` times, each
//! wait at most [`super::rto::MAX_RTO`].

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use emulator::udp::{self, RecvBatch, SendBatch};
use emulator::mem::{MemError, PhysAddr, PhysMem, PhysRange, ReadOp};
use emulator::wire::msg;
use emulator::wire::nettlp;
use emulator::wire::tlp::{self, CplStatus, DeviceId, MemRequest, Repr};

use super::coalesce;
use super::rack::Rack;
use super::request::{Reassembly, Reject, Verdict};
use super::rto::Rto;
use super::stats::DmaStats;
use super::tags::{self, Absorbed, Clock, TagPool};
use super::target::{PortRule, RequesterId, Target};

/// Why a requester could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DmaError {
    #[error("binding UDP {addr} (another requester or endpoint there? choose local=ADDR or other tags): {source}")]
    Bind { addr: SocketAddrV4, source: std::io::Error },
    #[error("asking {remote} for its device ID (GET_DEV_ID on port 0x2fff): {reason}")]
    DevId { remote: Ipv4Addr, reason: String },
    #[error("finding a local address towards {remote}: {source}")]
    Route { remote: Ipv4Addr, source: std::io::Error },
    #[error("sending a write: {0}")]
    Write(String),
}

/// Local addresses to try, in order. Given one, just it. Towards a non-loopback target, the
/// route's source address. Towards a loopback target any loopback address will do (the
/// endpoint answers to the source), so 127.0.0.254 (no endpoint's conventional address) and
/// then addresses in 127.254.0.0/16 derived from the process id, until one is free.
fn local_candidates(target: &Target) -> Result<Vec<Ipv4Addr>, DmaError> {
    let remote = target.remote;
    if let Some(l) = target.local {
        return Ok(vec![l]);
    }
    if remote.is_loopback() {
        let pid = std::process::id();
        let mut v = vec![Ipv4Addr::new(127, 0, 0, 254)];
        v.extend((0..32u32).map(|k| {
            let x = emulator::pattern::splitmix64(u64::from(pid) << 8 | u64::from(k));
            Ipv4Addr::new(127, 254, (x >> 8) as u8, (x as u8).max(1))
        }));
        v.retain(|a| *a != remote);
        return Ok(v);
    }
    let route = |source| DmaError::Route { remote, source };
    let s = UdpSocket::bind("0.0.0.0:0").map_err(route)?;
    s.connect(SocketAddrV4::new(remote, nettlp::MSG_PORT)).map_err(route)?;
    match s.local_addr().map_err(route)? {
        std::net::SocketAddr::V4(a) => Ok(vec![*a.ip()]),
        std::net::SocketAddr::V6(_) => Ok(vec![Ipv4Addr::UNSPECIFIED]),
    }
}

/// Sockets, their peers, and the socket index of each tag.
type Bound = (Vec<UdpSocket>, Vec<SocketAddrV4>, Box<[usize; 256]>);

/// One socket per tag, bound to `local:0x3000+tag` and connected to the same port at the
/// target.
fn bind_ports(local: Ipv4Addr, target: &Target) -> Result<Bound, DmaError> {
    let mut socks = Vec::new();
    let mut peers = Vec::new();
    let mut sock_of_tag = Box::new([usize::MAX; 256]);
    for t in target.tag_list() {
        let port = nettlp::requester_port(t);
        let addr = SocketAddrV4::new(local, port);
        let s = if target.reuseaddr { udp::bind_reusable(addr) } else { UdpSocket::bind(addr) }
            .map_err(|source| DmaError::Bind { addr, source })?;
        s.connect(SocketAddrV4::new(target.remote, port))
            .map_err(|source| DmaError::Bind { addr, source })?;
        // the first tag's socket carries every request with port=first
        let size = if socks.is_empty() { 4 << 20 } else { 256 << 10 };
        udp::size_buffers(&s, size);
        udp::enable_gro(&s);
        sock_of_tag[usize::from(t)] = socks.len();
        socks.push(s);
        peers.push(SocketAddrV4::new(target.remote, port));
    }
    Ok((socks, peers, sock_of_tag))
}

/// Ask the adapter's messaging port for its device ID (libtlp `-R`).
pub fn query_dev_id(local: Ipv4Addr, remote: Ipv4Addr, timeout: Duration) -> Result<DeviceId, DmaError> {
    let err = |reason: String| DmaError::DevId { remote, reason };
    let s = UdpSocket::bind(SocketAddrV4::new(local, 0)).map_err(|e| err(e.to_string()))?;
    s.connect(SocketAddrV4::new(remote, nettlp::MSG_PORT)).map_err(|e| err(e.to_string()))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| err(e.to_string()))?;
    let mut req = [0u8; msg::REQUEST_LEN];
    msg::Request::GetDevId.emit(&mut msg::Packet::new_unchecked(&mut req[..]));
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        s.send(&req).map_err(|e| err(e.to_string()))?;
        match s.recv(&mut buf) {
            Ok(n) => match msg::Response::parse(msg::Request::GetDevId, &buf[..n]) {
                Ok(msg::Response::DevId(id)) => return Ok(id),
                other => return Err(err(format!("unexpected reply {other:?}"))),
            },
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) => return Err(err(e.to_string())),
        }
    }
    Err(err(format!("no reply after 3 tries of {timeout:?}")))
}

/// A part of a caller's read that one MRd asks for.
#[derive(Debug, Clone, Copy)]
struct Piece {
    op: usize,
    off: usize,
    addr: u64,
    len: u32,
    attempts: u32,
}

#[derive(Debug)]
struct Inflight {
    piece: Piece,
    asm: Reassembly,
    sent: Instant,
    deadline: Instant,
}

/// The request in flight on each tag. Invariant: bit `t` of `live` is set exactly when
/// `by_tag[t]` holds a request, and `count` is the number of bits set; so walking the requests
/// in flight costs their number, not the 256 tags (per completion, on the hot path).
struct Slots {
    by_tag: Vec<Option<Inflight>>,
    live: [u64; 4],
    count: usize,
}

impl Slots {
    fn new() -> Slots {
        Slots { by_tag: (0..256).map(|_| None).collect(), live: [0; 4], count: 0 }
    }

    fn put(&mut self, tag: u8, inf: Inflight) {
        let t = usize::from(tag);
        if self.by_tag[t].replace(inf).is_none() {
            self.live[t / 64] |= 1 << (t % 64);
            self.count += 1;
        }
    }

    fn take(&mut self, tag: usize) -> Option<Inflight> {
        let inf = self.by_tag.get_mut(tag)?.take()?;
        self.live[tag / 64] &= !(1 << (tag % 64));
        self.count -= 1;
        Some(inf)
    }

    fn get(&self, tag: usize) -> Option<&Inflight> {
        self.by_tag.get(tag)?.as_ref()
    }

    fn get_mut(&mut self, tag: usize) -> Option<&mut Inflight> {
        self.by_tag.get_mut(tag)?.as_mut()
    }

    fn len(&self) -> usize {
        self.count
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The tags with a request in flight, in increasing order.
    fn tags(&self) -> impl Iterator<Item = usize> + '_ {
        self.live.iter().enumerate().flat_map(|(w, &bits)| {
            let mut rest = bits;
            std::iter::from_fn(move || {
                (rest != 0).then(|| {
                    let b = rest.trailing_zeros() as usize;
                    rest &= rest - 1;
                    w * 64 + b
                })
            })
        })
    }
}

/// MRd datagrams waiting to be sent on one port.
struct SendQueue {
    bufs: Vec<[u8; 24]>,
    lens: Vec<usize>,
}

struct Engine {
    socks: Vec<UdpSocket>,
    /// The remote address and port each socket is connected to.
    peers: Vec<SocketAddrV4>,
    /// Socket index of each tag's port (0x3000 + tag); `usize::MAX` for tags not used.
    sock_of_tag: Box<[usize; 256]>,
    port: PortRule,
    /// The completer ID of the first completion taken; later ones must carry the same.
    completer: Option<DeviceId>,
    epoll: udp::Epoll,
    /// Sockets found readable by the last wait.
    ready: Vec<usize>,
    recv: RecvBatch,
    send: SendBatch,
    queues: Vec<SendQueue>,
    /// Sockets whose queue holds requests not yet sent, each once.
    pending: Vec<usize>,
    tags: TagPool,
    slots: Slots,
    /// Every datagram that arrived before this was taken (see [`super::tags`]).
    drained: Instant,
    next_expiry: Option<Instant>,
    retry: VecDeque<Piece>,
    rto: Rto,
    rack: Rack,
    /// When the target was last heard from (any datagram from it, a late answer to a request
    /// given up included): a request's timer runs from this or its send, whichever is later
    /// (see [`Engine::expire`]).
    heard: Option<Instant>,
    /// For each tag held since its request was taken as lost by [`Rack`]: when it was.
    lost_early: Box<[Option<Instant>; 256]>,
    stats: DmaStats,
    seq: u16,
}

/// Physical memory of a remote machine, read over NetTLP.
pub struct Requester {
    target: Target,
    local: Ipv4Addr,
    requester_id: DeviceId,
    engine: Mutex<Engine>,
}

impl std::fmt::Debug for Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requester")
            .field("target", &self.target.to_string())
            .field("local", &self.local)
            .field("requester_id", &self.requester_id)
            .finish()
    }
}

/// Messages per receive; each slot holds a whole coalesced (GRO) message of datagrams.
const RECV_BATCH: usize = 32;

impl Requester {
    /// Bind the ports of `target`'s tags and learn the requester ID.
    pub fn connect(target: &Target) -> Result<Requester, DmaError> {
        let candidates = local_candidates(target)?;
        let mut bound = None;
        let mut last_err = None;
        for &local in &candidates {
            match bind_ports(local, target) {
                Ok(b) => {
                    bound = Some((local, b));
                    break;
                }
                Err(e @ DmaError::Bind { .. }) => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        let Some((local, (socks, peers, sock_of_tag))) = bound else {
            return Err(last_err.unwrap_or_else(|| DmaError::Route {
                remote: target.remote,
                source: std::io::Error::other("no local address to try"),
            }));
        };
        let requester_id = match target.requester {
            RequesterId::Fixed(id) => id,
            RequesterId::Auto => query_dev_id(local, target.remote, Duration::from_millis(500))?,
        };
        let tags = target.tag_list();
        let refs: Vec<&UdpSocket> = socks.iter().collect();
        let epoll = udp::Epoll::new(&refs).map_err(|e| DmaError::Bind { addr: SocketAddrV4::new(local, 0), source: e })?;
        let queues = socks
            .iter()
            .map(|_| SendQueue { bufs: Vec::new(), lens: Vec::new() })
            .collect();
        let engine = Engine {
            socks,
            peers,
            sock_of_tag,
            port: target.port,
            completer: None,
            epoll,
            ready: Vec::new(),
            recv: RecvBatch::new(RECV_BATCH, udp::MAX_UDP),
            send: SendBatch::new(256),
            queues,
            tags: TagPool::new(&tags),
            pending: Vec::new(),
            slots: Slots::new(),
            drained: Instant::now(),
            next_expiry: None,
            retry: VecDeque::new(),
            rto: Rto::new(target.timeout),
            rack: Rack::default(),
            heard: None,
            lost_early: Box::new([None; 256]),
            stats: DmaStats::default(),
            seq: 0,
        };
        tracing::debug!(%local, requester = %requester_id, "NetTLP requester for {target}");
        Ok(Requester {
            target: target.clone(),
            local,
            requester_id,
            engine: Mutex::new(engine),
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn local_addr(&self) -> Ipv4Addr {
        self.local
    }

    pub fn requester_id(&self) -> DeviceId {
        self.requester_id
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the counters.
    pub fn stats(&self) -> DmaStats {
        self.engine().stats.clone()
    }

    /// Zero the counters.
    pub fn reset_stats(&self) {
        self.engine().stats = DmaStats::default();
    }

    /// Read with one request outstanding at a time (libtlp's `dma_read` behaviour).
    pub fn read_blocking(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let mut ops = [ReadOp { addr, buf }];
        self.run(&mut ops, 1).pop().unwrap_or(Ok(()))
    }

    /// Read `ops` each with its own requests, none joined with another ([`PhysMem::read_batch`]
    /// joins nearby reads): what a benchmark of request sizes needs.
    pub fn read_batch_as_asked(&self, ops: &mut [ReadOp<'_>]) -> Vec<Result<(), MemError>> {
        let inflight = usize::from(self.target.inflight.max(1));
        self.engine().run(&self.target, self.requester_id, ops, inflight)
    }

    /// Read `ops` with nearby ones joined ([`super::coalesce`]). A joined span that fails is
    /// read again as its reads, each alone, so that each fails or succeeds as it would have and
    /// an error names its own lowest failed address.
    fn run(&self, ops: &mut [ReadOp<'_>], inflight: u16) -> Vec<Result<(), MemError>> {
        let inflight = usize::from(inflight.max(1));
        let mut e = self.engine();
        let reads: Vec<(u64, usize)> = ops.iter().map(|op| (op.addr.0, op.buf.len())).collect();
        let plan = coalesce::plan(&reads, self.target.mrrs);
        if plan.is_identity() {
            return e.run(&self.target, self.requester_id, ops, inflight);
        }
        // A span of one read reads into the caller's buffer; a joined one into its own.
        let mut joined: Vec<Vec<u8>> = plan.spans.iter().map(|s| if plan.members(s).len() > 1 { vec![0u8; s.len] } else { Vec::new() }).collect();
        let span_results = {
            let mut alone: Vec<Option<&mut ReadOp<'_>>> = ops.iter_mut().map(Some).collect();
            let mut span_ops: Vec<ReadOp<'_>> = plan
                .spans
                .iter()
                .zip(joined.iter_mut())
                .filter_map(|(s, buf)| match plan.members(s) {
                    &[i] => alone[i].take().map(|op| ReadOp { addr: op.addr, buf: &mut op.buf[..] }),
                    _ => Some(ReadOp { addr: PhysAddr(s.addr), buf: &mut buf[..] }),
                })
                .collect();
            e.run(&self.target, self.requester_id, &mut span_ops, inflight)
        };
        let mut results: Vec<Result<(), MemError>> = (0..ops.len()).map(|_| Ok(())).collect();
        let mut again: Vec<usize> = Vec::new();
        for ((s, buf), r) in plan.spans.iter().zip(&joined).zip(span_results) {
            match (plan.members(s), r) {
                (&[i], r) => results[i] = r,
                (members, Ok(())) => {
                    for &i in members {
                        let off = (ops[i].addr.0 - s.addr) as usize;
                        let len = ops[i].buf.len();
                        ops[i].buf.copy_from_slice(&buf[off..off + len]);
                    }
                }
                (members, Err(_)) => again.extend_from_slice(members),
            }
        }
        if !again.is_empty() {
            again.sort_unstable();
            let mut retry: Vec<ReadOp<'_>> = ops
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| again.binary_search(i).is_ok())
                .map(|(_, op)| ReadOp { addr: op.addr, buf: &mut op.buf[..] })
                .collect();
            let retried = e.run(&self.target, self.requester_id, &mut retry, inflight);
            for (&i, r) in again.iter().zip(retried) {
                results[i] = r;
            }
        }
        results
    }

    /// TEST API, not for monitoring: post Memory Writes of `data` at `addr` (split at 4 KiB
    /// pages and 256 bytes), then read one written byte back on the same port, which PCIe
    /// ordering makes the write's completion barrier. Exists to test `emulator serve
    /// --allow-write`; [`PhysMem`] never writes.
    pub fn write_for_testing(&self, addr: PhysAddr, data: &[u8]) -> Result<(), DmaError> {
        if data.is_empty() {
            return Ok(());
        }
        let mut e = self.engine();
        // the tag the read-back barrier will get (the same choice at the same drain point)
        let clock = e.clock(Instant::now(), &self.target);
        let tag = e.tags.peek(&clock, addr.0, 1).ok_or_else(|| DmaError::Write("no free tag".into()))?;
        let sock = e.send_sock(tag);
        for (a, n) in super::request::split(addr.0, data.len(), 256, None) {
            let req = MemRequest::new(self.requester_id, tag, a, n)
                .ok_or_else(|| DmaError::Write(format!("cannot encode a write at {a:#x}")))?;
            let repr = Repr::MemWrite(req);
            let mut d = vec![0u8; nettlp::HEADER_LEN + repr.buffer_len()];
            let mut outer = nettlp::Packet::new_unchecked(&mut d[..]);
            nettlp::Repr::default().emit(&mut outer);
            let mut p = tlp::Packet::new_unchecked(outer.payload_mut());
            repr.emit(&mut p);
            let off = (a & 3) as usize;
            let from = (a - addr.0) as usize;
            p.payload_mut()[off..off + n as usize].copy_from_slice(&data[from..from + n as usize]);
            e.socks[sock].send(&d).map_err(|err| DmaError::Write(err.to_string()))?;
        }
        // the read barrier: the same tag (see above) on the same port
        let mut b = [0u8; 1];
        let mut ops = [ReadOp { addr, buf: &mut b }];
        let r = e.run(&self.target, self.requester_id, &mut ops, 1);
        match r.into_iter().next() {
            Some(Ok(())) => Ok(()),
            Some(Err(err)) => Err(DmaError::Write(format!("read-back barrier failed: {err}"))),
            None => Ok(()),
        }
    }
}

/// What the requester did, in the log when it goes (`RUST_LOG=harness::dma=debug`).
impl Drop for Requester {
    fn drop(&mut self) {
        tracing::debug!(target: "harness::dma", "{}", self.engine().stats);
    }
}

impl PhysMem for Requester {
    fn read_phys(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let mut ops = [ReadOp { addr, buf }];
        self.run(&mut ops, self.target.inflight).pop().unwrap_or(Ok(()))
    }

    fn read_batch(&self, ops: &mut [ReadOp<'_>]) -> Vec<Result<(), MemError>> {
        self.run(ops, self.target.inflight)
    }

    fn ranges(&self) -> Vec<PhysRange> {
        Vec::new()
    }

    fn ranges_are_ram(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        format!(
            "NetTLP DMA to {} from {} (requester {}, {} tags from {}, {} in flight, MRRS {})",
            self.target.remote,
            self.local,
            self.requester_id,
            self.target.tags,
            self.target.first_tag,
            self.target.inflight,
            self.target.mrrs
        )
    }
}

/// Keep the error with the lowest address for op `op`.
fn fail(results: &mut [Option<MemError>], op: usize, err: MemError) {
    if let Some(slot) = results.get_mut(op) {
        if slot.as_ref().is_none_or(|old| err.addr() < old.addr()) {
            *slot = Some(err);
        }
    }
}

/// Walks the caller's ops, piece by piece.
struct Cursor {
    op: usize,
    pos: usize,
}

impl Cursor {
    /// The next piece; with `spread`, one that ends where few requests end (see [`spread_end`])
    /// (and whether it was shortened for that).
    fn next(&mut self, ops: &[ReadOp<'_>], failed: &[Option<MemError>], mrrs: u32, spread: bool) -> Option<(Piece, bool)> {
        while self.op < ops.len() {
            let op = &ops[self.op];
            if failed[self.op].is_some() || self.pos >= op.buf.len() {
                self.op += 1;
                self.pos = 0;
                continue;
            }
            let Some(addr) = op.addr.0.checked_add(self.pos as u64) else {
                self.op += 1;
                self.pos = 0;
                continue;
            };
            // Spread pieces end where `spread_end` puts them; the others on the completion grid.
            let grid = (!spread).then_some(super::request::CUT_MPS);
            let (a, whole) = super::request::split(addr, op.buf.len() - self.pos, mrrs, grid).next()?;
            let n = if spread && self.pos + whole as usize != op.buf.len() { spread_end(a, whole) } else { whole };
            let piece = Piece { op: self.op, off: self.pos, addr: a, len: n, attempts: 0 };
            self.pos += n as usize;
            return Some((piece, n < whole));
        }
        None
    }

    /// `piece`, the last one handed out, is asked for only its first `len` bytes: the next
    /// piece starts after them (so one cut shifts the following pieces instead of leaving a
    /// short piece behind). False if `piece` is not the last one handed out.
    fn take_back(&mut self, piece: &Piece, len: u32) -> bool {
        let last = self.op == piece.op && self.pos == piece.off + piece.len as usize;
        if last {
            self.pos = piece.off + len as usize;
        }
        last
    }

    fn done(&self, ops: &[ReadOp<'_>]) -> bool {
        self.op >= ops.len()
    }
}

/// A piece at `addr` of `len` bytes that does not end the read, shortened if need be so that
/// it ends neither at a multiple of 128 nor at the same residue as every piece of other pages:
/// on a suspect network a request may not alias ([`tags::aliases`]) a recent request on its
/// tag, and aligned pieces all alias one another, so tags would run out of requests they may
/// carry. A piece that ends its page must end there; pieces inside a page end at a residue
/// drawn per page, so the page ends are the only common one.
fn spread_end(addr: u64, len: u32) -> u32 {
    let end = addr + u64::from(len);
    if end & 0x7f != 0 || end & 0xfff == 0 {
        return len;
    }
    let k = 1 + (emulator::pattern::splitmix64(addr >> 12) % 31) as u32;
    if len > 4 * k { len - 4 * k } else { len }
}

impl Engine {
    /// The socket a request with `tag` goes out on.
    fn send_sock(&self, tag: u8) -> usize {
        match self.port {
            PortRule::Tag => self.sock_of_tag[usize::from(tag)],
            PortRule::First => 0,
        }
    }

    /// The times tag decisions are made with: the rest of a tag is the target's lifetime, or
    /// four times the RTO if longer (not the lateness seen: see [`super::tags`]).
    fn clock(&self, now: Instant, t: &Target) -> Clock {
        let lifetime = t.lifetime.max(self.rto.estimate() * 4).min(tags::MAX_LIFETIME);
        Clock { now, drained: self.drained, lifetime }
    }

    fn run(&mut self, t: &Target, rid: DeviceId, ops: &mut [ReadOp<'_>], max_inflight: usize) -> Vec<Result<(), MemError>> {
        let mut results: Vec<Option<MemError>> = (0..ops.len()).map(|_| None).collect();
        // ops whose range wraps the address space fail up front
        for (i, op) in ops.iter().enumerate() {
            if op.addr.0.checked_add(op.buf.len() as u64).is_none() {
                fail(&mut results, i, MemError::Unmapped { addr: PhysAddr(u64::MAX) });
            }
        }
        let mut cursor = Cursor { op: 0, pos: 0 };
        let mut now = Instant::now();
        loop {
            let clock = self.clock(now, t);
            // issue as many requests as allowed
            let mut tag_wake = None;
            while self.slots.len() < max_inflight {
                let piece = match self.retry.pop_front() {
                    Some(p) => p,
                    None => match cursor.next(ops, &results, t.mrrs, self.tags.suspect()) {
                        Some((p, cut)) => {
                            self.stats.cuts += u64::from(cut);
                            p
                        }
                        None => break,
                    },
                };
                if results[piece.op].is_some() {
                    continue;
                }
                let (tag, len) = match self.tags.acquire(&clock, piece.addr, piece.len) {
                    Ok(x) => x,
                    Err(wake) => {
                        tag_wake = wake;
                        self.retry.push_front(piece);
                        break;
                    }
                };
                if len < piece.len {
                    // cut short so it aliases no recent request on its tag: the rest next
                    self.stats.cuts += 1;
                    if !cursor.take_back(&piece, len) {
                        let rest = Piece { off: piece.off + len as usize, addr: piece.addr + u64::from(len), len: piece.len - len, ..piece };
                        self.retry.push_front(rest);
                    }
                }
                let wait = self.rto.timeout_for(piece.attempts);
                self.issue(rid, tag, Piece { len, ..piece }, now, wait);
            }
            self.flush();
            if self.slots.is_empty() && self.retry.is_empty() && cursor.done(ops) {
                break;
            }
            // wait for a completion, the earliest deadline, or a tag done resting
            let mut wake = self.next_expiry;
            if let Some(w) = tag_wake {
                wake = Some(wake.map_or(w, |x| x.min(w)));
            }
            let before_wait = Instant::now();
            let timeout = wake.map(|w| w.saturating_duration_since(before_wait));
            let complete = match self.epoll.wait_spinning(timeout, t.spin) {
                Ok(r) => {
                    self.ready.clear();
                    self.ready.extend_from_slice(r);
                    self.epoll.complete()
                }
                Err(e) => {
                    tracing::warn!("epoll failed: {e}");
                    std::thread::sleep(Duration::from_millis(1));
                    false
                }
            };
            now = Instant::now();
            if self.receive(now, t, rid, ops, &mut results) && complete {
                self.drained = before_wait;
            }
            if self.rack.take_changed() {
                let lost = self.slots.tags().filter_map(|tag| self.slots.get(tag).and_then(|inf| self.rack.lost_at(inf.sent))).min();
                if let Some(at) = lost {
                    self.next_expiry = Some(self.next_expiry.map_or(at, |x| x.min(at)));
                }
            }
            self.stats.max_lateness = self.stats.max_lateness.max(self.tags.lateness());
            if self.next_expiry.is_some_and(|x| x <= now) {
                self.expire(now, t, &mut results);
            }
        }
        self.stats.reads += ops.len() as u64;
        results.into_iter().map(|r| r.map_or(Ok(()), Err)).collect()
    }

    fn issue(&mut self, rid: DeviceId, tag: u8, piece: Piece, now: Instant, timeout: Duration) {
        let Some(req) = MemRequest::new(rid, tag, piece.addr, piece.len) else {
            return; // cannot happen: pieces are at most 4096 bytes inside one page
        };
        let repr = Repr::MemRead(req);
        let len = nettlp::HEADER_LEN + repr.buffer_len();
        let mut buf = [0u8; 24];
        let mut outer = nettlp::Packet::new_unchecked(&mut buf[..len]);
        self.seq = self.seq.wrapping_add(1);
        nettlp::Repr { seq: self.seq, timestamp: 0 }.emit(&mut outer);
        repr.emit(&mut tlp::Packet::new_unchecked(outer.payload_mut()));
        let sock = self.send_sock(tag);
        let q = &mut self.queues[sock];
        if q.lens.is_empty() {
            self.pending.push(sock);
        }
        q.bufs.push(buf);
        q.lens.push(len);
        let deadline = now + timeout;
        self.lost_early[usize::from(tag)] = None;
        self.slots.put(tag, Inflight { piece, asm: Reassembly::new(piece.addr, piece.len), sent: now, deadline });
        self.stats.requests += 1;
        self.next_expiry = Some(self.next_expiry.map_or(deadline, |x| x.min(deadline)));
    }

    fn flush(&mut self) {
        for i in self.pending.drain(..) {
            let q = &mut self.queues[i];
            let fd = self.socks[i].as_raw_fd();
            let dst = self.peers[i];
            let msgs = q.bufs.iter().zip(&q.lens).map(|(b, &l)| (dst, &b[..l]));
            let refused = self.send.send(fd, msgs);
            if refused > 0 {
                tracing::debug!(refused, "requests refused by the kernel (will time out and retry)");
            }
            q.bufs.clear();
            q.lens.clear();
        }
    }

    /// Take every datagram queued on the ready sockets; false if a socket could not be read
    /// to the end.
    fn receive(&mut self, now: Instant, t: &Target, rid: DeviceId, ops: &mut [ReadOp<'_>], results: &mut [Option<MemError>]) -> bool {
        let mut any = false;
        let mut drained = true;
        let mut conflicts = Vec::new();
        for k in 0..self.ready.len() {
            let sock = self.ready[k];
            let Some(fd) = self.socks.get(sock).map(|s| s.as_raw_fd()) else { continue };
            let mut errors = 0;
            loop {
                let n = match self.recv.recv(fd) {
                    Ok(n) => n,
                    // e.g. ECONNREFUSED after an ICMP error: the queue may still hold datagrams
                    Err(e) if errors < 4 => {
                        errors += 1;
                        tracing::debug!("receiving completions: {e}");
                        continue;
                    }
                    Err(_) => {
                        drained = false;
                        break;
                    }
                };
                for (src, bytes, truncated) in self.recv.datagrams() {
                    if truncated || *src.ip() != t.remote {
                        self.stats.malformed += 1;
                        continue;
                    }
                    any = true;
                    let ids = Ids { requester: rid, completer: &mut self.completer, sock, sock_of_tag: &self.sock_of_tag, port: self.port };
                    let conflict = take_completion(
                        bytes, now, self.drained, ids, ops, results, &mut self.slots, &mut self.tags,
                        &mut self.rto, &mut self.rack, &mut self.lost_early, &mut self.stats,
                    );
                    conflicts.extend(conflict);
                }
                if n < self.recv.capacity() {
                    break;
                }
            }
        }
        for tag in conflicts {
            self.abandon(tag, now, t, results);
        }
        if any {
            self.heard = Some(now);
        }
        drained
    }

    /// Two copies of the same bytes of the request on `tag` differ: one is not its answer.
    /// Give it up (the tag is held like a timed-out one's) and ask again for all of it.
    fn abandon(&mut self, tag: u8, now: Instant, t: &Target, results: &mut [Option<MemError>]) {
        let Some(inf) = self.slots.take(usize::from(tag)) else { return };
        self.stats.conflicts += 1;
        self.stats.bytes -= u64::from(inf.asm.received());
        self.tags.anomaly();
        self.tags.hold(tag, inf.asm, now, inf.deadline.saturating_duration_since(inf.sent));
        let piece = inf.piece;
        if piece.attempts < t.retries {
            self.stats.retries += 1;
            self.retry.push_back(Piece { attempts: piece.attempts + 1, ..piece });
        } else {
            self.stats.timeouts += 1;
            fail(results, piece.op, MemError::Timeout { addr: PhysAddr(piece.addr), attempts: piece.attempts + 1 });
        }
    }

    /// Take back the requests that are due: lost by [`Rack`] (a later request was answered), or
    /// timed out. A request's timer runs from its send or the last datagram heard from the
    /// target, whichever is later (RFC 6298 5.3 restarts the timer on progress): deep in a
    /// pipeline a request waits behind the others' answers, and after a stall of the completer
    /// its retries wait behind the late answers to what was given up. Timing each from its send
    /// alone asked again for bytes merely queued, round after round with the wait doubling,
    /// until every tag was held with no answer to free it (at 64-128 in flight: thousands of
    /// late copies per listing and stalls of up to 1 s, [`tags::MAX_LIFETIME`]). While answers
    /// flow, a lost request is [`Rack`]'s to find; the timer covers a path gone silent.
    fn expire(&mut self, now: Instant, t: &Target, results: &mut [Option<MemError>]) {
        let mut next: Option<Instant> = None;
        let live: Vec<usize> = self.slots.tags().collect();
        for tag in live {
            let Some(inf) = self.slots.get(tag) else { continue };
            let timer = timer_end(inf.sent, inf.deadline, self.heard);
            let due = self.rack.lost_at(inf.sent).map_or(timer, |at| at.min(timer));
            if due > now {
                next = Some(next.map_or(due, |x| x.min(due)));
                continue;
            }
            let Some(inf) = self.slots.take(tag) else { continue };
            let piece = inf.piece;
            if timer <= now {
                self.rto.timed_out(inf.sent, now);
            } else {
                // a later request was answered: lost, the path is alive (no back-off)
                self.stats.early += 1;
                self.lost_early[tag] = Some(now);
            }
            let missing = inf.asm.missing();
            // its completions may still come: hold the tag (see super::tags)
            self.tags.hold(tag as u8, inf.asm, now, inf.deadline.saturating_duration_since(inf.sent));
            // ask again for what is still missing, and only that
            for (off, n) in missing {
                let part = Piece {
                    off: piece.off + off as usize,
                    addr: piece.addr + u64::from(off),
                    len: n,
                    attempts: piece.attempts + 1,
                    ..piece
                };
                if piece.attempts < t.retries {
                    self.stats.retries += 1;
                    self.retry.push_back(part);
                } else {
                    self.stats.timeouts += 1;
                    fail(results, piece.op, MemError::Timeout { addr: PhysAddr(part.addr), attempts: part.attempts });
                    break;
                }
            }
        }
        self.next_expiry = next;
    }
}

/// When the timer of a request sent at `sent` with its wait ending at `deadline` runs out:
/// the wait counted from the send, or from the last time the target was heard, whichever ends
/// later (see [`Engine::expire`]).
fn timer_end(sent: Instant, deadline: Instant, heard: Option<Instant>) -> Instant {
    let wait = deadline.saturating_duration_since(sent);
    heard.map_or(deadline, |h| deadline.max(h + wait))
}

/// What a completion's IDs and port must match.
struct Ids<'a> {
    requester: DeviceId,
    /// Learned from the first completion taken.
    completer: &'a mut Option<DeviceId>,
    /// The socket it arrived on.
    sock: usize,
    sock_of_tag: &'a [usize; 256],
    port: PortRule,
}

impl Ids<'_> {
    /// Whether a completion with these IDs on this port can answer a request of ours.
    fn fit(&self, cpl: &tlp::Completion) -> bool {
        let own_port = self.sock_of_tag[usize::from(cpl.tag)] == self.sock;
        let port_ok = match self.port {
            PortRule::Tag => own_port,
            // the endpoint answers where the request came from, an adapter on the tag's port
            PortRule::First => own_port || self.sock == 0,
        };
        port_ok && cpl.requester == self.requester && self.completer.is_none_or(|c| c == cpl.completer)
    }
}

/// Judge one received datagram and act on it; returns the tag of a request to abandon
/// (two copies of the same bytes of it differ).
#[allow(clippy::too_many_arguments)]
fn take_completion(
    bytes: &[u8],
    now: Instant,
    drained: Instant,
    ids: Ids<'_>,
    ops: &mut [ReadOp<'_>],
    results: &mut [Option<MemError>],
    slots: &mut Slots,
    tags: &mut TagPool,
    rto: &mut Rto,
    rack: &mut Rack,
    lost_early: &mut [Option<Instant>; 256],
    stats: &mut DmaStats,
) -> Option<u8> {
    let Ok(outer) = nettlp::Packet::new_checked(bytes) else {
        stats.malformed += 1;
        return None;
    };
    let Ok(p) = tlp::Packet::new_checked(outer.payload()) else {
        stats.malformed += 1;
        return None;
    };
    let Ok(Repr::Completion(cpl)) = Repr::parse(&p) else {
        stats.malformed += 1;
        return None;
    };
    let tag = usize::from(cpl.tag);
    if !ids.fit(&cpl) {
        stats.stale += 1;
        return None;
    }
    let payload = p.payload();
    let Some(inf) = slots.get_mut(tag) else {
        match tags.absorb(&cpl, payload.len(), now) {
            Absorbed::Late => {
                stats.late += 1;
                if let Some(at) = lost_early[tag].take() {
                    // taken as lost too soon: the path reorders more than the window
                    stats.spurious += 1;
                    rack.spurious(at, now);
                }
            }
            Absorbed::Stale => {
                stats.stale += 1;
                tags.anomaly();
                tags.stale_seen(cpl.tag, false, drained);
            }
        }
        return None;
    };
    match inf.asm.accept(&cpl, payload.len()) {
        Verdict::Data { offset, src, done } => {
            stats.completions += 1;
            stats.bytes += src.len() as u64;
            ids.completer.get_or_insert(cpl.completer);
            let piece = inf.piece;
            if piece.attempts == 0 {
                rto.answered();
            }
            tags.answered(inf.sent, now);
            let at = piece.off + offset;
            if let Some(dst) = ops.get_mut(piece.op).and_then(|op| op.buf.get_mut(at..at + src.len())) {
                dst.copy_from_slice(&payload[src]);
            }
            if done {
                let rtt = now.saturating_duration_since(inf.sent);
                stats.latency.record(rtt);
                if piece.attempts == 0 {
                    rto.sample(rtt);
                }
                rack.answered(inf.sent, rtt);
                slots.take(tag);
                tags.release(cpl.tag);
            }
        }
        Verdict::Repeat { offset, src } => {
            // a copy: of this answer (the same bytes), or of another request's (see tags)
            tags.anomaly();
            let at = inf.piece.off + offset;
            let same = ops.get(inf.piece.op).and_then(|op| op.buf.get(at..at + src.len())).is_some_and(|b| b == &payload[src]);
            if !same {
                return Some(cpl.tag);
            }
            stats.duplicates += 1;
        }
        Verdict::Failed(status) => {
            stats.completions += 1;
            ids.completer.get_or_insert(cpl.completer);
            match status {
                CplStatus::UR => stats.ur += 1,
                CplStatus::CA => stats.ca += 1,
                _ => stats.other_status += 1,
            }
            let piece = inf.piece;
            slots.take(tag);
            tags.release(cpl.tag);
            fail(results, piece.op, MemError::Completion { addr: PhysAddr(piece.addr), status: status.to_string() });
        }
        Verdict::Reject(Reject::Duplicate) => {
            stats.duplicates += 1;
            tags.anomaly();
        }
        Verdict::Reject(Reject::Mismatch) => {
            stats.stale += 1;
            tags.anomaly();
            tags.stale_seen(cpl.tag, true, drained);
        }
        Verdict::Reject(Reject::Truncated) => stats.malformed += 1,
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The live-tag bitmap follows puts and takes in any order, across word boundaries.
    /// A request's wait restarts whenever the target is heard from: behind a long queue of
    /// answers it does not time out; once the target falls silent, it does a wait later.
    #[test]
    fn the_timer_restarts_while_the_target_answers() {
        let t0 = Instant::now();
        let us = |n: u64| t0 + Duration::from_micros(n);
        assert_eq!(timer_end(us(0), us(200), None), us(200));
        assert_eq!(timer_end(us(100), us(300), Some(us(50))), us(300), "heard before its send");
        assert_eq!(timer_end(us(0), us(200), Some(us(50))), us(250), "heard at 50 us: 200 us from then");
        assert_eq!(timer_end(us(0), us(200), Some(us(900))), us(1100), "heard at 900 us: 200 us more");
    }

    #[test]
    fn slots_walk_exactly_the_tags_in_flight() {
        let now = Instant::now();
        let inf = |addr| Inflight {
            piece: Piece { op: 0, off: 0, addr, len: 4, attempts: 0 },
            asm: Reassembly::new(addr, 4),
            sent: now,
            deadline: now,
        };
        let mut slots = Slots::new();
        let mut model = std::collections::BTreeSet::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..5000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let tag = (seed % 256) as u8;
            if seed & (1 << 40) != 0 {
                slots.put(tag, inf(u64::from(tag)));
                model.insert(usize::from(tag));
            } else {
                assert_eq!(slots.take(usize::from(tag)).is_some(), model.remove(&usize::from(tag)));
            }
            assert_eq!(slots.len(), model.len());
            assert!(slots.tags().eq(model.iter().copied()));
        }
        assert!(slots.take(256).is_none() && slots.get(300).is_none());
    }

    /// Pieces of a page-aligned read, split as on a suspect network: every piece but the
    /// page's last ends off a multiple of 128, at one residue per page, and they tile the read.
    #[test]
    fn spread_pieces_end_where_few_requests_end() {
        let mut buf = vec![0u8; 3 * 4096 + 100];
        let ops = [ReadOp { addr: PhysAddr(0x10_0000), buf: &mut buf }];
        let failed = [None];
        let mut cursor = Cursor { op: 0, pos: 0 };
        let mut pieces = Vec::new();
        while let Some((p, _)) = cursor.next(&ops, &failed, 512, true) {
            pieces.push(p);
        }
        let mut at = 0x10_0000;
        let mut residues = std::collections::BTreeMap::new();
        for p in &pieces {
            assert_eq!(p.addr, at, "pieces tile the read");
            assert!(p.len <= 512 && p.len % 4 == 0);
            at += u64::from(p.len);
            let (page, end) = (p.addr >> 12, p.addr + u64::from(p.len));
            if end & 0xfff != 0 && end != 0x10_0000 + 3 * 4096 + 100 {
                assert_ne!(end & 0x7f, 0, "{p:?}");
                residues.entry(page).or_insert_with(Vec::new).push(end & 0x7f);
            }
        }
        assert_eq!(at, 0x10_0000 + ops[0].buf.len() as u64);
        for r in residues.values() {
            assert!(r.iter().all(|&x| x == r[0]), "one residue per page: {r:?}");
        }
        let distinct: std::collections::BTreeSet<_> = residues.values().map(|r| r[0]).collect();
        assert!(distinct.len() > 1, "residues differ between pages: {residues:?}");
        // trusted: the plain split
        let mut cursor = Cursor { op: 0, pos: 0 };
        let n = std::iter::from_fn(|| cursor.next(&ops, &failed, 512, false)).inspect(|(_, cut)| assert!(!cut)).count();
        assert_eq!(n, 3 * 8 + 1);
    }
}
