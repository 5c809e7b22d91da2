//! One HTTP/2 connection: the settings it announces, the loop that accepts its
//! streams, and how it ends (GOAWAY when the worker stops, when it idles past
//! --timeout-keep-alive, when the peer stops answering PINGs or floods resets).

use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

use super::stream;
use crate::bridge::stop::stopped;
use crate::http::ctx::{ConnInfo, ServerCtx};
use crate::http::h1::conn::Transport;

/// A stream may have this much request body received ahead of the app (its flow-control
/// window): a large upload sits in memory no more than this per stream.
const STREAM_WINDOW: u32 = 256 * 1024;
/// ... and a connection this much over all its streams, so that a few stalled uploads
/// (four of them) never stop the others.
const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Response bytes buffered per stream ahead of the client's window.
const SEND_BUFFER: usize = 256 * 1024;
/// How often a closing connection looks whether its last stream is done.
const CLOSING_CHECK: Duration = Duration::from_millis(100);
/// Streams the client may reset before a response, counted per connection, before the
/// rapid-reset guard looks at the ratio (CVE-2023-44487: HEADERS then RST_STREAM, in a loop).
const RESETS_TOLERATED: u64 = 100;

/// What the streams of one connection report back to it.
#[derive(Default)]
pub(super) struct ConnStats {
    /// Streams accepted.
    streams: AtomicU64,
    /// Streams the client reset before their response was complete.
    resets: AtomicU64,
}

impl ConnStats {
    pub(super) fn reset_by_client(&self) {
        self.resets.fetch_add(1, Ordering::Relaxed);
    }

    /// A client resetting most of what it opens, many times over, is attacking (a
    /// browser cancels a few streams when a page is left, not hundreds out of hundreds).
    fn abusive(&self) -> bool {
        let resets = self.resets.load(Ordering::Relaxed);
        resets > RESETS_TOLERATED && resets * 2 > self.streams.load(Ordering::Relaxed)
    }
}

/// Serves HTTP/2 on an established connection (the preface is next on `io`) until
/// it closes.
pub async fn serve<IO: Transport>(io: IO, ctx: Arc<ServerCtx>, info: ConnInfo) {
    let http = &ctx.config.http;
    let keep_alive = Duration::from_secs(http.keep_alive_timeout);
    let io_timeout = Duration::from_secs(http.io_timeout);
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(http.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(http.max_header_size).unwrap_or(u32::MAX))
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_send_buffer_size(SEND_BUFFER);
    if ctx.config.ws.enabled {
        // SETTINGS_ENABLE_CONNECT_PROTOCOL: browsers then open WebSockets as streams (RFC 8441).
        builder.enable_connect_protocol();
    }
    // The preface and SETTINGS exchange get the time a first HTTP/1.1 request would.
    let mut conn = match tokio::time::timeout(keep_alive, builder.handshake::<_, Bytes>(io)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return crate::debug!("HTTP/2 handshake failed: {e}"),
        Err(_) => return,
    };
    let info = Arc::new(info);
    let stats = Arc::new(ConnStats::default());
    let mut stop = Some(ctx.stop.clone());
    // One future for the connection's life: a PING in flight is never abandoned.
    let mut liveness = std::pin::pin!(Liveness::new(conn.ping_pong(), keep_alive, io_timeout).dead());
    // Checked every --timeout-keep-alive from the last new stream: a connection with no
    // stream open then is closed, as HTTP/1.1 closes an idle keep-alive one.
    let mut idle_check = Instant::now() + keep_alive;
    let mut closing = false;
    loop {
        let stopping = async {
            match stop.as_mut() {
                Some(s) => drop(stopped(s).await),
                None => std::future::pending().await,
            }
        };
        // Once closing, the connection ends when its last stream does.
        let next_check = if closing { Instant::now() + CLOSING_CHECK } else { idle_check };
        tokio::select! {
            accepted = conn.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    stats.streams.fetch_add(1, Ordering::Relaxed);
                    if stats.abusive() {
                        crate::warn!("{}: HTTP/2 client reset {} of its {} streams; closing the connection (rapid reset)", peer(&info), stats.resets.load(Ordering::Relaxed), stats.streams.load(Ordering::Relaxed));
                        conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                        continue;
                    }
                    idle_check = Instant::now() + keep_alive;
                    crate::io_tasks::spawn(stream::serve(request, respond, ctx.clone(), info.clone(), stats.clone()));
                }
                Some(Err(e)) => {
                    log_end(&info, &e);
                    break;
                }
                // Closed, or gone away with every stream finished.
                None => break,
            },
            () = stopping => {
                stop = None;
                closing = true;
                close_when_idle(&mut conn);
            }
            () = tokio::time::sleep_until(next_check) => {
                idle_check = Instant::now() + keep_alive;
                if closing || !conn.has_streams() {
                    closing = true;
                    close_when_idle(&mut conn);
                }
            }
            () = &mut liveness => {
                crate::debug!("{}: no PING answer within {} s; closing the HTTP/2 connection", peer(&info), io_timeout.as_secs());
                break;
            }
        }
    }
}

/// Ends a connection that is to close: at once (GOAWAY with the last stream it took)
/// when no stream is open, else gracefully: GOAWAY, and open streams finish. The
/// graceful path alone would wait for the client to answer a PING before closing,
/// which a pooled client between requests never reads.
fn close_when_idle<IO: Transport>(conn: &mut h2::server::Connection<IO, Bytes>) {
    if conn.has_streams() {
        conn.graceful_shutdown();
    } else {
        conn.abrupt_shutdown(h2::Reason::NO_ERROR);
    }
}

fn peer(info: &ConnInfo) -> String {
    info.peer.map_or_else(|| "unix socket".into(), |p| p.to_string())
}

/// How a connection ended, at the level it deserves: a protocol error of the client's is
/// its own business (debug), a flood we cut off is worth a warning.
fn log_end(info: &ConnInfo, e: &h2::Error) {
    if e.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) {
        crate::warn!("{}: HTTP/2 connection closed for abuse: {e}", peer(info));
    } else if !e.is_io() {
        crate::debug!("{}: HTTP/2 connection error: {e}", peer(info));
    }
}

/// PINGs the peer every interval and gives up on it if no answer comes within the
/// patience: a peer that vanished (no FIN, no RST) or stopped reading is noticed
/// without waiting for TCP.
struct Liveness {
    pinger: Option<h2::PingPong>,
    interval: Duration,
    patience: Duration,
}

impl Liveness {
    fn new(pinger: Option<h2::PingPong>, interval: Duration, patience: Duration) -> Self {
        Liveness { pinger, interval, patience }
    }

    /// Resolves only when the peer failed to answer a PING in time.
    async fn dead(mut self) {
        let Some(pinger) = self.pinger.as_mut() else { return std::future::pending().await };
        loop {
            tokio::time::sleep(self.interval).await;
            if pinger.send_ping(h2::Ping::opaque()).is_err() {
                // The connection is closing: its own end comes through accept().
                return std::future::pending().await;
            }
            let pong = std::future::poll_fn(|cx| pinger.poll_pong(cx));
            match tokio::time::timeout(self.patience, pong).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return std::future::pending().await,
                Err(_) => return,
            }
        }
    }
}
