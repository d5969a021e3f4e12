//! Ground truth: one record per thread, as the guest's own `/proc` showed it (see
//! `harness/guest/agent.c` for how each field is read).
//!
//! Invariant: parsing never trusts the file: every line must be a complete record, duplicates
//! (same pid) are rejected, and the first bad line stops the parse with its line number.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thread {
    /// Thread id (the kernel's `task_struct.pid`).
    pub pid: u32,
    /// Thread-group id (the process id).
    pub tgid: u32,
    /// `/proc/<pid>/task/<tid>/stat` field 4: tgid of the real parent.
    pub ppid: u32,
    /// Real uid.
    pub uid: u32,
    /// State letter, stat field 3 (R S D T t Z X I ...). The agent's own record carries the state
    /// it is in at the dump (S running, R panicked).
    pub state: String,
    /// Valid UTF-8 kept; each byte outside a valid sequence is U+FFFD.
    pub comm: String,
    /// The exact comm bytes, lowercase hex.
    pub comm_hex: String,
    /// argv joined by single spaces; empty for kernel threads and zombies.
    pub cmdline: String,
    /// stat field 22: start time after boot in clock ticks (USER_HZ).
    pub start_time: u64,
    /// start_time * 1e9 / USER_HZ (USER_HZ = 100): nanoseconds, at 10 ms resolution.
    pub start_time_ns: u64,
    /// PF_KTHREAD set in stat field 9.
    pub kthread: bool,
}

impl Thread {
    /// The exact comm bytes (decoded from `comm_hex`).
    pub fn comm_bytes(&self) -> Vec<u8> {
        let h = self.comm_hex.as_bytes();
        h.chunks(2)
            .filter_map(|c| std::str::from_utf8(c).ok().and_then(|s| u8::from_str_radix(s, 16).ok()))
            .collect()
    }
}

/// At most this many records per file (a guest has a few hundred threads).
pub const MAX_THREADS: usize = 100_000;

pub fn parse_jsonl(bytes: &[u8]) -> Result<Vec<Thread>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut out: Vec<Thread> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        if out.len() >= MAX_THREADS {
            return Err(format!("more than {MAX_THREADS} records"));
        }
        let t: Thread = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        if t.state.chars().count() != 1 {
            return Err(format!("line {}: state {:?} is not one letter", i + 1, t.state));
        }
        if !seen.insert(t.pid) {
            return Err(format!("line {}: duplicate pid {}", i + 1, t.pid));
        }
        out.push(t);
    }
    Ok(out)
}

/// One line of the guest's `/proc/modules` (`kernel/module/procfs.c`, `m_show`):
/// `NAME SIZE REFCOUNT DEPS STATE ADDRESS[ (TAINTS)]`, e.g. `ts_kmp 12288 0 - Live 0xffffffffc0a2c000 (E)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Module {
    pub name: String,
    /// Bytes of the module's memory (core, plus init while it is still loading).
    pub size: u64,
    /// `module_refcount()`, or `None` printed as `-` without `CONFIG_MODULE_UNLOAD`.
    pub refcount: Option<i64>,
    /// The modules using this one (`NAME,` each), `[permanent]`, or empty for `-`.
    pub deps: Vec<String>,
    /// `Live`, `Loading` or `Unloading`.
    pub state: String,
    /// The core text address as printed (0 when the reader may not see kernel addresses).
    pub address: u64,
    /// The letters between the parentheses (taints, then `+` loading or `-` unloading), or empty.
    pub taints: String,
}

/// At most this many modules per file.
pub const MAX_MODULES: usize = 10_000;

pub fn parse_modules(bytes: &[u8]) -> Result<Vec<Module>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        if out.len() >= MAX_MODULES {
            return Err(format!("more than {MAX_MODULES} modules"));
        }
        let bad = |what: &str| format!("line {}: {what}: {line:?}", i + 1);
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() != 6 && f.len() != 7 {
            return Err(bad("not 6 or 7 fields"));
        }
        let refcount = match f[2] {
            "-" => None,
            r => Some(r.parse().map_err(|_| bad("refcount"))?),
        };
        let deps = match f[3] {
            "-" => Vec::new(),
            d => d.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        };
        if !matches!(f[4], "Live" | "Loading" | "Unloading") {
            return Err(bad("state"));
        }
        let address = f[5].strip_prefix("0x").and_then(|a| u64::from_str_radix(a, 16).ok()).ok_or_else(|| bad("address"))?;
        let taints = match f.get(6) {
            None => String::new(),
            Some(t) => t.strip_prefix('(').and_then(|t| t.strip_suffix(')')).ok_or_else(|| bad("taints"))?.to_string(),
        };
        out.push(Module {
            name: f[0].to_string(),
            size: f[1].parse().map_err(|_| bad("size"))?,
            refcount,
            deps,
            state: f[4].to_string(),
            address,
            taints,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_modules() {
        let text = b"ts_kmp 12288 0 - Live 0xffffffffc0a2c000 (E)\nxor 24576 1 btrfs, Live 0x0000000000000000\n";
        let m = parse_modules(text).unwrap();
        assert_eq!(m[0].name, "ts_kmp");
        assert_eq!((m[0].size, m[0].refcount, m[0].address), (12288, Some(0), 0xffffffffc0a2c000));
        assert_eq!((m[0].state.as_str(), m[0].taints.as_str()), ("Live", "E"));
        assert_eq!((m[1].deps.clone(), m[1].taints.as_str()), (vec!["btrfs".to_string()], ""));
        assert!(parse_modules(b"x 1 0 - Dead 0x0\n").is_err());
        assert!(parse_modules(b"x 1 0 - Live\n").is_err());
    }

    #[test]
    fn parses_and_rejects() {
        let ok = br#"{"pid":2,"tgid":2,"ppid":0,"uid":0,"state":"S","comm":"kthreadd","comm_hex":"6b74687265616464","cmdline":"","start_time":0,"start_time_ns":0,"kthread":true}"#;
        let v = parse_jsonl(ok).unwrap();
        assert_eq!(v[0].comm_bytes(), b"kthreadd");
        let mut dup = ok.to_vec();
        dup.push(b'\n');
        dup.extend_from_slice(ok);
        assert!(parse_jsonl(&dup).unwrap_err().contains("duplicate"));
        assert!(parse_jsonl(b"{\"pid\":1}").is_err());
    }
}
