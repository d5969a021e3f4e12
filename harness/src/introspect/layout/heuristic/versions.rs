//! The heuristic method's version switches: the only facts it takes from the release string,
//! each because memory cannot decide it. Everything else is decided by structure.
//!
//! | fact | value | versions | kernel commit |
//! |---|---|---|---|
//! | `kernel_cap_t` width, a tie-breaker for `cred.uid` when two placements of the id block fit `init_cred` | `u32[2]` / `u64` | to 6.2 / from 6.3 | f122a08b197d "capability: just use a 'u64' instead of a 'u32[2]' array" |
//! | `WORKER_DESC_LEN` | 24 / 32 | to 6.10 / from 6.11 | 231035f18d6b "workqueue: Increase worker desc's length to 32" (some stable series took it too, which this table cannot see: nothing in memory tells a 24-byte buffer followed by a NULL `rescue_wq` from a 32-byte one) |
//!
//! Invariant: one function, one table; callers never compare versions themselves.

/// What the release string decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionFacts {
    /// `kernel_cap_t` is one `u64` (6.3 on).
    pub caps_u64: bool,
    /// `WORKER_DESC_LEN`.
    pub worker_desc_len: u64,
}

/// The facts for `(major, minor)`.
pub fn facts(version: (u32, u32)) -> VersionFacts {
    VersionFacts { caps_u64: version >= (6, 3), worker_desc_len: if version >= (6, 11) { 32 } else { 24 } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries() {
        assert_eq!(facts((5, 10)), VersionFacts { caps_u64: false, worker_desc_len: 24 });
        assert!(!facts((6, 2)).caps_u64);
        assert!(facts((6, 3)).caps_u64);
        assert_eq!(facts((6, 10)).worker_desc_len, 24);
        assert_eq!(facts((6, 11)).worker_desc_len, 32);
        assert_eq!(facts((7, 2)), VersionFacts { caps_u64: true, worker_desc_len: 32 });
    }
}
