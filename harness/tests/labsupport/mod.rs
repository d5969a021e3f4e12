//! Validation helpers for the corpus tests: an ELF-core reader, System.map, and a minimal walk of
//! the task list using the *reference* data (System.map, layout.json). This is test code checking
//! the corpus against the kernel's own build; it is never the analysis under test.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use harness::kbuild::Layout;
use harness::lab::corpus::{Corpus, Entry};

pub const BUILD_HINT: &str = "run `cargo run --release -p harness -- corpus build`";

/// The corpus entry, or a failure saying how to build it.
pub fn entry(name: &str) -> Entry {
    match Corpus::open_default().entry(name) {
        Ok(e) => e,
        Err(e) => panic!("corpus entry {name} missing ({e}); {BUILD_HINT}"),
    }
}

/// An ELF core mapped read-only: PT_LOAD segments as (paddr, file offset, size).
pub struct ElfDump {
    map: memmap2::Mmap,
    segments: Vec<(u64, u64, u64)>,
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

impl ElfDump {
    pub fn open(path: &Path) -> Result<ElfDump, String> {
        let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: the corpus files are not modified while tests run.
        let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| format!("{}: {e}", path.display()))?;
        if map.get(..4) != Some(b"\x7fELF") || map.get(4) != Some(&2) {
            return Err(format!("{}: not an ELF64 file", path.display()));
        }
        let phoff = u64_at(&map, 0x20).ok_or("short header")? as usize;
        let phentsize = u16_at(&map, 0x36).ok_or("short header")? as usize;
        let phnum = u16_at(&map, 0x38).ok_or("short header")? as usize;
        let mut segments = Vec::new();
        for i in 0..phnum.min(4096) {
            let o = phoff + i * phentsize;
            if u32_at(&map, o).ok_or("short phdr")? != 1 {
                continue; // not PT_LOAD
            }
            let off = u64_at(&map, o + 8).ok_or("short phdr")?;
            let paddr = u64_at(&map, o + 24).ok_or("short phdr")?;
            let filesz = u64_at(&map, o + 32).ok_or("short phdr")?;
            match off.checked_add(filesz) {
                Some(end) if end <= map.len() as u64 => {}
                _ => return Err(format!("segment at {paddr:#x} beyond end of file")),
            }
            segments.push((paddr, off, filesz));
        }
        Ok(ElfDump { map, segments })
    }

    pub fn segments(&self) -> &[(u64, u64, u64)] {
        &self.segments
    }

    /// `len` bytes at physical address `pa`, if inside one segment.
    pub fn read(&self, pa: u64, len: usize) -> Option<&[u8]> {
        for &(p, off, size) in &self.segments {
            if pa >= p && pa + len as u64 <= p + size {
                let start = (off + pa - p) as usize;
                return self.map.get(start..start + len);
            }
        }
        None
    }
    pub fn u64(&self, pa: u64) -> Option<u64> {
        u64_at(self.read(pa, 8)?, 0)
    }
    pub fn u32(&self, pa: u64) -> Option<u32> {
        u32_at(self.read(pa, 4)?, 0)
    }

    /// Physical addresses of every occurrence of `needle`.
    pub fn find_all(&self, needle: &[u8]) -> Vec<u64> {
        let mut out = Vec::new();
        for &(p, off, size) in &self.segments {
            let data = &self.map[off as usize..(off + size) as usize];
            for i in memchr::memmem::find_iter(data, needle) {
                out.push(p + i as u64);
            }
        }
        out
    }
}

pub fn system_map(e: &Entry) -> HashMap<String, u64> {
    let text = std::fs::read_to_string(e.system_map_path()).expect("reference/System.map readable");
    let mut m = HashMap::new();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        if let (Some(a), Some(_t), Some(name)) = (w.next(), w.next(), w.next()) {
            if let Ok(a) = u64::from_str_radix(a, 16) {
                m.entry(name.to_string()).or_insert(a);
            }
        }
    }
    m
}

/// Where the kernel image and the direct map are in one dump, found from the banner.
pub struct KernelPlace {
    /// Physical address of `_text` (link address 0xffffffff81000000 before KASLR).
    pub phys_text: u64,
    /// Physical address of `init_task`.
    pub init_task_pa: u64,
}

/// Finds the physical place of the kernel image: the occurrence of `Linux version <release> (`
/// that, taken as `linux_banner`, puts "swapper" at init_task's comm.
pub fn place_kernel(dump: &ElfDump, e: &Entry, sm: &HashMap<String, u64>, layout: &Layout) -> Result<KernelPlace, String> {
    let banner = sm.get("linux_banner").ok_or("System.map has no linux_banner")?;
    let text = sm.get("_text").ok_or("System.map has no _text")?;
    let init = sm.get("init_task").ok_or("System.map has no init_task")?;
    let comm = layout.offset("task_struct.comm").ok_or("layout has no task_struct.comm")?;
    let needle = format!("Linux version {} (", e.release);
    let hits = dump.find_all(needle.as_bytes());
    for pa in &hits {
        let Some(phys_text) = pa.checked_sub(banner - text) else { continue };
        let init_task_pa = phys_text + (init - text);
        if dump.read(init_task_pa + comm, 7) == Some(b"swapper") {
            return Ok(KernelPlace { phys_text, init_task_pa });
        }
    }
    Err(format!("{} banner hits, none places init_task's comm \"swapper\"", hits.len()))
}

/// One task as read from memory with the reference layout.
#[derive(Debug, Clone)]
pub struct MemTask {
    pub pid: u32,
    pub tgid: u32,
    pub comm: Vec<u8>,
    pub uid: u32,
    pub state: u32,
    pub exit_state: u32,
    pub flags: u32,
    pub threads: usize,
}

/// Walks `init_task.tasks` (processes) and each process's `signal->thread_head` (threads count).
pub fn walk_tasks(dump: &ElfDump, sm: &HashMap<String, u64>, layout: &Layout, place: &KernelPlace) -> Result<Vec<MemTask>, String> {
    let off = |k: &str| layout.offset(k).ok_or_else(|| format!("layout has no {k}"));
    let (o_tasks, o_pid, o_tgid, o_comm) = (off("task_struct.tasks")?, off("task_struct.pid")?, off("task_struct.tgid")?, off("task_struct.comm")?);
    let (o_cred, o_state, o_exit, o_flags) = (off("task_struct.real_cred")?, off("task_struct.__state")?, off("task_struct.exit_state")?, off("task_struct.flags")?);
    let (o_signal, o_thread_head, o_uid) = (off("task_struct.signal")?, off("signal_struct.thread_head")?, off("cred.uid")?);

    // The kernel image's virtual placement: the first process's tasks.prev is &init_task.tasks.
    let first = dump.u64(place.init_task_pa + o_tasks).ok_or("init_task.tasks unreadable")?;
    let text_sym = sm["_text"];
    // Direct map base: the variable when memory randomisation is on, else the fixed 4-level base.
    let page_offset = match sm.get("page_offset_base") {
        Some(v) => dump.u64(place.phys_text + (v - text_sym)).ok_or("page_offset_base unreadable")?,
        None => 0xffff_8880_0000_0000,
    };
    let first_pa = first.checked_sub(page_offset).ok_or("tasks.next not in the direct map")?;
    let init_tasks_va = dump.u64(first_pa + 8).ok_or("first task unreadable")?;
    let init_va = init_tasks_va - o_tasks;
    let image_delta = init_va.wrapping_sub(place.init_task_pa); // va - pa inside the kernel image
    let va2pa = |va: u64| -> Option<u64> {
        if va >= 0xffff_ffff_8000_0000 {
            Some(va.wrapping_sub(image_delta))
        } else if va >= page_offset {
            Some(va - page_offset)
        } else {
            None
        }
    };

    let read_task = |task_pa: u64| -> Result<MemTask, String> {
        let bad = || format!("task at {task_pa:#x} unreadable");
        let cred = dump.u64(task_pa + o_cred).and_then(va2pa).ok_or_else(bad)?;
        let signal = dump.u64(task_pa + o_signal).and_then(va2pa).ok_or_else(bad)?;
        let comm = dump.read(task_pa + o_comm, 16).ok_or_else(bad)?;
        let comm = comm[..comm.iter().position(|&b| b == 0).unwrap_or(16)].to_vec();
        // Threads: signal->thread_head links each thread's task_struct.thread_node.
        let head_pa = signal + o_thread_head;
        let mut threads = 0;
        let mut node = dump.u64(head_pa).ok_or_else(bad)?;
        while va2pa(node) != Some(head_pa) {
            threads += 1;
            if threads > 10_000 {
                return Err(format!("thread list of task at {task_pa:#x} does not close"));
            }
            let npa = va2pa(node).ok_or_else(bad)?;
            node = dump.u64(npa).ok_or_else(bad)?;
        }
        Ok(MemTask {
            pid: dump.u32(task_pa + o_pid).ok_or_else(bad)?,
            tgid: dump.u32(task_pa + o_tgid).ok_or_else(bad)?,
            comm,
            uid: dump.u32(cred + o_uid).ok_or_else(bad)?,
            state: dump.u32(task_pa + o_state).ok_or_else(bad)?,
            exit_state: dump.u32(task_pa + o_exit).ok_or_else(bad)?,
            flags: dump.u32(task_pa + o_flags).ok_or_else(bad)?,
            threads,
        })
    };

    let mut out = Vec::new();
    let mut cur = first;
    while cur != init_tasks_va {
        if out.len() > 100_000 {
            return Err("task list does not close".into());
        }
        let pa = va2pa(cur - o_tasks).ok_or_else(|| format!("task pointer {cur:#x} not mapped"))?;
        out.push(read_task(pa)?);
        cur = dump.u64(pa + o_tasks).ok_or("tasks.next unreadable")?;
    }
    Ok(out)
}
