//! How every binary of the workspace logs: `tracing` to stderr, filtered by `RUST_LOG`, else
//! by the binary's default level.
//!
//! Invariant: stdout is never written by a log line (it carries the binaries' output).

/// Install the stderr subscriber; `default` (`"info"`, `"warn"`) applies when `RUST_LOG` is
/// unset or does not parse.
pub fn init(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into()))
        .with_writer(std::io::stderr)
        .init();
}
