//! The lab's error type: every variant names the file, command or guest step that failed.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("`{cmd}` failed ({status}); {detail}")]
    Command { cmd: String, status: String, detail: String },
    #[error("missing Debian packages; run: {install}")]
    MissingPackages { install: String },
    #[error("kernel config {path}: {problems}")]
    ConfigMismatch { path: PathBuf, problems: String },
    #[error("QMP: {0}")]
    Qmp(String),
    #[error("guest control port: {0}")]
    Protocol(String),
    #[error("timed out after {secs} s waiting for {what}; console log: {console}")]
    Timeout { what: String, secs: u64, console: PathBuf },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("unknown corpus entry `{0}` (see `harness corpus list`)")]
    UnknownEntry(String),
    #[error(transparent)]
    Kbuild(#[from] crate::kbuild::KbuildError),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Adapter for `map_err`: an I/O error on `path`.
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
