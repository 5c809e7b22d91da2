//! The bucket table in memory every worker shares: the master creates it (memfd_create,
//! ftruncate, mmap MAP_SHARED) and hands its descriptor to each worker it starts, after
//! the listeners (`descriptor_after_listeners`); each worker maps the same pages. It
//! outlives workers (reloads keep the counts), not the master.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicU64;

use super::table::WAYS;

/// 2^17 words, 1 MiB: exact limits for ~100k addresses active at the same time.
pub const WORDS: usize = 1 << 17;
const MAGIC: u64 = u64::from_le_bytes(*b"fgrate01");
/// magic, seed, word count, then padding to a cache line.
const HEADER_WORDS: usize = 8;
const BYTES: usize = (HEADER_WORDS + WORDS) * 8;

/// A mapped table; the descriptor is kept by the master (to hand on), dropped by workers.
pub struct Table {
    base: *mut AtomicU64,
    fd: Option<OwnedFd>,
}

// SAFETY: the mapping is only ever accessed through atomics, from any thread.
unsafe impl Send for Table {}
unsafe impl Sync for Table {}

const _: () = assert!(WORDS.is_power_of_two() && WORDS >= WAYS);

impl Table {
    /// A new table with a random seed, in a memfd others can map.
    pub fn create() -> std::io::Result<Table> {
        // SAFETY: a NUL-terminated name and flags; returns a new descriptor or -1.
        let fd = unsafe { libc::memfd_create(c"ferrogate-rate-limits".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ftruncate on our own descriptor.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), BYTES as libc::off_t) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let table = Table { base: map(&fd)?, fd: Some(fd) };
        let header = table.header();
        header[1].store(random_seed(), std::sync::atomic::Ordering::Relaxed);
        header[2].store(WORDS as u64, std::sync::atomic::Ordering::Relaxed);
        header[0].store(MAGIC, std::sync::atomic::Ordering::Release);
        Ok(table)
    }

    /// Maps the table the master handed this worker at `fd`, after checking it is one.
    ///
    /// # Safety
    /// `fd` is not owned by anything else in this process (it is closed here).
    pub unsafe fn adopt(raw: RawFd) -> Result<Table, String> {
        // SAFETY: the caller's promise.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat fills `stat`; a bad descriptor just fails.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } < 0 {
            let e = std::io::Error::last_os_error();
            std::mem::forget(fd); // not ours after all: leave whatever it is alone
            return Err(format!("no shared rate-limit table at fd {}: {e}", raw));
        }
        if stat.st_size as usize != BYTES {
            std::mem::forget(fd);
            return Err("the descriptor after the listeners is not the master's rate-limit table".into());
        }
        let table = Table { base: map(&fd).map_err(|e| format!("cannot map the rate-limit table: {e}"))?, fd: None };
        if table.header()[0].load(std::sync::atomic::Ordering::Acquire) != MAGIC {
            return Err("the rate-limit table the master handed over is not initialised".into());
        }
        Ok(table)
    }

    /// The descriptor to hand to a worker (the master's table only).
    pub fn fd(&self) -> Option<RawFd> {
        self.fd.as_ref().map(AsRawFd::as_raw_fd)
    }

    pub fn seed(&self) -> u64 {
        self.header()[1].load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping holds HEADER_WORDS + WORDS words for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.base.add(HEADER_WORDS), WORDS) }
    }

    fn header(&self) -> &[AtomicU64] {
        // SAFETY: as in `words`.
        unsafe { std::slice::from_raw_parts(self.base, HEADER_WORDS) }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: `base` is our mapping of BYTES bytes; nothing borrows it past `self`.
        unsafe { libc::munmap(self.base.cast(), BYTES) };
    }
}

fn map(fd: &OwnedFd) -> Result<*mut AtomicU64, std::io::Error> {
    // SAFETY: a fresh shared mapping of the whole file, which is BYTES long.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), BYTES, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd.as_raw_fd(), 0) };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(p.cast())
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
        assert!(err.contains("not the master's rate-limit table"), "{err}");
        unsafe { libc::close(fd) };
    }
}
