//! Writing on an HTTP/1.1 connection: a response head, then its body framed
//! as the body itself says (its announced length, else chunked).

use http::{Response, StatusCode, Version, header};
use http_body::Body as _;
use std::io::IoSlice;
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::sink::{Corked, Sink, Socket};

use crate::codec::h1::encode::{self, BodyFraming};
use crate::codec::headers as scan;
use crate::http::body::ResponseBody;

/// Writes a response: head, then the body framed as decided. Returns false if
/// the connection can no longer be used (write failed, or the body broke off).
/// `keep_alive` comes in as what the request allows and goes out as what the
/// response allows.
#[derive(Clone, Copy)]
pub(super) struct WriteOpts {
    pub version: Version,
    pub is_head: bool,
    pub date: bool,
    /// A write that makes no progress for this long ends the connection.
    pub io_timeout: Duration,
}

/// The head is encoded when this is called, and the returned future sends it and the
/// body. Split so that the future holds only what the sending needs: the connection's
/// per-request future embeds this one, and every byte of it is allocated, moved and
/// freed for each request.
pub(super) fn write_response<'a, W: Sink>(
    wr: &'a mut W,
    response: Response<ResponseBody>,
    opts: WriteOpts,
    keep_alive: &'a mut bool,
) -> impl Future<Output = bool> + Send + 'a {
    let (parts, mut body) = response.into_parts();
    let framing = encode::framing(parts.status, opts.is_head, opts.version, body.declared_length(), body.size_hint().exact());
    let app_closes = scan::all(&parts.headers, &header::CONNECTION).any(|v| v.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close")));
    let upgrade = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    *keep_alive &= !app_closes && framing != BodyFraming::UntilClose;
    let connection = match () {
        _ if upgrade => None,
        _ if !*keep_alive => Some("close"),
        _ if opts.version == Version::HTTP_10 => Some("keep-alive"),
        _ => None,
    };
    let mut head = Vec::with_capacity(256);
    encode::head(&mut head, opts.version, parts.status, &parts.headers, framing, connection, opts.date);
    drop(parts);
    let io_timeout = opts.io_timeout;
    // An async block, not an async fn: a fn's arguments would be stored twice in its
    // state (as arguments, then as locals).
    async move {
        if matches!(framing, BodyFraming::Empty | BodyFraming::Announced(_)) {
            // No body goes on the wire (HEAD, 204, 304), as the protocol says.
            let ok = write_all_vectored(wr, &mut [IoSlice::new(&head)], io_timeout).await.is_ok();
            if ok && !body.discard(io_timeout).await {
                *keep_alive = false;
            }
            return ok;
        }
        if let BodyFraming::Length(n) = framing
            && n >= SENDFILE_MIN
            && let Some(socket) = wr.socket()
            && body.file_part().is_some_and(|(_, _, remaining)| remaining == n)
        {
            let sent = send_file(socket, &head, &mut body, io_timeout).await;
            *keep_alive &= sent.is_ok();
            return sent.is_ok();
        }
        let mut head = Some(head);
        let mut sent = 0u64;
        loop {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            let data = match frame {
                None => break,
                Some(Err(_)) => {
                    // The body broke off: what went out stays, the framing cannot be completed.
                    if let Some(h) = head.take() {
                        let _ = write_all_vectored(wr, &mut [IoSlice::new(&h)], io_timeout).await;
                    }
                    *keep_alive = false;
                    return false;
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(d) if !d.is_empty() => d,
                    _ => continue,
                },
            };
            if let BodyFraming::Length(n) = framing
                && sent + data.len() as u64 > n
            {
                // More than announced: never put it on the wire as the next "response".
                *keep_alive = false;
                return false;
            }
            sent += data.len() as u64;
            let end = body.is_end_stream();
            let mut size_line = [0u8; 20];
            let chunked = framing == BodyFraming::Chunked;
            let size_len = if chunked { chunk_size_line(&mut size_line, data.len()) } else { 0 };
            let trailer: &[u8] = match (chunked, end) {
                (true, true) => b"\r\n0\r\n\r\n",
                (true, false) => b"\r\n",
                _ => b"",
            };
            let head_bytes = head.take();
            let mut slices = [
                IoSlice::new(head_bytes.as_deref().unwrap_or_default()),
                IoSlice::new(&size_line[..size_len]),
                IoSlice::new(&data),
                IoSlice::new(trailer),
            ];
            if write_all_vectored(wr, &mut slices, io_timeout).await.is_err() {
                return false;
            }
            if end {
                return finish(body, framing, sent, keep_alive);
            }
        }
        let tail: &[u8] = if framing == BodyFraming::Chunked { b"0\r\n\r\n" } else { b"" };
        let head_bytes = head.take();
        let mut slices = [IoSlice::new(head_bytes.as_deref().unwrap_or_default()), IoSlice::new(tail)];
        if write_all_vectored(wr, &mut slices, io_timeout).await.is_err() {
            return false;
        }
        finish(body, framing, sent, keep_alive)

    }
}

/// File bodies at least this long (a page) go out by sendfile(2) on a plain socket:
/// a send of the head and a sendfile are as many system calls as a pread and a writev,
/// without copying the file through this process. 10 KiB static files: 9.3-12.0 ->
/// 8.3-8.7 us of CPU per request (A/B, docs/architecture.md).
const SENDFILE_MIN: u64 = 4 * 1024;
/// At most this much per sendfile call: on a page-cache miss the call waits for the
/// disk, and the I/O thread serves every other connection; this bounds that wait.
const SENDFILE_CHUNK: u64 = 1 << 20;

/// Files at least this long are sent corked (TCP_CORK): only full segments leave,
/// where TCP_NODELAY would push a short one at the end of every sendfile call.
/// Measured on loopback (docs/architecture.md): a 100 MiB download went from
/// ~1,900 to ~2,800 MiB/s and from 48 to 34 ms of CPU corked, while 1 MiB files
/// on 64 keep-alive connections went from ~9,400 to ~2,900 requests/s.
const CORK_MIN: u64 = 8 << 20;

/// The head (MSG_MORE: it leaves with the file's first bytes), then the file,
/// straight from the page cache to the socket. The length was
/// announced: a file that shrank meanwhile ends the connection.
async fn send_file(socket: &dyn Socket, head: &[u8], body: &mut ResponseBody, timeout: Duration) -> std::io::Result<()> {
    let _corked = body.file_part().is_some_and(|(_, _, remaining)| remaining >= CORK_MIN).then(|| Corked::new(socket));
    let mut head = head;
    while !head.is_empty() {
        let n = timed(timeout, std::future::poll_fn(|cx| socket.poll_send_more(cx, head))).await?;
        head = &head[n..];
    }
    while let Some((file, mut offset, remaining)) = body.file_part().filter(|&(_, _, remaining)| remaining > 0) {
        let fd = std::os::fd::AsFd::as_fd(file);
        let len = remaining.min(SENDFILE_CHUNK) as usize;
        let n = timed(timeout, std::future::poll_fn(|cx| socket.poll_send_file(cx, fd, &mut offset, len))).await?;
        if n == 0 {
            return Err(std::io::Error::other("file shrank while being sent"));
        }
        body.file_sent(n as u64);
    }
    Ok(())
}

/// A write that makes no progress for `timeout` fails.
async fn timed<T>(timeout: Duration, write: impl Future<Output = std::io::Result<T>>) -> std::io::Result<T> {
    tokio::time::timeout(timeout, write).await.map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// The body ended: a length-framed response must have sent all it announced.
fn finish(body: ResponseBody, framing: BodyFraming, sent: u64, keep_alive: &mut bool) -> bool {
    drop(body);
    match framing {
        BodyFraming::Length(n) if sent < n => {
            *keep_alive = false;
            false
        }
        BodyFraming::UntilClose => {
            *keep_alive = false;
            true
        }
        _ => true,
    }
}

fn chunk_size_line(out: &mut [u8; 20], len: usize) -> usize {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut out[..]);
    let _ = write!(cursor, "{len:x}\r\n");
    cursor.position() as usize
}

/// Writes every slice; each write that takes nothing for `timeout` fails it.
pub(super) async fn write_all_vectored<W: AsyncWrite + Unpin>(wr: &mut W, slices: &mut [IoSlice<'_>], timeout: Duration) -> std::io::Result<()> {
    let mut slices: &mut [IoSlice<'_>] = slices;
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        let n = timed(timeout, wr.write_vectored(slices)).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}
