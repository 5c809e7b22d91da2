//! The bucket table in memory every worker shares (`http::shared_memory`): the master
//! creates it and hands it to each worker it starts, after the listeners and the worker
//! board (`descriptor_after_listeners`). It outlives workers (reloads keep the counts),
//! not the master.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};

use super::table::WAYS;
use crate::http::shared_memory::Region;

/// 2^17 words, 1 MiB: exact limits for ~100k addresses active at the same time.
pub const WORDS: usize = 1 << 17;
const MAGIC: u64 = u64::from_le_bytes(*b"fgrate01");
/// magic, seed, word count, then padding to a cache line.
const HEADER_WORDS: usize = 8;
const WHAT: &str = "rate-limit table";

/// A mapped table; the descriptor is kept by the master (to hand on), dropped by workers.
pub struct Table(Region);

const _: () = assert!(WORDS.is_power_of_two() && WORDS >= WAYS);

impl Table {
    /// A new table with a random seed, in a memfd others can map.
    pub fn create() -> std::io::Result<Table> {
        let region = Region::create(c"ferrogate-rate-limits", MAGIC, HEADER_WORDS + WORDS, |words| {
            words[1].store(random_seed(), Ordering::Relaxed);
            words[2].store(WORDS as u64, Ordering::Relaxed);
        })?;
        Ok(Table(region))
    }

    /// Maps the table the master handed this worker at `fd`, after checking it is one.
    ///
    /// # Safety
    /// `fd` is not owned by anything else in this process (it is closed here).
    pub unsafe fn adopt(raw: RawFd) -> Result<Table, String> {
        // SAFETY: the caller's promise.
        unsafe { Region::adopt(raw, MAGIC, HEADER_WORDS + WORDS, WHAT) }.map(Table)
    }

    /// The descriptor to hand to a worker (the master's table only).
    pub fn fd(&self) -> Option<RawFd> {
        self.0.fd()
    }

    pub fn seed(&self) -> u64 {
        self.0.words()[1].load(Ordering::Relaxed)
    }

    pub fn words(&self) -> &[AtomicU64] {
        &self.0.words()[HEADER_WORDS..]
    }
}

fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into `bytes`.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), 8, 0) };
    if n == 8 {
        return u64::from_ne_bytes(bytes);
    }
    // No entropy source: the clock and pid still differ per run.
    super::table::now() ^ (u64::from(std::process::id()) << 32)
}

#[cfg(test)]
mod tests {
    use super::super::table::{Rule, Verdict, take};
    use super::*;

    #[test]
    fn two_mappings_of_one_table_share_the_buckets() {
        // As two workers do: the master's table, and a second mapping through a copy
        // of its descriptor.
        let master = Table::create().unwrap();
        // SAFETY: dup gives a descriptor nobody else owns.
        let copy = unsafe { libc::dup(master.fd().unwrap()) };
        let worker = unsafe { Table::adopt(copy) }.unwrap();
        assert_eq!(master.seed(), worker.seed());
        let rule = Rule::new(1.0, 2);
        let now = 1_000_000;
        assert_eq!(take(master.words(), 99, now, rule), Verdict::Pass);
        assert_eq!(take(worker.words(), 99, now, rule), Verdict::Pass);
        assert!(matches!(take(master.words(), 99, now, rule), Verdict::Wait(_)));
        assert!(matches!(take(worker.words(), 99, now, rule), Verdict::Wait(_)));
    }

    #[test]
    fn a_descriptor_that_is_not_a_table_is_refused() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(file);
        let err = unsafe { Table::adopt(fd) }.err().unwrap();
        assert!(err.contains("is not the master's rate-limit table"), "{err}");
        unsafe { libc::close(fd) };
    }
}
