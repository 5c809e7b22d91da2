use super::*;
use crate::config::TrustedPeers;

fn cfg(trusted: &str) -> ProxyConfig {
    ProxyConfig { enabled: true, trusted: TrustedPeers::parse(trusted).unwrap() }
}

struct Seen {
    client: Option<SocketAddr>,
    scheme: Scheme,
    parts: Parts,
    extra: Extra,
}

impl Seen {
    fn client(&self) -> String {
        self.client.unwrap().ip().to_string()
    }

    fn host(&self) -> &str {
        self.parts.headers.get(header::HOST).map_or("", |h| h.to_str().unwrap())
    }
}

fn run_at(cfg: &ProxyConfig, peer: &str, uri: &str, headers: &[(&str, &str)]) -> Seen {
    let mut req = http::Request::builder().uri(uri);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let (mut parts, ()) = req.body(()).unwrap().into_parts();
    let peer: SocketAddr = peer.parse().unwrap();
    let (mut client, mut scheme) = (Some(peer), Scheme::Http);
    let extra = apply(cfg, Some(peer), &mut parts, &mut client, &mut scheme);
    Seen { client, scheme, parts, extra }
}

fn run(cfg: &ProxyConfig, peer: &str, headers: &[(&str, &str)]) -> Seen {
    run_at(cfg, peer, "/", headers)
}

#[test]
fn trusted_peer_sets_client_and_scheme() {
    let seen = run(&cfg("127.0.0.1"), "127.0.0.1:4000", &[("x-forwarded-for", "203.0.113.7"), ("x-forwarded-proto", "https")]);
    assert_eq!(seen.client(), "203.0.113.7");
    assert_eq!(seen.scheme, Scheme::Https);
}

#[test]
fn untrusted_peer_is_ignored() {
    let headers = [("x-forwarded-for", "203.0.113.7"), ("x-forwarded-proto", "https"), ("host", "a.test"), ("x-forwarded-host", "b.test"), ("x-forwarded-prefix", "/api"), ("forwarded", "for=6.6.6.6")];
    let seen = run(&cfg("127.0.0.1"), "198.51.100.2:4000", &headers);
    assert_eq!(seen.client(), "198.51.100.2");
    assert_eq!(seen.scheme, Scheme::Http);
    assert_eq!(seen.host(), "a.test");
    assert_eq!(seen.extra, Extra::default());
}

#[test]
fn spoofed_leftmost_entries_are_skipped() {
    let seen = run(&cfg("127.0.0.1,10.0.0.0/8"), "127.0.0.1:1", &[("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.0.0.5")]);
    assert_eq!(seen.client(), "203.0.113.7");
}

#[test]
fn forwarded_sets_client_scheme_and_host() {
    let seen = run(&cfg("127.0.0.1"), "127.0.0.1:1", &[("host", "internal:8000"), ("forwarded", "for=203.0.113.7;proto=https;host=example.com")]);
    assert_eq!(seen.client(), "203.0.113.7");
    assert_eq!(seen.scheme, Scheme::Https);
    assert_eq!(seen.host(), "example.com");
}

#[test]
fn forwarded_quoted_ipv6_with_port_and_case() {
    let seen = run(&cfg("127.0.0.1"), "127.0.0.1:1", &[("forwarded", r#"For="[2001:db8:cafe::17]:4711";Proto=HTTPS"#)]);
    assert_eq!(seen.client, Some("[2001:db8:cafe::17]:4711".parse().unwrap()));
    assert_eq!(seen.scheme, Scheme::Https);
    let seen = run(&cfg("127.0.0.1"), "127.0.0.1:1", &[("forwarded", r#"for="192.0.2.43:47011""#)]);
    assert_eq!(seen.client, Some("192.0.2.43:47011".parse().unwrap()));
}

#[test]
fn forwarded_rightmost_untrusted_element_is_believed() {
    // The client forged the first element; our proxy 10.0.0.5 appended the second,
    // and the trusted one next to us (10.0.0.6) the third, about 10.0.0.5.
    let value = "for=6.6.6.6;proto=http;host=evil.test, for=203.0.113.7;proto=https;host=example.com, for=10.0.0.5;proto=http;host=internal";
    let seen = run(&cfg("127.0.0.1,10.0.0.0/8"), "127.0.0.1:1", &[("forwarded", value)]);
    assert_eq!(seen.client(), "203.0.113.7");
    assert_eq!(seen.scheme, Scheme::Https);
    assert_eq!(seen.host(), "example.com");
    // Over several header lines, the same.
    let seen = run(&cfg("127.0.0.1,10.0.0.0/8"), "127.0.0.1:1", &[("forwarded", "for=6.6.6.6"), ("forwarded", "for=203.0.113.7, for=10.0.0.5")]);
    assert_eq!(seen.client(), "203.0.113.7");
}

#[test]
fn forwarded_every_hop_trusted_takes_the_leftmost() {
    let seen = run(&cfg("*"), "127.0.0.1:1", &[("forwarded", "for=6.6.6.6, for=203.0.113.7")]);
    assert_eq!(seen.client(), "6.6.6.6");
}

#[test]
fn forwarded_unknown_and_obfuscated_nodes_leave_the_peer() {
    for node in ["unknown", "_hidden", "\"_x:_y\""] {
        let seen = run(&cfg("127.0.0.1"), "127.0.0.1:1", &[("forwarded", &format!("for={node};proto=https"))]);
        assert_eq!(seen.client(), "127.0.0.1", "{node}");
        // The element is still the trusted proxy's word on the scheme.
        assert_eq!(seen.scheme, Scheme::Https);
    }
}

#[test]
fn forwarded_wins_over_x_forwarded() {
    let headers = [("forwarded", "for=203.0.113.7"), ("x-forwarded-for", "198.51.100.9"), ("x-forwarded-proto", "https"), ("x-forwarded-host", "x.test"), ("host", "a.test")];
    let seen = run(&cfg("127.0.0.1"), "127.0.0.1:1", &headers);
    assert_eq!(seen.client(), "203.0.113.7");
    assert_eq!(seen.scheme, Scheme::Http, "proto comes from Forwarded only");
    assert_eq!(seen.host(), "a.test");
}

#[test]
fn forwarded_quoted_separators_do_not_split() {
    let seen = run(&cfg("127.0.0.1"), "127.0.0.1:1", &[("forwarded", r#"for=203.0.113.7;host="a.test:8080";ext="x,y;z=\"q\"""#)]);
    assert_eq!(seen.client(), "203.0.113.7");
    assert_eq!(seen.host(), "a.test:8080");
}

#[test]
fn x_forwarded_host_rewrites_the_host_header_and_authority() {
    let seen = run(&cfg("127.0.0.1"), "127.0.0.1:1", &[("host", "127.0.0.1:8000"), ("x-forwarded-host", "example.com")]);
    assert_eq!(seen.host(), "example.com");
    // HTTP/2 (:authority) and absolute-form targets carry the host in the URI too.
    let seen = run_at(&cfg("127.0.0.1"), "127.0.0.1:1", "http://127.0.0.1:8000/a?b", &[("x-forwarded-host", "example.com")]);
    assert_eq!(seen.parts.uri.to_string(), "http://example.com/a?b");
    assert_eq!(seen.host(), "example.com");
}

#[test]
fn x_forwarded_host_with_junk_is_ignored() {
    for junk in ["a.test/evil", "user@a.test", "a test", ""] {
        let seen = run(&cfg("127.0.0.1"), "127.0.0.1:1", &[("host", "a.test"), ("x-forwarded-host", junk)]);
        assert_eq!(seen.host(), "a.test", "{junk:?}");
    }
}

#[test]
fn x_forwarded_port_sets_the_port_of_the_host() {
    let port = |host: &str, proto: &str, port: &str| {
        let seen = run(&cfg("127.0.0.1"), "127.0.0.1:1", &[("host", host), ("x-forwarded-proto", proto), ("x-forwarded-port", port)]);
        (seen.host().to_string(), seen.extra.port)
    };
    assert_eq!(port("example.com", "https", "8443"), ("example.com:8443".into(), Some(8443)));
    assert_eq!(port("example.com:8000", "https", "443"), ("example.com".into(), Some(443)));
    assert_eq!(port("example.com:8000", "http", "80"), ("example.com".into(), Some(80)));
    assert_eq!(port("[2001:db8::1]:8000", "http", "8080"), ("[2001:db8::1]:8080".into(), Some(8080)));
    assert_eq!(port("example.com", "http", "nope"), ("example.com".into(), None));
}

#[test]
fn x_forwarded_prefix_is_a_plain_path_without_trailing_slash() {
    let prefix = |value: &str| run(&cfg("127.0.0.1"), "127.0.0.1:1", &[("x-forwarded-prefix", value)]).extra.prefix;
    assert_eq!(prefix("/api").as_deref(), Some("/api"));
    assert_eq!(prefix("/api/v1/").as_deref(), Some("/api/v1"));
    assert_eq!(prefix("/"), None);
    for junk in ["api", "/a b", "/a%2Fb", "//evil.test", "/a\"b"] {
        assert_eq!(prefix(junk), None, "{junk:?}");
    }
}
