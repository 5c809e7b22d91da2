//! The master process: binds the listeners, starts the workers and keeps the
//! right number of healthy ones running until told to stop. It never imports
//! the app and holds no Python state.

mod spawn;
mod watch;

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::http::listeners::{self, Bound};
use crate::ipc::{self, EXIT_BOOT_ERROR, StopReason, ToMaster, ToWorker};

/// Crashes within this window that make the master give up instead of respawning.
const CRASH_WINDOW: Duration = Duration::from_secs(60);
const CRASH_LIMIT_MIN: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Booting,
    Serving,
    /// Told to stop; may take up to the graceful timeout.
    Stopping { deadline: Instant },
    /// Hung: its stack was dumped and it is being killed.
    Killed,
}

struct Worker {
    pid: u32,
    state: State,
    orders: mpsc::UnboundedSender<ToWorker>,
    last_heartbeat: Instant,
    /// The worker this one was started to replace (reload, max-requests).
    replaces: Option<u64>,
    boot_error: Option<String>,
}

enum Event {
    Message(u64, ToMaster),
    Exited(u64, Option<ExitStatus>),
    RespawnDue,
}

struct Master {
    config: Config,
    python: PathBuf,
    listeners: Vec<Bound>,
    workers: BTreeMap<u64, Worker>,
    next_id: u64,
    target: usize,
    events: mpsc::UnboundedSender<Event>,
    /// Workers still to be replaced by the rolling restart in progress.
    reload_queue: VecDeque<u64>,
    crashes: VecDeque<Instant>,
    respawn_delay: Duration,
    ever_served: bool,
}

/// Runs the master until it stops; returns the process exit status.
pub fn run(config: Config, python: PathBuf) -> i32 {
    crate::log::set_level(config.log.level);
    let listeners = match listeners::bind_all(&config.bind, config.backlog) {
        Ok(l) => l,
        Err(e) => {
            crate::error!("{e}");
            return 1;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            crate::error!("cannot start the master's runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(async move {
        let (tx, rx) = mpsc::unbounded_channel();
        let target = config.workers.count;
        let mut master = Master {
            config,
            python,
            listeners,
            workers: BTreeMap::new(),
            next_id: 1,
            target,
            events: tx,
            reload_queue: VecDeque::new(),
            crashes: VecDeque::new(),
            respawn_delay: Duration::from_millis(100),
            ever_served: false,
        };
        let code = master.serve(rx).await;
        master.cleanup();
        code
    })
}

impl Master {
    async fn serve(&mut self, mut events: mpsc::UnboundedReceiver<Event>) -> i32 {
        crate::info!("Starting ferrogate {} (master pid {})", env!("CARGO_PKG_VERSION"), std::process::id());
        for l in &self.listeners {
            crate::info!("Listening at: {}", l.url());
        }
        crate::info!("Using {} worker{} for {}", self.target, if self.target == 1 { "" } else { "s" }, self.config.app.target);

        let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut ttin), Ok(mut ttou)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
            signal(SignalKind::from_raw(libc::SIGTTIN)),
            signal(SignalKind::from_raw(libc::SIGTTOU)),
        ) else {
            crate::error!("cannot install signal handlers");
            return 1;
        };
        for _ in 0..self.target {
            if let Err(code) = self.spawn_worker(None) {
                return code;
            }
        }
        let w = &self.config.workers;
        let mut watcher = w.reload.then(|| watch::Watcher::new(&w.reload_dirs, &w.reload_include, &w.reload_exclude));
        if let Some(watcher) = &watcher {
            crate::info!("Will reload on changes to {} under {}", w.reload_include.join(", "), watcher.describe());
        }
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut reload_tick = tokio::time::interval(Duration::from_secs_f64(w.reload_delay));

        let code = loop {
            tokio::select! {
                _ = term.recv() => { crate::info!("Received SIGTERM: shutting down gracefully"); break 0; }
                _ = int.recv() => { crate::info!("Received SIGINT: shutting down gracefully (press Ctrl-C again to force)"); break 0; }
                _ = hup.recv() => self.begin_reload("SIGHUP"),
                _ = ttin.recv() => {
                    self.target += 1;
                    crate::info!("SIGTTIN: raising the worker count to {}", self.target);
                    if let Err(code) = self.spawn_worker(None) { break code; }
                }
                _ = ttou.recv() => self.remove_one_worker(),
                Some(event) = events.recv() => {
                    if let Some(code) = self.on_event(event) { break code; }
                }
                _ = tick.tick() => self.check_liveness(),
                _ = reload_tick.tick(), if watcher.is_some() => {
                    if let Some(changed) = watcher.as_mut().and_then(|w| w.changed()) {
                        crate::info!("Detected a change in {}; reloading", changed.display());
                        self.begin_reload("--reload");
                    }
                }
            }
        };
        self.shutdown(&mut events, &mut int, &mut term).await;
        code
    }

    fn listener_fds(&self) -> Vec<RawFd> {
        self.listeners.iter().filter_map(Bound::raw_fd).collect()
    }

    fn live_count(&self) -> usize {
        self.workers.values().filter(|w| matches!(w.state, State::Booting | State::Serving)).count()
    }

    fn spawn_worker(&mut self, replaces: Option<u64>) -> Result<(), i32> {
        let spawned = match spawn::spawn(&self.python, &self.config, &self.listener_fds()) {
            Ok(s) => s,
            Err(e) => {
                crate::error!("cannot start a worker ({} -c ...): {e}", self.python.display());
                return Err(1);
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        let pid = spawned.child.id().unwrap_or(0);
        crate::info!("Booting worker with pid: {pid}");
        let (orders_tx, orders_rx) = mpsc::unbounded_channel();
        tokio::spawn(supervise(id, spawned, orders_rx, self.events.clone()));
        self.workers.insert(id, Worker { pid, state: State::Booting, orders: orders_tx, last_heartbeat: Instant::now(), replaces, boot_error: None });
        Ok(())
    }

    fn stop_worker(&mut self, id: u64, reason: StopReason) {
        // A worker's stop: the drain (graceful timeout), cancelled requests'
        // cleanup, then lifespan shutdown (graceful timeout again). Past that
        // it is stuck, and killed.
        let graceful = Duration::from_secs(self.config.workers.graceful_timeout);
        let grace = 2 * graceful + ipc::CANCEL_GRACE + Duration::from_secs(5);
        if let Some(w) = self.workers.get_mut(&id) {
            if matches!(w.state, State::Booting | State::Serving) {
                let _ = w.orders.send(ToWorker::Stop(reason));
                w.state = State::Stopping { deadline: Instant::now() + grace };
            }
        }
    }

    fn begin_reload(&mut self, why: &str) {
        if !self.reload_queue.is_empty() || self.workers.values().any(|w| w.replaces.is_some()) {
            crate::info!("{why}: a rolling restart is already in progress");
            return;
        }
        self.reload_queue = self.workers.iter().filter(|(_, w)| matches!(w.state, State::Booting | State::Serving)).map(|(id, _)| *id).collect();
        crate::info!("{why}: rolling restart of {} worker(s): each is replaced once its successor is ready", self.reload_queue.len());
        self.replace_next();
    }

    fn replace_next(&mut self) {
        while let Some(old) = self.reload_queue.pop_front() {
            if self.workers.get(&old).is_some_and(|w| matches!(w.state, State::Booting | State::Serving)) {
                let _ = self.spawn_worker(Some(old));
                return;
            }
        }
    }

    fn remove_one_worker(&mut self) {
        if self.target <= 1 {
            crate::info!("SIGTTOU: already down to one worker");
            return;
        }
        self.target -= 1;
        crate::info!("SIGTTOU: lowering the worker count to {}", self.target);
        if let Some(id) = self.workers.iter().rev().find(|(_, w)| matches!(w.state, State::Serving | State::Booting)).map(|(id, _)| *id) {
            self.stop_worker(id, StopReason::Restart);
        }
    }

    /// Handles one worker event; returns an exit status when the server must stop.
    fn on_event(&mut self, event: Event) -> Option<i32> {
        match event {
            Event::Message(id, msg) => {
                let Some(w) = self.workers.get_mut(&id) else { return None };
                match msg {
                    ToMaster::Ready => {
                        w.last_heartbeat = Instant::now();
                        if w.state == State::Booting {
                            w.state = State::Serving;
                            self.ever_served = true;
                            crate::info!("Worker {} is serving", w.pid);
                        }
                        if let Some(old) = w.replaces.take() {
                            self.stop_worker(old, StopReason::Restart);
                            self.replace_next();
                        }
                    }
                    ToMaster::Heartbeat { .. } => w.last_heartbeat = Instant::now(),
                    ToMaster::Retire { .. } => {
                        let already = self.workers.values().any(|o| o.replaces == Some(id));
                        if !already {
                            let _ = self.spawn_worker(Some(id));
                        }
                    }
                    ToMaster::BootFailed { message } => w.boot_error = Some(message),
                }
                None
            }
            Event::Exited(id, status) => self.on_exit(id, status),
            Event::RespawnDue => {
                if self.live_count() < self.target {
                    if let Err(code) = self.spawn_worker(None) {
                        return Some(code);
                    }
                }
                None
            }
        }
    }

    fn on_exit(&mut self, id: u64, status: Option<ExitStatus>) -> Option<i32> {
        let w = self.workers.remove(&id)?;
        let how = describe_exit(status);
        match w.state {
            State::Stopping { .. } => {
                crate::info!("Worker {} stopped ({how})", w.pid);
                return None;
            }
            State::Killed => {
                self.schedule_respawn(Duration::ZERO);
                return None;
            }
            _ => {}
        }
        let boot_error = status.and_then(|s| s.code()) == Some(EXIT_BOOT_ERROR);
        if boot_error {
            let message = w.boot_error.unwrap_or_else(|| "the application failed to start (see above)".into());
            if w.replaces.is_some() {
                crate::error!("{message}");
                crate::error!("The new code failed to start; the running workers keep serving the previous version. Fix the error and reload again.");
                self.reload_queue.clear();
                return None;
            }
            if !self.ever_served {
                crate::error!("{message}");
                crate::error!("The application could not start; stopping.");
                return Some(3);
            }
            crate::error!("{message}");
        } else {
            crate::error!("Worker {} died unexpectedly ({how}); starting a new one", w.pid);
        }
        if w.replaces.is_some() {
            self.reload_queue.clear();
        }
        let now = Instant::now();
        self.crashes.push_back(now);
        while self.crashes.front().is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW) {
            self.crashes.pop_front();
        }
        let limit = CRASH_LIMIT_MIN.max(2 * self.target);
        if self.crashes.len() >= limit {
            crate::error!("Workers crashed {} times within {}s; stopping instead of restarting them again. See the errors above.", self.crashes.len(), CRASH_WINDOW.as_secs());
            return Some(1);
        }
        let delay = self.respawn_delay;
        self.respawn_delay = (self.respawn_delay * 2).min(Duration::from_secs(5));
        self.schedule_respawn(delay);
        None
    }

    fn schedule_respawn(&self, delay: Duration) {
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(Event::RespawnDue);
        });
    }

    /// Replaces workers whose event loop stopped answering, and kills those that overstay a stop.
    fn check_liveness(&mut self) {
        let now = Instant::now();
        let timeout = Duration::from_secs(self.config.workers.timeout);
        if self.crashes.is_empty() {
            self.respawn_delay = Duration::from_millis(100);
        }
        for w in self.workers.values_mut() {
            match w.state {
                State::Serving if now.duration_since(w.last_heartbeat) > timeout => {
                    crate::error!(
                        "Worker {} timed out: its event loop has not answered for {}s (--timeout). Its Python stack follows; it is being replaced.",
                        w.pid,
                        timeout.as_secs()
                    );
                    w.state = State::Killed;
                    let pid = w.pid as libc::pid_t;
                    unsafe { libc::kill(pid, libc::SIGUSR2) };
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    });
                }
                State::Stopping { deadline } if now > deadline => {
                    crate::warn!("Worker {} did not stop in time; killing it", w.pid);
                    unsafe { libc::kill(w.pid as libc::pid_t, libc::SIGKILL) };
                    w.state = State::Stopping { deadline: now + Duration::from_secs(3600) };
                }
                _ => {}
            }
        }
        // Drop crash records once the window has passed, so backoff resets after a calm minute.
        while self.crashes.front().is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW) {
            self.crashes.pop_front();
        }
    }

    async fn shutdown(&mut self, events: &mut mpsc::UnboundedReceiver<Event>, int: &mut tokio::signal::unix::Signal, term: &mut tokio::signal::unix::Signal) {
        let ids: Vec<u64> = self.workers.keys().copied().collect();
        for id in ids {
            self.stop_worker(id, StopReason::Shutdown);
        }
        // Close our copies of the listeners: once the workers have let go of theirs
        // (they do as they start draining), new connections are refused at once
        // instead of waiting in a queue nobody will accept from.
        for l in &mut self.listeners {
            l.close();
        }
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        while !self.workers.is_empty() {
            tokio::select! {
                Some(event) = events.recv() => {
                    if let Event::Exited(id, status) = event {
                        if let Some(w) = self.workers.remove(&id) {
                            crate::info!("Worker {} stopped ({})", w.pid, describe_exit(status));
                        }
                    }
                }
                _ = int.recv() => self.force_stop(),
                _ = term.recv() => self.force_stop(),
                _ = tick.tick() => self.check_liveness(),
            }
        }
        crate::info!("Shutdown complete");
    }

    fn force_stop(&mut self) {
        crate::warn!("Second signal: killing the workers without waiting");
        for w in self.workers.values() {
            unsafe { libc::kill(w.pid as libc::pid_t, libc::SIGKILL) };
        }
    }

    fn cleanup(&mut self) {
        for l in &self.listeners {
            if let Some(path) = &l.created_path {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

fn describe_exit(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) if s.code().is_some() => format!("exit status {}", s.code().unwrap_or_default()),
        Some(s) => match s.signal() {
            Some(libc::SIGKILL) => "killed by SIGKILL".into(),
            Some(libc::SIGSEGV) => "segmentation fault".into(),
            Some(libc::SIGABRT) => "aborted".into(),
            Some(libc::SIGTERM) => "terminated by SIGTERM".into(),
            Some(sig) => format!("killed by signal {sig}"),
            None => "unknown status".into(),
        },
        None => "status unknown".into(),
    }
}

/// Relays one worker's control messages and its exit to the master's loop.
async fn supervise(id: u64, spawned: spawn::Spawned, mut orders: mpsc::UnboundedReceiver<ToWorker>, events: mpsc::UnboundedSender<Event>) {
    let spawn::Spawned { mut child, control } = spawned;
    let (read, mut write) = control.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut reading = true;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.ok(),
            Some(order) = orders.recv() => {
                let _ = write.write_all(&ipc::encode(&order)).await;
            }
            line = lines.next_line(), if reading => match line {
                Ok(Some(line)) => match ipc::decode::<ToMaster>(&line) {
                    Ok(msg) => { let _ = events.send(Event::Message(id, msg)); }
                    Err(e) => crate::warn!("{e}"),
                },
                _ => reading = false,
            },
        }
    };
    let _ = events.send(Event::Exited(id, status));
}
