//! The published NetTLP hardware measurements: a directory of tlpperf outputs named
//! `{latency,throughput}/read_pattern-P_dmalen-N_cpu-C.txt`.
//!
//! Invariant: every [`RefFile`] returned was parsed by [`crate::tlpperf`] and its header agrees
//! with its file name (direction read, pattern, DMA length, thread count) and with its directory
//! (latency files ran in latency mode and hold samples; throughput files hold per-second counters).
//! Listing is bounded by [`MAX_FILES`].

use std::path::{Path, PathBuf};

use crate::tlpperf::{self, Direction, Pattern};

/// Most reference files accepted per directory.
pub const MAX_FILES: usize = 1000;

/// Where the reference data lives relative to the repository root.
pub const DEFAULT_RELATIVE: &str = "../shared/reference/nettlp-hw-tlpperf";

/// The kind of tlpperf run, from the sub-directory it is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Latency,
    Throughput,
}

impl Kind {
    pub fn dir_name(self) -> &'static str {
        match self {
            Kind::Latency => "latency",
            Kind::Throughput => "throughput",
        }
    }
}

/// What a file name says about its run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RefName {
    pub pattern: Pattern,
    pub dma_len_bytes: u64,
    pub cpus: u32,
}

/// One parsed reference file.
#[derive(Clone, Debug)]
pub struct RefFile {
    pub kind: Kind,
    pub path: PathBuf,
    pub name: RefName,
    pub run: tlpperf::Run,
}

#[derive(Debug, thiserror::Error)]
pub enum RefError {
    #[error(
        "NetTLP hardware reference data not found at {}: expected the directory \
         `nettlp-hw-tlpperf` (with latency/ and throughput/) at {DEFAULT_RELATIVE} from the \
         repository root, or pass its path with --reference DIR",
        dir.display()
    )]
    Missing { dir: PathBuf },
    #[error("{}: {source}", dir.display())]
    List { dir: PathBuf, source: std::io::Error },
    #[error("{}: more than {MAX_FILES} files", dir.display())]
    TooMany { dir: PathBuf },
    #[error("{}: not named read_pattern-P_dmalen-N_cpu-C.txt", path.display())]
    BadName { path: PathBuf },
    #[error(transparent)]
    Parse(#[from] tlpperf::FileError),
    #[error("{}: {reason}", path.display())]
    Mismatch { path: PathBuf, reason: String },
}

/// Parses `read_pattern-fix_dmalen-512_cpu-16.txt`.
pub fn parse_name(file_name: &str) -> Option<RefName> {
    let stem = file_name.strip_suffix(".txt")?.strip_prefix("read_pattern-")?;
    let (pattern, rest) = stem.split_once("_dmalen-")?;
    let (len, cpus) = rest.split_once("_cpu-")?;
    let pattern = match pattern {
        "fix" => Pattern::Fix,
        "seq" => Pattern::Seq,
        "seq512" => Pattern::Seq512,
        "random" => Pattern::Random,
        _ => return None,
    };
    Some(RefName {
        pattern,
        dma_len_bytes: len.parse().ok()?,
        cpus: cpus.parse().ok()?,
    })
}

/// The `.txt` files of `root/<kind>/`, sorted by (pattern, size, cpus). Not parsed yet.
pub fn list(root: &Path, kind: Kind) -> Result<Vec<(RefName, PathBuf)>, RefError> {
    if !root.is_dir() {
        return Err(RefError::Missing { dir: root.to_owned() });
    }
    let dir = root.join(kind.dir_name());
    let entries = std::fs::read_dir(&dir).map_err(|source| RefError::List {
        dir: dir.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| RefError::List {
            dir: dir.clone(),
            source,
        })?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("txt") {
            continue;
        }
        if out.len() >= MAX_FILES {
            return Err(RefError::TooMany { dir });
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_name)
            .ok_or_else(|| RefError::BadName { path: path.clone() })?;
        out.push((name, path));
    }
    out.sort();
    Ok(out)
}

/// Parses one listed file and checks it against its name and kind.
pub fn load(kind: Kind, name: RefName, path: &Path) -> Result<RefFile, RefError> {
    let run = tlpperf::parse_file(path)?;
    let o = &run.options;
    let mismatch = |reason: String| {
        Err(RefError::Mismatch {
            path: path.to_owned(),
            reason,
        })
    };
    if o.direction != Direction::Read {
        return mismatch("not a read benchmark".into());
    }
    if (o.pattern, o.dma_len_bytes, o.nthreads) != (name.pattern, name.dma_len_bytes, name.cpus) {
        return mismatch(format!(
            "header says pattern {} length {} threads {}, the file name says {} {} {}",
            o.pattern, o.dma_len_bytes, o.nthreads, name.pattern, name.dma_len_bytes, name.cpus
        ));
    }
    match kind {
        Kind::Latency if !o.latency_mode || run.latencies.is_empty() => {
            return mismatch("latency file without latency samples".into())
        }
        Kind::Latency if o.count > 0 && run.latencies.len() as u64 != o.count * u64::from(o.nthreads) => {
            return mismatch(format!(
                "{} latency samples, expected -c {} per thread",
                run.latencies.len(),
                o.count
            ))
        }
        Kind::Throughput if run.seconds.is_empty() => return mismatch("throughput file without counters".into()),
        _ => {}
    }
    Ok(RefFile {
        kind,
        path: path.to_owned(),
        name,
        run,
    })
}

/// Lists and parses every file of one kind.
pub fn load_all(root: &Path, kind: Kind) -> Result<Vec<RefFile>, RefError> {
    list(root, kind)?
        .into_iter()
        .map(|(name, path)| load(kind, name, &path))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            parse_name("read_pattern-seq_dmalen-512_cpu-16.txt"),
            Some(RefName {
                pattern: Pattern::Seq,
                dma_len_bytes: 512,
                cpus: 16
            })
        );
        assert_eq!(parse_name("read_pattern-seq_dmalen-512_cpu-16.csv"), None);
        assert_eq!(parse_name("read_pattern-zig_dmalen-512_cpu-16.txt"), None);
        assert_eq!(parse_name("read_pattern-seq_dmalen-x_cpu-16.txt"), None);
    }

    #[test]
    fn missing_directory_says_how_to_fix() {
        let err = list(Path::new("/nonexistent/nettlp-hw-tlpperf"), Kind::Latency).unwrap_err();
        assert!(err.to_string().contains("--reference"), "{err}");
    }
}
