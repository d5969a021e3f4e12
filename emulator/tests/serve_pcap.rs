//! `emulator serve --pcap`: every request and completion recorded, and decodable.

use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn pcap_records_requests_and_completions() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("img.raw");
    std::fs::write(&image, vec![0x5a; 64 << 10]).unwrap();
    let pcap = dir.path().join("serve.pcap");
    let pid = std::process::id();
    let addr = Ipv4Addr::new(127, 3, (pid >> 8) as u8, pid as u8 | 1);
    let mut child = Command::new(env!("CARGO_BIN_EXE_emulator"))
        .args(["serve", "--mps", "256", "--listen", &addr.to_string(), "--image"])
        .arg(&image)
        .arg("--pcap")
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sock = UdpSocket::bind((Ipv4Addr::new(127, 4, (pid >> 8) as u8, pid as u8 | 1), 0x3002)).unwrap();
    sock.connect((addr, 0x3002)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    // MRd 3DW, 128 DW (512 bytes) at 0x1000, requester 1a:00.0, tag 2: two CplDs at MPS 256
    let mrd = [0, 0, 0, 0, 0, 0, 0x00, 0x00, 0x00, 0x80, 0x1a, 0x00, 0x02, 0xff, 0x00, 0x00, 0x10, 0x00];
    let mut got = 0;
    let mut buf = [0u8; 2048];
    for _ in 0..50 {
        sock.send(&mrd).unwrap();
        got = 0;
        while let Ok(n) = sock.recv(&mut buf) {
            got += n;
            if got == 2 * (6 + 12 + 256) {
                break;
            }
        }
        if got == 2 * (6 + 12 + 256) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100)); // not up yet (connection refused)
    }
    assert_eq!(got, 548, "two CplDs of 256 bytes");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert!(child.wait().unwrap().success());
    let frames = emulator::capture::decode_file(&pcap).unwrap();
    let kinds: Vec<String> = frames
        .iter()
        .map(|f| serde_json::to_value(f).unwrap()["kind"].as_str().unwrap().to_owned())
        .collect();
    // the request(s) sent before the endpoint was up are not recorded; the last exchange is
    let n = kinds.len();
    assert!(n >= 3, "{kinds:?}");
    assert_eq!(&kinds[n - 3..], ["MRd", "CplD", "CplD"]);
    let last = serde_json::to_value(&frames[n - 1]).unwrap();
    assert_eq!(last["byte_count"], 256);
    assert_eq!(last["payload_bytes"], 256);
    assert_eq!(last["tag"], 2);
}
