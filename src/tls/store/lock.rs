//! The state directory's lock, which makes one
//! process at a time the one that orders certificates for it.

use super::atomic::{ensure_dir, with_path};
use super::paths::lock_path;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// An exclusive flock(2) on `<state>/lock`, released when dropped (closing the file
/// releases it, also when the process dies, so a crash never leaves it stuck).
/// flock belongs to the open file, so two locks in one process exclude each other too.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Takes the lock if nobody holds it; `Ok(None)` if another holder does.
    pub fn try_lock(state: &Path) -> io::Result<Option<StateLock>> {
        let file = open(state)?;
        match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => Ok(Some(StateLock { _file: file })),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
            Err(e) => Err(with_path(e, "locking", &lock_path(state))),
        }
    }

    /// Waits for the lock (on a blocking thread: flock without LOCK_NB sleeps).
    pub async fn lock(state: &Path) -> io::Result<StateLock> {
        let state = state.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let file = open(&state)?;
            flock(&file, libc::LOCK_EX).map_err(|e| with_path(e, "locking", &lock_path(&state)))?;
            Ok(StateLock { _file: file })
        })
        .await
        .map_err(io::Error::other)?
    }
}

fn open(state: &Path) -> io::Result<File> {
    ensure_dir(state)?;
    let path = lock_path(state);
    OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(&path)
        .map_err(|e| with_path(e, "opening", &path))
}

fn flock(file: &File, how: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock on a descriptor we own, for the duration of the call.
        if unsafe { libc::flock(file.as_raw_fd(), how) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_waits_until_the_first_is_dropped() {
        let dir = crate::tls::store::tests::tempdir("lock");
        let first = StateLock::try_lock(&dir).unwrap().expect("free lock");
        assert!(StateLock::try_lock(&dir).unwrap().is_none());
        drop(first);
        let again = StateLock::try_lock(&dir).unwrap();
        assert!(again.is_some());
        drop(again);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        assert!(rt.block_on(StateLock::lock(&dir)).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

}
