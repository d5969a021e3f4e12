//! PCIe rules for memory reads: byte enables of an arbitrary (address, length), the bytes a
//! request covers, and how a completer splits a read into completions.
//!
//! Invariants (PCIe Base Spec 2.2.5, 2.2.9, 2.3.1.1, Table 2-38 in 3.0 numbering):
//! - a request of one DW has Last DW BE 0; longer requests have both BEs non-zero and
//!   contiguous; a zero-length read is one DW with both BEs 0;
//! - every completion but the last of a read ends on a Read Completion Boundary ([`RCB`],
//!   64 bytes) and carries at most the Max Payload Size; its Byte Count is the number of
//!   bytes still to come *including* its own, its Lower Address the low 7 bits of the
//!   address of its first byte.
//!
//! Nothing here panics: inputs that cannot be encoded give `None` or are clamped as documented.

/// Read Completion Boundary used for splitting (the adapter's and root complexes' 64 bytes).
pub const RCB: u64 = 64;

/// Length and byte enables of a request for `len` bytes at `addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteEnables {
    /// Length in DW, 1..=1024.
    pub length_dw: u16,
    /// First DW byte enables (4 bits).
    pub first_be: u8,
    /// Last DW byte enables (4 bits; 0 when `length_dw == 1`).
    pub last_be: u8,
}

/// Length and byte enables for `len` bytes at `addr` (what libtlp's `tlp_calculate_length`,
/// `tlp_calculate_fstdw` and `tlp_calculate_lstdw` compute). `len == 0` gives the zero-length
/// read (1 DW, both BEs 0). `None` if the bytes span more than 1024 DW or overflow `u64`.
pub fn byte_enables(addr: u64, len: u32) -> Option<ByteEnables> {
    if len == 0 {
        return Some(ByteEnables {
            length_dw: 1,
            first_be: 0,
            last_be: 0,
        });
    }
    let end = addr.checked_add(u64::from(len))?;
    let first_dw = addr & !3;
    let last_dw = (end - 1) & !3;
    let length_dw = (last_dw - first_dw) / 4 + 1;
    if length_dw > 1024 {
        return None;
    }
    let lead = (addr & 3) as u32; // bytes skipped in the first DW
    let tail = ((4 - (end & 3)) & 3) as u32; // bytes skipped in the last DW
    let (first_be, last_be) = if length_dw == 1 {
        ((0xfu8 << lead) & (0xfu8 >> tail), 0)
    } else {
        ((0xfu8 << lead) & 0xf, 0xfu8 >> tail)
    };
    Some(ByteEnables {
        length_dw: length_dw as u16,
        first_be,
        last_be,
    })
}

/// The bytes a memory request covers: (address of the first enabled byte, number of bytes
/// from it to the last enabled byte inclusive). `dw_addr` is the request's DW-aligned address.
/// A zero-length read (1 DW, first BE 0) covers 0 bytes. Malformed BEs (0 on a multi-DW
/// request) count as "no byte of that DW", never as a panic.
pub fn request_bytes(dw_addr: u64, length_dw: u16, first_be: u8, last_be: u8) -> (u64, u32) {
    let first_be = first_be & 0xf;
    let last_be = last_be & 0xf;
    let length_dw = u32::from(length_dw.clamp(1, 1024));
    // Bytes disabled at the start of the first DW and at the end of the last DW.
    let lead = (first_be | 0x10).trailing_zeros(); // 0..=4
    let (span_be, dws) = if length_dw == 1 {
        (first_be, 1)
    } else {
        (last_be, length_dw)
    };
    if length_dw == 1 && first_be == 0 {
        return (dw_addr, 0);
    }
    let trail = if span_be == 0 {
        4
    } else {
        u32::from(span_be).leading_zeros() - 28
    }; // 0..=4
    let total = (dws * 4).saturating_sub(lead + trail);
    (dw_addr.wrapping_add(u64::from(lead)), total)
}

/// Lower Address field for a completion whose first byte is at `addr`.
pub const fn lower_address(addr: u64) -> u8 {
    (addr & 0x7f) as u8
}

/// One completion of a split read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Address of the first data byte this completion returns.
    pub addr: u64,
    /// Number of data bytes it returns (0 only for a zero-length read).
    pub len: u32,
    /// Length field in DW: covers `addr & !3 .. align_up(addr + len, 4)`.
    pub length_dw: u16,
    /// Byte Count: bytes still to come including these, 1..=4096.
    pub byte_count: u16,
    /// Lower Address: `addr & 0x7f`.
    pub lower_address: u8,
}

impl Chunk {
    /// Offset of the first data byte in the completion's payload (`addr & 3`).
    pub const fn payload_offset(&self) -> usize {
        (self.addr & 3) as usize
    }
}

/// Iterator over the completions of a read; see [`completion_chunks`].
#[derive(Debug, Clone)]
pub struct CompletionChunks {
    cur: u64,
    end: u64,
    mps: u64,
    zero_len: bool,
}

/// Split a read of `len` bytes at `addr` into completions of at most `mps` payload bytes that
/// end on 64-byte boundaries (all but the last). `mps` is rounded down to a multiple of 64 and
/// clamped to 64..=4096; `len` is clamped to 4096 and to the end of the address space (a
/// memory read can ask for at most 1024 DW). `len == 0` (zero-length read) gives one chunk with
/// `length_dw` 1, `byte_count` 1 and `len` 0.
pub fn completion_chunks(addr: u64, len: u32, mps: u32) -> CompletionChunks {
    let mps = u64::from(mps.clamp(64, 4096)) & !(RCB - 1);
    let len = u64::from(len.min(4096)).min(u64::MAX - addr);
    CompletionChunks {
        cur: addr,
        end: addr + len,
        mps,
        zero_len: len == 0,
    }
}

impl Iterator for CompletionChunks {
    type Item = Chunk;

    fn next(&mut self) -> Option<Chunk> {
        if self.zero_len {
            self.zero_len = false;
            return Some(Chunk {
                addr: self.cur,
                len: 0,
                length_dw: 1,
                byte_count: 1,
                lower_address: lower_address(self.cur),
            });
        }
        if self.cur >= self.end {
            return None;
        }
        let start = self.cur;
        let dw_start = start & !3;
        // Largest RCB-aligned end whose DW span from dw_start fits in MPS; always > start
        // because mps >= RCB.
        let limit = dw_start
            .checked_add(self.mps)
            .map_or(self.end, |l| l & !(RCB - 1));
        let stop = self.end.min(limit);
        let chunk = Chunk {
            addr: start,
            len: (stop - start) as u32,
            length_dw: ((stop - 1 - dw_start) / 4 + 1) as u16,
            byte_count: (self.end - start) as u16, // <= 4096 by construction
            lower_address: lower_address(start),
        };
        self.cur = stop;
        Some(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (addr, len) -> (length_dw, first_be, last_be), worked out by hand from the spec.
    #[rstest::rstest]
    #[case(0x1000, 4, 1, 0xf, 0x0)]
    #[case(0x1000, 8, 2, 0xf, 0xf)]
    #[case(0x1001, 2, 1, 0x6, 0x0)]
    #[case(0x1003, 2, 2, 0x8, 0x1)]
    #[case(0x1002, 4, 2, 0xc, 0x3)]
    #[case(0x1001, 3, 1, 0xe, 0x0)]
    #[case(0x1001, 6, 2, 0xe, 0x7)]
    #[case(0x1000, 5, 2, 0xf, 0x1)]
    #[case(0x1000, 1, 1, 0x1, 0x0)]
    #[case(0x1003, 1, 1, 0x8, 0x0)]
    #[case(0xc000_0000, 512, 128, 0xf, 0xf)]
    #[case(0x1000, 4096, 1024, 0xf, 0xf)]
    #[case(0x1000, 0, 1, 0x0, 0x0)]
    fn byte_enable_vectors(
        #[case] addr: u64,
        #[case] len: u32,
        #[case] dw: u16,
        #[case] fbe: u8,
        #[case] lbe: u8,
    ) {
        let be = byte_enables(addr, len).unwrap();
        assert_eq!(
            be,
            ByteEnables {
                length_dw: dw,
                first_be: fbe,
                last_be: lbe
            }
        );
    }

    #[test]
    fn byte_enables_refuses_more_than_1024_dw() {
        assert_eq!(byte_enables(0x1001, 4096), None);
        assert_eq!(byte_enables(u64::MAX - 1, 8), None);
    }

    #[test]
    fn request_bytes_inverts_byte_enables() {
        for base in [0u64, 0x1000, 0xffff_fff0, 0x1_0000_0000] {
            for off in 0..4 {
                for len in 1..=70u32 {
                    let addr = base + off;
                    let be = byte_enables(addr, len).unwrap();
                    let got = request_bytes(addr & !3, be.length_dw, be.first_be, be.last_be);
                    assert_eq!(got, (addr, len), "addr {addr:#x} len {len}");
                }
            }
        }
    }

    #[test]
    fn request_bytes_follows_the_one_dw_table() {
        // PCIe Table 2-38: byte count of a 1-DW read from its first BE (non-contiguous allowed).
        let table = [
            (0b1001, 0, 4),
            (0b1111, 0, 4),
            (0b0101, 0, 3),
            (0b1010, 1, 3),
            (0b0011, 0, 2),
            (0b0110, 1, 2),
            (0b1100, 2, 2),
            (0b0001, 0, 1),
            (0b0010, 1, 1),
            (0b0100, 2, 1),
            (0b1000, 3, 1),
        ];
        for (fbe, off, n) in table {
            assert_eq!(
                request_bytes(0x100, 1, fbe, 0),
                (0x100 + off, n),
                "fbe {fbe:04b}"
            );
        }
        assert_eq!(request_bytes(0x100, 1, 0, 0), (0x100, 0));
        // malformed: zero BEs on a multi-DW request never panic
        assert_eq!(request_bytes(0x100, 2, 0, 0), (0x104, 0));
    }

    fn chunks(addr: u64, len: u32, mps: u32) -> Vec<(u64, u32, u16, u16, u8)> {
        completion_chunks(addr, len, mps)
            .map(|c| (c.addr, c.len, c.length_dw, c.byte_count, c.lower_address))
            .collect()
    }

    #[test]
    fn splits_512_bytes_like_the_root_complex() {
        // root-complex/mrd-512byte-rc.pcap: 512 B at 0xc0000000 came back as two 256-B CplDs
        // with byte counts 0x200 and 0x100 and lower address 0.
        assert_eq!(
            chunks(0xc000_0000, 512, 256),
            vec![
                (0xc000_0000, 256, 64, 512, 0),
                (0xc000_0100, 256, 64, 256, 0)
            ]
        );
    }

    #[test]
    fn unaligned_reads_end_on_rcb_boundaries() {
        assert_eq!(
            chunks(0x1003, 300, 128),
            vec![
                (0x1003, 125, 32, 300, 0x03),
                (0x1080, 128, 32, 175, 0x00),
                (0x1100, 47, 12, 47, 0x00),
            ]
        );
        assert_eq!(chunks(0x103e, 4, 256), vec![(0x103e, 4, 2, 4, 0x3e)]);
    }

    #[test]
    fn chunks_cover_the_read_exactly() {
        for mps in [64, 128, 256, 512, 4096] {
            for addr in [0u64, 1, 2, 3, 60, 63, 64, 0xfc1, 0x1_0000_0fff] {
                for len in [1u32, 3, 4, 5, 63, 64, 65, 255, 256, 257, 1000, 4095, 4096] {
                    let cs: Vec<Chunk> = completion_chunks(addr, len, mps).collect();
                    let mut next = addr;
                    for (i, c) in cs.iter().enumerate() {
                        assert_eq!(c.addr, next);
                        assert_eq!(u64::from(c.byte_count), addr + u64::from(len) - c.addr);
                        assert!(u32::from(c.length_dw) * 4 <= mps, "{c:?} over mps {mps}");
                        let end = c.addr + u64::from(c.len);
                        if i + 1 < cs.len() {
                            assert_eq!(end % RCB, 0, "{c:?} not on RCB");
                        }
                        let be = byte_enables(c.addr, c.len).unwrap();
                        assert_eq!(be.length_dw, c.length_dw);
                        next = end;
                    }
                    assert_eq!(next, addr + u64::from(len));
                }
            }
        }
    }

    #[test]
    fn zero_length_read_and_odd_mps() {
        assert_eq!(chunks(0x2005, 0, 256), vec![(0x2005, 0, 1, 1, 0x05)]);
        // mps 100 rounds down to 64; mps 0 clamps to 64
        assert_eq!(chunks(0, 128, 100).len(), 2);
        assert_eq!(chunks(0, 128, 0).len(), 2);
        // 4096-byte read, 4096 byte count encodes as the maximum
        assert_eq!(chunks(0, 4096, 4096), vec![(0, 4096, 1024, 4096, 0)]);
        // clamped at the top of the address space, no overflow
        assert_eq!(
            chunks(u64::MAX - 3, 8, 256),
            vec![(u64::MAX - 3, 3, 1, 3, 0x7c)]
        );
    }
}
