//! The one typed configuration every part of ferrogate reads.
//!
//! It is built once in the master (defaults < environment < command line),
//! validated there, and handed to each worker as a single serialized value,
//! so a worker never re-parses flags and can never disagree with its master.

pub mod access_log_format;
mod cli;
mod env_file;

pub use cli::Cli;
pub use env_file::load_env_file;

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::PathBuf;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    pub app: AppConfig,
    pub bind: Vec<BindSpec>,
    pub backlog: u32,
    pub workers: WorkersConfig,
    pub http: HttpConfig,
    pub proxy: ProxyConfig,
    pub ws: WsConfig,
    pub statics: StaticConfig,
    pub log: LogConfig,
}

/// Where the ASGI application comes from and how it starts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppConfig {
    /// "module:attribute", as uvicorn takes it.
    pub target: String,
    pub factory: bool,
    pub app_dir: PathBuf,
    pub lifespan: LifespanMode,
    pub root_path: String,
    pub event_loop: LoopChoice,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LoopChoice {
    /// uvloop when installed, else asyncio.
    Auto,
    Asyncio,
    Uvloop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LifespanMode {
    /// Run lifespan events if the app supports them; carry on if it raises at once.
    Auto,
    /// The app must complete lifespan startup, or the server does not start.
    On,
    /// Never send lifespan events.
    Off,
}

/// One listening socket, as the user asked for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum BindSpec {
    Tcp { host: String, port: u16 },
    Unix { path: PathBuf, mode: Option<u32> },
    /// A descriptor already open in our process (--fd, systemd LISTEN_FDS).
    Fd { fd: i32 },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkersConfig {
    pub count: usize,
    /// Seconds a worker's event loop may go without answering before it is replaced.
    pub timeout: u64,
    /// Seconds in-flight requests get to finish on stop or reload.
    pub graceful_timeout: u64,
    /// Recycle a worker after this many requests (0: never).
    pub max_requests: u64,
    pub max_requests_jitter: u64,
    pub reload: bool,
    pub reload_dirs: Vec<PathBuf>,
    /// File-name patterns (`*` wildcards) that trigger a reload, and those that never do.
    pub reload_include: Vec<String>,
    pub reload_exclude: Vec<String>,
    pub reload_delay: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HttpConfig {
    pub keep_alive_timeout: u64,
    /// Seconds a request body may pause, or a response write stall, before the connection closes.
    pub io_timeout: u64,
    /// Concurrent requests a worker serves before answering 503 (None: unlimited).
    pub limit_concurrency: Option<usize>,
    pub max_header_size: usize,
    pub max_headers: usize,
    pub server_header: bool,
    pub date_header: bool,
    /// Extra headers added to every response, already split into name and value.
    pub default_headers: Vec<(String, String)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProxyConfig {
    pub enabled: bool,
    pub trusted: TrustedPeers,
}

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
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.networks.iter().any(|net| net.contains(&ip))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WsConfig {
    /// False with --ws none: upgrade requests reach the app as plain HTTP.
    pub enabled: bool,
    pub max_size: usize,
    /// Messages buffered for the app before the server stops reading.
    pub max_queue: usize,
    pub ping_interval: Option<f64>,
    pub ping_timeout: Option<f64>,
    pub per_message_deflate: bool,
}

/// Directories served by the server itself, never reaching the app.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StaticConfig {
    pub mounts: Vec<StaticMount>,
    /// `Cache-Control: public, max-age=N` on files served (None: no such header).
    pub max_age: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StaticMount {
    /// URL path prefix without a trailing slash, e.g. "/static".
    pub prefix: String,
    /// Absolute path of the directory, resolved once in the master.
    pub dir: PathBuf,
}

impl StaticMount {
    /// Parses one `--static URL_PATH=DIR` value and checks the directory exists.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (prefix, dir) = spec
            .split_once('=')
            .ok_or_else(|| format!("'{spec}' must be URL_PATH=DIR, e.g. /static=./static"))?;
        let prefix = prefix.trim().trim_end_matches('/');
        if !prefix.starts_with('/') && !prefix.is_empty() {
            return Err(format!("'{spec}': the URL path must start with '/', e.g. /static={dir}"));
        }
        if prefix.is_empty() {
            return Err(format!(
                "'{spec}': mounting files at '/' would hide the whole app; mount them under a path such as /static"
            ));
        }
        if prefix.contains(['?', '#', '%']) || prefix.split('/').any(|s| s == "." || s == "..") {
            return Err(format!("'{spec}': the URL path must be a plain path such as /static or /assets/img"));
        }
        let dir = std::path::Path::new(dir.trim());
        let resolved = dir.canonicalize().map_err(|e| {
            format!("'{spec}': cannot use the directory {}: {e}; create it or fix the path", dir.display())
        })?;
        if !resolved.is_dir() {
            return Err(format!("'{spec}': {} is not a directory", dir.display()));
        }
        Ok(StaticMount { prefix: prefix.to_string(), dir: resolved })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogConfig {
    pub level: crate::log::Level,
    pub access_log: bool,
    pub access_log_format: String,
}

impl Config {
    /// Human-readable URL of each listener, for the startup lines.
    pub fn describe_bind(spec: &BindSpec) -> String {
        match spec {
            BindSpec::Tcp { host, port } if host.contains(':') => format!("http://[{host}]:{port}"),
            BindSpec::Tcp { host, port } => format!("http://{host}:{port}"),
            BindSpec::Unix { path, .. } => format!("unix:{}", path.display()),
            BindSpec::Fd { fd } => format!("fd://{fd}"),
        }
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
