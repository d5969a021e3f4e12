//! BTF type records (include/uapi/linux/btf.h): kinds, the fixed 12-byte header of each record,
//! and the size of the variable part that follows it.
//!
//! Invariant: [`Kind`] round-trips every 5-bit kind value (`Unknown(k)` for ones this parser
//! does not know), and [`Kind::extra_len`] is the only place that knows how long a record is —
//! an unknown kind has no known length, which stops the type iterator with an error.

/// A BTF type id; 0 is `void`.
pub type TypeId = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Ptr,
    Array,
    Struct,
    Union,
    Enum,
    Fwd,
    Typedef,
    Volatile,
    Const,
    Restrict,
    Func,
    FuncProto,
    Var,
    Datasec,
    Float,
    DeclTag,
    TypeTag,
    Enum64,
    Unknown(u8),
}

impl Kind {
    pub fn from_raw(k: u8) -> Kind {
        match k {
            1 => Kind::Int,
            2 => Kind::Ptr,
            3 => Kind::Array,
            4 => Kind::Struct,
            5 => Kind::Union,
            6 => Kind::Enum,
            7 => Kind::Fwd,
            8 => Kind::Typedef,
            9 => Kind::Volatile,
            10 => Kind::Const,
            11 => Kind::Restrict,
            12 => Kind::Func,
            13 => Kind::FuncProto,
            14 => Kind::Var,
            15 => Kind::Datasec,
            16 => Kind::Float,
            17 => Kind::DeclTag,
            18 => Kind::TypeTag,
            19 => Kind::Enum64,
            other => Kind::Unknown(other),
        }
    }

    /// Bytes following the 12-byte header for a record with `vlen` entries, or `None` for a
    /// kind whose layout is unknown.
    pub fn extra_len(self, vlen: u32) -> Option<usize> {
        let v = vlen as usize;
        Some(match self {
            Kind::Int => 4,
            Kind::Array => 12,
            Kind::Struct | Kind::Union => 12 * v,
            Kind::Enum => 8 * v,
            Kind::FuncProto => 8 * v,
            Kind::Var => 4,
            Kind::Datasec => 12 * v,
            Kind::DeclTag => 4,
            Kind::Enum64 => 12 * v,
            Kind::Ptr
            | Kind::Fwd
            | Kind::Typedef
            | Kind::Volatile
            | Kind::Const
            | Kind::Restrict
            | Kind::Func
            | Kind::Float
            | Kind::TypeTag => 0,
            Kind::Unknown(_) => return None,
        })
    }

    /// Kinds whose third word is a size (the others hold a type id there).
    pub fn has_size(self) -> bool {
        matches!(self, Kind::Int | Kind::Struct | Kind::Union | Kind::Enum | Kind::Datasec | Kind::Float | Kind::Enum64)
    }

    /// Modifiers and typedefs that name another type without changing its layout.
    pub fn is_alias(self) -> bool {
        matches!(self, Kind::Typedef | Kind::Volatile | Kind::Const | Kind::Restrict | Kind::TypeTag)
    }
}

/// One type record's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Type {
    pub id: TypeId,
    pub name_off: u32,
    pub kind: Kind,
    pub vlen: u32,
    pub kind_flag: bool,
    /// `size` for sized kinds, otherwise the referenced type id.
    pub size_or_type: u32,
    /// Offset of the variable part in the type section.
    pub extra_off: usize,
}

/// A struct/union member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub name_off: u32,
    pub type_id: TypeId,
    pub bit_offset: u32,
    /// Non-zero for a bitfield (only with the `kind_flag` encoding).
    pub bitfield_size: u32,
}

impl Member {
    /// Decode the offset word per the parent's `kind_flag`.
    pub fn new(name_off: u32, type_id: TypeId, offset: u32, kind_flag: bool) -> Member {
        if kind_flag {
            Member { name_off, type_id, bit_offset: offset & 0x00ff_ffff, bitfield_size: offset >> 24 }
        } else {
            Member { name_off, type_id, bit_offset: offset, bitfield_size: 0 }
        }
    }
}
