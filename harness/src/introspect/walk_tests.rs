//! The walker on task lists built here by hand: well-formed, then corrupted in every way the
//! walker promises to survive (cycles, garbage pointers, unreadable memory, runaway lists,
//! random bytes). Each must end in an error with the tasks read so far — never a hang or panic.

use super::*;
use crate::introspect::kspace::{KernelSpace, START_KERNEL_MAP};
use crate::introspect::layout::{CredLayout, Layout, MmLayout, SignalLayout, TaskLayout};
use crate::introspect::paging::X86_64_4LEVEL;
use crate::introspect::state::{EXIT_ZOMBIE, PF_KTHREAD, TASK_INTERRUPTIBLE};
use crate::introspect::testutil::VecMem;

const POB: u64 = 0xffff_8880_0000_0000;
const MEM: usize = 4 << 20;
/// init_task lives in the "image" at physical 0x1000.
const INIT_PHYS: u64 = 0x1000;

fn layout() -> Layout {
    Layout {
        task: TaskLayout {
            size: 512,
            tasks: 64,
            pid: 80,
            tgid: 84,
            real_parent: 88,
            thread_node: 96,
            signal: 112,
            real_cred: 120,
            state: 8,
            state_size: 4,
            exit_state: Some(12),
            comm: 128,
            mm: 144,
            flags: 16,
            start_boottime: 152,
            worker_private: None,
        },
        signal: SignalLayout { thread_head: 16, nr_threads: None },
        cred: CredLayout { uid: 4 },
        mm: MmLayout { pgd: 0, arg_start: 8, arg_end: 16, env_start: 24, env_end: 32 },
        kthread: None,
        worker: None,
    }
}

fn dm(phys: u64) -> u64 {
    POB + phys
}

fn image(phys: u64) -> u64 {
    START_KERNEL_MAP + phys
}

/// A fake kernel: tasks at 0x10000 + 0x1000·i (direct map), each with its own signal and cred.
struct Fake {
    mem: VecMem,
    tasks: Vec<u64>, // virtual addresses, [0] = init_task
}

impl Fake {
    fn new() -> Fake {
        let mut f = Fake { mem: VecMem::new(MEM), tasks: vec![image(INIT_PHYS)] };
        f.fill(image(INIT_PHYS), 0, 0, b"swapper/0", image(INIT_PHYS), PF_KTHREAD, 0);
        f
    }

    fn phys(v: u64) -> u64 {
        if v >= START_KERNEL_MAP { v - START_KERNEL_MAP } else { v - POB }
    }

    fn w64(&mut self, v: u64, x: u64) {
        self.mem.write_u64(Self::phys(v), x);
    }

    fn w32(&mut self, v: u64, x: u32) {
        self.mem.write_u32(Self::phys(v), x);
    }

    #[allow(clippy::too_many_arguments)]
    fn fill(&mut self, t: u64, pid: i32, tgid: i32, comm: &[u8], parent: u64, flags: u32, state: u32) {
        let l = layout().task;
        let idx = Self::phys(t) >> 12; // one signal and cred slot per task page
        let signal = dm(0x200000 + 0x100 * idx);
        let cred = dm(0x300000 + 0x100 * idx);
        self.w32(t + l.pid, pid as u32);
        self.w32(t + l.tgid, tgid as u32);
        self.w64(t + l.real_parent, parent);
        self.w64(t + l.signal, signal);
        self.w64(t + l.real_cred, cred);
        self.w32(t + l.state, state);
        self.w32(t + l.flags, flags);
        self.w64(t + l.start_boottime, 1_000_000 * pid as u64);
        let mut c = [0u8; 16];
        c[..comm.len()].copy_from_slice(comm);
        self.mem.write(Self::phys(t + l.comm), &c);
        self.w32(cred + 4, 1000 + pid as u32);
        // Single-thread group by default: thread_head <-> thread_node.
        self.link(&[signal + 16, t + l.thread_node]);
    }

    /// Add a process (its own thread group) and return its address.
    fn process(&mut self, pid: i32, comm: &[u8], parent: u64) -> u64 {
        let t = dm(0x10000 + 0x1000 * self.tasks.len() as u64);
        self.tasks.push(t);
        self.fill(t, pid, pid, comm, parent, 0, TASK_INTERRUPTIBLE);
        t
    }

    /// Make a circular doubly linked list of these list_head addresses.
    fn link(&mut self, nodes: &[u64]) {
        for (i, &n) in nodes.iter().enumerate() {
            let next = nodes[(i + 1) % nodes.len()];
            let prev = nodes[(i + nodes.len() - 1) % nodes.len()];
            self.w64(n, next);
            self.w64(n + 8, prev);
        }
    }

    fn link_tasks(&mut self) {
        let off = layout().task.tasks;
        let nodes: Vec<u64> = self.tasks.iter().map(|t| t + off).collect();
        self.link(&nodes);
    }

    fn space(&self) -> KernelSpace<'_> {
        KernelSpace::new(&self.mem, 0, Some(KVirt(POB)), &X86_64_4LEVEL)
    }

    fn walk(&self, cfg: WalkConfig) -> WalkOutcome {
        walk(&self.space(), &layout(), KVirt(self.tasks[0]), cfg)
    }
}

fn sample() -> Fake {
    let mut f = Fake::new();
    let init = f.process(1, b"init", f.tasks[0]);
    let a = f.process(2, b"kthreadd", f.tasks[0]);
    let w = f.process(10, b"server", init);
    f.w32(a + layout().task.flags, PF_KTHREAD);
    // `server` gets a second thread (pid 11), not on the tasks list.
    let th = dm(0x80000);
    f.fill(th, 11, 10, b"server-io", init, 0, TASK_INTERRUPTIBLE);
    let l = layout().task;
    let signal = {
        let mut b = [0u8; 8];
        f.mem.read_phys(emulator::mem::PhysAddr(Fake::phys(w + l.signal)), &mut b).unwrap();
        u64::from_le_bytes(b)
    };
    f.w64(th + l.signal, signal);
    f.link(&[signal + 16, w + l.thread_node, th + l.thread_node]);
    // A zombie child of init.
    let z = f.process(12, b"defunct", init);
    f.w32(z + l.state, 0x80);
    f.w32(z + l.exit_state.unwrap(), EXIT_ZOMBIE);
    f.link_tasks();
    f
}

use emulator::mem::PhysMem;

#[test]
fn well_formed_list() {
    let f = sample();
    let out = f.walk(WalkConfig::default());
    assert!(out.error.is_none(), "{:?}", out.error);
    type Seen<'a> = (i32, i32, i32, char, &'a [u8], Option<u32>, bool, u32);
    let got: Vec<Seen<'_>> = out
        .threads
        .iter()
        .map(|t| (t.pid, t.tgid, t.ppid, t.state, t.comm.as_slice(), t.threads, t.kthread, t.uid))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, 1, 0, 'S', &b"init"[..], Some(1), false, 1001),
            (2, 2, 0, 'S', &b"kthreadd"[..], Some(1), true, 1002),
            (10, 10, 1, 'S', &b"server"[..], Some(2), false, 1010),
            (11, 10, 1, 'S', &b"server-io"[..], None, false, 1011),
            (12, 12, 1, 'Z', &b"defunct"[..], Some(1), false, 1012),
        ]
    );
}

#[test]
fn cycle_that_skips_the_head_stops_with_the_tasks_so_far() {
    let mut f = sample();
    let off = layout().task.tasks;
    // Last task's next points back at the second task; its prev agrees, so only the visited
    // set can notice.
    let (t1, t2, last) = (f.tasks[1] + off, f.tasks[2] + off, *f.tasks.last().unwrap() + off);
    f.w64(last, t2);
    f.w64(t2 + 8, last);
    let _ = t1;
    let out = f.walk(WalkConfig::default());
    assert!(matches!(out.error, Some(WalkError::Cycle { .. }) | Some(WalkError::BrokenList { .. })), "{:?}", out.error);
    assert!(out.threads.iter().any(|t| t.pid == 1));
}

#[test]
fn ring_without_head_is_caught_by_the_visited_set() {
    let mut f = sample();
    let off = layout().task.tasks;
    // A consistent ring 1 -> 2 -> 10 -> 12 -> 1 that never returns to init_task.
    let nodes: Vec<u64> = f.tasks[1..].iter().map(|t| t + off).collect();
    f.link(&nodes);
    // init_task still points into the ring, and the ring's first prev points at init_task.
    let head = f.tasks[0] + off;
    f.w64(head, nodes[0]);
    f.w64(nodes[0] + 8, head);
    let out = f.walk(WalkConfig::default());
    assert!(matches!(out.error, Some(WalkError::BrokenList { .. }) | Some(WalkError::Cycle { .. })), "{:?}", out.error);
    assert_eq!(out.threads.iter().filter(|t| t.threads.is_some()).count(), 4, "the four groups before the loop are returned");
}

#[test]
fn garbage_next_pointer() {
    let mut f = sample();
    let off = layout().task.tasks;
    let t2 = f.tasks[2] + off;
    f.w64(t2, 0xdead_beef_0000_0000);
    let out = f.walk(WalkConfig::default());
    assert!(matches!(out.error, Some(WalkError::BadPointer { what: "tasks.next", .. })), "{:?}", out.error);
    assert_eq!(out.threads.iter().filter(|t| t.threads.is_some()).count(), 2);
}

#[test]
fn next_pointer_past_the_end_of_ram() {
    let mut f = sample();
    let off = layout().task.tasks;
    let t1 = f.tasks[1] + off;
    f.w64(t1, dm(MEM as u64 + 0x1000));
    let out = f.walk(WalkConfig::default());
    assert!(out.error.is_some());
    assert_eq!(out.threads.len(), 1);
}

#[test]
fn runaway_list_is_bounded() {
    let mut f = Fake::new();
    let init = f.tasks[0];
    for i in 0..50 {
        f.process(100 + i, b"many", init);
    }
    f.link_tasks();
    let out = f.walk(WalkConfig { max_tasks: 10, ..WalkConfig::default() });
    assert!(matches!(out.error, Some(WalkError::TooMany { limit: 10 })), "{:?}", out.error);
    assert_eq!(out.threads.len(), 10);
}

#[test]
fn unterminated_comm_and_bad_pid_are_invalid() {
    let mut f = sample();
    let l = layout().task;
    let t = f.tasks[3];
    f.mem.write(Fake::phys(t + l.comm), &[b'x'; 16]);
    let out = f.walk(WalkConfig::default());
    assert!(matches!(out.error, Some(WalkError::InvalidTask { .. })), "{:?}", out.error);
    let mut f = sample();
    let t = f.tasks[2];
    f.w32(t + l.pid, 0x7fff_ffff);
    let out = f.walk(WalkConfig::default());
    assert!(matches!(out.error, Some(WalkError::InvalidTask { .. })), "{:?}", out.error);
}

#[test]
fn thread_list_cycle_is_caught() {
    let mut f = sample();
    let l = layout().task;
    let w = f.tasks[3];
    // server's second thread points back at the first thread instead of the head.
    let th = dm(0x80000);
    f.w64(th + l.thread_node, w + l.thread_node);
    let out = f.walk(WalkConfig::default());
    assert!(out.error.is_some());
    assert!(!out.threads.is_empty());
}

#[test]
fn random_memory_never_panics_or_hangs() {
    let mut seed = 0x1234_5678_9abc_def0u64;
    for round in 0..20 {
        let mut f = sample();
        for b in f.mem.data.iter_mut().take(0x90000) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            if seed % 97 < 3 + round {
                *b = (seed >> 24) as u8;
            }
        }
        let out = f.walk(WalkConfig { max_tasks: 1000, ..WalkConfig::default() });
        assert!(out.threads.len() <= 1000);
    }
}

/// Memory that changes once under the walker: `change` is applied to it just before the
/// `nth` read (1-based) that touches `[start, end)` is served, as a running kernel would.
struct Changing {
    mem: std::sync::Mutex<VecMem>,
    range: (u64, u64),
    nth: usize,
    touches: std::sync::atomic::AtomicUsize,
    change: std::sync::Mutex<Option<Box<dyn FnOnce(&mut VecMem) + Send>>>,
}

impl Changing {
    fn new(f: Fake, task: u64, nth: usize, change: impl FnOnce(&mut VecMem) + Send + 'static) -> Changing {
        let p = Fake::phys(task);
        Changing {
            mem: std::sync::Mutex::new(f.mem),
            range: (p, p + 0x1000),
            nth,
            touches: Default::default(),
            change: std::sync::Mutex::new(Some(Box::new(change))),
        }
    }

    fn walk(&self, init_task: u64) -> WalkOutcome {
        let space = KernelSpace::new(self, 0, Some(KVirt(POB)), &X86_64_4LEVEL);
        walk(&space, &layout(), KVirt(init_task), WalkConfig::default())
    }
}

impl PhysMem for Changing {
    fn read_phys(&self, addr: emulator::mem::PhysAddr, buf: &mut [u8]) -> Result<(), emulator::mem::MemError> {
        let mut mem = self.mem.lock().unwrap();
        if addr.0 < self.range.1 && addr.0 + buf.len() as u64 > self.range.0 {
            let n = self.touches.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            if n == self.nth {
                if let Some(change) = self.change.lock().unwrap().take() {
                    change(&mut mem);
                }
            }
        }
        mem.read_phys(addr, buf)
    }
    fn ranges(&self) -> Vec<emulator::mem::PhysRange> {
        self.mem.lock().unwrap().ranges()
    }
    fn describe(&self) -> String {
        "changing test memory".into()
    }
}

/// `list_del_rcu(node)`: neighbours skip it, its `next` stays, its `prev` is poisoned.
fn unlink(mem: &mut VecMem, node: u64) {
    let rd = |mem: &VecMem, v: u64| {
        let mut b = [0u8; 8];
        mem.read_phys(emulator::mem::PhysAddr(Fake::phys(v)), &mut b).unwrap();
        u64::from_le_bytes(b)
    };
    let (next, prev) = (rd(mem, node), rd(mem, node + 8));
    mem.write_u64(Fake::phys(prev), next);
    mem.write_u64(Fake::phys(next + 8), prev);
    mem.write_u64(Fake::phys(node + 8), 0xdead_0000_0000_0122);
}

fn pids(out: &WalkOutcome) -> Vec<i32> {
    out.threads.iter().map(|t| t.pid).collect()
}

#[test]
fn a_task_that_exits_as_the_walk_reaches_it_is_skipped() {
    let f = sample();
    let (init, kthreadd) = (f.tasks[0], f.tasks[2]);
    let node = kthreadd + layout().task.tasks;
    // kthreadd (pid 2) leaves the list just before its record is read.
    let m = Changing::new(f, kthreadd, 1, move |mem| unlink(mem, node));
    let out = m.walk(init);
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(pids(&out), vec![1, 10, 11, 12]);
    assert_eq!((out.consistency.rereads, out.consistency.relinks, out.consistency.torn), (1, 1, 0));
}

#[test]
fn a_task_that_exits_after_it_was_read_is_listed_and_the_walk_goes_on() {
    let f = sample();
    let (init, first, kthreadd) = (f.tasks[0], f.tasks[1], f.tasks[2]);
    let node = first + layout().task.tasks;
    // init (pid 1) leaves the list after its record was read, as kthreadd's is read.
    let m = Changing::new(f, kthreadd, 1, move |mem| unlink(mem, node));
    let out = m.walk(init);
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(pids(&out), vec![1, 2, 10, 11, 12]);
    assert_eq!(out.consistency.relinks, 1);
}

#[test]
fn a_task_whose_memory_is_reused_before_the_final_check_is_dropped_as_torn() {
    let f = sample();
    let (init, server) = (f.tasks[0], f.tasks[3]);
    let l = layout().task;
    // The second touch of server's page is the final identity check: by then another task
    // (pid 99) lives there.
    let m = Changing::new(f, server, 2, move |mem| {
        mem.write_u32(Fake::phys(server + l.pid), 99);
        mem.write_u32(Fake::phys(server + l.tgid), 99);
    });
    let out = m.walk(init);
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(pids(&out), vec![1, 2, 11, 12]);
    assert_eq!(out.consistency.torn, 1);
}

#[test]
fn a_static_dump_needs_no_rereads() {
    let out = sample().walk(WalkConfig::default());
    assert_eq!(out.consistency, Consistency::default());
}

#[test]
fn two_tasks_exiting_one_after_the_other_resync_the_walk_from_a_task_still_listed() {
    let f = sample();
    let (init, kthreadd, server) = (f.tasks[0], f.tasks[2], f.tasks[3]);
    let off = layout().task.tasks;
    // kthreadd was read; then it and server (the next one) leave the list before server is read.
    let m = Changing::new(f, server, 1, move |mem| {
        unlink(mem, kthreadd + off);
        unlink(mem, server + off);
    });
    let out = m.walk(init);
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(pids(&out), vec![1, 2, 12]);
    assert!(out.consistency.relinks >= 1);
}

#[test]
fn a_broken_list_that_does_not_change_is_still_an_error() {
    let mut f = sample();
    let off = layout().task.tasks;
    // server's prev is poisoned as if it had exited, but its predecessor still points at it and
    // nothing changes when read again: a dump taken mid-exit, or damage. The walk gives up after
    // its bounded resynchronisations, with the tasks before.
    let server = f.tasks[3];
    f.w64(server + off + 8, 0xdead_0000_0000_0122);
    let out = f.walk(WalkConfig::default());
    assert!(matches!(out.error, Some(WalkError::BrokenList { .. })), "{:?}", out.error);
    assert_eq!(pids(&out)[..2], [1, 2]);
}

// ---------------------------------------------------------------------------------------------
// An index of the tasks: fewer round trips, the same listing whatever it names.

/// An index that names the given addresses (or fails), after `samples` leaders.
struct Named {
    addrs: Vec<KVirt>,
    samples: usize,
    fail: bool,
    asked_with: Option<usize>,
}

impl TaskIndex for Named {
    fn samples(&self) -> usize {
        self.samples
    }
    fn addresses(&mut self, _: &KernelSpace<'_>, _: &Layout, taken: &[(KVirt, i32)]) -> Result<Vec<KVirt>, String> {
        self.asked_with = Some(taken.len());
        if self.fail {
            return Err("no index here".into());
        }
        Ok(self.addrs.clone())
    }
}

/// The walk over `f` with `index`, and the batches of reads it took.
fn walk_indexed(f: &Fake, index: Option<&mut dyn TaskIndex>) -> (WalkOutcome, u64) {
    let counted = emulator::mem::Counting::new(&f.mem);
    let space = KernelSpace::new(&counted, 0, Some(KVirt(POB)), &X86_64_4LEVEL);
    let out = walk_again(&space, &layout(), KVirt(f.tasks[0]), WalkConfig::default(), &mut CmdlineCache::default(), index);
    (out, counted.snapshot().batches)
}

/// `sample()` with `n` more processes.
fn many(n: i32) -> Fake {
    let mut f = sample();
    let init = f.tasks[1];
    for pid in 0..n {
        f.process(100 + pid, b"sleeper", init);
    }
    f.link_tasks();
    f
}

#[test]
fn an_index_of_every_task_saves_a_round_trip_per_task() {
    let f = many(40);
    let (plain, plain_batches) = walk_indexed(&f, None);
    let mut every: Vec<KVirt> = f.tasks[1..].iter().map(|&t| KVirt(t)).collect();
    every.push(KVirt(dm(0x80000))); // server's second thread
    let mut idx = Named { addrs: every, samples: 0, fail: false, asked_with: None };
    let (out, batches) = walk_indexed(&f, Some(&mut idx));
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.threads, plain.threads);
    assert_eq!(out.index, IndexUse { named: 45, used: 45, error: None });
    assert_eq!(idx.asked_with, Some(0), "asked before the first hop");
    assert!(plain_batches > 45 && batches < 15, "{plain_batches} batches without the index, {batches} with it");
}

/// Memory that records the addresses of each batch read from it.
struct Batches<'a> {
    mem: &'a VecMem,
    seen: std::sync::Mutex<Vec<Vec<u64>>>,
}

impl PhysMem for Batches<'_> {
    fn read_phys(&self, addr: emulator::mem::PhysAddr, buf: &mut [u8]) -> Result<(), emulator::mem::MemError> {
        self.seen.lock().unwrap().push(vec![addr.0]);
        self.mem.read_phys(addr, buf)
    }
    fn read_batch(&self, ops: &mut [emulator::mem::ReadOp<'_>]) -> Vec<Result<(), emulator::mem::MemError>> {
        self.seen.lock().unwrap().push(ops.iter().map(|op| op.addr.0).collect());
        self.mem.read_batch(ops)
    }
    fn ranges(&self) -> Vec<emulator::mem::PhysRange> {
        self.mem.ranges()
    }
    fn describe(&self) -> String {
        self.mem.describe()
    }
}

#[test]
fn init_task_is_read_in_the_batch_of_the_tasks_an_index_names_at_once() {
    let f = many(40);
    let mut idx = Named { addrs: f.tasks[1..].iter().map(|&t| KVirt(t)).collect(), samples: 0, fail: false, asked_with: None };
    let mem = Batches { mem: &f.mem, seen: Default::default() };
    let space = KernelSpace::new(&mem, 0, Some(KVirt(POB)), &X86_64_4LEVEL);
    let out = walk_again(&space, &layout(), KVirt(f.tasks[0]), WalkConfig::default(), &mut CmdlineCache::default(), Some(&mut idx));
    assert!(out.error.is_none(), "{:?}", out.error);
    let init_phys = space.linear(KVirt(f.tasks[0])).expect("init_task mapped").0;
    let task_phys = space.linear(KVirt(f.tasks[40])).expect("mapped").0;
    let seen = mem.seen.lock().unwrap().clone();
    let first = seen.first().expect("reads");
    assert!(first.iter().any(|&a| a >= init_phys && a < init_phys + 0x1000), "init_task in the first batch");
    assert!(first.iter().any(|&a| a >= task_phys && a < task_phys + 0x1000), "with the tasks named");
}

/// The walk over `f` (no index), and the addresses of every batch it read.
fn walk_recorded(f: &Fake) -> (WalkOutcome, Vec<Vec<u64>>) {
    let mem = Batches { mem: &f.mem, seen: Default::default() };
    let out = walk(&KernelSpace::new(&mem, 0, Some(KVirt(POB)), &X86_64_4LEVEL), &layout(), KVirt(f.tasks[0]), WalkConfig::default());
    let seen = mem.seen.lock().unwrap().clone();
    (out, seen)
}

/// A thread group's list is followed from its leader when the leader's `prev` is the group's
/// head (the leader first, as in every group that has not exec'd from a thread): the head is
/// not read. A group whose leader is not first has its head read, and lists the same threads.
#[test]
fn thread_lists_start_at_a_first_leader_without_reading_the_head() {
    let l = layout().task;
    let f = sample();
    // Signal structs are at 0x200000 + 0x100 k; their thread_head at +16.
    let heads_read = |seen: &[Vec<u64>]| seen.iter().flatten().filter(|&&a| (0x200000..0x300000).contains(&a) && a % 0x100 == 16).count();
    let (out, seen) = walk_recorded(&f);
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(heads_read(&seen), 0);
    let server = f.tasks[3];
    let th = dm(0x80000);
    let signal = {
        let mut b = [0u8; 8];
        f.mem.read_phys(emulator::mem::PhysAddr(Fake::phys(server + l.signal)), &mut b).unwrap();
        u64::from_le_bytes(b)
    };
    let mut g = sample();
    g.link(&[signal + 16, th + l.thread_node, server + l.thread_node]);
    let (moved, seen) = walk_recorded(&g);
    assert!(moved.error.is_none(), "{:?}", moved.error);
    assert_eq!(heads_read(&seen), 1, "the head of the group whose leader is not first");
    let ids = |o: &WalkOutcome| {
        let mut v: Vec<(i32, i32)> = o.threads.iter().map(|t| (t.pid, t.tgid)).collect();
        v.sort_unstable();
        v
    };
    assert_eq!(ids(&moved), ids(&out));
    assert!(ids(&out).contains(&(11, 10)), "the second thread listed");
}

#[test]
fn what_an_index_names_is_only_where_to_read_first() {
    let mut f = many(5);
    // A task the index names that the list does not reach (unlinked by a rootkit), garbage,
    // an address outside memory, and half the real tasks.
    let hidden = dm(0x90000);
    f.fill(hidden, 666, 666, b"hidden", f.tasks[1], 0, TASK_INTERRUPTIBLE);
    let mut addrs = vec![KVirt(hidden), KVirt(dm(0x3000)), KVirt(POB + (MEM as u64) * 4), KVirt(0xdead_0000_0000_0122)];
    addrs.extend(f.tasks.iter().step_by(2).map(|&t| KVirt(t)));
    let (plain, _) = walk_indexed(&f, None);
    let mut idx = Named { addrs, samples: 2, fail: false, asked_with: None };
    let (out, _) = walk_indexed(&f, Some(&mut idx));
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.threads, plain.threads, "the list decides what is listed");
    assert!(!pids(&out).contains(&666));
    assert_eq!(idx.asked_with, Some(2), "asked once it had seen the leaders it wanted");
    // A failing index leaves the walk as it was, and says why.
    let mut failing = Named { addrs: Vec::new(), samples: 0, fail: true, asked_with: None };
    let (out, _) = walk_indexed(&f, Some(&mut failing));
    assert_eq!(out.threads, plain.threads);
    assert_eq!(out.index.error.as_deref(), Some("no index here"));
}

#[test]
fn an_indexed_walk_of_a_broken_list_fails_as_the_plain_walk_does() {
    let mut f = many(5);
    let off = layout().task.tasks;
    f.w64(f.tasks[4] + off, 0x4141_4141_4141_4141);
    let (plain, _) = walk_indexed(&f, None);
    let mut idx = Named { addrs: f.tasks.iter().map(|&t| KVirt(t)).collect(), samples: 0, fail: false, asked_with: None };
    let (out, _) = walk_indexed(&f, Some(&mut idx));
    assert_eq!(pids(&out), pids(&plain));
    assert_eq!(out.error.map(|e| e.to_string()), plain.error.map(|e| e.to_string()));
}
