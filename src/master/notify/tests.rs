//! The announcer fed counts by hand and by the real policy, with a fake clock.

use super::*;
use crate::master::commands::Command;
use crate::master::policy::{Action, Policy, PolicyEvent, Settings, WorkerId};

const PID: u32 = 4242;
const MONO: u64 = 123_456_789;

struct Clock {
    start: Instant,
    now: Instant,
}

impl Clock {
    fn new() -> Self {
        let start = Instant::now();
        Clock { start, now: start }
    }

    fn at(&mut self, secs: f64) -> Instant {
        self.now = self.start + Duration::from_secs_f64(secs);
        self.now
    }
}

fn counts(serving: usize, booting: usize, target: usize) -> Counts {
    Counts { serving, booting, target, ..Counts::default() }
}

fn lines(message: Option<String>) -> Vec<String> {
    message.map(|m| m.lines().map(str::to_string).collect()).unwrap_or_default()
}

#[test]
fn ready_only_once_every_first_worker_serves() {
    let mut clock = Clock::new();
    let mut a = Announcer::new(PID, None);
    assert_eq!(lines(a.update(clock.at(0.0), MONO, &counts(0, 3, 3))), ["STATUS=starting: 0 of 3 workers serving"]);
    let two = lines(a.update(clock.at(1.5), MONO, &counts(2, 1, 3)));
    assert!(!two.contains(&"READY=1".to_string()), "{two:?}");
    assert_eq!(
        lines(a.update(clock.at(1.6), MONO, &counts(3, 0, 3))),
        ["READY=1", "MAINPID=4242", "STATUS=3 workers serving"],
        "a change of phase carries its status at once"
    );
    assert_eq!(a.update(clock.at(5.0), MONO, &counts(3, 0, 3)), None, "nothing changed: nothing sent");
}

#[test]
fn status_changes_go_out_at_most_once_a_second() {
    let mut clock = Clock::new();
    let mut a = Announcer::new(PID, None);
    a.update(clock.at(0.0), MONO, &counts(1, 0, 1));
    let served = |n| Counts { served: Some(n), ..counts(1, 0, 1) };
    assert_eq!(lines(a.update(clock.at(1.0), MONO, &served(10))), ["STATUS=1 worker serving, 10 requests served"]);
    assert_eq!(a.update(clock.at(1.2), MONO, &served(20)), None, "held back");
    assert_eq!(a.next_due(), Some(clock.at(2.0)), "the held status has a time to go out");
    assert_eq!(a.update(clock.at(1.9), MONO, &served(30)), None);
    assert_eq!(lines(a.update(clock.at(2.0), MONO, &served(30))), ["STATUS=1 worker serving, 30 requests served"]);
    assert_eq!(a.next_due(), None, "nothing held, no watchdog: no reason to wake up");
}

#[test]
fn a_reload_is_announced_from_its_start_to_its_end() {
    let mut clock = Clock::new();
    let mut a = Announcer::new(PID, None);
    a.update(clock.at(0.0), MONO, &counts(3, 0, 3));
    a.reload_asked();
    let replacing = |left, serving, booting| Counts { replacing: left, ..counts(serving, booting, 3) };
    assert_eq!(
        lines(a.update(clock.at(1.0), MONO, &replacing(3, 3, 1))),
        ["RELOADING=1", "MONOTONIC_USEC=123456789", "STATUS=rolling restart: 0 of 3 replaced"]
    );
    assert_eq!(lines(a.update(clock.at(2.5), MONO, &replacing(2, 3, 1))), ["STATUS=rolling restart: 1 of 3 replaced"]);
    assert_eq!(lines(a.update(clock.at(4.0), MONO, &replacing(0, 3, 0))), ["READY=1", "STATUS=3 workers serving"]);
}

#[test]
fn a_retirement_is_no_reload() {
    let mut clock = Clock::new();
    let mut a = Announcer::new(PID, None);
    a.update(clock.at(0.0), MONO, &counts(2, 0, 2));
    // --limit-max-requests: a successor boots to replace one worker, no reload asked.
    let retiring = Counts { replacing: 1, ..counts(2, 1, 2) };
    assert_eq!(a.update(clock.at(3.0), MONO, &retiring), None);
}

#[test]
fn stopping_is_announced_once_and_ends_the_other_announcements() {
    let mut clock = Clock::new();
    let mut a = Announcer::new(PID, None);
    a.update(clock.at(0.0), MONO, &counts(2, 0, 2));
    let stopping = |left| Counts { stopping: left, shutting_down: true, ..counts(0, 0, 2) };
    assert_eq!(lines(a.update(clock.at(1.0), MONO, &stopping(2))), ["STOPPING=1", "STATUS=stopping: waiting for 2 workers"]);
    assert_eq!(lines(a.update(clock.at(2.5), MONO, &stopping(1))), ["STATUS=stopping: waiting for 1 worker"]);
    a.reload_asked();
    let late = Counts { replacing: 1, ..stopping(1) };
    assert_eq!(a.update(clock.at(4.0), MONO, &late), None, "no RELOADING or READY once stopping");
}

#[test]
fn a_stop_during_the_first_boot_skips_ready() {
    let mut clock = Clock::new();
    let mut a = Announcer::new(PID, None);
    a.update(clock.at(0.0), MONO, &counts(0, 2, 2));
    let stopping = Counts { shutting_down: true, stopping: 2, ..counts(0, 0, 2) };
    assert_eq!(lines(a.update(clock.at(0.5), MONO, &stopping))[0], "STOPPING=1");
}

#[test]
fn the_watchdog_is_pinged_every_half_interval_from_the_first_update() {
    let mut clock = Clock::new();
    let mut a = Announcer::new(PID, Some(Duration::from_secs(10)));
    let c = counts(1, 0, 1);
    assert!(lines(a.update(clock.at(0.0), MONO, &c)).contains(&"WATCHDOG=1".to_string()));
    assert_eq!(a.next_due(), Some(clock.at(5.0)));
    assert_eq!(a.update(clock.at(4.9), MONO, &c), None);
    assert_eq!(lines(a.update(clock.at(5.0), MONO, &c)), ["WATCHDOG=1"]);
    assert_eq!(a.next_due(), Some(clock.at(10.0)));
}

#[test]
fn no_watchdog_no_pings() {
    let mut clock = Clock::new();
    let mut a = Announcer::new(PID, None);
    a.update(clock.at(0.0), MONO, &counts(1, 0, 1));
    assert_eq!(a.update(clock.at(100.0), MONO, &counts(1, 0, 1)), None);
}

fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
}

#[test]
fn the_socket_is_a_path_or_an_abstract_name() {
    let (address, watchdog) = settings(env(&[("NOTIFY_SOCKET", "/run/systemd/notify")]), PID).unwrap().unwrap();
    assert_eq!(address.as_pathname(), Some(std::path::Path::new("/run/systemd/notify")));
    assert_eq!(watchdog, None);
    let (address, _) = settings(env(&[("NOTIFY_SOCKET", "@fg/notify")]), PID).unwrap().unwrap();
    use std::os::linux::net::SocketAddrExt;
    assert_eq!(address.as_abstract_name(), Some(&b"fg/notify"[..]));
    assert!(settings(env(&[]), PID).unwrap().is_none());
    assert!(settings(env(&[("NOTIFY_SOCKET", "")]), PID).unwrap().is_none());
    let err = settings(env(&[("NOTIFY_SOCKET", "relative/notify")]), PID).unwrap_err();
    assert!(err.contains("NOTIFY_SOCKET=relative/notify"), "{err}");
}

#[test]
fn the_watchdog_is_ours_unless_it_names_another_process() {
    let base = [("NOTIFY_SOCKET", "/n"), ("WATCHDOG_USEC", "30000000")];
    let watchdog = |extra: &[(&str, &str)]| {
        let vars: Vec<(&str, &str)> = base.iter().copied().chain(extra.iter().copied()).collect();
        settings(env(&vars), PID).unwrap().unwrap().1
    };
    assert_eq!(watchdog(&[]), Some(Duration::from_secs(30)));
    assert_eq!(watchdog(&[("WATCHDOG_PID", "4242")]), Some(Duration::from_secs(30)));
    assert_eq!(watchdog(&[("WATCHDOG_PID", "1")]), None);
}

/// The real policy, driven through a first boot and a SIGHUP, feeding the announcer.
struct Driven {
    policy: Policy,
    announcer: Announcer,
    clock: Clock,
    sent: Vec<String>,
}

impl Driven {
    fn new(workers: usize) -> Self {
        let settings = Settings { workers, timeout: Duration::from_secs(5), graceful_timeout: Duration::from_secs(1), max_memory: None, max_lifetime: None };
        let mut d = Driven { policy: Policy::new(settings), announcer: Announcer::new(PID, None), clock: Clock::new(), sent: Vec::new() };
        let first = d.policy.start(d.clock.now);
        d.ack(first);
        d
    }

    fn on(&mut self, secs: f64, event: PolicyEvent) {
        let now = self.clock.at(secs);
        if matches!(event, PolicyEvent::Command(Command::Reload { .. })) {
            self.announcer.reload_asked();
        }
        let actions = self.policy.on_event(now, event);
        self.ack(actions);
        self.sent.extend(lines(self.announcer.update(now, MONO, &self.policy.counts())));
    }

    fn ack(&mut self, actions: Vec<Action>) {
        for action in actions {
            if let Action::Spawn { id, .. } = action {
                self.policy.on_event(self.clock.now, PolicyEvent::Spawned { id, pid: 1000 + id as u32 });
            }
        }
    }

    fn announced(&self, what: &str) -> usize {
        self.sent.iter().filter(|l| *l == what).count()
    }
}

#[test]
fn the_policys_counts_drive_ready_reloading_and_stopping() {
    let mut d = Driven::new(2);
    d.on(0.5, PolicyEvent::Ready(1));
    assert_eq!(d.announced("READY=1"), 0);
    d.on(0.6, PolicyEvent::Ready(2));
    assert_eq!(d.announced("READY=1"), 1);

    d.on(2.0, PolicyEvent::Command(Command::Reload { why: "SIGHUP".into() }));
    assert_eq!(d.announced("RELOADING=1"), 1);
    assert!(d.sent.contains(&"STATUS=rolling restart: 0 of 2 replaced".to_string()), "{:?}", d.sent);
    // Each successor's Ready stops its predecessor and starts the next one (ids 3, then 4).
    d.on(3.5, PolicyEvent::Ready(3 as WorkerId));
    assert!(d.sent.contains(&"STATUS=rolling restart: 1 of 2 replaced".to_string()), "{:?}", d.sent);
    assert_eq!(d.announced("READY=1"), 1, "READY=1 waits for the last successor");
    d.on(5.0, PolicyEvent::Ready(4));
    assert_eq!(d.announced("READY=1"), 2);

    d.on(7.0, PolicyEvent::Command(Command::Stop { graceful: true, why: "SIGTERM".into() }));
    assert_eq!(d.announced("STOPPING=1"), 1);
    assert!(d.sent.iter().any(|l| l.starts_with("STATUS=stopping: waiting for")), "{:?}", d.sent);
}
