//! /etc/nftables.conf, read for its input chains: `table FAMILY NAME { chain NAME {
//! type filter hook input ...; policy drop; RULES } }`. Rules are reduced to `rules::Rule`
//! by what they say about `tcp dport` / `udp dport`, source addresses and interfaces.

use std::collections::HashMap;

use super::rules::{Action, Chain, Chains, Match, Proto, Rule, parse_ports};

/// Which address families a table filters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Families {
    pub v4: bool,
    pub v6: bool,
}

/// One base chain on the input hook: its family, and every chain of its table (for jumps).
pub struct InputChain {
    pub families: Families,
    pub name: String,
    pub chains: Chains,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(String),
    /// End of a statement: a newline or `;`.
    Sep,
    /// `{ ... }`: a table's or chain's body, or a set of values.
    Group(Vec<Tok>),
}

pub fn input_chains(text: &str) -> Vec<InputChain> {
    let mut chars = text.chars().peekable();
    let toks = lex(&mut chars);
    let mut out = Vec::new();
    for st in statements(&toks) {
        let head = words(&st);
        let (Some("table"), Some(Tok::Group(body))) = (head.first().map(String::as_str), st.last()) else { continue };
        // `table NAME` alone means the ip family.
        let families = match (head.len(), head.get(1).map(String::as_str)) {
            (2, _) | (_, Some("ip")) => Families { v4: true, v6: false },
            (_, Some("ip6")) => Families { v4: false, v6: true },
            (_, Some("inet")) => Families { v4: true, v6: true },
            _ => continue,
        };
        let mut chains = HashMap::new();
        let mut inputs = Vec::new();
        for st in statements(body) {
            let head = words(&st);
            let (Some("chain"), Some(name), Some(Tok::Group(body))) = (head.first().map(String::as_str), head.get(1), st.last()) else { continue };
            let (chain, is_input) = chain(body);
            if is_input {
                inputs.push(name.clone());
            }
            chains.insert(name.clone(), chain);
        }
        for name in inputs {
            out.push(InputChain { families, name, chains: chains.clone() });
        }
    }
    out
}

fn chain(body: &[Tok]) -> (Chain, bool) {
    let mut chain = Chain::default();
    let mut is_input = false;
    for st in statements(body) {
        let w = words(&st);
        match w.first().map(String::as_str) {
            Some("type") => is_input = w.windows(2).any(|p| p[0] == "hook" && p[1] == "input"),
            Some("policy") => chain.policy_drop = w.get(1).is_some_and(|p| p == "drop"),
            Some(_) => chain.rules.push(rule(&st)),
            None => {}
        }
    }
    (chain, is_input)
}

/// Words that make a rule conditional; a rule with none of them matches every packet.
const MATCH_WORDS: &[&str] = &[
    "tcp", "udp", "th", "ip", "ip6", "inet", "icmp", "icmpv6", "ct", "meta", "iif", "iifname", "oif", "oifname", "saddr", "daddr", "dport",
    "sport", "mark", "l4proto", "ether", "vlan", "fib", "pkttype", "sctp", "dccp", "rt", "frag", "ah", "esp", "comp", "socket", "osf",
];

fn rule(st: &[Tok]) -> Rule {
    let text = render(st);
    let w = words(st);
    let position = |word: &str| w.iter().rposition(|x| x == word);
    let action = match [position("accept"), position("drop"), position("reject"), position("jump"), position("goto"), position("return")]
        .into_iter()
        .enumerate()
        .filter_map(|(kind, at)| at.map(|at| (at, kind)))
        .max()
    {
        Some((_, 0)) => Action::Accept,
        Some((_, 1 | 2)) => Action::Drop,
        Some((at, 3)) => Action::Jump(w.get(at + 1).cloned().unwrap_or_default()),
        Some((at, 4)) => Action::Goto(w.get(at + 1).cloned().unwrap_or_default()),
        Some(_) => Action::Return,
        None => Action::Continue,
    };
    // From some addresses or interfaces only (loopback included): not open to anyone.
    let restricted = w.iter().any(|x| matches!(x.as_str(), "saddr" | "iif" | "iifname"));
    let mut openings = Vec::new();
    for (i, tok) in st.iter().enumerate() {
        if tok != &Tok::Word("dport".into()) || i == 0 {
            continue;
        }
        let protos: &[Proto] = match &st[i - 1] {
            Tok::Word(p) if p == "tcp" => &[Proto::Tcp],
            Tok::Word(p) if p == "udp" => &[Proto::Udp],
            Tok::Word(p) if p == "th" => &[Proto::Tcp, Proto::Udp],
            _ => continue,
        };
        for &proto in protos {
            match st.get(i + 1) {
                // `tcp dport != 22 accept` lets in every other port.
                Some(Tok::Word(op)) if op == "!=" => openings.push(parse_ports(proto, "1-65535")),
                Some(Tok::Word(v)) => openings.push(parse_ports(proto, v)),
                Some(Tok::Group(set)) => openings.extend(set.iter().filter_map(|t| match t {
                    Tok::Word(v) => Some(parse_ports(proto, v)),
                    _ => None,
                })),
                _ => {}
            }
        }
    }
    let matches = if !openings.is_empty() && !restricted {
        Match::Ports(openings)
    } else if w.iter().any(|x| MATCH_WORDS.contains(&x.as_str()) || x.starts_with('@')) || restricted {
        Match::Other
    } else {
        Match::Any
    };
    Rule { matches, action, text }
}

fn lex(chars: &mut std::iter::Peekable<std::str::Chars>) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<Tok>| {
        if !word.is_empty() {
            out.push(Tok::Word(std::mem::take(word)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                flush(&mut word, &mut out);
                while chars.next_if(|c| *c != '\n').is_some() {}
            }
            '"' => {
                word.push('"');
                word.extend(chars.by_ref().take_while(|c| *c != '"'));
                word.push('"');
            }
            '{' => {
                flush(&mut word, &mut out);
                out.push(Tok::Group(lex(chars)));
            }
            '}' => break,
            '\n' | ';' => {
                flush(&mut word, &mut out);
                out.push(Tok::Sep);
            }
            // A line ending in `\` continues on the next.
            '\\' if chars.peek() == Some(&'\n') => {
                chars.next();
            }
            c if c.is_whitespace() || c == ',' => flush(&mut word, &mut out),
            c => word.push(c),
        }
    }
    flush(&mut word, &mut out);
    out
}

fn statements(toks: &[Tok]) -> Vec<Vec<Tok>> {
    toks.split(|t| *t == Tok::Sep).filter(|s| !s.is_empty()).map(<[Tok]>::to_vec).collect()
}

fn words(st: &[Tok]) -> Vec<String> {
    st.iter().filter_map(|t| if let Tok::Word(w) = t { Some(w.clone()) } else { None }).collect()
}

fn render(st: &[Tok]) -> String {
    st.iter()
        .map(|t| match t {
            Tok::Word(w) => w.clone(),
            Tok::Group(g) => format!("{{ {} }}", render(&g.iter().filter(|t| **t != Tok::Sep).cloned().collect::<Vec<_>>()).replace(' ', ", ")),
            Tok::Sep => String::new(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::doctor::rules::{Verdict, evaluate};

    const DEBIAN_DEFAULT: &str = "#!/usr/sbin/nft -f\n\nflush ruleset\n\ntable inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter;\n\t}\n\tchain forward {\n\t\ttype filter hook forward priority filter;\n\t}\n}\n";

    fn verdicts(text: &str) -> Vec<(Families, Verdict)> {
        input_chains(text).into_iter().map(|c| (c.families, evaluate(&c.chains, &c.name, c.chains[&c.name].policy_drop))).collect()
    }

    fn open(v: &Verdict) -> Vec<String> {
        match v {
            Verdict::Filters(o) => o.iter().map(ToString::to_string).collect(),
            Verdict::AcceptsAll(why) => vec![format!("ALL: {why}")],
        }
    }

    #[test]
    fn debians_default_file_accepts_everything() {
        let v = verdicts(DEBIAN_DEFAULT);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].0, Families { v4: true, v6: true });
        assert!(matches!(v[0].1, Verdict::AcceptsAll(_)));
    }

    #[test]
    fn a_drop_policy_with_ports_sets_names_and_ranges() {
        let text = r#"
table inet filter {
    set trusted { type ipv4_addr; elements = { 10.0.0.1 } }
    chain input {
        type filter hook input priority 0; policy drop;
        ct state established,related accept # replies
        ct state invalid drop
        iif lo accept
        meta l4proto { icmp, ipv6-icmp } accept
        tcp dport { ssh, 80,
                    443 } ct state new accept
        ip saddr 10.0.0.0/8 tcp dport 5432 accept
        ip saddr @trusted tcp dport 6379 accept
        udp dport 51820 counter accept comment "wireguard; vpn"
        tcp dport 8000-8010 jump web
    }
    chain web { limit rate 10/second accept }
}
table ip6 other { chain input { type filter hook input priority 10; policy accept; } }
"#;
        let v = verdicts(text);
        assert_eq!(v.len(), 2);
        assert_eq!(open(&v[0].1), ["22/tcp", "80/tcp", "443/tcp", "8000-8010/tcp", "51820/udp"]);
        assert_eq!(v[1].0, Families { v4: false, v6: true });
        assert!(matches!(v[1].1, Verdict::AcceptsAll(_)));
    }

    #[test]
    fn a_final_drop_rule_filters_and_an_unconditional_accept_does_not() {
        let text = "table ip f {\n chain in {\n type filter hook input priority 0\n tcp dport 22 accept\n counter drop\n }\n}\n";
        assert_eq!(open(&verdicts(text)[0].1), ["22/tcp"]);
        let text = "table ip f { chain in { type filter hook input priority 0; policy drop; counter accept; } }";
        assert_eq!(open(&verdicts(text)[0].1), ["ALL: the rule `counter accept` accepts everything"]);
        let text = "table ip f { chain in { type filter hook input priority 0; policy drop; tcp dport != 22 accept; } }";
        assert_eq!(open(&verdicts(text)[0].1), ["every tcp port"]);
    }
}
