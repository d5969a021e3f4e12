//! Virtual addresses, typed by the address space they belong to.
//!
//! Invariant: a [`KVirt`] is an address in the guest kernel's virtual address space and a
//! [`UVirt`] an address in one process's user space. Neither converts to the other or to
//! [`PhysAddr`](emulator::mem::PhysAddr) implicitly: the only way from a virtual address to a
//! physical one is a translation (`paging`, `kspace`), which can fail.

use std::fmt;

/// Behaviour shared by the virtual address types, so one page-table walker serves both.
pub trait Virt: Copy + PartialEq + fmt::Debug + fmt::Display + fmt::LowerHex {
    /// The raw 64-bit value.
    fn raw(self) -> u64;
    /// The address of this space with this raw value.
    fn from_raw(raw: u64) -> Self;
}

macro_rules! virt_type {
    ($name:ident, $label:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        emulator::address_impls!($name, $label);

        impl $name {
            /// `self + off`, wrapping (for offsets applied to untrusted pointers before validation).
            pub const fn wrapping_add(self, off: u64) -> Self {
                $name(self.0.wrapping_add(off))
            }
            /// Whether bits 63..=`bits-1` are all equal (x86-64 canonical form for a
            /// `bits`-bit virtual address space: 48 for 4-level, 57 for 5-level paging).
            pub const fn is_canonical(self, bits: u32) -> bool {
                let shift = 64 - bits;
                (((self.0 << shift) as i64) >> shift) as u64 == self.0
            }
        }

        impl Virt for $name {
            fn raw(self) -> u64 {
                self.0
            }
            fn from_raw(raw: u64) -> Self {
                $name(raw)
            }
        }
    };
}

virt_type!(KVirt, "kvirt", "A guest kernel virtual address.");
virt_type!(UVirt, "uvirt", "A guest user-space virtual address (meaningful only with its process's page tables).");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        assert!(KVirt(0xffff_8880_0000_0000).is_canonical(48));
        assert!(KVirt(0x0000_7fff_ffff_f000).is_canonical(48));
        assert!(!KVirt(0x0000_8000_0000_0000).is_canonical(48));
        assert!(!KVirt(0xff11_0000_0000_0000).is_canonical(48));
        assert!(KVirt(0xff11_0000_0000_0000).is_canonical(57));
        assert!(!KVirt(0xfe11_0000_0000_0000).is_canonical(57));
    }

    #[test]
    fn display_names_the_space() {
        assert_eq!(KVirt(0x1000).to_string(), "kvirt 0x1000");
        assert_eq!(format!("{:?}", UVirt(0x2000)), "UVirt(0x2000)");
        assert_eq!(format!("{:#x}", KVirt(0x3000)), "0x3000");
    }
}
