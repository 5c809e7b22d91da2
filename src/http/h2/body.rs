//! Bodies on an HTTP/2 stream. In: DATA frames to the app one chunk per ask, the
//! window given back only as the app takes them, so a client uploading faster than
//! the app reads is held by flow control and never fills memory. Out: the pipeline's
//! `ResponseBody`, sent as the client's window allows, so a slow reader pauses the
//! app's `send()` exactly as a slow HTTP/1.1 socket does.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Response, header};
use http_body::Body as _;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use crate::bridge::exchange::BodySink;
use crate::codec::h1::encode::{self, BodyFraming};
use crate::http::body::ResponseBody;
use crate::http::limits::{BodyCounter, TooLarge};

/// Request body bytes joined into one `http.request` message when they are already
/// here: a client's 16 KiB DATA frames reach the app in few messages.
const GATHER: usize = 64 * 1024;

/// How a request body's feeding ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fed {
    /// The app has all of it.
    Done,
    /// The app answered and will not read the rest.
    Unwanted,
    /// The client reset the stream or the connection went.
    Gone,
    /// Nothing came for --timeout-io.
    Stalled,
    /// The body passed --limit-request-body (one that declared no length; a declared
    /// one was refused before): the app was told the client is gone.
    TooLarge(TooLarge),
}

/// Moves the request body into the app: the first chunk at once, each next one when
/// the app asks for more, none past `limit`.
pub(super) async fn feed(mut recv: h2::RecvStream, sink: &BodySink, body_empty: bool, limit: Option<u64>, io_timeout: Duration) -> Fed {
    if body_empty {
        return Fed::Done;
    }
    let mut counter = BodyCounter::new(limit);
    let mut first = true;
    loop {
        if !first && !sink.demand().await {
            return Fed::Unwanted;
        }
        first = false;
        let chunk = match tokio::time::timeout(io_timeout, recv.data()).await {
            Err(_) => {
                sink.client_gone();
                return Fed::Stalled;
            }
            Ok(None) => {
                // Trailers, if any, are dropped: ASGI has no request trailers.
                sink.push(Bytes::new(), true);
                return Fed::Done;
            }
            Ok(Some(Err(_))) => {
                sink.client_gone();
                return Fed::Gone;
            }
            Ok(Some(Ok(chunk))) => gather(&mut recv, chunk),
        };
        if let Err(too_large) = counter.take(chunk.len()) {
            // What the client still sends is dropped by the h2 crate with `recv`.
            sink.client_gone();
            return Fed::TooLarge(too_large);
        }
        let last = recv.is_end_stream();
        sink.push(chunk, last);
        if last {
            return Fed::Done;
        }
    }
}

/// `first`, with what else the stream already holds, up to GATHER; the window of
/// what was taken is given back.
fn gather(recv: &mut h2::RecvStream, first: Bytes) -> Bytes {
    let mut taken = first.len();
    let mut joined: Option<BytesMut> = None;
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    while taken < GATHER {
        match recv.poll_data(&mut cx) {
            Poll::Ready(Some(Ok(more))) => {
                taken += more.len();
                joined.get_or_insert_with(|| BytesMut::from(&first[..])).extend_from_slice(&more);
            }
            _ => break,
        }
    }
    let _ = recv.flow_control().release_capacity(taken);
    joined.map_or(first, BytesMut::freeze)
}

/// Sends a response on its stream. False if the stream ended before the response did
/// (the client reset it, the connection went, the body broke off, or the client took
/// nothing for --timeout-io).
pub(super) async fn send(mut respond: h2::server::SendResponse<Bytes>, response: Response<ResponseBody>, is_head: bool, date: bool, io_timeout: Duration) -> bool {
    let (mut parts, mut body) = response.into_parts();
    let framing = encode::framing(parts.status, is_head, http::Version::HTTP_2, body.declared_length(), body.size_hint().exact());
    set_framing_headers(&mut parts.headers, framing, date);
    let bodiless = matches!(framing, BodyFraming::Empty | BodyFraming::Announced(_));
    let head = Response::from_parts(parts, ());
    let mut stream = match respond.send_response(head, bodiless) {
        Ok(stream) => stream,
        Err(e) => {
            crate::debug!("HTTP/2 response not sent: {e}");
            return false;
        }
    };
    if bodiless {
        // Nothing goes on the wire (HEAD, 204, 304); the app's body is taken and dropped.
        body.discard(io_timeout).await;
        return true;
    }
    loop {
        // Waiting for the app's next chunk, a reset by the client ends the wait.
        let frame = std::future::poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(Some(frame)),
            Poll::Pending => stream.poll_reset(cx).map(|_| None),
        })
        .await;
        let frame = match frame {
            None => return false,
            Some(None) => return stream.send_data(Bytes::new(), true).is_ok(),
            Some(Some(Err(_))) => {
                // The app failed mid-stream: the client must not take this as complete.
                stream.send_reset(h2::Reason::INTERNAL_ERROR);
                return false;
            }
            Some(Some(Ok(frame))) => frame,
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                if !send_data(&mut stream, data, body.is_end_stream(), io_timeout).await {
                    return false;
                }
                if body.is_end_stream() {
                    return true;
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            return stream.send_trailers(trailers).is_ok();
        }
    }
}

/// Content-Length as HTTP/1.1 would announce it (the app's, else the body's exact
/// size), never headers HTTP/2 forbids, and Date.
fn set_framing_headers(headers: &mut HeaderMap, framing: BodyFraming, date: bool) {
    let forbidden: Vec<_> = headers.keys().filter(|name| super::stream::connection_specific(name)).cloned().collect();
    for name in forbidden {
        headers.remove(name);
    }
    match framing {
        BodyFraming::Length(n) | BodyFraming::Announced(n) => {
            headers.insert(header::CONTENT_LENGTH, n.into());
        }
        BodyFraming::Empty | BodyFraming::Chunked | BodyFraming::UntilClose => {
            headers.remove(header::CONTENT_LENGTH);
        }
    }
    if date && !headers.contains_key(header::DATE) {
        headers.insert(header::DATE, encode::date_value());
    }
}

/// Sends `data` as the client's window opens. A client that opens none for
/// --timeout-io gets its stream reset (CANCEL): it would hold the app's response forever.
async fn send_data(stream: &mut h2::SendStream<Bytes>, mut data: Bytes, end: bool, io_timeout: Duration) -> bool {
    if data.is_empty() {
        return !end || stream.send_data(data, true).is_ok();
    }
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let granted = std::future::poll_fn(|cx| stream.poll_capacity(cx));
        let n = match tokio::time::timeout(io_timeout, granted).await {
            Ok(Some(Ok(n))) => n,
            Ok(_) => return false,
            Err(_) => {
                crate::debug!("HTTP/2 stream {:?}: the client took nothing for {} s; resetting it", stream.stream_id(), io_timeout.as_secs());
                stream.send_reset(h2::Reason::CANCEL);
                return false;
            }
        };
        if n == 0 {
            continue;
        }
        let chunk = data.split_to(n.min(data.len()));
        if stream.send_data(chunk, end && data.is_empty()).is_err() {
            return false;
        }
    }
    true
}
