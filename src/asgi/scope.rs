//! Building ASGI scope dicts from already-parsed Rust data.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use super::AsgiContext;
use crate::codec::websocket::handshake::Upgrade;
use crate::bridge::exchange::{RequestHead, Scheme};

fn http_version<'py>(py: Python<'py>, version: http::Version) -> &'py Bound<'py, PyString> {
    match version {
        http::Version::HTTP_10 => intern!(py, "1.0"),
        http::Version::HTTP_2 => intern!(py, "2"),
        _ => intern!(py, "1.1"),
    }
}

/// The keys of each kind of scope, in the order they are set: a request's scope
/// starts as a copy of a template (one allocation, no rehashing as keys are added),
/// and every value the template does not already hold is then replaced.
const COMMON_KEYS: [&str; 12] =
    ["type", "asgi", "http_version", "scheme", "path", "raw_path", "root_path", "query_string", "headers", "server", "client", "state"];

/// The two kinds of scope a request can have.
#[derive(Clone, Copy)]
enum Kind {
    Http,
    WebSocket,
}

/// The values a listener's requests repeat, which a template can hold: all three
/// are immutable Python objects (strings and a tuple), so scopes may share them.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Repeated {
    scheme: Scheme,
    version: http::Version,
    server: Option<SocketAddr>,
}

/// A kind's base template (`type` set, every other key `None`), and the last few
/// templates made from it with a listener's repeated values filled in.
struct KindTemplates {
    base: Py<PyDict>,
    recent: Mutex<Vec<(Repeated, Py<PyDict>)>>,
}

/// How many filled-in templates a kind keeps: enough for HTTP/1.1 and HTTP/2, plain
/// and TLS, on one address; a server reached at more addresses (`0.0.0.0`) makes
/// the rest as it goes, which costs what building a scope without one did.
const RECENT_TEMPLATES: usize = 4;

pub struct Templates {
    http: KindTemplates,
    websocket: KindTemplates,
    /// The last client address turned into text: a keep-alive connection's requests
    /// repeat it, and formatting an IP address is a good part of building a scope.
    /// (The server's address is in the templates.)
    client_host: Mutex<Option<(IpAddr, Py<PyString>)>>,
}

impl Templates {
    pub fn new(py: Python<'_>) -> PyResult<Self> {
        let template = |kind: &str, extra: &[&str]| -> PyResult<KindTemplates> {
            let d = PyDict::new(py);
            for key in COMMON_KEYS.iter().chain(extra) {
                d.set_item(PyString::intern(py, key), py.None())?;
            }
            d.set_item(PyString::intern(py, "type"), PyString::intern(py, kind))?;
            Ok(KindTemplates { base: d.unbind(), recent: Mutex::new(Vec::with_capacity(RECENT_TEMPLATES)) })
        };
        Ok(Templates {
            http: template("http", &["method", "extensions"])?,
            websocket: template("websocket", &["subprotocols", "extensions"])?,
            client_host: Mutex::new(None),
        })
    }

    /// A new scope dict of this kind, holding `type`, `http_version`, `scheme`,
    /// `server` and the configured `root_path` already: a server's requests almost
    /// all share them, and setting four keys was a fifth of building a scope.
    fn scope<'py>(&self, py: Python<'py>, ctx: &AsgiContext, kind: Kind, head: &RequestHead) -> PyResult<Bound<'py, PyDict>> {
        let templates = match kind {
            Kind::Http => &self.http,
            Kind::WebSocket => &self.websocket,
        };
        let repeated = Repeated { scheme: head.scheme, version: head.version, server: head.server };
        // Only the loop thread builds scopes, under the GIL: the lock is never contended.
        let mut recent = templates.recent.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, template)) = recent.iter().find(|(values, _)| *values == repeated) {
            return template.bind(py).copy();
        }
        let template = templates.base.bind(py).copy()?;
        template.set_item(intern!(py, "http_version"), http_version(py, head.version))?;
        template.set_item(intern!(py, "scheme"), scheme(py, kind, head.scheme))?;
        template.set_item(intern!(py, "server"), address(py, head.server, |ip| PyString::new(py, &ip.to_string()))?)?;
        template.set_item(intern!(py, "root_path"), PyString::new(py, &ctx.root_path))?;
        let scope = template.copy()?;
        if recent.len() == RECENT_TEMPLATES {
            recent.remove(0);
        }
        recent.push((repeated, template.unbind()));
        Ok(scope)
    }
}

fn scheme<'py>(py: Python<'py>, kind: Kind, scheme: Scheme) -> &'py Bound<'py, PyString> {
    match (kind, scheme) {
        (Kind::Http, Scheme::Http) => intern!(py, "http"),
        (Kind::Http, Scheme::Https) => intern!(py, "https"),
        (Kind::WebSocket, Scheme::Http) => intern!(py, "ws"),
        (Kind::WebSocket, Scheme::Https) => intern!(py, "wss"),
    }
}

fn host<'py>(py: Python<'py>, cache: &Mutex<Option<(IpAddr, Py<PyString>)>>, ip: IpAddr) -> Bound<'py, PyString> {
    // Only the loop thread builds scopes, under the GIL: the lock is never contended.
    let mut last = cache.lock().unwrap_or_else(|p| p.into_inner());
    match &*last {
        Some((cached, text)) if *cached == ip => text.bind(py).clone(),
        _ => {
            let text = PyString::new(py, &ip.to_string());
            *last = Some((ip, text.clone().unbind()));
            text
        }
    }
}

/// An ASGI `(host, port)` pair, or None (a unix socket's peer).
fn address<'py>(py: Python<'py>, addr: Option<SocketAddr>, host: impl FnOnce(IpAddr) -> Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
    match addr {
        Some(a) => Ok(PyTuple::new(py, [host(a.ip()).into_any(), a.port().into_pyobject(py)?.into_any()])?.into_any()),
        None => Ok(py.None().into_bound(py)),
    }
}

fn method_str<'py>(py: Python<'py>, method: &http::Method) -> Bound<'py, PyString> {
    match *method {
        http::Method::GET => intern!(py, "GET").clone(),
        http::Method::POST => intern!(py, "POST").clone(),
        http::Method::HEAD => intern!(py, "HEAD").clone(),
        http::Method::PUT => intern!(py, "PUT").clone(),
        http::Method::DELETE => intern!(py, "DELETE").clone(),
        http::Method::OPTIONS => intern!(py, "OPTIONS").clone(),
        http::Method::PATCH => intern!(py, "PATCH").clone(),
        _ => PyString::new(py, method.as_str()),
    }
}

/// The keys shared by http and websocket scopes.
fn common<'py>(py: Python<'py>, ctx: &AsgiContext, head: &RequestHead, kind: Kind) -> PyResult<Bound<'py, PyDict>> {
    let scope = ctx.scopes.scope(py, ctx, kind, head)?;
    let asgi = PyDict::new(py);
    asgi.set_item(intern!(py, "version"), intern!(py, "3.0"))?;
    asgi.set_item(intern!(py, "spec_version"), intern!(py, "2.4"))?;
    scope.set_item(intern!(py, "asgi"), asgi)?;

    let raw_path = head.uri.path().as_bytes();
    let decoded = percent_encoding::percent_decode(raw_path).decode_utf8_lossy();
    // --root-path, then what a trusted proxy says it strips (X-Forwarded-Prefix).
    let root_path = match &head.prefix {
        None => std::borrow::Cow::Borrowed(ctx.root_path.as_str()),
        Some(prefix) => std::borrow::Cow::Owned(format!("{}{prefix}", ctx.root_path)),
    };
    if root_path.is_empty() {
        scope.set_item(intern!(py, "path"), &*decoded)?;
        scope.set_item(intern!(py, "raw_path"), PyBytes::new(py, raw_path))?;
    } else {
        scope.set_item(intern!(py, "path"), format!("{root_path}{decoded}"))?;
        let mut full = root_path.as_bytes().to_vec();
        full.extend_from_slice(raw_path);
        scope.set_item(intern!(py, "raw_path"), PyBytes::new(py, &full))?;
    }
    if head.prefix.is_some() {
        // The template holds the configured root path; a proxy's prefix extends it.
        scope.set_item(intern!(py, "root_path"), &*root_path)?;
    }
    let query = head.uri.query().unwrap_or("").as_bytes();
    scope.set_item(intern!(py, "query_string"), PyBytes::new(py, query))?;

    let headers = PyList::empty(py);
    for (name, value) in head.headers_in_order() {
        headers.append(PyTuple::new(py, [PyBytes::new(py, name.as_str().as_bytes()), PyBytes::new(py, value.as_bytes())])?)?;
    }
    scope.set_item(intern!(py, "headers"), headers)?;
    scope.set_item(intern!(py, "client"), address(py, head.client, |ip| host(py, &ctx.scopes.client_host, ip))?)?;
    let state = ctx.state.bind(py);
    scope.set_item(intern!(py, "state"), if state.is_empty() { PyDict::new(py) } else { state.copy()? })?;
    Ok(scope)
}

pub fn websocket_scope<'py>(py: Python<'py>, ctx: &AsgiContext, head: &RequestHead, upgrade: &Upgrade) -> PyResult<Bound<'py, PyDict>> {
    let scope = common(py, ctx, head, Kind::WebSocket)?;
    scope.set_item(intern!(py, "subprotocols"), PyList::new(py, &upgrade.subprotocols)?)?;
    let extensions = PyDict::new(py);
    extensions.set_item(intern!(py, "websocket.http.response"), PyDict::new(py))?;
    add_tls(py, head, &extensions)?;
    scope.set_item(intern!(py, "extensions"), extensions)?;
    Ok(scope)
}

pub fn http_scope<'py>(py: Python<'py>, ctx: &AsgiContext, head: &RequestHead) -> PyResult<Bound<'py, PyDict>> {
    let scope = common(py, ctx, head, Kind::Http)?;
    scope.set_item(intern!(py, "method"), method_str(py, &head.method))?;
    let extensions = PyDict::new(py);
    extensions.set_item(intern!(py, "http.response.pathsend"), PyDict::new(py))?;
    if head.version == http::Version::HTTP_2 {
        // Only HTTP/2 carries them to the client (HTTP/1.1 would need the client's TE: trailers).
        extensions.set_item(intern!(py, "http.response.trailers"), PyDict::new(py))?;
    }
    add_tls(py, head, &extensions)?;
    scope.set_item(intern!(py, "extensions"), extensions)?;
    Ok(scope)
}

/// The ASGI TLS extension, on connections that came in over TLS.
fn add_tls(py: Python<'_>, head: &RequestHead, extensions: &Bound<'_, PyDict>) -> PyResult<()> {
    let Some(tls) = &head.tls else { return Ok(()) };
    let info = PyDict::new(py);
    info.set_item(intern!(py, "server_cert"), py.None())?;
    info.set_item(intern!(py, "client_cert_chain"), PyList::new(py, &tls.client_cert_chain)?)?;
    info.set_item(intern!(py, "client_cert_name"), py.None())?;
    info.set_item(intern!(py, "client_cert_error"), py.None())?;
    info.set_item(intern!(py, "tls_version"), tls.version)?;
    info.set_item(intern!(py, "cipher_suite"), tls.cipher_suite)?;
    extensions.set_item(intern!(py, "tls"), info)
}
