//! Server TLS for LDAPS/StartTLS and HTTPS: a PEM certificate chain and key into a rustls config (ring provider,
//! TLS 1.2 and 1.3 only). Errors name the file and what is wrong with it, so a bad reload says what to fix.

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
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| pem(cert_name, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem(cert_name, "no PEM certificate found".into()));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| pem(key_name, e.to_string()))?
        .ok_or_else(|| pem(key_name, "no PEM private key found".into()))?;
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
