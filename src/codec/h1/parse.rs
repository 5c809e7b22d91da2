//! Request heads off the wire: httparse does the tokenizing; this module
//! turns its output into `http` types and decides, strictly, how the body is
//! framed. Anything ambiguous is a 400 here, before the app can see it.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version, header};
use std::mem::MaybeUninit;

/// How the request body is delimited (RFC 9112 section 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes (0: no body).
    Length(u64),
    Chunked,
}

/// A request head, parsed and checked.
pub struct Head {
    pub request: Request<()>,
    pub framing: Framing,
    /// The client allows the connection to stay open after this exchange.
    pub keep_alive: bool,
    pub expect_continue: bool,
}

/// The headers in the order received, kept (as a request extension) only when
/// a repeated name was interleaved with others (`A, B, A`): the `HeaderMap`
/// groups each name's values, while the ASGI scope lists them as received.
#[derive(Clone, Debug)]
pub struct ReceivedOrder(pub Vec<(HeaderName, HeaderValue)>);

/// Why a head was refused: answered with this status, then the connection closes.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: &'static str,
}

impl Refusal {
    fn bad(reason: &'static str) -> Self {
        Refusal { status: StatusCode::BAD_REQUEST, reason }
    }
}

pub struct Limits {
    pub max_head: usize,
    pub max_headers: usize,
}

/// A method the app may see. Methods are case-sensitive (RFC 9110 9.1) and
/// every registered one is uppercase: `get` is a client bug or a probe, and an
/// app that routes on "GET" would answer it 405 or worse, so it is refused
/// here, as uvicorn's parser does. CONNECT asks for a tunnel, which only a
/// proxy gives; an origin server refuses it (nginx answers 405 too).
fn parse_method(name: &str) -> Result<Method, Refusal> {
    let method = Method::from_bytes(name.as_bytes()).map_err(|_| Refusal::bad("Bad Request: invalid method"))?;
    refuse_method(&method)?;
    Ok(method)
}

/// The method rules above, for a method another protocol (HTTP/2) parsed.
pub fn refuse_method(method: &Method) -> Result<(), Refusal> {
    if method.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(Refusal::bad("Bad Request: invalid method (method names are case-sensitive: GET, not get)"));
    }
    if method == Method::CONNECT {
        return Err(Refusal { status: StatusCode::METHOD_NOT_ALLOWED, reason: "Method Not Allowed: CONNECT (this server is not a proxy)" });
    }
    Ok(())
}

/// The client connection preface of HTTP/2 (RFC 9113 3.4).
pub const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether `buf` begins with HTTP/2's connection preface, as far as its first line
/// goes ("PRI * HTTP/2.0", which HTTP/1.1's parser refuses).
pub fn is_http2_preface(buf: &[u8]) -> bool {
    buf.starts_with(&HTTP2_PREFACE[..16])
}

/// Longest request target accepted (hyper's limit too); longer gets 414.
const MAX_URI: usize = 65_534;

/// Tries to parse one head from the front of `buf`. Ok(None): not complete yet
/// (and still within the limits). On success the head's bytes are removed.
pub fn parse(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Head>, Refusal> {
    // Uninitialized slots on the stack, for --max-headers up to 128 (the default is
    // 100): neither an allocation nor 3 KiB of zeroes per request.
    let mut on_stack = [const { MaybeUninit::<httparse::Header>::uninit() }; 128];
    let mut on_heap;
    let slots: &mut [MaybeUninit<httparse::Header>] = if limits.max_headers <= on_stack.len() {
        &mut on_stack[..limits.max_headers]
    } else {
        on_heap = vec![MaybeUninit::uninit(); limits.max_headers];
        &mut on_heap
    };
    let mut req = httparse::Request::new(&mut []);
    // Never look past the limit: a head that does not end within it is refused as too large.
    let window = &buf[..buf.len().min(limits.max_head)];
    let len = match req.parse_with_uninit_headers(window, slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.max_head {
                return Err(too_large(buf, limits));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal { status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, reason: "Request Header Fields Too Large: too many headers" });
        }
        Err(httparse::Error::Version) if is_http2_preface(buf) => {
            return Err(Refusal { status: StatusCode::HTTP_VERSION_NOT_SUPPORTED, reason: "HTTP Version Not Supported: HTTP/2 is off on this server (--http h1)" });
        }
        Err(_) => return Err(Refusal::bad("Bad Request: malformed request head")),
    };
    // httparse takes a bare LF as a line end; a proxy in front may not, and
    // would then frame this request differently (a header hidden inside another).
    if buf[..len].iter().enumerate().any(|(i, &b)| b == b'\n' && (i == 0 || buf[i - 1] != b'\r')) {
        return Err(Refusal::bad("Bad Request: a line in the request head ends with a bare LF"));
    }
    if len > limits.max_head {
        return Err(Refusal { status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, reason: "Request Header Fields Too Large" });
    }
    let version = match req.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Err(Refusal::bad("Bad Request: unsupported HTTP version")),
    };
    let method = parse_method(req.method.unwrap_or(""))?;
    let path = req.path.unwrap_or("");
    if path.len() > MAX_URI {
        return Err(Refusal { status: StatusCode::URI_TOO_LONG, reason: "URI Too Long" });
    }

    // The head is copied out once, as one small Bytes that header values and the
    // URI slice into: the read buffer itself is never pinned by a request.
    let head_bytes = Bytes::copy_from_slice(&buf[..len]);
    let base = buf.as_ptr() as usize;
    let slice = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        head_bytes.slice(start..start + s.len())
    };
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    let mut framing = Framing::Length(0);
    let (mut content_length, mut chunked, mut transfer_encodings) = (None::<u64>, false, 0);
    let (mut close, mut keep_alive_token, mut expect_continue) = (false, false, false);
    let mut interleaved = false;
    for (i, h) in req.headers.iter().enumerate() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| Refusal::bad("Bad Request: invalid header name"))?;

        let value = HeaderValue::from_maybe_shared(slice(h.value))
            .map_err(|_| Refusal::bad("Bad Request: invalid header value"))?;
        match name {
            header::CONTENT_LENGTH => {
                let n = parse_content_length(h.value).ok_or(Refusal::bad("Bad Request: invalid Content-Length"))?;
                if content_length.is_some_and(|prev| prev != n) {
                    return Err(Refusal::bad("Bad Request: conflicting Content-Length headers"));
                }
                content_length = Some(n);
            }
            header::TRANSFER_ENCODING => {
                transfer_encodings += 1;
                // Only `chunked`, alone: a request cannot be framed by anything else.
                if !h.value.eq_ignore_ascii_case(b"chunked") {
                    return Err(Refusal::bad("Bad Request: unsupported Transfer-Encoding (only chunked is accepted)"));
                }
                chunked = true;
            }
            header::CONNECTION => {
                for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    close |= token.eq_ignore_ascii_case(b"close");
                    keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            header::EXPECT => expect_continue = h.value.eq_ignore_ascii_case(b"100-continue"),
            _ => {}
        }
        // One hash lookup both appends and tells whether the name came before.
        match headers.entry(name) {
            http::header::Entry::Vacant(e) => {
                e.insert(value);
            }
            http::header::Entry::Occupied(mut e) => {
                interleaved |= !req.headers[i - 1].name.eq_ignore_ascii_case(h.name);
                e.append(value);
            }
        }
    }
    // RFC 9112 3.2: exactly one Host in HTTP/1.1; two could make a proxy and the app disagree.
    let hosts = headers.get_all(header::HOST).iter().count();
    if hosts > 1 || (hosts == 0 && version == Version::HTTP_11) {
        return Err(Refusal::bad("Bad Request: an HTTP/1.1 request needs exactly one Host header"));
    }
    if transfer_encodings > 1 {
        return Err(Refusal::bad("Bad Request: Transfer-Encoding given more than once"));
    }
    if chunked && content_length.is_some() {
        // RFC 9112 6.1: a request smuggling shape; refuse it rather than guess.
        return Err(Refusal::bad("Bad Request: both Content-Length and Transfer-Encoding"));
    }
    if chunked {
        if version == Version::HTTP_10 {
            return Err(Refusal::bad("Bad Request: chunked encoding in an HTTP/1.0 request"));
        }
        framing = Framing::Chunked;
    } else if let Some(n) = content_length {
        framing = Framing::Length(n);
    }
    let uri = Uri::from_maybe_shared(slice(path.as_bytes())).map_err(|_| Refusal::bad("Bad Request: invalid request target"))?;
    // Every name and value was checked in the loop above.
    let received_order = interleaved.then(|| {
        ReceivedOrder(req.headers.iter().filter_map(|h| Some((HeaderName::from_bytes(h.name.as_bytes()).ok()?, HeaderValue::from_maybe_shared(slice(h.value)).ok()?))).collect())
    });
    // `req` borrowed `buf`; its last use is above, so the head can now leave the buffer.
    bytes::Buf::advance(buf, len);

    let keep_alive = match version {
        Version::HTTP_10 => keep_alive_token && !close,
        _ => !close,
    };
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    if let Some(order) = received_order {
        request.extensions_mut().insert(order);
    }
    Ok(Some(Head { request, framing, keep_alive, expect_continue: expect_continue && version == Version::HTTP_11 }))
}

/// The refusal for an unfinished head that outgrew --max-header-size: 414 if
/// the request line alone is too long, else 431.
pub fn too_large(buf: &[u8], limits: &Limits) -> Refusal {
    let line = buf.windows(2).position(|w| w == b"\r\n").unwrap_or(buf.len());
    if line > MAX_URI.min(limits.max_head) {
        Refusal { status: StatusCode::URI_TOO_LONG, reason: "URI Too Long" }
    } else {
        Refusal { status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, reason: "Request Header Fields Too Large" }
    }
}

/// Digits only: no sign, no list, no spaces inside (RFC 9110 8.6).
fn parse_content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_head: 8192, max_headers: 100 };

    fn parse_str(s: &str) -> Result<Option<Head>, Refusal> {
        parse(&mut BytesMut::from(s.as_bytes()), &LIMITS)
    }

    #[test]
    fn a_simple_get() {
        let mut buf = BytesMut::from(&b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Y: 1\r\nx-y: 2\r\n\r\nNEXT"[..]);
        let head = parse(&mut buf, &LIMITS).unwrap().unwrap();
        assert_eq!(head.request.method(), Method::GET);
        assert_eq!(head.request.uri().path(), "/a");
        assert_eq!(head.request.headers().get_all("x-y").iter().count(), 2);
        assert_eq!(head.framing, Framing::Length(0));
        assert!(head.keep_alive && !head.expect_continue);
        assert_eq!(&buf[..], b"NEXT");
    }

    #[test]
    fn interleaved_repeats_keep_the_received_order() {
        let h = parse_str("GET / HTTP/1.1\r\nX-A: 1\r\nHost: x\r\nX-A: 2\r\n\r\n").unwrap().unwrap();
        let order = h.request.extensions().get::<ReceivedOrder>().expect("kept");
        let names: Vec<_> = order.0.iter().map(|(n, v)| format!("{n}={}", v.to_str().unwrap())).collect();
        assert_eq!(names, ["x-a=1", "host=x", "x-a=2"]);
        // Adjacent repeats are already in order in the HeaderMap: nothing extra kept.
        let h = parse_str("GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a: 2\r\n\r\n").unwrap().unwrap();
        assert!(h.request.extensions().get::<ReceivedOrder>().is_none());
    }

    #[test]
    fn the_http2_preface_is_told_http2_is_off() {
        let refused = parse_str("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").err().unwrap();
        assert_eq!(refused.status, StatusCode::HTTP_VERSION_NOT_SUPPORTED);
        assert_eq!(parse_str("GET / HTTP/3.0\r\nHost: a\r\n\r\n").err().unwrap().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn lowercase_methods_and_connect_are_refused() {
        assert_eq!(parse_str("get / HTTP/1.1\r\nHost: x\r\n\r\n").err().unwrap().status, StatusCode::BAD_REQUEST);
        assert_eq!(parse_str("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n").err().unwrap().status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(parse_str("PROPFIND / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap().unwrap().request.method().as_str(), "PROPFIND");
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert!(parse_str("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        assert!(!parse_str("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap().keep_alive);
        assert!(parse_str("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap().unwrap().keep_alive);
        assert!(!parse_str("GET / HTTP/1.1\r\nHost: x\r\nConnection: foo, close\r\n\r\n").unwrap().unwrap().keep_alive);
    }

    #[test]
    fn framing() {
        let h = parse_str("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.framing, Framing::Length(5));
        let h = parse_str("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\nExpect: 100-continue\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.expect_continue);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for bad in [
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(parse_str(bad).err().map(|r| r.status), Some(StatusCode::BAD_REQUEST), "{bad}");
        }
    }

    #[test]
    fn bare_lf_line_ends_are_refused() {
        for bad in ["GET / HTTP/1.1\nHost: x\n\n", "GET / HTTP/1.1\r\nHost: x\r\nX: a\nTransfer-Encoding: chunked\r\n\r\n"] {
            assert_eq!(parse_str(bad).err().map(|r| r.status), Some(StatusCode::BAD_REQUEST), "{bad:?}");
        }
    }

    #[test]
    fn host_is_required_once_in_http_11() {
        assert_eq!(parse_str("GET / HTTP/1.1\r\n\r\n").err().unwrap().status, StatusCode::BAD_REQUEST);
        assert_eq!(parse_str("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").err().unwrap().status, StatusCode::BAD_REQUEST);
        assert!(parse_str("GET / HTTP/1.0\r\n\r\n").unwrap().is_some());
    }

    #[test]
    fn oversized_heads() {
        let long_uri = format!("GET /{} HTTP/1.1\r\n", "a".repeat(70_000));
        let r = parse(&mut BytesMut::from(long_uri.as_bytes()), &Limits { max_head: 65_536, max_headers: 100 });
        assert_eq!(r.err().unwrap().status, StatusCode::URI_TOO_LONG);
        let big = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(9000));
        assert_eq!(parse_str(&big).err().unwrap().status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        let r = parse_str(&format!("GET / HTTP/1.1\r\n{many}\r\n"));
        assert_eq!(r.err().unwrap().status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
}
