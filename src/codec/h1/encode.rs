//! Response heads onto the wire, and the framing of what follows them.

use http::{HeaderMap, StatusCode, Version, header};
use std::cell::RefCell;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// How the response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body may follow (HEAD, 1xx, 204, 304).
    Empty,
    /// No body follows, but the head announces the length a GET would have
    /// got (HEAD, and 304 as RFC 9110 8.6 allows).
    Announced(u64),
    Length(u64),
    Chunked,
    /// HTTP/1.0 with an unknown length: the body ends when the connection closes.
    UntilClose,
}

/// Decides the body framing: the app's content-length (`declared`) when it
/// gave one, the body's exact size when known, else chunked (or until-close
/// for HTTP/1.0). Content-Length and Transfer-Encoding headers are never taken
/// from the response's header map: the body says how long it is.
pub fn framing(status: StatusCode, head_request: bool, version: Version, declared: Option<u64>, exact_len: Option<u64>) -> BodyFraming {
    // RFC 9110 8.6: never a Content-Length on 1xx and 204; on 304 the app's is passed through.
    if status.is_informational() || status == StatusCode::NO_CONTENT {
        return BodyFraming::Empty;
    }
    if status == StatusCode::NOT_MODIFIED {
        return declared.map_or(BodyFraming::Empty, BodyFraming::Announced);
    }
    let framing = match declared.or(exact_len) {
        Some(n) => BodyFraming::Length(n),
        None if version == Version::HTTP_10 => BodyFraming::UntilClose,
        None => BodyFraming::Chunked,
    };
    if head_request {
        // A HEAD response announces the length a GET would have, and sends nothing.
        return match framing {
            BodyFraming::Length(n) => BodyFraming::Announced(n),
            _ => BodyFraming::Empty,
        };
    }
    framing
}

/// Writes the status line and headers. `connection` is the Connection header
/// to add ("close", "keep-alive" for HTTP/1.0 peers, or none).
pub fn head(out: &mut Vec<u8>, version: Version, status: StatusCode, headers: &HeaderMap, framing: BodyFraming, connection: Option<&'static str>, date: bool) {
    out.extend_from_slice(if version == Version::HTTP_10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        match *name {
            // Framing is ours to decide: what the app said was folded into `framing`.
            header::CONTENT_LENGTH | header::TRANSFER_ENCODING => continue,
            header::CONNECTION if connection.is_some() => continue,
            _ => {}
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        BodyFraming::Length(n) | BodyFraming::Announced(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        BodyFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        BodyFraming::Empty | BodyFraming::UntilClose => {}
    }
    if let Some(c) = connection {
        out.extend_from_slice(b"connection: ");
        out.extend_from_slice(c.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if date && !crate::codec::headers::has(headers, &header::DATE) {
        out.extend_from_slice(b"date: ");
        with_date(|d| out.extend_from_slice(d));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The Date header's value for the current second (for protocols that set headers, not
/// bytes). Made once per second per thread; a clone shares its bytes.
pub fn date_value() -> http::HeaderValue {
    thread_local! {
        static VALUE: RefCell<Option<(u64, http::HeaderValue)>> = const { RefCell::new(None) };
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    VALUE.with_borrow_mut(|cached| match cached {
        Some((secs, value)) if *secs == now => value.clone(),
        _ => {
            let mut value = http::HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT");
            with_date(|d| value = http::HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(d)).unwrap_or(value.clone()));
            *cached = Some((now, value.clone()));
            value
        }
    })
}

thread_local! {
    /// The IMF-fixdate of the current second, formatted once per second per thread.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((0, [0; 29])) };
}

fn with_date(f: impl FnOnce(&[u8])) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    DATE.with_borrow_mut(|(secs, text)| {
        if *secs != now {
            let formatted = httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(now));
            text.copy_from_slice(&formatted.as_bytes()[..29]);
            *secs = now;
        }
        f(text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn render(version: Version, status: u16, headers: &[(&str, &str)], framing: BodyFraming, connection: Option<&'static str>) -> String {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(http::HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        let mut out = Vec::new();
        head(&mut out, version, StatusCode::from_u16(status).unwrap(), &map, framing, connection, false);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn heads() {
        assert_eq!(
            render(Version::HTTP_11, 200, &[("x-a", "1"), ("x-a", "2"), ("content-length", "99")], BodyFraming::Length(5), None),
            "HTTP/1.1 200 OK\r\nx-a: 1\r\nx-a: 2\r\ncontent-length: 5\r\n\r\n"
        );
        assert_eq!(render(Version::HTTP_10, 599, &[], BodyFraming::UntilClose, Some("close")), "HTTP/1.0 599 \r\nconnection: close\r\n\r\n");
        assert_eq!(render(Version::HTTP_11, 200, &[], BodyFraming::Chunked, None), "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
    }

    #[test]
    fn framing_rules() {
        let none = None;
        let s = StatusCode::OK;
        assert_eq!(framing(s, false, Version::HTTP_11, none, Some(3)), BodyFraming::Length(3));
        assert_eq!(framing(s, false, Version::HTTP_11, none, None), BodyFraming::Chunked);
        assert_eq!(framing(s, false, Version::HTTP_10, none, None), BodyFraming::UntilClose);
        assert_eq!(framing(StatusCode::NOT_MODIFIED, false, Version::HTTP_11, none, Some(0)), BodyFraming::Empty);
        assert_eq!(framing(s, true, Version::HTTP_11, none, None), BodyFraming::Empty);
        let cl = Some(10);
        assert_eq!(framing(s, true, Version::HTTP_11, cl, None), BodyFraming::Announced(10));
        assert_eq!(framing(StatusCode::NOT_MODIFIED, false, Version::HTTP_11, cl, Some(0)), BodyFraming::Announced(10));
        assert_eq!(framing(StatusCode::NO_CONTENT, false, Version::HTTP_11, cl, Some(0)), BodyFraming::Empty);
    }

    #[test]
    fn date_value_is_the_date_line_of_this_second() {
        let mut line = Vec::new();
        with_date(|d| line.extend_from_slice(d));
        let value = date_value();
        // Unless the second turned between the two reads.
        assert!(value.as_bytes() == &line[..] || httpdate::parse_http_date(value.to_str().unwrap()).is_ok(), "{value:?}");
        assert_eq!(value.len(), 29);
    }

    #[test]
    fn date_is_an_imf_fixdate() {
        let mut d = Vec::new();
        with_date(|t| d.extend_from_slice(t));
        let text = String::from_utf8(d).unwrap();
        assert!(text.ends_with(" GMT") && text.len() == 29, "{text}");
    }
}
