//! Each worker's resident memory, as the kernel counts it, for
//! --max-worker-memory and the control socket's status.

use std::time::Duration;

use super::policy::{PolicyEvent, WorkerId};

/// How often the master samples: a read of one small /proc file per worker.
pub const EVERY: Duration = Duration::from_secs(1);

/// One `Memory` event per worker whose size could be read; a worker that
/// exited since the policy listed it has no /proc entry and is skipped.
/// Between a worker's reap and the `Exited` event its supervise task sends
/// (after reading its last words: half a second at most) the pid could be
/// reused, and this would read another process. That is harmless: at worst the
/// policy starts a successor for a worker already gone, and the successor
/// then simply fills the empty slot instead of the respawn.
pub fn sample(workers: &[(WorkerId, u32)]) -> Vec<PolicyEvent> {
    let Some(page) = page_size() else { return Vec::new() };
    workers.iter().filter_map(|&(id, pid)| resident_pages(pid).map(|pages| PolicyEvent::Memory(id, pages * page))).collect()
}

/// The second field of /proc/PID/statm: resident pages.
fn resident_pages(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    statm.split_whitespace().nth(1)?.parse().ok()
}

fn page_size() -> Option<u64> {
    // SAFETY: sysconf reads a constant of the system and touches none of our memory.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process_and_skips_a_pid_that_is_gone() {
        let me = std::process::id();
        let events = sample(&[(1, me), (2, u32::MAX)]);
        let [PolicyEvent::Memory(1, bytes)] = events[..] else { panic!("{events:?}") };
        // A test binary is megabytes; a page count misread as bytes would be far less.
        assert!(bytes > 1024 * 1024, "{bytes}");
    }
}
