//! ASGI `http` connections: the receive/send callables and the task's epilogue.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use std::path::PathBuf;
use std::sync::Arc;

use super::awaitable::Ready;
use super::{AsgiContext, format_exception};
use crate::bridge::exchange::{Body, Exchange, HttpIn, ResponseEvent, Shared};

pyo3::create_exception!(ferrogate, ClientDisconnected, PyOSError, "The client closed the connection.");

enum Phase {
    /// Nothing sent yet.
    Start,
    /// `http.response.start` received; held back so that a one-message body can go out with it.
    Head { status: StatusCode, headers: Vec<(HeaderName, HeaderValue)> },
    Streaming,
    /// The body is complete; the app announced trailers and has yet to send them.
    Trailers(Vec<(HeaderName, HeaderValue)>),
    Complete,
}

#[pyclass(module = "ferrogate._ferrogate")]
pub struct HttpCycle {
    ex: Arc<Exchange>,
    ctx: Arc<AsgiContext>,
    phase: Phase,
    /// The app's content-length, held to account: a body that disagrees
    /// would desynchronize the connection for the next request.
    declared_len: Option<u64>,
    body_len: u64,
    /// HEAD, 204 or 304: no body goes on the wire, so a content-length only
    /// describes the representation (RFC 9110 8.6) and is not checked.
    bodiless: bool,
    /// `http.response.start` said `trailers: True`: the response ends with `http.response.trailers`.
    trailers: bool,
}

impl HttpCycle {
    pub fn new(ex: Arc<Exchange>, ctx: Arc<AsgiContext>) -> Self {
        HttpCycle { ex, ctx, phase: Phase::Start, declared_len: None, body_len: 0, bodiless: false, trailers: false }
    }

    /// Counts body bytes against the declared content-length (HEAD responses carry none).
    fn check_length(&mut self, chunk: usize, last: bool) -> PyResult<()> {
        self.body_len += chunk as u64;
        let Some(declared) = self.declared_len else { return Ok(()) };
        if self.bodiless {
            return Ok(());
        }
        if self.body_len > declared || (last && self.body_len < declared) {
            return Err(PyRuntimeError::new_err(format!(
                "Response content-length is {declared} but the app sent {} bytes{}",
                self.body_len,
                if last { "" } else { " so far" }
            )));
        }
        Ok(())
    }

    fn emit(&self, py: Python<'_>, event: ResponseEvent) {
        self.ex.emit(py, event);
    }

    /// Sends a plain-text error response if nothing has gone out yet, else cuts the connection.
    fn fail(&mut self, py: Python<'_>, status: StatusCode) {
        match std::mem::replace(&mut self.phase, Phase::Complete) {
            Phase::Start | Phase::Head { .. } => {
                let body = Bytes::from(format!("{}\n", status.canonical_reason().unwrap_or("Error")));
                let headers = vec![(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))];
                self.emit(py, ResponseEvent::Start { status, headers, body: Body::Full(body) });
            }
            Phase::Streaming | Phase::Trailers(_) => self.emit(py, ResponseEvent::Abort),
            Phase::Complete => {}
        }
    }
}

/// The message the app should get next from receive(), if one is ready.
pub fn next_message(py: Python<'_>, ex: &Exchange, s: &mut Shared) -> PyResult<Option<Py<PyAny>>> {
    let msg = PyDict::new(py);
    match s.next_http() {
        None => return Ok(None),
        Some(HttpIn::Body { chunks, more }) => {
            let len = chunks.iter().map(Bytes::len).sum();
            let body = PyBytes::new_with(py, len, |buf| {
                let mut at = 0;
                for chunk in &chunks {
                    buf[at..at + chunk.len()].copy_from_slice(chunk);
                    at += chunk.len();
                }
                Ok(())
            })?;
            if more {
                ex.wants_more.notify_one();
            }
            msg.set_item(intern!(py, "type"), intern!(py, "http.request"))?;
            msg.set_item(intern!(py, "body"), body)?;
            msg.set_item(intern!(py, "more_body"), more)?;
        }
        Some(HttpIn::Disconnect) => msg.set_item(intern!(py, "type"), intern!(py, "http.disconnect"))?,
    }
    Ok(Some(msg.into_any().unbind()))
}

pub fn headers_from(_py: Python<'_>, raw: Option<Bound<'_, PyAny>>) -> PyResult<Vec<(HeaderName, HeaderValue)>> {
    let Some(raw) = raw else { return Ok(Vec::new()) };
    // What apps send is almost always a list of 2-tuples: read those through their own
    // accessors. Indexing any sequence (`item[0]`) makes an int and looks up `__getitem__`:
    // about 800 of the 2,000 instructions a two-header list cost (bench/count.py).
    if let Ok(list) = raw.cast::<PyList>() {
        let mut headers = Vec::with_capacity(list.len());
        for item in list.iter() {
            headers.push(header_from(&item)?);
        }
        return Ok(headers);
    }
    let mut headers = Vec::new();
    for item in raw.try_iter()? {
        headers.push(header_from(&item?)?);
    }
    Ok(headers)
}

/// One `(name, value)` pair of an ASGI header list (any two-item sequence of bytes).
fn header_from(item: &Bound<'_, PyAny>) -> PyResult<(HeaderName, HeaderValue)> {
    let (name, value) = match item.cast::<PyTuple>() {
        Ok(pair) if pair.len() == 2 => (pair.get_borrowed_item(0)?.to_owned(), pair.get_borrowed_item(1)?.to_owned()),
        _ => (item.get_item(0)?, item.get_item(1)?),
    };
    let name = name.cast::<PyBytes>().map_err(|_| PyTypeError::new_err(format!("ASGI header names must be bytes, got {}", name.get_type().name().map(|n| n.to_string()).unwrap_or_default())))?;
    let value = value.cast::<PyBytes>().map_err(|_| PyTypeError::new_err("ASGI header values must be bytes"))?;
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| PyValueError::new_err(format!("invalid response header name {:?}", String::from_utf8_lossy(name.as_bytes()))))?;
    let value = HeaderValue::from_bytes(value.as_bytes())
        .map_err(|_| PyValueError::new_err(format!("invalid value for response header '{name}' (control characters are not allowed)")))?;
    Ok((name, value))
}

fn body_of(msg: &Bound<'_, PyDict>) -> PyResult<(Bytes, bool)> {
    let py = msg.py();
    let body = match msg.get_item(intern!(py, "body"))? {
        Some(b) => Bytes::copy_from_slice(
            b.cast::<PyBytes>().map_err(|_| PyTypeError::new_err("'body' of http.response.body must be bytes"))?.as_bytes(),
        ),
        None => Bytes::new(),
    };
    let more = match msg.get_item(intern!(py, "more_body"))? {
        Some(m) => m.is_truthy()?,
        None => false,
    };
    Ok((body, more))
}

#[pymethods]
impl HttpCycle {
    fn receive(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        super::receive::receive(py, &self.ctx, &self.ex, next_message)
    }

    fn send(&mut self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let msg = message.cast::<PyDict>().map_err(|_| PyTypeError::new_err("ASGI messages must be dicts"))?;
        let kind = msg.get_item(intern!(py, "type"))?.ok_or_else(|| PyValueError::new_err("ASGI message has no 'type'"))?;
        let kind = kind.cast::<PyString>().map_err(|_| PyTypeError::new_err("ASGI message 'type' must be a str"))?;
        let kind = kind.to_str()?;
        let disconnected = self.ex.lock().client_gone();

        match (&self.phase, kind) {
            (Phase::Start, "http.response.start") => {
                let status = msg.get_item(intern!(py, "status"))?.ok_or_else(|| PyValueError::new_err("http.response.start has no 'status'"))?;
                let code: u16 = status.extract().map_err(|_| PyTypeError::new_err("'status' must be an int"))?;
                // 1xx are not final responses: one here would leave the client waiting for the real one.
                let status = StatusCode::from_u16(code)
                    .ok()
                    .filter(|s| s.as_u16() >= 200)
                    .ok_or_else(|| PyValueError::new_err(format!("invalid HTTP status {code} for http.response.start (200-999)")))?;
                let headers = headers_from(py, msg.get_item(intern!(py, "headers"))?)?;
                let mut lengths = headers.iter().filter(|(n, _)| n == http::header::CONTENT_LENGTH);
                if let Some((_, v)) = lengths.next() {
                    let n = v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok());
                    if n.is_none() || lengths.next().is_some() {
                        return Err(PyValueError::new_err("response headers need at most one content-length, a number"));
                    }
                    self.declared_len = n;
                }
                self.bodiless = self.ex.head.method == http::Method::HEAD || matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
                self.trailers = match msg.get_item(intern!(py, "trailers"))? {
                    Some(t) => t.is_truthy()?,
                    None => false,
                };
                self.phase = Phase::Head { status, headers };
            }
            (Phase::Head { .. }, "http.response.body") => {
                let (body, more) = body_of(msg)?;
                self.check_length(body.len(), !more)?;
                let Phase::Head { status, headers } = std::mem::replace(&mut self.phase, Phase::Streaming) else { unreachable!() };
                if disconnected {
                    self.phase = Phase::Complete;
                    return Err(ClientDisconnected::new_err("the client closed the connection"));
                }
                let len = body.len();
                if more || self.trailers {
                    self.emit(py, ResponseEvent::Start { status, headers, body: Body::Streaming });
                    if !body.is_empty() {
                        self.emit(py, ResponseEvent::Chunk(body));
                    }
                    if !more {
                        self.phase = Phase::Trailers(Vec::new());
                    }
                } else {
                    self.phase = Phase::Complete;
                    self.emit(py, ResponseEvent::Start { status, headers, body: Body::Full(body) });
                }
                return self.after_body(py, len, more);
            }
            (Phase::Head { .. }, "http.response.pathsend") => {
                let path = msg.get_item(intern!(py, "path"))?.ok_or_else(|| PyValueError::new_err("http.response.pathsend has no 'path'"))?;
                let path: PathBuf = path.extract()?;
                // The spec asks apps for an absolute path, but Starlette's
                // FileResponse("index.html") passes what it was given: resolve
                // it as the app's own open() would, against the working directory.
                let path = std::path::absolute(&path)
                    .map_err(|e| PyValueError::new_err(format!("http.response.pathsend: cannot resolve {}: {e}", path.display())))?;
                let Phase::Head { status, headers } = std::mem::replace(&mut self.phase, Phase::Complete) else { unreachable!() };
                self.emit(py, ResponseEvent::Start { status, headers, body: Body::File(path) });
            }
            (Phase::Streaming, "http.response.body") => {
                if disconnected {
                    self.phase = Phase::Complete;
                    return Err(ClientDisconnected::new_err("the client closed the connection"));
                }
                let (body, more) = body_of(msg)?;
                let len = body.len();
                if let Err(e) = self.check_length(len, !more) {
                    self.phase = Phase::Complete;
                    self.emit(py, ResponseEvent::Abort);
                    return Err(e);
                }
                if !body.is_empty() {
                    self.emit(py, ResponseEvent::Chunk(body));
                }
                if !more && self.trailers {
                    self.phase = Phase::Trailers(Vec::new());
                } else if !more {
                    self.phase = Phase::Complete;
                    self.emit(py, ResponseEvent::End);
                }
                return self.after_body(py, len, more);
            }
            (Phase::Trailers(_), "http.response.trailers") => {
                let fields = headers_from(py, msg.get_item(intern!(py, "headers"))?)?;
                let more = match msg.get_item(intern!(py, "more_trailers"))? {
                    Some(m) => m.is_truthy()?,
                    None => false,
                };
                let Phase::Trailers(mut all) = std::mem::replace(&mut self.phase, Phase::Complete) else { unreachable!() };
                all.extend(fields);
                match more {
                    true => self.phase = Phase::Trailers(all),
                    false => self.emit(py, ResponseEvent::Trailers(all)),
                }
            }
            (Phase::Complete, _) if disconnected => return Err(ClientDisconnected::new_err("the client closed the connection")),
            (phase, kind) => {
                let expected = match phase {
                    Phase::Start => "'http.response.start'",
                    Phase::Head { .. } => "'http.response.body' or 'http.response.pathsend'",
                    Phase::Streaming => "'http.response.body'",
                    Phase::Trailers(_) => "'http.response.trailers' (http.response.start asked for trailers)",
                    Phase::Complete => "nothing: the response is already complete",
                };
                return Err(PyRuntimeError::new_err(format!("Unexpected ASGI message '{kind}' sent; expected {expected}")));
            }
        }
        Ready::none(py)
    }
}

impl HttpCycle {
    /// Counts the bytes now queued for the socket and makes send() wait while too many are.
    fn after_body(&self, py: Python<'_>, len: usize, more: bool) -> PyResult<Py<PyAny>> {
        let mut s = self.ex.lock();
        if s.queued_for_send(len) && more {
            let future = self.ctx.new_future(py)?;
            s.wait_for_send(future.clone().unbind());
            return Ok(future.unbind());
        }
        drop(s);
        Ready::none(py)
    }
}

/// The app let the news that its client left propagate: our ClientDisconnected
/// (an OSError) from send(), as such or wrapped by a framework (Starlette
/// raises its ClientDisconnect from it), or Starlette's ClientDisconnect
/// raised when receive() said `http.disconnect` during a body read.
fn reports_disconnect(exc: &Bound<'_, PyAny>) -> bool {
    let py = exc.py();
    let mut current = Some(exc.clone());
    for _ in 0..8 {
        let Some(e) = current.take().filter(|e| !e.is_none()) else { break };
        if e.is_instance_of::<ClientDisconnected>() || e.get_type().name().is_ok_and(|n| n == "ClientDisconnect") {
            return true;
        }
        current = e.getattr(intern!(py, "__cause__")).ok().filter(|c| !c.is_none()).or_else(|| e.getattr(intern!(py, "__context__")).ok());
    }
    false
}

/// How the app's coroutine for a request ended.
pub enum Ending<'py> {
    Returned,
    Cancelled,
    Raised(Bound<'py, PyAny>),
}

/// When a request's coroutine has ended (asgi/runner.rs): answers for the app
/// if it did not, and reports how it ended.
pub fn request_ended(py: Python<'_>, cycle: &Py<HttpCycle>, ending: Ending<'_>) -> PyResult<()> {
    let mut cycle = cycle.bind(py).borrow_mut();
    let what = || {
        let head = &cycle.ex.head;
        format!("{} {}", head.method, head.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
    };
    match ending {
        Ending::Returned => {}
        // A task that never finished its work: by our stop, or by the app's own doing.
        Ending::Cancelled => {
            if cycle.ctx.tasks.cancelled_by_stop() {
                crate::info!("{}: cancelled at the graceful-shutdown timeout", what());
                cycle.fail(py, StatusCode::SERVICE_UNAVAILABLE);
            } else {
                crate::error!("ASGI request task was cancelled before completing the response ({})", what());
                cycle.fail(py, StatusCode::INTERNAL_SERVER_ERROR);
            }
            return Ok(());
        }
        Ending::Raised(exc) => {
            let disconnected = cycle.ex.lock().client_gone();
            if disconnected && reports_disconnect(&exc) {
                crate::info!("{}: the client went away before the response was complete", what());
            } else {
                crate::error!("Exception in ASGI application while serving {}\n{}", what(), format_exception(py, &exc));
            }
            cycle.fail(py, StatusCode::INTERNAL_SERVER_ERROR);
            return Ok(());
        }
    }
    if matches!(cycle.phase, Phase::Complete) {
        return Ok(());
    }
    if cycle.ex.lock().client_gone() {
        // The client left before an answer; the app had nobody to answer.
        cycle.phase = Phase::Complete;
        return Ok(());
    }
    match cycle.phase {
        Phase::Complete => {}
        Phase::Start => {
            crate::error!("ASGI callable returned without starting a response ({})", what());
            cycle.fail(py, StatusCode::INTERNAL_SERVER_ERROR);
        }
        _ => {
            crate::error!("ASGI callable returned without completing the response ({})", what());
            cycle.fail(py, StatusCode::INTERNAL_SERVER_ERROR);
        }
    }
    Ok(())
}
