//! Domain mode's certificate keeper, in the master: one task per certificate that
//! serves what the state directory holds, orders when there is nothing or renewal is
//! due, and retries failures with backoff without ever taking away the certificate in
//! use. Workers never order: whatever --workers is, one order per certificate.
//!
//! The state directory is the source of truth. Ordering happens under its lock, so two
//! instances sharing it (or `ferrogate certs renew` beside a running server) never
//! order twice, and the task re-reads it every RECHECK so that a certificate renewed
//! by another process is served within seconds.

use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

use crate::config::tls::{AcmeOptions, ChallengeChoice as Choice};
use crate::tls::acme::{self, AcmeSettings, ChallengeChoice, Eab, Validation, renew};
use crate::tls::certs::CertPem;
use crate::tls::store::{self, StateLock, Stored};

/// How often the stored certificate is looked at again.
pub const RECHECK: Duration = Duration::from_secs(10);
/// How often the CA's renewal information (ARI) is asked for, when it offers it.
const ARI_EVERY: Duration = Duration::from_secs(6 * 3600);

pub fn settings(options: &AcmeOptions, state_dir: &std::path::Path) -> AcmeSettings {
    AcmeSettings {
        directory: options.directory.clone(),
        email: options.email.clone(),
        ca_root: options.ca_root.clone(),
        eab: options.eab.as_ref().map(|(kid, key)| Eab { kid: kid.clone(), hmac_key_b64: key.clone() }),
        challenge: match options.challenge {
            Choice::Auto => ChallengeChoice::Auto,
            Choice::Http01 => ChallengeChoice::Http01,
            Choice::TlsAlpn01 => ChallengeChoice::TlsAlpn01,
        },
        validation: Validation::Reuse,
        state_dir: state_dir.to_path_buf(),
    }
}

pub fn to_pem(stored: &Stored) -> CertPem {
    CertPem { names: stored.meta.names.clone(), chain_pem: stored.chain_pem.clone(), key_pem: stored.key_pem.clone() }
}

/// The certificates already in the state directory, served from the first worker on.
pub fn stored(settings: &AcmeSettings, certificates: &[Vec<String>]) -> Vec<Stored> {
    let mut out = Vec::new();
    for names in certificates {
        match store::load(&settings.state_dir, names) {
            Ok(Some(s)) => {
                crate::info!("Serving the stored certificate for {} (valid until {})", names.join(", "), httpdate::fmt_http_date(s.meta.not_after()));
                out.push(s);
            }
            Ok(None) => crate::info!("No certificate for {} yet in {}: ordering one from {}", names.join(", "), settings.state_dir.display(), settings.directory),
            Err(e) => crate::warn!("cannot use the stored certificate for {}: {e}; ordering a new one", names.join(", ")),
        }
    }
    out
}

/// Starts one keeper per certificate; each sends what workers must serve on `installed`.
pub fn spawn(settings: AcmeSettings, certificates: Vec<Vec<String>>, serving: &[Stored], installed: mpsc::UnboundedSender<CertPem>) {
    for names in certificates {
        let serial = serving.iter().find(|s| s.meta.names == names).map(|s| s.meta.serial.clone());
        tokio::spawn(keep(settings.clone(), names, serial, installed.clone()));
    }
}

struct Keeper {
    settings: AcmeSettings,
    names: Vec<String>,
    /// The serial the workers serve now.
    serving: Option<String>,
    installed: mpsc::UnboundedSender<CertPem>,
    failures: u32,
    /// No attempt before this (backoff after a failure).
    not_before: Option<Instant>,
    ari: Option<(SystemTime, SystemTime)>,
    ari_checked: Option<Instant>,
    warned_on: Option<u64>,
}

async fn keep(settings: AcmeSettings, names: Vec<String>, serving: Option<String>, installed: mpsc::UnboundedSender<CertPem>) {
    let mut k = Keeper { settings, names, serving, installed, failures: 0, not_before: None, ari: None, ari_checked: None, warned_on: None };
    loop {
        if k.installed.is_closed() {
            return;
        }
        let wait = k.step().await;
        tokio::time::sleep(wait).await;
    }
}

impl Keeper {
    /// One look at the state directory, and an order if one is due; returns how long to wait.
    async fn step(&mut self) -> Duration {
        let stored = self.load().await;
        if let Some(s) = &stored {
            self.serve(s);
            self.warn_near_expiry(s);
        }
        let due = match &stored {
            None => SystemTime::now(),
            Some(s) => {
                self.refresh_ari(s).await;
                renew::renew_at(s.meta.not_before(), s.meta.not_after(), self.ari, seed(&self.names))
            }
        };
        if let Ok(ahead) = due.duration_since(SystemTime::now()) {
            return ahead.min(RECHECK);
        }
        if let Some(wait) = self.not_before.and_then(|t| t.checked_duration_since(Instant::now())) {
            return wait.min(RECHECK);
        }
        let Some(lock) = self.lock().await else { return RECHECK };
        // Another process may have renewed while we waited for the lock.
        if let Some(s) = self.load().await {
            if Some(&s.meta.serial) != stored.as_ref().map(|o| &o.meta.serial) {
                self.serve(&s);
                return Duration::ZERO;
            }
        }
        self.order(lock).await;
        Duration::ZERO
    }

    async fn load(&self) -> Option<Stored> {
        let (state, names) = (self.settings.state_dir.clone(), self.names.clone());
        match tokio::task::spawn_blocking(move || store::load(&state, &names)).await {
            Ok(Ok(stored)) => stored,
            Ok(Err(e)) => {
                crate::warn!("cannot read the stored certificate for {}: {e}", self.names.join(", "));
                None
            }
            Err(_) => None,
        }
    }

    /// Hands a stored certificate to the workers unless they serve it already.
    fn serve(&mut self, s: &Stored) {
        if self.serving.as_ref() == Some(&s.meta.serial) {
            return;
        }
        if self.serving.is_some() {
            crate::info!("Serving the renewed certificate for {} (serial {}, valid until {})", self.names.join(", "), s.meta.serial, httpdate::fmt_http_date(s.meta.not_after()));
        }
        self.serving = Some(s.meta.serial.clone());
        let _ = self.installed.send(to_pem(s));
    }

    fn warn_near_expiry(&mut self, s: &Stored) {
        let Some(warning) = renew::expiry_warning(s.meta.not_after(), SystemTime::now()) else { return };
        // Once a day is enough to be seen without flooding the log.
        let day = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400);
        if self.warned_on != Some(day) {
            self.warned_on = Some(day);
            crate::warn!("{}: {warning}", self.names.join(", "));
        }
    }

    async fn refresh_ari(&mut self, s: &Stored) {
        if self.ari_checked.is_some_and(|t| t.elapsed() < ARI_EVERY) {
            return;
        }
        self.ari_checked = Some(Instant::now());
        match acme::renewal_window(&self.settings, &s.chain_pem).await {
            Ok(window) => self.ari = window,
            Err(e) => crate::debug!("no renewal information for {}: {e}", self.names.join(", ")),
        }
    }

    async fn lock(&self) -> Option<StateLock> {
        match StateLock::try_lock(&self.settings.state_dir) {
            Ok(Some(lock)) => Some(lock),
            Ok(None) => {
                crate::info!("Another ferrogate holds {}; waiting for it to finish ordering", store::lock_path(&self.settings.state_dir).display());
                None
            }
            Err(e) => {
                crate::error!("cannot lock the state directory: {e}");
                None
            }
        }
    }

    async fn order(&mut self, lock: StateLock) {
        let started = Instant::now();
        crate::info!("Ordering a certificate for {} from {}", self.names.join(", "), self.settings.directory);
        let result = acme::issue(&self.settings, &self.names).await;
        match result {
            Ok(issued) => {
                // Workers first: storing costs a few fsyncs, and a client may be waiting.
                self.serving = Some(issued.serial.clone());
                let _ = self.installed.send(CertPem { names: self.names.clone(), chain_pem: issued.chain_pem.clone(), key_pem: issued.key_pem.clone() });
                let stored = store::save(&self.settings.state_dir, &issued);
                drop(lock);
                if let Err(e) = stored {
                    // Not stored, it looks missing to the next look: order again only after a backoff.
                    self.failures += 1;
                    let delay = renew::retry_delay(self.failures, None);
                    self.not_before = Some(Instant::now() + delay);
                    crate::error!("the new certificate for {} is served but could not be stored ({e}); ordering again in {}", self.names.join(", "), human(delay));
                    return;
                }
                self.failures = 0;
                self.not_before = None;
                self.ari_checked = None;
                crate::info!(
                    "Got a certificate for {} from {} in {:.1} s (serial {}, valid until {})",
                    self.names.join(", "),
                    issued.issuer,
                    started.elapsed().as_secs_f64(),
                    issued.serial,
                    httpdate::fmt_http_date(issued.not_after)
                );
            }
            Err(e) => {
                drop(lock);
                self.failures += 1;
                let delay = renew::retry_delay(self.failures, e.retry_after());
                self.not_before = Some(Instant::now() + delay);
                let keeping = if self.serving.is_some() { "; the current certificate stays in use" } else { "; HTTP keeps being served" };
                crate::error!("Could not get a certificate for {}: {e}{keeping}; next attempt in {}", self.names.join(", "), human(delay));
            }
        }
    }
}

/// A per-certificate jitter seed, stable across restarts.
fn seed(names: &[String]) -> u64 {
    names.iter().flat_map(|n| n.bytes()).fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

fn human(d: Duration) -> String {
    match d.as_secs() {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s => format!("{} h", s / 3600),
    }
}
