//! Rendering kernel log records: as `dmesg` prints them, JSON Lines, CSV. Pure functions from
//! records to text.
//!
//! Invariant: the default rendering is the kernel's own (`record_print_text()`, what the console
//! and `dmesg -S` show): every line of a record, including the lines of a multi-line record,
//! starts with the record's `[%5lu.%06lu] ` timestamp. Records are never merged or split: a
//! `KERN_CONT` continuation the kernel could append to the previous record is already part of it
//! (`prb_reserve_in_last`), and one it could not is a record of its own, as in every reader of
//! the ring.

use std::fmt::Write;

use super::ring::Record;
use crate::introspect::output::{csv_field, Format};

pub fn render(records: &[Record], format: Format) -> String {
    match format {
        Format::Table => text(records),
        Format::Json => json_lines(records),
        Format::Csv => csv(records),
    }
}

/// `[    1.234567] ` for a timestamp in nanoseconds.
pub fn timestamp(ts_nsec: u64) -> String {
    format!("[{:5}.{:06}] ", ts_nsec / 1_000_000_000, ts_nsec % 1_000_000_000 / 1000)
}

/// The lines of one record as the kernel prints them.
pub fn lines(r: &Record) -> impl Iterator<Item = String> + '_ {
    let prefix = timestamp(r.ts_nsec);
    let body = r.text.strip_suffix('\n').unwrap_or(&r.text);
    body.split('\n').map(move |l| format!("{prefix}{l}"))
}

/// As `dmesg` prints the log.
pub fn text(records: &[Record]) -> String {
    let mut out = String::new();
    for r in records {
        for l in lines(r) {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out
}

/// One JSON object per record.
pub fn json_lines(records: &[Record]) -> String {
    let mut out = String::new();
    for r in records {
        out.push_str(&serde_json::to_string(r).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// CSV with a header row.
pub fn csv(records: &[Record]) -> String {
    let mut out = String::from("seq,ts_nsec,level,facility,flags,caller,finalized,text\n");
    for r in records {
        let _ = writeln!(out, "{},{},{},{},{},{},{},{}", r.seq, r.ts_nsec, r.level, r.facility, r.flags, r.caller, r.finalized, csv_field(&r.text));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<Record> {
        let r = |seq, ts_nsec, text: &str| Record { seq, ts_nsec, level: 6, facility: 0, flags: 2, caller: "T1".into(), finalized: true, text: text.into() };
        vec![r(0, 0, "Linux version 6.1"), r(1, 2_064_681_123, "Unstable clock\nIf you want, \"add\":"), r(2, 123_456_789_000_999, "")]
    }

    #[test]
    fn renderings() {
        insta::assert_snapshot!("text", text(&records()));
        insta::assert_snapshot!("json", json_lines(&records()));
        insta::assert_snapshot!("csv", csv(&records()));
    }
}
