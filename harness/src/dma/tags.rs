//! Tags: which one carries the next request, and when a used one may carry another.
//!
//! A completion is matched to its request by tag alone: NetTLP carries no nonce. A copy of
//! an earlier request's completion (a network duplicate, a duplicated MRd answered twice, or
//! the late answer to a request given up) fits a later request on its tag exactly when the
//! two requests end at different addresses that agree modulo 128: Byte Count and Lower
//! Address then name a byte of the later request ([`super::request`] checks everything else),
//! e.g. any two aligned 512-byte reads. Such two requests *alias*. (With equal ends the copy's
//! bytes land at their own addresses; with other ends it is dropped as stale.)
//!
//! **Why not a lifetime alone.** The first version rested a tag for a fixed lifetime (5 ms)
//! after its send and trusted every copy to arrive within it. Under load it failed: the
//! emulator's thread, descheduled for longer, sent a copy it held for reordering right after
//! the first completion of the next request on the tag, which it fit (issue 10). Stale copies
//! in the dma tests arrive up to 9 ms after their request's send on a loaded 2-core box
//! ([`TagPool::stale_seen`] measures it; `DmaStats::max_lateness`). No fixed time is safe when
//! the completer can be descheduled; and a lifetime raised to the lateness seen (evaluated)
//! drives the requester to a crawl after one stall, while a copy later than any bound still
//! fits. So the defence is by address, and time only orders requests on one tag.
//!
//! **The rules.** A tag is in one of three states:
//! - *live*: a request holds it; only completions fitting that request reach a buffer;
//! - *held*: its request timed out (or saw conflicting copies), so copies may still come.
//!   Completions that fit the given-up request are absorbed (counted as late, copied nowhere).
//!   It goes back to the free list only at a drain point `drained >= e + lifetime`, where `e`
//!   is the latest of: its send, its last late completion, and the first answer to a request
//!   sent after it was given up or the late answer that completes its own request, whichever
//!   comes first (neither, no release before `send + MAX_LIFETIME`);
//! - *free*: first-in first-out over every configured tag, so a freed tag is reused as late as
//!   possible. On a *trusted* network (no duplicate, stale or conflicting completion in the
//!   last [`CLEAN_STREAK`] taken; a requester starts suspect) the front tag at once. On a
//!   *suspect* one, a tag rests until a drain point `drained >= last send + lifetime / 2`
//!   ([`REST_DIVISOR`]), and then
//!   carries a request only if the request aliases none of the tag's last [`HISTORY`] requests:
//!   the first rested tag for which that holds; else the request is cut short by a few DWs to an
//!   end that aliases none (the rest goes to the next request); a request too short to cut
//!   waits for an alias [`ALIAS_LIFETIMES`] lifetimes old (the one time-based escape).
//!
//! `lifetime` is `max(the target's lifetime option (default 5 ms), 4 x RTO)`. Drain points
//! (`drained`) are taken before a look at every socket after which each readable socket was
//! read until empty, so our own stalls never count against a rest.
//!
//! **Why no wrong byte on a suspect network.** A copy of request R on tag T can reach a buffer
//! only while a request aliasing R holds T. The next [`HISTORY`] requests on T alias neither R
//! nor (being cut when needed) one another, so it takes a copy that arrives after the
//! ([`HISTORY`] + 1)-th request after R on T was sent. Requests on T go out one at a time, each
//! after its predecessor was answered (or given up, held and released) and after resting half
//! a lifetime; they go through one port, which a completer serves in order. With the emulator's
//! fault injector (a copy released at most `delay + 500 us` after its push, or with the next
//! datagram pushed; released in order), the copies of R are sent before the answer to the
//! fourth request after R on T however long either side is descheduled: a copy may meet R+1 ..
//! R+4 on T, never R+5, and none of those alias R. The assumption, for any completer: *a copy
//! does not outlive [`HISTORY`] (8) later requests on its tag, each half a lifetime apart* (4
//! lifetimes in all, 20 ms by default). The first version kept 4 requests a whole lifetime
//! apart: the same span, but a suspect requester could then use each tag only every 5 ms,
//! 51 k requests/s over 256 tags, a third of what a fault-free path carries (issue 10).
//!
//! **Residual risks.** (1) On a trusted network a first duplicate, delayed past the next
//! aliasing request on its tag, fits it (once seen, the network is suspect again); a repeat of
//! received bytes with other contents abandons the request and asks it again, see
//! [`super::requester`]. (2) A request too short to cut that aliases all free tags goes out
//! when the aliases are [`ALIAS_LIFETIMES`] lifetimes old: a copy older than that (40 ms by
//! default) that is no longer than it fits. (3) A completer that holds a copy across more than
//! [`HISTORY`] answered requests on its tag.
//!
//! Invariant: a tag is handed out only when free, and never while live or held; time
//! (`now`, `drained`) is passed in, never read here.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use emulator::wire::tlp::Completion;

use super::request::{Reassembly, Verdict};

/// The longest a given-up request's tag is held when the completer answers nothing newer.
pub const MAX_LIFETIME: Duration = Duration::from_secs(1);
/// How many earlier requests on a tag a new request on it must not alias (see the module doc).
pub const HISTORY: usize = 8;
/// On a suspect network a tag rests this fraction of a lifetime after its last send, so its
/// last [`HISTORY`] requests span at least `HISTORY / REST_DIVISOR` (4) lifetimes.
pub const REST_DIVISOR: u32 = 2;
/// An earlier request stops blocking aliases on its tag this many lifetimes after its send
/// (so a workload whose every request aliases still makes progress).
pub const ALIAS_LIFETIMES: u32 = 8;
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

/// An earlier request on a tag: where it ended and when it was sent.
#[derive(Debug, Clone, Copy)]
struct Past {
    end: u64,
    sent: Instant,
}

/// Whether a completion of a request ending at `a` can fit a request ending at `b` at other
/// addresses: Byte Count and Lower Address fit exactly when the ends agree modulo 128
/// ([`super::request`]); with equal ends the bytes land at their own addresses.
pub fn aliases(a: u64, b: u64) -> bool {
    a != b && (a ^ b) & 0x7f == 0
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
    /// The last [`HISTORY`] requests on each tag, newest at `past_next[tag] - 1`.
    past: Vec<[Option<Past>; HISTORY]>,
    past_next: [u8; 256],
    /// The latest a completion was seen to arrive after its request's send (a lower bound:
    /// measured from the drain point before it, to the newest earlier send on its tag).
    lateness: Duration,
    /// Completions taken (for the lateness decay).
    taken: u32,
    held: Vec<Option<Held>>,
    n_held: usize,
    /// Held tags still waiting for evidence.
    unproven: usize,
    /// Completions taken since the last anomaly (starts suspect: trust is earned).
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
            past: vec![[None; HISTORY]; 256],
            past_next: [0; 256],
            lateness: Duration::ZERO,
            taken: 0,
            held: (0..256).map(|_| None).collect(),
            n_held: 0,
            unproven: 0,
            clean_streak: 0,
            next_parole: None,
        }
    }

    /// Whether a duplicate, stale or conflicting completion was seen in the last
    /// [`CLEAN_STREAK`] completions.
    pub fn suspect(&self) -> bool {
        self.clean_streak < CLEAN_STREAK
    }

    /// A completion on `tag` that fits no request of ours arrived after the drain point
    /// `drained`: it answers an earlier request on the tag (the newest one if the tag is not
    /// `live`, else the one before), so it is at least this late.
    pub fn stale_seen(&mut self, tag: u8, live: bool, drained: Instant) {
        let t = usize::from(tag);
        let newest = usize::from(self.past_next[t]) + HISTORY - 1;
        let k = if live { newest - 1 } else { newest };
        if let Some(p) = self.past[t][k % HISTORY] {
            self.lateness = self.lateness.max(drained.saturating_duration_since(p.sent));
        }
    }

    /// The lateness seen (see [`TagPool::stale_seen`]); halved every [`CLEAN_STREAK`]
    /// completions taken, so one stall does not slow the rest of a long run.
    pub fn lateness(&self) -> Duration {
        self.lateness
    }

    /// A completion that cannot be explained by one copy per request was seen.
    pub fn anomaly(&mut self) {
        self.clean_streak = 0;
    }

    /// When free tag `tag` may carry a request (None: at once).
    fn free_at(&self, tag: u8, c: &Clock) -> Option<Instant> {
        let sent = self.last_send[usize::from(tag)]?;
        self.suspect().then(|| sent + c.lifetime / REST_DIVISOR)
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

    /// If a request ending at `end` on `tag` would alias one of its last [`HISTORY`]
    /// requests: when the last such alias expires ([`ALIAS_LIFETIMES`] lifetimes after its
    /// send).
    fn alias_until(&self, tag: u8, end: u64, c: &Clock) -> Option<Instant> {
        let expiry = c.lifetime * ALIAS_LIFETIMES;
        self.past[usize::from(tag)].iter().flatten().filter(|p| aliases(p.end, end)).map(|p| p.sent + expiry).max()
    }

    /// Take free tag number `i` of the FIFO for a request ending at `end`.
    fn take(&mut self, i: usize, end: u64, c: &Clock) -> u8 {
        let tag = self.free.remove(i).expect("an index into the free FIFO");
        let t = usize::from(tag);
        self.live[t] = true;
        self.last_send[t] = Some(c.now);
        let k = usize::from(self.past_next[t]) % HISTORY;
        self.past[t][k] = Some(Past { end, sent: c.now });
        self.past_next[t] = ((k + 1) % HISTORY) as u8;
        tag
    }

    /// A tag for a request of `len` bytes at `addr`, sent at `c.now`, and how many of those
    /// bytes it may ask for (all of them, or fewer: the rest is for another request). The tag
    /// becomes live.
    ///
    /// On a trusted network the front of the FIFO, at once. On a suspect one, the first free
    /// tag that rested a lifetime and whose last [`HISTORY`] requests the request does not
    /// alias; failing that, the request is cut short (by a multiple of 4 bytes) to an end that
    /// aliases none of them on the first rested tag; failing that (it is too short to cut), a
    /// rested tag whose aliases are all [`ALIAS_LIFETIMES`] lifetimes old; failing that,
    /// nothing: the error is the drain point at which to ask again (a tag done resting, an
    /// alias expired, a held tag due), if any (else: wait for a completion or a time-out).
    pub fn acquire(&mut self, c: &Clock, addr: u64, len: u32) -> Result<(u8, u32), Option<Instant>> {
        self.parole(c);
        let (i, n) = self.choose(c, addr, len)?;
        Ok((self.take(i, addr + u64::from(n), c), n))
    }

    /// The tag [`TagPool::acquire`] would hand out for the same request at the same drain
    /// point, without taking it.
    pub fn peek(&mut self, c: &Clock, addr: u64, len: u32) -> Option<u8> {
        self.parole(c);
        self.choose(c, addr, len).ok().map(|(i, _)| self.free[i])
    }

    /// [`TagPool::acquire`]'s choice: an index into the free FIFO and the bytes granted.
    fn choose(&self, c: &Clock, addr: u64, len: u32) -> Result<(usize, u32), Option<Instant>> {
        let end = addr + u64::from(len);
        let mut wake = self.held_wake(c);
        if self.free.is_empty() {
            return Err(wake);
        }
        if !self.suspect() {
            return Ok((0, len));
        }
        let has_rested = |tag: u8| !self.free_at(tag, c).is_some_and(|at| c.drained < at);
        // 1. a tag that rested a lifetime and none of whose last requests the request aliases:
        // the first in FIFO order (usually the front one, free the longest), found without
        // looking at the others
        if let Some(i) = self.free.iter().position(|&tag| has_rested(tag) && self.alias_until(tag, end, c).is_none()) {
            return Ok((i, len));
        }
        // the free tags that rested a lifetime, in FIFO order, and when the others will have
        let mut rested = Vec::with_capacity(self.free.len());
        for (i, &tag) in self.free.iter().enumerate() {
            match self.free_at(tag, c).filter(|&at| c.drained < at) {
                Some(at) => wake = Some(wake.map_or(at, |w| w.min(at))),
                None => rested.push(i),
            }
        }
        // 2. cut short on the first: ends below `end`, DW-aligned, a DW apart; HISTORY + 1 of
        // them have distinct residues modulo 128, so one aliases none of the tag's requests
        if let Some(&i) = rested.first() {
            let tag = self.free[i];
            let cut = if end & 3 == 0 { end.saturating_sub(4) } else { end & !3 };
            let found = (0..=HISTORY as u64)
                .map(|k| cut.saturating_sub(4 * k))
                .take_while(|&e| e > addr)
                .find(|&e| self.alias_until(tag, e, c).is_none());
            if let Some(e) = found {
                return Ok((i, (e - addr) as u32));
            }
        }
        // 3. too short to cut: a tag whose aliases are all old enough (the liveness escape)
        for &i in &rested {
            match self.alias_until(self.free[i], end, c) {
                Some(until) if c.drained < until => wake = Some(wake.map_or(until, |w| w.min(until))),
                _ => return Ok((i, len)),
            }
        }
        Err(wake)
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
        self.taken = self.taken.wrapping_add(1);
        if self.taken.is_multiple_of(CLEAN_STREAK) {
            self.lateness /= 2;
        }
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
        let complete = match h.asm.accept(cpl, payload_present) {
            Verdict::Data { done, .. } => done,
            Verdict::Failed(_) => true,
            Verdict::Repeat { .. } | Verdict::Reject(_) => return Absorbed::Stale,
        };
        h.last = h.last.max(now);
        // Answered in full, late: the completer is done with it, as an answer to a later
        // request would show. Without this, a completer silent for a few round trips made
        // every tag held at once, with no tag left to ask anything that could free one: the
        // requester waited out MAX_LIFETIME (1 s) although every late answer had come.
        if complete && h.evidence.is_none() {
            h.evidence = Some(now);
            self.unproven -= 1;
            self.next_parole = None;
        }
        Absorbed::Late
    }

    /// When the next held tag is due.
    fn held_wake(&self, c: &Clock) -> Option<Instant> {
        if self.n_held == 0 {
            return None; // the common case: no scan of 256 slots per request
        }
        self.held.iter().flatten().map(|h| Self::held_due(h, c.lifetime)).min()
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

    /// A tag for a 4-byte request ending at 0x1004 (requests with equal ends never alias).
    fn acq(p: &mut TagPool, c: &Clock) -> Option<u8> {
        p.acquire(c, 0x1000, 4).ok().map(|(tag, len)| {
            assert_eq!(len, 4);
            tag
        })
    }

    fn trust(p: &mut TagPool) {
        let t = Instant::now();
        for _ in 0..CLEAN_STREAK {
            p.answered(t, t);
        }
        assert!(!p.suspect());
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
        trust(&mut p);
        assert_eq!(acq(&mut p, &c), Some(0));
        assert_eq!(acq(&mut p, &c), Some(1));
        p.release(0);
        p.release(0); // a second release is ignored
        assert_eq!(acq(&mut p, &c), Some(2), "a freed tag waits behind the others");
        assert_eq!(acq(&mut p, &c), Some(0));
        assert_eq!(acq(&mut p, &c), None);
        assert_eq!(p.peek(&c, 0x1000, 4), None);
    }

    #[test]
    fn suspect_network_rests_every_tag_half_a_lifetime_from_its_send() {
        let t0 = Instant::now();
        let mut p = TagPool::new(&[5, 6]);
        trust(&mut p);
        assert_eq!(acq(&mut p, &clock(t0, 0, 0)), Some(5));
        p.release(5);
        // a duplicate at 10 us: the network is suspect for a while
        p.anomaly();
        assert!(p.suspect());
        assert_eq!(acq(&mut p, &clock(t0, 20, 20)), Some(6), "never used: free at once");
        p.release(6);
        assert_eq!(p.acquire(&clock(t0, 400, 400), 0x1000, 4), Err(Some(t0 + us(500))));
        // what counts is the drain point, not the clock
        assert_eq!(acq(&mut p, &clock(t0, 1500, 499)), None);
        assert_eq!(acq(&mut p, &clock(t0, 1500, 500)), Some(5));
        // however long nothing is answered, still suspect
        assert_eq!(acq(&mut p, &clock(t0, 519, 519)), None);
        // once enough completions fit in a row, at once again
        for _ in 0..CLEAN_STREAK {
            p.answered(t0, t0 + us(519));
        }
        assert!(!p.suspect());
        assert_eq!(acq(&mut p, &clock(t0, 519, 519)), Some(6));
    }

    #[test]
    fn given_up_tags_wait_for_evidence_then_a_lifetime() {
        let t0 = Instant::now();
        let mut p = TagPool::new(&[3, 4]);
        assert_eq!(acq(&mut p, &clock(t0, 0, 0)), Some(3));
        p.hold(3, Reassembly::new(0x1000, 512), t0 + us(200), us(200));
        assert_eq!(p.held(), 1);
        // no evidence: held however long we wait, short of the cap
        assert_eq!(acq(&mut p, &clock(t0, 50_000, 50_000)), Some(4));
        assert_eq!(acq(&mut p, &clock(t0, 60_000, 60_000)), None);
        // a request sent before the timeout is no evidence; one sent after it is
        p.answered(t0 + us(100), t0 + us(60_000));
        assert_eq!(acq(&mut p, &clock(t0, 60_001, 60_001)), None);
        p.answered(t0 + us(50_000), t0 + us(60_000));
        // then a late completion moves the rest
        let cs = cpls(3, 0x1000, 512);
        assert_eq!(p.absorb(&cs[0], 4096, t0 + us(60_500)), Absorbed::Late);
        assert_eq!(p.absorb(&cs[0], 4096, t0 + us(60_600)), Absorbed::Stale, "a copy of a late one");
        assert_eq!(p.absorb(&cpls(4, 0x1000, 64)[0], 4096, t0), Absorbed::Stale, "a tag not held");
        assert_eq!(acq(&mut p, &clock(t0, 61_400, 61_400)), None);
        assert_eq!(acq(&mut p, &clock(t0, 61_500, 61_500)), Some(3));
        assert_eq!(p.held(), 0);
    }

    /// Every tag held after a completer's silence, none free to ask anything more: the late
    /// answers that complete the given-up requests are the evidence, so the tags come back a
    /// lifetime after them, not at the 1 s cap.
    #[test]
    fn a_request_answered_in_full_late_frees_its_tag_after_a_lifetime() {
        let t0 = Instant::now();
        let mut p = TagPool::new(&[7, 8]);
        assert_eq!(acq(&mut p, &clock(t0, 0, 0)), Some(7));
        assert_eq!(acq(&mut p, &clock(t0, 0, 0)), Some(8));
        p.hold(7, Reassembly::new(0x1000, 512), t0 + us(200), us(200));
        p.hold(8, Reassembly::new(0x2000, 512), t0 + us(200), us(200));
        let (seven, eight) = (cpls(7, 0x1000, 512), cpls(8, 0x2000, 512));
        // tag 7 answered in part, tag 8 in full, at 3 ms
        assert_eq!(p.absorb(&seven[0], 4096, t0 + us(3000)), Absorbed::Late);
        for c in &eight {
            assert_eq!(p.absorb(c, 4096, t0 + us(3000)), Absorbed::Late);
        }
        assert_eq!(p.acquire(&clock(t0, 3999, 3999), 0x1000, 4), Err(Some(t0 + us(4000))));
        assert_eq!(acq(&mut p, &clock(t0, 4000, 4000)), Some(8));
        assert_eq!(p.held(), 1, "tag 7 still waits for the rest of its answer or evidence");
        assert_eq!(p.absorb(&seven[1], 4096, t0 + us(5000)), Absorbed::Late);
        assert_eq!(acq(&mut p, &clock(t0, 6000, 6000)), Some(7));
    }

    #[test]
    fn held_tags_rest_twice_their_wait_and_go_at_the_cap() {
        let t0 = Instant::now();
        let mut p = TagPool::new(&[9]);
        assert_eq!(acq(&mut p, &clock(t0, 0, 0)), Some(9));
        p.hold(9, Reassembly::new(0x1000, 512), t0 + us(4000), us(4000));
        p.answered(t0 + us(4000), t0 + us(4100));
        // the evidence, then twice the 4 ms wait (longer than the 1 ms lifetime)
        assert_eq!(acq(&mut p, &clock(t0, 12_099, 12_099)), None);
        assert_eq!(acq(&mut p, &clock(t0, 12_100, 12_100)), Some(9));
        p.hold(9, Reassembly::new(0x1000, 512), t0 + us(13_000), us(100));
        let cap = 12_100 + MAX_LIFETIME.as_micros() as u64;
        assert_eq!(p.acquire(&clock(t0, cap - 1, cap - 1), 0x1000, 4), Err(Some(t0 + us(cap))));
        assert_eq!(acq(&mut p, &clock(t0, cap, cap)), Some(9));
    }

    #[test]
    fn aliasing_requests_are_cut_on_a_suspect_network() {
        let t0 = Instant::now();
        let mut p = TagPool::new(&[1]);
        assert!(p.suspect(), "trust is earned");
        assert_eq!(p.acquire(&clock(t0, 0, 0), 0x1000, 512), Ok((1, 512)));
        p.release(1);
        // the next aligned 512 bytes end at 0x1400, which 0x1200 aliases: cut by a DW
        assert_eq!(p.acquire(&clock(t0, 1000, 1000), 0x1200, 512), Ok((1, 508)));
        p.release(1);
        // the rest ends at 0x1400 and is too short to cut: wait for the alias to expire
        let c = clock(t0, 2000, 2000);
        assert_eq!(p.acquire(&c, 0x13fc, 4), Err(Some(t0 + us(1000) * ALIAS_LIFETIMES)));
        // a request ending where an earlier one did is no alias (the bytes are its own)
        assert_eq!(p.acquire(&c, 0x1300, 0xfc), Ok((1, 0xfc)));
        p.release(1);
        let late = clock(t0, 8000, 8000);
        assert_eq!(p.acquire(&late, 0x13fc, 4), Ok((1, 4)));
        p.release(1);
        // pushed out by HISTORY later requests: no longer an alias, however recent
        for k in 0..HISTORY as u64 {
            let c = clock(t0, 9000 + 1000 * k, 9000 + 1000 * k);
            assert_eq!(p.acquire(&c, 0x3000 + 4 * k, 4), Ok((1, 4)));
            p.release(1);
        }
        let after = 9000 + 1000 * HISTORY as u64;
        assert_eq!(p.acquire(&clock(t0, after, after), 0x7000, 0x400), Ok((1, 0x400)));
    }

    #[test]
    fn a_free_tag_without_the_alias_goes_first_and_trust_skips_the_check() {
        let t0 = Instant::now();
        let mut p = TagPool::new(&[1, 2]);
        assert_eq!(p.acquire(&clock(t0, 0, 0), 0x1000, 512), Ok((1, 512)));
        p.release(1);
        let c = clock(t0, 1000, 1000);
        // tag 1 is first in the FIFO but aliases; tag 2 does not (peek agrees)
        assert_eq!(p.peek(&c, 0x1200, 512), Some(2));
        assert_eq!(p.acquire(&c, 0x1200, 512), Ok((2, 512)));
        p.release(2);
        trust(&mut p);
        assert_eq!(p.acquire(&c, 0x1400, 512), Ok((1, 512)), "trusted: the front, uncut");
    }

    #[test]
    fn stale_completions_raise_the_lateness_then_it_decays() {
        let t0 = Instant::now();
        let mut p = TagPool::new(&[1]);
        assert_eq!(p.acquire(&clock(t0, 0, 0), 0x1000, 512), Ok((1, 512)));
        p.release(1);
        p.stale_seen(1, false, t0 + us(7000));
        assert_eq!(p.lateness(), us(7000));
        for _ in 0..CLEAN_STREAK {
            p.answered(t0, t0);
        }
        assert_eq!(p.lateness(), us(3500));
    }
}
