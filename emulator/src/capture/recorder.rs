//! Recording NetTLP datagrams as a pcap file: each datagram is wrapped in Ethernet/IPv4/UDP
//! headers built with `pnet_packet` and written with libpcap's savefile writer, nanosecond
//! resolution (magic 0xa1b23c4d), link type Ethernet, so tcpdump, tshark and the NetTLP
//! Wireshark dissector read it.
//!
//! Invariants: time is passed in by the caller (nothing here reads a clock), so a recording
//! is reproducible; frames are never truncated (captured length = frame length); MAC
//! addresses are derived from the IPv4 addresses (`02:00:a:b:c:d`, locally administered), so
//! the same endpoints always get the same MACs; IPv4 and UDP checksums are valid.
//!
//! Threads: a [`Recorder`] is `Send + Sync`; `record` takes `&self` and serialises writers on
//! an internal mutex, so one recorder can be shared (e.g. in an `Arc`) by every thread of an
//! endpoint. Records reach the file when libpcap's buffer fills, on [`Recorder::flush`], and
//! when the recorder is dropped.

use super::link::{ETHERNET_HEADER_LEN, IPV4_HEADER_LEN, UDP_HEADER_LEN};
use super::CaptureError;
use pcap::{Capture, Linktype, PacketHeader, Precision, Savefile};
use pnet_base::MacAddr;
use pnet_packet::ethernet::{EtherTypes, MutableEthernetPacket};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv4::{self, MutableIpv4Packet};
use pnet_packet::udp::{self, MutableUdpPacket};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Largest datagram one unfragmented IPv4/UDP frame can carry.
pub const MAX_DATAGRAM: usize = 65535 - IPV4_HEADER_LEN - UDP_HEADER_LEN;

struct Inner {
    savefile: Savefile,
    ip_id: u16,
    frame: Vec<u8>,
    frames: u64,
}

/// A pcap writer for NetTLP traffic.
pub struct Recorder {
    inner: Mutex<Inner>,
    path: PathBuf,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("path", &self.path)
            .finish()
    }
}

fn mac_of(ip: Ipv4Addr) -> MacAddr {
    let [a, b, c, d] = ip.octets();
    MacAddr(0x02, 0x00, a, b, c, d)
}

/// Build the Ethernet/IPv4/UDP frame around `datagram` into `frame` (resized to fit).
pub fn build_frame(
    frame: &mut Vec<u8>,
    ip_id: u16,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    datagram: &[u8],
) -> Result<(), CaptureError> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(CaptureError::TooLarge {
            len: datagram.len(),
        });
    }
    let udp_len = UDP_HEADER_LEN + datagram.len();
    let ip_len = IPV4_HEADER_LEN + udp_len;
    frame.clear();
    frame.resize(ETHERNET_HEADER_LEN + ip_len, 0);
    let too_small = || CaptureError::TooLarge {
        len: datagram.len(),
    }; // unreachable: sized above
    {
        let mut eth = MutableEthernetPacket::new(&mut frame[..]).ok_or_else(too_small)?;
        eth.set_destination(mac_of(*dst.ip()));
        eth.set_source(mac_of(*src.ip()));
        eth.set_ethertype(EtherTypes::Ipv4);
    }
    {
        let mut udp = MutableUdpPacket::new(&mut frame[ETHERNET_HEADER_LEN + IPV4_HEADER_LEN..])
            .ok_or_else(too_small)?;
        udp.set_source(src.port());
        udp.set_destination(dst.port());
        udp.set_length(udp_len as u16);
        udp.set_payload(datagram);
        let sum = udp::ipv4_checksum(&udp.to_immutable(), src.ip(), dst.ip());
        udp.set_checksum(sum);
    }
    let mut ip = MutableIpv4Packet::new(&mut frame[ETHERNET_HEADER_LEN..]).ok_or_else(too_small)?;
    ip.set_version(4);
    ip.set_header_length(5);
    ip.set_total_length(ip_len as u16);
    ip.set_identification(ip_id);
    ip.set_flags(0b010); // don't fragment
    ip.set_ttl(64);
    ip.set_next_level_protocol(IpNextHeaderProtocols::Udp);
    ip.set_source(*src.ip());
    ip.set_destination(*dst.ip());
    let sum = ipv4::checksum(&ip.to_immutable());
    ip.set_checksum(sum);
    Ok(())
}

impl Recorder {
    /// Create (truncate) `path` as an empty nanosecond pcap file.
    pub fn create(path: &Path) -> Result<Recorder, CaptureError> {
        let p = path.to_str().ok_or_else(|| CaptureError::Path {
            path: path.to_owned(),
        })?;
        let create = |source| CaptureError::Create {
            path: path.to_owned(),
            source,
        };
        let dead =
            Capture::dead_with_precision(Linktype::ETHERNET, Precision::Nano).map_err(create)?;
        let savefile = dead.savefile(p).map_err(create)?;
        Ok(Recorder {
            inner: Mutex::new(Inner {
                savefile,
                ip_id: 0,
                frame: Vec::new(),
                frames: 0,
            }),
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one frame carrying `datagram` from `src` to `dst`, stamped `now`
    /// (times before the Unix epoch are written as the epoch).
    pub fn record(
        &self,
        now: SystemTime,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        datagram: &[u8],
    ) -> Result<(), CaptureError> {
        let since = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let mut guard = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let inner = &mut *guard;
        build_frame(&mut inner.frame, inner.ip_id, src, dst, datagram)?;
        inner.ip_id = inner.ip_id.wrapping_add(1);
        let len = inner.frame.len() as u32;
        let header = PacketHeader {
            ts: libc::timeval {
                tv_sec: since.as_secs() as libc::time_t,
                // nanosecond savefile: this field holds nanoseconds
                tv_usec: since.subsec_nanos() as libc::suseconds_t,
            },
            caplen: len,
            len,
        };
        inner.savefile.write(&pcap::Packet {
            header: &header,
            data: &inner.frame,
        });
        inner.frames += 1;
        Ok(())
    }

    /// Number of frames recorded so far.
    pub fn frames(&self) -> u64 {
        self.inner
            .lock()
            .map(|g| g.frames)
            .unwrap_or_else(|p| p.into_inner().frames)
    }

    /// Push buffered frames to the file.
    pub fn flush(&self) -> Result<(), CaptureError> {
        let mut guard = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard
            .savefile
            .flush()
            .map_err(|source| CaptureError::Create {
                path: self.path.clone(),
                source,
            })
    }
}

// One recorder is shared by every thread of an endpoint.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<Recorder>();
};
