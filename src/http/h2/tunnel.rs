//! An HTTP/2 stream as a byte pipe, for a WebSocket opened with extended CONNECT
//! (RFC 8441): the WebSocket session reads and writes it as it would a socket. DATA
//! frames carry the WebSocket frames; the window is given back as bytes are read, and
//! writes wait for the client's window.

use bytes::Bytes;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub(super) struct Tunnel {
    recv: h2::RecvStream,
    send: h2::SendStream<Bytes>,
    /// What the last DATA frame had beyond the reader's buffer.
    unread: Bytes,
}

impl Tunnel {
    pub(super) fn new(recv: h2::RecvStream, send: h2::SendStream<Bytes>) -> Self {
        Tunnel { recv, send, unread: Bytes::new() }
    }
}

fn broken(e: h2::Error) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, e)
}

impl AsyncRead for Tunnel {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.unread.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                // The client ended its side: end of file.
                None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(broken(e))),
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    this.unread = data;
                }
            }
        }
        let n = this.unread.len().min(out.remaining());
        out.put_slice(&this.unread.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let send = &mut self.send;
        send.reserve_capacity(buf.len());
        loop {
            match ready!(send.poll_capacity(cx)) {
                None => return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
                Some(Err(e)) => return Poll::Ready(Err(broken(e))),
                Some(Ok(0)) => continue,
                Some(Ok(n)) => {
                    let n = n.min(buf.len());
                    return Poll::Ready(send.send_data(Bytes::copy_from_slice(&buf[..n]), false).map(|()| n).map_err(broken));
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // Sent data is the connection's to write; there is nothing held here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.send.send_data(Bytes::new(), true).or_else(|e| if e.is_reset() || e.is_io() { Ok(()) } else { Err(e) }).map_err(broken))
    }
}
