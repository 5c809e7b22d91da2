//! The layers end to end: command line and environment in, `Config` or error out. The
//! environment is always given here, never read from the test process.

use super::*;
use clap::CommandFactory;

/// Our pid as far as systemd's LISTEN_PID is concerned.
const PID: u32 = 4242;

fn gathered(args: &[&str], env: &[(&str, &str)]) -> Result<Layer, clap::Error> {
    let mut argv = vec!["ferrogate"];
    argv.extend_from_slice(args);
    gather(argv, env.iter().copied(), PID)
}

fn load(args: &[&str], env: &[(&str, &str)]) -> Result<Config, String> {
    gathered(args, env).map_err(|e| e.to_string())?.into_config().map_err(|e| e.to_string())
}

fn invalid(args: &[&str]) -> ConfigError {
    gathered(args, &[]).expect("the flags parse").into_config().expect_err("the configuration is refused")
}

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("fg-cfg-{}-{name}", std::process::id()))
}

#[test]
fn with_no_option_set_the_configuration_is_the_default() {
    let mut expected = Config::default();
    expected.app.target = "m:a".into();
    // Defaults that depend on others (APP) or on the process (root or not).
    expected.service.name = "m:a".into();
    // SAFETY: geteuid and getuid cannot fail and have no preconditions.
    let (is_root, uid) = unsafe { (libc::geteuid() == 0, libc::getuid()) };
    expected.service.control_socket = crate::config::default_control_socket(is_root, None, None, uid);
    expected.front.bans.state_file = tls::default_state_dir(is_root, None, None).join("bans.json");
    assert_eq!(format!("{:?}", load(&["m:a"], &[]).unwrap()), format!("{expected:?}"));
}

#[test]
fn uvicorn_style_flags_map_onto_config() {
    let c = load(&["main:app", "--host", "0.0.0.0", "--port", "9000", "--workers", "3", "--no-access-log", "--no-server-header"], &[]).unwrap();
    assert_eq!(c.bind, vec![BindSpec::Tcp { host: "0.0.0.0".into(), port: 9000 }]);
    assert_eq!(c.workers.count, 3);
    assert!(!c.log.access_log);
    assert!(!c.http.server_header);
    assert!(c.proxy.enabled);
}

#[test]
fn io_mode_auto_puts_the_io_on_the_loop_once_every_core_has_a_worker() {
    let io = |args: &[&str]| load(args, &[]).unwrap().workers.io;
    let cores = crate::config::cores().to_string();
    assert_eq!(io(&["m:a"]), IoPlace::Loop, "the default is a worker per core");
    assert_eq!(io(&["m:a", "--workers", &cores]), IoPlace::Loop);
    assert_eq!(io(&["m:a", "--workers", "1000"]), IoPlace::Loop);
    if crate::config::cores() > 1 {
        let fewer = (crate::config::cores() - 1).to_string();
        assert_eq!(io(&["m:a", "--workers", &fewer]), IoPlace::Thread, "a spare core for each worker's I/O thread");
        assert_eq!(io(&["m:a", "--workers", "1", "--io-mode", "auto"]), IoPlace::Thread);
    }
    assert_eq!(io(&["m:a", "--workers", "1", "--io-mode", "loop"]), IoPlace::Loop);
    assert_eq!(io(&["m:a", "--workers", "1000", "--io-mode", "thread"]), IoPlace::Thread);
    assert!(load(&["m:a", "--io-mode", "fibers"], &[]).unwrap_err().contains("auto, thread, loop"));
}

#[test]
fn binds_combine_uds_fd_and_bind() {
    let c = load(&["main:app", "--uds", "/tmp/a.sock", "--uds-mode", "660", "--fd", "7", "--bind", "[::1]:81,unix:/tmp/b.sock"], &[]).unwrap();
    assert_eq!(c.bind, vec![
        BindSpec::Unix { path: "/tmp/a.sock".into(), mode: Some(0o660) },
        BindSpec::Fd { fd: 7 },
        BindSpec::Tcp { host: "::1".into(), port: 81 },
        BindSpec::Unix { path: "/tmp/b.sock".into(), mode: Some(0o660) },
    ]);
}

#[test]
fn precedence_is_default_then_environment_then_command_line() {
    let env = [("FERROGATE_PORT", "9000"), ("FERROGATE_TIMEOUT", "7"), ("FERROGATE_HEADER", "x-env:1")];
    let from_env = load(&["m:a"], &env).unwrap();
    assert_eq!(from_env.bind, vec![BindSpec::Tcp { host: DEFAULT_HOST.into(), port: 9000 }]);
    assert_eq!(from_env.workers.timeout, 7);
    assert_eq!(from_env.http.default_headers, vec![("x-env".into(), "1".into())]);

    // Values equal to the defaults, given on the command line, still beat the environment.
    let cli = load(&["m:a", "--port", "8000", "--timeout", "30", "--header", "x-cli:2"], &env).unwrap();
    assert_eq!(cli.bind, vec![BindSpec::Tcp { host: DEFAULT_HOST.into(), port: DEFAULT_PORT }]);
    assert_eq!(cli.workers.timeout, 30);
    assert_eq!(cli.http.default_headers, vec![("x-cli".into(), "2".into())], "a list replaces the environment's");
}

#[test]
fn flag_pairs_take_the_last_word_and_beat_the_environment() {
    let read = |c: &Config, flag: &str| match flag {
        "proxy-headers" => c.proxy.enabled,
        "access-log" => c.log.access_log,
        "server-header" => c.http.server_header,
        "date-header" => c.http.date_header,
        _ => unreachable!(),
    };
    for (flag, var) in [
        ("proxy-headers", "FERROGATE_PROXY_HEADERS"),
        ("access-log", "FERROGATE_ACCESS_LOG"),
        ("server-header", "FERROGATE_SERVER_HEADER"),
        ("date-header", "FERROGATE_DATE_HEADER"),
    ] {
        let (on, off) = (format!("--{flag}"), format!("--no-{flag}"));
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], bool);
        let cases: &[Case] = &[
            (&[], &[], true),
            (&[&off], &[], false),
            (&[&on], &[], true),
            (&[&format!("{on}=false")], &[], false),
            (&[&format!("{on}=true")], &[], true),
            (&[&off, &on], &[], true),
            (&[&on, &off], &[], false),
            (&[], &[(var, "false")], false),
            (&[&on], &[(var, "false")], true),
            // Refused as a clap conflict before the environment became a layer of its own.
            (&[&off], &[(var, "true")], false),
        ];
        for (args, env, expected) in cases {
            let mut argv = vec!["m:a"];
            argv.extend_from_slice(args);
            let c = load(&argv, env).unwrap_or_else(|e| panic!("{argv:?} {env:?}: {e}"));
            assert_eq!(read(&c, flag), *expected, "{argv:?} with {env:?}");
        }
        let err = load(&["m:a"], &[(var, "yes")]).unwrap_err();
        assert!(err.contains(&format!("'yes' for '--{flag}[=")) && err.contains("[possible values: true, false]"), "{err}");
    }
}

#[test]
fn plain_flags_read_true_or_false_from_the_environment() {
    assert!(load(&["m:a"], &[("FERROGATE_RELOAD", "true")]).unwrap().workers.reload);
    assert!(!load(&["m:a"], &[("FERROGATE_RELOAD", "false")]).unwrap().workers.reload);
    assert!(load(&["m:a"], &[("FERROGATE_FACTORY", "true")]).unwrap().app.factory);
    let err = load(&["m:a"], &[("FERROGATE_FACTORY", "1")]).unwrap_err();
    assert!(err.contains("invalid value '1' for '--factory'") && err.contains("[possible values: true, false]"), "{err}");
    let err = load(&["m:a"], &[("FERROGATE_RELOAD", "")]).unwrap_err();
    assert!(err.contains("a value is required for '--reload'"), "{err}");
}

fn files(c: &Config) -> (&str, &str, Option<&str>) {
    match &c.tls.as_ref().expect("TLS is on").source {
        Some(tls::CertSource::Files { certfile, keyfile, password }) => (certfile.to_str().unwrap(), keyfile.to_str().unwrap(), password.as_deref()),
        other => panic!("not files: {other:?}"),
    }
}

fn acme(c: &Config) -> &tls::AcmeOptions {
    match &c.tls.as_ref().expect("TLS is on").source {
        Some(tls::CertSource::Acme(acme)) => acme,
        other => panic!("not ACME: {other:?}"),
    }
}

/// One value for every FERROGATE_* variable, and what it must do to the configuration.
#[allow(clippy::type_complexity)]
fn every_variable() -> Vec<(&'static str, &'static str, fn(&Config) -> bool)> {
    vec![
        ("FERROGATE_APP", "env:app", |c| c.app.target == "env:app"),
        ("FERROGATE_FACTORY", "true", |c| c.app.factory),
        ("FERROGATE_APP_DIR", "/srv", |c| c.app.app_dir == std::path::Path::new("/srv") && c.workers.reload_dirs == [PathBuf::from("/srv")]),
        ("FERROGATE_LIFESPAN", "on", |c| c.app.lifespan == LifespanMode::On),
        ("FERROGATE_ROOT_PATH", "/api", |c| c.app.root_path == "/api"),
        ("FERROGATE_ENV_FILE", "ENV_FILE", |c| c.worker_env.set == [("FG_FROM_FILE".to_string(), "1".to_string())]),
        ("FERROGATE_HOST", "0.0.0.0", |c| c.bind == [BindSpec::Tcp { host: "0.0.0.0".into(), port: DEFAULT_PORT }]),
        ("FERROGATE_PORT", "9", |c| c.bind == [BindSpec::Tcp { host: DEFAULT_HOST.into(), port: 9 }]),
        ("FERROGATE_UDS", "/tmp/u.sock", |c| c.bind == [BindSpec::Unix { path: "/tmp/u.sock".into(), mode: Some(crate::config::DEFAULT_UDS_MODE) }]),
        ("FERROGATE_UDS_MODE", "600", |c| matches!(c.bind[0], BindSpec::Tcp { .. })),
        ("FERROGATE_FD", "4", |c| c.bind == [BindSpec::Fd { fd: 4 }]),
        ("FERROGATE_BIND", "1.2.3.4:5,unix:/tmp/z", |c| c.bind == [BindSpec::Tcp { host: "1.2.3.4".into(), port: 5 }, BindSpec::Unix { path: "/tmp/z".into(), mode: Some(crate::config::DEFAULT_UDS_MODE) }]),
        ("FERROGATE_BACKLOG", "10", |c| c.backlog == 10),
        ("FERROGATE_WORKERS", "3", |c| c.workers.count == 3),
        ("FERROGATE_TIMEOUT", "7", |c| c.workers.timeout == 7),
        ("FERROGATE_TIMEOUT_GRACEFUL_SHUTDOWN", "8", |c| c.workers.graceful_timeout == 8),
        ("FERROGATE_LIMIT_MAX_REQUESTS", "9", |c| c.workers.max_requests == 9),
        ("FERROGATE_MAX_REQUESTS_JITTER", "4", |c| c.workers.max_requests_jitter == 4),
        ("FERROGATE_RELOAD", "true", |c| c.workers.reload),
        ("FERROGATE_RELOAD_DIR", "a,b", |c| c.workers.reload_dirs == [PathBuf::from("a"), PathBuf::from("b")]),
        ("FERROGATE_RELOAD_INCLUDE", "*.html", |c| c.workers.reload_include == ["*.html"]),
        ("FERROGATE_RELOAD_EXCLUDE", "*.tmp", |c| c.workers.reload_exclude == ["*.tmp"]),
        ("FERROGATE_RELOAD_DELAY", "2.5", |c| c.workers.reload_delay == 2.5),
        ("FERROGATE_IO_MODE", "thread", |c| c.workers.io == IoPlace::Thread),
        ("FERROGATE_LOOP", "asyncio", |c| c.app.event_loop == LoopChoice::Asyncio),
        ("FERROGATE_INTERFACE", "asgi3", |_| true),
        ("FERROGATE_HTTP", "h11", |c| c.http.protocols == crate::config::Protocols::H1),
        ("FERROGATE_H2_MAX_CONCURRENT_STREAMS", "7", |c| c.http.h2_max_concurrent_streams == 7),
        ("FERROGATE_WS", "none", |c| !c.ws.enabled),
        ("FERROGATE_WS_MAX_QUEUE", "3", |c| c.ws.max_queue == 3),
        ("FERROGATE_LOG_CONFIG", "log.json", |_| true),
        ("FERROGATE_SSL_CERTFILE", "/c.pem", |c| matches!(files(c), (certfile, keyfile, None) if certfile == "/c.pem" && keyfile == certfile) && c.bind_tls == [true]),
        ("FERROGATE_SSL_KEYFILE", "/k.pem", |c| files(c).1 == "/k.pem"),
        ("FERROGATE_SSL_KEYFILE_PASSWORD", "pw", |c| files(c).2 == Some("pw")),
        ("FERROGATE_SSL_CERT_REQS", "1", |c| c.tls.as_ref().unwrap().client_auth == tls::ClientAuth::Optional),
        ("FERROGATE_SSL_CA_CERTS", "/ca.pem", |c| c.tls.as_ref().unwrap().client_ca.as_deref() == Some(std::path::Path::new("/ca.pem"))),
        ("FERROGATE_DOMAIN", "example.com,www.example.com", |c| acme(c).certificates == [vec!["example.com".to_string(), "www.example.com".to_string()]]),
        ("FERROGATE_ACME_EMAIL", "a@b.c", |c| acme(c).email.as_deref() == Some("a@b.c")),
        ("FERROGATE_ACME_DIRECTORY", "https://ca/dir", |c| acme(c).directory == "https://ca/dir"),
        ("FERROGATE_ACME_STAGING", "true", |c| acme(c).directory == tls::LETS_ENCRYPT_STAGING),
        ("FERROGATE_ACME_CA_ROOT", "/r.pem", |c| acme(c).ca_root.as_deref() == Some(std::path::Path::new("/r.pem"))),
        ("FERROGATE_ACME_EAB_KID", "kid", |c| acme(c).eab == Some(("kid".into(), "key".into()))),
        ("FERROGATE_ACME_EAB_HMAC_KEY", "key", |c| acme(c).eab == Some(("kid".into(), "key".into()))),
        ("FERROGATE_ACME_CHALLENGE", "tls-alpn-01", |c| acme(c).challenge == tls::ChallengeChoice::TlsAlpn01),
        ("FERROGATE_HTTP_PORT", "8080", |c| c.bind[0] == BindSpec::Tcp { host: "0.0.0.0".into(), port: 8080 } && c.bind_tls[..2] == [false, true] && c.bind.len() == c.bind_tls.len()),
        ("FERROGATE_HTTPS_PORT", "8443", |c| c.bind[1] == BindSpec::Tcp { host: "0.0.0.0".into(), port: 8443 } && c.tls.as_ref().unwrap().https_port == 8443),
        ("FERROGATE_STATE_DIR", "/st", |c| c.tls.as_ref().unwrap().state_dir == std::path::Path::new("/st")),
        ("FERROGATE_HSTS", "false", |c| c.tls.as_ref().unwrap().hsts.is_none()),
        ("FERROGATE_REDIRECT", "false", |c| !c.tls.as_ref().unwrap().redirect),
        ("FERROGATE_TIMEOUT_KEEP_ALIVE", "11", |c| c.http.keep_alive_timeout == 11),
        ("FERROGATE_TIMEOUT_IO", "12", |c| c.http.io_timeout == 12),
        ("FERROGATE_LIMIT_CONCURRENCY", "13", |c| c.http.limit_concurrency == Some(13)),
        ("FERROGATE_MAX_HEADER_SIZE", "9000", |c| c.http.max_header_size == 9000),
        ("FERROGATE_MAX_HEADERS", "14", |c| c.http.max_headers == 14),
        ("FERROGATE_HEADER", "X-A:1, 2", |c| c.http.default_headers == [("x-a".to_string(), "1, 2".to_string())]),
        ("FERROGATE_SERVER_HEADER", "false", |c| !c.http.server_header),
        ("FERROGATE_STATIC", "/s=STATIC_DIR", |c| c.statics.mounts.len() == 1 && c.statics.mounts[0].prefix == "/s"),
        ("FERROGATE_STATIC_MAX_AGE", "15", |c| c.statics.max_age == Some(15)),
        ("FERROGATE_DATE_HEADER", "false", |c| !c.http.date_header),
        ("FERROGATE_PROXY_HEADERS", "false", |c| !c.proxy.enabled),
        ("FERROGATE_FORWARDED_ALLOW_IPS", "10.0.0.0/8", |c| c.proxy.trusted.contains("10.1.2.3".parse().unwrap())),
        ("FERROGATE_WS_MAX_SIZE", "16", |c| c.ws.max_size == 16),
        ("FERROGATE_WS_PING_INTERVAL", "0", |c| c.ws.ping_interval.is_none()),
        ("FERROGATE_WS_PING_TIMEOUT", "4", |c| c.ws.ping_timeout == Some(4.0)),
        ("FERROGATE_WS_PER_MESSAGE_DEFLATE", "false", |c| !c.ws.per_message_deflate),
        ("FERROGATE_LOG_LEVEL", "debug", |c| c.log.level == crate::config::LogLevel::Debug),
        ("FERROGATE_ACCESS_LOG", "false", |c| !c.log.access_log),
        ("FERROGATE_ACCESS_LOG_FORMAT", "$status $uri", |c| c.log.access_log_format == "$status $uri"),
        ("FERROGATE_LOG_FILE", "/var/log/f.log", |c| c.log.file.as_deref() == Some(std::path::Path::new("/var/log/f.log"))),
        ("FERROGATE_ACCESS_LOG_FILE", "-", |c| c.log.access_file == Some(crate::config::LogTarget::Stdout)),
        ("FERROGATE_LOG_FORMAT", "json", |c| c.log.format == crate::config::LogFormat::Json),
        // The file named must exist (an empty one sets nothing).
        ("FERROGATE_CONFIG", "CONFIG_FILE", |c| c.service.config_file.as_deref().is_some_and(|p| p.to_string_lossy().ends_with("every.toml"))),
        ("FERROGATE_USER", "www-data", |c| c.service.user.as_deref() == Some("www-data")),
        ("FERROGATE_GROUP", "adm", |c| c.service.group.as_deref() == Some("adm")),
        ("FERROGATE_UMASK", "027", |c| c.service.umask == Some(0o27)),
        ("FERROGATE_PID", "/run/f.pid", |c| c.service.pid_file.as_deref() == Some(std::path::Path::new("/run/f.pid"))),
        ("FERROGATE_NAME", "shop", |c| c.service.name == "shop"),
        ("FERROGATE_CONTROL_SOCKET", "/run/x.sock", |c| c.service.control_socket == std::path::Path::new("/run/x.sock")),
        ("FERROGATE_MAX_WORKER_MEMORY", "512", |c| c.service.max_worker_memory == Some(512 * 1024 * 1024)),
        ("FERROGATE_MAX_WORKER_LIFETIME", "60", |c| c.service.max_worker_lifetime == Some(std::time::Duration::from_secs(60))),
        ("FERROGATE_LIMIT_REQUEST_BODY", "10M", |c| c.front.body.default == Some(10 << 20)),
        ("FERROGATE_LIMIT_REQUEST_BODY_PATH", "/up=1G,/x=0", |c| c.front.body.for_path("/up/a") == Some(1 << 30) && c.front.body.for_path("/x") == None),
        ("FERROGATE_COMPRESS", "false", |c| !c.front.compress.enabled),
        ("FERROGATE_COMPRESS_LEVEL", "best", |c| c.front.compress.level == front::CompressLevel::Best),
        ("FERROGATE_COMPRESS_MIN_SIZE", "99", |c| c.front.compress.min_size == 99),
        ("FERROGATE_COMPRESS_TYPES", "text/html,application/*+json", |c| c.front.compress.types == ["text/html", "application/*+json"]),
        ("FERROGATE_COMPRESS_ENCODINGS", "gzip,br", |c| c.front.compress.encodings == [front::Encoding::Gzip, front::Encoding::Br]),
        ("FERROGATE_SERVER_NAME", "a.test,*.b.test", |c| c.front.hosts.names == [front::ServerName::Exact("a.test".into()), front::ServerName::Wildcard(".b.test".into())]),
        ("FERROGATE_UNKNOWN_HOST", "close", |c| c.front.hosts.unknown == front::UnknownHost::Close),
        ("FERROGATE_WWW_REDIRECT", "to-bare", |c| c.front.hosts.www == front::WwwRedirect::ToBare),
        ("FERROGATE_PROXY_PROTOCOL", "true", |c| c.front.proxy_protocol),
        ("FERROGATE_RATE_LIMIT", "300/m", |c| c.front.rate.default == Some(front::RateRule { per_second: 5.0, burst: 300 })),
        ("FERROGATE_RATE_LIMIT_BURST", "7", |c| c.front.rate.default.is_some_and(|r| r.burst == 7)),
        ("FERROGATE_RATE_LIMIT_PATH", "/login=5/m:2", |c| c.front.rate.paths[0].rule.burst == 2),
        ("FERROGATE_BAN_AFTER", "20", |c| c.front.bans.after == Some(20)),
        ("FERROGATE_BAN_WITHIN", "2m", |c| c.front.bans.within == std::time::Duration::from_secs(120)),
        ("FERROGATE_BAN_FOR", "1h", |c| c.front.bans.ban_for == std::time::Duration::from_secs(3600)),
        ("FERROGATE_BAN_STATUS", "404,429", |c| c.front.bans.statuses == [404, 429]),
        ("FERROGATE_BAN_ALLOW", "10.0.0.0/8,192.0.2.7", |c| c.front.bans.allowed("10.9.9.9".parse().unwrap()) && c.front.bans.allowed("192.0.2.7".parse().unwrap())),
        ("FERROGATE_ERROR_PAGE", "404=ERROR_PAGE", |c| c.front.error_pages.len() == 1 && c.front.error_pages[0].status == 404),
        ("FERROGATE_SECURITY_HEADERS", "true", |c| c.front.security_headers),
    ]
}

#[test]
fn every_ferrogate_variable_still_works() {
    let env_file = temp_path("every.env");
    std::fs::write(&env_file, "FG_FROM_FILE=1\n").unwrap();
    let config_file = temp_path("every.toml");
    std::fs::write(&config_file, "").unwrap();
    let static_dir = temp_path("every-static");
    std::fs::create_dir_all(&static_dir).unwrap();
    let error_page = temp_path("every-404.html");
    std::fs::write(&error_page, "gone").unwrap();
    let table = every_variable();
    let names: Vec<&str> = table.iter().map(|(name, _, _)| *name).collect();
    assert_eq!(names, ENV_VARS.iter().map(|(name, _)| *name).collect::<Vec<_>>(), "one case per variable, in ENV_VARS order");
    for (name, value, holds) in table {
        let value = value.replace("ENV_FILE", env_file.to_str().unwrap()).replace("STATIC_DIR", static_dir.to_str().unwrap()).replace("CONFIG_FILE", config_file.to_str().unwrap()).replace("ERROR_PAGE", error_page.to_str().unwrap());
        // Options that only make sense beside another get it on the command line.
        let args: &[&str] = match name {
            "FERROGATE_APP" => &[],
            "FERROGATE_SSL_CERTFILE" => &["m:a"],
            "FERROGATE_SSL_CERT_REQS" => &["m:a", "--ssl-certfile", "/c.pem", "--ssl-ca-certs", "/ca.pem"],
            n if n.starts_with("FERROGATE_SSL_") => &["m:a", "--ssl-certfile", "/c.pem"],
            "FERROGATE_RATE_LIMIT_BURST" => &["m:a", "--rate-limit", "5/s"],
            "FERROGATE_ACME_EAB_KID" => &["m:a", "--domain", "example.com", "--acme-eab-hmac-key", "key"],
            "FERROGATE_ACME_EAB_HMAC_KEY" => &["m:a", "--domain", "example.com", "--acme-eab-kid", "kid"],
            n if n.starts_with("FERROGATE_ACME_") || ["FERROGATE_HTTP_PORT", "FERROGATE_HTTPS_PORT", "FERROGATE_STATE_DIR", "FERROGATE_HSTS", "FERROGATE_REDIRECT"].contains(&n) => &["m:a", "--domain", "example.com"],
            _ => &["m:a"],
        };
        let c = load(args, &[(name, &value)]).unwrap_or_else(|e| panic!("{name}={value}: {e}"));
        assert!(holds(&c), "{name}={value} did not reach the configuration");
    }
    std::fs::remove_file(&env_file).unwrap();
    std::fs::remove_file(&config_file).unwrap();
    std::fs::remove_dir(&static_dir).unwrap();
    std::fs::remove_file(&error_page).unwrap();
}

#[test]
fn variables_are_named_after_their_flags_and_shown_in_the_help() {
    let cmd = help_command();
    for &(name, id) in ENV_VARS {
        let arg = cmd.get_arguments().find(|a| a.get_id() == id).unwrap_or_else(|| panic!("{name}: no option {id}"));
        let flag = arg.get_long().unwrap_or("app");
        assert_eq!(name, format!("FERROGATE_{}", flag.to_ascii_uppercase().replace('-', "_")));
        assert_eq!(arg.get_env(), Some(std::ffi::OsStr::new(name)));
    }
}

#[test]
fn a_bad_variable_names_its_flag_unless_the_command_line_overrides_it() {
    let err = load(&["m:a"], &[("FERROGATE_WORKERS", "many")]).unwrap_err();
    assert!(err.contains("invalid value 'many' for '--workers <N>'"), "{err}");
    assert_eq!(load(&["m:a", "--workers", "2"], &[("FERROGATE_WORKERS", "many")]).unwrap().workers.count, 2);
    // Values starting with '-' are values, as when clap read the variables.
    assert!(load(&["m:a"], &[("FERROGATE_TIMEOUT", "-1")]).unwrap_err().contains("'-1' for '--timeout <SECONDS>'"));
    assert_eq!(load(&["m:a"], &[("FERROGATE_ROOT_PATH", "-x")]).unwrap().app.root_path, "-x");
}

#[test]
fn app_is_required_unless_the_environment_gives_it() {
    let err = gathered(&[], &[]).unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    assert!(err.to_string().contains("<APP>"), "{err}");
    assert_eq!(load(&[], &[("FERROGATE_APP", "env:app")]).unwrap().app.target, "env:app");
    assert_eq!(load(&["cli:app"], &[("FERROGATE_APP", "env:app")]).unwrap().app.target, "cli:app");
}

#[test]
fn forwarded_allow_ips_as_uvicorn_reads_it() {
    let trusts = |c: Config, ip: &str| c.proxy.trusted.contains(ip.parse().unwrap());
    assert!(trusts(load(&["m:a"], &[("FORWARDED_ALLOW_IPS", "10.9.9.9")]).unwrap(), "10.9.9.9"));
    assert!(!trusts(load(&["m:a"], &[("FORWARDED_ALLOW_IPS", "10.9.9.9")]).unwrap(), "127.0.0.1"));
    let both = [("FORWARDED_ALLOW_IPS", "10.9.9.9"), ("FERROGATE_FORWARDED_ALLOW_IPS", "10.1.1.1")];
    assert!(trusts(load(&["m:a"], &both).unwrap(), "10.1.1.1"));
    assert!(trusts(load(&["m:a", "--forwarded-allow-ips", "10.2.2.2"], &both).unwrap(), "10.2.2.2"));
    // In --env-file it beats the inherited variable, and the flag beats both.
    let env_file = temp_path("ips.env");
    std::fs::write(&env_file, "FORWARDED_ALLOW_IPS=10.3.3.3\n").unwrap();
    let path = env_file.to_str().unwrap();
    assert!(trusts(load(&["m:a", "--env-file", path], &[("FORWARDED_ALLOW_IPS", "10.9.9.9")]).unwrap(), "10.3.3.3"));
    assert!(trusts(load(&["m:a", "--env-file", path, "--forwarded-allow-ips", "10.2.2.2"], &[]).unwrap(), "10.2.2.2"));
    std::fs::remove_file(&env_file).unwrap();
}

#[test]
fn env_file_variables_go_to_the_workers_not_into_our_environment() {
    let env_file = temp_path("workers.env");
    std::fs::write(&env_file, "FG_CFG_TEST_ONLY=one\nFG_CFG_TEST_ONLY=two\n").unwrap();
    let c = load(&["m:a", "--env-file", env_file.to_str().unwrap()], &[]).unwrap();
    std::fs::remove_file(&env_file).unwrap();
    assert_eq!(c.worker_env.set, vec![("FG_CFG_TEST_ONLY".into(), "one".into()), ("FG_CFG_TEST_ONLY".into(), "two".into())]);
    assert!(std::env::var_os("FG_CFG_TEST_ONLY").is_none(), "loading the configuration changed the process environment");
    let err = load(&["m:a", "--env-file", "/nonexistent/fg.env"], &[]).unwrap_err();
    assert!(err.starts_with("--env-file /nonexistent/fg.env:"), "{err}");
}

#[test]
fn systemd_sockets_are_taken_only_when_meant_for_us() {
    let ours = [("LISTEN_PID", "4242"), ("LISTEN_FDS", "2")];
    let c = load(&["m:a"], &ours).unwrap();
    assert_eq!(c.bind, vec![BindSpec::Fd { fd: 3 }, BindSpec::Fd { fd: 4 }]);
    assert_eq!(c.worker_env.unset, ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"]);
    let c = load(&["m:a", "--uds", "/tmp/s.sock"], &ours).unwrap();
    assert_eq!(c.bind.len(), 3, "systemd's sockets come after the ones asked for");
    let theirs = load(&["m:a"], &[("LISTEN_PID", "1"), ("LISTEN_FDS", "2")]).unwrap();
    assert_eq!(theirs.bind, Config::default().bind);
    assert!(theirs.worker_env.unset.is_empty());
}

#[test]
fn validation_errors_name_the_option_and_the_fix() {
    let cases: &[(&[&str], &str, &str)] = &[
        (&["main"], "APP", "e.g. main:app"),
        (&["m:a", "--workers", "0"], "--workers", "at least 1"),
        (&["m:a", "--header", "nocolon"], "--header", "must be NAME:VALUE, e.g. x-frame-options:DENY"),
        (&["m:a", "--header", "bad name:v"], "--header", "not a valid header name"),
        (&["m:a", "--bind", "nowhere"], "--bind", "write HOST:PORT"),
        (&["m:a", "--bind", "1.2.3.4:http"], "--bind", "not a port number"),
        (&["m:a", "--forwarded-allow-ips", "localhost"], "--forwarded-allow-ips", "write e.g. 10.0.0.1"),
        (&["m:a", "--access-log-format", "$nope"], "--access-log-format", "known: $remote_addr"),
        (&["m:a", "--max-header-size", "100"], "--max-header-size", "at least 8192 bytes"),
        (&["m:a", "--h11-max-incomplete-event-size", "100"], "--max-header-size", "at least 8192 bytes"),
        (&["m:a", "--static", "static"], "--static", "must be URL_PATH=DIR"),
        (&["m:a", "--static", "/s=/nonexistent/fg"], "--static", "create it or fix the path"),
        (&["m:a", "--ssl-keyfile", "k.pem"], "--ssl-keyfile", "needs --ssl-certfile"),
        (&["m:a", "--ssl-certfile", "c.pem", "--domain", "example.com"], "--ssl-certfile", "two ways to get a certificate"),
        (&["m:a", "--ssl-certfile", "c.pem", "--ssl-cert-reqs", "2"], "--ssl-cert-reqs", "give --ssl-ca-certs"),
        (&["m:a", "--ssl-certfile", "c.pem", "--ssl-cert-reqs", "9"], "--ssl-cert-reqs", "0 (none)"),
        (&["m:a", "--acme-email", "a@b.c"], "--acme-email", "add --domain NAME"),
        (&["m:a", "--domain", "localhost"], "--domain", "single-label names"),
        (&["m:a", "--domain", "example.com", "--port", "80"], "--port", "--https-port"),
        (&["m:a", "--domain", "example.com", "--acme-directory", "http://ca"], "--acme-directory", "https:// URL"),
        (&["m:a", "--domain", "example.com", "--acme-eab-kid", "k"], "--acme-eab-kid", "needs --acme-eab-hmac-key"),
        (&["m:a", "--interface", "wsgi"], "--interface", "only ASGI 3"),
        (&["m:a", "--env-file", "/nonexistent/fg.env"], "--env-file", "No such file"),
    ];
    for (args, option, fix) in cases {
        let e = invalid(args);
        assert_eq!(e.option, *option, "{args:?}: {e}");
        assert!(e.message.contains(option) && e.message.contains(fix), "{args:?}: {e}");
    }
    let tmp = std::env::temp_dir();
    let twice = format!("/s={}", tmp.display());
    let e = invalid(&["m:a", "--static", &twice, "--static", &format!("{twice}/")]);
    assert!(e.option == "--static" && e.message.contains("/s is mounted twice"), "{e}");
}

#[test]
fn values_below_their_floor_are_raised_as_before() {
    let c = load(&["m:a", "--timeout", "0", "--timeout-keep-alive", "0", "--timeout-io", "0", "--ws-max-queue", "0", "--reload-delay", "-1", "--ws-ping-timeout", "-3"], &[]).unwrap();
    assert_eq!((c.workers.timeout, c.http.keep_alive_timeout, c.http.io_timeout, c.ws.max_queue), (2, 1, 1, 1));
    assert_eq!((c.workers.reload_delay, c.ws.ping_timeout), (0.05, None));
}

#[test]
fn the_parser_has_no_defaults_and_reads_no_environment() {
    for arg in Cli::command().get_arguments() {
        assert!(arg.get_default_values().is_empty(), "--{:?} has a clap default", arg.get_long());
        assert!(arg.get_env().is_none(), "--{:?} reads the environment through clap", arg.get_long());
    }
}

/// The lines of `help` that document `--long`, up to the next option or section.
fn help_block(help: &str, long: &str) -> String {
    // Option lines start "  -h, --help" or "      --name"; section titles start unindented.
    let is_option_or_title = |l: &str| l.starts_with("  -") || l.starts_with("      --") || (!l.is_empty() && !l.starts_with(' '));
    let names = |l: &str| {
        let l = l.trim_start();
        // "-w, --workers <N>": the short spelling first.
        let l = if l.len() > 4 && l.starts_with('-') && &l[2..4] == ", " { &l[4..] } else { l };
        l == format!("--{long}") || l.starts_with(&format!("--{long} ")) || l.starts_with(&format!("--{long}["))
    };
    let mut lines = help.lines().skip_while(|l| !(is_option_or_title(l) && names(l)));
    let first = lines.next().unwrap_or_else(|| panic!("--{long} is not in the help"));
    std::iter::once(first).chain(lines.take_while(|l| !is_option_or_title(l))).collect::<Vec<_>>().join("\n")
}

#[test]
fn help_still_lists_every_default_and_variable() {
    let help = help_command().term_width(0).render_long_help().to_string();
    let cmd = help_command();
    for (id, value) in cli::help_defaults() {
        let long = cmd.get_arguments().find(|a| a.get_id() == id).and_then(|a| a.get_long()).unwrap();
        // clap quotes values that are empty or hold spaces.
        let shown = if value.is_empty() || value.contains(' ') { format!("{value:?}") } else { value.clone() };
        let block = help_block(&help, long);
        assert!(block.contains(&format!("[default: {shown}]")), "--{long} lacks [default: {shown}]:\n{block}");
    }
    for &(name, id) in ENV_VARS.iter().filter(|(_, id)| *id != "app") {
        let long = cmd.get_arguments().find(|a| a.get_id() == id).and_then(|a| a.get_long()).unwrap();
        assert!(help_block(&help, long).contains(&format!("[env: {name}=")), "--{long} lacks its variable");
    }
    // Defaults that are no single value are written in the doc comments; keep them true.
    assert!(help_block(&help, "workers").contains("[default: the number of CPU cores]"));
    assert!(help_block(&help, "forwarded-allow-ips").contains(&format!("[default: {DEFAULT_FORWARDED_ALLOW_IPS}]")));
    assert!(help_block(&help, "reload-include").contains(&format!("default {}", Config::default().workers.reload_include.join(", "))));
    assert!(help_block(&help, "app-dir").contains("[default: .]"));
    assert!(help_command().render_help().to_string().contains("[default: 8000]"), "-h lists defaults too");
}

#[test]
fn the_defaults_the_help_shows_are_the_real_ones() {
    let cmd = help_command();
    let nothing = format!("{:?}", load(&["m:a"], &[]).unwrap());
    let ids: Vec<&str> = cli::help_defaults().iter().map(|(id, _)| *id).collect();
    // The options that showed a [default: ...] when clap held the defaults.
    assert_eq!(ids, [
        "app_dir", "lifespan", "root_path", "host", "port", "backlog", "timeout", "timeout_graceful_shutdown",
        "limit_max_requests", "max_requests_jitter", "reload_delay", "io_mode", "event_loop", "interface", "http", "h2_max_concurrent_streams", "ws",
        "ws_max_queue", "timeout_keep_alive", "timeout_io", "max_header_size", "max_headers", "server_header",
        "date_header", "proxy_headers", "ws_max_size", "ws_ping_interval", "ws_ping_timeout",
        "ws_per_message_deflate", "log_level", "access_log", "access_log_format", "log_format",
        // The front's.
        "compress_level", "compress_min_size", "compress_encodings", "unknown_host", "www_redirect",
        "proxy_protocol", "ban_within", "ban_for", "ban_status", "security_headers",
    ]);
    for (id, value) in cli::help_defaults() {
        let long = cmd.get_arguments().find(|a| a.get_id() == id).and_then(|a| a.get_long()).unwrap();
        let given = format!("--{long}={value}");
        let c = load(&["m:a", &given], &[]).unwrap_or_else(|e| panic!("{given}: {e}"));
        assert_eq!(format!("{c:?}"), nothing, "{given} is not what leaving --{long} out gives");
    }
}

#[test]
fn help_flags_show_the_documented_help() {
    for flag in ["--help", "-h"] {
        let err = gathered(&["m:a", flag], &[("FERROGATE_WORKERS", "many")]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayHelp);
        assert_eq!(err.exit_code(), 0);
        let text = err.render().to_string();
        assert!(text.contains("[default: 8000]") && text.contains("[env: FERROGATE_WORKERS="), "{flag}:\n{text}");
    }
}

#[test]
fn master_only_settings_are_not_sent_to_workers() {
    let mut c = load(&["m:a", "--backlog", "7", "--workers", "5", "--timeout", "9", "--reload", "--reload-dir", "/src", "--reload-exclude", "*.tmp", "--graceful-timeout", "4", "--limit-max-requests", "6"], &[]).unwrap();
    c.worker_env.set.push(("SECRET".into(), "x".into()));
    let json = serde_json::to_string(&c).unwrap();
    for key in ["backlog", "count", "\"timeout\"", "reload", "worker_env", "SECRET"] {
        assert!(!json.contains(key), "{key} is sent to workers: {json}");
    }
    let worker: Config = serde_json::from_str(&json).unwrap();
    assert_eq!((worker.workers.graceful_timeout, worker.workers.max_requests), (4, 6));
    assert_eq!(format!("{:?}{:?}{:?}", worker.http, worker.ws, worker.log), format!("{:?}{:?}{:?}", c.http, c.ws, c.log));
    assert_eq!((worker.app.target, worker.bind), (c.app.target, c.bind));
}

#[test]
fn warnings_are_for_ignored_options() {
    assert!(gathered(&["m:a"], &[]).unwrap().warnings().is_empty());
    let layer = gathered(&["m:a"], &[("FERROGATE_LOG_CONFIG", "log.json")]).unwrap();
    assert!(layer.warnings()[0].starts_with("--log-config is ignored"));
    let said = |args: &[&str]| gathered(args, &[]).unwrap().warnings();
    assert_eq!(said(&["m:a", "--use-colors"]), ["--use-colors is ignored: ferrogate's log lines have no colors"]);
    assert_eq!(said(&["m:a", "--no-use-colors"]), ["--no-use-colors is ignored: ferrogate's log lines have no colors"]);
    assert_eq!(said(&["m:a", "--http", "h11"]), ["--http h11 means --http h1 here: HTTP/1.1 only, as uvicorn speaks (ferrogate's parser is its own); --http auto adds HTTP/2"]);
    // The protocol choices of ferrogate's own ask for nothing it does not do.
    for choice in ["auto", "h1", "h2"] {
        assert!(said(&["m:a", "--http", choice]).is_empty());
    }
}

#[test]
fn http_protocol_choices_and_their_alpn() {
    use crate::config::Protocols;
    let config = |args: &[&str]| gathered(args, &[]).unwrap().into_config();
    assert_eq!(config(&["m:a"]).unwrap().http.protocols, Protocols::Auto);
    assert_eq!(config(&["m:a", "--http", "h2"]).unwrap().http.protocols, Protocols::H2);
    assert_eq!(config(&["m:a", "--http", "httptools"]).unwrap().http.protocols, Protocols::H1);
    assert_eq!(Protocols::Auto.alpn(), [b"h2".to_vec(), b"http/1.1".to_vec()], "h2 preferred, HTTP/1.1 kept");
    assert_eq!(Protocols::H1.alpn(), [b"http/1.1".to_vec()]);
    assert_eq!(Protocols::H2.alpn(), [b"h2".to_vec()]);
    let refused = config(&["m:a", "--h2-max-concurrent-streams", "0"]).unwrap_err().to_string();
    assert!(refused.contains("--h2-max-concurrent-streams") && refused.contains("at least 1"), "{refused}");
}
