//! LDAP and LDAPS on the shared accept loop ([`crate::net::listen`]), the cache maintenance task, and the
//! handle that swaps configuration at runtime.

use super::encode::EntryCache;
use super::session::{self, Shared};
use super::{proto, LdapConfig, LdapError};
use crate::directory::Published;
use crate::metrics::Listener;
use crate::net::listen::{self, Conn, Limits, Refusal, Socket};
use crate::net::{self, Rebind, Rebindable};
use arc_swap::ArcSwap;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Bound listeners, ready to [`Server::run`].
pub struct Server {
    shared: Arc<Shared>,
    plain: Arc<Rebindable>,
    ldaps: Arc<Rebindable>,
    max_connections: usize,
}

/// Swaps configuration of a running server (accounts, TLS, limits, anonymous access, listen addresses);
/// existing connections keep going and pick up the new settings with their next request.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
    plain: Arc<Rebindable>,
    ldaps: Arc<Rebindable>,
}

/// New sockets for changed listen addresses, bound by [`ServerHandle::prepare_listeners`].
#[derive(Debug, Default)]
pub struct ListenerChange {
    plain: Option<Rebind>,
    ldaps: Option<Rebind>,
}

impl ServerHandle {
    /// Bind the sockets of listen addresses that `cfg` changes; nothing is swapped yet. A failure leaves the
    /// running sockets serving (one that a same-port move had to close listens again; see
    /// [`crate::net::Rebindable::prepare`]).
    pub async fn prepare_listeners(&self, cfg: &LdapConfig) -> Result<ListenerChange, LdapError> {
        Ok(ListenerChange {
            plain: self.plain.prepare(cfg.listen).await?,
            ldaps: self.ldaps.prepare(cfg.ldaps_listen).await?,
        })
    }

    /// Replace the configuration and move listeners as prepared. `max_connections` is kept from the running
    /// server.
    pub fn reload(&self, cfg: LdapConfig, listeners: ListenerChange) -> Result<(), LdapError> {
        check_tls(&cfg)?;
        if cfg.max_connections != self.shared.cfg.load().max_connections {
            warn!("ldap.max_connections changed; the new limit takes effect after a restart");
        }
        if cfg.encoding_cache_mib != self.shared.cfg.load().encoding_cache_mib {
            warn!("ldap.encoding_cache_mib changed; the new size takes effect after a restart");
        }
        self.shared.cfg.store(Arc::new(cfg));
        for (change, socket, name) in [
            (listeners.plain, &self.plain, "listen"),
            (listeners.ldaps, &self.ldaps, "ldaps_listen"),
        ] {
            if let Some(change) = change {
                let (old, new) = socket.apply(change);
                info!(
                    ?old,
                    ?new,
                    "LDAP {name} moved; open connections stay on the old address until they close"
                );
            }
        }
        info!("LDAP configuration reloaded");
        Ok(())
    }

    /// The plain listener's bound address now.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.plain.local_addr()
    }

    /// The LDAPS listener's bound address now.
    pub fn ldaps_local_addr(&self) -> Option<SocketAddr> {
        self.ldaps.local_addr()
    }

    /// Entries currently held pre-encoded.
    pub fn cached_entries(&self) -> usize {
        self.shared.cache.len()
    }
}

fn check_tls(cfg: &LdapConfig) -> Result<(), LdapError> {
    if cfg.tls.is_none() {
        if cfg.ldaps_listen.is_some() {
            return Err(LdapError::TlsMissing("ldaps_listen"));
        }
        if cfg.starttls {
            return Err(LdapError::TlsMissing("starttls"));
        }
    }
    Ok(())
}

impl Server {
    /// Open the configured listeners (port 0 picks a free port; see [`Server::local_addr`]).
    pub async fn bind(cfg: LdapConfig, dir: Published) -> Result<Server, LdapError> {
        check_tls(&cfg)?;
        let plain = Rebindable::new(cfg.listen, net::bind(cfg.listen).await?);
        let ldaps = Rebindable::new(cfg.ldaps_listen, net::bind(cfg.ldaps_listen).await?);
        let max_connections = cfg.max_connections.max(1);
        let cache = EntryCache::with_budget(cfg.encoding_cache_mib.saturating_mul(1 << 20));
        let shared = Arc::new(Shared {
            dir,
            cfg: ArcSwap::from_pointee(cfg),
            cache,
            throttle: Default::default(),
            offloaded: Arc::new(tokio::sync::Semaphore::new(super::session::OFFLOADED_SEARCHES)),
        });
        Ok(Server {
            shared,
            plain,
            ldaps,
            max_connections,
        })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.plain.local_addr()
    }

    pub fn ldaps_local_addr(&self) -> Option<SocketAddr> {
        self.ldaps.local_addr()
    }

    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shared: self.shared.clone(),
            plain: self.plain.clone(),
            ldaps: self.ldaps.clone(),
        }
    }

    /// Serve until `shutdown` is cancelled, then tell open connections (Notice of Disconnection) and wait up
    /// to five seconds for them to close.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), LdapError> {
        tokio::spawn(maintain_cache(self.shared.clone(), shutdown.clone()));
        let sockets = vec![
            Socket {
                listener: self.plain,
                tls: false,
                metric: Listener::Ldap,
            },
            Socket {
                listener: self.ldaps,
                tls: true,
                metric: Listener::Ldaps,
            },
        ];
        let limits = Limits {
            max_connections: self.max_connections,
            drain: Duration::from_secs(5),
        };
        listen::run(Arc::new(Ldap(self.shared)), sockets, limits, shutdown).await;
        Ok(())
    }
}

/// Bind and serve until `shutdown` is cancelled.
pub async fn serve(cfg: LdapConfig, dir: Published, shutdown: CancellationToken) -> Result<(), LdapError> {
    Server::bind(cfg, dir).await?.run(shutdown).await
}

/// LDAP as the shared accept loop sees it.
struct Ldap(Arc<Shared>);

impl listen::Service for Ldap {
    const NAME: &'static str = "LDAP";
    const METRIC: &'static str = "ldap";

    fn per_source(&self) -> usize {
        self.0.cfg.load().max_connections_per_source
    }

    fn proxy_protocol(&self, peer: std::net::IpAddr) -> bool {
        self.0.cfg.load().proxy_protocol_from.iter().any(|c| c.contains(peer))
    }

    fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.0.cfg.load().tls.clone()
    }

    fn refusal(&self, why: Refusal) -> Bytes {
        let message = match why {
            Refusal::Full => "too many connections",
            Refusal::PerSource => "too many connections from this address",
        };
        proto::notice_of_disconnection(proto::Code::Busy, message)
    }

    async fn serve(self: Arc<Self>, conn: Conn) {
        session::run(self.0.clone(), conn).await;
    }
}

/// Keep the encoding cache in step with the published snapshot: at start and after every publish (bursts are
/// coalesced), off the async workers; see [`EntryCache::advance`].
async fn maintain_cache(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut rx = shared.dir.subscribe();
    let mut prev: Option<Arc<crate::directory::Snapshot>> = None;
    loop {
        let snap = shared.dir.load();
        let s = shared.clone();
        let next = snap.clone();
        let _ = tokio::task::spawn_blocking(move || s.cache.advance(prev.as_deref(), &snap)).await;
        prev = Some(next);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
        }
    }
}
