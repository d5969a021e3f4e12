//! Volatility 3, the baseline the `baseline` experiment runs beside netdma: where `scripts/setup`
//! installs it, how its `linux.pslist` CSV output is read, and which of the things its Linux
//! stacker reads an ISF lacks.
//!
//! Invariant: the parsers here take Volatility's output as untrusted text — every malformed
//! record, missing column or non-numeric id is an error naming the line, never a panic, and at
//! most [`MAX_ROWS`] records are read.

use std::path::PathBuf;

use harness::lab::cache::Cache;
use serde_json::Value;

use crate::experiment::RunError;

/// The release `scripts/setup` installs from PyPI (keep equal to `vol_version` there).
pub const PINNED_VERSION: &str = "2.28.2";

/// How to install it.
pub const INSTALL: &str = "run `bash scripts/setup` (installs volatility3 from PyPI into a venv under the netdma cache)";

/// At most this many records of one listing are read.
pub const MAX_ROWS: usize = 1_000_000;

/// `$XDG_CACHE_HOME/netdma/volatility/venv` (or `~/.cache/...`), where `scripts/setup` puts the venv.
pub fn venv() -> PathBuf {
    Cache::default_root().join("volatility").join("venv")
}

/// The `vol` entry point of the venv, or a prerequisite error saying how to install it.
pub fn require() -> Result<PathBuf, RunError> {
    let vol = venv().join("bin").join("vol");
    if vol.is_file() {
        Ok(vol)
    } else {
        Err(RunError::Prerequisite(format!("Volatility 3 is not installed ({} missing); {INSTALL}", vol.display())))
    }
}

/// One record of `vol -r csv linux.pslist`: a process (thread-group leader; `--threads` not given).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PslistRow {
    /// The column `PID`: the thread-group id.
    pub pid: u32,
    /// The column `TID`: the task's own id (equal to `pid` for a leader).
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CsvError {
    #[error("Volatility printed no CSV header")]
    NoHeader,
    #[error("the CSV header has no column {0:?}")]
    MissingColumn(&'static str),
    #[error("CSV line {line}: {reason}")]
    Record { line: u64, reason: String },
    #[error("CSV line {line}: column {column} is {value:?}, not a number")]
    Number { line: u64, column: &'static str, value: String },
    #[error("more than {MAX_ROWS} records")]
    TooMany,
}

/// Parses the CSV renderer's output of `linux.pslist` (header `TreeDepth,OFFSET (V),PID,TID,PPID,
/// COMM,UID,...`). Columns are found by name, so their order may change between releases.
pub fn parse_pslist_csv(bytes: &[u8]) -> Result<Vec<PslistRow>, CsvError> {
    let records = parse_csv(bytes, &["PID", "TID", "PPID", "UID", "COMM"])?;
    records
        .into_iter()
        .map(|(line, f)| {
            let number = |i: usize, column: &'static str| -> Result<u32, CsvError> {
                f[i].trim().parse().map_err(|_| CsvError::Number { line, column, value: f[i].clone() })
            };
            Ok(PslistRow { pid: number(0, "PID")?, tid: number(1, "TID")?, ppid: number(2, "PPID")?, uid: number(3, "UID")?, comm: f[4].clone() })
        })
        .collect()
}

/// The named columns of every record of a Volatility CSV rendering, in the order of `names`,
/// with each record's line number. Columns are found by name in the header (blank lines before
/// it are skipped); at most [`MAX_ROWS`] records.
pub fn parse_csv(bytes: &[u8], names: &[&'static str]) -> Result<Vec<(u64, Vec<String>)>, CsvError> {
    // Lines end at `\n` only: a task name Volatility prints unquoted may hold a `\r`.
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).terminator(csv::Terminator::Any(b'\n')).from_reader(bytes);
    let mut records = reader.records();
    let header = loop {
        match records.next() {
            None => return Err(CsvError::NoHeader),
            Some(Err(e)) => return Err(record_error(&e)),
            // Volatility may print blank lines before its renderer starts.
            Some(Ok(r)) if r.iter().all(|f| f.trim().is_empty()) => continue,
            Some(Ok(r)) => break r,
        }
    };
    let cols: Vec<usize> = names
        .iter()
        .map(|&name| header.iter().position(|h| h.trim() == name).ok_or(CsvError::MissingColumn(name)))
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for rec in records {
        let rec = rec.map_err(|e| record_error(&e))?;
        if rec.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        if out.len() == MAX_ROWS {
            return Err(CsvError::TooMany);
        }
        let line = rec.position().map_or(0, |p| p.line());
        let fields = cols
            .iter()
            .zip(names)
            .map(|(&i, column)| {
                rec.get(i).map(str::to_owned).ok_or_else(|| CsvError::Record { line, reason: format!("no column {column} ({} fields)", rec.len()) })
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push((line, fields));
    }
    Ok(out)
}

fn record_error(e: &csv::Error) -> CsvError {
    let line = e.position().map_or(0, |p| p.line());
    CsvError::Record { line, reason: e.to_string() }
}

/// The version from the banner Volatility writes first on stderr (`Volatility 3 Framework 2.28.2`).
pub fn version(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Volatility 3 Framework "))
        .map(|v| v.trim().to_owned())
}

/// Why a run failed, in one line: the last line Volatility wrote on stderr that is neither its
/// banner nor progress output (with `-q` that is its error message or a traceback's last line).
pub fn error_line(stderr: &str) -> String {
    stderr
        .lines()
        .flat_map(|l| l.split('\r'))
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("Volatility 3 Framework") && !l.starts_with("Progress:"))
        .unwrap_or("")
        .to_owned()
}

/// What Volatility 3's Linux stacker reads from the ISF before any plugin runs (release 2.28.2,
/// `framework/automagic/linux.py`: `LinuxIntelStacker.stack` and `find_aslr`): symbols, then
/// `task_struct` members. A kernel's page-table root may be either of two symbols.
const STACKER_SYMBOLS: [&[&str]; 5] = [&["linux_banner"], &["init_task"], &["init_mm"], &["init_files"], &["init_top_pgt", "swapper_pg_dir"]];
const STACKER_TASK_MEMBERS: [&str; 5] = ["pid", "comm", "tasks", "active_mm", "files"];

/// The stacker's needs absent from `isf` (a Volatility 3 ISF document), e.g.
/// `["init_files", "init_top_pgt|swapper_pg_dir", "task_struct.files"]`; empty when all are there.
pub fn isf_missing(isf: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for alternatives in STACKER_SYMBOLS {
        if !alternatives.iter().any(|s| isf.pointer(&format!("/symbols/{s}")).is_some()) {
            out.push(alternatives.join("|"));
        }
    }
    let members = isf.pointer("/user_types/task_struct/fields");
    for m in STACKER_TASK_MEMBERS {
        if members.and_then(|f| f.get(m)).is_none() {
            out.push(format!("task_struct.{m}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn malformed_listings_are_errors() {
        assert_eq!(parse_pslist_csv(b""), Err(CsvError::NoHeader));
        assert_eq!(parse_pslist_csv(b"\n\nPID,TID,PPID,UID\n"), Err(CsvError::MissingColumn("COMM")));
        let bad = parse_pslist_csv(b"PID,TID,PPID,COMM,UID\n1,1,0,init,0\nx,2,0,kthreadd,0\n");
        assert!(matches!(bad, Err(CsvError::Number { line: 3, column: "PID", .. })), "{bad:?}");
        let short = parse_pslist_csv(b"PID,TID,PPID,COMM,UID\n1,1,0\n");
        assert!(matches!(short, Err(CsvError::Record { line: 2, .. })), "{short:?}");
        let neg = parse_pslist_csv(b"PID,TID,PPID,COMM,UID\n-1,1,0,a,0\n");
        assert!(matches!(neg, Err(CsvError::Number { .. })), "{neg:?}");
    }

    #[test]
    fn a_carriage_return_inside_an_unquoted_name_stays_in_its_field() {
        let csv = b"TreeDepth,OFFSET (P),PID,TID,PPID,COMM,EXIT_STATE\n0,0x2181a70,0,5930,0,\r\x17,TASK_RUNNING\n0,0x1,7,7,2,kworker,TASK_RUNNING\n";
        let rows = parse_csv(csv, &["TID", "COMM"]).unwrap();
        assert_eq!(rows.iter().map(|(_, f)| f[0].as_str()).collect::<Vec<_>>(), ["5930", "7"]);
        assert_eq!(rows[0].1[1], "\r\x17");
    }

    #[test]
    fn quoted_names_and_reordered_columns() {
        let rows = parse_pslist_csv(b"COMM,UID,PPID,TID,PID\n\"a,b\",1000,1,7,7\n").unwrap();
        assert_eq!(rows, vec![PslistRow { pid: 7, tid: 7, ppid: 1, uid: 1000, comm: "a,b".into() }]);
    }

    #[test]
    fn stacker_needs() {
        let full = json!({
            "symbols": {"linux_banner": {}, "init_task": {}, "init_mm": {}, "init_files": {}, "swapper_pg_dir": {}},
            "user_types": {"task_struct": {"fields": {"pid": {}, "comm": {}, "tasks": {}, "active_mm": {}, "files": {}}}}
        });
        assert!(isf_missing(&full).is_empty());
        let thin = json!({"symbols": {"linux_banner": {}, "init_task": {}}, "user_types": {"task_struct": {"fields": {"pid": {}, "comm": {}, "tasks": {}}}}});
        assert_eq!(
            isf_missing(&thin),
            ["init_mm", "init_files", "init_top_pgt|swapper_pg_dir", "task_struct.active_mm", "task_struct.files"]
        );
    }
}
