//! The loop side of the bridge: the callback the event loop runs when the
//! eventfd rings. It drains every event queued when it starts, under one GIL hold.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Arc;

use crate::bridge::{Bridge, Event};
use crate::bridge::exchange::Exchange;
use crate::asgi::http::{Ending, HttpCycle, request_ended};
use crate::asgi::runner::RequestTask;
use crate::asgi::websocket::{WsCycle, WsDone};
use crate::asgi::{AsgiContext, format_exception, scope};

#[pyclass(module = "ferrogate._ferrogate")]
pub struct Dispatcher {
    pub bridge: Arc<Bridge>,
    pub ctx: Arc<AsgiContext>,
    pub event_loop: Py<PyAny>,
}

#[pymethods]
impl Dispatcher {
    fn __call__(&self, py: Python<'_>) {
        let batch = self.bridge.begin_drain();
        for event in std::iter::from_fn(|| self.bridge.pop()).take(batch) {
            let result = match event {
                Event::Request(ex) => self.start(py, ex),
                Event::Wake(ex) => crate::asgi::wake(py, &ex),
                Event::Ping => Ok(()),
                Event::CancelRequests => self.ctx.tasks.cancel_all(py).map(|n| {
                    if n > 0 {
                        crate::warn!("Cancelling {n} request task(s) still running at the graceful-shutdown timeout");
                    }
                }),
                Event::Stop => self.event_loop.bind(py).call_method0(intern!(py, "stop")).map(drop),
            };
            if let Err(e) = result {
                crate::error!("internal error on the event loop:\n{}", format_exception(py, e.value(py)));
            }
        }
    }
}

impl Dispatcher {
    fn start(&self, py: Python<'_>, ex: Arc<Exchange>) -> PyResult<()> {
        let scope = match &ex.head.websocket {
            None => return self.start_http(py, ex),
            Some(upgrade) => scope::websocket_scope(py, &self.ctx, &ex.head, upgrade)?,
        };
        self.start_websocket(py, ex, scope)
    }

    /// Calls the app for an HTTP request and runs its first step right here, without
    /// a Task (asgi/runner.rs): most requests end in it.
    fn start_http(&self, py: Python<'_>, ex: Arc<Exchange>) -> PyResult<()> {
        let scope = scope::http_scope(py, &self.ctx, &ex.head)?;
        let cycle = Bound::new(py, HttpCycle::new(ex, self.ctx.clone()))?;
        match self.ctx.app.bind(py).call1((scope, cycle.getattr(intern!(py, "receive"))?, cycle.getattr(intern!(py, "send"))?)) {
            Ok(coro) => RequestTask::start(py, coro, cycle.unbind(), self.ctx.clone()),
            // A non-async callable raised straight away: report it like any app error.
            Err(e) => request_ended(py, &cycle.unbind(), Ending::Raised(e.into_value(py).into_bound(py).into_any())),
        }
    }

    /// Calls the app for a WebSocket, as a task of its own: a WebSocket lives long
    /// and awaits often, so a Task's cost is not per message.
    fn start_websocket(&self, py: Python<'_>, ex: Arc<Exchange>, scope: Bound<'_, PyDict>) -> PyResult<()> {
        let cycle = Bound::new(py, WsCycle::new(ex, self.ctx.clone()))?;
        let done = WsDone { cycle: cycle.clone().unbind() }.into_pyobject(py)?.into_any();
        match self.ctx.app.bind(py).call1((scope, cycle.getattr(intern!(py, "receive"))?, cycle.getattr(intern!(py, "send"))?)) {
            Ok(coro) => {
                let task = self.ctx.create_task.bind(py).call1((coro,))?;
                // An eager task (3.12+) may be done already; its callback still runs, from the loop.
                self.ctx.tasks.add(&task)?;
                task.call_method1(intern!(py, "add_done_callback"), (done,))?;
            }
            Err(e) => {
                let failed = py.import("asyncio")?.getattr("get_running_loop")?.call0()?.call_method0("create_future")?;
                failed.call_method1("set_exception", (e.value(py),))?;
                done.call1((failed,))?;
            }
        }
        Ok(())
    }
}
