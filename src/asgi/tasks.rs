//! The app's request tasks, held so that a stop can wait for them, cancel
//! them when the graceful timeout runs out, and let them clean up: an HTTP
//! request's stand-in task (runner.rs) or a WebSocket session's asyncio Task.
//!
//! asyncio keeps only weak references to tasks; holding them here also keeps
//! a task that awaits nothing of ours from being collected mid-flight.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PySet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::bridge::stop::CANCEL_GRACE;

pub struct RequestTasks {
    running: Py<PySet>,
    /// Set once the worker cancels what is left at the graceful timeout:
    /// such a request is answered 503, not 500, and is not an app error.
    cancelled_by_stop: AtomicBool,
}

impl RequestTasks {
    pub fn new(py: Python<'_>) -> PyResult<Self> {
        Ok(RequestTasks { running: PySet::empty(py)?.unbind(), cancelled_by_stop: AtomicBool::new(false) })
    }

    pub fn add(&self, task: &Bound<'_, PyAny>) -> PyResult<()> {
        self.running.bind(task.py()).add(task)
    }

    /// From the task's done callback.
    pub fn remove(&self, task: &Bound<'_, PyAny>) -> PyResult<()> {
        self.running.bind(task.py()).discard(task).map(drop)
    }

    pub fn cancelled_by_stop(&self) -> bool {
        self.cancelled_by_stop.load(Ordering::Relaxed)
    }

    /// Cancels every request task still running; returns how many.
    pub fn cancel_all(&self, py: Python<'_>) -> PyResult<usize> {
        self.cancelled_by_stop.store(true, Ordering::Relaxed);
        let pending = self.pending(py)?;
        for task in &pending {
            task.call_method1(intern!(py, "cancel"), ("the server is stopping and --timeout-graceful-shutdown ran out",))?;
        }
        Ok(pending.len())
    }

    fn pending<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        not_done(self.running.bind(py).iter())
    }

    /// After the I/O side has drained and the loop stopped: request tasks that
    /// outlived their connection (a WebSocket handler that ignores the close,
    /// a handler busy after its client left) get until `wait` to end, then are
    /// cancelled and get CANCEL_GRACE to clean up. Runs the loop meanwhile.
    pub fn finish(&self, py: Python<'_>, event_loop: &Bound<'_, PyAny>, wait: Duration) -> PyResult<()> {
        let mut pending = self.pending(py)?;
        if pending.is_empty() {
            return Ok(());
        }
        if !self.cancelled_by_stop() && !wait.is_zero() {
            crate::info!("Waiting up to {:.1}s for {} request task(s) to finish", wait.as_secs_f64(), pending.len());
            wait_for(py, event_loop, &pending, wait)?;
            pending = self.pending(py)?;
        }
        if !pending.is_empty() && !self.cancelled_by_stop() {
            crate::warn!("Cancelling {} request task(s) still running at the graceful-shutdown timeout", self.cancel_all(py)?);
        }
        if !pending.is_empty() {
            wait_for(py, event_loop, &pending, CANCEL_GRACE)?;
            pending = self.pending(py)?;
        }
        abandon(py, &pending, "request task(s)");
        Ok(())
    }
}

/// Before the loop closes, after lifespan shutdown: the tasks the app started
/// itself and left running (a watcher, a cache refresher) are cancelled and
/// get CANCEL_GRACE to end, and async generators are finalized, as
/// `asyncio.run()` (and so uvicorn) does; otherwise asyncio would report each
/// as "Task was destroyed but it is pending!" and their `finally` never runs.
///
/// Request tasks still running here were already cancelled and given up on by
/// `RequestTasks::finish`; they are not counted again as the app's own.
pub fn cancel_leftovers(py: Python<'_>, event_loop: &Bound<'_, PyAny>, requests: &RequestTasks) -> PyResult<()> {
    let asyncio = py.import(intern!(py, "asyncio"))?;
    let mut left = Vec::new();
    for task in asyncio.call_method1(intern!(py, "all_tasks"), (event_loop,))?.try_iter()? {
        let task = task?;
        if !requests.running.bind(py).contains(&task)? {
            left.push(task);
        }
    }
    if !left.is_empty() {
        for task in &left {
            task.call_method0(intern!(py, "cancel"))?;
        }
        wait_for(py, event_loop, &left, CANCEL_GRACE)?;
        left = not_done(left.into_iter())?;
        abandon(py, &left, "task(s) the app started");
    }
    let finalize = event_loop.call_method0(intern!(py, "shutdown_asyncgens"))?;
    event_loop.call_method1(intern!(py, "run_until_complete"), (finalize,))?;
    Ok(())
}

fn not_done<'py>(tasks: impl Iterator<Item = Bound<'py, PyAny>>) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let mut pending = Vec::new();
    for task in tasks {
        if !task.call_method0(intern!(task.py(), "done"))?.is_truthy()? {
            pending.push(task);
        }
    }
    Ok(pending)
}

/// Tasks still running after their cancellation and CANCEL_GRACE (they catch
/// CancelledError and go on): said once, then left to the interpreter's exit.
fn abandon(py: Python<'_>, tasks: &[Bound<'_, PyAny>], what: &str) {
    if tasks.is_empty() {
        return;
    }
    crate::warn!("{} {what} still running {}s after being cancelled (they catch CancelledError and go on); abandoning them", tasks.len(), CANCEL_GRACE.as_secs());
    for task in tasks {
        // asyncio would print "Task was destroyed but it is pending!" for each: said once above.
        let _ = task.setattr(intern!(py, "_log_destroy_pending"), false);
    }
}

/// Runs the loop until every task in `tasks` is done or `timeout` passes. Request
/// tasks are not asyncio futures (runner.rs), so `asyncio.wait` cannot take them:
/// the loop runs in 10 ms slices instead, only while a worker stops.
fn wait_for(py: Python<'_>, event_loop: &Bound<'_, PyAny>, tasks: &[Bound<'_, PyAny>], timeout: Duration) -> PyResult<()> {
    let deadline = std::time::Instant::now() + timeout;
    let sleep = py.import(intern!(py, "asyncio"))?.getattr(intern!(py, "sleep"))?;
    while std::time::Instant::now() < deadline && !not_done(tasks.iter().cloned())?.is_empty() {
        event_loop.call_method1(intern!(py, "run_until_complete"), (sleep.call1((0.01,))?,))?;
    }
    Ok(())
}
