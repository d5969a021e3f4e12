//! Which kernel build a machine runs, read cheaply from its memory, and the cache of layouts
//! learned per build that lets a fleet sweep pay the layout once per kernel.
//!
//! The identity is the banner (`Linux version ...`, which names the release, the compiler and
//! the build number and date) and the GNU build ID of `vmlinux` (a SHA-1 the linker computes over
//! the whole image, so two builds that differ in any structure layout differ in it), taken
//! from, in order:
//! 1. VMCOREINFO's `BUILD-ID=` line (kernels with `CONFIG_CRASH_CORE`: free, it is already read);
//! 2. the `.notes` section between kallsyms' `__start_notes` and `__stop_notes` (kernels with
//!    `CONFIG_KALLSYMS_ALL`: one read of at most [`MAX_NOTES`] bytes through the image mapping);
//! 3. else a digest (SHA-256) of every kallsyms symbol's name and its address relative to
//!    `_text`: the placement of every function and variable kallsyms lists. Two builds with the
//!    same banner, the same symbols at the same places and different structure layouts would
//!    share it; that is weaker than a build ID and [`IdentitySource::KallsymsDigest`] says so.
//!
//! Invariant: a [`LayoutCache`] hands out a layout only for an identity equal in banner, source
//! and value to the one it was learned for; guest bytes are parsed with bounds checks only.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};

use sha2::{Digest, Sha256};

use super::addr::KVirt;
use super::kernel::Kernel;
use super::layout::{Layout, MethodKind};

/// Most bytes of `.notes` read (Linux's are a few hundred: build ID, Xen and Linux notes).
pub const MAX_NOTES: u64 = 4096;
/// `NT_GNU_BUILD_ID`.
const NT_GNU_BUILD_ID: u32 = 3;

/// Where the build's identity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentitySource {
    /// VMCOREINFO `BUILD-ID=`.
    Vmcoreinfo,
    /// The GNU build-ID note in `.notes`.
    Notes,
    /// SHA-256 of kallsyms (names and `_text`-relative addresses).
    KallsymsDigest,
}

/// A kernel build, as far as memory tells.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct KernelIdentity {
    pub banner: String,
    pub source: IdentitySource,
    /// Lower-case hex: the build ID, or the digest.
    pub id: String,
}

/// Why no identity could be read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("reading kallsyms for the kernel's identity: {0}")]
    Kallsyms(#[from] super::kallsyms::KallsymsError),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The descriptor of the first GNU build-ID note of an ELF note section (little-endian,
/// 4-byte aligned, as `vmlinux`'s `.notes`), or `None` (none there, or malformed notes).
pub fn build_id_note(notes: &[u8]) -> Option<Vec<u8>> {
    let parsed = emulator::image::notes::parse(notes, emulator::image::FileOffset(0), false, 4).ok()?;
    parsed.into_iter().find(|n| n.n_type == NT_GNU_BUILD_ID && n.name == "GNU" && !n.desc.is_empty()).map(|n| n.desc)
}

/// Read the identity of the kernel `kernel` found.
pub fn identify(kernel: &Kernel<'_>) -> Result<KernelIdentity, IdentityError> {
    let banner = kernel.info.banner.clone();
    let build_id = kernel.info.vmcoreinfo.as_ref().and_then(|v| v.get("BUILD-ID")).map(str::trim).filter(|s| {
        !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_hexdigit())
    });
    if let Some(id) = build_id {
        return Ok(KernelIdentity { banner, source: IdentitySource::Vmcoreinfo, id: id.to_ascii_lowercase() });
    }
    let mem = kernel.space.mem();
    if let [Some(start), Some(stop)] = kernel.kallsyms.lookup(mem, &["__start_notes", "__stop_notes"])?[..] {
        let len = stop.0.saturating_sub(start.0).min(MAX_NOTES) as usize;
        let mut buf = vec![0u8; len];
        if len > 0 && kernel.space.read(start, &mut buf).is_ok() {
            if let Some(id) = build_id_note(&buf) {
                return Ok(KernelIdentity { banner, source: IdentitySource::Notes, id: hex(&id) });
            }
        }
    }
    let all = kernel.kallsyms.all(mem)?;
    let text = kernel.info.text_virt;
    let mut h = Sha256::new();
    for (addr, sym) in &all {
        let KVirt(a) = *addr;
        h.update(a.wrapping_sub(text.0).to_le_bytes());
        h.update([sym.kind as u8]);
        h.update(sym.name.as_bytes());
        h.update([0]);
    }
    Ok(KernelIdentity { banner, source: IdentitySource::KallsymsDigest, id: hex(&h.finalize()) })
}

/// A cache entry: learned, or being learned by one thread (the others wait for it).
#[derive(Debug)]
enum Slot {
    Learning,
    Ready(MethodKind, Layout),
}

/// Layouts learned, by kernel identity; shared by the threads of a sweep. A build is learned
/// by one thread at a time: a thread asking for a build another is learning waits for it
/// (and learns itself if that one fails), so machines starting together on one kernel pay
/// its layout once.
#[derive(Debug, Default)]
pub struct LayoutCache {
    map: Mutex<HashMap<KernelIdentity, Slot>>,
    changed: Condvar,
}

/// Removes a `Learning` slot if its learner returns without a layout (error or panic).
struct Learner<'c> {
    cache: &'c LayoutCache,
    id: Option<KernelIdentity>,
}

impl Drop for Learner<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let mut map = self.cache.map.lock().unwrap_or_else(|e| e.into_inner());
            map.remove(&id);
            self.cache.changed.notify_all();
        }
    }
}

impl LayoutCache {
    pub fn new() -> LayoutCache {
        LayoutCache::default()
    }

    /// The layout learned for exactly this identity (`None` also while it is being learned).
    pub fn get(&self, id: &KernelIdentity) -> Option<(MethodKind, Layout)> {
        match self.map.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
            Some(Slot::Ready(m, l)) => Some((*m, l.clone())),
            _ => None,
        }
    }

    /// Remember the layout of `id` (the first one learned stays).
    pub fn insert(&self, id: KernelIdentity, method: MethodKind, layout: Layout) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(map.get(&id), Some(Slot::Ready(..))) {
            map.insert(id, Slot::Ready(method, layout));
        }
        self.changed.notify_all();
    }

    /// The layout of `id`: from the cache (`true`), or learned by `learn` now (`false`) and
    /// kept. While another thread learns the same build: waits for it if `wait`, else returns
    /// `Ok(None)` at once (the caller may read another machine meanwhile).
    pub fn get_or_learn<E>(
        &self,
        id: &KernelIdentity,
        wait: bool,
        learn: impl FnOnce() -> Result<(MethodKind, Layout), E>,
    ) -> Result<Option<((MethodKind, Layout), bool)>, E> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match map.get(id) {
                Some(Slot::Ready(m, l)) => return Ok(Some(((*m, l.clone()), true))),
                Some(Slot::Learning) if !wait => return Ok(None),
                Some(Slot::Learning) => map = self.changed.wait(map).unwrap_or_else(|e| e.into_inner()),
                None => break,
            }
        }
        map.insert(id.clone(), Slot::Learning);
        drop(map);
        let mut guard = Learner { cache: self, id: Some(id.clone()) };
        let learned = learn()?;
        guard.id = None;
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(id.clone(), Slot::Ready(learned.0, learned.1.clone()));
        self.changed.notify_all();
        Ok(Some((learned, false)))
    }

    /// How many kernel builds it knows.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).values().filter(|s| matches!(s, Slot::Ready(..))).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use emulator::image::notes::encode as note;

    #[test]
    fn build_id_is_found_after_other_notes() {
        let mut notes = note(b"Xen\0", 6, b"xen-3.0\0");
        notes.extend(note(b"GNU\0", 3, &[0xab; 20]));
        notes.extend(note(b"Linux\0", 0x100, &[1, 2, 3]));
        assert_eq!(build_id_note(&notes), Some(vec![0xab; 20]));
    }

    #[test]
    fn hostile_notes_are_refused_not_panicked_on() {
        assert_eq!(build_id_note(&[]), None);
        assert_eq!(build_id_note(&[0xff; 12]), None);
        let mut huge = note(b"GNU\0", 3, &[1; 20]);
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(build_id_note(&huge), None);
        // all zeros: empty notes, no build ID
        assert_eq!(build_id_note(&[0u8; 64]), None);
        let mut cut = note(b"GNU\0", 3, &[7; 20]);
        cut.truncate(30);
        assert_eq!(build_id_note(&cut), None);
    }

    #[test]
    fn the_cache_never_mixes_builds_with_one_banner() {
        let id = |source, id: &str| KernelIdentity { banner: "Linux version 6.1.0".into(), source, id: id.into() };
        let layout = crate::introspect::layout::fixed::debian_6_1_amd64();
        let cache = LayoutCache::new();
        cache.insert(id(IdentitySource::Notes, "aa"), MethodKind::Btf, layout.clone());
        assert_eq!(cache.get(&id(IdentitySource::Notes, "aa")), Some((MethodKind::Btf, layout)));
        assert_eq!(cache.get(&id(IdentitySource::Notes, "ab")), None);
        assert_eq!(cache.get(&id(IdentitySource::Vmcoreinfo, "aa")), None);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn one_thread_learns_a_build_the_others_wait() {
        let id = KernelIdentity { banner: "b".into(), source: IdentitySource::Vmcoreinfo, id: "1".into() };
        let layout = crate::introspect::layout::fixed::debian_6_1_amd64();
        let cache = LayoutCache::new();
        let learned = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let got = cache.get_or_learn(&id, true, || {
                        learned.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        Ok::<_, ()>((MethodKind::Btf, layout.clone()))
                    });
                    assert_eq!(got.unwrap().unwrap().0 .1, layout);
                });
            }
        });
        assert_eq!(learned.into_inner(), 1);
        // a failed learner leaves no trace: the next caller learns
        let other = KernelIdentity { id: "2".into(), ..id.clone() };
        assert_eq!(cache.get_or_learn(&other, true, || Err::<(MethodKind, Layout), _>("no")), Err("no"));
        assert_eq!(cache.get_or_learn(&other, true, || Ok::<_, ()>((MethodKind::Heuristic, layout.clone()))).unwrap().unwrap().1, false);
        // while a build is being learned, a caller that does not wait is told so
        cache.map.lock().unwrap().insert(KernelIdentity { id: "3".into(), ..id.clone() }, Slot::Learning);
        let third = KernelIdentity { id: "3".into(), ..id.clone() };
        assert_eq!(cache.get_or_learn(&third, false, || Err::<(MethodKind, Layout), _>("must not learn")), Ok(None));
        assert_eq!(cache.len(), 2);
    }
}
