//! Starting a worker: a fresh interpreter (never a fork of this threaded
//! process) with its channel (a socketpair) on fd 3 and the listeners from fd 4.

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use super::privilege::{self, Account};
use crate::config::Config;
use crate::ipc::{self, CHANNEL_FD, FIRST_LISTENER_FD, ToWorker};
use crate::tls::acceptor::TlsMaterial;

/// The code a worker interpreter runs: everything else happens in Rust.
const BOOTSTRAP: &str = "import sys; from ferrogate._ferrogate import _worker_main; sys.exit(_worker_main())";

pub struct Spawned {
    pub child: Child,
    pub control: UnixStream,
}

pub fn spawn(id: u64, python: &Path, config: &Config, tls: Option<&TlsMaterial>, listeners: &[RawFd], account: Option<&Account>) -> std::io::Result<Spawned> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let mut sources: Vec<RawFd> = vec![theirs.as_raw_fd()];
    sources.extend_from_slice(listeners);

    let mut cmd = Command::new(python);
    // The worker's number follows the code (sys.argv[1]), for its process title.
    cmd.arg("-c").arg(BOOTSTRAP).arg(id.to_string()).stdin(std::process::Stdio::null());
    // --env-file's variables and systemd's spent LISTEN_*: set on the child only, so the
    // master's own environment stays as it was inherited.
    cmd.envs(config.worker_env.set.iter().map(|(k, v)| (k, v)));
    for name in &config.worker_env.unset {
        cmd.env_remove(name);
    }
    // The account's ids, and its groups allocated here, before the fork.
    let switch = account.map(|a| (a.uid, a.gid, a.groups.clone()));
    if let Some(a) = account {
        // What login would set: libraries keep caches and config under $HOME.
        cmd.env("HOME", &a.home).env("USER", &a.name).env("LOGNAME", &a.name);
    }
    // SAFETY: pre_exec's closure runs in the child between fork and exec, where
    // only async-signal-safe calls are allowed: it calls nothing but fcntl,
    // dup2, close, signal and the id-switching calls (setgroups, setgid, setuid), and
    // allocates nothing (`parked` is on the stack, `sources` and the groups
    // were allocated before the fork). Every fd it touches is open in
    // the child: the fork copied them from this process, which keeps them open
    // until spawn returns.
    unsafe {
        // First move every source above the target range so no dup2 clobbers a later source.
        cmd.pre_exec(move || {
            let mut parked = [0 as RawFd; 64];
            for (i, &src) in sources.iter().enumerate().take(parked.len()) {
                let fd = libc::fcntl(src, libc::F_DUPFD, 1000);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                parked[i] = fd;
            }
            for (i, &fd) in parked.iter().enumerate().take(sources.len()) {
                if libc::dup2(fd, CHANNEL_FD + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            // logrotate's SIGUSR1 (systemctl kill signals every process of the unit) must
            // not kill a worker before its handler exists; an ignored signal stays ignored
            // across exec, and the worker installs its own handler as it starts.
            libc::signal(libc::SIGUSR1, libc::SIG_IGN);
            if let Some((uid, gid, groups)) = &switch {
                privilege::become_user_in_child(*uid, *gid, groups)?;
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(theirs);

    // A few KiB (tens with certificate chains): the socket buffer takes it whole, so this blocking write does not wait on the worker.
    let mut first = ipc::encode(&ToWorker::Config(Box::new(config.clone())));
    if let Some(material) = tls {
        first.extend(ipc::encode(&ToWorker::Tls(Box::new(material.clone()))));
    }
    (&ours).write_all(&first)?;
    ours.set_nonblocking(true)?;
    let control = UnixStream::from_std(ours)?;
    Ok(Spawned { child, control })
}

const _: () = assert!(FIRST_LISTENER_FD == CHANNEL_FD + 1);
