//! One request through the pipeline: proxy headers, static files, the
//! WebSocket handshake, limits, then the app, whose answer comes back as a
//! response for the connection to write.

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::io::{AsyncRead, AsyncWrite};
use crate::bridge::responses::ResponseReceiver;

use super::access_log::{Entry, LogLine};
use super::body::{Kind, ResponseBody};
use super::ctx::{ConnInfo, ServerCtx};
use super::error_page::{self, FrontError};
use super::limits::{self, TooLarge};
use super::to_https;
use super::websocket;
use crate::codec::headers as scan;
use crate::codec::websocket::handshake::{self, Upgrade};
use crate::bridge::Event;
use crate::bridge::exchange::{Body, Exchange, RequestHead, ResponseEvent, Scheme};

/// What the pipeline made of a request head.
pub enum Dispatched {
    /// Answered without the app: an error, a static file.
    Answer(Response<ResponseBody>),
    /// The app has it; the connection feeds it the body and awaits its reply.
    App(AppCall),
    /// No answer at all (--unknown-host close, nginx's 444): HTTP/1.1 closes the
    /// connection, HTTP/2 resets the stream.
    Close,
}

/// A request the app is handling.
pub struct AppCall {
    pub ex: Arc<Exchange>,
    /// Taken by `reply`.
    responses: Option<ResponseReceiver>,
    ctx: Arc<ServerCtx>,
    entry: Option<Box<Entry>>,
    guard: DisconnectGuard,
    _active: Active,
    /// --limit-request-body for this request's path, for the protocol to count a
    /// body that declared no length against (None: unlimited, or no body).
    pub body_limit: Option<u64>,
}

/// The app's first answer.
pub enum Reply {
    Response(Response<ResponseBody>),
    /// A 101 to write, then the socket goes to the WebSocket session.
    Upgrade(Response<ResponseBody>, WebSocketStart),
}

impl Reply {
    /// The response head to write, and the WebSocket session to start after it.
    pub fn into_parts(self) -> (Response<ResponseBody>, Option<WebSocketStart>) {
        match self {
            Reply::Response(response) => (response, None),
            Reply::Upgrade(response, start) => (response, Some(start)),
        }
    }
}

/// What the WebSocket session needs once the 101 is on the wire.
pub struct WebSocketStart {
    ex: Arc<Exchange>,
    responses: ResponseReceiver,
    upgrade: Upgrade,
    ctx: Arc<ServerCtx>,
}

impl WebSocketStart {
    pub async fn run<IO: AsyncRead + AsyncWrite + Unpin>(self, io: IO, leftover: bytes::BytesMut) {
        let WebSocketStart { ex, responses, upgrade, ctx } = self;
        websocket::session::run(io, leftover, ex, responses, ctx.config.ws.clone(), upgrade.deflate, ctx.stop.clone()).await;
    }
}

/// Runs the pipeline stages on a parsed head: framing, proxy headers, static
/// files, the WebSocket handshake, limits; what is left goes to the app.
/// `body_empty`: the request has no body at all.
pub fn dispatch(req: Request<()>, body_empty: bool, ctx: &Arc<ServerCtx>, conn: &ConnInfo) -> Dispatched {
    // Kept for rendering an answer of the front (a refcount, not a copy).
    let accept = req.headers().get(header::ACCEPT).cloned();
    let mut client = conn.peer;
    let mut dispatched = stages(req, body_empty, ctx, conn, &mut client);
    if let Dispatched::Answer(response) = &mut dispatched {
        // The front's own answers count toward bans here; the app's in `AppCall::reply`.
        ctx.bans.strike(client, response.status().as_u16(), true);
        finish_answer(response, ctx, accept.as_ref(), conn.tls.is_some());
    }
    dispatched
}

/// The stages themselves; their answers are finished by `dispatch`. `resolved` gets the
/// client address once proxy headers are read.
fn stages(mut req: Request<()>, body_empty: bool, ctx: &Arc<ServerCtx>, conn: &ConnInfo, resolved: &mut Option<std::net::SocketAddr>) -> Dispatched {
    ctx.served.fetch_add(1, Ordering::Relaxed);
    let upgrade = match req.extensions_mut().remove::<handshake::Detected>() {
        Some(handshake::Detected(detected)) => Some(detected),
        None if ctx.config.ws.enabled => handshake::detect(req.method(), req.headers(), ctx.config.ws.per_message_deflate),
        None => None,
    };
    let (mut parts, ()) = req.into_parts();
    let mut entry = ctx.access_log.as_ref().map(|_| Box::new(Entry {
        remote: conn.peer,
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
        started: std::time::Instant::now(),
    }));
    let log = |entry: Option<Box<Entry>>| entry.map(|e| (ctx.clone(), e));

    let mut client = conn.peer;
    let mut scheme = conn.scheme;
    let forwarded = super::proxy::apply(&ctx.config.proxy, conn.peer, &mut parts, &mut client, &mut scheme);
    let received_order = parts.extensions.remove::<crate::codec::h1::ReceivedOrder>();
    if let Some(e) = entry.as_mut() {
        e.remote = client.or(conn.peer);
    }
    *resolved = client;
    if super::bans::refuses(ctx, client) {
        return Dispatched::Answer(super::bans::forbidden(conn.peer, client, log(entry)));
    }
    if let Some(refused) = super::host::stage(ctx, &parts, scheme, conn, &mut entry) {
        return refused;
    }
    let secure = conn.tls.is_some();
    if let Some(tls) = ctx.config.tls.as_ref().filter(|_| !secure && conn.scheme == Scheme::Http) {
        if let Some(answer) = from_plain_listener(tls, &parts.uri, &parts.headers) {
            return Dispatched::Answer(answer_to_https(answer, &parts.method, log(entry)));
        }
    }
    let body_limit = if body_empty {
        None
    } else {
        match limits::admit(&ctx.config.front.body, parts.uri.path(), &parts.headers) {
            Ok(limit) => limit,
            Err(too_large) => return Dispatched::Answer(plain(StatusCode::PAYLOAD_TOO_LARGE, &too_large.message(), true, log(entry))),
        }
    };
    if let Some(reply) = ctx.static_files.as_ref().and_then(|files| files.serve(&parts.method, &parts.uri, &parts.headers, ctx.compress.as_ref())) {
        let (head, kind) = reply.into_parts();
        let status = head.status.as_u16();
        let declared = scan::content_length(&head.headers);
        return Dispatched::Answer(Response::from_parts(head, ResponseBody::new(kind, status, None, log(entry)).declaring(declared)));
    }
    let websocket = match upgrade {
        None => None,
        Some(Ok(up)) => Some(up),
        Some(Err(reason)) => {
            let version_mismatch = reason.starts_with("Upgrade Required");
            let status = if version_mismatch { StatusCode::UPGRADE_REQUIRED } else { StatusCode::BAD_REQUEST };
            let mut r = plain(status, reason, true, log(entry));
            if version_mismatch {
                r.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            }
            return Dispatched::Answer(r);
        }
    };
    if let Some(retry_after) = ctx.rate.check(client, parts.uri.path()) {
        return Dispatched::Answer(super::rate_limit::too_many(retry_after, log(entry)));
    }
    let Some(active) = Active::enter(ctx) else {
        return Dispatched::Answer(plain(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable: the server is at its concurrency limit", true, log(entry)));
    };

    let server = forwarded.port.map_or(conn.local, |port| conn.local.map(|local| std::net::SocketAddr::new(local.ip(), port)));
    let head = RequestHead { method: parts.method, uri: parts.uri, version: parts.version, headers: parts.headers, received_order, client, server, scheme, tls: conn.tls.clone(), prefix: forwarded.prefix, websocket };
    let (ex, responses) = Exchange::new(head, ctx.bridge.clone());
    if body_empty {
        ex.push_body(Bytes::new(), true);
    }
    ctx.bridge.push(Event::Request(ex.clone()));
    let guard = DisconnectGuard(Some(ex.clone()));
    Dispatched::App(AppCall { ex, responses: Some(responses), ctx: ctx.clone(), entry, guard, _active: active, body_limit })
}

impl AppCall {
    /// Waits for the app's response head (or its WebSocket accept). Cancel-safe
    /// until it returns; call it once.
    pub async fn reply(&mut self) -> Reply {
        let ctx = self.ctx.clone();
        let log = |entry: Option<Box<Entry>>| entry.map(|e| (ctx.clone(), e));
        let Some(responses) = self.responses.as_mut() else {
            return Reply::Response(self.front_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error", true));
        };
        let (status, headers, body) = match responses.recv().await {
            Some(ResponseEvent::Start { status, headers, body }) => (status, headers, body),
            Some(ResponseEvent::Accept { subprotocol, headers }) if self.ex.head.websocket.is_some() => {
                self.guard.disarm();
                let upgrade = self.ex.head.websocket.clone().expect("checked");
                let response = switching_protocols(&upgrade, subprotocol, headers, log(self.entry.take()));
                let responses = self.responses.take().expect("present");
                let start = WebSocketStart { ex: self.ex.clone(), responses, upgrade, ctx: self.ctx.clone() };
                return Reply::Upgrade(response, start);
            }
            // The app side dropped its end without a word: only possible if the worker is stopping.
            _ => return Reply::Response(self.front_error(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable", true)),
        };
        self.guard.disarm();
        ctx.bans.strike(self.ex.head.client, status.as_u16(), false);

        let mut response = Response::new(ResponseBody::empty());
        *response.status_mut() = status;
        let map = response.headers_mut();
        for (name, value) in headers {
            map.append(name, value);
        }
        add_extra_headers(&ctx, map, self.ex.head.tls.is_some());
        let kind = match body {
            Body::Full(bytes) => Kind::Full(Some(bytes)),
            Body::Streaming => Kind::Stream(self.responses.take().expect("present")),
            Body::File(path) => match open_file(&path) {
                Ok((file, len)) => {
                    if !map.contains_key(header::CONTENT_LENGTH) {
                        map.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                    }
                    Kind::File { file, offset: 0, remaining: len }
                }
                Err(e) => {
                    crate::error!("http.response.pathsend: cannot send {}: {e}", path.display());
                    return Reply::Response(self.front_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error", false));
                }
            },
        };
        let kind = match &ctx.compress {
            Some(c) => c.app_response(&self.ex.head.method, &self.ex.head.headers, status, map, kind),
            None => kind,
        };
        let declared = scan::content_length(map);
        *response.body_mut() = ResponseBody::new(kind, status.as_u16(), Some(self.ex.clone()), log(self.entry.take())).declaring(declared);
        Reply::Response(response)
    }

    /// The request body was malformed before the app answered: a 400, logged.
    pub fn bad_body(&mut self) -> Response<ResponseBody> {
        self.front_error(StatusCode::BAD_REQUEST, "Bad Request: malformed request body", true)
    }

    /// The request body passed --limit-request-body before the app answered (the app
    /// was told the client is gone): a 413, logged; the connection closes after it.
    pub fn too_large(&mut self, too_large: TooLarge) -> Response<ResponseBody> {
        self.ex.mark_disconnected();
        self.front_error(StatusCode::PAYLOAD_TOO_LARGE, &too_large.message(), true)
    }

    /// An answer of the front in place of the app's, logged and finished for this request.
    fn front_error(&mut self, status: StatusCode, message: &str, close: bool) -> Response<ResponseBody> {
        let log = self.entry.take().map(|e| (self.ctx.clone(), e));
        self.ctx.bans.strike(self.ex.head.client, status.as_u16(), true);
        let mut response = plain(status, message, close, log);
        finish_answer(&mut response, &self.ctx, self.ex.head.headers.get(header::ACCEPT), self.ex.head.tls.is_some());
        response
    }
}

/// `server:` and --header values, unless the response set them itself; on a TLS
/// connection, Strict-Transport-Security when configured (browsers ignore it over
/// plain HTTP, RFC 6797 8.1).
fn add_extra_headers(ctx: &ServerCtx, map: &mut http::HeaderMap, secure: bool) {
    for (name, value) in &ctx.extra_headers {
        if !scan::has(map, name) {
            map.insert(name.clone(), value.clone());
        }
    }
    if let Some(hsts) = ctx.hsts.as_ref().filter(|_| secure) {
        if !scan::has(map, &header::STRICT_TRANSPORT_SECURITY) {
            map.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
    }
}

/// What a plain listener answers itself when HTTPS is on: ACME HTTP-01 challenges in
/// domain mode, and (unless --no-redirect) a redirect to HTTPS for everything else.
fn from_plain_listener(tls: &crate::config::tls::TlsConfig, uri: &http::Uri, headers: &http::HeaderMap) -> Option<to_https::Answer> {
    if tls.acme {
        if let Some(answer) = to_https::challenge(&tls.state_dir, uri) {
            return Some(answer);
        }
    }
    tls.redirect.then(|| to_https::redirect(uri, headers, tls.https_port))
}

fn answer_to_https(answer: to_https::Answer, method: &http::Method, log: Option<LogLine>) -> Response<ResponseBody> {
    match answer {
        to_https::Answer::Challenge(key_authorization) => {
            let length = key_authorization.len() as u64;
            let body = if *method == http::Method::HEAD { Bytes::new() } else { Bytes::from(key_authorization) };
            let mut response = Response::new(ResponseBody::new(Kind::Full(Some(body)), 200, None, log).declaring(Some(length)));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            response
        }
        to_https::Answer::NoChallenge => plain(StatusCode::NOT_FOUND, "Not Found: no such ACME challenge is pending", false, log),
        to_https::Answer::NoHost => plain(StatusCode::BAD_REQUEST, "Bad Request: this address redirects to HTTPS and needs a Host header to say where", true, log),
        to_https::Answer::Redirect(url) => {
            let mut response = plain(StatusCode::PERMANENT_REDIRECT, "Permanent Redirect: use HTTPS", false, log);
            match HeaderValue::from_str(&url) {
                Ok(v) => {
                    response.headers_mut().insert(header::LOCATION, v);
                    response
                }
                Err(_) => plain(StatusCode::BAD_REQUEST, "Bad Request", true, None),
            }
        }
    }
}

/// The 101 that completes a WebSocket handshake the app accepted.
fn switching_protocols(upgrade: &Upgrade, subprotocol: Option<String>, extra: Vec<(http::HeaderName, HeaderValue)>, log: Option<LogLine>) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::new(Kind::Empty, 101, None, log));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&handshake::accept_key(&upgrade.key)) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = subprotocol.and_then(|p| HeaderValue::from_str(&p).ok()) {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    if let Some(v) = upgrade.deflate.as_ref().and_then(|d| HeaderValue::from_str(&d.response_header()).ok()) {
        h.insert(header::SEC_WEBSOCKET_EXTENSIONS, v);
    }
    for (name, value) in extra {
        h.append(name, value);
    }
    response
}

fn open_file(path: &std::path::Path) -> std::io::Result<(std::fs::File, u64)> {
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok((file, meta.len()))
}

/// The answer to a request refused before the pipeline (codec::h1::parse::Refusal),
/// in either protocol, for a client that accepts `accept`. `close`: HTTP/1.1 closes after it.
pub fn refused(refusal: crate::codec::h1::parse::Refusal, close: bool, ctx: &ServerCtx, accept: Option<&HeaderValue>, secure: bool) -> Response<ResponseBody> {
    let mut response = plain(refusal.status, refusal.reason, close, None);
    if refusal.status == StatusCode::METHOD_NOT_ALLOWED {
        // RFC 9110 15.5.6: a 405 lists what is allowed; these are the methods ferrogate hands to apps.
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"));
    }
    finish_answer(&mut response, ctx, accept, secure);
    response
}

/// The last step of every response ferrogate writes itself: the body of an error as
/// the client accepts it (or its --error-page), then the headers every response gets.
fn finish_answer(response: &mut Response<ResponseBody>, ctx: &ServerCtx, accept: Option<&HeaderValue>, secure: bool) {
    error_page::render(response, &ctx.error_pages, accept);
    add_extra_headers(ctx, response.headers_mut(), secure);
}

/// A response ferrogate writes itself, never reaching the app: `message` as plain
/// text, marked so that an error is rendered for the client's Accept (and replaced
/// by its --error-page) when the pipeline finishes it.
pub fn plain(status: StatusCode, message: &str, close: bool, log: Option<LogLine>) -> Response<ResponseBody> {
    let body = Bytes::from(format!("{message}\n"));
    let mut response = Response::new(ResponseBody::new(Kind::Full(Some(body)), status.as_u16(), None, log));
    *response.status_mut() = status;
    if status.is_client_error() || status.is_server_error() {
        response.extensions_mut().insert(FrontError(message.to_string()));
    }
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Tells the app the client is gone if the connection drops the request before a response started.
struct DisconnectGuard(Option<Arc<Exchange>>);

impl DisconnectGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if let Some(ex) = self.0.take() {
            ex.mark_disconnected();
        }
    }
}

/// A slot in --limit-concurrency, released on drop.
struct Active(Arc<ServerCtx>);

impl Active {
    fn enter(ctx: &Arc<ServerCtx>) -> Option<Self> {
        let now = ctx.active.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = Active(ctx.clone());
        match ctx.config.http.limit_concurrency {
            Some(limit) if now > limit => None,
            _ => Some(slot),
        }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}
