//! Sockets and connection lifecycle: plain and TLS listeners, hyper HTTP/1.1 connections, graceful shutdown.
//!
//! The configuration lives in an `ArcSwap`: a reload (SIGHUP) swaps books, accounts, networks, formats and even
//! the TLS certificate for new connections without touching open ones. Only the listen addresses are fixed at
//! bind time. Each connection has a header-read timeout (slow-loris) and TLS handshakes a deadline.

use crate::carddav::config::CardDavConfig;
use crate::carddav::service::{handle, State};
use crate::carddav::CardDavError;
use crate::directory::Published;
use arc_swap::ArcSwap;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections beyond this are closed at once, so a flood cannot exhaust file descriptors.
const MAX_CONNECTIONS: usize = 4096;

/// Serve until `shutdown` resolves, then let in-flight requests finish (up to 10 s).
pub async fn serve(
    cfg: CardDavConfig,
    dir: Published,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CardDavError> {
    serve_reloadable(Arc::new(ArcSwap::from_pointee(cfg)), dir, shutdown).await
}

/// Like [`serve`], with a configuration the caller can swap at runtime (`cfg.store(...)` on SIGHUP).
pub async fn serve_reloadable(
    cfg: Arc<ArcSwap<CardDavConfig>>,
    dir: Published,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CardDavError> {
    CardDavServer::bind(cfg, dir).await?.run(shutdown).await
}

/// Bound listeners, ready to run; lets callers (tests, `entradir demo`) learn the ports of `:0` addresses.
pub struct CardDavServer {
    plain: Option<TcpListener>,
    tls: Option<TcpListener>,
    state: Arc<State>,
}

async fn bind_addr(addr: SocketAddr) -> Result<TcpListener, CardDavError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| CardDavError::Bind { addr, source })
}

impl CardDavServer {
    pub async fn bind(cfg: Arc<ArcSwap<CardDavConfig>>, dir: Published) -> Result<CardDavServer, CardDavError> {
        let c = cfg.load_full();
        c.validate()?;
        let plain = match c.listen {
            Some(a) => Some(bind_addr(a).await?),
            None => None,
        };
        let tls = match c.tls_listen {
            Some(a) => Some(bind_addr(a).await?),
            None => None,
        };
        Ok(CardDavServer {
            plain,
            tls,
            state: Arc::new(State::new(cfg, dir)),
        })
    }

    /// The plain HTTP address actually bound.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.plain.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The HTTPS address actually bound.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), CardDavError> {
        for (l, scheme) in [(&self.plain, "http"), (&self.tls, "https")] {
            if let Some(addr) = l.as_ref().and_then(|l| l.local_addr().ok()) {
                tracing::info!(%addr, "CardDAV listening on {scheme}://{addr}/dav/ (phone books under /phonebook/)");
            }
        }
        let warmer = tokio::spawn(prewarm(self.state.clone()));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                r = accept(&self.plain) => match r {
                    Ok((tcp, peer)) => {
                        let Ok(slot) = slots.clone().try_acquire_owned() else { too_many(peer); continue };
                        let (state, stop) = (self.state.clone(), stop_rx.clone());
                        conns.spawn(async move {
                            connection(tcp, peer, false, state, stop).await;
                            drop(slot);
                        });
                    }
                    Err(e) => accept_failed(e).await,
                },
                r = accept(&self.tls) => match r {
                    Ok((tcp, peer)) => {
                        let Ok(slot) = slots.clone().try_acquire_owned() else { too_many(peer); continue };
                        let (state, stop) = (self.state.clone(), stop_rx.clone());
                        conns.spawn(async move {
                            tls_connection(tcp, peer, state, stop).await;
                            drop(slot);
                        });
                    }
                    Err(e) => accept_failed(e).await,
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        warmer.abort();
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async { while conns.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                open = conns.len(),
                "CardDAV: closing connections that did not finish in time"
            );
            conns.abort_all();
        }
        Ok(())
    }
}

/// Keep the caches warm: once at start and after every published snapshot (coalescing bursts of versions).
async fn prewarm(state: Arc<State>) {
    let mut versions = state.dir.subscribe();
    loop {
        let s = state.clone();
        let started = std::time::Instant::now();
        if tokio::task::spawn_blocking(move || s.prewarm()).await.is_err() {
            tracing::warn!("CardDAV: cache warm-up failed");
        }
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "CardDAV caches warmed"
        );
        if versions.changed().await.is_err() {
            return;
        }
    }
}

async fn accept(l: &Option<TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

fn too_many(peer: SocketAddr) {
    tracing::warn!(%peer, "CardDAV: {MAX_CONNECTIONS} connections open; closing a new one");
}

/// Accept errors are mostly resource exhaustion (EMFILE); back off instead of spinning.
async fn accept_failed(e: std::io::Error) {
    tracing::warn!(error = %e, "CardDAV: accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn tls_connection(tcp: TcpStream, peer: SocketAddr, state: Arc<State>, stop: watch::Receiver<bool>) {
    let Some(tls) = state.cfg.load().tls.clone() else {
        tracing::warn!(%peer, "CardDAV: TLS connection but no certificate configured");
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => connection(stream, peer, true, state, stop).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "CardDAV: TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "CardDAV: TLS handshake timed out"),
    }
}

async fn connection<I>(io: I, peer: SocketAddr, secure: bool, state: Arc<State>, mut stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| handle(state.clone(), peer, secure, req));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let stopped = async move {
        while !*stop.borrow_and_update() {
            if stop.changed().await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "CardDAV connection ended with an error");
            }
        }
        _ = stopped => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// A running CardDAV service, for the process wiring: the bound addresses, configuration reload, and the task.
pub struct CardDavHandle {
    pub config: Arc<ArcSwap<CardDavConfig>>,
    pub local_addr: Option<SocketAddr>,
    pub tls_local_addr: Option<SocketAddr>,
    task: tokio::task::JoinHandle<Result<(), CardDavError>>,
}

/// Bind and start serving in a task; it stops when `shutdown` resolves (see [`CardDavHandle::join`]).
pub async fn start(
    cfg: CardDavConfig,
    dir: Published,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<CardDavHandle, CardDavError> {
    let config = Arc::new(ArcSwap::from_pointee(cfg));
    let server = CardDavServer::bind(config.clone(), dir).await?;
    let (local_addr, tls_local_addr) = (server.local_addr(), server.tls_local_addr());
    let task = tokio::spawn(server.run(shutdown));
    Ok(CardDavHandle {
        config,
        local_addr,
        tls_local_addr,
        task,
    })
}

impl CardDavHandle {
    /// Check a new configuration without applying it (for a reload that must be all-or-nothing).
    pub fn check(&self, next: &CardDavConfig) -> Result<(), CardDavError> {
        next.validate()?;
        if next.tls_listen.is_some() && self.tls_local_addr.is_none() {
            return Err(CardDavError::Config(
                "tls_listen can only be added with a restart".into(),
            ));
        }
        Ok(())
    }

    /// Swap in a new configuration: books, accounts, networks, formats and the TLS certificate apply to the next
    /// request; open connections stay. Listen addresses only change with a restart.
    pub fn reload(&self, next: CardDavConfig) -> Result<(), CardDavError> {
        self.check(&next)?;
        let current = self.config.load();
        if next.listen != current.listen || next.tls_listen != current.tls_listen {
            tracing::warn!("CardDAV listen addresses changed; they take effect after a restart");
        }
        self.config.store(Arc::new(next));
        Ok(())
    }

    /// Wait for the service to stop (after the shutdown future resolved).
    pub async fn join(self) -> Result<(), CardDavError> {
        self.task
            .await
            .unwrap_or_else(|e| Err(CardDavError::Config(format!("CardDAV task failed: {e}"))))
    }
}
