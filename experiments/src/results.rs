//! `results/<name>.csv`: the one file format between the experiments and the figures.
//!
//! Invariant: a results file has a header row equal to [`columns`] of its row type — the row's
//! own fields, then [`STAMP_COLUMNS`] — and one record per row. [`to_csv`] is a pure function;
//! [`write_atomic`] replaces a file in one rename, so a reader (or a crash) sees the old file
//! or the new one, never half of one; [`read`] rejects a file whose header is not exactly the
//! expected one.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Recorded with every row: which code produced it, when, and whether in `--quick` mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// `git rev-parse --short HEAD`, with `-dirty` for uncommitted changes.
    pub git_rev: String,
    /// When the run that produced the row finished, RFC 3339 UTC.
    pub date_utc: String,
    /// Produced by `experiments run --quick` (smaller inputs, fewer repetitions).
    pub quick: bool,
}

/// The columns appended to every row.
pub const STAMP_COLUMNS: [&str; 3] = ["git_rev", "date_utc", "quick"];

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("row type {type_name} is not a plain struct, so it has no column names")]
    NotAStruct { type_name: &'static str },
    #[error("encoding CSV: {0}")]
    Encode(#[source] csv::Error),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Decode { path: PathBuf, source: csv::Error },
    #[error("{}: wrong schema: expected columns {expected:?}, found {found:?}", path.display())]
    Schema {
        path: PathBuf,
        expected: Vec<String>,
        found: Vec<String>,
    },
}

/// The header of a results file of rows `R`.
pub fn columns<R: DeserializeOwned>() -> Result<Vec<&'static str>, ResultsError> {
    let fields = crate::schema::fields::<R>().ok_or(ResultsError::NotAStruct {
        type_name: std::any::type_name::<R>(),
    })?;
    Ok(fields.iter().copied().chain(STAMP_COLUMNS).collect())
}

/// The whole CSV file for `rows`: header, then one record per row. Pure.
pub fn to_csv<R: Serialize + DeserializeOwned>(rows: &[(R, Stamp)]) -> Result<Vec<u8>, ResultsError> {
    let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
    w.write_record(columns::<R>()?).map_err(ResultsError::Encode)?;
    for (row, stamp) in rows {
        w.serialize((row, stamp)).map_err(ResultsError::Encode)?;
    }
    w.into_inner().map_err(|e| ResultsError::Encode(e.into_error().into()))
}

/// Replaces `path` with `bytes`: written to a temporary file beside it, then renamed over it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ResultsError> {
    let io = |source| ResultsError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The path of experiment `name`'s results in `results_dir`.
pub fn path_for(results_dir: &Path, name: &str) -> PathBuf {
    results_dir.join(format!("{name}.csv"))
}

/// Reads a results file of rows `R`, checking its header first.
pub fn read<R: Serialize + DeserializeOwned>(path: &Path) -> Result<Vec<(R, Stamp)>, ResultsError> {
    let decode = |source| ResultsError::Decode {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(|source| ResultsError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(std::io::BufReader::new(file));
    let expected = columns::<R>()?;
    let found: Vec<String> = r.headers().map_err(decode)?.iter().map(str::to_owned).collect();
    if found.iter().map(String::as_str).ne(expected.iter().copied()) {
        return Err(ResultsError::Schema {
            path: path.to_owned(),
            expected: expected.iter().map(|s| s.to_string()).collect(),
            found,
        });
    }
    r.records()
        .map(|rec| rec.and_then(|rec| rec.deserialize::<(R, Stamp)>(None)).map_err(decode))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Row {
        name: String,
        size_bytes: u32,
        latency_us: f64,
    }

    fn stamp() -> Stamp {
        Stamp {
            git_rev: "abc1234".into(),
            date_utc: "2026-01-02T03:04:05Z".into(),
            quick: false,
        }
    }

    #[test]
    fn header_matches_what_csv_derives_itself() {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.serialize((
            Row {
                name: "a".into(),
                size_bytes: 1,
                latency_us: 2.5,
            },
            stamp(),
        ))
        .unwrap();
        let auto = String::from_utf8(w.into_inner().unwrap()).unwrap();
        let ours = String::from_utf8(
            to_csv(&[(
                Row {
                    name: "a".into(),
                    size_bytes: 1,
                    latency_us: 2.5,
                },
                stamp(),
            )])
            .unwrap(),
        )
        .unwrap();
        assert_eq!(auto, ours);
    }

    #[test]
    fn round_trip_and_schema_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let rows = vec![
            (
                Row {
                    name: "x, with comma".into(),
                    size_bytes: 4,
                    latency_us: 12.0,
                },
                stamp(),
            ),
            (
                Row {
                    name: "y".into(),
                    size_bytes: 1024,
                    latency_us: 0.125,
                },
                stamp(),
            ),
        ];
        write_atomic(&path, &to_csv(&rows).unwrap()).unwrap();
        assert_eq!(read::<Row>(&path).unwrap(), rows);

        std::fs::write(&path, "name,size_bytes,git_rev,date_utc,quick\nx,4,a,b,false\n").unwrap();
        let err = read::<Row>(&path).unwrap_err();
        assert!(matches!(err, ResultsError::Schema { .. }), "{err}");
    }

    #[test]
    fn empty_results_still_have_a_header() {
        let bytes = to_csv::<Row>(&[]).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "name,size_bytes,latency_us,git_rev,date_utc,quick\n"
        );
    }
}
