//! Recycling: a serving worker that outgrew --max-worker-memory or
//! --max-worker-lifetime, or asked to go (--limit-max-requests), is replaced
//! the way a reload replaces each worker: its successor starts first, and it
//! is told to stop (and drains) only once the successor serves.

use std::time::{Duration, Instant};

use super::{Cause, Out, Policy, State, Worker, WorkerId, log};
use crate::log::Level;

/// After a successor failed to start, the old worker keeps serving and its
/// replacement is tried again this much later, then twice as late each time:
/// whatever broke the successor (a bad deploy, no memory) rarely fixes itself
/// within a tick, and a boot costs the app's whole import.
const FIRST_RETRY: Duration = Duration::from_secs(30);
const MAX_RETRY: Duration = Duration::from_secs(600);
/// Lifetimes are stretched by up to this share, see `lifetime_of`.
const LIFETIME_JITTER: f64 = 0.1;

const MIB: u64 = 1024 * 1024;

#[derive(Clone, Copy, Debug)]
pub(super) struct Backoff {
    not_before: Instant,
    delay: Duration,
}

impl Policy {
    /// Starts at most one replacement, on the first serving worker that is due.
    pub(super) fn check_recycling(&mut self, now: Instant, out: &mut Out) {
        // Never while stopping, nor during a rolling restart (it replaces
        // everyone anyway), and one at a time: workers that outgrew a limit
        // together do not double the memory they use with successors all at
        // once, and the next is checked again on the next tick.
        let busy = !self.reload_queue.is_empty() || self.workers.values().any(|w| w.replaces.is_some());
        if self.exit_code.is_some() || busy {
            return;
        }
        let due = self
            .workers
            .iter()
            .filter(|(_, w)| w.state == State::Serving && w.recycle_backoff.is_none_or(|b| now >= b.not_before))
            .find_map(|(&id, w)| self.recycle_cause(now, id, w).map(|(cause, message)| (id, cause, message)));
        let Some((id, cause, message)) = due else { return };
        if let Some(message) = message {
            log(out, Level::Info, message);
        }
        self.spawn(now, Some((id, cause)), out);
    }

    /// Why `w` is due for replacement, with the log line that says so (none
    /// for --limit-max-requests: the worker logged it when it asked).
    fn recycle_cause(&self, now: Instant, id: WorkerId, w: &Worker) -> Option<(Cause, Option<String>)> {
        let settings = &self.settings;
        if let (Some(limit), Some(rss)) = (settings.max_memory, w.rss) {
            if rss > limit {
                let message = format!(
                    "Worker {} uses {} MB (--max-worker-memory {}): replacing it; its successor starts first",
                    w.pid,
                    rss.div_ceil(MIB),
                    limit / MIB
                );
                return Some((Cause::Memory, Some(message)));
            }
        }
        if w.retire_asked {
            return Some((Cause::MaxRequests, None));
        }
        if let (Some(limit), Some(ready_at)) = (settings.max_lifetime, w.ready_at) {
            let age = now.saturating_duration_since(ready_at);
            if age > lifetime_of(limit, id) {
                let message = format!(
                    "Worker {} has run for {}s (--max-worker-lifetime {}): replacing it; its successor starts first",
                    w.pid,
                    age.as_secs(),
                    limit.as_secs()
                );
                return Some((Cause::Lifetime, Some(message)));
            }
        }
        None
    }

    /// The successor meant to replace `old` did not come up: `old` keeps
    /// serving, and is tried again after a backoff (`FIRST_RETRY`).
    pub(super) fn recycle_failed(&mut self, now: Instant, old: WorkerId, cause: Cause, out: &mut Out) {
        let Some(w) = self.workers.get_mut(&old) else { return };
        if !w.live() {
            return;
        }
        let delay = w.recycle_backoff.map_or(FIRST_RETRY, |b| (b.delay * 2).min(MAX_RETRY));
        w.recycle_backoff = Some(Backoff { not_before: now + delay, delay });
        log(
            out,
            Level::Warning,
            format!(
                "Worker {} keeps serving: the successor meant to replace it (--{}) did not start; trying again in {}s",
                w.pid,
                cause.name(),
                delay.as_secs()
            ),
        );
    }
}

/// A worker's lifetime with its share of jitter. Workers started together
/// (the first boot, a reload) would otherwise all come due on the same tick:
/// each serves up to 10% longer than the limit, by a share drawn from its id
/// through a multiplicative (Fibonacci) hash, which sends consecutive ids far
/// apart in [0, 1). Drawn from the id rather than a random source so that
/// the policy stays a pure function of its events, and its tests can predict it.
pub(super) fn lifetime_of(limit: Duration, id: WorkerId) -> Duration {
    let share = (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
    limit + limit.mul_f64(LIFETIME_JITTER * share)
}
