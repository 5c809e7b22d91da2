//! An awaitable that is already done.
//!
//! `receive()` and `send()` return one of these whenever their result is
//! already at hand, so `await receive()` completes without a trip through the
//! event loop: no future, no callback, no task switch.

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;

#[pyclass(frozen, module = "ferrogate._ferrogate")]
pub struct Ready {
    value: Py<PyAny>,
}

impl Ready {
    pub fn new(py: Python<'_>, value: Py<PyAny>) -> PyResult<Py<PyAny>> {
        Ok(Py::new(py, Ready { value })?.into_any())
    }

    pub fn none(py: Python<'_>) -> PyResult<Py<PyAny>> {
        Self::new(py, py.None())
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

    fn __next__(&self, py: Python<'_>) -> PyResult<()> {
        Err(PyStopIteration::new_err((self.value.clone_ref(py),)))
    }

    fn send(&self, py: Python<'_>, _value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.__next__(py)
    }
}
