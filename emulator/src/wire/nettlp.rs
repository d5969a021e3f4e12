//! The 6-byte NetTLP header that precedes every TLP in a UDP datagram, and the UDP port rules.
//!
//! ```text
//!   0               2                               6
//!   ┌───────────────┬───────────────────────────────┬──────────── ─ ─
//!   │ sequence (BE) │ timestamp (BE)                │ TLP ...
//!   └───────────────┴───────────────────────────────┴──────────── ─ ─
//! ```
//!
//! Confirmed against libtlp (`struct nettlp_hdr { uint16_t seq; uint32_t tstamp; } packed`):
//! libtlp's `dma_read`/`dma_write` send the header zeroed and never read it back; the adapter
//! fills both fields big-endian (the captures in `shared/captures` show a sequence incrementing
//! by one per frame and a free-running timestamp). Receivers must not rely on either value.
//!
//! Ports (libtlp `enum dma_direction`): a transaction issued by the requester (libtlp, our
//! `harness` DMA requester) travels on UDP port `0x3000 + tag` at both ends; one issued by the
//! adapter side (the root complex / host CPU towards a software device) on `0x4000 + (tag & 0xF)`.
//! The messaging API uses port `0x2FFF` (see [`super::msg`]).
//!
//! Invariant: a [`Packet`] made by [`Packet::new_checked`] holds at least [`HEADER_LEN`] bytes.

use super::{Result, WireError};

/// Length of the NetTLP header.
pub const HEADER_LEN: usize = 6;
/// UDP port of the libtlp messaging API (GET_BAR4_ADDR, GET_DEV_ID, GET_MSIX_TABLE).
pub const MSG_PORT: u16 = 0x2FFF;
/// Base UDP port of transactions issued by the requester (libtlp): `0x3000 + tag`.
pub const REQUESTER_PORT_BASE: u16 = 0x3000;
/// Base UDP port of transactions issued by the adapter side: `0x4000 + (tag & 0xF)`.
pub const ADAPTER_PORT_BASE: u16 = 0x4000;

/// The UDP port (same on both ends) of a requester-issued transaction with tag `tag`.
pub const fn requester_port(tag: u8) -> u16 {
    REQUESTER_PORT_BASE + tag as u16
}

/// The UDP port (same on both ends) of an adapter-issued transaction with tag `tag`.
pub const fn adapter_port(tag: u8) -> u16 {
    ADAPTER_PORT_BASE + (tag & 0xF) as u16
}

/// Who issued the transaction a UDP port belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum PortClass {
    /// Port 0x2FFF: the libtlp messaging API.
    Messaging,
    /// Port 0x3000..=0x30FF: issued by the requester; the tag the port encodes.
    Requester { tag: u8 },
    /// Port 0x4000..=0x400F: issued by the adapter side; the low four bits of the tag.
    Adapter { tag_low: u8 },
}

impl PortClass {
    /// Classify a UDP port, or `None` if NetTLP does not use it.
    pub const fn of(port: u16) -> Option<PortClass> {
        match port {
            MSG_PORT => Some(PortClass::Messaging),
            0x3000..=0x30FF => Some(PortClass::Requester {
                tag: (port - REQUESTER_PORT_BASE) as u8,
            }),
            0x4000..=0x400F => Some(PortClass::Adapter {
                tag_low: (port - ADAPTER_PORT_BASE) as u8,
            }),
            _ => None,
        }
    }
}

mod field {
    use core::ops::Range;
    pub const SEQ: Range<usize> = 0..2;
    pub const TSTAMP: Range<usize> = 2..6;
    pub const PAYLOAD: usize = 6;
}

/// A view of a NetTLP datagram (header + TLP).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap a buffer without checking its length (only for buffers we sized ourselves).
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wrap a buffer from the network, checking it holds a whole header.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Ensure the buffer holds the 6-byte header.
    pub fn check_len(&self) -> Result<()> {
        let have = self.buffer.as_ref().len();
        if have < HEADER_LEN {
            return Err(WireError::Truncated {
                what: "NetTLP header",
                need: HEADER_LEN,
                have,
            });
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The sequence number.
    pub fn seq(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::SEQ];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The adapter's timestamp (opaque; libtlp sends 0).
    pub fn timestamp(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::TSTAMP];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The bytes after the header: the TLP.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_seq(&mut self, seq: u16) {
        self.buffer.as_mut()[field::SEQ].copy_from_slice(&seq.to_be_bytes());
    }
    pub fn set_timestamp(&mut self, ts: u32) {
        self.buffer.as_mut()[field::TSTAMP].copy_from_slice(&ts.to_be_bytes());
    }
    /// The bytes after the header, writable (where the TLP goes).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// The NetTLP header's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Repr {
    pub seq: u16,
    pub timestamp: u32,
}

impl Repr {
    /// Read the header of a checked packet (any values are valid).
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr> {
        packet.check_len()?;
        Ok(Repr {
            seq: packet.seq(),
            timestamp: packet.timestamp(),
        })
    }

    /// Bytes the header occupies.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write the header into a packet whose buffer holds at least [`Repr::buffer_len`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_seq(self.seq);
        packet.set_timestamp(self.timestamp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The NetTLP header of frame 2 of `root-complex/mrd-512byte-rc.pcap`.
    const RC_FRAME2_HDR: [u8; 6] = [0x00, 0x39, 0x3e, 0xf2, 0xd0, 0xcc];

    #[test]
    fn parses_a_captured_header() {
        let p = Packet::new_checked(&RC_FRAME2_HDR[..]).unwrap();
        assert_eq!(
            Repr::parse(&p).unwrap(),
            Repr {
                seq: 0x39,
                timestamp: 0x3ef2_d0cc
            }
        );
        assert!(p.payload().is_empty());
    }

    #[test]
    fn emit_round_trips() {
        let repr = Repr {
            seq: 0xbeef,
            timestamp: 0x0102_0304,
        };
        let mut buf = [0u8; HEADER_LEN];
        repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, [0xbe, 0xef, 1, 2, 3, 4]);
        assert_eq!(
            Repr::parse(&Packet::new_checked(&buf[..]).unwrap()).unwrap(),
            repr
        );
    }

    #[test]
    fn short_buffers_are_errors() {
        for n in 0..HEADER_LEN {
            let buf = vec![0u8; n];
            assert_eq!(
                Packet::new_checked(&buf[..]).unwrap_err(),
                WireError::Truncated {
                    what: "NetTLP header",
                    need: 6,
                    have: n
                }
            );
        }
    }

    #[test]
    fn port_rules() {
        assert_eq!(requester_port(0), 0x3000);
        assert_eq!(requester_port(0xff), 0x30ff);
        assert_eq!(adapter_port(0x13), 0x4003);
        assert_eq!(PortClass::of(0x2fff), Some(PortClass::Messaging));
        assert_eq!(PortClass::of(12291), Some(PortClass::Requester { tag: 3 }));
        assert_eq!(
            PortClass::of(0x400f),
            Some(PortClass::Adapter { tag_low: 15 })
        );
        assert_eq!(PortClass::of(0x4010), None);
        assert_eq!(PortClass::of(53), None);
    }
}
