//! ASGI `websocket` connections: receive/send for the app, and the task's epilogue.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use std::sync::Arc;

use super::awaitable::Ready;
use super::http::{ClientDisconnected, headers_from};
use super::{AsgiContext, format_exception};
use crate::bridge::exchange::{Body, Exchange, ResponseEvent, Shared, WsIn, WsMessage};

enum Phase {
    /// websocket.connect not yet handed to the app.
    Connecting,
    /// The app has seen websocket.connect and must accept, close or deny.
    Handshake,
    /// websocket.http.response.start seen: collecting the denial body.
    Denying { status: StatusCode, headers: Vec<(HeaderName, HeaderValue)>, body: Vec<u8> },
    Open,
    Closed,
}

#[pyclass(module = "ferrogate._ferrogate")]
pub struct WsCycle {
    ex: Arc<Exchange>,
    ctx: Arc<AsgiContext>,
    phase: Phase,
}

impl WsCycle {
    pub fn new(ex: Arc<Exchange>, ctx: Arc<AsgiContext>) -> Self {
        WsCycle { ex, ctx, phase: Phase::Connecting }
    }

    fn emit(&self, py: Python<'_>, event: ResponseEvent) {
        self.ex.emit(py, event);
    }

    fn deny(&mut self, py: Python<'_>, status: StatusCode) {
        let body = Bytes::from(format!("{}\n", status.canonical_reason().unwrap_or("Error")));
        let headers = vec![(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))];
        self.emit(py, ResponseEvent::Start { status, headers, body: Body::Full(body) });
        self.phase = Phase::Closed;
    }
}

fn dict<'py>(py: Python<'py>, kind: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyDict>> {
    let msg = PyDict::new(py);
    msg.set_item(intern!(py, "type"), kind)?;
    Ok(msg)
}

/// A message key, with None treated as absent, as the ASGI spec allows.
fn field<'py>(msg: &Bound<'py, PyDict>, key: &Bound<'py, PyString>) -> PyResult<Option<Bound<'py, PyAny>>> {
    Ok(msg.get_item(key)?.filter(|v| !v.is_none()))
}

/// The message the app should get next from receive(), if one is ready.
pub fn next_message(py: Python<'_>, ex: &Exchange, s: &mut Shared) -> PyResult<Option<Py<PyAny>>> {
    let msg = match s.next_ws() {
        None => return Ok(None),
        Some(WsIn::Message { message, drained }) => {
            if drained {
                ex.wants_more.notify_one();
            }
            let msg = dict(py, intern!(py, "websocket.receive"))?;
            match message {
                WsMessage::Text(t) => msg.set_item(intern!(py, "text"), t)?,
                WsMessage::Binary(b) => msg.set_item(intern!(py, "bytes"), PyBytes::new(py, &b))?,
            }
            msg
        }
        Some(WsIn::Disconnect { code, reason }) => {
            let msg = dict(py, intern!(py, "websocket.disconnect"))?;
            msg.set_item(intern!(py, "code"), code)?;
            msg.set_item(intern!(py, "reason"), reason)?;
            msg
        }
    };
    Ok(Some(msg.into_any().unbind()))
}

#[pymethods]
impl WsCycle {
    fn receive(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if let Phase::Connecting = self.phase {
            self.phase = Phase::Handshake;
            return Ready::with(py, dict(py, intern!(py, "websocket.connect"))?.into_any().unbind());
        }
        super::receive::receive(py, &self.ctx, &self.ex, next_message)
    }

    fn send<'py>(&mut self, py: Python<'py>, message: &Bound<'py, PyAny>) -> PyResult<Py<PyAny>> {
        let msg = message.cast::<PyDict>().map_err(|_| PyTypeError::new_err("ASGI messages must be dicts"))?;
        let kind: String = msg.get_item(intern!(py, "type"))?.ok_or_else(|| PyValueError::new_err("ASGI message has no 'type'"))?.extract()?;
        let get = |key: &Bound<'py, PyString>| field(msg, key);
        let closed = self.ex.lock().ws_closed();

        match (&mut self.phase, kind.as_str()) {
            (Phase::Connecting | Phase::Handshake, "websocket.accept") => {
                let subprotocol: Option<String> = get(intern!(py, "subprotocol"))?.map(|s| s.extract()).transpose()?;
                let headers = headers_from(py, get(intern!(py, "headers"))?)?;
                self.emit(py, ResponseEvent::Accept { subprotocol, headers });
                self.phase = Phase::Open;
            }
            (Phase::Connecting | Phase::Handshake, "websocket.close") => self.deny(py, StatusCode::FORBIDDEN),
            (Phase::Connecting | Phase::Handshake, "websocket.http.response.start") => {
                let code: u16 = get(intern!(py, "status"))?.ok_or_else(|| PyValueError::new_err("websocket.http.response.start has no 'status'"))?.extract()?;
                let status = StatusCode::from_u16(code).map_err(|_| PyValueError::new_err(format!("invalid HTTP status {code}")))?;
                let headers = headers_from(py, get(intern!(py, "headers"))?)?;
                self.phase = Phase::Denying { status, headers, body: Vec::new() };
            }
            (Phase::Denying { body, .. }, "websocket.http.response.body") => {
                if let Some(b) = get(intern!(py, "body"))? {
                    body.extend_from_slice(b.cast::<PyBytes>().map_err(|_| PyTypeError::new_err("'body' must be bytes"))?.as_bytes());
                }
                let more = get(intern!(py, "more_body"))?.map(|m| m.is_truthy()).transpose()?.unwrap_or(false);
                if !more {
                    let Phase::Denying { status, headers, body } = std::mem::replace(&mut self.phase, Phase::Closed) else { unreachable!() };
                    self.emit(py, ResponseEvent::Start { status, headers, body: Body::Full(Bytes::from(body)) });
                }
            }
            (Phase::Open, "websocket.send") if closed => return Err(ClientDisconnected::new_err("the WebSocket is closed")),
            (Phase::Open, "websocket.send") => {
                let len = if let Some(text) = get(intern!(py, "text"))? {
                    let text: String = text.extract().map_err(|_| PyTypeError::new_err("'text' must be a str"))?;
                    let len = text.len();
                    self.emit(py, ResponseEvent::Text(text));
                    len
                } else if let Some(bytes) = get(intern!(py, "bytes"))? {
                    let bytes = Bytes::copy_from_slice(bytes.cast::<PyBytes>().map_err(|_| PyTypeError::new_err("'bytes' must be bytes"))?.as_bytes());
                    let len = bytes.len();
                    self.emit(py, ResponseEvent::Binary(bytes));
                    len
                } else {
                    return Err(PyValueError::new_err("websocket.send needs 'text' or 'bytes'"));
                };
                let mut s = self.ex.lock();
                if s.queued_for_send(len) {
                    let future = self.ctx.new_future(py)?;
                    s.wait_for_send(future.clone().unbind());
                    return Ok(future.unbind());
                }
            }
            (Phase::Open, "websocket.close") => {
                let code: u16 = get(intern!(py, "code"))?.map(|c| c.extract()).transpose()?.unwrap_or(1000);
                let reason: String = get(intern!(py, "reason"))?.map(|r| r.extract()).transpose()?.unwrap_or_default();
                self.emit(py, ResponseEvent::Close { code, reason });
                self.phase = Phase::Closed;
            }
            (Phase::Closed, _) if closed => return Err(ClientDisconnected::new_err("the WebSocket is closed")),
            (_, kind) => return Err(PyRuntimeError::new_err(format!("Unexpected ASGI message '{kind}' sent at this point of the WebSocket"))),
        }
        Ready::none(py)
    }
}

/// Runs when the app's task for a WebSocket ends.
#[pyclass(module = "ferrogate._ferrogate")]
pub struct WsDone {
    pub cycle: Py<WsCycle>,
}

#[pymethods]
impl WsDone {
    fn __call__(&self, py: Python<'_>, task: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut cycle = self.cycle.bind(py).borrow_mut();
        cycle.ctx.tasks.remove(task)?;
        let path = cycle.ex.head.uri.path().to_string();
        let failed = if task.call_method0(intern!(py, "cancelled"))?.is_truthy()? {
            !cycle.ctx.tasks.cancelled_by_stop()
        } else {
            let exc = task.call_method0(intern!(py, "exception"))?;
            let disconnect = exc.is_instance_of::<pyo3::exceptions::PyOSError>() && cycle.ex.lock().ws_closed();
            if !exc.is_none() && !disconnect {
                crate::error!("Exception in ASGI application (WebSocket {path})\n{}", format_exception(py, &exc));
            }
            !exc.is_none() && !disconnect
        };
        match cycle.phase {
            Phase::Connecting | Phase::Handshake | Phase::Denying { .. } => {
                if !failed {
                    crate::debug!("WebSocket {path}: the app returned without accepting; answering 403");
                }
                cycle.deny(py, if failed { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::FORBIDDEN });
            }
            Phase::Open => {
                let (code, reason) = if failed { (1011, "server error") } else { (1000, "") };
                cycle.emit(py, ResponseEvent::Close { code, reason: reason.into() });
                cycle.phase = Phase::Closed;
            }
            Phase::Closed => {}
        }
        Ok(())
    }
}
