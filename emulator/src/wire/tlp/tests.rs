//! TLP codec tests: byte vectors taken from the real captures in `shared/captures`.

use super::*;

/// Frame 1 of `root-complex/mrd-512byte-rc.pcap`: libtlp's MRd of 512 B at 0xc0000000.
const RC_MRD: [u8; 12] = [
    0x00, 0x00, 0x00, 0x80, 0x1a, 0x00, 0x00, 0xff, 0xc0, 0x00, 0x00, 0x00,
];
/// Frame 18 of the same capture: first CplD (byte count 512) of that read, header only.
const RC_CPLD: [u8; 12] = [
    0x4a, 0x00, 0x00, 0x40, 0x00, 0x00, 0x02, 0x00, 0x1a, 0x00, 0x00, 0x00,
];
/// Frame 1 of `simple-nic/simple-nic-ping.pcap`: a 4-byte MWr to 0xa0000010.
const NIC_MWR: [u8; 16] = [
    0x40, 0x00, 0x00, 0x01, 0x00, 0x00, 0x03, 0x0f, 0xa0, 0x00, 0x00, 0x10, 0, 0, 0, 0,
];
/// Frame 3 of the same capture: CplD with 16 bytes for requester 1b:00.0 tag 3.
const NIC_CPLD: [u8; 28] = [
    0x4a, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x10, 0x1b, 0x00, 0x03, 0x00, 0x00, 0x68, 0xb2, 0x3b,
    0x00, 0x00, 0x00, 0x00, 0x62, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];
/// Frame 136 of `nic-and-nvme/pm1725/pm1725-read-8blk.pcap`: first TLP byte 0xa0.
const PM_A0: [u8; 16] = [0xa0, 0x00, 0x7b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

#[test]
fn libtlp_mrd_is_reproduced_byte_for_byte() {
    let p = Packet::new_checked(&RC_MRD[..]).unwrap();
    assert_eq!(p.kind(), Kind::MRd);
    let repr = Repr::parse(&p).unwrap();
    let want = MemRequest::new(DeviceId(0x1a00), 0, 0xc000_0000, 512).unwrap();
    assert_eq!(repr, Repr::MemRead(want));
    assert_eq!(want.bytes(), (0xc000_0000, 512));
    let mut buf = vec![0xeeu8; repr.buffer_len()];
    repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
    assert_eq!(buf, RC_MRD);
}

#[test]
fn captured_cpld_parses() {
    let p = Packet::new_checked(&RC_CPLD[..]).unwrap();
    assert_eq!(p.kind(), Kind::CplD);
    assert_eq!(p.payload_declared_len(), 256);
    assert!(p.payload_truncated());
    assert!(p.payload().is_empty());
    let Repr::Completion(c) = Repr::parse(&p).unwrap() else {
        panic!("not a completion")
    };
    assert_eq!(c.completer, DeviceId(0));
    assert_eq!(c.requester.to_string(), "1a:00.0");
    assert_eq!(
        (c.tag, c.status, c.byte_count, c.lower_address, c.length_dw),
        (0, CplStatus::SC, 512, 0, 64)
    );
    assert!(!c.is_last());
    assert_eq!(c.data_range(), 0..256);
    // it is exactly the completion our rules build for the first chunk of that read
    let req = MemRequest::new(DeviceId(0x1a00), 0, 0xc000_0000, 512).unwrap();
    let chunk = req.completion_chunks(256).next().unwrap();
    assert_eq!(Completion::for_chunk(&req, DeviceId(0), &chunk), c);
    let mut buf = vec![0u8; 12];
    Repr::Completion(c).emit(&mut Packet::new_unchecked(&mut buf[..]));
    assert_eq!(buf, RC_CPLD);
}

#[test]
fn captured_mwr_and_small_cpld() {
    let p = Packet::new_checked(&NIC_MWR[..]).unwrap();
    assert_eq!(p.kind(), Kind::MWr);
    assert_eq!(
        (p.mem_tag(), p.first_be(), p.last_be(), p.address()),
        (3, 0xf, 0, 0xa000_0010)
    );
    assert_eq!(p.payload(), &[0, 0, 0, 0]);
    assert!(!p.payload_truncated());
    let r = Repr::parse(&p).unwrap();
    let mut buf = vec![0u8; r.buffer_len()];
    r.emit(&mut Packet::new_unchecked(&mut buf[..]));
    assert_eq!(buf[..12], NIC_MWR[..12]);

    let p = Packet::new_checked(&NIC_CPLD[..]).unwrap();
    let Repr::Completion(c) = Repr::parse(&p).unwrap() else {
        panic!("not a completion")
    };
    assert_eq!(
        (c.requester, c.tag, c.byte_count, c.length_dw),
        (DeviceId(0x1b00), 3, 16, 4)
    );
    assert!(c.is_last());
    assert_eq!(&p.payload()[c.data_range()], &NIC_CPLD[12..]);
}

#[test]
fn unknown_fmt_is_reported_not_fatal() {
    let p = Packet::new_checked(&PM_A0[..]).unwrap();
    assert_eq!(p.fmt(), Fmt::Unknown(5));
    assert_eq!(p.tlp_type(), Type::Mem);
    assert_eq!(p.kind(), Kind::Unknown);
    assert_eq!(
        Repr::parse(&p).unwrap_err(),
        WireError::Unsupported {
            fmt: Fmt::Unknown(5),
            ty: Type::Mem
        }
    );
    // and the raw value round-trips through the enums and setters
    let mut buf = [0u8; 12];
    let mut q = Packet::new_unchecked(&mut buf[..]);
    q.set_fmt(p.fmt());
    q.set_tlp_type(Type::Unknown(0x13));
    assert_eq!(buf[0], 0xb3);
}

#[test]
fn fmt_type_and_status_round_trip_for_every_value() {
    for v in 0..8u8 {
        assert_eq!(u8::from(Fmt::from(v)), v);
        assert_eq!(u8::from(CplStatus::from(v)), v);
    }
    for v in 0..32u8 {
        assert_eq!(u8::from(Type::from(v)), v);
    }
}

#[test]
fn addresses_at_or_above_4gib_use_4dw() {
    for (addr, hl, fmt0) in [
        (0xffff_fff0u64, 12, 0x00u8),
        (0x1_0000_0000, 16, 0x20),
        (0xdead_beef_0000, 16, 0x20),
    ] {
        let req = MemRequest::new(DeviceId(0x0100), 7, addr, 64).unwrap();
        let repr = Repr::MemRead(req);
        assert_eq!(repr.header_len(), hl);
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf[0], fmt0);
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.address(), addr);
        assert_eq!(Repr::parse(&p).unwrap(), repr);
    }
    // a 4DW write above 4 GiB with its payload
    let req = MemRequest::new(DeviceId(0x0100), 1, 0x2_0000_0002, 3).unwrap();
    let repr = Repr::MemWrite(req);
    let mut buf = vec![0u8; repr.buffer_len()];
    let mut p = Packet::new_unchecked(&mut buf[..]);
    repr.emit(&mut p);
    p.payload_mut()[2..5].copy_from_slice(&[1, 2, 3]);
    assert_eq!(
        buf,
        [0x60, 0, 0, 2, 1, 0, 1, 0x1c, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 1, 2, 3, 0, 0, 0]
    );
}

#[test]
fn four_dw_below_4gib_parses() {
    // libtlp sends 4DW for addr == 0xffffffff (its test is `addr < UINT32_MAX`)
    let bytes = [
        0x20, 0, 0, 1, 0x1a, 0, 5, 0x08, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xfc,
    ];
    let p = Packet::new_checked(&bytes[..]).unwrap();
    let Repr::MemRead(r) = Repr::parse(&p).unwrap() else {
        panic!("not MRd")
    };
    assert_eq!(r.bytes(), (0xffff_ffff, 1));
}

#[test]
fn length_and_byte_count_zero_mean_maximum() {
    let mut buf = [0u8; 12];
    let mut p = Packet::new_unchecked(&mut buf[..]);
    p.set_fmt(Fmt::Data3Dw);
    p.set_tlp_type(Type::Cpl);
    p.set_length_dw(1024);
    p.set_byte_count(4096);
    assert_eq!(p.length_field(), 0);
    assert_eq!(p.length_dw(), 1024);
    assert_eq!(p.byte_count_field(), 0);
    assert_eq!(p.byte_count(), 4096);
    assert_eq!(p.payload_declared_len(), 4096);
}

#[test]
fn flags_status_and_lower_address() {
    let c = Completion {
        completer: DeviceId::new(0x12, 0x1f, 7),
        requester: DeviceId(0xabcd),
        tag: 0x5a,
        status: CplStatus::CA,
        bcm: true,
        byte_count: 0x123,
        lower_address: 0x7f,
        length_dw: 0,
        flags: Flags {
            tc: 5,
            attr: 3,
            td: true,
            ep: true,
        },
    };
    let repr = Repr::Completion(c);
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
    assert_eq!(
        buf,
        [0x0a, 0x50, 0xf0, 0x00, 0x12, 0xff, 0x91, 0x23, 0xab, 0xcd, 0x5a, 0x7f]
    );
    assert_eq!(
        Repr::parse(&Packet::new_checked(&buf[..]).unwrap()).unwrap(),
        repr
    );
    assert_eq!(c.completer.to_string(), "12:1f.7");
}

#[test]
fn error_completion_for_an_unbacked_read() {
    let req = MemRequest::new(DeviceId(0x1a00), 9, 0x1_2345_6781, 100).unwrap();
    let c = Completion::error(&req, DeviceId(0x0100), CplStatus::UR);
    assert_eq!(
        (c.byte_count, c.lower_address, c.length_dw, c.tag),
        (100, 0x01, 0, 9)
    );
    assert_eq!(Repr::Completion(c).kind(), Kind::Cpl);
    assert_eq!(Repr::Completion(c).buffer_len(), 12);
}

#[test]
fn malformed_byte_enables_are_errors() {
    // 1-DW MRd with a non-zero Last BE
    let bytes = [0x00, 0, 0, 1, 0, 0, 0, 0xff, 0, 0, 0x10, 0];
    assert!(matches!(
        Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()),
        Err(WireError::Malformed { offset: 7, .. })
    ));
    // the all-zero MRd found in pm1725-read-8blk (Length 0 = 1024 DW, BEs 0)
    let zeros = [0u8; 12];
    let p = Packet::new_checked(&zeros[..]).unwrap();
    assert_eq!((p.kind(), p.length_dw()), (Kind::MRd, 1024));
    assert!(Repr::parse(&p).is_err());
}

#[test]
fn short_headers_are_errors_and_truncated_payloads_are_not() {
    for n in 0..12 {
        assert!(Packet::new_checked(&RC_MRD[..n]).is_err());
    }
    let four_dw = [0x20u8; 15];
    assert_eq!(
        Packet::new_checked(&four_dw[..]).unwrap_err(),
        WireError::Truncated {
            what: "TLP header",
            need: 16,
            have: 15
        }
    );
    let p = Packet::new_checked(&NIC_CPLD[..20]).unwrap();
    assert_eq!(
        (
            p.payload().len(),
            p.payload_declared_len(),
            p.payload_truncated()
        ),
        (8, 16, true)
    );
    assert_eq!(p.trailing_len(), 0);
}
