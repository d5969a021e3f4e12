//! The binary's failure channel (`--errors json`, see `harness::failure`): a failed command ends
//! stderr with one typed line and exits 1; text mode prints anyhow's `Error:` line with the same
//! message.

use std::process::{Command, Output};

use harness::failure::{Failure, FailureKind, EXIT_FAILED};
use rstest::rstest;

fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness")).args(args).env("RUST_LOG", "warn").output().expect("running harness")
}

/// 16 MiB of zeros as a raw image: memory without a kernel.
fn no_kernel() -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().expect("temp file");
    f.as_file().set_len(16 << 20).expect("sized");
    f
}

#[rstest]
#[case::before_the_subcommand(true)]
#[case::after_it(false)]
fn a_missing_image_is_a_source_failure(#[case] global_first: bool) {
    let ps = ["ps", "--image", "/nonexistent/dump.elf"];
    let args: Vec<&str> =
        if global_first { ["--errors", "json"].iter().chain(&ps).copied().collect() } else { ps.iter().chain(&["--errors", "json"]).copied().collect() };
    let out = harness(&args);
    assert_eq!(out.status.code(), Some(EXIT_FAILED));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let f = Failure::last_in(&stderr).unwrap_or_else(|| panic!("no failure line in {stderr}"));
    assert_eq!(f.kind, FailureKind::Source, "{f:?}");
    assert!(f.message.starts_with("opening image /nonexistent/dump.elf"), "{f:?}");
    assert!(!stderr.contains("Error: "), "{stderr}");
}

#[rstest]
#[case::ps("ps", "listing processes: ")]
#[case::profile("profile", "profiling: ")]
#[case::hidden("hidden", "looking for hidden tasks and modules: ")]
fn memory_without_a_kernel_is_a_kernel_failure_with_the_text_modes_message(#[case] cmd: &str, #[case] prefix: &str) {
    let img = no_kernel();
    let path = img.path().to_str().expect("UTF-8 path");
    let args = [cmd, "--image", path, "--format-image", "raw"];
    let json = harness(&[&["--errors", "json"], &args[..]].concat());
    assert_eq!(json.status.code(), Some(EXIT_FAILED));
    let f = Failure::last_in(&String::from_utf8_lossy(&json.stderr)).expect("failure line");
    assert_eq!(f.kind, FailureKind::Kernel, "{f:?}");
    assert!(f.message.starts_with(prefix), "{f:?}");
    // Text mode, as before: anyhow's `Error:` line carries the same message.
    let text = harness(&args);
    assert_eq!(text.status.code(), Some(EXIT_FAILED));
    let stderr = String::from_utf8_lossy(&text.stderr);
    assert!(stderr.lines().any(|l| l == format!("Error: {}", f.message)), "{stderr}");
    assert!(Failure::last_in(&stderr).is_none());
}
