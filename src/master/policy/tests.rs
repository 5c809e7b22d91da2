//! The policy driven by scripted events and a fake clock: no process, no signal.

use super::*;
use super::facts::{WorkerFacts, WorkerState};
use crate::ipc::StopReason::{Restart, Shutdown};

const SIGKILLED: ExitKind = ExitKind::Signal(libc::SIGKILL);
const CLEAN: ExitKind = ExitKind::Code(0);

/// Plays the driver: every `Spawn` succeeds, with pid 1000 + id.
struct Harness {
    policy: Policy,
    start: Instant,
    now: Instant,
}

impl Harness {
    fn new(workers: usize) -> (Self, Vec<Action>) {
        Harness::with(settings(workers))
    }

    fn with(settings: Settings) -> (Self, Vec<Action>) {
        let start = Instant::now();
        let mut h = Harness { policy: Policy::new(settings), start, now: start };
        let first = h.policy.start(start);
        let all = h.ack(first);
        (h, all)
    }

    /// `workers` workers started and serving.
    fn serving(workers: usize) -> Self {
        Harness::serving_with(settings(workers))
    }

    fn serving_with(settings: Settings) -> Self {
        let workers = settings.workers;
        let (mut h, _) = Harness::with(settings);
        for id in 1..=workers as WorkerId {
            h.on(PolicyEvent::Ready(id));
        }
        h
    }

    fn at(&mut self, secs: f64) -> &mut Self {
        self.now = self.start + Duration::from_secs_f64(secs);
        self
    }

    fn on(&mut self, event: PolicyEvent) -> Vec<Action> {
        let actions = self.policy.on_event(self.now, event);
        self.ack(actions)
    }

    fn command(&mut self, command: Command) -> Vec<Action> {
        self.on(PolicyEvent::Command(command))
    }

    fn ack(&mut self, actions: Vec<Action>) -> Vec<Action> {
        let mut all = Vec::new();
        for action in actions {
            let spawned = match action {
                Action::Spawn { id, .. } => Some(id),
                _ => None,
            };
            all.push(action);
            if let Some(id) = spawned {
                all.extend(self.policy.on_event(self.now, PolicyEvent::Spawned { id, pid: 1000 + id as u32 }));
            }
        }
        all
    }
}

/// --timeout 2, --graceful-timeout 1, no recycling limits.
fn settings(workers: usize) -> Settings {
    Settings {
        workers,
        timeout: Duration::from_secs(2),
        graceful_timeout: Duration::from_secs(1),
        max_memory: None,
        max_lifetime: None,
    }
}

fn without_logs(actions: &[Action]) -> Vec<&Action> {
    actions.iter().filter(|a| !matches!(a, Action::Log(..))).collect()
}

fn logs(actions: &[Action]) -> Vec<&str> {
    actions.iter().filter_map(|a| if let Action::Log(_, m) = a { Some(m.as_str()) } else { None }).collect()
}

fn spawns(actions: &[Action]) -> Vec<(WorkerId, Option<WorkerId>)> {
    actions.iter().filter_map(|a| if let Action::Spawn { id, replaces } = a { Some((*id, *replaces)) } else { None }).collect()
}

fn why(name: &str) -> String {
    name.into()
}

#[test]
fn first_boot_starts_the_target_and_logs_each_pid() {
    let (mut h, actions) = Harness::new(2);
    assert_eq!(spawns(&actions), [(1, None), (2, None)]);
    assert_eq!(logs(&actions), ["Booting worker with pid: 1001", "Booting worker with pid: 1002"]);
    assert_eq!(logs(&h.on(PolicyEvent::Ready(2))), ["Worker 1002 is serving"]);
}

#[test]
fn crash_loop_backs_off_doubling_then_stops_the_server() {
    let mut h = Harness::serving(1);
    // One worker: the limit is CRASH_LIMIT_MIN deaths within the window.
    let mut delays = Vec::new();
    let mut id = 1;
    for crash in 0..CRASH_LIMIT_MIN - 1 {
        let actions = h.at(crash as f64).on(PolicyEvent::Exited(id, SIGKILLED));
        assert_eq!(logs(&actions), [format!("Worker {} died unexpectedly (killed by SIGKILL); starting a new one", 1000 + id)]);
        let [Action::ScheduleRespawn(delay)] = without_logs(&actions)[..] else { panic!("{actions:?}") };
        delays.push(delay.as_millis());
        let respawn = h.on(PolicyEvent::RespawnDue);
        id = spawns(&respawn)[0].0;
        h.on(PolicyEvent::Ready(id));
    }
    assert_eq!(delays, [100, 200, 400, 800]);
    let actions = h.at(10.0).on(PolicyEvent::Exited(id, SIGKILLED));
    assert!(logs(&actions).contains(&"Workers crashed 5 times within 60s; stopping instead of restarting them again. See the errors above."));
    assert_eq!(without_logs(&actions), [&Action::CloseListeners, &Action::Exit(1)]);
}

#[test]
fn crashes_a_minute_apart_never_stop_the_server_and_the_backoff_resets() {
    let mut h = Harness::serving(1);
    let mut id = 1;
    for crash in 0..2 * CRASH_LIMIT_MIN {
        let t = 61.0 * crash as f64;
        let actions = h.at(t).on(PolicyEvent::Exited(id, ExitKind::Code(1)));
        let [Action::ScheduleRespawn(delay)] = without_logs(&actions)[..] else { panic!("{actions:?}") };
        assert_eq!(delay.as_millis(), 100);
        id = spawns(&h.on(PolicyEvent::RespawnDue))[0].0;
        h.on(PolicyEvent::Ready(id));
        // One tick forgets the crash once the window has passed, the next resets the backoff.
        for tick in [t + 60.5, t + 61.0] {
            h.at(tick).on(PolicyEvent::Heartbeat(id, 0));
            assert!(h.on(PolicyEvent::Tick).is_empty());
        }
    }
    assert!(h.policy.exit_code.is_none());
}

#[test]
fn backoff_is_capped_at_five_seconds() {
    let mut h = Harness::serving(4); // limit 8
    let mut delays = Vec::new();
    for id in 1..=4 {
        let actions = h.at(id as f64).on(PolicyEvent::Exited(id, SIGKILLED));
        if let [Action::ScheduleRespawn(d)] = without_logs(&actions)[..] {
            delays.push(d.as_millis());
        }
    }
    for _ in 0..4 {
        let id = spawns(&h.on(PolicyEvent::RespawnDue))[0].0;
        let actions = h.on(PolicyEvent::Exited(id, SIGKILLED));
        if let [Action::ScheduleRespawn(d)] = without_logs(&actions)[..] {
            delays.push(d.as_millis());
        }
    }
    assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000]);
}

#[test]
fn rolling_restart_replaces_one_worker_at_a_time() {
    let mut h = Harness::serving(2);
    let actions = h.command(Command::Reload { why: why("SIGHUP") });
    assert_eq!(logs(&actions)[0], "SIGHUP: rolling restart of 2 worker(s): each is replaced once its successor is ready");
    assert_eq!(spawns(&actions), [(3, Some(1))]);
    assert!(!actions.iter().any(|a| matches!(a, Action::Stop { .. })), "nothing stops before its successor is ready");

    let again = h.command(Command::Reload { why: why("--reload") });
    assert_eq!(logs(&again), ["--reload: a rolling restart is already in progress"]);
    assert!(without_logs(&again).is_empty());

    let actions = h.on(PolicyEvent::Ready(3));
    assert_eq!(without_logs(&actions), [&Action::Stop { id: 1, reason: Restart }, &Action::Spawn { id: 4, replaces: Some(2) }]);
    assert_eq!(logs(&h.on(PolicyEvent::Exited(1, CLEAN))), ["Worker 1001 stopped (exit status 0)"]);
    let actions = h.on(PolicyEvent::Ready(4));
    assert_eq!(without_logs(&actions), [&Action::Stop { id: 2, reason: Restart }]);
    h.on(PolicyEvent::Exited(2, CLEAN));
    // Done: a new reload starts from the new workers.
    assert_eq!(spawns(&h.command(Command::Reload { why: why("SIGHUP") })), [(5, Some(3))]);
}

#[test]
fn boot_failure_during_reload_aborts_it_and_keeps_the_old_workers() {
    let mut h = Harness::serving(2);
    h.command(Command::Reload { why: why("SIGHUP") });
    h.on(PolicyEvent::BootFailed(3, "SyntaxError: FG-BROKEN".into()));
    let actions = h.on(PolicyEvent::Exited(3, ExitKind::Code(EXIT_BOOT_ERROR)));
    assert_eq!(
        logs(&actions),
        [
            "SyntaxError: FG-BROKEN",
            "The new code failed to start; the running workers keep serving the previous version. Fix the error and reload again."
        ]
    );
    assert!(without_logs(&actions).is_empty(), "no stop, no respawn: {actions:?}");
    // The old workers still serve, and the aborted reload does not block the next one.
    assert_eq!(h.policy.live_count(), 2);
    let actions = h.command(Command::Reload { why: why("SIGHUP") });
    assert_eq!(spawns(&actions), [(4, Some(1))]);
}

#[test]
fn boot_failure_during_the_first_boot_stops_with_status_3_and_reports_once() {
    let (mut h, _) = Harness::new(3);
    for id in 1..=3 {
        h.on(PolicyEvent::BootFailed(id, "ImportError: FG-IMPORT-BROKEN".into()));
    }
    let actions = h.on(PolicyEvent::Exited(1, ExitKind::Code(EXIT_BOOT_ERROR)));
    assert_eq!(logs(&actions), ["ImportError: FG-IMPORT-BROKEN", "The application could not start; stopping."]);
    assert_eq!(
        without_logs(&actions),
        [&Action::Stop { id: 2, reason: Shutdown }, &Action::Stop { id: 3, reason: Shutdown }, &Action::CloseListeners]
    );
    let actions = h.on(PolicyEvent::Exited(2, ExitKind::Code(EXIT_BOOT_ERROR)));
    assert_eq!(logs(&actions), ["Worker 1002 stopped (exit status 3)"]);
    let actions = h.on(PolicyEvent::Exited(3, ExitKind::Code(EXIT_BOOT_ERROR)));
    assert_eq!(logs(&actions), ["Worker 1003 stopped (exit status 3)", "Shutdown complete"]);
    assert_eq!(without_logs(&actions), [&Action::Exit(3)]);
}

#[test]
fn boot_failure_after_the_app_has_served_is_a_crash() {
    let mut h = Harness::serving(1);
    h.on(PolicyEvent::Exited(1, SIGKILLED));
    let id = spawns(&h.on(PolicyEvent::RespawnDue))[0].0;
    let actions = h.on(PolicyEvent::Exited(id, ExitKind::Code(EXIT_BOOT_ERROR)));
    assert_eq!(logs(&actions), ["the application failed to start (see above)"]);
    assert_eq!(without_logs(&actions), [&Action::ScheduleRespawn(Duration::from_millis(200))]);
}

#[test]
fn ttin_and_ttou_change_the_target_never_below_one() {
    let mut h = Harness::serving(1);
    let actions = h.command(Command::Scale { delta: 1, why: why("SIGTTIN") });
    assert_eq!(logs(&actions)[0], "SIGTTIN: raising the worker count to 2");
    assert_eq!(spawns(&actions), [(2, None)]);
    h.on(PolicyEvent::Ready(2));

    let actions = h.command(Command::Scale { delta: -1, why: why("SIGTTOU") });
    assert_eq!(logs(&actions), ["SIGTTOU: lowering the worker count to 1"]);
    assert_eq!(without_logs(&actions), [&Action::Stop { id: 2, reason: Restart }], "the newest goes");
    assert_eq!(logs(&h.on(PolicyEvent::Exited(2, CLEAN))), ["Worker 1002 stopped (exit status 0)"]);
    assert!(h.on(PolicyEvent::RespawnDue).is_empty(), "a removed worker is not replaced");

    let actions = h.command(Command::Scale { delta: -1, why: why("SIGTTOU") });
    assert_eq!(logs(&actions), ["SIGTTOU: already down to one worker"]);
    assert!(without_logs(&actions).is_empty());
    let actions = h.command(Command::Scale { delta: -5, why: why("control") });
    assert!(without_logs(&actions).is_empty());
    assert_eq!(h.policy.target, 1);
}

#[test]
fn retire_spawns_one_successor_then_stops_the_old_worker_once_it_is_ready() {
    let mut h = Harness::serving(1);
    let actions = h.on(PolicyEvent::Retire(1));
    assert_eq!(spawns(&actions), [(2, Some(1))]);
    assert!(without_logs(&h.on(PolicyEvent::Retire(1))).is_empty(), "asked twice, replaced once");
    let actions = h.on(PolicyEvent::Ready(2));
    assert_eq!(without_logs(&actions), [&Action::Stop { id: 1, reason: Restart }]);
    h.on(PolicyEvent::Exited(1, CLEAN));
    assert!(h.on(PolicyEvent::RespawnDue).is_empty());
}

#[test]
fn a_silent_worker_gets_its_stack_dumped_and_is_killed_past_the_timeout() {
    let mut h = Harness::serving(2); // --timeout 2
    h.at(1.0).on(PolicyEvent::Heartbeat(1, 0));
    h.at(2.5).on(PolicyEvent::Heartbeat(2, 0));
    let actions = h.at(2.9).on(PolicyEvent::Tick);
    assert!(without_logs(&actions).is_empty(), "1.9 s without a heartbeat is within --timeout: {actions:?}");
    let actions = h.at(3.1).on(PolicyEvent::Tick);
    assert_eq!(
        logs(&actions),
        ["Worker 1001 timed out: its event loop has not answered for 2s (--timeout). Its Python stack follows; it is being replaced."]
    );
    assert_eq!(without_logs(&actions), [&Action::DumpStackThenKill(1)]);
    assert!(h.at(3.6).on(PolicyEvent::Tick).is_empty(), "reported and killed once");
    // Its death is expected: replaced at once, no crash logged or counted.
    let actions = h.on(PolicyEvent::Exited(1, SIGKILLED));
    assert_eq!(actions, [Action::ScheduleRespawn(Duration::ZERO)]);
    assert_eq!(spawns(&h.on(PolicyEvent::RespawnDue)), [(3, None)]);
    assert!(h.policy.crashes.is_empty());
}

#[test]
fn a_booting_worker_is_not_held_to_the_heartbeat_timeout() {
    let (mut h, _) = Harness::new(1);
    assert!(without_logs(&h.at(30.0).on(PolicyEvent::Tick)).is_empty());
}

#[test]
fn a_stopping_worker_past_its_deadline_is_killed_once() {
    let mut h = Harness::serving(1);
    h.command(Command::Stop { graceful: true, why: why("SIGTERM") });
    // Deadline: twice the graceful timeout (1 s), the cancel grace (3 s), 5 s more.
    let deadline = 2.0 + ipc::CANCEL_GRACE.as_secs_f64() + 5.0;
    assert!(h.at(deadline).on(PolicyEvent::Tick).is_empty());
    let actions = h.at(deadline + 0.1).on(PolicyEvent::Tick);
    assert_eq!(logs(&actions), ["Worker 1001 did not stop in time; killing it"]);
    assert_eq!(without_logs(&actions), [&Action::Kill(1)]);
    assert!(h.at(deadline + 60.0).on(PolicyEvent::Tick).is_empty());
}

#[test]
fn stop_tells_every_live_worker_and_exits_once_all_have_exited() {
    let mut h = Harness::serving(2);
    h.command(Command::Scale { delta: -1, why: why("SIGTTOU") }); // worker 2 already stopping
    let actions = h.command(Command::Stop { graceful: true, why: why("SIGTERM") });
    assert_eq!(logs(&actions), ["Received SIGTERM: shutting down gracefully"]);
    assert_eq!(without_logs(&actions), [&Action::Stop { id: 1, reason: Shutdown }, &Action::CloseListeners]);
    // While stopping, nothing else is started or replaced.
    assert!(h.command(Command::Reload { why: why("SIGHUP") }).is_empty());
    assert!(h.command(Command::Scale { delta: 1, why: why("SIGTTIN") }).is_empty());
    assert!(h.on(PolicyEvent::Retire(1)).is_empty());
    assert!(h.on(PolicyEvent::RespawnDue).is_empty());
    assert_eq!(logs(&h.on(PolicyEvent::Exited(2, CLEAN))), ["Worker 1002 stopped (exit status 0)"]);
    let actions = h.on(PolicyEvent::Exited(1, CLEAN));
    assert_eq!(logs(&actions), ["Worker 1001 stopped (exit status 0)", "Shutdown complete"]);
    assert_eq!(without_logs(&actions), [&Action::Exit(0)]);
}

#[test]
fn a_second_stop_kills_the_workers() {
    let mut h = Harness::serving(2);
    let actions = h.command(Command::Stop { graceful: true, why: why("SIGINT") });
    assert_eq!(logs(&actions), ["Received SIGINT: shutting down gracefully (press Ctrl-C again to force)"]);
    let actions = h.command(Command::Stop { graceful: true, why: why("SIGINT") });
    assert_eq!(logs(&actions), ["Second signal: killing the workers without waiting"]);
    assert_eq!(without_logs(&actions), [&Action::Kill(1), &Action::Kill(2)]);
    h.on(PolicyEvent::Exited(1, SIGKILLED));
    assert_eq!(without_logs(&h.on(PolicyEvent::Exited(2, SIGKILLED))), [&Action::Exit(0)]);
}

#[test]
fn a_forced_stop_kills_at_once() {
    let mut h = Harness::serving(1);
    let actions = h.command(Command::Stop { graceful: false, why: why("control") });
    assert_eq!(logs(&actions), ["Received control: killing the workers without waiting"]);
    assert_eq!(without_logs(&actions), [&Action::Kill(1), &Action::Stop { id: 1, reason: Shutdown }, &Action::CloseListeners]);
    assert_eq!(without_logs(&h.on(PolicyEvent::Exited(1, SIGKILLED))), [&Action::Exit(0)]);
}

#[test]
fn a_spawn_failure_in_the_first_boot_exits_at_once() {
    let mut policy = Policy::new(settings(3));
    let now = Instant::now();
    assert_eq!(spawns(&policy.start(now)).len(), 3);
    policy.on_event(now, PolicyEvent::Spawned { id: 1, pid: 1001 });
    assert_eq!(policy.on_event(now, PolicyEvent::SpawnFailed(2)), [Action::Exit(1)]);
}

#[test]
fn a_spawn_failure_later_stops_the_server_gracefully() {
    let mut h = Harness::serving(1);
    h.on(PolicyEvent::Exited(1, SIGKILLED));
    let respawn = h.policy.on_event(h.now, PolicyEvent::RespawnDue);
    let [Action::Spawn { id, .. }] = respawn[..] else { panic!("{respawn:?}") };
    let actions = h.on(PolicyEvent::SpawnFailed(id));
    assert_eq!(without_logs(&actions), [&Action::CloseListeners, &Action::Exit(1)]);
}

#[test]
fn counts_say_what_status_and_systemd_show() {
    let mut h = Harness::serving(2);
    h.command(Command::Reload { why: why("SIGHUP") });
    let c = h.policy.counts();
    assert_eq!((c.serving, c.booting, c.stopping, c.target), (2, 1, 0, 2));
    assert!(c.reload_in_progress() && !c.shutting_down);
}

#[test]
fn exits_are_described_as_before() {
    assert_eq!(describe_exit(ExitKind::Code(3)), "exit status 3");
    assert_eq!(describe_exit(SIGKILLED), "killed by SIGKILL");
    assert_eq!(describe_exit(ExitKind::Signal(libc::SIGSEGV)), "segmentation fault");
    assert_eq!(describe_exit(ExitKind::Signal(libc::SIGUSR1)), format!("killed by signal {}", libc::SIGUSR1));
}

// --- Recycling (--max-worker-memory, --max-worker-lifetime) and the facts ---

const MIB: u64 = 1024 * 1024;

/// With a --timeout long enough for these tests to skip the heartbeats.
fn limited(workers: usize, memory_mb: Option<u64>, lifetime_secs: Option<u64>) -> Settings {
    Settings {
        timeout: Duration::from_secs(3600),
        max_memory: memory_mb.map(|m| m * MIB),
        max_lifetime: lifetime_secs.map(Duration::from_secs),
        ..settings(workers)
    }
}

fn facts(h: &Harness, id: WorkerId) -> WorkerFacts {
    h.policy.snapshot(h.now).into_iter().find(|f| f.id == id).expect("no such worker")
}

#[test]
fn a_worker_over_the_memory_limit_is_replaced_successor_first() {
    let mut h = Harness::serving_with(limited(1, Some(512), None));
    assert!(h.at(1.0).on(PolicyEvent::Memory(1, 512 * MIB)).is_empty());
    assert!(h.on(PolicyEvent::Tick).is_empty(), "at the limit is not over it");
    h.at(2.0).on(PolicyEvent::Memory(1, 612 * MIB - 100));
    let actions = h.on(PolicyEvent::Tick);
    assert_eq!(logs(&actions)[0], "Worker 1001 uses 612 MB (--max-worker-memory 512): replacing it; its successor starts first");
    assert_eq!(spawns(&actions), [(2, Some(1))]);
    assert!(!actions.iter().any(|a| matches!(a, Action::Stop { .. })), "nothing stops before its successor is ready");
    assert_eq!(facts(&h, 2).replacing, Some(1));

    let actions = h.on(PolicyEvent::Ready(2));
    assert_eq!(without_logs(&actions), [&Action::Stop { id: 1, reason: Restart }]);
    let old = facts(&h, 1);
    assert_eq!((old.state, old.stop_reason.as_deref()), (WorkerState::Stopping, Some("max-worker-memory")));
    assert_eq!(facts(&h, 2).replacing, None);
    h.on(PolicyEvent::Exited(1, CLEAN));
    assert!(h.on(PolicyEvent::RespawnDue).is_empty(), "the successor took the old worker's place");
}

#[test]
fn a_worker_is_replaced_once_however_often_it_is_found_over() {
    let mut h = Harness::serving_with(limited(1, Some(100), Some(10)));
    h.on(PolicyEvent::Memory(1, 200 * MIB));
    assert_eq!(spawns(&h.at(0.5).on(PolicyEvent::Tick)), [(2, Some(1))]);
    for t in [1.0, 1.5, 20.0] {
        h.at(t).on(PolicyEvent::Memory(1, 300 * MIB));
        assert!(without_logs(&h.on(PolicyEvent::Tick)).is_empty(), "replaced twice at {t}s");
    }
    assert!(without_logs(&h.on(PolicyEvent::Retire(1))).is_empty());
    assert_eq!(without_logs(&h.on(PolicyEvent::Ready(2))), [&Action::Stop { id: 1, reason: Restart }]);
    // Stopping, it is over the limit still and past its lifetime: no more successors.
    h.on(PolicyEvent::Memory(1, 400 * MIB));
    assert!(without_logs(&h.at(30.0).on(PolicyEvent::Tick)).is_empty());
}

#[test]
fn lifetimes_are_spread_and_workers_replaced_one_at_a_time() {
    let limit = Duration::from_secs(100);
    let due: Vec<f64> = (1..=2).map(|id| recycle::lifetime_of(limit, id).as_secs_f64()).collect();
    for d in &due {
        assert!((100.0..=110.0).contains(d), "{due:?}");
    }
    assert!((due[0] - due[1]).abs() > 1.0, "workers started together come due together: {due:?}");
    let (first, second) = if due[0] < due[1] { (1, 2) } else { (2, 1) };
    let (first_due, second_due) = (due[first as usize - 1], due[second as usize - 1]);

    let mut h = Harness::serving_with(limited(2, None, Some(100)));
    assert!(without_logs(&h.at(first_due - 0.2).on(PolicyEvent::Tick)).is_empty());
    let actions = h.at(first_due + 0.2).on(PolicyEvent::Tick);
    let age = (first_due + 0.2) as u64;
    assert_eq!(logs(&actions)[0], format!("Worker {} has run for {age}s (--max-worker-lifetime 100): replacing it; its successor starts first", 1000 + first));
    assert_eq!(spawns(&actions), [(3, Some(first))]);
    // The second is due too, but waits for the first replacement to end.
    assert!(without_logs(&h.at(second_due + 0.5).on(PolicyEvent::Tick)).is_empty());
    assert_eq!(without_logs(&h.on(PolicyEvent::Ready(3))), [&Action::Stop { id: first, reason: Restart }]);
    assert_eq!(facts(&h, first).stop_reason.as_deref(), Some("max-worker-lifetime"));
    assert_eq!(spawns(&h.on(PolicyEvent::Tick)), [(4, Some(second))]);
    // The successor's own lifetime counts from when it became ready.
    h.on(PolicyEvent::Ready(4));
    h.on(PolicyEvent::Exited(first, CLEAN));
    h.on(PolicyEvent::Exited(second, CLEAN));
    assert!(without_logs(&h.at(second_due + 50.0).on(PolicyEvent::Tick)).is_empty());
}

#[test]
fn no_recycling_while_stopping_or_during_a_rolling_restart() {
    let mut h = Harness::serving_with(limited(2, Some(100), None));
    h.command(Command::Reload { why: why("SIGHUP") });
    h.on(PolicyEvent::Memory(2, 200 * MIB));
    assert!(spawns(&h.on(PolicyEvent::Tick)).is_empty(), "the reload replaces it anyway");
    h.on(PolicyEvent::Ready(3)); // replaces 1; the reload goes on with 2
    h.on(PolicyEvent::Memory(3, 200 * MIB));
    assert!(spawns(&h.on(PolicyEvent::Tick)).is_empty());
    h.on(PolicyEvent::Ready(4)); // replaces 2: the reload is over
    assert_eq!(spawns(&h.on(PolicyEvent::Tick)), [(5, Some(3))]);

    let mut h = Harness::serving_with(limited(1, Some(100), Some(1)));
    h.command(Command::Stop { graceful: true, why: why("SIGTERM") });
    h.on(PolicyEvent::Memory(1, 200 * MIB));
    assert!(without_logs(&h.at(5.0).on(PolicyEvent::Tick)).is_empty());
}

#[test]
fn a_failed_successor_leaves_the_old_worker_serving_and_is_retried_with_backoff() {
    let mut h = Harness::serving_with(limited(1, Some(100), None));
    h.on(PolicyEvent::Memory(1, 200 * MIB));
    assert_eq!(spawns(&h.on(PolicyEvent::Tick)), [(2, Some(1))]);
    h.on(PolicyEvent::BootFailed(2, "MemoryError".into()));
    let actions = h.at(1.0).on(PolicyEvent::Exited(2, ExitKind::Code(EXIT_BOOT_ERROR)));
    assert_eq!(
        logs(&actions),
        ["MemoryError", "Worker 1001 keeps serving: the successor meant to replace it (--max-worker-memory) did not start; trying again in 30s"]
    );
    assert!(without_logs(&actions).is_empty(), "no stop, no exit: {actions:?}");
    assert_eq!(facts(&h, 1).state, WorkerState::Serving);
    for t in [1.5, 10.0, 30.9] {
        assert!(without_logs(&h.at(t).on(PolicyEvent::Tick)).is_empty(), "retried at {t}s");
    }
    assert_eq!(spawns(&h.at(31.0).on(PolicyEvent::Tick)), [(3, Some(1))]);
    // Failing again doubles the wait; a process that could not even be started counts too.
    let actions = h.on(PolicyEvent::SpawnFailed(3));
    assert!(logs(&actions)[0].ends_with("trying again in 60s"), "{actions:?}");
    assert!(without_logs(&h.at(90.0).on(PolicyEvent::Tick)).is_empty());
    assert_eq!(spawns(&h.at(91.5).on(PolicyEvent::Tick)), [(4, Some(1))]);
    assert!(h.policy.exit_code.is_none());
}

#[test]
fn a_retiring_worker_whose_successor_crashed_asks_again_after_the_backoff() {
    let mut h = Harness::serving_with(limited(1, None, None));
    assert_eq!(spawns(&h.on(PolicyEvent::Retire(1))), [(2, Some(1))]);
    let actions = h.on(PolicyEvent::Exited(2, SIGKILLED));
    assert!(logs(&actions).contains(&"Worker 1001 keeps serving: the successor meant to replace it (--limit-max-requests) did not start; trying again in 30s"));
    assert!(spawns(&h.on(PolicyEvent::RespawnDue)).is_empty(), "the old worker still fills its slot");
    assert_eq!(spawns(&h.at(30.5).on(PolicyEvent::Tick)), [(3, Some(1))]);
}

#[test]
fn a_reload_during_a_recycle_replaces_the_others_and_the_successor() {
    let mut h = Harness::serving_with(limited(1, Some(100), None));
    h.on(PolicyEvent::Memory(1, 200 * MIB));
    assert_eq!(spawns(&h.on(PolicyEvent::Tick)), [(2, Some(1))]);
    let actions = h.command(Command::Reload { why: why("SIGHUP") });
    assert_eq!(logs(&actions)[0], "SIGHUP: rolling restart of 2 worker(s): each is replaced once its successor is ready");
    // Worker 1 has its successor already; that one may have loaded the old code.
    assert_eq!(spawns(&actions), [(3, Some(2))]);
    assert_eq!(without_logs(&h.on(PolicyEvent::Ready(2))), [&Action::Stop { id: 1, reason: Restart }]);
    assert_eq!(without_logs(&h.on(PolicyEvent::Ready(3))), [&Action::Stop { id: 2, reason: Restart }]);
    assert_eq!(facts(&h, 2).stop_reason.as_deref(), Some("reload"));
}

#[test]
fn scaling_down_during_a_recycle_stops_a_worker_outside_it() {
    let mut h = Harness::serving_with(limited(2, Some(100), None));
    h.on(PolicyEvent::Memory(1, 200 * MIB));
    assert_eq!(spawns(&h.on(PolicyEvent::Tick)), [(3, Some(1))]);
    let actions = h.command(Command::Scale { delta: -1, why: why("SIGTTOU") });
    assert_eq!(without_logs(&actions), [&Action::Stop { id: 2, reason: Restart }]);
    assert_eq!(facts(&h, 2).stop_reason.as_deref(), Some("scale-down"));
    h.on(PolicyEvent::Ready(3));
    h.on(PolicyEvent::Exited(1, CLEAN));
    h.on(PolicyEvent::Exited(2, CLEAN));
    assert_eq!(h.policy.live_count(), 1);
}

#[test]
fn the_snapshot_has_each_workers_facts() {
    let (mut h, _) = Harness::new(1);
    h.at(1.0).on(PolicyEvent::Ready(1));
    h.at(2.0).on(PolicyEvent::Heartbeat(1, 42));
    h.on(PolicyEvent::Memory(1, 30 * MIB));
    h.command(Command::Scale { delta: 1, why: why("SIGTTIN") });
    let snapshot = h.policy.snapshot(h.start + Duration::from_secs(7));
    let expected = WorkerFacts {
        id: 1,
        pid: 1001,
        state: WorkerState::Serving,
        age: Duration::from_secs(7),
        served: 42,
        rss: Some(30 * MIB),
        replacing: None,
        stop_reason: None,
    };
    assert_eq!(snapshot[0], expected);
    assert_eq!((snapshot[1].id, snapshot[1].state.name(), snapshot[1].age, snapshot[1].rss), (2, "booting", Duration::from_secs(5), None));
    assert_eq!(h.policy.target(), 2);
    assert_eq!(h.policy.pids(), [(1, 1001), (2, 1002)]);

    // A hung worker shows as killed, with why.
    h.at(10.0).on(PolicyEvent::Tick);
    let hung = facts(&h, 1);
    assert_eq!((hung.state.name(), hung.stop_reason.as_deref()), ("killed", Some("timeout")));
}
