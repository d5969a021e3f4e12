//! A pcap file: frame decoding (Ethernet/IPv4/UDP → NetTLP → TLP), the JSON lines export and the
//! replayed memory rebuilt from its completions.
#![no_main]

use emulator::capture::{self, link, replay::ReplayMem};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    netdma_fuzz::with_file(data, |path| {
        if let Ok(frames) = capture::decode_file(path) {
            for f in frames.iter().take(16) {
                let _ = serde_json::to_string(&f);
            }
        }
        let _ = capture::write_jsonl(path, std::io::sink());
        if let Ok(mem) = ReplayMem::from_pcap(path) {
            let _ = (mem.stats(), mem.unknown_ranges());
            netdma_fuzz::exercise(&mem);
        }
    });
    // One frame on its own.
    let _ = link::parse_udp(data);
    let _ = capture::decode::decode_frame(0, 0, data.len() as u32, data);
});
