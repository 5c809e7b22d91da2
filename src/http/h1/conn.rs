//! One HTTP/1.1 connection, from its first byte to its close.
//!
//! Between requests a connection holds no buffer at all: it waits for the
//! socket to become readable, and only then takes a read buffer. Everything a
//! request needs lives in a box that is freed when its response is written.
//! That is what keeps an idle keep-alive connection to a few hundred bytes.

use bytes::BytesMut;
use http::{Method, Response, Version};
use std::io::IoSlice;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::read::{Pump, PumpEvent, read_more};
use super::write::{WriteOpts, write_all_vectored, write_response};
use crate::bridge::exchange::BodySink;
use crate::bridge::stop::{StopSignal, stopped};
use crate::codec::h1::decode::Decoder;
use crate::codec::h1::parse::{self, Framing, Head, Limits, Refusal};
use crate::http::body::ResponseBody;
use crate::http::ctx::{ConnInfo, ServerCtx};
use crate::http::service::{self, AppCall, Dispatched, WebSocketStart};

pub use super::sink::Transport;

/// An unread request body up to this size is read and dropped to keep the connection.
pub(super) const DRAIN_LIMIT: u64 = 256 * 1024;
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
///
/// With `prior_knowledge`, a connection that opens with HTTP/2's preface is handed
/// back, with the bytes read, for HTTP/2 to serve (h2c): the preface is no HTTP/1.1
/// request line, so telling them apart costs HTTP/1.1 nothing until its parser fails.
pub async fn serve<IO: Transport>(io: IO, ctx: Arc<ServerCtx>, info: ConnInfo, prior_knowledge: bool) -> Option<Handoff<IO>> {
    let stop = Some(ctx.stop.clone());
    let mut conn = Conn { io, buf: BytesMut::new(), ctx, info, served: 0, stop };
    loop {
        let head = match conn.next_head().await {
            Next::Head(head) => head,
            Next::Close => break,
            Next::Refuse(_) if prior_knowledge && conn.served == 0 && parse::is_http2_preface(&conn.buf) => {
                let Conn { io, buf, ctx, info, .. } = conn;
                return Some(Handoff { io, read: buf, ctx, info });
            }
            Next::Refuse(refusal) => {
                Box::pin(conn.refuse(refusal)).await;
                break;
            }
        };
        conn.served += 1;
        // Boxed: a request's state lives only while it does. Chosen before the first
        // await, so that the box holds the state of one kind of exchange, not the largest.
        let exchange: Pin<Box<dyn Future<Output = After> + Send + '_>> = match conn.begin(head) {
            Begin::Answer(response, request) => Box::pin(conn.answer(response, request)),
            Begin::App(call, request) => Box::pin(conn.exchange(call, request)),
            Begin::Close => break,
        };
        match exchange.await {
            After::KeepAlive => continue,
            After::Close => break,
            After::Linger => {
                Box::pin(conn.linger()).await;
                break;
            }
        }
    }
    let _ = conn.io.shutdown().await;
    None
}

/// A connection that turned out to speak HTTP/2, for HTTP/2 to serve.
pub struct Handoff<IO> {
    pub io: IO,
    /// What was read of it: the preface, and maybe more.
    pub read: BytesMut,
    pub ctx: Arc<ServerCtx>,
    pub info: ConnInfo,
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

/// A request, dispatched: the front's own answer, or a call to the app.
enum Begin {
    Answer(Response<ResponseBody>, Request),
    App(AppCall, Request),
    Close,
}

/// What an exchange needs to know about its request once the head is gone.
struct Request {
    version: Version,
    is_head: bool,
    /// What the request allows (its version and Connection header, the worker not stopping).
    keep_alive: bool,
    pump: Pump,
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

    /// Dispatches a request (no I/O): the front answers it, or the app is called.
    fn begin(&mut self, head: Head) -> Begin {
        let io_timeout = Duration::from_secs(self.ctx.config.http.io_timeout);
        let request = Request {
            version: head.request.version(),
            is_head: head.request.method() == Method::HEAD,
            keep_alive: head.keep_alive && !self.stopping(),
            pump: Pump::new(head.framing, head.expect_continue, io_timeout),
        };
        match service::dispatch(head.request, head.framing == Framing::Length(0), &self.ctx, &self.info) {
            Dispatched::Answer(response) => Begin::Answer(response, request),
            Dispatched::App(call) => Begin::App(call, request),
            Dispatched::Close => Begin::Close,
        }
    }

    /// The front's own answer (a static file, a redirect, a refusal).
    async fn answer(&mut self, response: Response<ResponseBody>, request: Request) -> After {
        let Request { version, is_head, mut keep_alive, mut pump } = request;
        keep_alive &= !self.stopping();
        let ok = self.write(response, version, is_head, &mut keep_alive).await;
        self.after_response(ok, keep_alive, &mut pump).await
    }

    /// A call to the app: feed it the body, write its response. Its state is the
    /// hot path's box: rare paths (a refused body, a WebSocket) are boxed apart, and
    /// big values are moved whole into what takes them, in blocks that end before the
    /// next await, so that none stays behind in the state. An async block, not an
    /// async fn, so that the arguments are not stored twice.
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    fn exchange(&mut self, mut call: AppCall, mut request: Request) -> impl Future<Output = After> + Send + '_ {
        async move {
            let io_timeout = Duration::from_secs(self.ctx.config.http.io_timeout);
            request.pump.limit(call.body_limit);

            // One split of the socket serves both phases: feeding the body while the
            // app works, and while its response is written.
            let opts = self.write_opts(request.version, request.is_head);
            let sink = BodySink::new(call.ex.clone());
            let (mut rd, mut wr) = self.io.halves();

            // Phase 1: until the app answers, feed it the body and watch for the client leaving.
            let (response, upgrade) = {
                let answered = {
                    let mut reply = pin!(call.reply());
                    loop {
                        tokio::select! {
                            biased;
                            r = &mut reply => break Ok(r),
                            event = request.pump.next(&mut rd, &mut self.buf, &sink) => match event {
                                PumpEvent::SendContinue => {
                                    let mut continue_line = [IoSlice::new(b"HTTP/1.1 100 Continue\r\n\r\n")];
                                    if write_all_vectored(&mut wr, &mut continue_line, io_timeout).await.is_err() {
                                        return After::Close;
                                    }
                                }
                                // Gone before the answer: dropping `call` tells the app.
                                PumpEvent::Eof => return After::Close,
                                PumpEvent::Malformed => break Err(None),
                                PumpEvent::TooLarge(too_large) => break Err(Some(too_large)),
                            },
                        }
                    }
                };
                match answered {
                    Ok(reply) => reply.into_parts(),
                    Err(too_large) => {
                        // The body broke its framing or passed the limit: say so instead of the app, and close.
                        call.ex.mark_disconnected();
                        let response = match too_large {
                            None => call.bad_body(),
                            Some(too_large) => call.too_large(too_large),
                        };
                        let _ = Box::pin(write_response(&mut wr, response, WriteOpts { is_head: false, ..opts }, &mut false)).await;
                        return After::Linger;
                    }
                }
            };
            drop(call); // releases the --limit-concurrency slot, as the response starts
            if let Some(start) = upgrade {
                drop((rd, wr));
                return Box::pin(self.upgrade(response, start, opts)).await;
            }
            // The worker began stopping while the app worked: say so in this head.
            let mut keep_alive = request.keep_alive && !stop_signalled(&self.stop);
            // Phase 2: write the response while still feeding the app any body it asks for.
            // A body that passes the limit now is no longer read (the app was told);
            // the response goes on, and the connection closes after it.
            let mut overflowed = false;
            let ok = {
                let mut write = pin!(write_response(&mut wr, response, opts, &mut keep_alive));
                loop {
                    tokio::select! {
                        biased;
                        ok = &mut write => break ok,
                        event = request.pump.next(&mut rd, &mut self.buf, &sink), if !request.pump.stalled && !overflowed => match event {
                            // Too late for a 100 once the final response has started.
                            PumpEvent::SendContinue => {}
                            PumpEvent::TooLarge(_) => overflowed = true,
                            // The client left (dropping the body tells the app), or sent garbage.
                            PumpEvent::Eof | PumpEvent::Malformed => break false,
                        },
                    }
                }
            };
            drop((rd, wr));
            self.after_response(ok, keep_alive && !overflowed, &mut request.pump).await
        }
    }

    /// The app accepted a WebSocket: the 101, then the socket is the session's.
    async fn upgrade(&mut self, response: Response<ResponseBody>, start: WebSocketStart, opts: WriteOpts) -> After {
        if !write_response(&mut self.io, response, WriteOpts { is_head: false, ..opts }, &mut false).await {
            return After::Close;
        }
        let leftover = std::mem::take(&mut self.buf);
        start.run(&mut self.io, leftover).await;
        After::Close
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
        crate::http::bans::strike_refusal(&self.ctx, self.info.peer, refusal.status);
        let accept = crate::http::error_page::accept_in_raw_head(&self.buf);
        let response = service::refused(refusal, true, &self.ctx, accept.as_ref(), self.info.tls.is_some());
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

/// The state of a request's exchange with the app, in bytes: what each request
/// allocates and moves (tests/h1 holds it to a bound).
#[cfg(test)]
pub(super) fn exchange_state_size<IO: Transport>(io: IO, ctx: Arc<ServerCtx>, info: ConnInfo, call: AppCall) -> usize {
    let mut conn = Conn { io, buf: BytesMut::new(), ctx, info, served: 0, stop: None };
    let pump = Pump::new(Framing::Length(0), false, Duration::from_secs(1));
    let request = Request { version: Version::HTTP_11, is_head: false, keep_alive: true, pump };
    std::mem::size_of_val(&conn.exchange(call, request))
}
