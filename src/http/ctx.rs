//! What the connections of a worker share: the configuration, the bridge to
//! the event loop, counters, the stop signal, and what is known of each
//! connection once accepted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tokio::sync::Notify;

use super::access_log::Entry;
use crate::config::access_log_format::Format;
use super::static_files::StaticFiles;
use crate::bridge::Bridge;
use crate::bridge::exchange::{Scheme, TlsInfo};
use crate::bridge::stop::StopSignal;
use crate::config::Config;

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
    /// Strict-Transport-Security for responses on TLS connections.
    pub hsts: Option<http::HeaderValue>,
    /// The --error-page bodies, for the responses ferrogate writes itself.
    pub error_pages: super::error_page::Pages,
    /// --static mounts, answered before the app.
    pub static_files: Option<StaticFiles>,
    /// Response compression; None with --no-compress.
    pub compress: Option<super::compress::Compression>,
    /// Set when the worker starts draining, with why.
    pub stop: StopSignal,
    /// Connections and WebSocket sessions still open: a stop waits for them.
    pub open: Arc<OpenCount>,
    /// The TLS handshake and certificates, when a listener speaks TLS.
    pub tls: Option<Arc<crate::tls::acceptor::Acceptor>>,
    /// --rate-limit: the buckets (the worker puts the master's shared table in).
    pub rate: super::rate_limit::Limiter,
    /// --ban-after: the master's ban list, and the strikes to report.
    pub bans: super::bans::Bans,
    /// This worker's seat on the master's board, to spread connections over the
    /// workers; None when it has none (the worker takes every connection it can).
    pub seat: Option<Arc<super::balance::Seat>>,
}

/// A count of open connections that a stop can wait on, and that the worker's seat on
/// the board shows its peers.
#[derive(Default)]
pub struct OpenCount {
    count: AtomicUsize,
    zero: Notify,
    seat: Option<Arc<super::balance::Seat>>,
}

/// One open connection or WebSocket session; dropping it closes the count.
pub struct OpenGuard(Arc<OpenCount>);

impl OpenCount {
    pub fn posted_to(seat: Option<Arc<super::balance::Seat>>) -> OpenCount {
        OpenCount { seat, ..OpenCount::default() }
    }

    pub fn enter(self: &Arc<Self>) -> OpenGuard {
        let open = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        self.post(open);
        OpenGuard(self.clone())
    }

    fn post(&self, open: usize) {
        if let Some(seat) = &self.seat {
            seat.post(open);
        }
    }

    pub fn current(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    pub async fn all_closed(&self) {
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
        let open = self.0.count.fetch_sub(1, Ordering::AcqRel) - 1;
        self.0.post(open);
        if open == 0 {
            self.0.zero.notify_waiters();
        }
    }
}

impl ServerCtx {
    pub fn new(config: Arc<Config>, bridge: Arc<Bridge>, static_files: Option<StaticFiles>, tls: Option<Arc<crate::tls::acceptor::Acceptor>>, stop: StopSignal) -> Self {
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
        if config.front.security_headers {
            extra_headers.extend(super::error_page::security_headers());
        }
        let error_pages = super::error_page::Pages::new(&config.front.error_pages);
        let hsts = config.tls.as_ref().and_then(|t| t.hsts.as_deref()).and_then(|v| http::HeaderValue::from_str(v).ok());
        // A table of this process's own; a worker swaps in the master's shared one.
        let rate = super::rate_limit::Limiter::new(&config.front.rate, None).unwrap_or_else(|e| {
            crate::error!("{e}; requests are not rate-limited");
            super::rate_limit::Limiter::off()
        });
        let bans = super::bans::Bans::new(&config.front.bans);
        let compress = super::compress::Compression::new(&config.front.compress);
        ServerCtx {
            hsts,
            compress,
            config,
            bridge,
            access_log,
            active: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            extra_headers,
            error_pages,
            static_files,
            stop,
            open: Arc::new(OpenCount::default()),
            tls,
            rate,
            bans,
            seat: None,
        }
    }

    pub fn log_access(&self, entry: &Entry, status: u16, bytes: u64) {
        if let Some(format) = &self.access_log {
            crate::log::write_access_line(entry.line(format, status, bytes).as_bytes());
        }
    }
}

/// What is known of one accepted connection.
#[derive(Clone)]
pub struct ConnInfo {
    /// None for unix-socket peers.
    pub peer: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    /// What the connection itself is (before any proxy header says otherwise).
    pub scheme: Scheme,
    /// What its TLS handshake established (None on plain connections).
    pub tls: Option<Arc<TlsInfo>>,
}
