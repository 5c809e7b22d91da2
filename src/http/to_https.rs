//! The plain-HTTP listener's job when ferrogate serves HTTPS for a domain: answer the
//! CA's HTTP-01 challenges from the state directory, send everything else to HTTPS
//! with a 308 (the method and body are kept, unlike a 301).

use http::{HeaderMap, Uri, header};
use std::path::Path;

use crate::tls::store;

pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// What a plain listener answers in domain mode.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// The key authorization of a pending HTTP-01 challenge.
    Challenge(Vec<u8>),
    /// Under /.well-known/acme-challenge/ but no such challenge is pending: 404.
    NoChallenge,
    /// 308 to this URL.
    Redirect(String),
    /// No usable Host header to redirect to: 400.
    NoHost,
}

/// The challenge answer for a request under /.well-known/acme-challenge/, else None.
pub fn challenge(state_dir: &Path, uri: &Uri) -> Option<Answer> {
    let token = uri.path().strip_prefix(CHALLENGE_PREFIX)?;
    // Tokens are base64url (RFC 8555 8.1): anything else is no token, and never a path.
    match store::http01_path(state_dir, token).ok().and_then(|path| std::fs::read(path).ok()) {
        Some(key_authorization) => {
            crate::debug!("answered an HTTP-01 validation for token {token}");
            Some(Answer::Challenge(key_authorization))
        }
        None => Some(Answer::NoChallenge),
    }
}

/// The same host, path and query over HTTPS on `https_port`.
pub fn redirect(uri: &Uri, headers: &HeaderMap, https_port: u16) -> Answer {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(strip_port).filter(|h| valid_host(h));
    let Some(host) = host else { return Answer::NoHost };
    let port = if https_port == 443 { String::new() } else { format!(":{https_port}") };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Answer::Redirect(format!("https://{host}{port}{path}"))
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// A name or address that can go into a URL unchanged (no userinfo, path or spaces).
fn valid_host(host: &str) -> bool {
    !host.is_empty() && host.len() <= 255 && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(uri: &str, host: &str, port: u16) -> Option<String> {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, http::HeaderValue::from_str(host).unwrap());
        match redirect(&uri.parse().unwrap(), &headers, port) {
            Answer::Redirect(url) => Some(url),
            _ => None,
        }
    }

    #[test]
    fn redirects_keep_host_path_and_query() {
        assert_eq!(location("/a/b?x=1", "example.com", 443).unwrap(), "https://example.com/a/b?x=1");
        assert_eq!(location("/", "example.com:8080", 8443).unwrap(), "https://example.com:8443/");
        assert_eq!(location("/p", "[::1]:80", 443).unwrap(), "https://[::1]/p");
        assert_eq!(location("/", "evil.com/x@y", 443), None, "no path smuggled through Host");
    }

    #[test]
    fn challenge_tokens_are_never_paths() {
        let dir = std::env::temp_dir().join(format!("fg-http01-{}", std::process::id()));
        std::fs::create_dir_all(store::http01_dir(&dir)).unwrap();
        std::fs::write(store::http01_path(&dir, "tok_en-1").unwrap(), "tok_en-1.thumb").unwrap();
        let get = |path: &str| challenge(&dir, &path.parse().unwrap());
        assert_eq!(get("/.well-known/acme-challenge/tok_en-1"), Some(Answer::Challenge(b"tok_en-1.thumb".to_vec())));
        assert_eq!(get("/.well-known/acme-challenge/..%2Fsecret"), Some(Answer::NoChallenge));
        assert_eq!(get("/.well-known/acme-challenge/missing"), Some(Answer::NoChallenge));
        assert_eq!(get("/other"), None);
    }
}
