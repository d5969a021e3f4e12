//! The requester's counters and its latency histogram.
//!
//! Invariant: the histogram's buckets are log-linear (16 per power of two), so a quantile is
//! reported to within 1/16 (6.25 %) of the true value, for any latency from 1 ns to hours, in
//! a fixed 8 KiB.

use std::fmt;
use std::time::Duration;

const SUB: u32 = 16;
/// Exponents 4..=63 at 16 buckets each, after 16 unit buckets for 0..16 ns.
const BUCKETS: usize = 61 * SUB as usize;

/// Latencies in nanoseconds, log-linear buckets.
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
    max_ns: u64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            total: 0,
            max_ns: 0,
        }
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram")
            .field("total", &self.total)
            .field("p50", &self.quantile(0.5))
            .field("max_ns", &self.max_ns)
            .finish()
    }
}

fn bucket_of(ns: u64) -> usize {
    if ns < u64::from(SUB) {
        return ns as usize;
    }
    let exp = 63 - ns.leading_zeros(); // >= 4
    let sub = (ns >> (exp - 4)) & u64::from(SUB - 1);
    ((exp - 3) * SUB) as usize + sub as usize
}

/// Smallest value of bucket `b` and the first value past it.
fn bucket_bounds(b: usize) -> (u64, u64) {
    let b = b as u64;
    if b < u64::from(SUB) {
        return (b, b + 1);
    }
    let exp = b / u64::from(SUB) + 3;
    let sub = b % u64::from(SUB);
    let lo = (u64::from(SUB) + sub) << (exp - 4);
    (lo, lo.saturating_add(1 << (exp - 4)))
}

impl Histogram {
    pub fn record(&mut self, d: Duration) {
        let ns = d.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.counts[bucket_of(ns).min(BUCKETS - 1)] += 1;
        self.total += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The latency below which a fraction `q` of samples fall (upper edge of its bucket).
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        let want = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                let hi = bucket_bounds(b).1.min(self.max_ns.max(1));
                return Some(Duration::from_nanos(hi));
            }
        }
        Some(Duration::from_nanos(self.max_ns))
    }

    /// Non-empty buckets as (lower bound, upper bound, count), ascending: a CDF at bucket
    /// resolution.
    pub fn buckets(&self) -> impl Iterator<Item = (Duration, Duration, u64)> + '_ {
        self.counts.iter().enumerate().filter(|(_, &c)| c > 0).map(|(b, &c)| {
            let (lo, hi) = bucket_bounds(b);
            (Duration::from_nanos(lo), Duration::from_nanos(hi), c)
        })
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.max_ns = self.max_ns.max(other.max_ns);
    }
}

/// What the requester did.
#[derive(Debug, Clone, Default)]
pub struct DmaStats {
    /// PhysMem reads (ops) finished, successfully or not.
    pub reads: u64,
    /// Bytes delivered to callers.
    pub bytes: u64,
    /// MRd requests sent, retries included.
    pub requests: u64,
    /// Completion datagrams taken.
    pub completions: u64,
    /// Requests sent again after a timeout.
    pub retries: u64,
    /// Requests taken as lost before their timeout because a request sent after them was
    /// answered in full ([`super::rack`]); their missing bytes are among the retries.
    pub early: u64,
    /// Of those, requests answered after all (the path reordered more than the window).
    pub spurious: u64,
    /// Requests given up after all attempts.
    pub timeouts: u64,
    /// Completions whose tag had no request outstanding, or that did not fit it.
    pub stale: u64,
    /// Completions whose bytes were already received.
    pub duplicates: u64,
    /// Completions of requests already given up after a timeout (absorbed, never copied).
    pub late: u64,
    /// Requests cut short on a suspect network so that they end where no recent request on
    /// their tag could be mistaken for them (the rest asked by another request).
    pub cuts: u64,
    /// The latest a stale completion was seen to arrive after its request's send (a lower
    /// bound; see [`super::tags::TagPool::stale_seen`]).
    pub max_lateness: Duration,
    /// Requests abandoned and asked again because two copies of the same bytes differed.
    pub conflicts: u64,
    /// Datagrams that were not completions, were cut short, or came from elsewhere.
    pub malformed: u64,
    /// Requests answered Unsupported Request / Completer Abort / other error status.
    pub ur: u64,
    pub ca: u64,
    pub other_status: u64,
    /// Latency of each successful request, MRd sent to last completion received.
    pub latency: Histogram,
}

impl fmt::Display for DmaStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = |x| self.latency.quantile(x).map_or("-".to_string(), |d| format!("{:.1}us", d.as_secs_f64() * 1e6));
        write!(
            f,
            "reads {} ({} B) | requests {} cuts {} completions {} | retries {} (early {} spurious {}) timeouts {} | stale {} duplicates {} late {} (up to {:.1}ms) conflicts {} malformed {} | UR {} CA {} other {} | latency p50 {} p99 {}",
            self.reads, self.bytes, self.requests, self.cuts, self.completions, self.retries, self.early, self.spurious, self.timeouts,
            self.stale, self.duplicates, self.late, self.max_lateness.as_secs_f64() * 1e3, self.conflicts, self.malformed, self.ur, self.ca, self.other_status,
            q(0.5), q(0.99)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_line() {
        let mut prev_hi = 0;
        for b in 0..BUCKETS - 1 {
            let (lo, hi) = bucket_bounds(b);
            assert_eq!(lo, prev_hi, "bucket {b}");
            assert!(hi > lo);
            prev_hi = hi;
            assert_eq!(bucket_of(lo), b);
            assert_eq!(bucket_of(hi - 1), b);
        }
    }

    #[test]
    fn quantiles_within_a_sixteenth() {
        let mut h = Histogram::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        for (q, want_us) in [(0.5, 500.0), (0.99, 990.0), (1.0, 1000.0)] {
            let got = h.quantile(q).unwrap().as_secs_f64() * 1e6;
            assert!(got >= want_us && got <= want_us * 1.0625 + 1.0, "q{q}: {got}");
        }
        assert_eq!(h.count(), 1000);
        assert_eq!(h.buckets().map(|b| b.2).sum::<u64>(), 1000);
    }
}
