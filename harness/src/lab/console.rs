//! The guest's serial console (`logs/console.log`, recorded by QEMU from boot through the
//! panic with `printk.time` on) as truth for the kernel log, and how a log is held against it.
//!
//! - A kernel line is the text from its first `[%5lu.%06lu] ` on, with the CR of the serial line
//!   discipline removed. What comes before it on the same serial line is not the kernel's: the
//!   firmware's and boot loader's output and terminal resets before the first kernel line, or
//!   user space writing to the console when the kernel's line came (the lab's agent reports a
//!   module it loaded just as the module's own messages are printed).
//! - Lines without a timestamp are user space writing to the console, not the kernel log.
//! - A log holds the console when every console line appears among the log's lines in the same
//!   order (a subsequence: the log also has records below the console's log level), compared
//!   for equality, trailing blanks included.
//!
//! Invariant: [`kernel_lines`] never reorders or edits a line beyond the two removals above.

/// The timestamped kernel lines of a console log, in order.
pub fn kernel_lines(raw: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(raw);
    let mut out = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(at) = timestamp_at(line) {
            out.push(line[at..].to_owned());
        }
    }
    out
}

/// Where the first `[%5u.%06u] ` starts in `line`.
pub fn timestamp_at(line: &str) -> Option<usize> {
    let b = line.as_bytes();
    (0..b.len()).find(|&i| {
        if b[i] != b'[' {
            return false;
        }
        let Some(close) = b[i..].iter().position(|&c| c == b']') else { return false };
        let inner = &b[i + 1..i + close];
        b.get(i + close + 1) == Some(&b' ')
            && inner.len() >= 12
            && inner[inner.len() - 7] == b'.'
            && inner[inner.len() - 6..].iter().all(u8::is_ascii_digit)
            && inner[..inner.len() - 7].iter().all(|c| *c == b' ' || c.is_ascii_digit())
    })
}

/// The timestamp of a kernel line (one [`kernel_lines`] returned) in nanoseconds.
pub fn timestamp_ns(line: &str) -> Option<u64> {
    let inner = line.strip_prefix('[')?.split_once(']')?.0.trim();
    let (s, us) = inner.split_once('.')?;
    Some(s.parse::<u64>().ok()?.checked_mul(1_000_000_000)? + us.parse::<u64>().ok()? * 1000)
}

/// The console lines missing from `ours`, keeping order: (index in `console`, line).
pub fn missing(console: &[String], ours: &[&str]) -> Vec<(usize, String)> {
    let mut at = 0;
    let mut out = Vec::new();
    for (n, c) in console.iter().enumerate() {
        match ours[at..].iter().position(|o| o == c) {
            Some(k) => at += k + 1,
            None => out.push((n, c.clone())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_lines_from_a_serial_log() {
        let raw = b"SeaBIOS\r\nProbing EDD ... o\x1bc[    0.000000] Linux version 6.1\r\nnetdma: init\r\n[    1.250000] second  \r\n";
        let lines = kernel_lines(raw);
        assert_eq!(lines, ["[    0.000000] Linux version 6.1", "[    1.250000] second  "]);
        assert_eq!(timestamp_ns(&lines[1]), Some(1_250_000_000));
        let mixed = b"[    0.000000] a\nnd-agent: loaded x.ko[    0.100000] x: tainting\n";
        assert_eq!(kernel_lines(mixed), ["[    0.000000] a", "[    0.100000] x: tainting"], "user space before a kernel line");
        assert_eq!(timestamp_at("[ab.123456] x"), None);
        assert_eq!(timestamp_at("x] [    2.000000] y"), Some(3), "a ']' before any '['");
    }

    #[test]
    fn missing_is_what_a_subsequence_lacks() {
        let console: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert!(missing(&console, &["a", "x", "b", "c"]).is_empty());
        assert_eq!(missing(&console, &["b", "a", "c"]), [(1, "b".to_string())]);
    }
}
