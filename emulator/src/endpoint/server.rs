//! The serve loop: sockets on the listen address, batches in, batches out.
//!
//! ```text
//!   ports 0x3000..0x30FF (0x3000+tag) ─┐   recvmmsg    Responder::handle     sendmmsg
//!   port  0x2FFF (messaging)          ─┴─▶ batch ────▶ (pure, per datagram) ─▶ batch ──▶ source
//!                                                              │                  ▲
//!                                                              └─▶ FaultQueue ────┘ (--fault)
//! ```
//!
//! libtlp binds and connects port `0x3000 + tag` at both ends, the whole 8-bit tag unmasked
//! (`nettlp_init` for `DMA_ISSUED_BY_LIBTLP`; the adapter's `eth_encap_core.sv` likewise sends a
//! completion to `0x3000 + tag`), so the endpoint listens on all 256 of those ports and answers
//! every datagram to the address and port it came from, from the port it arrived on. One thread serves all sockets: it waits in epoll
//! (optionally busy-polling first), drains each readable socket with `recvmmsg` (UDP GRO on, so
//! coalesced requests are split back into datagrams) and answers with `sendmmsg`, runs of
//! equal-size completions to one requester going out as one UDP GSO message.
//!
//! Invariants: the loop reads the clock once per wake-up and passes it down; nothing a peer
//! sends can stop it (errors on one datagram are counted and the loop goes on); it returns
//! only when asked to stop (or if polling itself fails), after releasing the datagrams the
//! fault injector still holds.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::fault::{FaultQueue, FaultSpec};
use super::outbox::{Outbox, MAX_REPLIES_PER_REQUEST};
use super::responder::{Responder, ResponderConfig};
use super::stats::{Counters, Snapshot};
use crate::udp::{self, RecvBatch, SendBatch};
use crate::mem::PhysMem;
use crate::wire::nettlp::{self, PortClass};

/// Ports libtlp uses for requester-issued transactions: `0x3000 + tag` for every 8-bit tag.
pub const TAG_PORTS: u16 = 256;
/// Largest valid request datagram: NetTLP header, 4DW MWr header, 4096 data bytes, digest.
/// Anything longer is counted as oversized.
pub const MAX_REQUEST: usize = 6 + 16 + 4096 + 4;

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub listen: Ipv4Addr,
    pub responder: ResponderConfig,
    pub fault: FaultSpec,
    /// Datagrams per recvmmsg/sendmmsg call.
    pub batch: usize,
    /// Socket buffer size requested (bytes).
    pub socket_buffer: usize,
    /// Look for the next datagram this long before sleeping (busy-poll; default 0).
    pub spin: Duration,
}

impl Default for EndpointConfig {
    fn default() -> EndpointConfig {
        EndpointConfig {
            listen: Ipv4Addr::LOCALHOST,
            responder: ResponderConfig::default(),
            fault: FaultSpec::default(),
            batch: 64,
            socket_buffer: 4 << 20,
            spin: Duration::ZERO,
        }
    }
}

/// Sees every datagram the endpoint receives and sends (e.g. a pcap recorder).
pub trait Tap: Send + Sync {
    fn datagram(&self, now: SystemTime, src: SocketAddrV4, dst: SocketAddrV4, bytes: &[u8]);
}

/// Why the endpoint could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("binding UDP {addr}: {source}")]
    Bind { addr: SocketAddrV4, source: std::io::Error },
    #[error("polling the sockets: {0}")]
    Poll(std::io::Error),
}

/// Stops a running endpoint and reads its counters.
#[derive(Debug, Clone)]
pub struct Handle {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
}

impl Handle {
    /// Ask the serve loop to stop (it notices within [`STOP_POLL`]).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
    pub fn counters(&self) -> Snapshot {
        self.counters.snapshot()
    }
    /// The flag the loop watches (for signal handlers).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }
}

/// How often an idle loop checks the stop flag.
pub const STOP_POLL: Duration = Duration::from_millis(50);

struct Sock {
    class: PortClass,
    socket: UdpSocket,
    local: SocketAddrV4,
}

/// A datagram held by the fault injector: which socket sends it, to whom.
#[derive(Clone)]
struct Held {
    sock: usize,
    dst: SocketAddrV4,
    bytes: Vec<u8>,
}

/// A bound endpoint, ready to [`Endpoint::run`].
pub struct Endpoint<M> {
    socks: Vec<Sock>,
    responder: Arc<Responder<M>>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    fault: FaultSpec,
    batch: usize,
    spin: Duration,
    tap: Option<Arc<dyn Tap>>,
}

/// An endpoint serving on its own thread.
pub struct Running {
    pub handle: Handle,
    thread: JoinHandle<Result<Snapshot, EndpointError>>,
}

impl Running {
    /// Whether the serve thread has ended (it only does when stopped or if polling fails).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Stop and wait; returns the final counters.
    pub fn stop(self) -> Result<Snapshot, EndpointError> {
        self.handle.stop();
        self.thread
            .join()
            .unwrap_or_else(|_| Err(EndpointError::Poll(std::io::Error::other("serve thread panicked"))))
    }
}

impl<M: PhysMem + 'static> Endpoint<M> {
    /// Bind the 256 tag ports and the messaging port on `cfg.listen`.
    pub fn bind(mem: M, cfg: EndpointConfig) -> Result<Endpoint<M>, EndpointError> {
        let mut socks = Vec::with_capacity(usize::from(TAG_PORTS) + 1);
        let ports = (0..=u8::MAX)
            .map(|t| (PortClass::Requester { tag: t }, nettlp::requester_port(t)))
            .chain([(PortClass::Messaging, nettlp::MSG_PORT)]);
        for (class, port) in ports {
            let addr = SocketAddrV4::new(cfg.listen, port);
            let socket = UdpSocket::bind(addr).map_err(|source| EndpointError::Bind { addr, source })?;
            udp::size_buffers(&socket, cfg.socket_buffer);
            udp::enable_gro(&socket);
            socks.push(Sock { class, socket, local: addr });
        }
        Ok(Endpoint {
            socks,
            responder: Arc::new(Responder::new(mem, cfg.responder, Instant::now())),
            counters: Arc::new(Counters::default()),
            stop: Arc::new(AtomicBool::new(false)),
            fault: cfg.fault,
            batch: cfg.batch.clamp(1, 1024),
            spin: cfg.spin.min(Duration::from_millis(10)),
            tap: None,
        })
    }

    /// Record every datagram through `tap`.
    pub fn with_tap(mut self, tap: Arc<dyn Tap>) -> Endpoint<M> {
        self.tap = Some(tap);
        self
    }

    pub fn handle(&self) -> Handle {
        Handle {
            stop: self.stop.clone(),
            counters: self.counters.clone(),
        }
    }

    pub fn responder(&self) -> &Arc<Responder<M>> {
        &self.responder
    }

    /// The local addresses served, in port order (256 tag ports, then messaging).
    pub fn local_addrs(&self) -> Vec<SocketAddrV4> {
        self.socks.iter().map(|s| s.local).collect()
    }

    /// Serve on a new thread.
    pub fn spawn(self) -> Running {
        let handle = self.handle();
        let thread = std::thread::Builder::new()
            .name("nettlp-endpoint".into())
            .spawn(move || self.run())
            .expect("spawning a thread");
        Running { handle, thread }
    }

    /// Serve until [`Handle::stop`]; returns the final counters.
    pub fn run(self) -> Result<Snapshot, EndpointError> {
        let sockets: Vec<&UdpSocket> = self.socks.iter().map(|s| &s.socket).collect();
        let mut epoll = udp::Epoll::new(&sockets).map_err(EndpointError::Poll)?;
        let mut ready: Vec<usize> = Vec::with_capacity(self.socks.len());
        // slots hold a whole coalesced (GRO) message; datagrams are split out again
        let mut recv = RecvBatch::new(self.batch, udp::MAX_UDP);
        let mut send = SendBatch::new(self.batch.max(MAX_REPLIES_PER_REQUEST));
        let mut out = Outbox::new(self.batch + MAX_REPLIES_PER_REQUEST);
        let mut dsts: Vec<SocketAddrV4> = Vec::with_capacity(out.free());
        let mut faults: Option<FaultQueue<Held>> = self.fault.is_active().then(|| FaultQueue::new(self.fault));
        let mut due: Vec<Held> = Vec::new();
        let wall = |now: Instant, t0: Instant, w0: SystemTime| w0 + now.saturating_duration_since(t0);
        let (t0, w0) = (Instant::now(), SystemTime::now());

        let result = loop {
            if self.stop.load(Ordering::Relaxed) {
                break Ok(());
            }
            let timeout = match faults.as_ref().and_then(|f| f.next_deadline()) {
                Some(d) => d.saturating_duration_since(Instant::now()).min(STOP_POLL),
                None => STOP_POLL,
            };
            match epoll.wait_spinning(Some(timeout), self.spin) {
                Ok(r) => {
                    ready.clear();
                    ready.extend_from_slice(r);
                }
                Err(e) => break Err(EndpointError::Poll(e)),
            }
            let now = Instant::now();
            let mut tally = Snapshot::default();
            for &i in &ready {
                let Some(sock) = self.socks.get(i) else { continue };
                let fd = sock.socket.as_raw_fd();
                // drain the socket, a bounded number of batches per wake-up
                for _ in 0..16 {
                    let n = match recv.recv(fd) {
                        Ok(n) => n,
                        Err(e) => {
                            tracing::warn!(port = sock.local.port(), "receive failed: {e}");
                            0
                        }
                    };
                    for (src, bytes, truncated) in recv.datagrams() {
                        if let Some(tap) = &self.tap {
                            tap.datagram(wall(now, t0, w0), src, sock.local, bytes);
                        }
                        if truncated || bytes.len() > MAX_REQUEST {
                            tally.datagrams += 1;
                            tally.oversized += 1;
                            continue;
                        }
                        let before = out.len();
                        self.responder.handle(now, sock.class, src, bytes, &mut out, &mut tally);
                        dsts.extend(std::iter::repeat(src).take(out.len() - before));
                        if out.free() < MAX_REPLIES_PER_REQUEST {
                            self.flush(i, now, wall(Instant::now(), t0, w0), &mut out, &mut dsts, &mut send, &mut faults, &mut tally);
                        }
                    }
                    self.flush(i, now, wall(Instant::now(), t0, w0), &mut out, &mut dsts, &mut send, &mut faults, &mut tally);
                    if n < recv.capacity() {
                        break;
                    }
                }
            }
            if let Some(f) = faults.as_mut() {
                f.pop_ready(Instant::now(), &mut due);
                self.send_held(&mut due, wall(Instant::now(), t0, w0), &mut send, &mut tally);
                let t = f.take_tally();
                tally.fault_dropped += t.dropped;
                tally.fault_duplicated += t.duplicated;
                tally.fault_reordered += t.reordered;
                tally.fault_delayed += t.delayed;
            }
            self.counters.add(&tally);
        };
        // release what the injector still holds, so a stop loses nothing it was not told to
        if let Some(f) = faults.as_mut() {
            f.pop_ready(Instant::now() + Duration::from_secs(3600), &mut due);
            let mut tally = Snapshot::default();
            self.send_held(&mut due, SystemTime::now(), &mut send, &mut tally);
            self.counters.add(&tally);
        }
        result.map(|()| self.counters.snapshot())
    }

    #[allow(clippy::too_many_arguments)]
    fn flush(
        &self,
        sock: usize,
        now: Instant,
        wall: SystemTime,
        out: &mut Outbox,
        dsts: &mut Vec<SocketAddrV4>,
        send: &mut SendBatch,
        faults: &mut Option<FaultQueue<Held>>,
        tally: &mut Snapshot,
    ) {
        if out.is_empty() {
            return;
        }
        let s = &self.socks[sock];
        match faults {
            Some(f) => {
                for (dst, bytes) in dsts.iter().zip(out.iter_from(0)) {
                    f.push(now, Held { sock, dst: *dst, bytes: bytes.to_vec() });
                }
            }
            None => {
                if let Some(tap) = &self.tap {
                    for (dst, bytes) in dsts.iter().zip(out.iter_from(0)) {
                        tap.datagram(wall, s.local, *dst, bytes);
                    }
                }
                let refused = send.send(s.socket.as_raw_fd(), dsts.iter().copied().zip(out.iter_from(0)));
                tally.send_errors += refused as u64;
            }
        }
        out.clear();
        dsts.clear();
    }

    /// Send what the fault injector released (the tap sees what really leaves).
    fn send_held(&self, due: &mut Vec<Held>, wall: SystemTime, send: &mut SendBatch, tally: &mut Snapshot) {
        for h in due.drain(..) {
            if let Some(s) = self.socks.get(h.sock) {
                if let Some(tap) = &self.tap {
                    tap.datagram(wall, s.local, h.dst, &h.bytes);
                }
                let refused = send.send(s.socket.as_raw_fd(), std::iter::once((h.dst, &h.bytes[..])));
                tally.send_errors += refused as u64;
            }
        }
    }
}
