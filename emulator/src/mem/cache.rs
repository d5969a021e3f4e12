//! [`Cache`]: a small bounded read-through page cache. Analyses that revisit the same pages
//! (page-table walks, list traversals) put it over a slow source such as the DMA requester.
//! It assumes memory does not change while cached: do not put it over a live guest unless
//! stale pages are acceptable.
//!
//! Invariant: a read returns the same bytes or the same error address as the source would;
//! the pages a batch misses are fetched from the source in one batch, so pipelining backends
//! keep pipelining underneath.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use super::{MemError, PhysAddr, PhysMem, PhysRange, ReadOp};

/// Cache hit/miss counters (per page looked up).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Pages held now.
    pub pages: usize,
}

/// Page size of [`Cache`].
pub const CACHE_PAGE: u64 = 4096;

struct Slot {
    page: u64,
    data: Box<[u8]>,
    referenced: bool,
}

/// Pages held, evicted by the CLOCK (second chance) policy.
struct Clock {
    slots: Vec<Slot>,
    index: HashMap<u64, usize>,
    hand: usize,
    capacity: usize,
}

impl Clock {
    fn copy_out(&mut self, page: u64, off: usize, out: &mut [u8]) -> bool {
        let Some(&i) = self.index.get(&page) else {
            return false;
        };
        let slot = &mut self.slots[i];
        slot.referenced = true;
        out.copy_from_slice(&slot.data[off..off + out.len()]);
        true
    }

    fn insert(&mut self, page: u64, data: &[u8]) {
        if self.index.contains_key(&page) || self.capacity == 0 {
            return;
        }
        let slot = Slot {
            page,
            data: data.into(),
            referenced: false,
        };
        if self.slots.len() < self.capacity {
            self.index.insert(page, self.slots.len());
            self.slots.push(slot);
            return;
        }
        // At most two sweeps: the first clears every reference bit.
        for _ in 0..2 * self.slots.len() {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            if self.slots[i].referenced {
                self.slots[i].referenced = false;
                continue;
            }
            self.index.remove(&self.slots[i].page);
            self.index.insert(page, i);
            self.slots[i] = slot;
            return;
        }
    }
}

/// A bounded read-through cache of whole 4 KiB pages.
pub struct Cache<M> {
    inner: M,
    clock: Mutex<Clock>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<M: PhysMem> Cache<M> {
    /// Cache at most `capacity` pages (each [`CACHE_PAGE`] bytes).
    pub fn new(inner: M, capacity: usize) -> Self {
        Cache {
            inner,
            clock: Mutex::new(Clock {
                slots: Vec::new(),
                index: HashMap::new(),
                hand: 0,
                capacity,
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            pages: self.clock.lock().map(|c| c.slots.len()).unwrap_or(0),
        }
    }

    pub fn inner(&self) -> &M {
        &self.inner
    }

    fn insert(&self, page: u64, data: &[u8]) {
        if let Ok(mut clock) = self.clock.lock() {
            clock.insert(page, data);
        }
    }

    fn missing(&self, addr: PhysAddr, len: usize, out: &mut Vec<u64>) {
        let Ok(clock) = self.clock.lock() else { return };
        for (page, _, _) in pages(addr, len) {
            if clock.index.contains_key(&page) {
                self.hits.fetch_add(1, Relaxed);
            } else {
                self.misses.fetch_add(1, Relaxed);
                out.push(page);
            }
        }
    }
}

/// The pages `[addr, addr+len)` touches: (page number, offset in page, range in the buffer).
fn pages(addr: PhysAddr, len: usize) -> impl Iterator<Item = (u64, usize, std::ops::Range<usize>)> {
    let mut done = 0usize;
    std::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let a = addr.0.checked_add(done as u64)?;
        let off = (a % CACHE_PAGE) as usize;
        let n = (CACHE_PAGE as usize - off).min(len - done);
        let item = (a / CACHE_PAGE, off, done..done + n);
        done += n;
        Some(item)
    })
}

impl<M: PhysMem> PhysMem for Cache<M> {
    fn read_phys(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let mut results = self.read_batch(&mut [ReadOp { addr, buf }]);
        results.pop().unwrap_or(Ok(()))
    }

    fn read_batch(&self, ops: &mut [ReadOp<'_>]) -> Vec<Result<(), MemError>> {
        // 1. Which pages are missing, over all ops (deduplicated, in order).
        let mut missing = Vec::new();
        for op in ops.iter() {
            self.missing(op.addr, op.buf.len(), &mut missing);
        }
        missing.sort_unstable();
        missing.dedup();
        // 2. Fetch them in one batch from the inner source.
        let mut fetched: HashMap<u64, Vec<u8>> = HashMap::with_capacity(missing.len());
        if !missing.is_empty() {
            let mut bufs: Vec<Vec<u8>> = missing
                .iter()
                .map(|_| vec![0u8; CACHE_PAGE as usize])
                .collect();
            let mut page_ops: Vec<ReadOp<'_>> = missing
                .iter()
                .zip(bufs.iter_mut())
                .map(|(&page, buf)| ReadOp {
                    addr: PhysAddr(page * CACHE_PAGE),
                    buf,
                })
                .collect();
            let results = self.inner.read_batch(&mut page_ops);
            drop(page_ops);
            for ((page, buf), r) in missing.iter().zip(bufs).zip(results) {
                if r.is_ok() {
                    self.insert(*page, &buf);
                    fetched.insert(*page, buf);
                }
            }
        }
        // 3. Fill each op from this batch's pages or the cache; an op touching a page that
        //    could not be read whole (a partly backed page, an error) goes to the source
        //    directly, which also yields the exact failing address.
        ops.iter_mut()
            .map(|op| {
                let mut complete = true;
                for (page, off, range) in pages(op.addr, op.buf.len()) {
                    let out = &mut op.buf[range];
                    match fetched.get(&page) {
                        Some(data) => out.copy_from_slice(&data[off..off + out.len()]),
                        None => {
                            let hit = self
                                .clock
                                .lock()
                                .map(|mut c| c.copy_out(page, off, out))
                                .unwrap_or(false);
                            if !hit {
                                complete = false;
                                break;
                            }
                        }
                    }
                }
                if complete {
                    Ok(())
                } else {
                    self.inner.read_phys(op.addr, op.buf)
                }
            })
            .collect()
    }

    same_memory_as_inner!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source whose byte at `a` is `a % 251`, backed on `[0, len)`, counting inner reads.
    struct Pattern {
        len: u64,
        reads: AtomicU64,
    }

    impl PhysMem for Pattern {
        fn read_phys(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
            self.reads.fetch_add(1, Relaxed);
            for (i, b) in buf.iter_mut().enumerate() {
                let a = addr.0 + i as u64;
                if a >= self.len {
                    return Err(MemError::Unmapped { addr: PhysAddr(a) });
                }
                *b = (a % 251) as u8;
            }
            Ok(())
        }
        fn ranges(&self) -> Vec<PhysRange> {
            vec![PhysRange::new(0, self.len)]
        }
        fn describe(&self) -> String {
            "pattern".into()
        }
    }

    fn expect(addr: u64, n: usize) -> Vec<u8> {
        (addr..addr + n as u64).map(|a| (a % 251) as u8).collect()
    }

    #[test]
    fn cache_serves_identical_bytes_and_errors() {
        // The source ends mid-page, so the last page can never be cached whole.
        let c = Cache::new(
            Pattern {
                len: 10 * 4096 + 100,
                reads: AtomicU64::new(0),
            },
            4,
        );
        let mut seed = 7u64;
        for _ in 0..500 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let addr = (seed >> 20) % (11 * 4096);
            let n = ((seed >> 8) % 9000) as usize + 1;
            let mut buf = vec![0u8; n];
            let r = c.read_phys(PhysAddr(addr), &mut buf);
            if addr + n as u64 <= 10 * 4096 + 100 {
                assert!(r.is_ok(), "{addr:#x}+{n}");
                assert_eq!(buf, expect(addr, n));
            } else {
                let first_bad = addr.max(10 * 4096 + 100);
                assert_eq!(r.unwrap_err().addr(), PhysAddr(first_bad));
            }
        }
        let s = c.stats();
        assert!(s.pages <= 4);
        assert!(s.hits > 0 && s.misses > 0);
    }

    #[test]
    fn repeated_reads_hit_the_cache() {
        let c = Cache::new(
            Pattern {
                len: 1 << 20,
                reads: AtomicU64::new(0),
            },
            16,
        );
        let mut buf = [0u8; 64];
        for _ in 0..10 {
            c.read_phys(PhysAddr(0x1234), &mut buf).unwrap();
        }
        assert_eq!(c.inner().reads.load(Relaxed), 1);
        assert_eq!(
            c.stats(),
            CacheStats {
                hits: 9,
                misses: 1,
                pages: 1
            }
        );
    }
}
