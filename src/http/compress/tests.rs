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
    ] {
        assert_eq!(c.compresses_type(ct.as_bytes()), yes, "{ct}");
        assert_eq!(config.compresses_type(ct), yes, "{ct}");
    }
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
    let (_tx, rx) = tokio::sync::mpsc::unbounded_channel();
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
