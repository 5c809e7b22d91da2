//! The host check (nginx's server_name): a request for a name this server does not
//! serve is refused before static files and the app, so scanners that hit the IP
//! address (or a name that merely points here) never reach the app. And the optional
//! canonical name: www.example.com <-> example.com, by a 301.
//!
//! The name is the request's authority (HTTP/2's :authority, an absolute-form target)
//! or else its Host header, after trusted proxy headers (X-Forwarded-Host, Forwarded
//! host=) had their say; compared without port, brackets or trailing dot, in any case.
//!
//! TLS: the name a client gave in SNI is not compared with Host. A request for a name
//! we serve is served on any of our TLS connections (browsers reuse an HTTP/2
//! connection for another name only when its certificate covers that name too); a
//! request for a name we do not serve gets the 421 RFC 9110 15.5.20 made for exactly
//! that case, and the client may retry on a connection of its own for that name.

use http::request::Parts;
use http::{HeaderValue, StatusCode, header};
use std::sync::Arc;

use super::access_log::Entry;
use super::ctx::{ConnInfo, ServerCtx};
use super::service::{Dispatched, plain};
use crate::bridge::exchange::Scheme;
use crate::config::front::{HostConfig, UnknownHost, WwwRedirect};

/// What the host check makes of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Serve,
    /// Not one of ours: --unknown-host says how to refuse it.
    Unknown,
    /// To the canonical name: this host, with the request's port kept.
    Redirect(String),
}

/// The pipeline stage: None lets the request on; else the answer (421, a close
/// without a response, or the www redirect). Costs nothing when no name is configured
/// and no redirect asked for.
pub fn stage(ctx: &Arc<ServerCtx>, parts: &Parts, scheme: Scheme, conn: &ConnInfo, entry: &mut Option<Box<Entry>>) -> Option<Dispatched> {
    let cfg = &ctx.config.front.hosts;
    if cfg.names.is_empty() && cfg.www == WwwRedirect::Off {
        return None;
    }
    // The CA's HTTP-01 validation on the plain listener is answered whatever its Host
    // (it is one of our --domain names anyway): never refused, never redirected.
    let acme = ctx.config.tls.as_ref().is_some_and(|t| t.acme) && conn.tls.is_none();
    if acme && parts.uri.path().starts_with(super::to_https::CHALLENGE_PREFIX) {
        return None;
    }
    let authority = authority(parts);
    let log = |entry: &mut Option<Box<Entry>>| entry.take().map(|e| (ctx.clone(), e));
    match check(cfg, authority) {
        Verdict::Serve => None,
        Verdict::Unknown => Some(match cfg.unknown {
            UnknownHost::Misdirected => Dispatched::Answer(plain(StatusCode::MISDIRECTED_REQUEST, "Misdirected Request: this server does not serve that host name", true, log(entry))),
            UnknownHost::Close => {
                // Logged as nginx logs its `return 444`.
                if let Some(e) = entry.take() {
                    ctx.log_access(&e, 444, 0);
                }
                Dispatched::Close
            }
        }),
        Verdict::Redirect(host) => {
            let scheme = if scheme == Scheme::Https { "https" } else { "http" };
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let location = HeaderValue::from_str(&format!("{scheme}://{host}{path}")).ok()?;
            let mut response = plain(StatusCode::MOVED_PERMANENTLY, "Moved Permanently", false, log(entry));
            response.headers_mut().insert(header::LOCATION, location);
            Some(Dispatched::Answer(response))
        }
    }
}

/// The request's authority as it came (empty when it has none: a name that matches nothing).
fn authority(parts: &Parts) -> &[u8] {
    match parts.uri.authority() {
        Some(a) => a.as_str().as_bytes(),
        None => parts.headers.get(header::HOST).map_or(&b""[..], HeaderValue::as_bytes),
    }
}

/// The check itself, on the raw authority ("Example.COM.:8080", "[::1]:80").
pub fn check(cfg: &HostConfig, authority: &[u8]) -> Verdict {
    let mut buf = [0u8; 256];
    let Some((host, port)) = normalize(authority, &mut buf) else {
        return if cfg.names.is_empty() { Verdict::Serve } else { Verdict::Unknown };
    };
    let served = |name: &str| cfg.names.is_empty() || cfg.names.iter().any(|n| n.matches(name));
    if cfg.www != WwwRedirect::Off && !is_address(host) {
        let target = match cfg.www {
            WwwRedirect::ToBare => host.strip_prefix("www.").filter(|bare| !bare.is_empty()).map(str::to_string),
            // Only names with a dot: www.localhost is nobody's canonical name.
            WwwRedirect::ToWww => (!host.starts_with("www.") && host.contains('.')).then(|| format!("www.{host}")),
            WwwRedirect::Off => None,
        };
        // Never to a name we would refuse.
        if let Some(target) = target.filter(|t| served(t)) {
            return Verdict::Redirect(format!("{target}{port}"));
        }
    }
    if served(host) { Verdict::Serve } else { Verdict::Unknown }
}

/// The host name of an authority, lowercase, without brackets or trailing dot, in
/// `buf`; and its ":port" part as it came (possibly empty). None: no usable name
/// (empty, userinfo, junk, longer than a DNS name can be).
fn normalize<'b>(authority: &[u8], buf: &'b mut [u8; 256]) -> Option<(&'b str, &'b str)> {
    let (name, port) = if let Some(rest) = authority.strip_prefix(b"[") {
        let end = rest.iter().position(|&b| b == b']')?;
        (&rest[..end], &rest[end + 1..])
    } else {
        match authority.iter().rposition(|&b| b == b':') {
            Some(i) => (&authority[..i], &authority[i..]),
            None => (authority, &b""[..]),
        }
    };
    if !(port.is_empty() || (port[0] == b':' && port[1..].iter().all(u8::is_ascii_digit))) {
        return None;
    }
    let name = name.strip_suffix(b".").unwrap_or(name);
    let bracketed = authority.first() == Some(&b'[');
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_' || (bracketed && b == b':');
    if name.is_empty() || name.len() + port.len() > buf.len() || !name.iter().all(|&b| allowed(b)) {
        return None;
    }
    let (host, rest) = buf.split_at_mut(name.len());
    for (dst, src) in host.iter_mut().zip(name) {
        *dst = src.to_ascii_lowercase();
    }
    rest[..port.len()].copy_from_slice(port);
    // ASCII by the checks above.
    let host = std::str::from_utf8(host).ok()?;
    let port = std::str::from_utf8(&rest[..port.len()]).ok()?;
    Some((host, port))
}

/// An IP literal: no www. variant of it exists.
fn is_address(host: &str) -> bool {
    host.contains(':') || host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

#[cfg(test)]
#[path = "host_tests.rs"]
mod tests;
