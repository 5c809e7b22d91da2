//! The ban list's rules, without processes or clocks (times are given, in Unix
//! milliseconds): strikes in a sliding window per address, a ban once `after` of them
//! fall within `within`, its expiry, and `unban`.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use crate::config::front::BanConfig;

/// Addresses with strikes but no ban yet that the master remembers at most: beyond it
/// (a flood of distinct addresses through a trusted proxy), their partial counts are
/// forgotten rather than grow the master without bound.
const MAX_TRACKED: usize = 100_000;
/// Workers report strikes up to 250 ms after the response (more when busy): those that
/// arrive this soon after an unban happened before it, and do not count.
const LATE_MS: u64 = 1000;

/// One ban, as the state file and `ferrogate bans list` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    pub address: IpAddr,
    /// Unix seconds.
    pub until: u64,
    /// "20 x 404 in 60s".
    pub reason: String,
}

pub struct Keeper {
    config: BanConfig,
    after: usize,
    /// Each address's recent strikes (time, status), oldest first, at most `after`.
    recent: HashMap<IpAddr, VecDeque<(u64, u16)>>,
    bans: BTreeMap<IpAddr, Ban>,
    /// Addresses just unbanned, until when their late strikes are ignored.
    amnesty: HashMap<IpAddr, u64>,
}

impl Keeper {
    /// None when bans are off.
    pub fn new(config: &BanConfig) -> Option<Keeper> {
        let after = config.after? as usize;
        Some(Keeper { config: config.clone(), after: after.max(1), recent: HashMap::new(), bans: BTreeMap::new(), amnesty: HashMap::new() })
    }

    /// `count` responses of `status` to `ip` at `now`; the log line when that bans it.
    pub fn strike(&mut self, now: u64, ip: IpAddr, status: u16, count: u32) -> Option<String> {
        let ip = ip.to_canonical();
        if self.bans.contains_key(&ip) || self.config.allowed(ip) || count == 0 || self.amnesty.get(&ip).is_some_and(|&until| now < until) {
            return None;
        }
        if self.recent.len() >= MAX_TRACKED && !self.recent.contains_key(&ip) {
            self.forget_old(now);
            if self.recent.len() >= MAX_TRACKED {
                self.recent.clear();
            }
        }
        let within = self.config.within.as_millis() as u64;
        let strikes = self.recent.entry(ip).or_default();
        strikes.extend(std::iter::repeat_n((now, status), (count as usize).min(self.after)));
        while strikes.front().is_some_and(|&(t, _)| t + within <= now) || strikes.len() > self.after {
            strikes.pop_front();
        }
        if strikes.len() < self.after {
            return None;
        }
        let strikes = self.recent.remove(&ip).unwrap_or_default();
        let reason = format!("{} in {}", by_status(&strikes), span(self.config.within));
        let until = now.div_ceil(1000) + self.config.ban_for.as_secs().max(1);
        let line = format!("banned {ip} for {}: {reason}", span(self.config.ban_for));
        self.bans.insert(ip, Ban { address: ip, until, reason });
        Some(line)
    }

    /// Lifts the bans that ended by `now`, and forgets strikes older than the window.
    pub fn expire(&mut self, now: u64) -> Vec<IpAddr> {
        let ended: Vec<IpAddr> = self.bans.values().filter(|b| b.until * 1000 <= now).map(|b| b.address).collect();
        for ip in &ended {
            self.bans.remove(ip);
        }
        self.forget_old(now);
        self.amnesty.retain(|_, until| now < *until);
        ended
    }

    fn forget_old(&mut self, now: u64) {
        let within = self.config.within.as_millis() as u64;
        self.recent.retain(|_, strikes| strikes.back().is_some_and(|&(t, _)| t + within > now));
    }

    pub fn unban(&mut self, ip: IpAddr, now: u64) -> bool {
        let ip = ip.to_canonical();
        self.recent.remove(&ip);
        self.amnesty.insert(ip, now + LATE_MS);
        self.bans.remove(&ip).is_some()
    }

    /// Bans loaded from the state file; those already over are dropped.
    pub fn restore(&mut self, bans: Vec<Ban>, now: u64) -> usize {
        for ban in bans.into_iter().filter(|b| b.until * 1000 > now) {
            self.bans.insert(ban.address.to_canonical(), ban);
        }
        self.bans.len()
    }

    pub fn bans(&self) -> impl Iterator<Item = &Ban> {
        self.bans.values()
    }

    pub fn addresses(&self) -> Vec<IpAddr> {
        self.bans.keys().copied().collect()
    }
}

/// "20 x 404", "12 x 404, 8 x 400": the most frequent status first.
fn by_status(strikes: &VecDeque<(u64, u16)>) -> String {
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    for &(_, status) in strikes {
        *counts.entry(status).or_default() += 1;
    }
    let mut counts: Vec<(u16, usize)> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    counts.iter().map(|(status, n)| format!("{n} x {status}")).collect::<Vec<_>>().join(", ")
}

/// "60s", "10m", "2h", "3d": the largest unit that divides it at least twice over, as
/// the options are written (--ban-within 60s, --ban-for 10m).
pub fn span(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    for (unit, name) in [(86_400, "d"), (3600, "h"), (60, "m")] {
        if secs % unit == 0 && secs / unit >= 2 {
            return format!("{}{name}", secs / unit);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keeper(after: u32, allow: &[&str]) -> Keeper {
        let config = BanConfig {
            after: Some(after),
            within: Duration::from_secs(60),
            ban_for: Duration::from_secs(600),
            allow: allow.iter().map(|a| a.parse().unwrap()).collect(),
            ..BanConfig::default()
        };
        Keeper::new(&config).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn after_n_strikes_within_the_window_the_address_is_banned_once() {
        let mut k = keeper(20, &[]);
        for i in 0..19 {
            assert_eq!(k.strike(T0 + i * 1000, ip("203.0.113.9"), 404, 1), None);
        }
        let line = k.strike(T0 + 19_000, ip("203.0.113.9"), 404, 1);
        assert_eq!(line.as_deref(), Some("banned 203.0.113.9 for 10m: 20 x 404 in 60s"));
        assert_eq!(k.addresses(), vec![ip("203.0.113.9")]);
        // Strikes still arriving from workers' batches neither extend it nor log again.
        assert_eq!(k.strike(T0 + 20_000, ip("203.0.113.9"), 404, 5), None);
        assert_eq!(k.bans().next().unwrap().until, (T0 + 19_000) / 1000 + 600);
    }

    #[test]
    fn strikes_older_than_the_window_do_not_count() {
        let mut k = keeper(3, &[]);
        assert_eq!(k.strike(T0, ip("192.0.2.1"), 404, 2), None);
        // 60 s later the first two have left the window.
        assert_eq!(k.strike(T0 + 60_000, ip("192.0.2.1"), 400, 2), None);
        let line = k.strike(T0 + 61_000, ip("192.0.2.1"), 404, 1).unwrap();
        assert_eq!(line, "banned 192.0.2.1 for 10m: 2 x 400, 1 x 404 in 60s");
    }

    #[test]
    fn a_batch_can_ban_at_once_and_allowed_addresses_never_are() {
        let mut k = keeper(5, &["127.0.0.0/8", "2001:db8::/32"]);
        assert!(k.strike(T0, ip("198.51.100.4"), 401, 9).is_some());
        assert_eq!(k.strike(T0, ip("127.0.0.1"), 404, 100), None);
        assert_eq!(k.strike(T0, ip("::ffff:127.0.0.1"), 404, 100), None);
        assert_eq!(k.strike(T0, ip("2001:db8::5"), 404, 100), None);
        assert_eq!(k.addresses(), vec![ip("198.51.100.4")]);
    }

    #[test]
    fn bans_expire_and_unban_lifts_at_once() {
        let mut k = keeper(1, &[]);
        k.strike(T0, ip("192.0.2.1"), 404, 1).unwrap();
        k.strike(T0 + 1000, ip("192.0.2.2"), 404, 1).unwrap();
        assert!(k.expire(T0 + 599_000).is_empty());
        assert_eq!(k.expire(T0 + 600_000), vec![ip("192.0.2.1")]);
        assert!(k.unban(ip("::ffff:192.0.2.2"), T0 + 650_000));
        assert!(!k.unban(ip("192.0.2.2"), T0 + 650_000));
        assert!(k.addresses().is_empty());
        // Strikes from before the unban, reported late, do not ban it again.
        assert_eq!(k.strike(T0 + 650_500, ip("192.0.2.2"), 404, 1), None);
        assert!(k.strike(T0 + 651_000, ip("192.0.2.2"), 404, 1).is_some());
        // Once lifted, it takes `after` new strikes again.
        assert!(k.strike(T0 + 700_000, ip("192.0.2.1"), 404, 1).is_some());
    }

    #[test]
    fn restored_bans_drop_the_expired_ones() {
        let mut k = keeper(1, &[]);
        let now = T0;
        let bans = vec![
            Ban { address: ip("192.0.2.1"), until: now / 1000 + 30, reason: "x".into() },
            Ban { address: ip("192.0.2.2"), until: now / 1000 - 1, reason: "y".into() },
        ];
        assert_eq!(k.restore(bans, now), 1);
        assert_eq!(k.addresses(), vec![ip("192.0.2.1")]);
    }

    #[test]
    fn spans_read_as_the_options_are_written() {
        assert_eq!(span(Duration::from_secs(60)), "60s");
        assert_eq!(span(Duration::from_secs(600)), "10m");
        assert_eq!(span(Duration::from_secs(7200)), "2h");
        assert_eq!(span(Duration::from_secs(3 * 86_400)), "3d");
        assert_eq!(span(Duration::from_secs(90)), "90s");
        assert_eq!(span(Duration::from_millis(500)), "500ms");
    }
}
