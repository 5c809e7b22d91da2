//! What the master and a worker say to each other over their socketpair:
//! one JSON object per line, in both directions.

use serde::{Deserialize, Serialize};
use std::os::fd::RawFd;

use crate::config::Config;
pub use crate::bridge::stop::{CANCEL_GRACE, StopReason};

/// The worker's end of its socketpair.
pub const CHANNEL_FD: RawFd = 3;
/// Listeners follow, in the order of `Config::bind`.
pub const FIRST_LISTENER_FD: RawFd = 4;

/// Exit status of a worker whose app cannot start (import error, lifespan
/// startup failure): respawning would fail the same way, so the master stops.
pub const EXIT_BOOT_ERROR: i32 = 3;

#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    /// Always the first message.
    Config(Box<Config>),
    /// Certificates, client CA and ticket keys: second when the config has TLS
    /// listeners, and again whenever they change (renewal, SIGHUP, key rotation).
    Tls(Box<crate::tls::acceptor::TlsMaterial>),
    /// Stop accepting, finish in-flight requests, run lifespan shutdown, exit.
    Stop(StopReason),
    /// SIGUSR1 reached the master (logrotate): it has reopened the log files by path,
    /// creating the ones moved away; the worker reopens them too.
    ReopenLogs,
    /// The whole ban list (--ban-after): after a change, and to every new worker.
    Bans(Vec<std::net::IpAddr>),
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub enum ToMaster {
    /// The app has started and the worker is accepting.
    Ready,
    /// The event loop answered a ping within the last second.
    Heartbeat { served: u64 },
    /// --limit-max-requests reached: replace me.
    Retire { served: u64 },
    /// The app cannot start; the worker exits with EXIT_BOOT_ERROR next. The
    /// master prints this once, however many workers hit the same error.
    BootFailed { message: String },
    /// Responses that count toward a ban, since the last report (at most every 250 ms).
    Strikes(Vec<Strike>),
}

/// `count` responses of `status` went to `ip` (the trusted client address).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Strike {
    pub ip: std::net::IpAddr,
    pub status: u16,
    pub count: u32,
}

pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut line = serde_json::to_vec(msg).expect("channel messages always serialize");
    line.push(b'\n');
    line
}

pub fn decode<'a, T: Deserialize<'a>>(line: &'a str) -> Result<T, String> {
    serde_json::from_str(line).map_err(|e| format!("bad message from the master-worker channel {line:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_single_lines() {
        let line = encode(&ToMaster::Heartbeat { served: 7 });
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let back: ToMaster = decode(std::str::from_utf8(&line).unwrap().trim_end()).unwrap();
        assert_eq!(back, ToMaster::Heartbeat { served: 7 });
        let line = encode(&ToWorker::ReopenLogs);
        assert!(matches!(decode(std::str::from_utf8(&line).unwrap().trim_end()), Ok(ToWorker::ReopenLogs)));
    }
}
