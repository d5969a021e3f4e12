//! Where and when a result was produced: the git revision of the working tree and the UTC time.
//!
//! Invariant: a revision is either the short hash of HEAD, with `-dirty` appended when tracked or
//! untracked files differ from it (outside `results/` and `paper-figures/out/`, which the
//! experiments themselves rewrite), or an error; never a guess.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    #[error("running `git {args}` in {}: {source} (is git installed?)", repo.display())]
    Spawn {
        repo: PathBuf,
        args: String,
        source: std::io::Error,
    },
    #[error("`git {args}` in {} failed: {stderr} (results must be produced in a git checkout)", repo.display())]
    Git {
        repo: PathBuf,
        args: String,
        stderr: String,
    },
}

fn git(repo: &Path, args: &[&str]) -> Result<String, ProvenanceError> {
    let joined = args.join(" ");
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .map_err(|source| ProvenanceError::Spawn {
            repo: repo.to_owned(),
            args: joined.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(ProvenanceError::Git {
            repo: repo.to_owned(),
            args: joined,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `git rev-parse --short HEAD`, plus `-dirty` if the tree has changes outside the outputs.
pub fn git_rev(repo: &Path) -> Result<String, ProvenanceError> {
    let rev = git(repo, &["rev-parse", "--short", "HEAD"])?;
    let status = git(
        repo,
        &[
            "status",
            "--porcelain",
            "--",
            ".",
            ":(exclude)results",
            ":(exclude)paper-figures/out",
        ],
    )?;
    Ok(if status.is_empty() { rev } else { format!("{rev}-dirty") })
}

/// The current UTC time as RFC 3339 with seconds, e.g. `2026-08-04T12:00:00Z`.
pub fn now_utc() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The repository root containing `dir` (`git rev-parse --show-toplevel`).
pub fn repo_root(dir: &Path) -> Result<PathBuf, ProvenanceError> {
    git(dir, &["rev-parse", "--show-toplevel"]).map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_date_shape() {
        let d = super::now_utc();
        assert_eq!(d.len(), 20, "{d}");
        assert!(d.ends_with('Z') && d.as_bytes()[10] == b'T', "{d}");
    }

    #[test]
    fn this_checkout_has_a_revision() {
        let rev = super::git_rev(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(
            rev.len() >= 7 && rev.split('-').next().unwrap().bytes().all(|b| b.is_ascii_hexdigit()),
            "{rev}"
        );
    }

    #[test]
    fn outside_a_checkout_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(super::git_rev(dir.path()).is_err());
    }
}
