//! BTF (BPF Type Format), the kernel's own compact type information, parsed from the `.BTF`
//! blob found in memory.
//!
//! Layout: a header (magic 0xeB9F, version 1, `hdr_len`, then type and string sections as
//! offsets from the end of the header), a type section of variable-length records numbered
//! from 1, and a string section of NUL-terminated names.
//!
//! Invariant: [`Btf::parse`] validates the header (magic, version, sections inside the blob,
//! not overlapping the header) and indexes every type record or fails naming the offset of the
//! first bad one; the index is bounded by `type_len / 12`. Lookups never panic; recursive
//! walks (anonymous members, typedef chains) stop at a fixed depth.
//!
//! Part of a blob ([`Btf::parse_prefix`]: the first bytes of each section) answers a lookup
//! only if the answer cannot change with the rest: the types indexed are a prefix of the type
//! ids (up to the first record, or struct name, not wholly read), a struct lookup returns the
//! first struct of that name in id order, and a lookup that needed anything not read — a type
//! id past the prefix, a string past it, a struct name not found in it — marks the blob
//! [`Btf::short`], so that the caller reads more and asks again.
//!
//! Records and strings read one by one ([`Btf::sparse`], from a [`Sparse`]: a name-sorted BTF
//! read through the kernel's own index of it, `layout::sorted`) answer the same way: a lookup
//! that needs a record, a string or a name's types not read yet notes what it needs
//! ([`Btf::take_wants`]) and marks the blob short.

pub mod sparse;
pub mod types;

use std::collections::HashMap;
use std::sync::Arc;

use emulator::bytes::Bytes;
pub use sparse::{KernelIndex, Sparse, Wants};
pub use types::{Kind, Member, Type, TypeId};

pub const MAGIC: u16 = 0xeb9f;
const MAX_DEPTH: usize = 16;
/// Longest name read (a longer one is an error).
pub const MAX_NAME: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BtfError {
    #[error("BTF header: {0}")]
    Header(String),
    #[error("BTF type {id} at type-section offset {offset:#x}: {reason}")]
    Type { id: TypeId, offset: usize, reason: String },
    #[error("BTF string at offset {offset:#x}: {reason}")]
    Str { offset: u32, reason: String },
    #[error("BTF type id {id} does not exist ({count} types)")]
    NoType { id: TypeId, count: usize },
    #[error("BTF: {0}")]
    Lookup(String),
}

/// The parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Header {
    pub version: u8,
    pub flags: u8,
    pub hdr_len: u32,
    pub type_off: u32,
    pub type_len: u32,
    pub str_off: u32,
    pub str_len: u32,
}

impl Header {
    /// Parse and validate a header at the start of `data`; returns it and the total blob size
    /// it implies.
    pub fn parse(data: &[u8]) -> Result<(Header, usize), BtfError> {
        let b = Bytes::new(data);
        let e = |r: &str| BtfError::Header(r.to_owned());
        let magic = b.u16(0).map_err(|_| e("too short"))?;
        if magic != MAGIC {
            return Err(e(&format!("bad magic {magic:#06x}")));
        }
        let h = Header {
            version: b.u8(2).map_err(|_| e("too short"))?,
            flags: b.u8(3).map_err(|_| e("too short"))?,
            hdr_len: b.u32(4).map_err(|_| e("too short"))?,
            type_off: b.u32(8).map_err(|_| e("too short"))?,
            type_len: b.u32(12).map_err(|_| e("too short"))?,
            str_off: b.u32(16).map_err(|_| e("too short"))?,
            str_len: b.u32(20).map_err(|_| e("too short"))?,
        };
        if h.version != 1 {
            return Err(e(&format!("unsupported version {}", h.version)));
        }
        if h.hdr_len < 24 || h.hdr_len > 256 {
            return Err(e(&format!("implausible hdr_len {}", h.hdr_len)));
        }
        if !h.type_off.is_multiple_of(4) || !h.type_len.is_multiple_of(4) {
            return Err(e("type section not 4-byte aligned"));
        }
        let type_end = h.type_off as u64 + h.type_len as u64;
        let str_end = h.str_off as u64 + h.str_len as u64;
        if type_end > h.str_off as u64 && str_end > h.type_off as u64 {
            return Err(e("type and string sections overlap"));
        }
        let total = h.hdr_len as u64 + type_end.max(str_end);
        if total > (1 << 30) {
            return Err(e("blob larger than 1 GiB"));
        }
        Ok((h, total as usize))
    }
}

/// What has been read of a kernel's `.BTF` (kept in `Kernel::btf_blob`, filled by
/// `layout::btf`): a buffer of the blob's length holding its header and the first `types` and
/// `strs` bytes of its two sections, shared with the [`Btf`]s parsed from it (not copied).
#[derive(Debug, Default)]
pub struct BtfRead {
    pub(crate) data: Arc<Vec<u8>>,
    pub(crate) header: Option<Header>,
    pub(crate) types: usize,
    pub(crate) strs: usize,
    /// The index of what was parsed last, continued when more is read.
    pub(crate) indexed: Option<Arc<Indexed>>,
    /// What was read through the kernel's own index of a name-sorted blob (`layout::sorted`).
    pub(crate) sparse: Option<Arc<Sparse>>,
}

/// Bytes read for a `.BTF` header (24 on every kernel so far; the header's own length is in
/// it). `Kernel::open` reads them with the image's variables.
pub const HEAD_READ: u64 = 256;

impl BtfRead {
    /// The first bytes of a `.BTF` of `len` bytes, read: its header, parsed and checked to end
    /// within `len`, is kept (with the bytes) for the reads of its sections; the data kept
    /// before is dropped unless it is of a blob of the same length.
    pub fn take_header(&mut self, len: usize, head: &[u8]) -> Result<Header, String> {
        let (h, total) = Header::parse(head).map_err(|e| e.to_string())?;
        if total > len {
            return Err(format!("BTF sections end at {total:#x}, .BTF is {len:#x} bytes"));
        }
        if self.data.len() != len {
            *self = BtfRead { data: vec![0; len].into(), ..BtfRead::default() };
        }
        let n = head.len().min(len);
        Arc::make_mut(&mut self.data)[..n].copy_from_slice(&head[..n]);
        self.header = Some(h);
        Ok(h)
    }

    /// Read through the kernel's index of a name-sorted blob (`layout::sorted`) from now on.
    pub fn use_index(&mut self, index: KernelIndex) {
        self.sparse = Some(Arc::new(Sparse::new(index)));
    }

    /// Whether the kernel's index of a name-sorted blob is used (`layout::sorted`).
    pub fn is_indexed(&self) -> bool {
        self.sparse.is_some()
    }

    /// The kernel's index of a name-sorted blob, while it is used.
    pub fn index(&self) -> Option<KernelIndex> {
        self.sparse.as_ref().map(|s| s.index)
    }

    /// Whether both sections were read whole.
    pub fn whole(&self) -> bool {
        self.header.is_some_and(|h| self.types >= h.type_len as usize && self.strs >= h.str_len as usize)
    }
}

/// A parsed BTF blob, or the first part of one.
pub struct Btf {
    data: Arc<Vec<u8>>,
    pub header: Header,
    /// What indexing found (shared with the kernel's [`BtfRead`], extended when more is read).
    ix: Arc<Indexed>,
    /// Which sections a lookup needed more of (types, strings).
    short: std::cell::Cell<(bool, bool)>,
    /// Of a sparse blob: what was read one by one, and what lookups needed that was not.
    sparse: Option<(Arc<Sparse>, std::cell::RefCell<Wants>)>,
    /// Structs found by name and required members (`layout::btf`), so that each member lookup
    /// does not check them again.
    pub(crate) found: std::cell::RefCell<HashMap<(String, Vec<String>), TypeId>>,
}

/// The index of a blob or of the part read: where each record is, the structs by name, and
/// where indexing stopped, so that reading more of the blob continues it instead of redoing it.
#[derive(Debug, Clone, PartialEq)]
pub struct Indexed {
    /// Offset (in the type section) of each type record; index 0 is type id 1.
    index: Vec<u32>,
    structs_by_name: HashMap<Vec<u8>, Vec<TypeId>>,
    /// Bytes of the type and string sections that were read (the sections' lengths if whole).
    read: (usize, usize),
    /// Which section ended the index of a partial blob (types, strings).
    cut: (bool, bool),
    /// The first record not indexed: its offset in the type section and its id.
    stop: (usize, TypeId),
}

impl std::fmt::Debug for Btf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Btf").field("header", &self.header).field("types", &self.ix.index.len()).finish()
    }
}

impl Btf {
    /// Parse a blob (exactly the `.BTF` section, or longer).
    pub fn parse(data: impl Into<Arc<Vec<u8>>>) -> Result<Btf, BtfError> {
        Btf::parse_prefix(data, usize::MAX, usize::MAX)
    }

    /// Parse a blob of which only the header and the first `types` and `strs` bytes of the two
    /// sections were read (the rest of `data` is not looked at): see the module doc.
    pub fn parse_prefix(data: impl Into<Arc<Vec<u8>>>, types: usize, strs: usize) -> Result<Btf, BtfError> {
        Btf::parse_after(data, types, strs, None)
    }

    /// [`Btf::parse_prefix`], continuing `before` (the index of a shorter prefix of the same
    /// blob) from where it stopped; the same index as parsing from the start.
    pub fn parse_after(
        data: impl Into<Arc<Vec<u8>>>,
        types: usize,
        strs: usize,
        before: Option<Arc<Indexed>>,
    ) -> Result<Btf, BtfError> {
        let data = data.into();
        let (header, total) = Header::parse(&data)?;
        if total > data.len() {
            return Err(BtfError::Header(format!("sections end at {total:#x}, blob is {:#x} bytes", data.len())));
        }
        let read = (types.min(header.type_len as usize), strs.min(header.str_len as usize));
        let fresh = || Indexed { index: Vec::new(), structs_by_name: HashMap::new(), read, cut: (false, false), stop: (0, 1) };
        let mut ix = match before {
            Some(b) if b.read == read => {
                return Ok(Btf { data, header, ix: b, short: Default::default(), sparse: None, found: Default::default() })
            }
            Some(b) if b.read.0 <= read.0 && b.read.1 <= read.1 => Arc::try_unwrap(b).unwrap_or_else(|shared| (*shared).clone()),
            _ => fresh(),
        };
        (ix.read, ix.cut) = (read, (false, false));
        let btf = Btf { data, header, ix: Arc::new(fresh()), short: Default::default(), sparse: None, found: Default::default() };
        let partial = btf.is_partial();
        let mut records = Records { sec: btf.types_section(), pos: ix.stop.0, next_id: ix.stop.1, failed: false };
        loop {
            let at = (records.pos, records.next_id);
            let Some(item) = records.next() else {
                ix.stop = (records.pos, records.next_id);
                break;
            };
            let t = match item {
                Ok(t) => t,
                // A record cut by the end of what was read ends the prefix.
                Err(_) if partial => {
                    (ix.cut.0, ix.stop) = (true, at);
                    break;
                }
                Err(e) => return Err(e),
            };
            if t.kind == Kind::Struct && t.name_off != 0 {
                let name = match btf.str_at(t.name_off) {
                    Ok(n) => n.to_vec(),
                    // So does a struct whose name was not read: no struct after it is indexed.
                    Err(_) if partial => {
                        (ix.cut.1, ix.stop) = (true, at);
                        break;
                    }
                    Err(e) => return Err(e),
                };
                ix.structs_by_name.entry(name).or_default().push(t.id);
            }
            ix.index.push((t.extra_off - 12) as u32);
        }
        Ok(Btf { ix: Arc::new(ix), short: Default::default(), ..btf })
    }

    /// A blob of which only the records and strings `sparse` names were read (at their own
    /// offsets in `data`, a buffer of the blob's length): see the module doc.
    pub fn sparse(data: impl Into<Arc<Vec<u8>>>, sparse: Arc<Sparse>) -> Result<Btf, BtfError> {
        let data = data.into();
        let (header, total) = Header::parse(&data)?;
        if total > data.len() {
            return Err(BtfError::Header(format!("sections end at {total:#x}, blob is {:#x} bytes", data.len())));
        }
        let read = (header.type_len as usize, header.str_len as usize);
        let ix = Indexed { index: Vec::new(), structs_by_name: HashMap::new(), read, cut: (false, false), stop: (0, 1) };
        let sparse = Some((sparse, Default::default()));
        Ok(Btf { data, header, ix: Arc::new(ix), short: Default::default(), sparse, found: Default::default() })
    }

    /// What lookups on a sparse blob needed and did not find (empty for the others).
    pub fn take_wants(&self) -> Wants {
        self.sparse.as_ref().map(|(_, w)| w.take()).unwrap_or_default()
    }

    /// Whether this is a sparse blob ([`Btf::sparse`]).
    pub fn is_sparse(&self) -> bool {
        self.sparse.is_some()
    }

    /// Note a want of a sparse blob (and mark it short).
    fn want(&self, f: impl FnOnce(&mut Wants)) {
        if let Some((_, w)) = &self.sparse {
            f(&mut w.borrow_mut());
            self.short.set((true, self.short.get().1));
        }
    }

    /// The index, to continue with [`Btf::parse_after`] once more of the blob is read.
    pub fn indexed(&self) -> Arc<Indexed> {
        Arc::clone(&self.ix)
    }

    /// Whether only part of the blob was read.
    pub fn is_partial(&self) -> bool {
        self.sparse.is_some() || self.ix.read != (self.header.type_len as usize, self.header.str_len as usize)
    }

    /// Whether a lookup so far needed bytes that were not read (never, on a whole blob).
    pub fn short(&self) -> bool {
        self.short.get() != (false, false)
    }

    /// Of which sections a lookup needed more: (types, strings).
    pub fn short_of(&self) -> (bool, bool) {
        self.short.get()
    }

    /// Mark that a lookup needed more of the type section (`types`), the string section
    /// (`strs`), if only part was read.
    fn note(&self, types: bool, strs: bool) {
        if self.is_partial() {
            let (t, s) = self.short.get();
            self.short.set((t || types, s || strs));
        }
    }

    /// Mark that a lookup did not find a type it may find in more of the blob: more of the
    /// section that ended the index.
    pub(crate) fn note_short(&self) {
        if self.ix.cut.1 {
            self.note(false, true);
        } else if self.ix.read.0 < self.header.type_len as usize {
            self.note(true, false);
        }
        // Else every type was indexed with its name: what was not found is not there.
    }

    fn types_section(&self) -> Bytes<'_> {
        let h = &self.header;
        let start = h.hdr_len as usize + h.type_off as usize;
        Bytes::new(&self.data).sub(start, self.ix.read.0).unwrap_or(Bytes::new(&[]))
    }

    fn strings(&self) -> Bytes<'_> {
        let h = &self.header;
        let start = h.hdr_len as usize + h.str_off as usize;
        Bytes::new(&self.data).sub(start, self.ix.read.1).unwrap_or(Bytes::new(&[]))
    }

    /// The type section's bytes (for decoding kind-specific data elsewhere in the crate).
    pub(crate) fn type_bytes(&self) -> Bytes<'_> {
        self.types_section()
    }

    /// Every type record in order; stops for good after the first error.
    pub fn records(&self) -> Records<'_> {
        Records { sec: self.types_section(), pos: 0, next_id: 1, failed: false }
    }

    pub fn type_count(&self) -> usize {
        self.ix.index.len()
    }

    /// The string at `off` in the string section.
    pub fn str_at(&self, off: u32) -> Result<&[u8], BtfError> {
        if let Some((s, _)) = &self.sparse {
            return match s.str_at(self.strings(), off) {
                Ok(name) => Ok(name),
                Err(true) => {
                    self.want(|w| _ = w.strs.insert(off));
                    Err(BtfError::Str { offset: off, reason: "not read".into() })
                }
                Err(false) => Err(BtfError::Str { offset: off, reason: "outside the string section or unterminated".into() }),
            };
        }
        self.strings().cstr(off as usize, MAX_NAME).ok_or_else(|| {
            self.note(false, true);
            BtfError::Str { offset: off, reason: "outside the string section or unterminated".into() }
        })
    }

    pub fn name(&self, t: &Type) -> Result<String, BtfError> {
        Ok(String::from_utf8_lossy(self.str_at(t.name_off)?).into_owned())
    }

    /// The record for type `id` (not valid for 0 = void).
    pub fn get(&self, id: TypeId) -> Result<Type, BtfError> {
        if let Some((s, _)) = &self.sparse {
            if id == 0 || id >= s.index.nr {
                return Err(BtfError::NoType { id, count: s.index.nr as usize });
            }
            let Some(&off) = s.records.get(&id) else {
                self.want(|w| _ = w.ids.insert(id));
                return Err(BtfError::NoType { id, count: s.records.len() });
            };
            return parse_record(self.types_section(), off as usize, id);
        }
        let off = id.checked_sub(1).and_then(|i| self.ix.index.get(i as usize)).ok_or_else(|| {
            self.note_short();
            BtfError::NoType { id, count: self.ix.index.len() }
        })?;
        parse_record(self.types_section(), *off as usize, id)
    }

    /// Struct type ids with this name, in id order (of a partial blob: those in the part read,
    /// the first of which is the first of the whole blob; none found marks it short).
    pub fn structs_named(&self, name: &str) -> &[TypeId] {
        if let Some((s, _)) = &self.sparse {
            return match s.named.get(name.as_bytes()) {
                Some(ids) => ids.structs.as_slice(),
                None => {
                    self.want(|w| _ = w.names.insert(name.as_bytes().to_vec()));
                    &[]
                }
            };
        }
        let found = self.ix.structs_by_name.get(name.as_bytes()).map(Vec::as_slice).unwrap_or(&[]);
        if found.is_empty() {
            self.note_short();
        }
        found
    }

    /// Members of a struct or union.
    pub fn members(&self, t: &Type) -> Result<Vec<Member>, BtfError> {
        if !matches!(t.kind, Kind::Struct | Kind::Union) {
            return Err(BtfError::Lookup(format!("type {} is not a struct or union", t.id)));
        }
        let sec = self.types_section();
        (0..t.vlen as usize)
            .map(|i| {
                let o = t.extra_off + 12 * i;
                let err = |_| BtfError::Type { id: t.id, offset: o, reason: "member outside type section".into() };
                Ok(Member::new(sec.u32(o).map_err(err)?, sec.u32(o + 4).map_err(err)?, sec.u32(o + 8).map_err(err)?, t.kind_flag))
            })
            .collect()
    }

    /// Follow typedefs and modifiers to the underlying type.
    pub fn resolve(&self, mut id: TypeId) -> Result<Type, BtfError> {
        for _ in 0..MAX_DEPTH {
            let t = self.get(id)?;
            if !t.kind.is_alias() {
                return Ok(t);
            }
            id = t.size_or_type;
        }
        Err(BtfError::Lookup(format!("alias chain from type {id} deeper than {MAX_DEPTH}")))
    }

    /// Size in bytes of a type.
    pub fn size_of(&self, id: TypeId) -> Result<u64, BtfError> {
        let mut id = id;
        for _ in 0..MAX_DEPTH {
            let t = self.resolve(id)?;
            match t.kind {
                k if k.has_size() => return Ok(t.size_or_type as u64),
                Kind::Ptr => return Ok(8),
                Kind::Array => {
                    let sec = self.types_section();
                    let err = |_| BtfError::Type { id: t.id, offset: t.extra_off, reason: "array outside section".into() };
                    let elem = sec.u32(t.extra_off).map_err(err)?;
                    let n = sec.u32(t.extra_off + 8).map_err(err)? as u64;
                    return Ok(n.saturating_mul(self.size_of_shallow(elem)?));
                }
                _ => {
                    id = t.size_or_type;
                }
            }
        }
        Err(BtfError::Lookup(format!("size of type {id}: too deep")))
    }

    fn size_of_shallow(&self, id: TypeId) -> Result<u64, BtfError> {
        let t = self.resolve(id)?;
        match t.kind {
            k if k.has_size() => Ok(t.size_or_type as u64),
            Kind::Ptr => Ok(8),
            _ => Err(BtfError::Lookup(format!("array element type {id} has no simple size"))),
        }
    }

    /// Find member `name` of struct/union `id`, descending into anonymous struct/union
    /// members. Returns the member with its bit offset from the start of `id`.
    pub fn find_member(&self, id: TypeId, name: &str) -> Result<Option<Member>, BtfError> {
        self.find_member_depth(id, name.as_bytes(), 0)
    }

    fn find_member_depth(&self, id: TypeId, name: &[u8], depth: usize) -> Result<Option<Member>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(BtfError::Lookup(format!("anonymous members nested deeper than {MAX_DEPTH}")));
        }
        let t = self.resolve(id)?;
        for m in self.members(&t)? {
            if m.name_off == 0 {
                let inner = self.resolve(m.type_id)?;
                if matches!(inner.kind, Kind::Struct | Kind::Union) {
                    if let Some(found) = self.find_member_depth(inner.id, name, depth + 1)? {
                        let bit_offset = found.bit_offset.checked_add(m.bit_offset).ok_or_else(|| {
                            BtfError::Lookup(format!("member offset {} + {} bits in type {} overflows", found.bit_offset, m.bit_offset, inner.id))
                        })?;
                        return Ok(Some(Member { bit_offset, ..found }));
                    }
                }
            } else if self.str_at(m.name_off)? == name {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }
}

/// Iterator over type records; yields `Err` once and then stops.
pub struct Records<'a> {
    sec: Bytes<'a>,
    pos: usize,
    next_id: TypeId,
    failed: bool,
}

impl Iterator for Records<'_> {
    type Item = Result<Type, BtfError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.sec.len() {
            return None;
        }
        match parse_record(self.sec, self.pos, self.next_id) {
            Ok(t) => {
                // parse_record checked that the extra part fits.
                let extra = t.kind.extra_len(t.vlen).unwrap_or(0);
                self.pos = t.extra_off + extra;
                self.next_id += 1;
                Some(Ok(t))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

pub(crate) fn parse_record(sec: Bytes<'_>, off: usize, id: TypeId) -> Result<Type, BtfError> {
    let bad = |reason: &str| BtfError::Type { id, offset: off, reason: reason.to_owned() };
    let name_off = sec.u32(off).map_err(|_| bad("truncated record header"))?;
    let info = sec.u32(off + 4).map_err(|_| bad("truncated record header"))?;
    let size_or_type = sec.u32(off + 8).map_err(|_| bad("truncated record header"))?;
    let kind = Kind::from_raw(((info >> 24) & 0x1f) as u8);
    let vlen = info & 0xffff;
    let extra = kind.extra_len(vlen).ok_or_else(|| bad(&format!("unknown kind {kind:?}")))?;
    sec.slice(off + 12, extra).map_err(|_| bad("variable part runs past the type section"))?;
    Ok(Type { id, name_off, kind, vlen, kind_flag: info >> 31 != 0, size_or_type, extra_off: off + 12 })
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
