//! Firewall rules reduced to what the audit needs, whatever tool wrote them: chains of
//! rules that match a port, anything, or something narrower (a source address, an
//! interface, a connection state), and what they do. One evaluator answers, for the
//! input path: does unasked traffic get dropped, and which ports are open to anyone?

use std::collections::{BTreeSet, HashMap};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ports {
    Range(u16, u16),
    /// A service name no table here knows (nft resolves it from /etc/services).
    Named(String),
}

/// Ports a rule lets in from anywhere.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Opening {
    pub proto: Proto,
    pub ports: Ports,
}

impl Opening {
    pub fn single(&self) -> Option<u16> {
        match self.ports {
            Ports::Range(a, b) if a == b => Some(a),
            _ => None,
        }
    }
}

impl fmt::Display for Opening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        match &self.ports {
            Ports::Range(1, 65535) | Ports::Range(0, 65535) => write!(f, "every {proto} port"),
            Ports::Range(a, b) if a == b => write!(f, "{a}/{proto}"),
            Ports::Range(a, b) => write!(f, "{a}-{b}/{proto}"),
            Ports::Named(name) => write!(f, "{name}/{proto}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    /// Every packet (no condition, or only counters and logging).
    Any,
    /// These ports, from any address.
    Ports(Vec<Opening>),
    /// Something narrower: a source, an interface, a connection state, ICMP...
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Accept,
    Drop,
    Jump(String),
    Goto(String),
    Return,
    /// Logging, counting, marking: the packet goes on to the next rule.
    Continue,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub matches: Match,
    pub action: Action,
    /// The rule as written, for messages.
    pub text: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    pub policy_drop: bool,
    pub rules: Vec<Rule>,
}

pub type Chains = HashMap<String, Chain>;

/// What an input path does with traffic nobody asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Dropped (or rejected) unless one of these openings lets it in.
    Filters(BTreeSet<Opening>),
    /// Let in; why.
    AcceptsAll(String),
}

enum End {
    Dropped,
    AcceptedAll(String),
    /// Reached the end of the chain (or a RETURN): the caller goes on.
    FellThrough,
}

/// Evaluates the input path starting at `start`; `policy_drop` is what happens at its end.
pub fn evaluate(chains: &Chains, start: &str, policy_drop: bool) -> Verdict {
    let mut open = BTreeSet::new();
    match walk(chains, start, 0, &mut open) {
        End::Dropped => Verdict::Filters(open),
        End::AcceptedAll(rule) => Verdict::AcceptsAll(format!("the rule `{rule}` accepts everything")),
        End::FellThrough if policy_drop => Verdict::Filters(open),
        End::FellThrough => Verdict::AcceptsAll("its policy accepts what no rule drops".into()),
    }
}

fn walk(chains: &Chains, name: &str, depth: usize, open: &mut BTreeSet<Opening>) -> End {
    // Jump loops are refused by the kernel; a depth bound keeps a bad file harmless here.
    let Some(chain) = chains.get(name).filter(|_| depth < 32) else { return End::FellThrough };
    for rule in &chain.rules {
        match (&rule.matches, &rule.action) {
            (Match::Ports(p), Action::Accept) => open.extend(p.iter().cloned()),
            (Match::Any, Action::Accept) => return End::AcceptedAll(rule.text.clone()),
            (Match::Any, Action::Drop) => return End::Dropped,
            (Match::Any, Action::Return) => return End::FellThrough,
            (Match::Any, Action::Jump(to)) => match walk(chains, to, depth + 1, open) {
                End::FellThrough => {}
                end => return end,
            },
            (Match::Any, Action::Goto(to)) => return walk(chains, to, depth + 1, open),
            // `tcp dport 22 jump ssh-limits`: the ports are open if that chain accepts anything.
            (Match::Ports(p), Action::Jump(to) | Action::Goto(to)) => {
                let mut inner = BTreeSet::new();
                let accepts = matches!(walk(chains, to, depth + 1, &mut inner), End::AcceptedAll(_)) || !inner.is_empty();
                if accepts {
                    open.extend(p.iter().cloned());
                }
            }
            _ => {}
        }
    }
    End::FellThrough
}

/// Port numbers of the service names firewall files use most; others stay names.
pub fn service_port(name: &str) -> Option<u16> {
    Some(match name {
        "ssh" => 22,
        "http" | "www" => 80,
        "https" => 443,
        "ftp" => 21,
        "telnet" => 23,
        "smtp" => 25,
        "domain" => 53,
        "pop3" => 110,
        "ntp" => 123,
        "imap" | "imap2" => 143,
        "submission" => 587,
        "imaps" => 993,
        "pop3s" => 995,
        "mysql" => 3306,
        "postgresql" => 5432,
        "http-alt" => 8080,
        _ => return None,
    })
}

/// One port, `a-b` or `a:b` range, or service name.
pub fn parse_ports(proto: Proto, spec: &str) -> Opening {
    let spec = spec.trim_matches('"');
    let number = |s: &str| s.parse::<u16>().ok().or_else(|| service_port(s));
    let ports = match spec.split_once(['-', ':']) {
        Some((a, b)) => match (number(a), number(b)) {
            (Some(a), Some(b)) => Ports::Range(a.min(b), a.max(b)),
            _ => Ports::Named(spec.to_string()),
        },
        None => number(spec).map_or_else(|| Ports::Named(spec.to_string()), |p| Ports::Range(p, p)),
    };
    Opening { proto, ports }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(matches: Match, action: Action) -> Rule {
        Rule { matches, action, text: "r".into() }
    }

    fn tcp(p: u16) -> Opening {
        Opening { proto: Proto::Tcp, ports: Ports::Range(p, p) }
    }

    #[test]
    fn policy_final_drops_and_jumps_decide() {
        let mut chains = Chains::new();
        chains.insert("in".into(), Chain { policy_drop: false, rules: vec![rule(Match::Other, Action::Accept), rule(Match::Ports(vec![tcp(22)]), Action::Accept)] });
        assert!(matches!(evaluate(&chains, "in", false), Verdict::AcceptsAll(_)));
        assert_eq!(evaluate(&chains, "in", true), Verdict::Filters([tcp(22)].into()));
        chains.get_mut("in").unwrap().rules.push(rule(Match::Ports(vec![tcp(80)]), Action::Jump("web".into())));
        chains.get_mut("in").unwrap().rules.push(rule(Match::Any, Action::Jump("user".into())));
        chains.insert("web".into(), Chain { policy_drop: false, rules: vec![rule(Match::Any, Action::Accept)] });
        chains.insert("user".into(), Chain { policy_drop: false, rules: vec![rule(Match::Ports(vec![tcp(5432)]), Action::Accept), rule(Match::Any, Action::Return), rule(Match::Any, Action::Accept)] });
        chains.get_mut("in").unwrap().rules.push(rule(Match::Any, Action::Drop));
        assert_eq!(evaluate(&chains, "in", false), Verdict::Filters([tcp(22), tcp(80), tcp(5432)].into()));
    }

    #[test]
    fn ports_read_as_numbers_ranges_and_names() {
        assert_eq!(parse_ports(Proto::Tcp, "ssh"), tcp(22));
        assert_eq!(parse_ports(Proto::Tcp, "8000:8010").to_string(), "8000-8010/tcp");
        assert_eq!(parse_ports(Proto::Udp, "1-65535").to_string(), "every udp port");
        assert_eq!(parse_ports(Proto::Tcp, "gopher").to_string(), "gopher/tcp");
    }
}
