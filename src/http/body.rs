//! The response body as the connection pulls it: a whole buffer, a stream of the app's
//! messages, or a file read without Python. Its drop is the end of the
//! exchange: that is where the access log line is written and the app told.

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use crate::bridge::responses::ResponseReceiver;

use super::access_log::LogLine;
use crate::bridge::exchange::{Exchange, ResponseEvent};
use crate::http::compress::Compressing;

const FILE_CHUNK: usize = 256 * 1024;

/// Reads up to `len` bytes at `offset` into a fresh buffer without zero-filling it first.
fn read_chunk(file: &std::fs::File, offset: u64, len: usize) -> std::io::Result<Bytes> {
    use std::os::fd::AsRawFd;
    let mut buf = bytes::BytesMut::with_capacity(len);
    loop {
        // SAFETY: the kernel writes at most `len` bytes into the buffer's spare capacity.
        let n = unsafe { libc::pread(file.as_raw_fd(), buf.as_mut_ptr().cast(), len, offset as libc::off_t) };
        if n >= 0 {
            // SAFETY: those `n` bytes are now initialized.
            unsafe { buf.set_len(n as usize) };
            return Ok(buf.freeze());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

pub enum Kind {
    Empty,
    Full(Option<Bytes>),
    Stream(ResponseReceiver),
    /// `remaining` bytes from `offset` on: a whole file, or one byte range of it.
    File { file: std::fs::File, offset: u64, remaining: u64 },
    /// One of the above, compressed as it is sent (http/compress): `new` takes it apart.
    Encoded(Box<crate::http::compress::Encoded>),
}

pub struct ResponseBody {
    kind: Kind,
    /// Set once the last byte has been handed to the connection.
    finished: bool,
    bytes: u64,
    status: u16,
    exchange: Option<Arc<Exchange>>,
    log: Option<LogLine>,
    /// The app failed mid-stream: the error is returned on the next poll, once
    /// the connection has written what it already took, so the client sees a truncated
    /// response rather than nothing at all.
    failing: bool,
    /// False while a body the protocol does not send (HEAD) is taken and dropped:
    /// those bytes are not counted as sent in the access log.
    counting: bool,
    /// The length the app declared (its content-length), which the response
    /// announces even when no body follows (HEAD, 304).
    declared: Option<u64>,
    /// The compressor the body's bytes go through (None: sent as they are).
    coding: Option<Box<Compressing>>,
}

impl ResponseBody {
    pub fn new(kind: Kind, status: u16, exchange: Option<Arc<Exchange>>, log: Option<LogLine>) -> Self {
        let (kind, coding) = match kind {
            Kind::Encoded(e) => (e.inner, Some(Box::new(e.coding))),
            kind => (kind, None),
        };
        let finished = matches!(kind, Kind::Empty | Kind::Full(None)) && coding.is_none();
        ResponseBody { kind, finished, bytes: 0, status, exchange, log, failing: false, counting: true, declared: None, coding }
    }

    pub fn empty() -> Self {
        Self::new(Kind::Empty, 0, None, None)
    }

    /// The status the access log gives (an HTTP/2 WebSocket is opened with a 200, not a 101).
    pub fn logged_as(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// The app's content-length for this body: what the response announces.
    pub fn declaring(mut self, length: Option<u64>) -> Self {
        self.declared = length;
        self
    }

    /// Replaces a whole-buffer body before it is sent: the page `error_page::render`
    /// makes of a front error. Other kinds are left alone.
    pub fn replace_full(&mut self, bytes: Bytes) {
        if let Kind::Full(data) = &mut self.kind {
            self.finished = false;
            *data = Some(bytes);
        }
    }

    /// The app's content-length. Protocols frame a response by this and the
    /// body's size hint, never by a content-length header, so an adapter that
    /// changes the body (a compressor) only has to answer these for itself.
    pub fn declared_length(&self) -> Option<u64> {
        self.declared
    }

    /// The file this body sends as it is (not compressed): the file, the offset of
    /// its next byte and how many remain. For a protocol that sends files itself.
    pub fn file_part(&self) -> Option<(&std::fs::File, u64, u64)> {
        match (&self.kind, &self.coding) {
            (Kind::File { file, offset, remaining }, None) => Some((file, *offset, *remaining)),
            _ => None,
        }
    }

    /// `n` bytes of `file_part` went out another way than `poll_frame`.
    pub fn file_sent(&mut self, n: u64) {
        if let Kind::File { offset, remaining, .. } = &mut self.kind {
            let n = n.min(*remaining);
            *offset += n;
            *remaining -= n;
            self.finished = *remaining == 0;
            self.taken(n as usize);
            if self.counting {
                self.bytes += n;
            }
        }
    }

    /// Takes a body the protocol does not send (HEAD, 204, 304) from the app
    /// and drops it, as uvicorn does, so that the app finishes normally instead
    /// of being told the client left. Up to a limit: an endless stream is cut
    /// off (the app then sees a disconnect). True if the body ended within it.
    pub async fn discard(&mut self, io_timeout: std::time::Duration) -> bool {
        const LIMIT: usize = 1024 * 1024;
        if !matches!(self.kind, Kind::Stream(_)) {
            return true; // a whole buffer or a file: nothing is waiting on it
        }
        // Taken and dropped, not sent: not counted in the access log, nor compressed.
        self.counting = false;
        self.coding = None;
        let mut taken = 0;
        while !http_body::Body::is_end_stream(self) && taken <= LIMIT {
            let frame = std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut *self), cx));
            match tokio::time::timeout(io_timeout, frame).await {
                Ok(None) => return true,
                Ok(Some(Err(_))) | Err(_) => return false,
                Ok(Some(Ok(frame))) => taken += frame.data_ref().map_or(0, Bytes::len),
            }
        }
        http_body::Body::is_end_stream(self)
    }

    fn data(&mut self, data: Bytes) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.taken(data.len());
        self.out(data)
    }

    /// `n` bytes of the app's body left it (its send() may go on).
    fn taken(&self, n: usize) {
        if let Some(ex) = &self.exchange {
            ex.sent(n);
        }
    }

    /// Bytes for the wire, counted in the access log.
    fn out(&mut self, data: Bytes) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.counting {
            self.bytes += data.len() as u64;
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    /// The body through its compressor: the source's chunks go in, one bounded piece
    /// of work per poll, and between pieces that produce nothing the task yields, so
    /// that a large body shares the I/O thread with the other connections.
    fn poll_compressed(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        loop {
            let coding = self.coding.as_mut().expect("compressing");
            if coding.has_work() {
                let out = match coding.step() {
                    Ok(out) => out,
                    Err(e) => return Poll::Ready(Some(Err(e))),
                };
                if !out.is_empty() {
                    return self.out(out);
                }
                if coding.has_work() {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                continue;
            }
            if coding.is_done() {
                if let Some(trailers) = coding.take_trailers() {
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                return self.end();
            }
            match self.poll_source(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => self.coding.as_mut().expect("compressing").end(),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        self.taken(data.len());
                        self.coding.as_mut().expect("compressing").push(data);
                    }
                    Err(frame) => {
                        let trailers = frame.into_trailers().unwrap_or_default();
                        self.coding.as_mut().expect("compressing").end_with_trailers(trailers);
                    }
                },
            }
        }
    }

    fn end(&mut self) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.finished = true;
        Poll::Ready(None)
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.coding.is_some() {
            return this.poll_compressed(cx);
        }
        match this.poll_source(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => this.data(data),
                Err(trailers) => Poll::Ready(Some(Ok(trailers))),
            },
            Poll::Ready(None) => this.end(),
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        if let Some(coding) = &self.coding {
            return coding.is_done() && !coding.has_trailers();
        }
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(d) => d.as_ref().is_none_or(Bytes::is_empty),
            Kind::File { remaining, .. } => *remaining == 0,
            Kind::Stream(_) => self.finished,
            Kind::Encoded(_) => unreachable!("taken apart by ResponseBody::new"),
        }
    }

    fn size_hint(&self) -> SizeHint {
        if self.coding.is_some() {
            return SizeHint::default(); // known only once compressed
        }
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::File { remaining, .. } => SizeHint::with_exact(*remaining),
            Kind::Stream(_) | Kind::Encoded(_) => SizeHint::default(),
        }
    }
}

impl ResponseBody {
    /// The body's own frames, before any compression and accounting; None at its end.
    fn poll_source(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self;
        match &mut this.kind {
            Kind::Empty | Kind::Encoded(_) => Poll::Ready(None),
            Kind::Full(data) => match data.take() {
                Some(d) if !d.is_empty() => Poll::Ready(Some(Ok(Frame::data(d)))),
                _ => Poll::Ready(None),
            },
            Kind::Stream(_) if this.finished => Poll::Ready(None),
            Kind::Stream(_) if this.failing => {
                Poll::Ready(Some(Err(std::io::Error::other("the application failed while streaming the response"))))
            }
            Kind::Stream(rx) => match rx.poll_recv(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(ResponseEvent::Chunk(d))) => Poll::Ready(Some(Ok(Frame::data(d)))),
                Poll::Ready(Some(ResponseEvent::End)) => {
                    this.finished = true;
                    Poll::Ready(None)
                }
                Poll::Ready(Some(ResponseEvent::Trailers(fields))) => {
                    // Sent where the protocol carries them (HTTP/2); HTTP/1.1 ends the body without.
                    this.finished = true;
                    Poll::Ready(Some(Ok(Frame::trailers(fields.into_iter().collect()))))
                }
                Poll::Ready(_) => {
                    this.failing = true;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            },
            Kind::File { file, offset, remaining } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                // Page-cache reads are as quick as a memcpy; like nginx without aio, read inline.
                match read_chunk(file, *offset, (*remaining).min(FILE_CHUNK as u64) as usize) {
                    Ok(chunk) if chunk.is_empty() => Poll::Ready(Some(Err(std::io::Error::other("file shrank while being sent")))),
                    Ok(chunk) => {
                        *remaining -= chunk.len() as u64;
                        *offset += chunk.len() as u64;
                        Poll::Ready(Some(Ok(Frame::data(chunk))))
                    }
                    Err(e) => Poll::Ready(Some(Err(e))),
                }
            }
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // A HEAD (or 204/304) response body is dropped unread; a whole buffer counts as sent.
        let complete = self.finished || matches!(self.kind, Kind::Full(_));
        if let Some(ex) = &self.exchange {
            if complete {
                ex.mark_response_complete();
            } else {
                ex.mark_disconnected();
            }
        }
        if let Some((ctx, entry)) = &self.log {
            ctx.log_access(entry, self.status, self.bytes);
        }
    }
}
