//! Retransmission timeout: how long to wait for a request's completions before asking again.
//!
//! TCP's estimator (RFC 6298) on request round trips, in microseconds rather than seconds:
//! - `srtt` and `rttvar` are smoothed from requests answered on their first attempt (Karn: a
//!   retried request's round trip is ambiguous);
//! - `rto = max(floor, srtt + max(G, 4 * rttvar))` with G = [`GRANULARITY`] (RFC 6298's clock
//!   granularity; here the cost of a thread wake-up, so a steady path does not retry on one
//!   slow wake-up); before the first sample it is [`INITIAL_RTO`];
//! - attempt `k` of a request waits `rto * 2^max(k, backoff)`, never above [`MAX_RTO`] (not
//!   `2^(k + backoff)`: a request alone in flight that is lost times out in silence, which
//!   grows `backoff` too, and counting both doubled its wait twice per loss: at 20 % loss a
//!   listing's small dependent reads waited milliseconds for bytes lost twice in a row);
//! - `backoff` (RFC 6298 5.5) grows by one when a request times out that was sent after the
//!   last growth (so once per round of time-outs, not once per request of the round), and
//!   returns to 0 with the next valid sample, or as soon as a first attempt is answered at
//!   all within its wait (the path is alive: what is missing was lost, not slow).
//!
//! A slow or overloaded endpoint thus gets more time, not a retry storm that would make it
//! slower still: while every request times out, no sample arrives and the wait keeps
//! doubling until requests are answered within it.
//!
//! Invariant: `timeout_for(k)` is in `floor..=MAX_RTO` and never shrinks as `k` grows; time
//! is passed in.

use std::time::{Duration, Instant};

/// The longest a request waits for its completions.
pub const MAX_RTO: Duration = Duration::from_millis(250);
/// RFC 6298's G: the least variance term.
pub const GRANULARITY: Duration = Duration::from_micros(50);
/// The wait before any round trip was measured (a direct NetTLP link answers in ~12 us).
pub const INITIAL_RTO: Duration = Duration::from_millis(1);

#[derive(Debug, Clone)]
pub struct Rto {
    floor: Duration,
    srtt: Option<Duration>,
    rttvar: Duration,
    backoff: u32,
    /// When `backoff` last grew.
    backed_off_at: Option<Instant>,
}

impl Rto {
    pub fn new(floor: Duration) -> Rto {
        Rto {
            floor: floor.min(MAX_RTO),
            srtt: None,
            rttvar: Duration::ZERO,
            backoff: 0,
            backed_off_at: None,
        }
    }

    /// Take the round trip of a request answered on its first attempt.
    pub fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(s) => {
                let diff = s.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((s * 7 + rtt) / 8);
            }
        }
        self.backoff = 0;
    }

    /// A first attempt was answered (in part) within its wait.
    pub fn answered(&mut self) {
        self.backoff = 0;
    }

    /// A request sent at `sent` timed out at `now`.
    pub fn timed_out(&mut self, sent: Instant, now: Instant) {
        if self.backed_off_at.is_none_or(|at| sent >= at) {
            self.backoff = (self.backoff + 1).min(16);
            self.backed_off_at = Some(now);
        }
    }

    /// The path's own estimate, `srtt + max(G, 4 * rttvar)`, without the floor or back-off.
    pub fn estimate(&self) -> Duration {
        self.srtt.map_or(INITIAL_RTO, |s| s + (self.rttvar * 4).max(GRANULARITY)).min(MAX_RTO)
    }

    /// The current estimate for a first attempt, without back-off.
    pub fn rto(&self) -> Duration {
        self.estimate().max(self.floor).min(MAX_RTO)
    }

    /// How long attempt number `attempts` (0 = first) of a request may wait.
    pub fn timeout_for(&self, attempts: u32) -> Duration {
        let k = attempts.max(self.backoff).min(20);
        self.rto().checked_mul(1u32 << k).unwrap_or(MAX_RTO).min(MAX_RTO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn follows_the_round_trips_above_the_floor() {
        let mut r = Rto::new(us(100));
        assert_eq!(r.rto(), INITIAL_RTO);
        for _ in 0..100 {
            r.sample(us(11));
        }
        assert_eq!(r.rto(), us(100), "never below the floor");
        for _ in 0..100 {
            r.sample(us(3000));
        }
        assert!(r.rto() >= us(3000) && r.rto() < us(4000), "{:?}", r.rto());
        assert!(r.timeout_for(1) >= r.rto() * 2 || r.timeout_for(1) == MAX_RTO);
        assert_eq!(r.timeout_for(30), MAX_RTO);
        r.sample(Duration::from_secs(100));
        assert_eq!(r.rto(), MAX_RTO);
    }

    #[test]
    fn microseconds_when_the_path_is_fast() {
        let mut r = Rto::new(us(5));
        for k in 0..200 {
            r.sample(us(10 + k % 3));
        }
        assert!(r.rto() >= us(60) && r.rto() < us(70), "srtt + G: {:?}", r.rto());
        assert!(r.timeout_for(1) >= r.rto() * 2 && r.timeout_for(2) >= r.rto() * 4);
    }

    /// A slow endpoint: every request times out until the wait exceeds its round trip. One
    /// round of time-outs doubles the wait once, however many requests it held; the next
    /// valid sample ends the back-off.
    #[test]
    fn a_round_of_timeouts_backs_off_once() {
        let t0 = Instant::now();
        let mut r = Rto::new(us(50));
        for _ in 0..100 {
            r.sample(us(20));
        }
        let base = r.rto();
        // 16 requests sent at t0 all time out at t0 + base
        for _ in 0..16 {
            r.timed_out(t0, t0 + base);
        }
        assert_eq!(r.timeout_for(0), base * 2);
        // the next round, sent after the back-off, times out too
        let t1 = t0 + base + us(1);
        for _ in 0..16 {
            r.timed_out(t1, t1 + base * 2);
        }
        assert_eq!(r.timeout_for(0), base * 4);
        assert_eq!(r.timeout_for(1), base * 4, "one doubling per loss, not two");
        assert_eq!(r.timeout_for(3), base * 8);
        // a late answer to a request sent before the last back-off changes nothing
        r.timed_out(t0, t1 + base * 3);
        assert_eq!(r.timeout_for(0), base * 4);
        // rounds of time-outs never push past the cap
        for k in 0..40u32 {
            let t = t1 + Duration::from_secs(u64::from(k) + 1);
            r.timed_out(t, t);
        }
        assert_eq!(r.timeout_for(0), MAX_RTO);
        r.sample(us(20));
        assert_eq!(r.timeout_for(0), base);
    }
}
