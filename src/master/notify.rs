//! sd_notify(3) from the master, for systemd's `Type=notify`: READY=1 once the first
//! workers serve, RELOADING=1 ... READY=1 around a rolling restart, STOPPING=1, STATUS=
//! lines for `systemctl status`, and WATCHDOG=1 pings when the unit sets WatchdogSec=.
//!
//! `Announcer` decides, from the policy's counts, what to say and when: plain data,
//! tested without a socket or a clock. `Notifier` is the thin part that reads the
//! environment and sends the datagrams. Without NOTIFY_SOCKET nothing happens at all.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use super::policy::Counts;
use crate::config::WorkerEnv;

/// What systemd gives the service to speak with. The workers must not inherit them: an
/// app or a library that finds NOTIFY_SOCKET (many do look) could speak for the service,
/// and a worker answering WATCHDOG pings would keep a hung master alive.
const VARS: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// STATUS= changes (the request count does, all the time) go out at most this often.
const STATUS_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The first workers are booting: systemd still waits for READY=1.
    Starting,
    Ready,
    /// RELOADING=1 was sent; READY=1 follows when no worker is left to replace.
    Reloading { total: usize },
    Stopping,
}

/// The decisions: fed the policy's counts after every master event and tick, it answers
/// the datagram to send now, if any (one datagram may carry several assignments).
pub struct Announcer {
    pid: u32,
    /// WATCHDOG_USEC / 2: systemd kills the service when a full WATCHDOG_USEC passes without a ping.
    ping_every: Option<Duration>,
    last_ping: Option<Instant>,
    phase: Phase,
    /// A reload was asked for since the last update: retirements (--limit-max-requests)
    /// replace workers too, and are no reload for systemd.
    reload_asked: bool,
    /// The last STATUS= sent, and when; and a newer one held back by STATUS_EVERY.
    status: Option<(String, Instant)>,
    held: bool,
}

impl Announcer {
    pub fn new(pid: u32, watchdog: Option<Duration>) -> Self {
        Announcer {
            pid,
            ping_every: watchdog.map(|w| w / 2).filter(|d| !d.is_zero()),
            last_ping: None,
            phase: Phase::Starting,
            reload_asked: false,
            status: None,
            held: false,
        }
    }

    /// A rolling restart was asked for (SIGHUP, --reload, the control socket).
    pub fn reload_asked(&mut self) {
        self.reload_asked = true;
    }

    /// The datagram to send now, given the counts after the latest event. `monotonic_usec`
    /// is CLOCK_MONOTONIC, which RELOADING=1 carries (systemd 253 and later want it).
    pub fn update(&mut self, now: Instant, monotonic_usec: u64, c: &Counts) -> Option<String> {
        let mut lines = Vec::new();
        match self.phase {
            Phase::Stopping => {}
            _ if c.shutting_down => {
                self.phase = Phase::Stopping;
                lines.push("STOPPING=1".to_string());
            }
            Phase::Starting if c.target > 0 && c.serving >= c.target => {
                self.phase = Phase::Ready;
                // The pid makes a re-executed master (a self-upgrade) the unit's main process.
                lines.extend(["READY=1".to_string(), format!("MAINPID={}", self.pid)]);
            }
            Phase::Ready if self.reload_asked && c.reload_in_progress() => {
                self.phase = Phase::Reloading { total: c.replacing };
                lines.extend(["RELOADING=1".to_string(), format!("MONOTONIC_USEC={monotonic_usec}")]);
            }
            Phase::Reloading { .. } if !c.reload_in_progress() => {
                self.phase = Phase::Ready;
                lines.push("READY=1".to_string());
            }
            _ => {}
        }
        self.reload_asked = false;

        let status = self.status_line(c);
        let changed = self.status.as_ref().is_none_or(|(last, _)| *last != status);
        // A change of phase carries its status at once; other changes wait their turn.
        let due = !lines.is_empty() || self.status.as_ref().is_none_or(|(_, at)| now.saturating_duration_since(*at) >= STATUS_EVERY);
        self.held = changed && !due;
        if changed && due {
            lines.push(format!("STATUS={status}"));
            self.status = Some((status, now));
        }

        if let Some(every) = self.ping_every {
            if self.last_ping.is_none_or(|at| now.saturating_duration_since(at) >= every) {
                lines.push("WATCHDOG=1".to_string());
                self.last_ping = Some(now);
            }
        }
        (!lines.is_empty()).then(|| lines.join("\n"))
    }

    /// When `update` next has something to send even if nothing happens: a watchdog ping,
    /// or a status change held back. The master's loop wakes up then, so the pings stop
    /// when the loop does (a hung master is what the watchdog is for).
    pub fn next_due(&self) -> Option<Instant> {
        let ping = self.ping_every.map(|every| self.last_ping.map_or_else(Instant::now, |at| at + every));
        let status = self.status.as_ref().filter(|_| self.held).map(|(_, at)| *at + STATUS_EVERY);
        ping.into_iter().chain(status).min()
    }

    /// What a person reads in `systemctl status`.
    fn status_line(&self, c: &Counts) -> String {
        let workers = |n: usize| if n == 1 { "1 worker".to_string() } else { format!("{n} workers") };
        match self.phase {
            Phase::Starting => format!("starting: {} of {} serving", c.serving, workers(c.target)),
            Phase::Ready => {
                let served = c.served.map(|n| format!(", {n} requests served")).unwrap_or_default();
                format!("{} serving{served}", workers(c.serving))
            }
            Phase::Reloading { total } => {
                format!("rolling restart: {} of {total} replaced", total.saturating_sub(c.replacing))
            }
            Phase::Stopping => format!("stopping: waiting for {}", workers(c.serving + c.booting + c.stopping)),
        }
    }
}

/// Where NOTIFY_SOCKET points and the watchdog interval, from the environment given as a
/// lookup; None when there is no socket to speak to (not under systemd, or not Type=notify).
fn settings(get: impl Fn(&str) -> Option<String>, pid: u32) -> Result<Option<(SocketAddr, Option<Duration>)>, String> {
    let Some(socket) = get("NOTIFY_SOCKET").filter(|s| !s.is_empty()) else { return Ok(None) };
    let address = if let Some(name) = socket.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes())
    } else if socket.starts_with('/') {
        SocketAddr::from_pathname(&socket)
    } else {
        return Err(format!("NOTIFY_SOCKET={socket} is neither a path nor an abstract socket name (@name): systemd will not hear from this service"));
    }
    .map_err(|e| format!("NOTIFY_SOCKET={socket}: {e}"))?;
    // sd_watchdog_enabled(3): the pings are ours unless WATCHDOG_PID names another process.
    let ours = get("WATCHDOG_PID").is_none_or(|p| p.parse::<u32>().ok() == Some(pid));
    let watchdog = get("WATCHDOG_USEC").and_then(|u| u.parse::<u64>().ok()).filter(|&u| u > 0 && ours).map(Duration::from_micros);
    Ok(Some((address, watchdog)))
}

/// The socket side: sends what the `Announcer` decides. Inert without NOTIFY_SOCKET.
pub struct Notifier {
    inner: Option<(UnixDatagram, SocketAddr, Announcer)>,
    /// A failed send is reported once, not at every status change.
    warned: bool,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        let pid = std::process::id();
        let found = settings(|name| std::env::var(name).ok(), pid).and_then(|found| {
            found
                .map(|(address, watchdog)| {
                    let socket = UnixDatagram::unbound().and_then(|s| s.set_nonblocking(true).map(|()| s));
                    socket.map(|s| (s, address, Announcer::new(pid, watchdog))).map_err(|e| format!("cannot open a socket to notify systemd: {e}"))
                })
                .transpose()
        });
        match found {
            Ok(inner) => Notifier { inner, warned: false },
            Err(e) => {
                crate::warn!("{e}");
                Notifier { inner: None, warned: true }
            }
        }
    }

    /// Adds the notify variables the master inherited to those the workers' environment drops.
    pub fn hide_from_workers(env: &mut WorkerEnv) {
        env.unset.extend(VARS.iter().filter(|name| std::env::var_os(name).is_some()).map(|name| name.to_string()));
    }

    pub fn reload_asked(&mut self) {
        if let Some((_, _, announcer)) = &mut self.inner {
            announcer.reload_asked();
        }
    }

    /// Tells systemd whatever the latest counts change.
    pub fn update(&mut self, counts: &Counts) {
        let Some((socket, address, announcer)) = &mut self.inner else { return };
        let Some(message) = announcer.update(Instant::now(), monotonic_usec(), counts) else { return };
        if let Err(e) = socket.send_to_addr(message.as_bytes(), address) {
            if !self.warned {
                self.warned = true;
                crate::warn!("cannot notify systemd (NOTIFY_SOCKET): {e}; `systemctl status` may show stale facts");
            }
        }
    }

    /// After a self-upgrade the successor speaks for the service (its READY=1 carries its
    /// MAINPID=): this master says nothing more, least of all STOPPING=1 as it drains.
    pub fn hand_over(&mut self) {
        self.inner = None;
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.inner.as_ref().and_then(|(_, _, announcer)| announcer.next_due())
    }
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec, which `ts` is; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests;
