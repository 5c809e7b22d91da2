//! The master's side of HTTPS: it reads the certificate files (workers never need the
//! key files, so they may be readable by root alone), draws the session-ticket keys,
//! and hands workers the current material, at spawn and whenever it changes.

use std::time::{Duration, Instant};

use crate::config::tls::{CertSource, TlsConfig};
use crate::tls::acceptor::TlsMaterial;
use crate::tls::certs::{self, CertPem};
use crate::tls::tickets::{self, TicketKey};

pub struct TlsState {
    pub material: TlsMaterial,
    settings: TlsConfig,
    next_rotation: Instant,
}

impl TlsState {
    /// Reads everything the workers need before the first one starts; an error here
    /// stops the server with the file and the fix.
    pub fn load(settings: &TlsConfig) -> Result<Self, String> {
        let mut material = TlsMaterial { ticket_keys: vec![TicketKey::generate(1)?], ..TlsMaterial::default() };
        material.client_ca_pem = match &settings.client_ca {
            Some(path) => Some(certs::load_ca_bundle(path)?),
            None => None,
        };
        if let Some(CertSource::Files { certfile, keyfile, password }) = &settings.source {
            let pem = certs::load_files(certfile, keyfile, password.as_deref())?;
            crate::info!("Serving HTTPS with the certificate for {} from {}", pem.names.join(", "), certfile.display());
            material.certs = vec![pem];
        }
        Ok(TlsState { material, settings: settings.clone(), next_rotation: Instant::now() + tickets::ROTATION })
    }

    /// SIGHUP: reads the files again. A file that no longer loads keeps the material in
    /// use (the error is logged): a typo during a certificate swap must not take HTTPS down.
    /// True when something changed.
    pub fn reload_files(&mut self) -> bool {
        let fresh = match TlsState::load(&self.settings) {
            Ok(fresh) => fresh.material,
            Err(e) => {
                crate::error!("SIGHUP: keeping the certificate in use: {e}");
                return false;
            }
        };
        let from_files = matches!(self.settings.source, Some(CertSource::Files { .. }));
        let mut changed = fresh.client_ca_pem != self.material.client_ca_pem;
        self.material.client_ca_pem = fresh.client_ca_pem;
        if from_files && fresh.certs != self.material.certs {
            self.material.certs = fresh.certs;
            changed = true;
        }
        changed
    }

    /// Replaces the certificates for the names of `pem` (ACME issuance or renewal).
    pub fn install(&mut self, pem: CertPem) {
        self.material.certs.retain(|c| c.names != pem.names);
        self.material.certs.push(pem);
    }

    /// The certificates served, for `ferrogate status`.
    pub fn describe(&self) -> Vec<crate::control::CertificateStatus> {
        let since_epoch = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.material
            .certs
            .iter()
            .filter_map(|pem| {
                let chain = certs::parse_chain(pem.chain_pem.as_bytes()).ok()?;
                let facts = certs::leaf_facts(chain.first()?).ok()?;
                Some(crate::control::CertificateStatus { names: facts.names, not_after: since_epoch(facts.not_after), issuer: facts.issuer })
            })
            .collect()
    }

    /// Time until the next ticket-key rotation.
    pub fn until_rotation(&self) -> Duration {
        self.next_rotation.saturating_duration_since(Instant::now())
    }

    /// Draws a new ticket key; the previous one stays valid for one more period.
    pub fn rotate_ticket_key(&mut self) -> Result<(), String> {
        let next_id = self.material.ticket_keys.first().map_or(1, |k| k.id.wrapping_add(1));
        let fresh = TicketKey::generate(next_id)?;
        let previous = self.material.ticket_keys.first().cloned();
        self.material.ticket_keys = std::iter::once(fresh).chain(previous).collect();
        self.next_rotation = Instant::now() + tickets::ROTATION;
        Ok(())
    }
}
