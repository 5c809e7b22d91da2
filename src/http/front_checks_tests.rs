//! The rate-limit and ban stages inside `service::dispatch`, in-process: the answers
//! they give, and the strikes the front's answers count.

use http::Request;
use std::net::SocketAddr;

use super::bans;
use super::ctx::ConnInfo;
use super::service::{Dispatched, dispatch};
use super::testing::Harness;
use crate::config::front::RateRule;

fn get(path: &str, xff: Option<&str>) -> Request<()> {
    let mut r = Request::get(path).header("host", "example.com");
    if let Some(x) = xff {
        r = r.header("x-forwarded-for", x);
    }
    r.body(()).unwrap()
}

fn from(peer: &str) -> ConnInfo {
    ConnInfo { peer: Some(peer.parse::<SocketAddr>().unwrap()), ..Harness::info() }
}

fn answer(d: Dispatched) -> http::Response<super::body::ResponseBody> {
    match d {
        Dispatched::Answer(r) => r,
        _ => panic!("expected the front's answer"),
    }
}

#[tokio::test]
async fn beyond_the_rate_the_front_answers_429_with_retry_after() {
    let h = Harness::new(|c| {
        c.front.rate.default = Some(RateRule { per_second: 0.5, burst: 2 });
        c.front.bans.after = Some(100);
        c.front.bans.statuses = vec![429];
    });
    let client = from("192.0.2.10:5000");
    for _ in 0..2 {
        assert!(matches!(dispatch(get("/", None), true, &h.ctx, &client), Dispatched::App(_)));
    }
    let r = answer(dispatch(get("/", None), true, &h.ctx, &client));
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "2");
    // Another address has its own bucket.
    assert!(matches!(dispatch(get("/", None), true, &h.ctx, &from("192.0.2.11:5000")), Dispatched::App(_)));
    // The 429 counted as a strike (--ban-status 429) for the client.
    let strikes = h.ctx.bans.take_strikes();
    assert_eq!(strikes.len(), 1);
    assert_eq!((strikes[0].ip.to_string(), strikes[0].status, strikes[0].count), ("192.0.2.10".to_string(), 429, 1));
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_limited() {
    let h = Harness::new(|c| c.front.rate.default = Some(RateRule { per_second: 0.5, burst: 1 }));
    let proxy = from("127.0.0.1:4000");
    assert!(matches!(dispatch(get("/", Some("198.51.100.1")), true, &h.ctx, &proxy), Dispatched::App(_)));
    assert_eq!(answer(dispatch(get("/", Some("198.51.100.1")), true, &h.ctx, &proxy)).status(), 429);
    assert!(matches!(dispatch(get("/", Some("198.51.100.2")), true, &h.ctx, &proxy), Dispatched::App(_)));
}

#[tokio::test]
async fn a_banned_address_is_refused_at_accept_and_at_request_time() {
    let h = Harness::new(|c| c.front.bans.after = Some(5));
    let direct = from("203.0.113.9:6000");
    assert!(bans::admit(&h.ctx, &direct));
    h.ctx.bans.replace(vec!["203.0.113.9".parse().unwrap()]);
    assert!(!bans::admit(&h.ctx, &direct));
    // A connection opened before the ban: 403, and it closes.
    let r = answer(dispatch(get("/", None), true, &h.ctx, &direct));
    assert_eq!((r.status().as_u16(), r.headers().get("connection").map(|v| v.to_str().unwrap())), (403, Some("close")));
    // Through a trusted proxy: 403, the proxy's connection stays open for the others.
    let proxy = from("127.0.0.1:4000");
    assert!(bans::admit(&h.ctx, &proxy));
    let r = answer(dispatch(get("/", Some("203.0.113.9")), true, &h.ctx, &proxy));
    assert_eq!((r.status().as_u16(), r.headers().get("connection")), (403, None));
    assert!(matches!(dispatch(get("/", Some("203.0.113.10")), true, &h.ctx, &proxy), Dispatched::App(_)));
}

#[tokio::test]
async fn refusals_count_for_the_peer_unless_it_is_a_trusted_proxy() {
    let h = Harness::new(|c| c.front.bans.after = Some(5));
    bans::strike_refusal(&h.ctx, Some("192.0.2.7:1".parse().unwrap()), http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    bans::strike_refusal(&h.ctx, Some("127.0.0.1:1".parse().unwrap()), http::StatusCode::BAD_REQUEST);
    let strikes = h.ctx.bans.take_strikes();
    assert_eq!(strikes.len(), 1);
    assert_eq!((strikes[0].ip.to_string(), strikes[0].status), ("192.0.2.7".to_string(), 431));
}
