//! The request body limit (--limit-request-body, nginx's client_max_body_size), for
//! both protocols: a declared Content-Length over the limit is refused before a byte of
//! body is read; a body without one (HTTP/1.1 chunked, HTTP/2 without content-length)
//! is counted as it arrives and cut off the moment it passes the limit.

use http::{HeaderMap, header};

use crate::config::front::BodyLimits;

/// A body (declared or counted) over the limit for its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge {
    pub limit: u64,
}

impl TooLarge {
    /// The message of the 413, in the words of the option that sets it.
    pub fn message(self) -> String {
        format!("Content Too Large: the request body may have at most {} here (--limit-request-body)", human(self.limit))
    }
}

/// The limit a request to `path` is held to, or the refusal of a body its
/// Content-Length already says is too large. Called only for requests with a body.
pub fn admit(limits: &BodyLimits, path: &str, headers: &HeaderMap) -> Result<Option<u64>, TooLarge> {
    let Some(limit) = limits.for_path(path) else { return Ok(None) };
    // HTTP/1.1's parser checked the value; HTTP/2's content-length is checked by the h2
    // crate against the DATA it gets. An unreadable one is left to the counter.
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| std::str::from_utf8(v.as_bytes()).ok()).and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > limit => Err(TooLarge { limit }),
        _ => Ok(Some(limit)),
    }
}

/// Counts a body's bytes as they arrive, against the limit of its path.
#[derive(Debug, Clone, Copy)]
pub struct BodyCounter {
    limit: Option<u64>,
    seen: u64,
}

impl BodyCounter {
    pub fn new(limit: Option<u64>) -> Self {
        BodyCounter { limit, seen: 0 }
    }

    /// Takes `n` more bytes; Err if they would pass the limit (they are then not
    /// counted: none of them may reach the app).
    pub fn take(&mut self, n: usize) -> Result<(), TooLarge> {
        let total = self.seen.saturating_add(n as u64);
        match self.limit {
            Some(limit) if total > limit => Err(TooLarge { limit }),
            _ => {
                self.seen = total;
                Ok(())
            }
        }
    }
}

/// 104857600 -> "100 MiB"; sizes that are no whole unit stay in bytes.
fn human(bytes: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::front::PathLimit;
    use http::HeaderValue;

    fn limits() -> BodyLimits {
        BodyLimits {
            default: Some(1024),
            paths: vec![PathLimit { prefix: "/upload".into(), limit: Some(1 << 20) }, PathLimit { prefix: "/free".into(), limit: None }],
        }
    }

    fn with_length(n: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_str(n).unwrap());
        h
    }

    #[test]
    fn a_declared_length_over_the_limit_of_its_path_is_refused() {
        let l = limits();
        assert_eq!(admit(&l, "/api", &with_length("1024")), Ok(Some(1024)));
        assert_eq!(admit(&l, "/api", &with_length("1025")), Err(TooLarge { limit: 1024 }));
        assert_eq!(admit(&l, "/upload/a", &with_length("1025")), Ok(Some(1 << 20)));
        assert_eq!(admit(&l, "/upload/a", &with_length("1048577")), Err(TooLarge { limit: 1 << 20 }));
        // Not a segment of /upload: the default applies.
        assert_eq!(admit(&l, "/uploads", &with_length("2000")), Err(TooLarge { limit: 1024 }));
        assert_eq!(admit(&l, "/free", &with_length("99999999999")), Ok(None));
        // No length (chunked, or HTTP/2 without one): admitted, to be counted.
        assert_eq!(admit(&l, "/api", &HeaderMap::new()), Ok(Some(1024)));
        let unlimited = BodyLimits { default: None, paths: vec![] };
        assert_eq!(admit(&unlimited, "/", &with_length("99999999999")), Ok(None));
    }

    #[test]
    fn counting_stops_at_the_first_byte_past_the_limit() {
        let mut c = BodyCounter::new(Some(10));
        assert!(c.take(4).is_ok());
        assert!(c.take(6).is_ok(), "exactly the limit is allowed");
        assert_eq!(c.take(1), Err(TooLarge { limit: 10 }));
        let mut c = BodyCounter::new(Some(10));
        assert!(c.take(3).is_ok());
        assert!(c.take(8).is_err(), "a chunk that straddles the limit is refused whole");
        assert!(c.take(7).is_ok(), "the refused chunk was not counted");
        let mut free = BodyCounter::new(None);
        assert!(free.take(usize::MAX).is_ok() && free.take(usize::MAX).is_ok());
    }

    #[test]
    fn the_message_names_the_limit_in_units() {
        assert!(TooLarge { limit: 100 << 20 }.message().contains("100 MiB"));
        assert!(TooLarge { limit: 1500 }.message().contains("1500 bytes"));
        assert!(TooLarge { limit: 4 << 30 }.message().contains("4 GiB"));
    }
}
