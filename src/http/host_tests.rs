use super::*;
use crate::config::front::ServerName;

fn cfg(names: &[&str], www: WwwRedirect) -> HostConfig {
    HostConfig { names: names.iter().map(|n| ServerName::parse(n).unwrap()).collect(), unknown: UnknownHost::Misdirected, www }
}

fn verdict(cfg: &HostConfig, authority: &str) -> Verdict {
    check(cfg, authority.as_bytes())
}

fn redirect(to: &str) -> Verdict {
    Verdict::Redirect(to.to_string())
}

#[test]
fn no_names_serves_any_host() {
    let c = cfg(&[], WwwRedirect::Off);
    for host in ["example.com", "1.2.3.4:80", "", "junk host"] {
        assert_eq!(verdict(&c, host), Verdict::Serve, "{host:?}");
    }
}

#[test]
fn names_match_without_port_case_or_trailing_dot() {
    let c = cfg(&["example.com", "*.example.org", "203.0.113.9", "[2001:db8::1]"], WwwRedirect::Off);
    for host in ["example.com", "EXAMPLE.com:8080", "example.com.", "Example.Com.:443", "a.example.org", "x.y.example.org:1", "203.0.113.9", "203.0.113.9:8000", "[2001:db8::1]", "[2001:DB8::1]:443", "example.com:"] {
        assert_eq!(verdict(&c, host), Verdict::Serve, "{host:?}");
    }
    for host in ["example.org", "www.example.com", "example.com.evil.test", "203.0.113.10", "[2001:db8::2]", "", "example.com:x", "user@example.com", "example.com..", "[2001:db8::1", "ex ample.com"] {
        assert_eq!(verdict(&c, host), Verdict::Unknown, "{host:?}");
    }
}

#[test]
fn a_name_too_long_for_dns_matches_nothing() {
    let c = cfg(&["*.example.com"], WwwRedirect::Off);
    let long = format!("{}.example.com", "a".repeat(300));
    assert_eq!(verdict(&c, &long), Verdict::Unknown);
}

#[test]
fn to_bare_redirects_www_to_a_served_name_keeping_the_port() {
    let c = cfg(&["example.com"], WwwRedirect::ToBare);
    assert_eq!(verdict(&c, "www.example.com"), redirect("example.com"));
    assert_eq!(verdict(&c, "WWW.Example.com.:8080"), redirect("example.com:8080"));
    assert_eq!(verdict(&c, "example.com"), Verdict::Serve);
    // Never towards a name we would refuse.
    assert_eq!(verdict(&c, "www.other.test"), Verdict::Unknown);
}

#[test]
fn to_www_redirects_bare_names_when_the_www_name_is_served() {
    let c = cfg(&["example.com", "www.example.com", "api.example.com"], WwwRedirect::ToWww);
    assert_eq!(verdict(&c, "example.com:8443"), redirect("www.example.com:8443"));
    assert_eq!(verdict(&c, "www.example.com"), Verdict::Serve);
    // www.api.example.com is not ours: api stays as it is.
    assert_eq!(verdict(&c, "api.example.com"), Verdict::Serve);
    let c = cfg(&["*.example.com"], WwwRedirect::ToWww);
    assert_eq!(verdict(&c, "example.com"), redirect("www.example.com"), "the wildcard serves www.");
}

#[test]
fn without_names_the_redirect_goes_anyway_but_never_for_addresses() {
    let c = cfg(&[], WwwRedirect::ToBare);
    assert_eq!(verdict(&c, "www.a.test"), redirect("a.test"));
    let c = cfg(&[], WwwRedirect::ToWww);
    assert_eq!(verdict(&c, "a.test"), redirect("www.a.test"));
    for host in ["127.0.0.1:8000", "[::1]:8000", "localhost"] {
        assert_eq!(verdict(&c, host), Verdict::Serve, "{host:?}");
    }
}

/// The stage in the pipeline, on a worker context with the fake app.
mod pipeline {
    use super::*;
    use crate::http::service::{Dispatched, dispatch};
    use crate::http::testing::Harness;

    fn request(host: &str, path: &str) -> http::Request<()> {
        http::Request::builder().uri(path).header("host", host).body(()).unwrap()
    }

    fn status(d: &Dispatched) -> Option<u16> {
        match d {
            Dispatched::Answer(r) => Some(r.status().as_u16()),
            Dispatched::App(_) => Some(0),
            Dispatched::Close => None,
        }
    }

    fn harness(unknown: UnknownHost, acme: bool) -> Harness {
        Harness::new(|c| {
            c.front.hosts = HostConfig { unknown, ..cfg(&["example.com"], WwwRedirect::ToBare) };
            c.tls = acme.then(|| crate::config::tls::TlsConfig {
                source: None,
                client_auth: Default::default(),
                client_ca: None,
                redirect: true,
                https_port: 443,
                hsts: None,
                state_dir: std::env::temp_dir().join("ferrogate-host-test-none"),
                handshake_timeout: 10,
                acme: true,
            });
        })
    }

    #[tokio::test]
    async fn refused_closed_redirected_or_on_to_the_app() {
        let h = harness(UnknownHost::Misdirected, false);
        let run = |host: &str| status(&dispatch(request(host, "/x?y"), true, &h.ctx, &Harness::info()));
        assert_eq!(run("example.com"), Some(0));
        assert_eq!(run("evil.test"), Some(421));
        let Dispatched::Answer(r) = dispatch(request("www.example.com", "/x?y"), true, &h.ctx, &Harness::info()) else { panic!("no answer") };
        assert_eq!((r.status().as_u16(), r.headers()["location"].to_str().unwrap()), (301, "http://example.com/x?y"));
        let h = harness(UnknownHost::Close, false);
        assert_eq!(status(&dispatch(request("evil.test", "/"), true, &h.ctx, &Harness::info())), None);
    }

    #[tokio::test]
    async fn acme_challenges_on_the_plain_listener_pass_whatever_the_host() {
        let h = harness(UnknownHost::Misdirected, true);
        let run = |host: &str, path: &str| status(&dispatch(request(host, path), true, &h.ctx, &Harness::info()));
        // No such token pending: the challenge route's own 404, not a 421 or a redirect.
        assert_eq!(run("other.test", "/.well-known/acme-challenge/tok"), Some(404));
        assert_eq!(run("www.example.com", "/.well-known/acme-challenge/tok"), Some(404));
        assert_eq!(run("other.test", "/"), Some(421));
    }
}

/// `cargo test --release --lib host_check_cost -- --ignored --nocapture`: the check's
/// cost per request with a few names and the www redirect on.
#[test]
#[ignore]
fn host_check_cost() {
    let c = cfg(&["example.com", "www.example.com", "*.example.org"], WwwRedirect::ToBare);
    let n = 1_000_000;
    let started = std::time::Instant::now();
    for i in 0..n {
        let host: &[u8] = if i % 2 == 0 { b"Example.com:8443" } else { b"api.example.org" };
        assert_eq!(check(&c, std::hint::black_box(host)), Verdict::Serve);
    }
    println!("host check: {:.0} ns per request", started.elapsed().as_nanos() as f64 / n as f64);
}
