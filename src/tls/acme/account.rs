//! The ACME account: created once per directory URL, its credentials kept in
//! `<state>/accounts/` (0600), reused by every later order.

use super::{AcmeError, AcmeSettings};
use crate::tls::store;
use base64::prelude::{BASE64_STANDARD, BASE64_URL_SAFE_NO_PAD, Engine};
use instant_acme::{Account, AccountBuilder, AccountCredentials, ExternalAccountKey, NewAccount};

/// An HTTP client for the directory: the system's roots, or only `ca_root` when given
/// (a private CA such as pebble or step-ca serves its directory under its own root).
fn builder(settings: &AcmeSettings) -> Result<AccountBuilder, AcmeError> {
    match &settings.ca_root {
        Some(root) => Account::builder_with_root(root).map_err(|e| {
            AcmeError::Invalid(format!(
                "cannot use {} as the root certificate for {}: {}",
                root.display(), settings.directory, super::error::error_chain(&e)
            ))
        }),
        None => Account::builder().map_err(|e| AcmeError::Protocol {
            during: "loading the system's root certificates".into(),
            error: super::error::error_chain(&e),
        }),
    }
}

/// The stored account for this directory, or a new one (stored before returning).
pub async fn load_or_create(settings: &AcmeSettings) -> Result<Account, AcmeError> {
    let path = store::account_path(&settings.state_dir, &settings.directory);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let creds: AccountCredentials = serde_json::from_slice(&bytes)
                .map_err(|e| AcmeError::State(format!("{} is not an ACME account file: {e}", path.display())))?;
            builder(settings)?
                .from_credentials(creds)
                .await
                .map_err(|e| AcmeError::from_acme(e, "loading the ACME account", &settings.directory))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(settings).await,
        Err(e) => Err(AcmeError::State(format!("reading {}: {e}", path.display()))),
    }
}

async fn create(settings: &AcmeSettings) -> Result<Account, AcmeError> {
    let contact = settings.email.as_ref().map(|email| format!("mailto:{email}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let eab = match &settings.eab {
        Some(eab) => Some(ExternalAccountKey::new(eab.kid.clone(), &decode_hmac_key(&eab.hmac_key_b64)?)),
        None => None,
    };
    let new = NewAccount { contact: &contacts, terms_of_service_agreed: true, only_return_existing: false };
    let (account, creds) = builder(settings)?
        .create(&new, settings.directory.clone(), eab.as_ref())
        .await
        .map_err(|e| AcmeError::from_acme(e, "creating the ACME account", &settings.directory))?;
    let path = store::account_path(&settings.state_dir, &settings.directory);
    let json = serde_json::to_vec_pretty(&creds).map_err(|e| AcmeError::State(e.to_string()))?;
    store::write_atomic(&path, &json, store::SECRET_MODE).map_err(|e| AcmeError::State(e.to_string()))?;
    crate::info!("ACME account created at {} ({})", settings.directory, account.id());
    Ok(account)
}

/// Drops the stored account (the CA no longer knows it, e.g. a test CA restarted),
/// so that the next `load_or_create` registers a new one.
pub fn forget(settings: &AcmeSettings) -> Result<(), AcmeError> {
    let path = store::account_path(&settings.state_dir, &settings.directory);
    store::remove_if_exists(&path).map_err(|e| AcmeError::State(e.to_string()))
}

/// CAs hand out EAB HMAC keys base64url-encoded (RFC 8555 §7.3.4); some print them
/// with padding or in the standard alphabet, which we accept too.
fn decode_hmac_key(key: &str) -> Result<Vec<u8>, AcmeError> {
    let trimmed = key.trim().trim_end_matches('=');
    BASE64_URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| BASE64_STANDARD.decode(key.trim()))
        .map_err(|_| AcmeError::Invalid("the EAB HMAC key is not base64url: copy it exactly as the CA shows it".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eab_keys_are_accepted_in_both_alphabets() {
        assert_eq!(decode_hmac_key("_-8").unwrap(), vec![0xff, 0xef]);
        assert_eq!(decode_hmac_key("/+8=").unwrap(), vec![0xff, 0xef]);
        assert!(decode_hmac_key("not base64!").unwrap_err().to_string().contains("EAB"));
    }
}
