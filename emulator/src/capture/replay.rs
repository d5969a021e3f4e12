//! Replaying a capture as memory: the data that the completions of captured Memory Reads
//! carried, placed at the addresses they were read from.
//!
//! A completion is matched to the outstanding read with the same requester ID and tag; the
//! address of its first data byte is `read end - byte count` (Byte Count is what remains of
//! the read including this completion), cross-checked against its Lower Address; its data
//! starts at `lower address & 3` in the payload. Reads answered by several completions are
//! thus reassembled whatever the split.
//!
//! Invariants: bytes no completion carried read as [`MemError::Unmapped`]; bytes a completion
//! carried but the capture cut (snap length) read as [`MemError::Unknown`]; a byte once known
//! is never made unknown again, and a later completion for the same address replaces the
//! earlier value (memory changes while a capture runs; the replay shows the latest).
//! Completions that match no read or contradict theirs are counted and ignored, never guessed.

use super::link;
use super::pcapfile::PcapReader;
use super::CaptureError;
use crate::mem::{MemError, PhysAddr, PhysMem, PhysRange};
use crate::wire::nettlp::{self, PortClass};
use crate::wire::tlp::{self, request_bytes, CplStatus, Kind};
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound::{Excluded, Included, Unbounded};
use std::path::Path;

/// What building a replay saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplayStats {
    /// Frames that were not NetTLP TLPs (or were cut before the TLP header).
    pub skipped_frames: u64,
    pub reads: u64,
    pub completions: u64,
    /// Completions placed into memory.
    pub matched: u64,
    /// Completions with no outstanding read for their requester and tag.
    pub unmatched: u64,
    /// Completions whose byte count or lower address contradicts their read.
    pub inconsistent: u64,
    /// Completions with a status other than SC (they end their read).
    pub error_status: u64,
}

/// A contiguous run of addresses: known bytes, or seen-but-cut (`None`).
#[derive(Debug, Clone)]
struct Run {
    end: u64,
    bytes: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    start: u64,
    end: u64,
}

/// Accumulates TLPs into a [`ReplayMem`].
#[derive(Debug, Default)]
pub struct ReplayBuilder {
    runs: BTreeMap<u64, Run>,
    pending: HashMap<(u16, u8), Pending>,
    stats: ReplayStats,
}

impl ReplayBuilder {
    pub fn new() -> ReplayBuilder {
        ReplayBuilder::default()
    }

    /// Feed one captured Ethernet frame; anything but a NetTLP TLP is counted and skipped.
    pub fn feed_frame(&mut self, frame: &[u8]) {
        let Ok(d) = link::parse_udp(frame) else {
            return self.stats.skipped_frames += 1;
        };
        let tlp_port = |p| {
            matches!(
                PortClass::of(p),
                Some(PortClass::Requester { .. } | PortClass::Adapter { .. })
            )
        };
        if !(tlp_port(d.src.port()) || tlp_port(d.dst.port())) {
            return self.stats.skipped_frames += 1;
        }
        let Ok(nt) = nettlp::Packet::new_checked(d.payload) else {
            return self.stats.skipped_frames += 1;
        };
        let Ok(p) = tlp::Packet::new_checked(nt.payload()) else {
            return self.stats.skipped_frames += 1;
        };
        self.feed_tlp(&p);
    }

    /// Feed one TLP (header present; payload may be cut).
    pub fn feed_tlp(&mut self, p: &tlp::Packet<&[u8]>) {
        match p.kind() {
            Kind::MRd => {
                self.stats.reads += 1;
                let (start, len) =
                    request_bytes(p.address(), p.length_dw(), p.first_be(), p.last_be());
                let end = start.saturating_add(u64::from(len));
                self.pending
                    .insert((p.mem_requester().0, p.mem_tag()), Pending { start, end });
            }
            Kind::Cpl | Kind::CplD => self.completion(p),
            Kind::MWr | Kind::Unknown => self.stats.skipped_frames += 1,
        }
    }

    fn completion(&mut self, p: &tlp::Packet<&[u8]>) {
        self.stats.completions += 1;
        let key = (p.cpl_requester().0, p.cpl_tag());
        let Some(read) = self.pending.get(&key).copied() else {
            return self.stats.unmatched += 1;
        };
        if p.status() != CplStatus::SC {
            self.stats.error_status += 1;
            self.pending.remove(&key);
            return;
        }
        if p.kind() == Kind::Cpl || read.start == read.end {
            // no data, or a zero-length read: nothing to place
            self.pending.remove(&key);
            self.stats.matched += 1;
            return;
        }
        let bc = u64::from(p.byte_count());
        let la = p.lower_address();
        if bc > read.end - read.start || tlp::lower_address(read.end - bc) != la {
            self.stats.inconsistent += 1;
            self.pending.remove(&key);
            return;
        }
        let addr = read.end - bc;
        let off = usize::from(la & 3);
        let data_len = (usize::from(p.length_dw()) * 4)
            .saturating_sub(off)
            .min(bc as usize);
        let payload = p.payload();
        let known = payload
            .get(off..)
            .map_or(&[][..], |b| &b[..b.len().min(data_len)]);
        self.insert_known(addr, known);
        if known.len() < data_len {
            self.insert_unknown(addr + known.len() as u64, (data_len - known.len()) as u64);
        }
        if data_len as u64 >= bc {
            self.pending.remove(&key);
        }
        self.stats.matched += 1;
    }

    /// Runs overlapping `[start, end)`, in address order.
    fn overlapping(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let first = self
            .runs
            .range(..=start)
            .next_back()
            .filter(|(_, r)| r.end > start)
            .map(|(k, r)| (*k, r.end));
        first
            .into_iter()
            .chain(
                self.runs
                    .range((Excluded(start), Excluded(end)))
                    .map(|(k, r)| (*k, r.end)),
            )
            .collect()
    }

    fn insert_known(&mut self, start: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let data = &data[..data.len().min((u64::MAX - start) as usize)];
        let end = start + data.len() as u64;
        for (k, e) in self.overlapping(start, end) {
            let Some(old) = self.runs.remove(&k) else {
                continue;
            };
            if k < start {
                let bytes = old
                    .bytes
                    .as_ref()
                    .map(|b| b[..(start - k) as usize].to_vec());
                self.runs.insert(k, Run { end: start, bytes });
            }
            if e > end {
                let bytes = old.bytes.as_ref().map(|b| b[(end - k) as usize..].to_vec());
                self.runs.insert(end, Run { end: e, bytes });
            }
        }
        self.runs.insert(
            start,
            Run {
                end,
                bytes: Some(data.to_vec()),
            },
        );
    }

    fn insert_unknown(&mut self, start: u64, len: u64) {
        let end = start.saturating_add(len);
        let mut cur = start;
        let mut gaps = Vec::new();
        for (k, e) in self.overlapping(start, end) {
            if k > cur {
                gaps.push((cur, k));
            }
            cur = cur.max(e);
        }
        if cur < end {
            gaps.push((cur, end));
        }
        for (s, e) in gaps {
            self.runs.insert(
                s,
                Run {
                    end: e,
                    bytes: None,
                },
            );
        }
    }

    pub fn finish(self, description: String) -> ReplayMem {
        ReplayMem {
            runs: self.runs,
            stats: self.stats,
            description,
        }
    }
}

/// Physical memory as a capture saw it (sparse, read-only).
#[derive(Debug)]
pub struct ReplayMem {
    runs: BTreeMap<u64, Run>,
    stats: ReplayStats,
    description: String,
}

impl ReplayMem {
    /// Build the replay of every MRd/CplD exchange in a capture file.
    pub fn from_pcap(path: &Path) -> Result<ReplayMem, CaptureError> {
        let mut b = ReplayBuilder::new();
        for frame in PcapReader::open(path)? {
            b.feed_frame(&frame?.data);
        }
        Ok(b.finish(format!("replayed capture {}", path.display())))
    }

    pub fn stats(&self) -> ReplayStats {
        self.stats
    }

    /// Ranges whose bytes were seen but cut by the capture.
    pub fn unknown_ranges(&self) -> Vec<PhysRange> {
        merge(self.runs.iter().filter(|(_, r)| r.bytes.is_none()))
    }
}

fn merge<'a>(runs: impl Iterator<Item = (&'a u64, &'a Run)>) -> Vec<PhysRange> {
    let mut out: Vec<PhysRange> = Vec::new();
    for (&s, r) in runs {
        match out.last_mut() {
            Some(last) if last.end.0 == s => last.end = PhysAddr(r.end),
            _ => out.push(PhysRange::new(s, r.end)),
        }
    }
    out
}

impl PhysMem for ReplayMem {
    fn read_phys(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = addr.0.checked_add(done as u64).ok_or(MemError::Unmapped {
                addr: PhysAddr(u64::MAX),
            })?;
            let run = self
                .runs
                .range((Unbounded, Included(pos)))
                .next_back()
                .filter(|(_, r)| r.end > pos);
            let Some((&start, run)) = run else {
                return Err(MemError::Unmapped {
                    addr: PhysAddr(pos),
                });
            };
            let Some(bytes) = &run.bytes else {
                return Err(MemError::Unknown {
                    addr: PhysAddr(pos),
                    reason: "completion payload cut by the capture's snap length".into(),
                });
            };
            let from = (pos - start) as usize;
            let n = (bytes.len() - from).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&bytes[from..from + n]);
            done += n;
        }
        Ok(())
    }

    fn ranges(&self) -> Vec<PhysRange> {
        merge(self.runs.iter().filter(|(_, r)| r.bytes.is_some()))
    }

    /// The bytes a capture carried, not the machine's RAM.
    fn ranges_are_ram(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        let known: u64 = self.ranges().iter().map(PhysRange::len).sum();
        let unknown: u64 = self.unknown_ranges().iter().map(PhysRange::len).sum();
        format!(
            "{}: {} reads, {} completions placed, {known} bytes known, {unknown} bytes cut",
            self.description, self.stats.reads, self.stats.matched
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tlp::{Completion, DeviceId, MemRequest, Repr};

    fn tlp_bytes(repr: &Repr, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; repr.header_len()];
        repr.emit(&mut tlp::Packet::new_unchecked(&mut buf[..]));
        buf.extend_from_slice(payload);
        buf
    }

    fn feed(b: &mut ReplayBuilder, bytes: &[u8]) {
        b.feed_tlp(&tlp::Packet::new_checked(bytes).unwrap());
    }

    /// Serve `mem` (byte i = i as u8 ^ 0x5a) through our own splitter, optionally cutting each
    /// completion after `cut` bytes of TLP, and replay it.
    fn replay_read(addr: u64, len: u32, mps: u32, cut: Option<usize>) -> ReplayMem {
        let content = |a: u64| (a as u8) ^ 0x5a;
        let req = MemRequest::new(DeviceId(0x1a00), 3, addr, len).unwrap();
        let mut b = ReplayBuilder::new();
        feed(&mut b, &tlp_bytes(&Repr::MemRead(req), &[]));
        for chunk in req.completion_chunks(mps) {
            let c = Completion::for_chunk(&req, DeviceId(0), &chunk);
            let mut payload = vec![0u8; usize::from(chunk.length_dw) * 4];
            for i in 0..chunk.len as usize {
                payload[chunk.payload_offset() + i] = content(chunk.addr + i as u64);
            }
            let mut bytes = tlp_bytes(&Repr::Completion(c), &payload);
            if let Some(n) = cut {
                bytes.truncate(n);
            }
            feed(&mut b, &bytes);
        }
        b.finish("test".into())
    }

    #[test]
    fn reassembles_split_unaligned_reads() {
        let m = replay_read(0x1003, 300, 128, None);
        let mut buf = vec![0u8; 300];
        m.read_phys(PhysAddr(0x1003), &mut buf).unwrap();
        assert!(buf
            .iter()
            .enumerate()
            .all(|(i, &b)| b == ((0x1003 + i as u64) as u8) ^ 0x5a));
        assert_eq!(m.ranges(), vec![PhysRange::new(0x1003, 0x1003 + 300)]);
        assert_eq!(m.stats().matched, 3);
        assert!(
            matches!(m.read_phys(PhysAddr(0x1002), &mut [0u8; 2]), Err(MemError::Unmapped { addr }) if addr.0 == 0x1002)
        );
        assert!(
            matches!(m.read_phys(PhysAddr(0x1003 + 299), &mut [0u8; 2]), Err(MemError::Unmapped { addr }) if addr.0 == 0x1003 + 300)
        );
    }

    #[test]
    fn cut_payload_is_unknown_not_unmapped() {
        // 12-byte header + 20 payload bytes survive of each completion
        let m = replay_read(0x2000, 256, 128, Some(32));
        let mut buf = [0u8; 20];
        m.read_phys(PhysAddr(0x2000), &mut buf).unwrap();
        m.read_phys(PhysAddr(0x2080), &mut buf).unwrap();
        let err = m.read_phys(PhysAddr(0x2010), &mut [0u8; 8]).unwrap_err();
        assert!(matches!(err, MemError::Unknown { addr, .. } if addr.0 == 0x2014));
        assert_eq!(
            m.ranges(),
            vec![
                PhysRange::new(0x2000, 0x2014),
                PhysRange::new(0x2080, 0x2094)
            ]
        );
        assert_eq!(
            m.unknown_ranges(),
            vec![
                PhysRange::new(0x2014, 0x2080),
                PhysRange::new(0x2094, 0x2100)
            ]
        );
    }

    #[test]
    fn known_bytes_override_and_are_never_forgotten() {
        let mut b = ReplayBuilder::new();
        b.insert_unknown(0x10, 0x20);
        b.insert_known(0x18, &[1, 2, 3, 4]);
        b.insert_unknown(0x00, 0x40);
        b.insert_known(0x16, &[9, 9, 9]);
        let m = b.finish("t".into());
        let mut buf = [0u8; 6];
        m.read_phys(PhysAddr(0x16), &mut buf).unwrap();
        assert_eq!(buf, [9, 9, 9, 2, 3, 4]);
        assert_eq!(
            m.unknown_ranges(),
            vec![PhysRange::new(0x00, 0x16), PhysRange::new(0x1c, 0x40)]
        );
    }

    #[test]
    fn unmatched_and_error_completions_are_counted() {
        let mut b = ReplayBuilder::new();
        let req = MemRequest::new(DeviceId(0x0100), 1, 0x3000, 64).unwrap();
        let chunk = req.completion_chunks(256).next().unwrap();
        let cpld = tlp_bytes(
            &Repr::Completion(Completion::for_chunk(&req, DeviceId(0), &chunk)),
            &[0; 64],
        );
        feed(&mut b, &cpld); // before its read
        feed(&mut b, &tlp_bytes(&Repr::MemRead(req), &[]));
        feed(
            &mut b,
            &tlp_bytes(
                &Repr::Completion(Completion::error(&req, DeviceId(0), CplStatus::UR)),
                &[],
            ),
        );
        feed(&mut b, &cpld); // after its read ended
        let s = b.finish("t".into()).stats();
        assert_eq!(
            (
                s.reads,
                s.completions,
                s.unmatched,
                s.error_status,
                s.matched
            ),
            (1, 3, 2, 1, 0)
        );
    }
}
