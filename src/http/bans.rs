//! Bans, the worker's side (fail2ban's job without parsing logs). The master holds the
//! ban list (`master::bans`); a worker keeps a copy to drop banned addresses at accept
//! (`admit`) and at request time (`refuse_request`, for clients known by a trusted proxy
//! header), and counts strikes, responses whose status counts, which it reports to the
//! master in batches (`take_strikes`, every 250 ms, from `worker::channel`).

use http::{Response, StatusCode};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use super::access_log::LogLine;
use super::body::ResponseBody;
use super::ctx::{ConnInfo, ServerCtx};
use crate::config::front::BanConfig;
use crate::ipc::Strike;

/// The front's refusals of malformed or oversized requests: they count whatever
/// --ban-status says, as fail2ban's nginx-badbots and http-smuggling filters would.
pub const REFUSALS: [u16; 4] = [400, 413, 414, 431];

pub struct Bans {
    config: Option<BanConfig>,
    /// True while the list is empty: the check at accept is one atomic load then.
    empty: AtomicBool,
    banned: RwLock<HashSet<IpAddr>>,
    /// Since the last report: (address, status) -> responses.
    strikes: Mutex<HashMap<(IpAddr, u16), u32>>,
}

impl Bans {
    pub fn new(config: &BanConfig) -> Bans {
        Bans { config: config.enabled().then(|| config.clone()), empty: AtomicBool::new(true), banned: RwLock::default(), strikes: Mutex::default() }
    }

    pub fn enabled(&self) -> bool {
        self.config.is_some()
    }

    /// O(1), no allocation: an atomic load while nobody is banned, a hash lookup under a
    /// read lock otherwise.
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        if self.empty.load(Ordering::Acquire) {
            return false;
        }
        self.banned.read().unwrap_or_else(|e| e.into_inner()).contains(&ip.to_canonical())
    }

    /// The master's list, whole (`ToWorker::Bans`).
    pub fn replace(&self, list: Vec<IpAddr>) {
        let mut banned = self.banned.write().unwrap_or_else(|e| e.into_inner());
        *banned = list.into_iter().map(|ip: IpAddr| ip.to_canonical()).collect();
        self.empty.store(banned.is_empty(), Ordering::Release);
    }

    /// A response with `status` went to `client`; `front`: ferrogate answered it itself,
    /// so its refusals count too.
    pub fn strike(&self, client: Option<SocketAddr>, status: u16, front: bool) {
        let Some(config) = &self.config else { return };
        if !(config.counts(status) || front && REFUSALS.contains(&status)) {
            return;
        }
        let Some(ip) = client.map(|c| c.ip().to_canonical()) else { return };
        if config.allowed(ip) {
            return;
        }
        *self.strikes.lock().unwrap_or_else(|e| e.into_inner()).entry((ip, status)).or_insert(0) += 1;
    }

    /// The strikes since the last call, for the master.
    pub fn take_strikes(&self) -> Vec<Strike> {
        let mut strikes = self.strikes.lock().unwrap_or_else(|e| e.into_inner());
        if strikes.is_empty() {
            return Vec::new();
        }
        std::mem::take(&mut *strikes).into_iter().map(|((ip, status), count)| Strike { ip, status, count }).collect()
    }
}

/// A request refused before its headers were read (head limits, smuggling, garbage):
/// it counts against the connection's peer, unless the peer is a trusted proxy, whose
/// address is not the culprit's (the client it relays for is unknown at that point).
pub fn strike_refusal(ctx: &ServerCtx, peer: Option<SocketAddr>, status: StatusCode) {
    if ctx.bans.enabled() && !super::proxy::peer_trusted(&ctx.config.proxy, peer) {
        ctx.bans.strike(peer, status.as_u16(), true);
    }
}

/// Whether an accepted connection may go on: a banned peer is closed at once, before
/// any TLS handshake or byte read. Call it once the peer is final (after a PROXY
/// protocol header, which may replace it).
pub fn admit(ctx: &ServerCtx, info: &ConnInfo) -> bool {
    info.peer.is_none_or(|peer| !ctx.bans.is_banned(peer.ip()))
}

/// A request from a banned client that `admit` could not see: one known by a trusted
/// proxy's header, or on a connection opened before the ban.
pub fn refuses(ctx: &ServerCtx, client: Option<SocketAddr>) -> bool {
    client.is_some_and(|c| ctx.bans.is_banned(c.ip()))
}

/// The answer to such a request: 403, and the connection closes when the client is the
/// peer itself; a proxy's connection stays open for the other clients it carries.
pub fn forbidden(peer: Option<SocketAddr>, client: Option<SocketAddr>, log: Option<LogLine>) -> Response<ResponseBody> {
    let direct = peer.zip(client).is_some_and(|(p, c)| p.ip().to_canonical() == c.ip().to_canonical());
    super::service::plain(StatusCode::FORBIDDEN, "Forbidden: this address is banned for a while after too many failed requests", direct, log)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bans(allow: &str) -> Bans {
        let config = BanConfig { after: Some(3), allow: allow.split(',').filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect(), ..BanConfig::default() };
        Bans::new(&config)
    }

    fn at(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 1))
    }

    #[test]
    fn strikes_are_counted_by_address_and_status_then_taken() {
        let b = bans("10.0.0.0/8");
        b.strike(at("192.0.2.1"), 404, false);
        b.strike(at("::ffff:192.0.2.1"), 404, false);
        b.strike(at("192.0.2.1"), 200, false); // does not count
        b.strike(at("192.0.2.1"), 413, false); // an app's 413 is the app's business
        b.strike(at("192.0.2.1"), 413, true); // the front's refusal counts
        b.strike(at("10.1.2.3"), 404, false); // --ban-allow
        b.strike(None, 404, false); // a unix-socket peer
        let mut got = b.take_strikes();
        got.sort_by_key(|s| s.status);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(got, vec![Strike { ip, status: 404, count: 2 }, Strike { ip, status: 413, count: 1 }]);
        assert!(b.take_strikes().is_empty());
    }

    #[test]
    fn the_list_is_replaced_whole() {
        let b = bans("");
        assert!(!b.is_banned("192.0.2.1".parse().unwrap()));
        b.replace(vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()]);
        assert!(b.is_banned("192.0.2.1".parse().unwrap()));
        assert!(b.is_banned("::ffff:192.0.2.1".parse().unwrap()));
        assert!(b.is_banned("2001:db8::1".parse().unwrap()));
        assert!(!b.is_banned("192.0.2.2".parse().unwrap()));
        b.replace(Vec::new());
        assert!(!b.is_banned("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn off_counts_nothing() {
        let b = Bans::new(&BanConfig::default());
        b.strike(at("192.0.2.1"), 404, true);
        assert!(b.take_strikes().is_empty());
    }
}
