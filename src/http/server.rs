//! Accepting connections and serving HTTP/1.1 on them, on the worker's I/O thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tokio::sync::Notify;
use std::time::{Duration, Instant};
use tokio::sync::watch;

use super::access_log::Entry;
use super::h1::conn::{self, Transport};
use super::listeners::Inherited;
use super::static_files::StaticFiles;
use crate::config::Config;
use crate::config::access_log_format::Format;
use crate::ipc::{CANCEL_GRACE, StopReason};
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
    /// Set when the worker starts draining, with why.
    pub stop: StopSignal,
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
    pub fn new(config: Arc<Config>, bridge: Arc<Bridge>, static_files: Option<StaticFiles>, stop: StopSignal) -> Self {
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

/// Accepts on every inherited listener until the stop signal, then lets open
/// connections finish their current request (closing idle keep-alive ones at
/// once) for at most the graceful timeout; requests still in the app then are
/// cancelled, and their connections get CANCEL_GRACE to carry the answer.
/// Returns when the drain began.
pub async fn serve(listeners: Vec<Inherited>, ctx: Arc<ServerCtx>) -> Instant {
    let mut stop = ctx.stop.clone();
    let mut accept_tasks = tokio::task::JoinSet::new();
    for listener in listeners {
        let ctx = ctx.clone();
        accept_tasks.spawn(async move {
            match listener {
                Inherited::Tcp(l) => match tokio::net::TcpListener::from_std(l) {
                    Ok(l) => accept_tcp(l, ctx).await,
                    Err(e) => crate::error!("cannot use an inherited TCP listener: {e}"),
                },
                Inherited::Unix(l) => match tokio::net::UnixListener::from_std(l) {
                    Ok(l) => accept_unix(l, ctx).await,
                    Err(e) => crate::error!("cannot use an inherited unix listener: {e}"),
                },
            }
        });
    }

    stopped(&mut stop).await;
    let began = Instant::now();
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
    ctx.bridge.push(crate::worker::bridge::Event::CancelRequests);
    if tokio::time::timeout(CANCEL_GRACE, ctx.open.all_closed()).await.is_err() {
        crate::warn!("Closing {} connection(s) still open", ctx.open.current());
    }
    began
}

/// Becomes `Some(reason)` when the worker starts draining.
pub type StopSignal = watch::Receiver<Option<StopReason>>;

/// Starts the drain, unless it has begun already (the first reason stays).
pub fn begin_stop(stop: &watch::Sender<Option<StopReason>>, reason: StopReason) {
    stop.send_if_modified(|current| {
        let first = current.is_none();
        if first {
            *current = Some(reason);
        }
        first
    });
}

/// Resolves once the drain has begun (or nobody can begin it any more: a shutdown).
pub async fn stopped(stop: &mut StopSignal) -> StopReason {
    loop {
        if let Some(reason) = *stop.borrow_and_update() {
            return reason;
        }
        if stop.changed().await.is_err() {
            return StopReason::Shutdown;
        }
    }
}

async fn accept_tcp(listener: tokio::net::TcpListener, ctx: Arc<ServerCtx>) {
    let local = listener.local_addr().ok();
    let mut stop = ctx.stop.clone();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    spawn_connection(stream, ConnInfo { peer: Some(peer), local }, &ctx);
                }
                Err(e) => accept_failed(e).await,
            },
        }
    }
}

async fn accept_unix(listener: tokio::net::UnixListener, ctx: Arc<ServerCtx>) {
    let mut stop = ctx.stop.clone();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => spawn_connection(stream, ConnInfo { peer: None, local: None }, &ctx),
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

fn spawn_connection<S: Transport>(stream: S, info: ConnInfo, ctx: &Arc<ServerCtx>) {
    let ctx = ctx.clone();
    let open = ctx.open.enter();
    let task = async move {
        conn::serve(stream, ctx, info).await;
        drop(open);
    };
    tokio::spawn(task);
}
