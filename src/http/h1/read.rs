//! Reading on an HTTP/1.1 connection: the next request head (onto the stack
//! while the connection idles), and the request body, moved from the socket
//! to the app one chunk per ask.

use bytes::{Bytes, BytesMut};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::conn::DRAIN_LIMIT;
use crate::bridge::exchange::BodySink;
use crate::codec::h1::decode::{Decoded, Decoder};
use crate::codec::h1::parse::Framing;
use crate::http::limits::{BodyCounter, TooLarge};

/// First read for a request head; grows up to --max-header-size.
const HEAD_READ: usize = 4096;
/// Reads while a request body streams in.
const BODY_READ: usize = 64 * 1024;
/// Bytes read ahead (pipelined requests) while a response is in progress.
const READ_AHEAD: usize = 64 * 1024;

/// Reads more of a request head. With nothing buffered the bytes land on the
/// stack first, so that a connection waiting for its next request holds no
/// buffer at all. Cancel-safe: bytes are only ever moved in a completed poll.
pub(crate) async fn read_more<IO: AsyncRead + Unpin>(io: &mut IO, buf: &mut BytesMut) -> std::io::Result<usize> {
    if !buf.is_empty() {
        buf.reserve(buf.len().max(HEAD_READ));
        return io.read_buf(buf).await;
    }
    std::future::poll_fn(|cx| {
        // Uninitialized: zeroing 4 KiB on every poll of an idle connection is not free.
        let mut space = [std::mem::MaybeUninit::<u8>::uninit(); HEAD_READ];
        let mut read = tokio::io::ReadBuf::uninit(&mut space);
        std::task::ready!(Pin::new(&mut *io).poll_read(cx, &mut read))?;
        buf.extend_from_slice(read.filled());
        Poll::Ready(Ok(read.filled().len()))
    })
    .await
}

pub(super) enum PumpEvent {
    /// The app wants the body of an `Expect: 100-continue` request: say so first.
    SendContinue,
    /// The client closed its side.
    Eof,
    /// The body broke its framing.
    Malformed,
    /// The body passed --limit-request-body (a chunked one; a declared length was
    /// refused before): the app was told the client is gone.
    TooLarge(TooLarge),
}

/// Moves the request body from the socket to the app, one chunk per ask.
pub(super) struct Pump {
    pub(super) decoder: Decoder,
    io_timeout: Duration,
    /// The app may take a chunk now (the first one is offered at once, as it is
    /// usually already here, unless the client waits for a 100 Continue).
    may_push: bool,
    continue_pending: bool,
    /// The app has everything, or will never read more.
    body_delivered: bool,
    /// Read-ahead is full: stop reading until the response is written.
    pub(super) stalled: bool,
    counter: BodyCounter,
}

impl Pump {
    pub(super) fn new(framing: Framing, expect_continue: bool, io_timeout: Duration) -> Self {
        let empty = framing == Framing::Length(0);
        Pump { decoder: Decoder::new(framing), io_timeout, may_push: !expect_continue, continue_pending: expect_continue && !empty, body_delivered: empty, stalled: false, counter: BodyCounter::new(None) }
    }

    /// Holds the body to --limit-request-body's limit for its path.
    pub(super) fn limit(&mut self, limit: Option<u64>) {
        self.counter = BodyCounter::new(limit);
    }

    /// Runs until something needs the connection's attention. Cancel-safe:
    /// bytes read stay in `buf`, and a chunk is pushed in the same step it is decoded.
    pub(super) async fn next<R: AsyncRead + Unpin>(&mut self, rd: &mut R, buf: &mut BytesMut, sink: &BodySink) -> PumpEvent {
        loop {
            if self.body_delivered {
                // Nothing more to feed: watch for the client closing, and keep
                // what it pipelines behind this request.
                if buf.len() >= READ_AHEAD {
                    self.stalled = true;
                    return std::future::pending().await;
                }
                // Usually nothing comes before the response is out: wait on the
                // stack, not in a buffer allocated (and freed) for every request.
                match read_more(rd, buf).await {
                    Ok(0) | Err(_) => return PumpEvent::Eof,
                    Ok(_) => continue,
                }
            }
            if !self.may_push {
                let wants_more = sink.demand().await;
                self.may_push = true;
                if !wants_more {
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
                    if let Err(too_large) = self.counter.take(chunk.len()) {
                        sink.client_gone();
                        return PumpEvent::TooLarge(too_large);
                    }
                    let last = self.decoder.is_done();
                    sink.push(chunk, last);
                    self.body_delivered = last;
                    self.may_push = false;
                }
                Ok(Decoded::Done) => {
                    sink.push(Bytes::new(), true);
                    self.body_delivered = true;
                }
                Ok(Decoded::NeedMore) => {
                    buf.reserve(BODY_READ);
                    // A client that stops sending mid-body is gone after --timeout-io.
                    match tokio::time::timeout(self.io_timeout, rd.read_buf(buf)).await {
                        Ok(Ok(0) | Err(_)) | Err(_) => {
                            sink.client_gone();
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
    pub(super) async fn drain<R: AsyncRead + Unpin>(&mut self, rd: &mut R, buf: &mut BytesMut) -> bool {
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
