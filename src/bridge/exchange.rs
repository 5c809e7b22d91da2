//! One HTTP request/response cycle as both sides see it.
//!
//! The I/O side owns the socket; the loop side owns the ASGI coroutine. They
//! meet here: request body chunks and connection state flow in under a mutex
//! that is held for a few instructions and never while holding the GIL or
//! waiting; response messages flow out through a queue (`responses`) whose
//! depth is bounded by hand (`in_flight`), so a slow client pauses `send()`.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use pyo3::prelude::*;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

use super::responses::{ResponseReceiver, ResponseSender, response_queue};
use super::{Bridge, Event};

/// Above this many response bytes queued for the socket, `send()` waits.
pub const SEND_HIGH_WATER: usize = 256 * 1024;
/// ... and resumes once the socket has taken the queue below this.
pub const SEND_LOW_WATER: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// What a connection's TLS handshake established: the ASGI `tls` extension.
#[derive(Debug, Default)]
pub struct TlsInfo {
    /// 0x0303 for TLS 1.2, 0x0304 for TLS 1.3.
    pub version: u16,
    /// The IANA number of the negotiated suite.
    pub cipher_suite: u16,
    /// The client's certificate chain, leaf first, PEM (empty without client certificates).
    pub client_cert_chain: Vec<String>,
}

/// The parsed request head, after the pipeline stages (proxy headers) have run.
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    /// `headers` as received, when repeated names were interleaved with others.
    pub received_order: Option<crate::codec::h1::ReceivedOrder>,
    pub client: Option<SocketAddr>,
    pub server: Option<SocketAddr>,
    pub scheme: Scheme,
    pub tls: Option<Arc<TlsInfo>>,
    /// X-Forwarded-Prefix from a trusted proxy ("/api"): appended to --root-path.
    pub prefix: Option<Box<str>>,
    /// Set for a valid WebSocket opening request.
    pub websocket: Option<crate::codec::websocket::handshake::Upgrade>,
}

impl RequestHead {
    /// The headers in the order the client sent them (ASGI's scope["headers"]).
    pub fn headers_in_order(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        let (ordered, grouped) = match &self.received_order {
            Some(order) => (Some(order.0.iter().map(|(n, v)| (n, v))), None),
            None => (None, Some(self.headers.iter())),
        };
        ordered.into_iter().flatten().chain(grouped.into_iter().flatten())
    }
}

/// The I/O side's end of a request body: what a protocol (an HTTP/1.1
/// connection; an HTTP/2 stream alike) feeds the app through, one chunk per ask.
pub struct BodySink(Arc<Exchange>);

impl BodySink {
    pub fn new(ex: Arc<Exchange>) -> Self {
        BodySink(ex)
    }

    /// Waits until the app asks for more. False if it never will: it has
    /// answered, and the rest of the body is nobody's.
    pub async fn demand(&self) -> bool {
        self.0.wants_more.notified().await;
        !self.0.lock().http.response_complete
    }

    pub fn push(&self, chunk: Bytes, last: bool) {
        self.0.push_body(chunk, last);
    }

    /// The client left, or stalled past --timeout-io, mid-body.
    pub fn client_gone(&self) {
        self.0.mark_disconnected();
    }
}

/// What the app sent, validated on the loop thread, for the I/O side to write.
pub enum ResponseEvent {
    Start { status: http::StatusCode, headers: Vec<(HeaderName, HeaderValue)>, body: Body },
    Chunk(Bytes),
    /// The last body message: nothing follows.
    End,
    /// `http.response.trailers`, after the last body message: the response ends with them.
    Trailers(Vec<(HeaderName, HeaderValue)>),
    /// The app failed after starting the response: cut the connection.
    Abort,
    /// WebSocket: complete the handshake with a 101.
    Accept { subprotocol: Option<String>, headers: Vec<(HeaderName, HeaderValue)> },
    Text(String),
    Binary(Bytes),
    Close { code: u16, reason: String },
}

/// A complete WebSocket message from the client.
pub enum WsMessage {
    Text(String),
    Binary(Bytes),
}

/// How the response body begins.
pub enum Body {
    /// The whole body, known at start: sent with a content-length.
    Full(Bytes),
    /// More messages follow on the channel.
    Streaming,
    /// `http.response.pathsend`: the I/O side reads the file itself.
    File(PathBuf),
}

/// What both sides of one exchange see, under its mutex. The fields are
/// private: each side changes them through methods that say what happened.
#[derive(Default)]
pub struct Shared {
    http: HttpState,
    ws: WsState,
    /// The client is gone (or, for a WebSocket, the session is over).
    disconnected: bool,
    /// Response bytes handed to the connection and not yet taken by the socket.
    in_flight: usize,
    /// asyncio futures of the receive() calls parked until a message comes
    /// (several tasks may wait at once; cancelled ones are pruned).
    receive_waiters: Vec<Py<PyAny>>,
    /// The asyncio future the app is awaiting in send().
    send_waiter: Option<Py<PyAny>>,
}

#[derive(Default)]
struct HttpState {
    /// Request body chunks read ahead of the app.
    body: VecDeque<Bytes>,
    body_complete: bool,
    /// The final `http.request` message (more_body=False) has been handed to the app.
    body_delivered: bool,
    response_complete: bool,
}

#[derive(Default)]
struct WsState {
    inbox: VecDeque<WsMessage>,
    /// The WebSocket is closed, with this code and reason (1006: no close frame).
    closed: Option<(u16, String)>,
}

/// The next `http.request`/`http.disconnect` the app's receive() gets.
pub enum HttpIn {
    /// `http.request`: these chunks, joined; `more`: more_body.
    Body { chunks: VecDeque<Bytes>, more: bool },
    Disconnect,
}

/// The next `websocket.receive`/`websocket.disconnect`.
pub enum WsIn {
    /// A message; `drained`: the inbox is now empty (the reader may go on).
    Message { message: WsMessage, drained: bool },
    Disconnect { code: u16, reason: String },
}

impl Shared {
    /// Loop side: the next HTTP message for the app, if one is ready.
    pub fn next_http(&mut self) -> Option<HttpIn> {
        let h = &mut self.http;
        if !h.body_delivered && (!h.body.is_empty() || h.body_complete) {
            let more = !h.body_complete;
            h.body_delivered = !more;
            return Some(HttpIn::Body { chunks: std::mem::take(&mut h.body), more });
        }
        if self.disconnected || (h.body_delivered && h.response_complete) {
            return Some(HttpIn::Disconnect);
        }
        None
    }

    /// Loop side: the next WebSocket message for the app, if one is ready.
    pub fn next_ws(&mut self) -> Option<WsIn> {
        if let Some(message) = self.ws.inbox.pop_front() {
            return Some(WsIn::Message { message, drained: self.ws.inbox.is_empty() });
        }
        if let Some((code, reason)) = &self.ws.closed {
            return Some(WsIn::Disconnect { code: *code, reason: reason.clone() });
        }
        if self.disconnected {
            return Some(WsIn::Disconnect { code: 1006, reason: String::new() });
        }
        None
    }

    pub fn client_gone(&self) -> bool {
        self.disconnected
    }

    pub fn ws_closed(&self) -> bool {
        self.ws.closed.is_some()
    }

    /// I/O side: WebSocket messages the app has not taken yet.
    pub fn ws_backlog(&self) -> usize {
        self.ws.inbox.len()
    }

    /// Loop side: `len` more response bytes were handed to the connection.
    /// True if send() should now wait for the socket to take some.
    pub fn queued_for_send(&mut self, len: usize) -> bool {
        self.in_flight += len;
        self.in_flight > SEND_HIGH_WATER && !self.disconnected && !self.ws_closed()
    }

    /// Loop side: park send() on `future` until the socket has taken enough.
    pub fn wait_for_send(&mut self, future: Py<PyAny>) {
        self.send_waiter = Some(future);
    }

    /// Loop side: the parked send(), if it may go on (capacity, or nobody to send to).
    pub fn take_ready_send_waiter(&mut self) -> Option<Py<PyAny>> {
        let ready = self.in_flight <= SEND_LOW_WATER || self.disconnected;
        if ready { self.send_waiter.take() } else { None }
    }

    /// Loop side: park a receive() on `future` until the I/O side has news.
    pub fn wait_for_message(&mut self, py: Python<'_>, future: Py<PyAny>) {
        // Futures of receive() calls the app gave up on (cancelled) are done already.
        self.receive_waiters.retain(|f| !f.bind(py).call_method0(pyo3::intern!(py, "done")).and_then(|d| d.is_truthy()).unwrap_or(true));
        self.receive_waiters.push(future);
    }

    /// Loop side: every parked receive(), to be woken to look again.
    pub fn take_receive_waiters(&mut self) -> Vec<Py<PyAny>> {
        std::mem::take(&mut self.receive_waiters)
    }

    fn someone_waits(&self) -> bool {
        !self.receive_waiters.is_empty() || self.send_waiter.is_some()
    }
}

pub struct Exchange {
    pub head: RequestHead,
    shared: Mutex<Shared>,
    pub response: ResponseSender,
    /// Rung by the app side when it has consumed what was buffered (body, messages) and wants more.
    pub wants_more: Notify,
    bridge: Arc<Bridge>,
}

impl Exchange {
    pub fn new(head: RequestHead, bridge: Arc<Bridge>) -> (Arc<Self>, ResponseReceiver) {
        let (tx, rx) = response_queue();
        let ex = Arc::new(Exchange {
            head,
            shared: Mutex::new(Shared::default()),
            response: tx,
            wants_more: Notify::new(),
            bridge,
        });
        (ex, rx)
    }

    pub fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding this lock is a bug elsewhere; the data is still consistent enough to finish the request.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loop side: hand one of the app's messages to the connection.
    pub fn emit(self: &Arc<Self>, py: Python<'_>, event: ResponseEvent) {
        self.bridge.send_out(py, self.clone(), event);
    }

    /// I/O side: wake the app if it is waiting on this exchange.
    fn wake_if_waiting(self: &Arc<Self>, shared: &Shared) {
        if shared.someone_waits() {
            self.bridge.push(Event::Wake(self.clone()));
        }
    }

    pub fn push_body(self: &Arc<Self>, chunk: Bytes, last: bool) {
        let mut s = self.lock();
        if !chunk.is_empty() {
            s.http.body.push_back(chunk);
        }
        s.http.body_complete |= last;
        self.wake_if_waiting(&s);
    }

    pub fn mark_disconnected(self: &Arc<Self>) {
        let mut s = self.lock();
        if !s.disconnected {
            s.disconnected = true;
            self.wake_if_waiting(&s);
        }
    }

    pub fn mark_response_complete(self: &Arc<Self>) {
        let mut s = self.lock();
        s.http.response_complete = true;
        self.wake_if_waiting(&s);
        // A body reader still waiting for the app to ask for more must give up now.
        self.wants_more.notify_one();
    }

    /// I/O side: a WebSocket message for the app.
    pub fn push_ws(self: &Arc<Self>, msg: WsMessage) {
        let mut s = self.lock();
        s.ws.inbox.push_back(msg);
        self.wake_if_waiting(&s);
    }

    pub fn ws_closed(self: &Arc<Self>, code: u16, reason: String) {
        let mut s = self.lock();
        if s.ws.closed.is_none() {
            s.ws.closed = Some((code, reason));
        }
        s.disconnected = true;
        self.wake_if_waiting(&s);
    }

    /// I/O side: the socket took `n` bytes of the response.
    pub fn sent(self: &Arc<Self>, n: usize) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(n);
        if s.send_waiter.is_some() && s.in_flight <= SEND_LOW_WATER {
            self.bridge.push(Event::Wake(self.clone()));
        }
    }
}
