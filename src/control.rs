//! The control socket's protocol (supervisorctl's job): `ferrogate status|reload|stop|
//! workers|upgrade` connect to the master's unix socket, send one request as a JSON line
//! and read one reply line. The master's side is `master::control`, the command's side
//! `commands::control`; this module is what both must agree on.

use serde::{Deserialize, Serialize};

/// The largest request line the master reads: requests are tiny; anything longer is not ours.
pub const MAX_REQUEST: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Request {
    Status,
    Reload,
    Stop,
    /// Raise (positive) or lower (negative) the worker count.
    Workers { delta: i32 },
    /// Re-execute the master from the installed program, handing over the listeners.
    Upgrade,
    /// The addresses banned now (--ban-after).
    Bans,
    /// Lift the ban on one address, in every worker and in the state file.
    Unban { address: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    /// A sentence for a person: what was done, or why not.
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bans: Option<Vec<BanStatus>>,
}

/// One line of `ferrogate bans list` (also its --json output).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BanStatus {
    pub address: String,
    /// Unix seconds.
    pub until: u64,
    pub remaining_secs: u64,
    /// "20 x 404 in 60s".
    pub reason: String,
}

impl Reply {
    pub fn done(message: impl Into<String>) -> Reply {
        Reply { ok: true, message: message.into(), status: None, bans: None }
    }

    pub fn refused(message: impl Into<String>) -> Reply {
        Reply { ok: false, message: message.into(), status: None, bans: None }
    }
}

/// What `ferrogate status` shows; also its --json output, so the names are an interface.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    /// --name (the APP by default).
    pub name: String,
    pub app: String,
    pub master_pid: u32,
    /// The user the master runs as.
    pub master_user: String,
    pub uptime_secs: u64,
    pub listeners: Vec<String>,
    /// How many workers the master keeps serving.
    pub target_workers: usize,
    /// "serving", "starting", "reloading", "upgrading", "stopping".
    pub state: String,
    pub workers: Vec<WorkerStatus>,
    pub requests_served: u64,
    pub certificates: Vec<CertificateStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// The master's number for it, never reused (also in its ps title).
    pub id: u64,
    pub pid: u32,
    /// "booting", "serving", "stopping", "killed".
    pub state: String,
    pub age_secs: u64,
    pub requests_served: u64,
    /// Resident memory, when the master could read it.
    pub rss_bytes: Option<u64>,
    /// Why it is stopping, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping_because: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CertificateStatus {
    pub names: Vec<String>,
    /// Seconds since the epoch.
    pub not_after: u64,
    pub issuer: String,
}

/// "3d 4h", "2h 5m", "4m 10s", "12s": ages and uptimes for a person.
pub fn human_duration(secs: u64) -> String {
    match secs {
        s if s >= 86_400 => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// "54.2 MB" (10^6 bytes, as ps and top count).
pub fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1_000_000_000 => format!("{:.1} GB", b as f64 / 1e9),
        b if b >= 1_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b => format!("{} kB", b / 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json_lines() {
        assert_eq!(serde_json::to_string(&Request::Workers { delta: -2 }).unwrap(), r#"{"command":"workers","delta":-2}"#);
        assert_eq!(serde_json::from_str::<Request>(r#"{"command":"status"}"#).unwrap(), Request::Status);
        assert!(serde_json::from_str::<Request>(r#"{"command":"format-disk"}"#).is_err());
        assert_eq!(serde_json::to_string(&Request::Unban { address: "192.0.2.1".into() }).unwrap(), r#"{"command":"unban","address":"192.0.2.1"}"#);
    }

    #[test]
    fn durations_and_sizes_read_well() {
        assert_eq!(human_duration(12), "12s");
        assert_eq!(human_duration(250), "4m 10s");
        assert_eq!(human_duration(7500), "2h 5m");
        assert_eq!(human_duration(3 * 86_400 + 4 * 3600 + 5), "3d 4h");
        assert_eq!(human_bytes(54_200_000), "54.2 MB");
        assert_eq!(human_bytes(999), "0 kB");
    }
}
