//! Loss detection by later answers: a request is taken as lost, and its missing bytes asked
//! again, as soon as a request sent after it was answered in full and a reordering window
//! has passed (RACK, RFC 8985, with requests for segments), instead of waiting out its
//! retransmission timeout ([`super::rto`]).
//!
//! A completer answers requests in the order it receives them, so when a later request's
//! answer is complete, the earlier one's should have come too: at 20 % loss about half of
//! all 512-byte reads lose a completion, and without this each of them held one of the
//! requests in flight for a whole timeout (several round trips of a pipelined batch).
//!
//! - `newest`: the latest-sent request answered in full, its send time and round trip;
//! - a request sent strictly before `newest` is lost at `sent + newest.rtt + window`
//!   (requests sent in one batch share a send time, so never judge one another);
//! - `window` is `max(MIN_WINDOW, min_rtt / 4)`, doubled while a request given up this way
//!   is answered after all (a spurious loss: the path reorders), at least twice the lateness
//!   seen, never above [`super::rto::MAX_RTO`]; it halves again after [`CALM`] requests
//!   answered with no spurious loss.
//!
//! A wrong guess costs one extra request and a held tag (its late answer is absorbed, see
//! [`super::tags`]), never a wrong byte. Only the timeout backs off (a silent path); a loss
//! detected here does not, since a later answer shows the path is alive.
//!
//! Invariant: `lost_at(sent)` is `None` unless a request sent strictly after `sent` was
//! answered in full; `window()` is in `MIN_WINDOW..=MAX_RTO`; time is passed in.

use std::time::{Duration, Instant};

use super::rto::MAX_RTO;

/// The least reordering window: a completer serving several ports may answer a request of
/// one port before an earlier one of another, microseconds apart.
pub const MIN_WINDOW: Duration = Duration::from_micros(20);
/// Requests answered in full without a spurious loss before the window halves.
pub const CALM: u32 = 1024;

#[derive(Debug, Clone)]
pub struct Rack {
    /// The latest-sent request answered in full: its send time and round trip.
    newest: Option<(Instant, Duration)>,
    min_rtt: Option<Duration>,
    /// Grown by spurious losses; at least the base window.
    grown: Duration,
    calm: u32,
    /// `newest` or the window changed since [`Rack::take_changed`].
    changed: bool,
}

impl Default for Rack {
    fn default() -> Self {
        Rack {
            newest: None,
            min_rtt: None,
            grown: Duration::ZERO,
            calm: 0,
            changed: false,
        }
    }
}

impl Rack {
    /// A request sent at `sent` was answered in full after `rtt`.
    pub fn answered(&mut self, sent: Instant, rtt: Duration) {
        if self.newest.is_none_or(|(s, _)| sent >= s) {
            self.newest = Some((sent, rtt));
            self.changed = true;
        }
        self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
        self.calm += 1;
        if self.calm >= CALM {
            self.calm = 0;
            self.grown /= 2;
        }
    }

    /// The reordering window.
    pub fn window(&self) -> Duration {
        let base = self.min_rtt.map_or(MIN_WINDOW, |m| (m / 4).max(MIN_WINDOW));
        base.max(self.grown).min(MAX_RTO)
    }

    /// When a request sent at `sent`, not yet answered in full, is taken as lost (None: not
    /// until a request sent after it is answered).
    pub fn lost_at(&self, sent: Instant) -> Option<Instant> {
        let (newest, rtt) = self.newest?;
        (sent < newest).then(|| sent + rtt + self.window())
    }

    /// A request taken as lost at `at` was answered after all at `now`: the path reorders
    /// by at least `now - at` more than the window allowed.
    pub fn spurious(&mut self, at: Instant, now: Instant) {
        let excess = now.saturating_duration_since(at);
        self.grown = (self.window() * 2)
            .max((self.window() + excess) * 2)
            .min(MAX_RTO);
        self.calm = 0;
        self.changed = true;
    }

    /// Whether the time a request is taken as lost may have changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn only_requests_sent_before_a_full_answer_are_judged() {
        let t0 = Instant::now();
        let mut r = Rack::default();
        assert_eq!(r.lost_at(t0), None, "nothing answered yet");
        r.answered(t0 + us(10), us(30));
        assert_eq!(
            r.lost_at(t0 + us(10)),
            None,
            "the same batch never judges itself"
        );
        assert_eq!(r.lost_at(t0 + us(11)), None, "sent later");
        assert_eq!(r.lost_at(t0), Some(t0 + us(30) + MIN_WINDOW));
        // an older request answered late does not move the reference back
        r.answered(t0, us(500));
        assert_eq!(
            r.lost_at(t0 + us(5)),
            Some(t0 + us(5) + us(30) + MIN_WINDOW)
        );
    }

    #[test]
    fn the_window_follows_the_least_round_trip_and_grows_on_spurious_losses() {
        let t0 = Instant::now();
        let mut r = Rack::default();
        r.answered(t0, us(400));
        assert_eq!(r.window(), us(100), "a quarter of the least round trip");
        r.spurious(t0, t0 + us(1000));
        assert_eq!(
            r.window(),
            us(2200),
            "twice the window plus the lateness seen"
        );
        for _ in 0..40 {
            r.spurious(t0, t0 + us(100_000));
        }
        assert_eq!(r.window(), MAX_RTO, "capped");
        for _ in 0..CALM * 20 {
            r.answered(t0, us(400));
        }
        assert_eq!(r.window(), us(100), "calm brings it back to the base");
    }
}
