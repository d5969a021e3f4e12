//! Batched UDP I/O on Linux: `recvmmsg`/`sendmmsg` over preallocated buffers, `ppoll` with
//! microsecond timeouts, socket buffer sizing. The only `unsafe` code of the endpoint.
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

/// Receive buffers for up to `n` datagrams of at most `slot` bytes each.
pub struct RecvBatch {
    bufs: Vec<u8>,
    slot: usize,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_in>,
    hdrs: Vec<libc::mmsghdr>,
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
            hdrs: vec![unsafe { zeroed() }; n],
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
            h.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_iov = &mut b.iovs[i];
            h.msg_iovlen = 1;
        }
        b
    }

    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Receive what is queued on `fd` without blocking; returns the number of datagrams
    /// (0 if none was waiting).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for h in &mut self.hdrs {
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: hdrs describe buffers owned by self, sized as declared.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
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
        Ok(self.got)
    }

    /// Datagram `i` of the last receive: (source, bytes, whether it was cut short).
    pub fn get(&self, i: usize) -> Option<(SocketAddrV4, &[u8], bool)> {
        if i >= self.got {
            return None;
        }
        let h = &self.hdrs[i];
        let len = (h.msg_len as usize).min(self.slot);
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        Some((from_sockaddr(&self.addrs[i]), &self.bufs[i * self.slot..i * self.slot + len], truncated))
    }
}

/// Scratch for one `sendmmsg` call (capacity fixed at creation).
pub struct SendBatch {
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_in>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: pointers are rebuilt for each call and only used during it.
unsafe impl Send for SendBatch {}

impl SendBatch {
    pub fn new(n: usize) -> SendBatch {
        SendBatch {
            iovs: Vec::with_capacity(n),
            addrs: Vec::with_capacity(n),
            hdrs: Vec::with_capacity(n),
        }
    }

    /// Send every `(dst, bytes)` on `fd`, in order, blocking if the socket buffer is full.
    /// Returns how many the kernel refused (counted, not retried).
    pub fn send<'a>(&mut self, fd: RawFd, msgs: impl Iterator<Item = (SocketAddrV4, &'a [u8])>) -> usize {
        let cap = self.hdrs.capacity().max(1);
        let mut refused = 0;
        let mut msgs = msgs.peekable();
        while msgs.peek().is_some() {
            self.iovs.clear();
            self.addrs.clear();
            self.hdrs.clear();
            for (dst, bytes) in msgs.by_ref().take(cap) {
                self.addrs.push(to_sockaddr(dst));
                self.iovs.push(libc::iovec {
                    iov_base: bytes.as_ptr() as *mut libc::c_void,
                    iov_len: bytes.len(),
                });
            }
            for i in 0..self.iovs.len() {
                // SAFETY: plain old data.
                let mut h: libc::mmsghdr = unsafe { zeroed() };
                h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_in).cast();
                h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
                h.msg_hdr.msg_iov = &mut self.iovs[i];
                h.msg_hdr.msg_iovlen = 1;
                self.hdrs.push(h);
            }
            let mut done = 0usize;
            while done < self.hdrs.len() {
                // SAFETY: hdrs[done..] point at addrs/iovs (alive until the end of this loop)
                // and at `bytes` borrowed for 'a.
                let n = unsafe {
                    libc::sendmmsg(
                        fd,
                        self.hdrs[done..].as_mut_ptr(),
                        (self.hdrs.len() - done) as libc::c_uint,
                        0,
                    )
                };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    // the first message failed (e.g. ECONNREFUSED from an earlier ICMP); skip it
                    refused += 1;
                    done += 1;
                } else {
                    done += (n as usize).max(1).min(self.hdrs.len() - done);
                }
            }
        }
        refused
    }
}

/// Wait until one of `fds` is readable or `timeout` passes (None: forever). Returns the
/// number of ready descriptors; their `revents` are set.
pub fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let tsp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: fds is a valid slice of pollfd; tsp is null or points at a live timespec.
    let n = unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, tsp, std::ptr::null()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(n as usize)
}

/// A pollfd waiting for input on `s`.
pub fn pollfd_in(s: &UdpSocket) -> libc::pollfd {
    libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
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
