//! One HTTP/2 stream through the request pipeline: its header block made into the
//! request HTTP/1.1 would have produced, `service::dispatch`, then the body in and
//! the response out, each on the stream's own flow control.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Version, header};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use super::body::{self, Fed};
use super::conn::ConnStats;
use super::tunnel::Tunnel;
use crate::bridge::exchange::BodySink;
use crate::codec::h1::parse::refuse_method;
use crate::codec::websocket::handshake;
use crate::http::ctx::{ConnInfo, ServerCtx};
use crate::http::service::{self, Dispatched, Reply};

type Respond = h2::server::SendResponse<Bytes>;

pub(super) async fn serve(request: Request<h2::RecvStream>, mut respond: Respond, ctx: Arc<ServerCtx>, info: Arc<ConnInfo>, stats: Arc<ConnStats>) {
    // Reset already (the client sent RST_STREAM right behind HEADERS, as a rapid-reset
    // attack does): the app never hears of it.
    if poll_reset_now(&mut respond).is_ready() {
        stats.reset_by_client();
        return;
    }
    let io_timeout = Duration::from_secs(ctx.config.http.io_timeout);
    let date = ctx.config.http.date_header;
    let (mut parts, recv) = request.into_parts();
    if parts.method == Method::CONNECT && parts.extensions.get::<h2::ext::Protocol>().is_some() {
        return websocket(parts, recv, respond, ctx, info).await;
    }
    if let Err(refusal) = refuse_method(&parts.method) {
        crate::http::bans::strike_refusal(&ctx, info.peer, refusal.status);
        let response = service::refused(refusal, false, &ctx, parts.headers.get(header::ACCEPT), info.tls.is_some());
        body::send(respond, response, false, date, io_timeout).await;
        return;
    }
    as_http1_would_see_it(&mut parts);
    let is_head = parts.method == Method::HEAD;
    let body_empty = recv.is_end_stream();
    let mut call = match service::dispatch(Request::from_parts(parts, ()), body_empty, &ctx, &info) {
        Dispatched::Answer(response) => {
            body::send(respond, response, is_head, date, io_timeout).await;
            return;
        }
        Dispatched::App(call) => call,
        Dispatched::Close => return respond.send_reset(h2::Reason::CANCEL),
    };

    // Until the app answers: feed it the body, and notice a reset (the app is told
    // when `call` drops).
    let sink = BodySink::new(call.ex.clone());
    let mut feed = pin!(body::feed(recv, &sink, body_empty, call.body_limit, io_timeout));
    let mut fed = body_empty.then_some(Fed::Done);
    let reply = loop {
        tokio::select! {
            biased;
            reply = call.reply() => break reply,
            outcome = &mut feed, if fed.is_none() => {
                if outcome == Fed::Stalled {
                    // The client stopped sending mid-body for --timeout-io: the app was told.
                    respond.send_reset(h2::Reason::CANCEL);
                    return;
                }
                if let Fed::TooLarge(too_large) = outcome {
                    // Past --limit-request-body before the app answered: a 413 in its place.
                    // Once it is sent, the h2 crate resets the rest of the upload (NO_ERROR).
                    let response = call.too_large(too_large);
                    drop(call);
                    body::send(respond, response, is_head, date, io_timeout).await;
                    return;
                }
                fed = Some(outcome);
            }
            _ = std::future::poll_fn(|cx| respond.poll_reset(cx)) => {
                stats.reset_by_client();
                return;
            }
        }
    };
    drop(call); // releases the --limit-concurrency slot, as the response starts
    let response = match reply {
        Reply::Response(response) => response,
        // An HTTP/1.1-style upgrade cannot come over HTTP/2 (the h2 crate refuses the
        // Upgrade header); WebSockets come by extended CONNECT, in `websocket`.
        Reply::Upgrade(..) => return respond.send_reset(h2::Reason::INTERNAL_ERROR),
    };
    // The app may go on reading the body while its response streams out; once the
    // response is complete nobody will (the rest is refused with RST_STREAM NO_ERROR).
    let mut send = pin!(body::send(respond, response, is_head, date, io_timeout));
    let sent = loop {
        tokio::select! {
            sent = &mut send => break sent,
            outcome = &mut feed, if fed.is_none() => fed = Some(outcome),
        }
    };
    if !sent {
        stats.reset_by_client();
    }
}

/// An extended CONNECT (RFC 8441): a WebSocket when `:protocol` says so, opened with a
/// 200 once the app accepts, then the session runs on the stream as on a socket.
async fn websocket(mut parts: http::request::Parts, recv: h2::RecvStream, mut respond: Respond, ctx: Arc<ServerCtx>, info: Arc<ConnInfo>) {
    let io_timeout = Duration::from_secs(ctx.config.http.io_timeout);
    let date = ctx.config.http.date_header;
    let protocol = parts.extensions.remove::<h2::ext::Protocol>().map(|p| p.as_str().to_ascii_lowercase());
    if protocol.as_deref() != Some("websocket") {
        let response = service::plain(StatusCode::NOT_IMPLEMENTED, "Not Implemented: the only protocol over extended CONNECT is websocket", false, None);
        body::send(respond, response, false, date, io_timeout).await;
        return;
    }
    let detected = handshake::detect_extended_connect(&parts.headers, ctx.config.ws.per_message_deflate);
    parts.extensions.insert(handshake::Detected(detected));
    as_http1_would_see_it(&mut parts);
    let mut call = match service::dispatch(Request::from_parts(parts, ()), true, &ctx, &info) {
        Dispatched::Answer(response) => {
            body::send(respond, response, false, date, io_timeout).await;
            return;
        }
        Dispatched::App(call) => call,
        Dispatched::Close => return respond.send_reset(h2::Reason::CANCEL),
    };
    let reply = tokio::select! {
        reply = call.reply() => reply,
        _ = std::future::poll_fn(|cx| respond.poll_reset(cx)) => return,
    };
    drop(call);
    let (response, start) = match reply {
        // The app denied the WebSocket with an HTTP response.
        Reply::Response(response) => {
            body::send(respond, response, false, date, io_timeout).await;
            return;
        }
        Reply::Upgrade(response, start) => (response, start),
    };
    let (mut head, opened) = response.into_parts();
    head.status = StatusCode::OK;
    for name in [header::UPGRADE, header::CONNECTION, header::SEC_WEBSOCKET_ACCEPT] {
        head.headers.remove(name);
    }
    if date {
        head.headers.insert(header::DATE, crate::codec::h1::encode::date_value());
    }
    let send = match respond.send_response(http::Response::from_parts(head, ()), false) {
        Ok(send) => send,
        Err(_) => return,
    };
    drop(opened.logged_as(200));
    start.run(Tunnel::new(recv, send), bytes::BytesMut::new()).await;
}

fn poll_reset_now(respond: &mut Respond) -> Poll<()> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    respond.poll_reset(&mut cx).map(|_| ())
}

/// The request as the pipeline knows it from HTTP/1.1: `:authority` as the Host
/// header (when the client sent none; RFC 9113 8.3.1), and the cookie crumbs a
/// client may send as separate fields joined into one header (RFC 9113 8.2.3), since
/// frameworks read only the first `cookie` header.
fn as_http1_would_see_it(parts: &mut http::request::Parts) {
    debug_assert_eq!(parts.version, Version::HTTP_2);
    if !parts.headers.contains_key(header::HOST) {
        if let Some(value) = parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
            parts.headers.insert(header::HOST, value);
        }
    }
    let mut cookies = parts.headers.get_all(header::COOKIE).iter();
    if let (Some(first), Some(_)) = (cookies.next(), cookies.next()) {
        let mut joined = first.as_bytes().to_vec();
        for crumb in parts.headers.get_all(header::COOKIE).iter().skip(1) {
            joined.extend_from_slice(b"; ");
            joined.extend_from_slice(crumb.as_bytes());
        }
        if let Ok(value) = HeaderValue::from_bytes(&joined) {
            parts.headers.insert(header::COOKIE, value);
        }
    }
}

/// Whether a response header must not travel over HTTP/2 (RFC 9113 8.2.2): the h2
/// crate refuses a response carrying one, so they are dropped, as nginx does.
pub(super) fn connection_specific(name: &http::HeaderName) -> bool {
    matches!(*name, header::CONNECTION | header::TRANSFER_ENCODING | header::UPGRADE | header::TE) || name.as_str() == "keep-alive" || name.as_str() == "proxy-connection"
}
