//! Packet captures of NetTLP traffic: decoding them, recording them, replaying them as memory.
//!
//! ```text
//!   .pcap ──PcapReader (libpcap, ns)──▶ Frame ──link (pnet: Ethernet/802.1Q/IPv4/UDP)──▶
//!       UDP datagram ──wire::nettlp / wire::tlp──▶ decode::FrameRecord (JSON Lines)
//!                                               └─▶ replay::ReplayMem (PhysMem)
//!   endpoint ──Recorder::record(now, src, dst, datagram)──▶ .pcap (pnet frames, libpcap)
//! ```
//!
//! Invariant: every frame of a capture is accounted for (decoded, or reported as not NetTLP or
//! truncated, with a reason); nothing here panics on the bytes of a capture.

pub mod decode;
pub mod link;
pub mod pcapfile;
pub mod recorder;
pub mod replay;

pub use decode::{decode_frame, Direction, FrameRecord, RecordKind};
pub use pcapfile::{Frame, PcapReader};
pub use recorder::Recorder;
pub use replay::{ReplayBuilder, ReplayMem, ReplayStats};

use std::io::Write;
use std::path::{Path, PathBuf};

/// Errors of capture files (frame contents never error: they decode to a record).
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{path}: path is not valid UTF-8 (libpcap needs a C string)")]
    Path { path: PathBuf },
    #[error("{path}: cannot open capture: {source}")]
    Open { path: PathBuf, source: pcap::Error },
    #[error("{path}: link type {linktype} is not Ethernet (1)")]
    LinkType { path: PathBuf, linktype: i32 },
    #[error("{path}: frame {index}: {source}")]
    Read {
        path: PathBuf,
        index: u64,
        source: pcap::Error,
    },
    #[error("{path}: cannot write capture: {source}")]
    Create { path: PathBuf, source: pcap::Error },
    #[error("datagram of {len} bytes does not fit in one IPv4/UDP frame")]
    TooLarge { len: usize },
    #[error("writing decoded frames: {0}")]
    Output(#[from] std::io::Error),
}

/// Decode every frame of a capture file.
pub fn decode_file(path: &Path) -> Result<Vec<FrameRecord>, CaptureError> {
    PcapReader::open(path)?
        .map(|f| f.map(|f| decode_frame(f.index, f.time_ns, f.frame_len, &f.data)))
        .collect()
}

/// Decode a capture file to JSON Lines on `out`, one object per frame; returns the number of
/// frames. Frames decoded before a read error are written before the error is returned.
pub fn write_jsonl(path: &Path, mut out: impl Write) -> Result<u64, CaptureError> {
    let mut n = 0;
    for frame in PcapReader::open(path)? {
        let f = frame?;
        let rec = decode_frame(f.index, f.time_ns, f.frame_len, &f.data);
        serde_json::to_writer(&mut out, &rec).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
        n += 1;
    }
    out.flush()?;
    Ok(n)
}
