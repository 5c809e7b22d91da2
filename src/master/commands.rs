//! The command bus: what the master can be asked to do, and the sources that
//! ask. Signals, the `--reload` watcher and the control socket send on one
//! channel; the policy cannot tell them apart except by `why`.

use std::path::PathBuf;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::watch::Watcher;

/// `why` names the sender in the log: "SIGHUP", "--reload", ...
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Replace every worker, one at a time, each once its successor is ready.
    Reload { why: String },
    /// Stop the server. Any stop asked for while one is under way kills the
    /// workers (the second Ctrl-C).
    Stop { graceful: bool, why: String },
    /// Raise or lower the worker count (never below 1).
    Scale { delta: i32, why: String },
    /// Re-execute the master from the installed program, handing over the listeners
    /// (`upgrade.rs`). The master carries it out; the policy never sees it.
    Upgrade { why: String },
    /// Reopen the log files by path (logrotate moved them), then have every worker do so.
    /// The master's loop carries it out; the policy never sees it.
    ReopenLogs { why: String },
}

pub type Bus = mpsc::UnboundedSender<Command>;

/// Installs the handlers before returning, so that a signal sent while the
/// first workers boot waits for the master's loop instead of being lost.
pub fn relay_signals(bus: Bus) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut ttin = signal(SignalKind::from_raw(libc::SIGTTIN))?;
    let mut ttou = signal(SignalKind::from_raw(libc::SIGTTOU))?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    tokio::spawn(async move {
        loop {
            let command = tokio::select! {
                _ = term.recv() => Command::Stop { graceful: true, why: "SIGTERM".into() },
                _ = int.recv() => Command::Stop { graceful: true, why: "SIGINT".into() },
                _ = hup.recv() => Command::Reload { why: "SIGHUP".into() },
                _ = ttin.recv() => Command::Scale { delta: 1, why: "SIGTTIN".into() },
                _ = ttou.recv() => Command::Scale { delta: -1, why: "SIGTTOU".into() },
                _ = usr1.recv() => Command::ReopenLogs { why: "SIGUSR1".into() },
                _ = usr2.recv() => Command::Upgrade { why: "SIGUSR2".into() },
            };
            if bus.send(command).is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// SIGUSR1's default action is to die: until `relay_signals` installs its handler
/// (after the TLS material is read and the listeners are bound), a logrotate run must
/// not kill the master. The handler replaces this; workers, spawned after it, start
/// with the default again and take care of it themselves.
pub fn ignore_reopen_signal_until_relayed() {
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGUSR1, libc::SIG_IGN) };
}

/// --reload: polls the watcher every `every` and asks for a rolling restart
/// on the first change it sees. Aborted when the server starts stopping.
pub fn relay_file_changes(mut watcher: Watcher, every: Duration, bus: Bus) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let changed: Option<PathBuf> = watcher.changed();
            if let Some(changed) = changed {
                crate::info!("Detected a change in {}; reloading", changed.display());
                if bus.send(Command::Reload { why: "--reload".into() }).is_err() {
                    return;
                }
            }
        }
    })
}
