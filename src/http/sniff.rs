//! Which HTTP a cleartext connection speaks, from its first bytes: HTTP/2 "with prior
//! knowledge" (h2c, RFC 9113 3.3) opens with a fixed preface no HTTP/1.1 request can
//! begin with; anything else is HTTP/1.1. For --http h2, which answers HTTP/1.1 clients
//! only to say so; with both protocols (auto) the HTTP/1.1 connection itself hands a
//! preface over (`h1::conn::Handoff`), so that HTTP/1.1 pays nothing for the choice.

use bytes::{Buf, BytesMut};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::h1::conn::Transport;
use crate::bridge::stop::{StopSignal, stopped};

pub use crate::codec::h1::parse::HTTP2_PREFACE as PREFACE;

pub enum Sniffed {
    /// The preface: HTTP/2, with the bytes read so far to be read again.
    H2(BytesMut),
    /// HTTP/1.1 (or nothing yet: the worker began stopping), with the bytes read so far.
    H1(BytesMut),
    /// Closed, or silent for `patience`, before saying anything.
    Closed,
}

/// Reads until the first bytes tell. A worker stop ends the wait: HTTP/1.1's
/// connection knows how to close politely around a request that may be on its way.
pub async fn sniff<IO: Transport>(io: &mut IO, patience: Duration, stop: &mut StopSignal) -> Sniffed {
    let mut buf = BytesMut::new();
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let read = super::h1::read_more(io, &mut buf);
        tokio::select! {
            read = read => match read {
                Ok(0) | Err(_) => return Sniffed::Closed,
                Ok(_) => {}
            },
            _ = tokio::time::sleep_until(deadline) => return Sniffed::Closed,
            _ = stopped(stop) => return Sniffed::H1(buf),
        }
        if buf.len() >= PREFACE.len() || !PREFACE.starts_with(&buf) {
            return if buf.starts_with(PREFACE) { Sniffed::H2(buf) } else { Sniffed::H1(buf) };
        }
    }
}

/// A connection whose first bytes were read already: they are read again first.
pub struct Rewind<IO> {
    prefix: BytesMut,
    io: IO,
}

impl<IO> Rewind<IO> {
    pub fn new(prefix: BytesMut, io: IO) -> Self {
        Rewind { prefix, io }
    }
}

impl<IO: Transport> Transport for Rewind<IO> {
    crate::http::h1::locked_halves!();
}
impl<IO: Transport> crate::http::h1::Sink for Rewind<IO> {}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(out.remaining());
            out.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                self.prefix = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, out)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn sniffed(chunks: &[&[u8]]) -> Sniffed {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let (_tx, mut stop) = tokio::sync::watch::channel(None);
        let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
        let writer = tokio::spawn(async move {
            for chunk in chunks {
                client.write_all(&chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        let result = sniff(&mut server, Duration::from_secs(5), &mut stop).await;
        drop(writer);
        result
    }

    #[tokio::test]
    async fn the_preface_is_http2_even_in_pieces() {
        let Sniffed::H2(buf) = sniffed(&[b"PRI * HT", b"TP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04"]).await else { panic!("not h2") };
        assert!(buf.starts_with(PREFACE), "the bytes read are kept");
    }

    #[tokio::test]
    async fn a_request_is_http1_and_keeps_its_bytes() {
        let Sniffed::H1(buf) = sniffed(&[b"GET / HTTP/1.1\r\n"]).await else { panic!("not h1") };
        assert_eq!(&buf[..], b"GET / HTTP/1.1\r\n");
        // A method sharing the preface's first letter is decided as soon as it differs.
        let Sniffed::H1(buf) = sniffed(&[b"P", b"OST / HTTP/1.1\r\n"]).await else { panic!("not h1") };
        assert_eq!(&buf[..], b"POST / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn rewind_reads_the_prefix_again_then_the_socket() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b" world").await.unwrap();
        drop(client);
        let mut io = Rewind::new(BytesMut::from(&b"hello"[..]), server);
        let mut all = String::new();
        io.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }
}
