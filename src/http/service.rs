//! One request through the pipeline: framing checks, limits, proxy headers,
//! then the app, whose answer comes back as a response hyper can write.

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::oneshot;

use super::access_log::Entry;
use super::body::{Kind, ResponseBody};
use super::server::{ConnInfo, ServerCtx};
use super::websocket::{self, handshake::{self, Upgrade}};
use crate::worker::bridge::Event;
use crate::worker::exchange::{Body, Exchange, RequestHead, ResponseEvent, Scheme};

pub async fn handle(mut req: Request<Incoming>, ctx: Arc<ServerCtx>, conn: ConnInfo) -> Result<Response<ResponseBody>, Infallible> {
    ctx.served.fetch_add(1, Ordering::Relaxed);
    let upgrade = match ctx.config.ws.enabled {
        true => handshake::detect(req.method(), req.headers(), ctx.config.ws.per_message_deflate),
        false => None,
    };
    let on_upgrade = matches!(upgrade, Some(Ok(_))).then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let entry = ctx.access_log.as_ref().map(|_| Entry {
        remote: conn.peer,
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
        started: std::time::Instant::now(),
    });
    let log = |entry: Option<Entry>| entry.map(|e| (ctx.clone(), e));

    if let Some(reason) = bad_framing(&parts.headers) {
        return Ok(plain(StatusCode::BAD_REQUEST, reason, true, log(entry)));
    }
    let mut client = conn.peer;
    let mut scheme = Scheme::Http;
    super::proxy::apply(&ctx.config.proxy, conn.peer, &parts.headers, &mut client, &mut scheme);
    let mut entry = entry;
    if let Some(e) = entry.as_mut() {
        e.remote = client.or(conn.peer);
    }
    if let Some(reply) = ctx.static_files.as_ref().and_then(|files| files.serve(&parts.method, &parts.uri, &parts.headers)) {
        let (head, kind) = reply.into_parts();
        let status = head.status.as_u16();
        let mut response = Response::from_parts(head, ResponseBody::new(kind, status, None, log(entry)));
        add_extra_headers(&ctx, response.headers_mut());
        return Ok(response);
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
            return Ok(r);
        }
    };
    let _active = match Active::enter(&ctx) {
        Some(a) => a,
        None => return Ok(plain(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable: the server is at its concurrency limit", true, log(entry))),
    };

    let expects_continue = parts.headers.get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let head = RequestHead { method: parts.method, uri: parts.uri, version: parts.version, headers: parts.headers, client, server: conn.local, scheme, websocket };
    let (ex, mut responses) = Exchange::new(head, ctx.bridge.clone());
    let guard = DisconnectGuard(Some(ex.clone()));

    let (body_failed_tx, mut body_failed) = oneshot::channel();
    if http_body::Body::is_end_stream(&body) {
        ex.push_body(Bytes::new(), true);
    } else {
        // Without `Expect: 100-continue` the body is usually already here: read its first chunk now.
        tokio::spawn(read_body(body, ex.clone(), !expects_continue, body_failed_tx));
    }
    ctx.bridge.push(Event::Request(ex.clone()));

    let first = tokio::select! {
        first = responses.recv() => first,
        Ok(()) = &mut body_failed => {
            return Ok(plain(StatusCode::BAD_REQUEST, "Bad Request: malformed request body", true, log(entry)));
        }
    };
    let (status, headers, body) = match first {
        Some(ResponseEvent::Start { status, headers, body }) => (status, headers, body),
        Some(ResponseEvent::Accept { subprotocol, headers }) if on_upgrade.is_some() => {
            guard.disarm();
            let upgrade = ex.head.websocket.clone().expect("accept only comes for websockets");
            let response = switching_protocols(&upgrade, subprotocol, headers, log(entry));
            let (on_upgrade, ws, stop) = (on_upgrade.expect("checked"), ctx.config.ws.clone(), ctx.stop.clone());
            let open = ctx.open.enter();
            tokio::spawn(async move {
                let _open = open;
                match on_upgrade.await {
                    Ok(io) => websocket::session::run(hyper_util::rt::TokioIo::new(io), ex, responses, ws, upgrade.deflate, stop).await,
                    Err(e) => {
                        crate::debug!("WebSocket upgrade failed: {e}");
                        ex.ws_closed(1006, String::new());
                    }
                }
            });
            return Ok(response);
        }
        // The app side dropped its end without a word: only possible if the worker is stopping.
        _ => return Ok(plain(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable", true, log(entry))),
    };
    guard.disarm();

    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = status;
    let map = response.headers_mut();
    for (name, value) in headers {
        map.append(name, value);
    }
    add_extra_headers(&ctx, map);
    let kind = match body {
        Body::Full(bytes) => Kind::Full(Some(bytes)),
        Body::Streaming => Kind::Stream(responses),
        Body::File(path) => match open_file(&path) {
            Ok((file, len)) => {
                if !map.contains_key(header::CONTENT_LENGTH) {
                    map.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                }
                Kind::File { file, offset: 0, remaining: len }
            }
            Err(e) => {
                crate::error!("http.response.pathsend: cannot send {}: {e}", path.display());
                return Ok(plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error", false, log(entry)));
            }
        },
    };
    *response.body_mut() = ResponseBody::new(kind, status.as_u16(), Some(ex), log(entry));
    Ok(response)
}

/// `server:` and --header values, unless the response set them itself.
fn add_extra_headers(ctx: &ServerCtx, map: &mut http::HeaderMap) {
    for (name, value) in &ctx.extra_headers {
        if !map.contains_key(name) {
            map.insert(name.clone(), value.clone());
        }
    }
}

/// The 101 that completes a WebSocket handshake the app accepted.
fn switching_protocols(upgrade: &Upgrade, subprotocol: Option<String>, extra: Vec<(http::HeaderName, HeaderValue)>, log: Option<(Arc<ServerCtx>, Entry)>) -> Response<ResponseBody> {
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

/// Request framing hyper lets through. (Content-Length together with
/// Transfer-Encoding never gets here: hyper drops the Content-Length, reads the
/// body as chunked and closes the connection after the response, as RFC 9112
/// section 6.1 allows, so no second request can be smuggled behind it.)
fn bad_framing(headers: &http::HeaderMap) -> Option<&'static str> {
    if headers.get_all(header::TRANSFER_ENCODING).iter().count() > 1 {
        return Some("Bad Request: Transfer-Encoding given more than once");
    }
    None
}

/// A response ferrogate writes itself, never reaching the app.
pub fn plain(status: StatusCode, message: &str, close: bool, log: Option<(Arc<ServerCtx>, Entry)>) -> Response<ResponseBody> {
    let body = Bytes::from(format!("{message}\n"));
    let mut response = Response::new(ResponseBody::new(Kind::Full(Some(body)), status.as_u16(), None, log));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Feeds the request body to the app one chunk at a time, reading the next
/// only once the app has taken the last: an upload never piles up in memory.
async fn read_body(mut body: Incoming, ex: Arc<Exchange>, eager: bool, failed: oneshot::Sender<()>) {
    // Once the response is complete the app will never read the rest: dropping
    // the body lets hyper discard it (or close the connection) instead of waiting.
    let answered = |ex: &Exchange| ex.lock().response_complete;
    if !eager {
        ex.wants_more.notified().await;
    }
    loop {
        if answered(&ex) {
            return;
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else { continue };
                let last = http_body::Body::is_end_stream(&body);
                ex.push_body(data, last);
                if last {
                    return;
                }
                ex.wants_more.notified().await;
            }
            Some(Err(e)) => {
                crate::debug!("request body failed: {e}");
                let _ = failed.send(());
                ex.mark_disconnected();
                return;
            }
            None => {
                ex.push_body(Bytes::new(), true);
                return;
            }
        }
    }
}

/// Tells the app the client is gone if hyper drops the request before a response started.
struct DisconnectGuard(Option<Arc<Exchange>>);

impl DisconnectGuard {
    fn disarm(mut self) {
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
struct Active<'a>(&'a ServerCtx);

impl<'a> Active<'a> {
    fn enter(ctx: &'a ServerCtx) -> Option<Self> {
        let now = ctx.active.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = Active(ctx);
        match ctx.config.http.limit_concurrency {
            Some(limit) if now > limit => None,
            _ => Some(slot),
        }
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

