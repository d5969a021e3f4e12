//! Fixed slots for outgoing datagrams, reused batch after batch (no allocation per packet).
//!
//! Invariant: slots `0..len()` hold committed datagrams of `lens[i]` bytes each; a slot is
//! written in place through [`Outbox::begin`] and only counts once [`Outbox::commit`]ted, so an
//! abandoned reply (see [`Outbox::rollback`]) never reaches the network.

/// Largest datagram the endpoint sends: NetTLP header + 3DW completion header + 4096 data bytes.
pub const MAX_DATAGRAM: usize = 6 + 12 + 4096;
/// Slot size (a little room above [`MAX_DATAGRAM`], cache-line multiple).
pub const SLOT: usize = 4160;
/// Most datagrams one request can produce: a 4096-byte read not aligned to 64 bytes spans 65
/// read-completion-boundary lines, so 65 CplDs at MPS 64.
pub const MAX_REPLIES_PER_REQUEST: usize = 65;

#[derive(Debug)]
pub struct Outbox {
    data: Vec<u8>,
    lens: Vec<usize>,
    slots: usize,
}

impl Outbox {
    pub fn new(slots: usize) -> Outbox {
        let slots = slots.max(MAX_REPLIES_PER_REQUEST);
        Outbox {
            data: vec![0u8; slots * SLOT],
            lens: Vec::with_capacity(slots),
            slots,
        }
    }

    /// Committed datagrams.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Free slots.
    pub fn free(&self) -> usize {
        self.slots - self.lens.len()
    }

    /// The next free slot (all [`SLOT`] bytes, holding stale data), or `None` if full.
    pub fn begin(&mut self) -> Option<&mut [u8]> {
        let i = self.lens.len();
        (i < self.slots).then(|| &mut self.data[i * SLOT..(i + 1) * SLOT])
    }

    /// Commit the slot last returned by [`Outbox::begin`] with `len` bytes.
    pub fn commit(&mut self, len: usize) {
        if self.lens.len() < self.slots {
            self.lens.push(len.min(SLOT));
        }
    }

    /// A position to roll back to.
    pub fn mark(&self) -> usize {
        self.lens.len()
    }

    /// Forget the datagrams committed since `mark`.
    pub fn rollback(&mut self, mark: usize) {
        self.lens.truncate(mark);
    }

    /// Datagram `i`.
    pub fn get(&self, i: usize) -> &[u8] {
        &self.data[i * SLOT..i * SLOT + self.lens[i]]
    }

    /// Datagrams `from..` as slices.
    pub fn iter_from(&self, from: usize) -> impl Iterator<Item = &[u8]> + '_ {
        (from..self.lens.len()).map(move |i| self.get(i))
    }

    pub fn clear(&mut self) {
        self.lens.clear();
    }
}
