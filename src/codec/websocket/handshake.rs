//! The HTTP side of opening a WebSocket: recognising an upgrade request and
//! the 101 answer (RFC 6455 section 4.2).

use base64::Engine;
use http::{HeaderMap, Method, header};
use sha1::{Digest, Sha1};

use super::deflate::Params;

/// A valid WebSocket opening request, as the app's scope and our 101 need it.
#[derive(Clone, Debug)]
pub struct Upgrade {
    pub key: String,
    pub subprotocols: Vec<String>,
    pub deflate: Option<Params>,
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// None for an ordinary request; Some(Err(reason)) for a broken upgrade attempt.
pub fn detect(method: &Method, headers: &HeaderMap, allow_deflate: bool) -> Option<Result<Upgrade, &'static str>> {
    if !has_token(headers, header::UPGRADE, "websocket") {
        return None;
    }
    if method != Method::GET || !has_token(headers, header::CONNECTION, "upgrade") {
        return Some(Err("Bad Request: a WebSocket upgrade must be a GET with Connection: upgrade"));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return Some(Err("Upgrade Required: only WebSocket version 13 is supported"));
    }
    let key = match headers.get(header::SEC_WEBSOCKET_KEY).and_then(|v| v.to_str().ok()) {
        Some(k) if base64::engine::general_purpose::STANDARD.decode(k.trim()).is_ok_and(|d| d.len() == 16) => k.trim().to_string(),
        _ => return Some(Err("Bad Request: missing or invalid Sec-WebSocket-Key")),
    };
    Some(Ok(offer(key, headers, allow_deflate)))
}

/// An HTTP/2 extended CONNECT with `:protocol websocket` (RFC 8441): no key, no
/// Upgrade header, the same version, subprotocols and extensions. Its `key` is empty.
pub fn detect_extended_connect(headers: &HeaderMap, allow_deflate: bool) -> Result<Upgrade, &'static str> {
    if headers.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return Err("Upgrade Required: only WebSocket version 13 is supported");
    }
    Ok(offer(String::new(), headers, allow_deflate))
}

/// What the client offers besides the key: subprotocols and compression.
fn offer(key: String, headers: &HeaderMap, allow_deflate: bool) -> Upgrade {
    let subprotocols = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    let deflate = allow_deflate
        .then(|| headers.get_all(header::SEC_WEBSOCKET_EXTENSIONS).iter().filter_map(|v| v.to_str().ok()).find_map(Params::negotiate))
        .flatten();
    Upgrade { key, subprotocols, deflate }
}

/// A WebSocket opening the protocol itself recognised (HTTP/2's extended CONNECT), handed
/// to the pipeline in the request's extensions instead of `detect`'s header checks.
#[derive(Clone, Debug)]
pub struct Detected(pub Result<Upgrade, &'static str>);

pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_example_key() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn detects_and_validates() {
        let mut h = HeaderMap::new();
        assert!(detect(&Method::GET, &h, true).is_none());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        h.insert(header::SEC_WEBSOCKET_VERSION, "13".parse().unwrap());
        assert!(detect(&Method::GET, &h, true).unwrap().is_err());
        h.insert(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap());
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, "chat, superchat".parse().unwrap());
        h.insert(header::SEC_WEBSOCKET_EXTENSIONS, "permessage-deflate; client_max_window_bits".parse().unwrap());
        let up = detect(&Method::GET, &h, true).unwrap().unwrap();
        assert_eq!(up.subprotocols, vec!["chat", "superchat"]);
        assert!(up.deflate.is_some());
        assert!(detect(&Method::GET, &h, false).unwrap().unwrap().deflate.is_none());
        assert!(detect(&Method::POST, &h, true).unwrap().is_err());
    }
}
