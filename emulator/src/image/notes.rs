//! ELF notes (`namesz, descsz, type, name, desc`), as found in ELF cores' PT_NOTE segments
//! and in kdump files' note area: per-CPU registers (`CORE`), QEMU CPU state (`QEMU`) and,
//! when the guest kernel published one, `VMCOREINFO`.
//!
//! Invariant: parsing is informational only — nothing in the memory path depends on notes.
//! The iterator stops for good at the first malformed note and is bounded by the note area,
//! which callers cap at [`MAX_NOTES_BYTES`].

use super::{FileOffset, ParseError};

/// Largest note area read.
pub const MAX_NOTES_BYTES: u64 = 64 << 20;

/// One ELF note.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Note {
    /// Owner name, without trailing NULs ("CORE", "QEMU", "VMCOREINFO").
    pub name: String,
    pub n_type: u32,
    pub desc: Vec<u8>,
    /// Where the note header is in the file.
    pub at: FileOffset,
}

impl Note {
    /// The note's descriptor as text, if this is a VMCOREINFO note.
    pub fn vmcoreinfo(&self) -> Option<String> {
        (self.name == "VMCOREINFO").then(|| {
            String::from_utf8_lossy(&self.desc)
                .trim_end_matches('\0')
                .to_string()
        })
    }
}

/// Parse the notes in `data`, which was read from file offset `base`. `desc_align` is 4, or 8
/// for segments with `p_align == 8`.
pub fn parse(
    data: &[u8],
    base: FileOffset,
    big_endian: bool,
    desc_align: usize,
) -> Result<Vec<Note>, ParseError> {
    let align = |n: usize| n.checked_add(desc_align - 1).map(|v| v & !(desc_align - 1));
    let word = |i: usize| -> Option<u32> {
        let b: [u8; 4] = data.get(i..i.checked_add(4)?)?.try_into().ok()?;
        Some(if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    let mut notes = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let at = FileOffset(base.0.saturating_add(pos as u64));
        let bad = |reason: &str| ParseError::invalid(at, "ELF note", reason.to_string());
        let (Some(namesz), Some(descsz), Some(n_type)) = (word(pos), word(pos + 4), word(pos + 8))
        else {
            // Trailing padding shorter than a header is tolerated only if it is zero.
            if data[pos..].iter().all(|&b| b == 0) {
                break;
            }
            return Err(bad("truncated note header"));
        };
        let name_at = pos + 12;
        let name_end = name_at
            .checked_add(namesz as usize)
            .ok_or_else(|| bad("name size overflows"))?;
        let name = data
            .get(name_at..name_end)
            .ok_or_else(|| bad("name runs past the note area"))?;
        let desc_at = align(name_end).ok_or_else(|| bad("name size overflows"))?;
        let desc_end = desc_at
            .checked_add(descsz as usize)
            .ok_or_else(|| bad("descriptor size overflows"))?;
        let desc = data
            .get(desc_at..desc_end)
            .ok_or_else(|| bad("descriptor runs past the note area"))?;
        let name = String::from_utf8_lossy(name)
            .trim_end_matches('\0')
            .to_string();
        notes.push(Note {
            name,
            n_type,
            desc: desc.to_vec(),
            at,
        });
        pos = align(desc_end).ok_or_else(|| bad("descriptor size overflows"))?;
    }
    Ok(notes)
}

/// One little-endian note with 4-byte alignment, `name` as given (NUL included by the caller):
/// for building test inputs.
pub fn encode(name: &[u8], n_type: u32, desc: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend((name.len() as u32).to_le_bytes());
    v.extend((desc.len() as u32).to_le_bytes());
    v.extend(n_type.to_le_bytes());
    v.extend(name);
    v.resize(v.len().next_multiple_of(4), 0);
    v.extend(desc);
    v.resize(v.len().next_multiple_of(4), 0);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &[u8], n_type: u32, desc: &[u8]) -> Vec<u8> {
        encode(name, n_type, desc)
    }

    #[test]
    fn parses_and_finds_vmcoreinfo() {
        let mut data = note(b"CORE\0", 1, &[7; 10]);
        data.extend(note(
            b"VMCOREINFO\0",
            0,
            b"OSRELEASE=6.1.0\nPAGESIZE=4096\n",
        ));
        let notes = parse(&data, FileOffset(0x100), false, 4).unwrap();
        assert_eq!(notes.len(), 2);
        assert_eq!(notes[0].name, "CORE");
        assert_eq!(notes[0].desc, vec![7; 10]);
        assert_eq!(notes[1].at, FileOffset(0x100 + 12 + 8 + 12));
        assert_eq!(
            notes[1].vmcoreinfo().unwrap(),
            "OSRELEASE=6.1.0\nPAGESIZE=4096\n"
        );
    }

    #[test]
    fn malformed_notes_are_errors_with_offsets() {
        let data = note(b"CORE\0", 1, &[7; 10]);
        for cut in 1..data.len() - 2 {
            let r = parse(&data[..cut], FileOffset(0), false, 4);
            assert!(r.is_err(), "cut {cut}");
        }
        let mut huge = data.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            parse(&huge, FileOffset(0x40), false, 4)
                .unwrap_err()
                .offset(),
            FileOffset(0x40)
        );
    }
}
