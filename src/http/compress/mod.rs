//! Response compression (gzip, brotli, zstd), nginx's `gzip on` for both the
//! app's responses and static files. Decided per response from its status and
//! headers and the request's Accept-Encoding; done on the I/O thread as the
//! connection pulls the body (`stream`), or at once for a body of known,
//! moderate size so that it keeps a Content-Length. Static files keep their
//! compressed variants in memory (`cache`) and precompressed siblings
//! (`app.js.br`) are served as they are (static_files/encoded.rs).
//!
//! A compressed response gets `Content-Encoding`, loses Content-Length (unless
//! compressed at once) and Accept-Ranges, and its ETag is made weak, as nginx
//! does: the bytes differ from the identity ones so a strong tag would lie, and
//! a weak one still revalidates (If-None-Match compares weakly) without the
//! suffix stripping that `"tag-gzip"` needs. Every response whose form depended
//! on Accept-Encoding says so with `Vary: Accept-Encoding`.

pub mod cache;
pub mod encoder;
pub mod negotiate;
pub mod stream;

use bytes::Bytes;
use crate::codec::headers as scan;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use std::sync::Arc;

use super::body::Kind;
use crate::config::front::{CompressConfig, CompressLevel, Encoding, MediaPattern};
use cache::{Cache, Key};
pub use negotiate::Accepted;
pub use stream::Compressing;

/// App bodies up to this size, whole in one message, are compressed before the head
/// is written, keeping a Content-Length; larger ones stream in pieces (chunked).
pub const AT_ONCE: usize = 256 * 1024;

/// The settings, ready for the hot path, and the worker's static cache.
pub struct Compression {
    level: CompressLevel,
    min_size: u64,
    types: Vec<MediaPattern>,
    encodings: Vec<Encoding>,
    cache: Arc<Cache>,
}

/// A body with its compressor: what `ResponseBody` takes apart.
pub struct Encoded {
    pub inner: Kind,
    pub coding: Compressing,
}

/// How a static file may be sent.
pub struct StaticPlan {
    /// Its form depends on Accept-Encoding: `Vary` goes on the response (and its 304).
    pub vary: bool,
    /// The codings to try, best first (siblings, then compression); empty: identity.
    pub accepted: Accepted,
}

impl Compression {
    /// None when compression is off: then nothing of this module runs.
    pub fn new(config: &CompressConfig) -> Option<Self> {
        (config.enabled && !config.encodings.is_empty()).then(|| Compression {
            level: config.level,
            min_size: config.min_size,
            types: config.types.iter().map(|t| MediaPattern::new(t)).collect(),
            encodings: config.encodings.clone(),
            cache: Arc::new(Cache::new(cache::CAPACITY)),
        })
    }

    /// `CompressConfig::compresses_type`, on the header's bytes, with the patterns split beforehand.
    pub fn compresses_type(&self, content_type: &[u8]) -> bool {
        let essence = content_type.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
        self.types.iter().any(|pattern| pattern.matches(essence))
    }

    fn accepted(&self, request: &HeaderMap) -> Accepted {
        negotiate::accepted(request.get(header::ACCEPT_ENCODING).map(HeaderValue::as_bytes), &self.encodings)
    }

    /// The app's response: edits its headers and returns the body to send, compressed
    /// when everything allows it. `kind` comes back untouched otherwise.
    pub fn app_response(&self, method: &Method, request: &HeaderMap, status: StatusCode, headers: &mut HeaderMap, kind: Kind) -> Kind {
        if !status_allows(status) || scan::has(headers, &header::CONTENT_ENCODING) || scan::has(headers, &header::CONTENT_RANGE) {
            return kind;
        }
        if !scan::first(headers, &header::CONTENT_TYPE).is_some_and(|ct| self.compresses_type(ct.as_bytes())) || no_transform(headers) {
            return kind;
        }
        let length = scan::content_length(headers).or(match &kind {
            Kind::Full(data) => Some(data.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::File { remaining, .. } => Some(*remaining),
            Kind::Empty => Some(0),
            Kind::Stream(_) | Kind::Encoded(_) => None,
        });
        if length.is_some_and(|n| n < self.min_size) {
            return kind;
        }
        add_vary(headers);
        let Some(coding) = self.accepted(request).best() else { return kind };
        let head = *method == Method::HEAD;
        match kind {
            Kind::Full(Some(data)) if !head && data.len() <= AT_ONCE => match encoder::compress_all(coding, self.level, &data) {
                Ok(out) => {
                    mark_encoded(headers, coding, Some(out.len() as u64));
                    Kind::Full(Some(Bytes::from(out)))
                }
                Err(e) => {
                    crate::warn!("compression failed, sending the response uncompressed: {e}");
                    Kind::Full(Some(data))
                }
            },
            // http.response.pathsend: a whole file, cached like a static one.
            Kind::File { file, offset: 0, remaining } => match file.metadata() {
                Ok(meta) if meta.len() == remaining => {
                    let (kind, length) = self.file_body(file, &meta, coding, head);
                    mark_encoded(headers, coding, length);
                    kind
                }
                _ => self.encode(headers, coding, Kind::File { file, offset: 0, remaining }),
            },
            kind => self.encode(headers, coding, kind),
        }
    }

    /// Compressed as the connection pulls it; the app's streamed chunks are flushed one by one.
    fn encode(&self, headers: &mut HeaderMap, coding: Encoding, kind: Kind) -> Kind {
        mark_encoded(headers, coding, None);
        let (size, flush_each) = match &kind {
            Kind::Full(data) => (Some(data.as_ref().map_or(0, |d| d.len() as u64)), false),
            Kind::File { remaining, .. } => (Some(*remaining), false),
            Kind::Empty => (Some(0), false),
            Kind::Stream(_) | Kind::Encoded(_) => (None, true),
        };
        Kind::Encoded(Box::new(Encoded { inner: kind, coding: Compressing::new(coding, self.level, size, flush_each) }))
    }

    /// Whether and how a static file of `content_type` and `len` bytes may be compressed.
    /// None: never (its form does not depend on Accept-Encoding).
    pub fn for_static(&self, request: &HeaderMap, content_type: &str, len: u64) -> Option<StaticPlan> {
        if len < self.min_size || !self.compresses_type(content_type.as_bytes()) {
            return None;
        }
        // A Range request gets the identity bytes it counts in: simpler than ranges of
        // a compressed variant, and what resuming clients expect.
        let accepted = if request.contains_key(header::RANGE) { Accepted::default() } else { self.accepted(request) };
        Some(StaticPlan { vary: true, accepted })
    }

    /// A whole file compressed with `coding`: from the cache, or compressed as it is
    /// sent (and cached once complete, when small enough). Returns the body and, when
    /// known, its length. `head`: the headers only (no compression starts for them).
    pub fn file_body(&self, file: std::fs::File, meta: &std::fs::Metadata, coding: Encoding, head: bool) -> (Kind, Option<u64>) {
        let small = meta.len() <= cache::MAX_FILE;
        let key = Key::of(meta, coding);
        if small && let Some(data) = self.cache.get(&key) {
            let len = data.len() as u64;
            return (if head { Kind::Empty } else { Kind::Full(Some(data)) }, Some(len));
        }
        let mut coding = Compressing::new(coding, self.level, Some(meta.len()), false);
        if head {
            // No body and no length: an empty body would announce "Content-Length: 0".
            return (Kind::Encoded(Box::new(Encoded { inner: Kind::Empty, coding })), None);
        }
        if small {
            coding = coding.filling(self.cache.clone(), key);
        }
        let inner = Kind::File { file, offset: 0, remaining: meta.len() };
        (Kind::Encoded(Box::new(Encoded { inner, coding })), None)
    }
}

/// 204, 304 and 1xx carry no body; 206 is a part of the identity bytes.
fn status_allows(status: StatusCode) -> bool {
    status.as_u16() >= 200 && !matches!(status, StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED)
}

/// `Cache-Control: no-transform` (RFC 9111 5.2.2.6): intermediaries must not change the content.
fn no_transform(headers: &HeaderMap) -> bool {
    scan::all(headers, &header::CACHE_CONTROL).any(|v| has_token(v.as_bytes(), b"no-transform"))
}

fn has_token(list: &[u8], token: &[u8]) -> bool {
    list.split(|&b| b == b',').any(|t| {
        let t = t.trim_ascii();
        let name = t.split(|&b| b == b'=').next().unwrap_or_default().trim_ascii();
        name.eq_ignore_ascii_case(token)
    })
}

/// Adds Accept-Encoding to Vary, merging the response's own Vary fields into one.
pub fn add_vary(headers: &mut HeaderMap) {
    let mut existing = headers.get_all(header::VARY).iter().peekable();
    if existing.peek().is_none() {
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        return;
    }
    let mut merged = Vec::new();
    for value in existing {
        if has_token(value.as_bytes(), b"accept-encoding") || has_token(value.as_bytes(), b"*") {
            return;
        }
        if !merged.is_empty() {
            merged.extend_from_slice(b", ");
        }
        merged.extend_from_slice(value.as_bytes());
    }
    merged.extend_from_slice(b", accept-encoding");
    if let Ok(v) = HeaderValue::from_bytes(&merged) {
        headers.insert(header::VARY, v);
    }
}

/// The headers of a response sent with `coding`. `length`: the compressed length when
/// known (else Content-Length goes and the protocol frames it by chunks or DATA frames).
pub fn mark_encoded(headers: &mut HeaderMap, coding: Encoding, length: Option<u64>) {
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding.token()));
    match length {
        Some(n) => headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n)),
        None => headers.remove(header::CONTENT_LENGTH),
    };
    // Ranges are served on the identity bytes only.
    headers.remove(header::ACCEPT_RANGES);
    weaken_etag(headers);
}

/// `"abc"` becomes `W/"abc"`; a weak tag stays as it is.
pub fn weaken_etag(headers: &mut HeaderMap) {
    let Some(tag) = headers.get(header::ETAG) else { return };
    if tag.as_bytes().starts_with(b"\"") {
        let mut weak = Vec::with_capacity(tag.len() + 2);
        weak.extend_from_slice(b"W/");
        weak.extend_from_slice(tag.as_bytes());
        if let Ok(v) = HeaderValue::from_bytes(&weak) {
            headers.insert(header::ETAG, v);
        }
    }
}

#[cfg(test)]
mod tests;
