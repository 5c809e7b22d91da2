//! Listening sockets: bound once by the master, inherited by every worker.
//!
//! All workers accept from the same kernel queue, so a worker that exits
//! leaves its unaccepted connections to the others instead of resetting them.

use socket2::{Domain, SockAddr, Socket, Type};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::{BindSpec, Config};

pub struct Bound {
    pub spec: BindSpec,
    /// Speaks TLS.
    pub secure: bool,
    /// None once closed at shutdown.
    socket: Option<Socket>,
    /// A unix socket file we created and must remove on exit.
    pub created_path: Option<PathBuf>,
}

impl Bound {
    /// The URL a person can open, with the real port when 0 was asked for.
    pub fn url(&self) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        match (&self.spec, self.socket.as_ref().and_then(|s| s.local_addr().ok()).and_then(|a| a.as_socket())) {
            (BindSpec::Fd { fd }, Some(addr)) => format!("{scheme}://{addr} (fd {fd})"),
            (_, Some(addr)) => format!("{scheme}://{addr}"),
            (spec, None) => Config::describe_bind(spec, self.secure),
        }
    }

    pub fn raw_fd(&self) -> Option<RawFd> {
        self.socket.as_ref().map(|s| s.as_raw_fd())
    }

    pub fn close(&mut self) {
        self.socket = None;
    }

    /// A listening socket handed over by the master this one upgrades from (its
    /// descriptor survived exec): checked as --fd is, then described as first asked for.
    pub fn adopt(fd: RawFd, spec: BindSpec, secure: bool, created_path: Option<PathBuf>) -> Result<Bound, String> {
        let inherited = bind(&BindSpec::Fd { fd }, 0)?;
        Ok(Bound { spec, secure, created_path, ..inherited })
    }

    /// A successor serves this socket now: its file is no longer ours to remove.
    pub fn hand_over(&mut self) {
        self.created_path = None;
    }
}

/// Binds every listener; `secure[i]` says whether `specs[i]` speaks TLS.
pub fn bind_all(specs: &[BindSpec], secure: &[bool], backlog: u32) -> Result<Vec<Bound>, String> {
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| bind(spec, backlog).map(|b| Bound { secure: secure.get(i).copied().unwrap_or(false), ..b }))
        .collect()
}

fn bind(spec: &BindSpec, backlog: u32) -> Result<Bound, String> {
    let backlog = backlog.min(i32::MAX as u32) as i32;
    match spec {
        BindSpec::Tcp { host, port } => {
            let what = Config::describe_bind(spec, false);
            let addrs: Vec<SocketAddr> = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(|e| format!("cannot listen on {what}: '{host}' does not resolve ({e}); use an IP address such as 127.0.0.1 or 0.0.0.0"))?
                .collect();
            let addr = addrs.first().ok_or_else(|| format!("cannot listen on {what}: '{host}' has no address"))?;
            let socket = Socket::new(Domain::for_address(*addr), Type::STREAM.cloexec(), None).map_err(|e| format!("cannot listen on {what}: {e}"))?;
            socket.set_reuse_address(true).map_err(|e| format!("cannot listen on {what}: {e}"))?;
            if addr.is_ipv6() {
                // `::` alone serves IPv6 only, as with nginx; bind 0.0.0.0 as well for IPv4.
                let _ = socket.set_only_v6(true);
            }
            socket.bind(&SockAddr::from(*addr)).map_err(|e| {
                let hint = match e.raw_os_error() {
                    Some(libc::EADDRINUSE) => " (another program is listening there; stop it or choose another --port)",
                    Some(libc::EACCES) => " (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
                    Some(libc::EADDRNOTAVAIL) => " (this machine has no such address; try 0.0.0.0)",
                    _ => "",
                };
                format!("cannot listen on {what}: {e}{hint}")
            })?;
            socket.listen(backlog).map_err(|e| format!("cannot listen on {what}: {e}"))?;
            Ok(Bound { spec: spec.clone(), secure: false, socket: Some(socket), created_path: None })
        }
        BindSpec::Unix { path, mode } => {
            let what = Config::describe_bind(spec, false);
            remove_stale_socket(path).map_err(|e| format!("cannot listen on {what}: {e}"))?;
            let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None).map_err(|e| format!("cannot listen on {what}: {e}"))?;
            let addr = SockAddr::unix(path).map_err(|e| format!("cannot listen on {what}: {e}"))?;
            socket.bind(&addr).map_err(|e| {
                let hint = match e.raw_os_error() {
                    Some(libc::ENOENT) => " (its directory does not exist; create it first)",
                    Some(libc::EACCES) => " (no permission to create a file in that directory)",
                    _ => "",
                };
                format!("cannot listen on {what}: {e}{hint}")
            })?;
            if let Some(mode) = mode {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))
                    .map_err(|e| format!("cannot set mode {mode:o} on {}: {e}", path.display()))?;
            }
            socket.listen(backlog).map_err(|e| format!("cannot listen on {what}: {e}"))?;
            Ok(Bound { spec: spec.clone(), secure: false, socket: Some(socket), created_path: Some(path.clone()) })
        }
        BindSpec::Fd { fd } => {
            let raw: RawFd = *fd;
            let mut accepting: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: getsockopt writes at most `len` bytes into `accepting`, a c_int
            // that outlives the call; a bad descriptor is an error return, not UB.
            let rc = unsafe { libc::getsockopt(raw, libc::SOL_SOCKET, libc::SO_ACCEPTCONN, (&mut accepting as *mut libc::c_int).cast(), &mut len) };
            if rc != 0 || accepting == 0 {
                return Err(format!("--fd {raw}: file descriptor {raw} is not a listening socket (was it passed to ferrogate open, and listen()ed?)"));
            }
            // SAFETY: --fd N hands this process descriptor N to listen on, and
            // nothing else in the master owns it; it was just checked to be an
            // open listening socket.
            let socket = unsafe { Socket::from_raw_fd(raw) };
            let _ = socket.set_cloexec(true);
            Ok(Bound { spec: spec.clone(), secure: false, socket: Some(socket), created_path: None })
        }
    }
}

/// A socket file left by a previous run that died is in the way of bind(2); one
/// that something still answers on is not ours to take.
fn remove_stale_socket(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "a server is already listening on this socket"));
            }
            std::fs::remove_file(path)
        }
        Ok(_) => Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "the path exists and is not a socket; remove it or choose another --uds")),
        Err(_) => Ok(()),
    }
}

/// Worker side: the listeners arrive as descriptors FIRST_LISTENER_FD, +1, ...
pub enum Inherited {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// Takes ownership of a listening socket this worker inherited.
///
/// # Safety
/// `fd` must be an open socket that nothing else in this process owns or
/// will close: the master placed the listeners at fd 4, 5, ... before exec,
/// and each is adopted exactly once.
pub unsafe fn adopt(fd: RawFd) -> std::io::Result<Inherited> {
    // SAFETY: the caller's promise above.
    let socket = unsafe { Socket::from_raw_fd(fd) };
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    let is_tcp = socket.local_addr()?.as_socket().is_some();
    let owned: OwnedFd = socket.into();
    Ok(if is_tcp {
        Inherited::Tcp(std::net::TcpListener::from(owned))
    } else {
        Inherited::Unix(std::os::unix::net::UnixListener::from(owned))
    })
}
