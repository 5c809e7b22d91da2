//! The environment's layer: FERROGATE_* variables, uvicorn's FORWARDED_ALLOW_IPS, and the
//! sockets systemd passes (LISTEN_PID, LISTEN_FDS).
//!
//! The environment comes in as a list of (name, value), never from the process directly,
//! so tests give their own and nothing here depends on where it runs.

use clap::builder::TypedValueParser;
use clap::{Command, FromArgMatches};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};

use super::{Layer, cli};

/// Every FERROGATE_* variable and the option it sets (its clap id, the `Cli` field name).
/// The names are FERROGATE_ and the long flag in capitals with _ for -, and must stay as
/// they are: deployments set them. The help shows each as `[env: NAME=]`.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("FERROGATE_APP", "app"),
    ("FERROGATE_FACTORY", "factory"),
    ("FERROGATE_APP_DIR", "app_dir"),
    ("FERROGATE_LIFESPAN", "lifespan"),
    ("FERROGATE_ROOT_PATH", "root_path"),
    ("FERROGATE_ENV_FILE", "env_file"),
    ("FERROGATE_HOST", "host"),
    ("FERROGATE_PORT", "port"),
    ("FERROGATE_UDS", "uds"),
    ("FERROGATE_UDS_MODE", "uds_mode"),
    ("FERROGATE_FD", "fd"),
    ("FERROGATE_BIND", "bind"),
    ("FERROGATE_BACKLOG", "backlog"),
    ("FERROGATE_WORKERS", "workers"),
    ("FERROGATE_TIMEOUT", "timeout"),
    ("FERROGATE_TIMEOUT_GRACEFUL_SHUTDOWN", "timeout_graceful_shutdown"),
    ("FERROGATE_LIMIT_MAX_REQUESTS", "limit_max_requests"),
    ("FERROGATE_MAX_REQUESTS_JITTER", "max_requests_jitter"),
    ("FERROGATE_RELOAD", "reload"),
    ("FERROGATE_RELOAD_DIR", "reload_dir"),
    ("FERROGATE_RELOAD_INCLUDE", "reload_include"),
    ("FERROGATE_RELOAD_EXCLUDE", "reload_exclude"),
    ("FERROGATE_RELOAD_DELAY", "reload_delay"),
    ("FERROGATE_IO_MODE", "io_mode"),
    ("FERROGATE_LOOP", "event_loop"),
    ("FERROGATE_INTERFACE", "interface"),
    ("FERROGATE_HTTP", "http"),
    ("FERROGATE_H2_MAX_CONCURRENT_STREAMS", "h2_max_concurrent_streams"),
    ("FERROGATE_WS", "ws"),
    ("FERROGATE_WS_MAX_QUEUE", "ws_max_queue"),
    ("FERROGATE_LOG_CONFIG", "log_config"),
    ("FERROGATE_SSL_CERTFILE", "ssl_certfile"),
    ("FERROGATE_SSL_KEYFILE", "ssl_keyfile"),
    ("FERROGATE_SSL_KEYFILE_PASSWORD", "ssl_keyfile_password"),
    ("FERROGATE_SSL_CERT_REQS", "ssl_cert_reqs"),
    ("FERROGATE_SSL_CA_CERTS", "ssl_ca_certs"),
    ("FERROGATE_DOMAIN", "domain"),
    ("FERROGATE_ACME_EMAIL", "acme_email"),
    ("FERROGATE_ACME_DIRECTORY", "acme_directory"),
    ("FERROGATE_ACME_STAGING", "acme_staging"),
    ("FERROGATE_ACME_CA_ROOT", "acme_ca_root"),
    ("FERROGATE_ACME_EAB_KID", "acme_eab_kid"),
    ("FERROGATE_ACME_EAB_HMAC_KEY", "acme_eab_hmac_key"),
    ("FERROGATE_ACME_CHALLENGE", "acme_challenge"),
    ("FERROGATE_HTTP_PORT", "http_port"),
    ("FERROGATE_HTTPS_PORT", "https_port"),
    ("FERROGATE_STATE_DIR", "state_dir"),
    ("FERROGATE_HSTS", "hsts"),
    ("FERROGATE_REDIRECT", "redirect"),
    ("FERROGATE_TIMEOUT_KEEP_ALIVE", "timeout_keep_alive"),
    ("FERROGATE_TIMEOUT_IO", "timeout_io"),
    ("FERROGATE_LIMIT_CONCURRENCY", "limit_concurrency"),
    ("FERROGATE_MAX_HEADER_SIZE", "max_header_size"),
    ("FERROGATE_MAX_HEADERS", "max_headers"),
    ("FERROGATE_HEADER", "header"),
    ("FERROGATE_SERVER_HEADER", "server_header"),
    ("FERROGATE_STATIC", "static_mounts"),
    ("FERROGATE_STATIC_MAX_AGE", "static_max_age"),
    ("FERROGATE_DATE_HEADER", "date_header"),
    ("FERROGATE_PROXY_HEADERS", "proxy_headers"),
    ("FERROGATE_FORWARDED_ALLOW_IPS", "forwarded_allow_ips"),
    ("FERROGATE_WS_MAX_SIZE", "ws_max_size"),
    ("FERROGATE_WS_PING_INTERVAL", "ws_ping_interval"),
    ("FERROGATE_WS_PING_TIMEOUT", "ws_ping_timeout"),
    ("FERROGATE_WS_PER_MESSAGE_DEFLATE", "ws_per_message_deflate"),
    ("FERROGATE_LOG_LEVEL", "log_level"),
    ("FERROGATE_ACCESS_LOG", "access_log"),
    ("FERROGATE_ACCESS_LOG_FORMAT", "access_log_format"),
    ("FERROGATE_LOG_FILE", "log_file"),
    ("FERROGATE_ACCESS_LOG_FILE", "access_log_file"),
    ("FERROGATE_LOG_FORMAT", "log_format"),
    ("FERROGATE_CONFIG", "config"),
    ("FERROGATE_USER", "user"),
    ("FERROGATE_GROUP", "group"),
    ("FERROGATE_UMASK", "umask"),
    ("FERROGATE_PID", "pid_file"),
    ("FERROGATE_NAME", "name"),
    ("FERROGATE_CONTROL_SOCKET", "control_socket"),
    ("FERROGATE_MAX_WORKER_MEMORY", "max_worker_memory"),
    ("FERROGATE_MAX_WORKER_LIFETIME", "max_worker_lifetime"),
    ("FERROGATE_LIMIT_REQUEST_BODY", "limit_request_body"),
    ("FERROGATE_LIMIT_REQUEST_BODY_PATH", "limit_request_body_path"),
    ("FERROGATE_COMPRESS", "compress"),
    ("FERROGATE_COMPRESS_LEVEL", "compress_level"),
    ("FERROGATE_COMPRESS_MIN_SIZE", "compress_min_size"),
    ("FERROGATE_COMPRESS_TYPES", "compress_types"),
    ("FERROGATE_COMPRESS_ENCODINGS", "compress_encodings"),
    ("FERROGATE_SERVER_NAME", "server_name"),
    ("FERROGATE_UNKNOWN_HOST", "unknown_host"),
    ("FERROGATE_WWW_REDIRECT", "www_redirect"),
    ("FERROGATE_PROXY_PROTOCOL", "proxy_protocol"),
    ("FERROGATE_RATE_LIMIT", "rate_limit"),
    ("FERROGATE_RATE_LIMIT_BURST", "rate_limit_burst"),
    ("FERROGATE_RATE_LIMIT_PATH", "rate_limit_path"),
    ("FERROGATE_BAN_AFTER", "ban_after"),
    ("FERROGATE_BAN_WITHIN", "ban_within"),
    ("FERROGATE_BAN_FOR", "ban_for"),
    ("FERROGATE_BAN_STATUS", "ban_status"),
    ("FERROGATE_BAN_ALLOW", "ban_allow"),
    ("FERROGATE_ERROR_PAGE", "error_page"),
    ("FERROGATE_SECURITY_HEADERS", "security_headers"),
];

/// What the environment sets, and the variables whose values do not parse.
#[derive(Debug, Default)]
pub struct EnvLayer {
    pub layer: Layer,
    /// Kept against their option rather than failing at once: when the command line sets
    /// that option too, the variable is never used and must not stop the server (`gather`).
    pub errors: Vec<(&'static str, clap::Error)>,
}

impl EnvLayer {
    /// Reads the layer from `vars`, the environment as (name, value) pairs; `pid` is ours.
    pub fn read<I, K, V>(vars: I, pid: u32) -> EnvLayer
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        let vars: HashMap<OsString, OsString> = vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        let mut cmd = cli::env_command();
        let mut out = EnvLayer::default();
        for &(name, id) in ENV_VARS {
            let Some(value) = vars.get(OsStr::new(name)) else { continue };
            match parse_one(&mut cmd, id, value) {
                Ok(layer) => out.layer = layer.over(out.layer),
                Err(e) => out.errors.push((id, e)),
            }
        }
        let utf8 = |name: &str| vars.get(OsStr::new(name)).and_then(|v| v.to_str());
        // Read as uvicorn reads it; a value that is not UTF-8 is as good as unset, as before.
        out.layer.uvicorn_forwarded_allow_ips = utf8("FORWARDED_ALLOW_IPS").map(str::to_string);
        out.layer.xdg_state_home = utf8("XDG_STATE_HOME").map(Into::into);
        out.layer.home = utf8("HOME").map(Into::into);
        out.layer.runtime_directory = utf8("RUNTIME_DIRECTORY").map(Into::into);
        out.layer.xdg_runtime_dir = utf8("XDG_RUNTIME_DIR").map(Into::into);
        // sd_listen_fds(3): the sockets are ours only if LISTEN_PID names this process.
        let ours = utf8("LISTEN_PID").and_then(|p| p.parse::<u32>().ok()) == Some(pid);
        let n = utf8("LISTEN_FDS").and_then(|n| n.parse::<i32>().ok()).unwrap_or(0);
        out.layer.listen_fds = (ours && n > 0).then_some(n);
        out
    }
}

/// Parses one variable with the parser of the flag it stands for, so that
/// FERROGATE_WORKERS=many is refused with the very words of --workers many, and
/// FERROGATE_BIND splits on commas as --bind does.
fn parse_one(cmd: &mut Command, id: &str, value: &OsStr) -> Result<Layer, clap::Error> {
    let arg = cmd.get_arguments().find(|a| a.get_id() == id).expect("ENV_VARS names Cli fields").clone();
    let mut argv: Vec<OsString> = vec!["ferrogate".into()];
    match arg.get_long() {
        // A flag without a value (--factory, --reload): its variable says true or false.
        Some(long) if !arg.get_action().takes_values() => {
            // "true" or "false" only, and clap's words otherwise, as when clap read the variable.
            let on = clap::builder::BoolValueParser::new().parse_ref(cmd, Some(&arg), value)?;
            let mut layer = Layer::default();
            match id {
                "factory" => layer.factory = Some(on),
                "reload" => layer.reload = Some(on),
                "acme_staging" => layer.acme_staging = on.then_some(true),
                _ => unreachable!("a flag without a value that ENV_VARS does not know: {long}"),
            }
            return Ok(layer);
        }
        // --server-header[=BOOL] and the like take their value only after '='.
        Some(long) if arg.is_require_equals_set() => {
            let mut flag = OsString::from(format!("--{long}="));
            flag.push(value);
            argv.push(flag);
        }
        Some(long) => argv.extend([OsString::from(format!("--{long}")), value.into()]),
        // The positional APP.
        None => argv.extend([OsString::from("--"), value.into()]),
    }
    parse_argv(cmd, argv)
}

/// The layer that a command line of `cmd` (from `env_command`) sets. The file's values
/// come through here too (file_values.rs), so every source speaks clap's words.
pub(super) fn parse_argv(cmd: &mut Command, argv: Vec<OsString>) -> Result<Layer, clap::Error> {
    let matches = cmd.try_get_matches_from_mut(argv)?;
    let parsed = cli::Cli::from_arg_matches(&matches).map_err(|e| e.format(cmd))?;
    Ok(Layer::from(parsed))
}

