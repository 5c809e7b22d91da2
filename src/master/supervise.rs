//! One task per worker owns its `Child`: it relays the worker's control
//! messages and its exit to the master's loop, and it is the only code that
//! signals the process. The master never signals a pid it got earlier: by then
//! the worker may have been reaped and its number given to another process.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::policy::{ExitKind, PolicyEvent, WorkerId};
use super::spawn::Spawned;
use crate::ipc::{self, ToMaster, ToWorker};

/// Between the stack dump and SIGKILL: time for faulthandler to write every thread's stack.
const DUMP_GRACE: Duration = Duration::from_secs(1);
/// After a worker's exit, how long its channel may take to yield what it wrote last.
const LAST_WORDS: Duration = Duration::from_millis(500);

pub enum Order {
    Send(ToWorker),
    DumpStackThenKill,
    Kill,
}

pub async fn supervise(id: WorkerId, spawned: Spawned, mut orders: mpsc::UnboundedReceiver<Order>, events: mpsc::UnboundedSender<PolicyEvent>) {
    let Spawned { mut child, control } = spawned;
    let (read, mut write) = control.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut reading = true;
    let mut kill_at: Option<Instant> = None;
    let status = loop {
        tokio::select! {
            status = child.wait() => {
                // Its last words (BootFailed) may still be unread when the exit is seen
                // first: read up to the end of the channel, which the exit closed (bounded,
                // in case a process the app started holds the worker's end open).
                while reading {
                    match tokio::time::timeout(LAST_WORDS, lines.next_line()).await {
                        Ok(Ok(Some(line))) => relay(id, &line, &events),
                        _ => reading = false,
                    }
                }
                break status.ok();
            }
            Some(order) = orders.recv() => match order {
                Order::Send(msg) => {
                    let _ = write.write_all(&ipc::encode(&msg)).await;
                }
                Order::DumpStackThenKill => {
                    signal_unreaped(&child, libc::SIGUSR2);
                    kill_at = Some(Instant::now() + DUMP_GRACE);
                }
                Order::Kill => {
                    // tokio's kill is a no-op once the child is reaped.
                    let _ = child.start_kill();
                }
            },
            _ = tokio::time::sleep_until(kill_at.unwrap_or_else(Instant::now)), if kill_at.is_some() => {
                kill_at = None;
                let _ = child.start_kill();
            }
            line = lines.next_line(), if reading => match line {
                Ok(Some(line)) => relay(id, &line, &events),
                _ => reading = false,
            },
        }
    };
    let _ = events.send(PolicyEvent::Exited(id, exit_kind(status)));
}

fn relay(id: WorkerId, line: &str, events: &mpsc::UnboundedSender<PolicyEvent>) {
    match ipc::decode::<ToMaster>(line) {
        Ok(msg) => {
            let _ = events.send(event_of(id, msg));
        }
        Err(e) => crate::warn!("{e}"),
    }
}

fn event_of(id: WorkerId, msg: ToMaster) -> PolicyEvent {
    match msg {
        ToMaster::Ready => PolicyEvent::Ready(id),
        ToMaster::Heartbeat { served } => PolicyEvent::Heartbeat(id, served),
        ToMaster::Retire { .. } => PolicyEvent::Retire(id),
        ToMaster::BootFailed { message } => PolicyEvent::BootFailed(id, message),
        ToMaster::Strikes(strikes) => PolicyEvent::Strikes(strikes),
    }
}

fn exit_kind(status: Option<ExitStatus>) -> ExitKind {
    let Some(status) = status else { return ExitKind::Unknown };
    status.code().map(ExitKind::Code).or(status.signal().map(ExitKind::Signal)).unwrap_or(ExitKind::Unknown)
}

/// For signals tokio has no method for (SIGUSR2). `Child::id()` is `Some` only
/// until tokio reaps the child, which happens inside `child.wait()` in the
/// loop above and nowhere else, so the check and the kill cannot straddle a reap.
fn signal_unreaped(child: &Child, signal: libc::c_int) {
    let Some(pid) = child.id().and_then(|pid| libc::pid_t::try_from(pid).ok()).filter(|&pid| pid > 0) else { return };
    // SAFETY: kill(2) reads and writes none of our memory, so the call itself
    // cannot break memory safety. What must hold is that `pid` is still our
    // worker: it is an unreaped child of this process (at worst a zombie), and
    // the kernel does not reuse a pid before its zombie is reaped. pid > 0, so
    // it never means a process group.
    unsafe { libc::kill(pid, signal) };
}
