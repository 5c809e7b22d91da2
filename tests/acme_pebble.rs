//! `tls::acme` against a real CA: Debian's pebble, started by tests/pebble.py:
//!
//!     python3 tests/pebble.py cargo test --test acme_pebble -- --nocapture
//!
//! Without FERROGATE_PEBBLE_DIRECTORY the test says so and passes (plain `cargo test`).
//! The test plays the workers' part itself: it serves the challenge files that
//! `issue` writes to the state directory, HTTP-01 on pebble's httpPort and
//! TLS-ALPN-01 (ALPN acme-tls/1) on its tlsPort. One test function, because both
//! responders need those two fixed ports.

use _ferrogate::tls::acme::{self, AcmeError, AcmeSettings, ChallengeChoice, Validation};
use _ferrogate::tls::store;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

struct Pebble {
    directory: String,
    ca_root: PathBuf,
    http_port: u16,
    tls_port: u16,
    log: Option<PathBuf>,
}

fn pebble() -> Option<Pebble> {
    let var = |k: &str| std::env::var(format!("FERROGATE_PEBBLE_{k}")).ok();
    Some(Pebble {
        directory: var("DIRECTORY")?,
        ca_root: var("CA_ROOT")?.into(),
        http_port: var("HTTP_PORT")?.parse().ok()?,
        tls_port: var("TLS_PORT")?.parse().ok()?,
        log: var("LOG").map(PathBuf::from),
    })
}

impl Pebble {
    /// "POST /order-plz" lines in pebble's log: one per new order.
    fn orders(&self) -> Option<usize> {
        let text = std::fs::read_to_string(self.log.as_ref()?).ok()?;
        Some(text.matches("POST /order-plz").count())
    }
}

/// HTTP-01 as a worker answers it: GET /.well-known/acme-challenge/<token> -> the file.
async fn serve_http01(listener: TcpListener, state: PathBuf) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else { return };
        let state = state.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") && n < buf.len() {
                match sock.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => n += k,
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let body = path
                .strip_prefix("/.well-known/acme-challenge/")
                .and_then(|token| store::http01_path(&state, token).ok())
                .and_then(|p| std::fs::read(p).ok());
            let response = match body {
                Some(b) => [format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", b.len()).into_bytes(), b].concat(),
                None => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec(),
            };
            let _ = sock.write_all(&response).await;
        });
    }
}

/// TLS-ALPN-01 as a worker answers it: the challenge certificate for the SNI name.
#[derive(Debug)]
struct ChallengeCerts(PathBuf);

impl ResolvesServerCert for ChallengeCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let pem = std::fs::read(store::tls_alpn01_path(&self.0, hello.server_name()?).ok()?).ok()?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem).collect::<Result<_, _>>().ok()?;
        let key = PrivateKeyDer::from_pem_slice(&pem).ok()?;
        let key = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).ok()?;
        Some(Arc::new(CertifiedKey::new(certs, key)))
    }
}

async fn serve_tls_alpn01(listener: TcpListener, state: PathBuf) {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ChallengeCerts(state)));
    config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    loop {
        let Ok((sock, _)) = listener.accept().await else { return };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            if let Ok(mut tls) = acceptor.accept(sock).await {
                let _ = tls.shutdown().await;
            }
        });
    }
}

async fn listen(port: u16) -> TcpListener {
    TcpListener::bind(("127.0.0.1", port)).await.expect("bind a pebble validation port")
}

fn settings(p: &Pebble, state: &Path, challenge: ChallengeChoice) -> AcmeSettings {
    AcmeSettings {
        directory: p.directory.clone(),
        email: Some("admin@example.test".into()),
        ca_root: Some(p.ca_root.clone()),
        eab: None,
        challenge,
        validation: Validation::Reuse,
        state_dir: state.to_path_buf(),
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn leftover_challenge_files(state: &Path) -> usize {
    [store::http01_dir(state), store::tls_alpn01_dir(state)]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .map(|d| d.count())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_renewal_info_and_revoke_against_pebble() {
    let Some(p) = pebble() else {
        eprintln!("skipped: no FERROGATE_PEBBLE_DIRECTORY (run: python3 tests/pebble.py cargo test --test acme_pebble)");
        return;
    };
    // FERROGATE_PEBBLE_STATE keeps the state (and so the account) between runs, to
    // check that a restarted pebble, which forgot the account, gets a new one.
    let kept = std::env::var_os("FERROGATE_PEBBLE_STATE").map(PathBuf::from);
    let state = kept.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("ferrogate-acme-pebble-{}", std::process::id())));
    if kept.is_none() {
        let _ = std::fs::remove_dir_all(&state);
    }
    let orders_before = p.orders();
    let mut http: JoinHandle<()> = tokio::spawn(serve_http01(listen(p.http_port).await, state.clone()));
    let tls: JoinHandle<()> = tokio::spawn(serve_tls_alpn01(listen(p.tls_port).await, state.clone()));

    // HTTP-01, two names; stored and read back.
    let started = std::time::Instant::now();
    let http01 = acme::issue(&settings(&p, &state, ChallengeChoice::Http01), &names(&["Http01.example.test", "www.http01.example.test"]))
        .await
        .unwrap_or_else(|e| panic!("http-01: {e}"));
    eprintln!("http-01: serial {} issuer {:?} in {:?}", http01.serial, http01.issuer, started.elapsed());
    assert_eq!(http01.names, names(&["http01.example.test", "www.http01.example.test"]));
    assert!(http01.chain_pem.matches("BEGIN CERTIFICATE").count() >= 2, "leaf + intermediate");
    assert!(http01.not_after > http01.not_before);
    assert_eq!(leftover_challenge_files(&state), 0);
    store::save(&state, &http01).unwrap();
    let stored = store::load(&state, &http01.names).unwrap().expect("stored");
    assert_eq!((stored.meta.serial.as_str(), stored.key_pem.as_str()), (http01.serial.as_str(), http01.key_pem.as_str()));

    // TLS-ALPN-01.
    let alpn = acme::issue(&settings(&p, &state, ChallengeChoice::TlsAlpn01), &names(&["alpn.example.test"]))
        .await
        .unwrap_or_else(|e| panic!("tls-alpn-01: {e}"));
    eprintln!("tls-alpn-01: serial {}", alpn.serial);
    assert_eq!(leftover_challenge_files(&state), 0);

    // Port 80 down: http-01 fails with an actionable message; Auto falls back to
    // tls-alpn-01 with a new order.
    http.abort();
    let _ = (&mut http).await;
    let err = acme::issue(&settings(&p, &state, ChallengeChoice::Http01), &names(&["down.example.test"])).await.unwrap_err();
    eprintln!("http-01 with nothing on the port: {err}");
    assert!(matches!(err, AcmeError::ChallengeFailed { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("down.example.test") && msg.contains("http-01") && msg.contains("port 80"), "{msg}");
    let orders_before_auto = p.orders();
    let auto = acme::issue(&settings(&p, &state, ChallengeChoice::Auto), &names(&["auto.example.test"]))
        .await
        .unwrap_or_else(|e| panic!("auto: {e}"));
    eprintln!("auto (http-01 failed, tls-alpn-01 worked): serial {}", auto.serial);
    if let (Some(a), Some(b)) = (orders_before_auto, p.orders()) {
        assert_eq!(b - a, 2, "auto places a new order for its second challenge type");
    }
    assert_eq!(leftover_challenge_files(&state), 0);

    // Pebble 2.4 has no ARI; revocation works with the stored account.
    let window = acme::renewal_window(&settings(&p, &state, ChallengeChoice::Auto), &http01.chain_pem).await.unwrap();
    assert_eq!(window, None);
    acme::revoke(&settings(&p, &state, ChallengeChoice::Auto), &http01.chain_pem).await.unwrap();
    assert_eq!(std::fs::read_dir(store::accounts_dir(&state)).unwrap().count(), 1, "one account, reused");

    // A directory nobody answers: the URL and the cause are in the message.
    let mut down = settings(&p, &state, ChallengeChoice::Auto);
    down.directory = "https://localhost:1/dir".into();
    let err = acme::issue(&down, &names(&["x.example.test"])).await.unwrap_err();
    eprintln!("unreachable directory: {err}");
    assert!(matches!(err, AcmeError::Unreachable { .. }) && err.to_string().contains("https://localhost:1/dir"), "{err}");

    if let (Some(a), Some(b)) = (orders_before, p.orders()) {
        eprintln!("pebble orders placed by this test: {}", b - a);
    }
    tls.abort();
    if kept.is_none() {
        let _ = std::fs::remove_dir_all(&state);
    }
}
