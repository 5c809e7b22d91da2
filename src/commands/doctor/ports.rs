//! What listens on this host, and for whom: /proc/net/tcp and tcp6 give the listening
//! sockets (state 0A) and their inodes; /proc/PID/fd links ("socket:[INODE]") and
//! /proc/PID/comm give the process that owns each. Anything reachable from outside on a
//! port other than SSH, HTTP, HTTPS and the server's own is worth a look.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use super::Server;
use super::host::Host;
use super::report::Finding;

pub const CHECK: &str = "listening-ports";
const LISTEN: &str = "0A";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub addr: IpAddr,
    pub port: u16,
    pub inode: u64,
}

/// The listening sockets of a /proc/net/tcp (or tcp6) text.
pub fn parse_proc_net_tcp(text: &str) -> Vec<Listener> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) != Some(&LISTEN) {
                return None;
            }
            let (addr, port) = fields.get(1)?.split_once(':')?;
            Some(Listener { addr: parse_addr(addr)?, port: u16::from_str_radix(port, 16).ok()?, inode: fields.get(9)?.parse().ok()? })
        })
        .collect()
}

/// The kernel prints each 32-bit word of the address as a number in host byte order.
fn parse_addr(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| hex.get(i * 8..i * 8 + 8).and_then(|w| u32::from_str_radix(w, 16).ok()).map(u32::to_ne_bytes);
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

fn is_loopback(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// Socket inode -> (pid, command name), from every process's open descriptors.
fn socket_owners(host: &Host) -> Result<HashMap<u64, (u32, String)>, String> {
    let mut owners = HashMap::new();
    for pid in host.list(Path::new("/proc"))?.into_iter().filter_map(|n| n.parse::<u32>().ok()) {
        let proc_dir = Path::new("/proc").join(pid.to_string());
        // A process may exit while we look, and another user's are closed to non-root.
        let Ok(fds) = host.list(&proc_dir.join("fd")) else { continue };
        let comm = host.read(&proc_dir.join("comm")).ok().flatten().map(|c| c.trim().to_string()).unwrap_or_else(|| "?".into());
        for fd in fds {
            let Some(target) = host.read_link(&proc_dir.join("fd").join(&fd)) else { continue };
            let target = target.to_string_lossy();
            if let Some(inode) = target.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')).and_then(|s| s.parse().ok()) {
                owners.entry(inode).or_insert_with(|| (pid, comm.clone()));
            }
        }
    }
    Ok(owners)
}

pub fn check(host: &Host, server: &Server) -> Result<Finding, String> {
    let mut listeners = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        listeners.extend(parse_proc_net_tcp(&host.read(Path::new(file))?.unwrap_or_default()));
    }
    listeners.retain(|l| !is_loopback(l.addr));
    if listeners.is_empty() {
        return Ok(Finding::pass(CHECK, "nothing listens on a non-loopback TCP address"));
    }
    let owners = socket_owners(host)?;
    let mut seen = Vec::new();
    let mut unexpected = Vec::new();
    listeners.sort_by_key(|l| (l.port, l.addr.is_ipv6()));
    for l in &listeners {
        let addr = match l.addr {
            IpAddr::V6(a) => format!("[{a}]:{}", l.port),
            IpAddr::V4(a) => format!("{a}:{}", l.port),
        };
        let owner = owners.get(&l.inode).map_or_else(|| "owner not visible to this user or PID namespace".to_string(), |(pid, comm)| format!("{comm} pid {pid}"));
        let line = format!("{addr} ({owner})");
        if seen.contains(&line) {
            continue;
        }
        if ![22, 80, 443].contains(&l.port) && !server.tcp_ports.contains(&l.port) {
            unexpected.push(line.clone());
        }
        seen.push(line);
    }
    if unexpected.is_empty() {
        return Ok(Finding::pass(CHECK, format!("listening: {}", seen.join(", "))));
    }
    Ok(Finding::warn(
        CHECK,
        format!("listening beyond SSH/HTTP/HTTPS and the server's own: {} (all: {})", unexpected.join(", "), seen.join(", ")),
        "bind what only this host uses to 127.0.0.1, stop what is not needed, or make sure the firewall closes it",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::doctor::report::Status;
    use crate::commands::doctor::testing::FakeRoot;

    const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

    fn hex4(a: Ipv4Addr) -> String {
        format!("{:08X}", u32::from_ne_bytes(a.octets()))
    }

    fn line(addr: &str, port: u16, state: &str, inode: u64) -> String {
        format!("   0: {addr}:{port:04X} 00000000:0000 {state} 00000000:00000000 00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n")
    }

    #[test]
    fn listeners_are_parsed_in_host_byte_order() {
        let text = format!("{HEADER}{}{}{}", line(&hex4(Ipv4Addr::new(0, 0, 0, 0)), 22, "0A", 111), line(&hex4(Ipv4Addr::LOCALHOST), 5432, "0A", 112), line(&hex4(Ipv4Addr::new(10, 1, 2, 3)), 40000, "01", 113));
        let l = parse_proc_net_tcp(&text);
        assert_eq!(l, vec![Listener { addr: "0.0.0.0".parse().unwrap(), port: 22, inode: 111 }, Listener { addr: "127.0.0.1".parse().unwrap(), port: 5432, inode: 112 }]);
        assert!(is_loopback(l[1].addr) && !is_loopback(l[0].addr));
        let six: String = Ipv6Addr::LOCALHOST.octets().chunks(4).map(|w| format!("{:08X}", u32::from_ne_bytes(w.try_into().unwrap()))).collect();
        let l = parse_proc_net_tcp(&format!("{HEADER}{}", line(&six, 443, "0A", 7)));
        assert_eq!(l[0].addr, IpAddr::V6(Ipv6Addr::LOCALHOST));
    }

    #[test]
    fn owners_come_from_fd_links_and_unexpected_ports_warn() {
        let any = hex4(Ipv4Addr::UNSPECIFIED);
        let root = FakeRoot::new(&[
            ("/proc/net/tcp", &format!("{HEADER}{}{}{}", line(&any, 22, "0A", 501), line(&any, 6379, "0A", 502), line(&hex4(Ipv4Addr::LOCALHOST), 9000, "0A", 503))),
            ("/proc/17/comm", "sshd\n"),
            ("/proc/42/comm", "redis-server\n"),
        ]);
        root.symlink("/proc/17/fd/3", "socket:[501]");
        root.symlink("/proc/17/fd/4", "/dev/null");
        root.symlink("/proc/42/fd/6", "socket:[502]");
        let f = check(&root.host(), &Server::default()).unwrap();
        assert_eq!(f.status, Status::Warn);
        assert!(f.finding.contains("0.0.0.0:6379 (redis-server pid 42)") && f.finding.contains("0.0.0.0:22 (sshd pid 17)"), "{f:?}");
        assert!(!f.finding.contains("9000"), "loopback is not reported");
        let f = check(&root.host(), &Server { tcp_ports: vec![6379], ..Server::default() }).unwrap();
        assert_eq!(f.status, Status::Pass, "{f:?}");
    }
}
