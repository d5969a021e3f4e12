//! High-level TLP representation: the header fields of MRd, MWr, Cpl and CplD, validated.
//!
//! Invariants: [`Repr::parse`] accepts only the four kinds and only headers that follow the
//! byte-enable rules; [`Repr::emit`] writes the header (never the payload) and never panics
//! into a buffer of at least [`Repr::header_len`] bytes (so of [`Repr::buffer_len`] bytes).
//! Memory requests are emitted 3DW below 4 GiB and 4DW at or above, as PCIe requires; a 4DW
//! request below 4 GiB (libtlp builds one for `0xffff_ffff`) parses fine and is re-emitted 3DW.

use super::rules::{byte_enables, completion_chunks, lower_address, request_bytes};
use super::{
    Chunk, CompletionChunks, CplStatus, DeviceId, Fmt, Kind, Packet, Type, HEADER_LEN_3DW,
    HEADER_LEN_4DW,
};
use crate::wire::{Result, WireError};
use core::ops::Range;

/// Header fields common to all TLPs that we model (defaults: all zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    /// Traffic class, 3 bits.
    pub tc: u8,
    /// Attr[1:0]: relaxed ordering (bit 1), no snoop (bit 0).
    pub attr: u8,
    /// TLP digest present.
    pub td: bool,
    /// Poisoned.
    pub ep: bool,
}

/// A memory read or write request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemRequest {
    pub requester: DeviceId,
    pub tag: u8,
    /// DW-aligned address (low two bits zero).
    pub address: u64,
    /// Length in DW, 1..=1024.
    pub length_dw: u16,
    pub first_be: u8,
    pub last_be: u8,
    pub flags: Flags,
}

impl MemRequest {
    /// The request for `len` bytes at `addr` (read or write), as libtlp's `dma_read` and
    /// `dma_write` build it. `None` if the bytes span more than 1024 DW.
    pub fn new(requester: DeviceId, tag: u8, addr: u64, len: u32) -> Option<MemRequest> {
        let be = byte_enables(addr, len)?;
        Some(MemRequest {
            requester,
            tag,
            address: addr & !3,
            length_dw: be.length_dw,
            first_be: be.first_be,
            last_be: be.last_be,
            flags: Flags::default(),
        })
    }

    /// (address of the first enabled byte, number of bytes) this request covers.
    pub fn bytes(&self) -> (u64, u32) {
        request_bytes(self.address, self.length_dw, self.first_be, self.last_be)
    }

    /// The completions a completer with max payload `mps` answers this read with.
    pub fn completion_chunks(&self, mps: u32) -> CompletionChunks {
        let (addr, len) = self.bytes();
        completion_chunks(addr, len, mps)
    }

    /// Whether the header is 4DW (address at or above 4 GiB).
    pub const fn is_4dw(&self) -> bool {
        self.address > u32::MAX as u64
    }
}

/// A completion header (Cpl when `length_dw == 0`, CplD otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub completer: DeviceId,
    pub requester: DeviceId,
    pub tag: u8,
    pub status: CplStatus,
    pub bcm: bool,
    /// Bytes still to come including this completion's, 1..=4096.
    pub byte_count: u16,
    /// Lower address, 7 bits.
    pub lower_address: u8,
    /// Payload length in DW: 0 for Cpl (no data), 1..=1024 for CplD.
    pub length_dw: u16,
    pub flags: Flags,
}

impl Completion {
    /// The successful CplD carrying `chunk` of the read `req`.
    pub fn for_chunk(req: &MemRequest, completer: DeviceId, chunk: &Chunk) -> Completion {
        Completion {
            completer,
            requester: req.requester,
            tag: req.tag,
            status: CplStatus::SC,
            bcm: false,
            byte_count: chunk.byte_count,
            lower_address: chunk.lower_address,
            length_dw: chunk.length_dw,
            flags: Flags {
                tc: req.flags.tc,
                attr: req.flags.attr,
                td: false,
                ep: false,
            },
        }
    }

    /// The data-less completion refusing `req` with `status` (UR for an address nothing backs).
    pub fn error(req: &MemRequest, completer: DeviceId, status: CplStatus) -> Completion {
        let (addr, len) = req.bytes();
        Completion {
            completer,
            requester: req.requester,
            tag: req.tag,
            status,
            bcm: false,
            byte_count: len.clamp(1, 4096) as u16,
            lower_address: lower_address(addr),
            length_dw: 0,
            flags: Flags {
                tc: req.flags.tc,
                attr: req.flags.attr,
                td: false,
                ep: false,
            },
        }
    }

    /// Whether this is a CplD.
    pub const fn has_data(&self) -> bool {
        self.length_dw != 0
    }

    /// Where the data bytes are in the payload: from `lower_address & 3`, `byte_count` bytes
    /// if this is the last completion of the read, else up to the end of the payload.
    /// (libtlp: the last CplD is the one with `Length == ((LA & 3) + BC + 3) / 4`.)
    pub fn data_range(&self) -> Range<usize> {
        let start = usize::from(self.lower_address & 3);
        let room = (usize::from(self.length_dw) * 4).saturating_sub(start);
        start..start + room.min(usize::from(self.byte_count))
    }

    /// Whether this completion finishes its read (its data covers the whole byte count).
    pub fn is_last(&self) -> bool {
        self.data_range().len() >= usize::from(self.byte_count)
    }
}

/// A TLP header we understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr {
    MemRead(MemRequest),
    MemWrite(MemRequest),
    Completion(Completion),
}

fn flags_of<T: AsRef<[u8]>>(p: &Packet<T>) -> Flags {
    Flags {
        tc: p.traffic_class(),
        attr: p.attr(),
        td: p.td(),
        ep: p.ep(),
    }
}

fn check_byte_enables(length_dw: u16, first_be: u8, last_be: u8) -> Result<()> {
    let bad = |reason| {
        Err(WireError::Malformed {
            what: "TLP byte enables",
            offset: 7,
            reason,
        })
    };
    if length_dw == 1 && last_be != 0 {
        return bad("Last DW BE must be 0 for a 1-DW request");
    }
    if length_dw > 1 && (first_be == 0 || last_be == 0) {
        return bad("First and Last DW BE must be non-zero for a multi-DW request");
    }
    Ok(())
}

impl Repr {
    /// Parse and validate a TLP header. Other kinds give [`WireError::Unsupported`].
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        p.check_len()?;
        let kind = p.kind();
        match kind {
            Kind::MRd | Kind::MWr => {
                let req = MemRequest {
                    requester: p.mem_requester(),
                    tag: p.mem_tag(),
                    address: p.address(),
                    length_dw: p.length_dw(),
                    first_be: p.first_be(),
                    last_be: p.last_be(),
                    flags: flags_of(p),
                };
                check_byte_enables(req.length_dw, req.first_be, req.last_be)?;
                Ok(if kind == Kind::MRd {
                    Repr::MemRead(req)
                } else {
                    Repr::MemWrite(req)
                })
            }
            Kind::Cpl | Kind::CplD => Ok(Repr::Completion(Completion {
                completer: p.completer(),
                requester: p.cpl_requester(),
                tag: p.cpl_tag(),
                status: p.status(),
                bcm: p.bcm(),
                byte_count: p.byte_count(),
                lower_address: p.lower_address(),
                length_dw: if kind == Kind::CplD { p.length_dw() } else { 0 },
                flags: flags_of(p),
            })),
            Kind::Unknown => Err(WireError::Unsupported {
                fmt: p.fmt(),
                ty: p.tlp_type(),
            }),
        }
    }

    pub const fn kind(&self) -> Kind {
        match self {
            Repr::MemRead(_) => Kind::MRd,
            Repr::MemWrite(_) => Kind::MWr,
            Repr::Completion(c) if c.has_data() => Kind::CplD,
            Repr::Completion(_) => Kind::Cpl,
        }
    }

    fn fmt(&self) -> Fmt {
        match self {
            Repr::MemRead(r) if r.is_4dw() => Fmt::NoData4Dw,
            Repr::MemRead(_) => Fmt::NoData3Dw,
            Repr::MemWrite(r) if r.is_4dw() => Fmt::Data4Dw,
            Repr::MemWrite(_) => Fmt::Data3Dw,
            Repr::Completion(c) if c.has_data() => Fmt::Data3Dw,
            Repr::Completion(_) => Fmt::NoData3Dw,
        }
    }

    /// Header length: 16 for requests at or above 4 GiB, else 12.
    pub fn header_len(&self) -> usize {
        if self.fmt().is_4dw() {
            HEADER_LEN_4DW
        } else {
            HEADER_LEN_3DW
        }
    }

    /// Payload bytes that follow the header (0 for MRd and Cpl).
    pub fn payload_len(&self) -> usize {
        match self {
            Repr::MemRead(_) => 0,
            Repr::MemWrite(r) => usize::from(r.length_dw.clamp(1, 1024)) * 4,
            Repr::Completion(c) => usize::from(c.length_dw.min(1024)) * 4,
        }
    }

    /// Header plus payload.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload_len()
    }

    /// Write the header (reserved bits zero) into `p`, whose buffer holds at least
    /// [`Repr::header_len`] bytes. The payload area is left to the caller
    /// ([`Packet::payload_mut`]).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        let hl = self.header_len();
        p.bm()[..hl].fill(0);
        p.set_fmt(self.fmt());
        let (flags, length_dw) = match self {
            Repr::MemRead(r) | Repr::MemWrite(r) => (r.flags, r.length_dw),
            Repr::Completion(c) => (c.flags, c.length_dw),
        };
        p.set_traffic_class(flags.tc);
        p.set_attr(flags.attr);
        p.set_td(flags.td);
        p.set_ep(flags.ep);
        p.set_length_dw(length_dw);
        match self {
            Repr::MemRead(r) | Repr::MemWrite(r) => {
                p.set_tlp_type(Type::Mem);
                p.set_mem_requester(r.requester);
                p.set_mem_tag(r.tag);
                p.set_byte_enables(r.first_be, r.last_be);
                p.set_address(r.address);
            }
            Repr::Completion(c) => {
                p.set_tlp_type(Type::Cpl);
                p.set_completer(c.completer);
                p.set_status(c.status);
                p.set_bcm(c.bcm);
                p.set_byte_count(c.byte_count);
                p.set_cpl_requester(c.requester);
                p.set_cpl_tag(c.tag);
                p.set_lower_address(c.lower_address);
            }
        }
    }
}
