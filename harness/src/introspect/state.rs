//! The `ps` state letter of a task, exactly as the kernel's `/proc` computes it
//! (`__task_state_index` in include/linux/sched.h and `task_state_array` in fs/proc/array.c,
//! Linux 6.1).
//!
//! Beside it, the task constants every layer above shares (flags, the pid limit), so that the
//! layout heuristics and the task walk both read them from here.
//!
//! Invariant: [`state_letter`] is a pure function of `(__state, exit_state)` and returns one of
//! `R S D T t X Z P I` for every input, as the kernel does (bits outside `TASK_REPORT` are
//! ignored; the highest reported bit wins).

pub const TASK_INTERRUPTIBLE: u32 = 0x0001;
pub const TASK_UNINTERRUPTIBLE: u32 = 0x0002;
pub const TASK_STOPPED: u32 = 0x0004;
pub const TASK_TRACED: u32 = 0x0008;
pub const EXIT_DEAD: u32 = 0x0010;
pub const EXIT_ZOMBIE: u32 = 0x0020;
pub const TASK_PARKED: u32 = 0x0040;
pub const TASK_NOLOAD: u32 = 0x0400;
pub const TASK_RTLOCK_WAIT: u32 = 0x1000;
pub const TASK_FROZEN: u32 = 0x8000;
pub const TASK_IDLE: u32 = TASK_UNINTERRUPTIBLE | TASK_NOLOAD;
/// `TASK_REPORT`: the states `/proc` reports (0x7f).
pub const TASK_REPORT: u32 =
    TASK_INTERRUPTIBLE | TASK_UNINTERRUPTIBLE | TASK_STOPPED | TASK_TRACED | EXIT_DEAD | EXIT_ZOMBIE | TASK_PARKED;
/// `TASK_REPORT_IDLE`.
pub const TASK_REPORT_IDLE: u32 = TASK_REPORT + 1;

/// `PF_WQ_WORKER`: the task is a workqueue worker.
pub const PF_WQ_WORKER: u32 = 0x0000_0020;
/// `PF_KTHREAD`: the task is a kernel thread.
pub const PF_KTHREAD: u32 = 0x0020_0000;

/// `PID_MAX_LIMIT` on 64-bit.
pub const PID_MAX_LIMIT: i32 = 4 * 1024 * 1024;

const STATE_CHARS: &[u8; 9] = b"RSDTtXZPI";

/// `fls`: 1-based index of the highest set bit, 0 for 0.
fn fls(x: u32) -> u32 {
    32 - x.leading_zeros()
}

/// `__task_state_index`.
pub fn state_index(state: u32, exit_state: u32) -> u32 {
    let mut s = (state | exit_state) & TASK_REPORT;
    if state & TASK_IDLE == TASK_IDLE {
        s = TASK_REPORT_IDLE;
    }
    if state & TASK_RTLOCK_WAIT != 0 || state & TASK_FROZEN != 0 {
        s = TASK_UNINTERRUPTIBLE;
    }
    fls(s)
}

/// The letter `/proc/<pid>/stat` shows.
pub fn state_letter(state: u32, exit_state: u32) -> char {
    STATE_CHARS.get(state_index(state, exit_state) as usize).map(|&c| c as char).unwrap_or('?')
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(0, 0, 'R')]
    #[case(TASK_INTERRUPTIBLE, 0, 'S')]
    #[case(TASK_UNINTERRUPTIBLE, 0, 'D')]
    #[case(TASK_UNINTERRUPTIBLE | 0x0100, 0, 'D')] // TASK_KILLABLE
    #[case(0x0100 | TASK_STOPPED, 0, 'T')] // TASK_STOPPED with WAKEKILL
    #[case(TASK_TRACED, 0, 't')]
    #[case(0x0080, EXIT_DEAD, 'X')] // TASK_DEAD + EXIT_DEAD
    #[case(0x0080, EXIT_ZOMBIE, 'Z')]
    #[case(0, EXIT_ZOMBIE, 'Z')]
    #[case(TASK_PARKED, 0, 'P')]
    #[case(TASK_IDLE, 0, 'I')]
    #[case(TASK_IDLE | 0x2000, 0, 'I')] // freezable idle
    #[case(TASK_RTLOCK_WAIT, 0, 'D')]
    #[case(TASK_INTERRUPTIBLE | TASK_FROZEN, 0, 'D')]
    #[case(0x0200, 0, 'R')] // TASK_WAKING is not reported
    #[case(u32::MAX, u32::MAX, 'D')]
    fn letters(#[case] state: u32, #[case] exit: u32, #[case] want: char) {
        assert_eq!(state_letter(state, exit), want);
    }

    #[test]
    fn every_input_gives_a_ps_letter() {
        for bit in 0..32 {
            for exit in [0, EXIT_DEAD, EXIT_ZOMBIE, 1 << bit] {
                assert!("RSDTtXZPI".contains(state_letter(1 << bit, exit)));
            }
        }
    }
}
