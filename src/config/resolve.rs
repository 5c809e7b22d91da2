//! The stacked layer becomes the typed `Config`: the defaults fill whatever no layer set,
//! the raw strings (--bind, --header, --static, --env-file, ...) are parsed, and
//! `Config::validate` runs last. Nothing here touches the process environment: what the
//! workers' environment needs (--env-file's variables, systemd's LISTEN_* removed) is
//! carried in `Config::worker_env` for the master to apply when it spawns them.

use super::*;

/// Variables of systemd's socket activation: once the master took the sockets, the
/// workers (and whatever the app spawns) must not claim them again.
const LISTEN_VARS: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

impl Layer {
    /// What the user should know about the options before the server starts.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.log_config.is_some() {
            out.push("--log-config is ignored: ferrogate writes its own log lines (see --access-log-format and --log-level)".into());
        }
        if let Some(on) = self.use_colors {
            let flag = if on { "--use-colors" } else { "--no-use-colors" };
            out.push(format!("{flag} is ignored: ferrogate's log lines have no colors"));
        }
        if let Some(v) = &self.ssl_version {
            out.push(format!("--ssl-version {v} is ignored: ferrogate speaks TLS 1.2 and 1.3, nothing older"));
        }
        if self.ssl_ciphers.is_some() {
            out.push("--ssl-ciphers is ignored: ferrogate offers Mozilla's \"intermediate\" suites (AES-GCM and ChaCha20-Poly1305 with forward secrecy)".into());
        }
        if let Some(class) = &self.worker_class {
            out.push(format!("--worker-class {class} is ignored: ferrogate's workers are its own (an asyncio loop fed by a Rust I/O thread), as uvicorn's UvicornWorker without gunicorn"));
        }
        if let Some(http) = self.http.as_deref().filter(|h| matches!(*h, "h11" | "httptools")) {
            out.push(format!("--http {http} means --http h1 here: HTTP/1.1 only, as uvicorn speaks (ferrogate's parser is its own); --http auto adds HTTP/2"));
        }
        out
    }

    /// --control-socket, or where it is by default for this process: the server and the
    /// `ferrogate status|reload|...` commands work it out alike.
    pub fn control_socket_path(&self) -> PathBuf {
        if let Some(path) = &self.control_socket {
            return path.clone();
        }
        // SAFETY: geteuid and getuid cannot fail and have no preconditions.
        let (is_root, uid) = unsafe { (libc::geteuid() == 0, libc::getuid()) };
        // systemd joins several RuntimeDirectory= paths with ':'.
        let runtime_dir = self.runtime_directory.as_ref().and_then(|p| p.to_str()).and_then(|s| s.split(':').next()).map(PathBuf::from);
        default_control_socket(is_root, runtime_dir, self.xdg_runtime_dir.clone(), uid)
    }

    /// Builds and validates the configuration, or says which option is wrong and how to fix it.
    pub fn into_config(mut self) -> Result<Config, ConfigError> {
        let d = Config::default();
        // SAFETY: geteuid cannot fail and has no preconditions.
        let is_root = unsafe { libc::geteuid() } == 0;
        let control_socket = self.control_socket_path();
        let state_dir = tls::default_state_dir(is_root, self.xdg_state_home.take(), self.home.take());
        // --state-dir holds the ban list too, with or without TLS.
        let state_dir = self.state_dir.clone().unwrap_or(state_dir);
        let tls = tls::resolve(&mut self, state_dir.clone())?;
        let domains: Vec<String> = match tls.tls.as_ref().and_then(|t| t.source.as_ref()) {
            Some(tls::CertSource::Acme(acme)) => acme.certificates.iter().flatten().cloned().collect(),
            _ => Vec::new(),
        };
        let front = super::resolve_front::resolve(&mut self, &domains, &state_dir)?;
        let env_file = match &self.env_file {
            Some(path) => load_env_file(path).map_err(|e| ConfigError::new("--env-file", e))?,
            None => Vec::new(),
        };

        let mut bind = Vec::new();
        let uds_mode = Some(self.uds_mode.unwrap_or(DEFAULT_UDS_MODE));
        if let Some(path) = self.uds {
            bind.push(BindSpec::Unix { path, mode: uds_mode });
        }
        if let Some(fd) = self.fd {
            bind.push(BindSpec::Fd { fd });
        }
        for b in self.bind.iter().flatten() {
            match parse_bind(b).map_err(|e| ConfigError::new("--bind", format!("--bind {e}")))? {
                BindSpec::Unix { path, .. } => bind.push(BindSpec::Unix { path, mode: uds_mode }),
                spec => bind.push(spec),
            }
        }
        let mut unset = Vec::new();
        if let Some(n) = self.listen_fds {
            bind.extend((3..3 + n).map(|fd| BindSpec::Fd { fd }));
            unset.extend(LISTEN_VARS.map(String::from));
        }
        let mut bind_tls = vec![tls.given_binds_tls; bind.len()];
        if !tls.binds.is_empty() {
            // --domain's listeners, on --host: the given ones stay, as plain HTTP.
            for (spec, secure) in tls.binds {
                bind.push(spec);
                bind_tls.push(secure);
            }
        } else if bind.is_empty() {
            bind_tls.push(tls.given_binds_tls);
            // --host and --port describe the one listener used when no other is asked for.
            bind.push(BindSpec::Tcp {
                host: self.host.unwrap_or_else(|| DEFAULT_HOST.into()),
                port: self.port.unwrap_or(DEFAULT_PORT),
            });
        }

        let mut default_headers = Vec::new();
        for h in self.header.iter().flatten() {
            default_headers.push(parse_header(h).map_err(|e| ConfigError::new("--header", e))?);
        }
        // uvicorn's FORWARDED_ALLOW_IPS counts below the flag and FERROGATE_FORWARDED_ALLOW_IPS;
        // in --env-file it beats the inherited one, as when the file was loaded into the environment.
        let from_env_file = env_file.iter().rev().find(|(k, _)| k == "FORWARDED_ALLOW_IPS").map(|(_, v)| v.clone());
        let trusted = match self.forwarded_allow_ips.or(from_env_file).or(self.uvicorn_forwarded_allow_ips) {
            Some(spec) => TrustedPeers::parse(&spec)
                .map_err(|e| ConfigError::new("--forwarded-allow-ips", format!("--forwarded-allow-ips: {e}")))?,
            None => d.proxy.trusted,
        };
        if let Some(interface @ ("asgi2" | "wsgi")) = self.interface.as_deref() {
            return Err(ConfigError::new("--interface", format!(
                "--interface {interface}: only ASGI 3 applications are served for now"
            )));
        }
        let mut mounts = Vec::new();
        for spec in self.static_mounts.iter().flatten() {
            mounts.push(StaticMount::parse(spec).map_err(|e| ConfigError::new("--static", format!("--static {e}")))?);
        }

        let log_target = |p: PathBuf, dash: Option<LogTarget>| if p.as_os_str() == "-" { dash } else { Some(LogTarget::File(p)) };
        let target = self.app.unwrap_or(d.app.target);
        let app_dir = self.app_dir.unwrap_or(d.app.app_dir);
        // 0 or less turns WebSocket pings (or their timeout) off.
        let positive = |v: f64| (v > 0.0).then_some(v);
        let workers = self.workers.unwrap_or(d.workers.count);
        let config = Config {
            bind,
            bind_tls,
            tls: tls.tls,
            backlog: self.backlog.unwrap_or(d.backlog),
            workers: WorkersConfig {
                count: workers,
                // Heartbeats come every second: less than 2 s would kill healthy workers.
                timeout: self.timeout.unwrap_or(d.workers.timeout).max(2),
                graceful_timeout: self.timeout_graceful_shutdown.unwrap_or(d.workers.graceful_timeout),
                max_requests: self.limit_max_requests.unwrap_or(d.workers.max_requests),
                max_requests_jitter: self.max_requests_jitter.unwrap_or(d.workers.max_requests_jitter),
                reload: self.reload.unwrap_or(d.workers.reload),
                reload_dirs: self.reload_dir.filter(|v| !v.is_empty()).unwrap_or_else(|| vec![app_dir.clone()]),
                reload_include: self.reload_include.filter(|v| !v.is_empty()).unwrap_or(d.workers.reload_include),
                reload_exclude: self.reload_exclude.unwrap_or(d.workers.reload_exclude),
                reload_delay: self.reload_delay.unwrap_or(d.workers.reload_delay).max(0.05),
                io: self.io_mode.unwrap_or_default().place(workers),
            },
            app: AppConfig {
                target: target.clone(),
                factory: self.factory.unwrap_or(d.app.factory),
                app_dir,
                lifespan: self.lifespan.unwrap_or(d.app.lifespan),
                root_path: self.root_path.unwrap_or(d.app.root_path),
                event_loop: self.event_loop.unwrap_or(d.app.event_loop),
            },
            http: HttpConfig {
                keep_alive_timeout: self.timeout_keep_alive.unwrap_or(d.http.keep_alive_timeout).max(1),
                io_timeout: self.timeout_io.unwrap_or(d.http.io_timeout).max(1),
                limit_concurrency: self.limit_concurrency.or(d.http.limit_concurrency),
                // uvicorn's --h11-max-incomplete-event-size is the same limit: the smaller wins.
                max_header_size: self
                    .h11_max_incomplete_event_size
                    .unwrap_or(usize::MAX)
                    .min(self.max_header_size.unwrap_or(d.http.max_header_size)),
                max_headers: self.max_headers.unwrap_or(d.http.max_headers),
                server_header: self.server_header.unwrap_or(d.http.server_header),
                date_header: self.date_header.unwrap_or(d.http.date_header),
                default_headers,
                protocols: match self.http.as_deref() {
                    None => d.http.protocols,
                    Some(name) => Protocols::from_name(name).ok_or_else(|| ConfigError::new("--http", format!("--http {name:?} is not a protocol choice: use auto, h1 or h2")))?,
                },
                h2_max_concurrent_streams: match self.h2_max_concurrent_streams {
                    None => d.http.h2_max_concurrent_streams,
                    Some(0) => return Err(ConfigError::new("--h2-max-concurrent-streams", "--h2-max-concurrent-streams must be at least 1 (with 0 a client could open no stream at all); the default is 100")),
                    Some(n) => n,
                },
            },
            proxy: ProxyConfig { enabled: self.proxy_headers.unwrap_or(d.proxy.enabled), trusted },
            ws: WsConfig {
                enabled: self.ws.map_or(d.ws.enabled, |ws| ws != "none"),
                max_size: self.ws_max_size.unwrap_or(d.ws.max_size),
                max_queue: self.ws_max_queue.unwrap_or(d.ws.max_queue).max(1),
                ping_interval: self.ws_ping_interval.map_or(d.ws.ping_interval, positive),
                ping_timeout: self.ws_ping_timeout.map_or(d.ws.ping_timeout, positive),
                per_message_deflate: self.ws_per_message_deflate.unwrap_or(d.ws.per_message_deflate),
            },
            statics: StaticConfig { mounts, max_age: self.static_max_age.or(d.statics.max_age) },
            log: LogConfig {
                level: self.log_level.unwrap_or(d.log.level),
                access_log: self.access_log.unwrap_or(d.log.access_log),
                access_log_format: self.access_log_format.unwrap_or(d.log.access_log_format),
                file: self.log_file.and_then(|p| log_target(p, None)).map(|t| match t {
                    LogTarget::File(p) => p,
                    LogTarget::Stdout => unreachable!("`-` means stderr for the server's log"),
                }),
                access_file: self.access_log_file.and_then(|p| log_target(p, Some(LogTarget::Stdout))),
                format: self.log_format.unwrap_or(d.log.format),
            },
            service: ServiceConfig {
                name: self.name.unwrap_or_else(|| target.clone()),
                user: self.user,
                group: self.group,
                umask: self.umask,
                pid_file: self.pid_file,
                control_socket,
                max_worker_memory: match self.max_worker_memory {
                    Some(0) => return Err(ConfigError::new("--max-worker-memory", "--max-worker-memory must be a number of MB above 0, e.g. 512 (leave it out for no limit)")),
                    mb => mb.map(|mb| mb * 1024 * 1024),
                },
                max_worker_lifetime: match self.max_worker_lifetime {
                    Some(0) => return Err(ConfigError::new("--max-worker-lifetime", "--max-worker-lifetime must be a number of seconds above 0, e.g. 86400 (leave it out for no limit)")),
                    secs => secs.map(std::time::Duration::from_secs),
                },
                config_file: self.config,
            },
            front,
            worker_env: WorkerEnv { set: env_file, unset },
        };
        config.validate()?;
        Ok(config)
    }
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

/// Parses one --header value into a lowercase name and its value.
fn parse_header(h: &str) -> Result<(String, String), String> {
    let (name, value) = h
        .split_once(':')
        .ok_or_else(|| format!("--header '{h}' must be NAME:VALUE, e.g. x-frame-options:DENY"))?;
    http::HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("--header '{h}': '{name}' is not a valid header name"))?;
    http::HeaderValue::from_str(value.trim())
        .map_err(|_| format!("--header '{h}': the value has characters a header cannot carry"))?;
    Ok((name.trim().to_ascii_lowercase(), value.trim().to_string()))
}
