//! Retransmission timeout: how long to wait for a request's completions before asking again.
//!
//! TCP's estimator (RFC 6298) on request round trips: `srtt` and `rttvar` smoothed from
//! samples of requests answered on their first attempt (Karn: a retried request's round trip
//! is ambiguous), `rto = max(floor, srtt + 4 * rttvar)`, doubled for every earlier attempt of
//! the same request, never above [`MAX_RTO`]. The floor is the target's `timeout`. A slow or
//! overloaded endpoint thus gets more time instead of a retry storm that would make it slower
//! still (and fill the network with completions of requests already given up).
//!
//! Invariant: `timeout_for(k)` is in `floor..=MAX_RTO` and grows with `k`; time is passed in.

use std::time::Duration;

/// The longest a request waits for its completions.
pub const MAX_RTO: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct Rto {
    floor: Duration,
    srtt: Option<Duration>,
    rttvar: Duration,
}

impl Rto {
    pub fn new(floor: Duration) -> Rto {
        Rto {
            floor: floor.min(MAX_RTO),
            srtt: None,
            rttvar: Duration::ZERO,
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
                let diff = if s > rtt { s - rtt } else { rtt - s };
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((s * 7 + rtt) / 8);
            }
        }
    }

    /// The current estimate for a first attempt.
    pub fn rto(&self) -> Duration {
        let est = self.srtt.map_or(Duration::ZERO, |s| s + self.rttvar * 4);
        est.max(self.floor).min(MAX_RTO)
    }

    /// How long attempt number `attempts` (0 = first) of a request may wait.
    pub fn timeout_for(&self, attempts: u32) -> Duration {
        self.rto()
            .checked_mul(1u32 << attempts.min(16))
            .unwrap_or(MAX_RTO)
            .min(MAX_RTO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_round_trips_above_the_floor() {
        let us = Duration::from_micros;
        let mut r = Rto::new(us(500));
        assert_eq!(r.rto(), us(500));
        for _ in 0..100 {
            r.sample(us(20));
        }
        assert_eq!(r.rto(), us(500), "never below the floor");
        for _ in 0..100 {
            r.sample(us(3000));
        }
        assert!(r.rto() >= us(3000) && r.rto() < us(4000), "{:?}", r.rto());
        assert!(r.timeout_for(1) >= r.rto() * 2 || r.timeout_for(1) == MAX_RTO);
        assert_eq!(r.timeout_for(30), MAX_RTO);
        r.sample(Duration::from_secs(100));
        assert_eq!(r.rto(), MAX_RTO);
    }
}
