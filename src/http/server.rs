//! Accepting connections and serving HTTP/1.1 on them, on the worker's I/O thread.

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tokio::sync::Notify;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::access_log::{Entry, Format};
use super::listeners::Inherited;
use crate::config::Config;
use crate::worker::bridge::Bridge;

/// What every connection of a worker shares.
pub struct ServerCtx {
    pub config: Arc<Config>,
    pub bridge: Arc<Bridge>,
    pub access_log: Option<Format>,
    /// Requests being served now, for --limit-concurrency.
    pub active: AtomicUsize,
    /// Requests served since the worker started, for --limit-max-requests.
    pub served: AtomicU64,
    pub extra_headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl ServerCtx {
    pub fn new(config: Arc<Config>, bridge: Arc<Bridge>) -> Self {
        let access_log = config.log.access_log.then(|| Format::parse(&config.log.access_log_format).expect("validated by the master"));
        let mut extra_headers = Vec::new();
        if config.http.server_header {
            extra_headers.push((http::header::SERVER, http::HeaderValue::from_static("ferrogate")));
        }
        for (name, value) in &config.http.default_headers {
            if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(name.as_bytes()), http::HeaderValue::from_str(value)) {
                extra_headers.push((n, v));
            }
        }
        ServerCtx { config, bridge, access_log, active: AtomicUsize::new(0), served: AtomicU64::new(0), extra_headers }
    }

    pub fn log_access(&self, entry: &Entry, status: u16, bytes: u64) {
        if let Some(format) = &self.access_log {
            crate::log::write_stderr(entry.render(format, status, bytes).as_bytes());
        }
    }
}

/// The addresses of one accepted connection.
#[derive(Clone, Copy)]
pub struct ConnInfo {
    /// None for unix-socket peers.
    pub peer: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
}

/// Accepts on every inherited listener until `stop` turns true, then lets open
/// connections finish their current request (closing idle keep-alive ones at once)
/// for at most the graceful timeout.
pub async fn serve(listeners: Vec<Inherited>, ctx: Arc<ServerCtx>, mut stop: watch::Receiver<bool>) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(Duration::from_secs(ctx.config.http.keep_alive_timeout))
        .max_header_size(ctx.config.http.max_header_size)
        .max_buf_size(ctx.config.http.max_header_size.max(8192) + 8192)
        .max_headers(ctx.config.http.max_headers)
        .auto_date_header(ctx.config.http.date_header)
        .writev(true);
    let conns = Arc::new(Connections { builder, open: AtomicUsize::new(0), all_closed: Notify::new(), stop: stop.clone() });

    let mut accept_tasks = tokio::task::JoinSet::new();
    for listener in listeners {
        let (ctx, conns) = (ctx.clone(), conns.clone());
        accept_tasks.spawn(async move {
            match listener {
                Inherited::Tcp(l) => match tokio::net::TcpListener::from_std(l) {
                    Ok(l) => accept_tcp(l, ctx, conns).await,
                    Err(e) => crate::error!("cannot use an inherited TCP listener: {e}"),
                },
                Inherited::Unix(l) => match tokio::net::UnixListener::from_std(l) {
                    Ok(l) => accept_unix(l, ctx, conns).await,
                    Err(e) => crate::error!("cannot use an inherited unix listener: {e}"),
                },
            }
        });
    }

    stopped(&mut stop).await;
    // The accept loops see the same signal and drop their listener handles.
    while accept_tasks.join_next().await.is_some() {}
    let open = conns.open.load(Ordering::Acquire);
    if open > 0 {
        crate::debug!("waiting for {open} connection(s) to finish");
    }
    let timeout = Duration::from_secs(ctx.config.workers.graceful_timeout);
    let drained = async {
        loop {
            let notified = conns.all_closed.notified();
            if conns.open.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    };
    if tokio::time::timeout(timeout, drained).await.is_err() {
        crate::warn!("graceful timeout ({}s) reached; closing the connections still open", timeout.as_secs());
    }
}

/// Resolves once `stop` is true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// The open connections of a worker, so that a stop can wait for them.
struct Connections {
    builder: http1::Builder,
    open: AtomicUsize,
    all_closed: Notify,
    stop: watch::Receiver<bool>,
}

async fn accept_tcp(listener: tokio::net::TcpListener, ctx: Arc<ServerCtx>, conns: Arc<Connections>) {
    let local = listener.local_addr().ok();
    let mut stop = conns.stop.clone();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    spawn_connection(stream, ConnInfo { peer: Some(peer), local }, &ctx, &conns);
                }
                Err(e) => accept_failed(e).await,
            },
        }
    }
}

async fn accept_unix(listener: tokio::net::UnixListener, ctx: Arc<ServerCtx>, conns: Arc<Connections>) {
    let mut stop = conns.stop.clone();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => spawn_connection(stream, ConnInfo { peer: None, local: None }, &ctx, &conns),
                Err(e) => accept_failed(e).await,
            },
        }
    }
}

/// Out of descriptors or memory: back off instead of spinning; the kernel keeps the queue.
async fn accept_failed(e: std::io::Error) {
    crate::error!("accept failed: {e}; retrying in 100 ms (raise the open-files limit if this is EMFILE)");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

fn spawn_connection<S>(stream: S, info: ConnInfo, ctx: &Arc<ServerCtx>, conns: &Arc<Connections>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ctx = ctx.clone();
    let conns = conns.clone();
    conns.open.fetch_add(1, Ordering::AcqRel);
    tokio::spawn(async move {
        let service = service_fn(move |req| super::service::handle(req, ctx.clone(), info));
        let mut conn = std::pin::pin!(conns.builder.serve_connection(TokioIo::new(stream), service).with_upgrades());
        let mut stop = conns.stop.clone();
        let result = tokio::select! {
            result = conn.as_mut() => result,
            _ = stopped(&mut stop) => {
                // Finish the request in progress, then close; an idle connection closes now.
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            crate::debug!("connection closed with an error: {e}");
        }
        if conns.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            conns.all_closed.notify_waiters();
        }
    });
}
