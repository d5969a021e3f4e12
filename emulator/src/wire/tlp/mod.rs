//! PCIe Transaction Layer Packets as NetTLP carries them: Memory Read/Write requests and
//! Completions (with and without data).
//!
//! ```text
//!  byte  0        1        2        3
//!  DW0  |Fmt|Type |T TC T A L T|T E At AT Len|  Length  |   Fmt[7:5] Type[4:0] ... Length[9:0]
//!  MRd/MWr:
//!  DW1  | Requester ID    | Tag    |LBE|FBE|
//!  DW2  | Address[31:2]                 |00|   (3DW, address below 4 GiB)
//!  DW2-3| Address[63:2]                 |00|   (4DW)
//!  Cpl/CplD:
//!  DW1  | Completer ID    |St|B|ByteCount |   status[7:5] BCM[4] byte count[11:0]
//!  DW2  | Requester ID    | Tag    |0|LowA|   lower address[6:0]
//! ```
//!
//! Confirmed against libtlp (`include/tlp.h`, `lib/libtlp.c`) and the captures:
//! - `dma_read` builds a 3DW MRd when `addr < UINT32_MAX`, else a 4DW one, with the address
//!   masked to a DW boundary, big-endian, the requester ID big-endian (`ntohs(requester)`), the
//!   tag in byte 6 and `lstdw << 4 | fstdw` in byte 7 (its bitfields put `fstdw` in the low
//!   nibble on little-endian hosts). [`MemRequest::new`] reproduces the first frame of
//!   `root-complex/mrd-512byte-rc.pcap` (a libtlp request) byte for byte.
//! - libtlp accepts a completion as the last of a read when
//!   `Length == ((LowerAddress & 3) + ByteCount + 3) / 4`; its data starts at
//!   `LowerAddress & 3` in the payload; it treats every completion on the tag's port as part
//!   of the current read. [`Completion::data_range`] implements the same rule.
//! - Status is bits 15:13 of DW1's second half (SC 0, UR 1, CRS 2, CA 4); byte count bits 11:0.
//!
//! Fmt is the 3-bit field of PCIe 2.1+ (libtlp's 2-bit Fmt masks give the same answers for the
//! values it builds). Every Fmt/Type value round-trips through [`Fmt`]/[`Type`]; a TLP that is
//! not MRd/MWr/Cpl/CplD has [`Kind::Unknown`] and is reported, not rejected by the view.
//!
//! Invariant: a [`Packet`] made by [`Packet::new_checked`] holds at least its header
//! ([`Packet::header_len`]: 16 bytes for 4DW formats, 12 otherwise), so every getter is in
//! bounds; payload getters return what is present and report truncation instead of failing.

mod rules;

pub use rules::{
    byte_enables, completion_chunks, lower_address, request_bytes, ByteEnables, Chunk,
    CompletionChunks, RCB,
};

use super::{Result, WireError};
use core::fmt;

/// The 3-bit Fmt field: header size and whether data follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Fmt {
    /// 000: 3DW header, no data.
    NoData3Dw,
    /// 001: 4DW header, no data.
    NoData4Dw,
    /// 010: 3DW header, with data.
    Data3Dw,
    /// 011: 4DW header, with data.
    Data4Dw,
    /// 100: TLP prefix.
    Prefix,
    /// 101..111: reserved.
    Unknown(u8),
}

impl From<u8> for Fmt {
    /// From the 3-bit value (higher bits ignored).
    fn from(v: u8) -> Fmt {
        match v & 0x7 {
            0 => Fmt::NoData3Dw,
            1 => Fmt::NoData4Dw,
            2 => Fmt::Data3Dw,
            3 => Fmt::Data4Dw,
            4 => Fmt::Prefix,
            other => Fmt::Unknown(other),
        }
    }
}

impl From<Fmt> for u8 {
    fn from(f: Fmt) -> u8 {
        match f {
            Fmt::NoData3Dw => 0,
            Fmt::NoData4Dw => 1,
            Fmt::Data3Dw => 2,
            Fmt::Data4Dw => 3,
            Fmt::Prefix => 4,
            Fmt::Unknown(v) => v & 0x7,
        }
    }
}

impl Fmt {
    /// Whether the header is 4 DW (16 bytes).
    pub const fn is_4dw(self) -> bool {
        matches!(self, Fmt::NoData4Dw | Fmt::Data4Dw)
    }
    /// Whether a data payload follows the header.
    pub const fn has_data(self) -> bool {
        matches!(self, Fmt::Data3Dw | Fmt::Data4Dw)
    }
}

/// The 5-bit Type field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Type {
    /// 00000: memory request (MRd / MWr by Fmt).
    Mem,
    /// 00001: locked memory read.
    MemLocked,
    /// 00010: I/O request.
    Io,
    /// 00100: type-0 configuration request.
    Cfg0,
    /// 00101: type-1 configuration request.
    Cfg1,
    /// 01010: completion (Cpl / CplD by Fmt).
    Cpl,
    /// 01011: locked completion.
    CplLocked,
    /// Anything else (messages, reserved).
    Unknown(u8),
}

impl From<u8> for Type {
    /// From the 5-bit value (higher bits ignored).
    fn from(v: u8) -> Type {
        match v & 0x1f {
            0x00 => Type::Mem,
            0x01 => Type::MemLocked,
            0x02 => Type::Io,
            0x04 => Type::Cfg0,
            0x05 => Type::Cfg1,
            0x0a => Type::Cpl,
            0x0b => Type::CplLocked,
            other => Type::Unknown(other),
        }
    }
}

impl From<Type> for u8 {
    fn from(t: Type) -> u8 {
        match t {
            Type::Mem => 0x00,
            Type::MemLocked => 0x01,
            Type::Io => 0x02,
            Type::Cfg0 => 0x04,
            Type::Cfg1 => 0x05,
            Type::Cpl => 0x0a,
            Type::CplLocked => 0x0b,
            Type::Unknown(v) => v & 0x1f,
        }
    }
}

/// The four TLP kinds NetTLP memory access uses, and everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Kind {
    MRd,
    MWr,
    Cpl,
    CplD,
    Unknown,
}

impl Kind {
    /// Classify a Fmt/Type pair. Completions are 3DW only; a 4DW "completion" is Unknown.
    pub const fn of(fmt: Fmt, ty: Type) -> Kind {
        match (fmt, ty) {
            (Fmt::NoData3Dw | Fmt::NoData4Dw, Type::Mem) => Kind::MRd,
            (Fmt::Data3Dw | Fmt::Data4Dw, Type::Mem) => Kind::MWr,
            (Fmt::NoData3Dw, Type::Cpl) => Kind::Cpl,
            (Fmt::Data3Dw, Type::Cpl) => Kind::CplD,
            _ => Kind::Unknown,
        }
    }
    /// The name used in decoded output ("MRd", ...).
    pub const fn name(self) -> &'static str {
        match self {
            Kind::MRd => "MRd",
            Kind::MWr => "MWr",
            Kind::Cpl => "Cpl",
            Kind::CplD => "CplD",
            Kind::Unknown => "Unknown",
        }
    }
}

/// A PCI requester/completer ID: bus[15:8], device[7:3], function[2:0]. Shown `bb:dd.f`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct DeviceId(pub u16);

impl DeviceId {
    pub const fn new(bus: u8, device: u8, function: u8) -> DeviceId {
        DeviceId((bus as u16) << 8 | ((device as u16 & 0x1f) << 3) | (function as u16 & 0x7))
    }
    pub const fn bus(self) -> u8 {
        (self.0 >> 8) as u8
    }
    pub const fn device(self) -> u8 {
        ((self.0 >> 3) & 0x1f) as u8
    }
    pub const fn function(self) -> u8 {
        (self.0 & 0x7) as u8
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02x}:{:02x}.{}",
            self.bus(),
            self.device(),
            self.function()
        )
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({self})")
    }
}

impl serde::Serialize for DeviceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> core::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Completion status (3 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum CplStatus {
    /// 000 Successful Completion.
    SC,
    /// 001 Unsupported Request.
    UR,
    /// 010 Configuration Request Retry Status.
    CRS,
    /// 100 Completer Abort.
    CA,
    /// Reserved values.
    Unknown(u8),
}

impl From<u8> for CplStatus {
    fn from(v: u8) -> CplStatus {
        match v & 0x7 {
            0 => CplStatus::SC,
            1 => CplStatus::UR,
            2 => CplStatus::CRS,
            4 => CplStatus::CA,
            other => CplStatus::Unknown(other),
        }
    }
}

impl From<CplStatus> for u8 {
    fn from(s: CplStatus) -> u8 {
        match s {
            CplStatus::SC => 0,
            CplStatus::UR => 1,
            CplStatus::CRS => 2,
            CplStatus::CA => 4,
            CplStatus::Unknown(v) => v & 0x7,
        }
    }
}

impl fmt::Display for CplStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CplStatus::Unknown(v) => write!(f, "Unknown({v})"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// Minimum header length (3 DW); every TLP header is at least this long.
pub const HEADER_LEN_3DW: usize = 12;
/// Header length of 4DW formats.
pub const HEADER_LEN_4DW: usize = 16;
/// Largest payload a TLP can declare (Length 0 = 1024 DW).
pub const MAX_PAYLOAD: usize = 4096;

mod field {
    use core::ops::Range;
    // DW0
    pub const FMT_TYPE: usize = 0;
    pub const TC: usize = 1; // bits 6:4
    pub const FLAGS_LEN: Range<usize> = 2..4; // TD 15, EP 14, Attr 13:12, AT 11:10, Length 9:0
                                              // DW1 of requests
    pub const REQ_ID: Range<usize> = 4..6;
    pub const REQ_TAG: usize = 6;
    pub const BE: usize = 7; // last BE 7:4, first BE 3:0
    pub const ADDR32: Range<usize> = 8..12;
    pub const ADDR64: Range<usize> = 8..16;
    // DW1-2 of completions
    pub const CPL_ID: Range<usize> = 4..6;
    pub const STATUS_BCOUNT: Range<usize> = 6..8; // status 15:13, BCM 12, byte count 11:0
    pub const CPL_REQ_ID: Range<usize> = 8..10;
    pub const CPL_TAG: usize = 10;
    pub const LOWER_ADDR: usize = 11; // bits 6:0
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// A view of a TLP (header and whatever payload bytes are present).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap a buffer without checking (only for buffers sized with [`Repr::buffer_len`]).
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wrap bytes from the network: checks that the header (per Fmt) is present.
    /// A payload shorter than Length declares is *not* an error (see [`Packet::payload_truncated`]).
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensure the header is present.
    pub fn check_len(&self) -> Result<()> {
        let have = self.buffer.as_ref().len();
        // Fmt is in byte 0; with no byte 0 the 3DW minimum applies.
        let need = match self.buffer.as_ref().first() {
            Some(&b) if Fmt::from(b >> 5).is_4dw() => HEADER_LEN_4DW,
            _ => HEADER_LEN_3DW,
        };
        if have < need {
            return Err(WireError::Truncated {
                what: "TLP header",
                need,
                have,
            });
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The raw Fmt/Type byte.
    pub fn fmt_type(&self) -> u8 {
        self.b()[field::FMT_TYPE]
    }
    pub fn fmt(&self) -> Fmt {
        Fmt::from(self.fmt_type() >> 5)
    }
    pub fn tlp_type(&self) -> Type {
        Type::from(self.fmt_type())
    }
    pub fn kind(&self) -> Kind {
        Kind::of(self.fmt(), self.tlp_type())
    }
    /// Header length implied by Fmt (12 or 16).
    pub fn header_len(&self) -> usize {
        if self.fmt().is_4dw() {
            HEADER_LEN_4DW
        } else {
            HEADER_LEN_3DW
        }
    }
    /// Traffic class (3 bits).
    pub fn traffic_class(&self) -> u8 {
        (self.b()[field::TC] >> 4) & 0x7
    }
    /// TLP digest present (TD).
    pub fn td(&self) -> bool {
        be16(&self.b()[field::FLAGS_LEN]) & 0x8000 != 0
    }
    /// Poisoned (EP).
    pub fn ep(&self) -> bool {
        be16(&self.b()[field::FLAGS_LEN]) & 0x4000 != 0
    }
    /// Attr[1:0]: bit 1 relaxed ordering, bit 0 no snoop.
    pub fn attr(&self) -> u8 {
        ((be16(&self.b()[field::FLAGS_LEN]) >> 12) & 0x3) as u8
    }
    /// The raw 10-bit Length field (0 encodes 1024 DW).
    pub fn length_field(&self) -> u16 {
        be16(&self.b()[field::FLAGS_LEN]) & 0x3ff
    }
    /// Length in DW, 1..=1024.
    pub fn length_dw(&self) -> u16 {
        match self.length_field() {
            0 => 1024,
            n => n,
        }
    }

    // --- memory requests ---
    pub fn mem_requester(&self) -> DeviceId {
        DeviceId(be16(&self.b()[field::REQ_ID]))
    }
    pub fn mem_tag(&self) -> u8 {
        self.b()[field::REQ_TAG]
    }
    pub fn first_be(&self) -> u8 {
        self.b()[field::BE] & 0xf
    }
    pub fn last_be(&self) -> u8 {
        self.b()[field::BE] >> 4
    }
    /// The DW-aligned address (32-bit for 3DW, 64-bit for 4DW headers; low 2 bits cleared).
    pub fn address(&self) -> u64 {
        let b = self.b();
        if self.fmt().is_4dw() {
            let a = &b[field::ADDR64];
            u64::from_be_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]) & !3
        } else {
            let a = &b[field::ADDR32];
            u64::from(u32::from_be_bytes([a[0], a[1], a[2], a[3]])) & !3
        }
    }

    // --- completions ---
    pub fn completer(&self) -> DeviceId {
        DeviceId(be16(&self.b()[field::CPL_ID]))
    }
    pub fn status(&self) -> CplStatus {
        CplStatus::from((be16(&self.b()[field::STATUS_BCOUNT]) >> 13) as u8)
    }
    /// Byte Count Modified (set only by PCI-X completers).
    pub fn bcm(&self) -> bool {
        be16(&self.b()[field::STATUS_BCOUNT]) & 0x1000 != 0
    }
    /// The raw 12-bit Byte Count field (0 encodes 4096).
    pub fn byte_count_field(&self) -> u16 {
        be16(&self.b()[field::STATUS_BCOUNT]) & 0xfff
    }
    /// Remaining byte count, 1..=4096.
    pub fn byte_count(&self) -> u16 {
        match self.byte_count_field() {
            0 => 4096,
            n => n,
        }
    }
    pub fn cpl_requester(&self) -> DeviceId {
        DeviceId(be16(&self.b()[field::CPL_REQ_ID]))
    }
    pub fn cpl_tag(&self) -> u8 {
        self.b()[field::CPL_TAG]
    }
    /// Lower address (7 bits).
    pub fn lower_address(&self) -> u8 {
        self.b()[field::LOWER_ADDR] & 0x7f
    }

    /// The requester ID, wherever this TLP's type keeps it (DW2 for completions, DW1 else).
    pub fn requester(&self) -> DeviceId {
        match self.tlp_type() {
            Type::Cpl | Type::CplLocked => self.cpl_requester(),
            _ => self.mem_requester(),
        }
    }
    /// The tag, wherever this TLP's type keeps it.
    pub fn tag(&self) -> u8 {
        match self.tlp_type() {
            Type::Cpl | Type::CplLocked => self.cpl_tag(),
            _ => self.mem_tag(),
        }
    }

    // --- payload ---
    /// Payload bytes the header declares: `length_dw * 4` if Fmt has data, else 0.
    pub fn payload_declared_len(&self) -> usize {
        if self.fmt().has_data() {
            usize::from(self.length_dw()) * 4
        } else {
            0
        }
    }
    /// The payload bytes present: at most the declared length, fewer if the buffer was cut.
    pub fn payload(&self) -> &[u8] {
        let b = self.b();
        let start = self.header_len().min(b.len());
        let end = (start + self.payload_declared_len()).min(b.len());
        &b[start..end]
    }
    /// True if fewer payload bytes are present than the header declares (e.g. snap length).
    pub fn payload_truncated(&self) -> bool {
        self.payload().len() < self.payload_declared_len()
    }
    /// Bytes after the declared payload (ECRC digest when TD is set, or garbage).
    pub fn trailing_len(&self) -> usize {
        self.b()
            .len()
            .saturating_sub(self.header_len() + self.payload_declared_len())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
    fn set_be16(&mut self, r: core::ops::Range<usize>, v: u16) {
        self.bm()[r].copy_from_slice(&v.to_be_bytes());
    }
    fn update16(&mut self, r: core::ops::Range<usize>, mask: u16, v: u16) {
        let old = be16(&self.b()[r.clone()]);
        self.set_be16(r, (old & !mask) | (v & mask));
    }
    pub fn set_fmt(&mut self, fmt: Fmt) {
        let b = &mut self.bm()[field::FMT_TYPE];
        *b = (*b & 0x1f) | (u8::from(fmt) << 5);
    }
    pub fn set_tlp_type(&mut self, ty: Type) {
        let b = &mut self.bm()[field::FMT_TYPE];
        *b = (*b & 0xe0) | u8::from(ty);
    }
    pub fn set_traffic_class(&mut self, tc: u8) {
        let b = &mut self.bm()[field::TC];
        *b = (*b & 0x8f) | ((tc & 0x7) << 4);
    }
    pub fn set_td(&mut self, v: bool) {
        self.update16(field::FLAGS_LEN, 0x8000, if v { 0x8000 } else { 0 });
    }
    pub fn set_ep(&mut self, v: bool) {
        self.update16(field::FLAGS_LEN, 0x4000, if v { 0x4000 } else { 0 });
    }
    pub fn set_attr(&mut self, attr: u8) {
        self.update16(field::FLAGS_LEN, 0x3000, u16::from(attr & 0x3) << 12);
    }
    /// Set Length in DW (1..=1024; 1024 is written as 0, larger values are masked to 10 bits).
    pub fn set_length_dw(&mut self, dw: u16) {
        self.update16(field::FLAGS_LEN, 0x3ff, dw & 0x3ff);
    }
    pub fn set_mem_requester(&mut self, id: DeviceId) {
        self.set_be16(field::REQ_ID, id.0);
    }
    pub fn set_mem_tag(&mut self, tag: u8) {
        self.bm()[field::REQ_TAG] = tag;
    }
    pub fn set_byte_enables(&mut self, first: u8, last: u8) {
        self.bm()[field::BE] = (last & 0xf) << 4 | (first & 0xf);
    }
    /// Write the address (low 2 bits cleared) in the width Fmt selects.
    pub fn set_address(&mut self, addr: u64) {
        let addr = addr & !3;
        if self.fmt().is_4dw() {
            self.bm()[field::ADDR64].copy_from_slice(&addr.to_be_bytes());
        } else {
            self.bm()[field::ADDR32].copy_from_slice(&(addr as u32).to_be_bytes());
        }
    }
    pub fn set_completer(&mut self, id: DeviceId) {
        self.set_be16(field::CPL_ID, id.0);
    }
    pub fn set_status(&mut self, s: CplStatus) {
        self.update16(field::STATUS_BCOUNT, 0xe000, u16::from(u8::from(s)) << 13);
    }
    pub fn set_bcm(&mut self, v: bool) {
        self.update16(field::STATUS_BCOUNT, 0x1000, if v { 0x1000 } else { 0 });
    }
    /// Set Byte Count (1..=4096; 4096 is written as 0).
    pub fn set_byte_count(&mut self, n: u16) {
        self.update16(field::STATUS_BCOUNT, 0x0fff, n & 0xfff);
    }
    pub fn set_cpl_requester(&mut self, id: DeviceId) {
        self.set_be16(field::CPL_REQ_ID, id.0);
    }
    pub fn set_cpl_tag(&mut self, tag: u8) {
        self.bm()[field::CPL_TAG] = tag;
    }
    pub fn set_lower_address(&mut self, la: u8) {
        self.bm()[field::LOWER_ADDR] = la & 0x7f;
    }
    /// The payload area after the header, up to the declared length or the buffer's end.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len().min(self.b().len());
        let end = (start + self.payload_declared_len()).min(self.b().len());
        &mut self.bm()[start..end]
    }
}

mod repr;
pub use repr::{Completion, Flags, MemRequest, Repr};

#[cfg(test)]
mod tests;
