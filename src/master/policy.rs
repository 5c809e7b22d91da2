//! The master's decisions, apart from their effects: which worker to start,
//! stop or kill, when a crash loop means giving up, how a rolling restart
//! proceeds. `Policy` is plain data fed events with the time they happened;
//! it answers with actions for the driver (`super`) to carry out, so every
//! rule here can be tested without a process, a signal or a clock.
//!
//! It also keeps what is known of each worker (`facts`), and recycles workers
//! that outgrow their memory or lifetime limits (`recycle`).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::commands::Command;
use crate::ipc::{self, EXIT_BOOT_ERROR, StopReason};
use crate::log::Level;

mod facts;
pub use facts::Counts;
mod recycle;

/// Deaths within this window that make the master give up instead of respawning.
const CRASH_WINDOW: Duration = Duration::from_secs(60);
const CRASH_LIMIT_MIN: usize = 5;
const FIRST_RESPAWN_DELAY: Duration = Duration::from_millis(100);
const MAX_RESPAWN_DELAY: Duration = Duration::from_secs(5);
/// Once a stuck worker has been sent SIGKILL, the kernel finishes the job:
/// asking again every tick would only repeat the warning.
const KILL_AGAIN_AFTER: Duration = Duration::from_secs(3600);

/// The master's own name for a worker: never reused, unlike a pid.
pub type WorkerId = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    Code(i32),
    Signal(i32),
    /// waitpid failed: the status was lost.
    Unknown,
}

#[derive(Debug, PartialEq, Eq)]
pub enum PolicyEvent {
    /// The driver started the process asked for by `Action::Spawn`.
    Spawned { id: WorkerId, pid: u32 },
    /// ... or could not (the driver has logged why).
    SpawnFailed(WorkerId),
    Ready(WorkerId),
    /// With the number of requests the worker has served so far.
    Heartbeat(WorkerId, u64),
    /// The worker's resident memory in bytes, sampled by the driver.
    Memory(WorkerId, u64),
    /// --limit-max-requests reached.
    Retire(WorkerId),
    BootFailed(WorkerId, String),
    /// Responses toward bans; the master's ban list takes them, not the policy.
    Strikes(Vec<crate::ipc::Strike>),
    Exited(WorkerId, ExitKind),
    /// A delay asked for by `Action::ScheduleRespawn` has passed.
    RespawnDue,
    /// Twice a second: heartbeat and stop deadlines are checked here.
    Tick,
    Command(Command),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Start a worker; answer with `Spawned` or `SpawnFailed` before the next action.
    Spawn { id: WorkerId, replaces: Option<WorkerId> },
    Stop { id: WorkerId, reason: StopReason },
    /// SIGUSR2 (faulthandler prints every thread's stack), SIGKILL a second later.
    DumpStackThenKill(WorkerId),
    Kill(WorkerId),
    /// Send `RespawnDue` after this delay.
    ScheduleRespawn(Duration),
    /// The server is stopping: new connections should be refused, not queued.
    CloseListeners,
    /// Stop now with this status.
    Exit(i32),
    Log(Level, String),
}

pub struct Settings {
    pub workers: usize,
    /// --timeout: how long a serving worker's event loop may stay silent.
    pub timeout: Duration,
    pub graceful_timeout: Duration,
    /// --max-worker-memory, in bytes: a serving worker whose RSS passes it is replaced.
    pub max_memory: Option<u64>,
    /// --max-worker-lifetime: a worker serving longer than this (plus its jitter) is replaced.
    pub max_lifetime: Option<Duration>,
}

/// Why a worker is replaced or stopped: chosen when that starts, kept for the
/// log and for the worker's facts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    Reload,
    /// --max-worker-memory.
    Memory,
    /// --max-worker-lifetime.
    Lifetime,
    /// --limit-max-requests.
    MaxRequests,
    ScaleDown,
    /// Hung past --timeout.
    Timeout,
    Shutdown,
}

impl Cause {
    /// The name the control socket shows (stable: scripts may match it).
    pub fn name(self) -> &'static str {
        match self {
            Cause::Reload => "reload",
            Cause::Memory => "max-worker-memory",
            Cause::Lifetime => "max-worker-lifetime",
            Cause::MaxRequests => "limit-max-requests",
            Cause::ScaleDown => "scale-down",
            Cause::Timeout => "timeout",
            Cause::Shutdown => "shutdown",
        }
    }

    /// What the worker tells its clients (WebSocket close code 1001 or 1012).
    fn stop_reason(self) -> StopReason {
        if self == Cause::Shutdown { StopReason::Shutdown } else { StopReason::Restart }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Booting,
    Serving,
    /// Told to stop; killed if still there at the deadline.
    Stopping { deadline: Instant },
    /// Hung: its stack was dumped and it is being killed.
    Killed,
}

struct Worker {
    /// 0 until the driver reports the process; for log lines and the facts.
    pid: u32,
    state: State,
    spawned_at: Instant,
    ready_at: Option<Instant>,
    last_heartbeat: Instant,
    /// Requests served, as of the last heartbeat.
    served: u64,
    /// Resident memory in bytes, as of the driver's last sample.
    rss: Option<u64>,
    /// The worker this one was started to replace, and why; cleared once it
    /// is ready (and the old one told to stop).
    replaces: Option<(WorkerId, Cause)>,
    /// Why it was told to stop, or killed.
    stop_cause: Option<Cause>,
    /// It asked to be replaced (--limit-max-requests) and asks only once.
    retire_asked: bool,
    /// Replacing it failed: not tried again before then (`recycle`).
    recycle_backoff: Option<recycle::Backoff>,
    boot_error: Option<String>,
}

impl Worker {
    fn live(&self) -> bool {
        matches!(self.state, State::Booting | State::Serving)
    }
}

pub struct Policy {
    settings: Settings,
    target: usize,
    workers: BTreeMap<WorkerId, Worker>,
    next_id: WorkerId,
    /// Ids up to this one were the first boot's: failing to start one of
    /// those ends the server at once, before anything has served.
    first_boot: WorkerId,
    /// Workers still to be replaced by the rolling restart in progress.
    reload_queue: VecDeque<WorkerId>,
    crashes: VecDeque<Instant>,
    respawn_delay: Duration,
    ever_served: bool,
    /// Requests served by workers that have exited.
    served_by_gone: u64,
    /// Once stopping, the status to exit with when the last worker is gone.
    exit_code: Option<i32>,
}

type Out = Vec<Action>;

fn log(out: &mut Out, level: Level, message: String) {
    out.push(Action::Log(level, message));
}

impl Policy {
    pub fn new(settings: Settings) -> Self {
        Policy {
            target: settings.workers,
            settings,
            workers: BTreeMap::new(),
            next_id: 1,
            first_boot: 0,
            reload_queue: VecDeque::new(),
            crashes: VecDeque::new(),
            respawn_delay: FIRST_RESPAWN_DELAY,
            ever_served: false,
            served_by_gone: 0,
            exit_code: None,
        }
    }

    /// The first boot: one worker per target slot.
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        for _ in 0..self.target {
            self.spawn(now, None, &mut out);
        }
        self.first_boot = self.next_id - 1;
        out
    }

    pub fn on_event(&mut self, now: Instant, event: PolicyEvent) -> Vec<Action> {
        let mut out = Vec::new();
        let stopping = self.exit_code.is_some();
        match event {
            PolicyEvent::Spawned { id, pid } => {
                if let Some(w) = self.workers.get_mut(&id) {
                    w.pid = pid;
                    log(&mut out, Level::Info, format!("Booting worker with pid: {pid}"));
                }
            }
            PolicyEvent::SpawnFailed(id) => self.on_spawn_failed(now, id, &mut out),
            PolicyEvent::Exited(id, how) => self.on_exit(now, id, how, &mut out),
            PolicyEvent::Tick => self.check_liveness(now, &mut out),
            PolicyEvent::Command(command) => self.on_command(now, command, &mut out),
            // Facts only, kept while stopping too: the control socket shows them.
            PolicyEvent::Heartbeat(id, served) => {
                if let Some(w) = self.workers.get_mut(&id) {
                    w.last_heartbeat = now;
                    w.served = served;
                }
            }
            PolicyEvent::Strikes(_) => {}
            PolicyEvent::Memory(id, bytes) => {
                if let Some(w) = self.workers.get_mut(&id) {
                    w.rss = Some(bytes);
                }
            }
            // While stopping, workers are only waited for: what they say and
            // pending respawns no longer matter.
            _ if stopping => {}
            PolicyEvent::Ready(id) => self.on_ready(now, id, &mut out),
            PolicyEvent::Retire(id) => {
                if let Some(w) = self.workers.get_mut(&id) {
                    w.retire_asked = true;
                    self.check_recycling(now, &mut out);
                }
            }
            PolicyEvent::BootFailed(id, message) => {
                if let Some(w) = self.workers.get_mut(&id) {
                    w.boot_error = Some(message);
                }
            }
            PolicyEvent::RespawnDue => {
                if self.live_count() < self.target {
                    self.spawn(now, None, &mut out);
                }
            }
        }
        out
    }

    fn live_count(&self) -> usize {
        self.workers.values().filter(|w| w.live()).count()
    }

    fn spawn(&mut self, now: Instant, replaces: Option<(WorkerId, Cause)>, out: &mut Out) {
        let id = self.next_id;
        self.next_id += 1;
        let worker = Worker {
            pid: 0,
            state: State::Booting,
            spawned_at: now,
            ready_at: None,
            last_heartbeat: now,
            served: 0,
            rss: None,
            replaces,
            stop_cause: None,
            retire_asked: false,
            recycle_backoff: None,
            boot_error: None,
        };
        self.workers.insert(id, worker);
        out.push(Action::Spawn { id, replaces: replaces.map(|(old, _)| old) });
    }

    /// Whether a successor of `id` is already booting: one replacement per worker.
    fn being_replaced(&self, id: WorkerId) -> bool {
        self.workers.values().any(|w| w.replaces.is_some_and(|(old, _)| old == id))
    }

    fn on_spawn_failed(&mut self, now: Instant, id: WorkerId, out: &mut Out) {
        let Some(w) = self.workers.remove(&id) else { return };
        if self.exit_code.is_some() {
            self.finish_if_done(out);
        } else if id <= self.first_boot {
            // Nothing has served yet: give up at once, without a drain.
            out.push(Action::Exit(1));
        } else if let Some((old, cause)) = w.replaces {
            self.successor_failed(now, old, cause, out);
        } else {
            self.begin_shutdown(now, 1, out);
        }
    }

    /// A replacement's successor failed to start or died booting: the old
    /// worker keeps serving. A reload is abandoned; a recycle is tried again
    /// later (`recycle`).
    fn successor_failed(&mut self, now: Instant, old: WorkerId, cause: Cause, out: &mut Out) {
        if cause == Cause::Reload {
            self.reload_queue.clear();
        } else {
            self.recycle_failed(now, old, cause, out);
        }
    }

    fn stop_worker(&mut self, now: Instant, id: WorkerId, cause: Cause, out: &mut Out) {
        // A worker's stop: the drain (graceful timeout), cancelled requests'
        // cleanup, then lifespan shutdown (graceful timeout again). Past that
        // it is stuck, and killed.
        let grace = 2 * self.settings.graceful_timeout + ipc::CANCEL_GRACE + Duration::from_secs(5);
        if let Some(w) = self.workers.get_mut(&id) {
            if w.live() {
                out.push(Action::Stop { id, reason: cause.stop_reason() });
                w.state = State::Stopping { deadline: now + grace };
                w.stop_cause = Some(cause);
            }
        }
    }

    fn on_ready(&mut self, now: Instant, id: WorkerId, out: &mut Out) {
        let Some(w) = self.workers.get_mut(&id) else { return };
        w.last_heartbeat = now;
        if w.state == State::Booting {
            w.state = State::Serving;
            w.ready_at = Some(now);
            self.ever_served = true;
            log(out, Level::Info, format!("Worker {} is serving", w.pid));
        }
        if let Some((old, cause)) = w.replaces.take() {
            self.stop_worker(now, old, cause, out);
            if cause == Cause::Reload {
                self.replace_next(now, out);
            }
        }
    }

    fn on_command(&mut self, now: Instant, command: Command, out: &mut Out) {
        if self.exit_code.is_some() {
            if let Command::Stop { .. } = command {
                self.force_stop("Second signal: killing the workers without waiting".into(), out);
            }
            return;
        }
        match command {
            Command::Stop { graceful: true, why } => {
                let hint = if why == "SIGINT" { " (press Ctrl-C again to force)" } else { "" };
                log(out, Level::Info, format!("Received {why}: shutting down gracefully{hint}"));
                self.begin_shutdown(now, 0, out);
            }
            Command::Stop { graceful: false, why } => {
                // Killed first: with no worker left, begin_shutdown already ends in Exit.
                self.force_stop(format!("Received {why}: killing the workers without waiting"), out);
                self.begin_shutdown(now, 0, out);
            }
            Command::Reload { why } => self.begin_reload(now, &why, out),
            Command::Scale { delta, why } => self.scale(now, delta, &why, out),
            // The master carries it out itself (upgrade.rs): it never reaches the policy.
            Command::Upgrade { .. } => {}
            // The master's loop reopens the log files itself; nothing for the workers' lifecycle.
            Command::ReopenLogs { .. } => {}
        }
    }

    fn reload_in_progress(&self) -> bool {
        !self.reload_queue.is_empty() || self.workers.values().any(|w| matches!(w.replaces, Some((_, Cause::Reload))))
    }

    fn begin_reload(&mut self, now: Instant, why: &str, out: &mut Out) {
        if self.reload_in_progress() {
            log(out, Level::Info, format!("{why}: a rolling restart is already in progress"));
            return;
        }
        self.reload_queue = self.workers.iter().filter(|(_, w)| w.live()).map(|(id, _)| *id).collect();
        log(
            out,
            Level::Info,
            format!("{why}: rolling restart of {} worker(s): each is replaced once its successor is ready", self.reload_queue.len()),
        );
        self.replace_next(now, out);
    }

    fn replace_next(&mut self, now: Instant, out: &mut Out) {
        while let Some(old) = self.reload_queue.pop_front() {
            // One being recycled already has its successor, which is itself
            // in the queue if it might have loaded the previous code.
            if self.workers.get(&old).is_some_and(Worker::live) && !self.being_replaced(old) {
                self.spawn(now, Some((old, Cause::Reload)), out);
                return;
            }
        }
    }

    fn scale(&mut self, now: Instant, delta: i32, why: &str, out: &mut Out) {
        if delta > 0 {
            self.target += delta as usize;
            log(out, Level::Info, format!("{why}: raising the worker count to {}", self.target));
            for _ in 0..delta {
                self.spawn(now, None, out);
            }
        } else if delta < 0 {
            if self.target <= 1 {
                log(out, Level::Info, format!("{why}: already down to one worker"));
                return;
            }
            let fewer = (delta.unsigned_abs() as usize).min(self.target - 1);
            self.target -= fewer;
            log(out, Level::Info, format!("{why}: lowering the worker count to {}", self.target));
            for _ in 0..fewer {
                if let Some(id) = self.scale_down_choice() {
                    self.stop_worker(now, id, Cause::ScaleDown, out);
                }
            }
        }
    }

    /// The newest first: the oldest have warmed caches. A worker being
    /// replaced and its successor count as one, whichever of them stops: one
    /// outside a replacement is preferred, so that the count really drops.
    fn scale_down_choice(&self) -> Option<WorkerId> {
        let live = || self.workers.iter().rev().filter(|(_, w)| w.live());
        let alone = live().find(|&(&id, w)| w.replaces.is_none() && !self.being_replaced(id));
        alone.or_else(|| live().next()).map(|(&id, _)| id)
    }

    fn on_exit(&mut self, now: Instant, id: WorkerId, how: ExitKind, out: &mut Out) {
        let Some(w) = self.workers.remove(&id) else { return };
        self.served_by_gone += w.served;
        if self.exit_code.is_some() {
            log(out, Level::Info, format!("Worker {} stopped ({})", w.pid, describe_exit(how)));
            self.finish_if_done(out);
            return;
        }
        match w.state {
            State::Stopping { .. } => {
                log(out, Level::Info, format!("Worker {} stopped ({})", w.pid, describe_exit(how)));
                return;
            }
            // Its timeout was already reported; a hang is not a crash loop.
            State::Killed => {
                out.push(Action::ScheduleRespawn(Duration::ZERO));
                return;
            }
            State::Booting | State::Serving => {}
        }
        if how == ExitKind::Code(EXIT_BOOT_ERROR) {
            let message = w.boot_error.unwrap_or_else(|| "the application failed to start (see above)".into());
            log(out, Level::Error, message);
            if let Some((old, cause)) = w.replaces {
                if cause == Cause::Reload {
                    log(
                        out,
                        Level::Error,
                        "The new code failed to start; the running workers keep serving the previous version. Fix the error and reload again."
                            .into(),
                    );
                }
                self.successor_failed(now, old, cause, out);
                return;
            }
            if !self.ever_served {
                log(out, Level::Error, "The application could not start; stopping.".into());
                self.begin_shutdown(now, 3, out);
                return;
            }
        } else {
            log(out, Level::Error, format!("Worker {} died unexpectedly ({}); starting a new one", w.pid, describe_exit(how)));
        }
        if let Some((old, cause)) = w.replaces {
            self.successor_failed(now, old, cause, out);
        }
        self.crashes.push_back(now);
        self.forget_old_crashes(now);
        let limit = CRASH_LIMIT_MIN.max(2 * self.target);
        if self.crashes.len() >= limit {
            log(
                out,
                Level::Error,
                format!(
                    "Workers crashed {} times within {}s; stopping instead of restarting them again. See the errors above.",
                    self.crashes.len(),
                    CRASH_WINDOW.as_secs()
                ),
            );
            self.begin_shutdown(now, 1, out);
            return;
        }
        let delay = self.respawn_delay;
        self.respawn_delay = (self.respawn_delay * 2).min(MAX_RESPAWN_DELAY);
        out.push(Action::ScheduleRespawn(delay));
    }

    fn forget_old_crashes(&mut self, now: Instant) {
        while self.crashes.front().is_some_and(|t| now.saturating_duration_since(*t) > CRASH_WINDOW) {
            self.crashes.pop_front();
        }
    }

    /// Replaces workers whose event loop stopped answering, and kills those that overstay a stop.
    fn check_liveness(&mut self, now: Instant, out: &mut Out) {
        let timeout = self.settings.timeout;
        // Checked before this tick's pruning: the backoff resets one tick after a calm minute.
        if self.crashes.is_empty() {
            self.respawn_delay = FIRST_RESPAWN_DELAY;
        }
        for (&id, w) in self.workers.iter_mut() {
            match w.state {
                State::Serving if now.saturating_duration_since(w.last_heartbeat) > timeout => {
                    log(
                        out,
                        Level::Error,
                        format!(
                            "Worker {} timed out: its event loop has not answered for {}s (--timeout). Its Python stack follows; it is being replaced.",
                            w.pid,
                            timeout.as_secs()
                        ),
                    );
                    w.state = State::Killed;
                    w.stop_cause = Some(Cause::Timeout);
                    out.push(Action::DumpStackThenKill(id));
                }
                State::Stopping { deadline } if now > deadline => {
                    log(out, Level::Warning, format!("Worker {} did not stop in time; killing it", w.pid));
                    out.push(Action::Kill(id));
                    w.state = State::Stopping { deadline: now + KILL_AGAIN_AFTER };
                }
                _ => {}
            }
        }
        self.forget_old_crashes(now);
        self.check_recycling(now, out);
    }

    fn begin_shutdown(&mut self, now: Instant, code: i32, out: &mut Out) {
        self.exit_code = Some(code);
        let ids: Vec<WorkerId> = self.workers.keys().copied().collect();
        for id in ids {
            self.stop_worker(now, id, Cause::Shutdown, out);
        }
        out.push(Action::CloseListeners);
        self.finish_if_done(out);
    }

    fn force_stop(&mut self, message: String, out: &mut Out) {
        log(out, Level::Warning, message);
        out.extend(self.workers.keys().map(|&id| Action::Kill(id)));
    }

    fn finish_if_done(&mut self, out: &mut Out) {
        if let Some(code) = self.exit_code.filter(|_| self.workers.is_empty()) {
            log(out, Level::Info, "Shutdown complete".into());
            out.push(Action::Exit(code));
        }
    }
}

fn describe_exit(how: ExitKind) -> String {
    match how {
        ExitKind::Code(code) => format!("exit status {code}"),
        ExitKind::Signal(libc::SIGKILL) => "killed by SIGKILL".into(),
        ExitKind::Signal(libc::SIGSEGV) => "segmentation fault".into(),
        ExitKind::Signal(libc::SIGABRT) => "aborted".into(),
        ExitKind::Signal(libc::SIGTERM) => "terminated by SIGTERM".into(),
        ExitKind::Signal(sig) => format!("killed by signal {sig}"),
        ExitKind::Unknown => "status unknown".into(),
    }
}

#[cfg(test)]
mod tests;
