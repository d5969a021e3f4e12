//! The NetTLP wire format: what libtlp and the NetTLP adapter put in UDP datagrams.
//!
//! ```text
//!   UDP payload on ports 0x3000+tag / 0x4000+(tag&0xF)     UDP payload on port 0x2FFF
//!   ┌──────────────┬───────────────────────────────┐      ┌──────────────────────────┐
//!   │ nettlp (6 B) │ tlp: header (12/16 B) + data  │      │ msg: request / response  │
//!   └──────────────┴───────────────────────────────┘      └──────────────────────────┘
//! ```
//!
//! Every protocol has the same shape (after smoltcp's `wire`): a `Packet<T: AsRef<[u8]>>` view
//! whose getters read big-endian fields through byte ranges (`mod field`), setters on
//! `AsMut<[u8]>`, `Packet::new_checked` for bytes from the network (length checked once, so the
//! getters cannot go out of bounds) and a `Repr` with `parse` (validates) and `emit` (never
//! panics into a buffer of `buffer_len()` bytes).
//!
//! Invariant: nothing in this module panics on any input bytes, and no code here depends on the
//! host's byte order (libtlp's `tlp.h` uses bitfields whose order does; we use masks on bytes).
//!
//! # Use
//! A requester builds a read, an endpoint answers it with completions split at its MPS:
//! ```
//! use emulator::wire::{nettlp, tlp};
//! use tlp::{Completion, DeviceId, MemRequest, Repr};
//!
//! // requester: MRd for 300 bytes at 0x1003, tag 5, on UDP port nettlp::requester_port(5)
//! let req = MemRequest::new(DeviceId(0x1a00), 5, 0x1003, 300).expect("fits in 1024 DW");
//! let repr = Repr::MemRead(req);
//! let mut dgram = vec![0u8; nettlp::HEADER_LEN + repr.buffer_len()];
//! let mut outer = nettlp::Packet::new_unchecked(&mut dgram[..]);
//! nettlp::Repr::default().emit(&mut outer);
//! repr.emit(&mut tlp::Packet::new_unchecked(outer.payload_mut()));
//!
//! // endpoint: parse, then one CplD per chunk (data at chunk.payload_offset() in the payload)
//! let outer = nettlp::Packet::new_checked(&dgram[..]).unwrap();
//! let Repr::MemRead(got) = Repr::parse(&tlp::Packet::new_checked(outer.payload()).unwrap()).unwrap()
//! else { unreachable!() };
//! let cpls: Vec<Completion> = got
//!     .completion_chunks(256)
//!     .map(|chunk| Completion::for_chunk(&got, DeviceId(0x0100), &chunk))
//!     .collect();
//! assert_eq!(cpls.iter().map(|c| c.byte_count).collect::<Vec<_>>(), [300, 47]);
//! assert!(cpls[1].is_last());
//! ```

pub mod msg;
pub mod nettlp;
pub mod tlp;

/// Why bytes could not be read as a NetTLP datagram, TLP or message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer is shorter than the fixed part of the structure.
    #[error("{what}: needs {need} bytes, only {have} present")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    /// A TLP whose Fmt/Type is not one of MRd, MWr, Cpl, CplD (reported, not fatal to callers).
    #[error("unsupported TLP fmt {fmt:?} type {ty:?}")]
    Unsupported { fmt: tlp::Fmt, ty: tlp::Type },
    /// A field holds a value the protocol forbids (the offset is into the structure parsed).
    #[error("{what} at byte {offset}: {reason}")]
    Malformed {
        what: &'static str,
        offset: usize,
        reason: &'static str,
    },
}

/// Result alias for this module.
pub type Result<T> = core::result::Result<T, WireError>;
