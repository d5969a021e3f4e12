//! Where the fields of the printk ring's structures sit, and the three ways to learn it.
//!
//! | method       | prerequisite                                   | source                                  |
//! |--------------|------------------------------------------------|-----------------------------------------|
//! | `vmcoreinfo` | VMCOREINFO in memory (`CONFIG_VMCORE_INFO`)    | `SYMBOL(prb)`, `OFFSET(..)`, `SIZE(..)` |
//! | `btf`        | `.BTF` and `prb` in kallsyms (`KALLSYMS_ALL`)  | the kernel's struct definitions         |
//! | `inferred`   | none                                           | the ring's invariants, found in `.data` |
//!
//! Since 5.10 the structures differ between versions in three places: `prb_desc_ring` gained
//! `last_finalized_seq` (6.10, and stable backports such as Debian's 6.1; 40 → 48 bytes, moving
//! `text_data_ring`), and `printk_info` gained the execution context (`CONFIG_PRINTK_EXECUTION_CTX`,
//! 7.x: 88 → 112 bytes, `dev_info` at 44). The head of `printk_info` — `u64 seq; u64 ts_nsec;
//! u16 text_len; u8 facility; u8 flags:5, level:3; u32 caller_id` — is the same in all of them;
//! VMCOREINFO does not export `facility`, `flags` and `level`, and their places are derived
//! from `text_len` and `caller_id` (as crash and makedumpfile do).
//!
//! Invariant: a [`PrbLayout`] returned by any method has passed [`PrbLayout::check`]: every
//! field lies inside its structure and every structure size is at most [`MAX_STRUCT`], so the
//! decoder's reads are bounded by the sizes here.

use serde::Serialize;

use crate::introspect::btf::Btf;
use crate::introspect::vmcoreinfo::VmcoreInfo;

/// Largest size accepted for any of the ring's structures (the largest today is 112 bytes).
pub const MAX_STRUCT: u64 = 4096;

/// A bitfield inside one byte of `printk_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bitfield {
    pub byte: u64,
    pub shift: u8,
    pub bits: u8,
}

/// Offsets (bytes) and sizes of the fields of the ring's structures that the decoder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PrbLayout {
    /// `struct printk_ringbuffer`.
    pub ring_size: u64,
    pub desc_ring: u64,
    pub text_data_ring: u64,
    pub fail: Option<u64>,
    /// `struct prb_desc_ring` (offsets from `desc_ring`).
    pub desc_ring_size: u64,
    pub count_bits: u64,
    pub descs: u64,
    pub infos: u64,
    pub head_id: u64,
    pub tail_id: u64,
    /// `struct prb_data_ring` (offsets from `text_data_ring`).
    pub data_ring_size: u64,
    pub size_bits: u64,
    pub data: u64,
    pub head_lpos: u64,
    pub tail_lpos: u64,
    /// `struct prb_desc` and its `struct prb_data_blk_lpos`.
    pub desc_size: u64,
    pub state_var: u64,
    pub text_blk_lpos: u64,
    pub lpos_begin: u64,
    pub lpos_next: u64,
    /// `struct printk_info`.
    pub info_size: u64,
    pub seq: u64,
    pub ts_nsec: u64,
    pub text_len: u64,
    pub text_len_size: u64,
    pub facility: u64,
    pub flags: Bitfield,
    pub level: Bitfield,
    pub caller_id: u64,
}

impl PrbLayout {
    /// The layout of Linux 5.10 and later with the two sizes that vary: `prb_desc_ring` (40, or
    /// 48 with `last_finalized_seq`) and `printk_info` (88, or 112 with the execution context).
    pub fn linux(desc_ring_size: u64, info_size: u64) -> PrbLayout {
        PrbLayout {
            ring_size: desc_ring_size + 32 + 8,
            desc_ring: 0,
            text_data_ring: desc_ring_size,
            fail: Some(desc_ring_size + 32),
            desc_ring_size,
            count_bits: 0,
            descs: 8,
            infos: 16,
            head_id: 24,
            tail_id: 32,
            data_ring_size: 32,
            size_bits: 0,
            data: 8,
            head_lpos: 16,
            tail_lpos: 24,
            desc_size: 24,
            state_var: 0,
            text_blk_lpos: 8,
            lpos_begin: 0,
            lpos_next: 8,
            info_size,
            seq: 0,
            ts_nsec: 8,
            text_len: 16,
            text_len_size: 2,
            facility: 18,
            flags: Bitfield { byte: 19, shift: 0, bits: 5 },
            level: Bitfield { byte: 19, shift: 5, bits: 3 },
            caller_id: 20,
        }
    }

    /// Every field inside its structure, every structure no larger than [`MAX_STRUCT`].
    pub fn check(&self) -> Result<(), String> {
        let structs = [
            ("printk_ringbuffer", self.ring_size),
            ("prb_desc_ring", self.desc_ring_size),
            ("prb_data_ring", self.data_ring_size),
            ("prb_desc", self.desc_size),
            ("printk_info", self.info_size),
        ];
        for (name, size) in structs {
            if size == 0 || size > MAX_STRUCT {
                return Err(format!("struct {name} has an implausible size {size}"));
            }
        }
        let fields: &[(&str, u64, u64, u64)] = &[
            ("printk_ringbuffer.desc_ring", self.desc_ring, self.desc_ring_size, self.ring_size),
            ("printk_ringbuffer.text_data_ring", self.text_data_ring, self.data_ring_size, self.ring_size),
            ("printk_ringbuffer.fail", self.fail.unwrap_or(0), 8, self.ring_size),
            ("prb_desc_ring.count_bits", self.count_bits, 4, self.desc_ring_size),
            ("prb_desc_ring.descs", self.descs, 8, self.desc_ring_size),
            ("prb_desc_ring.infos", self.infos, 8, self.desc_ring_size),
            ("prb_desc_ring.head_id", self.head_id, 8, self.desc_ring_size),
            ("prb_desc_ring.tail_id", self.tail_id, 8, self.desc_ring_size),
            ("prb_data_ring.size_bits", self.size_bits, 4, self.data_ring_size),
            ("prb_data_ring.data", self.data, 8, self.data_ring_size),
            ("prb_data_ring.head_lpos", self.head_lpos, 8, self.data_ring_size),
            ("prb_data_ring.tail_lpos", self.tail_lpos, 8, self.data_ring_size),
            ("prb_desc.state_var", self.state_var, 8, self.desc_size),
            ("prb_desc.text_blk_lpos", self.text_blk_lpos, 16, self.desc_size),
            ("prb_data_blk_lpos.begin", self.lpos_begin, 8, 16),
            ("prb_data_blk_lpos.next", self.lpos_next, 8, 16),
            ("printk_info.seq", self.seq, 8, self.info_size),
            ("printk_info.ts_nsec", self.ts_nsec, 8, self.info_size),
            ("printk_info.text_len", self.text_len, self.text_len_size, self.info_size),
            ("printk_info.facility", self.facility, 1, self.info_size),
            ("printk_info.flags", self.flags.byte, 1, self.info_size),
            ("printk_info.level", self.level.byte, 1, self.info_size),
            ("printk_info.caller_id", self.caller_id, 4, self.info_size),
        ];
        for &(name, off, size, within) in fields {
            if off.checked_add(size).is_none_or(|end| end > within) {
                return Err(format!("{name} at {off} (size {size}) runs past its structure's {within} bytes"));
            }
        }
        if !matches!(self.text_len_size, 1 | 2 | 4 | 8) {
            return Err(format!("printk_info.text_len has size {}, not an integer's", self.text_len_size));
        }
        for (name, b) in [("flags", self.flags), ("level", self.level)] {
            if b.bits == 0 || b.shift as u32 + b.bits as u32 > 8 {
                return Err(format!("printk_info.{name} is a bitfield of {} bits at bit {} of its byte", b.bits, b.shift));
            }
        }
        Ok(())
    }

    /// From VMCOREINFO's printk entries (kernel/printk/printk.c, `log_buf_vmcoreinfo_setup`).
    pub fn from_vmcoreinfo(v: &VmcoreInfo) -> Result<PrbLayout, String> {
        let off = |f: &str| v.offset(f).ok_or_else(|| format!("VMCOREINFO has no OFFSET({f})"));
        let size = |s: &str| v.size(s).ok_or_else(|| format!("VMCOREINFO has no SIZE({s})"));
        let text_len = off("printk_info.text_len")?;
        let caller_id = off("printk_info.caller_id")?;
        // `u16 text_len; u8 facility; u8 flags:5, level:3; u32 caller_id`: nothing else fits 4
        // bytes between the two.
        if caller_id != text_len + 4 {
            return Err(format!("printk_info.caller_id at {caller_id} is not 4 bytes after text_len at {text_len}: unknown printk_info"));
        }
        let l = PrbLayout {
            ring_size: size("printk_ringbuffer")?,
            desc_ring: off("printk_ringbuffer.desc_ring")?,
            text_data_ring: off("printk_ringbuffer.text_data_ring")?,
            fail: v.offset("printk_ringbuffer.fail"),
            desc_ring_size: size("prb_desc_ring")?,
            count_bits: off("prb_desc_ring.count_bits")?,
            descs: off("prb_desc_ring.descs")?,
            infos: off("prb_desc_ring.infos")?,
            head_id: off("prb_desc_ring.head_id")?,
            tail_id: off("prb_desc_ring.tail_id")?,
            data_ring_size: size("prb_data_ring")?,
            size_bits: off("prb_data_ring.size_bits")?,
            data: off("prb_data_ring.data")?,
            head_lpos: off("prb_data_ring.head_lpos")?,
            tail_lpos: off("prb_data_ring.tail_lpos")?,
            desc_size: size("prb_desc")?,
            state_var: off("prb_desc.state_var")?,
            text_blk_lpos: off("prb_desc.text_blk_lpos")?,
            lpos_begin: off("prb_data_blk_lpos.begin")?,
            lpos_next: off("prb_data_blk_lpos.next")?,
            info_size: size("printk_info")?,
            seq: off("printk_info.seq")?,
            ts_nsec: off("printk_info.ts_nsec")?,
            text_len,
            text_len_size: 2,
            facility: text_len + 2,
            flags: Bitfield { byte: text_len + 3, shift: 0, bits: 5 },
            level: Bitfield { byte: text_len + 3, shift: 5, bits: 3 },
            caller_id,
        };
        l.check()?;
        Ok(l)
    }

    /// From the kernel's BTF: every offset and size from the struct definitions, the bitfields
    /// included.
    pub fn from_btf(btf: &Btf) -> Result<PrbLayout, String> {
        let st = |name: &str| -> Result<u32, String> {
            btf.structs_named(name).first().copied().ok_or_else(|| format!("no struct {name} in BTF"))
        };
        let size = |name: &str| -> Result<u64, String> { btf.size_of(st(name)?).map_err(|e| e.to_string()) };
        // (byte offset, bit offset within the byte, bits (0 = not a bitfield), size in bytes)
        let member = |name: &str, field: &str| -> Result<(u64, u8, u8, u64), String> {
            let m = btf.find_member(st(name)?, field).map_err(|e| e.to_string())?.ok_or_else(|| format!("BTF struct {name} has no {field}"))?;
            let size = btf.size_of(m.type_id).map_err(|e| e.to_string())?;
            Ok(((m.bit_offset / 8) as u64, (m.bit_offset % 8) as u8, m.bitfield_size.min(255) as u8, size))
        };
        let off = |name: &str, field: &str| -> Result<u64, String> {
            let (byte, bit, bits, _) = member(name, field)?;
            if bit != 0 || bits != 0 {
                return Err(format!("{name}.{field} is a bitfield"));
            }
            Ok(byte)
        };
        let bitfield = |field: &str| -> Result<Bitfield, String> {
            let (byte, shift, bits, _) = member("printk_info", field)?;
            if bits == 0 {
                return Err(format!("printk_info.{field} is not a bitfield"));
            }
            Ok(Bitfield { byte, shift, bits })
        };
        let (text_len, _, _, text_len_size) = member("printk_info", "text_len")?;
        let l = PrbLayout {
            ring_size: size("printk_ringbuffer")?,
            desc_ring: off("printk_ringbuffer", "desc_ring")?,
            text_data_ring: off("printk_ringbuffer", "text_data_ring")?,
            fail: off("printk_ringbuffer", "fail").ok(),
            desc_ring_size: size("prb_desc_ring")?,
            count_bits: off("prb_desc_ring", "count_bits")?,
            descs: off("prb_desc_ring", "descs")?,
            infos: off("prb_desc_ring", "infos")?,
            head_id: off("prb_desc_ring", "head_id")?,
            tail_id: off("prb_desc_ring", "tail_id")?,
            data_ring_size: size("prb_data_ring")?,
            size_bits: off("prb_data_ring", "size_bits")?,
            data: off("prb_data_ring", "data")?,
            head_lpos: off("prb_data_ring", "head_lpos")?,
            tail_lpos: off("prb_data_ring", "tail_lpos")?,
            desc_size: size("prb_desc")?,
            state_var: off("prb_desc", "state_var")?,
            text_blk_lpos: off("prb_desc", "text_blk_lpos")?,
            lpos_begin: off("prb_data_blk_lpos", "begin")?,
            lpos_next: off("prb_data_blk_lpos", "next")?,
            info_size: size("printk_info")?,
            seq: off("printk_info", "seq")?,
            ts_nsec: off("printk_info", "ts_nsec")?,
            text_len,
            text_len_size,
            facility: off("printk_info", "facility")?,
            flags: bitfield("flags")?,
            level: bitfield("level")?,
            caller_id: off("printk_info", "caller_id")?,
        };
        l.check()?;
        Ok(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_linux_layouts_check() {
        for (dr, info) in [(40, 88), (48, 88), (48, 112)] {
            PrbLayout::linux(dr, info).check().unwrap();
        }
        let mut l = PrbLayout::linux(48, 88);
        l.caller_id = 86;
        assert!(l.check().unwrap_err().contains("caller_id"));
        l = PrbLayout::linux(48, 88);
        l.info_size = u64::MAX;
        assert!(l.check().is_err());
    }

    #[test]
    fn vmcoreinfo_of_linux_5_10() {
        // Debian 5.10's entries, as in its VMCOREINFO.
        let text = "OFFSET(printk_ringbuffer.desc_ring)=0\nOFFSET(printk_ringbuffer.text_data_ring)=40\n\
            OFFSET(printk_ringbuffer.fail)=72\nSIZE(printk_ringbuffer)=80\nSIZE(prb_desc_ring)=40\n\
            OFFSET(prb_desc_ring.count_bits)=0\nOFFSET(prb_desc_ring.descs)=8\nOFFSET(prb_desc_ring.infos)=16\n\
            OFFSET(prb_desc_ring.head_id)=24\nOFFSET(prb_desc_ring.tail_id)=32\nSIZE(prb_desc)=24\n\
            OFFSET(prb_desc.state_var)=0\nOFFSET(prb_desc.text_blk_lpos)=8\nSIZE(prb_data_blk_lpos)=16\n\
            OFFSET(prb_data_blk_lpos.begin)=0\nOFFSET(prb_data_blk_lpos.next)=8\nSIZE(printk_info)=88\n\
            OFFSET(printk_info.seq)=0\nOFFSET(printk_info.ts_nsec)=8\nOFFSET(printk_info.text_len)=16\n\
            OFFSET(printk_info.caller_id)=20\nOFFSET(printk_info.dev_info)=24\nSIZE(prb_data_ring)=32\n\
            OFFSET(prb_data_ring.size_bits)=0\nOFFSET(prb_data_ring.data)=8\nOFFSET(prb_data_ring.head_lpos)=16\n\
            OFFSET(prb_data_ring.tail_lpos)=24\n";
        let l = PrbLayout::from_vmcoreinfo(&VmcoreInfo::parse(text.as_bytes())).unwrap();
        assert_eq!(l, PrbLayout::linux(40, 88));
        let missing = VmcoreInfo::parse(text.replace("SIZE(prb_desc)=24\n", "").as_bytes());
        assert_eq!(PrbLayout::from_vmcoreinfo(&missing).unwrap_err(), "VMCOREINFO has no SIZE(prb_desc)");
    }
}
