//! Files the server answers itself (--static URL_PATH=DIR): what nginx's
//! `location /static` does in the tutorial's stack, on the I/O thread,
//! without Python.
//!
//! Safety first: paths are resolved with openat2(RESOLVE_BENEATH) relative to
//! a directory opened at startup, so neither `..` nor a symlink can reach
//! outside it; hidden files (.env, .git/) are never served; FIFOs and devices
//! are refused without blocking.

mod encoded;
mod mime;
mod validators;

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, header};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::body::Kind;
use super::compress::Compression;
use crate::config::StaticConfig;
use validators::{Range, Version};

pub struct StaticFiles {
    /// Longest prefix first, so /static/img wins over /static.
    mounts: Vec<Mount>,
    cache_control: Option<HeaderValue>,
    /// False where the kernel lacks openat2 (before Linux 5.6): symlinks are then followed.
    beneath: bool,
}

struct Mount {
    prefix: String,
    root: OwnedFd,
}

/// A static response before the access log and body accounting are attached.
pub type Reply = Response<Kind>;

impl StaticFiles {
    /// Opens every mounted directory; None when nothing is mounted.
    pub fn open(config: &StaticConfig) -> Result<Option<Self>, String> {
        if config.mounts.is_empty() {
            return Ok(None);
        }
        let mut mounts = Vec::new();
        for m in &config.mounts {
            let dir = File::open(&m.dir).map_err(|e| format!("--static {}: cannot open {}: {e}", m.prefix, m.dir.display()))?;
            mounts.push(Mount { prefix: m.prefix.clone(), root: dir.into() });
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.prefix.len()));
        let beneath = openat2_works(&mounts[0].root);
        if !beneath {
            crate::warn!("this kernel has no openat2: symlinks under --static directories are followed even where they lead outside");
        }
        let cache_control = config
            .max_age
            .map(|s| HeaderValue::from_str(&format!("public, max-age={s}")).expect("digits"));
        Ok(Some(StaticFiles { mounts, cache_control, beneath }))
    }

    /// Serves the request if its path lies under a mount; None leaves it to the app.
    /// `compress`: how responses are compressed (None: never).
    pub fn serve(&self, method: &Method, uri: &Uri, headers: &HeaderMap, compress: Option<&Compression>) -> Option<Reply> {
        let path = uri.path();
        let (mount, rest) = self.mounts.iter().find_map(|m| {
            let rest = path.strip_prefix(m.prefix.as_str())?;
            (rest.is_empty() || rest.starts_with('/')).then_some((m, rest))
        })?;
        let head = *method == Method::HEAD;
        if !head && *method != Method::GET {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed: static files answer GET and HEAD");
            r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Some(r);
        }
        if rest.is_empty() {
            return Some(redirect_to_directory(uri));
        }
        Some(match relative_path(rest) {
            Err(reply) => reply,
            Ok(rel) => self.serve_file(mount, rel, uri, headers, head, compress),
        })
    }

    fn serve_file(&self, mount: &Mount, rel: RelPath, uri: &Uri, headers: &HeaderMap, head: bool, compress: Option<&Compression>) -> Reply {
        let opened = self.open_beneath(&mount.root, &rel.path).and_then(|f| {
            let meta = f.metadata()?;
            Ok((f, meta))
        });
        let (mut file, mut meta) = match opened {
            Ok(ok) => ok,
            Err(e) => return failed(e, uri),
        };
        let mut name = rel.path.clone();
        if meta.is_dir() {
            if !rel.trailing_slash {
                return redirect_to_directory(uri);
            }
            name = if rel.path == b"." { b"index.html".to_vec() } else { [&rel.path[..], b"/index.html"].concat() };
            match self.open_beneath(&mount.root, &name).and_then(|f| Ok((f.metadata()?, f))) {
                Ok((m, f)) => (meta, file) = (m, f),
                Err(e) => return failed(e, uri),
            }
        }
        if !meta.is_file() {
            return text(StatusCode::NOT_FOUND, "Not Found");
        }

        let version = Version::of(&meta);
        let len = meta.len();
        let content_type = mime::content_type(&name);
        let mut response = Response::new(Kind::Empty);
        let h = response.headers_mut();
        h.insert(header::ETAG, version.etag.clone());
        h.insert(header::LAST_MODIFIED, version.last_modified.clone());
        if let Some(cc) = &self.cache_control {
            h.insert(header::CACHE_CONTROL, cc.clone());
        }
        // Decided before the 304, which carries the Vary and ETag a 200 would.
        let plan = compress.and_then(|c| Some((c, c.for_static(headers, content_type, len)?)));
        if let Some((_, plan)) = &plan {
            encoded::vary_and_tag(h, plan);
        }
        if version.not_modified(headers) {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            return response;
        }
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));

        let range = match headers.get(header::RANGE) {
            Some(r) if !head && version.range_applies(headers) => validators::parse_range(r.as_bytes(), len),
            _ => Range::Whole,
        };
        let (start, count) = match range {
            Range::Whole => (0, len),
            Range::Part { start, end } => {
                *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                let value = format!("bytes {start}-{end}/{len}");
                response.headers_mut().insert(header::CONTENT_RANGE, HeaderValue::from_str(&value).expect("digits"));
                (start, end - start + 1)
            }
            Range::Unsatisfiable => {
                let mut r = text(StatusCode::RANGE_NOT_SATISFIABLE, "Range Not Satisfiable");
                let value = HeaderValue::from_str(&format!("bytes */{len}")).expect("digits");
                r.headers_mut().insert(header::CONTENT_RANGE, value);
                return r;
            }
        };
        if let Some((compress, plan)) = plan.filter(|(_, p)| !p.accepted.is_empty()) {
            // Whole-file GET or HEAD (a Range request is never compressed).
            self.send_encoded(&mount.root, &name, &meta, file, plan.accepted, compress, head, &mut response);
            return response;
        }
        response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(count));
        if !head && count > 0 {
            // Read when the connection asks for the body: the descriptor is kept, so a rename
            // or replace of the file meanwhile cannot mix two versions in one response.
            *response.body_mut() = Kind::File { file, offset: start, remaining: count };
        }
        response
    }

    /// openat2(RESOLVE_BENEATH) under `root`: `..`, absolute symlinks and
    /// symlinks leading out all fail with EXDEV. O_NONBLOCK so that a FIFO
    /// placed in the directory cannot stall the I/O thread on open.
    fn open_beneath(&self, root: &OwnedFd, rel: &[u8]) -> std::io::Result<File> {
        let rel = CString::new(rel).map_err(|_| std::io::Error::from(std::io::ErrorKind::NotFound))?;
        let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY;
        let fd = if self.beneath {
            // SAFETY: open_how is plain integers; all-zero is its documented default.
            let mut how: libc::open_how = unsafe { std::mem::zeroed() };
            how.flags = flags as u64;
            how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
            // SAFETY: `how` and `rel` outlive the call; the size is the struct's own.
            unsafe {
                libc::syscall(libc::SYS_openat2, root.as_raw_fd(), rel.as_ptr(), &how as *const libc::open_how, std::mem::size_of::<libc::open_how>()) as i32
            }
        } else {
            // SAFETY: plain openat on a NUL-terminated path.
            unsafe { libc::openat(root.as_raw_fd(), rel.as_ptr(), flags) }
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
}

/// The decoded path under a mount, checked segment by segment.
struct RelPath {
    /// Relative to the mount's directory, "." for the directory itself.
    path: Vec<u8>,
    trailing_slash: bool,
}

/// Decodes `rest` ("/css/app.css") into a path relative to the mount. `..`
/// is refused outright (nginx answers 400 too); hidden names get 404 so that
/// a stray .env or .git/ next to the assets is never served; `.well-known`
/// stays reachable for security.txt and the like.
fn relative_path(rest: &str) -> Result<RelPath, Reply> {
    let decoded: std::borrow::Cow<[u8]> = if rest.contains('%') {
        percent_encoding::percent_decode_str(rest).collect::<Vec<u8>>().into()
    } else {
        rest.as_bytes().into()
    };
    if decoded.contains(&0) {
        return Err(text(StatusCode::BAD_REQUEST, "Bad Request: NUL byte in the path"));
    }
    let mut path = Vec::with_capacity(decoded.len());
    for segment in decoded.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => continue,
            b".." => return Err(text(StatusCode::BAD_REQUEST, "Bad Request: '..' in a static file path")),
            b".well-known" => {}
            s if s[0] == b'.' => return Err(text(StatusCode::NOT_FOUND, "Not Found")),
            _ => {}
        }
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(segment);
    }
    if path.is_empty() {
        path.push(b'.');
    }
    Ok(RelPath { path, trailing_slash: decoded.ends_with(b"/") })
}

/// 301 from /static to /static/ (and from a directory to its slash form), query kept.
fn redirect_to_directory(uri: &Uri) -> Reply {
    let location = match uri.query() {
        Some(q) => format!("{}/?{q}", uri.path()),
        None => format!("{}/", uri.path()),
    };
    let mut r = text(StatusCode::MOVED_PERMANENTLY, "Moved Permanently");
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The answer to an open() that failed; leaving the root reads as not found.
fn failed(err: std::io::Error, uri: &Uri) -> Reply {
    match err.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => text(StatusCode::FORBIDDEN, "Forbidden"),
        Some(libc::ENOENT | libc::ENOTDIR | libc::EXDEV | libc::ELOOP | libc::ENAMETOOLONG | libc::ENXIO) => {
            text(StatusCode::NOT_FOUND, "Not Found")
        }
        _ => {
            crate::error!("static file {}: {err}", uri.path());
            text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
        }
    }
}

fn text(status: StatusCode, message: &'static str) -> Reply {
    let body = bytes::Bytes::from(format!("{message}\n"));
    let mut r = Response::new(Kind::Full(Some(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if status.is_client_error() || status.is_server_error() {
        // Rendered for the client's Accept (or replaced by --error-page) as the front's own errors are.
        r.extensions_mut().insert(crate::http::error_page::FrontError(message.to_string()));
    }
    r
}

/// Whether openat2 is usable here (Linux 5.6+, not filtered by seccomp).
fn openat2_works(root: &OwnedFd) -> bool {
    let probe = StaticFiles { mounts: Vec::new(), cache_control: None, beneath: true };
    probe.open_beneath(root, b".").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> Result<(String, bool), u16> {
        relative_path(s)
            .map(|r| (String::from_utf8(r.path).unwrap(), r.trailing_slash))
            .map_err(|r| r.status().as_u16())
    }

    #[test]
    fn paths_are_decoded_and_normalized() {
        assert_eq!(rel("/css/app.css"), Ok(("css/app.css".into(), false)));
        assert_eq!(rel("//a/./b/"), Ok(("a/b".into(), true)));
        assert_eq!(rel("/"), Ok((".".into(), true)));
        assert_eq!(rel("/a%20b.txt"), Ok(("a b.txt".into(), false)));
        assert_eq!(rel("/.well-known/security.txt"), Ok((".well-known/security.txt".into(), false)));
    }

    #[test]
    fn escapes_and_hidden_files_are_refused() {
        assert_eq!(rel("/../etc/passwd"), Err(400));
        assert_eq!(rel("/a/%2e%2e/%2e%2e/x"), Err(400));
        assert_eq!(rel("/a%2f..%2fb"), Err(400));
        assert_eq!(rel("/x%00.txt"), Err(400));
        assert_eq!(rel("/.env"), Err(404));
        assert_eq!(rel("/sub/.git/config"), Err(404));
    }
}
