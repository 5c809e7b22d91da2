//! Memory the master shares with its workers: a memfd it creates (memfd_create,
//! ftruncate, mmap MAP_SHARED) and hands to each worker it starts, after the listeners;
//! each worker maps the same pages. It outlives workers, not the master. Every access
//! goes through atomics, from any process and thread.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

/// A mapping of `len` words; word 0 holds the magic of what it is, set last by the
/// creator so that a worker never sees a half-initialised region.
pub struct Region {
    base: *mut AtomicU64,
    len: usize,
    /// Kept by the master, to hand on; workers close theirs once mapped.
    fd: Option<OwnedFd>,
}

// SAFETY: the mapping is only ever accessed through atomics, from any thread.
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

impl Region {
    /// A new zeroed region of `len` words; `init` fills it before `magic` marks it ready.
    pub fn create(name: &CStr, magic: u64, len: usize, init: impl FnOnce(&[AtomicU64])) -> std::io::Result<Region> {
        // SAFETY: a NUL-terminated name and flags; returns a new descriptor or -1.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ftruncate on our own descriptor.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), (len * 8) as libc::off_t) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let region = Region { base: map(&fd, len)?, len, fd: Some(fd) };
        init(region.words());
        region.words()[0].store(magic, Ordering::Release);
        Ok(region)
    }

    /// Maps the region the master handed this worker at `raw`, after checking that it
    /// is one of `len` words marked `magic`; `what` names it in the errors. On error the
    /// descriptor is left open: it is not known to be ours.
    ///
    /// # Safety
    /// `raw` is not owned by anything else in this process (it is closed here once mapped).
    pub unsafe fn adopt(raw: RawFd, magic: u64, len: usize, what: &str) -> Result<Region, String> {
        // SAFETY: the caller's promise.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: fstat fills `stat`; a bad descriptor just fails.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } < 0 {
            let e = std::io::Error::last_os_error();
            std::mem::forget(fd);
            return Err(format!("no {what} at fd {raw}: {e}"));
        }
        if stat.st_size as usize != len * 8 {
            std::mem::forget(fd);
            return Err(format!("the descriptor at fd {raw} is not the master's {what}"));
        }
        let region = Region { base: map(&fd, len).map_err(|e| format!("cannot map the {what}: {e}"))?, len, fd: None };
        if region.words()[0].load(Ordering::Acquire) != magic {
            return Err(format!("the {what} the master handed over is not initialised"));
        }
        Ok(region)
    }

    /// The descriptor to hand to a worker (the master's region only).
    pub fn fd(&self) -> Option<RawFd> {
        self.fd.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Every word, the magic at 0 included.
    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping holds `len` words for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.base, self.len) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `base` is our mapping of `len` words; nothing borrows it past `self`.
        unsafe { libc::munmap(self.base.cast(), self.len * 8) };
    }
}

fn map(fd: &OwnedFd, len: usize) -> std::io::Result<*mut AtomicU64> {
    // SAFETY: a fresh shared mapping of the whole file, which is `len` words long.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len * 8, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd.as_raw_fd(), 0) };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(p.cast())
}
