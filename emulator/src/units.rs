//! Quantities written on command lines and in target URLs (`--fault delay=200us`,
//! `nettlp://…?timeout=20ms`), parsed the same way by the endpoint and the requester.
//!
//! Invariant: a parsed duration is finite, non-negative and at most 60 s.

use std::time::Duration;

/// Parse a duration written `<number><unit>` with unit ns, us (or µs), ms or s; at most 60 s.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?);
    let v: f64 = num.parse().ok()?;
    let ns = match unit {
        "ns" => v,
        "us" | "µs" => v * 1e3,
        "ms" => v * 1e6,
        "s" => v * 1e9,
        _ => return None,
    };
    (ns.is_finite() && (0.0..=60e9).contains(&ns)).then(|| Duration::from_nanos(ns as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_their_unit_and_stay_bounded() {
        assert_eq!(parse_duration("200us"), Some(Duration::from_micros(200)));
        assert_eq!(parse_duration("1.5ms"), Some(Duration::from_micros(1500)));
        assert_eq!(parse_duration("2µs"), Some(Duration::from_micros(2)));
        assert_eq!(parse_duration("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("61s"), None);
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("5m"), None);
    }
}
