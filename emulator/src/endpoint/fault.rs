//! Fault injection on the endpoint's outgoing datagrams: loss, duplication, reordering and
//! delay, drawn from a seeded generator (`--fault loss=0.1,dup=0.1,reorder=0.1,delay=200us,seed=7`).
//!
//! Semantics, per datagram handed to [`FaultQueue::push`]:
//! - `loss=p`: dropped with probability p;
//! - `dup=p`: sent twice with probability p (each copy delayed independently);
//! - `delay=D`: each copy held for a uniform random time in `[0, D]` (so delay also reorders);
//! - `reorder=p`: with probability p a copy is held back until the next datagram pushed has
//!   been released, then released right after it (or released alone after [`REORDER_HOLD`]).
//!
//! Invariants: time is passed in (`now`), never read here; the decisions depend only on the
//! seed and the order of pushes (exactly five draws per push), so a run is reproducible;
//! a held datagram is released no later than `D + REORDER_HOLD` after its push.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::pattern::splitmix64;
use crate::units::parse_duration;

/// Longest a reordered datagram waits for a successor before it is released alone.
pub const REORDER_HOLD: Duration = Duration::from_micros(500);

/// What to inject. The default injects nothing.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FaultSpec {
    pub loss: f64,
    pub dup: f64,
    pub reorder: f64,
    pub delay: Duration,
    pub seed: u64,
}

/// Why a `--fault` specification was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultSpecError {
    #[error("fault spec item {item:?}: expected key=value")]
    NotKeyValue { item: String },
    #[error("fault spec: unknown key {key:?} (known: loss, dup, reorder, delay, seed)")]
    UnknownKey { key: String },
    #[error("fault spec {key}={value:?}: {reason}")]
    BadValue { key: String, value: String, reason: &'static str },
}

impl FromStr for FaultSpec {
    type Err = FaultSpecError;

    fn from_str(s: &str) -> Result<FaultSpec, FaultSpecError> {
        let mut spec = FaultSpec::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = item.split_once('=').ok_or_else(|| FaultSpecError::NotKeyValue {
                item: item.to_owned(),
            })?;
            let bad = |reason| FaultSpecError::BadValue {
                key: key.to_owned(),
                value: value.to_owned(),
                reason,
            };
            let prob = || -> Result<f64, FaultSpecError> {
                let p: f64 = value.parse().map_err(|_| bad("not a number"))?;
                if (0.0..=1.0).contains(&p) {
                    Ok(p)
                } else {
                    Err(bad("probability must be in 0..=1"))
                }
            };
            match key {
                "loss" => spec.loss = prob()?,
                "dup" => spec.dup = prob()?,
                "reorder" => spec.reorder = prob()?,
                "delay" => {
                    spec.delay = parse_duration(value)
                        .ok_or_else(|| bad("expected a duration like 200us, 2ms (at most 60s)"))?
                }
                "seed" => spec.seed = value.parse().map_err(|_| bad("not an unsigned integer"))?,
                _ => return Err(FaultSpecError::UnknownKey { key: key.to_owned() }),
            }
        }
        Ok(spec)
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "loss={},dup={},reorder={},delay={}us,seed={}",
            self.loss,
            self.dup,
            self.reorder,
            self.delay.as_micros(),
            self.seed
        )
    }
}

impl FaultSpec {
    /// Whether this spec changes anything.
    pub fn is_active(&self) -> bool {
        self.loss > 0.0 || self.dup > 0.0 || self.reorder > 0.0 || !self.delay.is_zero()
    }
}

/// A SplitMix64 stream.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        splitmix64(self.0)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What the injector did, for the endpoint's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultTally {
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub delayed: u64,
}

#[derive(Debug)]
struct Held<P> {
    release: Instant,
    seq: u64,
    pkt: P,
}

impl<P> PartialEq for Held<P> {
    fn eq(&self, o: &Self) -> bool {
        (self.release, self.seq) == (o.release, o.seq)
    }
}
impl<P> Eq for Held<P> {}
impl<P> PartialOrd for Held<P> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<P> Ord for Held<P> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.release, self.seq).cmp(&(o.release, o.seq))
    }
}

/// Datagrams waiting to be released, in release order.
#[derive(Debug)]
pub struct FaultQueue<P> {
    spec: FaultSpec,
    rng: Rng,
    heap: BinaryHeap<Reverse<Held<P>>>,
    /// A reordered datagram waiting for its successor, with its latest release time.
    held_back: Option<(Instant, P)>,
    seq: u64,
    tally: FaultTally,
}

impl<P: Clone> FaultQueue<P> {
    pub fn new(spec: FaultSpec) -> FaultQueue<P> {
        FaultQueue {
            spec,
            rng: Rng::new(spec.seed),
            heap: BinaryHeap::new(),
            held_back: None,
            seq: 0,
            tally: FaultTally::default(),
        }
    }

    pub fn spec(&self) -> &FaultSpec {
        &self.spec
    }

    /// Take the tallies accumulated since the last call.
    pub fn take_tally(&mut self) -> FaultTally {
        std::mem::take(&mut self.tally)
    }

    fn delay(&mut self, u: f64) -> Duration {
        self.spec.delay.mul_f64(u)
    }

    fn enqueue(&mut self, release: Instant, pkt: P) {
        self.seq += 1;
        self.heap.push(Reverse(Held { release, seq: self.seq, pkt }));
        // a datagram held back for reordering goes right after this one
        if let Some((_, held)) = self.held_back.take() {
            self.seq += 1;
            self.heap.push(Reverse(Held { release, seq: self.seq, pkt: held }));
        }
    }

    /// Hand a datagram to the network at `now`.
    pub fn push(&mut self, now: Instant, pkt: P) {
        // always five draws, whatever the outcome, so decisions depend only on push order
        let [lose, dup, reorder, d1, d2] = [(); 5].map(|_| self.rng.unit());
        if lose < self.spec.loss {
            self.tally.dropped += 1;
            return;
        }
        let copies: &[f64] = if dup < self.spec.dup {
            self.tally.duplicated += 1;
            &[d1, d2]
        } else {
            &[d1]
        };
        for (i, &u) in copies.iter().enumerate() {
            let d = self.delay(u);
            if !d.is_zero() {
                self.tally.delayed += 1;
            }
            let release = now + d;
            let pkt = pkt.clone();
            if i == 0 && reorder < self.spec.reorder && self.held_back.is_none() {
                self.tally.reordered += 1;
                self.held_back = Some((release + REORDER_HOLD, pkt));
            } else {
                self.enqueue(release, pkt);
            }
        }
    }

    /// Move every datagram due at `now` to `out`, in release order.
    pub fn pop_ready(&mut self, now: Instant, out: &mut Vec<P>) {
        if let Some((deadline, _)) = &self.held_back {
            if *deadline <= now {
                if let Some((deadline, pkt)) = self.held_back.take() {
                    self.seq += 1;
                    self.heap.push(Reverse(Held { release: deadline, seq: self.seq, pkt }));
                }
            }
        }
        while let Some(Reverse(top)) = self.heap.peek() {
            if top.release > now {
                break;
            }
            if let Some(Reverse(h)) = self.heap.pop() {
                out.push(h.pkt);
            }
        }
    }

    /// When the next datagram becomes due, if any is waiting.
    pub fn next_deadline(&self) -> Option<Instant> {
        let heap = self.heap.peek().map(|Reverse(h)| h.release);
        let held = self.held_back.as_ref().map(|(d, _)| *d);
        match (heap, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Number of datagrams waiting.
    pub fn len(&self) -> usize {
        self.heap.len() + usize::from(self.held_back.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_syntax() {
        let s: FaultSpec = "loss=0.1,dup=0.1,reorder=0.1,delay=200us,seed=7".parse().unwrap();
        assert_eq!(
            s,
            FaultSpec {
                loss: 0.1,
                dup: 0.1,
                reorder: 0.1,
                delay: Duration::from_micros(200),
                seed: 7
            }
        );
        assert_eq!("delay=1.5ms".parse::<FaultSpec>().unwrap().delay, Duration::from_micros(1500));
        assert!(!"".parse::<FaultSpec>().unwrap().is_active());
        for bad in ["loss=2", "loss=x", "jitter=1", "loss", "delay=5", "delay=1h", "seed=-1"] {
            assert!(bad.parse::<FaultSpec>().is_err(), "{bad}");
        }
    }

    fn run(spec: FaultSpec, n: u32) -> (Vec<u32>, FaultTally) {
        let t0 = Instant::now();
        let mut q = FaultQueue::new(spec);
        let mut out = Vec::new();
        for i in 0..n {
            let now = t0 + Duration::from_micros(u64::from(i) * 10);
            q.push(now, i);
            q.pop_ready(now, &mut out);
        }
        q.pop_ready(t0 + Duration::from_secs(10), &mut out);
        assert!(q.is_empty());
        (out, q.take_tally())
    }

    #[test]
    fn same_seed_same_faults() {
        let spec: FaultSpec = "loss=0.1,dup=0.1,reorder=0.1,delay=200us,seed=42".parse().unwrap();
        let (a, ta) = run(spec, 10_000);
        let (b, tb) = run(spec, 10_000);
        assert_eq!(a, b);
        assert_eq!(ta, tb);
        let (c, _) = run(FaultSpec { seed: 43, ..spec }, 10_000);
        assert_ne!(a, c);
        // rates are roughly as asked
        assert!((800..1200).contains(&ta.dropped), "{ta:?}");
        assert!((700..1100).contains(&ta.duplicated), "{ta:?}");
        assert!(ta.reordered > 500, "{ta:?}");
        assert_eq!(a.len() as u64, 10_000 - ta.dropped + ta.duplicated);
        assert!(a.windows(2).any(|w| w[0] > w[1]), "nothing reordered");
    }

    #[test]
    fn no_faults_is_the_identity() {
        let (out, t) = run(FaultSpec::default(), 1000);
        assert_eq!(out, (0..1000).collect::<Vec<_>>());
        assert_eq!(t, FaultTally::default());
    }

    #[test]
    fn reordered_datagram_follows_its_successor() {
        let spec = FaultSpec { reorder: 1.0, ..FaultSpec::default() };
        let t0 = Instant::now();
        let mut q = FaultQueue::new(spec);
        let mut out = Vec::new();
        q.push(t0, 1);
        q.pop_ready(t0, &mut out);
        assert!(out.is_empty());
        assert_eq!(q.next_deadline(), Some(t0 + REORDER_HOLD));
        q.push(t0, 2); // held slot busy: 2 goes out, 1 right after it
        q.pop_ready(t0, &mut out);
        assert_eq!(out, [2, 1]);
        q.push(t0, 3); // held alone, released at the deadline
        q.pop_ready(t0 + REORDER_HOLD, &mut out);
        assert_eq!(out, [2, 1, 3]);
    }
}
