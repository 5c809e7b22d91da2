//! The response body as hyper pulls it: a whole buffer, a stream of the app's
//! messages, or a file read without Python. Its drop is the end of the
//! exchange: that is where the access log line is written and the app told.

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

use super::access_log::Entry;
use super::server::ServerCtx;
use crate::worker::exchange::{Exchange, ResponseEvent};

const FILE_CHUNK: usize = 64 * 1024;

pub enum Kind {
    Empty,
    Full(Option<Bytes>),
    Stream(mpsc::UnboundedReceiver<ResponseEvent>),
    File { file: std::fs::File, remaining: u64 },
}

pub struct ResponseBody {
    kind: Kind,
    /// Set once the last byte has been handed to hyper.
    finished: bool,
    bytes: u64,
    status: u16,
    exchange: Option<Arc<Exchange>>,
    log: Option<(Arc<ServerCtx>, Entry)>,
}

impl ResponseBody {
    pub fn new(kind: Kind, status: u16, exchange: Option<Arc<Exchange>>, log: Option<(Arc<ServerCtx>, Entry)>) -> Self {
        let finished = matches!(kind, Kind::Empty | Kind::Full(None));
        ResponseBody { kind, finished, bytes: 0, status, exchange, log }
    }

    pub fn empty() -> Self {
        Self::new(Kind::Empty, 0, None, None)
    }

    fn data(&mut self, data: Bytes) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.bytes += data.len() as u64;
        if let Some(ex) = &self.exchange {
            ex.sent(data.len());
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
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
        match &mut this.kind {
            Kind::Empty => this.end(),
            Kind::Full(data) => match data.take() {
                Some(d) if !d.is_empty() => this.data(d),
                _ => this.end(),
            },
            Kind::Stream(rx) => match rx.poll_recv(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(ResponseEvent::Chunk(d))) => this.data(d),
                Poll::Ready(Some(ResponseEvent::End)) => this.end(),
                Poll::Ready(_) => {
                    Poll::Ready(Some(Err(std::io::Error::other("the application failed while streaming the response"))))
                }
            },
            Kind::File { file, remaining } => {
                if *remaining == 0 {
                    return this.end();
                }
                // Page-cache reads are as quick as a memcpy; like nginx without aio, read inline.
                let want = (*remaining).min(FILE_CHUNK as u64) as usize;
                let mut buf = vec![0u8; want];
                match file.read(&mut buf) {
                    Ok(0) => Poll::Ready(Some(Err(std::io::Error::other("file shrank while being sent")))),
                    Ok(n) => {
                        *remaining -= n as u64;
                        buf.truncate(n);
                        this.data(Bytes::from(buf))
                    }
                    Err(e) => Poll::Ready(Some(Err(e))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(d) => d.as_ref().is_none_or(Bytes::is_empty),
            Kind::File { remaining, .. } => *remaining == 0,
            Kind::Stream(_) => self.finished,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::File { remaining, .. } => SizeHint::with_exact(*remaining),
            Kind::Stream(_) => SizeHint::default(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // hyper drops a HEAD response's body unread; a whole buffer counts as sent.
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
