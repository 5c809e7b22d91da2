//! The fake app and worker context behind the in-process connection tests of both
//! protocols: no Python, no process, requests answered on the bridge by path.

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, StatusCode};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use crate::bridge::exchange::{Body, Exchange, HttpIn, ResponseEvent};
use crate::bridge::stop::StopReason;
use crate::bridge::{Bridge, Event};
use crate::config::Config;
use crate::http::ctx::{ConnInfo, ServerCtx};

pub fn config(tweak: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config::default();
    config.log.access_log = false;
    tweak(&mut config);
    config
}

/// A worker's context with the fake app on its bridge.
pub struct Harness {
    pub ctx: Arc<ServerCtx>,
    pub stop: watch::Sender<Option<StopReason>>,
    /// Requests the app received, as "METHOD PATH body".
    pub seen: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Harness {
    pub fn new(tweak: impl FnOnce(&mut Config)) -> Self {
        let bridge = Bridge::new().expect("eventfd");
        let (stop, stop_rx) = watch::channel(None);
        let ctx = Arc::new(ServerCtx::new(Arc::new(config(tweak)), bridge.clone(), None, None, stop_rx));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        tokio::spawn(fake_app(bridge, seen.clone()));
        Harness { ctx, stop, seen }
    }

    pub fn info() -> ConnInfo {
        ConnInfo { peer: Some("127.0.0.1:40000".parse().unwrap()), local: None, scheme: crate::bridge::exchange::Scheme::Http, tls: None }
    }

    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// The app: reads each request's whole body, then answers by path.
/// `/echo` echoes the body, `/not-modified` is a 304 declaring 11 bytes,
/// `/slow` answers after 10 s (paused clock), `/host` with the Host header the app
/// got, `/big` with 1 MiB, anything else "ok".
async fn fake_app(bridge: Arc<Bridge>, seen: Arc<std::sync::Mutex<Vec<String>>>) {
    loop {
        while let Some(event) = bridge.pop() {
            if let Event::Request(ex) = event {
                tokio::spawn(serve_one(ex, seen.clone()));
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn serve_one(ex: Arc<Exchange>, seen: Arc<std::sync::Mutex<Vec<String>>>) {
    let mut body = BytesMut::new();
    loop {
        let next = ex.lock().next_http();
        match next {
            Some(HttpIn::Body { chunks, more }) => {
                chunks.iter().for_each(|c| body.extend_from_slice(c));
                if !more {
                    break;
                }
                ex.wants_more.notify_one();
            }
            Some(HttpIn::Disconnect) => return,
            None => {
                ex.wants_more.notify_one();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    let path = ex.head.uri.path().to_string();
    seen.lock().unwrap().push(format!("{} {} {}", ex.head.method, path, String::from_utf8_lossy(&body)));
    let respond = |status: u16, headers: Vec<(http::HeaderName, HeaderValue)>, body: Bytes| {
        let _ = ex.response.send(ResponseEvent::Start { status: StatusCode::from_u16(status).unwrap(), headers, body: Body::Full(body) });
    };
    match path.as_str() {
        "/echo" => respond(200, vec![], body.freeze()),
        "/not-modified" => respond(304, vec![(http::header::CONTENT_LENGTH, HeaderValue::from_static("11"))], Bytes::new()),
        "/host" => respond(200, vec![], Bytes::from(ex.head.headers.get(http::header::HOST).map_or(Vec::new(), |h| h.as_bytes().to_vec()))),
        "/big" => respond(200, vec![], Bytes::from(vec![b'x'; 1024 * 1024])),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(10)).await;
            respond(200, vec![], Bytes::from_static(b"slow"));
        }
        _ => respond(200, vec![], Bytes::from_static(b"ok")),
    }
}

