//! The worker's end of its channel to the master: orders in,
//! readiness, heartbeats and retirement requests out.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

use crate::bridge::Event;
use crate::bridge::stop::begin_stop;
use crate::http::ctx::ServerCtx;
use crate::ipc::{self, StopReason, ToMaster, ToWorker};

/// How often the strikes counted since the last report go to the master.
const STRIKES_EVERY: Duration = Duration::from_millis(250);

pub async fn run(channel: std::os::unix::net::UnixStream, ctx: Arc<ServerCtx>, stop: watch::Sender<Option<StopReason>>) {
    let channel = match channel.set_nonblocking(true).and_then(|_| tokio::net::UnixStream::from_std(channel)) {
        Ok(c) => c,
        Err(e) => {
            crate::error!("channel to the master unusable ({e}); stopping");
            begin_stop(&stop, StopReason::Shutdown);
            return;
        }
    };
    let (read, mut write) = channel.into_split();
    let _ = write.write_all(&ipc::encode(&ToMaster::Ready)).await;

    let orders = {
        let stop = stop.clone();
        let ctx = ctx.clone();
        async move {
            let mut lines = BufReader::new(read).lines();
            let reason = loop {
                match lines.next_line().await {
                    Ok(Some(line)) => match ipc::decode::<ToWorker>(&line) {
                        Ok(ToWorker::Stop(reason)) => break reason,
                        Ok(ToWorker::Tls(material)) => match ctx.tls.as_ref().map(|tls| tls.update(&material)) {
                            Some(Err(e)) => crate::error!("keeping the current certificates: the new ones are unusable: {e}"),
                            Some(Ok(())) => crate::debug!("TLS material updated ({} certificate(s))", material.certs.len()),
                            None => {}
                        },
                        Ok(ToWorker::ReopenLogs) => reopen_logs(&ctx, "the master"),
                        Ok(ToWorker::Bans(list)) => ctx.bans.replace(list),
                        Ok(ToWorker::Config(_)) => {}
                        Err(e) => crate::warn!("{e}"),
                    },
                    // The master is gone: nobody will replace us or route to us for long; wind down.
                    Ok(None) | Err(_) => break StopReason::Shutdown,
                }
            };
            begin_stop(&stop, reason);
        }
    };
    crate::io_tasks::spawn(orders);

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let mut sigusr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).ok();
    let limit = max_requests_with_jitter(ctx.config.workers.max_requests, ctx.config.workers.max_requests_jitter);
    let mut retiring = false;
    let mut last_ticks = ctx.bridge.ticks.load(Ordering::Relaxed);
    let mut every_second = tokio::time::interval(Duration::from_secs(1));
    let mut stopping = stop.subscribe();
    // Strikes toward bans go to the master in batches, not one message per response.
    let mut strikes = tokio::time::interval(STRIKES_EVERY);
    loop {
        let mut report_strikes = false;
        tokio::select! {
            _ = every_second.tick() => {}
            _ = strikes.tick(), if ctx.bans.enabled() => {
                report_strikes = true;
            }
            _ = received(&mut sigterm) => {
                begin_stop(&stop, StopReason::Shutdown);
            }
            // `systemctl kill -s USR1` reaches the workers as well as the master; the
            // master's ReopenLogs follows, and reopening twice is harmless.
            _ = received(&mut sigusr1) => {
                reopen_logs(&ctx, "SIGUSR1");
                continue;
            }
            _ = stopping.wait_for(Option::is_some) => return,
        }
        if report_strikes {
            let batch = ctx.bans.take_strikes();
            if !batch.is_empty() {
                let _ = write.write_all(&ipc::encode(&ToMaster::Strikes(batch))).await;
            }
            continue;
        }
        // A heartbeat vouches for the event loop, not for this thread: only send one if the loop drained since the last.
        let ticks = ctx.bridge.ticks.load(Ordering::Relaxed);
        let served = ctx.served.load(Ordering::Relaxed);
        if ticks != last_ticks {
            last_ticks = ticks;
            let _ = write.write_all(&ipc::encode(&ToMaster::Heartbeat { served })).await;
        }
        ctx.bridge.push(Event::Ping);
        if limit > 0 && served >= limit && !retiring {
            retiring = true;
            crate::info!("served {served} requests (--limit-max-requests); asking to be replaced");
            let _ = write.write_all(&ipc::encode(&ToMaster::Retire { served })).await;
        }
    }
}

/// A signal's next delivery; never, when its handler could not be installed.
async fn received(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// The log files by path again (logrotate moved them away); the line says so in the new file.
fn reopen_logs(ctx: &ServerCtx, asked_by: &str) {
    match crate::log::reopen_in_worker(&ctx.config.log) {
        Ok(()) => crate::info!("Reopened the log files (asked by {asked_by})"),
        Err(e) => crate::error!("keeping the log files in use: {e}"),
    }
}

fn max_requests_with_jitter(limit: u64, jitter: u64) -> u64 {
    if limit == 0 || jitter == 0 {
        return limit;
    }
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos() as u64).unwrap_or(0);
    let mixed = (seed ^ u64::from(std::process::id())).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    limit + (mixed >> 32) % (jitter + 1)
}
