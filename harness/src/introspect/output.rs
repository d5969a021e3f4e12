//! Rendering `ps` rows: a `ps aux`-like table, JSON Lines, CSV. Pure functions from rows to text.
//!
//! Invariant: every renderer emits one record per row in the given order, and text fields
//! are already valid UTF-8 (invalid guest bytes became U+FFFD in [`Row`]); CSV quotes any field
//! containing a comma, quote, CR or LF.

use std::fmt::Write;

use super::ps::Row;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

pub fn render(rows: &[Row], format: Format) -> String {
    match format {
        Format::Table => table(rows),
        Format::Json => json_lines(rows),
        Format::Csv => csv(rows),
    }
}

/// One JSON object per line.
pub fn json_lines(rows: &[Row]) -> String {
    let mut out = String::new();
    for r in rows {
        // Serializing plain data to a String cannot fail.
        out.push_str(&serde_json::to_string(r).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// What `ps` shows as COMMAND: the command line, or `[comm]` when there is none.
pub fn command(r: &Row) -> String {
    if r.cmdline.is_empty() {
        format!("[{}]", r.comm)
    } else {
        r.cmdline.clone()
    }
}

/// A `ps aux`-like table (one line per thread; START in seconds since boot).
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:>6} {:>7} {:>7} {:>7} {:>4} {:<4} {:>10}  COMMAND", "UID", "PID", "TGID", "PPID", "NLWP", "STAT", "START");
    for r in rows {
        let nlwp = r.threads.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
        let start = format!("{:.2}", r.start_time as f64 / 1e9);
        let _ = writeln!(
            out,
            "{:>6} {:>7} {:>7} {:>7} {:>4} {:<4} {:>10}  {}",
            r.uid,
            r.pid,
            r.tgid,
            r.ppid,
            nlwp,
            r.state,
            start,
            command(r).replace('\n', "\\n")
        );
    }
    out
}

pub(crate) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// CSV with a header row.
pub fn csv(rows: &[Row]) -> String {
    let mut out = String::from("pid,tgid,ppid,uid,state,comm,cmdline,threads,start_time,kthread\n");
    for r in rows {
        let threads = r.threads.map(|n| n.to_string()).unwrap_or_default();
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{}",
            r.pid,
            r.tgid,
            r.ppid,
            r.uid,
            r.state,
            csv_field(&r.comm),
            csv_field(&r.cmdline),
            threads,
            r.start_time,
            r.kthread
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Row> {
        vec![
            Row { pid: 2, tgid: 2, ppid: 0, uid: 0, state: "S".into(), comm: "kthreadd".into(), cmdline: String::new(), threads: Some(1), start_time: 0, kthread: true },
            Row {
                pid: 97,
                tgid: 97,
                ppid: 1,
                uid: 1000,
                state: "S".into(),
                comm: "we\u{fffd}ird, \"name\"".into(),
                cmdline: "sleep 100".into(),
                threads: None,
                start_time: 1_234_567_890,
                kthread: false,
            },
        ]
    }

    #[test]
    fn renderings() {
        insta::assert_snapshot!("table", table(&rows()));
        insta::assert_snapshot!("json_lines", json_lines(&rows()));
        insta::assert_snapshot!("csv", csv(&rows()));
    }
}
