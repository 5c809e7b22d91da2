//! The master process: binds the listeners, starts the workers and keeps the
//! right number of healthy ones running until told to stop. It never imports
//! the app and holds no Python state.
//!
//! The decisions are `policy::Policy`'s; this file only feeds it events
//! (worker messages and exits, commands from the bus, ticks) and carries out
//! the actions it answers with.

pub mod acme;
mod commands;
mod notify;
mod policy;
mod spawn;
mod supervise;
mod tls;
mod watch;

use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::config::tls::CertSource;
use crate::http::listeners::{self, Bound};
use crate::ipc::ToWorker;
use policy::{Action, Policy, PolicyEvent, Settings, WorkerId};
use supervise::Order;

struct Master {
    config: Config,
    python: PathBuf,
    listeners: Vec<Bound>,
    policy: Policy,
    /// Each live worker's supervise task, the only way to reach its process.
    workers: HashMap<WorkerId, mpsc::UnboundedSender<Order>>,
    events: mpsc::UnboundedSender<PolicyEvent>,
    watcher: Option<JoinHandle<()>>,
    stopping: bool,
    /// Certificates and ticket keys the workers' TLS listeners use.
    tls: Option<tls::TlsState>,
    /// Domain mode: what the certificate keepers need to start.
    acme: Option<(crate::tls::acme::AcmeSettings, Vec<Vec<String>>, Vec<crate::tls::store::Stored>)>,
    /// systemd's Type=notify: readiness, reloads, stop, status lines, watchdog.
    notify: notify::Notifier,
}

/// Runs the master until it stops; returns the process exit status.
pub fn run(mut config: Config, python: PathBuf) -> i32 {
    notify::Notifier::hide_from_workers(&mut config.worker_env);
    crate::log::set_level(config.log.level);
    let mut tls = match config.tls.as_ref().map(tls::TlsState::load).transpose() {
        Ok(tls) => tls,
        Err(e) => {
            crate::error!("{e}");
            return 2;
        }
    };
    let acme = match (&config.tls, tls.as_mut()) {
        (Some(settings), Some(state)) => match &settings.source {
            Some(CertSource::Acme(options)) => {
                let acme_settings = acme::settings(options, &settings.state_dir);
                if let Err(e) = crate::tls::store::ensure_dir(&settings.state_dir) {
                    crate::error!("cannot use the state directory {} (--state-dir): {e}", settings.state_dir.display());
                    return 2;
                }
                let stored = acme::stored(&acme_settings, &options.certificates);
                for s in &stored {
                    state.install(acme::to_pem(s));
                }
                Some((acme_settings, options.certificates.clone(), stored))
            }
            _ => None,
        },
        _ => None,
    };
    let listeners = match listeners::bind_all(&config.bind, &config.bind_tls, config.backlog) {
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
        let w = &config.workers;
        let settings = Settings {
            workers: w.count,
            timeout: Duration::from_secs(w.timeout),
            graceful_timeout: Duration::from_secs(w.graceful_timeout),
        };
        let mut master = Master {
            config,
            python,
            listeners,
            policy: Policy::new(settings),
            workers: HashMap::new(),
            events: tx,
            watcher: None,
            stopping: false,
            tls,
            acme,
            notify: notify::Notifier::from_env(),
        };
        let code = master.serve(rx).await;
        master.cleanup();
        code
    })
}

impl Master {
    async fn serve(&mut self, mut events: mpsc::UnboundedReceiver<PolicyEvent>) -> i32 {
        let count = self.config.workers.count;
        crate::info!("Starting ferrogate {} (master pid {})", env!("CARGO_PKG_VERSION"), std::process::id());
        for l in &self.listeners {
            crate::info!("Listening at: {}", l.url());
        }
        crate::info!("Using {} worker{} for {}", count, if count == 1 { "" } else { "s" }, self.config.app.target);

        let (bus, mut commands) = mpsc::unbounded_channel();
        if commands::relay_signals(bus.clone()).is_err() {
            crate::error!("cannot install signal handlers");
            return 1;
        }
        let (installed_tx, mut installed) = mpsc::unbounded_channel();
        if let Some((settings, certificates, stored)) = self.acme.take() {
            acme::spawn(settings, certificates, &stored, installed_tx);
        }
        let first_boot = self.policy.start(Instant::now());
        if let Some(code) = self.execute(first_boot) {
            return code;
        }
        let w = &self.config.workers;
        if w.reload {
            let watcher = watch::Watcher::new(&w.reload_dirs, &w.reload_include, &w.reload_exclude);
            crate::info!("Will reload on changes to {} under {}", w.reload_include.join(", "), watcher.describe());
            self.watcher = Some(commands::relay_file_changes(watcher, Duration::from_secs_f64(w.reload_delay), bus.clone()));
        }

        // Stop deadlines matter more once stopping: look twice as often.
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut tick_is_fast = false;
        loop {
            let rotation = self.tls.as_ref().map(|t| t.until_rotation());
            let notify_due = self.notify.next_due().map(tokio::time::Instant::from_std);
            let event = tokio::select! {
                Some(command) = commands.recv() => {
                    if matches!(command, commands::Command::Reload { .. }) {
                        self.reload_certificates();
                        self.notify.reload_asked();
                    }
                    PolicyEvent::Command(command)
                }
                Some(event) = events.recv() => event,
                _ = tick.tick() => PolicyEvent::Tick,
                Some(pem) = installed.recv() => {
                    if let Some(tls) = self.tls.as_mut() {
                        tls.install(pem);
                    }
                    self.send_tls();
                    continue;
                }
                _ = tokio::time::sleep(rotation.unwrap_or_default()), if rotation.is_some() => {
                    self.rotate_ticket_key();
                    continue;
                }
                _ = tokio::time::sleep_until(notify_due.unwrap_or_else(tokio::time::Instant::now)), if notify_due.is_some() => {
                    self.notify.update(&self.policy.counts());
                    continue;
                }
            };
            if let PolicyEvent::Exited(id, _) = &event {
                self.workers.remove(id);
            }
            let actions = self.policy.on_event(Instant::now(), event);
            self.notify.update(&self.policy.counts());
            if let Some(code) = self.execute(actions) {
                return code;
            }
            if self.stopping && !tick_is_fast {
                tick = tokio::time::interval(Duration::from_millis(250));
                tick_is_fast = true;
            }
        }
    }

    /// Carries out the policy's actions in order; returns the exit status once one says to exit.
    fn execute(&mut self, actions: Vec<Action>) -> Option<i32> {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Log(level, message) => crate::log::write(level, format_args!("{message}")),
                Action::Spawn { id, .. } => {
                    let mut outcome = match self.spawn_worker(id) {
                        Some(pid) => vec![PolicyEvent::Spawned { id, pid }],
                        None => vec![PolicyEvent::SpawnFailed(id)],
                    };
                    if matches!(outcome[..], [PolicyEvent::SpawnFailed(_)]) {
                        // Whatever made this spawn fail (no interpreter, no
                        // memory, no descriptors) would fail the batch's next
                        // ones, and the first boot stops at its first failure.
                        queue.retain(|a| match a {
                            Action::Spawn { id, .. } => {
                                outcome.push(PolicyEvent::SpawnFailed(*id));
                                false
                            }
                            _ => true,
                        });
                    }
                    // What the policy makes of the spawn comes before the rest of the batch.
                    let mut reaction = Vec::new();
                    for event in outcome {
                        reaction.extend(self.policy.on_event(Instant::now(), event));
                    }
                    for a in reaction.into_iter().rev() {
                        queue.push_front(a);
                    }
                }
                Action::Stop { id, reason } => self.order(id, Order::Send(ToWorker::Stop(reason))),
                Action::DumpStackThenKill(id) => self.order(id, Order::DumpStackThenKill),
                Action::Kill(id) => self.order(id, Order::Kill),
                Action::ScheduleRespawn(delay) => {
                    let events = self.events.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = events.send(PolicyEvent::RespawnDue);
                    });
                }
                Action::CloseListeners => {
                    self.stopping = true;
                    if let Some(watcher) = self.watcher.take() {
                        watcher.abort();
                    }
                    // Once the workers have let go of theirs (they do as they
                    // start draining), new connections are refused at once
                    // instead of waiting in a queue nobody will accept from.
                    for l in &mut self.listeners {
                        l.close();
                    }
                }
                Action::Exit(code) => return Some(code),
            }
        }
        None
    }

    fn listener_fds(&self) -> Vec<RawFd> {
        self.listeners.iter().filter_map(Bound::raw_fd).collect()
    }

    /// Starts worker `id` and its supervise task; returns its pid.
    fn spawn_worker(&mut self, id: WorkerId) -> Option<u32> {
        let material = self.tls.as_ref().map(|t| &t.material);
        let spawned = match spawn::spawn(&self.python, &self.config, material, &self.listener_fds()) {
            Ok(s) => s,
            Err(e) => {
                crate::error!("cannot start a worker ({} -c ...): {e}", self.python.display());
                return None;
            }
        };
        let pid = spawned.child.id().unwrap_or(0);
        let (orders_tx, orders_rx) = mpsc::unbounded_channel();
        tokio::spawn(supervise::supervise(id, spawned, orders_rx, self.events.clone()));
        self.workers.insert(id, orders_tx);
        Some(pid)
    }

    /// SIGHUP re-reads the certificate files; running workers take the new ones at once
    /// (the replacements the reload starts get them at spawn anyway).
    fn reload_certificates(&mut self) {
        if self.tls.as_mut().is_some_and(|t| t.reload_files()) {
            crate::info!("Certificate files reloaded");
            self.send_tls();
        }
    }

    fn rotate_ticket_key(&mut self) {
        let Some(tls) = self.tls.as_mut() else { return };
        match tls.rotate_ticket_key() {
            Ok(()) => self.send_tls(),
            Err(e) => crate::error!("cannot rotate the session-ticket key: {e}"),
        }
    }

    /// Hands the current TLS material to every live worker.
    fn send_tls(&self) {
        let Some(tls) = &self.tls else { return };
        for worker in self.workers.values() {
            let _ = worker.send(Order::Send(ToWorker::Tls(Box::new(tls.material.clone()))));
        }
    }

    fn order(&self, id: WorkerId, order: Order) {
        if let Some(worker) = self.workers.get(&id) {
            let _ = worker.send(order);
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
