//! Upgrading ferrogate itself without refusing a connection (nginx's and gunicorn's USR2):
//! `pip install -U ferrogate`, then `ferrogate upgrade` (or SIGUSR2, or `systemctl reload`
//! with ExecReload sending it).
//!
//! The master starts its successor from the installed program, with the same command
//! line and environment plus FERROGATE_UPGRADE, which names the listening sockets it
//! inherits (their descriptors stay open across exec) and a pipe. The successor adopts
//! the sockets instead of binding, takes over the control socket and --pid, starts its
//! workers and, once every one serves, writes "ready" to the pipe. Only then does the old
//! master drain and exit: the kernel's accept queue is shared all along, so connections
//! are taken by old or new workers and none is refused. If the successor fails first
//! (its pipe closes without "ready"), the old master says so and keeps serving.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::config::{BindSpec, Config};
use crate::http::listeners::Bound;

/// The variable that tells a master it is a successor.
pub const VARIABLE: &str = "FERROGATE_UPGRADE";
const READY: &[u8] = b"ready\n";

/// What the old master hands over, as JSON in FERROGATE_UPGRADE.
#[derive(Debug, Serialize, Deserialize)]
pub struct Handover {
    pub from_pid: u32,
    /// The write end of the readiness pipe.
    pub ready_fd: RawFd,
    pub listeners: Vec<HandedListener>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HandedListener {
    pub fd: RawFd,
    pub secure: bool,
    /// As the user asked for it, for the log and the worker's config.
    pub spec: BindSpec,
    /// A unix socket file the successor removes when it exits for good.
    pub created_path: Option<PathBuf>,
}

impl Handover {
    /// Reads FERROGATE_UPGRADE; None when this master is not a successor.
    pub fn from_env() -> Result<Option<Handover>, String> {
        let Ok(json) = std::env::var(VARIABLE) else { return Ok(None) };
        let handover: Handover = serde_json::from_str(&json).map_err(|e| format!("{VARIABLE} is not a handover from a ferrogate master ({e}); unset it"))?;
        // The pipe crossed exec without close-on-exec; our workers must not inherit it, or
        // the old master would wait for them to close it too.
        // SAFETY: fcntl on a descriptor number; a bad one is an error return.
        if unsafe { libc::fcntl(handover.ready_fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
            return Err(format!("{VARIABLE}: the readiness pipe (fd {}) is not open: {}", handover.ready_fd, std::io::Error::last_os_error()));
        }
        Ok(Some(handover))
    }

    /// The successor's listeners are its predecessor's, whatever its own options say: a
    /// change of --bind or --port needs a restart, not an upgrade.
    pub fn adopt(&self, config: &mut Config) -> Result<Vec<Bound>, String> {
        let specs: Vec<BindSpec> = self.listeners.iter().map(|l| l.spec.clone()).collect();
        if specs != config.bind {
            crate::warn!("Upgrade: serving the previous master's listeners; changes to the listening options take a restart");
        }
        config.bind = specs;
        config.bind_tls = self.listeners.iter().map(|l| l.secure).collect();
        // The socket files stay the old master's until we serve (`hand_over_files`): a
        // successor that fails must not remove them on its way out.
        self.listeners.iter().map(|l| Bound::adopt(l.fd, l.spec.clone(), l.secure, None)).collect()
    }

    /// We serve: the unix socket files are ours to remove when we exit for good.
    pub fn hand_over_files(&self, listeners: &mut [Bound]) {
        for (bound, handed) in listeners.iter_mut().zip(&self.listeners) {
            bound.created_path = handed.created_path.clone();
        }
    }

    /// Tells the old master that every worker serves: it drains and exits.
    pub fn ready(&self) {
        // SAFETY: the old master put the pipe's write end at this descriptor for us and
        // nothing else in this process uses it; it is adopted (and closed) exactly once.
        let fd = unsafe { OwnedFd::from_raw_fd(self.ready_fd) };
        let mut pipe = std::fs::File::from(fd);
        let _ = pipe.write_all(READY);
    }
}

/// How an upgrade started by this master ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The successor serves: drain and exit.
    Ready(u32),
    /// It exited or closed the pipe before serving.
    Failed(u32, String),
}

/// Starts the successor; its outcome arrives on `done`.
/// `launch` is the command line this master was started with (`python` first), as read
/// before the process title overwrote it.
pub fn start(launch: &[std::ffi::OsString], listeners: &[Bound], done: mpsc::UnboundedSender<Outcome>) -> Result<u32, String> {
    let (python, args) = launch.split_first().ok_or("the command line this master was started with is unknown")?;
    let (read, write) = pipe().map_err(|e| format!("cannot create the upgrade pipe: {e}"))?;
    let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(read).map_err(|e| format!("cannot watch the upgrade pipe: {e}"))?;
    let handed: Vec<HandedListener> = listeners
        .iter()
        .filter_map(|l| l.raw_fd().map(|fd| HandedListener { fd, secure: l.secure, spec: l.spec.clone(), created_path: l.created_path.clone() }))
        .collect();
    let handover = Handover { from_pid: std::process::id(), ready_fd: write.as_raw_fd(), listeners: handed };
    let keep: Vec<RawFd> = handover.listeners.iter().map(|l| l.fd).chain([handover.ready_fd]).collect();
    let json = serde_json::to_string(&handover).map_err(|e| e.to_string())?;
    // The same command line, from the installed files: the console script (or -m
    // ferrogate) loads the newly installed extension module.
    let mut cmd = tokio::process::Command::new(python);
    cmd.args(args).env(VARIABLE, json).stdin(std::process::Stdio::null());
    // systemd's watchdog names the main process; the successor becomes it (MAINPID=).
    cmd.env_remove("WATCHDOG_PID");
    // SAFETY: between fork and exec the closure only calls fcntl on descriptors this
    // process holds open until spawn returns, and allocates nothing (`keep` was built
    // before the fork).
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &keep {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot start the new master ({}): {e}", Path::new(python).display()))?;
    drop(write);
    let pid = child.id().unwrap_or(0);
    tokio::spawn(async move {
        // Until "ready", or the end of the pipe (the successor exited without it).
        let mut said = Vec::new();
        let mut buf = [0u8; 16];
        while !said.starts_with(READY) {
            match pipe.read(&mut buf).await {
                Ok(n) if n > 0 => said.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        if said.starts_with(READY) {
            let _ = done.send(Outcome::Ready(pid));
            // It is our child until we exit; reap it if it exits first.
            let _ = child.wait().await;
        } else {
            let how = match child.wait().await {
                Ok(status) => format!("it exited with {status}"),
                Err(e) => format!("its status is unknown ({e})"),
            };
            let _ = done.send(Outcome::Failed(pid, how));
        }
    });
    Ok(pid)
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The extension module this master was loaded from, as it was on disk at start: a
/// `pip install -U` replaces the file (a new inode) or rewrites it (a new mtime).
pub struct Installed {
    path: Option<PathBuf>,
    seen: Option<(u64, i64)>,
}

impl Installed {
    pub fn now() -> Installed {
        let path = own_module_path();
        let seen = path.as_deref().and_then(identity);
        Installed { path, seen }
    }

    pub fn changed(&self) -> bool {
        match (&self.path, self.seen) {
            (Some(path), Some(seen)) => identity(path) != Some(seen),
            _ => false,
        }
    }
}

fn identity(path: &Path) -> Option<(u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.ino(), m.mtime()))
}

/// The file of the shared object holding this function: our extension module.
fn own_module_path() -> Option<PathBuf> {
    // SAFETY: an all-zero Dl_info is valid; dladdr fills it for an address of ours, and
    // dli_fname then points to a NUL-terminated path owned by the loader for as long as
    // the module stays loaded (always, for us).
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(own_module_path as *const libc::c_void, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        let name = std::ffi::CStr::from_ptr(info.dli_fname).to_string_lossy().into_owned();
        Some(PathBuf::from(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handover_survives_its_variable() {
        let h = Handover {
            from_pid: 7,
            ready_fd: 9,
            listeners: vec![HandedListener { fd: 4, secure: true, spec: BindSpec::Unix { path: "/run/a.sock".into(), mode: Some(0o666) }, created_path: Some("/run/a.sock".into()) }],
        };
        let back: Handover = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!((back.from_pid, back.ready_fd, back.listeners[0].fd, back.listeners[0].secure), (7, 9, 4, true));
        assert_eq!(back.listeners[0].created_path.as_deref(), Some(Path::new("/run/a.sock")));
    }

    #[test]
    fn a_rewritten_module_file_is_noticed() {
        let path = std::env::temp_dir().join(format!("fg-installed-{}", std::process::id()));
        std::fs::write(&path, "v1").unwrap();
        let installed = Installed { seen: identity(&path), path: Some(path.clone()) };
        assert!(!installed.changed());
        // pip writes the new file beside the old and renames it over: a new inode.
        let next = path.with_extension("new");
        std::fs::write(&next, "v2").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert!(installed.changed());
        std::fs::remove_file(&path).unwrap();
    }
}
