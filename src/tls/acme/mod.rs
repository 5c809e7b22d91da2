//! Getting certificates from an ACME CA (RFC 8555): `issue`, `revoke`, and
//! `renewal_window` (ARI, RFC 9773). The master calls these while holding the
//! state directory's `StateLock`; storing the result is the caller's choice
//! (`store::save`), so a dry run stores nothing.
//!
//! Challenges are answered through files in the state directory that the workers
//! serve (`store::http01_path`, `store::tls_alpn01_path`): the process that orders
//! needs no port of its own.

mod account;
pub mod cert;
pub mod error;
mod order;
pub mod renew;

pub use error::{AcmeError, CaProblem, ChallengeKind};

use crate::tls::store;
use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

/// External Account Binding (RFC 8555 §7.3.4), required by some CAs (ZeroSSL, Google).
#[derive(Clone)]
pub struct Eab {
    pub kid: String,
    /// The HMAC key as the CA shows it (base64url).
    pub hmac_key_b64: String,
}

impl fmt::Debug for Eab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The HMAC key is a credential: never in a log line.
        f.debug_struct("Eab").field("kid", &self.kid).field("hmac_key_b64", &"<redacted>").finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengeChoice {
    /// http-01, then tls-alpn-01 (in a new order) if the CA could not validate it.
    Auto,
    Http01,
    TlsAlpn01,
}

/// Whether an order may ride on a validation the CA still holds for the account
/// (Let's Encrypt keeps one for hours; pebble reuses one at random, even at
/// PEBBLE_AUTHZREUSE=0: one order in a hundred).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validation {
    /// The server's own renewals: the CA decides, and the renewal needs fewer requests.
    Reuse,
    /// `certs renew` run by hand: a valid authorization is deactivated and the order
    /// placed again, so that the challenge really runs. A dry run that skipped it would
    /// report success for a domain that can no longer be validated.
    Fresh,
}

#[derive(Clone, Debug)]
pub struct AcmeSettings {
    pub directory: String,
    pub email: Option<String>,
    /// PEM root that signs the directory's own HTTPS certificate (private CAs). When
    /// given, it is the only root trusted for the directory.
    pub ca_root: Option<PathBuf>,
    pub eab: Option<Eab>,
    pub challenge: ChallengeChoice,
    pub validation: Validation,
    pub state_dir: PathBuf,
}

/// A certificate just issued (not stored yet).
#[derive(Clone, Debug)]
pub struct Issued {
    /// As requested, lowercased, duplicates removed; the first names the directory.
    pub names: Vec<String>,
    /// The directory URL it came from (stored in meta.json).
    pub directory: String,
    /// Full chain, leaf first.
    pub chain_pem: String,
    /// PKCS#8 PEM, ECDSA P-256.
    pub key_pem: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Hex.
    pub serial: String,
    pub issuer: String,
    /// RFC 9773 certificate identifier, when the leaf has an Authority Key Identifier.
    pub ari_cert_id: Option<String>,
}

/// Orders a certificate for `names` and returns it (see the module comment).
pub async fn issue(settings: &AcmeSettings, names: &[String]) -> Result<Issued, AcmeError> {
    let names = normalize_names(names)?;
    store::ensure_dir(&settings.state_dir).map_err(|e| AcmeError::State(e.to_string()))?;
    let kinds: &[ChallengeKind] = match settings.challenge {
        ChallengeChoice::Auto => &[ChallengeKind::Http01, ChallengeKind::TlsAlpn01],
        ChallengeChoice::Http01 => &[ChallengeKind::Http01],
        ChallengeChoice::TlsAlpn01 => &[ChallengeKind::TlsAlpn01],
    };
    let mut account = account::load_or_create(settings).await?;
    let mut failed = Vec::new();
    for (i, &kind) in kinds.iter().enumerate() {
        let mut result = order::attempt(&account, settings, &names, kind).await;
        if is_unknown_account(&result) {
            // The CA lost the account (a test CA restarted, an account deactivated
            // elsewhere): register again once instead of failing forever.
            crate::warn!("ACME: {} does not know the stored account any more; registering a new one", settings.directory);
            account::forget(settings)?;
            account = account::load_or_create(settings).await?;
            result = order::attempt(&account, settings, &names, kind).await;
        }
        match result {
            Ok(issued) => return Ok(issued),
            Err(e) if e.worth_another_challenge() && i + 1 < kinds.len() => {
                crate::warn!("ACME: {e}; trying {} with a new order", kinds[i + 1]);
                failed.push(e);
            }
            Err(e) if failed.is_empty() => return Err(e),
            Err(e) => {
                failed.push(e);
                return Err(AcmeError::AllChallengesFailed(failed));
            }
        }
    }
    unreachable!("kinds is never empty")
}

fn is_unknown_account<T>(result: &Result<T, AcmeError>) -> bool {
    matches!(result, Err(AcmeError::Rejected { problem, .. }) if problem.short_kind() == "accountDoesNotExist")
}

/// Revokes the leaf of `chain_pem` with the account of `settings`.
pub async fn revoke(settings: &AcmeSettings, chain_pem: &str) -> Result<(), AcmeError> {
    let leaf = cert::leaf_der(chain_pem).map_err(AcmeError::Invalid)?;
    let account = account::load_or_create(settings).await?;
    let request = instant_acme::RevocationRequest { certificate: &leaf, reason: None };
    account
        .revoke(&request)
        .await
        .map_err(|e| AcmeError::from_acme(e, "revoking the certificate", &settings.directory))
}

/// The CA's suggested renewal window for `chain_pem` (ARI), or `Ok(None)` when the
/// directory offers no renewalInfo (pebble 2.4) or the leaf cannot be named for it.
pub async fn renewal_window(settings: &AcmeSettings, chain_pem: &str) -> Result<Option<(SystemTime, SystemTime)>, AcmeError> {
    let leaf = cert::leaf_info(chain_pem).map_err(AcmeError::Invalid)?;
    let Some((aki, serial)) = leaf.ari_cert_id.as_deref().and_then(|id| id.split_once('.')) else {
        return Ok(None);
    };
    let id = instant_acme::CertificateIdentifier { authority_key_identifier: aki.into(), serial: serial.into() };
    let account = account::load_or_create(settings).await?;
    match account.renewal_info(&id).await {
        Ok((info, _refetch_after)) => {
            let window = info.suggested_window;
            Ok(Some((SystemTime::from(window.start), SystemTime::from(window.end))))
        }
        Err(instant_acme::Error::Unsupported(_)) => Ok(None),
        Err(e) => Err(AcmeError::from_acme(e, "fetching the renewal window (ARI)", &settings.directory)),
    }
}

/// Lowercased, checked, duplicates dropped (first occurrence kept), at least one.
pub fn normalize_names(names: &[String]) -> Result<Vec<String>, AcmeError> {
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        let n = store::normalize_name(name).map_err(AcmeError::Invalid)?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    if out.is_empty() {
        return Err(AcmeError::Invalid("a certificate needs at least one domain name".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_and_deduplicated() {
        let names = ["B.example.com", "a.example.com", "b.example.com."].map(String::from);
        assert_eq!(normalize_names(&names).unwrap(), vec!["b.example.com", "a.example.com"]);
        assert!(normalize_names(&[]).is_err());
        assert!(normalize_names(&["../x".into()]).unwrap_err().to_string().contains("invalid domain name"));
    }

    #[test]
    fn eab_debug_hides_the_key() {
        let eab = Eab { kid: "kid-1".into(), hmac_key_b64: "c2VjcmV0".into() };
        let s = format!("{eab:?}");
        assert!(s.contains("kid-1") && !s.contains("c2VjcmV0"));
    }
}
