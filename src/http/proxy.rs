//! Trusted proxy headers: X-Forwarded-For and X-Forwarded-Proto become the
//! scope's client and scheme, but only when the peer is a proxy we trust.

use http::HeaderMap;
use std::net::{IpAddr, SocketAddr};

use crate::config::ProxyConfig;
use crate::bridge::exchange::Scheme;

/// Unix-socket peers (None) are always trusted: only local processes reach them.
pub fn peer_trusted(cfg: &ProxyConfig, peer: Option<SocketAddr>) -> bool {
    cfg.enabled && peer.is_none_or(|p| cfg.trusted.contains(p.ip()))
}

pub fn apply(cfg: &ProxyConfig, peer: Option<SocketAddr>, headers: &HeaderMap, client: &mut Option<SocketAddr>, scheme: &mut Scheme) {
    if !peer_trusted(cfg, peer) {
        return;
    }
    if let Some(proto) = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) {
        match proto.rsplit(',').next().map(|p| p.trim().to_ascii_lowercase()).as_deref() {
            Some("https" | "wss") => *scheme = Scheme::Https,
            Some("http" | "ws") => *scheme = Scheme::Http,
            _ => {}
        }
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| parse_ip(s.trim()))
        .collect();
    // The rightmost address our trusted proxies did not add themselves is the client.
    let chosen = forwarded.iter().rev().find(|ip| !cfg.trusted.contains(**ip)).or(forwarded.first());
    if let Some(ip) = chosen {
        *client = Some(SocketAddr::new(*ip, 0));
    }
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse().ok().or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrustedPeers;

    fn cfg(trusted: &str) -> ProxyConfig {
        ProxyConfig { enabled: true, trusted: TrustedPeers::parse(trusted).unwrap() }
    }

    fn run(cfg: &ProxyConfig, peer: &str, xff: &str, proto: &str) -> (Option<SocketAddr>, Scheme) {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h.insert("x-forwarded-proto", proto.parse().unwrap());
        let peer: SocketAddr = peer.parse().unwrap();
        let (mut client, mut scheme) = (Some(peer), Scheme::Http);
        apply(cfg, Some(peer), &h, &mut client, &mut scheme);
        (client, scheme)
    }

    #[test]
    fn trusted_peer_sets_client_and_scheme() {
        let (client, scheme) = run(&cfg("127.0.0.1"), "127.0.0.1:4000", "203.0.113.7", "https");
        assert_eq!(client.unwrap().ip().to_string(), "203.0.113.7");
        assert_eq!(scheme, Scheme::Https);
    }

    #[test]
    fn untrusted_peer_is_ignored() {
        let (client, scheme) = run(&cfg("127.0.0.1"), "198.51.100.2:4000", "203.0.113.7", "https");
        assert_eq!(client.unwrap().ip().to_string(), "198.51.100.2");
        assert_eq!(scheme, Scheme::Http);
    }

    #[test]
    fn spoofed_leftmost_entries_are_skipped() {
        let (client, _) = run(&cfg("127.0.0.1,10.0.0.0/8"), "127.0.0.1:1", "6.6.6.6, 203.0.113.7, 10.0.0.5", "http");
        assert_eq!(client.unwrap().ip().to_string(), "203.0.113.7");
    }
}
