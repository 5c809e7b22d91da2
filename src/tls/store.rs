//! Certificates, account credentials and challenge files in the state directory
//! (layout in `paths.rs`). Every write is atomic (`atomic.rs`); directories are 0700,
//! private keys 0600.

mod atomic;
mod lock;
mod paths;

pub use atomic::{PUBLIC_MODE, SECRET_MODE, ensure_dir, remove_if_exists, write_atomic, write_transient};
pub use lock::StateLock;
pub use paths::*;

use crate::tls::acme::{Issued, cert};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What meta.json says about a stored certificate (times in unix seconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub names: Vec<String>,
    pub directory: String,
    /// The leaf's serial number, hex; load() checks it against cert.pem.
    pub serial: String,
    pub issuer: String,
    pub not_before: u64,
    pub not_after: u64,
    pub issued_at: u64,
    /// RFC 9773 certificate identifier (`base64url(AKI).base64url(serial)`), for ARI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ari_cert_id: Option<String>,
}

impl Meta {
    pub fn not_before(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.not_before)
    }
    pub fn not_after(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.not_after)
    }
}

#[derive(Clone, Debug)]
pub struct Stored {
    pub chain_pem: String,
    pub key_pem: String,
    pub meta: Meta,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Stores a certificate under `certs/<cert-name>/`. The order is cert.pem, key.pem,
/// meta.json: until meta.json (which names the serial) is replaced, a reader can tell
/// a half-replaced set from a whole one (see `load`).
pub fn save(state: &Path, issued: &Issued) -> io::Result<()> {
    let dir = cert_dir(state, &issued.names).map_err(io::Error::other)?;
    ensure_dir(&certs_dir(state))?;
    let meta = Meta {
        names: issued.names.clone(),
        directory: issued.directory.clone(),
        serial: issued.serial.clone(),
        issuer: issued.issuer.clone(),
        not_before: unix(issued.not_before),
        not_after: unix(issued.not_after),
        issued_at: unix(SystemTime::now()),
        ari_cert_id: issued.ari_cert_id.clone(),
    };
    let json = serde_json::to_vec_pretty(&meta).map_err(io::Error::other)?;
    write_atomic(&dir.join("cert.pem"), issued.chain_pem.as_bytes(), PUBLIC_MODE)?;
    write_atomic(&dir.join("key.pem"), issued.key_pem.as_bytes(), SECRET_MODE)?;
    write_atomic(&dir.join("meta.json"), &json, PUBLIC_MODE)
}

/// The stored certificate for `names` (found by the first name), `Ok(None)` if there
/// is none. A set caught between two saves is read again a few times before it is
/// reported as an error.
pub fn load(state: &Path, names: &[String]) -> Result<Option<Stored>, String> {
    let dir = cert_dir(state, names)?;
    if !dir.join("meta.json").exists() {
        return Ok(None);
    }
    let mut last = String::new();
    for _ in 0..5 {
        match load_dir(&dir) {
            Ok(stored) => return Ok(Some(stored)),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(last)
}

fn load_dir(dir: &Path) -> Result<Stored, String> {
    let read = |name: &str| {
        let p = dir.join(name);
        fs::read_to_string(&p).map_err(|e| format!("reading {}: {e}", p.display()))
    };
    let meta: Meta = serde_json::from_str(&read("meta.json")?)
        .map_err(|e| format!("{}: not a ferrogate meta.json: {e}", dir.join("meta.json").display()))?;
    let chain_pem = read("cert.pem")?;
    let key_pem = read("key.pem")?;
    let leaf = cert::leaf_info(&chain_pem).map_err(|e| format!("{}: {e}", dir.join("cert.pem").display()))?;
    if leaf.serial != meta.serial {
        return Err(format!(
            "{}: cert.pem (serial {}) does not match meta.json (serial {}): a save was interrupted or is in progress",
            dir.display(), leaf.serial, meta.serial
        ));
    }
    Ok(Stored { chain_pem, key_pem, meta })
}

/// Every readable certificate in the state directory; unreadable ones are logged and skipped.
pub fn list(state: &Path) -> Vec<Stored> {
    let Ok(entries) = fs::read_dir(certs_dir(state)) else { return Vec::new() };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        if !dir.is_dir() {
            continue;
        }
        match load_dir(&dir) {
            Ok(s) => out.push(s),
            Err(e) => crate::warn!("ignoring stored certificate: {e}"),
        }
    }
    out.sort_by(|a, b| a.meta.names.cmp(&b.meta.names));
    out
}

/// Removes every challenge file (leftovers of a process that died while ordering).
/// Call it only while holding the `StateLock`. Returns how many were removed.
pub fn remove_challenge_files(state: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for dir in [http01_dir(state), tls_alpn01_dir(state)] {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            remove_if_exists(&entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    /// A fresh directory under the system temp dir (removed by the test).
    pub fn tempdir(tag: &str) -> PathBuf {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ferrogate-tls-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        ensure_dir(&dir).unwrap();
        dir
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn save_then_load_round_trips_with_private_modes() {
        let state = tempdir("store");
        let issued = cert::tests::self_signed_issued(&["App.example.test", "www.example.test"]);
        let names = issued.names.clone();
        assert!(load(&state, &names).unwrap().is_none());
        save(&state, &issued).unwrap();
        let stored = load(&state, &names).unwrap().unwrap();
        assert_eq!(stored.chain_pem, issued.chain_pem);
        assert_eq!(stored.key_pem, issued.key_pem);
        assert_eq!(stored.meta.names, names);
        assert_eq!(stored.meta.serial, issued.serial);
        assert_eq!(stored.meta.not_after(), UNIX_EPOCH + Duration::from_secs(unix(issued.not_after)));
        let dir = cert_dir(&state, &names).unwrap();
        assert!(dir.ends_with("certs/app.example.test"));
        assert_eq!(mode(&dir.join("key.pem")), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&certs_dir(&state)), 0o700);
        assert_eq!(list(&state).len(), 1);

        // A cert.pem replaced without its meta.json is caught, not served with the wrong key.
        let other = cert::tests::self_signed_issued(&["app.example.test"]);
        write_atomic(&dir.join("cert.pem"), other.chain_pem.as_bytes(), SECRET_MODE).unwrap();
        assert!(load(&state, &names).unwrap_err().contains("does not match meta.json"));
        assert!(list(&state).is_empty());
        let _ = fs::remove_dir_all(&state);
    }

    #[test]
    fn leftover_challenge_files_are_removed() {
        let state = tempdir("challenges");
        write_atomic(&http01_path(&state, "tok").unwrap(), b"tok.thumb", PUBLIC_MODE).unwrap();
        write_atomic(&tls_alpn01_path(&state, "a.example.test").unwrap(), b"pem", SECRET_MODE).unwrap();
        assert_eq!(remove_challenge_files(&state).unwrap(), 2);
        assert_eq!(remove_challenge_files(&state).unwrap(), 0);
        let _ = fs::remove_dir_all(&state);
    }
}
