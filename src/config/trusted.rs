//! Which peers may speak for their clients: the proxies whose X-Forwarded-* and
//! Forwarded headers, and PROXY protocol headers, are believed (--forwarded-allow-ips).

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Which peers may set X-Forwarded-* headers.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrustedPeers {
    pub any: bool,
    pub networks: Vec<ipnet::IpNet>,
}

impl TrustedPeers {
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut trusted = TrustedPeers::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                trusted.any = true;
                continue;
            }
            let net = match item.parse::<ipnet::IpNet>() {
                Ok(net) => net,
                Err(_) => match item.parse::<IpAddr>() {
                    Ok(ip) => ipnet::IpNet::from(ip),
                    Err(_) => {
                        return Err(format!(
                            "'{item}' is not an IP address or network; write e.g. 10.0.0.1, 10.0.0.0/8 or *"
                        ));
                    }
                },
            };
            trusted.networks.push(net);
        }
        Ok(trusted)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        if self.any {
            return true;
        }
        // IPv4-mapped IPv6 (::ffff:a.b.c.d, from a dual-stack listener) is the IPv4 address.
        let ip = ip.to_canonical();
        self.networks.iter().any(|net| net.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_peers_accept_addresses_networks_and_star() {
        let t = TrustedPeers::parse("127.0.0.1, 10.0.0.0/8,::1").unwrap();
        assert!(t.contains("127.0.0.1".parse().unwrap()));
        assert!(t.contains("10.2.3.4".parse().unwrap()));
        assert!(t.contains("::1".parse().unwrap()));
        assert!(t.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!t.contains("192.168.1.1".parse().unwrap()));
        assert!(TrustedPeers::parse("*").unwrap().contains("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn trusted_peers_reject_garbage_with_a_hint() {
        let err = TrustedPeers::parse("localhost").unwrap_err();
        assert!(err.contains("'localhost'") && err.contains("10.0.0.0/8"), "{err}");
    }
}
