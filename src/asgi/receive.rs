//! `receive()` for http and websocket connections.
//!
//! A message is taken from the exchange only when the app's coroutine actually
//! resumes to take it, never when a wake-up is merely delivered. So a receive()
//! that is cancelled or times out (`asyncio.wait_for`, anyio cancel scopes, the
//! way Starlette's `request.is_disconnected()` polls) loses nothing and leaves
//! no trace, and several tasks may await receive() at once: each wake-up lets
//! every waiter look again, and the first to look gets the message.

use pyo3::intern;
use pyo3::prelude::*;
use std::sync::Arc;

use super::awaitable::{Ready, Step, Stepped, next_step, send_step};
use super::{AsgiContext, NextMessage};
use crate::bridge::exchange::Exchange;

/// receive(): the next message at once when it is already there (no trip
/// through the loop), else an awaitable that waits for the I/O side.
pub fn receive(py: Python<'_>, ctx: &Arc<AsgiContext>, ex: &Arc<Exchange>, next: NextMessage) -> PyResult<Py<PyAny>> {
    if let Some(msg) = next(py, ex, &mut ex.lock())? {
        return Ready::with(py, msg);
    }
    Ok(Py::new(py, Receive { ex: ex.clone(), ctx: ctx.clone(), next })?.into_any())
}

/// The awaitable of a receive() that found nothing ready. It behaves like a
/// coroutine: each step either returns the next message or parks on a fresh
/// asyncio future that the I/O side's next wake-up resolves.
#[pyclass(module = "ferrogate._ferrogate")]
pub struct Receive {
    ex: Arc<Exchange>,
    ctx: Arc<AsgiContext>,
    next: NextMessage,
}

#[pymethods]
impl Receive {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        next_step(slf)
    }

    fn send(slf: &Bound<'_, Self>, _value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        send_step(slf)
    }
}

impl Stepped for Receive {
    /// One step: the message, or a future to wait on.
    fn step(slf: &Bound<'_, Self>) -> PyResult<Step> {
        let py = slf.py();
        let this = slf.borrow();
        let mut s = this.ex.lock();
        if let Some(msg) = (this.next)(py, &this.ex, &mut s)? {
            return Ok(Step::Return(msg));
        }
        let future = this.ctx.new_future(py)?;
        // What `yield from future` would set: tells the task this is a future to wait on.
        future.setattr(intern!(py, "_asyncio_future_blocking"), true)?;
        s.wait_for_message(py, future.clone().unbind());
        drop(s);
        // The app is waiting: a body reader paused on its behalf may fetch more.
        this.ex.wants_more.notify_one();
        Ok(Step::Yield(future.unbind()))
    }
}
