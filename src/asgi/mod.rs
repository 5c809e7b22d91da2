//! The ASGI side of a worker: everything that runs on the event-loop thread
//! and touches Python objects.

pub mod awaitable;
pub mod http;
pub mod lifespan;
pub mod scope;
pub mod websocket;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::worker::exchange::{Exchange, Shared};

/// What the loop thread needs to call the app, shared by every request of a worker.
pub struct AsgiContext {
    pub app: Py<PyAny>,
    pub create_task: Py<PyAny>,
    pub create_future: Py<PyAny>,
    /// The dict the app filled during lifespan startup; each request gets a shallow copy.
    pub state: Py<PyDict>,
    pub root_path: String,
}

impl AsgiContext {
    pub fn new_future<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.create_future.bind(py).call0()
    }
}

/// Picks the next ASGI message for the app out of an exchange, if one is ready.
pub type NextMessage = fn(Python<'_>, &Exchange, &mut Shared) -> PyResult<Option<Py<PyAny>>>;

/// receive() for every kind of connection: the next message at once if it is
/// there, else a future that the I/O side's next wake-up resolves.
pub fn receive(py: Python<'_>, ctx: &AsgiContext, ex: &Exchange, next: NextMessage) -> PyResult<Py<PyAny>> {
    let mut s = ex.lock();
    if let Some(msg) = next(py, ex, &mut s)? {
        return awaitable::Ready::new(py, msg);
    }
    if s.receive_waiter.is_some() {
        return Err(pyo3::exceptions::PyRuntimeError::new_err("receive() called again while a previous receive() is still pending"));
    }
    let future = ctx.new_future(py)?;
    s.receive_waiter = Some(future.clone().unbind());
    // The app is waiting: a reader paused on its behalf may fetch more.
    ex.wants_more.notify_one();
    Ok(future.unbind())
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
