//! rustls server configuration for LDAPS and StartTLS (ring provider), loaded from PEM.

use super::LdapError;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// Build a server config from PEM certificate chain and private key bytes.
pub fn server_config_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<rustls::ServerConfig>, LdapError> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| LdapError::Tls(format!("certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(LdapError::Tls("no certificate found in PEM".into()));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| LdapError::Tls(format!("key PEM: {e}")))?
        .ok_or_else(|| LdapError::Tls("no private key found in PEM".into()))?;
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| LdapError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| LdapError::Tls(e.to_string()))?;
    Ok(Arc::new(cfg))
}

/// Load `tls_cert` / `tls_key` files.
pub fn load_server_config(cert_path: &str, key_path: &str) -> Result<Arc<rustls::ServerConfig>, LdapError> {
    let read = |p: &str| {
        std::fs::read(p).map_err(|source| LdapError::Read {
            path: p.to_string(),
            source,
        })
    };
    server_config_from_pem(&read(cert_path)?, &read(key_path)?)
}
