//! Accepting connections on the worker's I/O thread, and the drain when the
//! worker stops.
//!
//! Every listener, TCP or unix, goes through one accept loop; every accepted
//! connection goes through one path: the listener's handshake, if it has one,
//! then the HTTP protocol. That is the seam where TLS (a handshake) and HTTP/2
//! (a protocol chosen by ALPN or the connection preface) plug in.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::ctx::{ConnInfo, ServerCtx};
use super::h1::conn::{self, Transport};
use super::listeners::Inherited;
use super::proxy_protocol;
use super::sniff::{Rewind, Sniffed, sniff};
use crate::config::Protocols;
use crate::bridge::Event;
use crate::bridge::exchange::{Scheme, TlsInfo};
use crate::tls::acceptor::Acceptor;
use crate::bridge::stop::{CANCEL_GRACE, stopped};

/// A bound socket the worker accepts on, with the TLS handshake its connections go
/// through first when it speaks TLS.
struct Listener {
    socket: Socket,
    tls: Option<Arc<Acceptor>>,
}

/// Watched for readiness by hand rather than through tokio's listeners: a worker over
/// its share must see that a connection waits without taking it (`balance`).
enum Socket {
    Tcp(AsyncFd<std::net::TcpListener>),
    Unix(AsyncFd<std::os::unix::net::UnixListener>),
}

impl Listener {
    fn adopt(inherited: Inherited, tls: Option<Arc<Acceptor>>) -> std::io::Result<Self> {
        // SAFETY: each std listener owns its descriptor, and the AsyncFd owns the
        // listener until it drops: the descriptor stays open and the same meanwhile.
        let socket = unsafe {
            match inherited {
                Inherited::Tcp(l) => Socket::Tcp(AsyncFd::register_with_interest(l, Interest::READABLE)?),
                Inherited::Unix(l) => Socket::Unix(AsyncFd::register_with_interest(l, Interest::READABLE)?),
            }
        };
        Ok(Listener { socket, tls })
    }

    /// Accepts until the worker stops.
    async fn run(self, ctx: Arc<ServerCtx>) {
        let mut stop = ctx.stop.clone();
        let local = match &self.socket {
            Socket::Tcp(l) => l.get_ref().local_addr().ok(),
            Socket::Unix(_) => None,
        };
        let mut manners = super::balance::Manners::default();
        loop {
            let hold = || ctx.seat.as_ref().is_some_and(|seat| manners.hold(|| seat.over(ctx.open.current())));
            let taken = async {
                match &self.socket {
                    Socket::Tcp(l) => take(l, hold, |l| {
                        let (stream, peer) = l.accept()?;
                        stream.set_nonblocking(true)?;
                        let _ = stream.set_nodelay(true);
                        Ok((Stream::Tcp(tokio::net::TcpStream::from_std(stream)?), Some(peer)))
                    })
                    .await,
                    Socket::Unix(l) => take(l, hold, |l| {
                        let (stream, _) = l.accept()?;
                        stream.set_nonblocking(true)?;
                        Ok((Stream::Unix(tokio::net::UnixStream::from_std(stream)?), None))
                    })
                    .await,
                }
            };
            tokio::select! {
                _ = stopped(&mut stop) => return,
                taken = taken => match taken {
                    Ok(Taken::Connection((stream, peer), held)) => {
                        manners.took(held);
                        let info = ConnInfo { peer, local, scheme: Scheme::Http, tls: None };
                        spawn_connection(stream, info, self.tls.clone(), &ctx);
                    }
                    Ok(Taken::Nothing) => manners.missed(),
                    Err(e) => accept_failed(e).await,
                },
            }
        }
    }
}

enum Taken<T> {
    /// And whether it was held for the peers first.
    Connection(T, bool),
    /// The queue was empty: a peer took the connection.
    Nothing,
}

/// Waits until a connection is queued, leaves it to the peers for `balance::HOLD`
/// when `hold()` says so, then takes it if it is still there.
async fn take<L: AsRawFd, T>(listener: &AsyncFd<L>, hold: impl Fn() -> bool, accept: impl FnOnce(&L) -> std::io::Result<T>) -> std::io::Result<Taken<T>> {
    let mut ready = listener.readable().await?;
    let held = hold();
    if held {
        tokio::time::sleep(super::balance::HOLD).await;
    }
    match ready.try_io(|l| accept(l.get_ref())) {
        Ok(accepted) => accepted.map(|c| Taken::Connection(c, held)),
        // try_io cleared the readiness: the next wait is for a new connection.
        Err(_would_block) => Ok(Taken::Nothing),
    }
}

/// An accepted socket.
enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// Accepts on every inherited listener until the stop signal, then lets open
/// connections finish their current request (closing idle keep-alive ones at
/// once) for at most the graceful timeout; requests still in the app then are
/// cancelled, and their connections get CANCEL_GRACE to carry the answer.
/// Returns when the drain began.
pub async fn serve(listeners: Vec<Inherited>, ctx: Arc<ServerCtx>) -> Instant {
    let mut stop = ctx.stop.clone();
    let mut accept_tasks = tokio::task::JoinSet::new();
    for (i, inherited) in listeners.into_iter().enumerate() {
        let secure = ctx.config.bind_tls.get(i).copied().unwrap_or(false);
        let tls = if secure { ctx.tls.clone() } else { None };
        if secure && tls.is_none() {
            crate::error!("listener {i} is to speak TLS but this worker has no TLS material; not serving it");
            continue;
        }
        match Listener::adopt(inherited, tls) {
            Ok(listener) => {
                crate::io_tasks::spawn_into(&mut accept_tasks, listener.run(ctx.clone()));
            }
            Err(e) => crate::error!("cannot use an inherited listener: {e}"),
        }
    }

    stopped(&mut stop).await;
    let began = Instant::now();
    if let Some(seat) = &ctx.seat {
        seat.stop_accepting(ctx.open.current());
    }
    // The accept loops see the same signal and drop their listener handles.
    while accept_tasks.join_next().await.is_some() {}
    let open = ctx.open.current();
    if open > 0 {
        crate::debug!("waiting for {open} connection(s) to finish");
    }
    let timeout = Duration::from_secs(ctx.config.workers.graceful_timeout);
    if tokio::time::timeout(timeout, ctx.open.all_closed()).await.is_ok() {
        return began;
    }
    crate::warn!("Graceful timeout ({}s) reached with {} connection(s) open", timeout.as_secs(), ctx.open.current());
    ctx.bridge.push(Event::CancelRequests);
    if tokio::time::timeout(CANCEL_GRACE, ctx.open.all_closed()).await.is_err() {
        crate::warn!("Closing {} connection(s) still open", ctx.open.current());
    }
    began
}

/// Out of descriptors or memory: back off instead of spinning; the kernel keeps the queue.
async fn accept_failed(e: std::io::Error) {
    crate::error!("accept failed: {e}; retrying in 100 ms (raise the open-files limit if this is EMFILE)");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

fn spawn_connection(mut stream: Stream, mut info: ConnInfo, tls: Option<Arc<Acceptor>>, ctx: &Arc<ServerCtx>) {
    let ctx = ctx.clone();
    let open = ctx.open.enter();
    crate::io_tasks::spawn(async move {
        // First the load balancer's word on who the client is, so that everything
        // after (bans, TLS, HTTP, the logs) sees the real address. Boxed: only
        // connections of a --proxy-protocol server carry its state.
        if ctx.config.front.proxy_protocol && !Box::pin(proxy_header(&mut stream, &mut info, &ctx)).await {
            return;
        }
        // A banned peer is closed at once: before TLS, before a byte is read.
        if !super::bans::admit(&ctx, &info) {
            return;
        }
        // The TLS path is boxed: its state (rustls's connection, the handshake) would
        // otherwise size every connection's task, plain ones included, and an idle
        // plain keep-alive connection is meant to cost about 2 KiB.
        match (stream, tls) {
            (Stream::Tcp(s), None) => serve_http(s, info, ctx).await,
            (Stream::Unix(s), None) => serve_http(s, info, ctx).await,
            (Stream::Tcp(s), Some(tls)) => Box::pin(serve_https(s, info, tls, ctx)).await,
            (Stream::Unix(s), Some(tls)) => Box::pin(serve_https(s, info, tls, ctx)).await,
        }
        drop(open);
    });
}

/// --proxy-protocol: the PROXY header, read before anything else. False: close.
async fn proxy_header(stream: &mut Stream, info: &mut ConnInfo, ctx: &ServerCtx) -> bool {
    match stream {
        Stream::Tcp(s) => proxy_protocol::accept(s, info, &ctx.config).await,
        Stream::Unix(s) => proxy_protocol::accept(s, info, &ctx.config).await,
    }
}

/// The TLS handshake, then HTTP on the secured stream. A connection that fails its
/// handshake (garbage, plain HTTP, an unknown name, too slow) is closed and costs
/// nothing else; it is logged at debug level, as scanners make many.
async fn serve_https<S>(stream: S, mut info: ConnInfo, tls: Arc<Acceptor>, ctx: Arc<ServerCtx>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sync + 'static,
    tokio_rustls::server::TlsStream<S>: Transport,
{
    match tls.accept(stream).await {
        Ok(Some(established)) => {
            info.scheme = Scheme::Https;
            info.tls = Some(Arc::new(TlsInfo { version: established.version, cipher_suite: established.cipher_suite, client_cert_chain: established.client_chain }));
            // ALPN decided; a client that offered none gets what --http allows, HTTP/1.1 first.
            let h2 = established.h2 || !ctx.config.http.protocols.h1();
            match h2 {
                true => super::h2::conn::serve(established.stream, ctx, info).await,
                false => drop(conn::serve(established.stream, ctx, info, false).await),
            }
        }
        Ok(None) => {}
        Err(e) => crate::debug!("{}: {e}", info.peer.map_or_else(|| "unix socket".into(), |p| p.to_string())),
    }
}

/// The protocol on a cleartext connection: as --http says. With both (auto), HTTP/1.1
/// serves it and hands over a connection that opens with HTTP/2's preface. HTTP/2's
/// connection state is boxed: an idle HTTP/1.1 connection's task stays small.
async fn serve_http<S: Transport>(stream: S, info: ConnInfo, ctx: Arc<ServerCtx>) {
    match ctx.config.http.protocols {
        Protocols::H1 => drop(conn::serve(stream, ctx, info, false).await),
        Protocols::Auto => {
            if let Some(h2c) = conn::serve(stream, ctx, info, true).await {
                Box::pin(super::h2::conn::serve(Rewind::new(h2c.read, h2c.io), h2c.ctx, h2c.info)).await;
            }
        }
        Protocols::H2 => Box::pin(serve_http2_only(stream, info, ctx)).await,
    }
}

/// --http h2 in cleartext: the preface, or a word to the HTTP/1.1 client.
async fn serve_http2_only<S: Transport>(mut stream: S, info: ConnInfo, ctx: Arc<ServerCtx>) {
    let patience = Duration::from_secs(ctx.config.http.keep_alive_timeout);
    match sniff(&mut stream, patience, &mut ctx.stop.clone()).await {
        Sniffed::H2(read) => super::h2::conn::serve(Rewind::new(read, stream), ctx, info).await,
        Sniffed::H1(_) => http2_only(stream).await,
        Sniffed::Closed => {}
    }
}

/// An HTTP/1.1 client on an HTTP/2-only server (--http h2) is told so in its own protocol.
async fn http2_only<S: Transport>(mut stream: S) {
    use tokio::io::AsyncWriteExt;
    const MESSAGE: &str = "HTTP Version Not Supported: this server speaks only HTTP/2 (--http h2); connect with HTTP/2 (prior knowledge in cleartext)\n";
    let response = format!("HTTP/1.1 505 HTTP Version Not Supported\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{MESSAGE}", MESSAGE.len());
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
