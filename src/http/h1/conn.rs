//! One HTTP/1.1 connection, from its first byte to its close.
//!
//! Between requests a connection holds no buffer at all: it waits for the
//! socket to become readable, and only then takes a read buffer. Everything a
//! request needs lives in a box that is freed when its response is written.
//! That is what keeps an idle keep-alive connection to a few hundred bytes.

use bytes::{Bytes, BytesMut};
use http::{Method, Response, StatusCode, Version, header};
use http_body::Body as _;
use std::io::IoSlice;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::codec::h1::decode::{Decoded, Decoder};
use crate::codec::h1::encode::{self, BodyFraming};
use crate::codec::h1::parse::{self, Framing, Head, Limits, Refusal};
use crate::http::body::ResponseBody;
use crate::bridge::stop::{StopSignal, stopped};
use crate::http::ctx::{ConnInfo, ServerCtx};
use crate::http::service::{self, Dispatched, Reply};
use crate::bridge::exchange::Exchange;

/// A socket a connection can run on.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static {}

impl Transport for tokio::net::TcpStream {}
impl Transport for tokio::net::UnixStream {}

/// First read for a request head; grows up to --max-header-size.
const HEAD_READ: usize = 4096;
/// Reads while a request body streams in.
const BODY_READ: usize = 64 * 1024;
/// Bytes read ahead (pipelined requests) while a response is in progress.
const READ_AHEAD: usize = 64 * 1024;
/// An unread request body up to this size is read and dropped to keep the connection.
const DRAIN_LIMIT: u64 = 256 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);
/// How long a refused request's connection reads and drops input before closing,
/// so the client reads our error instead of a reset.
const LINGER: Duration = Duration::from_secs(1);
/// A connection accepted just before a stop gets this long for its first request,
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(2);
/// and a kept-alive one this long for a request the client may already have sent.
const NEXT_REQUEST_GRACE: Duration = Duration::from_millis(250);

/// Serves one connection until it closes. Everything but the wait for the
/// next head is boxed, so the task an idle connection keeps stays small.
pub async fn serve<IO: Transport>(io: IO, ctx: Arc<ServerCtx>, info: ConnInfo) {
    let stop = Some(ctx.stop.clone());
    let mut conn = Conn { io, buf: BytesMut::new(), ctx, info, served: 0, stop };
    loop {
        let head = match conn.next_head().await {
            Next::Head(head) => head,
            Next::Close => break,
            Next::Refuse(refusal) => {
                Box::pin(conn.refuse(refusal)).await;
                break;
            }
        };
        conn.served += 1;
        // Boxed: its state is large and lives only while this request does.
        match Box::pin(conn.exchange(head)).await {
            After::KeepAlive => continue,
            After::Close => break,
            After::Linger => {
                Box::pin(conn.linger()).await;
                break;
            }
        }
    }
    let _ = conn.io.shutdown().await;
}

/// True once the worker started stopping (or the signal was already taken: None).
fn stop_signalled(stop: &Option<StopSignal>) -> bool {
    stop.as_ref().is_none_or(|s| s.borrow().is_some())
}

enum Next {
    Head(Head),
    Close,
    Refuse(Refusal),
}

enum After {
    KeepAlive,
    Close,
    /// Close, after reading and dropping what the client still sends.
    Linger,
}

struct Conn<IO> {
    io: IO,
    buf: BytesMut,
    ctx: Arc<ServerCtx>,
    info: ConnInfo,
    served: u64,
    /// None once the worker started stopping (the signal was seen).
    stop: Option<StopSignal>,
}

impl<IO: Transport> Conn<IO> {
    fn stopping(&self) -> bool {
        stop_signalled(&self.stop)
    }

    /// Waits for the next request head, for at most --timeout-keep-alive in all.
    async fn next_head(&mut self) -> Next {
        let http = &self.ctx.config.http;
        let limits = Limits { max_head: http.max_header_size, max_headers: http.max_headers };
        let mut deadline = Instant::now() + Duration::from_secs(http.keep_alive_timeout);
        let mut stop_seen = false;
        // A head is only complete once a line ends: re-parse only when a read brought
        // an LF, so a client dripping one byte at a time costs one scan per byte, not a parse.
        let mut new_line = true;
        loop {
            if self.buf.is_empty() {
                // Nothing pending: give the buffer back while the connection idles.
                self.buf = BytesMut::new();
            } else if new_line {
                match parse::parse(&mut self.buf, &limits) {
                    Ok(Some(head)) => return Next::Head(head),
                    Ok(None) => {}
                    Err(refusal) => return Next::Refuse(refusal),
                }
            }
            if !stop_seen && self.stopping() {
                // The worker is stopping and this connection is between requests.
                // Closing at once would reset a request already on the wire (the
                // client would see an error, not a retryable close), so wait a
                // moment for one, or for the rest of one begun: it is served with
                // `connection: close`.
                stop_seen = true;
                let grace = if self.served == 0 { FIRST_REQUEST_GRACE } else { NEXT_REQUEST_GRACE };
                deadline = deadline.min(Instant::now() + grace);
            }
            let stop = async {
                match self.stop.as_mut() {
                    Some(s) => drop(stopped(s).await),
                    None => std::future::pending().await,
                }
            };
            // The read itself races the deadline: a client that stops mid-head,
            // or never starts, is closed on time whatever the socket's readiness.
            let before = self.buf.len();
            let read = read_more(&mut self.io, &mut self.buf);
            tokio::select! {
                read = read => match read {
                    Ok(0) | Err(_) => return Next::Close,
                    Ok(_) => {
                        new_line = self.buf[before..].contains(&b'\n');
                        if !new_line && self.buf.len() > limits.max_head {
                            return Next::Refuse(parse::too_large(&self.buf, &limits));
                        }
                    }
                },
                _ = tokio::time::sleep_until(deadline) => return Next::Close,
                _ = stop => self.stop = None,
            }
        }
    }

    /// One request: dispatch it, feed its body, write its response.
    async fn exchange(&mut self, head: Head) -> After {
        let version = head.request.version();
        let is_head = head.request.method() == Method::HEAD;
        let mut keep_alive = head.keep_alive && !self.stopping();
        let io_timeout = Duration::from_secs(self.ctx.config.http.io_timeout);
        let mut pump = Pump::new(head.framing, head.expect_continue, io_timeout);
        let call = service::dispatch(head.request, head.framing == Framing::Length(0), &self.ctx, self.info);
        let mut call = match call {
            Dispatched::Answer(response) => {
                keep_alive &= !self.stopping();
                let ok = self.write(response, version, is_head, &mut keep_alive).await;
                return self.after_response(ok, keep_alive, &mut pump).await;
            }
            Dispatched::App(call) => call,
        };

        // One split of the socket serves both phases: feeding the body while the
        // app works, and while its response is written.
        let opts = self.write_opts(version, is_head);
        let ex = call.ex.clone();
        let (mut rd, mut wr) = tokio::io::split(&mut self.io);

        // Phase 1: until the app answers, feed it the body and watch for the client leaving.
        let reply = {
            let mut reply = pin!(call.reply());
            loop {
                tokio::select! {
                    biased;
                    r = &mut reply => break Some(r),
                    event = pump.next(&mut rd, &mut self.buf, &ex) => match event {
                        PumpEvent::SendContinue => {
                            let mut continue_line = [IoSlice::new(b"HTTP/1.1 100 Continue\r\n\r\n")];
                            if write_all_vectored(&mut wr, &mut continue_line, io_timeout).await.is_err() {
                                return After::Close;
                            }
                        }
                        // Gone before the answer: dropping `call` tells the app.
                        PumpEvent::Eof => return After::Close,
                        PumpEvent::Malformed => break None,
                    },
                }
            }
        };
        let Some(reply) = reply else {
            call.ex.mark_disconnected();
            let response = call.bad_body();
            let _ = write_response(&mut wr, response, WriteOpts { is_head: false, ..opts }, &mut false).await;
            return After::Linger;
        };
        drop(call); // releases the --limit-concurrency slot, as the response starts
        match reply {
            Reply::Response(response) => {
                // The worker began stopping while the app worked: say so in this head.
                keep_alive &= !stop_signalled(&self.stop);
                // Phase 2: write the response while still feeding the app any body it asks for.
                let ok = {
                    let mut write = pin!(write_response(&mut wr, response, opts, &mut keep_alive));
                    loop {
                        tokio::select! {
                            biased;
                            ok = &mut write => break ok,
                            event = pump.next(&mut rd, &mut self.buf, &ex), if !pump.stalled => match event {
                                // Too late for a 100 once the final response has started.
                                PumpEvent::SendContinue => {}
                                // The client left (dropping the body tells the app), or sent garbage.
                                PumpEvent::Eof | PumpEvent::Malformed => break false,
                            },
                        }
                    }
                };
                drop((rd, wr));
                self.after_response(ok, keep_alive, &mut pump).await
            }
            Reply::Upgrade(response, start) => {
                if !write_response(&mut wr, response, WriteOpts { is_head: false, ..opts }, &mut false).await {
                    return After::Close;
                }
                drop((rd, wr));
                let leftover = std::mem::take(&mut self.buf);
                start.run(&mut self.io, leftover).await;
                After::Close
            }
        }
    }

    async fn write(&mut self, response: Response<ResponseBody>, version: Version, is_head: bool, keep_alive: &mut bool) -> bool {
        let opts = self.write_opts(version, is_head);
        write_response(&mut self.io, response, opts, keep_alive).await
    }

    fn write_opts(&self, version: Version, is_head: bool) -> WriteOpts {
        let http = &self.ctx.config.http;
        WriteOpts { version, is_head, date: http.date_header, io_timeout: Duration::from_secs(http.io_timeout) }
    }

    /// A head we will not serve: say why, then close.
    async fn refuse(&mut self, refusal: Refusal) {
        let mut response = service::plain(refusal.status, refusal.reason, true, None);
        if refusal.status == StatusCode::METHOD_NOT_ALLOWED {
            // RFC 9110 15.5.6: a 405 lists what is allowed; these are the methods ferrogate hands to apps.
            response.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"));
        }
        let _ = self.write_simple(response, Version::HTTP_11).await;
        self.linger().await;
    }

    /// An error answer; the connection closes after it.
    async fn write_simple(&mut self, response: Response<ResponseBody>, version: Version) -> bool {
        let mut keep_alive = false;
        self.write(response, version, false, &mut keep_alive).await
    }

    /// After a response: keep the connection if the request body was read to its
    /// end (or is small enough to read and drop now).
    async fn after_response(&mut self, written: bool, keep_alive: bool, pump: &mut Pump) -> After {
        if !written {
            return After::Close;
        }
        if !pump.decoder.is_done() {
            let small = match pump.decoder {
                Decoder::Length(n) => n <= DRAIN_LIMIT,
                Decoder::Chunked(..) => true,
            };
            if !keep_alive || !small {
                return After::Linger;
            }
            match tokio::time::timeout(DRAIN_TIME, pump.drain(&mut self.io, &mut self.buf)).await {
                Ok(true) => {}
                _ => return After::Linger,
            }
        }
        if keep_alive { After::KeepAlive } else { After::Close }
    }

    /// Stops writing, then reads and drops input for a moment, so that the
    /// client sees our response rather than a connection reset.
    async fn linger(&mut self) {
        let _ = self.io.shutdown().await;
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(LINGER, async {
            let mut total = 0usize;
            while let Ok(n) = self.io.read(&mut sink).await {
                total += n;
                if n == 0 || total > 1024 * 1024 {
                    break;
                }
            }
        })
        .await;
    }
}

/// Reads more of a request head. With nothing buffered the bytes land on the
/// stack first, so that a connection waiting for its next request holds no
/// buffer at all. Cancel-safe: bytes are only ever moved in a completed poll.
async fn read_more<IO: AsyncRead + Unpin>(io: &mut IO, buf: &mut BytesMut) -> std::io::Result<usize> {
    if !buf.is_empty() {
        buf.reserve(buf.len().max(HEAD_READ));
        return io.read_buf(buf).await;
    }
    std::future::poll_fn(|cx| {
        let mut space = [0u8; HEAD_READ];
        let mut read = tokio::io::ReadBuf::new(&mut space);
        std::task::ready!(Pin::new(&mut *io).poll_read(cx, &mut read))?;
        buf.extend_from_slice(read.filled());
        Poll::Ready(Ok(read.filled().len()))
    })
    .await
}

enum PumpEvent {
    /// The app wants the body of an `Expect: 100-continue` request: say so first.
    SendContinue,
    /// The client closed its side.
    Eof,
    /// The body broke its framing.
    Malformed,
}

/// Moves the request body from the socket to the app, one chunk per ask.
struct Pump {
    decoder: Decoder,
    io_timeout: Duration,
    /// The app may take a chunk now (the first one is offered at once, as it is
    /// usually already here, unless the client waits for a 100 Continue).
    may_push: bool,
    continue_pending: bool,
    /// The app has everything, or will never read more.
    body_delivered: bool,
    /// Read-ahead is full: stop reading until the response is written.
    stalled: bool,
}

impl Pump {
    fn new(framing: Framing, expect_continue: bool, io_timeout: Duration) -> Self {
        let empty = framing == Framing::Length(0);
        Pump { decoder: Decoder::new(framing), io_timeout, may_push: !expect_continue, continue_pending: expect_continue && !empty, body_delivered: empty, stalled: false }
    }

    /// Runs until something needs the connection's attention. Cancel-safe:
    /// bytes read stay in `buf`, and a chunk is pushed in the same step it is decoded.
    async fn next<R: AsyncRead + Unpin>(&mut self, rd: &mut R, buf: &mut BytesMut, ex: &Arc<Exchange>) -> PumpEvent {
        loop {
            if self.body_delivered {
                // Nothing more to feed: watch for the client closing, and keep
                // what it pipelines behind this request.
                if buf.len() >= READ_AHEAD {
                    self.stalled = true;
                    return std::future::pending().await;
                }
                buf.reserve(HEAD_READ);
                match rd.read_buf(buf).await {
                    Ok(0) | Err(_) => return PumpEvent::Eof,
                    Ok(_) => continue,
                }
            }
            if !self.may_push {
                ex.wants_more.notified().await;
                self.may_push = true;
                if ex.lock().response_complete {
                    // The app answered and will never read the rest.
                    self.body_delivered = true;
                    continue;
                }
                if std::mem::take(&mut self.continue_pending) {
                    return PumpEvent::SendContinue;
                }
            }
            match self.decoder.decode(buf) {
                Err(malformed) => {
                    crate::debug!("malformed request body: {}", malformed.0);
                    return PumpEvent::Malformed;
                }
                Ok(Decoded::Data(chunk)) => {
                    let Some(chunk) = self.gather(chunk, buf) else {
                        return PumpEvent::Malformed;
                    };
                    let last = self.decoder.is_done();
                    ex.push_body(chunk, last);
                    self.body_delivered = last;
                    self.may_push = false;
                }
                Ok(Decoded::Done) => {
                    ex.push_body(Bytes::new(), true);
                    self.body_delivered = true;
                }
                Ok(Decoded::NeedMore) => {
                    buf.reserve(BODY_READ);
                    // A client that stops sending mid-body is gone after --timeout-io.
                    match tokio::time::timeout(self.io_timeout, rd.read_buf(buf)).await {
                        Ok(Ok(0) | Err(_)) | Err(_) => {
                            ex.mark_disconnected();
                            return PumpEvent::Eof;
                        }
                        Ok(Ok(_)) => {}
                    }
                }
            }
        }
    }

    /// Joins what else is already buffered onto `first`, up to one read's worth,
    /// so that a body sent in many small chunks reaches the app in few messages.
    /// None if the body turned out malformed.
    fn gather(&mut self, first: Bytes, buf: &mut BytesMut) -> Option<Bytes> {
        if self.decoder.is_done() || buf.is_empty() || first.len() >= BODY_READ {
            return Some(first);
        }
        let mut joined = BytesMut::from(&first[..]);
        while joined.len() < BODY_READ {
            match self.decoder.decode(buf) {
                Ok(Decoded::Data(more)) => joined.extend_from_slice(&more),
                Ok(Decoded::NeedMore | Decoded::Done) => break,
                Err(malformed) => {
                    crate::debug!("malformed request body: {}", malformed.0);
                    return None;
                }
            }
        }
        Some(joined.freeze())
    }

    /// Reads and drops the rest of a body nobody will read; true if it ended.
    async fn drain<R: AsyncRead + Unpin>(&mut self, rd: &mut R, buf: &mut BytesMut) -> bool {
        let mut dropped = 0u64;
        loop {
            match self.decoder.decode(buf) {
                Err(_) => return false,
                Ok(Decoded::Done) => return true,
                Ok(Decoded::Data(chunk)) => {
                    dropped += chunk.len() as u64;
                    if dropped > DRAIN_LIMIT {
                        return false;
                    }
                }
                Ok(Decoded::NeedMore) => {
                    buf.reserve(BODY_READ);
                    match rd.read_buf(buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(_) => {}
                    }
                }
            }
        }
    }
}

/// Writes a response: head, then the body framed as decided. Returns false if
/// the connection can no longer be used (write failed, or the body broke off).
/// `keep_alive` comes in as what the request allows and goes out as what the
/// response allows.
#[derive(Clone, Copy)]
struct WriteOpts {
    version: Version,
    is_head: bool,
    date: bool,
    /// A write that makes no progress for this long ends the connection.
    io_timeout: Duration,
}

async fn write_response<W: AsyncWrite + Unpin>(wr: &mut W, response: Response<ResponseBody>, opts: WriteOpts, keep_alive: &mut bool) -> bool {
    let WriteOpts { version, is_head, date, io_timeout } = opts;
    let (parts, mut body) = response.into_parts();
    let framing = encode::framing(parts.status, is_head, version, &parts.headers, body.size_hint().exact());
    let app_closes = parts.headers.get_all(header::CONNECTION).iter().any(|v| v.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close")));
    let upgrade = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    *keep_alive &= !app_closes && framing != BodyFraming::UntilClose;
    let connection = match () {
        _ if upgrade => None,
        _ if !*keep_alive => Some("close"),
        _ if version == Version::HTTP_10 => Some("keep-alive"),
        _ => None,
    };
    let mut head = Vec::with_capacity(256);
    encode::head(&mut head, version, parts.status, &parts.headers, framing, connection, date);
    drop(parts);

    if matches!(framing, BodyFraming::Empty | BodyFraming::Announced(_)) {
        // No body goes on the wire (HEAD, 204, 304), as the protocol says.
        let ok = write_all_vectored(wr, &mut [IoSlice::new(&head)], io_timeout).await.is_ok();
        if ok && !discard(&mut body, io_timeout).await {
            *keep_alive = false;
        }
        return ok;
    }
    let mut head = Some(head);
    let mut sent = 0u64;
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        let data = match frame {
            None => break,
            Some(Err(_)) => {
                // The body broke off: what went out stays, the framing cannot be completed.
                if let Some(h) = head.take() {
                    let _ = write_all_vectored(wr, &mut [IoSlice::new(&h)], io_timeout).await;
                }
                *keep_alive = false;
                return false;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) if !d.is_empty() => d,
                _ => continue,
            },
        };
        if let BodyFraming::Length(n) = framing
            && sent + data.len() as u64 > n
        {
            // More than announced: never put it on the wire as the next "response".
            *keep_alive = false;
            return false;
        }
        sent += data.len() as u64;
        let end = body.is_end_stream();
        let mut size_line = [0u8; 20];
        let chunked = framing == BodyFraming::Chunked;
        let size_len = if chunked { chunk_size_line(&mut size_line, data.len()) } else { 0 };
        let trailer: &[u8] = match (chunked, end) {
            (true, true) => b"\r\n0\r\n\r\n",
            (true, false) => b"\r\n",
            _ => b"",
        };
        let head_bytes = head.take();
        let mut slices = [
            IoSlice::new(head_bytes.as_deref().unwrap_or_default()),
            IoSlice::new(&size_line[..size_len]),
            IoSlice::new(&data),
            IoSlice::new(trailer),
        ];
        if write_all_vectored(wr, &mut slices, io_timeout).await.is_err() {
            return false;
        }
        if end {
            return finish(body, framing, sent, keep_alive);
        }
    }
    let tail: &[u8] = if framing == BodyFraming::Chunked { b"0\r\n\r\n" } else { b"" };
    let head_bytes = head.take();
    let mut slices = [IoSlice::new(head_bytes.as_deref().unwrap_or_default()), IoSlice::new(tail)];
    if write_all_vectored(wr, &mut slices, io_timeout).await.is_err() {
        return false;
    }
    finish(body, framing, sent, keep_alive)
}

/// Takes a body the protocol does not send (a HEAD response's) from the app and
/// drops it, as uvicorn does, so that the app finishes normally instead of being
/// told the client left. Up to a limit: an endless stream is cut off (the app
/// then sees a disconnect). True if the body ended within the limit.
async fn discard(body: &mut ResponseBody, io_timeout: Duration) -> bool {
    const LIMIT: usize = 1024 * 1024;
    if !body.is_stream() {
        return true; // a whole buffer or a file: nothing is waiting on it
    }
    body.stop_counting();
    let mut taken = 0;
    while !body.is_end_stream() && taken <= LIMIT {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx));
        match tokio::time::timeout(io_timeout, frame).await {
            Ok(None) => return true,
            Ok(Some(Err(_))) | Err(_) => return false,
            Ok(Some(Ok(frame))) => taken += frame.data_ref().map_or(0, Bytes::len),
        }
    }
    body.is_end_stream()
}

/// The body ended: a length-framed response must have sent all it announced.
fn finish(body: ResponseBody, framing: BodyFraming, sent: u64, keep_alive: &mut bool) -> bool {
    drop(body);
    match framing {
        BodyFraming::Length(n) if sent < n => {
            *keep_alive = false;
            false
        }
        BodyFraming::UntilClose => {
            *keep_alive = false;
            true
        }
        _ => true,
    }
}

fn chunk_size_line(out: &mut [u8; 20], len: usize) -> usize {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut out[..]);
    let _ = write!(cursor, "{len:x}\r\n");
    cursor.position() as usize
}

/// Writes every slice; each write that takes nothing for `timeout` fails it.
async fn write_all_vectored<W: AsyncWrite + Unpin>(wr: &mut W, slices: &mut [IoSlice<'_>], timeout: Duration) -> std::io::Result<()> {
    let mut slices: &mut [IoSlice<'_>] = slices;
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        let n = tokio::time::timeout(timeout, wr.write_vectored(slices)).await.map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}
