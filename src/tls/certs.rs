//! Certificates as the master reads them and hands them to workers: PEM files checked
//! with errors a person can act on (which file, what is wrong with it, how to fix it),
//! never a library's bare "PEM lib".

use rustls::crypto::aws_lc_rs::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One certificate with its key, as sent to workers: the chain leaf first, the key as
/// unencrypted PKCS#8 (the channel is a private socketpair).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CertPem {
    /// The DNS names of the leaf (subjectAltName), lowercased; SNI picks by them.
    pub names: Vec<String>,
    pub chain_pem: String,
    pub key_pem: String,
}

/// What `ferrogate certs list` and the logs say about a certificate.
#[derive(Clone, Debug, PartialEq)]
pub struct LeafFacts {
    pub names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub serial: String,
    pub issuer: String,
}

/// Reads --ssl-certfile and --ssl-keyfile (with --ssl-keyfile-password) and checks that
/// the key belongs to the certificate.
pub fn load_files(certfile: &Path, keyfile: &Path, password: Option<&str>) -> Result<CertPem, String> {
    let cert_bytes = read(certfile, "--ssl-certfile")?;
    let chain = parse_chain(&cert_bytes).map_err(|e| {
        let hint = if looks_like_key(&cert_bytes) { " (it holds a private key: did you swap --ssl-certfile and --ssl-keyfile?)" } else { "" };
        format!("--ssl-certfile {}: {e}{hint}", certfile.display())
    })?;
    let key = if keyfile == certfile {
        // No --ssl-keyfile: the key must be in the certificate file, as uvicorn reads it.
        parse_key(&cert_bytes, password).map_err(|e| match e {
            KeyError::Missing(_) => format!("--ssl-certfile {} holds no private key: give the key's file with --ssl-keyfile", certfile.display()),
            KeyError::Other(e) => format!("--ssl-certfile {}: {e}", certfile.display()),
        })?
    } else {
        let key_bytes = read(keyfile, "--ssl-keyfile")?;
        parse_key(&key_bytes, password).map_err(|e| format!("--ssl-keyfile {}: {}", keyfile.display(), e.message(&key_bytes)))?
    };
    let signing = any_supported_type(&key).map_err(|e| {
        format!("--ssl-keyfile {}: the key cannot sign TLS handshakes ({e}); use an RSA (2048+ bits), ECDSA P-256/P-384 or Ed25519 key", keyfile.display())
    })?;
    let certified = CertifiedKey::new(chain.clone(), signing);
    if certified.keys_match().is_err() {
        return Err(format!(
            "--ssl-keyfile {} does not belong to the certificate in --ssl-certfile {} (compare `openssl x509 -noout -pubkey -in CERT` with `openssl pkey -pubout -in KEY`)",
            keyfile.display(),
            certfile.display()
        ));
    }
    let facts = leaf_facts(&chain[0]).map_err(|e| format!("--ssl-certfile {}: {e}", certfile.display()))?;
    if facts.not_after < SystemTime::now() {
        crate::warn!("the certificate in {} expired on {}; clients will refuse it", certfile.display(), httpdate::fmt_http_date(facts.not_after));
    }
    Ok(CertPem { names: facts.names, chain_pem: chain_to_pem(&chain), key_pem: pem_encode("PRIVATE KEY", &to_pkcs8(&key)?) })
}

/// Reads --ssl-ca-certs: the CAs that client certificates must chain to.
pub fn load_ca_bundle(path: &Path) -> Result<String, String> {
    let bytes = read(path, "--ssl-ca-certs")?;
    let certs = parse_chain(&bytes).map_err(|e| {
        let hint = if looks_like_key(&bytes) { " (it holds a private key; --ssl-ca-certs takes the CA certificates that client certificates chain to)" } else { "" };
        format!("--ssl-ca-certs {}: {e}{hint}", path.display())
    })?;
    Ok(chain_to_pem(&certs))
}

/// A worker's view of a certificate: ready to hand to rustls.
pub fn certified_key(pem: &CertPem) -> Result<Arc<CertifiedKey>, String> {
    let chain = parse_chain(pem.chain_pem.as_bytes())?;
    let key = PrivateKeyDer::from_pem_slice(pem.key_pem.as_bytes()).map_err(|e| format!("bad key for {}: {e}", pem.names.join(",")))?;
    let signing = any_supported_type(&key).map_err(|e| format!("unusable key for {}: {e}", pem.names.join(",")))?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{flag} {}: no such file", path.display()),
        std::io::ErrorKind::PermissionDenied => format!("{flag} {}: permission denied (the server reads it as the user it starts as)", path.display()),
        _ => format!("{flag} {}: cannot read it: {e}", path.display()),
    })
}

/// Every CERTIFICATE block, in order.
pub fn parse_chain(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut chain = Vec::new();
    for cert in CertificateDer::pem_slice_iter(bytes) {
        chain.push(cert.map_err(|e| format!("a CERTIFICATE block is damaged ({e})"))?);
    }
    if chain.is_empty() {
        let hint = if bytes.starts_with(&[0x30]) { " (it looks like DER: convert it with `openssl x509 -inform der -in FILE -out FILE.pem`)" } else { "" };
        return Err(format!("no certificate in it: expected PEM with -----BEGIN CERTIFICATE-----{hint}"));
    }
    Ok(chain)
}

fn looks_like_key(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    text.contains("PRIVATE KEY-----")
}

enum KeyError {
    /// No private key block at all; the message says what the file looked like.
    Missing(String),
    Other(String),
}

impl KeyError {
    fn message(self, bytes: &[u8]) -> String {
        match self {
            KeyError::Missing(_) if String::from_utf8_lossy(bytes).contains("BEGIN CERTIFICATE") => "no private key in it, only certificates: did you swap --ssl-certfile and --ssl-keyfile?".into(),
            KeyError::Missing(m) | KeyError::Other(m) => m,
        }
    }
}

/// The first private key in `bytes`, decrypting an ENCRYPTED PRIVATE KEY with `password`.
fn parse_key(bytes: &[u8], password: Option<&str>) -> Result<PrivateKeyDer<'static>, KeyError> {
    use KeyError::Other;
    let text = String::from_utf8_lossy(bytes);
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(Other("the key uses OpenSSL's legacy PEM encryption, which ferrogate does not read; convert it to encrypted PKCS#8 with `openssl pkcs8 -topk8 -v2 aes-256-cbc -in OLD.key -out NEW.key`".into()));
    }
    if let Some(block) = pem_block(&text, "ENCRYPTED PRIVATE KEY") {
        let Some(password) = password else {
            return Err(Other("the key is encrypted: give its password with --ssl-keyfile-password".into()));
        };
        let der = base64_decode(&block).ok_or_else(|| Other("the ENCRYPTED PRIVATE KEY block is damaged".into()))?;
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice()).map_err(|e| Other(format!("the ENCRYPTED PRIVATE KEY block is damaged ({e})")))?;
        let plain = info.decrypt(password).map_err(|_| Other("wrong --ssl-keyfile-password (or a cipher other than PBES2 with AES; re-encrypt with `openssl pkcs8 -topk8 -v2 aes-256-cbc`)".to_string()))?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(plain.as_bytes().to_vec())));
    }
    if password.is_some() && looks_like_key(bytes) {
        crate::warn!("--ssl-keyfile-password is given but the key is not encrypted; the password is not used");
    }
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound if bytes.starts_with(&[0x30]) => Other("no private key in it: it looks like DER; convert it with `openssl pkey -inform der -in FILE -out FILE.pem`".into()),
        rustls::pki_types::pem::Error::NoItemsFound => KeyError::Missing("no private key in it: expected PEM with -----BEGIN PRIVATE KEY----- (or RSA/EC PRIVATE KEY)".into()),
        other => Other(format!("the private key block is damaged ({other})")),
    })
}

/// Workers get PKCS#8 whatever the file had: PKCS#1 and SEC1 keys are re-wrapped by
/// aws-lc, which knows their algorithm.
fn to_pkcs8(key: &PrivateKeyDer<'_>) -> Result<Vec<u8>, String> {
    use aws_lc_rs::encoding::AsDer;
    let der = key.secret_der();
    match key {
        PrivateKeyDer::Pkcs8(_) => Ok(der.to_vec()),
        PrivateKeyDer::Pkcs1(_) => aws_lc_rs::rsa::KeyPair::from_der(der)
            .map_err(|e| format!("the RSA key does not parse ({e})"))
            .and_then(|k| k.as_der().map(|d| d.as_ref().to_vec()).map_err(|e| format!("cannot re-encode the RSA key ({e})"))),
        PrivateKeyDer::Sec1(_) => {
            for alg in [&aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING, &aws_lc_rs::signature::ECDSA_P384_SHA384_ASN1_SIGNING, &aws_lc_rs::signature::ECDSA_P521_SHA512_ASN1_SIGNING] {
                if let Ok(k) = aws_lc_rs::signature::EcdsaKeyPair::from_private_key_der(alg, der) {
                    return k.to_pkcs8v1().map(|d| d.as_ref().to_vec()).map_err(|e| format!("cannot re-encode the EC key ({e})"));
                }
            }
            Err("the EC key is on a curve TLS does not use here; use P-256 or P-384".into())
        }
        _ => Err("unknown private key format".into()),
    }
}

/// Names, validity, serial and issuer of a leaf certificate.
pub fn leaf_facts(der: &CertificateDer<'_>) -> Result<LeafFacts, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| format!("the certificate does not parse ({e})"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(n) => names.push(n.to_ascii_lowercase()),
                x509_parser::extensions::GeneralName::IPAddress(ip) if ip.len() == 4 => names.push(std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).to_string()),
                _ => {}
            }
        }
    }
    if names.is_empty() {
        if let Some(cn) = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()) {
            names.push(cn.to_ascii_lowercase());
        }
    }
    let time = |t: x509_parser::time::ASN1Time| UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64);
    Ok(LeafFacts {
        names,
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
        serial: cert.raw_serial_as_string().replace(':', ""),
        issuer: cert.issuer().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(String::from).unwrap_or_else(|| cert.issuer().to_string()),
    })
}

pub fn chain_to_pem(chain: &[CertificateDer<'_>]) -> String {
    chain.iter().map(|c| pem_encode("CERTIFICATE", c.as_ref())).collect()
}

pub fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn pem_block(text: &str, label: &str) -> Option<String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    Some(text[start..stop].chars().filter(|c| !c.is_whitespace()).collect())
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("fg-certs-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_matching_pair_loads_with_its_names() {
        let d = tmp("ok");
        let (cert, key) = self_signed(&["app.example.test", "www.example.test"]);
        let pem = load_files(&write(&d, "c.pem", &cert), &write(&d, "k.pem", &key), None).unwrap();
        assert_eq!(pem.names, ["app.example.test", "www.example.test"]);
        certified_key(&pem).unwrap().keys_match().unwrap();
        // Key and certificate in one file, as uvicorn allows.
        let both = write(&d, "both.pem", &format!("{cert}{key}"));
        load_files(&both, &both, None).unwrap();
    }

    #[test]
    fn errors_name_the_file_and_the_fix() {
        let d = tmp("bad");
        let (cert, key) = self_signed(&["a.example.test"]);
        let (_, other_key) = self_signed(&["b.example.test"]);
        let c = write(&d, "c.pem", &cert);
        let k = write(&d, "k.pem", &key);
        let cases = [
            (load_files(&d.join("missing.pem"), &k, None), "missing.pem: no such file"),
            (load_files(&k, &c, None), "did you swap"),
            (load_files(&c, &write(&d, "o.pem", &other_key), None), "does not belong to the certificate"),
            (load_files(&c, &write(&d, "junk.pem", "hello"), None), "expected PEM with -----BEGIN PRIVATE KEY"),
            (load_files(&c, &write(&d, "legacy.pem", "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n"), None), "openssl pkcs8 -topk8"),
        ];
        for (result, expected) in cases {
            let e = result.unwrap_err();
            assert!(e.contains(expected), "{e}");
        }
    }

    #[test]
    fn pem_round_trips() {
        let (cert, _) = self_signed(&["a.example.test"]);
        let chain = parse_chain(cert.as_bytes()).unwrap();
        assert_eq!(parse_chain(chain_to_pem(&chain).as_bytes()).unwrap(), chain);
    }
}
