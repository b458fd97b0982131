//! Server TLS for LDAPS/StartTLS and HTTPS: a PEM certificate chain and key into a rustls config (ring provider,
//! TLS 1.2 and 1.3 only). Errors name the file and what is wrong with it, so a bad reload says what to fix.

use rustls::pki_types::pem::{Error as PemError, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{what}: {reason}")]
    Pem { what: String, reason: String },
    #[error("certificate and key do not go together or are unusable: {0}")]
    Config(String),
}

/// A server config from PEM bytes; `cert_name`/`key_name` label errors (file names, usually).
pub fn server_config_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_name: &str,
    key_name: &str,
) -> Result<rustls::ServerConfig, TlsError> {
    let pem = |what: &str, reason: String| TlsError::Pem {
        what: what.to_string(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| pem(cert_name, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem(cert_name, "no PEM certificate found".into()));
    }
    let key: PrivateKeyDer<'static> = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        PemError::NoItemsFound => pem(key_name, "no PEM private key found".into()),
        e => pem(key_name, e.to_string()),
    })?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))
}

/// Load certificate and key files.
pub fn load(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|error| TlsError::Read {
            path: p.display().to_string(),
            error,
        })
    };
    server_config_from_pem(
        &read(cert)?,
        &read(key)?,
        &cert.display().to_string(),
        &key.display().to_string(),
    )
}

/// When a PEM certificate expires (`notAfter`, Unix seconds), so the operator can be warned before Entra starts
/// refusing it. `None` if the certificate cannot be read that far.
pub fn certificate_not_after(cert_pem: &str) -> Option<u64> {
    let der = CertificateDer::pem_slice_iter(cert_pem.as_bytes()).next()?.ok()?;
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer,
    // validity SEQUENCE { notBefore, notAfter }, ... }, ... }
    let (_, cert, _) = der_tlv(der.as_ref())?;
    let (_, mut tbs, _) = der_tlv(cert)?;
    let (tag, _, rest) = der_tlv(tbs)?;
    if tag == 0xA0 {
        tbs = rest;
    }
    for _ in 0..3 {
        tbs = der_tlv(tbs)?.2; // serialNumber, signature, issuer
    }
    let (_, validity, _) = der_tlv(tbs)?;
    let (_, _, after) = der_tlv(validity)?;
    let (tag, time, _) = der_tlv(after)?;
    let time = std::str::from_utf8(time).ok()?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: u64 = time.get(0..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, time.get(2..)?)
        }
        0x18 => (time.get(0..4)?.parse().ok()?, time.get(4..)?),
        _ => return None,
    };
    let field = |range: std::ops::Range<usize>| rest.get(range)?.parse::<u64>().ok();
    let (month, day, hour, minute, second) = (field(0..2)?, field(2..4)?, field(4..6)?, field(6..8)?, field(8..10)?);
    if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(crate::time::days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// One DER TLV: (tag, contents, what follows). `None` on anything malformed.
pub fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_expiry_is_read_from_the_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["entradir-test".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 2, 28);
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(certificate_not_after(&cert.pem()), Some(1_930_003_200)); // 2031-02-28T00:00:00Z
        params = rcgen::CertificateParams::new(vec!["x".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2060, 1, 1); // GeneralizedTime from 2050 on
        assert_eq!(
            certificate_not_after(&params.self_signed(&key).unwrap().pem()),
            Some(2_840_140_800)
        );
        assert_eq!(certificate_not_after("garbage"), None);
        let truncated = "-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAKHBfpegPjMCMA0GCSqGSIb3DQEBCwUAMBExDzANBgNVBAMMBnVu\n-----END CERTIFICATE-----\n";
        assert_eq!(certificate_not_after(truncated), None);
    }
}
