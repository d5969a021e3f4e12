//! Reading capture files with libpcap (the `pcap` crate).
//!
//! Files are opened with nanosecond time-stamp precision: libpcap then hands out nanoseconds
//! for nanosecond files (magic 0xa1b23c4d) and scales microsecond files (0xa1b2c3d4) by 1000,
//! so [`Frame::time_ns`] is right for both without looking at the magic ourselves.
//!
//! Invariant: [`PcapReader`] yields frames in file order, numbered from 1, and stops for good
//! after the first error (a corrupt record cannot make it loop or skip silently).

use super::CaptureError;
use pcap::{Capture, Linktype, Offline, Precision};
use std::path::{Path, PathBuf};

/// One captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// 1-based position in the file.
    pub index: u64,
    /// Nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// Length on the wire.
    pub frame_len: u32,
    /// The bytes captured (`data.len() <= frame_len` unless the file lies).
    pub data: Vec<u8>,
}

/// Frames of an Ethernet capture file.
pub struct PcapReader {
    cap: Option<Capture<Offline>>,
    path: PathBuf,
    next_index: u64,
}

impl std::fmt::Debug for PcapReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapReader")
            .field("path", &self.path)
            .field("next_index", &self.next_index)
            .finish()
    }
}

impl PcapReader {
    /// Open a pcap (or pcapng) file whose link type is Ethernet.
    pub fn open(path: &Path) -> Result<PcapReader, CaptureError> {
        let p = path.to_str().ok_or_else(|| CaptureError::Path {
            path: path.to_owned(),
        })?;
        let cap = Capture::from_file_with_precision(p, Precision::Nano).map_err(|source| {
            CaptureError::Open {
                path: path.to_owned(),
                source,
            }
        })?;
        let linktype = cap.get_datalink();
        if linktype != Linktype::ETHERNET {
            return Err(CaptureError::LinkType {
                path: path.to_owned(),
                linktype: linktype.0,
            });
        }
        Ok(PcapReader {
            cap: Some(cap),
            path: path.to_owned(),
            next_index: 1,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next frame, `Ok(None)` at the end of the file.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        let Some(cap) = self.cap.as_mut() else {
            return Ok(None);
        };
        match cap.next_packet() {
            Ok(pkt) => {
                let ts = pkt.header.ts;
                // Precision::Nano: tv_usec holds nanoseconds.
                let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
                let nanos = u64::try_from(ts.tv_usec).unwrap_or(0);
                let frame = Frame {
                    index: self.next_index,
                    time_ns: secs.saturating_mul(1_000_000_000).saturating_add(nanos),
                    frame_len: pkt.header.len,
                    data: pkt.data.to_vec(),
                };
                self.next_index += 1;
                Ok(Some(frame))
            }
            Err(pcap::Error::NoMorePackets) => {
                self.cap = None;
                Ok(None)
            }
            Err(source) => {
                self.cap = None;
                Err(CaptureError::Read {
                    path: self.path.clone(),
                    index: self.next_index,
                    source,
                })
            }
        }
    }
}

impl Iterator for PcapReader {
    type Item = Result<Frame, CaptureError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_frame().transpose()
    }
}
