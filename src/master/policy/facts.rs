//! What the master knows of its workers, as `ferrogate status` and systemd's STATUS= show it.

use std::time::{Duration, Instant};

use super::{Policy, State, WorkerId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerState {
    /// Started, the app not yet ready.
    Booting,
    Serving,
    /// Told to stop: draining, then lifespan shutdown.
    Stopping,
    /// Hung past --timeout: its stack dumped, being killed.
    Killed,
}

impl WorkerState {
    pub fn name(self) -> &'static str {
        match self {
            WorkerState::Booting => "booting",
            WorkerState::Serving => "serving",
            WorkerState::Stopping => "stopping",
            WorkerState::Killed => "killed",
        }
    }
}

/// One worker, as of the last heartbeat and memory sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerFacts {
    pub id: WorkerId,
    /// 0 in the instant between the spawn and its report.
    pub pid: u32,
    pub state: WorkerState,
    /// Since the process was started (a worker's age in `ps`).
    pub age: Duration,
    pub served: u64,
    /// Resident memory in bytes; None until the first sample.
    pub rss: Option<u64>,
    /// While booting as a successor: the worker it will replace once ready.
    pub replacing: Option<WorkerId>,
    /// Once stopping or killed: why, as `Cause::name` spells it.
    pub stop_reason: Option<String>,
}

impl Policy {
    /// Every worker the master still waits for, oldest first.
    pub fn snapshot(&self, now: Instant) -> Vec<WorkerFacts> {
        self.workers
            .iter()
            .map(|(&id, w)| WorkerFacts {
                id,
                pid: w.pid,
                state: match w.state {
                    State::Booting => WorkerState::Booting,
                    State::Serving => WorkerState::Serving,
                    State::Stopping { .. } => WorkerState::Stopping,
                    State::Killed => WorkerState::Killed,
                },
                age: now.saturating_duration_since(w.spawned_at),
                served: w.served,
                rss: w.rss,
                replacing: w.replaces.map(|(old, _)| old),
                stop_reason: w.stop_cause.map(|c| c.name().to_string()),
            })
            .collect()
    }

    /// How many workers the master keeps serving (--workers, moved by SIGTTIN/SIGTTOU).
    pub fn target(&self) -> usize {
        self.target
    }
}

impl Policy {
    /// The processes whose memory the driver samples: every worker reported
    /// started and not yet reported gone.
    pub fn pids(&self) -> Vec<(WorkerId, u32)> {
        self.workers.iter().filter(|(_, w)| w.pid != 0).map(|(&id, w)| (id, w.pid)).collect()
    }
}

/// How many workers are in each state: what status lines report (the log's, systemd's STATUS=).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub serving: usize,
    pub booting: usize,
    /// Told to stop, or hung and being killed: not exited yet.
    pub stopping: usize,
    pub target: usize,
    /// Workers still to be replaced (a rolling restart's queue, plus those whose successor
    /// is booting); 0 when no replacement is in progress.
    pub replacing: usize,
    /// The server is shutting down.
    pub shutting_down: bool,
    /// Requests served since the master started, by live and gone workers (as of their
    /// last heartbeats).
    pub served: Option<u64>,
}

impl Counts {
    pub fn reload_in_progress(&self) -> bool {
        self.replacing > 0
    }
}

impl Policy {
    pub fn counts(&self) -> Counts {
        let count = |f: fn(&State) -> bool| self.workers.values().filter(|w| f(&w.state)).count();
        Counts {
            serving: count(|s| *s == State::Serving),
            booting: count(|s| *s == State::Booting),
            stopping: count(|s| matches!(s, State::Stopping { .. } | State::Killed)),
            target: self.target,
            replacing: self.reload_queue.len() + self.workers.values().filter(|w| w.replaces.is_some()).count(),
            shutting_down: self.exit_code.is_some(),
            served: Some(self.served_by_gone + self.workers.values().map(|w| w.served).sum::<u64>()),
        }
    }
}
