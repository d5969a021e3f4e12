//! Process command lines, read from user memory through each process's own page tables.
//!
//! Mirrors `get_mm_cmdline` (fs/proc/base.c, 6.1): nothing before the process has set
//! `env_end`; nothing if `arg_start >= arg_end`; if the last byte of the argument area is not
//! NUL the process rewrote its title (setproctitle), and the kernel returns the string at
//! `arg_start` up to its first NUL, within one page and the environment area; otherwise the
//! bytes `[arg_start, arg_end)`.
//!
//! Invariant: at most `max` bytes are read per process; all pages of all processes are
//! translated in one level-synchronous walk and read in one batch; an unreadable page yields an
//! error naming the user address, not a partial string passed off as complete.

use emulator::mem::{MemError, PhysAddr};

use super::addr::{KVirt, UVirt};
use super::kspace::KernelSpace;
use super::paging::{PageTables, PagingError};
use super::vread::{self, Place, Translator};

const PAGE: u64 = 4096;

/// What `mm_struct` says about a process's argument area.
#[derive(Debug, Clone, Copy)]
pub struct ArgArea {
    pub pgd: KVirt,
    pub arg_start: UVirt,
    pub arg_end: UVirt,
    pub env_start: UVirt,
    pub env_end: UVirt,
}

#[derive(Debug, thiserror::Error)]
pub enum UserReadError {
    #[error("page table root {pgd} is not in the direct map")]
    BadPgd { pgd: KVirt },
    #[error("{va}: {source}")]
    Paging { va: UVirt, source: PagingError<UVirt> },
    #[error("{va} (at {phys}): {source}")]
    Mem { va: UVirt, phys: PhysAddr, source: MemError },
}

/// Read user memory for many `(page tables, address, length)` requests, through the one
/// virtual-memory reader ([`vread`](super::vread)) with each process's tables.
pub fn read_user_many(space: &KernelSpace<'_>, reqs: &[(PageTables, UVirt, usize)]) -> Vec<Result<Vec<u8>, UserReadError>> {
    let regions: Vec<(UserSpace, UVirt, usize)> = reqs.iter().map(|&(pt, va, len)| (UserSpace(pt), va, len)).collect();
    vread::read_many(space.mem(), &regions).into_iter().map(|r| r.map_err(|(_, e)| e)).collect()
}

/// One process's user space: every piece walked through its page tables.
#[derive(Debug, Clone, Copy)]
struct UserSpace(PageTables);

impl Translator for UserSpace {
    type Addr = UVirt;
    type Error = UserReadError;
    fn contiguous(&self, _: UVirt, _: usize) -> bool {
        false
    }
    fn place(&self, _: UVirt) -> Result<Place, UserReadError> {
        Ok(Place::Walk(self.0))
    }
    fn paging_error(&self, va: UVirt, source: PagingError<UVirt>) -> UserReadError {
        UserReadError::Paging { va, source }
    }
    fn mem_error(&self, va: UVirt, phys: PhysAddr, source: MemError) -> UserReadError {
        UserReadError::Mem { va, phys, source }
    }
}

/// The raw `/proc/<pid>/cmdline` bytes of each process (NUL-separated, as the kernel returns
/// them), reading at most `max` bytes each.
pub fn read_cmdlines(space: &KernelSpace<'_>, areas: &[ArgArea], max: usize) -> Vec<Result<Vec<u8>, UserReadError>> {
    let mut out: Vec<Option<Result<Vec<u8>, UserReadError>>> = Vec::with_capacity(areas.len());
    let mut reqs = Vec::new();
    let mut req_of = Vec::new();
    for (i, a) in areas.iter().enumerate() {
        if a.env_end == UVirt(0) || a.arg_start >= a.arg_end {
            out.push(Some(Ok(Vec::new())));
            continue;
        }
        let Some(root) = space.linear(a.pgd).filter(|_| space.in_direct_map(a.pgd)) else {
            out.push(Some(Err(UserReadError::BadPgd { pgd: a.pgd })));
            continue;
        };
        let pt = PageTables::new(root, space.format);
        // Read up to `max` bytes of the argument area, or of the title (one page) if longer.
        let whole = a.arg_end.0 - a.arg_start.0;
        let len = whole.min(max as u64) as usize;
        reqs.push((pt, a.arg_start, len));
        // The last byte decides between argv and setproctitle: the area's own last byte when
        // it is read whole, else read apart.
        let apart = (len as u64) < whole;
        if apart {
            reqs.push((pt, UVirt(a.arg_end.0 - 1), 1));
        }
        req_of.push((i, apart));
        out.push(None);
    }
    let mut results = read_user_many(space, &reqs).into_iter();
    let mut title_reqs = Vec::new();
    let mut title_of = Vec::new();
    for &(i, apart) in &req_of {
        let Some(args) = results.next() else { break };
        let last = match (apart, &args) {
            (true, _) => results.next().unwrap_or(Ok(Vec::new())).map(|b| b.first().copied()),
            (false, Ok(b)) => Ok(b.last().copied()),
            (false, Err(_)) => Ok(None),
        };
        let a = areas[i];
        match (args, last) {
            (Err(e), _) | (_, Err(e)) => out[i] = Some(Err(e)),
            (Ok(args), Ok(Some(0))) => out[i] = Some(Ok(args)),
            (Ok(_), Ok(_)) => {
                // setproctitle: the string at arg_start, within one page and the env area.
                let env_end = if a.env_start != a.arg_end || a.env_end < a.env_start { a.arg_end } else { a.env_end };
                let len = (env_end.0 - a.arg_start.0).min(PAGE).min(max as u64) as usize;
                let root = space.linear(a.pgd).unwrap_or(PhysAddr(0));
                title_reqs.push((PageTables::new(root, space.format), a.arg_start, len));
                title_of.push(i);
            }
        }
    }
    for (i, r) in title_of.into_iter().zip(read_user_many(space, &title_reqs)) {
        out[i] = Some(r.map(|mut t| {
            if let Some(n) = t.iter().position(|&b| b == 0) {
                t.truncate(n + 1);
            }
            t
        }));
    }
    out.into_iter().map(|o| o.unwrap_or(Ok(Vec::new()))).collect()
}

/// `/proc/<pid>/cmdline` shown as one line: the trailing NUL dropped, every other NUL a space.
pub fn join_args(raw: &[u8]) -> Vec<u8> {
    let trimmed = raw.strip_suffix(&[0]).unwrap_or(raw);
    trimmed.iter().map(|&b| if b == 0 { b' ' } else { b }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::introspect::kspace::PAGE_OFFSET_L4;
    use crate::introspect::paging::X86_64_4LEVEL;
    use crate::introspect::testutil::VecMem;
    use emulator::mem::Counting;

    /// User page `va` mapped to physical 0x10000 through tables at 0x1000..0x4000.
    const VA: u64 = 0x7ffd_1234_5000;

    fn machine(page: &[u8]) -> VecMem {
        let mut m = VecMem::new(0x20000);
        let idx = |shift: u32| (VA >> shift) & 511;
        m.write_u64(0x1000 + 8 * idx(39), 0x2000 | 7);
        m.write_u64(0x2000 + 8 * idx(30), 0x3000 | 7);
        m.write_u64(0x3000 + 8 * idx(21), 0x4000 | 7);
        m.write_u64(0x4000 + 8 * idx(12), 0x10000 | 7);
        m.write(0x10000, page);
        m
    }

    fn area(arg: (u64, u64), env: (u64, u64)) -> ArgArea {
        ArgArea {
            pgd: KVirt(PAGE_OFFSET_L4.0 + 0x1000),
            arg_start: UVirt(VA + arg.0),
            arg_end: UVirt(VA + arg.1),
            env_start: UVirt(VA + env.0),
            env_end: UVirt(VA + env.1),
        }
    }

    /// argv read whole: one walk and one read (its last byte, a NUL, says it is argv); read
    /// in part: the last byte is read apart; a title (setproctitle): the string up to its NUL.
    #[test]
    fn argv_whole_in_part_and_titles() {
        let mem = machine(b"sleep\x00100\x00HOME=/\x00title here\x00ignored\x00\x00");
        let counted = Counting::new(&mem);
        let space = KernelSpace::new(&counted, 0, Some(PAGE_OFFSET_L4), &X86_64_4LEVEL);
        let got = read_cmdlines(&space, &[area((0, 10), (10, 17))], 4096);
        assert_eq!(got[0].as_ref().unwrap(), b"sleep\x00100\x00");
        assert_eq!(counted.snapshot().reads, 5, "four table entries and the area");
        let got = read_cmdlines(&space, &[area((0, 10), (10, 17))], 6);
        assert_eq!(got[0].as_ref().unwrap(), b"sleep\x00");
        // a title over argv: the last byte of the area is not NUL
        let got = read_cmdlines(&space, &[area((17, 22), (22, 37))], 4096);
        assert_eq!(got[0].as_ref().unwrap(), b"title here\x00");
        let got = read_cmdlines(&space, &[area((17, 22), (22, 37))], 3);
        assert_eq!(got[0].as_ref().unwrap(), b"tit");
    }

    #[test]
    fn joining() {
        assert_eq!(join_args(b"sleep\x0080000\x00"), b"sleep 80000");
        assert_eq!(join_args(b"a\x00\x00b\x00"), b"a  b");
        assert_eq!(join_args(b"title without nul"), b"title without nul");
        assert_eq!(join_args(b""), b"");
    }
}
