//! Trusted proxy headers: what a reverse proxy or load balancer in front says about
//! the request it forwards. Honoured only when the peer is a proxy we trust
//! (--proxy-headers, --forwarded-allow-ips; unix-socket peers always).
//!
//! - RFC 7239 `Forwarded` (for=, proto=, host=), and the older `X-Forwarded-For`,
//!   `-Proto`, `-Host`. When a request has `Forwarded`, it wins: the X-Forwarded
//!   trio is ignored (a proxy that writes the standard header writes the truth there;
//!   mixing the two lets whichever is stale win).
//! - The client is the rightmost address our trusted proxies did not add themselves
//!   (anything left of it the client could have written), or the leftmost when every
//!   hop is trusted; an `unknown` or obfuscated (`_hidden`) node leaves the peer as it is.
//! - `X-Forwarded-Host` (or `host=`) becomes the request's Host, for the host check and
//!   for the app, as uvicorn's and werkzeug's ProxyFix do; `X-Forwarded-Port` the port
//!   of the scope's `server` and of that Host; `X-Forwarded-Prefix` is appended to the
//!   scope's `root_path`. These two have no `Forwarded` counterpart: they apply with either.

use http::request::Parts;
use http::{HeaderMap, HeaderValue, header};
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use crate::bridge::exchange::Scheme;
use crate::config::ProxyConfig;

/// Unix-socket peers (None) are always trusted: only local processes reach them.
pub fn peer_trusted(cfg: &ProxyConfig, peer: Option<SocketAddr>) -> bool {
    cfg.enabled && peer.is_none_or(|p| cfg.trusted.contains(p.ip()))
}

/// What the proxy said beyond the client and the scheme.
#[derive(Debug, Default, PartialEq)]
pub struct Extra {
    /// X-Forwarded-Port: the port the client connected to.
    pub port: Option<u16>,
    /// X-Forwarded-Prefix: "/api", no trailing slash.
    pub prefix: Option<Box<str>>,
}

/// Applies the headers of a trusted peer: `client` and `scheme` in place, the Host in
/// `parts` (header and authority); the rest is returned.
pub fn apply(cfg: &ProxyConfig, peer: Option<SocketAddr>, parts: &mut Parts, client: &mut Option<SocketAddr>, scheme: &mut Scheme) -> Extra {
    if !peer_trusted(cfg, peer) || !any_proxy_header(&parts.headers) {
        return Extra::default();
    }
    let said = match parts.headers.contains_key(header::FORWARDED) {
        true => from_forwarded(cfg, &parts.headers),
        false => from_x_forwarded(cfg, &parts.headers),
    };
    if let Some(ip) = said.client {
        *client = Some(ip);
    }
    if let Some(s) = said.scheme {
        *scheme = s;
    }
    if let Some(host) = said.host.filter(|h| valid_host(h)).map(Cow::into_owned) {
        set_host(parts, &host);
    }
    let port = last(&parts.headers, "x-forwarded-port").and_then(|p| p.parse::<u16>().ok()).filter(|p| *p != 0);
    if let Some(port) = port {
        let host = parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(|h| without_port(h).to_string());
        if let Some(host) = host {
            let default = matches!((*scheme, port), (Scheme::Http, 80) | (Scheme::Https, 443));
            set_host(parts, &if default { host } else { format!("{host}:{port}") });
        }
    }
    let prefix = last(&parts.headers, "x-forwarded-prefix").and_then(prefix);
    Extra { port, prefix }
}

/// One pass over a few names instead of six lookups: most requests (a trusted local
/// client, a benchmark) carry none of these headers.
fn any_proxy_header(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| name == header::FORWARDED || name.as_str().starts_with("x-forwarded-"))
}

/// What one proxy header rule made of the request.
#[derive(Debug, Default)]
struct Said<'a> {
    client: Option<SocketAddr>,
    scheme: Option<Scheme>,
    host: Option<Cow<'a, str>>,
}

fn from_x_forwarded<'a>(cfg: &ProxyConfig, headers: &'a HeaderMap) -> Said<'a> {
    let forwarded: Vec<IpAddr> = all_values(headers, "x-forwarded-for").filter_map(|s| parse_ip(s.trim())).collect();
    // The rightmost address our trusted proxies did not add themselves is the client.
    let chosen = forwarded.iter().rev().find(|ip| !cfg.trusted.contains(**ip)).or(forwarded.first());
    Said {
        client: chosen.map(|ip| SocketAddr::new(*ip, 0)),
        scheme: last(headers, "x-forwarded-proto").and_then(parse_scheme),
        host: last(headers, "x-forwarded-host").map(Cow::Borrowed),
    }
}

/// RFC 7239: each proxy appends one element saying what it received: for= the
/// address that connected to it, proto= and host= what that client asked for. The
/// element to believe is the one whose for= is the first untrusted address from the
/// right: a trusted proxy wrote it, about the client.
fn from_forwarded<'a>(cfg: &ProxyConfig, headers: &'a HeaderMap) -> Said<'a> {
    let elements: Vec<&str> = headers.get_all(header::FORWARDED).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| split_unquoted(v, b',')).collect();
    let node = |element: &str| pairs(element).find(|(k, _)| k.eq_ignore_ascii_case("for")).and_then(|(_, v)| parse_node(&v));
    let chosen = elements.iter().rev().find(|e| node(e).is_none_or(|a| !cfg.trusted.contains(a.ip()))).or(elements.first());
    let Some(element) = chosen else { return Said::default() };
    let mut said = Said { client: node(element), ..Said::default() };
    for (key, value) in pairs(element) {
        if key.eq_ignore_ascii_case("proto") {
            said.scheme = parse_scheme(&value);
        } else if key.eq_ignore_ascii_case("host") {
            said.host = Some(value);
        }
    }
    said
}

/// The `key=value` pairs of one element, values unquoted.
fn pairs(element: &str) -> impl Iterator<Item = (&str, Cow<'_, str>)> {
    split_unquoted(element, b';').filter_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        Some((key.trim(), unquote(value.trim())))
    })
}

/// Splits on `sep` outside quoted strings.
fn split_unquoted(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let text = rest?;
        let (mut quoted, mut escaped) = (false, false);
        for (i, b) in text.bytes().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                _ if b == sep && !quoted => {
                    rest = Some(&text[i + 1..]);
                    return Some(text[..i].trim());
                }
                _ => {}
            }
        }
        rest = None;
        Some(text.trim())
    })
    .filter(|part| !part.is_empty())
}

fn unquote(value: &str) -> Cow<'_, str> {
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) if inner.contains('\\') => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' { chars.next().unwrap_or('\\') } else { c });
            }
            Cow::Owned(out)
        }
        Some(inner) => Cow::Borrowed(inner),
        None => Cow::Borrowed(value),
    }
}

/// A for= node: `192.0.2.43`, `"192.0.2.43:47011"`, `"[2001:db8::17]:4711"`. `unknown`
/// and obfuscated names (`_abc`) are no address.
fn parse_node(node: &str) -> Option<SocketAddr> {
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr);
    }
    let bare = node.strip_prefix('[').and_then(|n| n.split_once(']')).map_or(node, |(ip, _)| ip);
    parse_ip(bare).map(|ip| SocketAddr::new(ip, 0))
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse().ok().or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

fn parse_scheme(proto: &str) -> Option<Scheme> {
    match proto.trim() {
        p if p.eq_ignore_ascii_case("https") || p.eq_ignore_ascii_case("wss") => Some(Scheme::Https),
        p if p.eq_ignore_ascii_case("http") || p.eq_ignore_ascii_case("ws") => Some(Scheme::Http),
        _ => None,
    }
}

/// Every comma-separated value of a header, over all its lines.
fn all_values<'a>(headers: &'a HeaderMap, name: &'static str) -> impl Iterator<Item = &'a str> {
    headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(','))
}

/// The rightmost value: the one the proxy next to us wrote.
fn last<'a>(headers: &'a HeaderMap, name: &'static str) -> Option<&'a str> {
    all_values(headers, name).last().map(str::trim).filter(|v| !v.is_empty())
}

/// The Host the request goes on with: its header and, when it has one (HTTP/2's
/// :authority, an absolute-form target), its URI's authority, so that both agree.
fn set_host(parts: &mut Parts, host: &str) {
    let Ok(value) = HeaderValue::from_str(host) else { return };
    if parts.uri.authority().is_some() {
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.authority = host.parse().ok().or(uri.authority);
        parts.uri = http::Uri::from_parts(uri).unwrap_or_default();
    }
    // The headers as received (when the scope lists them so) say the same.
    if let Some(order) = parts.extensions.get_mut::<crate::codec::h1::ReceivedOrder>() {
        let mut missing = true;
        order.0.retain_mut(|(name, v)| match *name == header::HOST {
            true if missing => {
                missing = false;
                *v = value.clone();
                true
            }
            is_host => !is_host,
        });
        if missing {
            order.0.push((header::HOST, value.clone()));
        }
    }
    parts.headers.insert(header::HOST, value);
}

/// A name or address that can be a Host unchanged (no userinfo, path or spaces).
fn valid_host(host: &str) -> bool {
    !host.is_empty() && host.len() <= 255 && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'[' | b']' | b':'))
}

fn without_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    }
}

/// "/api/" -> "/api"; "/" is no prefix; anything but a plain path is ignored (a
/// percent-escape would make root_path and raw_path disagree).
fn prefix(value: &str) -> Option<Box<str>> {
    let trimmed = value.trim_end_matches('/');
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&b);
    (value.starts_with('/') && !trimmed.is_empty() && !trimmed.contains("//") && trimmed.bytes().all(plain)).then(|| trimmed.into())
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
