//! Listeners: accept loops for LDAP and LDAPS with a connection cap, the cache maintenance task, and the
//! handle that swaps configuration at runtime.

use super::encode::EntryCache;
use super::session::{self, BoxIo, Shared};
use super::{proto, LdapConfig, LdapError};
use crate::directory::Published;
use crate::metrics::{self, Listener};
use crate::net::{self, Acceptor, Rebind, Rebindable};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

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
            per_source: Default::default(),
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
        let slots = Arc::new(Semaphore::new(self.max_connections));
        for (l, tls) in [(&self.plain, false), (&self.ldaps, true)] {
            if let Some(addr) = l.local_addr() {
                info!(%addr, tls, "LDAP listening");
            }
        }
        // One accept loop per listener kind, even when unset now: a reload may add the address.
        let mut tasks = Vec::new();
        for (listener, tls) in [(&self.plain, false), (&self.ldaps, true)] {
            tasks.push(tokio::spawn(accept_loop(
                listener.acceptor(),
                tls,
                self.shared.clone(),
                slots.clone(),
                shutdown.clone(),
            )));
        }
        tokio::spawn(maintain_cache(self.shared.clone(), shutdown.clone()));
        for t in tasks {
            let _ = t.await;
        }
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(Duration::from_secs(5), slots.acquire_many(all)).await;
        Ok(())
    }
}

/// Bind and serve until `shutdown` is cancelled.
pub async fn serve(cfg: LdapConfig, dir: Published, shutdown: CancellationToken) -> Result<(), LdapError> {
    Server::bind(cfg, dir).await?.run(shutdown).await
}

async fn accept_loop(
    mut listener: Acceptor,
    tls: bool,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    warn!(error = %e, "LDAP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let per_source = shared.cfg.load().max_connections_per_source;
        let Some(counted) = SourceCount::take(&shared.per_source, peer, per_source) else {
            debug!(%peer, limit = per_source, "refused: too many connections from this source");
            tokio::spawn(refuse_busy(stream, tls, shared.clone()));
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse_busy(stream, tls, shared.clone()));
            continue;
        };
        let slot = session::Slot {
            slots: slots.clone(),
            permit: Some(permit),
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _counted = counted;
            let _open = metrics::connection(if tls { Listener::Ldaps } else { Listener::Ldap });
            let io: BoxIo = if tls {
                let Some(cfg) = shared.cfg.load().tls.clone() else {
                    return;
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                    Ok(Ok(s)) => Box::new(s),
                    Ok(Err(e)) => {
                        debug!(%peer, error = %e, "LDAPS handshake failed");
                        return;
                    }
                    Err(_) => return,
                }
            } else {
                Box::new(stream)
            };
            session::run(shared, io, peer, tls, slot, shutdown).await;
        });
    }
}

/// Open connections per source ([`crate::accounts::source`]), beside the global cap.
pub(crate) type PerSource = Arc<dashmap::DashMap<std::net::IpAddr, usize>>;

/// One connection counted against its source until dropped.
struct SourceCount {
    map: PerSource,
    key: std::net::IpAddr,
}

impl SourceCount {
    /// Count a connection from `peer`, or `None` when its source has `limit` open already (0 = no limit).
    fn take(map: &PerSource, peer: SocketAddr, limit: usize) -> Option<SourceCount> {
        let key = crate::accounts::source(peer.ip());
        let mut n = map.entry(key).or_insert(0);
        if limit > 0 && *n >= limit {
            return None;
        }
        *n += 1;
        Some(SourceCount { map: map.clone(), key })
    }
}

impl Drop for SourceCount {
    fn drop(&mut self) {
        // Remove the source when its last connection closes, so the table holds only sources with connections.
        self.map.remove_if_mut(&self.key, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

/// Over the connection cap: tell the client we are busy (plain only) and close.
async fn refuse_busy(mut stream: TcpStream, tls: bool, _shared: Arc<Shared>) {
    if !tls {
        let _ = stream
            .write_all(&proto::notice_of_disconnection(
                proto::Code::Busy,
                "too many connections",
            ))
            .await;
    }
    let _ = stream.shutdown().await;
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
