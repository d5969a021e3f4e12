//! Ethernet (with 802.1Q tags) / IPv4 / UDP framing around NetTLP datagrams, parsed with
//! `pnet_packet`.
//!
//! Invariant: [`parse_udp`] never panics and never reads past the captured bytes. It trusts
//! the IPv4 total length and UDP length over the frame length, so Ethernet padding after a
//! short datagram is ignored; a frame cut by the capture's snap length yields the bytes that
//! were captured together with the length the headers declare.

use pnet_packet::ethernet::{EtherTypes, EthernetPacket};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::udp::UdpPacket;
use pnet_packet::vlan::VlanPacket;
use std::net::SocketAddrV4;

/// Most VLAN tags we look through before giving up (802.1Q, 802.1ad and QinQ stacks).
pub const MAX_VLAN_TAGS: usize = 4;
/// Ethernet header length without tags.
pub const ETHERNET_HEADER_LEN: usize = 14;
/// IPv4 header length without options.
pub const IPV4_HEADER_LEN: usize = 20;
/// UDP header length.
pub const UDP_HEADER_LEN: usize = 8;

/// A UDP datagram found in a captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpDatagram<'a> {
    /// VLAN ID of the outermost 802.1Q tag, if any.
    pub vlan: Option<u16>,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    /// The payload bytes captured: at most `declared_len`, fewer if the frame was cut.
    pub payload: &'a [u8],
    /// The payload length the UDP header declares.
    pub declared_len: usize,
}

impl UdpDatagram<'_> {
    /// Whether the capture holds fewer payload bytes than the datagram had.
    pub fn truncated(&self) -> bool {
        self.payload.len() < self.declared_len
    }
}

/// Why a frame holds no (complete) UDP datagram header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The capture cut the frame inside a header.
    #[error("{layer} header cut at byte {offset}: needs {need} bytes, {have} captured")]
    Truncated {
        layer: &'static str,
        offset: usize,
        need: usize,
        have: usize,
    },
    #[error("ethertype {0:#06x} is not IPv4")]
    NotIpv4(u16),
    #[error("more than {MAX_VLAN_TAGS} VLAN tags")]
    TooManyTags,
    #[error("IP version {0} in an IPv4 frame")]
    BadVersion(u8),
    #[error("IPv4 {what} at byte {offset} is inconsistent: {value}")]
    BadLength {
        what: &'static str,
        offset: usize,
        value: usize,
    },
    #[error("IPv4 fragment (offset {offset} x 8 bytes, more fragments: {more})")]
    Fragment { offset: u16, more: bool },
    #[error("IPv4 protocol {0} is not UDP")]
    NotUdp(u8),
}

impl FrameError {
    /// True when the frame is cut short (as opposed to not being IPv4/UDP at all).
    pub fn is_truncation(&self) -> bool {
        matches!(self, FrameError::Truncated { .. })
    }
}

fn cut(layer: &'static str, offset: usize, need: usize, frame: &[u8]) -> FrameError {
    FrameError::Truncated {
        layer,
        offset,
        need,
        have: frame.len().saturating_sub(offset),
    }
}

/// Find the UDP datagram in an Ethernet frame.
pub fn parse_udp(frame: &[u8]) -> Result<UdpDatagram<'_>, FrameError> {
    let eth =
        EthernetPacket::new(frame).ok_or_else(|| cut("Ethernet", 0, ETHERNET_HEADER_LEN, frame))?;
    let mut ethertype = eth.get_ethertype();
    let mut off = ETHERNET_HEADER_LEN;
    let mut vlan = None;
    let mut tags = 0;
    while matches!(
        ethertype,
        EtherTypes::Vlan | EtherTypes::PBridge | EtherTypes::QinQ
    ) {
        if tags == MAX_VLAN_TAGS {
            return Err(FrameError::TooManyTags);
        }
        let tag = frame
            .get(off..)
            .and_then(VlanPacket::new)
            .ok_or_else(|| cut("802.1Q tag", off, 4, frame))?;
        vlan = vlan.or(Some(tag.get_vlan_identifier()));
        ethertype = tag.get_ethertype();
        off += 4;
        tags += 1;
    }
    if ethertype != EtherTypes::Ipv4 {
        return Err(FrameError::NotIpv4(ethertype.0));
    }

    let ip_off = off;
    let ip = frame
        .get(ip_off..)
        .and_then(Ipv4Packet::new)
        .ok_or_else(|| cut("IPv4", ip_off, IPV4_HEADER_LEN, frame))?;
    if ip.get_version() != 4 {
        return Err(FrameError::BadVersion(ip.get_version()));
    }
    let ihl = usize::from(ip.get_header_length()) * 4;
    if ihl < IPV4_HEADER_LEN {
        return Err(FrameError::BadLength {
            what: "header length",
            offset: ip_off,
            value: ihl,
        });
    }
    if frame.len() < ip_off + ihl {
        return Err(cut("IPv4", ip_off, ihl, frame));
    }
    let total = usize::from(ip.get_total_length());
    if total < ihl + UDP_HEADER_LEN {
        return Err(FrameError::BadLength {
            what: "total length",
            offset: ip_off + 2,
            value: total,
        });
    }
    let (more, frag_off) = (ip.get_flags() & 0x1 != 0, ip.get_fragment_offset());
    if more || frag_off != 0 {
        return Err(FrameError::Fragment {
            offset: frag_off,
            more,
        });
    }
    if ip.get_next_level_protocol() != IpNextHeaderProtocols::Udp {
        return Err(FrameError::NotUdp(ip.get_next_level_protocol().0));
    }
    let src_ip = ip.get_source();
    let dst_ip = ip.get_destination();

    let udp_off = ip_off + ihl;
    let udp = frame
        .get(udp_off..)
        .and_then(UdpPacket::new)
        .ok_or_else(|| cut("UDP", udp_off, UDP_HEADER_LEN, frame))?;
    let udp_len = usize::from(udp.get_length());
    if udp_len < UDP_HEADER_LEN || udp_len > total - ihl {
        return Err(FrameError::BadLength {
            what: "UDP length",
            offset: udp_off + 4,
            value: udp_len,
        });
    }
    let declared_len = udp_len - UDP_HEADER_LEN;
    let start = udp_off + UDP_HEADER_LEN;
    let end = (start + declared_len).min(frame.len());
    Ok(UdpDatagram {
        vlan,
        src: SocketAddrV4::new(src_ip, udp.get_source()),
        dst: SocketAddrV4::new(dst_ip, udp.get_destination()),
        payload: frame.get(start..end).unwrap_or(&[]),
        declared_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frame 2 of `root-complex/mrd-512byte-rc.pcap` (untagged MRd, 60 bytes).
    const RC_FRAME2: [u8; 60] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x2e, 0x00, 0x00, 0x00, 0x00, 0x40, 0x11, 0xe5, 0x6a, 0xc0, 0xa8, 0x0a, 0x01,
        0xc0, 0xa8, 0x0a, 0x03, 0x30, 0x00, 0x30, 0x00, 0x00, 0x1a, 0x00, 0x00, 0x00, 0x39, 0x3e,
        0xf2, 0xd0, 0xcc, 0x00, 0x00, 0x00, 0x10, 0x64, 0x00, 0x00, 0xff, 0xc0, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn finds_the_datagram() {
        let d = parse_udp(&RC_FRAME2).unwrap();
        assert_eq!(d.vlan, None);
        assert_eq!(d.src.to_string(), "192.168.10.1:12288");
        assert_eq!(d.dst.to_string(), "192.168.10.3:12288");
        assert_eq!(d.declared_len, 18);
        assert_eq!(d.payload, &RC_FRAME2[42..]);
        assert!(!d.truncated());
    }

    #[test]
    fn vlan_tag_and_padding() {
        let mut f = RC_FRAME2[..12].to_vec();
        f.extend_from_slice(&[0x81, 0x00, 0x20, 0x64]); // PCP 1, VID 100
        f.extend_from_slice(&RC_FRAME2[12..]);
        f.extend_from_slice(&[0xaa; 6]); // padding the headers do not count
        let d = parse_udp(&f).unwrap();
        assert_eq!(d.vlan, Some(100));
        assert_eq!(d.payload, &RC_FRAME2[42..]);
    }

    #[test]
    fn cuts_and_foreign_frames() {
        assert!(parse_udp(&RC_FRAME2[..13]).unwrap_err().is_truncation());
        assert!(parse_udp(&RC_FRAME2[..30]).unwrap_err().is_truncation());
        assert!(parse_udp(&RC_FRAME2[..40]).unwrap_err().is_truncation());
        let d = parse_udp(&RC_FRAME2[..50]).unwrap();
        assert!(d.truncated());
        assert_eq!(d.payload.len(), 8);

        let mut f = RC_FRAME2;
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(parse_udp(&f).unwrap_err(), FrameError::NotIpv4(0x86dd));
        let mut f = RC_FRAME2;
        f[23] = 6;
        assert_eq!(parse_udp(&f).unwrap_err(), FrameError::NotUdp(6));
        let mut f = RC_FRAME2;
        f[20] = 0x20; // more fragments
        assert!(matches!(
            parse_udp(&f).unwrap_err(),
            FrameError::Fragment { more: true, .. }
        ));
        let mut f = RC_FRAME2;
        f[39] = 0x40; // UDP length beyond the IPv4 payload
        assert!(matches!(
            parse_udp(&f).unwrap_err(),
            FrameError::BadLength { .. }
        ));
        let mut f = RC_FRAME2[..12].to_vec();
        for _ in 0..5 {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x01]);
        }
        f.extend_from_slice(&RC_FRAME2[12..]);
        assert_eq!(parse_udp(&f).unwrap_err(), FrameError::TooManyTags);
    }
}
