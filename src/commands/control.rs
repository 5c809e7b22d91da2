//! `ferrogate status|reload|stop|workers|upgrade`: supervisorctl's commands, over the
//! running master's control socket (`crate::control` has the protocol). They take the
//! server's own options (--control-socket, --config, FERROGATE_*), so the unit file's
//! configuration finds the socket, and they wait until what they asked for is done.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::control::{Reply, Request, Status, human_bytes, human_duration};

const USAGE: &str = "usage: ferrogate status [--json] [OPTIONS]
       ferrogate reload [--no-wait] [--json] [OPTIONS]
       ferrogate stop [--no-wait] [--json] [OPTIONS]
       ferrogate workers +N|-N [--no-wait] [--json] [OPTIONS]
       ferrogate upgrade [--no-wait] [--json] [OPTIONS]

Talk to the running server through its control socket. OPTIONS are the server's:
give the same --control-socket or --config (or FERROGATE_* variables) as to the server.

  status      master PID and uptime, listeners, each worker's PID, age, requests and
              memory, certificates
  reload      rolling restart (as SIGHUP): new workers load the new code, old ones drain
  stop        graceful stop (as SIGTERM): in-flight requests finish, then exit
  workers +N  start N more workers (-N: stop N, the newest first; never below one)
  upgrade     re-execute the master from the installed ferrogate (after pip install -U),
              handing over the listening sockets: no connection is refused or dropped
  --no-wait   return once the server accepted the request, not when it is done
  --json      print the server's answer as JSON

Exit status: 0 done, 1 refused or not done in time, 3 no server is running there.";

/// How long the commands wait for what they asked for.
const WAIT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(200);
const NOT_RUNNING: i32 = 3;

pub fn run(verb: &str, args: &[String], env: Vec<(std::ffi::OsString, std::ffi::OsString)>) -> i32 {
    let mut json = false;
    let mut wait = true;
    let mut delta = None;
    let mut rest = vec!["ferrogate".to_string()];
    for arg in args {
        match arg.as_str() {
            "--json" => json = true,
            "--no-wait" => wait = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                return 0;
            }
            n if verb == "workers" && delta.is_none() && n.trim_start_matches(['+', '-']).parse::<u16>().is_ok() => {
                delta = n.parse::<i32>().ok();
            }
            _ => rest.push(arg.clone()),
        }
    }
    let request = match verb {
        "status" => Request::Status,
        "reload" => Request::Reload,
        "stop" => Request::Stop,
        "upgrade" => Request::Upgrade,
        _ => match delta {
            Some(delta) => Request::Workers { delta },
            None => {
                eprintln!("error: ferrogate workers needs +N or -N (e.g. workers +2)\n\n{USAGE}");
                return 2;
            }
        },
    };
    let layer = match super::server_options(rest, env) {
        Ok(layer) => layer,
        Err(code) => return code,
    };
    let socket = layer.control_socket_path();
    let before = match ask(&socket, &Request::Status) {
        Ok(reply) => reply.status,
        Err(code) => return code,
    };
    let reply = if request == Request::Status {
        Reply { status: before.clone(), ..Reply::done("") }
    } else {
        match ask(&socket, &request) {
            Ok(reply) => reply,
            Err(code) => return code,
        }
    };
    if !reply.ok {
        return report(json, &reply, 1);
    }
    match (&request, reply.status.as_ref()) {
        (Request::Status, Some(status)) => {
            if json {
                println!("{}", serde_json::to_string_pretty(status).unwrap_or_default());
            } else {
                print!("{}", render(status));
            }
            return 0;
        }
        (Request::Status, None) => return report(json, &reply, 1),
        _ => {}
    }
    if !json {
        println!("{}", reply.message);
    }
    if !wait {
        return report_json_only(json, &reply, 0);
    }
    let old_pids: Vec<u32> = before.as_ref().map(|s| s.workers.iter().map(|w| w.pid).collect()).unwrap_or_default();
    let old_master = before.as_ref().map_or(0, |s| s.master_pid);
    let mut failed = false;
    let outcome = wait_for(&socket, |now| match (&request, now) {
        // The master said "upgrading" before answering: serving again under the same
        // master means the new one gave up (the reason is in the server's log).
        (Request::Upgrade, Some(s)) if s.master_pid == old_master && s.state == "serving" => {
            failed = true;
            Some("the upgrade failed: the new master stopped before serving; this one keeps serving (see the server's log)".into())
        }
        (Request::Stop, None) => Some("stopped".to_string()),
        (Request::Stop, Some(_)) => None,
        (_, None) => None,
        (Request::Upgrade, Some(s)) => (s.master_pid != old_master && settled(s)).then(|| format!("upgraded: master {old_master} -> {} ({} {})", s.master_pid, s.name, s.version)),
        (Request::Reload, Some(s)) => (settled(s) && s.workers.iter().all(|w| !old_pids.contains(&w.pid)))
            .then(|| format!("reloaded: workers {} replaced by {}", pids(&old_pids), pids(&s.workers.iter().map(|w| w.pid).collect::<Vec<_>>()))),
        (_, Some(s)) => settled(s).then(|| format!("{} workers serving: {}", s.workers.len(), pids(&s.workers.iter().map(|w| w.pid).collect::<Vec<_>>()))),
    });
    match outcome {
        Some(why) if failed => report(json, &Reply::refused(why), 1),
        Some(done) => {
            let reply = Reply::done(done);
            if !json {
                println!("{}", reply.message);
            }
            report_json_only(json, &reply, 0)
        }
        None => report(json, &Reply::refused(format!("not done after {}s; see the server's log and `ferrogate status`", WAIT.as_secs())), 1),
    }
}

/// Every worker serves and there are as many as the master wants.
fn settled(s: &Status) -> bool {
    s.state == "serving" && s.workers.len() == s.target_workers && s.workers.iter().all(|w| w.state == "serving")
}

fn pids(pids: &[u32]) -> String {
    pids.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

/// Polls the status until `done` says what was reached (given None once no server answers).
fn wait_for(socket: &Path, mut done: impl FnMut(Option<&Status>) -> Option<String>) -> Option<String> {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        std::thread::sleep(POLL);
        let status = ask_quietly(socket).and_then(|r| r.status);
        if let Some(message) = done(status.as_ref()) {
            return Some(message);
        }
    }
    None
}

fn ask_quietly(socket: &Path) -> Option<Reply> {
    exchange(socket, &Request::Status).ok()
}

/// One request, one reply; the exit status to return when there is no reply.
pub(super) fn ask(socket: &Path, request: &Request) -> Result<Reply, i32> {
    exchange(socket, request).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            eprintln!(
                "error: no ferrogate server is running with the control socket {} ({e}). Start one, or give this command the server's --control-socket or --config.",
                socket.display()
            );
            NOT_RUNNING
        }
        std::io::ErrorKind::PermissionDenied => {
            eprintln!("error: {}: {e}; run the command as root (sudo) or as the server's user", socket.display());
            1
        }
        _ => {
            eprintln!("error: the control socket {} did not answer: {e}", socket.display());
            1
        }
    })
}

fn exchange(socket: &Path, request: &Request) -> std::io::Result<Reply> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    serde_json::from_str(answer.trim_end()).map_err(|e| std::io::Error::other(format!("a reply that is not ferrogate's ({e})")))
}

fn report(json: bool, reply: &Reply, code: i32) -> i32 {
    if json {
        println!("{}", serde_json::to_string(reply).unwrap_or_default());
    } else if !reply.ok {
        eprintln!("error: {}", reply.message);
    }
    code
}

fn report_json_only(json: bool, reply: &Reply, code: i32) -> i32 {
    if json {
        println!("{}", serde_json::to_string(reply).unwrap_or_default());
    }
    code
}

/// The person-readable `ferrogate status`.
pub fn render(s: &Status) -> String {
    let mut out = format!(
        "ferrogate {} · {} · {}\nmaster   pid {} as {}, up {}\n",
        s.version,
        s.name,
        s.state,
        s.master_pid,
        s.master_user,
        human_duration(s.uptime_secs)
    );
    for l in &s.listeners {
        out.push_str(&format!("listen   {l}\n"));
    }
    out.push_str(&format!("workers  {} of {} serving, {} requests served\n", s.workers.iter().filter(|w| w.state == "serving").count(), s.target_workers, s.requests_served));
    out.push_str("  ID     PID  STATE     AGE       REQUESTS    MEMORY\n");
    for w in &s.workers {
        let rss = w.rss_bytes.map_or_else(|| "-".to_string(), human_bytes);
        let why = w.stopping_because.as_deref().map(|r| format!("  ({r})")).unwrap_or_default();
        out.push_str(&format!("  {:<4} {:>5}  {:<8}  {:<8}  {:>9}  {:>8}{why}\n", w.id, w.pid, w.state, human_duration(w.age_secs), w.requests_served, rss));
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    for c in &s.certificates {
        let left = (c.not_after as i64 - now as i64) / 86_400;
        out.push_str(&format!("cert     {} ({}), expires in {left} days\n", c.names.join(", "), c.issuer));
    }
    out
}
