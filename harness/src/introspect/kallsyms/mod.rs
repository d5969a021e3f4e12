//! The kernel's own symbol table (kallsyms, every format from 5.10 to 7.x), decoded from
//! physical memory. Where the tables are and how addresses are encoded: [`locate`]; the names
//! stream and its blocks: [`stream`]; lookups by name: [`search`].
//!
//! Names are compressed: each entry is a ULEB128 length (one or two bytes) and that many token
//! numbers; token `t` expands to the NUL-terminated string at `token_table[token_index[t]]`; the
//! first character of the expansion is the symbol type (`T`, `d`, ...). `kallsyms_markers[k]`
//! is the offset of entry `256 k` in the names stream, so the stream decodes block by block.
//!
//! Opening a kernel reads only part of the stream: its end is found by probing for the markers
//! (not by walking 1.3 MB of names on Debian 6.1), and lookups by name search
//! `kallsyms_seqs_of_names` (6.2 on, and Debian's 6.1), decoding only the blocks a binary search
//! visits. Kernels without that table (5.10), and callers that want every symbol, read the
//! stream whole, in one read now that its length is known.
//!
//! Invariant: a [`Kallsyms`] exists only if its markers are `⌈n / 256⌉` increasing offsets
//! after which the token table and index agree with each other, the last block walks exactly
//! to the end of the stream before the markers, and a spread sample of blocks (every block,
//! when the stream was read whole) walks exactly from marker to marker; every block decoded
//! whole later is checked the same way before use (a name search reads blocks only up to the
//! entries it compares: see [`search`]). Every count and length read from the guest is
//! bounded before it sizes anything. A name found is an entry whose expanded name equals it;
//! a name-order table contradicted by what a search decoded is dropped for a scan of every
//! entry. A pc-relative table yields no virtual address until the image is placed
//! ([`Kallsyms::place_image`]).

pub mod locate;
mod search;
pub mod stream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use emulator::mem::{MemError, PhysAddr, PhysMem};

use super::addr::KVirt;
use emulator::bytes::{align_up, Bytes};
use super::physread::{read_many, read_vec};
pub use locate::{KallsymsLocation, LocateConfig, OffsetMode, TableOrder};
use stream::{Block, Found};

/// At most this many symbols (6.1 x86-64 distribution kernels have about 150 000).
pub const MAX_SYMS: u32 = 2_000_000;
/// At most this many bytes of compressed names.
const MAX_NAMES_BYTES: u64 = 64 << 20;
/// Blocks decoded when opening, beside the last: the first and this many more spread evenly.
const SAMPLE_BLOCKS: u32 = 7;
/// Lookups search the name order only in a names stream longer than this; a shorter one is read
/// whole in one read and scanned. A search of ~20 names decodes ~130 blocks (about 0.45 MB on
/// Debian's kernels) in ~35 more round trips than one read; a round trip costs what 5 KB (the
/// adapter: 12 µs at 3.58 Gbit/s) to 14 KB (the emulator on this machine) of transfer do.
pub const SEARCH_ABOVE: u64 = 768 << 10;

#[derive(Debug, thiserror::Error)]
pub enum KallsymsError {
    #[error("kallsyms tables not found in {start}..{end}")]
    NotFound { start: PhysAddr, end: PhysAddr },
    #[error("kallsyms at {addr}: {reason}")]
    Corrupt { addr: PhysAddr, reason: String },
    #[error("reading kallsyms: {0}")]
    Mem(#[from] MemError),
    #[error("symbol {name} not in kallsyms")]
    NoSymbol { name: String },
    #[error("kallsyms at {offsets} is pc-relative: symbol addresses are virtual only once the image is placed")]
    Unplaced { offsets: PhysAddr },
}

/// One decoded symbol (its address is read on demand, see [`Kallsyms::addresses`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolName {
    /// The type letter as `nm` prints it (`T` global text, `d` local data, ...).
    pub kind: char,
    pub name: String,
}

/// Validated kallsyms: where each table is, and how to get names and addresses.
///
/// Names stay compressed as the kernel stores them (the blocks decoded so far, the 256 tokens)
/// and are expanded only when asked for.
#[derive(Debug)]
pub struct Kallsyms {
    pub location: KallsymsLocation,
    pub markers: PhysAddr,
    pub token_table: PhysAddr,
    pub token_index: PhysAddr,
    /// Whether `kallsyms_seqs_of_names` sits between the markers and the token table.
    pub has_seqs_of_names: bool,
    pub names_len: u64,
    /// For pc-relative tables: virtual minus physical address of the kernel image, once known.
    pub image_delta: Option<u64>,
    marks: Vec<u32>,
    tokens: Vec<Vec<u8>>,
    /// `kallsyms_seqs_of_names` (entry indices in name order, 3 bytes each, big-endian), while
    /// no search has contradicted it.
    seqs: Mutex<Option<PhysAddr>>,
    /// Blocks decoded so far, by number.
    blocks: Mutex<HashMap<u32, Arc<Block>>>,
    /// Entry indices read from `kallsyms_seqs_of_names` so far, by rank.
    ranks: Mutex<search::RankMap>,
    /// The first entries of blocks a name search read only in part ([`Block::prefix`]), by
    /// block number.
    prefixes: Mutex<HashMap<u32, Arc<Block>>>,
    /// Names looked up so far, and what they were found at.
    found: Mutex<HashMap<String, Option<u32>>>,
    /// `kallsyms_offsets` values read so far, by index.
    offsets_read: Mutex<HashMap<u32, i32>>,
    /// Lookups search the name order only in a stream longer than this ([`SEARCH_ABOVE`]).
    pub search_above: u64,
    /// Entries and data symbols (`D d B b R r`) among the blocks decoded when opening.
    sampled: (u64, u64),
}

impl Kallsyms {
    /// Find the end of the names stream and the tables after it, starting at `loc`.
    pub fn load(mem: &dyn PhysMem, loc: KallsymsLocation) -> Result<Kallsyms, KallsymsError> {
        let n = loc.num_syms;
        if n == 0 || n > MAX_SYMS {
            return Err(corrupt(loc.names, format!("implausible symbol count {n}")));
        }
        let m = n.div_ceil(256) as usize;
        let known = match loc.markers {
            Some(at) => stream::markers_around(mem, &loc, at.0)?,
            None => None,
        };
        let found = match known.map_or_else(|| stream::probe_markers(mem, &loc), |f| Ok(Some(f)))? {
            Some(f) => f,
            None => {
                let (names_len, names, block_starts) = stream::walk_whole(mem, &loc)?;
                let end = loc.names.0 + names_len;
                let markers_at = [8u64, 4].into_iter().map(|a| Ok((PhysAddr(align_to(end, a)?), a))).collect::<Result<_, KallsymsError>>()?;
                let blocks = stream::blocks_of(&names, &block_starts, n).ok_or_else(|| corrupt(loc.names, "names do not walk".into()))?;
                Found { names_len, markers_at, marks: block_starts, blocks }
            }
        };
        // A walk decoded every block, and the markers must agree with it; a probe read them.
        let walked = found.blocks.len() == m;
        let names_end = loc.names.0 + found.names_len;

        // The markers, then the token table, directly or after `kallsyms_seqs_of_names` (3
        // bytes each, OffsetsFirst from 6.2 to 6.3).
        let mut candidates = Vec::new();
        for &(markers, align) in &found.markers_at {
            let marks = if walked {
                let Ok(mbuf) = read_vec(mem, markers, m * 4) else { continue };
                let mb = Bytes::new(&mbuf);
                let read: Option<Vec<u32>> = (0..m).map(|k| mb.u32(k * 4).ok()).collect();
                match read {
                    Some(r) if r == found.marks => r,
                    _ => continue,
                }
            } else {
                found.marks.clone()
            };
            let after_markers = markers.0 + m as u64 * 4;
            let seqs_too = loc.order == TableOrder::OffsetsFirst;
            let seqs_end = align_to(after_markers, align)? + 3 * u64::from(n);
            for (seqs, at) in [(false, after_markers), (true, seqs_end)].into_iter().filter(|(seqs, _)| !seqs || seqs_too) {
                candidates.push((markers, marks.clone(), seqs, align_to(at, align)?, align));
            }
        }
        // Every candidate token table (and the index after it) in one batch; the first that
        // parses wins.
        let places: Vec<(u64, u64)> = candidates.iter().map(|c| (c.3, c.4)).collect();
        let tables = read_tokens(mem, &places)?.map(|(k, tokens)| {
            let (markers, marks, seqs, tt, _) = candidates.swap_remove(k);
            (markers, marks, seqs, tt, tokens)
        });
        let Some((markers, marks, has_seqs, tt, (tokens, ti))) = tables else {
            return Err(corrupt(PhysAddr(names_end), "no markers agreeing with the names, or no token table/index after them".into()));
        };

        let seqs = match loc.order {
            TableOrder::OffsetsFirst if has_seqs => Some(PhysAddr(align_to(markers.0 + m as u64 * 4, 8)?)),
            TableOrder::OffsetsFirst => None,
            TableOrder::NamesFirst => {
                let offsets_end = loc.offsets.0 + 4 * u64::from(n);
                Some(PhysAddr(if loc.relative_base.is_some() { align_to(offsets_end, 8)? + 8 } else { offsets_end }))
            }
        };
        let k = Kallsyms {
            location: loc,
            markers,
            token_table: PhysAddr(tt),
            token_index: ti,
            has_seqs_of_names: has_seqs,
            names_len: found.names_len,
            image_delta: None,
            marks,
            tokens,
            seqs: Mutex::new(seqs),
            blocks: Mutex::new(found.blocks.into_iter().map(|(b, block)| (b, Arc::new(block))).collect()),
            ranks: Mutex::new(search::RankMap::default()),
            prefixes: Mutex::new(HashMap::new()),
            found: Mutex::new(HashMap::new()),
            offsets_read: Mutex::new(HashMap::new()),
            search_above: SEARCH_ABOVE,
            sampled: (0, 0),
        };
        // A sample of blocks spread over the stream, decoded now: each must walk from its
        // marker to the next (the stream's end was checked with the last one).
        let last = m as u32 - 1;
        let sample: Vec<u32> = (0..=SAMPLE_BLOCKS).map(|i| (u64::from(last) * u64::from(i) / u64::from(SAMPLE_BLOCKS)) as u32).collect();
        k.decode(mem, &sample)?;
        let sampled = k.count_sample();
        Ok(Kallsyms { sampled, ..k })
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.location.num_syms as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn cache(&self) -> MutexGuard<'_, HashMap<u32, Arc<Block>>> {
        self.blocks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make sure blocks `which` are decoded (those missing read in one batch).
    fn decode(&self, mem: &dyn PhysMem, which: &[u32]) -> Result<(), KallsymsError> {
        let mut missing: Vec<u32> = {
            let cache = self.cache();
            which.iter().copied().filter(|b| !cache.contains_key(b)).collect()
        };
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        let read = stream::read_blocks(mem, self.location.names, self.names_len, &self.marks, self.location.num_syms, &missing)?;
        let mut cache = self.cache();
        for (b, block) in missing.into_iter().zip(read) {
            let block = block.ok_or_else(|| {
                corrupt(PhysAddr(self.location.names.0 + u64::from(self.marks[b as usize])), format!("block {b} of names does not walk to its marker"))
            })?;
            cache.insert(b, Arc::new(block));
        }
        Ok(())
    }

    /// Keep block `b`, read and checked against its marker elsewhere (a name search).
    fn adopt(&self, b: u32, block: Block) {
        self.cache().entry(b).or_insert_with(|| Arc::new(block));
    }

    /// Decode every block: the stream in one read, each block checked against its marker.
    fn decode_all(&self, mem: &dyn PhysMem) -> Result<(), KallsymsError> {
        if self.cache().len() == self.marks.len() {
            return Ok(());
        }
        let stream = read_vec(mem, self.location.names, self.names_len as usize)?;
        let blocks = stream::blocks_of(&stream, &self.marks, self.location.num_syms)
            .ok_or_else(|| corrupt(self.location.names, "a block of names does not walk to its marker".into()))?;
        let mut cache = self.cache();
        for (b, block) in blocks {
            cache.entry(b).or_insert_with(|| Arc::new(block));
        }
        Ok(())
    }

    /// The decoded block holding entry `i` (decoded by the caller).
    fn block_of(&self, i: u32) -> Option<Arc<Block>> {
        self.cache().get(&(i / 256)).cloned()
    }

    /// Entries and data symbols among the blocks decoded.
    fn count_sample(&self) -> (u64, u64) {
        let cache = self.cache();
        let (mut seen, mut data) = (0u64, 0u64);
        for block in cache.values() {
            for j in 0..block.entries() {
                seen += 1;
                if matches!(self.kind_in(block, j), Some('D' | 'd' | 'B' | 'b' | 'R' | 'r')) {
                    data += 1;
                }
            }
        }
        (seen, data)
    }

    /// How many data symbols (`D d B b R r`) the table has: counted when the stream was read
    /// whole, else estimated from the blocks decoded when opening (spread over the table, which
    /// is in address order: text, read-only data, data).
    pub fn data_symbols(&self) -> u64 {
        let (seen, data) = self.sampled;
        if seen == 0 {
            return 0;
        }
        data * u64::from(self.location.num_syms) / seen
    }

    /// Expand entry `j` of `block` (type letter, then name) into `out`, stopping once it is
    /// longer than `limit`; whether it fit.
    fn expand_in(&self, block: &Block, j: usize, out: &mut Vec<u8>, limit: usize) -> bool {
        out.clear();
        for &c in block.codes(j) {
            out.extend_from_slice(&self.tokens[c as usize]);
            if out.len() > limit {
                return false;
            }
        }
        true
    }

    /// The type letter of entry `j` of `block` (the first byte of its first token).
    fn kind_in(&self, block: &Block, j: usize) -> Option<char> {
        let c = *block.codes(j).first()?;
        self.tokens[c as usize].first().map(|&b| b as char)
    }

    fn symbol_in(&self, block: &Block, j: usize) -> Option<SymbolName> {
        let mut buf = Vec::new();
        self.expand_in(block, j, &mut buf, usize::MAX);
        let (&k, name) = buf.split_first()?;
        // Symbol names are ASCII; anything else is replaced per byte.
        let name = name.iter().map(|&b| if b.is_ascii() { b as char } else { '?' }).collect();
        Some(SymbolName { kind: k as char, name })
    }

    /// Symbol `i`, expanded (its block read if not yet).
    pub fn symbol(&self, mem: &dyn PhysMem, i: u32) -> Result<Option<SymbolName>, KallsymsError> {
        if i >= self.location.num_syms {
            return Ok(None);
        }
        self.decode(mem, &[i / 256])?;
        Ok(self.block_of(i).and_then(|b| self.symbol_in(&b, (i % 256) as usize)))
    }

    /// Every symbol, in table (address) order (reads the whole stream once).
    pub fn names(&self, mem: &dyn PhysMem) -> Result<Vec<SymbolName>, KallsymsError> {
        self.decode_all(mem)?;
        let cache = self.cache();
        let mut out = Vec::with_capacity(self.len());
        for b in 0..self.marks.len() as u32 {
            let block = cache.get(&b).ok_or_else(|| corrupt(self.location.names, format!("block {b} not decoded")))?;
            out.extend((0..block.entries()).filter_map(|j| self.symbol_in(block, j)));
        }
        Ok(out)
    }

    /// Index of `name` in the table (the global one if the name repeats).
    pub fn index_of(&self, mem: &dyn PhysMem, name: &str) -> Result<Option<u32>, KallsymsError> {
        Ok(self.indices_of(mem, &[name])?[0])
    }

    /// Indices of several names (global definitions preferred, then the first in table order):
    /// by binary search of `kallsyms_seqs_of_names` where the kernel has one, its stream is
    /// long ([`Kallsyms::search_above`]) and no search has contradicted it, else by a pass over
    /// every entry. A name is looked up once; later calls answer it from what was found.
    pub fn indices_of(&self, mem: &dyn PhysMem, names: &[&str]) -> Result<Vec<Option<u32>>, KallsymsError> {
        let mut missing: Vec<&str> = {
            let found = self.found.lock().unwrap_or_else(|p| p.into_inner());
            names.iter().copied().filter(|n| !found.contains_key(*n)).collect()
        };
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            let got = self.indices_uncached(mem, &missing)?;
            let mut found = self.found.lock().unwrap_or_else(|p| p.into_inner());
            for (name, i) in missing.into_iter().zip(got) {
                found.insert(name.to_owned(), i);
            }
        }
        let found = self.found.lock().unwrap_or_else(|p| p.into_inner());
        Ok(names.iter().map(|n| found.get(*n).copied().flatten()).collect())
    }

    fn indices_uncached(&self, mem: &dyn PhysMem, names: &[&str]) -> Result<Vec<Option<u32>>, KallsymsError> {
        let seqs = *self.seqs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = seqs.filter(|_| self.names_len > self.search_above) {
            match search::by_name(self, mem, at, names)? {
                Some(found) => return Ok(found),
                None => {
                    tracing::warn!(seqs = %at, "kallsyms_seqs_of_names is not in name order; scanning every symbol instead");
                    *self.seqs.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
            }
        }
        self.indices_by_scan(mem, names)
    }

    /// Whether lookups search `kallsyms_seqs_of_names` rather than scan.
    pub fn searches_by_name(&self) -> bool {
        self.seqs.lock().unwrap_or_else(|p| p.into_inner()).is_some() && self.names_len > self.search_above
    }

    /// [`Kallsyms::indices_of`] by a pass over every entry (kernels without
    /// `kallsyms_seqs_of_names`, and to cross-check the search). An entry is expanded only if
    /// the first two characters of its name begin one of `names` (a table of two-byte
    /// prefixes) and its length is one of theirs, so most entries cost a few token lookups.
    pub fn indices_by_scan(&self, mem: &dyn PhysMem, names: &[&str]) -> Result<Vec<Option<u32>>, KallsymsError> {
        self.decode_all(mem)?;
        let mut sorted: Vec<(&[u8], usize)> = names.iter().enumerate().map(|(k, n)| (n.as_bytes(), k)).collect();
        sorted.sort_unstable();
        let mut prefix = vec![false; 1 << 16];
        for (n, _) in &sorted {
            if let [a, b, ..] = n {
                prefix[usize::from(*a) << 8 | usize::from(*b)] = true;
            }
        }
        // Expanded lengths (type letter included) of the names wanted, as a bit set.
        let lengths: u128 = sorted.iter().filter(|(n, _)| n.len() < 127).fold(0, |m, (n, _)| m | 1 << (n.len() + 1));
        let mut out: Vec<Option<(u32, bool)>> = vec![None; names.len()];
        let mut buf: Vec<u8> = Vec::with_capacity(256);
        let cache = self.cache();
        for b in 0..self.marks.len() as u32 {
            let block = cache.get(&b).ok_or_else(|| corrupt(self.location.names, format!("block {b} not decoded")))?;
            for j in 0..block.entries() {
                let i = 256 * b + j as u32;
                let codes = block.codes(j);
                // Type letter and the name's first two characters.
                let mut head = [0u8; 3];
                let mut got = 0;
                for &c in codes {
                    for &ch in self.tokens[c as usize].iter().take(3 - got) {
                        head[got] = ch;
                        got += 1;
                    }
                    if got == 3 {
                        break;
                    }
                }
                if got == 3 && !prefix[usize::from(head[1]) << 8 | usize::from(head[2])] {
                    continue;
                }
                let len: usize = codes.iter().map(|&c| self.tokens[c as usize].len()).sum();
                if len >= 128 || lengths & 1 << len == 0 {
                    continue;
                }
                self.expand_in(block, j, &mut buf, len);
                let Some((&kind, name)) = buf.split_first() else { continue };
                let p = sorted.partition_point(|(n, _)| *n < name);
                let global = kind.is_ascii_uppercase();
                for &(_, k) in sorted[p..].iter().take_while(|(n, _)| *n == name) {
                    if out[k].is_none_or(|(_, g)| !g && global) {
                        out[k] = Some((i, global));
                    }
                }
            }
        }
        Ok(out.into_iter().map(|o| o.map(|(i, _)| i)).collect())
    }

    /// Addresses of symbols by index, read from `kallsyms_offsets` in one batch.
    pub fn addresses_by_index(&self, mem: &dyn PhysMem, idx: &[u32]) -> Result<Vec<KVirt>, KallsymsError> {
        self.raw_by_index(mem, idx)?.into_iter().zip(idx).map(|(v, &i)| self.decode_address(i, v)).collect()
    }

    /// The stored `kallsyms_offsets` values of symbols by index: those not read before, in one
    /// batch.
    fn raw_by_index(&self, mem: &dyn PhysMem, idx: &[u32]) -> Result<Vec<i32>, KallsymsError> {
        let mut known = self.offsets_read.lock().unwrap_or_else(|p| p.into_inner());
        let mut missing: Vec<u32> = idx.iter().copied().filter(|i| !known.contains_key(i)).collect();
        missing.sort_unstable();
        missing.dedup();
        let regions: Vec<(PhysAddr, usize)> =
            missing.iter().map(|&i| (PhysAddr(self.location.offsets.0 + 4 * u64::from(i)), 4)).collect();
        for (&i, r) in missing.iter().zip(read_many(mem, &regions)) {
            let raw = r?;
            known.insert(i, Bytes::new(&raw).i32(0).map_err(|e| corrupt(self.location.offsets, e.to_string()))?);
        }
        Ok(idx.iter().map(|i| known[i]).collect())
    }

    /// Whether addresses need the image's placement first ([`Kallsyms::place_image`]).
    pub fn needs_placement(&self) -> bool {
        self.location.mode == OffsetMode::PcRelative && self.image_delta.is_none()
    }

    /// Record where the image is mapped: `virtual = physical + delta` (wrapping).
    pub fn place_image(&mut self, delta: u64) {
        self.image_delta = Some(delta);
    }

    /// Physical addresses of named symbols of a pc-relative table (`None` where absent, or for
    /// the other encodings, whose addresses are virtual only).
    pub fn image_phys(&self, mem: &dyn PhysMem, names: &[&str]) -> Result<Vec<Option<PhysAddr>>, KallsymsError> {
        if self.location.mode != OffsetMode::PcRelative {
            return Ok(vec![None; names.len()]);
        }
        self.per_present_name(mem, names, |idx| {
            let raw = self.raw_by_index(mem, idx)?;
            Ok(idx.iter().zip(raw).map(|(&i, v)| self.pc_relative_phys(i, v)).collect())
        })
    }

    /// `f` applied to the indices of the names kallsyms has, spread back over `names` (`None`
    /// for the absent ones).
    fn per_present_name<T: Clone>(
        &self,
        mem: &dyn PhysMem,
        names: &[&str],
        f: impl FnOnce(&[u32]) -> Result<Vec<Option<T>>, KallsymsError>,
    ) -> Result<Vec<Option<T>>, KallsymsError> {
        let present: Vec<(usize, u32)> =
            self.indices_of(mem, names)?.into_iter().enumerate().filter_map(|(k, i)| i.map(|i| (k, i))).collect();
        let idx: Vec<u32> = present.iter().map(|&(_, i)| i).collect();
        let mut out = vec![None; names.len()];
        for ((k, _), v) in present.into_iter().zip(f(&idx)?) {
            out[k] = v;
        }
        Ok(out)
    }

    /// `&kallsyms_offsets[i] + v`, physically.
    fn pc_relative_phys(&self, i: u32, v: i32) -> Option<PhysAddr> {
        let entry = self.location.offsets.0.checked_add(4 * u64::from(i))?;
        entry.checked_add_signed(i64::from(v)).map(PhysAddr)
    }

    /// Addresses of named symbols in one batch; a missing name is an error naming it.
    pub fn addresses(&self, mem: &dyn PhysMem, names: &[&str]) -> Result<Vec<KVirt>, KallsymsError> {
        let idx = names
            .iter()
            .zip(self.indices_of(mem, names)?)
            .map(|(n, i)| i.ok_or_else(|| KallsymsError::NoSymbol { name: n.to_string() }))
            .collect::<Result<Vec<_>, _>>()?;
        self.addresses_by_index(mem, &idx)
    }

    /// Addresses of the named symbols that exist; absent names map to `None`.
    pub fn lookup(&self, mem: &dyn PhysMem, names: &[&str]) -> Result<Vec<Option<KVirt>>, KallsymsError> {
        self.per_present_name(mem, names, |idx| Ok(self.addresses_by_index(mem, idx)?.into_iter().map(Some).collect()))
    }

    /// Every symbol with its address (reads the whole stream and offsets table).
    pub fn all(&self, mem: &dyn PhysMem) -> Result<Vec<(KVirt, SymbolName)>, KallsymsError> {
        let names = self.names(mem)?;
        let len = 4 * self.location.num_syms as usize;
        let raw = read_vec(mem, self.location.offsets, len)?;
        let b = Bytes::new(&raw);
        let mut out = Vec::with_capacity(self.len());
        for (i, s) in names.into_iter().enumerate() {
            let v = b.i32(4 * i).map_err(|e| corrupt(self.location.offsets, e.to_string()))?;
            out.push((self.decode_address(i as u32, v)?, s));
        }
        Ok(out)
    }

    /// The end of the last table (`kallsyms_seqs_of_names` or the token index).
    pub fn end(&self) -> PhysAddr {
        match self.location.order {
            TableOrder::OffsetsFirst => PhysAddr(self.token_index.0 + 512),
            TableOrder::NamesFirst => {
                let n = u64::from(self.location.num_syms);
                let offsets_end = self.location.offsets.0 + 4 * n;
                let seqs = if self.location.relative_base.is_some() { ((offsets_end + 7) & !7) + 8 } else { offsets_end };
                PhysAddr(seqs + 3 * n)
            }
        }
    }

    fn decode_address(&self, i: u32, v: i32) -> Result<KVirt, KallsymsError> {
        let base = self.location.relative_base.map_or(0, |b| b.0);
        Ok(match self.location.mode {
            OffsetMode::AbsolutePercpu if v >= 0 => KVirt(v as u64),
            OffsetMode::AbsolutePercpu => KVirt(base.wrapping_sub(1).wrapping_sub(v as i64 as u64)),
            OffsetMode::Relative => KVirt(base.wrapping_add(v as u32 as u64)),
            OffsetMode::PcRelative => {
                let unplaced = || KallsymsError::Unplaced { offsets: self.location.offsets };
                let delta = self.image_delta.ok_or_else(unplaced)?;
                KVirt(self.pc_relative_phys(i, v).ok_or_else(unplaced)?.0.wrapping_add(delta))
            }
        })
    }
}

fn corrupt(addr: PhysAddr, reason: String) -> KallsymsError {
    KallsymsError::Corrupt { addr, reason }
}

fn align_to(x: u64, align: u64) -> Result<u64, KallsymsError> {
    align_up(x, align).ok_or_else(|| corrupt(PhysAddr(x), "address overflow".into()))
}

/// The first of `places` (token table address, alignment) that holds 256 NUL-terminated
/// tokens followed, at that alignment, by a token index agreeing with them: its position in
/// `places`, the tokens and the index's address. The first 4 KiB of each place are read with
/// room for an index behind them, all in one batch; a table longer than that is read again.
#[allow(clippy::type_complexity)]
fn read_tokens(mem: &dyn PhysMem, places: &[(u64, u64)]) -> Result<Option<(usize, (Vec<Vec<u8>>, PhysAddr))>, KallsymsError> {
    // Tables are 1-3 KiB: the first read takes this much and the index after it; a table that
    // runs past it is read again up to `MAX_TABLE` (one more round trip).
    const FIRST_TABLE: usize = 4 << 10;
    const MAX_TABLE: usize = 16 << 10;
    let regions: Vec<(PhysAddr, usize)> = places.iter().map(|&(tt, _)| (PhysAddr(tt), FIRST_TABLE + 8 + 512)).collect();
    for (k, (&(tt, align), read)) in places.iter().zip(read_many(mem, &regions)).enumerate() {
        // Near the end of memory: the table alone, then its index.
        let mut raw = match read {
            Ok(raw) => raw,
            Err(_) => match read_vec(mem, PhysAddr(tt), FIRST_TABLE) {
                Ok(raw) => raw,
                Err(_) => continue,
            },
        };
        let mut parsed = token_table(&raw, MAX_TABLE);
        if parsed == Err(true) {
            raw = match read_vec(mem, PhysAddr(tt), MAX_TABLE + 8 + 512).or_else(|_| read_vec(mem, PhysAddr(tt), MAX_TABLE)) {
                Ok(raw) => raw,
                Err(_) => continue,
            };
            parsed = token_table(&raw, MAX_TABLE);
        }
        let Ok((tokens, offsets, pos)) = parsed else { continue };
        let ti = align_to(tt + pos as u64, align)?;
        let idx = match raw.get((ti - tt) as usize..(ti - tt) as usize + 512) {
            Some(i) => i.to_vec(),
            None => match read_vec(mem, PhysAddr(ti), 512) {
                Ok(i) => i,
                Err(_) => continue,
            },
        };
        let ib = Bytes::new(&idx);
        if offsets.iter().enumerate().all(|(t, &off)| ib.u16(2 * t).ok().map(usize::from) == Some(off)) {
            return Ok(Some((k, (tokens, PhysAddr(ti)))));
        }
    }
    Ok(None)
}

/// 256 non-empty NUL-terminated tokens from the start of `raw`, ending within `max` bytes: the
/// tokens, where each starts, and the table's length; `Err(true)` if `raw` ends before the
/// table does (and is shorter than `max`), `Err(false)` if it is not a token table.
#[allow(clippy::type_complexity)]
fn token_table(raw: &[u8], max: usize) -> Result<(Vec<Vec<u8>>, Vec<usize>, usize), bool> {
    let mut tokens = Vec::with_capacity(256);
    let mut offsets = Vec::with_capacity(256);
    let mut pos = 0usize;
    for _ in 0..256 {
        let rest = &raw[pos.min(raw.len())..];
        let Some(len) = rest.iter().take(256).position(|&b| b == 0) else {
            return Err(rest.len() < 256 && raw.len() < max);
        };
        if len == 0 || pos + len >= max {
            return Err(false);
        }
        offsets.push(pos);
        tokens.push(rest[..len].to_vec());
        pos += len + 1;
    }
    Ok((tokens, offsets, pos))
}

#[cfg(test)]
mod tests;
