//! The bodies of the 4xx/5xx responses ferrogate writes itself (a refused head, a
//! static 404, a 413, a 503 at the concurrency limit, ...). Each is made once, as a
//! status and a message (`service::plain`, which marks the response with
//! `FrontError`), and rendered here, in one place, for the client that asked: a small
//! HTML page for a browser, a JSON object for an API client, the plain text line
//! otherwise; or the page of `--error-page CODE=FILE` for that status.
//!
//! The JSON object has the members of an RFC 9457 problem detail (`status`, `title`,
//! `detail`), and `detail` is where FastAPI puts the message of its own errors
//! (`{"detail": "Not Found"}`), so a client reads the front's errors and the app's
//! with the same code.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode, header};

use super::body::ResponseBody;
use crate::config::front::ErrorPage;

/// Marks a response as the front's own answer, with its message, until it is rendered.
#[derive(Clone, Debug)]
pub struct FrontError(pub String);

/// What a client gets, by its Accept header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Html,
    Json,
}

/// The formats on offer, in the order that wins a tie (`*/*` gets plain text, as
/// curl and scripts always did).
const OFFERS: [Format; 3] = [Format::Text, Format::Json, Format::Html];

impl Format {
    fn matches(self, kind: &str, subtype: &str) -> Option<u8> {
        let (want_kind, exact) = match self {
            Format::Text => ("text", subtype.eq_ignore_ascii_case("plain")),
            Format::Html => ("text", subtype.eq_ignore_ascii_case("html") || subtype.eq_ignore_ascii_case("xhtml+xml")),
            // application/json, and its kin (application/problem+json).
            Format::Json => ("application", subtype.eq_ignore_ascii_case("json") || ends_with_ignore_case(subtype, "+json")),
        };
        match (kind, subtype) {
            ("*", "*") => Some(0),
            (k, "*") if k.eq_ignore_ascii_case(want_kind) => Some(1),
            (k, _) if k.eq_ignore_ascii_case(want_kind) && exact => Some(2),
            _ => None,
        }
    }
}

fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len() && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// Chooses by RFC 9110 12.5.1: each offer takes the q of the most specific range that
/// matches it; the highest q wins, then the more specific match, then the range listed
/// first, then `OFFERS`' order. No Accept, or nothing acceptable: plain text.
pub fn negotiate(accept: Option<&HeaderValue>) -> Format {
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else { return Format::Text };
    // (q in thousandths, specificity, minus the range's position): larger is better.
    let mut best: Option<((u16, u8, isize), Format)> = None;
    for offer in OFFERS {
        let mut found: Option<(u16, u8, isize)> = None;
        for (position, range) in accept.split(',').enumerate() {
            let mut params = range.split(';');
            let Some((kind, subtype)) = params.next().and_then(|t| t.trim().split_once('/')) else { continue };
            let Some(specificity) = offer.matches(kind.trim(), subtype.trim()) else { continue };
            let q = params.filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q="))).next().map_or(1000, quality);
            if found.is_none_or(|(_, s, _)| specificity > s) {
                found = Some((q, specificity, -(position as isize)));
            }
        }
        if let Some(key) = found.filter(|(q, ..)| *q > 0) {
            if best.is_none_or(|(b, _)| key > b) {
                best = Some((key, offer));
            }
        }
    }
    best.map_or(Format::Text, |(_, f)| f)
}

/// A q-value in thousandths ("0.8" -> 800); unreadable ones count as 1.
fn quality(s: &str) -> u16 {
    s.trim().parse::<f32>().map_or(1000, |q| (q.clamp(0.0, 1.0) * 1000.0).round() as u16)
}

/// The --error-page bodies, ready to send.
#[derive(Default)]
pub struct Pages(Vec<(u16, Bytes, HeaderValue)>);

impl Pages {
    pub fn new(pages: &[ErrorPage]) -> Self {
        Pages(
            pages
                .iter()
                .map(|p| {
                    let content_type = HeaderValue::from_str(&p.content_type).unwrap_or(HeaderValue::from_static("text/html; charset=utf-8"));
                    (p.status, Bytes::copy_from_slice(p.body.as_bytes()), content_type)
                })
                .collect(),
        )
    }

    fn get(&self, status: u16) -> Option<&(u16, Bytes, HeaderValue)> {
        self.0.iter().find(|(s, ..)| *s == status)
    }
}

/// Gives a front error (a response marked `FrontError`, 4xx or 5xx) its body for
/// this client: the --error-page for its status, else the format its Accept prefers.
/// Anything else (the app's responses, redirects) is left as it is.
pub fn render(response: &mut Response<ResponseBody>, pages: &Pages, accept: Option<&HeaderValue>) {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return;
    }
    let Some(FrontError(message)) = response.extensions_mut().remove::<FrontError>() else { return };
    let (body, content_type) = if let Some((_, page, content_type)) = pages.get(status.as_u16()) {
        // The same page whatever the client accepts, as nginx's error_page does.
        (page.clone(), content_type.clone())
    } else {
        vary(response);
        let (title, detail) = title_and_detail(status, &message);
        match negotiate(accept) {
            Format::Text => return, // plain() wrote it so already
            Format::Html => (Bytes::from(html(status, &title, &detail)), HeaderValue::from_static("text/html; charset=utf-8")),
            Format::Json => (Bytes::from(json(status, &title, &detail)), HeaderValue::from_static("application/json")),
        }
    };
    response.body_mut().replace_full(body);
    response.headers_mut().insert(header::CONTENT_TYPE, content_type);
}

/// The body depends on Accept: caches must keep one per value.
fn vary(response: &mut Response<ResponseBody>) {
    response.headers_mut().append(header::VARY, HeaderValue::from_static("accept"));
}

/// "Not Found" -> ("Not Found", "Not Found"); "Bad Request: malformed request body" ->
/// ("Bad Request", "Malformed request body"): the front's messages lead with their title.
fn title_and_detail(status: StatusCode, message: &str) -> (String, String) {
    let message = message.trim_end();
    if let Some((title, detail)) = message.split_once(": ") {
        if !title.is_empty() && title.bytes().all(|b| b.is_ascii_alphabetic() || b == b' ' || b == b'-') {
            let mut detail = detail.to_string();
            if let Some(first) = detail.get_mut(..1) {
                first.make_ascii_uppercase();
            }
            return (title.to_string(), detail);
        }
    }
    let title = status.canonical_reason().unwrap_or("Error");
    (title.to_string(), if message.is_empty() { title.to_string() } else { message.to_string() })
}

fn html(status: StatusCode, title: &str, detail: &str) -> String {
    let (code, title, detail) = (status.as_u16(), escape_html(title), escape_html(detail));
    let paragraph = if detail == title { String::new() } else { format!("<p>{detail}</p>\n") };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{code} {title}</title></head>\n\
         <body style=\"font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222\">\n<h1>{code} {title}</h1>\n{paragraph}</body>\n</html>\n"
    )
}

fn json(status: StatusCode, title: &str, detail: &str) -> String {
    // Written by hand to keep the members in the order people read them (serde_json sorts them).
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    format!("{{\"status\":{},\"title\":{},\"detail\":{}}}\n", status.as_u16(), quote(title), quote(detail))
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The Accept header of a head the HTTP/1.1 parser refused (too large, malformed),
/// found in its raw bytes: the refusal is still rendered for the client that sent it.
pub fn accept_in_raw_head(buf: &[u8]) -> Option<HeaderValue> {
    let head = &buf[..buf.len().min(64 * 1024)];
    let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(head.len());
    head[..end].split(|&b| b == b'\n').skip(1).find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let value = line.get(..7).filter(|name| name.eq_ignore_ascii_case(b"accept:")).map(|_| line[7..].trim_ascii())?;
        HeaderValue::from_bytes(value).ok()
    })
}

/// --security-headers: the common safe set, added to every response that does not set them.
pub fn security_headers() -> [(HeaderName, HeaderValue); 3] {
    [
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("strict-origin-when-cross-origin")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::body::Kind;

    fn pick(accept: &str) -> Format {
        negotiate(Some(&HeaderValue::from_str(accept).unwrap()))
    }

    #[test]
    fn browsers_get_html_api_clients_json_the_rest_text() {
        let chrome = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7";
        assert_eq!(pick(chrome), Format::Html);
        assert_eq!(pick("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"), Format::Html);
        assert_eq!(pick("application/json"), Format::Json);
        assert_eq!(pick("application/problem+json"), Format::Json);
        // axios: JSON first, then text.
        assert_eq!(pick("application/json, text/plain, */*"), Format::Json);
        assert_eq!(pick("*/*"), Format::Text, "curl, httpx");
        assert_eq!(negotiate(None), Format::Text);
        assert_eq!(pick("image/png"), Format::Text, "nothing on offer: text, not a 406");
        assert_eq!(pick("text/*"), Format::Text);
        assert_eq!(pick("application/*"), Format::Json);
    }

    #[test]
    fn q_values_decide_before_order_and_zero_refuses() {
        assert_eq!(pick("text/html;q=0.5, application/json"), Format::Json);
        assert_eq!(pick("application/json;q=0.2, text/html;q=0.9"), Format::Html);
        assert_eq!(pick("text/plain;q=0, */*"), Format::Json, "plain refused; json wins the tie on */*");
        assert_eq!(pick("*/*;q=0.1, text/html"), Format::Html);
        // The most specific range sets an offer's q, wherever it stands.
        assert_eq!(pick("text/html;q=0, text/*;q=1"), Format::Text);
        assert_eq!(pick("text/html ; Q=0.7 , application/json;q=0.6"), Format::Html);
        assert_eq!(pick("garbage, ,;;, /"), Format::Text);
    }

    fn front(status: StatusCode, message: &str) -> Response<ResponseBody> {
        let mut r = Response::new(ResponseBody::new(Kind::Full(Some(Bytes::from(format!("{message}\n")))), status.as_u16(), None, None));
        *r.status_mut() = status;
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        r.extensions_mut().insert(FrontError(message.to_string()));
        r
    }

    fn body(r: Response<ResponseBody>) -> String {
        let (_, mut b) = r.into_parts();
        let mut out = Vec::new();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        while let std::task::Poll::Ready(Some(Ok(frame))) = http_body::Body::poll_frame(std::pin::Pin::new(&mut b), &mut cx) {
            out.extend_from_slice(frame.data_ref().unwrap());
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn rendered_as_the_client_asked() {
        let accept = |s| Some(HeaderValue::from_static(s));
        let pages = Pages::default();
        let mut r = front(StatusCode::PAYLOAD_TOO_LARGE, "Content Too Large: the body may have at most <1 KiB>");
        render(&mut r, &pages, accept("application/json").as_ref());
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let v: serde_json::Value = serde_json::from_str(&body(r)).unwrap();
        assert_eq!(v, serde_json::json!({"status": 413, "title": "Content Too Large", "detail": "The body may have at most <1 KiB>"}));
        let mut r = front(StatusCode::NOT_FOUND, "Not Found: \"quoted\"\n");
        render(&mut r, &pages, accept("application/json").as_ref());
        assert_eq!(body(r), "{\"status\":404,\"title\":\"Not Found\",\"detail\":\"\\\"quoted\\\"\"}\n");

        let mut r = front(StatusCode::PAYLOAD_TOO_LARGE, "Content Too Large: the body may have at most <1 KiB>");
        render(&mut r, &pages, accept("text/html").as_ref());
        assert!(r.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
        assert_eq!(r.headers()[header::VARY], "accept");
        let page = body(r);
        assert!(page.contains("<h1>413 Content Too Large</h1>") && page.contains("at most &lt;1 KiB&gt;"), "{page}");

        let mut r = front(StatusCode::NOT_FOUND, "Not Found");
        render(&mut r, &pages, None);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/plain; charset=utf-8");
        assert_eq!(body(r), "Not Found\n");
    }

    #[test]
    fn a_custom_page_replaces_its_status_only() {
        let pages = Pages::new(&[ErrorPage { status: 404, body: "<p>gone fishing</p>".into(), content_type: "text/html; charset=utf-8".into() }]);
        let json = HeaderValue::from_static("application/json");
        let mut r = front(StatusCode::NOT_FOUND, "Not Found");
        render(&mut r, &pages, Some(&json));
        assert!(r.headers().get(header::VARY).is_none());
        assert_eq!(body(r), "<p>gone fishing</p>");
        let mut r = front(StatusCode::BAD_REQUEST, "Bad Request");
        render(&mut r, &pages, Some(&json));
        assert!(body(r).contains("\"status\":400"));
    }

    #[test]
    fn only_front_errors_are_rendered() {
        let pages = Pages::new(&[ErrorPage { status: 404, body: "custom".into(), content_type: "text/html".into() }]);
        // The app's own 404: no marker, untouched.
        let mut app = Response::new(ResponseBody::new(Kind::Full(Some(Bytes::from_static(b"app"))), 404, None, None));
        *app.status_mut() = StatusCode::NOT_FOUND;
        render(&mut app, &pages, None);
        assert_eq!(body(app), "app");
        // A front redirect keeps its text.
        let mut redirect = front(StatusCode::PERMANENT_REDIRECT, "Permanent Redirect: use HTTPS");
        render(&mut redirect, &pages, Some(&HeaderValue::from_static("text/html")));
        assert_eq!(body(redirect), "Permanent Redirect: use HTTPS\n");
    }

    #[test]
    fn accept_is_found_in_a_refused_head() {
        let raw = b"GET /x HTTP/1.1\r\nHost: a\r\nACCEPT:  text/html \r\nX: y\r\n\r\n";
        assert_eq!(accept_in_raw_head(raw).unwrap(), "text/html");
        assert!(accept_in_raw_head(b"GET /x HTTP/1.1\r\nAccept-Language: en\r\n").is_none());
        assert!(accept_in_raw_head(b"GET /accept: HTTP/1.1\r\n").is_none(), "not in the request line");
    }
}
