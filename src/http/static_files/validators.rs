//! What lets a client skip or split a download: ETag and Last-Modified,
//! the conditional headers that turn a GET into a 304 (RFC 9110 section 13),
//! and single byte ranges (section 14).

use http::{HeaderMap, HeaderValue, header};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The validators of one file version.
pub struct Version {
    pub etag: HeaderValue,
    pub last_modified: HeaderValue,
    /// Modification time in whole seconds, the precision of HTTP dates.
    modified_secs: u64,
}

impl Version {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        let modified = meta.modified().unwrap_or(UNIX_EPOCH);
        let since = modified.duration_since(UNIX_EPOCH).unwrap_or_default();
        // Nanoseconds as well as size: a file rewritten within one second still gets a new tag.
        let etag = format!("\"{:x}-{:x}\"", since.as_nanos(), meta.len());
        let secs = since.as_secs();
        let date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
        Version {
            etag: HeaderValue::from_str(&etag).expect("hex digits and quotes"),
            last_modified: HeaderValue::from_str(&date).expect("an HTTP date is ASCII"),
            modified_secs: secs,
        }
    }

    /// True when the client's copy is current and a 304 answers it.
    pub fn not_modified(&self, headers: &HeaderMap) -> bool {
        // If-None-Match wins over If-Modified-Since when both are sent (RFC 9110 13.2.2).
        if let Some(inm) = headers.get(header::IF_NONE_MATCH) {
            return etag_list_matches(inm.as_bytes(), self.etag.as_bytes(), false);
        }
        match headers.get(header::IF_MODIFIED_SINCE).and_then(parse_date) {
            Some(since) => self.modified_secs <= since,
            None => false,
        }
    }

    /// True when a Range request may be honoured: no If-Range, or one naming this version.
    pub fn range_applies(&self, headers: &HeaderMap) -> bool {
        let Some(if_range) = headers.get(header::IF_RANGE) else { return true };
        let value = if_range.as_bytes();
        if value.starts_with(b"\"") {
            return value == self.etag.as_bytes(); // strong comparison only
        }
        // A date must match exactly (RFC 9110 13.1.5).
        parse_date(if_range) == Some(self.modified_secs)
    }
}

fn parse_date(value: &HeaderValue) -> Option<u64> {
    let text = value.to_str().ok()?;
    let time = httpdate::parse_http_date(text).ok()?;
    time.duration_since(SystemTime::UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Whether a comma-separated list of entity tags (or `*`) holds `ours`.
fn etag_list_matches(list: &[u8], ours: &[u8], strong: bool) -> bool {
    let list = String::from_utf8_lossy(list);
    list.split(',').map(str::trim).any(|tag| {
        if tag == "*" {
            return true;
        }
        match tag.strip_prefix("W/") {
            Some(weak) => !strong && weak.as_bytes() == ours,
            None => tag.as_bytes() == ours,
        }
    })
}

/// What a Range header asks of a file of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Range {
    /// No usable single range: send the whole file (malformed or multi-range
    /// headers are ignored, as RFC 9110 14.2 allows).
    Whole,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// A well-formed range that lies outside the file: 416.
    Unsatisfiable,
}

pub fn parse_range(value: &[u8], len: u64) -> Range {
    let Ok(text) = std::str::from_utf8(value) else { return Range::Whole };
    let Some((unit, spec)) = text.split_once('=') else { return Range::Whole };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return Range::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return Range::Whole };
    let number = |s: &str| -> Option<Option<u64>> {
        match s.trim() {
            "" => Some(None),
            digits if digits.bytes().all(|b| b.is_ascii_digit()) => digits.parse().ok().map(Some),
            _ => None,
        }
    };
    let (Some(first), Some(last)) = (number(first), number(last)) else { return Range::Whole };
    match (first, last) {
        (Some(start), _) if start >= len => Range::Unsatisfiable,
        (Some(start), Some(end)) if end < start => Range::Whole,
        (Some(start), Some(end)) => Range::Part { start, end: end.min(len - 1) },
        (Some(start), None) => Range::Part { start, end: len - 1 },
        (None, Some(0)) => Range::Unsatisfiable,
        (None, Some(_)) if len == 0 => Range::Unsatisfiable,
        (None, Some(suffix)) => Range::Part { start: len.saturating_sub(suffix), end: len - 1 },
        (None, None) => Range::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_as_rfc_9110_reads_them() {
        assert_eq!(parse_range(b"bytes=0-99", 1000), Range::Part { start: 0, end: 99 });
        assert_eq!(parse_range(b"bytes=900-", 1000), Range::Part { start: 900, end: 999 });
        assert_eq!(parse_range(b"bytes=-100", 1000), Range::Part { start: 900, end: 999 });
        assert_eq!(parse_range(b"bytes=-5000", 1000), Range::Part { start: 0, end: 999 });
        assert_eq!(parse_range(b"bytes=500-5000", 1000), Range::Part { start: 500, end: 999 });
        assert_eq!(parse_range(b"Bytes = 1-1", 10), Range::Part { start: 1, end: 1 });
    }

    #[test]
    fn ranges_outside_the_file_are_unsatisfiable() {
        assert_eq!(parse_range(b"bytes=1000-", 1000), Range::Unsatisfiable);
        assert_eq!(parse_range(b"bytes=-0", 1000), Range::Unsatisfiable);
        assert_eq!(parse_range(b"bytes=0-", 0), Range::Unsatisfiable);
    }

    #[test]
    fn odd_ranges_fall_back_to_the_whole_file() {
        for bad in [&b"bytes=5-1"[..], b"bytes=0-1,5-6", b"items=0-1", b"bytes=a-b", b"bytes=", b"bytes=-", b"bytes=+1-2"] {
            assert_eq!(parse_range(bad, 1000), Range::Whole, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn etag_lists_compare_weakly_for_if_none_match() {
        assert!(etag_list_matches(b"\"a\", W/\"b\"", b"\"b\"", false));
        assert!(!etag_list_matches(b"W/\"b\"", b"\"b\"", true));
        assert!(etag_list_matches(b"*", b"\"x\"", false));
        assert!(!etag_list_matches(b"\"c\"", b"\"b\"", false));
    }
}
