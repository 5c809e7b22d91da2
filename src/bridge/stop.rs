//! How a worker's drain is signalled inside the worker, and why it began.

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// How long request tasks cancelled at the graceful timeout get to run their
/// `except CancelledError` and `finally` blocks (a transaction rolled back, a
/// file closed) before the worker moves on to lifespan shutdown.
pub const CANCEL_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Why a worker stops: WebSocket clients are told which (RFC 6455 close codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    /// The server is going away (SIGTERM, SIGINT): close code 1001.
    Shutdown,
    /// The worker is being replaced while the server goes on (SIGHUP, --reload,
    /// --limit-max-requests, SIGTTOU): close code 1012, reconnect now.
    Restart,
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
