//! Tags of requests given up: kept out of use until their late completions cannot arrive.
//!
//! A request that times out may only be late (the endpoint or the machine stalled), so its
//! completions can still come. Were its tag reused at once, a late completion whose Byte Count
//! and Lower Address happen to fit the new request would be taken for it (NetTLP carries no
//! nonce, see [`super::tags`]). So the tag is held here, with the request's [`Reassembly`]:
//!
//! - a completion that arrives for a held tag and fits the given-up request is absorbed
//!   (counted as late, never copied anywhere); once every byte of it has come, the tag is
//!   released;
//! - otherwise the tag is released when it has rested `max(its rest, twice the RTO)` since
//!   the timeout *and* some request sent after the timeout has been answered: the path has
//!   delivered newer answers, so the endpoint is past this one. While nothing is answered at
//!   all (a stall, or a dead endpoint), nothing is released before [`CAP`].
//!
//! Invariant: a held tag is not free in the [`super::tags::TagPool`] (the requester releases
//! it there only when this module lets it go); time is passed in.

use std::time::{Duration, Instant};

use emulator::wire::tlp::Completion;

use super::request::{Reassembly, Verdict};

/// The longest a tag is held when nothing newer is answered.
pub const CAP: Duration = Duration::from_millis(500);

#[derive(Debug)]
struct Held {
    asm: Reassembly,
    timed_out: Instant,
    rest: Duration,
}

/// What became of a completion offered to the quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absorbed {
    /// Its tag is not held.
    NotHeld,
    /// It fit the given-up request; `release` if that request is now complete.
    Late { release: bool },
    /// It did not fit the given-up request either.
    Stale,
}

#[derive(Debug)]
pub struct Quarantine {
    held: Vec<Option<Held>>,
    count: usize,
    /// When the most recently sent request that has been answered was sent.
    newest_answered: Option<Instant>,
}

impl Default for Quarantine {
    fn default() -> Quarantine {
        Quarantine { held: (0..256).map(|_| None).collect(), count: 0, newest_answered: None }
    }
}

impl Quarantine {
    /// Hold `tag`, whose request timed out at `now` with `asm` received so far; it rests at
    /// least `rest`.
    pub fn hold(&mut self, tag: u8, asm: Reassembly, now: Instant, rest: Duration) {
        let slot = &mut self.held[usize::from(tag)];
        if slot.is_none() {
            self.count += 1;
        }
        *slot = Some(Held { asm, timed_out: now, rest });
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// A request sent at `sent` was answered.
    pub fn answered(&mut self, sent: Instant) {
        if self.newest_answered.is_none_or(|n| sent > n) {
            self.newest_answered = Some(sent);
        }
    }

    /// Offer a completion for `cpl.tag` (IDs already checked) whose datagram carried
    /// `payload_present` bytes.
    pub fn absorb(&mut self, cpl: &Completion, payload_present: usize) -> Absorbed {
        let tag = usize::from(cpl.tag);
        let Some(h) = self.held[tag].as_mut() else { return Absorbed::NotHeld };
        match h.asm.accept(cpl, payload_present) {
            Verdict::Data { done, .. } => {
                if done {
                    self.held[tag] = None;
                    self.count -= 1;
                }
                Absorbed::Late { release: done }
            }
            Verdict::Failed(_) => {
                self.held[tag] = None;
                self.count -= 1;
                Absorbed::Late { release: true }
            }
            Verdict::Reject(_) => Absorbed::Stale,
        }
    }

    fn due(&self, h: &Held, extra: Duration) -> Instant {
        let evidence = self.newest_answered.is_some_and(|n| n >= h.timed_out);
        if evidence {
            h.timed_out + h.rest.max(extra)
        } else {
            h.timed_out + CAP.max(h.rest)
        }
    }

    /// Let go of every tag due at `now` (`extra`: twice the current RTO), into
    /// `out`.
    pub fn release_due(&mut self, now: Instant, extra: Duration, out: &mut Vec<u8>) {
        if self.count == 0 {
            return;
        }
        for tag in 0..256 {
            let Some(h) = &self.held[tag] else { continue };
            if self.due(h, extra) <= now {
                self.held[tag] = None;
                self.count -= 1;
                out.push(tag as u8);
            }
        }
    }

    /// When the next held tag may be let go (if no completion changes it).
    pub fn next_due(&self, extra: Duration) -> Option<Instant> {
        self.held.iter().flatten().map(|h| self.due(h, extra)).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use emulator::wire::tlp::{completion_chunks, DeviceId, MemRequest};

    fn cpls(tag: u8, addr: u64, len: u32) -> Vec<Completion> {
        let req = MemRequest::new(DeviceId(0x1a00), tag, addr, len).unwrap();
        completion_chunks(addr, len, 256).map(|c| Completion::for_chunk(&req, DeviceId(0), &c)).collect()
    }

    #[test]
    fn late_completions_are_absorbed_and_free_the_tag() {
        let t0 = Instant::now();
        let mut q = Quarantine::default();
        q.hold(7, Reassembly::new(0x1000, 512), t0, Duration::from_micros(100));
        let cs = cpls(7, 0x1000, 512);
        assert_eq!(q.absorb(&cs[0], 4096), Absorbed::Late { release: false });
        assert_eq!(q.absorb(&cs[0], 4096), Absorbed::Stale, "a duplicate of a late one");
        assert_eq!(q.absorb(&cpls(7, 0x2004, 64)[0], 4096), Absorbed::Stale);
        assert_eq!(q.absorb(&cpls(8, 0x1000, 64)[0], 4096), Absorbed::NotHeld);
        assert_eq!(q.absorb(&cs[1], 4096), Absorbed::Late { release: true });
        assert!(q.is_empty());
    }

    #[test]
    fn held_until_newer_requests_are_answered() {
        let t0 = Instant::now();
        let us = Duration::from_micros;
        let mut q = Quarantine::default();
        q.hold(3, Reassembly::new(0x1000, 512), t0 + us(50), us(100));
        let mut out = Vec::new();
        // a stall: nothing answered, so not before the cap
        q.release_due(t0 + us(10_000), Duration::ZERO, &mut out);
        assert!(out.is_empty());
        assert_eq!(q.next_due(Duration::ZERO), Some(t0 + us(50) + CAP));
        // an answer to a request sent before the timeout is no evidence
        q.answered(t0 + us(40));
        q.release_due(t0 + us(10_000), Duration::ZERO, &mut out);
        assert!(out.is_empty());
        // one sent after it is; then the rest (or the path's delay, if longer) applies
        q.answered(t0 + us(60));
        q.release_due(t0 + us(120), us(500), &mut out);
        assert!(out.is_empty());
        q.release_due(t0 + us(550), us(500), &mut out);
        assert_eq!(out, vec![3]);
        assert!(q.is_empty());
        // the cap lets go of a tag when nothing is ever answered
        let mut q = Quarantine::default();
        q.hold(4, Reassembly::new(0x1000, 512), t0, us(100));
        q.release_due(t0 + CAP, Duration::ZERO, &mut out);
        assert_eq!(out, vec![3, 4]);
    }
}
