//! The ASGI side of a worker: everything that runs on the event-loop thread
//! and touches Python objects.

pub mod awaitable;
pub mod http;
pub mod lifespan;
pub mod receive;
pub mod runner;
pub mod scope;
pub mod tasks;
pub mod websocket;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::bridge::exchange::{Exchange, Shared};

/// Readies the types the app sees; once, when the extension module is loaded.
pub fn init_types(py: Python<'_>) {
    awaitable::install_am_send::<awaitable::Ready>(&py.get_type::<awaitable::Ready>());
    awaitable::install_am_send::<receive::Receive>(&py.get_type::<receive::Receive>());
}

/// What the loop thread needs to call the app, shared by every request of a worker.
pub struct AsgiContext {
    pub app: Py<PyAny>,
    pub create_task: Py<PyAny>,
    pub create_future: Py<PyAny>,
    /// The dict the app filled during lifespan startup; each request gets a shallow copy.
    pub state: Py<PyDict>,
    pub root_path: String,
    /// The app's request tasks still running.
    pub tasks: tasks::RequestTasks,
    /// What every scope starts from.
    pub scopes: scope::Templates,
    pub event_loop: Py<PyAny>,
    /// asyncio's `_enter_task` and `_leave_task`, around each step of a request (runner.rs).
    pub enter_task: Py<PyAny>,
    pub leave_task: Py<PyAny>,
    /// asyncio's `_register_task` and `_unregister_task`: a request that suspends is
    /// listed by `asyncio.all_tasks()` until it ends (runner.rs).
    pub register_task: Py<PyAny>,
    pub unregister_task: Py<PyAny>,
}

impl AsgiContext {
    pub fn new_future<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.create_future.bind(py).call0()
    }
}

/// Picks the next ASGI message for the app out of an exchange, if one is ready.
pub type NextMessage = fn(Python<'_>, &Exchange, &mut Shared) -> PyResult<Option<Py<PyAny>>>;

/// Loop side of an `Event::Wake`: hand the app whatever it was waiting for.
pub fn wake(py: Python<'_>, ex: &Exchange) -> PyResult<()> {
    let (receivers, send) = {
        let mut s = ex.lock();
        (s.take_receive_waiters(), s.take_ready_send_waiter())
    };
    // Futures are resolved outside the lock: set_result may run Python code.
    // A woken receive() takes its message itself when its task resumes (receive.rs).
    for future in receivers {
        resolve(py, future, py.None())?;
    }
    if let Some(future) = send {
        resolve(py, future, py.None())?;
    }
    Ok(())
}

/// Resolves an asyncio future unless the app already gave up on it (cancelled it).
pub fn resolve(py: Python<'_>, future: Py<PyAny>, value: Py<PyAny>) -> PyResult<()> {
    let future = future.bind(py);
    if !future.call_method0(pyo3::intern!(py, "done"))?.is_truthy()? {
        future.call_method1(pyo3::intern!(py, "set_result"), (value,))?;
    }
    Ok(())
}

/// The exception's traceback as Python prints it, for the error log.
pub fn format_exception(py: Python<'_>, err: &Bound<'_, PyAny>) -> String {
    let formatted = py
        .import("traceback")
        .and_then(|tb| tb.call_method1("format_exception", (err,)))
        .and_then(|lines| lines.extract::<Vec<String>>());
    match formatted {
        Ok(lines) => lines.concat().trim_end().to_string(),
        Err(_) => err.to_string(),
    }
}
