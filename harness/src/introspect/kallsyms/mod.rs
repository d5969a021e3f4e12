//! The kernel's own symbol table (kallsyms, every format from 5.10 to 7.x), decoded from
//! physical memory. Where the tables are and how addresses are encoded: [`locate`].
//!
//! Names are compressed: each entry is a ULEB128 length (one or two bytes) and that many token
//! numbers; token `t` expands to the NUL-terminated string at `token_table[token_index[t]]`; the
//! first character of the expansion is the symbol type (`T`, `d`, ...). `kallsyms_markers[k]`
//! is the offset of entry `256 k` in the names stream.
//!
//! Invariant: a [`Kallsyms`] exists only if the names stream walked to exactly `num_syms`
//! entries, every marker agreed with the walk, and the token index agreed with the token table —
//! three independent checks that a structural false positive cannot pass by chance. Every count
//! and length read from the guest is bounded before it sizes anything. A pc-relative table
//! yields no virtual address until the image is placed ([`Kallsyms::place_image`]).

pub mod locate;

use emulator::mem::{MemError, PhysAddr, PhysMem};

use super::addr::KVirt;
use emulator::bytes::{align_up, Bytes};
use super::physread::{read_many, read_vec};
pub use locate::{KallsymsLocation, LocateConfig, OffsetMode, TableOrder};

/// At most this many symbols (6.1 x86-64 distribution kernels have about 150 000).
pub const MAX_SYMS: u32 = 2_000_000;
/// At most this many bytes of compressed names.
const MAX_NAMES_BYTES: u64 = 64 << 20;
const CHUNK: usize = 64 << 10;
/// Bytes per compressed name read ahead for each symbol before the names stream is walked.
const NAME_BYTES_GUESS: u64 = 8;

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
/// Names stay compressed as the kernel stores them (the stream, each entry's offset in it, the
/// 256 tokens) and are expanded only when asked for: a lookup of a few dozen names expands each
/// entry only as far as it can still equal one of them, so opening a kernel does not pay for
/// 150 000 strings it never reads.
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
    names: Vec<u8>,
    entry_off: Vec<u32>,
    tokens: Vec<Vec<u8>>,
    /// `kallsyms_seqs_of_names` (6.2 on): entry indices in name order, when the table read is a
    /// permutation of the entries and a sample of neighbours is in order; lookups then search
    /// it instead of scanning every entry.
    by_name: Option<Vec<u32>>,
}

impl Kallsyms {
    /// Walk and decode the tables starting at `loc`.
    pub fn load(mem: &dyn PhysMem, loc: KallsymsLocation) -> Result<Kallsyms, KallsymsError> {
        let n = loc.num_syms;
        if n == 0 || n > MAX_SYMS {
            return Err(corrupt(loc.names, format!("implausible symbol count {n}")));
        }
        // Walk the names stream: only lengths are needed to find each entry. Read first what
        // `n` entries of a typical length take (about 8.5 bytes on Debian's and our builds),
        // then chunk by chunk: a few round trips instead of one per 64 KiB.
        let guess = (u64::from(n) * NAME_BYTES_GUESS).min(MAX_NAMES_BYTES) as usize;
        let mut names: Vec<u8> = read_vec(mem, loc.names, guess).unwrap_or_default();
        let mut entry_off: Vec<u32> = Vec::with_capacity(n as usize);
        let mut pos = 0usize;
        for _ in 0..n {
            if names.len() < pos + 2 {
                ensure(mem, loc.names, &mut names, pos + 2)?;
            }
            let (hdr, len) = entry_header(&names, pos);
            if len == 0 {
                return Err(corrupt(PhysAddr(loc.names.0 + pos as u64), "zero-length symbol".into()));
            }
            entry_off.push(pos as u32);
            pos += hdr + len;
        }
        ensure(mem, loc.names, &mut names, pos)?;
        names.truncate(pos);
        let names_len = pos as u64;

        // Markers: one per 256 entries, each equal to the walked offset, after the names at the
        // tables' alignment (8, or 4 in the pc-relative format); then the token table, directly
        // or after `kallsyms_seqs_of_names` (3 bytes each, OffsetsFirst from 6.2 to 6.3).
        let n_markers = n.div_ceil(256) as usize;
        let names_end = loc.names.0 + names_len;
        let mut found = None;
        for align in [8u64, 4] {
            let markers = PhysAddr(align_to(names_end, align)?);
            let Ok(mbuf) = read_vec(mem, markers, n_markers * 4) else { continue };
            let mb = Bytes::new(&mbuf);
            if !(0..n_markers).all(|k| mb.u32(k * 4).ok() == Some(entry_off[k * 256])) {
                continue;
            }
            let after_markers = markers.0 + n_markers as u64 * 4;
            let seqs_too = loc.order == TableOrder::OffsetsFirst;
            let seqs_end = align_to(after_markers, align)? + 3 * u64::from(n);
            let candidates = [(false, after_markers), (true, seqs_end)];
            for (seqs, at) in candidates.into_iter().filter(|(seqs, _)| !seqs || seqs_too) {
                let tt = align_to(at, align)?;
                if let Some(tokens) = read_tokens(mem, PhysAddr(tt), align)? {
                    found = Some((markers, seqs, tt, tokens));
                    break;
                }
            }
            if found.is_some() {
                break;
            }
        }
        let Some((markers, has_seqs, tt, (tokens, ti))) = found else {
            return Err(corrupt(PhysAddr(names_end), "no markers agreeing with the names, or no token table/index after them".into()));
        };

        // Each entry lies within the stream by construction of the walk above.
        let seqs = match loc.order {
            TableOrder::OffsetsFirst if has_seqs => Some(align_to(markers.0 + n_markers as u64 * 4, 8)?),
            TableOrder::OffsetsFirst => None,
            TableOrder::NamesFirst => {
                let offsets_end = loc.offsets.0 + 4 * u64::from(n);
                Some(if loc.relative_base.is_some() { align_to(offsets_end, 8)? + 8 } else { offsets_end })
            }
        };
        let mut k = Kallsyms {
            location: loc,
            markers,
            token_table: PhysAddr(tt),
            token_index: ti,
            has_seqs_of_names: has_seqs,
            names_len,
            image_delta: None,
            names,
            entry_off,
            tokens,
            by_name: None,
        };
        if let Some(at) = seqs {
            k.by_name = read_vec(mem, PhysAddr(at), 3 * n as usize).ok().and_then(|raw| k.name_order(&raw));
        }
        Ok(k)
    }

    /// The entry indices of a `kallsyms_seqs_of_names` table (3 bytes each, big-endian), if it is
    /// a permutation of the entries, 256 evenly spread neighbours are in name order, and a
    /// search for 32 evenly spread entries' names finds each. (A table that passes and is still
    /// out of order somewhere can only make a lookup miss a symbol, never return a wrong one:
    /// every hit is an entry whose expanded name equals the one asked for.)
    fn name_order(&self, raw: &[u8]) -> Option<Vec<u32>> {
        let n = self.len();
        let order: Vec<u32> = raw.chunks_exact(3).map(|b| u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2])).collect();
        let mut seen = vec![false; n];
        for &i in &order {
            let slot = seen.get_mut(i as usize)?;
            if std::mem::replace(slot, true) {
                return None;
            }
        }
        if order.len() != n {
            return None;
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for p in (0..n.saturating_sub(1)).step_by((n / 256).max(1)) {
            self.expand_into(order[p] as usize, &mut a, usize::MAX);
            self.expand_into(order[p + 1] as usize, &mut b, usize::MAX);
            if a.get(1..) > b.get(1..) {
                return None;
            }
        }
        let probes: Vec<String> = (0..n).step_by((n / 32).max(1)).filter_map(|i| self.symbol(i)).map(|s| s.name).collect();
        let refs: Vec<&str> = probes.iter().map(String::as_str).collect();
        self.indices_by_name(&order, &refs).iter().all(Option::is_some).then_some(order)
    }

    /// [`Kallsyms::indices_of`] by binary search in name order.
    fn indices_by_name(&self, order: &[u32], names: &[&str]) -> Vec<Option<u32>> {
        let mut buf = Vec::with_capacity(256);
        names
            .iter()
            .map(|want| {
                let want = want.as_bytes();
                let lo = order.partition_point(|&i| {
                    self.expand_into(i as usize, &mut buf, usize::MAX);
                    buf.get(1..).unwrap_or_default() < want
                });
                // Every entry of that name: the first global one in table order, else the first.
                let mut best: Option<(u32, bool)> = None;
                for &i in &order[lo..] {
                    self.expand_into(i as usize, &mut buf, usize::MAX);
                    if buf.get(1..).unwrap_or_default() != want {
                        break;
                    }
                    let global = buf.first().is_some_and(u8::is_ascii_uppercase);
                    let better = match best {
                        None => true,
                        Some((j, g)) => (global && !g) || (global == g && i < j),
                    };
                    if better {
                        best = Some((i, global));
                    }
                }
                best.map(|(i, _)| i)
            })
            .collect()
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.entry_off.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The token numbers of entry `i`.
    fn codes(&self, i: usize) -> &[u8] {
        let Some(&off) = self.entry_off.get(i) else { return &[] };
        let (hdr, len) = entry_header(&self.names, off as usize);
        self.names.get(off as usize + hdr..off as usize + hdr + len).unwrap_or(&[])
    }

    /// Expand entry `i` (type letter, then name) into `out`, stopping once it is longer than
    /// `limit`; whether it fit.
    fn expand_into(&self, i: usize, out: &mut Vec<u8>, limit: usize) -> bool {
        out.clear();
        for &c in self.codes(i) {
            out.extend_from_slice(&self.tokens[c as usize]);
            if out.len() > limit {
                return false;
            }
        }
        true
    }

    /// The type letter of symbol `i` (the first byte of its first token).
    pub fn kind(&self, i: usize) -> Option<char> {
        let c = *self.codes(i).first()?;
        self.tokens[c as usize].first().map(|&b| b as char)
    }

    /// Symbol `i`, expanded.
    pub fn symbol(&self, i: usize) -> Option<SymbolName> {
        let mut buf = Vec::new();
        self.expand_into(i, &mut buf, usize::MAX);
        let (&k, name) = buf.split_first()?;
        // Symbol names are ASCII; anything else is replaced per byte.
        let name = name.iter().map(|&b| if b.is_ascii() { b as char } else { '?' }).collect();
        Some(SymbolName { kind: k as char, name })
    }

    /// Every symbol, in table (address) order.
    pub fn iter(&self) -> impl Iterator<Item = SymbolName> + '_ {
        (0..self.len()).filter_map(|i| self.symbol(i))
    }

    /// Index of `name` in the table (the global one if the name repeats).
    pub fn index_of(&self, name: &str) -> Option<u32> {
        self.indices_of(&[name])[0]
    }

    /// Indices of several names in one pass over the table (global definitions preferred).
    /// An entry is expanded only if the first two characters of its name begin one of `names`
    /// (a table of two-byte prefixes) and its length is one of theirs, so most entries cost a
    /// few token lookups.
    pub fn indices_of(&self, names: &[&str]) -> Vec<Option<u32>> {
        match &self.by_name {
            Some(order) => self.indices_by_name(order, names),
            None => self.indices_by_scan(names),
        }
    }

    /// Whether lookups search `kallsyms_seqs_of_names` rather than scan.
    pub fn searches_by_name(&self) -> bool {
        self.by_name.is_some()
    }

    /// [`Kallsyms::indices_of`] by a pass over every entry (kernels without
    /// `kallsyms_seqs_of_names`, and to cross-check the search).
    pub fn indices_by_scan(&self, names: &[&str]) -> Vec<Option<u32>> {
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
        for i in 0..self.len() {
            // Type letter and the name's first two characters.
            let mut head = [0u8; 3];
            let mut got = 0;
            for &c in self.codes(i) {
                for &b in self.tokens[c as usize].iter().take(3 - got) {
                    head[got] = b;
                    got += 1;
                }
                if got == 3 {
                    break;
                }
            }
            if got == 3 && !prefix[usize::from(head[1]) << 8 | usize::from(head[2])] {
                continue;
            }
            let len: usize = self.codes(i).iter().map(|&c| self.tokens[c as usize].len()).sum();
            if len >= 128 || lengths & 1 << len == 0 {
                continue;
            }
            self.expand_into(i, &mut buf, len);
            let Some((&kind, name)) = buf.split_first() else { continue };
            let p = sorted.partition_point(|(n, _)| *n < name);
            let global = kind.is_ascii_uppercase();
            for &(_, k) in sorted[p..].iter().take_while(|(n, _)| *n == name) {
                if out[k].is_none_or(|(_, g)| !g && global) {
                    out[k] = Some((i as u32, global));
                }
            }
        }
        out.into_iter().map(|o| o.map(|(i, _)| i)).collect()
    }

    /// Addresses of symbols by index, read from `kallsyms_offsets` in one batch.
    pub fn addresses_by_index(&self, mem: &dyn PhysMem, idx: &[u32]) -> Result<Vec<KVirt>, KallsymsError> {
        self.raw_by_index(mem, idx)?.into_iter().zip(idx).map(|(v, &i)| self.decode(i, v)).collect()
    }

    /// The stored `kallsyms_offsets` values of symbols by index, in one batch.
    fn raw_by_index(&self, mem: &dyn PhysMem, idx: &[u32]) -> Result<Vec<i32>, KallsymsError> {
        let regions: Vec<(PhysAddr, usize)> =
            idx.iter().map(|&i| (PhysAddr(self.location.offsets.0 + 4 * u64::from(i)), 4)).collect();
        let mut out = Vec::with_capacity(idx.len());
        for r in read_many(mem, &regions) {
            let raw = r?;
            out.push(Bytes::new(&raw).i32(0).map_err(|e| corrupt(self.location.offsets, e.to_string()))?);
        }
        Ok(out)
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
        self.per_present_name(names, |idx| {
            let raw = self.raw_by_index(mem, idx)?;
            Ok(idx.iter().zip(raw).map(|(&i, v)| self.pc_relative_phys(i, v)).collect())
        })
    }

    /// `f` applied to the indices of the names kallsyms has, spread back over `names` (`None`
    /// for the absent ones).
    fn per_present_name<T: Clone>(
        &self,
        names: &[&str],
        f: impl FnOnce(&[u32]) -> Result<Vec<Option<T>>, KallsymsError>,
    ) -> Result<Vec<Option<T>>, KallsymsError> {
        let present: Vec<(usize, u32)> =
            self.indices_of(names).into_iter().enumerate().filter_map(|(k, i)| i.map(|i| (k, i))).collect();
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
            .zip(self.indices_of(names))
            .map(|(n, i)| i.ok_or_else(|| KallsymsError::NoSymbol { name: n.to_string() }))
            .collect::<Result<Vec<_>, _>>()?;
        self.addresses_by_index(mem, &idx)
    }

    /// Addresses of the named symbols that exist; absent names map to `None`.
    pub fn lookup(&self, mem: &dyn PhysMem, names: &[&str]) -> Result<Vec<Option<KVirt>>, KallsymsError> {
        self.per_present_name(names, |idx| Ok(self.addresses_by_index(mem, idx)?.into_iter().map(Some).collect()))
    }

    /// Every symbol with its address (reads the whole offsets table).
    pub fn all(&self, mem: &dyn PhysMem) -> Result<Vec<(KVirt, SymbolName)>, KallsymsError> {
        let len = 4 * self.location.num_syms as usize;
        let raw = read_vec(mem, self.location.offsets, len)?;
        let b = Bytes::new(&raw);
        let mut out = Vec::with_capacity(self.len());
        for (i, s) in self.iter().enumerate() {
            let v = b.i32(4 * i).map_err(|e| corrupt(self.location.offsets, e.to_string()))?;
            out.push((self.decode(i as u32, v)?, s));
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

    fn decode(&self, i: u32, v: i32) -> Result<KVirt, KallsymsError> {
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

/// `(header bytes, token count)` of the entry at `off`: a one- or two-byte ULEB128 length
/// (bytes past the end read as 0).
fn entry_header(names: &[u8], off: usize) -> (usize, usize) {
    let b0 = names.get(off).copied().unwrap_or(0);
    if b0 & 0x80 != 0 {
        (2, ((b0 & 0x7f) as usize) | ((names.get(off + 1).copied().unwrap_or(0) as usize) << 7))
    } else {
        (1, b0 as usize)
    }
}

fn corrupt(addr: PhysAddr, reason: String) -> KallsymsError {
    KallsymsError::Corrupt { addr, reason }
}

fn align_to(x: u64, align: u64) -> Result<u64, KallsymsError> {
    align_up(x, align).ok_or_else(|| corrupt(PhysAddr(x), "address overflow".into()))
}

/// Make sure `buf` (the names stream read so far, from `base`) holds at least `need` bytes.
fn ensure(mem: &dyn PhysMem, base: PhysAddr, buf: &mut Vec<u8>, need: usize) -> Result<(), KallsymsError> {
    while buf.len() < need {
        if buf.len() as u64 >= MAX_NAMES_BYTES {
            return Err(corrupt(base, format!("names stream longer than {MAX_NAMES_BYTES} bytes")));
        }
        let at = PhysAddr(base.0 + buf.len() as u64);
        // A full chunk may run past the end of RAM; fall back to exactly what is needed.
        let chunk = match read_vec(mem, at, CHUNK) {
            Ok(c) => c,
            Err(_) => read_vec(mem, at, need - buf.len())?,
        };
        buf.extend_from_slice(&chunk);
    }
    Ok(())
}

/// Parse 256 NUL-terminated tokens at `tt` and check the token index that follows them at
/// `align`. `Ok(None)` if the bytes there are not a token table.
#[allow(clippy::type_complexity)]
fn read_tokens(mem: &dyn PhysMem, tt: PhysAddr, align: u64) -> Result<Option<(Vec<Vec<u8>>, PhysAddr)>, KallsymsError> {
    const MAX_TABLE: usize = 16 << 10;
    let Ok(raw) = read_vec(mem, tt, MAX_TABLE) else { return Ok(None) };
    let b = Bytes::new(&raw);
    let mut tokens = Vec::with_capacity(256);
    let mut offsets = Vec::with_capacity(256);
    let mut pos = 0usize;
    for _ in 0..256 {
        let Some(s) = b.cstr(pos, 256) else { return Ok(None) };
        if s.is_empty() {
            return Ok(None);
        }
        offsets.push(pos);
        tokens.push(s.to_vec());
        pos += s.len() + 1;
    }
    let ti = PhysAddr(align_to(tt.0 + pos as u64, align)?);
    let Ok(idx) = read_vec(mem, ti, 512) else { return Ok(None) };
    let ib = Bytes::new(&idx);
    for (t, &off) in offsets.iter().enumerate() {
        if ib.u16(2 * t).ok().map(usize::from) != Some(off) {
            return Ok(None);
        }
    }
    Ok(Some((tokens, ti)))
}

#[cfg(test)]
mod tests;
