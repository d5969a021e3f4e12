//! The libtlp messaging protocol on UDP port 0x2FFF: how a libtlp application started with
//! `-R host` learns the adapter's BAR4 address, its PCI device ID and its MSI-X table.
//!
//! Confirmed against libtlp (`include/libtlp.h`, `lib/libtlp.c`) and the NetTLP driver
//! (`nettlp_msg.c`, `nettlp_msg.h`):
//! - the request is one C `int` (4 bytes) holding the message number: GET_BAR4_ADDR = 1,
//!   GET_DEV_ID = 2, GET_MSIX_TABLE = 3 (older libtlp numbered GET_MSIX_TABLE 2; we follow the
//!   current headers). No NetTLP header precedes it;
//! - the reply is the raw C struct sent back to the request's source address and port:
//!   `uint64_t` BAR4 address (8 bytes); `struct nettlp_msg_id { uint16_t id; }` (2 bytes,
//!   bus << 8 | devfn, what libtlp puts in `nt.requester`); or
//!   `struct nettlp_msix { uint64_t addr; uint32_t data; } packed` x 16 (192 bytes);
//! - both ends write these in *host* byte order. Every NetTLP deployment is x86-64, so the
//!   protocol is little-endian in practice, and that is what this module reads and writes.
//! - the driver answers an unknown number with an uninitialised buffer; a well-behaved
//!   responder (ours) sends nothing.
//!
//! Invariant: parsing never panics; a [`Packet`] from [`Packet::new_checked`] holds the 4-byte
//! request; responses are parsed only against the request they answer.

use super::tlp::DeviceId;
use super::{Result, WireError};

/// Length of a request datagram.
pub const REQUEST_LEN: usize = 4;
/// Number of MSI-X vectors the adapter reports (libtlp `NETTLP_MAX_VEC`).
pub const MSIX_VECTORS: usize = 16;
/// Length of one packed `struct nettlp_msix`.
pub const MSIX_ENTRY_LEN: usize = 12;

/// Message numbers.
pub const GET_BAR4_ADDR: i32 = 1;
pub const GET_DEV_ID: i32 = 2;
pub const GET_MSIX_TABLE: i32 = 3;

mod field {
    use core::ops::Range;
    pub const CODE: Range<usize> = 0..4;
}

/// A view of a request datagram.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }
    /// Wrap a received datagram, checking it holds the 4-byte message number. Extra bytes
    /// are ignored, as the driver ignores them.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Packet::new_unchecked(buffer);
        let have = p.buffer.as_ref().len();
        if have < REQUEST_LEN {
            return Err(WireError::Truncated {
                what: "NetTLP message request",
                need: REQUEST_LEN,
                have,
            });
        }
        Ok(p)
    }
    /// The message number (little-endian C int).
    pub fn code(&self) -> i32 {
        let b = &self.buffer.as_ref()[field::CODE];
        i32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_code(&mut self, code: i32) {
        self.buffer.as_mut()[field::CODE].copy_from_slice(&code.to_le_bytes());
    }
}

/// A request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Request {
    GetBar4Addr,
    GetDevId,
    GetMsixTable,
    Unknown(i32),
}

impl From<i32> for Request {
    fn from(code: i32) -> Request {
        match code {
            GET_BAR4_ADDR => Request::GetBar4Addr,
            GET_DEV_ID => Request::GetDevId,
            GET_MSIX_TABLE => Request::GetMsixTable,
            other => Request::Unknown(other),
        }
    }
}

impl From<Request> for i32 {
    fn from(r: Request) -> i32 {
        match r {
            Request::GetBar4Addr => GET_BAR4_ADDR,
            Request::GetDevId => GET_DEV_ID,
            Request::GetMsixTable => GET_MSIX_TABLE,
            Request::Unknown(c) => c,
        }
    }
}

impl Request {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Request> {
        Packet::new_checked(p.buffer.as_ref())?;
        Ok(Request::from(p.code()))
    }
    pub const fn buffer_len(&self) -> usize {
        REQUEST_LEN
    }
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_code(i32::from(*self));
    }
}

/// One MSI-X table entry as the adapter reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct MsixEntry {
    pub addr: u64,
    pub data: u32,
}

/// A reply to a known request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Bar4Addr(u64),
    DevId(DeviceId),
    MsixTable(Vec<MsixEntry>),
}

impl Response {
    /// Parse the reply to `request`. An MSI-X reply holds 1..=16 whole entries (libtlp asks
    /// for as many as its caller wants; the driver sends 16).
    pub fn parse(request: Request, bytes: &[u8]) -> Result<Response> {
        let need = |need: usize, what| {
            if bytes.len() < need {
                Err(WireError::Truncated {
                    what,
                    need,
                    have: bytes.len(),
                })
            } else {
                Ok(())
            }
        };
        match request {
            Request::GetBar4Addr => {
                need(8, "BAR4 address reply")?;
                let mut a = [0u8; 8];
                a.copy_from_slice(&bytes[..8]);
                Ok(Response::Bar4Addr(u64::from_le_bytes(a)))
            }
            Request::GetDevId => {
                need(2, "device ID reply")?;
                Ok(Response::DevId(DeviceId(u16::from_le_bytes([
                    bytes[0], bytes[1],
                ]))))
            }
            Request::GetMsixTable => {
                need(MSIX_ENTRY_LEN, "MSI-X table reply")?;
                let entries = bytes
                    .chunks_exact(MSIX_ENTRY_LEN)
                    .take(MSIX_VECTORS)
                    .map(|e| {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(&e[..8]);
                        MsixEntry {
                            addr: u64::from_le_bytes(a),
                            data: u32::from_le_bytes([e[8], e[9], e[10], e[11]]),
                        }
                    })
                    .collect();
                Ok(Response::MsixTable(entries))
            }
            Request::Unknown(_) => Err(WireError::Malformed {
                what: "NetTLP message request",
                offset: 0,
                reason: "unknown message number has no reply",
            }),
        }
    }

    /// Reply length (MSI-X: 12 bytes per entry, at most 16 entries).
    pub fn buffer_len(&self) -> usize {
        match self {
            Response::Bar4Addr(_) => 8,
            Response::DevId(_) => 2,
            Response::MsixTable(e) => e.len().min(MSIX_VECTORS) * MSIX_ENTRY_LEN,
        }
    }

    /// Write the reply into `buf`, which holds at least [`Response::buffer_len`] bytes.
    pub fn emit(&self, buf: &mut [u8]) {
        match self {
            Response::Bar4Addr(a) => buf[..8].copy_from_slice(&a.to_le_bytes()),
            Response::DevId(id) => buf[..2].copy_from_slice(&id.0.to_le_bytes()),
            Response::MsixTable(entries) => {
                for (e, out) in entries.iter().zip(buf.chunks_exact_mut(MSIX_ENTRY_LEN)) {
                    out[..8].copy_from_slice(&e.addr.to_le_bytes());
                    out[8..].copy_from_slice(&e.data.to_le_bytes());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_little_endian_c_ints() {
        // what libtlp's `write(sock, &req, sizeof(req))` puts on the wire on x86-64
        for (bytes, want) in [
            ([1u8, 0, 0, 0], Request::GetBar4Addr),
            ([2, 0, 0, 0], Request::GetDevId),
            ([3, 0, 0, 0], Request::GetMsixTable),
            ([0, 0, 0, 1], Request::Unknown(0x0100_0000)),
        ] {
            let p = Packet::new_checked(&bytes[..]).unwrap();
            assert_eq!(Request::parse(&p).unwrap(), want);
            let mut out = [0u8; 4];
            want.emit(&mut Packet::new_unchecked(&mut out[..]));
            assert_eq!(out, bytes);
        }
        assert!(Packet::new_checked(&[1u8, 0, 0][..]).is_err());
    }

    #[test]
    fn replies_round_trip() {
        let cases = [
            (Request::GetBar4Addr, Response::Bar4Addr(0xd000_0000)),
            (Request::GetDevId, Response::DevId(DeviceId(0x1a00))),
            (
                Request::GetMsixTable,
                Response::MsixTable(
                    (0..16)
                        .map(|i| MsixEntry {
                            addr: 0xfee0_0000 + i * 0x1000,
                            data: 0x4020 + i as u32,
                        })
                        .collect(),
                ),
            ),
        ];
        for (req, resp) in cases {
            let mut buf = vec![0u8; resp.buffer_len()];
            resp.emit(&mut buf);
            assert_eq!(Response::parse(req, &buf).unwrap(), resp);
        }
    }

    #[test]
    fn reply_bytes_match_the_c_structs() {
        let mut buf = [0u8; 2];
        Response::DevId(DeviceId(0x1a00)).emit(&mut buf);
        assert_eq!(buf, [0x00, 0x1a]); // uint16_t 0x1a00 on x86-64
        let mut buf = [0u8; 12];
        Response::MsixTable(vec![MsixEntry {
            addr: 0xfee0_1000,
            data: 0x4021,
        }])
        .emit(&mut buf);
        assert_eq!(buf, [0x00, 0x10, 0xe0, 0xfe, 0, 0, 0, 0, 0x21, 0x40, 0, 0]);
        assert_eq!(
            Response::buffer_len(&Response::MsixTable(vec![MsixEntry::default(); 20])),
            192
        );
    }

    #[test]
    fn short_replies_are_errors() {
        assert!(Response::parse(Request::GetBar4Addr, &[0; 7]).is_err());
        assert!(Response::parse(Request::GetDevId, &[0; 1]).is_err());
        assert!(Response::parse(Request::GetMsixTable, &[0; 11]).is_err());
        assert!(Response::parse(Request::Unknown(9), &[0; 64]).is_err());
    }
}
