//! The command line. Flag names and meanings follow uvicorn's (and gunicorn's
//! where uvicorn has none), so `uvicorn main:app ...` becomes
//! `ferrogate main:app ...` with nothing else changed.

use super::*;
use clap::Parser;

const ABOUT: &str = "Serve a Python ASGI application (FastAPI, Starlette, Django, ...) in production.

ferrogate is the master process, the worker supervisor and the HTTP server in one
program: it binds the listeners, starts one Python worker per CPU core, replaces
workers that die or hang, reloads code without dropping requests on SIGHUP, and
stops gracefully on SIGTERM.";

const AFTER_HELP: &str = "Examples:
  ferrogate main:app                          serve main.py's `app` on 127.0.0.1:8000
  ferrogate main:app --host 0.0.0.0 --workers 4
  ferrogate main:app --uds /run/app.sock      listen on a unix socket
  ferrogate main:app --reload                 restart on code changes (development)
  ferrogate main:app --static /static=static  serve ./static at /static, without Python

Signals (to the master):
  TERM, INT   stop accepting, finish in-flight requests, run lifespan shutdown, exit 0
  HUP         rolling restart: new workers load the new code, old ones drain
  TTIN, TTOU  one worker more, one worker fewer

Every option can also be set in the environment: --workers 4 is FERROGATE_WORKERS=4.";

#[derive(Parser, Debug)]
#[command(name = "ferrogate", version, about = ABOUT, after_help = AFTER_HELP, max_term_width = 100, allow_negative_numbers = true)]
pub struct Cli {
    /// The application, as MODULE:ATTRIBUTE (e.g. main:app, or pkg.api:create_app with --factory).
    #[arg(value_name = "APP", env = "FERROGATE_APP")]
    pub app: String,

    /// Treat APP as a function that takes no argument and returns the ASGI application.
    #[arg(long, env = "FERROGATE_FACTORY", help_heading = "Application")]
    pub factory: bool,

    /// Directory put first on sys.path before importing APP.
    #[arg(long, default_value = ".", value_name = "DIR", env = "FERROGATE_APP_DIR", help_heading = "Application")]
    pub app_dir: PathBuf,

    /// Lifespan events: auto runs them if the app supports them.
    #[arg(long, value_enum, default_value = "auto", env = "FERROGATE_LIFESPAN", help_heading = "Application")]
    pub lifespan: LifespanMode,

    /// ASGI root_path, for an app mounted below a path prefix by a proxy.
    #[arg(long, default_value = "", value_name = "PATH", env = "FERROGATE_ROOT_PATH", help_heading = "Application")]
    pub root_path: String,

    /// Load environment variables from this file (KEY=VALUE lines) before starting workers.
    #[arg(long, value_name = "FILE", env = "FERROGATE_ENV_FILE", help_heading = "Application")]
    pub env_file: Option<PathBuf>,

    /// Address to listen on; 0.0.0.0 for every IPv4 interface, :: for IPv6.
    #[arg(long, default_value = "127.0.0.1", env = "FERROGATE_HOST", help_heading = "Listening")]
    pub host: String,

    /// TCP port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8000, env = "FERROGATE_PORT", help_heading = "Listening")]
    pub port: u16,

    /// Listen on this unix domain socket instead of host:port.
    #[arg(long, value_name = "PATH", env = "FERROGATE_UDS", help_heading = "Listening")]
    pub uds: Option<PathBuf>,

    /// Permissions of the --uds socket file, in octal (e.g. 660 to let a group's proxy connect).
    #[arg(long, value_name = "MODE", value_parser = parse_octal_mode, env = "FERROGATE_UDS_MODE", help_heading = "Listening")]
    pub uds_mode: Option<u32>,

    /// Listen on an already-open socket: this file descriptor number.
    #[arg(long, value_name = "N", env = "FERROGATE_FD", help_heading = "Listening")]
    pub fd: Option<i32>,

    /// More listeners, repeatable: HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N.
    #[arg(long, value_name = "ADDRESS", env = "FERROGATE_BIND", value_delimiter = ',', help_heading = "Listening")]
    pub bind: Vec<String>,

    /// Length of the kernel's queue of connections not yet accepted.
    #[arg(long, default_value_t = 2048, env = "FERROGATE_BACKLOG", help_heading = "Listening")]
    pub backlog: u32,

    /// Number of worker processes [default: the number of CPU cores].
    #[arg(long, value_name = "N", env = "FERROGATE_WORKERS", help_heading = "Workers")]
    pub workers: Option<usize>,

    /// Seconds a worker's event loop may stay unresponsive before it is replaced (its Python stack is logged).
    #[arg(long, default_value_t = 30, value_name = "SECONDS", env = "FERROGATE_TIMEOUT", help_heading = "Workers")]
    pub timeout: u64,

    /// Seconds in-flight requests get to finish on shutdown or reload.
    #[arg(long, visible_alias = "graceful-timeout", default_value_t = 30, value_name = "SECONDS", env = "FERROGATE_TIMEOUT_GRACEFUL_SHUTDOWN", help_heading = "Workers")]
    pub timeout_graceful_shutdown: u64,

    /// Replace a worker after it has served this many requests (0: never).
    #[arg(long, visible_alias = "max-requests", default_value_t = 0, value_name = "N", env = "FERROGATE_LIMIT_MAX_REQUESTS", help_heading = "Workers")]
    pub limit_max_requests: u64,

    /// Add up to this many requests at random to each worker's limit, so workers don't all restart at once.
    #[arg(long, default_value_t = 0, value_name = "N", env = "FERROGATE_MAX_REQUESTS_JITTER", help_heading = "Workers")]
    pub max_requests_jitter: u64,

    /// Restart workers when a .py file changes (development only).
    #[arg(long, env = "FERROGATE_RELOAD", help_heading = "Workers")]
    pub reload: bool,

    /// Directories watched by --reload [default: --app-dir].
    #[arg(long, value_name = "DIR", env = "FERROGATE_RELOAD_DIR", value_delimiter = ',', help_heading = "Workers")]
    pub reload_dir: Vec<PathBuf>,

    /// Also reload when a file matching this pattern changes (repeatable; default *.py).
    #[arg(long, value_name = "GLOB", env = "FERROGATE_RELOAD_INCLUDE", help_heading = "Workers")]
    pub reload_include: Vec<String>,

    /// Never reload for files matching this pattern (repeatable; e.g. *_test.py).
    #[arg(long, value_name = "GLOB", env = "FERROGATE_RELOAD_EXCLUDE", help_heading = "Workers")]
    pub reload_exclude: Vec<String>,

    /// Seconds between checks for changed files under --reload.
    #[arg(long, default_value_t = 0.5, value_name = "SECONDS", env = "FERROGATE_RELOAD_DELAY", help_heading = "Workers")]
    pub reload_delay: f64,

    /// Event loop for the app: auto picks uvloop when it is installed.
    #[arg(long = "loop", value_enum, default_value = "auto", env = "FERROGATE_LOOP", help_heading = "Application")]
    pub event_loop: LoopChoice,

    /// ASGI interface of the app; only ASGI 3 is served (auto and asgi3 mean the same).
    #[arg(long, default_value = "auto", value_parser = ["auto", "asgi3", "asgi2", "wsgi"], env = "FERROGATE_INTERFACE", help_heading = "Application")]
    pub interface: String,

    /// Accepted for uvicorn compatibility and ignored: ferrogate's HTTP parser is in Rust.
    #[arg(long, default_value = "auto", value_parser = ["auto", "h11", "httptools"], env = "FERROGATE_HTTP", help_heading = "HTTP")]
    pub http: String,

    /// Same as --max-header-size (uvicorn's name for the h11 limit).
    #[arg(long, value_name = "BYTES", help_heading = "HTTP", hide_short_help = true)]
    pub h11_max_incomplete_event_size: Option<usize>,

    /// WebSocket support: none hands upgrade requests to the app as plain HTTP; the others mean on.
    #[arg(long, default_value = "auto", value_parser = ["auto", "none", "websockets", "websockets-sansio", "wsproto"], env = "FERROGATE_WS", help_heading = "WebSocket")]
    pub ws: String,

    /// Messages received but not yet read by the app, per WebSocket, before the server stops reading.
    #[arg(long, default_value_t = 32, value_name = "N", env = "FERROGATE_WS_MAX_QUEUE", help_heading = "WebSocket")]
    pub ws_max_queue: usize,

    /// Accepted for uvicorn compatibility and ignored: ferrogate logs lines of its own format (see --access-log-format).
    #[arg(long, value_name = "FILE", env = "FERROGATE_LOG_CONFIG", help_heading = "Logging")]
    pub log_config: Option<PathBuf>,

    /// Accepted for uvicorn compatibility; ferrogate's logs have no colors.
    #[arg(long, overrides_with = "no_use_colors", help_heading = "Logging", hide_short_help = true)]
    pub use_colors: bool,
    #[arg(long, help_heading = "Logging", hide = true)]
    pub no_use_colors: bool,

    /// uvicorn's TLS options are refused rather than ignored: HTTPS is not built in yet.
    #[arg(long, value_name = "FILE", help_heading = "TLS", hide_short_help = true)]
    pub ssl_keyfile: Option<String>,
    #[arg(long, value_name = "FILE", help_heading = "TLS", hide = true)]
    pub ssl_certfile: Option<String>,
    #[arg(long, value_name = "PASSWORD", help_heading = "TLS", hide = true)]
    pub ssl_keyfile_password: Option<String>,
    #[arg(long, value_name = "N", help_heading = "TLS", hide = true)]
    pub ssl_version: Option<String>,
    #[arg(long, value_name = "N", help_heading = "TLS", hide = true)]
    pub ssl_cert_reqs: Option<String>,
    #[arg(long, value_name = "FILE", help_heading = "TLS", hide = true)]
    pub ssl_ca_certs: Option<String>,
    #[arg(long, value_name = "CIPHERS", help_heading = "TLS", hide = true)]
    pub ssl_ciphers: Option<String>,

    /// Close idle keep-alive connections after this many seconds.
    #[arg(long, default_value_t = 5, value_name = "SECONDS", env = "FERROGATE_TIMEOUT_KEEP_ALIVE", help_heading = "HTTP")]
    pub timeout_keep_alive: u64,

    /// Close a connection whose request body stops arriving, or that stops reading the
    /// response, for this long (nginx's client_body_timeout and send_timeout).
    #[arg(long, default_value_t = 60, value_name = "SECONDS", env = "FERROGATE_TIMEOUT_IO", help_heading = "HTTP")]
    pub timeout_io: u64,

    /// Answer 503 once a worker is serving this many requests at once.
    #[arg(long, value_name = "N", env = "FERROGATE_LIMIT_CONCURRENCY", help_heading = "HTTP")]
    pub limit_concurrency: Option<usize>,

    /// Largest request head (request line and headers) in bytes; larger gets 431.
    #[arg(long, default_value_t = 65536, value_name = "BYTES", env = "FERROGATE_MAX_HEADER_SIZE", help_heading = "HTTP")]
    pub max_header_size: usize,

    /// Most request headers accepted; more gets 431.
    #[arg(long, default_value_t = 100, value_name = "N", env = "FERROGATE_MAX_HEADERS", help_heading = "HTTP")]
    pub max_headers: usize,

    /// Add a header to every response, as NAME:VALUE (repeatable).
    #[arg(long, value_name = "NAME:VALUE", env = "FERROGATE_HEADER", help_heading = "HTTP")]
    pub header: Vec<String>,

    /// Send `server: ferrogate` in responses.
    #[arg(long, overrides_with = "no_server_header", default_value_t = true, env = "FERROGATE_SERVER_HEADER", help_heading = "HTTP", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub server_header: bool,
    #[arg(long, help_heading = "HTTP", hide = true)]
    pub no_server_header: bool,

    /// Serve the files under DIR at URL_PATH, e.g. /static=./static (repeatable). The server
    /// answers these itself, without Python: GET and HEAD, ETag and Last-Modified with 304s,
    /// byte ranges; hidden files (.env, .git) and paths leaving DIR are never served.
    #[arg(long = "static", value_name = "URL_PATH=DIR", env = "FERROGATE_STATIC", value_delimiter = ',', help_heading = "Static files")]
    pub static_mounts: Vec<String>,

    /// Let browsers cache static files for this long (Cache-Control: public, max-age=SECONDS).
    #[arg(long, value_name = "SECONDS", env = "FERROGATE_STATIC_MAX_AGE", help_heading = "Static files")]
    pub static_max_age: Option<u64>,

    /// Send a `date` header in responses.
    #[arg(long, overrides_with = "no_date_header", default_value_t = true, env = "FERROGATE_DATE_HEADER", help_heading = "HTTP", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub date_header: bool,
    #[arg(long, help_heading = "HTTP", hide = true)]
    pub no_date_header: bool,

    /// Trust X-Forwarded-For and X-Forwarded-Proto from --forwarded-allow-ips.
    #[arg(long, overrides_with = "no_proxy_headers", default_value_t = true, env = "FERROGATE_PROXY_HEADERS", help_heading = "Proxy", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub proxy_headers: bool,
    #[arg(long, help_heading = "Proxy", hide = true)]
    pub no_proxy_headers: bool,

    /// Comma-separated addresses or networks whose X-Forwarded-* headers are trusted; * trusts all.
    /// Unix-socket peers are always trusted. Also read from FORWARDED_ALLOW_IPS, as uvicorn does.
    /// [default: 127.0.0.1,::1]
    #[arg(long, value_name = "IPS", env = "FERROGATE_FORWARDED_ALLOW_IPS", help_heading = "Proxy")]
    pub forwarded_allow_ips: Option<String>,

    /// Largest WebSocket message accepted, in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024, value_name = "BYTES", env = "FERROGATE_WS_MAX_SIZE", help_heading = "WebSocket")]
    pub ws_max_size: usize,

    /// Seconds between pings sent to WebSocket clients (0 disables).
    #[arg(long, default_value_t = 20.0, value_name = "SECONDS", env = "FERROGATE_WS_PING_INTERVAL", help_heading = "WebSocket")]
    pub ws_ping_interval: f64,

    /// Seconds to wait for a pong before closing the connection.
    #[arg(long, default_value_t = 20.0, value_name = "SECONDS", env = "FERROGATE_WS_PING_TIMEOUT", help_heading = "WebSocket")]
    pub ws_ping_timeout: f64,

    /// Negotiate permessage-deflate compression with WebSocket clients.
    #[arg(long, default_value_t = true, env = "FERROGATE_WS_PER_MESSAGE_DEFLATE", help_heading = "WebSocket", action = clap::ArgAction::Set, value_name = "BOOL")]
    pub ws_per_message_deflate: bool,

    /// Least severe messages logged.
    #[arg(long, value_enum, default_value = "info", env = "FERROGATE_LOG_LEVEL", help_heading = "Logging")]
    pub log_level: crate::log::Level,

    /// Log every request (nginx "combined" format plus the request time).
    #[arg(long, overrides_with = "no_access_log", default_value_t = true, env = "FERROGATE_ACCESS_LOG", help_heading = "Logging", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub access_log: bool,
    #[arg(long, help_heading = "Logging", hide = true)]
    pub no_access_log: bool,

    /// Access log line, with nginx-style variables: $remote_addr $remote_user $time_local $request
    /// $status $body_bytes_sent $http_referer $http_user_agent $request_time $request_method $uri
    /// $server_protocol $pid.
    #[arg(long, default_value = super::access_log_format::COMBINED_WITH_TIME, value_name = "FORMAT", env = "FERROGATE_ACCESS_LOG_FORMAT", help_heading = "Logging")]
    pub access_log_format: String,
}

fn parse_octal_mode(s: &str) -> Result<u32, String> {
    let digits = s.trim_start_matches("0o");
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("'{s}' is not an octal file mode; write e.g. 660 or 0o600"))
}

/// Parses one --bind value.
pub fn parse_bind(s: &str) -> Result<BindSpec, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        return Ok(BindSpec::Unix { path: path.into(), mode: None });
    }
    if let Some(n) = s.strip_prefix("fd://") {
        let fd = n.parse().map_err(|_| format!("'{s}': write fd://N with N a file descriptor number"))?;
        return Ok(BindSpec::Fd { fd });
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("'{s}': write HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N"))?;
    let port = port.parse().map_err(|_| format!("'{s}': '{port}' is not a port number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    Ok(BindSpec::Tcp { host, port })
}

impl Cli {
    /// Turns the parsed flags into the typed configuration, or says which flag is wrong and how to fix it.
    pub fn into_config(self) -> Result<Config, String> {
        let mut bind = Vec::new();
        if let Some(path) = &self.uds {
            bind.push(BindSpec::Unix { path: path.clone(), mode: self.uds_mode });
        }
        if let Some(fd) = self.fd {
            bind.push(BindSpec::Fd { fd });
        }
        for b in &self.bind {
            bind.push(parse_bind(b).map_err(|e| format!("--bind {e}"))?);
        }
        for fd in systemd_listen_fds() {
            bind.push(BindSpec::Fd { fd });
        }
        if bind.is_empty() {
            bind.push(BindSpec::Tcp { host: self.host.clone(), port: self.port });
        }

        if !self.app.contains(':') {
            return Err(format!(
                "APP '{}' must be MODULE:ATTRIBUTE, e.g. main:app for the variable `app` in main.py",
                self.app
            ));
        }
        let workers = self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        });
        if workers == 0 {
            return Err("--workers must be at least 1".into());
        }
        let mut default_headers = Vec::new();
        for h in &self.header {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| format!("--header '{h}' must be NAME:VALUE, e.g. x-frame-options:DENY"))?;
            http::HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("--header '{h}': '{name}' is not a valid header name"))?;
            http::HeaderValue::from_str(value.trim())
                .map_err(|_| format!("--header '{h}': the value has characters a header cannot carry"))?;
            default_headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        let allow_ips = self
            .forwarded_allow_ips
            .clone()
            .or_else(|| std::env::var("FORWARDED_ALLOW_IPS").ok())
            .unwrap_or_else(|| "127.0.0.1,::1".into());
        let trusted = TrustedPeers::parse(&allow_ips)
            .map_err(|e| format!("--forwarded-allow-ips: {e}"))?;
        super::access_log_format::Format::parse(&self.access_log_format)
            .map_err(|e| format!("--access-log-format: {e}"))?;
        let tls_flag = [
            ("--ssl-keyfile", self.ssl_keyfile.is_some()),
            ("--ssl-certfile", self.ssl_certfile.is_some()),
            ("--ssl-keyfile-password", self.ssl_keyfile_password.is_some()),
            ("--ssl-version", self.ssl_version.is_some()),
            ("--ssl-cert-reqs", self.ssl_cert_reqs.is_some()),
            ("--ssl-ca-certs", self.ssl_ca_certs.is_some()),
            ("--ssl-ciphers", self.ssl_ciphers.is_some()),
        ]
        .into_iter()
        .find(|(_, given)| *given);
        if let Some((flag, _)) = tls_flag {
            return Err(format!(
                "{flag}: HTTPS is not built into ferrogate yet; terminate TLS in a proxy in front of it for now \
                 (serving plain HTTP when TLS was asked for would be worse than not starting)"
            ));
        }
        if matches!(self.interface.as_str(), "asgi2" | "wsgi") {
            return Err(format!("--interface {}: only ASGI 3 applications are served for now", self.interface));
        }
        if self.log_config.is_some() {
            eprintln!("warning: --log-config is ignored: ferrogate writes its own log lines (see --access-log-format and --log-level)");
        }
        let max_header_size = self.h11_max_incomplete_event_size.unwrap_or(usize::MAX).min(self.max_header_size);
        if max_header_size < 8192 {
            return Err("--max-header-size must be at least 8192 bytes".into());
        }
        let mut mounts: Vec<StaticMount> = Vec::new();
        for spec in &self.static_mounts {
            let mount = StaticMount::parse(spec).map_err(|e| format!("--static {e}"))?;
            if mounts.iter().any(|m| m.prefix == mount.prefix) {
                return Err(format!("--static: {} is mounted twice; give each URL path one directory", mount.prefix));
            }
            mounts.push(mount);
        }
        let positive = |v: f64| if v > 0.0 { Some(v) } else { None };
        let reload_dirs = if self.reload_dir.is_empty() { vec![self.app_dir.clone()] } else { self.reload_dir };

        Ok(Config {
            app: AppConfig {
                target: self.app,
                factory: self.factory,
                app_dir: self.app_dir,
                lifespan: self.lifespan,
                root_path: self.root_path,
                event_loop: self.event_loop,
            },
            bind,
            backlog: self.backlog,
            workers: WorkersConfig {
                count: workers,
                timeout: self.timeout.max(2),
                graceful_timeout: self.timeout_graceful_shutdown,
                max_requests: self.limit_max_requests,
                max_requests_jitter: self.max_requests_jitter,
                reload: self.reload,
                reload_dirs,
                reload_include: if self.reload_include.is_empty() { vec!["*.py".into()] } else { self.reload_include },
                reload_exclude: self.reload_exclude,
                reload_delay: self.reload_delay.max(0.05),
            },
            http: HttpConfig {
                keep_alive_timeout: self.timeout_keep_alive.max(1),
                io_timeout: self.timeout_io.max(1),
                limit_concurrency: self.limit_concurrency,
                max_header_size,
                max_headers: self.max_headers,
                server_header: self.server_header && !self.no_server_header,
                date_header: self.date_header && !self.no_date_header,
                default_headers,
            },
            proxy: ProxyConfig { enabled: self.proxy_headers && !self.no_proxy_headers, trusted },
            ws: WsConfig {
                enabled: self.ws != "none",
                max_size: self.ws_max_size,
                max_queue: self.ws_max_queue.max(1),
                ping_interval: positive(self.ws_ping_interval),
                ping_timeout: positive(self.ws_ping_timeout),
                per_message_deflate: self.ws_per_message_deflate,
            },
            statics: StaticConfig { mounts, max_age: self.static_max_age },
            log: LogConfig {
                level: self.log_level,
                access_log: self.access_log && !self.no_access_log,
                access_log_format: self.access_log_format,
            },
        })
    }
}

/// Sockets handed to us by systemd socket activation (sd_listen_fds(3)).
fn systemd_listen_fds() -> Vec<i32> {
    let ours = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let n = std::env::var("LISTEN_FDS").ok().and_then(|n| n.parse::<i32>().ok()).unwrap_or(0);
    if !ours || n <= 0 {
        return Vec::new();
    }
    // Unset so that workers, and whatever the app spawns, do not claim them again.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    (3..3 + n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["ferrogate"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map_err(|e| e.to_string())?.into_config()
    }

    #[test]
    fn uvicorn_style_flags_map_onto_config() {
        let c = cli(&["main:app", "--host", "0.0.0.0", "--port", "9000", "--workers", "3", "--no-access-log", "--no-server-header"]).unwrap();
        assert_eq!(c.bind, vec![BindSpec::Tcp { host: "0.0.0.0".into(), port: 9000 }]);
        assert_eq!(c.workers.count, 3);
        assert!(!c.log.access_log);
        assert!(!c.http.server_header);
        assert!(c.proxy.enabled);
    }

    #[test]
    fn binds_combine_uds_fd_and_bind() {
        let c = cli(&["main:app", "--uds", "/tmp/a.sock", "--uds-mode", "660", "--bind", "[::1]:81,unix:/tmp/b.sock"]).unwrap();
        assert_eq!(c.bind[0], BindSpec::Unix { path: "/tmp/a.sock".into(), mode: Some(0o660) });
        assert_eq!(c.bind[1], BindSpec::Tcp { host: "::1".into(), port: 81 });
        assert_eq!(c.bind[2], BindSpec::Unix { path: "/tmp/b.sock".into(), mode: None });
    }

    #[test]
    fn bad_values_say_how_to_fix_them() {
        assert!(cli(&["main"]).unwrap_err().contains("MODULE:ATTRIBUTE"));
        assert!(cli(&["m:a", "--header", "nocolon"]).unwrap_err().contains("NAME:VALUE"));
        assert!(cli(&["m:a", "--uds-mode", "999"]).unwrap_err().contains("octal"));
        assert!(cli(&["m:a", "--bind", "nowhere"]).unwrap_err().contains("HOST:PORT"));
        assert!(cli(&["m:a", "--workers", "0"]).unwrap_err().contains("at least 1"));
    }
}
