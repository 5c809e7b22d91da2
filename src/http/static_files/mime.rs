//! Content types by file extension: the common web types, as nginx's
//! mime.types maps them, with charset=utf-8 on text so browsers never guess.

/// The Content-Type for a file name; application/octet-stream when unknown.
pub fn content_type(name: &[u8]) -> &'static str {
    let Some(dot) = name.iter().rposition(|&b| b == b'.') else {
        return DEFAULT;
    };
    let ext = &name[dot + 1..];
    if ext.is_empty() || ext.len() > 11 {
        return DEFAULT;
    }
    let mut lower = [0u8; 11];
    for (d, s) in lower.iter_mut().zip(ext) {
        *d = s.to_ascii_lowercase();
    }
    TYPES
        .iter()
        .find(|(e, _)| e.as_bytes() == &lower[..ext.len()])
        .map_or(DEFAULT, |(_, t)| t)
}

const DEFAULT: &str = "application/octet-stream";

/// Ordered roughly by how often a web page asks for them.
const TYPES: &[(&str, &str)] = &[
    ("js", "text/javascript; charset=utf-8"),
    ("css", "text/css; charset=utf-8"),
    ("html", "text/html; charset=utf-8"),
    ("png", "image/png"),
    ("svg", "image/svg+xml"),
    ("woff2", "font/woff2"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("webp", "image/webp"),
    ("json", "application/json"),
    ("mjs", "text/javascript; charset=utf-8"),
    ("map", "application/json"),
    ("ico", "image/vnd.microsoft.icon"),
    ("gif", "image/gif"),
    ("avif", "image/avif"),
    ("woff", "font/woff"),
    ("ttf", "font/ttf"),
    ("otf", "font/otf"),
    ("htm", "text/html; charset=utf-8"),
    ("txt", "text/plain; charset=utf-8"),
    ("md", "text/markdown; charset=utf-8"),
    ("csv", "text/csv; charset=utf-8"),
    ("xml", "application/xml"),
    ("webmanifest", "application/manifest+json"),
    ("wasm", "application/wasm"),
    ("pdf", "application/pdf"),
    ("mp4", "video/mp4"),
    ("webm", "video/webm"),
    ("mp3", "audio/mpeg"),
    ("ogg", "audio/ogg"),
    ("wav", "audio/wav"),
    ("zip", "application/zip"),
    ("gz", "application/gzip"),
    ("tar", "application/x-tar"),
];

#[cfg(test)]
mod tests {
    use super::content_type;

    #[test]
    fn known_extensions_any_case() {
        assert_eq!(content_type(b"app.JS"), "text/javascript; charset=utf-8");
        assert_eq!(content_type(b"a.b/index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type(b"site.webmanifest"), "application/manifest+json");
    }

    #[test]
    fn unknown_or_missing_extension_is_octet_stream() {
        assert_eq!(content_type(b"README"), "application/octet-stream");
        assert_eq!(content_type(b"x."), "application/octet-stream");
        assert_eq!(content_type(b"x.averyveryverylongext"), "application/octet-stream");
    }
}
