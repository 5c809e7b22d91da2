//! The per-response decisions, on header maps built by hand.

use super::*;
use crate::http::compress::encoder::tests::{decode, sample};

fn compression(f: impl FnOnce(&mut CompressConfig)) -> Compression {
    let mut config = CompressConfig::default();
    f(&mut config);
    Compression::new(&config).expect("enabled")
}

fn request(accept: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(accept).unwrap());
    h
}

fn response(content_type: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
    h
}

/// Runs a whole-body app response through; returns its headers and body.
fn app(c: &Compression, method: Method, accept: &str, status: u16, mut headers: HeaderMap, body: &[u8]) -> (HeaderMap, Kind) {
    let kind = Kind::Full(Some(Bytes::copy_from_slice(body)));
    let kind = c.app_response(&method, &request(accept), StatusCode::from_u16(status).unwrap(), &mut headers, kind);
    (headers, kind)
}

fn full(kind: &Kind) -> &[u8] {
    match kind {
        Kind::Full(Some(b)) => b,
        _ => panic!("not a whole body"),
    }
}

#[test]
fn the_type_allowlist_matches_like_the_config() {
    let c = compression(|_| {});
    let config = CompressConfig::default();
    for (ct, yes) in [
        ("application/json", true),
        ("text/html; charset=utf-8", true),
        ("Text/CSS", true),
        ("application/vnd.api+json", true),
        ("image/svg+xml", true),
        ("text/event-stream", true),
        ("image/png", false),
        ("application/octet-stream", false),
        ("application/jsonx", false),
        ("", false),
        // "application/*+json" against text whose 12th byte is inside a character.
        ("applicatiéü+json", false),
    ] {
        assert_eq!(c.compresses_type(ct.as_bytes()), yes, "{ct}");
        assert_eq!(config.compresses_type(ct), yes, "{ct}");
    }
    // A header value is bytes: what follows the `;` need not be text.
    assert!(c.compresses_type(b"text/html; charset=\xff"));
    let only_html = compression(|c| c.types = vec!["text/html".into()]);
    assert!(!only_html.compresses_type(b"text/plain"));
}

#[test]
fn a_large_json_is_compressed_at_once_with_its_length() {
    let c = compression(|_| {});
    let body = sample(3000);
    let mut headers = response("application/json");
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let (h, kind) = app(&c, Method::GET, "gzip, br", 200, headers, &body);
    assert_eq!(h[header::CONTENT_ENCODING], "br");
    assert_eq!(h[header::VARY], "accept-encoding");
    assert_eq!(h[header::ETAG], "W/\"v1\"");
    assert!(!h.contains_key(header::ACCEPT_RANGES));
    let out = full(&kind);
    assert_eq!(h[header::CONTENT_LENGTH], out.len().to_string().as_str());
    assert_eq!(decode(Encoding::Br, out), body);
}

#[test]
fn small_or_unlisted_or_encoded_responses_are_left_alone() {
    let c = compression(|_| {});
    let big = sample(500);
    // Below --compress-min-size: no Vary either, the size alone decided.
    let (h, kind) = app(&c, Method::GET, "gzip", 200, response("application/json"), b"{\"ok\":true}");
    assert!(!h.contains_key(header::CONTENT_ENCODING) && !h.contains_key(header::VARY));
    assert_eq!(full(&kind), b"{\"ok\":true}");
    let (h, _) = app(&c, Method::GET, "gzip", 200, response("image/png"), &big);
    assert!(!h.contains_key(header::CONTENT_ENCODING) && !h.contains_key(header::VARY));
    let mut encoded = response("application/json");
    encoded.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    let (h, kind) = app(&c, Method::GET, "br", 200, encoded, &big);
    assert_eq!(h[header::CONTENT_ENCODING], "gzip");
    assert_eq!(full(&kind), &big[..]);
    let mut no_transform = response("application/json");
    no_transform.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, No-Transform"));
    let (h, _) = app(&c, Method::GET, "br", 200, no_transform, &big);
    assert!(!h.contains_key(header::CONTENT_ENCODING));
    for status in [204, 206, 304, 101] {
        let (h, _) = app(&c, Method::GET, "br", status, response("application/json"), &big);
        assert!(!h.contains_key(header::CONTENT_ENCODING), "{status}");
    }
    // The min size counts the declared length when there is one.
    let c = compression(|c| c.min_size = 100_000);
    let (h, _) = app(&c, Method::GET, "br", 200, response("application/json"), &big);
    assert!(!h.contains_key(header::CONTENT_ENCODING));
}

#[test]
fn identity_for_a_compressible_type_still_varies() {
    let c = compression(|_| {});
    let big = sample(500);
    for accept in ["identity", "gzip;q=0", "deflate"] {
        let (h, kind) = app(&c, Method::GET, accept, 200, response("text/html"), &big);
        assert!(!h.contains_key(header::CONTENT_ENCODING), "{accept}");
        assert_eq!(h[header::VARY], "accept-encoding");
        assert_eq!(full(&kind), &big[..]);
    }
}

#[test]
fn vary_is_merged_into_one_field() {
    let mut h = HeaderMap::new();
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    h.append(header::VARY, HeaderValue::from_static("Cookie"));
    add_vary(&mut h);
    assert_eq!(h.get_all(header::VARY).iter().collect::<Vec<_>>(), ["Origin, Cookie, accept-encoding"]);
    let mut h = HeaderMap::new();
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding, Origin"));
    add_vary(&mut h);
    assert_eq!(h[header::VARY], "Accept-Encoding, Origin");
    h.insert(header::VARY, HeaderValue::from_static("*"));
    add_vary(&mut h);
    assert_eq!(h[header::VARY], "*");
}

#[test]
fn weak_tags_stay_weak() {
    let mut h = HeaderMap::new();
    h.insert(header::ETAG, HeaderValue::from_static("W/\"x\""));
    weaken_etag(&mut h);
    assert_eq!(h[header::ETAG], "W/\"x\"");
}

#[test]
fn streams_and_head_requests_lose_their_length() {
    let c = compression(|_| {});
    let body = sample(3000);
    let mut headers = response("application/json");
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    // HEAD: the headers a GET would get, less the length (nothing is compressed for it).
    let (h, kind) = app(&c, Method::HEAD, "gzip", 200, headers, &body);
    assert_eq!(h[header::CONTENT_ENCODING], "gzip");
    assert!(!h.contains_key(header::CONTENT_LENGTH));
    assert!(matches!(kind, Kind::Encoded(_)));
    // A streamed body: compressed chunk by chunk, flushed each time.
    let (_tx, rx) = crate::bridge::responses::response_queue();
    let mut h = response("text/event-stream");
    let kind = c.app_response(&Method::GET, &request("zstd"), StatusCode::OK, &mut h, Kind::Stream(rx));
    assert_eq!(h[header::CONTENT_ENCODING], "zstd");
    match kind {
        Kind::Encoded(e) => assert!(matches!(e.inner, Kind::Stream(_)) && e.coding.coding() == Encoding::Zstd),
        _ => panic!("not compressed"),
    }
}

#[test]
fn static_plans() {
    let c = compression(|_| {});
    let plan = c.for_static(&request("gzip, br"), "text/css", 5000).unwrap();
    assert!(plan.vary);
    assert_eq!(plan.accepted.iter().collect::<Vec<_>>(), vec![Encoding::Br, Encoding::Gzip]);
    assert!(c.for_static(&request("gzip"), "image/png", 5000).is_none());
    assert!(c.for_static(&request("gzip"), "text/css", 10).is_none());
    let mut ranged = request("gzip");
    ranged.insert(header::RANGE, HeaderValue::from_static("bytes=0-9"));
    let plan = c.for_static(&ranged, "text/css", 5000).unwrap();
    assert!(plan.vary && plan.accepted.is_empty());
}

#[test]
fn disabled_means_no_compression_object() {
    assert!(Compression::new(&CompressConfig { enabled: false, ..CompressConfig::default() }).is_none());
    assert!(Compression::new(&CompressConfig { encodings: vec![], ..CompressConfig::default() }).is_none());
}

/// Polls a body to its end; returns its data frames.
async fn frames(body: &mut crate::http::body::ResponseBody) -> Vec<Bytes> {
    use http_body::Body as _;
    let mut out = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)).await {
        out.push(frame.unwrap().into_data().unwrap());
    }
    assert!(body.is_end_stream());
    out
}

#[tokio::test]
async fn each_streamed_chunk_leaves_the_body_decodable() {
    use crate::bridge::exchange::ResponseEvent;
    use crate::http::body::ResponseBody;
    use http_body::Body as _;
    let c = compression(|_| {});
    let (tx, rx) = crate::bridge::responses::response_queue();
    let mut h = response("text/event-stream");
    let kind = c.app_response(&Method::GET, &request("gzip"), StatusCode::OK, &mut h, Kind::Stream(rx));
    let mut body = ResponseBody::new(kind, 200, None, None);
    assert_eq!(body.size_hint().exact(), None);
    let mut wire = Vec::new();
    for i in 0..3 {
        let event = format!("data: {i}\n\n");
        tx.send(ResponseEvent::Chunk(Bytes::from(event.clone()))).ok().expect("the body is alive");
        // The chunk comes out before the app sends anything more.
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await.unwrap().unwrap();
        wire.extend_from_slice(frame.data_ref().unwrap());
        let mut d = flate2::read::GzDecoder::new(&wire[..]);
        let mut got = Vec::new();
        let _ = std::io::Read::read_to_end(&mut d, &mut got); // ends early: the stream is not finished
        assert!(String::from_utf8_lossy(&got).ends_with(&event), "{i}: {got:?}");
    }
    tx.send(ResponseEvent::End).ok().expect("the body is alive");
    for f in frames(&mut body).await {
        wire.extend_from_slice(&f);
    }
    assert_eq!(decode(Encoding::Gzip, &wire), b"data: 0\n\ndata: 1\n\ndata: 2\n\n");
}

#[tokio::test]
async fn a_large_whole_body_streams_in_pieces() {
    use crate::http::body::ResponseBody;
    let c = compression(|_| {});
    let input = sample(20_000); // ~ 800 KiB: over AT_ONCE
    assert!(input.len() > AT_ONCE);
    let (mut h, kind) = app(&c, Method::GET, "br", 200, response("application/json"), &input);
    assert!(!h.contains_key(header::CONTENT_LENGTH) && h.remove(header::CONTENT_ENCODING).unwrap() == "br");
    let mut body = ResponseBody::new(kind, 200, None, None);
    let wire: Vec<u8> = frames(&mut body).await.concat();
    assert_eq!(decode(Encoding::Br, &wire), input);
}

#[test]
fn a_head_for_a_static_file_announces_no_length() {
    use crate::http::body::ResponseBody;
    use http_body::Body as _;
    let c = compression(|_| {});
    let file = std::fs::File::open("Cargo.toml").unwrap();
    let meta = file.metadata().unwrap();
    let (kind, length) = c.file_body(file, &meta, Encoding::Gzip, true);
    assert_eq!(length, None);
    assert_eq!(ResponseBody::new(kind, 200, None, None).size_hint().exact(), None);
}
