//! Tags: which one carries the next request, and when a used one may carry another.
//!
//! A completion is matched to its request by tag alone: NetTLP carries no nonce. A copy of
//! an earlier request's completion (a network duplicate, a duplicated MRd answered twice, or
//! the late answer to a request given up) whose Byte Count, Lower Address and length fit the
//! request now holding its tag is indistinguishable from that request's own answer: this
//! happens whenever the two requests end at the same address modulo 128, e.g. any two aligned
//! 512-byte reads. The checks of [`super::request`] cannot catch it; only not reusing the tag
//! while such a copy may still come can.
//!
//! **The lifetime assumption** (TCP's maximum segment lifetime, scaled to a PCIe link): every
//! copy of a completion reaches the requester's socket within `lifetime` of the send of the
//! MRd it answers, once the completer is processing requests sent after that MRd. `lifetime`
//! is `max(the target's lifetime option (default 5 ms), 4 x RTO)`, and for a request that
//! timed out at least twice the wait it was given; [`MAX_LIFETIME`] bounds it when the
//! completer answers nothing at all.
//!
//! **The drain point.** Time `drained` passed in is taken before a look at every socket
//! (level-triggered epoll) after which each readable socket was read until empty: every
//! datagram that arrived before `drained` has been taken or dropped. So our own stalls (the
//! requester descheduled while completions pile up) never count against the lifetime.
//!
//! **The rules.** A tag is in one of three states:
//! - *live*: a request holds it; only completions fitting that request reach a buffer;
//! - *held*: its request timed out (or saw conflicting copies), so copies may still come.
//!   Completions that fit the given-up request are absorbed (counted as late, copied nowhere).
//!   It goes back to the free list only at a drain point `drained >= e + lifetime`, where `e`
//!   is the latest of: its send, its last late completion, and the first answer to a request
//!   sent after it was given up (*evidence* the completer has moved past it; no evidence, no
//!   release before `send + MAX_LIFETIME`);
//! - *free*: first-in first-out over every configured tag, so a freed tag is reused as late as
//!   possible. While the network is *suspect* (a duplicate, a stale completion or a conflict
//!   was seen, and fewer than [`CLEAN_STREAK`] completions were taken since), a free tag is
//!   reused only at a drain point `drained >= last send + lifetime`; otherwise at once.
//!
//! **Why no wrong byte** (under the assumption): a request R2 taking tag T at drain point `d`
//! can meet a copy of an earlier request R1 on T only if that copy arrives after `d`. If T
//! was held or the network is suspect, `d >= send(R1) + lifetime` (and past the evidence that
//! R1 is behind the completer), so every copy of R1 had arrived before `d` and was taken then,
//! when R1 was no longer live: absorbed or dropped. If the network is not suspect and R1
//! completed, every byte of R1 arrived exactly once and no copy was ever seen twice in the
//! last [`CLEAN_STREAK`] completions: no copy is left unless the network duplicated one for
//! the first time in that streak and delayed it past the tag's turn in the FIFO. That copy is the
//! residual risk; the requester narrows it further (a repeat of received bytes with different
//! contents abandons the request and asks it again, see [`super::requester`]).
//!
//! Invariant: a tag is handed out only when free, and never while live or held; time
//! (`now`, `drained`) is passed in, never read here.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use emulator::wire::tlp::Completion;

use super::request::{Reassembly, Verdict};

/// The longest a given-up request's tag is held when the completer answers nothing newer.
pub const MAX_LIFETIME: Duration = Duration::from_secs(1);
/// How many completions in a row must fit without a duplicate, stale or conflicting one in
/// between before a suspect network is trusted again (counted in completions, not time, so a
/// stall never makes a network look clean).
pub const CLEAN_STREAK: u32 = 1024;

/// The times a decision is made with.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now: Instant,
    /// Every datagram that arrived before this has been taken (see the module doc).
    pub drained: Instant,
    /// The assumed longest lifetime of a completion.
    pub lifetime: Duration,
}

#[derive(Debug)]
struct Held {
    asm: Reassembly,
    sent: Instant,
    /// When it was given up.
    since: Instant,
    /// Its last late completion (or its send).
    last: Instant,
    /// When a request sent after `since` was first answered.
    evidence: Option<Instant>,
    /// At least this lifetime (twice the wait it was given).
    lifetime: Duration,
}

/// What became of a completion offered to a tag with no live request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absorbed {
    /// It fit the given-up request the tag is held for.
    Late,
    /// The tag is not held, or the completion does not fit its request (a duplicate, or
    /// garbage): the network is suspect.
    Stale,
}

#[derive(Debug)]
pub struct TagPool {
    free: VecDeque<u8>,
    live: [bool; 256],
    last_send: [Option<Instant>; 256],
    held: Vec<Option<Held>>,
    n_held: usize,
    /// Held tags still waiting for evidence.
    unproven: usize,
    /// Completions taken since the last anomaly (starts trusted).
    clean_streak: u32,
    next_parole: Option<Instant>,
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
            live: [false; 256],
            last_send: [None; 256],
            held: (0..256).map(|_| None).collect(),
            n_held: 0,
            unproven: 0,
            clean_streak: CLEAN_STREAK,
            next_parole: None,
        }
    }

    /// Whether a duplicate, stale or conflicting completion was seen in the last
    /// [`CLEAN_STREAK`] completions.
    pub fn suspect(&self) -> bool {
        self.clean_streak < CLEAN_STREAK
    }

    /// A completion that cannot be explained by one copy per request was seen.
    pub fn anomaly(&mut self) {
        self.clean_streak = 0;
    }

    /// When free tag `tag` may carry a request (None: at once).
    fn free_at(&self, tag: u8, c: &Clock) -> Option<Instant> {
        let sent = self.last_send[usize::from(tag)]?;
        self.suspect().then(|| sent + c.lifetime)
    }

    fn held_due(h: &Held, lifetime: Duration) -> Instant {
        let cap = h.sent + MAX_LIFETIME;
        match h.evidence {
            Some(ev) => (h.last.max(ev) + lifetime.max(h.lifetime)).min(cap),
            None => cap,
        }
    }

    /// Free the held tags that are due at `c.drained`.
    fn parole(&mut self, c: &Clock) {
        if self.n_held == 0 || self.next_parole.is_some_and(|n| c.drained < n) {
            return;
        }
        let mut next: Option<Instant> = None;
        for tag in 0..256 {
            let Some(h) = &self.held[tag] else { continue };
            let due = Self::held_due(h, c.lifetime);
            if due <= c.drained {
                if h.evidence.is_none() {
                    self.unproven -= 1;
                }
                self.held[tag] = None;
                self.n_held -= 1;
                self.free.push_back(tag as u8);
            } else {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        // evidence brings it forward (see answered)
        self.next_parole = next;
    }

    /// The next tag to use, if one may carry a request now; it becomes live, sent at `c.now`.
    pub fn acquire(&mut self, c: &Clock) -> Option<u8> {
        self.parole(c);
        let &tag = self.free.front()?;
        if self.free_at(tag, c).is_some_and(|at| c.drained < at) {
            return None;
        }
        self.free.pop_front();
        self.live[usize::from(tag)] = true;
        self.last_send[usize::from(tag)] = Some(c.now);
        Some(tag)
    }

    /// The tag [`TagPool::acquire`] would hand out next, without taking it (free now or not).
    pub fn peek(&self) -> Option<u8> {
        self.free.front().copied()
    }

    /// The request on `tag` got every byte (or an error status): the tag is free.
    pub fn release(&mut self, tag: u8) {
        if std::mem::replace(&mut self.live[usize::from(tag)], false) {
            self.free.push_back(tag);
        }
    }

    /// The request on `tag` was given up at `now` with `asm` received so far, after waiting
    /// `wait`: hold the tag.
    pub fn hold(&mut self, tag: u8, asm: Reassembly, now: Instant, wait: Duration) {
        let t = usize::from(tag);
        if !std::mem::replace(&mut self.live[t], false) {
            return;
        }
        let sent = self.last_send[t].unwrap_or(now);
        self.held[t] = Some(Held { asm, sent, since: now, last: sent, evidence: None, lifetime: wait * 2 });
        self.n_held += 1;
        self.unproven += 1;
    }

    /// A completion of a request sent at `sent` was taken at `now`: evidence for the tags
    /// given up before, and one more for the clean streak.
    pub fn answered(&mut self, sent: Instant, now: Instant) {
        self.clean_streak = self.clean_streak.saturating_add(1);
        if self.unproven == 0 {
            return;
        }
        for h in self.held.iter_mut().flatten() {
            if h.evidence.is_none() && sent >= h.since {
                h.evidence = Some(now);
                self.unproven -= 1;
                self.next_parole = None;
            }
        }
    }

    /// Offer a completion for a tag with no live request (IDs already checked), whose
    /// datagram carried `payload_present` bytes, arriving at `now`.
    pub fn absorb(&mut self, cpl: &Completion, payload_present: usize, now: Instant) -> Absorbed {
        let Some(h) = self.held[usize::from(cpl.tag)].as_mut() else { return Absorbed::Stale };
        match h.asm.accept(cpl, payload_present) {
            Verdict::Data { .. } | Verdict::Failed(_) => {
                h.last = h.last.max(now);
                Absorbed::Late
            }
            Verdict::Repeat { .. } | Verdict::Reject(_) => Absorbed::Stale,
        }
    }

    /// When a tag may next become usable without a completion arriving (for the wait).
    pub fn next_wake(&self, c: &Clock) -> Option<Instant> {
        let front = self.free.front().and_then(|&t| self.free_at(t, c));
        let held = self.held.iter().flatten().map(|h| Self::held_due(h, c.lifetime)).min();
        match (front, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether a free tag may carry a request at `c` (without paroling held ones).
    pub fn has_free(&self, c: &Clock) -> bool {
        self.free.front().is_some_and(|&t| self.free_at(t, c).is_none_or(|at| c.drained >= at))
    }

    pub fn held(&self) -> usize {
        self.n_held
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use emulator::wire::tlp::{completion_chunks, DeviceId, MemRequest};

    const fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    fn clock(t0: Instant, now: u64, drained: u64) -> Clock {
        Clock { now: t0 + us(now), drained: t0 + us(drained), lifetime: us(1000) }
    }

    fn cpls(tag: u8, addr: u64, len: u32) -> Vec<Completion> {
        let req = MemRequest::new(DeviceId(0x1a00), tag, addr, len).unwrap();
        completion_chunks(addr, len, 256).map(|c| Completion::for_chunk(&req, DeviceId(0), &c)).collect()
    }

    #[test]
    fn fifo_at_once_on_a_clean_network() {
        let t0 = Instant::now();
        let c = clock(t0, 0, 0);
        let mut p = TagPool::new(&[0, 1, 2, 1]);
        assert_eq!(p.acquire(&c), Some(0));
        assert_eq!(p.acquire(&c), Some(1));
        p.release(0);
        p.release(0); // a second release is ignored
        assert_eq!(p.acquire(&c), Some(2), "a freed tag waits behind the others");
        assert_eq!(p.acquire(&c), Some(0));
        assert_eq!(p.acquire(&c), None);
        assert_eq!(p.peek(), None);
    }

    #[test]
    fn suspect_network_rests_every_tag_a_lifetime_from_its_send() {
        let t0 = Instant::now();
        let mut p = TagPool::new(&[5, 6]);
        assert_eq!(p.acquire(&clock(t0, 0, 0)), Some(5));
        p.release(5);
        // a duplicate at 10 us: the network is suspect for a while
        p.anomaly();
        assert!(p.suspect());
        assert_eq!(p.acquire(&clock(t0, 20, 20)), Some(6), "never used: free at once");
        p.release(6);
        assert_eq!(p.acquire(&clock(t0, 900, 900)), None);
        assert_eq!(p.next_wake(&clock(t0, 900, 900)), Some(t0 + us(1000)));
        // what counts is the drain point, not the clock
        assert_eq!(p.acquire(&clock(t0, 1500, 999)), None);
        assert_eq!(p.acquire(&clock(t0, 1500, 1000)), Some(5));
        // however long nothing is answered, still suspect
        assert_eq!(p.acquire(&clock(t0, 1001, 1001)), None);
        // once enough completions fit in a row, at once again
        for _ in 0..CLEAN_STREAK {
            p.answered(t0, t0 + us(1001));
        }
        assert!(!p.suspect());
        assert_eq!(p.acquire(&clock(t0, 1001, 1001)), Some(6));
    }

    #[test]
    fn given_up_tags_wait_for_evidence_then_a_lifetime() {
        let t0 = Instant::now();
        let mut p = TagPool::new(&[3, 4]);
        assert_eq!(p.acquire(&clock(t0, 0, 0)), Some(3));
        p.hold(3, Reassembly::new(0x1000, 512), t0 + us(200), us(200));
        assert_eq!(p.held(), 1);
        // no evidence: held however long we wait, short of the cap
        assert_eq!(p.acquire(&clock(t0, 50_000, 50_000)), Some(4));
        assert_eq!(p.acquire(&clock(t0, 60_000, 60_000)), None);
        // a request sent before the timeout is no evidence; one sent after it is
        p.answered(t0 + us(100), t0 + us(60_000));
        assert_eq!(p.acquire(&clock(t0, 60_001, 60_001)), None);
        p.answered(t0 + us(50_000), t0 + us(60_000));
        // then a late completion moves the rest
        let cs = cpls(3, 0x1000, 512);
        assert_eq!(p.absorb(&cs[0], 4096, t0 + us(60_500)), Absorbed::Late);
        assert_eq!(p.absorb(&cs[0], 4096, t0 + us(60_600)), Absorbed::Stale, "a copy of a late one");
        assert_eq!(p.absorb(&cpls(4, 0x1000, 64)[0], 4096, t0), Absorbed::Stale, "a tag not held");
        assert_eq!(p.acquire(&clock(t0, 61_400, 61_400)), None);
        assert_eq!(p.acquire(&clock(t0, 61_500, 61_500)), Some(3));
        assert_eq!(p.held(), 0);
    }

    #[test]
    fn held_tags_rest_twice_their_wait_and_go_at_the_cap() {
        let t0 = Instant::now();
        let mut p = TagPool::new(&[9]);
        assert_eq!(p.acquire(&clock(t0, 0, 0)), Some(9));
        p.hold(9, Reassembly::new(0x1000, 512), t0 + us(4000), us(4000));
        p.answered(t0 + us(4000), t0 + us(4100));
        // the evidence, then twice the 4 ms wait (longer than the 1 ms lifetime)
        assert_eq!(p.acquire(&clock(t0, 12_099, 12_099)), None);
        assert_eq!(p.acquire(&clock(t0, 12_100, 12_100)), Some(9));
        p.hold(9, Reassembly::new(0x1000, 512), t0 + us(13_000), us(100));
        let cap = 12_100 + MAX_LIFETIME.as_micros() as u64;
        assert_eq!(p.acquire(&clock(t0, cap - 1, cap - 1)), None);
        assert_eq!(p.next_wake(&clock(t0, cap - 1, cap - 1)), Some(t0 + us(cap)));
        assert_eq!(p.acquire(&clock(t0, cap, cap)), Some(9));
    }
}
