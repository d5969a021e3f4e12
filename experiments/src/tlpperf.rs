//! Parser for the text output of libtlp's `tlpperf`, the NetTLP authors' DMA benchmark, as run
//! on real NetTLP hardware (`../shared/reference/nettlp-hw-tlpperf`).
//!
//! Invariant: [`parse`] either returns every line of the input accounted for, or an error naming
//! the first line it could not account for; it never panics, and its work is bounded by
//! [`MAX_INPUT_BYTES`] and the per-kind limits below, whatever the input.
//!
//! The output has three parts:
//!
//! ```text
//! ============ tlpperf ============          header: one `-X description value` line per option
//! -L DMA length           512
//! -N nthreads:            16
//! ...
//! =================================
//! count_thread: start count thread          body, in any order:
//! benchmark_thread: start on cpu 0, address 0x747400000, size 524544, len 512
//! latency: cpu on 0, 12 usec                  one per DMA read (latency mode, `-M`)
//!    1: 3587592192 bps                        per second: bits returned by dma_read ...
//!    1: 875877 tps                            ... and dma_read calls completed
//! stop_all: stopping...
//! ```
//!
//! What the counters mean (from tlpperf.c): every second the count thread sums over all threads
//! the bytes `dma_read` returned (printed ×8 as `bps`) and the number of `dma_read` calls
//! (`tps`). A call is capped at the MRRS; in the published runs a 1024-byte request returned 512
//! bytes per call, so for `-L 1024` the tps and latency lines are per 512-byte call. We record the
//! numbers as printed and do not reinterpret them.

use std::fmt;
use std::path::Path;

/// Largest input accepted (the published files are at most 271 KiB).
pub const MAX_INPUT_BYTES: u64 = 64 << 20;
/// Most latency samples accepted in one file.
pub const MAX_LATENCY_SAMPLES: usize = 1_000_000;
/// Most per-second counter lines accepted in one file.
pub const MAX_SECONDS: usize = 100_000;
/// Most benchmark threads accepted (the adapter supports 16).
pub const MAX_THREADS: usize = 64;

/// Why a tlpperf output could not be parsed. Line numbers start at 1.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("input is {size} bytes, more than the {MAX_INPUT_BYTES}-byte limit")]
    TooLarge { size: u64 },
    #[error("input is not UTF-8 (byte offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("line {line}: {reason}: {text:?}")]
    Line {
        line: usize,
        reason: &'static str,
        text: String,
    },
    #[error("line {line}: more than {limit} {what}")]
    Limit {
        line: usize,
        what: &'static str,
        limit: usize,
    },
    #[error("header option -{flag} missing")]
    MissingOption { flag: char },
    #[error("no `============ tlpperf ============` header")]
    NoHeader,
    #[error("{0}")]
    Inconsistent(String),
}

/// DMA direction (`-d`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Read,
    Write,
}

/// Access pattern on each thread's region (`-P`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// The same address every time.
    Fix,
    /// Consecutive addresses, advancing by the DMA length.
    Seq,
    /// Consecutive addresses, advancing by 512 bytes.
    Seq512,
    /// Random 4 KiB-aligned addresses.
    Random,
}

impl Pattern {
    pub fn as_str(self) -> &'static str {
        match self {
            Pattern::Fix => "fix",
            Pattern::Seq => "seq",
            Pattern::Seq512 => "seq512",
            Pattern::Random => "random",
        }
    }
    fn parse(s: &str) -> Option<Pattern> {
        Some(match s {
            "fix" => Pattern::Fix,
            "seq" => Pattern::Seq,
            "seq512" => Pattern::Seq512,
            "random" => Pattern::Random,
            _ => return None,
        })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The benchmark parameters printed in the header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub direction: Direction,
    /// `-L`: bytes requested per transfer.
    pub dma_len_bytes: u64,
    /// `-N`: benchmark threads, one per CPU.
    pub nthreads: u32,
    pub pattern: Pattern,
    /// `-M`: one latency line per DMA call (absent in older tlpperf: off).
    pub latency_mode: bool,
    /// `-c`: DMA calls per thread, 0 = unlimited.
    pub count: u64,
    /// `-t`: seconds, 0 = unlimited.
    pub duration_s: u64,
}

/// A `benchmark_thread: start on cpu ...` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadStart {
    pub cpu: u32,
    pub region_addr: u64,
    pub region_size: u64,
    pub len: u64,
}

/// A `latency: cpu on C, N usec` line: one DMA call measured with gettimeofday.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatencySample {
    pub cpu: u32,
    pub usec: u64,
}

/// A pair of `   N: X bps` / `   N: Y tps` lines: totals over all threads for second `second`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecondCounters {
    /// 1-based index of the one-second interval.
    pub second: u64,
    pub bits: u64,
    pub calls: u64,
}

/// One tlpperf output, fully parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub options: Options,
    pub threads: Vec<ThreadStart>,
    pub latencies: Vec<LatencySample>,
    pub seconds: Vec<SecondCounters>,
    /// The run printed `stop_all: stopping...` (ended by its duration, not cut off).
    pub stopped: bool,
}

/// Reads and parses one tlpperf output file.
pub fn parse_file(path: &Path) -> Result<Run, FileError> {
    let err = |source| FileError {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(FileErrorKind::Io(e)))?;
    if meta.len() > MAX_INPUT_BYTES {
        return Err(err(FileErrorKind::Parse(ParseError::TooLarge { size: meta.len() })));
    }
    let bytes = std::fs::read(path).map_err(|e| err(FileErrorKind::Io(e)))?;
    parse(&bytes).map_err(|e| err(FileErrorKind::Parse(e)))
}

/// A [`ParseError`] or I/O error, with the file it happened in.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct FileError {
    pub path: std::path::PathBuf,
    #[source]
    pub source: FileErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum FileErrorKind {
    #[error(transparent)]
    Io(std::io::Error),
    #[error(transparent)]
    Parse(ParseError),
}

/// Parses one tlpperf output.
pub fn parse(input: &[u8]) -> Result<Run, ParseError> {
    if input.len() as u64 > MAX_INPUT_BYTES {
        return Err(ParseError::TooLarge {
            size: input.len() as u64,
        });
    }
    let text = std::str::from_utf8(input).map_err(|e| ParseError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));

    // Header.
    match lines.next() {
        Some((_, l)) if l.trim() == "============ tlpperf ============" => {}
        _ => return Err(ParseError::NoHeader),
    }
    let mut header = HeaderFields::default();
    let mut closed = false;
    for (no, line) in lines.by_ref() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if !t.is_empty() && t.bytes().all(|b| b == b'=') {
            closed = true;
            break;
        }
        header.take(no, t)?;
    }
    if !closed {
        return Err(ParseError::NoHeader);
    }
    let options = header.finish()?;

    // Body.
    let mut run = Run {
        options,
        threads: Vec::new(),
        latencies: Vec::new(),
        seconds: Vec::new(),
        stopped: false,
    };
    let mut pending_bits: Option<(u64, u64)> = None; // (second, bits) waiting for its tps line
    for (no, line) in lines {
        let bad = |reason: &'static str| ParseError::Line {
            line: no,
            reason,
            text: line.to_owned(),
        };
        let t = line.trim();
        if t.is_empty() || t == "count_thread: start count thread" {
            continue;
        }
        if t == "stop_all: stopping..." {
            run.stopped = true;
        } else if let Some(rest) = t.strip_prefix("latency: cpu on ") {
            let (cpu, usec) = rest
                .strip_suffix(" usec")
                .and_then(|r| r.split_once(", "))
                .ok_or_else(|| bad("malformed latency line"))?;
            let sample = LatencySample {
                cpu: cpu.parse().map_err(|_| bad("bad cpu number"))?,
                usec: usec.parse().map_err(|_| bad("bad latency"))?,
            };
            if run.latencies.len() >= MAX_LATENCY_SAMPLES {
                return Err(ParseError::Limit {
                    line: no,
                    what: "latency samples",
                    limit: MAX_LATENCY_SAMPLES,
                });
            }
            run.latencies.push(sample);
        } else if let Some(rest) = t.strip_prefix("benchmark_thread: start on cpu ") {
            let th = parse_thread_start(rest).ok_or_else(|| bad("malformed benchmark_thread line"))?;
            if run.threads.len() >= MAX_THREADS {
                return Err(ParseError::Limit {
                    line: no,
                    what: "threads",
                    limit: MAX_THREADS,
                });
            }
            run.threads.push(th);
        } else if let Some((idx, rest)) = t.split_once(": ") {
            let second: u64 = idx.parse().map_err(|_| bad("unknown line"))?;
            let (value, unit) = rest.split_once(' ').ok_or_else(|| bad("malformed counter line"))?;
            let value: u64 = value.parse().map_err(|_| bad("bad counter value"))?;
            match (unit, pending_bits.take()) {
                ("bps", None) => {
                    let expected = run.seconds.last().map_or(1, |s| s.second + 1);
                    if second != expected {
                        return Err(bad("counter seconds out of order"));
                    }
                    pending_bits = Some((second, value));
                }
                ("tps", Some((s, bits))) if s == second => {
                    if run.seconds.len() >= MAX_SECONDS {
                        return Err(ParseError::Limit {
                            line: no,
                            what: "counter seconds",
                            limit: MAX_SECONDS,
                        });
                    }
                    run.seconds.push(SecondCounters {
                        second,
                        bits,
                        calls: value,
                    });
                }
                ("bps" | "tps", _) => return Err(bad("bps and tps lines not paired")),
                _ => return Err(bad("unknown counter unit")),
            }
        } else {
            return Err(bad("unknown line"));
        }
    }
    if let Some((second, _)) = pending_bits {
        return Err(ParseError::Inconsistent(format!(
            "second {second}: bps line without its tps line"
        )));
    }
    run.check()?;
    Ok(run)
}

fn parse_thread_start(rest: &str) -> Option<ThreadStart> {
    // "0, address 0x747400000, size 524544, len 512"
    let mut parts = rest.split(", ");
    let cpu = parts.next()?.parse().ok()?;
    let region_addr = parse_hex(parts.next()?.strip_prefix("address ")?)?;
    let region_size = parts.next()?.strip_prefix("size ")?.parse().ok()?;
    let len = parts.next()?.strip_prefix("len ")?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some(ThreadStart {
        cpu,
        region_addr,
        region_size,
        len,
    })
}

/// `0x747400000`; also `0x0x747c00000`, which some tlpperf builds print for `-a` (a literal
/// "0x" before `%#lx`).
fn parse_hex(s: &str) -> Option<u64> {
    let digits = s.strip_prefix("0x0x").or_else(|| s.strip_prefix("0x"))?;
    u64::from_str_radix(digits, 16).ok()
}

#[derive(Default)]
struct HeaderFields {
    direction: Option<Direction>,
    dma_len: Option<u64>,
    nthreads: Option<u32>,
    pattern: Option<Pattern>,
    latency_mode: Option<bool>,
    count: Option<u64>,
    duration: Option<u64>,
}

impl HeaderFields {
    /// One `-X description value` line; the value is the last whitespace-separated word.
    fn take(&mut self, no: usize, line: &str) -> Result<(), ParseError> {
        let bad = |reason: &'static str| ParseError::Line {
            line: no,
            reason,
            text: line.to_owned(),
        };
        let mut chars = line.chars();
        let (Some('-'), Some(flag)) = (chars.next(), chars.next()) else {
            return Err(bad("header line is not `-X description value`"));
        };
        let value = line
            .split_whitespace()
            .last()
            .ok_or_else(|| bad("header line without value"))?;
        let num = || value.parse::<u64>().map_err(|_| bad("header value is not a number"));
        match flag {
            'd' => {
                self.direction = Some(match value {
                    "read" => Direction::Read,
                    "write" => Direction::Write,
                    _ => return Err(bad("unknown direction")),
                })
            }
            'L' => self.dma_len = Some(num()?),
            'N' => self.nthreads = Some(u32::try_from(num()?).map_err(|_| bad("thread count out of range"))?),
            'P' => self.pattern = Some(Pattern::parse(value).ok_or_else(|| bad("unknown pattern"))?),
            'M' => {
                self.latency_mode = Some(match value {
                    "on" => true,
                    "off" => false,
                    _ => return Err(bad("latency mode is neither on nor off")),
                })
            }
            'c' => self.count = Some(num()?),
            't' => self.duration = Some(num()?),
            // Recorded by tlpperf but not needed here: addresses, requester, split, interval, debug.
            'r' | 'l' | 'b' | 'a' | 's' | 'R' | 'i' | 'D' => {}
            _ => return Err(bad("unknown header option")),
        }
        Ok(())
    }

    fn finish(self) -> Result<Options, ParseError> {
        let missing = |flag| ParseError::MissingOption { flag };
        Ok(Options {
            direction: self.direction.ok_or(missing('d'))?,
            dma_len_bytes: self.dma_len.ok_or(missing('L'))?,
            nthreads: self.nthreads.ok_or(missing('N'))?,
            pattern: self.pattern.ok_or(missing('P'))?,
            latency_mode: self.latency_mode.unwrap_or(false),
            count: self.count.ok_or(missing('c'))?,
            duration_s: self.duration.ok_or(missing('t'))?,
        })
    }
}

impl Run {
    /// Cross-checks the body against the header.
    fn check(&self) -> Result<(), ParseError> {
        let o = &self.options;
        let bad = |m: String| Err(ParseError::Inconsistent(m));
        if self.threads.len() != o.nthreads as usize {
            return bad(format!(
                "header says {} threads, {} started",
                o.nthreads,
                self.threads.len()
            ));
        }
        if let Some(t) = self.threads.iter().find(|t| t.len != o.dma_len_bytes) {
            return bad(format!(
                "cpu {} started with len {}, header says {}",
                t.cpu, t.len, o.dma_len_bytes
            ));
        }
        if !o.latency_mode && !self.latencies.is_empty() {
            return bad("latency lines in a run without latency mode".into());
        }
        if let Some(s) = self
            .latencies
            .iter()
            .find(|s| !self.threads.iter().any(|t| t.cpu == s.cpu))
        {
            return bad(format!("latency sample on cpu {} which started no thread", s.cpu));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "============ tlpperf ============\n-d direction: read\n-L DMA length 64\n\
        -N nthreads: 1\n-P pattern: fix\n-c count: 0\n-t duration 2\n=================================\n\
        count_thread: start count thread\n\
        benchmark_thread: start on cpu 0, address 0x0x747c00000, size 8392704, len 64\n";

    #[test]
    fn minimal_run() {
        let run = parse(format!("{HEADER}   1: 512 bps\n   1: 1 tps\nstop_all: stopping...\n").as_bytes()).unwrap();
        assert_eq!(
            run.seconds,
            vec![SecondCounters {
                second: 1,
                bits: 512,
                calls: 1
            }]
        );
        assert_eq!(run.threads[0].region_addr, 0x747c00000);
        assert!(run.stopped);
    }

    #[rstest::rstest]
    #[case::unknown_line("hello\n")]
    #[case::tps_first("   1: 1 tps\n")]
    #[case::unpaired("   1: 8 bps\n   2: 8 bps\n")]
    #[case::dangling_bps("   1: 8 bps\n")]
    #[case::skipped_second("   2: 8 bps\n   2: 1 tps\n")]
    #[case::overflow("   1: 99999999999999999999999 bps\n   1: 1 tps\n")]
    #[case::latency_without_mode("latency: cpu on 0, 12 usec\n")]
    #[case::bad_latency("latency: cpu on 0, twelve usec\n")]
    fn malformed_bodies_are_errors(#[case] body: &str) {
        assert!(parse(format!("{HEADER}{body}").as_bytes()).is_err());
    }

    #[test]
    fn malformed_headers_are_errors() {
        assert!(matches!(parse(b""), Err(ParseError::NoHeader)));
        assert!(matches!(
            parse(b"============ tlpperf ============\n-L DMA length 8\n"),
            Err(ParseError::NoHeader)
        ));
        assert!(matches!(
            parse(b"============ tlpperf ============\n-L DMA length 8\n=====\n"),
            Err(ParseError::MissingOption { .. })
        ));
        assert!(parse(b"============ tlpperf ============\n-Z what 1\n=====\n").is_err());
        assert!(matches!(parse(&[0xff, 0xfe]), Err(ParseError::NotUtf8 { .. })));
    }

    #[test]
    fn every_prefix_of_a_real_file_parses_or_errors_without_panicking() {
        let text = format!("{HEADER}   1: 512 bps\n   1: 1 tps\nstop_all: stopping...\n");
        for end in 0..text.len() {
            let _ = parse(&text.as_bytes()[..end]);
        }
    }
}
