//! The HTTP/1.1 connection driven in-process, as hyper tests its dispatcher:
//! the client is the other end of a `tokio::io::duplex`, the app is a fake on
//! the bridge (no Python, no process), and time is tokio's paused clock, so
//! timeouts cost nothing. What only the real command shows stays in tests/.

use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;

use super::conn;
use crate::bridge::stop::StopReason;
use crate::config::Config;
use crate::http::testing::Harness;

/// One connection under test, its client end, and the fake app behind it.
struct Conn {
    client: DuplexStream,
    stop: watch::Sender<Option<StopReason>>,
    /// Requests the app received, as "METHOD PATH body".
    seen: Arc<std::sync::Mutex<Vec<String>>>,
    done: tokio::task::JoinHandle<()>,
}

fn start(tweak: impl FnOnce(&mut Config)) -> Conn {
    let (client, server) = tokio::io::duplex(256 * 1024);
    let Harness { ctx, stop, seen } = Harness::new(tweak);
    let done = tokio::spawn(async move { drop(conn::serve(server, ctx, Harness::info(), false).await) });
    Conn { client, stop, seen, done }
}

/// One response off the wire: status line, lowercased header lines, body.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| l.split_once(": ").filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v))
    }
}

/// Reads one response (content-length or chunked; HEAD-like when `bodiless`).
async fn answer(client: &mut DuplexStream, buf: &mut Vec<u8>, bodiless: bool) -> Answer {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = client.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed before a response: {:?}", String::from_utf8_lossy(buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    buf.drain(..head_end);
    let status = head[9..12].parse().unwrap();
    let mut a = Answer { status, head, body: Vec::new() };
    if bodiless || status == 304 || status == 204 {
        return a;
    }
    if let Some(len) = a.header("content-length").map(|v| v.parse::<usize>().unwrap()) {
        while buf.len() < len {
            let mut chunk = [0u8; 8192];
            let n = client.read(&mut chunk).await.unwrap();
            assert!(n > 0, "body cut short");
            buf.extend_from_slice(&chunk[..n]);
        }
        a.body = buf.drain(..len).collect();
    }
    a
}

async fn closed(client: &mut DuplexStream) -> bool {
    let mut rest = Vec::new();
    matches!(client.read_to_end(&mut rest).await, Ok(_)) && rest.is_empty()
}

#[tokio::test(start_paused = true)]
async fn keep_alive_serves_request_after_request() {
    let mut c = start(|_| {});
    let mut buf = Vec::new();
    for i in 0..3 {
        c.client.write_all(format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nr{i}").as_bytes()).await.unwrap();
        let a = answer(&mut c.client, &mut buf, false).await;
        assert_eq!((a.status, a.body.as_slice()), (200, format!("r{i}").as_bytes()));
        assert_eq!(a.header("connection"), None, "kept alive");
    }
    assert_eq!(c.seen.lock().unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn pipelined_requests_are_answered_in_order() {
    let mut c = start(|_| {});
    let mut burst = String::new();
    for i in 0..20 {
        burst += &format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n{i:03}");
    }
    c.client.write_all(burst.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    for i in 0..20 {
        let a = answer(&mut c.client, &mut buf, false).await;
        assert_eq!(a.body, format!("{i:03}").as_bytes());
    }
}

#[tokio::test(start_paused = true)]
async fn a_chunked_upload_reaches_the_app_whole() {
    let mut c = start(|_| {});
    c.client.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\n\r\n").await.unwrap();
    let a = answer(&mut c.client, &mut Vec::new(), false).await;
    assert_eq!(a.body, b"hello world");
}

#[tokio::test(start_paused = true)]
async fn smuggling_shapes_never_reach_the_app() {
    for bad in [
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\nX-Hidden: 1\r\n\r\n",
    ] {
        let mut c = start(|_| {});
        c.client.write_all(bad.as_bytes()).await.unwrap();
        let a = answer(&mut c.client, &mut Vec::new(), false).await;
        assert_eq!(a.status, 400, "{bad:?}");
        assert_eq!(a.header("connection"), Some("close"));
        assert!(closed(&mut c.client).await, "{bad:?}: the connection must close after a refusal");
        // A chunked body with a bare LF is refused after the head went to the app; nothing else may.
        let seen = c.seen.lock().unwrap().clone();
        assert!(seen.iter().all(|s| !s.contains("hello")), "{bad:?}: {seen:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn methods_the_app_must_not_see() {
    let mut c = start(|_| {});
    c.client.write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n").await.unwrap();
    let a = answer(&mut c.client, &mut Vec::new(), false).await;
    assert_eq!(a.status, 405);
    assert!(a.header("allow").is_some_and(|v| v.contains("GET")));
    let mut c2 = start(|_| {});
    c2.client.write_all(b"get / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert_eq!(answer(&mut c2.client, &mut Vec::new(), false).await.status, 400);
    assert!(c.seen.lock().unwrap().is_empty() && c2.seen.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_304_announces_the_apps_length_and_sends_no_body() {
    let mut c = start(|_| {});
    let mut buf = Vec::new();
    c.client.write_all(b"GET /not-modified HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let a = answer(&mut c.client, &mut buf, true).await;
    assert_eq!((a.status, a.header("content-length")), (304, Some("11")));
    // The next response starts right after the 304's head: no body bytes in between.
    let b = answer(&mut c.client, &mut buf, false).await;
    assert_eq!((b.status, b.body.as_slice()), (200, &b"ok"[..]));
}

#[tokio::test(start_paused = true)]
async fn a_slow_head_is_cut_off_after_the_keep_alive_timeout() {
    let mut c = start(|c| c.http.keep_alive_timeout = 5);
    c.client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = tokio::time::Instant::now();
    for _ in 0..20 {
        // One more header line a second: never a complete head.
        if c.client.write_all(b"X-Drip: 1\r\n").await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(closed(&mut c.client).await);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(5) && waited < Duration::from_secs(7), "closed after {waited:?}");
    assert!(c.seen.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_stop_closes_an_idle_connection_after_a_short_grace() {
    let mut c = start(|_| {});
    let mut buf = Vec::new();
    c.client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert_eq!(answer(&mut c.client, &mut buf, false).await.status, 200);
    let stopped = tokio::time::Instant::now();
    c.stop.send_replace(Some(StopReason::Restart));
    assert!(closed(&mut c.client).await);
    let waited = stopped.elapsed();
    assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(1), "closed after {waited:?}");
    c.done.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_half_sent_head_does_not_hold_up_a_stop() {
    // Keep-alive timeouts behind load balancers are often a minute or more; a
    // client that sent part of a head must not keep a stopping worker that long.
    let mut c = start(|c| c.http.keep_alive_timeout = 60);
    c.client.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let stopped = tokio::time::Instant::now();
    c.stop.send_replace(Some(StopReason::Shutdown));
    assert!(closed(&mut c.client).await);
    let waited = stopped.elapsed();
    assert!(waited <= Duration::from_secs(2), "held the stop for {waited:?}");
    c.done.await.unwrap();
    assert!(c.seen.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_request_in_flight_at_a_stop_is_served_with_connection_close() {
    let mut c = start(|_| {});
    c.client.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.stop.send_replace(Some(StopReason::Shutdown));
    let a = answer(&mut c.client, &mut Vec::new(), false).await;
    assert_eq!((a.status, a.body.as_slice(), a.header("connection")), (200, &b"slow"[..], Some("close")));
    assert!(closed(&mut c.client).await);
}

#[tokio::test(start_paused = true)]
async fn a_request_sent_just_as_the_stop_begins_is_still_served() {
    let mut c = start(|_| {});
    let mut buf = Vec::new();
    c.client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert_eq!(answer(&mut c.client, &mut buf, false).await.status, 200);
    c.stop.send_replace(Some(StopReason::Restart));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Within the grace: served, with `connection: close`, instead of a reset.
    c.client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let a = answer(&mut c.client, &mut buf, false).await;
    assert_eq!((a.status, a.header("connection")), (200, Some("close")));
}

#[tokio::test]
async fn the_http2_preface_is_handed_over_only_with_prior_knowledge() {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    for prior_knowledge in [true, false] {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let Harness { ctx, seen, .. } = Harness::new(|_| {});
        let served = tokio::spawn(conn::serve(server, ctx, Harness::info(), prior_knowledge));
        client.write_all(PREFACE).await.unwrap();
        if prior_knowledge {
            let handoff = served.await.unwrap().expect("handed over to HTTP/2");
            assert!(handoff.read.starts_with(b"PRI * HTTP/2.0\r\n"), "the bytes read go along");
        } else {
            let mut buf = Vec::new();
            let answer = answer(&mut client, &mut buf, false).await;
            assert_eq!(answer.status, 505, "--http h1 says HTTP/2 is off");
            assert!(served.await.unwrap().is_none());
        }
        assert!(seen.lock().unwrap().is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn a_declared_body_over_the_limit_is_refused_before_the_app() {
    let mut c = start(|c| c.front.body.default = Some(16));
    c.client.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nContent-Length: 17\r\n\r\n").await.unwrap();
    let a = answer(&mut c.client, &mut Vec::new(), false).await;
    assert_eq!((a.status, a.header("connection"), a.header("content-type")), (413, Some("close"), Some("application/json")));
    assert!(String::from_utf8_lossy(&a.body).contains("\"status\":413"), "{a:?}");
    assert!(closed(&mut c.client).await);
    assert!(c.seen.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_chunked_body_is_cut_off_where_it_passes_the_limit() {
    let mut c = start(|c| c.front.body.default = Some(16));
    // Exactly the limit: served.
    let mut buf = Vec::new();
    c.client.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n").await.unwrap();
    let a = answer(&mut c.client, &mut buf, false).await;
    assert_eq!((a.status, a.body.as_slice()), (200, &b"0123456789abcdef"[..]));
    // One byte more, in a later chunk: a 413, the app sees a disconnect (the fake app records only whole bodies).
    c.client.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.client.write_all(b"1\r\nX\r\n0\r\n\r\n").await.unwrap();
    let a = answer(&mut c.client, &mut buf, false).await;
    assert_eq!((a.status, a.header("connection")), (413, Some("close")));
    assert!(String::from_utf8_lossy(&a.body).contains("16 bytes"), "{a:?}");
    assert!(closed(&mut c.client).await);
    assert_eq!(c.seen.lock().unwrap().len(), 1, "only the first request reached the app whole");
}

/// What a connection keeps, in bytes: an idle keep-alive connection's task, and the
/// box every request allocates, fills and frees (2026-12-07: 960 and 1,696 bytes in a
/// release build; the exchange was 5,304 before its state was trimmed, which cost
/// 1,200 instructions per request). Sizes, not timings: a change that makes either
/// state much larger fails here, not only in a benchmark.
#[tokio::test]
async fn idle_and_per_request_states_stay_small() {
    let (_client, server) = tokio::io::duplex(1024);
    let Harness { ctx, .. } = Harness::new(|_| {});
    let idle = std::mem::size_of_val(&conn::serve(server, ctx.clone(), Harness::info(), false));
    assert!(idle <= 1024, "an idle connection's task is {idle} bytes");

    let (_client, server) = tokio::io::duplex(1024);
    let request = http::Request::get("/").body(()).unwrap();
    let crate::http::service::Dispatched::App(call) = crate::http::service::dispatch(request, true, &ctx, &Harness::info()) else {
        panic!("a GET goes to the app");
    };
    let exchange = conn::exchange_state_size(server, ctx.clone(), Harness::info(), call);
    assert!(exchange <= 2048, "a request's exchange state is {exchange} bytes");
}
