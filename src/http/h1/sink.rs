//! What an HTTP/1.1 connection runs on, and where its responses go.
//!
//! On a plain socket (TCP or unix) a file body is sent with sendfile(2): the
//! kernel hands page-cache pages to the socket, and no byte of the file passes
//! through this process. A TLS stream must encrypt what it sends, and the tests'
//! in-memory pipes have no descriptor: those are written bytes read with pread.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, Interest};

/// A socket a connection can run on, and the two halves it is split into
/// while a request body is read during the response.
pub trait Transport: AsyncRead + Sink + Sync + 'static {
    type Reader<'a>: AsyncRead + Unpin + Send
    where
        Self: 'a;
    type Writer<'a>: Sink
    where
        Self: 'a;
    fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>);
}

/// A writer responses are sent on.
pub trait Sink: AsyncWrite + Unpin + Send {
    /// The plain socket under this writer, which can take file bodies by sendfile.
    fn socket(&self) -> Option<&dyn Socket> {
        None
    }
}

/// A nonblocking socket registered with the reactor.
pub trait Socket: Sync {
    /// Sends bytes with MSG_MORE: more follows at once, so a response head and the
    /// file after it leave in full segments instead of a small one first.
    fn poll_send_more(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;
    /// Sends up to `len` bytes of `file` from `offset`, which advances by what went.
    fn poll_send_file(&self, cx: &mut Context<'_>, file: BorrowedFd<'_>, offset: &mut u64, len: usize) -> Poll<io::Result<usize>>;
    /// TCP_CORK: while on, only full segments leave (see `write::CORK_MIN`).
    fn set_cork(&self, _on: bool) {}
}

/// Corks a socket for as long as it lives (a file body, then the push at its end).
pub struct Corked<'a>(&'a dyn Socket);

impl<'a> Corked<'a> {
    pub fn new(socket: &'a dyn Socket) -> Self {
        socket.set_cork(true);
        Corked(socket)
    }
}

impl Drop for Corked<'_> {
    fn drop(&mut self) {
        self.0.set_cork(false);
    }
}

/// Transports split by tokio's generic lock-guarded halves (no descriptor to send a file to).
macro_rules! locked_halves {
    () => {
        type Reader<'a>
            = tokio::io::ReadHalf<&'a mut Self>
        where
            Self: 'a;
        type Writer<'a>
            = tokio::io::WriteHalf<&'a mut Self>
        where
            Self: 'a;
        fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>) {
            tokio::io::split(self)
        }
    };
}
pub(crate) use locked_halves;

impl<T: AsyncRead + AsyncWrite + Send> Sink for tokio::io::WriteHalf<T> {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static> Transport for tokio_rustls::server::TlsStream<S> {
    locked_halves!();
}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Sink for tokio_rustls::server::TlsStream<S> {}

#[cfg(test)]
impl Transport for tokio::io::DuplexStream {
    locked_halves!();
}
#[cfg(test)]
impl Sink for tokio::io::DuplexStream {}

/// TCP and unix sockets: borrowed halves (no lock), and sendfile.
macro_rules! plain_socket {
    ($stream:ty, $halves:ident, $cork:expr) => {
        impl Transport for $stream {
            type Reader<'a> = tokio::net::$halves::ReadHalf<'a>;
            type Writer<'a> = tokio::net::$halves::WriteHalf<'a>;
            fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>) {
                self.split()
            }
        }

        impl Sink for $stream {
            fn socket(&self) -> Option<&dyn Socket> {
                Some(self)
            }
        }

        impl Sink for tokio::net::$halves::WriteHalf<'_> {
            fn socket(&self) -> Option<&dyn Socket> {
                Some(self.as_ref())
            }
        }

        impl Socket for $stream {
            fn poll_send_more(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
                poll_write_with(cx, |cx| self.poll_write_ready(cx), |f| self.try_io(Interest::WRITABLE, f), || {
                    // SAFETY: `buf` is valid for `buf.len()` bytes for the duration of the call.
                    let n = unsafe { libc::send(self.as_raw_fd(), buf.as_ptr().cast(), buf.len(), libc::MSG_MORE | libc::MSG_NOSIGNAL) };
                    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
                })
            }

            fn set_cork(&self, on: bool) {
                if $cork {
                    // A failure leaves the socket as it was: only the segmenting differs.
                    let _ = socket2::SockRef::from(self).set_tcp_cork(on);
                }
            }

            fn poll_send_file(&self, cx: &mut Context<'_>, file: BorrowedFd<'_>, offset: &mut u64, len: usize) -> Poll<io::Result<usize>> {
                poll_write_with(cx, |cx| self.poll_write_ready(cx), |f| self.try_io(Interest::WRITABLE, f), || {
                    let mut off = *offset as libc::off_t;
                    // SAFETY: both descriptors stay open for the call; the kernel updates `off`.
                    let n = unsafe { libc::sendfile(self.as_raw_fd(), file.as_raw_fd(), &mut off, len) };
                    if n < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    *offset = off as u64;
                    Ok(n as usize)
                })
            }
        }
    };
}

plain_socket!(tokio::net::TcpStream, tcp, true);
plain_socket!(tokio::net::UnixStream, unix, false);

/// One nonblocking write system call, retried when the socket is writable again.
/// `try_io` clears the reactor's readiness on EAGAIN, so the next wait is real.
fn poll_write_with(
    cx: &mut Context<'_>,
    mut ready: impl FnMut(&mut Context<'_>) -> Poll<io::Result<()>>,
    mut try_io: impl FnMut(&mut dyn FnMut() -> io::Result<usize>) -> io::Result<usize>,
    mut call: impl FnMut() -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    loop {
        ready!(ready(cx))?;
        match try_io(&mut call) {
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => continue,
            other => return Poll::Ready(other),
        }
    }
}
