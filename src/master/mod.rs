//! The master process: binds the listeners, starts the workers and keeps the
//! right number of healthy ones running until told to stop. It never imports
//! the app and holds no Python state.
//!
//! The decisions are `policy::Policy`'s; this file only feeds it events
//! (worker messages and exits, commands from the bus, ticks) and carries out
//! the actions it answers with.

pub mod acme;
mod bans;
mod commands;
mod control;
mod pidfile;
mod notify;
mod policy;
pub mod privilege;
mod rss;
mod service;
mod shared;
mod spawn;
mod supervise;
mod tls;
mod upgrade;
pub(crate) mod watch;

use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::control::{Reply, Request, Status, WorkerStatus};
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
    /// The account, files and control socket of a service (--user, --pid, --control-socket).
    service: service::Service,
    started: Instant,
    /// A successor: what the previous master handed over, until every worker serves.
    handover: Option<upgrade::Handover>,
    /// Workers of the first boot that have said Ready (a successor's readiness).
    first_ready: usize,
    /// The successor's pid while an upgrade this master started is under way.
    upgrading: Option<u32>,
    /// The extension module this master runs, to notice `pip install -U` on SIGHUP.
    installed: upgrade::Installed,
    /// The command line this master was started with, for its successor.
    launch: Vec<std::ffi::OsString>,
    /// systemd's Type=notify: readiness, reloads, stop, status lines, watchdog.
    notify: notify::Notifier,
    /// --ban-after: the ban list the workers enforce.
    bans: bans::BanList,
    /// The worker board and the rate-limit buckets every worker maps.
    shared: shared::Shared,
}

/// Runs the master until it stops; returns the process exit status.
pub fn run(mut config: Config, python: PathBuf) -> i32 {
    commands::ignore_reopen_signal_until_relayed();
    crate::log::init(&config.log);
    notify::Notifier::hide_from_workers(&mut config.worker_env);
    let handover = match upgrade::Handover::from_env() {
        Ok(h) => h,
        Err(e) => {
            crate::error!("{e}");
            return 2;
        }
    };
    // The handover is this master's alone: workers and the app must not see it.
    config.worker_env.unset.push(upgrade::VARIABLE.into());
    let account = match service::account(&config) {
        Ok(account) => account,
        Err(e) => {
            crate::error!("{e}");
            return 2;
        }
    };
    // Created for the account, so that workers (and a master that dropped root) can reopen them.
    if let Err(e) = crate::log::open_log_files(&config.log, account.as_ref().map(|a| (a.uid, a.gid))) {
        crate::error!("{e}");
        return 1;
    }
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
                // The certificate keepers write there, and the workers read the challenge answers.
                if let Some(Err(e)) = account.as_ref().map(|a| privilege::give_tree(&settings.state_dir, a)) {
                    crate::error!("{e}");
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
    let bound = match &handover {
        Some(h) => h.adopt(&mut config),
        None => listeners::bind_all(&config.bind, &config.bind_tls, config.backlog),
    };
    let listeners = match bound {
        Ok(l) => l,
        Err(e) => {
            crate::error!("{e}");
            return 1;
        }
    };
    // Everything that needs root is done by now (ports bound, keys read): the service's
    // files are created for its user, and the master becomes that user if it can.
    let service = match service::Service::set_up(&config, &python, account, &listeners, handover.is_some()) {
        Ok(service) => service,
        Err(e) => {
            crate::error!("{e}");
            return 1;
        }
    };
    // Read before the title overwrites the memory it is read from.
    let launch: Vec<std::ffi::OsString> = std::env::args_os().collect();
    crate::proctitle::set(&format!("ferrogate: master [{}]", config.service.name));
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            crate::error!("cannot start the master's runtime: {e}");
            return 1;
        }
    };
    let shared = match shared::Shared::create(&config) {
        Ok(shared) => shared,
        Err(e) => {
            crate::error!("{e}");
            return 1;
        }
    };
    let bans = bans::BanList::start(&config.front.bans);
    runtime.block_on(async move {
        let (tx, rx) = mpsc::unbounded_channel();
        let w = &config.workers;
        let settings = Settings {
            workers: w.count,
            timeout: Duration::from_secs(w.timeout),
            graceful_timeout: Duration::from_secs(w.graceful_timeout),
            max_memory: config.service.max_worker_memory,
            max_lifetime: config.service.max_worker_lifetime,
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
            service,
            started: Instant::now(),
            handover,
            first_ready: 0,
            upgrading: None,
            installed: upgrade::Installed::now(),
            launch,
            notify: notify::Notifier::from_env(),
            bans,
            shared,
        };
        let code = master.serve(rx).await;
        master.cleanup();
        code
    })
}

impl Master {
    async fn serve(&mut self, mut events: mpsc::UnboundedReceiver<PolicyEvent>) -> i32 {
        let count = self.config.workers.count;
        match &self.handover {
            Some(h) => crate::info!("Starting ferrogate {} (master pid {}), upgrading from master pid {}", env!("CARGO_PKG_VERSION"), std::process::id(), h.from_pid),
            None => crate::info!("Starting ferrogate {} (master pid {})", env!("CARGO_PKG_VERSION"), std::process::id()),
        }
        for l in &self.listeners {
            crate::info!("Listening at: {}", l.url());
        }
        crate::info!("Using {} worker{} for {}", count, if count == 1 { "" } else { "s" }, self.config.app.target);

        let (bus, mut commands) = mpsc::unbounded_channel();
        if commands::relay_signals(bus.clone()).is_err() {
            crate::error!("cannot install signal handlers");
            return 1;
        }
        let (control_tx, mut control_requests) = mpsc::unbounded_channel();
        if let Some(socket) = &self.service.control {
            let mut allowed = vec![privilege::effective_uid()];
            allowed.extend(self.service.account.as_ref().map(|a| a.uid));
            match socket.serve(allowed, control_tx) {
                Ok(()) => crate::info!("Control socket: {} (ferrogate status|reload|stop|workers|upgrade|bans)", socket.path().display()),
                Err(e) => crate::error!("{e}"),
            }
        }
        let (upgrade_tx, mut upgrades) = mpsc::unbounded_channel();
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
        let mut memory = tokio::time::interval(rss::EVERY);
        loop {
            let rotation = self.tls.as_ref().map(|t| t.until_rotation());
            let notify_due = self.notify.next_due().map(tokio::time::Instant::from_std);
            let event = tokio::select! {
                Some(command) = commands.recv() => {
                    let command = match command {
                        // After `pip install -U ferrogate`, SIGHUP (systemctl reload) upgrades
                        // the master too: new workers must not run newer code than their master.
                        commands::Command::Reload { why } if self.installed.changed() && self.upgrading.is_none() && !self.stopping => {
                            crate::info!("{why}: ferrogate was reinstalled since this master started; upgrading the master as well");
                            commands::Command::Upgrade { why }
                        }
                        other => other,
                    };
                    match command {
                        commands::Command::Upgrade { why } => {
                            let _ = self.start_upgrade(&why, &upgrade_tx);
                            continue;
                        }
                        commands::Command::ReopenLogs { why } => {
                            self.reopen_logs(&why);
                            continue;
                        }
                        commands::Command::Reload { .. } => {
                            self.reload_certificates();
                            self.notify.reload_asked();
                        }
                        _ => {}
                    }
                    PolicyEvent::Command(command)
                }
                Some(outcome) = upgrades.recv() => match outcome {
                    upgrade::Outcome::Ready(pid) => {
                        for l in &mut self.listeners {
                            l.hand_over();
                        }
                        crate::proctitle::set(&format!("ferrogate: old master, draining [{}]", self.config.service.name));
                        self.notify.hand_over();
                        PolicyEvent::Command(commands::Command::Stop { graceful: true, why: format!("upgrade: the new master (pid {pid}) serves; this one") })
                    }
                    upgrade::Outcome::Failed(pid, how) => {
                        crate::error!("Upgrade failed: the new master (pid {pid}) stopped before serving ({how}); this master keeps serving. Its errors are above.");
                        self.upgrading = None;
                        continue;
                    }
                },
                Some(event) = events.recv() => event,
                Some(pending) = control_requests.recv() => {
                    let reply = self.on_control(pending.request, &bus, &upgrade_tx);
                    let _ = pending.reply.send(reply);
                    continue;
                }
                _ = tick.tick() => PolicyEvent::Tick,
                _ = memory.tick() => {
                    match self.sample_memory() {
                        Some(code) => return code,
                        None => continue,
                    }
                }
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
            if let PolicyEvent::Strikes(strikes) = event {
                self.on_strikes(strikes);
                continue;
            }
            if let PolicyEvent::Tick = &event {
                self.expire_bans();
            }
            if let PolicyEvent::Exited(id, _) = &event {
                self.workers.remove(id);
                self.shared.exited(*id);
            }
            if let PolicyEvent::Ready(_) = &event {
                self.on_worker_ready();
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

    /// Starts the successor of this master (`upgrade.rs`); this one drains once it serves.
    fn start_upgrade(&mut self, why: &str, done: &mpsc::UnboundedSender<upgrade::Outcome>) -> Result<u32, String> {
        if self.stopping {
            return Err("the server is stopping".into());
        }
        if let Some(pid) = self.upgrading {
            crate::info!("{why}: an upgrade is already under way (new master pid {pid})");
            return Ok(pid);
        }
        match upgrade::start(&self.launch, &self.listeners, done.clone()) {
            Ok(pid) => {
                crate::info!("{why}: upgrading: started the new master (pid {pid}) from the installed ferrogate; this one serves until all its workers do");
                self.upgrading = Some(pid);
                Ok(pid)
            }
            Err(e) => {
                crate::error!("{why}: cannot upgrade: {e}");
                Err(e)
            }
        }
    }

    /// A successor tells its predecessor to go once every worker of its first boot serves.
    fn on_worker_ready(&mut self) {
        self.first_ready += 1;
        if self.first_ready >= self.config.workers.count {
            if let Some(handover) = self.handover.take() {
                self.service.take_over();
                handover.hand_over_files(&mut self.listeners);
                crate::info!("Upgrade: every worker serves; the previous master (pid {}) drains and exits", handover.from_pid);
                handover.ready();
            }
        }
    }

    /// A control-socket request: the status is answered here, the rest become commands on
    /// the bus, as signals do.
    fn on_control(&mut self, request: Request, bus: &commands::Bus, upgrades: &mpsc::UnboundedSender<upgrade::Outcome>) -> Reply {
        if self.stopping && request != Request::Status {
            return Reply::refused("the server is stopping");
        }
        let why = |what: &str| format!("ferrogate {what}");
        let (command, message) = match request {
            Request::Status => return Reply { status: Some(self.status()), ..Reply::done("") },
            Request::Bans => return self.on_bans_control(None),
            Request::Unban { address } => return self.on_bans_control(Some(&address)),
            Request::Reload => (commands::Command::Reload { why: why("reload") }, "rolling restart started: each worker is replaced once its successor serves".to_string()),
            Request::Stop => (commands::Command::Stop { graceful: true, why: why("stop") }, "stopping: in-flight requests finish first".to_string()),
            Request::Workers { delta: 0 } => return Reply::refused("workers +N or -N: N must not be 0"),
            Request::Workers { delta } => (commands::Command::Scale { delta, why: why(&format!("workers {delta:+}")) }, format!("worker count {delta:+}")),
            // Started before the answer, so that the state says "upgrading" from then on.
            Request::Upgrade => {
                return match self.start_upgrade(&why("upgrade"), upgrades) {
                    Ok(pid) => Reply::done(format!("upgrading: the new master (pid {pid}) takes over the sockets once its workers serve, then this one drains")),
                    Err(e) => Reply::refused(format!("cannot upgrade: {e}")),
                };
            }
        };
        match bus.send(command) {
            Ok(()) => Reply::done(message),
            Err(_) => Reply::refused("the server is stopping"),
        }
    }

    fn status(&self) -> Status {
        let workers: Vec<WorkerStatus> = self
            .policy
            .snapshot(Instant::now())
            .into_iter()
            .map(|w| WorkerStatus {
                id: w.id,
                pid: w.pid,
                state: w.state.name().into(),
                age_secs: w.age.as_secs(),
                requests_served: w.served,
                rss_bytes: w.rss,
                stopping_because: w.stop_reason,
            })
            .collect();
        Status {
            version: env!("CARGO_PKG_VERSION").into(),
            name: self.config.service.name.clone(),
            app: self.config.app.target.clone(),
            master_pid: std::process::id(),
            master_user: privilege::user_name(privilege::effective_uid()),
            uptime_secs: self.started.elapsed().as_secs(),
            listeners: self.listeners.iter().map(Bound::url).collect(),
            target_workers: self.policy.target(),
            state: if self.stopping {
                "stopping"
            } else if self.upgrading.is_some() {
                "upgrading"
            } else {
                "serving"
            }
            .into(),
            requests_served: self.policy.counts().served.unwrap_or_default(),
            workers,
            certificates: self.tls.as_ref().map(|t| t.describe()).unwrap_or_default(),
        }
    }

    fn listener_fds(&self) -> Vec<RawFd> {
        self.listeners.iter().filter_map(Bound::raw_fd).collect()
    }

    /// Starts worker `id` and its supervise task; returns its pid.
    fn spawn_worker(&mut self, id: WorkerId) -> Option<u32> {
        let material = self.tls.as_ref().map(|t| &t.material);
        let fds: Vec<RawFd> = self.listener_fds().into_iter().chain(self.shared.fds()).collect();
        let spawned = match spawn::spawn(id, &self.python, &self.config, material, &fds, self.service.account.as_ref()) {
            Ok(s) => s,
            Err(e) => {
                crate::error!("cannot start a worker ({} -c ...): {e}", self.python.display());
                return None;
            }
        };
        let pid = spawned.child.id().unwrap_or(0);
        self.shared.started(id, pid);
        let (orders_tx, orders_rx) = mpsc::unbounded_channel();
        tokio::spawn(supervise::supervise(id, spawned, orders_rx, self.events.clone()));
        self.workers.insert(id, orders_tx);
        self.send_bans_to(id);
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

    /// SIGUSR1 (logrotate): the master's files first, so that the workers find the new ones.
    fn reopen_logs(&self, why: &str) {
        match crate::log::reopen_log_files(&self.config.log) {
            Ok(()) => crate::info!("Received {why}: reopening log files"),
            Err(e) => crate::error!("Received {why}: keeping the log files in use: {e}"),
        }
        for worker in self.workers.values() {
            let _ = worker.send(Order::Send(ToWorker::ReopenLogs));
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

    /// Feeds the policy each worker's RSS (it acts on it at the next tick).
    fn sample_memory(&mut self) -> Option<i32> {
        let now = Instant::now();
        let actions: Vec<Action> = rss::sample(&self.policy.pids()).into_iter().flat_map(|e| self.policy.on_event(now, e)).collect();
        self.execute(actions)
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
