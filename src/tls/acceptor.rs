//! A worker's TLS: the rustls configuration, the certificates it picks by SNI, and the
//! handshake of each accepted connection (with ACME's TLS-ALPN-01 answered on the side).
//!
//! Certificates, the client-certificate CA and the session-ticket keys come from the
//! master (`TlsMaterial`, over the channel) and can be replaced while connections run:
//! a handshake uses the configuration current when it began.

use rustls::pki_types::pem::PemObject;
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

use super::certs::{self, CertPem};
use super::tickets::{SharedTicketer, TicketKey};
use crate::config::tls::{ClientAuth, TlsConfig};

/// ALPN of ACME's TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// TLS 1.2 session ids remembered per worker (tickets do the rest, across workers).
const SESSION_CACHE: usize = 4096;

/// What the master sends a worker for its TLS listeners.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TlsMaterial {
    pub certs: Vec<CertPem>,
    pub client_ca_pem: Option<String>,
    /// The current ticket key first, then the previous one.
    pub ticket_keys: Vec<TicketKey>,
}

/// The certificates a worker serves, by name.
#[derive(Debug, Default)]
struct Certs {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// "*.example.com" stored as "example.com".
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// For clients that send no SNI (and, with your own files, any name).
    default: Option<Arc<CertifiedKey>>,
}

#[derive(Debug)]
struct CertStore {
    certs: RwLock<Arc<Certs>>,
    /// Domain mode: an unknown SNI gets no certificate (the handshake fails), so that
    /// scanners asking for other names learn nothing. With your own files, uvicorn's
    /// behaviour: the one certificate for every name.
    strict_sni: bool,
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.read().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(name) = hello.server_name() else {
            return certs.default.clone();
        };
        let name = name.to_ascii_lowercase();
        if let Some(c) = certs.exact.get(&name) {
            return Some(c.clone());
        }
        if let Some(c) = name.split_once('.').and_then(|(_, parent)| certs.wildcard.get(parent)) {
            return Some(c.clone());
        }
        if self.strict_sni { None } else { certs.default.clone() }
    }
}

/// A worker's TLS acceptor, shared by its TLS listeners.
pub struct Acceptor {
    config: RwLock<Arc<ServerConfig>>,
    store: Arc<CertStore>,
    ticketer: Arc<SharedTicketer>,
    sessions: Arc<ServerSessionMemoryCache>,
    client_auth: ClientAuth,
    state_dir: PathBuf,
    acme: bool,
    timeout: Duration,
    /// The protocols offered in ALPN, preferred first (h2, http/1.1 as --http allows).
    alpn: Vec<Vec<u8>>,
}

/// What the handshake established, for the ASGI `tls` extension.
pub struct Established<IO> {
    pub stream: TlsStream<IO>,
    pub version: u16,
    pub cipher_suite: u16,
    /// The client's certificates, leaf first, as PEM.
    pub client_chain: Vec<String>,
    /// The client chose HTTP/2 in ALPN.
    pub h2: bool,
}

impl Acceptor {
    /// `alpn`: the application protocols to offer, preferred first.
    pub fn new(settings: &TlsConfig, material: &TlsMaterial, alpn: Vec<Vec<u8>>) -> Result<Self, String> {
        let store = Arc::new(CertStore { certs: RwLock::new(Arc::new(Certs::default())), strict_sni: settings.acme });
        let ticketer = Arc::new(SharedTicketer::new(&material.ticket_keys)?);
        let acceptor = Acceptor {
            config: RwLock::new(Arc::new(ServerConfig::builder().with_no_client_auth().with_cert_resolver(store.clone()))),
            store,
            ticketer,
            sessions: ServerSessionMemoryCache::new(SESSION_CACHE),
            client_auth: settings.client_auth,
            state_dir: settings.state_dir.clone(),
            acme: settings.acme,
            timeout: Duration::from_secs(settings.handshake_timeout),
            alpn,
        };
        acceptor.update(material)?;
        Ok(acceptor)
    }

    /// Takes new material from the master. On an error nothing changes.
    pub fn update(&self, material: &TlsMaterial) -> Result<(), String> {
        let mut certs = Certs::default();
        for pem in &material.certs {
            let key = certs::certified_key(pem)?;
            certs.default.get_or_insert_with(|| key.clone());
            for name in &pem.names {
                match name.strip_prefix("*.") {
                    Some(parent) => certs.wildcard.insert(parent.to_string(), key.clone()),
                    None => certs.exact.insert(name.clone(), key.clone()),
                };
            }
        }
        let config = self.build_config(material.client_ca_pem.as_deref())?;
        if !material.ticket_keys.is_empty() {
            self.ticketer.update(&material.ticket_keys)?;
        }
        *self.store.certs.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(certs);
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    /// TLS 1.2 and 1.3 with aws-lc-rs's default suites and groups (Mozilla's
    /// "intermediate": ECDHE with AES-GCM or ChaCha20-Poly1305; X25519, P-256, P-384, plus
    /// the X25519MLKEM768 hybrid), tickets shared across workers, no 0-RTT.
    fn build_config(&self, client_ca_pem: Option<&str>) -> Result<Arc<ServerConfig>, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS setup: {e}"))?;
        let builder = match (self.client_auth, client_ca_pem) {
            (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
            (mode, Some(pem)) => {
                let mut roots = RootCertStore::empty();
                for cert in certs::parse_chain(pem.as_bytes())? {
                    roots.add(cert).map_err(|e| format!("--ssl-ca-certs: a CA certificate is unusable ({e})"))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if mode == ClientAuth::Optional { verifier.allow_unauthenticated() } else { verifier };
                builder.with_client_cert_verifier(verifier.build().map_err(|e| format!("--ssl-ca-certs: {e}"))?)
            }
        };
        let mut config = builder.with_cert_resolver(self.store.clone());
        config.alpn_protocols = self.alpn.clone();
        config.ticketer = self.ticketer.clone();
        config.session_storage = self.sessions.clone();
        config.max_early_data_size = 0;
        // One ticket per full handshake is what a client resumes with; a second costs an
        // encryption per handshake for clients that open parallel connections at once.
        config.send_tls13_tickets = 1;
        Ok(Arc::new(config))
    }

    /// The handshake of one accepted connection, bounded by the handshake timeout. A
    /// validation server's TLS-ALPN-01 handshake is completed with the challenge
    /// certificate and then has nothing more to say: `Ok(None)`.
    pub async fn accept<IO: AsyncRead + AsyncWrite + Unpin>(&self, io: IO) -> Result<Option<Established<IO>>, String> {
        match tokio::time::timeout(self.timeout, self.handshake(io)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no TLS handshake within {} s", self.timeout.as_secs())),
        }
    }

    async fn handshake<IO: AsyncRead + AsyncWrite + Unpin>(&self, io: IO) -> Result<Option<Established<IO>>, String> {
        let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io)
            .await
            .map_err(|e| format!("not a TLS client hello ({e})"))?;
        let hello = start.client_hello();
        let acme_validation = self.acme && hello.alpn().is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme_validation {
            let name = hello.server_name().map(str::to_ascii_lowercase).ok_or("an acme-tls/1 handshake without SNI")?;
            let config = challenge_config(&self.state_dir, &name)?;
            start.into_stream(config).await.map_err(|e| format!("TLS-ALPN-01 handshake for {name}: {e}"))?;
            crate::debug!("answered a TLS-ALPN-01 validation for {name}");
            return Ok(None);
        }
        let config = self.config.read().unwrap_or_else(|e| e.into_inner()).clone();
        let stream = start.into_stream(config).await.map_err(|e| format!("TLS handshake failed: {e}"))?;
        let (_, conn) = stream.get_ref();
        let version = conn.protocol_version().map_or(0, u16::from);
        let cipher_suite = conn.negotiated_cipher_suite().map_or(0, |s| u16::from(s.suite()));
        let client_chain = conn.peer_certificates().map(|chain| chain.iter().map(|c| certs::pem_encode("CERTIFICATE", c.as_ref())).collect()).unwrap_or_default();
        let h2 = conn.alpn_protocol() == Some(b"h2");
        Ok(Some(Established { stream, version, cipher_suite, client_chain, h2 }))
    }
}

/// A one-handshake configuration presenting the challenge certificate for `name`.
fn challenge_config(state_dir: &Path, name: &str) -> Result<Arc<ServerConfig>, String> {
    let path = super::store::tls_alpn01_path(state_dir, name).map_err(|e| format!("acme-tls/1 for {name:?}: {e}"))?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("acme-tls/1 for {name}, but no challenge is pending ({}: {e})", path.display()))?;
    let chain = certs::parse_chain(text.as_bytes())?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).map_err(|e| format!("{}: {e}", path.display()))?;
    // Not `with_single_cert`: it parses the certificate with webpki, which refuses the
    // critical acmeIdentifier extension that RFC 8737 requires of this certificate.
    let resolver = rustls::sign::SingleCertAndKey::from(CertifiedKey::new(chain, signing));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    Ok(Arc::new(config))
}

