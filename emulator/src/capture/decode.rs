//! One captured frame → one flat record (a JSON Lines object for `emulator decode`).
//!
//! Invariant: every frame yields exactly one record, whatever its bytes: a NetTLP TLP
//! (MRd, MWr, Cpl, CplD, Unknown), a messaging datagram (Message), a frame cut before the TLP
//! header is complete (Truncated) or anything else (NotNetTLP); the latter two carry a
//! `reason`. Fields that do not apply to a record are `None` (JSON `null`), never invented.

use super::link::{self, FrameError};
use crate::wire::msg;
use crate::wire::nettlp::{self, PortClass};
use crate::wire::tlp::{self, DeviceId, Kind};

/// What a frame turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum RecordKind {
    MRd,
    MWr,
    Cpl,
    CplD,
    /// A TLP whose Fmt/Type is none of the above (`fmt`/`type` say which).
    Unknown,
    /// A datagram on the messaging port 0x2FFF.
    Message,
    /// Not an IPv4/UDP datagram on a NetTLP port.
    #[serde(rename = "NotNetTLP")]
    NotNetTlp,
    /// Cut short before the TLP header was complete.
    Truncated,
}

impl From<Kind> for RecordKind {
    fn from(k: Kind) -> RecordKind {
        match k {
            Kind::MRd => RecordKind::MRd,
            Kind::MWr => RecordKind::MWr,
            Kind::Cpl => RecordKind::Cpl,
            Kind::CplD => RecordKind::CplD,
            Kind::Unknown => RecordKind::Unknown,
        }
    }
}

/// Who issued the transaction, from the UDP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Port 0x3000 + tag: issued by the requester (libtlp).
    Requester,
    /// Port 0x4000 + (tag & 0xF): issued by the adapter side.
    Adapter,
    /// Port 0x2FFF.
    Messaging,
}

/// One decoded frame. Field order is the JSON key order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FrameRecord {
    /// Frame number, 1-based (as tcpdump and tshark count).
    pub index: u64,
    /// Capture timestamp in nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// Frame length on the wire.
    pub frame_len: u32,
    /// Bytes the capture holds.
    pub captured_len: u32,
    pub kind: RecordKind,
    /// Why a frame is NotNetTLP / Truncated / Unknown / malformed.
    pub reason: Option<String>,
    pub vlan: Option<u16>,
    pub src: Option<String>,
    pub dst: Option<String>,
    pub direction: Option<Direction>,
    /// NetTLP header sequence number.
    pub seq: Option<u16>,
    /// NetTLP header timestamp.
    pub nettlp_timestamp: Option<u32>,
    /// Raw 3-bit Fmt.
    pub fmt: Option<u8>,
    /// Raw 5-bit Type.
    #[serde(rename = "type")]
    pub tlp_type: Option<u8>,
    pub tag: Option<u8>,
    pub requester: Option<DeviceId>,
    pub completer: Option<DeviceId>,
    /// DW-aligned request address, hex.
    pub address: Option<String>,
    pub length_dw: Option<u16>,
    pub first_be: Option<u8>,
    pub last_be: Option<u8>,
    pub byte_count: Option<u16>,
    pub status: Option<String>,
    pub lower_address: Option<u8>,
    /// Payload bytes the TLP header declares (0 for MRd and Cpl).
    pub payload_bytes: Option<usize>,
    /// Payload bytes present in the capture.
    pub payload_captured: Option<usize>,
    /// NetTLP frames: the datagram is not complete in the capture. Others: the frame is not.
    pub truncated: bool,
    /// Bytes after the declared TLP payload (ECRC, or garbage).
    pub trailing_bytes: Option<usize>,
    pub tc: Option<u8>,
    pub attr: Option<u8>,
    pub td: Option<bool>,
    pub ep: Option<bool>,
    /// Messaging datagrams: what they carry.
    pub message: Option<String>,
}

impl FrameRecord {
    fn empty(index: u64, time_ns: u64, frame_len: u32, captured_len: u32) -> FrameRecord {
        FrameRecord {
            index,
            time_ns,
            frame_len,
            captured_len,
            kind: RecordKind::NotNetTlp,
            reason: None,
            vlan: None,
            src: None,
            dst: None,
            direction: None,
            seq: None,
            nettlp_timestamp: None,
            fmt: None,
            tlp_type: None,
            tag: None,
            requester: None,
            completer: None,
            address: None,
            length_dw: None,
            first_be: None,
            last_be: None,
            byte_count: None,
            status: None,
            lower_address: None,
            payload_bytes: None,
            payload_captured: None,
            truncated: captured_len < frame_len,
            trailing_bytes: None,
            tc: None,
            attr: None,
            td: None,
            ep: None,
            message: None,
        }
    }
}

/// Decode one captured Ethernet frame (`frame_len` is its length on the wire).
pub fn decode_frame(index: u64, time_ns: u64, frame_len: u32, data: &[u8]) -> FrameRecord {
    let captured = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let mut r = FrameRecord::empty(index, time_ns, frame_len, captured);
    let d = match link::parse_udp(data) {
        Ok(d) => d,
        Err(e) => {
            r.kind = if e.is_truncation() {
                RecordKind::Truncated
            } else {
                RecordKind::NotNetTlp
            };
            r.reason = Some(e.to_string());
            r.truncated |= matches!(e, FrameError::Truncated { .. });
            return r;
        }
    };
    r.vlan = d.vlan;
    r.src = Some(d.src.to_string());
    r.dst = Some(d.dst.to_string());
    r.truncated = d.truncated();

    let (sp, dp) = (d.src.port(), d.dst.port());
    if sp == nettlp::MSG_PORT || dp == nettlp::MSG_PORT {
        r.kind = RecordKind::Message;
        r.direction = Some(Direction::Messaging);
        r.message = Some(if dp == nettlp::MSG_PORT {
            match msg::Packet::new_checked(d.payload).and_then(|p| msg::Request::parse(&p)) {
                Ok(req) => format!("request {req:?}"),
                Err(e) => format!("request: {e}"),
            }
        } else {
            format!("reply, {} bytes", d.declared_len)
        });
        return r;
    }
    r.direction = match PortClass::of(dp).or(PortClass::of(sp)) {
        Some(PortClass::Requester { .. }) => Some(Direction::Requester),
        Some(PortClass::Adapter { .. }) => Some(Direction::Adapter),
        _ => {
            r.reason = Some(format!("UDP ports {sp} -> {dp} are not NetTLP ports"));
            return r;
        }
    };

    let nt = match nettlp::Packet::new_checked(d.payload) {
        Ok(p) => p,
        Err(e) => {
            r.kind = RecordKind::Truncated;
            r.reason = Some(e.to_string());
            return r;
        }
    };
    r.seq = Some(nt.seq());
    r.nettlp_timestamp = Some(nt.timestamp());
    let p = match tlp::Packet::new_checked(nt.payload()) {
        Ok(p) => p,
        Err(e) => {
            r.kind = RecordKind::Truncated;
            r.reason = Some(e.to_string());
            return r;
        }
    };
    fill_tlp(&mut r, &p);
    r
}

fn fill_tlp(r: &mut FrameRecord, p: &tlp::Packet<&[u8]>) {
    let kind = p.kind();
    r.kind = kind.into();
    r.fmt = Some(u8::from(p.fmt()));
    r.tlp_type = Some(u8::from(p.tlp_type()));
    r.tc = Some(p.traffic_class());
    r.attr = Some(p.attr());
    r.td = Some(p.td());
    r.ep = Some(p.ep());
    r.length_dw = Some(p.length_dw());
    match kind {
        Kind::MRd | Kind::MWr => {
            r.tag = Some(p.mem_tag());
            r.requester = Some(p.mem_requester());
            r.address = Some(format!("{:#x}", p.address()));
            r.first_be = Some(p.first_be());
            r.last_be = Some(p.last_be());
        }
        Kind::Cpl | Kind::CplD => {
            r.tag = Some(p.cpl_tag());
            r.requester = Some(p.cpl_requester());
            r.completer = Some(p.completer());
            r.status = Some(p.status().to_string());
            r.byte_count = Some(p.byte_count());
            r.lower_address = Some(p.lower_address());
            if kind == Kind::Cpl {
                r.length_dw = None; // reserved in a completion without data
            }
        }
        Kind::Unknown => {
            r.reason = Some(format!(
                "TLP fmt {:?} type {:?} is not MRd/MWr/Cpl/CplD",
                p.fmt(),
                p.tlp_type()
            ));
            r.length_dw = None;
            r.tc = None;
            r.attr = None;
            r.td = None;
            r.ep = None;
            return;
        }
    }
    r.payload_bytes = Some(p.payload_declared_len());
    r.payload_captured = Some(p.payload().len());
    r.trailing_bytes = Some(p.trailing_len());
    r.truncated |= p.payload_truncated();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_string_gives_one_record() {
        for data in [&[][..], &[0u8; 13][..], &[0xffu8; 64][..]] {
            let r = decode_frame(7, 1, 64, data);
            assert_eq!(r.index, 7);
            assert!(matches!(
                r.kind,
                RecordKind::NotNetTlp | RecordKind::Truncated
            ));
            assert!(r.reason.is_some());
        }
    }
}
