//! The HTTP/2 connection driven in-process: the h2 crate's own client on the other
//! end of a `tokio::io::duplex`, the fake app of `http::testing` on the bridge, and
//! tokio's paused clock for the timeouts. Hostile frames the h2 client will not
//! produce are sent by tests/test_http2_attacks.py with Python's h2 library.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use std::time::Duration;

use super::conn;
use crate::bridge::stop::StopReason;
use crate::config::Config;
use crate::http::testing::Harness;

type Client = h2::client::SendRequest<Bytes>;

struct Conn {
    client: Client,
    harness: Harness,
    /// The client's half of the connection: it ends with the connection's error, if any.
    driver: tokio::task::JoinHandle<Result<(), h2::Error>>,
    server: tokio::task::JoinHandle<()>,
}

async fn start(tweak: impl FnOnce(&mut Config), client: h2::client::Builder) -> Conn {
    let (client_io, server_io) = tokio::io::duplex(1024 * 1024);
    let harness = Harness::new(tweak);
    let server = tokio::spawn(conn::serve(server_io, harness.ctx.clone(), Harness::info()));
    let (client, connection) = client.handshake(client_io).await.expect("client handshake");
    let driver = tokio::spawn(connection);
    Conn { client, harness, driver, server }
}

fn get(path: &str) -> Request<()> {
    Request::builder().uri(format!("http://example.test{path}")).body(()).unwrap()
}

/// Sends a request (with `body`, if any) and reads its whole response.
async fn fetch(client: &mut Client, request: Request<()>, body: &[u8]) -> Result<(StatusCode, http::HeaderMap, Vec<u8>), h2::Error> {
    client.clone().ready().await?;
    let (response, mut send) = client.send_request(request, body.is_empty())?;
    if !body.is_empty() {
        send.send_data(Bytes::copy_from_slice(body), true)?;
    }
    let response = response.await?;
    let (parts, mut recv) = response.into_parts();
    let mut out = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk?;
        let _ = recv.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    Ok((parts.status, parts.headers, out))
}

#[tokio::test]
async fn streams_on_one_connection_are_served_concurrently() {
    let c = start(|_| {}, h2::client::Builder::new()).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut client = c.client.clone();
        tasks.push(tokio::spawn(async move {
            let body = format!("stream {i}");
            let request = Request::builder().method(Method::POST).uri("http://example.test/echo").body(()).unwrap();
            fetch(&mut client, request, body.as_bytes()).await.map(|(status, _, echoed)| (status, echoed == body.as_bytes()))
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), (StatusCode::OK, true));
    }
    assert_eq!(c.harness.seen().len(), 50);
}

#[tokio::test]
async fn the_authority_is_the_host_and_the_response_is_framed_for_http2() {
    let mut c = start(|_| {}, h2::client::Builder::new()).await;
    let (status, headers, body) = fetch(&mut c.client, get("/host"), b"").await.unwrap();
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"example.test"[..]), ":authority reaches the app as Host");
    assert_eq!(headers.get("content-length").unwrap(), "12");
    assert!(headers.contains_key("date") && headers.get("server").unwrap() == "ferrogate");
}

#[tokio::test]
async fn connect_and_lowercase_methods_never_reach_the_app() {
    let mut c = start(|_| {}, h2::client::Builder::new()).await;
    let lowercase = Request::builder().method("get").uri("http://example.test/").body(()).unwrap();
    let (status, _, _) = fetch(&mut c.client, lowercase, b"").await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(c.harness.seen().is_empty());
    let (status, _, _) = fetch(&mut c.client, get("/after"), b"").await.unwrap();
    assert_eq!(status, StatusCode::OK, "the connection goes on");
}

#[tokio::test]
async fn the_stream_limit_is_announced_in_settings() {
    let mut c = start(|c| c.http.h2_max_concurrent_streams = 7, h2::client::Builder::new()).await;
    fetch(&mut c.client, get("/"), b"").await.unwrap();
    assert_eq!(c.client.current_max_send_streams(), 7, "SETTINGS_MAX_CONCURRENT_STREAMS");
}

#[tokio::test(start_paused = true)]
async fn a_stop_lets_open_streams_finish_then_closes_with_goaway() {
    let mut c = start(|_| {}, h2::client::Builder::new()).await;
    let mut slow_client = c.client.clone();
    let slow = tokio::spawn(async move { fetch(&mut slow_client, get("/slow"), b"").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.harness.stop.send(Some(StopReason::Shutdown)).unwrap();
    let (status, _, body) = slow.await.unwrap().expect("the stream open at the stop is served");
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"slow"[..]));
    tokio::time::timeout(Duration::from_secs(5), &mut c.server).await.expect("the connection closes once its streams are done").unwrap();
    assert!(fetch(&mut c.client, get("/"), b"").await.is_err(), "no new stream after the GOAWAY");
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_closed_after_the_keep_alive_timeout() {
    let mut c = start(|c| c.http.keep_alive_timeout = 5, h2::client::Builder::new()).await;
    fetch(&mut c.client, get("/"), b"").await.unwrap();
    tokio::time::timeout(Duration::from_secs(12), &mut c.server).await.expect("closed after about 5 s idle").unwrap();
    let _ = c.driver.await;
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_opens_its_window_has_the_stream_reset_after_the_io_timeout() {
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(0);
    let c = start(|c| c.http.io_timeout = 3, builder).await;
    let client = c.client.clone().ready().await.unwrap();
    let mut client = client;
    let (response, _) = client.send_request(get("/big"), true).unwrap();
    let response = response.await.unwrap();
    let mut recv = response.into_body();
    let outcome = tokio::time::timeout(Duration::from_secs(10), recv.data()).await.expect("the stream ended within the io timeout");
    let reset = outcome.expect("an error, not an end").expect_err("no data can come with a zero window");
    assert_eq!(reset.reason(), Some(h2::Reason::CANCEL), "{reset}");
    // The stream went, not the connection (a zero window holds every stream's data,
    // so another request could not complete here either: the black-box tests show others served).
    assert!(c.client.clone().ready().await.is_ok(), "the connection is still open");
}

#[tokio::test]
async fn a_client_resetting_most_of_its_streams_is_sent_away() {
    let c = start(|_| {}, h2::client::Builder::new()).await;
    let mut client = c.client.clone();
    let mut refused = None;
    for _ in 0..1000 {
        client = match client.ready().await {
            Ok(client) => client,
            Err(e) => {
                refused = Some(e);
                break;
            }
        };
        match client.send_request(get("/slow"), true) {
            // Dropped at once: the client sends RST_STREAM(CANCEL).
            Ok((response, stream)) => drop((response, stream)),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
        tokio::task::yield_now().await;
    }
    let ended = match refused {
        Some(e) => e,
        None => tokio::time::timeout(Duration::from_secs(5), c.driver).await.expect("the connection ends").unwrap().expect_err("with an error"),
    };
    assert_eq!(ended.reason(), Some(h2::Reason::ENHANCE_YOUR_CALM), "{ended}");
    let reached = c.harness.seen().len();
    assert!(reached < 300, "{reached} reset streams reached the app");
}
