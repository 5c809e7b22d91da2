//! `ferrogate bans list|unban ADDR`: the running server's ban list (--ban-after), through
//! its control socket, like the other control commands (`control.rs`).

use crate::control::{BanStatus, Request, human_duration};

const USAGE: &str = "usage: ferrogate bans list [--json] [OPTIONS]
       ferrogate bans unban ADDRESS [--json] [OPTIONS]

The addresses the running server bans (--ban-after), through its control socket.
OPTIONS are the server's: give the same --control-socket or --config (or FERROGATE_*
variables) as to the server.

  list          each banned address, until when, how long is left, and why
  unban ADDR    lift the ban on ADDR at once, in every worker and in the state file
  --json        print the server's answer as JSON

Exit status: 0 done, 1 refused (e.g. not banned), 3 no server is running there.";

pub fn run(args: &[String], env: Vec<(std::ffi::OsString, std::ffi::OsString)>) -> i32 {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return 0;
    }
    let json = args.iter().any(|a| a == "--json");
    let words: Vec<&String> = args.iter().filter(|a| *a != "--json").collect();
    // The verb and its address come first; the rest are the server's options.
    let (request, used) = match (words.first().map(|w| w.as_str()), words.get(1)) {
        (Some("list"), _) => (Request::Bans, 1),
        (None, _) => (Request::Bans, 0),
        (Some("unban"), Some(address)) if !address.starts_with('-') => (Request::Unban { address: address.to_string() }, 2),
        _ => {
            eprintln!("error: expected `bans list` or `bans unban ADDRESS`\n\n{USAGE}");
            return 2;
        }
    };
    let rest: Vec<String> = std::iter::once("ferrogate".to_string()).chain(words[used..].iter().map(|w| w.to_string())).collect();
    let layer = match super::server_options(rest, env) {
        Ok(layer) => layer,
        Err(code) => return code,
    };
    let reply = match super::control::ask(&layer.control_socket_path(), &request) {
        Ok(reply) => reply,
        Err(code) => return code,
    };
    if json {
        let out = match &reply.bans {
            Some(bans) if reply.ok => serde_json::to_string_pretty(bans),
            _ => serde_json::to_string(&reply),
        };
        println!("{}", out.unwrap_or_default());
        return if reply.ok { 0 } else { 1 };
    }
    if !reply.ok {
        eprintln!("error: {}", reply.message);
        return 1;
    }
    match &reply.bans {
        Some(bans) => print!("{}", render(bans)),
        None => println!("{}", reply.message),
    }
    0
}

pub fn render(bans: &[BanStatus]) -> String {
    if bans.is_empty() {
        return "no address is banned\n".into();
    }
    let mut out = format!("{:<40} {:<26} {:<10} REASON\n", "ADDRESS", "UNTIL", "REMAINING");
    for b in bans {
        out.push_str(&format!("{:<40} {:<26} {:<10} {}\n", b.address, utc(b.until), human_duration(b.remaining_secs), b.reason));
    }
    out
}

/// "2025-05-01 12:34:56 +0000" from Unix seconds, as the log lines write times.
fn utc(secs: u64) -> String {
    crate::log::time::Timestamp::from_unix(secs as i64).iso().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_reads_as_a_table() {
        assert_eq!(render(&[]), "no address is banned\n");
        let out = render(&[BanStatus { address: "203.0.113.9".into(), until: 1_700_000_000, remaining_secs: 250, reason: "20 x 404 in 60s".into() }]);
        assert!(out.contains("203.0.113.9") && out.contains("2023-11-14 22:13:20") && out.contains("4m 10s") && out.contains("20 x 404 in 60s"), "{out}");
    }
}
