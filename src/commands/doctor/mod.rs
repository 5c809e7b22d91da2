//! `ferrogate doctor`: audits the host against the deployment tutorial's checklist (its
//! server-hardening steps, which ferrogate cannot do for you) and the server's own files,
//! and says in one line how to fix each finding. It takes the server's options, as
//! `ferrogate certs` does, so it checks that server's user, keys, sockets and logs.
//!
//! Every file is read through `Host`, so `--root DIR` audits a prepared tree instead of /.

mod bruteforce;
mod files;
mod firewall;
mod host;
mod iptables;
mod nft;
mod ports;
mod report;
mod rules;
mod ssh;
mod system;
#[cfg(test)]
mod testing;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::config::tls::CertSource;
use crate::config::{BindSpec, Config, Layer, LogTarget};
use host::Host;
pub use report::{Finding, Status};

const USAGE: &str = "usage: ferrogate doctor [--json] [--root DIR] [OPTIONS]

Audits this host against the deployment checklist: automatic security updates, a
non-root service user, SSH with keys only and no root login, a firewall that lets in
only SSH/HTTP/HTTPS, brute-force protection, what listens on public addresses, and the
server's own files (private keys, control socket, certificate expiry, free disk, clock).
Each check passes, warns or fails, with a one-line fix. Run it as root: other users
cannot read every file and process it looks at.

OPTIONS are the server's (--user, --state-dir, --ssl-certfile, --ssl-keyfile, --domain,
--log-file, --access-log-file, --control-socket, --uds, --bind, ..., or their FERROGATE_*
variables): give the same ones as to the server so that its files are checked.

  --json        print one JSON list of {check, status, finding, fix} instead
  --root DIR    read etc/, proc/, run/ and the server's files under DIR instead of /
                (to audit a prepared tree); free disk is measured there too

Exit status: 0 when every check passes, 1 when the worst finding is a warning, 2 when a
check fails (or an option is wrong).";

/// What the doctor needs to know about the server it checks, from its options.
#[derive(Clone, Debug, Default)]
pub struct Server {
    pub user: Option<String>,
    pub state_dir: PathBuf,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub control_socket: PathBuf,
    pub unix_sockets: Vec<PathBuf>,
    /// TCP ports it listens on beyond loopback: the firewall may open them.
    pub tcp_ports: Vec<u16>,
    pub log_files: Vec<PathBuf>,
}

impl Server {
    /// `state_dir` is used when the configuration has no TLS (then it has no state dir of
    /// its own, but certificates stored there still count).
    pub fn from_config(config: &Config, state_dir: PathBuf) -> Self {
        let tls = config.tls.as_ref();
        let (certfile, keyfile) = match tls.and_then(|t| t.source.as_ref()) {
            Some(CertSource::Files { certfile, keyfile, .. }) => (Some(certfile.clone()), Some(keyfile.clone())),
            _ => (None, None),
        };
        let mut tcp_ports = Vec::new();
        let mut unix_sockets = Vec::new();
        for bind in &config.bind {
            match bind {
                BindSpec::Tcp { host, port } if !is_loopback(host) => tcp_ports.push(*port),
                BindSpec::Unix { path, .. } => unix_sockets.push(path.clone()),
                _ => {}
            }
        }
        let mut log_files: Vec<PathBuf> = config.log.file.iter().cloned().collect();
        if let Some(LogTarget::File(path)) = &config.log.access_file {
            log_files.push(path.clone());
        }
        Server {
            user: config.service.user.clone(),
            state_dir: tls.map_or(state_dir, |t| t.state_dir.clone()),
            certfile,
            keyfile,
            control_socket: config.service.control_socket.clone(),
            unix_sockets,
            tcp_ports,
            log_files,
        }
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Every check, in the order of the tutorial's steps, then the server's own files.
pub fn audit(host: &Host, server: &Server) -> Vec<Finding> {
    let sshd = ssh::read(host);
    let sshd_finding = |check: &'static str, judge: fn(Option<&ssh::SshdConfig>) -> Finding| match &sshd {
        Ok(config) => judge(config.as_ref()),
        Err(e) => Finding::from_result(check, Err(e.clone())),
    };
    vec![
        Finding::from_result(system::UPDATES, system::updates(host)),
        Finding::from_result(system::SERVICE_USER, system::service_user(host, server)),
        sshd_finding(ssh::ROOT_LOGIN, ssh::root_login),
        sshd_finding(ssh::PASSWORDS, ssh::password_auth),
        Finding::from_result(firewall::CHECK, firewall::check(host, server)),
        Finding::from_result(bruteforce::CHECK, sshd.clone().and_then(|c| bruteforce::check(host, c.as_ref()))),
        Finding::from_result(ports::CHECK, ports::check(host, server)),
        Finding::from_result(files::KEYS, files::key_permissions(host, server)),
        Finding::from_result(files::SOCKETS, files::socket_permissions(host, server)),
        Finding::from_result(files::CERTS, files::certificates(host, server, SystemTime::now())),
        Finding::from_result(files::DISK, files::disk(host, server)),
        Finding::from_result(system::TIME, system::time_sync(host)),
    ]
}

pub fn run(args: &[String], env: Vec<(std::ffi::OsString, std::ffi::OsString)>) -> i32 {
    let mut json = false;
    let mut root = PathBuf::from("/");
    let mut rest = vec!["ferrogate".to_string()];
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => json = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return 0;
            }
            "--root" => match args.next() {
                Some(dir) => root = PathBuf::from(dir),
                None => {
                    eprintln!("error: --root needs a directory: the tree to audit instead of /");
                    return 2;
                }
            },
            other => match other.strip_prefix("--root=") {
                Some(dir) => root = PathBuf::from(dir),
                None => rest.push(arg.clone()),
            },
        }
    }
    if !root.is_dir() {
        eprintln!("error: --root {}: not a directory", root.display());
        return 2;
    }
    let layer = match super::server_options(rest, env) {
        Ok(layer) => layer,
        Err(code) => return code,
    };
    let state_dir = super::certs::fallback_state_dir(&layer);
    let layer = Layer { app: layer.app.clone().or_else(|| Some("doctor:none".into())), ..layer };
    let config = match layer.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let findings = audit(&Host::new(root), &Server::from_config(&config, state_dir));
    if json {
        println!("{}", report::json(&findings));
    } else {
        print!("{}", report::text(&findings));
    }
    report::exit_code(&findings)
}
