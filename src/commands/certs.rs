//! `ferrogate certs list|renew|revoke`: certbot's commands, on the state directory the
//! server uses. They take the server's own options (--domain, --acme-*, --state-dir, or
//! the FERROGATE_* variables), so the same unit file or shell line drives both.
//!
//! `renew` orders under the state directory's lock, as the server does. The challenge
//! answers are files in the state directory: a running server's workers serve them, and
//! when no server runs, `renew` answers HTTP-01 itself on --http-port (certbot's
//! "standalone"). A running server serves what `renew` stored within RECHECK (10 s).
//! Its orders use `Validation::Fresh`: run by hand, it is a check that validation
//! works, which a validation the CA reused would not be.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::config::tls::{AcmeOptions, CertSource, LETS_ENCRYPT, LETS_ENCRYPT_STAGING};
use crate::config::{BindSpec, Config, Layer};
use crate::tls::acme::{self, AcmeSettings, renew};
use crate::tls::store::{self, StateLock, Stored};

const USAGE: &str = "usage: ferrogate certs list [OPTIONS]
       ferrogate certs renew [--force] [--dry-run] [OPTIONS]
       ferrogate certs revoke NAME [OPTIONS]

The certificates of `ferrogate --domain ...`, in its --state-dir. OPTIONS are the
server's (--domain, --acme-directory, --acme-ca-root, --state-dir, --http-port, ...,
or their FERROGATE_* variables): give the same ones as to the server.

  list             names, expiry, issuer and next renewal of every stored certificate
  renew            order the certificates that are due (or all, with --force); a
                   running server serves the new ones within seconds. The challenge
                   runs every time: a validation the CA still holds for the account
                   is deactivated first, so a success means validation works now
    --force        renew even if not due
    --dry-run      order from the staging CA (Let's Encrypt's, unless --acme-directory
                   names another) and store nothing: checks DNS, ports and the CA
  revoke NAME      revoke the certificate that covers NAME and delete it; a running
                   server orders a new one";

pub fn run(args: &[String], env: Vec<(std::ffi::OsString, std::ffi::OsString)>) -> i32 {
    let Some(action) = args.first().map(String::as_str) else {
        eprintln!("{USAGE}");
        return 2;
    };
    let mut force = false;
    let mut dry_run = false;
    let mut revoke_name = None;
    let mut rest = vec!["ferrogate".to_string()];
    for arg in &args[1..] {
        match arg.as_str() {
            "--force" if action == "renew" => force = true,
            "--dry-run" if action == "renew" => dry_run = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return 0;
            }
            name if action == "revoke" && revoke_name.is_none() && !name.starts_with('-') && !name.contains(':') => revoke_name = Some(name.to_string()),
            _ => rest.push(arg.clone()),
        }
    }
    let layer = match super::server_options(rest, env) {
        Ok(layer) => layer,
        Err(code) => return code,
    };
    let state_dir = fallback_state_dir(&layer);
    let layer = Layer { app: layer.app.clone().or_else(|| Some("certs:none".into())), ..layer };
    let config = match layer.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let acme = match config.tls.as_ref().and_then(|t| t.source.as_ref()) {
        Some(CertSource::Acme(options)) => Some((options.clone(), config.tls.as_ref().map(|t| t.state_dir.clone()).unwrap_or(state_dir.clone()))),
        _ => None,
    };
    match (action, acme) {
        ("list", Some((_, dir))) => list(&dir),
        ("list", None) => list(&state_dir),
        ("renew", Some((options, dir))) => block_on(renew_all(&config, &options, &dir, force, dry_run)),
        ("revoke", Some((options, dir))) => match revoke_name {
            Some(name) => block_on(revoke(&options, &dir, &name)),
            None => {
                eprintln!("error: ferrogate certs revoke NAME: which certificate? (a name it covers)");
                2
            }
        },
        ("renew" | "revoke", None) => {
            eprintln!("error: ferrogate certs {action} needs the server's --domain (and --acme-* options): which certificates, from which CA");
            2
        }
        (other, _) => {
            eprintln!("error: unknown action '{other}'\n{USAGE}");
            2
        }
    }
}

/// The state directory `list` reads when no --domain is given: --state-dir or the default.
pub(crate) fn fallback_state_dir(layer: &Layer) -> PathBuf {
    // SAFETY: geteuid cannot fail and has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    layer.state_dir.clone().unwrap_or_else(|| crate::config::tls::default_state_dir(is_root, layer.xdg_state_home.clone(), layer.home.clone()))
}

fn block_on(f: impl std::future::Future<Output = i32>) -> i32 {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(f),
        Err(e) => {
            eprintln!("error: cannot start a runtime: {e}");
            1
        }
    }
}

fn list(state_dir: &Path) -> i32 {
    let stored = store::list(state_dir);
    if stored.is_empty() {
        println!("No certificates in {}", state_dir.display());
        return 0;
    }
    println!("Certificates in {}:", state_dir.display());
    println!("{:<40} {:<31} {:>9}  {:<31} ISSUER", "NAMES", "NOT AFTER", "DAYS LEFT", "NEXT RENEWAL");
    let now = SystemTime::now();
    for s in stored {
        let m = &s.meta;
        let days = match m.not_after().duration_since(now) {
            Ok(left) => (left.as_secs() / 86_400).to_string(),
            Err(_) => "EXPIRED".into(),
        };
        let next = renew::renew_at(m.not_before(), m.not_after(), None, 0);
        let next = if next <= now { "due now".to_string() } else { httpdate::fmt_http_date(next) };
        println!("{:<40} {:<31} {:>9}  {:<31} {}", m.names.join(","), httpdate::fmt_http_date(m.not_after()), days, next, m.issuer);
    }
    0
}

async fn renew_all(config: &Config, options: &AcmeOptions, state_dir: &Path, force: bool, dry_run: bool) -> i32 {
    let mut settings = crate::master::acme::settings(options, state_dir);
    settings.validation = acme::Validation::Fresh;
    if dry_run && settings.directory == LETS_ENCRYPT {
        settings.directory = LETS_ENCRYPT_STAGING.into();
    }
    let mut responder = None;
    let mut failed = 0;
    for names in &options.certificates {
        let stored = store::load(state_dir, names).ok().flatten();
        if !force && !dry_run && stored.as_ref().is_some_and(|s| !due(s)) {
            let s = stored.as_ref().expect("checked");
            println!("{}: not due (renewal from {}); --force renews anyway", names.join(", "), httpdate::fmt_http_date(renew::renew_at(s.meta.not_before(), s.meta.not_after(), None, 0)));
            continue;
        }
        let lock = match StateLock::lock(state_dir).await {
            Ok(lock) => lock,
            Err(e) => {
                eprintln!("error: cannot lock {}: {e}", state_dir.display());
                return 1;
            }
        };
        if responder.is_none() {
            responder = Some(standalone_http01(config, state_dir).await);
        }
        match order(&settings, names, dry_run).await {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("error: {}: {e}", names.join(", "));
                failed += 1;
            }
        }
        drop(lock);
    }
    if failed > 0 { 1 } else { 0 }
}

fn due(s: &Stored) -> bool {
    renew::renew_at(s.meta.not_before(), s.meta.not_after(), None, 0) <= SystemTime::now()
}

async fn order(settings: &AcmeSettings, names: &[String], dry_run: bool) -> Result<String, acme::AcmeError> {
    let issued = acme::issue(settings, names).await?;
    if dry_run {
        return Ok(format!("{}: the dry run got a certificate from {} (serial {}); nothing stored", names.join(", "), settings.directory, issued.serial));
    }
    store::save(&settings.state_dir, &issued).map_err(|e| acme::AcmeError::State(format!("cannot store the certificate: {e}")))?;
    Ok(format!(
        "{}: renewed (serial {}, valid until {}); a running server serves it within {} s",
        names.join(", "),
        issued.serial,
        httpdate::fmt_http_date(issued.not_after),
        crate::master::acme::RECHECK.as_secs()
    ))
}

async fn revoke(options: &AcmeOptions, state_dir: &Path, name: &str) -> i32 {
    let settings = crate::master::acme::settings(options, state_dir);
    let name = name.to_ascii_lowercase();
    let Some(stored) = store::list(state_dir).into_iter().find(|s| s.meta.names.contains(&name)) else {
        eprintln!("error: no stored certificate covers {name} in {}", state_dir.display());
        return 1;
    };
    let _lock = match StateLock::lock(state_dir).await {
        Ok(lock) => lock,
        Err(e) => {
            eprintln!("error: cannot lock {}: {e}", state_dir.display());
            return 1;
        }
    };
    if let Err(e) = acme::revoke(&settings, &stored.chain_pem).await {
        eprintln!("error: revoking {}: {e}", stored.meta.names.join(", "));
        return 1;
    }
    match store::cert_dir(state_dir, &stored.meta.names).map(std::fs::remove_dir_all) {
        Ok(Ok(())) => {
            println!("{}: revoked (serial {}) and deleted; a running server orders a new one", stored.meta.names.join(", "), stored.meta.serial);
            0
        }
        Ok(Err(e)) => {
            eprintln!("error: revoked, but cannot delete it: {e}");
            1
        }
        Err(e) => {
            eprintln!("error: revoked, but cannot delete it: {e}");
            1
        }
    }
}

/// When no server holds --http-port, answer HTTP-01 there for as long as `renew`
/// runs (certbot's "standalone"); when one does, its workers answer.
async fn standalone_http01(config: &Config, state_dir: &Path) -> Option<tokio::task::JoinHandle<()>> {
    let (host, port) = config.bind.iter().zip(&config.bind_tls).find_map(|(b, tls)| match b {
        BindSpec::Tcp { host, port } if !tls => Some((host.clone(), *port)),
        _ => None,
    })?;
    let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await.ok()?;
    println!("No server on {host}:{port}: answering the CA's HTTP-01 challenges there while renewing");
    let state_dir = state_dir.to_path_buf();
    Some(tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer_http01(stream, state_dir.clone()));
        }
    }))
}

async fn answer_http01(mut stream: tokio::net::TcpStream, state_dir: PathBuf) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") && len < buf.len() {
            match stream.read(&mut buf[len..]).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => len += n,
            }
        }
        true
    });
    if !matches!(read.await, Ok(true)) {
        return;
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let path = head.split_whitespace().nth(1).unwrap_or("");
    let uri: http::Uri = path.parse().unwrap_or_default();
    let (status, body) = match crate::http::to_https::challenge(&state_dir, &uri) {
        Some(crate::http::to_https::Answer::Challenge(body)) => ("200 OK", body),
        _ => ("404 Not Found", b"no such challenge\n".to_vec()),
    };
    let mut response = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len()).into_bytes();
    response.extend(body);
    let _ = stream.write_all(&response).await;
}
