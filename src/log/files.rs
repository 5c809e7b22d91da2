//! Where log lines go, and reopening the files for logrotate (SIGUSR1).
//!
//! The server's log is always descriptor 2. With --log-file the master points its fd 2
//! at the file, so the workers, which inherit it, and whatever the app writes to stderr
//! (tracebacks, prints) land there too. The access log has a descriptor of its own in
//! each worker: 2 when it shares the server's log, 1 for `-`, or the file the worker
//! opened by path at boot.
//!
//! Reopening never swaps a descriptor number: the new file is dup2()'d onto the number
//! in use, so a line being written goes whole to the old file or whole to the new one,
//! and the request path reads no lock, only an atomic.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::config::{LogConfig, LogFormat, LogTarget};
use crate::config::access_log_format::COMBINED_WITH_TIME;

const STDOUT: RawFd = 1;
const STDERR: RawFd = 2;
/// rw for the service user, r for its group (adm on Debian reads /var/log).
const MODE: libc::mode_t = 0o640;

/// The descriptor access lines are written to, in a worker.
static ACCESS_FD: AtomicI32 = AtomicI32::new(STDERR);
/// Who the master's log files belong to, remembered for the reopens.
static OWNER: Mutex<Option<(u32, u32)>> = Mutex::new(None);

/// One line, with one write(2) when the kernel takes it whole (it does for files
/// opened O_APPEND and for pipe writes up to PIPE_BUF). A broken log must not take
/// the server down, so errors are dropped.
pub fn write_line(fd: RawFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: the pointer and length describe a live slice.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

pub fn write_server_line(bytes: &[u8]) {
    write_line(STDERR, bytes);
}

pub fn write_access_line(bytes: &[u8]) {
    write_line(ACCESS_FD.load(Ordering::Relaxed), bytes);
}

/// The master's, at start: creates the server's log and the access log (chowned to
/// `owner`, uid and gid, when given: the master runs this as root before it drops to
/// --user) and points descriptor 2 at the server's log. Errors name the option and the fix.
pub fn open_log_files(config: &LogConfig, owner: Option<(u32, u32)>) -> Result<(), String> {
    *OWNER.lock().unwrap_or_else(|e| e.into_inner()) = owner;
    reopen_log_files(config)?;
    if config.format == LogFormat::Json && config.access_log && config.access_log_format != COMBINED_WITH_TIME {
        crate::warn!("--access-log-format is ignored with --log-format json: access lines are JSON objects with fixed keys (see docs/logging.md)");
    }
    Ok(())
}

/// The master's, on SIGUSR1 (and at start): opens both files by path again, creating
/// them if logrotate moved them away, with the owner `open_log_files` was given.
pub fn reopen_log_files(config: &LogConfig) -> Result<(), String> {
    let owner = *OWNER.lock().unwrap_or_else(|e| e.into_inner());
    let mut errors = Vec::new();
    if let Some(path) = &config.file {
        match open_owned(path, "--log-file", owner) {
            Ok(file) => put_on(file, STDERR, false),
            Err(e) => errors.push(e),
        }
    }
    // The master writes no access line: it only creates the file, for its owner.
    if let Some(LogTarget::File(path)) = access_target(config) {
        if let Err(e) = open_owned(path, "--access-log-file", owner) {
            errors.push(e);
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors.join("; and ")) }
}

/// A worker's, at boot: opens the access log by path (the master created it for the
/// user this worker runs as) and sends access lines there from now on.
pub fn open_access_log(config: &LogConfig) -> Result<(), String> {
    let fd = match access_target(config) {
        None => STDERR,
        Some(LogTarget::Stdout) => STDOUT,
        Some(LogTarget::File(path)) => open_append(path).map_err(|e| open_error("--access-log-file", path, &e))?.into_raw_fd(),
    };
    ACCESS_FD.store(fd, Ordering::Relaxed);
    Ok(())
}

/// A worker's, when the master relays SIGUSR1: the files by path again, each put on
/// the descriptor number in use. The master has created them by then.
pub fn reopen_in_worker(config: &LogConfig) -> Result<(), String> {
    let mut errors = Vec::new();
    if let Some(path) = &config.file {
        match open_append(path) {
            Ok(file) => put_on(file, STDERR, false),
            Err(e) => errors.push(open_error("--log-file", path, &e)),
        }
    }
    if let Some(LogTarget::File(path)) = access_target(config) {
        let fd = ACCESS_FD.load(Ordering::Relaxed);
        match open_append(path) {
            // Still 2 if the boot never opened it (a worker that failed early): take it now.
            Ok(file) if fd == STDERR => ACCESS_FD.store(file.into_raw_fd(), Ordering::Relaxed),
            Ok(file) => put_on(file, fd, true),
            Err(e) => errors.push(open_error("--access-log-file", path, &e)),
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors.join("; and ")) }
}

/// Where access lines go when there are any: None for the server's log.
fn access_target(config: &LogConfig) -> Option<&LogTarget> {
    config.access_file.as_ref().filter(|_| config.access_log)
}

fn open_owned(path: &Path, option: &str, owner: Option<(u32, u32)>) -> Result<OwnedFd, String> {
    let file = open_append(path).map_err(|e| open_error(option, path, &e))?;
    if let Some((uid, gid)) = owner {
        chown(&file, uid, gid).map_err(|e| {
            format!("cannot give {option} {} to uid {uid} gid {gid}: {e}; run as root or choose a file that user already owns", path.display())
        })?;
    }
    Ok(file)
}

/// O_APPEND: every process's line lands at the end, whoever else writes the file.
fn open_append(path: &Path) -> io::Result<OwnedFd> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path holds a NUL byte"))?;
    let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NOCTTY;
    // SAFETY: c_path is a NUL-terminated string that outlives the call.
    let fd = unsafe { libc::open(c_path.as_ptr(), flags, MODE as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open just returned this descriptor; nothing else owns it.
    let file = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills the buffer it is given when it returns 0.
    if unsafe { libc::fstat(fd, stat.as_mut_ptr()) } == 0 && unsafe { stat.assume_init() }.st_mode & libc::S_IFMT == libc::S_IFDIR {
        return Err(io::Error::from_raw_os_error(libc::EISDIR));
    }
    Ok(file)
}

/// Only when the owner differs: a master that already dropped root can still reopen
/// files that are its own.
fn chown(file: &OwnedFd, uid: u32, gid: u32) -> io::Result<()> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills the buffer it is given when it returns 0.
    if unsafe { libc::fstat(file.as_raw_fd(), stat.as_mut_ptr()) } == 0 {
        let stat = unsafe { stat.assume_init() };
        if stat.st_uid == uid && stat.st_gid == gid {
            return Ok(());
        }
    }
    // SAFETY: fchown takes a descriptor we own and two integers.
    if unsafe { libc::fchown(file.as_raw_fd(), uid, gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Puts `file` on descriptor `target` (atomically replacing what was there) and closes
/// the spare. `cloexec`: the target stays out of the app's subprocesses (fd 2 must not).
fn put_on(file: OwnedFd, target: RawFd, cloexec: bool) {
    if file.as_raw_fd() == target {
        // The target was closed and open() reused its number: it is in place already.
        let _ = file.into_raw_fd();
        return;
    }
    let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
    // SAFETY: both descriptors are open; dup3 replaces `target` atomically.
    unsafe { libc::dup3(file.as_raw_fd(), target, flags) };
}

fn open_error(option: &str, path: &Path, e: &io::Error) -> String {
    let fix = match e.raw_os_error() {
        Some(libc::ENOENT) => match path.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(dir) => format!("create the directory {} or choose a path the server can write", dir.display()),
            None => "choose a path the server can write".into(),
        },
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => "create the directory or choose a path the server can write (the service user needs write access to the directory)".into(),
        Some(libc::EISDIR) => "give a file's path, not a directory's".into(),
        _ => "choose a path the server can write".into(),
    };
    format!("cannot open {option} {}: {e}; {fix}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn config(dir: &Path) -> LogConfig {
        LogConfig {
            file: Some(dir.join("error.log")),
            access_file: Some(LogTarget::File(dir.join("access.log"))),
            ..LogConfig::default()
        }
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ferrogate-log-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn errors_name_the_option_the_path_and_the_fix() {
        let dir = temp_dir("errors");
        let missing = dir.join("no/such/dir/error.log");
        let e = open_owned(&missing, "--log-file", None).unwrap_err();
        assert!(e.starts_with(&format!("cannot open --log-file {}: ", missing.display())), "{e}");
        assert!(e.contains("No such file or directory") && e.contains(&format!("create the directory {}", dir.join("no/such/dir").display())), "{e}");
        let e = open_owned(&dir, "--access-log-file", None).unwrap_err();
        assert!(e.contains("--access-log-file") && e.contains("not a directory's"), "{e}");
    }

    #[test]
    fn files_are_created_with_mode_0640_and_appended_to() {
        let dir = temp_dir("mode");
        let path = dir.join("a.log");
        std::fs::write(&path, "before\n").unwrap();
        let file = open_append(&path).unwrap();
        write_line(file.as_raw_fd(), b"after\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "before\nafter\n");
        let created = dir.join("b.log");
        drop(open_append(&created).unwrap());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&created).unwrap().permissions().mode();
        assert_eq!(mode & 0o037, 0, "group may read, others get nothing: {mode:o}");
    }

    /// What a worker does on ReopenLogs, on a descriptor of its own instead of fd 2:
    /// lines written through the same number go to the old file, then to the new one.
    #[test]
    fn reopening_moves_the_same_descriptor_to_the_new_file() {
        let dir = temp_dir("reopen");
        let path = dir.join("access.log");
        let fd = open_append(&path).unwrap().into_raw_fd();
        write_line(fd, b"first\n");
        std::fs::rename(&path, dir.join("access.log.1")).unwrap();
        write_line(fd, b"second\n");
        put_on(open_append(&path).unwrap(), fd, true);
        write_line(fd, b"third\n");
        // SAFETY: flags of a descriptor this test owns.
        assert_ne!(unsafe { libc::fcntl(fd, libc::F_GETFD) } & libc::FD_CLOEXEC, 0, "close-on-exec kept");
        // SAFETY: this test owns fd.
        unsafe { libc::close(fd) };
        assert_eq!(std::fs::read_to_string(dir.join("access.log.1")).unwrap(), "first\nsecond\n");
        let mut now = String::new();
        std::fs::File::open(&path).unwrap().read_to_string(&mut now).unwrap();
        assert_eq!(now, "third\n");
    }

    #[test]
    fn the_master_creates_the_access_log_without_touching_stderr_when_no_log_file() {
        let dir = temp_dir("master");
        let mut c = config(&dir);
        c.file = None;
        reopen_log_files(&c).unwrap();
        assert!(dir.join("access.log").exists());
        assert!(!dir.join("error.log").exists());
        c.access_log = false;
        std::fs::remove_file(dir.join("access.log")).unwrap();
        reopen_log_files(&c).unwrap();
        assert!(!dir.join("access.log").exists(), "--no-access-log: no file");
    }

    #[test]
    fn chown_to_the_current_owner_needs_no_privilege() {
        let dir = temp_dir("chown");
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let file = open_owned(&dir.join("x.log"), "--log-file", Some((uid, gid))).unwrap();
        drop(file);
    }
}
