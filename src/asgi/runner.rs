//! Runs a request's app coroutine without an asyncio Task (design note
//! io-on-loop-thread.md, section 8): the coroutine is stepped from here, and
//! `RequestTask` stands for its task wherever asyncio and frameworks look for
//! one (`asyncio.current_task()`, `cancel()`, `asyncio.timeout()`, anyio's
//! cancel scopes). A Task costs a `call_soon` and a loop iteration before the
//! app even starts; most requests end in their first step.
//!
//! The steps follow CPython 3.11's `Task.__step` and `__wakeup`.

use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::PyTraverseError;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple};
use std::sync::{Arc, Mutex, MutexGuard};

use super::AsgiContext;
use super::http::{Ending, HttpCycle, request_ended};

#[derive(Default)]
struct State {
    ended: Option<Outcome>,
    /// The future the coroutine waits on.
    waiter: Option<Py<PyAny>>,
    must_cancel: bool,
    cancel_message: Option<Py<PyAny>>,
    /// `cancel()` calls not taken back by `uncancel()`.
    cancels: usize,
    /// In the worker's `RequestTasks`: from the first time the coroutine suspends,
    /// since a request that ends in its first step has nothing to wait for or cancel.
    held: bool,
    callbacks: Vec<(Py<PyAny>, Py<PyAny>)>,
}

enum Outcome {
    Returned(Py<PyAny>),
    Cancelled,
    Raised(Py<PyAny>),
}

impl Outcome {
    fn clone_ref(&self, py: Python<'_>) -> Self {
        match self {
            Outcome::Returned(v) => Outcome::Returned(v.clone_ref(py)),
            Outcome::Cancelled => Outcome::Cancelled,
            Outcome::Raised(e) => Outcome::Raised(e.clone_ref(py)),
        }
    }

    fn object(&self) -> Option<&Py<PyAny>> {
        match self {
            Outcome::Returned(v) | Outcome::Raised(v) => Some(v),
            Outcome::Cancelled => None,
        }
    }
}

/// A request's coroutine, and the task asyncio sees while it runs.
#[pyclass(frozen, weakref, module = "ferrogate._ferrogate")]
pub struct RequestTask {
    coro: Py<PyAny>,
    context: Py<PyAny>,
    cycle: Py<HttpCycle>,
    ctx: Arc<AsgiContext>,
    state: Mutex<State>,
}

/// What one send or throw into the coroutine gave.
enum Sent<'py> {
    Yielded(Bound<'py, PyAny>),
    Returned(Bound<'py, PyAny>),
    Raised(PyErr),
}

fn cancelled_error(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static CLASS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    CLASS.get_or_try_init(py, || Ok::<_, PyErr>(py.import("asyncio")?.getattr("CancelledError")?.unbind())).map(|c| c.bind(py))
}

impl RequestTask {
    /// Never held across a call into Python: code that Python runs (a finalizer, the
    /// collector's traversal) may look at this task again from the same thread.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn outcome(&self, py: Python<'_>) -> Option<Outcome> {
        self.state().ended.as_ref().map(|o| o.clone_ref(py))
    }

    /// `loop.call_soon(*call, context=context)`: how a Task schedules its steps and callbacks.
    fn call_soon(&self, call: Bound<'_, PyTuple>, context: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = call.py();
        let kwargs = PyDict::new(py);
        kwargs.set_item(intern!(py, "context"), context)?;
        self.ctx.event_loop.bind(py).call_method(intern!(py, "call_soon"), call, Some(&kwargs)).map(drop)
    }

    /// Calls the app's coroutine for the first time, in a copy of the current context.
    pub fn start(py: Python<'_>, coro: Bound<'_, PyAny>, cycle: Py<HttpCycle>, ctx: Arc<AsgiContext>) -> PyResult<()> {
        // SAFETY: returns a new reference, or NULL with an exception set.
        let context = unsafe { Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyContext_CopyCurrent())? };
        let task = Bound::new(py, RequestTask { coro: coro.unbind(), context: context.unbind(), cycle, ctx, state: Mutex::new(State::default()) })?;
        // SAFETY: a live context object, entered for the first step only: the later ones
        // run from callbacks scheduled with `context=`, as a Task's do.
        if unsafe { pyo3::ffi::PyContext_Enter(task.get().context.as_ptr()) } < 0 {
            return Err(PyErr::fetch(py));
        }
        let stepped = Self::step(&task, None);
        // SAFETY: the context entered above.
        unsafe { pyo3::ffi::PyContext_Exit(task.get().context.as_ptr()) };
        stepped
    }

    fn send<'py>(&self, py: Python<'py>, exc: Option<Bound<'py, PyAny>>) -> Sent<'py> {
        let coro = self.coro.bind(py);
        match exc {
            None => {
                let mut result: *mut pyo3::ffi::PyObject = std::ptr::null_mut();
                // SAFETY: `coro` is alive; `result` receives a new reference or stays NULL.
                let status = unsafe { pyo3::ffi::PyIter_Send(coro.as_ptr(), pyo3::ffi::Py_None(), &mut result) };
                match status {
                    // SAFETY: on NEXT and RETURN, `result` is a new reference.
                    pyo3::ffi::PySendResult::PYGEN_NEXT => Sent::Yielded(unsafe { Bound::from_owned_ptr(py, result) }),
                    pyo3::ffi::PySendResult::PYGEN_RETURN => Sent::Returned(unsafe { Bound::from_owned_ptr(py, result) }),
                    _ => Sent::Raised(PyErr::fetch(py)),
                }
            }
            Some(exc) => match coro.call_method1(intern!(py, "throw"), (exc,)) {
                Ok(yielded) => Sent::Yielded(yielded),
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyStopIteration>(py) => {
                    Sent::Returned(e.value(py).getattr(intern!(py, "value")).unwrap_or_else(|_| py.None().into_bound(py)))
                }
                Err(e) => Sent::Raised(e),
            },
        }
    }

    fn step(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let mut exc = exc;
        {
            let mut st = me.state();
            if st.ended.is_some() {
                return Ok(());
            }
            if st.must_cancel {
                st.must_cancel = false;
                let msg = st.cancel_message.take();
                drop(st);
                let already = match &exc {
                    Some(e) => e.is_instance(cancelled_error(py)?)?,
                    None => false,
                };
                if !already {
                    exc = Some(cancelled_error(py)?.call1((msg,))?);
                }
            }
        }
        let event_loop = me.ctx.event_loop.bind(py);
        me.ctx.enter_task.bind(py).call1((event_loop, slf))?;
        let sent = me.send(py, exc);
        me.ctx.leave_task.bind(py).call1((event_loop, slf))?;
        match sent {
            Sent::Returned(value) => {
                let cancelled = std::mem::take(&mut me.state().must_cancel);
                // Cancelled right before its coroutine returned: a Task ends cancelled too.
                Self::end(slf, if cancelled { Outcome::Cancelled } else { Outcome::Returned(value.unbind()) })
            }
            Sent::Raised(e) if e.is_instance(py, cancelled_error(py)?) => Self::end(slf, Outcome::Cancelled),
            Sent::Raised(e) => Self::end(slf, Outcome::Raised(e.into_value(py).into_any())),
            Sent::Yielded(yielded) => Self::wait_on(slf, yielded),
        }
    }

    fn wait_on(slf: &Bound<'_, Self>, yielded: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        if !std::mem::replace(&mut me.state().held, true) {
            me.ctx.tasks.add(slf.as_any())?;
            // Listed from here on, as a Task is: whoever looks at `asyncio.all_tasks()`
            // (a shutdown hook gathering what is left, a monitor) can only do so while
            // this request is suspended. A request that ends in its first step is never
            // seen, so it pays nothing.
            me.ctx.register_task.bind(py).call1((slf,))?;
        }
        if yielded.is_none() {
            // A bare `yield` (asyncio.sleep(0)): run again at the next iteration.
            return me.call_soon((slf.getattr(intern!(py, "_step"))?,).into_pyobject(py)?, me.context.bind(py));
        }
        let blocking = yielded.getattr_opt(intern!(py, "_asyncio_future_blocking"))?;
        // What `Task.__step` refuses, refused the same way: thrown into the coroutine.
        let refusal = if !blocking.is_some_and(|b| b.is_truthy().unwrap_or(false)) {
            Some(format!("Task got bad yield: {}", yielded.repr()?))
        } else if !yielded.call_method0(intern!(py, "get_loop"))?.is(me.ctx.event_loop.bind(py)) {
            Some(format!("Task {} got Future {} attached to a different loop", slf.repr()?, yielded.repr()?))
        } else if yielded.is(slf) {
            Some("Task cannot await on itself".to_owned())
        } else {
            None
        };
        if let Some(message) = refusal {
            let error = PyRuntimeError::new_err(message);
            return me.call_soon((slf.getattr(intern!(py, "_throw"))?, error.into_value(py)).into_pyobject(py)?, me.context.bind(py));
        }
        yielded.setattr(intern!(py, "_asyncio_future_blocking"), false)?;
        let kwargs = PyDict::new(py);
        kwargs.set_item(intern!(py, "context"), me.context.bind(py))?;
        yielded.call_method(intern!(py, "add_done_callback"), (slf.getattr(intern!(py, "_wakeup"))?,), Some(&kwargs))?;
        let cancel = {
            let mut st = me.state();
            st.waiter = Some(yielded.clone().unbind());
            st.must_cancel.then(|| st.cancel_message.as_ref().map(|m| m.clone_ref(py)))
        };
        if let Some(msg) = cancel {
            if yielded.call_method1(intern!(py, "cancel"), (msg,))?.is_truthy()? {
                me.state().must_cancel = false;
            }
        }
        Ok(())
    }

    fn end(slf: &Bound<'_, Self>, outcome: Outcome) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let ending = match &outcome {
            Outcome::Returned(_) => Ending::Returned,
            Outcome::Cancelled => Ending::Cancelled,
            Outcome::Raised(exc) => Ending::Raised(exc.bind(py).clone()),
        };
        let (callbacks, held) = {
            let mut st = me.state();
            st.ended = Some(outcome);
            st.waiter = None;
            (std::mem::take(&mut st.callbacks), st.held)
        };
        if held {
            me.ctx.tasks.remove(slf.as_any())?;
            me.ctx.unregister_task.bind(py).call1((slf,))?;
        }
        request_ended(py, &me.cycle, ending)?;
        for (callback, context) in callbacks {
            me.call_soon((callback, slf).into_pyobject(py)?, context.bind(py))?;
        }
        Ok(())
    }
}

/// What asyncio, anyio and the app call on the current task.
#[pymethods]
impl RequestTask {
    fn _step(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::step(slf, None)
    }

    fn _throw(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        Self::step(slf, Some(exc))
    }

    fn _wakeup(slf: &Bound<'_, Self>, future: Bound<'_, PyAny>) -> PyResult<()> {
        slf.get().state().waiter = None;
        match future.call_method0(intern!(slf.py(), "result")) {
            Ok(_) => Self::step(slf, None),
            Err(e) => Self::step(slf, Some(e.into_value(slf.py()).into_bound(slf.py()).into_any())),
        }
    }

    /// The collector must see what a task holds: an exception it ended with holds the
    /// frames of its traceback, and a frame that kept `asyncio.current_task()` (anyio's
    /// cancel scopes do) holds the task: a cycle that would otherwise never be freed.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.coro)?;
        visit.call(&self.context)?;
        visit.call(&self.cycle)?;
        // Held only while no Python runs, so never while the collector does; if it ever
        // were, skipping is safe: the collector then frees less, never too much.
        let Ok(st) = self.state.try_lock() else { return Ok(()) };
        for object in st.ended.as_ref().and_then(Outcome::object).into_iter().chain(&st.waiter).chain(&st.cancel_message) {
            visit.call(object)?;
        }
        for (callback, context) in &st.callbacks {
            visit.call(callback)?;
            visit.call(context)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        let taken = self.state.try_lock().map(|mut st| {
            (st.ended.take(), st.waiter.take(), st.cancel_message.take(), std::mem::take(&mut st.callbacks))
        });
        // Dropped here, after the lock: dropping a reference can run Python code.
        drop(taken);
    }

    #[getter]
    fn _fut_waiter(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state().waiter.as_ref().map(|w| w.clone_ref(py))
    }

    /// anyio's worker threads take their loop from here.
    #[getter]
    fn _loop(&self, py: Python<'_>) -> Py<PyAny> {
        self.ctx.event_loop.clone_ref(py)
    }

    /// anyio looks here for the loop's root task.
    #[getter]
    fn _callbacks<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let pairs: Vec<(Py<PyAny>, Py<PyAny>)> = self.state().callbacks.iter().map(|(c, x)| (c.clone_ref(py), x.clone_ref(py))).collect();
        PyList::new(py, pairs)
    }

    #[getter]
    fn _must_cancel(&self) -> bool {
        self.state().must_cancel
    }

    fn done(&self) -> bool {
        self.state().ended.is_some()
    }

    fn cancelled(&self) -> bool {
        matches!(self.state().ended, Some(Outcome::Cancelled))
    }

    #[pyo3(signature = (msg=None))]
    fn cancel(&self, py: Python<'_>, msg: Option<Py<PyAny>>) -> PyResult<bool> {
        let waiter = {
            let mut st = self.state();
            if st.ended.is_some() {
                return Ok(false);
            }
            st.cancels += 1;
            st.waiter.as_ref().map(|w| w.clone_ref(py))
        };
        // A waiter that takes the cancellation wakes the coroutine with CancelledError.
        if let Some(waiter) = waiter {
            if waiter.bind(py).call_method1(intern!(py, "cancel"), (msg.as_ref().map(|m| m.clone_ref(py)),))?.is_truthy()? {
                return Ok(true);
            }
        }
        let mut st = self.state();
        st.must_cancel = true;
        st.cancel_message = msg;
        Ok(true)
    }

    fn cancelling(&self) -> usize {
        self.state().cancels
    }

    fn uncancel(&self) -> usize {
        let mut st = self.state();
        st.cancels = st.cancels.saturating_sub(1);
        // As 3.13's Task: with no cancel request left, none is delivered at the next step.
        if st.cancels == 0 {
            st.must_cancel = false;
        }
        st.cancels
    }

    fn get_coro(&self, py: Python<'_>) -> Py<PyAny> {
        self.coro.clone_ref(py)
    }

    fn get_loop(&self, py: Python<'_>) -> Py<PyAny> {
        self.ctx.event_loop.clone_ref(py)
    }

    fn get_context(&self, py: Python<'_>) -> Py<PyAny> {
        self.context.clone_ref(py)
    }

    fn get_name(&self) -> &'static str {
        "ferrogate-request"
    }

    fn result(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self.outcome(py) {
            Some(Outcome::Returned(v)) => Ok(v),
            Some(Outcome::Raised(e)) => Err(PyErr::from_value(e.into_bound(py))),
            Some(Outcome::Cancelled) => Err(PyErr::from_value(cancelled_error(py)?.call0()?)),
            None => Err(PyErr::from_value(py.import("asyncio")?.getattr("InvalidStateError")?.call1(("Result is not set.",))?)),
        }
    }

    fn exception(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match self.outcome(py) {
            Some(Outcome::Returned(_)) => Ok(None),
            Some(Outcome::Raised(e)) => Ok(Some(e)),
            Some(Outcome::Cancelled) => Err(PyErr::from_value(cancelled_error(py)?.call0()?)),
            None => Err(PyErr::from_value(py.import("asyncio")?.getattr("InvalidStateError")?.call1(("Exception is not set.",))?)),
        }
    }

    #[pyo3(signature = (callback, *, context=None))]
    fn add_done_callback(slf: &Bound<'_, Self>, callback: Py<PyAny>, context: Option<Py<PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let context = match context {
            Some(c) => c,
            // SAFETY: returns a new reference, or NULL with an exception set.
            None => unsafe { Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyContext_CopyCurrent())? }.unbind(),
        };
        let me = slf.get();
        if me.state().ended.is_some() {
            me.call_soon((callback, slf).into_pyobject(py)?, context.bind(py))?;
        } else {
            me.state().callbacks.push((callback, context));
        }
        Ok(())
    }

    fn remove_done_callback(&self, py: Python<'_>, callback: Bound<'_, PyAny>) -> PyResult<usize> {
        let callbacks = std::mem::take(&mut self.state().callbacks);
        let mut kept = Vec::with_capacity(callbacks.len());
        let mut removed = 0;
        for (cb, context) in callbacks {
            if cb.bind(py).eq(&callback)? {
                removed += 1;
            } else {
                kept.push((cb, context));
            }
        }
        self.state().callbacks = kept;
        Ok(removed)
    }

    fn __repr__(&self) -> String {
        let st = self.state();
        let state = match &st.ended {
            None => "pending",
            Some(Outcome::Cancelled) => "cancelled",
            Some(_) => "finished",
        };
        format!("<ferrogate RequestTask {state}>")
    }

}
