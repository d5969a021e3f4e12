//! Which tags are free to use.
//!
//! A completion is matched to its request by tag. A stale one (a duplicate, or the late answer
//! to a request already given up) is rejected when it does not fit the request now holding its
//! tag ([`super::request`]); but one that fits exactly (same Byte Count and Lower Address,
//! which happens when both requests end at the same address modulo 128, e.g. two aligned
//! 512-byte reads) is indistinguishable on the wire, since NetTLP carries no nonce. The defence
//! is not to reuse a tag while such a completion may still be on its way:
//!
//! - the requester uses all 256 tags by default, handed out first-in first-out, so a freed tag
//!   is used again only after every other free tag (255 requests later);
//! - a tag freed by its completion rests at least the target's `reuse` time (default 0);
//! - a tag whose request timed out is held by [`super::quarantine`] until its late
//!   completions have arrived or newer requests have been answered, then released here.
//!
//! Like TCP's maximum segment lifetime this is an assumption about the network, not a proof:
//! a copy delayed past 255 later requests (and, for a timed-out request, past the answers to
//! newer ones) meets its tag's next request, and only the checks of [`super::request`] stand
//! between it and the caller's buffer. The earlier `reuse=auto` (every freed tag resting twice
//! the slowest recent round trip) is gone: on a loaded machine one slow round trip made every
//! tag rest for tens of milliseconds and starved the pool.
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

    /// Move every resting tag that has rested its least rest to the free list.
    fn wake(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.resting.len() {
            let (tag, at, rest) = self.resting[i];
            if now.saturating_duration_since(at) >= rest {
                self.resting.remove(i);
                self.free.push_back(tag);
            } else {
                i += 1;
            }
        }
    }

    /// The next free tag, if any.
    pub fn acquire(&mut self, now: Instant) -> Option<u8> {
        if self.free.is_empty() {
            self.wake(now);
        }
        let tag = self.free.pop_front()?;
        self.in_use[usize::from(tag)] = true;
        Some(tag)
    }

    /// The tag [`TagPool::acquire`] would hand out, without taking it.
    pub fn peek(&mut self, now: Instant) -> Option<u8> {
        if self.free.is_empty() {
            self.wake(now);
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

    /// When the first resting tag becomes free (None if none rests).
    pub fn next_wake(&self) -> Option<Instant> {
        self.resting.iter().map(|&(_, at, rest)| at + rest).min()
    }

    /// Whether a tag is free right now without waking resting ones.
    pub fn has_free(&self) -> bool {
        !self.free.is_empty()
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
        assert_eq!(p.acquire(t0), Some(0));
        assert_eq!(p.acquire(t0), Some(1));
        p.release(0, t0, Z);
        assert_eq!(p.acquire(t0), Some(2), "a freed tag waits behind the others");
        assert_eq!(p.acquire(t0), Some(0));
        assert_eq!(p.acquire(t0), None);
        p.release(1, t0, ms(1));
        p.release(1, t0, Z); // double release ignored
        assert_eq!(p.acquire(t0), None);
        assert_eq!(p.next_wake(), Some(t0 + ms(1)));
        assert_eq!(p.acquire(t0 + ms(1)), Some(1));
        assert_eq!(p.acquire(t0 + ms(1000)), None);
    }
}
