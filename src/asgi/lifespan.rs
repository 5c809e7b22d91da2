//! ASGI lifespan: startup before the worker takes requests, shutdown after it
//! has drained.

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::collections::VecDeque;
use std::sync::Mutex;

use super::awaitable::Ready;
use super::format_exception;
use crate::config::LifespanMode;

#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    Complete,
    Failed(String),
    /// The app returned or raised before answering: it may not speak lifespan.
    AppEnded(Option<String>),
}

#[derive(Default)]
struct State {
    inbox: VecDeque<&'static str>,
    receive_waiter: Option<Py<PyAny>>,
    /// Set when the phase being waited for (startup, then shutdown) is settled.
    phase_waiter: Option<Py<PyAny>>,
    outcome: Option<Outcome>,
}

#[pyclass(module = "ferrogate._ferrogate")]
pub struct Lifespan {
    state: Mutex<State>,
    create_future: Py<PyAny>,
}

impl Lifespan {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn settle(&self, py: Python<'_>, outcome: Outcome) -> PyResult<()> {
        let waiter = {
            let mut s = self.lock();
            if s.outcome.is_some() {
                return Ok(());
            }
            s.outcome = Some(outcome);
            s.phase_waiter.take()
        };
        if let Some(w) = waiter {
            super::resolve(py, w, py.None())?;
        }
        Ok(())
    }
}

#[pymethods]
impl Lifespan {
    fn receive(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut s = self.lock();
        if let Some(kind) = s.inbox.pop_front() {
            let msg = PyDict::new(py);
            msg.set_item(intern!(py, "type"), kind)?;
            return Ready::with(py, msg.into_any().unbind());
        }
        let future = self.create_future.bind(py).call0()?;
        s.receive_waiter = Some(future.clone().unbind());
        Ok(future.unbind())
    }

    fn send(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let msg = message.cast::<PyDict>().map_err(|_| PyTypeError::new_err("ASGI messages must be dicts"))?;
        let kind: String = msg.get_item(intern!(py, "type"))?.map(|t| t.extract()).transpose()?.unwrap_or_default();
        let message = || -> PyResult<String> {
            Ok(msg.get_item(intern!(py, "message"))?.map(|m| m.str().map(|s| s.to_string())).transpose()?.unwrap_or_default())
        };
        match kind.as_str() {
            "lifespan.startup.complete" | "lifespan.shutdown.complete" => self.settle(py, Outcome::Complete)?,
            "lifespan.startup.failed" | "lifespan.shutdown.failed" => self.settle(py, Outcome::Failed(message()?))?,
            other => return Err(PyRuntimeError::new_err(format!("Unexpected ASGI message '{other}' sent during lifespan"))),
        }
        Ready::none(py)
    }

    /// Done-callback of the app's lifespan task.
    fn _task_done(&self, py: Python<'_>, task: &Bound<'_, PyAny>) -> PyResult<()> {
        let error = if task.call_method0(intern!(py, "cancelled"))?.is_truthy()? {
            Some("the lifespan task was cancelled".to_string())
        } else {
            let exc = task.call_method0(intern!(py, "exception"))?;
            (!exc.is_none()).then(|| format_exception(py, &exc))
        };
        self.settle(py, Outcome::AppEnded(error))
    }
}

/// A running lifespan protocol, kept between startup and shutdown.
pub struct Running {
    lifespan: Py<Lifespan>,
}

/// Why the worker must not serve.
pub struct StartupFailed(pub String);

/// Runs lifespan startup to completion on `event_loop`. Returns None when the
/// app does not do lifespan (mode off, or auto and it raised straight away).
pub fn startup(
    py: Python<'_>,
    event_loop: &Bound<'_, PyAny>,
    app: &Bound<'_, PyAny>,
    state: &Bound<'_, PyDict>,
    mode: LifespanMode,
) -> Result<Option<Running>, StartupFailed> {
    if mode == LifespanMode::Off {
        return Ok(None);
    }
    let run = || -> PyResult<(Py<Lifespan>, Outcome)> {
        let lifespan = Py::new(py, Lifespan { state: Mutex::new(State::default()), create_future: event_loop.getattr("create_future")?.unbind() })?;
        let scope = PyDict::new(py);
        scope.set_item("type", "lifespan")?;
        let asgi = PyDict::new(py);
        asgi.set_item("version", "3.0")?;
        asgi.set_item("spec_version", "2.0")?;
        scope.set_item("asgi", asgi)?;
        scope.set_item("state", state)?;
        let outcome = phase(py, event_loop, &lifespan, "lifespan.startup", None, |lifespan| {
            let bound = lifespan.bind(py);
            let coro = app.call1((scope, bound.getattr("receive")?, bound.getattr("send")?))?;
            let task = event_loop.call_method1("create_task", (coro,))?;
            task.call_method1("add_done_callback", (bound.getattr("_task_done")?,))?;
            Ok(())
        })?;
        Ok((lifespan, outcome))
    };
    let (lifespan, outcome) = run().map_err(|e| StartupFailed(format!("lifespan startup could not run: {}", format_exception(py, e.value(py)))))?;
    match outcome {
        Outcome::Complete => {
            crate::info!("Application startup complete.");
            Ok(Some(Running { lifespan }))
        }
        Outcome::Failed(message) => Err(StartupFailed(format!("Application startup failed: {message}"))),
        Outcome::AppEnded(error) if mode == LifespanMode::Auto => {
            crate::info!("ASGI 'lifespan' protocol appears unsupported.");
            if let Some(e) = error {
                crate::debug!("The app raised during lifespan startup:\n{e}");
            }
            Ok(None)
        }
        Outcome::AppEnded(error) => Err(StartupFailed(format!(
            "Application startup failed: the app {} without completing lifespan startup (--lifespan on){}",
            if error.is_some() { "raised" } else { "returned" },
            error.map(|e| format!("\n{e}")).unwrap_or_default()
        ))),
    }
}

/// Sends `message` to the app and runs the loop until it answers or its task ends.
fn phase(
    py: Python<'_>,
    event_loop: &Bound<'_, PyAny>,
    lifespan: &Py<Lifespan>,
    message: &'static str,
    timeout: Option<u64>,
    before: impl FnOnce(&Py<Lifespan>) -> PyResult<()>,
) -> PyResult<Outcome> {
    let waiter = event_loop.call_method0("create_future")?;
    let pending_receive = {
        let ls = lifespan.borrow(py);
        let mut s = ls.lock();
        s.outcome = None;
        s.phase_waiter = Some(waiter.clone().unbind());
        match s.receive_waiter.take() {
            Some(w) => Some(w),
            None => {
                s.inbox.push_back(message);
                None
            }
        }
    };
    if let Some(w) = pending_receive {
        let msg = PyDict::new(py);
        msg.set_item("type", PyString::new(py, message))?;
        super::resolve(py, w, msg.into_any().unbind())?;
    }
    before(lifespan)?;
    let outcome = lifespan.borrow(py).lock().outcome.clone();
    if outcome.is_none() {
        match timeout {
            None => {
                event_loop.call_method1("run_until_complete", (waiter,))?;
            }
            Some(secs) => {
                let bounded = py.import("asyncio")?.call_method1("wait_for", (waiter, secs))?;
                if let Err(e) = event_loop.call_method1("run_until_complete", (bounded,)) {
                    if e.is_instance_of::<pyo3::exceptions::PyTimeoutError>(py) {
                        return Ok(Outcome::Failed(format!("{message} did not finish within {secs}s")));
                    }
                    return Err(e);
                }
            }
        }
    }
    Ok(lifespan.borrow(py).lock().outcome.clone().unwrap_or(Outcome::AppEnded(None)))
}

impl Running {
    pub fn shutdown(self, py: Python<'_>, event_loop: &Bound<'_, PyAny>, timeout: u64) {
        let result = phase(py, event_loop, &self.lifespan, "lifespan.shutdown", Some(timeout.max(1)), |_| Ok(()));
        match result {
            Ok(Outcome::Complete) => crate::info!("Application shutdown complete."),
            Ok(Outcome::Failed(m)) => crate::error!("Application shutdown failed: {m}"),
            Ok(Outcome::AppEnded(Some(e))) => crate::error!("The app raised during lifespan shutdown:\n{e}"),
            Ok(Outcome::AppEnded(None)) => crate::info!("Application shutdown complete."),
            Err(e) => crate::error!("Lifespan shutdown could not run: {e}"),
        }
    }
}
