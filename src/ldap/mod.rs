//! LDAP v3 front end: presents the directory snapshot as Active Directory to PBXs, phones and CTI clients.
//!
//! [`Server::bind`] opens the listeners, [`Server::run`] serves until the shutdown token fires, and a
//! [`ServerHandle`] swaps accounts, TLS and limits at runtime (SIGHUP) without dropping connections.
//! Requests are decoded from raw BER ([`proto`], [`filter`]), searches run against one immutable snapshot
//! ([`search`]) and entries are written from a per-entry encoding cache ([`encode`]).

pub mod ber;
pub mod bind;
pub mod clients;
pub mod encode;
pub mod filter;
mod listener;
pub mod paging;
pub mod proto;
pub mod rootdse;
pub mod schema;
pub mod search;
mod session;
mod sort;
pub mod tls;

pub use bind::{hash_password, Account, Cidr};
pub use listener::{serve, ListenerChange, Server, ServerHandle};
pub use tokio_util::sync::CancellationToken;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Everything the LDAP front end is configured with. Only `max_connections` needs a restart; the rest, listen
/// addresses included, can be swapped with [`ServerHandle::reload`].
#[derive(Clone)]
pub struct LdapConfig {
    /// Plain LDAP (StartTLS-capable) listener, e.g. `0.0.0.0:389`.
    pub listen: Option<SocketAddr>,
    /// LDAPS listener, e.g. `0.0.0.0:636`; needs `tls`.
    pub ldaps_listen: Option<SocketAddr>,
    /// Offer StartTLS on the plain listener (needs `tls`).
    pub starttls: bool,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Allow searches without a successful bind (AD refuses them by default).
    pub allow_anonymous: bool,
    pub max_connections: usize,
    /// Connections one source address (an IPv6 /64) may have open; 0 = no limit of its own. Reloadable.
    pub max_connections_per_source: usize,
    /// A connection with no request and nothing in flight for this long is closed.
    pub idle_timeout: Duration,
    /// A connection that takes longer than this to take one response (it stopped reading) is closed, so it
    /// does not hold the response's memory forever.
    pub write_timeout: Duration,
    /// A paged search not continued for this long is forgotten (its cookie is then refused).
    pub paged_search_ttl: Duration,
    /// Memory for cached entry encodings, in MiB (read at start).
    pub encoding_cache_mib: u64,
    /// Largest page for the paged results control (AD's MaxPageSize, 1000).
    pub max_page_size: usize,
    /// Most entries returned by a non-paged search; 0 = unlimited. AD applies MaxPageSize here too (1000).
    pub size_limit: usize,
    /// Longest a search (or one page) runs before it ends with timeLimitExceeded and the entries so far, also
    /// when the client asked for more time or none (AD's MaxQueryDuration, 120 s). Zero: no bound.
    pub time_limit: Duration,
    pub accounts: Vec<Account>,
    /// Largest request PDU in bytes.
    pub max_pdu_size: usize,
    /// Operations one connection may have in flight; further requests wait to be read.
    pub max_ops_per_connection: usize,
    /// `dnsHostName` in the RootDSE; defaults to `entradir.<dns domain>`.
    pub host_name: Option<String>,
    /// Load balancers whose connections start with a PROXY protocol header naming the client (HAProxy
    /// `send-proxy`/`send-proxy-v2`); the client's address then counts for limits, account networks and logs.
    pub proxy_protocol_from: Vec<crate::accounts::Cidr>,
}

impl Default for LdapConfig {
    fn default() -> Self {
        LdapConfig {
            listen: Some(SocketAddr::from(([0, 0, 0, 0], 389))),
            ldaps_listen: None,
            starttls: false,
            tls: None,
            allow_anonymous: false,
            max_connections: 1024,
            max_connections_per_source: 64,
            idle_timeout: Duration::from_secs(900),
            write_timeout: Duration::from_secs(60),
            paged_search_ttl: Duration::from_secs(300),
            encoding_cache_mib: encode::DEFAULT_CACHE_BYTES >> 20,
            max_page_size: 1000,
            size_limit: 1000,
            time_limit: Duration::from_secs(120),
            accounts: Vec::new(),
            max_pdu_size: 256 * 1024,
            max_ops_per_connection: 16,
            host_name: None,
            proxy_protocol_from: Vec::new(),
        }
    }
}

impl std::fmt::Debug for LdapConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapConfig")
            .field("listen", &self.listen)
            .field("ldaps_listen", &self.ldaps_listen)
            .field("starttls", &self.starttls)
            .field("tls", &self.tls.is_some())
            .field("allow_anonymous", &self.allow_anonymous)
            .field(
                "accounts",
                &self.accounts.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    #[error(transparent)]
    Listen(#[from] crate::net::BindError),
    #[error("{0} needs a TLS certificate and key")]
    TlsMissing(&'static str),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
}
