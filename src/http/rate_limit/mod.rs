//! Rate limits per client address (nginx's limit_req): a token bucket per address and
//! rule, shared by every worker through a table the master owns (`shm`, `table`), so
//! a client spread over N workers gets the configured rate, not N times it. Checked
//! after the routes the server answers itself (static files, ACME, redirects), just
//! before the app: a refused request costs one hash and one compare-and-swap.

pub mod shm;
pub mod table;

use http::{HeaderValue, Response, StatusCode, header};
use std::net::{IpAddr, SocketAddr};

use super::access_log::LogLine;
use super::body::ResponseBody;
use crate::config::front::{RateConfig, prefix_matches};
use table::{Rule, TICKS_PER_SEC, Verdict};

/// The limits of one worker; `None` inside when --rate-limit is off (one branch per request).
pub struct Limiter(Option<Limits>);

struct Limits {
    default: Option<Rule>,
    /// Longest prefix first, as the configuration orders them; the rule's number in the
    /// hash is its index + 1 (the default is 0), so each has its own bucket.
    paths: Vec<(String, Rule)>,
    table: shm::Table,
}

impl Limiter {
    pub fn off() -> Limiter {
        Limiter(None)
    }

    /// The limits of `config` over `table` (the master's, mapped by this worker); a table
    /// of this worker's own when there is none (in-process tests).
    pub fn new(config: &RateConfig, table: Option<shm::Table>) -> Result<Limiter, String> {
        if !config.enabled() {
            return Ok(Limiter(None));
        }
        let table = match table {
            Some(t) => t,
            None => shm::Table::create().map_err(|e| format!("cannot create the rate-limit table: {e}"))?,
        };
        let default = config.default.map(|r| Rule::new(r.per_second, r.burst));
        let paths = config.paths.iter().map(|p| (p.prefix.clone(), Rule::new(p.rule.per_second, p.rule.burst))).collect();
        Ok(Limiter(Some(Limits { default, paths, table })))
    }

    /// None: pass. Some(seconds): refused, a token is back after that many seconds
    /// (rounded up, at least 1). Unix-socket peers with no forwarded address (`client`
    /// None) are not limited: there is no address to count.
    pub fn check(&self, client: Option<SocketAddr>, path: &str) -> Option<u64> {
        let limits = self.0.as_ref()?;
        let ip = client?.ip();
        let (number, rule) = match limits.paths.iter().position(|(prefix, _)| prefix_matches(prefix, path)) {
            Some(i) => (i as u64 + 1, limits.paths[i].1),
            None => (0, limits.default?),
        };
        let hash = table::hash(limits.table.seed(), key(ip), number);
        match table::take(limits.table.words(), hash, table::now(), rule) {
            Verdict::Pass => None,
            Verdict::Wait(ticks) => Some(ticks.div_ceil(TICKS_PER_SEC).max(1)),
        }
    }
}

/// An address as the table keys it: IPv4 and IPv4-mapped IPv6 alike.
fn key(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The 429, with Retry-After; it never reaches the app.
pub fn too_many(retry_after: u64, log: Option<LogLine>) -> Response<ResponseBody> {
    let mut response = super::service::plain(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests: slow down and retry after the time in Retry-After", false, log);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::front::{PathRate, RateRule};

    fn limiter(default: Option<(f64, u32)>, paths: &[(&str, f64, u32)]) -> Limiter {
        let config = RateConfig {
            default: default.map(|(per_second, burst)| RateRule { per_second, burst }),
            paths: paths.iter().map(|&(p, per_second, burst)| PathRate { prefix: p.into(), rule: RateRule { per_second, burst } }).collect(),
        };
        Limiter::new(&config, None).unwrap()
    }

    fn at(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 5000))
    }

    #[test]
    fn off_limits_nothing() {
        let l = limiter(None, &[]);
        assert!((0..100).all(|_| l.check(at("192.0.2.1"), "/").is_none()));
    }

    #[test]
    fn each_address_has_its_burst_and_then_waits_a_whole_second_rounded_up() {
        // 1 per 10 s: the refusal's Retry-After is 10.
        let l = limiter(Some((0.1, 2)), &[]);
        assert_eq!(l.check(at("192.0.2.1"), "/"), None);
        assert_eq!(l.check(at("192.0.2.1"), "/a"), None);
        assert_eq!(l.check(at("192.0.2.1"), "/b"), Some(10));
        // Another address, and the same one behind its IPv4-mapped IPv6 form.
        assert_eq!(l.check(at("192.0.2.2"), "/"), None);
        assert_eq!(l.check(at("::ffff:192.0.2.1"), "/"), Some(10));
        // A unix-socket peer with no forwarded address is not counted.
        assert!((0..10).all(|_| l.check(None, "/").is_none()));
    }

    #[test]
    fn a_path_rule_replaces_the_default_with_its_own_bucket() {
        let l = limiter(Some((0.1, 1)), &[("/api/login", 0.1, 3), ("/api", 0.1, 2)]);
        let c = at("198.51.100.7");
        assert_eq!(l.check(c, "/"), None);
        assert!(l.check(c, "/").is_some());
        // The longest prefix first; each rule counts apart from the default.
        assert!((0..3).all(|_| l.check(c, "/api/login").is_none()));
        assert!(l.check(c, "/api/login?next=/").is_some());
        assert!((0..2).all(|_| l.check(c, "/api/users").is_none()));
        assert!(l.check(c, "/api").is_some());
        // Not a segment of /api: the default, which is spent.
        assert!(l.check(c, "/apiary").is_some());
    }

    #[test]
    fn path_rules_alone_leave_other_paths_unlimited() {
        let l = limiter(None, &[("/login", 0.1, 1)]);
        let c = at("203.0.113.5");
        assert!((0..50).all(|_| l.check(c, "/home").is_none()));
        assert_eq!(l.check(c, "/login"), None);
        assert!(l.check(c, "/login").is_some());
    }
}
