//! iptables-save files: iptables-persistent's /etc/iptables/rules.v4 and rules.v6, and
//! ufw's /etc/ufw/user.rules and user6.rules. Only the `*filter` table counts; its
//! `:CHAIN POLICY` lines and `-A CHAIN ...` rules become `rules::Chains`.

use super::rules::{Action, Chains, Match, Opening, Proto, Rule, parse_ports};

/// The filter table's chains, None when the file has no `*filter` table.
pub fn filter_chains(text: &str) -> Option<Chains> {
    let mut chains = Chains::new();
    let mut in_filter = false;
    let mut seen = false;
    for line in text.lines().map(str::trim) {
        if let Some(table) = line.strip_prefix('*') {
            in_filter = table == "filter";
            seen |= in_filter;
        } else if !in_filter || line.starts_with('#') {
            continue;
        } else if let Some(decl) = line.strip_prefix(':') {
            let mut parts = decl.split_whitespace();
            if let (Some(name), Some(policy)) = (parts.next(), parts.next()) {
                chains.entry(name.to_string()).or_default().policy_drop = policy == "DROP";
            }
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let args = split_args(rest);
            if let Some((chain, args)) = args.split_first() {
                chains.entry(chain.clone()).or_default().rules.push(rule(args, line));
            }
        }
    }
    seen.then_some(chains)
}

/// Options whose value we skip: they do not narrow who may connect.
const HARMLESS_WITH_VALUE: &[&str] = &["--comment", "--reject-with", "--log-prefix", "--log-level", "-d", "--destination"];
/// Matches that only name the protocol module a --dport needs.
const PORT_MODULES: &[&str] = &["tcp", "udp", "multiport", "comment"];

fn rule(args: &[String], line: &str) -> Rule {
    let mut proto = None;
    let mut ports: Vec<String> = Vec::new();
    let mut negated_ports = false;
    let mut restricted = false;
    let mut narrower = false;
    let mut action = Action::Continue;
    let mut negate = false;
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).map(String::as_str).unwrap_or("");
        let mut took_value = true;
        match args[i].as_str() {
            "!" => {
                negate = true;
                i += 1;
                continue;
            }
            "-p" | "--protocol" => {
                proto = if negate { None } else { Some(value.to_ascii_lowercase()) };
                narrower |= negate;
            }
            "--dport" | "--destination-port" | "--dports" | "--destination-ports" => {
                ports.extend(value.split(',').map(String::from));
                negated_ports |= negate;
            }
            "-s" | "--source" | "-i" | "--in-interface" | "--src-range" => {
                restricted |= negate || !matches!(value, "0.0.0.0/0" | "::/0");
            }
            "-m" | "--match" => narrower |= !PORT_MODULES.contains(&value),
            "-j" | "--jump" => action = target(value, false),
            "-g" | "--goto" => action = target(value, true),
            flag if HARMLESS_WITH_VALUE.contains(&flag) => {}
            // Another module's option (--ctstate, --icmp-type...): its -m already counted.
            flag if flag.starts_with('-') => narrower = true,
            _ => took_value = false,
        }
        negate = false;
        i += if took_value { 2 } else { 1 };
    }
    let proto = match proto.as_deref() {
        Some("tcp" | "6") => Some(Proto::Tcp),
        Some("udp" | "17") => Some(Proto::Udp),
        Some(_) => {
            narrower = true;
            None
        }
        None => None,
    };
    let matches = match proto {
        _ if restricted => Match::Other,
        Some(p) if negated_ports || (ports.is_empty() && !narrower) => Match::Ports(vec![parse_ports(p, "1-65535")]),
        Some(p) if !ports.is_empty() => Match::Ports(ports.iter().map(|s| parse_ports(p, s)).collect::<Vec<Opening>>()),
        None if !narrower && ports.is_empty() => Match::Any,
        _ => Match::Other,
    };
    Rule { matches, action, text: line.to_string() }
}

fn target(name: &str, goto: bool) -> Action {
    match name {
        "ACCEPT" => Action::Accept,
        "DROP" | "REJECT" => Action::Drop,
        "RETURN" => Action::Return,
        "LOG" | "NFLOG" | "MARK" | "CONNMARK" | "" => Action::Continue,
        chain if goto => Action::Goto(chain.to_string()),
        chain => Action::Jump(chain.to_string()),
    }
}

/// Whitespace-separated, with "double quoted" values (iptables-save quotes comments).
fn split_args(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            out.push(chars.by_ref().take_while(|c| *c != '"').collect());
        } else {
            let mut word = String::new();
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                word.push(c);
            }
            out.push(word);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::doctor::rules::{Verdict, evaluate};

    fn open(text: &str, chain: &str, policy_drop: Option<bool>) -> Vec<String> {
        let chains = filter_chains(text).expect("a filter table");
        let policy = policy_drop.unwrap_or_else(|| chains.get(chain).is_some_and(|c| c.policy_drop));
        match evaluate(&chains, chain, policy) {
            Verdict::Filters(o) => o.iter().map(ToString::to_string).collect(),
            Verdict::AcceptsAll(why) => vec![format!("ALL: {why}")],
        }
    }

    const PERSISTENT: &str = "# Generated by iptables-save v1.8.9\n*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j ACCEPT\nCOMMIT\n*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -i lo -j ACCEPT\n-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n-A INPUT -p icmp -j ACCEPT\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n-A INPUT -p tcp -m multiport --dports 80,443 -m comment --comment \"web -j x\" -j ACCEPT\n-A INPUT -s 10.0.0.0/8 -p tcp --dport 5432 -j ACCEPT\n-A INPUT -p udp --dport 60000:61000 -j ACCEPT\nCOMMIT\n";

    #[test]
    fn iptables_persistent_policy_and_accepts() {
        assert_eq!(open(PERSISTENT, "INPUT", None), ["22/tcp", "80/tcp", "443/tcp", "60000-61000/udp"]);
        let accepting = PERSISTENT.replace(":INPUT DROP", ":INPUT ACCEPT");
        assert!(open(&accepting, "INPUT", None)[0].starts_with("ALL"));
        let final_reject = format!("{}-A INPUT -j REJECT --reject-with icmp-port-unreachable\nCOMMIT\n", accepting.trim_end_matches("COMMIT\n"));
        assert_eq!(open(&final_reject, "INPUT", None).len(), 4, "a final unconditional REJECT filters");
        assert!(filter_chains("*nat\nCOMMIT\n").is_none());
        assert_eq!(open("*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp -j ACCEPT\nCOMMIT\n", "INPUT", None), ["every tcp port"]);
    }

    #[test]
    fn ufw_user_rules_with_limit_chains() {
        let user = "*filter\n:ufw-user-input - [0:0]\n:ufw-user-limit - [0:0]\n:ufw-user-limit-accept - [0:0]\n### RULES ###\n\n### tuple ### limit tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n-A ufw-user-input -p tcp --dport 22 -m conntrack --ctstate NEW -m recent --set\n-A ufw-user-input -p tcp --dport 22 -m conntrack --ctstate NEW -m recent --update --seconds 30 --hitcount 6 -j ufw-user-limit\n-A ufw-user-input -p tcp --dport 22 -j ufw-user-limit-accept\n\n### tuple ### allow tcp 8080 0.0.0.0/0 any 0.0.0.0/0 in\n-A ufw-user-input -p tcp --dport 8080 -j ACCEPT\n### tuple ### allow any 3306 0.0.0.0/0 any 192.168.1.0/24 in\n-A ufw-user-input -p tcp --dport 3306 -s 192.168.1.0/24 -j ACCEPT\n\n-A ufw-user-limit -m limit --limit 3/minute -j LOG --log-prefix \"[UFW LIMIT BLOCK] \"\n-A ufw-user-limit -j REJECT\n-A ufw-user-limit-accept -j ACCEPT\nCOMMIT\n";
        assert_eq!(open(user, "ufw-user-input", Some(true)), ["22/tcp", "8080/tcp"]);
        assert!(open(user, "ufw-user-input", Some(false))[0].starts_with("ALL"));
    }

    #[test]
    fn quoted_arguments_stay_whole() {
        assert_eq!(split_args("INPUT -m comment --comment \"a b\" -j ACCEPT"), ["INPUT", "-m", "comment", "--comment", "a b", "-j", "ACCEPT"]);
    }
}
