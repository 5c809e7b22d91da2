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
use super::static_files::StaticFiles;
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
    /// --static mounts, answered before the app.
    pub static_files: Option<StaticFiles>,
    /// Turns true when the worker starts draining.
    pub stop: watch::Receiver<bool>,
    /// Connections and WebSocket sessions still open: a stop waits for them.
    pub open: Arc<OpenCount>,
}

/// A count of open connections that a stop can wait on.
#[derive(Default)]
pub struct OpenCount {
    count: AtomicUsize,
    zero: Notify,
}

/// One open connection or WebSocket session; dropping it closes the count.
pub struct OpenGuard(Arc<OpenCount>);

impl OpenCount {
    pub fn enter(self: &Arc<Self>) -> OpenGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        OpenGuard(self.clone())
    }

    pub fn current(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    async fn all_closed(&self) {
        loop {
            let notified = self.zero.notified();
            if self.current() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.zero.notify_waiters();
        }
    }
}

impl ServerCtx {
    pub fn new(config: Arc<Config>, bridge: Arc<Bridge>, static_files: Option<StaticFiles>, stop: watch::Receiver<bool>) -> Self {
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
        ServerCtx {
            config,
            bridge,
            access_log,
            active: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            extra_headers,
            static_files,
            stop,
            open: Arc::new(OpenCount::default()),
        }
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
pub async fn serve(listeners: Vec<Inherited>, ctx: Arc<ServerCtx>) {
    let mut stop = ctx.stop.clone();
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
    let builder = Arc::new(builder);

    let mut accept_tasks = tokio::task::JoinSet::new();
    for listener in listeners {
        let (ctx, builder) = (ctx.clone(), builder.clone());
        accept_tasks.spawn(async move {
            match listener {
                Inherited::Tcp(l) => match tokio::net::TcpListener::from_std(l) {
                    Ok(l) => accept_tcp(l, ctx, builder).await,
                    Err(e) => crate::error!("cannot use an inherited TCP listener: {e}"),
                },
                Inherited::Unix(l) => match tokio::net::UnixListener::from_std(l) {
                    Ok(l) => accept_unix(l, ctx, builder).await,
                    Err(e) => crate::error!("cannot use an inherited unix listener: {e}"),
                },
            }
        });
    }

    stopped(&mut stop).await;
    // The accept loops see the same signal and drop their listener handles.
    while accept_tasks.join_next().await.is_some() {}
    let open = ctx.open.current();
    if open > 0 {
        crate::debug!("waiting for {open} connection(s) to finish");
    }
    let timeout = Duration::from_secs(ctx.config.workers.graceful_timeout);
    if tokio::time::timeout(timeout, ctx.open.all_closed()).await.is_err() {
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

async fn accept_tcp(listener: tokio::net::TcpListener, ctx: Arc<ServerCtx>, builder: Arc<http1::Builder>) {
    let local = listener.local_addr().ok();
    let mut stop = ctx.stop.clone();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    spawn_connection(stream, ConnInfo { peer: Some(peer), local }, &ctx, &builder);
                }
                Err(e) => accept_failed(e).await,
            },
        }
    }
}

async fn accept_unix(listener: tokio::net::UnixListener, ctx: Arc<ServerCtx>, builder: Arc<http1::Builder>) {
    let mut stop = ctx.stop.clone();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => spawn_connection(stream, ConnInfo { peer: None, local: None }, &ctx, &builder),
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

fn spawn_connection<S>(stream: S, info: ConnInfo, ctx: &Arc<ServerCtx>, builder: &Arc<http1::Builder>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ctx = ctx.clone();
    let builder = builder.clone();
    let open = ctx.open.enter();
    tokio::spawn(async move {
        let first_request = Arc::new(Notify::new());
        let service = {
            let (ctx, first_request) = (ctx.clone(), first_request.clone());
            service_fn(move |req| {
                // Without waiters this only stores a permit: a couple of atomic operations.
                first_request.notify_one();
                // Boxed: hyper keeps the slot for the in-flight future allocated for the
                // connection's lifetime, so an idle keep-alive connection would otherwise
                // hold this future's 1.4 KiB; boxed, it holds a pointer.
                Box::pin(super::service::handle(req, ctx.clone(), info))
            })
        };
        let mut conn = std::pin::pin!(builder.serve_connection(TokioIo::new(stream), service).with_upgrades());
        let mut stop = ctx.stop.clone();
        let result = tokio::select! {
            result = conn.as_mut() => result,
            _ = stopped(&mut stop) => {
                // A connection accepted just before the stop has its first request
                // on the way: closing it as "idle" would fail that request. Give
                // it a moment to arrive, then finish what is in flight and close.
                let grace = Duration::from_secs(ctx.config.http.keep_alive_timeout.min(2));
                let arrived = tokio::time::timeout(grace, first_request.notified());
                tokio::select! {
                    result = conn.as_mut() => result,
                    _ = arrived => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                }
            }
        };
        if let Err(e) = result {
            crate::debug!("connection closed with an error: {e}");
        }
        drop(open);
    });
}
