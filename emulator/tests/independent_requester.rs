//! A requester written from the wire description alone — hand-built bytes, no use of
//! this crate's codec — against the `emulator serve` binary over loopback UDP. It guards the
//! codec against agreeing only with itself.
//!
//! Wire facts used (issue 2): UDP port 0x3000 + tag at both ends; a 6-byte NetTLP header
//! (16-bit sequence, 32-bit timestamp, big-endian) before each TLP; MRd/MWr 3DW below 4 GiB and
//! 4DW above; Cpl/CplD carry status (SC 0, UR 1), byte count (0 = 4096) and lower address.

use std::io::Read;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Image base: 8 KiB below 4 GiB, so the image straddles the 3DW/4DW boundary.
const BASE: u64 = 0xffff_e000;
const LEN: u64 = 256 << 10;

fn lcg_bytes(len: usize, mut x: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

fn loopback(salt: u64) -> Ipv4Addr {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let x = lcg_bytes(3, u64::from(std::process::id()) ^ t ^ salt);
    Ipv4Addr::new(127, x[0] % 254 + 1, x[1] % 254 + 1, x[2] % 254 + 1)
}

struct Served {
    child: Child,
    addr: Ipv4Addr,
}

impl Served {
    /// SIGINT, then the counters JSON the binary prints on stdout.
    fn stop(mut self) -> String {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let mut out = String::new();
        self.child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        assert!(self.child.wait().unwrap().success());
        out
    }
}

impl Drop for Served {
    /// A failed test must not leave the endpoint running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn serve(image: &Path, extra: &[&str]) -> Served {
    for attempt in 0..10 {
        let addr = loopback(attempt);
        let mut child = Command::new(env!("CARGO_BIN_EXE_emulator"))
            .args(["serve", "--image"])
            .arg(image)
            .args(["--base", &format!("{BASE:#x}"), "--listen", &addr.to_string()])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting emulator serve");
        // ready when the messaging port answers GET_DEV_ID (4-byte little-endian 2)
        let probe = UdpSocket::bind((loopback(99 + attempt), 0)).unwrap();
        probe.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break; // address taken: try another
            }
            probe.send_to(&2i32.to_le_bytes(), (addr, 0x2fff)).unwrap();
            let mut b = [0u8; 16];
            if let Ok(n) = probe.recv(&mut b) {
                assert_eq!(&b[..n], &[0x00, 0x1a], "GET_DEV_ID: u16 0x1a00 little-endian");
                return Served { child, addr };
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("emulator serve did not come up");
}

/// One tag's socket pair: local 0x3000+tag ↔ remote 0x3000+tag.
fn tag_socket(remote: Ipv4Addr, tag: u8) -> UdpSocket {
    for attempt in 0..10 {
        if let Ok(s) = UdpSocket::bind((loopback(1000 + attempt), 0x3000 + u16::from(tag))) {
            s.connect((remote, 0x3000 + u16::from(tag))).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            return s;
        }
    }
    panic!("no local address");
}

/// Header fields for `len` (1..=4096) bytes at `addr`, inside one 4 KiB page.
fn mem_header(fmt_type_3dw: u8, tag: u8, addr: u64, len: u32) -> Vec<u8> {
    let first_dw = addr / 4;
    let last_dw = (addr + u64::from(len) - 1) / 4;
    let dws = (last_dw - first_dw + 1) as u32;
    let lead = (addr % 4) as u32;
    let end = (addr + u64::from(len)) % 4;
    let (fbe, lbe) = if dws == 1 {
        ((0xfu8 << lead) & (0xfu8 >> ((4 - end) % 4)), 0u8)
    } else {
        ((0xfu8 << lead) & 0xf, 0xfu8 >> ((4 - end) % 4))
    };
    let four_dw = addr > 0xffff_ffff;
    let mut h = vec![0u8; 6]; // NetTLP header: seq 0, timestamp 0
    h.push(fmt_type_3dw | if four_dw { 0x20 } else { 0 });
    h.push(0);
    h.push(((dws >> 8) & 3) as u8); // 1024 DW is written as 0
    h.push(dws as u8);
    h.extend_from_slice(&[0x1a, 0x00, tag, lbe << 4 | fbe]);
    if four_dw {
        h.extend_from_slice(&(addr & !3).to_be_bytes());
    } else {
        h.extend_from_slice(&((addr & !3) as u32).to_be_bytes());
    }
    h
}

enum Answer {
    Data(Vec<u8>),
    Status(u8),
}

/// Send an MRd and collect its completions by byte count / lower address.
fn read(sock: &UdpSocket, tag: u8, addr: u64, len: u32) -> Answer {
    sock.send(&mem_header(0x00, tag, addr, len)).unwrap();
    let mut out = vec![None::<u8>; len as usize];
    let mut buf = vec![0u8; 9000];
    loop {
        let n = sock.recv(&mut buf).expect("completion within 2 s");
        let d = &buf[..n];
        assert!(n >= 18, "completion too short: {n}");
        let tlp = &d[6..];
        let status = tlp[6] >> 5;
        let bc = match (u32::from(tlp[6] & 0xf) << 8) | u32::from(tlp[7]) {
            0 => 4096,
            x => x,
        };
        assert_eq!(&tlp[8..10], &[0x1a, 0x00], "requester ID echoed");
        assert_eq!(tlp[10], tag, "tag echoed");
        let la = u64::from(tlp[11] & 0x7f);
        let offset = len.checked_sub(bc).expect("byte count within the request") as u64;
        assert_eq!(la, (addr + offset) & 0x7f, "lower address");
        match tlp[0] {
            0x0a => return Answer::Status(status), // Cpl: no data
            0x4a => {}
            other => panic!("not a completion: fmt/type {other:#04x}"),
        }
        assert_eq!(status, 0);
        let dws = match (u32::from(tlp[2] & 3) << 8) | u32::from(tlp[3]) {
            0 => 1024,
            x => x,
        };
        assert_eq!(tlp.len(), 12 + dws as usize * 4, "payload length = Length field");
        let start = (la & 3) as u32;
        let count = bc.min(dws * 4 - start);
        let data = &tlp[12 + start as usize..12 + (start + count) as usize];
        for (i, &b) in data.iter().enumerate() {
            let slot = &mut out[offset as usize + i];
            assert!(slot.is_none(), "byte received twice");
            *slot = Some(b);
        }
        if count == bc {
            return Answer::Data(out.into_iter().map(|b| b.expect("every byte received")).collect());
        }
    }
}

fn write(sock: &UdpSocket, tag: u8, addr: u64, data: &[u8]) {
    let mut d = mem_header(0x40, tag, addr, data.len() as u32);
    let lead = (addr % 4) as usize;
    let dws = ((addr % 4) as usize + data.len()).div_ceil(4);
    let mut payload = vec![0u8; dws * 4];
    payload[lead..lead + data.len()].copy_from_slice(data);
    d.extend_from_slice(&payload);
    sock.send(&d).unwrap();
}

fn image() -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.raw");
    let bytes = lcg_bytes(LEN as usize, 7);
    std::fs::write(&path, &bytes).unwrap();
    (dir, path, bytes)
}

#[test]
fn independent_requester_reads_exact_bytes_and_ur_past_the_image() {
    let (_dir, path, bytes) = image();
    let ep = serve(&path, &["--mps", "256"]);
    let sock = tag_socket(ep.addr, 3);
    let mut x = 12345u64;
    for i in 0..400 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        let len = match i % 4 {
            0 => (x >> 40) % 8 + 1,
            1 => (x >> 40) % 300 + 1,
            _ => (x >> 40) % 4096 + 1,
        } as u32;
        let off = (x >> 8) % (LEN - u64::from(len));
        // stay inside one 4 KiB page
        let page_room = 4096 - (BASE + off) % 4096;
        let len = len.min(page_room as u32);
        let addr = BASE + off;
        match read(&sock, 3, addr, len) {
            Answer::Data(d) => assert!(d == bytes[off as usize..off as usize + len as usize], "read {i}: {len} at {addr:#x}"),
            Answer::Status(s) => panic!("read {i} at {addr:#x}: status {s}"),
        }
    }
    // a 4 KiB aligned read is 16 CplDs at MPS 256 and crosses no page
    assert!(matches!(read(&sock, 3, 0x1_0000_0000, 4096), Answer::Data(d) if d == bytes[0x2000..0x3000]));
    for (addr, len) in [(BASE + LEN, 4u32), (BASE - 4, 4), (BASE + LEN - 2, 4), (0x7_0000_0000, 64)] {
        assert!(matches!(read(&sock, 3, addr, len), Answer::Status(1)), "UR expected at {addr:#x}");
    }
    let counters = ep.stop();
    assert!(counters.contains("\"reads_ur\":4"), "{counters}");
}

/// libtlp binds `0x3000 + tag` with the whole 8-bit tag, so a client with tag 16 or more uses
/// a port above 0x300F: the endpoint answers on every one of the 256 ports, each on its own.
#[test]
fn every_tag_is_answered_on_its_own_port() {
    let (_dir, path, bytes) = image();
    let ep = serve(&path, &["--mps", "256"]);
    for tag in [0u8, 15, 16, 17, 0x80, 0xff] {
        let sock = tag_socket(ep.addr, tag);
        let addr = BASE + 0x100 + u64::from(tag);
        match read(&sock, tag, addr, 64) {
            Answer::Data(d) => assert!(d == bytes[0x100 + usize::from(tag)..0x100 + usize::from(tag) + 64], "tag {tag}"),
            Answer::Status(s) => panic!("tag {tag}: status {s}"),
        }
    }
    ep.stop();
}

#[test]
fn writes_never_reach_the_image_file() {
    let (_dir, path, bytes) = image();
    // refused without --allow-write, and counted
    let ep = serve(&path, &[]);
    let sock = tag_socket(ep.addr, 9);
    write(&sock, 9, BASE + 0x1001, b"overwrite!");
    assert!(matches!(read(&sock, 9, BASE + 0x1000, 16), Answer::Data(d) if d == bytes[0x1000..0x1010]));
    let counters = ep.stop();
    assert!(counters.contains("\"writes_refused\":1"), "{counters}");
    // applied to an overlay with --allow-write: reads change, the file does not
    let ep = serve(&path, &["--allow-write"]);
    let sock = tag_socket(ep.addr, 9);
    write(&sock, 9, BASE + 0x1ff6, b"overwrite!"); // unaligned, ends exactly at 4 GiB (3DW)
    write(&sock, 9, 0x1_0000_0003, b"4dw"); // above 4 GiB (4DW)
    let mut want = bytes[0x1ff0..0x2010].to_vec();
    want[6..16].copy_from_slice(b"overwrite!");
    want[19..22].copy_from_slice(b"4dw");
    // read back across the 4 GiB line as two reads (a request may not cross a page)
    let got: Vec<u8> = [(BASE + 0x1ff0, 16u32), (0x1_0000_0000, 16)]
        .into_iter()
        .flat_map(|(a, n)| match read(&sock, 9, a, n) {
            Answer::Data(d) => d,
            Answer::Status(s) => panic!("status {s}"),
        })
        .collect();
    assert_eq!(got, want);
    let counters = ep.stop();
    assert!(counters.contains("\"writes_applied\":2"), "{counters}");
    assert!(std::fs::read(&path).unwrap() == bytes, "the image file changed");
}
