//! File bodies on a real loopback TCP socket (sendfile) and on an in-memory pipe
//! (pread + writev): the same bytes on the wire, and the same end when the file
//! is shorter than the length the head announced.

use http::{Response, Version};
use std::io::Write;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::sink::{Sink, Transport};
use super::write::{WriteOpts, write_response};
use crate::http::body::{Kind, ResponseBody};

const OPTS: WriteOpts = WriteOpts { version: Version::HTTP_11, is_head: false, date: false, io_timeout: Duration::from_secs(5) };

/// Nine sendfile chunks and a bit: the loop, not one lucky call, and past `CORK_MIN`.
const LEN: usize = 9 * 1024 * 1024 + 4099;

fn file_of(bytes: &[u8]) -> std::fs::File {
    let mut file = tempfile();
    file.write_all(bytes).unwrap();
    file
}

fn tempfile() -> std::fs::File {
    let path = std::env::temp_dir().join(format!("ferrogate-write-test-{}-{}", std::process::id(), rand_suffix()));
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    file
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::Instant::now())
}

fn content() -> Vec<u8> {
    (0..LEN).map(|i| (i * 7 % 251) as u8).collect()
}

/// A response whose body is `remaining` bytes of `file` from `offset`.
fn file_response(file: std::fs::File, offset: u64, remaining: u64) -> Response<ResponseBody> {
    let body = ResponseBody::new(Kind::File { file, offset, remaining }, 200, None, None);
    let mut response = Response::new(body);
    response.headers_mut().insert("content-type", "application/octet-stream".parse().unwrap());
    response
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (server, client)
}

/// Writes the response on `wr`, then shuts it down, while `rd` reads all it gets.
async fn send<W: Sink, R: AsyncRead + Unpin>(mut wr: W, mut rd: R, response: Response<ResponseBody>) -> (bool, bool, Vec<u8>) {
    let reader = async move {
        let mut got = Vec::new();
        rd.read_to_end(&mut got).await.unwrap();
        got
    };
    let writer = async move {
        let mut keep_alive = true;
        let ok = write_response(&mut wr, response, OPTS, &mut keep_alive).await;
        let _ = wr.shutdown().await;
        (ok, keep_alive)
    };
    let ((ok, keep_alive), got) = tokio::join!(writer, reader);
    (ok, keep_alive, got)
}

fn body_of(wire: &[u8]) -> (&str, &[u8]) {
    let end = wire.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    (std::str::from_utf8(&wire[..end]).unwrap(), &wire[end..])
}

#[tokio::test]
async fn a_plain_socket_is_sent_files_and_a_pipe_is_written_them_the_same_bytes() {
    let bytes = content();
    let (server, client) = tcp_pair().await;
    assert!(server.socket().is_some(), "TCP takes sendfile");
    let (ok, keep_alive, tcp_wire) = send(server, client, file_response(file_of(&bytes), 0, LEN as u64)).await;
    assert!(ok && keep_alive);

    let (pipe_server, pipe_client) = tokio::io::duplex(64 * 1024);
    assert!(pipe_server.socket().is_none(), "an in-memory pipe has no descriptor");
    let (ok, _, pipe_wire) = send(pipe_server, pipe_client, file_response(file_of(&bytes), 0, LEN as u64)).await;
    assert!(ok);

    let (head, body) = body_of(&tcp_wire);
    assert!(head.contains(&format!("content-length: {LEN}\r\n")), "{head}");
    assert!(body == bytes, "sendfile sent {} bytes, not the file", body.len());
    assert_eq!(tcp_wire, pipe_wire);
}

#[tokio::test]
async fn a_range_is_sent_from_its_offset_through_the_borrowed_half() {
    let bytes = content();
    let (start, len) = (100_003u64, 2 * 1024 * 1024u64);
    let (mut server, client) = tcp_pair().await;
    let (_rd, wr) = server.halves();
    assert!(wr.socket().is_some(), "the write half of a split TCP stream still takes sendfile");
    let (ok, keep_alive, wire) = send(wr, client, file_response(file_of(&bytes), start, len)).await;
    assert!(ok && keep_alive);
    let (_, body) = body_of(&wire);
    assert!(body == &bytes[start as usize..(start + len) as usize]);
}

#[tokio::test]
async fn a_file_shorter_than_announced_ends_the_connection_after_what_it_had() {
    let bytes = content();
    let (server, client) = tcp_pair().await;
    // The head announces more than the file holds (it shrank after the open).
    let (ok, keep_alive, wire) = send(server, client, file_response(file_of(&bytes), 0, LEN as u64 + 10)).await;
    assert!(!ok && !keep_alive, "the connection cannot carry another response");
    let (head, body) = body_of(&wire);
    assert!(head.contains(&format!("content-length: {}\r\n", LEN + 10)), "{head}");
    assert!(body == bytes, "what the file had went out, and nothing else");
}
