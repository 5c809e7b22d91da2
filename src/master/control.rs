//! The master's end of the control socket (`crate::control` has the protocol).
//!
//! The socket is a file of mode 0600 owned by the service user, and each connection's
//! peer is checked again (SO_PEERCRED): root or the service user may command the server,
//! nobody else, whatever the directory's permissions. A request is answered by the
//! master's loop (it alone knows the workers); this task only carries lines.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use super::privilege::{self, Account};
use crate::control::{MAX_REQUEST, Reply, Request};

/// A client that connects and says nothing is dropped after this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A request waiting for the master's answer.
pub struct Pending {
    pub request: Request,
    pub reply: oneshot::Sender<Reply>,
}

pub struct ControlSocket {
    listener: std::os::unix::net::UnixListener,
    /// Where the socket file is now.
    path: PathBuf,
    /// A successor's socket waits beside the path until it serves (`claim`): if it fails
    /// first, the old master's socket must still answer there.
    claim_at: Option<PathBuf>,
    /// The socket file's inode: on exit the file is removed only if it is still ours (a
    /// successor that took the path over after an upgrade keeps its own).
    inode: u64,
}

/// Binds the control socket at `path`. None, with a warning logged, when another live
/// server answers there: a second server on the machine must not take the first one's
/// socket (it runs without one until given its own --control-socket). `take_over` is
/// for a self-upgrade, whose predecessor is that live server: the socket is bound beside
/// `path` and moved onto it by `claim`.
pub fn bind(path: &Path, account: Option<&Account>, take_over: bool) -> Result<Option<ControlSocket>, String> {
    let (path, claim_at) = match take_over {
        true => (path.with_file_name(format!("{}.{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("control.sock"), std::process::id())), Some(path.to_path_buf())),
        false => (path.to_path_buf(), None),
    };
    let path = path.as_path();
    let fail = |e: std::io::Error| format!("cannot create the control socket {} (--control-socket): {e}", path.display());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::create_dir_all(dir).map_err(fail)?;
        if let Some(a) = account {
            privilege::give(dir, a)?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if claim_at.is_none() && std::os::unix::net::UnixStream::connect(path).is_ok() {
                crate::warn!(
                    "Another ferrogate answers on the control socket {}; this one runs without a control socket. Give each server its own --control-socket PATH.",
                    path.display()
                );
                return Ok(None);
            }
            std::fs::remove_file(path).map_err(fail)?;
        }
        Ok(_) => return Err(format!("cannot create the control socket {}: the path exists and is not a socket; remove it or choose another --control-socket", path.display())),
        Err(_) => {}
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(fail)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    if let Some(a) = account {
        privilege::give(path, a)?;
    }
    let inode = std::fs::metadata(path).map_err(fail)?.ino();
    Ok(Some(ControlSocket { listener, path: path.to_path_buf(), claim_at, inode }))
}

impl ControlSocket {
    /// Accepts requests until the master's loop goes away; `allowed` are the uids (besides
    /// root) that may send them.
    pub fn serve(&self, allowed: Vec<u32>, requests: mpsc::UnboundedSender<Pending>) -> Result<(), String> {
        let std = self.listener.try_clone().map_err(|e| format!("control socket: {e}"))?;
        std.set_nonblocking(true).map_err(|e| format!("control socket: {e}"))?;
        let listener = tokio::net::UnixListener::from_std(std).map_err(|e| format!("control socket: {e}"))?;
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                if requests.is_closed() {
                    return;
                }
                tokio::spawn(answer(stream, allowed.clone(), requests.clone()));
            }
        });
        Ok(())
    }

    /// Where commands find it (where it will be, for a successor that has not claimed it).
    pub fn path(&self) -> &Path {
        self.claim_at.as_deref().unwrap_or(&self.path)
    }

    /// A successor that serves takes the path over: one rename, so a command finds either
    /// the old master's socket or ours, never none.
    pub fn claim(&mut self) -> Result<(), String> {
        let Some(target) = self.claim_at.take() else { return Ok(()) };
        std::fs::rename(&self.path, &target).map_err(|e| format!("cannot move the control socket to {}: {e}", target.display()))?;
        self.path = target;
        Ok(())
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

async fn answer(stream: tokio::net::UnixStream, allowed: Vec<u32>, requests: mpsc::UnboundedSender<Pending>) {
    let uid = stream.peer_cred().map(|c| c.uid()).unwrap_or(u32::MAX);
    let (read, mut write) = stream.into_split();
    let reply = if uid != 0 && !allowed.contains(&uid) {
        Reply::refused(format!("uid {uid} may not control this server: run the command as root or as the service's user"))
    } else {
        let mut line = String::new();
        let mut reader = BufReader::new(read.take(MAX_REQUEST as u64));
        match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
            Ok(Ok(n)) if n > 0 => match serde_json::from_str::<Request>(line.trim_end()) {
                Ok(request) => ask_master(request, &requests).await,
                Err(e) => Reply::refused(format!("not a control request ({e}); use the `ferrogate status|reload|stop|workers|upgrade|bans` commands")),
            },
            _ => return,
        }
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    let _ = write.write_all(&out).await;
}

async fn ask_master(request: Request, requests: &mpsc::UnboundedSender<Pending>) -> Reply {
    let (tx, rx) = oneshot::channel();
    if requests.send(Pending { request, reply: tx }).is_err() {
        return Reply::refused("the server is shutting down");
    }
    rx.await.unwrap_or_else(|_| Reply::refused("the server is shutting down"))
}
