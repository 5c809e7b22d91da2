//! The command line. Flag names and meanings follow uvicorn's (and gunicorn's
//! where uvicorn has none), so `uvicorn main:app ...` becomes
//! `ferrogate main:app ...` with nothing else changed.
//!
//! The flags carry no defaults and read no environment: an option left out is None, so
//! the layers (layer.rs) can tell "given" from "default". The help still shows each
//! option's default and variable: `help_command` adds them for display only, the
//! defaults taken from `Config::default()`.

use clap::builder::PossibleValue;
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use std::ffi::OsString;
use std::path::PathBuf;

use super::{Config, DEFAULT_HOST, DEFAULT_PORT, ENV_VARS, IoMode, Layer, LifespanMode, LogFormat, LoopChoice};

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
  sudo ferrogate main:app --domain example.com --acme-email you@example.com
                                              HTTPS on :443 with a certificate from Let's Encrypt

Commands (each takes the server's options, or reads the same ferrogate.toml):
  ferrogate check | config [--json]           validate / show the configuration and its sources
  ferrogate status | reload | stop | workers +N|-N | upgrade [--json]
                                              the running server, through its control socket
  ferrogate bans list | unban ADDR            the addresses --ban-after banned
  ferrogate install | uninstall               a systemd service for this configuration
  ferrogate doctor [--json]                   audit this host's hardening (ssh, firewall, ...)
  ferrogate certs list | renew [--force] [--dry-run] | revoke NAME

Signals (to the master):
  TERM, INT   stop accepting, finish in-flight requests, run lifespan shutdown, exit 0
  HUP         rolling restart: new workers load the new code, old ones drain (after
              `pip install -U ferrogate`, the master is upgraded too)
  USR1        reopen the log files (logrotate)
  USR2        upgrade: a new master from the installed ferrogate takes over the sockets
  TTIN, TTOU  one worker more, one worker fewer

Every option can also be set in ferrogate.toml (workers = 4) or in the environment
(FERROGATE_WORKERS=4); the command line wins, then the environment, then the file.";

#[derive(Parser, Debug)]
#[command(name = "ferrogate", version, about = ABOUT, after_help = AFTER_HELP, max_term_width = 100, allow_negative_numbers = true)]
pub struct Cli {
    /// The application, as MODULE:ATTRIBUTE (e.g. main:app, or pkg.api:create_app with --factory).
    #[arg(value_name = "APP", required = true)]
    pub app: Option<String>,

    /// Treat APP as a function that takes no argument and returns the ASGI application.
    #[arg(long, help_heading = "Application")]
    pub factory: bool,

    /// Directory put first on sys.path before importing APP.
    #[arg(long, value_name = "DIR", help_heading = "Application")]
    pub app_dir: Option<PathBuf>,

    /// Lifespan events: auto runs them if the app supports them.
    #[arg(long, value_enum, help_heading = "Application")]
    pub lifespan: Option<LifespanMode>,

    /// ASGI root_path, for an app mounted below a path prefix by a proxy.
    #[arg(long, value_name = "PATH", help_heading = "Application")]
    pub root_path: Option<String>,

    /// Load environment variables from this file (KEY=VALUE lines) before starting workers.
    #[arg(long, value_name = "FILE", help_heading = "Application")]
    pub env_file: Option<PathBuf>,

    /// Address to listen on; 0.0.0.0 for every IPv4 interface, :: for IPv6 [with --domain: both].
    #[arg(long, help_heading = "Listening")]
    pub host: Option<String>,

    /// TCP port to listen on (0 picks a free one).
    #[arg(long, help_heading = "Listening")]
    pub port: Option<u16>,

    /// Listen on this unix domain socket instead of host:port.
    #[arg(long, value_name = "PATH", help_heading = "Listening")]
    pub uds: Option<PathBuf>,

    /// Permissions of unix socket listeners (--uds, --bind unix:PATH), in octal. 666 lets any local
    /// process connect, as uvicorn's and gunicorn's sockets do; 660 with --group narrows it to one group.
    #[arg(long, value_name = "MODE", value_parser = parse_octal_mode, help_heading = "Listening")]
    pub uds_mode: Option<u32>,

    /// Listen on an already-open socket: this file descriptor number.
    #[arg(long, value_name = "N", help_heading = "Listening")]
    pub fd: Option<i32>,

    /// More listeners, repeatable: HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N.
    #[arg(long, short = 'b', value_name = "ADDRESS", value_delimiter = ',', help_heading = "Listening")]
    pub bind: Option<Vec<String>>,

    /// Length of the kernel's queue of connections not yet accepted.
    #[arg(long, help_heading = "Listening")]
    pub backlog: Option<u32>,

    /// Number of worker processes [default: the number of CPU cores].
    #[arg(long, short = 'w', value_name = "N", help_heading = "Workers")]
    pub workers: Option<usize>,

    /// Seconds a worker's event loop may stay unresponsive before it is replaced (its Python stack is logged).
    #[arg(long, value_name = "SECONDS", help_heading = "Workers")]
    pub timeout: Option<u64>,

    /// Seconds in-flight requests get to finish on shutdown or reload.
    #[arg(long, visible_alias = "graceful-timeout", value_name = "SECONDS", help_heading = "Workers")]
    pub timeout_graceful_shutdown: Option<u64>,

    /// Replace a worker after it has served this many requests (0: never).
    #[arg(long, visible_alias = "max-requests", value_name = "N", help_heading = "Workers")]
    pub limit_max_requests: Option<u64>,

    /// Add up to this many requests at random to each worker's limit, so workers don't all restart at once.
    #[arg(long, value_name = "N", help_heading = "Workers")]
    pub max_requests_jitter: Option<u64>,

    /// Restart workers when a .py file changes (development only).
    #[arg(long, help_heading = "Workers")]
    pub reload: bool,

    /// Directories watched by --reload [default: --app-dir].
    #[arg(long, value_name = "DIR", value_delimiter = ',', help_heading = "Workers")]
    pub reload_dir: Option<Vec<PathBuf>>,

    /// Also reload when a file matching this pattern changes (repeatable; default *.py).
    #[arg(long, value_name = "GLOB", help_heading = "Workers")]
    pub reload_include: Option<Vec<String>>,

    /// Never reload for files matching this pattern (repeatable; e.g. *_test.py).
    #[arg(long, value_name = "GLOB", help_heading = "Workers")]
    pub reload_exclude: Option<Vec<String>>,

    /// Seconds between checks for changed files under --reload.
    #[arg(long, value_name = "SECONDS", help_heading = "Workers")]
    pub reload_delay: Option<f64>,

    /// Where each worker's network I/O (HTTP, TLS, WebSocket frames, static files) runs. With
    /// loop, an app that blocks its event loop also stalls its worker's sockets meanwhile
    /// (the other workers accept). docs/workers.md compares the two.
    #[arg(long, value_enum, help_heading = "Workers")]
    pub io_mode: Option<IoMode>,

    /// Event loop for the app: auto picks uvloop when it is installed.
    #[arg(long = "loop", value_enum, help_heading = "Application")]
    pub event_loop: Option<LoopChoice>,

    /// ASGI interface of the app; only ASGI 3 is served (auto and asgi3 mean the same).
    #[arg(long, value_parser = [PossibleValue::new("auto"), PossibleValue::new("asgi3"), PossibleValue::new("asgi2").hide(true), PossibleValue::new("wsgi").hide(true)], help_heading = "Application")]
    pub interface: Option<String>,

    /// Protocols served: auto speaks HTTP/1.1 and HTTP/2 (h2 by ALPN over TLS, h2c by prior
    /// knowledge in cleartext); h1 only HTTP/1.1; h2 only HTTP/2. uvicorn's h11 and httptools mean h1.
    #[arg(long, value_parser = ["auto", "h1", "h2", "h11", "httptools"], help_heading = "HTTP")]
    pub http: Option<String>,

    /// HTTP/2 streams a client may have open at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, value_name = "N", help_heading = "HTTP")]
    pub h2_max_concurrent_streams: Option<u32>,

    /// Same as --max-header-size (uvicorn's name for the h11 limit).
    #[arg(long, value_name = "BYTES", help_heading = "HTTP", hide_short_help = true)]
    pub h11_max_incomplete_event_size: Option<usize>,

    /// WebSocket support: none hands upgrade requests to the app as plain HTTP; the others mean on.
    #[arg(long, value_parser = ["auto", "none", "websockets", "websockets-sansio", "wsproto"], help_heading = "WebSocket")]
    pub ws: Option<String>,

    /// Messages received but not yet read by the app, per WebSocket, before the server stops reading.
    #[arg(long, value_name = "N", help_heading = "WebSocket")]
    pub ws_max_queue: Option<usize>,

    /// Accepted for uvicorn compatibility and ignored: ferrogate logs lines of its own format (see --access-log-format).
    #[arg(long, value_name = "FILE", help_heading = "Logging")]
    pub log_config: Option<PathBuf>,

    /// Accepted for uvicorn compatibility; ferrogate's logs have no colors.
    #[arg(long, overrides_with = "no_use_colors", help_heading = "Logging", hide_short_help = true)]
    pub use_colors: bool,
    #[arg(long, help_heading = "Logging", hide = true)]
    pub no_use_colors: bool,

    /// Serve HTTPS with this certificate (PEM, the server's certificate first, then the
    /// intermediates). Every listener then speaks TLS 1.2/1.3, as with uvicorn.
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    pub ssl_certfile: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1) [default: in --ssl-certfile].
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    pub ssl_keyfile: Option<PathBuf>,
    /// Password of an encrypted (PKCS#8) --ssl-keyfile.
    #[arg(long, value_name = "PASSWORD", help_heading = "TLS")]
    pub ssl_keyfile_password: Option<String>,
    /// Client certificates: 0 not asked for, 1 optional, 2 required (uvicorn's numbers) [default: 0].
    #[arg(long, value_name = "N", help_heading = "TLS")]
    pub ssl_cert_reqs: Option<String>,
    /// CA bundle (PEM) that client certificates must chain to.
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    pub ssl_ca_certs: Option<PathBuf>,
    /// Accepted for uvicorn compatibility and ignored: TLS 1.2 and 1.3 only.
    #[arg(long, value_name = "N", help_heading = "TLS", hide_short_help = true)]
    pub ssl_version: Option<String>,
    /// Accepted for uvicorn compatibility and ignored: Mozilla's "intermediate" suites.
    #[arg(long, value_name = "CIPHERS", help_heading = "TLS", hide_short_help = true)]
    pub ssl_ciphers: Option<String>,

    /// Serve HTTPS for this domain with a certificate obtained and renewed automatically
    /// (ACME, Let's Encrypt by default). Repeatable: one certificate per --domain;
    /// `--domain example.com,www.example.com` puts both names in one certificate.
    /// Listens on --http-port (redirects to HTTPS, answers ACME challenges) and --https-port.
    #[arg(long, value_name = "NAME", help_heading = "Automatic HTTPS")]
    pub domain: Option<Vec<String>>,
    /// Contact address given to the CA (expiry notices).
    #[arg(long, value_name = "EMAIL", help_heading = "Automatic HTTPS")]
    pub acme_email: Option<String>,
    /// ACME directory URL of the CA [default: Let's Encrypt].
    #[arg(long, value_name = "URL", help_heading = "Automatic HTTPS")]
    pub acme_directory: Option<String>,
    /// Use Let's Encrypt's staging CA (untrusted certificates, for trying things out).
    #[arg(long, help_heading = "Automatic HTTPS", action = clap::ArgAction::SetTrue)]
    pub acme_staging: Option<bool>,
    /// Extra CA certificate (PEM) trusted for the ACME directory's own HTTPS (private CAs, test servers).
    #[arg(long, value_name = "PEM", help_heading = "Automatic HTTPS")]
    pub acme_ca_root: Option<PathBuf>,
    /// External account binding key id, for CAs that require one (ZeroSSL, Google).
    #[arg(long, value_name = "KID", help_heading = "Automatic HTTPS")]
    pub acme_eab_kid: Option<String>,
    /// External account binding HMAC key (base64url), with --acme-eab-kid.
    #[arg(long, value_name = "KEY", help_heading = "Automatic HTTPS")]
    pub acme_eab_hmac_key: Option<String>,
    /// How the CA checks that the domain points here; auto tries http-01, then tls-alpn-01.
    #[arg(long, value_enum, help_heading = "Automatic HTTPS")]
    pub acme_challenge: Option<super::tls::ChallengeChoice>,
    /// Plain-HTTP port in --domain mode [default: 80].
    #[arg(long, value_name = "PORT", help_heading = "Automatic HTTPS")]
    pub http_port: Option<u16>,
    /// HTTPS port in --domain mode [default: 443].
    #[arg(long, value_name = "PORT", help_heading = "Automatic HTTPS")]
    pub https_port: Option<u16>,
    /// Where the ACME account, certificates and keys, and the ban list are kept
    /// [default: /var/lib/ferrogate as root, else $XDG_STATE_HOME/ferrogate].
    #[arg(long, value_name = "DIR", help_heading = "Automatic HTTPS")]
    pub state_dir: Option<PathBuf>,
    /// Send Strict-Transport-Security (max-age two years) on HTTPS responses [default: on with --domain].
    #[arg(long, overrides_with = "no_hsts", help_heading = "Automatic HTTPS", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub hsts: Option<bool>,
    #[arg(long, help_heading = "Automatic HTTPS", hide = true)]
    pub no_hsts: bool,
    /// Add includeSubDomains to Strict-Transport-Security.
    #[arg(long, help_heading = "Automatic HTTPS", action = clap::ArgAction::SetTrue)]
    pub hsts_include_subdomains: Option<bool>,
    /// Add preload to Strict-Transport-Security (then submit the domain at hstspreload.org).
    #[arg(long, help_heading = "Automatic HTTPS", action = clap::ArgAction::SetTrue)]
    pub hsts_preload: Option<bool>,
    /// Answer plain HTTP with a 308 redirect to HTTPS (--no-redirect serves the app over both) [default: on with --domain].
    #[arg(long, overrides_with = "no_redirect", help_heading = "Automatic HTTPS", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub redirect: Option<bool>,
    #[arg(long, help_heading = "Automatic HTTPS", hide = true)]
    pub no_redirect: bool,

    /// Close idle keep-alive connections after this many seconds.
    #[arg(long, value_name = "SECONDS", help_heading = "HTTP")]
    pub timeout_keep_alive: Option<u64>,

    /// Close a connection whose request body stops arriving, or that stops reading the
    /// response, for this long (nginx's client_body_timeout and send_timeout).
    #[arg(long, value_name = "SECONDS", help_heading = "HTTP")]
    pub timeout_io: Option<u64>,

    /// Answer 503 once a worker is serving this many requests at once.
    #[arg(long, value_name = "N", help_heading = "HTTP")]
    pub limit_concurrency: Option<usize>,

    /// Largest request head (request line and headers) in bytes; larger gets 431.
    #[arg(long, value_name = "BYTES", help_heading = "HTTP")]
    pub max_header_size: Option<usize>,

    /// Most request headers accepted; more gets 431.
    #[arg(long, value_name = "N", help_heading = "HTTP")]
    pub max_headers: Option<usize>,

    /// Add a header to every response, as NAME:VALUE (repeatable).
    #[arg(long, value_name = "NAME:VALUE", help_heading = "HTTP")]
    pub header: Option<Vec<String>>,

    /// Send `server: ferrogate` in responses.
    #[arg(long, overrides_with = "no_server_header", help_heading = "HTTP", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub server_header: Option<bool>,
    #[arg(long, help_heading = "HTTP", hide = true)]
    pub no_server_header: bool,

    /// Serve the files under DIR at URL_PATH, e.g. /static=./static (repeatable). The server
    /// answers these itself, without Python: GET and HEAD, ETag and Last-Modified with 304s,
    /// byte ranges; hidden files (.env, .git) and paths leaving DIR are never served.
    #[arg(long = "static", value_name = "URL_PATH=DIR", value_delimiter = ',', help_heading = "Static files")]
    pub static_mounts: Option<Vec<String>>,

    /// Let browsers cache static files for this long (Cache-Control: public, max-age=SECONDS).
    #[arg(long, value_name = "SECONDS", help_heading = "Static files")]
    pub static_max_age: Option<u64>,

    /// Send a `date` header in responses.
    #[arg(long, overrides_with = "no_date_header", help_heading = "HTTP", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub date_header: Option<bool>,
    #[arg(long, help_heading = "HTTP", hide = true)]
    pub no_date_header: bool,

    /// Trust X-Forwarded-For and X-Forwarded-Proto from --forwarded-allow-ips.
    #[arg(long, overrides_with = "no_proxy_headers", help_heading = "Proxy", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub proxy_headers: Option<bool>,
    #[arg(long, help_heading = "Proxy", hide = true)]
    pub no_proxy_headers: bool,

    /// Comma-separated addresses or networks whose X-Forwarded-* headers are trusted; * trusts all.
    /// Unix-socket peers are always trusted. Also read from FORWARDED_ALLOW_IPS, as uvicorn does.
    /// [default: 127.0.0.1,::1]
    #[arg(long, value_name = "IPS", help_heading = "Proxy")]
    pub forwarded_allow_ips: Option<String>,

    /// Largest WebSocket message accepted, in bytes.
    #[arg(long, value_name = "BYTES", help_heading = "WebSocket")]
    pub ws_max_size: Option<usize>,

    /// Seconds between pings sent to WebSocket clients (0 disables).
    #[arg(long, value_name = "SECONDS", help_heading = "WebSocket")]
    pub ws_ping_interval: Option<f64>,

    /// Seconds to wait for a pong before closing the connection.
    #[arg(long, value_name = "SECONDS", help_heading = "WebSocket")]
    pub ws_ping_timeout: Option<f64>,

    /// Negotiate permessage-deflate compression with WebSocket clients.
    #[arg(long, help_heading = "WebSocket", action = clap::ArgAction::Set, value_name = "BOOL")]
    pub ws_per_message_deflate: Option<bool>,

    /// Least severe messages logged.
    #[arg(long, value_enum, help_heading = "Logging")]
    pub log_level: Option<super::LogLevel>,

    /// Log every request (nginx "combined" format plus the request time).
    #[arg(long, overrides_with = "no_access_log", help_heading = "Logging", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub access_log: Option<bool>,
    #[arg(long, help_heading = "Logging", hide = true)]
    pub no_access_log: bool,

    /// Access log line, with nginx-style variables: $remote_addr $remote_user $time_local $request
    /// $status $body_bytes_sent $http_referer $http_user_agent $request_time $request_method $uri
    /// $server_protocol $pid.
    #[arg(long, value_name = "FORMAT", help_heading = "Logging")]
    pub access_log_format: Option<String>,

    /// Write the server's log (and the workers' stderr) to this file instead of stderr; reopened
    /// on SIGUSR1, for logrotate. `-` means stderr.
    #[arg(long, visible_alias = "error-logfile", value_name = "PATH", help_heading = "Logging")]
    pub log_file: Option<PathBuf>,

    /// Write the access log to this file instead of the server's log; reopened on SIGUSR1.
    /// `-` means stdout (gunicorn's --access-logfile -).
    #[arg(long, visible_alias = "access-logfile", value_name = "PATH", help_heading = "Logging")]
    pub access_log_file: Option<PathBuf>,

    /// Log lines as text (gunicorn's and nginx's formats) or as one JSON object per line, for log shippers.
    #[arg(long, value_enum, help_heading = "Logging")]
    pub log_format: Option<LogFormat>,

    /// Read options from this TOML file [default: ./ferrogate.toml when it exists]. Its keys are the
    /// long options' names (workers = 4); the command line and FERROGATE_* variables win over it.
    #[arg(long, short = 'c', value_name = "FILE", help_heading = "Service")]
    pub config: Option<PathBuf>,

    /// Run the workers as this user (name or uid), and the master too once it has bound the ports,
    /// created the sockets and read the keys it needs as root.
    #[arg(long, short = 'u', value_name = "USER", help_heading = "Service")]
    pub user: Option<String>,

    /// Run as this group (name or gid) [default: the --user's primary group].
    #[arg(long, short = 'g', value_name = "GROUP", help_heading = "Service")]
    pub group: Option<String>,

    /// File-mode creation mask of the master and workers, in octal (e.g. 027) [default: inherited].
    #[arg(long, short = 'm', value_name = "MODE", value_parser = parse_octal_mode, help_heading = "Service")]
    pub umask: Option<u32>,

    /// Write the master's PID to this file (removed on exit).
    #[arg(long = "pid", short = 'p', visible_alias = "pidfile", value_name = "FILE", help_heading = "Service")]
    pub pid_file: Option<PathBuf>,

    /// The name the processes show in ps and top: `ferrogate: master [NAME]` [default: APP].
    #[arg(long, short = 'n', visible_alias = "proc-name", value_name = "NAME", help_heading = "Service")]
    pub name: Option<String>,

    /// The unix socket `ferrogate status|reload|stop|workers` talk to [default: control.sock in
    /// $RUNTIME_DIRECTORY, /run/ferrogate as root, else $XDG_RUNTIME_DIR/ferrogate].
    #[arg(long, value_name = "PATH", help_heading = "Service")]
    pub control_socket: Option<PathBuf>,

    /// Replace a worker (successor first, then a graceful drain) once its memory (RSS) passes this many MB.
    #[arg(long, value_name = "MB", help_heading = "Workers")]
    pub max_worker_memory: Option<u64>,

    /// Replace a worker (successor first, then a graceful drain) once it has run this many seconds.
    #[arg(long, value_name = "SECONDS", help_heading = "Workers")]
    pub max_worker_lifetime: Option<u64>,

    /// gunicorn's worker class: accepted and ignored, ferrogate's workers are its own (an asyncio
    /// loop fed by a Rust I/O thread), like uvicorn.workers.UvicornWorker without gunicorn.
    #[arg(long, short = 'k', value_name = "CLASS", help_heading = "Workers", hide_short_help = true)]
    pub worker_class: Option<String>,

    #[command(flatten)]
    pub front: super::cli_front::FrontArgs,
}

fn parse_octal_mode(s: &str) -> Result<u32, String> {
    let digits = s.trim_start_matches("0o");
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("'{s}' is not an octal file mode; write e.g. 660 or 0o600"))
}

/// Parses the command line. `app_required` is false when a lower layer gives APP.
pub(super) fn parse<A>(argv: A, app_required: bool) -> Result<Cli, clap::Error>
where
    A: IntoIterator,
    A::Item: Into<OsString> + Clone,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let mut cmd = Cli::command().mut_args(|a| if a.get_id() == "app" { a.required(app_required) } else { a });
    match cmd.try_get_matches_from_mut(&argv) {
        Ok(matches) => Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd)),
        // The same parse with the documented command stops at the same --help or -h and
        // renders the help with the defaults and variables shown.
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
            Err(help_command().try_get_matches_from(&argv).err().unwrap_or(e))
        }
        Err(e) => Err(e),
    }
}

// These commands change their arguments with `mut_args`, never `mut_arg`: that one moves
// the argument last, which reorders the help's sections.

/// The command that parses FERROGATE_* values (env.rs): APP optional, and values taken
/// as they are even when they start with '-' (clap did so for variables). Built, so that
/// its arguments can be inspected and named in errors.
pub(super) fn env_command() -> clap::Command {
    let mut cmd = Cli::command().bin_name("ferrogate").mut_args(|a| {
        let a = if a.get_id() == "app" { a.required(false) } else { a };
        if a.get_action().takes_values() { a.allow_hyphen_values(true) } else { a }
    });
    cmd.build();
    cmd
}

/// The command as `--help` shows it: every option with its variable (`[env: NAME=value]`,
/// the value as the process has it, as clap always showed it) and its default.
pub fn help_command() -> clap::Command {
    let defaults = help_defaults();
    Cli::command().mut_args(|a| {
        let id = a.get_id().as_str();
        let default = defaults.iter().find(|(d, _)| *d == id).map(|(_, v)| v.clone());
        let a = match ENV_VARS.iter().find(|(_, e)| *e == id) {
            Some((var, _)) => a.env(var),
            None => a,
        };
        match default {
            Some(value) => a.default_value(value),
            None => a,
        }
    })
}

/// The `[default: ...]` of each option whose default is one value. The others say theirs
/// in their doc comment: --workers (the cores), --reload-dir (--app-dir), --reload-include
/// (*.py) and --forwarded-allow-ips (a test checks that one against the real default).
pub(super) fn help_defaults() -> Vec<(&'static str, String)> {
    let d = Config::default();
    let name = |v: Option<PossibleValue>| v.expect("no skipped variants").get_name().to_string();
    let seconds = |v: Option<f64>| v.unwrap_or(0.0).to_string();
    vec![
        ("app_dir", d.app.app_dir.display().to_string()),
        ("lifespan", name(d.app.lifespan.to_possible_value())),
        ("root_path", d.app.root_path),
        ("host", DEFAULT_HOST.to_string()),
        ("port", DEFAULT_PORT.to_string()),
        ("backlog", d.backlog.to_string()),
        ("timeout", d.workers.timeout.to_string()),
        ("timeout_graceful_shutdown", d.workers.graceful_timeout.to_string()),
        ("limit_max_requests", d.workers.max_requests.to_string()),
        ("max_requests_jitter", d.workers.max_requests_jitter.to_string()),
        ("reload_delay", d.workers.reload_delay.to_string()),
        ("io_mode", name(IoMode::default().to_possible_value())),
        ("event_loop", name(d.app.event_loop.to_possible_value())),
        // Accepted for uvicorn's sake, with no setting of ours behind it.
        ("interface", "auto".into()),
        ("http", d.http.protocols.name().into()),
        ("h2_max_concurrent_streams", d.http.h2_max_concurrent_streams.to_string()),
        ("ws", if d.ws.enabled { "auto" } else { "none" }.into()),
        ("ws_max_queue", d.ws.max_queue.to_string()),
        ("timeout_keep_alive", d.http.keep_alive_timeout.to_string()),
        ("timeout_io", d.http.io_timeout.to_string()),
        ("max_header_size", d.http.max_header_size.to_string()),
        ("max_headers", d.http.max_headers.to_string()),
        ("server_header", d.http.server_header.to_string()),
        ("date_header", d.http.date_header.to_string()),
        ("proxy_headers", d.proxy.enabled.to_string()),
        ("ws_max_size", d.ws.max_size.to_string()),
        ("ws_ping_interval", seconds(d.ws.ping_interval)),
        ("ws_ping_timeout", seconds(d.ws.ping_timeout)),
        ("ws_per_message_deflate", d.ws.per_message_deflate.to_string()),
        ("log_level", name(d.log.level.to_possible_value())),
        ("access_log", d.log.access_log.to_string()),
        ("access_log_format", d.log.access_log_format),
        ("log_format", name(d.log.format.to_possible_value())),
    ]
    .into_iter()
    .chain(super::cli_front::help_defaults(&d.front))
    .collect()
}

impl From<Cli> for Layer {
    fn from(c: Cli) -> Layer {
        // --x[=BOOL] / --no-x: clap clears whichever came first, so the --no- form is set
        // only when it came last.
        let pair = |on: Option<bool>, off: bool| if off { Some(false) } else { on };
        Layer {
            app: c.app,
            // A plain flag can only say yes on the command line; its absence says nothing.
            factory: c.factory.then_some(true),
            app_dir: c.app_dir,
            lifespan: c.lifespan,
            root_path: c.root_path,
            env_file: c.env_file,
            host: c.host,
            port: c.port,
            uds: c.uds,
            uds_mode: c.uds_mode,
            fd: c.fd,
            bind: c.bind,
            backlog: c.backlog,
            workers: c.workers,
            timeout: c.timeout,
            timeout_graceful_shutdown: c.timeout_graceful_shutdown,
            limit_max_requests: c.limit_max_requests,
            max_requests_jitter: c.max_requests_jitter,
            reload: c.reload.then_some(true),
            reload_dir: c.reload_dir,
            reload_include: c.reload_include,
            reload_exclude: c.reload_exclude,
            reload_delay: c.reload_delay,
            io_mode: c.io_mode,
            event_loop: c.event_loop,
            interface: c.interface,
            h11_max_incomplete_event_size: c.h11_max_incomplete_event_size,
            ws: c.ws,
            ws_max_queue: c.ws_max_queue,
            log_config: c.log_config,
            use_colors: (c.use_colors || c.no_use_colors).then_some(c.use_colors),
            http: c.http,
            h2_max_concurrent_streams: c.h2_max_concurrent_streams,
            ssl_certfile: c.ssl_certfile,
            ssl_keyfile: c.ssl_keyfile,
            ssl_keyfile_password: c.ssl_keyfile_password,
            ssl_cert_reqs: c.ssl_cert_reqs,
            ssl_ca_certs: c.ssl_ca_certs,
            ssl_version: c.ssl_version,
            ssl_ciphers: c.ssl_ciphers,
            domain: c.domain,
            acme_email: c.acme_email,
            acme_directory: c.acme_directory,
            // SetTrue flags: absent is None (says nothing), present is Some(true).
            acme_staging: c.acme_staging.filter(|on| *on),
            acme_ca_root: c.acme_ca_root,
            acme_eab_kid: c.acme_eab_kid,
            acme_eab_hmac_key: c.acme_eab_hmac_key,
            acme_challenge: c.acme_challenge,
            http_port: c.http_port,
            https_port: c.https_port,
            state_dir: c.state_dir,
            hsts: pair(c.hsts, c.no_hsts),
            hsts_include_subdomains: c.hsts_include_subdomains.filter(|on| *on),
            hsts_preload: c.hsts_preload.filter(|on| *on),
            redirect: pair(c.redirect, c.no_redirect),
            xdg_state_home: None,
            home: None,
            timeout_keep_alive: c.timeout_keep_alive,
            timeout_io: c.timeout_io,
            limit_concurrency: c.limit_concurrency,
            max_header_size: c.max_header_size,
            max_headers: c.max_headers,
            header: c.header,
            server_header: pair(c.server_header, c.no_server_header),
            static_mounts: c.static_mounts,
            static_max_age: c.static_max_age,
            date_header: pair(c.date_header, c.no_date_header),
            proxy_headers: pair(c.proxy_headers, c.no_proxy_headers),
            forwarded_allow_ips: c.forwarded_allow_ips,
            uvicorn_forwarded_allow_ips: None,
            ws_max_size: c.ws_max_size,
            ws_ping_interval: c.ws_ping_interval,
            ws_ping_timeout: c.ws_ping_timeout,
            ws_per_message_deflate: c.ws_per_message_deflate,
            log_level: c.log_level,
            access_log: pair(c.access_log, c.no_access_log),
            access_log_format: c.access_log_format,
            log_file: c.log_file,
            access_log_file: c.access_log_file,
            log_format: c.log_format,
            config: c.config,
            user: c.user,
            group: c.group,
            umask: c.umask,
            pid_file: c.pid_file,
            name: c.name,
            control_socket: c.control_socket,
            max_worker_memory: c.max_worker_memory,
            max_worker_lifetime: c.max_worker_lifetime,
            worker_class: c.worker_class,
            runtime_directory: None,
            xdg_runtime_dir: None,
            listen_fds: None,
            ..c.front.into()
        }
    }
}
