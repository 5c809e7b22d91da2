//! --io-mode loop: the worker's I/O runtime as a guest of the event loop, on the loop's
//! own thread (docs/design/io-on-loop-thread.md).
//!
//! tokio's current-thread runtime keeps one epoll descriptor; the event loop watches it
//! with `add_reader`, and each time it is readable runs a few bounded turns of the
//! runtime (`block_on` of the serve future raced with `yield_now`: the ready tasks, then
//! an `epoll_wait` that does not block). The tasks count their pending wake-ups
//! (io_tasks.rs), which says whether another turn is due before the next readiness.
//!
//! Timers only advance when the runtime polls the kernel, and tokio does not say when the
//! next one is due, so a tick runs a turn too: every 10 ms while sockets are busy,
//! backing off to 250 ms at rest (uvicorn's own loop wakes every 100 ms). Every timer of
//! the I/O side counts in seconds or hundreds of milliseconds, except the 2 ms balancing
//! hold, which only happens as connections arrive, when the tick is fast.

use pyo3::intern;
use pyo3::prelude::*;
use std::collections::HashSet;
use std::future::Future;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::io_tasks::{self, Tracked};

/// The worker's whole I/O side; it resolves when the server has drained, with when the drain began.
pub type Serve = Pin<Box<dyn Future<Output = Instant> + Send>>;

const TICK_BUSY: f64 = 0.010;
const TICK_IDLE_MAX: f64 = 0.250;
/// Turns in one callback before the loop gets its thread back for the app.
const TURNS: usize = 4;

/// A current-thread runtime built on this thread, and the descriptor that is readable
/// whenever it has something to do.
pub struct Guest {
    runtime: tokio::runtime::Runtime,
    epfd: RawFd,
}

impl Guest {
    /// Builds the runtime and finds its epoll descriptor. tokio does not expose it: it
    /// is the one epoll instance that appeared while the runtime was built and watches
    /// something (mio registers its waker at once).
    pub fn build() -> Result<Guest, String> {
        let before = epoll_fds();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("cannot start the I/O runtime: {e}"))?;
        let fdinfo = |fd: RawFd| std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
        let inode = |fd: RawFd| fdinfo(fd).lines().find(|l| l.starts_with("ino:")).map(str::to_owned);
        let mut fresh: Vec<RawFd> = epoll_fds().difference(&before).copied().filter(|fd| fdinfo(*fd).contains("tfd:")).collect();
        fresh.sort_unstable();
        // mio keeps a duplicate of its descriptor for the registry: one instance, two numbers.
        fresh.dedup_by(|a, b| inode(*a) == inode(*b));
        match fresh[..] {
            [epfd] => Ok(Guest { runtime, epfd }),
            // Another thread (the app's) made an epoll instance at the same moment.
            _ => Err(format!("cannot tell the I/O runtime's epoll descriptor among {fresh:?}")),
        }
    }

    /// Spawns the serve future's tasks on the event loop's thread and starts watching.
    pub fn start(self, py: Python<'_>, event_loop: &Bound<'_, PyAny>, serve: impl FnOnce() -> Serve) -> PyResult<Py<Turn>> {
        io_tasks::track();
        let serve = {
            let _entered = self.runtime.enter();
            Tracked::new(serve())
        };
        let turn = Py::new(py, Turn {
            runtime: Mutex::new(Some(self.runtime)),
            serve: Mutex::new(Some(serve)),
            drain_began: Mutex::new(None),
            epfd: self.epfd,
            event_loop: event_loop.clone().unbind(),
            busy: AtomicBool::new(true),
            tick: Mutex::new(TickState { period: TICK_BUSY, handle: None }),
        })?;
        event_loop.call_method1(intern!(py, "add_reader"), (self.epfd, turn.clone_ref(py)))?;
        Turn::schedule_tick(turn.bind(py), TICK_BUSY)?;
        Ok(turn)
    }
}

fn epoll_fds() -> HashSet<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return HashSet::new() };
    dir.flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:[eventpoll]"))
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect()
}

struct TickState {
    period: f64,
    /// The pending `call_later`, to bring forward when sockets wake up a resting worker.
    handle: Option<Py<PyAny>>,
}

/// The event loop's reader callback for the runtime's descriptor.
#[pyclass(frozen, module = "ferrogate._ferrogate")]
pub struct Turn {
    /// Dropped (closing what is left) once the server has drained, as the I/O thread's would be.
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    serve: Mutex<Option<Tracked<Serve>>>,
    drain_began: Mutex<Option<Instant>>,
    epfd: RawFd,
    event_loop: Py<PyAny>,
    /// Whether the descriptor was readable since the last tick.
    busy: AtomicBool,
    tick: Mutex<TickState>,
}

/// The timer tick: a turn, then the next tick.
#[pyclass(frozen, module = "ferrogate._ferrogate")]
struct Tick {
    turn: Py<Turn>,
}

enum Outcome {
    /// Woken tasks are left: run again soon.
    More,
    Idle,
    /// The server has drained.
    Finished,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Turn {
    /// When the server began to drain; None while it serves or if it never started.
    pub fn drain_began(&self) -> Option<Instant> {
        *lock(&self.drain_began)
    }

    /// Up to `TURNS` turns while woken tasks are left. Touches no Python object.
    fn run(&self) -> Outcome {
        let runtime = lock(&self.runtime);
        let mut slot = lock(&self.serve);
        let (Some(runtime), Some(serve)) = (runtime.as_ref(), slot.as_mut()) else { return Outcome::Finished };
        for _ in 0..TURNS {
            let finished = runtime.block_on(async {
                tokio::select! {
                    biased;
                    began = &mut *serve => Some(began),
                    _ = tokio::task::yield_now() => None,
                }
            });
            if let Some(began) = finished {
                *slot = None;
                *lock(&self.drain_began) = Some(began);
                return Outcome::Finished;
            }
            if io_tasks::queued() == 0 {
                return Outcome::Idle;
            }
        }
        Outcome::More
    }

    /// Runs turns with the GIL released: the I/O tasks never touch Python, app threads may run.
    fn step(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        // A task's panic stays in its task; this catches one of the serve future itself,
        // which on a thread of its own would end that thread: here it ends the worker,
        // rather than leaving one that answers heartbeats and serves nothing.
        let outcome = py.detach(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| me.run())));
        match outcome {
            Ok(Outcome::More) => {
                me.event_loop.bind(py).call_method1(intern!(py, "call_soon"), (slf,))?;
            }
            Ok(Outcome::Idle) => {}
            Ok(Outcome::Finished) => me.finish(py)?,
            Err(_) => {
                crate::error!("the worker's I/O stopped on an internal error (a panic, above); stopping the worker");
                *lock(&me.serve) = None;
                me.finish(py)?;
                me.event_loop.bind(py).call_method0(intern!(py, "stop"))?;
            }
        }
        Ok(())
    }

    /// The server has drained: stop watching, and close what the runtime still holds.
    fn finish(&self, py: Python<'_>) -> PyResult<()> {
        if let Some(handle) = lock(&self.tick).handle.take() {
            handle.bind(py).call_method0(intern!(py, "cancel"))?;
        }
        let event_loop = self.event_loop.bind(py);
        event_loop.call_method1(intern!(py, "remove_reader"), (self.epfd,))?;
        let runtime = lock(&self.runtime).take();
        py.detach(|| drop(runtime));
        Ok(())
    }

    fn schedule_tick(slf: &Bound<'_, Self>, period: f64) -> PyResult<()> {
        let py = slf.py();
        let tick = Tick { turn: slf.clone().unbind() };
        let handle = slf.get().event_loop.bind(py).call_method1(intern!(py, "call_later"), (period, tick))?;
        let mut state = lock(&slf.get().tick);
        if let Some(old) = state.handle.replace(handle.unbind()) {
            old.bind(py).call_method0(intern!(py, "cancel"))?;
        }
        state.period = period;
        Ok(())
    }
}

#[pymethods]
impl Turn {
    fn __call__(slf: &Bound<'_, Self>) -> PyResult<()> {
        let me = slf.get();
        me.busy.store(true, Ordering::Relaxed);
        Turn::step(slf)?;
        // Sockets woke a resting worker: timers set from now on need the fast tick.
        let resting = lock(&me.tick).period > TICK_BUSY;
        if resting && lock(&me.serve).is_some() {
            Turn::schedule_tick(slf, TICK_BUSY)?;
        }
        Ok(())
    }
}

#[pymethods]
impl Tick {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let turn = self.turn.bind(py);
        let me = turn.get();
        lock(&me.tick).handle = None;
        Turn::step(turn)?;
        if lock(&me.serve).is_none() {
            return Ok(());
        }
        let period = if me.busy.swap(false, Ordering::Relaxed) { TICK_BUSY } else { (lock(&me.tick).period * 2.0).min(TICK_IDLE_MAX) };
        Turn::schedule_tick(turn, period)
    }
}
