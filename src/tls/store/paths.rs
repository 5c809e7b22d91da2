//! Where everything lives in the state directory, and the checks that keep names
//! and tokens that come from configuration or from the CA inside it.
//!
//!     <state>/lock
//!     <state>/accounts/<sha1-of-directory-url>.json
//!     <state>/certs/<cert-name>/{cert.pem,key.pem,meta.json}
//!     <state>/challenges/http-01/<token>
//!     <state>/challenges/tls-alpn-01/<name>.pem

use sha1::{Digest, Sha1};
use std::path::{Path, PathBuf};

pub fn lock_path(state: &Path) -> PathBuf {
    state.join("lock")
}

pub fn accounts_dir(state: &Path) -> PathBuf {
    state.join("accounts")
}

/// One account per directory URL. The URL is hashed only to make a file name of it
/// (sha1 is what the crate already has; nothing here depends on collision resistance).
pub fn account_path(state: &Path, directory_url: &str) -> PathBuf {
    let digest = Sha1::digest(directory_url.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    accounts_dir(state).join(format!("{hex}.json"))
}

pub fn certs_dir(state: &Path) -> PathBuf {
    state.join("certs")
}

pub fn http01_dir(state: &Path) -> PathBuf {
    state.join("challenges").join("http-01")
}

pub fn tls_alpn01_dir(state: &Path) -> PathBuf {
    state.join("challenges").join("tls-alpn-01")
}

/// The key authorization for `token`, served at /.well-known/acme-challenge/<token>.
pub fn http01_path(state: &Path, token: &str) -> Result<PathBuf, String> {
    validate_token(token)?;
    Ok(http01_dir(state).join(token))
}

/// The challenge certificate + key answering an `acme-tls/1` handshake for SNI `name`.
pub fn tls_alpn01_path(state: &Path, name: &str) -> Result<PathBuf, String> {
    let name = normalize_name(name)?;
    if name.starts_with('*') {
        // RFC 8737 §3: tls-alpn-01 cannot validate a wildcard.
        return Err(format!("{name}: a wildcard name cannot be validated with tls-alpn-01"));
    }
    Ok(tls_alpn01_dir(state).join(format!("{name}.pem")))
}

/// The directory of the certificate for `names`, named after the first one.
pub fn cert_dir(state: &Path, names: &[String]) -> Result<PathBuf, String> {
    let first = names.first().ok_or("a certificate needs at least one name")?;
    Ok(certs_dir(state).join(cert_name(first)?))
}

/// `*.Example.com` -> `_wildcard_.example.com`: a file name with no glob character.
pub fn cert_name(first: &str) -> Result<String, String> {
    Ok(normalize_name(first)?.replace('*', "_wildcard_"))
}

/// ACME tokens are base64url (RFC 8555 §8.3); anything else could escape the directory.
pub fn validate_token(token: &str) -> Result<(), String> {
    let ok = !token.is_empty()
        && token.len() <= 256
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err(format!("invalid ACME token {token:?}: only base64url characters are allowed")) }
}

/// Lowercases a DNS name and checks it: letters, digits and inner hyphens per label,
/// at most 253 characters, optionally one leading `*.`. IP addresses are not accepted
/// (yet): the paths above are built from DNS names only.
pub fn normalize_name(name: &str) -> Result<String, String> {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    let bad = |why: &str| Err(format!("invalid domain name {name:?}: {why}"));
    let rest = lower.strip_prefix("*.").unwrap_or(&lower);
    if rest.is_empty() || lower.len() > 253 {
        return bad("empty or longer than 253 characters");
    }
    if !rest.contains('.') {
        return bad("a certificate name needs at least two labels (e.g. app.example.com)");
    }
    for label in rest.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("each label must have 1 to 63 characters");
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return bad("only letters, digits, '-' and a leading '*.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label cannot start or end with '-'");
        }
    }
    Ok(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_built_from_checked_names() {
        let s = Path::new("/st");
        assert_eq!(http01_path(s, "aB-_9").unwrap(), Path::new("/st/challenges/http-01/aB-_9"));
        assert_eq!(tls_alpn01_path(s, "App.Example.COM").unwrap(), Path::new("/st/challenges/tls-alpn-01/app.example.com.pem"));
        let names = vec!["*.Example.com".to_string(), "example.com".to_string()];
        assert_eq!(cert_dir(s, &names).unwrap(), Path::new("/st/certs/_wildcard_.example.com"));
        assert_eq!(lock_path(s), Path::new("/st/lock"));
        let a = account_path(s, "https://acme.example/dir");
        assert!(a.starts_with("/st/accounts") && a.extension().unwrap() == "json");
        assert_ne!(a, account_path(s, "https://other.example/dir"));
    }

    #[test]
    fn tokens_and_names_that_could_escape_are_refused() {
        let s = Path::new("/st");
        for t in ["", "../x", "a/b", "a.b", "a b", "%2e"] {
            assert!(http01_path(s, t).is_err(), "{t:?}");
        }
        for n in ["", "..", "../etc", "a/b.com", "localhost", "-a.com", "a-.com", "a..com", "a_b.com", "*.*.a.com", "x.*.com"] {
            assert!(normalize_name(n).is_err(), "{n:?}");
        }
        assert!(tls_alpn01_path(s, "*.example.com").unwrap_err().contains("wildcard"));
        assert!(cert_dir(s, &[]).is_err());
        assert_eq!(normalize_name("WWW.Example.com.").unwrap(), "www.example.com");
    }
}
