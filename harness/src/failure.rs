//! The `harness` binary's machine-readable failure channel, for programs that run it (the
//! experiments) instead of reading anyhow's text.
//!
//! With `--errors json`, a command that fails ends stderr with one JSON line,
//! `{"failure":{"kind":"layout","message":"listing processes: ..."}}` ([`Failure::line`]), in
//! place of anyhow's `Error: ...` text; a panic ends it with a line of kind `panic`. Exit status,
//! whatever `--errors` says:
//!
//! | status | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | failed; nothing useful on stdout ([`EXIT_FAILED`]) |
//! | 2 | stopped part-way: stdout holds what was read before the error ([`EXIT_PARTIAL`], kind `partial`) |
//! | 101 | panicked (a bug; kind `panic`) |
//!
//! Invariant: a failure's `message` is exactly what anyhow prints after `Error: ` for the same
//! failure in text mode (the outermost error's `Display`), and its `kind` comes from the typed
//! error, never from that text.

use serde::{Deserialize, Serialize};

use crate::introspect::hidden::HiddenError;
use crate::introspect::layout::LayoutError;
use crate::introspect::modules::LsmodError;
use crate::introspect::printk::DmesgError;
use crate::introspect::profile::ProfileError;
use crate::introspect::ps::PsError;
use crate::introspect::source::SourceError;

/// Exit status of a command that failed.
pub const EXIT_FAILED: i32 = 1;
/// Exit status of a command whose output stopped part-way (a listing or log cut short).
pub const EXIT_PARTIAL: i32 = 2;

/// What failed, for a program to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The memory source (image, NetTLP target, capture) could not be opened.
    Source,
    /// No kernel was found in memory, or its symbols and address space could not be read.
    Kernel,
    /// No layout method could run: every one tried lacked its prerequisite here.
    LayoutUnavailable,
    /// A layout method ran and failed, or its layout was rejected.
    Layout,
    /// `init_task` or the direct map could not be anchored with the layout.
    Anchor,
    /// The profile could not be written as a Volatility ISF.
    Isf,
    /// The printk ring could not be found or read.
    Log,
    /// The kernel's module list could not be found or read (or the kernel has no modules).
    Modules,
    /// The command stopped part-way; what it printed is incomplete (exit status 2).
    Partial,
    /// The program panicked (a bug).
    Panic,
    /// Anything else: arguments, output files, the lab, the DMA commands.
    Other,
}

impl FailureKind {
    pub fn of_ps(e: &PsError) -> Self {
        match e {
            PsError::Kernel(_) | PsError::Identity(_) => FailureKind::Kernel,
            PsError::Layout(l) => Self::of_layout(l),
            PsError::LayoutBusy => FailureKind::Layout,
            PsError::Anchor(_) | PsError::NoInitTask => FailureKind::Anchor,
        }
    }

    pub fn of_layout(e: &LayoutError) -> Self {
        if e.is_unavailable() {
            FailureKind::LayoutUnavailable
        } else {
            FailureKind::Layout
        }
    }

    pub fn of_profile(e: &ProfileError) -> Self {
        match e {
            ProfileError::Ps(e) => Self::of_ps(e),
            ProfileError::Isf(_) => FailureKind::Isf,
        }
    }

    pub fn of_dmesg(e: &DmesgError) -> Self {
        match e {
            DmesgError::Kernel(_) => FailureKind::Kernel,
            _ => FailureKind::Log,
        }
    }

    pub fn of_lsmod(e: &LsmodError) -> Self {
        match e {
            LsmodError::Kernel(_) => FailureKind::Kernel,
            _ => FailureKind::Modules,
        }
    }

    pub fn of_hidden(e: &HiddenError) -> Self {
        match e {
            HiddenError::Ps(e) => Self::of_ps(e),
        }
    }

    /// The process exit status for this kind.
    pub fn exit_code(self) -> i32 {
        match self {
            FailureKind::Partial => EXIT_PARTIAL,
            FailureKind::Panic => 101,
            _ => EXIT_FAILED,
        }
    }
}

/// One failure: its kind and the message a person would read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

/// The JSON line: `{"failure": ...}`, so that it cannot be mistaken for a `--stats` line.
#[derive(Serialize, Deserialize)]
struct Line {
    failure: Failure,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure { kind, message: message.into() }
    }

    /// The failure an error returned by a command stands for: a [`Failure`] in its chain, else
    /// [`FailureKind::Source`] if a memory source failed to open, else [`FailureKind::Other`];
    /// the message is the error's own `Display` (anyhow's `Error:` line).
    pub fn of(e: &anyhow::Error) -> Self {
        let kind = e
            .chain()
            .find_map(|c| {
                c.downcast_ref::<Failure>()
                    .map(|f| f.kind)
                    .or_else(|| c.downcast_ref::<SourceError>().map(|_| FailureKind::Source))
            })
            .unwrap_or(FailureKind::Other);
        Failure { kind, message: e.to_string() }
    }

    /// The one JSON line (no newline).
    pub fn line(&self) -> String {
        serde_json::to_string(&Line { failure: self.clone() }).unwrap_or_default()
    }

    /// The failure line a command printed on `stderr` (the last one), if any.
    pub fn last_in(stderr: &str) -> Option<Failure> {
        stderr.lines().rev().find_map(|l| serde_json::from_str::<Line>(l.trim()).ok()).map(|l| l.failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_round_trips_and_is_not_a_stats_line() {
        let f = Failure::new(FailureKind::LayoutUnavailable, "listing processes: no layout method available: btf: x");
        let line = f.line();
        insta::assert_snapshot!(line, @r#"{"failure":{"kind":"layout_unavailable","message":"listing processes: no layout method available: btf: x"}}"#);
        let stderr = format!("2026-12-03 WARN something\n{line}\n{{\"method\":\"btf\",\"tasks\":1}}\n\n");
        assert_eq!(Failure::last_in(&stderr), Some(f));
        assert_eq!(Failure::last_in("Error: no Linux banner found\n{\"failure\":1}\n"), None);
    }

    #[test]
    fn kind_comes_from_the_chain_and_message_from_the_outermost_error() {
        let typed = anyhow::Error::from(Failure::new(FailureKind::Kernel, "listing processes: no Linux banner found"));
        assert_eq!(Failure::of(&typed), Failure::new(FailureKind::Kernel, "listing processes: no Linux banner found"));
        let source = anyhow::Error::from(SourceError::NotAvailable("no such target".into()));
        assert_eq!(Failure::of(&source).kind, FailureKind::Source);
        let other = anyhow::anyhow!("writing out.json").context("profile");
        assert_eq!(Failure::of(&other), Failure::new(FailureKind::Other, "profile"));
        assert_eq!((FailureKind::Partial.exit_code(), FailureKind::Layout.exit_code()), (EXIT_PARTIAL, EXIT_FAILED));
    }
}
