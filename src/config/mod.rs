//! The one typed configuration every part of ferrogate reads.
//!
//! It is built once in the master, in layers of rising priority:
//! `Config::default()` < the TOML file (`file.rs`: ./ferrogate.toml or --config,
//! its values read by the command line's own parsers in `file_values.rs`) <
//! FERROGATE_* environment variables (`env.rs`) < the command line (`cli.rs`).
//! Each source yields a `Layer` of the options it sets (`layer.rs`), kept apart
//! in `Sources` (`sources.rs`) so that `ferrogate config` can say where each
//! value came from and errors can name the file's line; the stacked layer
//! becomes a `Config` and `Config::validate` checks it (`resolve.rs`). Each
//! worker gets the result as a single serialized value, so a worker never
//! re-parses flags and can never disagree with its master. Fields marked
//! `#[serde(skip)]` are the master's alone: they are not sent, a worker finds
//! them zero or empty and must not read them.

pub mod access_log_format;
mod cli;
mod cli_front;
mod env;
mod env_file;
mod file;
#[cfg(test)]
mod file_tests;
mod file_values;
pub mod front;
mod layer;
#[cfg(test)]
mod layer_tests;
mod resolve;
mod resolve_front;
mod sources;
mod trusted;
pub mod tls;

pub use cli::{Cli, help_command};
pub use env::{ENV_VARS, EnvLayer};
pub use env_file::load_env_file;
pub use file::{DEFAULT_FILE, FileEntry, FileError, FileLayer};
pub use file_values::{Kind as ValueKind, key_of, kind as value_kind};
pub use layer::{Layer, gather, gather_without_app};
pub use trusted::TrustedPeers;
pub use sources::{Origin, Sources, default_value, gather_sources, options};

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The listener used when none is asked for.
pub const DEFAULT_HOST: &str = "127.0.0.1";
pub const DEFAULT_PORT: u16 = 8000;
/// Peers whose X-Forwarded-* headers are trusted by default, as `--forwarded-allow-ips` spells them.
pub const DEFAULT_FORWARDED_ALLOW_IPS: &str = "127.0.0.1,::1";
/// Smallest --max-header-size: below this, ordinary browsers' requests would get 431.
pub const MIN_HEADER_SIZE: usize = 8192;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    pub app: AppConfig,
    pub bind: Vec<BindSpec>,
    /// Whether each listener of `bind` (same index) speaks TLS.
    pub bind_tls: Vec<bool>,
    /// HTTPS settings; None when no listener speaks TLS.
    pub tls: Option<tls::TlsConfig>,
    /// Master-only: the listeners are bound before any worker starts.
    #[serde(skip)]
    pub backlog: u32,
    pub workers: WorkersConfig,
    pub http: HttpConfig,
    pub proxy: ProxyConfig,
    pub ws: WsConfig,
    pub statics: StaticConfig,
    pub log: LogConfig,
    /// How the server runs as a service: its account, files, control socket, recycling.
    pub service: ServiceConfig,
    /// What the front does before the app: body limits, compression, server names,
    /// the PROXY protocol, rate limits, bans, its own error pages.
    pub front: front::FrontConfig,
    /// Master-only: how a worker's environment differs from the master's.
    #[serde(skip)]
    pub worker_env: WorkerEnv,
}

/// Applied to each worker's command when it is spawned, so the master never changes its
/// own environment (a threaded process must not call setenv, and a reload or a respawn
/// starts from the same inherited environment every time).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerEnv {
    /// Variables from --env-file, in file order (a later line wins).
    pub set: Vec<(String, String)>,
    /// Inherited variables the workers must not see (systemd's LISTEN_* once we took the sockets).
    pub unset: Vec<String>,
}

/// A setting that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The option to fix, as written on the command line: "--workers", "APP".
    pub option: &'static str,
    /// The whole message: it names the option and says how to fix the value.
    pub message: String,
}

impl ConfigError {
    pub fn new(option: &'static str, message: impl Into<String>) -> Self {
        ConfigError { option, message: message.into() }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

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

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LoopChoice {
    /// uvloop when installed, else asyncio.
    #[default]
    Auto,
    Asyncio,
    Uvloop,
}

/// --io-mode: where each worker's network I/O runs, as asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum IoMode {
    /// loop when there are at least as many workers as cores, else thread.
    #[default]
    Auto,
    /// a thread of its own beside the event loop: one worker can use more than one core.
    Thread,
    /// the event loop's own thread, in turns between the app's callbacks: no hand-offs
    /// between threads, less CPU per request.
    Loop,
}

/// Where each worker's network I/O runs: --io-mode once `auto` is decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoPlace {
    /// A thread of its own beside the event loop: a worker can use more than one core.
    Thread,
    /// The event loop's thread, in turns between the app's callbacks: one thread, no
    /// hand-offs between threads, the least CPU per request.
    Loop,
}

impl IoMode {
    pub fn place(self, workers: usize) -> IoPlace {
        match self {
            IoMode::Thread => IoPlace::Thread,
            IoMode::Loop => IoPlace::Loop,
            // With a worker per core there is no spare core for a second thread to use.
            IoMode::Auto if workers >= cores() => IoPlace::Loop,
            IoMode::Auto => IoPlace::Thread,
        }
    }
}

/// The cores this process may run on (its affinity and cgroup quota count).
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LifespanMode {
    /// Run lifespan events if the app supports them; carry on if it raises at once.
    #[default]
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

/// How many workers and how they are watched. The master alone counts, times and reloads
/// them; a worker reads only what it applies to itself (its graceful timeout, its request limit).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkersConfig {
    #[serde(skip)]
    pub count: usize,
    /// Seconds a worker's event loop may go without answering before it is replaced.
    #[serde(skip)]
    pub timeout: u64,
    /// Seconds in-flight requests get to finish on stop or reload.
    pub graceful_timeout: u64,
    /// Recycle a worker after this many requests (0: never).
    pub max_requests: u64,
    pub max_requests_jitter: u64,
    #[serde(skip)]
    pub reload: bool,
    #[serde(skip)]
    pub reload_dirs: Vec<PathBuf>,
    /// File-name patterns (`*` wildcards) that trigger a reload, and those that never do.
    #[serde(skip)]
    pub reload_include: Vec<String>,
    #[serde(skip)]
    pub reload_exclude: Vec<String>,
    #[serde(skip)]
    pub reload_delay: f64,
    /// --io-mode, decided.
    pub io: IoPlace,
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
    /// Which HTTP versions the listeners speak.
    pub protocols: Protocols,
    pub h2_max_concurrent_streams: u32,
}

/// The HTTP versions a server speaks (--http).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocols {
    /// HTTP/1.1 and HTTP/2: h2 by ALPN over TLS, h2c by prior knowledge in cleartext.
    Auto,
    H1,
    H2,
}

impl Protocols {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "auto" => Some(Protocols::Auto),
            // uvicorn's HTTP/1.1 implementations: uvicorn speaks nothing else.
            "h1" | "h11" | "httptools" => Some(Protocols::H1),
            "h2" => Some(Protocols::H2),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocols::Auto => "auto",
            Protocols::H1 => "h1",
            Protocols::H2 => "h2",
        }
    }

    pub fn h1(self) -> bool {
        self != Protocols::H2
    }

    pub fn h2(self) -> bool {
        self != Protocols::H1
    }

    /// What a TLS listener offers in ALPN, preferred first.
    pub fn alpn(self) -> Vec<Vec<u8>> {
        let mut offered = Vec::new();
        if self.h2() {
            offered.push(b"h2".to_vec());
        }
        if self.h1() {
            offered.push(b"http/1.1".to_vec());
        }
        offered
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProxyConfig {
    pub enabled: bool,
    pub trusted: TrustedPeers,
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

/// --log-level, lowest first (the logger compares and prints them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warning = 3,
    Error = 4,
    Critical = 5,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogConfig {
    pub level: LogLevel,
    pub access_log: bool,
    pub access_log_format: String,
    /// The server's log; None: stderr.
    pub file: Option<PathBuf>,
    /// The access log; None: wherever the server's log goes; Stdout for `-`.
    pub access_file: Option<LogTarget>,
    pub format: LogFormat,
}

/// Where a log other than the server's own goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogTarget {
    Stdout,
    File(PathBuf),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// gunicorn's error-log lines and nginx's access-log lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Running as a service: the account the processes run as, the files the master keeps,
/// the control socket and worker recycling. The master's alone but for `name`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServiceConfig {
    /// In ps titles: `ferrogate: worker 2 [NAME]`.
    pub name: String,
    #[serde(skip)]
    pub user: Option<String>,
    #[serde(skip)]
    pub group: Option<String>,
    #[serde(skip)]
    pub umask: Option<u32>,
    #[serde(skip)]
    pub pid_file: Option<PathBuf>,
    #[serde(skip)]
    pub control_socket: PathBuf,
    /// RSS in bytes past which a worker is replaced.
    #[serde(skip)]
    pub max_worker_memory: Option<u64>,
    #[serde(skip)]
    pub max_worker_lifetime: Option<std::time::Duration>,
    /// The TOML file read, if any.
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
}

/// Permissions of a unix socket listener when none are asked for: anyone local may
/// connect, as with uvicorn (chmod 666) and gunicorn (umask 0), so that a proxy running
/// as another user (nginx's www-data) can. --uds-mode 660 with --group is the tighter choice.
pub const DEFAULT_UDS_MODE: u32 = 0o666;

/// The control socket's default path: systemd's RuntimeDirectory= when it gave one,
/// /run/ferrogate as root, else the user's runtime directory, else /tmp.
pub fn default_control_socket(is_root: bool, runtime_directory: Option<PathBuf>, xdg_runtime_dir: Option<PathBuf>, uid: u32) -> PathBuf {
    let dir = match (runtime_directory.filter(|p| p.is_absolute()), xdg_runtime_dir.filter(|p| p.is_absolute())) {
        (Some(dir), _) => dir,
        (None, _) if is_root => PathBuf::from("/run/ferrogate"),
        (None, Some(xdg)) => xdg.join("ferrogate"),
        (None, None) => PathBuf::from(format!("/tmp/ferrogate-{uid}")),
    };
    dir.join("control.sock")
}

// The defaults, in one place: the command line's help shows them (cli.rs) and every
// layer starts from them.

impl Default for Config {
    fn default() -> Self {
        Config {
            app: AppConfig::default(),
            bind: vec![BindSpec::Tcp { host: DEFAULT_HOST.into(), port: DEFAULT_PORT }],
            bind_tls: vec![false],
            tls: None,
            backlog: 2048,
            workers: WorkersConfig::default(),
            http: HttpConfig::default(),
            proxy: ProxyConfig::default(),
            ws: WsConfig::default(),
            statics: StaticConfig::default(),
            log: LogConfig::default(),
            service: ServiceConfig::default(),
            front: front::FrontConfig::default(),
            worker_env: WorkerEnv::default(),
        }
    }
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            // No default app: the command line requires one (or FERROGATE_APP).
            target: String::new(),
            factory: false,
            app_dir: PathBuf::from("."),
            lifespan: LifespanMode::Auto,
            root_path: String::new(),
            event_loop: LoopChoice::Auto,
        }
    }
}

impl Default for WorkersConfig {
    fn default() -> Self {
        WorkersConfig {
            // One worker per core the process may run on (its affinity mask, as uvicorn's nproc).
            count: cores(),
            timeout: 30,
            graceful_timeout: 30,
            max_requests: 0,
            max_requests_jitter: 0,
            reload: false,
            // --app-dir's default; resolve.rs follows --app-dir when no --reload-dir is given.
            reload_dirs: vec![PathBuf::from(".")],
            reload_include: vec!["*.py".into()],
            reload_exclude: Vec::new(),
            reload_delay: 0.5,
            // A worker per core, so auto's choice.
            io: IoPlace::Loop,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            keep_alive_timeout: 5,
            io_timeout: 60,
            limit_concurrency: None,
            max_header_size: 64 * 1024,
            max_headers: 100,
            server_header: true,
            date_header: true,
            default_headers: Vec::new(),
            protocols: Protocols::Auto,
            // nginx's http2_max_concurrent_streams and the h2 crate's advice alike.
            h2_max_concurrent_streams: 100,
        }
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        let trusted = TrustedPeers::parse(DEFAULT_FORWARDED_ALLOW_IPS).expect("the default addresses parse");
        ProxyConfig { enabled: true, trusted }
    }
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            enabled: true,
            max_size: 16 * 1024 * 1024,
            max_queue: 32,
            ping_interval: Some(20.0),
            ping_timeout: Some(20.0),
            per_message_deflate: true,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: LogLevel::Info,
            access_log: true,
            access_log_format: access_log_format::COMBINED_WITH_TIME.into(),
            file: None,
            access_file: None,
            format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Checks what the types cannot say, once every layer is applied. Each error names the
    /// option to fix; when several are wrong, the first found is reported.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.app.target.contains(':') {
            return Err(ConfigError::new("APP", format!(
                "APP '{}' must be MODULE:ATTRIBUTE, e.g. main:app for the variable `app` in main.py",
                self.app.target
            )));
        }
        if self.workers.count == 0 {
            return Err(ConfigError::new("--workers", "--workers must be at least 1"));
        }
        if let Err(e) = access_log_format::Format::parse(&self.log.access_log_format) {
            return Err(ConfigError::new("--access-log-format", format!("--access-log-format: {e}")));
        }
        if self.http.max_header_size < MIN_HEADER_SIZE {
            return Err(ConfigError::new(
                "--max-header-size",
                format!("--max-header-size must be at least {MIN_HEADER_SIZE} bytes"),
            ));
        }
        let mounts = &self.statics.mounts;
        if let Some(twice) = mounts.iter().enumerate().find(|(i, m)| mounts[..*i].iter().any(|o| o.prefix == m.prefix)) {
            return Err(ConfigError::new("--static", format!(
                "--static: {} is mounted twice; give each URL path one directory",
                twice.1.prefix
            )));
        }
        Ok(())
    }

    /// Human-readable URL of each listener, for the startup lines.
    pub fn describe_bind(spec: &BindSpec, secure: bool) -> String {
        let scheme = if secure { "https" } else { "http" };
        match spec {
            BindSpec::Tcp { host, port } if host.contains(':') => format!("{scheme}://[{host}]:{port}"),
            BindSpec::Tcp { host, port } => format!("{scheme}://{host}:{port}"),
            BindSpec::Unix { path, .. } => format!("unix:{}", path.display()),
            BindSpec::Fd { fd } => format!("fd://{fd}"),
        }
    }
}
