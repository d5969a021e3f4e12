//! Batched UDP I/O on Linux: `recvmmsg`/`sendmmsg` over preallocated buffers, `epoll` with
//! microsecond timeouts and optional busy-polling, socket buffer sizing; `IP_PKTINFO` so one
//! socket bound to a wildcard address can tell which local address a datagram was sent to and
//! answer from that address (an emulated fleet, [`crate::endpoint::server`]). The only `unsafe`
//! code of the endpoint and the requester.
//!
//! Invariants: every pointer handed to the kernel points into a buffer owned by the batch
//! (allocated once, never reallocated while pointers to it exist); lengths given to the kernel
//! never exceed those buffers; results are bounds-checked before use.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

fn to_sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    let mut s: libc::sockaddr_in = unsafe { zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = a.port().to_be();
    s.sin_addr = libc::in_addr {
        s_addr: u32::from(*a.ip()).to_be(),
    };
    s
}

fn from_sockaddr(s: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr)), u16::from_be(s.sin_port))
}

/// Largest UDP payload, and so the largest coalesced (GRO) message.
pub const MAX_UDP: usize = 65_507;
/// Most segments one GSO send may carry (the kernel's limit is 64 or more).
const MAX_SEGMENTS: usize = 64;
/// Control buffer per message (a UDP_GRO / UDP_SEGMENT cmsg and an IP_PKTINFO one: 24 + 32
/// bytes), 8-byte aligned.
type Ctrl = [u64; 8];

/// Receive buffers for up to `n` messages of at most `slot` bytes each. With UDP GRO on the
/// socket ([`enable_gro`]) one message may hold several datagrams of the same size, which
/// [`RecvBatch::datagrams`] splits again.
pub struct RecvBatch {
    bufs: Vec<u8>,
    slot: usize,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_in>,
    ctrls: Vec<Ctrl>,
    hdrs: Vec<libc::mmsghdr>,
    /// Segment size of each received message (0: one datagram).
    segs: Vec<usize>,
    /// Local address each message was sent to, when the socket reports it ([`enable_pktinfo`]).
    dsts: Vec<Option<Ipv4Addr>>,
    got: usize,
}

// SAFETY: the raw pointers inside point into the batch's own heap buffers, which move with it.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    pub fn new(n: usize, slot: usize) -> RecvBatch {
        let n = n.max(1);
        let mut b = RecvBatch {
            bufs: vec![0u8; n * slot],
            slot,
            // SAFETY: iovec, sockaddr_in and mmsghdr are plain old data; zero is valid.
            iovs: vec![unsafe { zeroed() }; n],
            addrs: vec![unsafe { zeroed() }; n],
            ctrls: vec![[0u64; 8]; n],
            hdrs: vec![unsafe { zeroed() }; n],
            segs: vec![0; n],
            dsts: vec![None; n],
            got: 0,
        };
        for i in 0..n {
            b.iovs[i] = libc::iovec {
                iov_base: b.bufs[i * slot..].as_mut_ptr().cast(),
                iov_len: slot,
            };
        }
        for i in 0..n {
            let h = &mut b.hdrs[i].msg_hdr;
            h.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_in).cast();
            h.msg_iov = &mut b.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = b.ctrls[i].as_mut_ptr().cast();
        }
        b
    }

    /// Messages one receive can return.
    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Receive what is queued on `fd` without blocking; returns the number of messages
    /// (0 if none was waiting).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for h in &mut self.hdrs {
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_controllen = size_of::<Ctrl>() as _;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: hdrs describe buffers owned by self, sized as declared.
        let n = unsafe {
            libc::recvmmsg(fd, self.hdrs.as_mut_ptr(), self.hdrs.len() as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            self.got = 0;
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        self.got = (n as usize).min(self.hdrs.len());
        for i in 0..self.got {
            (self.segs[i], self.dsts[i]) = parse_ctrl(&self.hdrs[i].msg_hdr);
        }
        Ok(self.got)
    }

    /// The datagrams of the last receive, in order: (source, bytes, whether cut short).
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddrV4, &[u8], bool)> + '_ {
        self.datagrams_to().map(|(src, _, bytes, truncated)| (src, bytes, truncated))
    }

    /// Like [`RecvBatch::datagrams`], with the local address each was sent to (`None` unless
    /// the socket has [`enable_pktinfo`]).
    pub fn datagrams_to(&self) -> impl Iterator<Item = (SocketAddrV4, Option<Ipv4Addr>, &[u8], bool)> + '_ {
        (0..self.got).flat_map(move |i| {
            let h = &self.hdrs[i];
            let len = (h.msg_len as usize).min(self.slot);
            let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let src = from_sockaddr(&self.addrs[i]);
            let dst = self.dsts[i];
            let bytes = &self.bufs[i * self.slot..i * self.slot + len];
            let seg = match self.segs[i] {
                0 => len.max(1),
                s => s,
            };
            bytes.chunks(seg).map(move |d| (src, dst, d, truncated))
        })
    }
}

/// The UDP_GRO segment size a received message carries in its control data (or 0), and the
/// local address it was sent to (IP_PKTINFO's `ipi_addr`), if reported.
fn parse_ctrl(h: &libc::msghdr) -> (usize, Option<Ipv4Addr>) {
    let (mut seg, mut dst) = (0, None);
    if h.msg_controllen == 0 || h.msg_control.is_null() {
        return (seg, dst);
    }
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of cmsgs; the CMSG
    // macros stay inside them.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            let len = (*c).cmsg_len as usize;
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO && len >= libc::CMSG_LEN(size_of::<libc::c_int>() as u32) as usize {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int);
                seg = v.max(0) as usize;
            } else if (*c).cmsg_level == libc::IPPROTO_IP
                && (*c).cmsg_type == libc::IP_PKTINFO
                && len >= libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as usize
            {
                let info = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::in_pktinfo);
                dst = Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)));
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    (seg, dst)
}

/// Ask the kernel to report each datagram's local destination address (IP_PKTINFO), which a
/// socket bound to a wildcard address needs to tell its endpoints apart. Returns whether it is on.
pub fn enable_pktinfo(s: &UdpSocket) -> bool {
    set_int_option(s, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)
}

/// SO_REUSEADDR: let sockets bound to a wildcard address and to specific addresses share a
/// port (UDP delivers to the most specific binding; a connected socket wins for its peer).
/// Both sides must set it before binding, so this takes a socket not bound yet.
pub fn bind_reusable(addr: SocketAddrV4) -> io::Result<UdpSocket> {
    // SAFETY: socket returns a new descriptor or -1.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor we own.
    let s = unsafe { <UdpSocket as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    if !set_int_option(&s, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1) {
        return Err(io::Error::last_os_error());
    }
    let sa = to_sockaddr(addr);
    // SAFETY: bind with a pointer to a live sockaddr_in of the declared size.
    let r = unsafe {
        libc::bind(raw, (&sa as *const libc::sockaddr_in).cast(), size_of::<libc::sockaddr_in>() as libc::socklen_t)
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(s)
}

fn set_int_option(s: &UdpSocket, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> bool {
    // SAFETY: setsockopt with a pointer to a live c_int of the declared size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

/// Ask the kernel to hand over coalesced datagrams (UDP GRO): fewer, larger receives. The
/// receive slots must then be [`MAX_UDP`] bytes. Returns whether it is on.
pub fn enable_gro(s: &UdpSocket) -> bool {
    set_int_option(s, libc::SOL_UDP, libc::UDP_GRO, 1)
}

/// Scratch for `sendmmsg` calls. Runs of datagrams to one destination with one size (the
/// last of a run may be shorter) go out as one UDP GSO message, which the kernel cuts back
/// into those datagrams; if the kernel refuses GSO, the batch stops using it.
pub struct SendBatch {
    cap: usize,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_in>,
    ctrls: Vec<Ctrl>,
    /// (first iov, iov count, segment size, source address) per message.
    groups: Vec<(usize, usize, usize, Option<Ipv4Addr>)>,
    hdrs: Vec<libc::mmsghdr>,
    gso: bool,
}

// SAFETY: pointers are rebuilt for each call and only used during it.
unsafe impl Send for SendBatch {}

impl SendBatch {
    pub fn new(n: usize) -> SendBatch {
        let cap = n.max(1);
        SendBatch {
            cap,
            iovs: Vec::with_capacity(cap),
            addrs: Vec::with_capacity(cap),
            ctrls: Vec::with_capacity(cap),
            groups: Vec::with_capacity(cap),
            hdrs: Vec::with_capacity(cap),
            gso: true,
        }
    }

    /// Stop (or allow) coalescing datagrams with UDP GSO.
    pub fn set_gso(&mut self, on: bool) {
        self.gso = on;
    }

    /// Send every `(dst, bytes)` on `fd`, in order, blocking if the socket buffer is full.
    /// Returns how many datagrams the kernel refused (counted, not retried).
    pub fn send<'a>(&mut self, fd: RawFd, msgs: impl Iterator<Item = (SocketAddrV4, &'a [u8])>) -> usize {
        self.send_from(fd, msgs.map(|(dst, b)| (None, dst, b)))
    }

    /// Like [`SendBatch::send`], each datagram from the given local address when there is one
    /// (IP_PKTINFO `ipi_spec_dst`: a socket bound to a wildcard address answering as the
    /// endpoint that was asked).
    pub fn send_from<'a>(&mut self, fd: RawFd, msgs: impl Iterator<Item = (Option<Ipv4Addr>, SocketAddrV4, &'a [u8])>) -> usize {
        let mut refused = 0;
        let mut msgs = msgs.peekable();
        let mut chunk: Vec<(Option<Ipv4Addr>, SocketAddrV4, &'a [u8])> = Vec::with_capacity(self.cap);
        while msgs.peek().is_some() {
            chunk.clear();
            chunk.extend(msgs.by_ref().take(self.cap));
            refused += self.send_chunk(fd, &chunk);
        }
        refused
    }

    fn build(&mut self, chunk: &[(Option<Ipv4Addr>, SocketAddrV4, &[u8])]) {
        self.iovs.clear();
        self.addrs.clear();
        self.ctrls.clear();
        self.groups.clear();
        self.hdrs.clear();
        let mut i = 0;
        while i < chunk.len() {
            let (src, dst, first) = chunk[i];
            let seg = first.len();
            let mut n = 1;
            let mut total = seg;
            if self.gso && seg > 0 {
                while i + n < chunk.len() && n < MAX_SEGMENTS {
                    let (s, d, b) = chunk[i + n];
                    if d != dst || s != src || b.len() > seg || b.is_empty() || total + b.len() > MAX_UDP {
                        break;
                    }
                    total += b.len();
                    n += 1;
                    if b.len() < seg {
                        break; // a shorter datagram ends a run
                    }
                }
            }
            let first_iov = self.iovs.len();
            for &(_, _, b) in &chunk[i..i + n] {
                self.iovs.push(libc::iovec { iov_base: b.as_ptr() as *mut libc::c_void, iov_len: b.len() });
            }
            self.addrs.push(to_sockaddr(dst));
            self.ctrls.push([0u64; 8]);
            self.groups.push((first_iov, n, if n > 1 { seg } else { 0 }, src));
            i += n;
        }
        // all vectors are filled: now the pointers into them stay valid
        for (g, &(first_iov, n, seg, src)) in self.groups.iter().enumerate() {
            // SAFETY: plain old data.
            let mut h: libc::mmsghdr = unsafe { zeroed() };
            h.msg_hdr.msg_name = (&mut self.addrs[g] as *mut libc::sockaddr_in).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut self.iovs[first_iov];
            h.msg_hdr.msg_iovlen = n as _;
            if seg > 0 || src.is_some() {
                h.msg_hdr.msg_control = self.ctrls[g].as_mut_ptr().cast();
                // SAFETY: CMSG_SPACE of a u16 plus that of an in_pktinfo (24 + 32 bytes) fit
                // in the 64-byte control buffer; each cmsg is written inside the length set
                // before CMSG_FIRSTHDR/CMSG_NXTHDR look at it.
                unsafe {
                    let space_seg = if seg > 0 { libc::CMSG_SPACE(size_of::<u16>() as u32) } else { 0 };
                    let space_info = if src.is_some() { libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) } else { 0 };
                    h.msg_hdr.msg_controllen = (space_seg + space_info) as _;
                    let mut c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                    if seg > 0 {
                        (*c).cmsg_level = libc::SOL_UDP;
                        (*c).cmsg_type = libc::UDP_SEGMENT;
                        (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
                        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, seg as u16);
                        c = libc::CMSG_NXTHDR(&h.msg_hdr, c);
                    }
                    if let Some(a) = src {
                        (*c).cmsg_level = libc::IPPROTO_IP;
                        (*c).cmsg_type = libc::IP_PKTINFO;
                        (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as _;
                        let info = libc::in_pktinfo {
                            ipi_ifindex: 0,
                            ipi_spec_dst: libc::in_addr { s_addr: u32::from(a).to_be() },
                            ipi_addr: libc::in_addr { s_addr: 0 },
                        };
                        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut libc::in_pktinfo, info);
                    }
                }
            }
            self.hdrs.push(h);
        }
    }

    fn send_chunk(&mut self, fd: RawFd, chunk: &[(Option<Ipv4Addr>, SocketAddrV4, &[u8])]) -> usize {
        self.build(chunk);
        let mut refused = 0;
        let mut done = 0usize;
        while done < self.hdrs.len() {
            // SAFETY: hdrs[done..] point at iovs/addrs/ctrls (filled by build, unchanged
            // since) and at the caller's datagrams, alive for this call.
            let n = unsafe {
                libc::sendmmsg(fd, self.hdrs[done..].as_mut_ptr(), (self.hdrs.len() - done) as libc::c_uint, 0)
            };
            if n >= 0 {
                done += (n as usize).max(1).min(self.hdrs.len() - done);
                continue;
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            let (_, count, seg, _) = self.groups[done];
            if seg > 0 && self.gso {
                // the kernel refuses GSO here (old kernel, datagram above the path MTU):
                // send the rest of the chunk datagram by datagram from now on
                tracing::debug!("UDP GSO refused ({e}); sending datagrams one by one");
                self.gso = false;
                let first_datagram: usize = self.groups[..done].iter().map(|g| g.1).sum();
                return refused + self.send_chunk(fd, &chunk[first_datagram..]);
            }
            // the message failed (e.g. ECONNREFUSED from an earlier ICMP); skip it
            refused += count;
            done += 1;
        }
        refused
    }
}

/// Ask for `bytes` of receive and send buffer (privileged override first, then the capped
/// ordinary one). Returns the receive buffer size the kernel granted.
pub fn size_buffers(s: &UdpSocket, bytes: usize) -> usize {
    let fd = s.as_raw_fd();
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    for (force, plain) in [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)] {
        // SAFETY: setsockopt with a pointer to a live c_int of the declared size.
        unsafe {
            let p = (&v as *const libc::c_int).cast();
            let l = size_of::<libc::c_int>() as libc::socklen_t;
            if libc::setsockopt(fd, libc::SOL_SOCKET, force, p, l) != 0 {
                libc::setsockopt(fd, libc::SOL_SOCKET, plain, p, l);
            }
        }
    }
    let mut got: libc::c_int = 0;
    let mut l = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a live c_int.
    unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, (&mut got as *mut libc::c_int).cast(), &mut l);
    }
    got.max(0) as usize
}

/// An epoll set of sockets, each known by a token (its index), level-triggered on input.
pub struct Epoll {
    fd: std::os::fd::OwnedFd,
    events: Vec<libc::epoll_event>,
    ready: Vec<usize>,
    /// Whether the last wait was cut short by a signal (its ready list may miss sockets).
    interrupted: bool,
}

impl Epoll {
    pub fn new(sockets: &[&UdpSocket]) -> io::Result<Epoll> {
        // SAFETY: epoll_create1 returns a new descriptor or -1.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        for (i, s) in sockets.iter().enumerate() {
            let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: i as u64 };
            // SAFETY: valid epoll fd, socket fd and event.
            if unsafe { libc::epoll_ctl(raw, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let n = sockets.len().max(1);
        Ok(Epoll {
            fd,
            // SAFETY: plain old data.
            events: vec![unsafe { zeroed() }; n],
            ready: Vec::with_capacity(n),
            interrupted: false,
        })
    }

    /// Wait until a socket is readable or `timeout` passes (None: forever; zero: just look).
    /// Returns the indices of the readable sockets.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<&[usize]> {
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let tsp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: events has the declared capacity; tsp is null or points at a live timespec.
        let n = unsafe {
            libc::epoll_pwait2(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                tsp,
                std::ptr::null(),
            )
        };
        self.ready.clear();
        self.interrupted = false;
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::Interrupted => {
                    self.interrupted = true;
                    Ok(&self.ready)
                }
                _ => Err(e),
            };
        }
        for ev in &self.events[..(n as usize).min(self.events.len())] {
            self.ready.push(ev.u64 as usize);
        }
        Ok(&self.ready)
    }

    /// Whether the last wait returned every socket readable when it was called (level
    /// triggered: a socket with a datagram queued is always reported), i.e. was not cut short
    /// by a signal.
    pub fn complete(&self) -> bool {
        !self.interrupted
    }

    /// Like [`Epoll::wait`], but first look without sleeping for up to `spin` (busy-polling
    /// saves the sleep/wake-up when the next datagram is microseconds away).
    pub fn wait_spinning(&mut self, timeout: Option<Duration>, spin: Duration) -> io::Result<&[usize]> {
        if !spin.is_zero() {
            let start = std::time::Instant::now();
            let limit = timeout.map_or(spin, |t| t.min(spin));
            loop {
                if !self.wait(Some(Duration::ZERO))?.is_empty() {
                    return Ok(&self.ready);
                }
                let spent = start.elapsed();
                if spent >= limit {
                    let rest = timeout.map(|t| t.saturating_sub(spent));
                    return self.wait(rest);
                }
                std::hint::spin_loop();
            }
        }
        self.wait(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Datagrams of mixed sizes and destinations, sent with GSO runs, arrive one by one and in
    /// order at sockets with GRO (coalesced messages split again) and without it.
    #[test]
    fn gso_runs_arrive_as_the_datagrams_sent() {
        let rx_gro = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx_plain = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(enable_gro(&rx_gro));
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = |s: &UdpSocket| match s.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let (a, b) = (addr(&rx_gro), addr(&rx_plain));
        let sizes = [18usize, 18, 18, 18, 7, 4114, 4114, 4114, 100, 274, 274, 274, 274, 274, 274, 1];
        let mut msgs: Vec<(SocketAddrV4, Vec<u8>)> = Vec::new();
        for (i, &n) in sizes.iter().cycle().take(120).enumerate() {
            let dst = if i % 37 < 30 { a } else { b };
            msgs.push((dst, (0..n).map(|k| (i * 31 + k) as u8).collect()));
        }
        let mut batch = SendBatch::new(64);
        assert_eq!(batch.send(tx.as_raw_fd(), msgs.iter().map(|(d, v)| (*d, &v[..]))), 0);
        for (sock, dst) in [(&rx_gro, a), (&rx_plain, b)] {
            let want: Vec<&Vec<u8>> = msgs.iter().filter(|m| m.0 == dst).map(|m| &m.1).collect();
            let mut got: Vec<Vec<u8>> = Vec::new();
            let mut rb = RecvBatch::new(8, MAX_UDP);
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while got.len() < want.len() && std::time::Instant::now() < deadline {
                rb.recv(sock.as_raw_fd()).unwrap();
                got.extend(rb.datagrams().map(|(_, d, t)| {
                    assert!(!t);
                    d.to_vec()
                }));
            }
            assert_eq!(got.len(), want.len());
            assert!(got.iter().zip(&want).all(|(g, w)| g == *w), "datagrams differ");
        }
    }
}
