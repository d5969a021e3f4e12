//! VMCOREINFO: the `KEY=VALUE` text the kernel prepares for crash tools.
//!
//! Keys used here: `OSRELEASE`, `KERNELOFFSET` (hex, no prefix), `NUMBER(phys_base)` (decimal),
//! `NUMBER(pgtable_l5_enabled)`, `SYMBOL(name)` (hex), `OFFSET(struct.field)` and `SIZE(struct)`
//! (decimal). The text lives in a page the kernel allocated at boot, reached through the
//! `vmcoreinfo_data` pointer.
//!
//! Invariant: parsing never fails — malformed lines are skipped — and looks at no more than
//! [`MAX_BYTES`]; typed getters return `None` for a missing or unparsable value.

use std::collections::BTreeMap;

use super::addr::KVirt;

/// `VMCOREINFO_BYTES` is one page.
pub const MAX_BYTES: usize = 4096;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VmcoreInfo {
    pub entries: BTreeMap<String, String>,
}

impl VmcoreInfo {
    /// Parse `KEY=VALUE` lines up to the first NUL.
    pub fn parse(bytes: &[u8]) -> VmcoreInfo {
        let bytes = &bytes[..bytes.len().min(MAX_BYTES)];
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let text = String::from_utf8_lossy(&bytes[..end]);
        let entries = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| !k.is_empty() && k.bytes().all(|b| b.is_ascii_graphic()))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        VmcoreInfo { entries }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    pub fn osrelease(&self) -> Option<&str> {
        self.get("OSRELEASE")
    }

    pub fn kernel_offset(&self) -> Option<u64> {
        u64::from_str_radix(self.get("KERNELOFFSET")?, 16).ok()
    }

    pub fn number(&self, name: &str) -> Option<i64> {
        self.get(&format!("NUMBER({name})"))?.parse().ok()
    }

    pub fn symbol(&self, name: &str) -> Option<KVirt> {
        u64::from_str_radix(self.get(&format!("SYMBOL({name})"))?, 16).ok().map(KVirt)
    }

    pub fn offset(&self, field: &str) -> Option<u64> {
        self.get(&format!("OFFSET({field})"))?.parse().ok()
    }

    pub fn size(&self, ty: &str) -> Option<u64> {
        self.get(&format!("SIZE({ty})"))?.parse().ok()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_format() {
        let v = VmcoreInfo::parse(
            b"OSRELEASE=6.1.0-56-amd64\nPAGESIZE=4096\nSYMBOL(init_uts_ns)=ffffffff9a813a20\n\
              NUMBER(phys_base)=-2147483648\nKERNELOFFSET=18000000\nOFFSET(list_head.next)=0\n\
              garbage line\n=novalue\n\0SYMBOL(after_nul)=1\n",
        );
        assert_eq!(v.osrelease(), Some("6.1.0-56-amd64"));
        assert_eq!(v.symbol("init_uts_ns"), Some(KVirt(0xffff_ffff_9a81_3a20)));
        assert_eq!(v.number("phys_base"), Some(-2147483648));
        assert_eq!(v.kernel_offset(), Some(0x1800_0000));
        assert_eq!(v.offset("list_head.next"), Some(0));
        assert_eq!(v.symbol("after_nul"), None);
        assert_eq!(v.entries.len(), 6);
    }
}
