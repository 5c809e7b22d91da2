//! Layers of settings and how they stack: defaults < file < environment < command line.
//!
//! Each source yields a `Layer`: the options it sets and nothing else. A higher layer's
//! value wins option by option, so `--port 8000` on the command line beats
//! FERROGATE_PORT=9000 even though 8000 is also the default, and a list given on the
//! command line (`--header`, `--bind`, ...) replaces the environment's, as it did when
//! clap read the environment itself. Options keep their command-line names (the `Cli`
//! field names, which are also clap's ids), so each layer speaks the documented vocabulary.

use std::ffi::OsString;
use std::path::PathBuf;

use super::{IoMode, LifespanMode, LoopChoice};
use super::LogLevel as Level;

macro_rules! layer {
    ($($(#[$doc:meta])* $field:ident: $ty:ty,)*) => {
        /// What one source says; None wherever it says nothing.
        #[derive(Clone, Debug, Default, PartialEq)]
        pub struct Layer {
            $($(#[$doc])* pub $field: Option<$ty>,)*
        }

        impl Layer {
            /// Option by option, this layer's value where it has one, else `lower`'s.
            pub fn over(self, lower: Layer) -> Layer {
                Layer { $($field: self.$field.or(lower.$field),)* }
            }

            /// Whether this layer sets the option whose clap id (the `Cli` field name) is `id`.
            pub fn sets(&self, id: &str) -> bool {
                match id {
                    $(stringify!($field) => self.$field.is_some(),)*
                    _ => false,
                }
            }
        }
    };
}

layer! {
    app: String,
    factory: bool,
    app_dir: PathBuf,
    lifespan: LifespanMode,
    root_path: String,
    env_file: PathBuf,
    host: String,
    port: u16,
    uds: PathBuf,
    uds_mode: u32,
    fd: i32,
    bind: Vec<String>,
    backlog: u32,
    workers: usize,
    timeout: u64,
    timeout_graceful_shutdown: u64,
    limit_max_requests: u64,
    max_requests_jitter: u64,
    reload: bool,
    reload_dir: Vec<PathBuf>,
    reload_include: Vec<String>,
    reload_exclude: Vec<String>,
    reload_delay: f64,
    io_mode: IoMode,
    event_loop: LoopChoice,
    interface: String,
    h11_max_incomplete_event_size: usize,
    ws: String,
    ws_max_queue: usize,
    log_config: PathBuf,
    /// uvicorn's --use-colors/--no-use-colors: accepted, without effect.
    use_colors: bool,
    /// auto|h1|h2 (uvicorn's h11 and httptools mean h1).
    http: String,
    h2_max_concurrent_streams: u32,
    ssl_certfile: PathBuf,
    ssl_keyfile: PathBuf,
    ssl_keyfile_password: String,
    ssl_cert_reqs: String,
    ssl_ca_certs: PathBuf,
    /// uvicorn's --ssl-version and --ssl-ciphers: accepted, without effect (rustls chooses).
    ssl_version: String,
    ssl_ciphers: String,
    domain: Vec<String>,
    acme_email: String,
    acme_directory: String,
    acme_staging: bool,
    acme_ca_root: PathBuf,
    acme_eab_kid: String,
    acme_eab_hmac_key: String,
    acme_challenge: super::tls::ChallengeChoice,
    http_port: u16,
    https_port: u16,
    state_dir: PathBuf,
    hsts: bool,
    hsts_include_subdomains: bool,
    hsts_preload: bool,
    redirect: bool,
    /// XDG_STATE_HOME and HOME, for the default --state-dir.
    xdg_state_home: PathBuf,
    home: PathBuf,
    timeout_keep_alive: u64,
    timeout_io: u64,
    limit_concurrency: usize,
    max_header_size: usize,
    max_headers: usize,
    header: Vec<String>,
    server_header: bool,
    static_mounts: Vec<String>,
    static_max_age: u64,
    date_header: bool,
    proxy_headers: bool,
    forwarded_allow_ips: String,
    /// FORWARDED_ALLOW_IPS, uvicorn's variable: weaker than --forwarded-allow-ips and
    /// FERROGATE_FORWARDED_ALLOW_IPS, and than the same variable in --env-file.
    uvicorn_forwarded_allow_ips: String,
    ws_max_size: usize,
    ws_ping_interval: f64,
    ws_ping_timeout: f64,
    ws_per_message_deflate: bool,
    log_level: Level,
    access_log: bool,
    access_log_format: String,
    log_file: PathBuf,
    access_log_file: PathBuf,
    log_format: super::LogFormat,
    /// The TOML file the file layer came from (--config, FERROGATE_CONFIG).
    config: PathBuf,
    user: String,
    group: String,
    umask: u32,
    pid_file: PathBuf,
    name: String,
    control_socket: PathBuf,
    max_worker_memory: u64,
    max_worker_lifetime: u64,
    /// gunicorn's --worker-class: accepted, without effect.
    worker_class: String,
    /// RUNTIME_DIRECTORY (systemd's RuntimeDirectory=) and XDG_RUNTIME_DIR, for the default --control-socket.
    runtime_directory: PathBuf,
    xdg_runtime_dir: PathBuf,
    /// How many sockets systemd passed us from fd 3 (LISTEN_FDS, when LISTEN_PID is ours).
    listen_fds: i32,
    // The front (cli_front.rs).
    limit_request_body: String,
    limit_request_body_path: Vec<String>,
    compress: bool,
    compress_level: super::front::CompressLevel,
    compress_min_size: u64,
    compress_types: Vec<String>,
    compress_encodings: Vec<super::front::Encoding>,
    server_name: Vec<String>,
    unknown_host: super::front::UnknownHost,
    www_redirect: super::front::WwwRedirect,
    proxy_protocol: bool,
    rate_limit: String,
    rate_limit_burst: u32,
    rate_limit_path: Vec<String>,
    ban_after: u32,
    ban_within: String,
    ban_for: String,
    ban_status: Vec<u16>,
    ban_allow: Vec<String>,
    error_page: Vec<String>,
    security_headers: bool,
}

/// Reads every layer and stacks them. `argv` is the whole command line, program name
/// first; `env` the process environment; `pid` ours (systemd names the process its
/// sockets are for). Errors are clap's, printed as clap prints them: usage errors, bad
/// values of flags or of FERROGATE_* variables, and --help and --version, which exit 0.
pub fn gather<A, E, K, V>(argv: A, env: E, pid: u32) -> Result<Layer, clap::Error>
where
    A: IntoIterator,
    A::Item: Into<OsString> + Clone,
    E: IntoIterator<Item = (K, V)>,
    K: Into<OsString>,
    V: Into<OsString>,
{
    let argv = argv.into_iter().map(Into::into).collect();
    let env = env.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
    gather_layers(argv, env, pid, true)
}

/// As `gather`, for commands other than serving (`ferrogate certs ...`): they take the
/// server's options, APP included, but need no APP.
pub fn gather_without_app(argv: Vec<String>, env: Vec<(OsString, OsString)>, pid: u32) -> Result<Layer, clap::Error> {
    gather_layers(argv.into_iter().map(OsString::from).collect(), env, pid, false)
}

fn gather_layers(argv: Vec<OsString>, env: Vec<(OsString, OsString)>, pid: u32, needs_app: bool) -> Result<Layer, clap::Error> {
    // The sources stay apart in `Sources` for `ferrogate config`; serving needs them stacked.
    Ok(super::gather_sources(argv, env, pid, needs_app)?.layer())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_higher_layer_wins_option_by_option() {
        let low = Layer { port: Some(9000), workers: Some(3), header: Some(vec!["a:1".into()]), ..Layer::default() };
        let high = Layer { port: Some(8000), header: Some(vec!["b:2".into()]), ..Layer::default() };
        let merged = high.over(low);
        assert_eq!(merged.port, Some(8000));
        assert_eq!(merged.workers, Some(3));
        assert_eq!(merged.header, Some(vec!["b:2".into()]), "a list replaces the lower list");
    }

    #[test]
    fn sets_knows_every_option_by_its_clap_id() {
        let l = Layer { static_mounts: Some(vec![]), event_loop: Some(LoopChoice::Uvloop), ..Layer::default() };
        assert!(l.sets("static_mounts") && l.sets("event_loop"));
        assert!(!l.sets("workers") && !l.sets("no_such_option"));
    }
}
