//! Which tags are free to use.
//!
//! A completion is matched to its request by tag alone. A stale one (a duplicate, or the late
//! answer to a request already given up) is rejected when it does not fit the request now
//! holding its tag ([`super::request`]); but one that fits exactly (same Byte Count and Lower
//! Address, which happens when both requests end at the same address modulo 128, e.g. two
//! aligned 512-byte reads) is indistinguishable on the wire, since NetTLP carries no nonce.
//! The only defence is not to reuse a tag while such a completion may still be on its way:
//!
//! - tags are handed out first-in first-out, so a freed tag waits behind all the others;
//! - a tag freed by its completion rests at least the target's `reuse` time, a tag given up
//!   after a timeout at least twice what it waited;
//! - with `reuse=auto` it also rests twice the path's current delay: the larger of the
//!   slowest recent round trip and the age of the oldest request still outstanding. That
//!   second term grows while the endpoint or network stalls, so no tag freed before a stall
//!   is reused until well after it, when its late copies have arrived and been dropped.
//!
//! Like TCP's maximum segment lifetime this is an assumption about the network, not a proof;
//! a direct NetTLP link and loopback neither duplicate nor hold datagrams, so the default
//! `reuse` is 0 (tags are reused at once, in FIFO order).
//!
//! Invariant: a tag is never handed out twice without being released in between; time is
//! passed in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TagPool {
    free: VecDeque<u8>,
    /// (tag, released at, least rest), in release order.
    resting: VecDeque<(u8, Instant, Duration)>,
    in_use: [bool; 256],
}

impl TagPool {
    pub fn new(tags: &[u8]) -> TagPool {
        let mut free = VecDeque::with_capacity(tags.len());
        let mut seen = [false; 256];
        for &t in tags {
            if !std::mem::replace(&mut seen[usize::from(t)], true) {
                free.push_back(t);
            }
        }
        TagPool {
            free,
            resting: VecDeque::new(),
            in_use: [false; 256],
        }
    }

    /// Move every resting tag that has rested `max(its least rest, extra)` to the free list.
    fn wake(&mut self, now: Instant, extra: Duration) {
        let mut i = 0;
        while i < self.resting.len() {
            let (tag, at, rest) = self.resting[i];
            if now.saturating_duration_since(at) >= rest.max(extra) {
                self.resting.remove(i);
                self.free.push_back(tag);
            } else {
                i += 1;
            }
        }
    }

    /// The next free tag, if any; resting tags must also have rested `extra`.
    pub fn acquire(&mut self, now: Instant, extra: Duration) -> Option<u8> {
        if self.free.is_empty() {
            self.wake(now, extra);
        }
        let tag = self.free.pop_front()?;
        self.in_use[usize::from(tag)] = true;
        Some(tag)
    }

    /// The tag [`TagPool::acquire`] would hand out, without taking it.
    pub fn peek(&mut self, now: Instant, extra: Duration) -> Option<u8> {
        if self.free.is_empty() {
            self.wake(now, extra);
        }
        self.free.front().copied()
    }

    /// Give `tag` back at `now`; it rests at least `rest`. Releasing a tag not in use is
    /// ignored.
    pub fn release(&mut self, tag: u8, now: Instant, rest: Duration) {
        if !std::mem::replace(&mut self.in_use[usize::from(tag)], false) {
            return;
        }
        self.resting.push_back((tag, now, rest));
    }

    /// When the first resting tag becomes free given `extra` (None if none rests).
    pub fn next_wake(&self, extra: Duration) -> Option<Instant> {
        self.resting.iter().map(|&(_, at, rest)| at + rest.max(extra)).min()
    }

    /// Whether a tag is free right now without waking resting ones.
    pub fn has_free(&self) -> bool {
        !self.free.is_empty()
    }
}

/// The slowest round trip among recent ones: the maximum over the current and the previous
/// window of `WINDOW` samples.
#[derive(Debug, Clone, Default)]
pub struct RecentMax {
    cur: Duration,
    prev: Duration,
    n: u32,
}

impl RecentMax {
    const WINDOW: u32 = 1024;

    pub fn sample(&mut self, d: Duration) {
        self.cur = self.cur.max(d);
        self.n += 1;
        if self.n >= Self::WINDOW {
            self.prev = self.cur;
            self.cur = Duration::ZERO;
            self.n = 0;
        }
    }

    pub fn get(&self) -> Duration {
        self.cur.max(self.prev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Z: Duration = Duration::ZERO;

    #[test]
    fn fifo_and_rest() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut p = TagPool::new(&[0, 1, 2]);
        assert_eq!(p.acquire(t0, Z), Some(0));
        assert_eq!(p.acquire(t0, Z), Some(1));
        p.release(0, t0, Z);
        assert_eq!(p.acquire(t0, Z), Some(2), "a freed tag waits behind the others");
        assert_eq!(p.acquire(t0, Z), Some(0));
        assert_eq!(p.acquire(t0, Z), None);
        p.release(1, t0, ms(1));
        p.release(1, t0, Z); // double release ignored
        assert_eq!(p.acquire(t0, Z), None);
        assert_eq!(p.next_wake(Z), Some(t0 + ms(1)));
        // the extra rest (reuse=auto) can only lengthen it
        assert_eq!(p.next_wake(ms(5)), Some(t0 + ms(5)));
        assert_eq!(p.acquire(t0 + ms(1), ms(5)), None);
        assert_eq!(p.acquire(t0 + ms(1), Z), Some(1));
        assert_eq!(p.acquire(t0 + ms(1000), Z), None);
    }

    #[test]
    fn recent_max_forgets_old_windows() {
        let mut m = RecentMax::default();
        m.sample(Duration::from_millis(9));
        assert_eq!(m.get(), Duration::from_millis(9));
        for _ in 0..2 * RecentMax::WINDOW {
            m.sample(Duration::from_micros(10));
        }
        assert_eq!(m.get(), Duration::from_micros(10));
    }
}
