//! How `receive()` and `send()` hand their result back to the awaiting coroutine.
//!
//! Through `__next__`, a result can only come back inside a `StopIteration`: an
//! exception object made, raised, caught and freed for every `await send(...)`,
//! twice per response at least. Two ways around it, one per CPython version:
//! - CPython 3.10 and 3.11 step an awaitable with `PyIter_Send`, which uses the
//!   `am_send` slot when a type has one. Ours fill it (`install_am_send`), so the
//!   result comes back as a plain value, as it does from a coroutine.
//! - From 3.12 on, `await` calls `__next__` (`tp_iternext`) directly. There a
//!   result of `None`, which is what every `send()` gives, comes back as "no
//!   value and no exception", which CPython reads as `StopIteration(None)`; only
//!   a `receive()` message still needs a `StopIteration` of its own.
//!
//! `__next__` and `send` stay complete for code that steps an awaitable by hand,
//! and for CPython 3.11 under a tracer, which does not use `am_send`.

use pyo3::exceptions::{PyRuntimeError, PyStopIteration};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// What one step of an awaitable gives.
pub enum Step {
    /// A future for the task to wait on; the awaitable is stepped again after it.
    Yield(Py<PyAny>),
    /// The awaitable's result: the value of the `await` expression.
    Return(Py<PyAny>),
}

/// An awaitable stepped by `am_send`.
pub trait Stepped: pyo3::PyClass {
    fn step(slf: &Bound<'_, Self>) -> PyResult<Step>;
}

/// `__next__` for a `Stepped` class. `None` means "done, with `None`": pyo3 returns
/// NULL with no exception set, which `tp_iternext` callers read as `StopIteration(None)`.
pub fn next_step<T: Stepped>(slf: &Bound<'_, T>) -> PyResult<Option<Py<PyAny>>> {
    match T::step(slf)? {
        Step::Yield(future) => Ok(Some(future)),
        Step::Return(value) if value.is_none(slf.py()) => Ok(None),
        Step::Return(value) => Err(PyStopIteration::new_err((value,))),
    }
}

/// `send` for a `Stepped` class, a plain method: its result must be raised.
pub fn send_step<T: Stepped>(slf: &Bound<'_, T>) -> PyResult<Py<PyAny>> {
    match T::step(slf)? {
        Step::Yield(future) => Ok(future),
        Step::Return(value) => Err(PyStopIteration::new_err((value,))),
    }
}

/// Fills `T`'s `am_send` slot. Called once, when the module is initialised.
///
/// Every pyclass with `__await__` gets a type whose `tp_as_async` points into
/// its own heap type object, so the slot is ours to write. Our classes cannot
/// be subclassed, so the object `am_send` is given is always a `T`.
pub fn install_am_send<T: Stepped>(ty: &Bound<'_, PyType>) {
    let ty = ty.as_type_ptr();
    // SAFETY: `ty` is T's live type object; `tp_as_async` is non-null because T
    // defines `__await__` (checked), and nothing reads the slot concurrently:
    // module initialisation holds the interpreter.
    unsafe {
        let slots = (*ty).tp_as_async;
        assert!(!slots.is_null(), "an awaitable pyclass has no tp_as_async");
        (*slots).am_send = Some(am_send::<T>);
        ffi::PyType_Modified(ty);
    }
}

unsafe extern "C" fn am_send<T: Stepped>(iter: *mut ffi::PyObject, _arg: *mut ffi::PyObject, result: *mut *mut ffi::PyObject) -> ffi::PySendResult {
    // SAFETY: CPython calls a slot with the thread attached and `iter` a live T
    // (install_am_send); `result` is a valid out-pointer.
    let py = unsafe { Python::assume_attached() };
    let slf = unsafe { Bound::from_borrowed_ptr(py, iter).cast_into_unchecked::<T>() };
    let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| T::step(&slf)))
        .unwrap_or_else(|_| Err(PyRuntimeError::new_err("internal error in ferrogate (a panic while stepping an awaitable)")));
    match step {
        Ok(Step::Yield(future)) => {
            unsafe { *result = future.into_ptr() };
            ffi::PySendResult::PYGEN_NEXT
        }
        Ok(Step::Return(value)) => {
            unsafe { *result = value.into_ptr() };
            ffi::PySendResult::PYGEN_RETURN
        }
        Err(err) => {
            err.restore(py);
            unsafe { *result = std::ptr::null_mut() };
            ffi::PySendResult::PYGEN_ERROR
        }
    }
}

/// An awaitable that is already done: `receive()` and `send()` return one
/// whenever their result is at hand, so the `await` completes without a trip
/// through the event loop: no future, no callback, no task switch.
#[pyclass(frozen, module = "ferrogate._ferrogate")]
pub struct Ready {
    value: Py<PyAny>,
}

impl Ready {
    /// An awaitable done with `value`, as the Python object the app awaits.
    pub fn with(py: Python<'_>, value: Py<PyAny>) -> PyResult<Py<PyAny>> {
        Ok(Py::new(py, Ready { value })?.into_any())
    }

    /// Done with `None`: one shared instance, as it holds nothing of a request's.
    pub fn none(py: Python<'_>) -> PyResult<Py<PyAny>> {
        static NONE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        NONE.get_or_try_init(py, || Self::with(py, py.None())).map(|r| r.clone_ref(py))
    }
}

impl Stepped for Ready {
    fn step(slf: &Bound<'_, Self>) -> PyResult<Step> {
        Ok(Step::Return(slf.get().value.clone_ref(slf.py())))
    }
}

#[pymethods]
impl Ready {
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
