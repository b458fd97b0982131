//! rustls server configuration for LDAPS and StartTLS, on top of the shared loader in [`crate::tls`].

use super::LdapError;
use std::sync::Arc;

/// Build a server config from PEM certificate chain and private key bytes.
pub fn server_config_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<rustls::ServerConfig>, LdapError> {
    crate::tls::server_config_from_pem(cert_pem, key_pem, "certificate PEM", "key PEM")
        .map(Arc::new)
        .map_err(|e| LdapError::Tls(e.to_string()))
}

/// Load `tls_cert` / `tls_key` files.
pub fn load_server_config(cert_path: &str, key_path: &str) -> Result<Arc<rustls::ServerConfig>, LdapError> {
    crate::tls::load(std::path::Path::new(cert_path), std::path::Path::new(key_path))
        .map(Arc::new)
        .map_err(|e| LdapError::Tls(e.to_string()))
}
