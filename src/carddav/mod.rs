//! CardDAV (RFC 6352) and vendor XML phone books over HTTP: the company address book for softphones, contact
//! apps and desk phones.
//!
//! This module owns the HTTP listener(s), discovery (RFC 6764 well-known, RFC 5397 principals), PROPFIND and
//! REPORT handling, vCard rendering and the `/phonebook/` XML formats. It only ever reads published
//! [`Snapshot`](crate::directory::Snapshot)s: every request loads one snapshot and answers entirely from it, so a
//! sync round that lands mid-request never produces a torn answer.
//!
//! Layout: [`config`] (what the operator sets), [`server`] (sockets, TLS, connection lifecycle), [`service`]
//! (routing and method dispatch), [`auth`] (Basic auth, anonymous networks), [`xml`] (safe request parsing and the
//! multistatus writer), [`propfind`], [`report`] (multiget, query, sync-collection), [`filter`]
//! (addressbook-query filters), [`partial`] (address-data with named properties), [`vcard`] (the card writer),
//! [`cache`] (per-snapshot book views and rendered cards), [`phonebook`] (Yealink, Snom, Cisco, Grandstream,
//! Fanvil, Gigaset), [`lookup`] (caller-ID and search over HTTP) and [`photo`] (photos by URL, scaled).

pub mod auth;
pub mod cache;
pub mod config;
pub mod filter;
pub(crate) mod forwarded;
pub(crate) mod lookup;
pub(crate) mod offload;
pub mod partial;
pub mod phonebook;
pub(crate) mod photo;
pub mod propfind;
pub mod report;
pub mod sample;
pub mod server;
pub mod service;
pub mod vcard;
pub mod xml;

pub use auth::{Account, Cidr};
pub use config::{BookConfig, CardDavConfig, NumberFormat, VCardVersion};
pub use server::{serve, serve_reloadable, start, CardDavHandle, CardDavServer, ListenerChange};

/// Why the CardDAV service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum CardDavError {
    #[error("no listen address configured: set [carddav] listen and/or tls_listen")]
    NoListener,
    #[error("tls_listen {0} is set but no TLS certificate is configured")]
    TlsWithoutCert(std::net::SocketAddr),
    /// The I/O error is part of the message, not a `#[source]`, so error chains do not repeat it.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
    #[error("invalid CardDAV configuration: {0}")]
    Config(String),
}
