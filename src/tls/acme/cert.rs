//! The X.509 side of ACME: the key and CSR we send, the TLS-ALPN-01 challenge
//! certificate, and what we read back from an issued chain.

use base64::prelude::{BASE64_URL_SAFE_NO_PAD, Engine};
use rcgen::{CertificateParams, CustomExtension, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use x509_parser::extensions::ParsedExtension;

/// What the rest of the code needs to know about a chain's leaf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafInfo {
    /// Hex, as `openssl x509 -serial` prints it (no leading zero byte).
    pub serial: String,
    pub issuer: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// RFC 9773 §4.1 `base64url(AKI keyIdentifier) "." base64url(serial)`; None when
    /// the leaf has no Authority Key Identifier (then ARI cannot name it).
    pub ari_cert_id: Option<String>,
}

/// The first certificate of a PEM chain, DER.
pub fn leaf_der(chain_pem: &str) -> Result<CertificateDer<'static>, String> {
    CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or("no certificate in the PEM chain")?
        .map_err(|e| format!("unreadable PEM certificate: {e}"))
}

pub fn leaf_info(chain_pem: &str) -> Result<LeafInfo, String> {
    let der = leaf_der(chain_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("the leaf certificate does not parse: {e}"))?;
    let time = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs < 0 { UNIX_EPOCH } else { UNIX_EPOCH + Duration::from_secs(secs as u64) }
    };
    let raw_serial = cert.tbs_certificate.raw_serial();
    let trimmed = match raw_serial {
        [0, rest @ ..] if !rest.is_empty() => rest,
        all => all,
    };
    let aki = cert.iter_extensions().find_map(|ext| match ext.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref().map(|k| k.0.to_vec()),
        _ => None,
    });
    Ok(LeafInfo {
        serial: trimmed.iter().map(|b| format!("{b:02x}")).collect(),
        issuer: cert.issuer().to_string(),
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
        ari_cert_id: aki.map(|aki| format!("{}.{}", BASE64_URL_SAFE_NO_PAD.encode(aki), BASE64_URL_SAFE_NO_PAD.encode(raw_serial))),
    })
}

/// A fresh ECDSA P-256 key (PKCS#8 PEM) and a CSR for `names` signed with it, DER.
/// The subject is left empty: CAs take the names from the SAN extension.
pub fn key_and_csr(names: &[String]) -> Result<(String, Vec<u8>), String> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| format!("generating a key: {e}"))?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(|e| format!("CSR names: {e}"))?;
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(|e| format!("signing the CSR: {e}"))?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}

/// The RFC 8737 challenge certificate for `name`: self-signed, SAN = name, with the
/// critical acmeIdentifier extension holding SHA-256(key authorization). Returned as
/// one PEM text, certificate first, then its key.
pub fn tls_alpn01_cert(name: &str, key_authorization_sha256: &[u8]) -> Result<String, String> {
    if key_authorization_sha256.len() != 32 {
        return Err("the key authorization digest must be 32 bytes (SHA-256)".into());
    }
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| format!("generating a key: {e}"))?;
    let mut params = CertificateParams::new(vec![name.to_string()]).map_err(|e| format!("{name}: {e}"))?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(key_authorization_sha256)];
    let cert = params.self_signed(&key).map_err(|e| format!("signing the challenge certificate: {e}"))?;
    Ok(format!("{}{}", cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tls::acme::Issued;

    /// An `Issued` made of a self-signed certificate, for store tests.
    pub fn self_signed_issued(names: &[&str]) -> Issued {
        let names: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = CertificateParams::new(names.clone()).unwrap().self_signed(&key).unwrap();
        let chain_pem = cert.pem();
        let leaf = leaf_info(&chain_pem).unwrap();
        Issued {
            names,
            directory: "https://acme.test/dir".into(),
            key_pem: key.serialize_pem(),
            chain_pem,
            not_before: leaf.not_before,
            not_after: leaf.not_after,
            serial: leaf.serial,
            issuer: leaf.issuer,
            ari_cert_id: leaf.ari_cert_id,
        }
    }

    #[test]
    fn reads_serial_validity_and_issuer_of_the_leaf() {
        let issued = self_signed_issued(&["a.example.test"]);
        let leaf = leaf_info(&issued.chain_pem).unwrap();
        assert!(!leaf.serial.is_empty() && leaf.serial.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(leaf.not_after > leaf.not_before);
        assert!(leaf.issuer.contains("rcgen"), "{}", leaf.issuer);
        assert!(leaf_info("not pem").is_err());
    }

    #[test]
    fn challenge_certificate_carries_the_acme_identifier() {
        let pem = tls_alpn01_cert("a.example.test", &[7u8; 32]).unwrap();
        assert!(pem.find("BEGIN CERTIFICATE").unwrap() < pem.find("PRIVATE KEY").unwrap());
        let der = leaf_der(&pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let ext = cert.iter_extensions().find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31").unwrap();
        assert!(ext.critical);
        assert_eq!(&ext.value[2..], &[7u8; 32]);
        assert!(tls_alpn01_cert("a.example.test", &[0u8; 5]).is_err());
    }

    #[test]
    fn csr_is_der_with_the_names() {
        let (key, csr) = key_and_csr(&["a.example.test".into(), "b.example.test".into()]).unwrap();
        assert!(key.contains("BEGIN PRIVATE KEY"));
        assert_eq!(csr[0], 0x30);
    }
}
