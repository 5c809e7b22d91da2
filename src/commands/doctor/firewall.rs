//! The tutorial's step 3.3: a firewall that lets in only SSH (22), HTTP (80) and HTTPS
//! (443), plus whatever port the server itself listens on. Read from the files that
//! load the rules at boot: nftables (/etc/nftables.conf), iptables-persistent
//! (/etc/iptables/rules.v4 and rules.v6) and ufw (/etc/ufw).

use std::collections::BTreeSet;
use std::path::Path;

use super::Server;
use super::host::Host;
use super::nft::{self, Families};
use super::report::Finding;
use super::rules::{Opening, Proto, Verdict, evaluate};
use super::iptables;

pub const CHECK: &str = "firewall";

/// One firewall tool's answer for the families it covers.
struct Source {
    name: String,
    families: Families,
    verdict: Verdict,
    /// How to close a port with this tool.
    close: &'static str,
}

pub fn check(host: &Host, server: &Server) -> Result<Finding, String> {
    let mut sources = nftables(host)?;
    sources.extend(iptables_persistent(host)?);
    sources.extend(ufw(host)?);
    let filtering: Vec<&Source> = sources.iter().filter(|s| matches!(s.verdict, Verdict::Filters(_))).collect();
    if filtering.is_empty() {
        let why = if sources.is_empty() {
            "no firewall rules (no /etc/nftables.conf, /etc/iptables/rules.v4 or enabled ufw)".to_string()
        } else {
            sources.iter().map(|s| format!("{}: {}", s.name, why_open(&s.verdict))).collect::<Vec<_>>().join("; ")
        };
        let install = if host.exists(Path::new("/etc/ufw")) { "" } else { "apt install ufw && " };
        return Ok(Finding::fail(
            CHECK,
            format!("nothing drops unasked traffic: {why}"),
            format!("allow only SSH, HTTP and HTTPS: `{install}ufw allow 22/tcp && ufw allow 80/tcp && ufw allow 443/tcp && ufw enable` (if your cloud provider's firewall does this, this line is expected)"),
        ));
    }
    let names = filtering.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ");
    let allowed = |o: &Opening| match (o.proto, o.single()) {
        (Proto::Tcp, Some(p)) => [22, 80, 443].contains(&p) || server.tcp_ports.contains(&p),
        // HTTP/3 is HTTPS over UDP.
        (Proto::Udp, Some(p)) => p == 443,
        _ => false,
    };
    let mut open = BTreeSet::new();
    let mut extra: Vec<(&Opening, &'static str)> = Vec::new();
    for s in &filtering {
        if let Verdict::Filters(o) = &s.verdict {
            open.extend(o.iter());
            extra.extend(o.iter().filter(|o| !allowed(o)).map(|o| (o, s.close)));
        }
    }
    extra.sort();
    extra.dedup_by(|a, b| a.0 == b.0);
    let opens = if open.is_empty() { "opens no port".to_string() } else { format!("opens {}", join(open.iter().copied())) };
    if !extra.is_empty() {
        return Ok(Finding::warn(
            CHECK,
            format!("{names} drops by default but {opens}: {} beyond SSH/HTTP/HTTPS and the server's own", join(extra.iter().map(|e| e.0))),
            format!("close what nothing outside needs ({}), or restrict it to the addresses that need it", extra[0].1),
        ));
    }
    let v4 = filtering.iter().any(|s| s.families.v4);
    let v6 = filtering.iter().any(|s| s.families.v6);
    if !v6 && public_ipv6(host)? {
        return Ok(Finding::warn(CHECK, format!("{names} filters IPv4 only, and this host has a public IPv6 address: every port is open over IPv6"), "add the same rules for IPv6 (/etc/iptables/rules.v6, or an `inet` table in nftables, or IPV6=yes in /etc/default/ufw)"));
    }
    if !v4 {
        return Ok(Finding::warn(CHECK, format!("{names} filters IPv6 only: every port is open over IPv4"), "add the same rules for IPv4 (/etc/iptables/rules.v4, or an `inet` table in nftables)"));
    }
    Ok(Finding::pass(CHECK, format!("{names} drops by default and {opens}")))
}

fn why_open(v: &Verdict) -> String {
    match v {
        Verdict::AcceptsAll(why) => why.clone(),
        Verdict::Filters(_) => String::new(),
    }
}

fn join<'a>(items: impl Iterator<Item = &'a Opening>) -> String {
    items.map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

fn nftables(host: &Host) -> Result<Vec<Source>, String> {
    let path = Path::new("/etc/nftables.conf");
    let Some(text) = host.read(path)? else { return Ok(Vec::new()) };
    let text = with_includes(host, &text, 0)?;
    let close = "remove their accept rules from /etc/nftables.conf (or the file it includes), then `systemctl reload nftables`";
    let chains = nft::input_chains(&text);
    if chains.is_empty() {
        return Ok(vec![Source { name: "nftables".into(), families: Families::default(), verdict: Verdict::AcceptsAll(format!("{} has no input chain", path.display())), close }]);
    }
    Ok(chains
        .into_iter()
        .map(|c| {
            let policy = c.chains.get(&c.name).is_some_and(|ch| ch.policy_drop);
            Source { name: format!("nftables (chain {})", c.name), families: c.families, verdict: evaluate(&c.chains, &c.name, policy), close }
        })
        .collect())
}

/// nft's `include "FILE"` lines replaced by the files (a glob in the file name allowed;
/// relative names are under /etc, nft's include path).
fn with_includes(host: &Host, text: &str, depth: usize) -> Result<String, String> {
    let mut out = String::new();
    for line in text.lines() {
        let Some(target) = line.trim().strip_prefix("include").map(|t| t.trim().trim_matches('"')).filter(|t| !t.is_empty() && depth < 8) else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let path = Path::new("/etc").join(target);
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let files = if name.contains(['*', '?']) { host.glob(path.parent().unwrap_or(Path::new("/")), &name)? } else { vec![path] };
        for file in files {
            if let Some(included) = host.read(&file)? {
                out.push_str(&with_includes(host, &included, depth + 1)?);
            }
        }
    }
    Ok(out)
}

fn iptables_persistent(host: &Host) -> Result<Vec<Source>, String> {
    let close = "remove their -j ACCEPT lines from /etc/iptables/rules.v4 and rules.v6, then `netfilter-persistent reload`";
    let mut out = Vec::new();
    for (file, families) in [("/etc/iptables/rules.v4", Families { v4: true, v6: false }), ("/etc/iptables/rules.v6", Families { v4: false, v6: true })] {
        let Some(text) = host.read(Path::new(file))? else { continue };
        let verdict = match iptables::filter_chains(&text) {
            Some(chains) => evaluate(&chains, "INPUT", chains.get("INPUT").is_some_and(|c| c.policy_drop)),
            None => Verdict::AcceptsAll("no *filter table".into()),
        };
        out.push(Source { name: format!("iptables ({file})"), families, verdict, close });
    }
    Ok(out)
}

fn ufw(host: &Host) -> Result<Vec<Source>, String> {
    let Some(conf) = host.read(Path::new("/etc/ufw/ufw.conf"))? else { return Ok(Vec::new()) };
    let close = "`ufw delete allow PORT/PROTO` for each";
    if shell_var(&conf, "ENABLED").as_deref() != Some("yes") {
        return Ok(vec![Source { name: "ufw".into(), families: Families::default(), verdict: Verdict::AcceptsAll("installed but not enabled (ENABLED=yes is not in /etc/ufw/ufw.conf)".into()), close }]);
    }
    let defaults = host.read(Path::new("/etc/default/ufw"))?.unwrap_or_default();
    // ufw's own defaults when /etc/default/ufw does not say.
    let policy = shell_var(&defaults, "DEFAULT_INPUT_POLICY").unwrap_or_else(|| "DROP".into());
    let ipv6 = shell_var(&defaults, "IPV6").is_none_or(|v| v == "yes");
    let policy_drop = matches!(policy.as_str(), "DROP" | "REJECT");
    let mut out = Vec::new();
    for (file, families) in [("/etc/ufw/user.rules", Families { v4: true, v6: false }), ("/etc/ufw/user6.rules", Families { v4: false, v6: ipv6 })] {
        if !families.v4 && !families.v6 {
            continue;
        }
        let chains = host.read(Path::new(file))?.and_then(|t| iptables::filter_chains(&t)).unwrap_or_default();
        let verdict = match evaluate(&chains, "ufw-user-input", policy_drop) {
            Verdict::AcceptsAll(_) if !policy_drop => Verdict::AcceptsAll(format!("DEFAULT_INPUT_POLICY=\"{policy}\" in /etc/default/ufw")),
            v => v,
        };
        out.push(Source { name: "ufw".into(), families, verdict, close });
    }
    Ok(out)
}

/// `NAME=value` or `NAME="value"` in a shell-style settings file; the last one wins.
fn shell_var(text: &str, name: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(name)?.strip_prefix('='))
        .map(|v| v.trim().trim_matches(['"', '\'']).to_string())
        .next_back()
}

/// Whether the host has a global IPv6 address (scope 00 in /proc/net/if_inet6).
fn public_ipv6(host: &Host) -> Result<bool, String> {
    let text = host.read(Path::new("/proc/net/if_inet6"))?.unwrap_or_default();
    Ok(text.lines().any(|l| l.split_whitespace().nth(3) == Some("00")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::doctor::report::Status;
    use crate::commands::doctor::testing::FakeRoot;

    fn run(files: &[(&str, &str)], own: &[u16]) -> Finding {
        let root = FakeRoot::new(files);
        check(&root.host(), &Server { tcp_ports: own.to_vec(), ..Server::default() }).unwrap()
    }

    const UFW_ON: (&str, &str) = ("/etc/ufw/ufw.conf", "# comment\nENABLED=yes\nLOGLEVEL=low\n");
    const UFW_WEB: &str = "*filter\n:ufw-user-input - [0:0]\n-A ufw-user-input -p tcp --dport 22 -j ACCEPT\n-A ufw-user-input -p tcp -m multiport --dports 80,443 -j ACCEPT\nCOMMIT\n";

    #[test]
    fn ufw_enabled_with_web_ports_passes_and_an_extra_port_warns() {
        let f = run(&[UFW_ON, ("/etc/ufw/user.rules", UFW_WEB), ("/etc/ufw/user6.rules", UFW_WEB)], &[]);
        assert_eq!(f.status, Status::Pass, "{f:?}");
        assert!(f.finding.contains("opens 22/tcp, 80/tcp, 443/tcp"), "{f:?}");
        let extra = UFW_WEB.replace("COMMIT", "-A ufw-user-input -p tcp --dport 8000 -j ACCEPT\n-A ufw-user-input -p udp --dport 53 -j ACCEPT\nCOMMIT");
        let f = run(&[UFW_ON, ("/etc/ufw/user.rules", &extra)], &[]);
        assert_eq!(f.status, Status::Warn);
        assert!(f.finding.contains("8000/tcp, 53/udp beyond"), "{f:?}");
        let f = run(&[UFW_ON, ("/etc/ufw/user.rules", &extra)], &[8000]);
        assert!(f.finding.contains(": 53/udp beyond"), "the server's own port is expected: {f:?}");
    }

    #[test]
    fn no_rules_or_accepting_rules_fail() {
        assert_eq!(run(&[], &[]).status, Status::Fail);
        let f = run(&[("/etc/ufw/ufw.conf", "ENABLED=no\n"), ("/etc/nftables.conf", "table inet filter { chain input { type filter hook input priority 0; } }\n")], &[]);
        assert_eq!(f.status, Status::Fail);
        assert!(f.finding.contains("ufw: installed but not enabled") && f.finding.contains("nftables (chain input): its policy accepts"), "{f:?}");
        let f = run(&[UFW_ON, ("/etc/default/ufw", "IPV6=yes\nDEFAULT_INPUT_POLICY=\"ACCEPT\"\n"), ("/etc/ufw/user.rules", UFW_WEB)], &[]);
        assert_eq!(f.status, Status::Fail, "{f:?}");
    }

    #[test]
    fn nftables_includes_are_read_in_place() {
        let conf = ("/etc/nftables.conf", "flush ruleset\ninclude \"/etc/nftables.d/*.nft\"\n");
        let part = ("/etc/nftables.d/filter.nft", "table inet filter {\n chain input {\n type filter hook input priority 0; policy drop;\n tcp dport { 22, 443 } accept\n }\n}\n");
        let f = run(&[conf, part], &[]);
        assert_eq!(f.status, Status::Pass, "{f:?}");
        assert!(f.finding.contains("opens 22/tcp, 443/tcp"), "{f:?}");
        assert_eq!(run(&[conf], &[]).status, Status::Fail);
    }

    #[test]
    fn ipv4_rules_alone_warn_on_a_host_with_public_ipv6() {
        let v4 = ("/etc/iptables/rules.v4", "*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n");
        assert_eq!(run(&[v4], &[]).status, Status::Pass);
        let inet6 = ("/proc/net/if_inet6", "00000000000000000000000000000001 01 80 10 80       lo\n20010db8000000000000000000000001 02 40 00 80     eth0\n");
        assert_eq!(run(&[v4, inet6], &[]).status, Status::Warn);
    }
}
