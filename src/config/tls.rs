//! HTTPS settings: where certificates come from (files, or ACME for `--domain`), client
//! certificates, the HTTP→HTTPS redirect and HSTS, and which listeners speak TLS.
//!
//! Two modes, never both: uvicorn's `--ssl-certfile` (every listener speaks TLS, as in
//! uvicorn), or `--domain` (a plain listener on --http-port that redirects and answers
//! HTTP-01 challenges, a TLS one on --https-port, certificates ordered by the master).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use super::{BindSpec, ConfigError, Layer};

/// Let's Encrypt's production directory, the default CA in domain mode.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, generous rate limits).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
/// HSTS for two years, as hstspreload.org asks.
pub const HSTS_MAX_AGE: u64 = 63_072_000;
/// Seconds a new connection gets to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: u64 = 10;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TlsConfig {
    /// Master-only: the master reads certificate files and orders certificates, and hands
    /// the material to workers over their channel (so a worker never needs the key files).
    #[serde(skip)]
    pub source: Option<CertSource>,
    pub client_auth: ClientAuth,
    /// Master-only: the CA bundle that client certificates must chain to (--ssl-ca-certs).
    #[serde(skip)]
    pub client_ca: Option<PathBuf>,
    /// Plain listeners answer everything but ACME challenges with a 308 to HTTPS.
    pub redirect: bool,
    /// The port redirects point to (omitted from the URL when 443).
    pub https_port: u16,
    /// The Strict-Transport-Security value for HTTPS responses (None: no header).
    pub hsts: Option<String>,
    /// Where ACME challenge answers are written by the master and read by workers.
    pub state_dir: PathBuf,
    pub handshake_timeout: u64,
    /// Domain mode: certificates by ACME; plain listeners answer HTTP-01 challenges, TLS
    /// ones TLS-ALPN-01, and a name without a certificate gets no handshake.
    pub acme: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum CertSource {
    Files { certfile: PathBuf, keyfile: PathBuf, password: Option<String> },
    Acme(AcmeOptions),
}

#[derive(Clone, Debug, PartialEq)]
pub struct AcmeOptions {
    /// One entry per certificate; several names in one entry share a certificate.
    pub certificates: Vec<Vec<String>>,
    pub email: Option<String>,
    pub directory: String,
    pub ca_root: Option<PathBuf>,
    pub eab: Option<(String, String)>,
    pub challenge: ChallengeChoice,
}

/// --ssl-cert-reqs, with uvicorn's numbers (Python's ssl.CERT_*).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientAuth {
    #[default]
    None,
    Optional,
    Required,
}

impl ClientAuth {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "0" | "none" | "cert_none" => Ok(ClientAuth::None),
            "1" | "optional" | "cert_optional" => Ok(ClientAuth::Optional),
            "2" | "required" | "cert_required" => Ok(ClientAuth::Required),
            _ => Err(format!("'{s}' is not a client-certificate mode; write 0 (none), 1 (optional) or 2 (required)")),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ChallengeChoice {
    /// HTTP-01 first, TLS-ALPN-01 if it fails.
    #[default]
    Auto,
    #[value(name = "http-01")]
    Http01,
    #[value(name = "tls-alpn-01")]
    TlsAlpn01,
}

/// The TLS part of a configuration: the settings, and the listeners it adds.
pub(super) struct Resolved {
    pub tls: Option<TlsConfig>,
    /// Listeners domain mode adds, each with whether it speaks TLS.
    pub binds: Vec<(BindSpec, bool)>,
    /// Whether the listeners the user gave (--bind, --uds, --fd, --host/--port) speak TLS.
    pub given_binds_tls: bool,
}

/// `default_state_dir` is where certificates live when --state-dir is not given.
pub(super) fn resolve(layer: &mut Layer, default_state_dir: PathBuf) -> Result<Resolved, ConfigError> {
    let domains = layer.domain.take().unwrap_or_default();
    let files = layer.ssl_certfile.take();
    let acme_flag = [
        ("--acme-email", layer.acme_email.is_some()),
        ("--acme-directory", layer.acme_directory.is_some()),
        ("--acme-staging", layer.acme_staging == Some(true)),
        ("--acme-ca-root", layer.acme_ca_root.is_some()),
        ("--acme-eab-kid", layer.acme_eab_kid.is_some()),
        ("--acme-eab-hmac-key", layer.acme_eab_hmac_key.is_some()),
        ("--acme-challenge", layer.acme_challenge.is_some()),
        ("--http-port", layer.http_port.is_some()),
        ("--https-port", layer.https_port.is_some()),
    ]
    .into_iter()
    .find_map(|(flag, given)| given.then_some(flag));
    let client_auth = match layer.ssl_cert_reqs.take() {
        Some(s) => ClientAuth::parse(&s).map_err(|e| ConfigError::new("--ssl-cert-reqs", format!("--ssl-cert-reqs: {e}")))?,
        None => ClientAuth::None,
    };
    let client_ca = layer.ssl_ca_certs.take();
    if client_auth != ClientAuth::None && client_ca.is_none() {
        return Err(ConfigError::new("--ssl-cert-reqs", "--ssl-cert-reqs asks for client certificates: give --ssl-ca-certs FILE, the CA bundle they must chain to"));
    }
    let state_dir = layer.state_dir.take().unwrap_or(default_state_dir);
    let hsts = |on_by_default: bool, layer: &Layer| {
        layer.hsts.unwrap_or(on_by_default).then(|| {
            let mut value = format!("max-age={HSTS_MAX_AGE}");
            if layer.hsts_include_subdomains == Some(true) {
                value.push_str("; includeSubDomains");
            }
            if layer.hsts_preload == Some(true) {
                value.push_str("; preload");
            }
            value
        })
    };

    if domains.is_empty() {
        if let Some(flag) = acme_flag {
            return Err(ConfigError::new(flag, format!("{flag} is for automatic certificates: add --domain NAME (the name the certificate is for)")));
        }
        let Some(certfile) = files else {
            if layer.ssl_keyfile.is_some() {
                return Err(ConfigError::new("--ssl-keyfile", "--ssl-keyfile needs --ssl-certfile FILE, the certificate (chain) that goes with the key"));
            }
            if layer.ssl_keyfile_password.is_some() {
                return Err(ConfigError::new("--ssl-keyfile-password", "--ssl-keyfile-password is the password of --ssl-keyfile: add --ssl-certfile and --ssl-keyfile"));
            }
            if client_ca.is_some() {
                return Err(ConfigError::new("--ssl-ca-certs", "--ssl-ca-certs verifies client certificates over HTTPS: add --ssl-certfile and --ssl-keyfile (or --domain)"));
            }
            return Ok(Resolved { tls: None, binds: Vec::new(), given_binds_tls: false });
        };
        // As uvicorn: with no --ssl-keyfile the key is in the certificate file.
        let keyfile = layer.ssl_keyfile.take().unwrap_or_else(|| certfile.clone());
        let password = layer.ssl_keyfile_password.take();
        let tls = TlsConfig {
            source: Some(CertSource::Files { certfile, keyfile, password }),
            client_auth,
            client_ca,
            redirect: false,
            https_port: layer.port.unwrap_or(super::DEFAULT_PORT),
            hsts: hsts(false, layer),
            state_dir,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            acme: false,
        };
        return Ok(Resolved { tls: Some(tls), binds: Vec::new(), given_binds_tls: true });
    }

    if files.is_some() || layer.ssl_keyfile.is_some() {
        let flag = if files.is_some() { "--ssl-certfile" } else { "--ssl-keyfile" };
        return Err(ConfigError::new(flag, format!("{flag} and --domain are two ways to get a certificate: keep --domain for automatic certificates, or drop it to use your own files")));
    }
    if layer.port.is_some() {
        return Err(ConfigError::new("--port", "--port is for plain HTTP; with --domain, set --http-port (default 80) and --https-port (default 443)"));
    }
    let mut certificates = Vec::new();
    for spec in &domains {
        let names: Vec<String> = spec.split([',', ' ']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_ascii_lowercase).collect();
        for name in &names {
            check_domain(name).map_err(|e| ConfigError::new("--domain", format!("--domain {name}: {e}")))?;
        }
        if !names.is_empty() {
            certificates.push(names);
        }
    }
    let eab = match (layer.acme_eab_kid.take(), layer.acme_eab_hmac_key.take()) {
        (Some(kid), Some(key)) => Some((kid, key)),
        (None, None) => None,
        (Some(_), None) => return Err(ConfigError::new("--acme-eab-kid", "--acme-eab-kid needs --acme-eab-hmac-key: your CA gives both (external account binding)")),
        (None, Some(_)) => return Err(ConfigError::new("--acme-eab-hmac-key", "--acme-eab-hmac-key needs --acme-eab-kid: your CA gives both (external account binding)")),
    };
    let directory = match (layer.acme_directory.take(), layer.acme_staging == Some(true)) {
        (Some(_), true) => return Err(ConfigError::new("--acme-staging", "--acme-staging and --acme-directory both choose the CA: keep one")),
        (Some(url), false) => url,
        (None, true) => LETS_ENCRYPT_STAGING.into(),
        (None, false) => LETS_ENCRYPT.into(),
    };
    if !directory.starts_with("https://") {
        return Err(ConfigError::new("--acme-directory", format!("--acme-directory {directory}: an ACME directory is an https:// URL")));
    }
    // Without --host, every address: IPv4, and IPv6 where the machine has it.
    let hosts = match layer.host.clone() {
        Some(host) => vec![host],
        None if ipv6_available() => vec!["0.0.0.0".into(), "::".into()],
        None => vec!["0.0.0.0".into()],
    };
    let http_port = layer.http_port.unwrap_or(80);
    let https_port = layer.https_port.unwrap_or(443);
    if http_port == https_port {
        return Err(ConfigError::new("--https-port", format!("--http-port and --https-port are both {http_port}: give them two ports")));
    }
    let acme = AcmeOptions {
        certificates,
        email: layer.acme_email.take(),
        directory,
        ca_root: layer.acme_ca_root.take(),
        eab,
        challenge: layer.acme_challenge.unwrap_or_default(),
    };
    let tls = TlsConfig {
        source: Some(CertSource::Acme(acme)),
        client_auth,
        client_ca,
        redirect: layer.redirect.unwrap_or(true),
        https_port,
        hsts: hsts(true, layer),
        state_dir,
        handshake_timeout: HANDSHAKE_TIMEOUT,
        acme: true,
    };
    let binds = hosts
        .into_iter()
        .flat_map(|host| [(BindSpec::Tcp { host: host.clone(), port: http_port }, false), (BindSpec::Tcp { host, port: https_port }, true)])
        .collect();
    Ok(Resolved { tls: Some(tls), binds, given_binds_tls: false })
}

/// Whether this machine can listen on IPv6 (containers and some hosts have it off).
fn ipv6_available() -> bool {
    std::net::TcpListener::bind((std::net::Ipv6Addr::UNSPECIFIED, 0)).is_ok()
}

/// A name a public CA can issue for: letters, digits, hyphens, dots; `*.` only first.
fn check_domain(name: &str) -> Result<(), String> {
    let bare = name.strip_prefix("*.").unwrap_or(name);
    let ok_label = |l: &str| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-') && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if name.len() > 253 || !bare.contains('.') || !bare.split('.').all(ok_label) {
        return Err("not a domain name a certificate can be issued for (write e.g. example.com or *.example.com; IP addresses and single-label names like localhost cannot get public certificates)".into());
    }
    Ok(())
}

/// Where certificates and the ACME account live when --state-dir is not given:
/// /var/lib/ferrogate as root (systemd's StateDirectory), else the XDG state home.
pub fn default_state_dir(is_root: bool, xdg_state_home: Option<PathBuf>, home: Option<PathBuf>) -> PathBuf {
    if is_root {
        return PathBuf::from("/var/lib/ferrogate");
    }
    match (xdg_state_home.filter(|p| p.is_absolute()), home) {
        (Some(xdg), _) => xdg.join("ferrogate"),
        (None, Some(home)) => home.join(".local/state/ferrogate"),
        (None, None) => PathBuf::from(".ferrogate"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_must_be_issuable_names() {
        assert!(check_domain("example.com").is_ok());
        assert!(check_domain("*.example.com").is_ok());
        assert!(check_domain("a-b.example.test").is_ok());
        for bad in ["localhost", "127.0.0.1.", "-x.example.com", "ex ample.com", "*.*.example.com", "a..b"] {
            assert!(check_domain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn client_auth_takes_uvicorn_numbers_and_words() {
        assert_eq!(ClientAuth::parse("2").unwrap(), ClientAuth::Required);
        assert_eq!(ClientAuth::parse("optional").unwrap(), ClientAuth::Optional);
        assert!(ClientAuth::parse("3").unwrap_err().contains("0 (none)"));
    }

    #[test]
    fn state_dir_follows_root_then_xdg_then_home() {
        assert_eq!(default_state_dir(true, Some("/x".into()), None), PathBuf::from("/var/lib/ferrogate"));
        assert_eq!(default_state_dir(false, Some("/x".into()), Some("/h".into())), PathBuf::from("/x/ferrogate"));
        assert_eq!(default_state_dir(false, Some("rel".into()), Some("/h".into())), PathBuf::from("/h/.local/state/ferrogate"));
    }
}
