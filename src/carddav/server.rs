//! Sockets and connection lifecycle: plain and TLS listeners, hyper HTTP/1.1 connections, graceful shutdown.
//!
//! The configuration lives in an `ArcSwap`: a reload (SIGHUP) swaps books, accounts, networks, formats and even
//! the TLS certificate for new connections without touching open ones; a changed listen address is bound anew
//! ([`crate::net`]) while open connections stay on the old one. The shared accept loop
//! ([`crate::net::listen`]) caps connections and bounds TLS handshakes; each connection has a header-read
//! timeout (slow-loris).

use crate::carddav::config::CardDavConfig;
use crate::carddav::service::{handle, State};
use crate::carddav::CardDavError;
use crate::directory::Published;
use crate::metrics::Listener;
use crate::net::listen::{self, Conn, Limits, Refusal, Socket};
use crate::net::{self, Rebind, Rebindable};
use arc_swap::ArcSwap;
use bytes::Bytes;
use hyper::service::service_fn;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

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
    plain: Arc<Rebindable>,
    tls: Arc<Rebindable>,
    state: Arc<State>,
}

async fn bind_addr(addr: Option<SocketAddr>) -> Result<Option<TcpListener>, CardDavError> {
    net::bind(addr).await.map_err(|e| CardDavError::Bind {
        addr: e.addr,
        error: e.error,
    })
}

impl CardDavServer {
    pub async fn bind(cfg: Arc<ArcSwap<CardDavConfig>>, dir: Published) -> Result<CardDavServer, CardDavError> {
        let c = cfg.load_full();
        c.validate()?;
        let plain = Rebindable::new(c.listen, bind_addr(c.listen).await?);
        let tls = Rebindable::new(c.tls_listen, bind_addr(c.tls_listen).await?);
        Ok(CardDavServer {
            plain,
            tls,
            state: Arc::new(State::new(cfg, dir)),
        })
    }

    /// The same server with another bound on blocking work (tests of the bound).
    #[cfg(test)]
    fn with_offload(mut self, offload: crate::carddav::offload::Offload) -> CardDavServer {
        if let Some(state) = Arc::get_mut(&mut self.state) {
            state.offload = offload;
        }
        self
    }

    /// The plain HTTP address actually bound.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.plain.local_addr()
    }

    /// The HTTPS address actually bound.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls.local_addr()
    }

    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), CardDavError> {
        let warmer = tokio::spawn(prewarm(self.state.clone()));
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            stopper.cancel();
        });
        let sockets = vec![
            Socket {
                listener: self.plain,
                tls: false,
                metric: Listener::Http,
            },
            Socket {
                listener: self.tls,
                tls: true,
                metric: Listener::Https,
            },
        ];
        let limits = Limits {
            max_connections: self.state.cfg.load().max_connections,
            drain: DRAIN_TIMEOUT,
        };
        listen::run(Arc::new(CardDav(self.state)), sockets, limits, stop).await;
        warmer.abort();
        Ok(())
    }
}

/// CardDAV and the phone books as the shared accept loop sees them.
struct CardDav(Arc<State>);

impl listen::Service for CardDav {
    const NAME: &'static str = "CardDAV";
    const METRIC: &'static str = "carddav";

    fn listening(addr: SocketAddr, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!("CardDAV listening on {scheme}://{addr}/dav/ (phone books under /phonebook/)")
    }

    fn per_source(&self) -> usize {
        self.0.cfg.load().max_connections_per_source
    }

    fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.0.cfg.load().tls.clone()
    }

    fn refusal(&self, why: Refusal) -> Bytes {
        listen::http_busy(why)
    }

    async fn serve(self: Arc<Self>, conn: Conn) {
        let (state, peer, secure) = (self.0.clone(), conn.peer, conn.tls);
        let svc = service_fn(move |req| guarded(handle(state.clone(), peer, secure, req), peer));
        listen::serve_http(conn, HEADER_TIMEOUT, svc, "CardDAV").await;
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

/// A running CardDAV service, for the process wiring: the bound addresses, configuration reload, and the task.
pub struct CardDavHandle {
    pub config: Arc<ArcSwap<CardDavConfig>>,
    /// The plain HTTP address bound at start (see [`CardDavHandle::addrs`] after a reload).
    pub local_addr: Option<SocketAddr>,
    /// The HTTPS address bound at start.
    pub tls_local_addr: Option<SocketAddr>,
    plain: Arc<Rebindable>,
    tls: Arc<Rebindable>,
    state: Arc<State>,
    task: tokio::task::JoinHandle<Result<(), CardDavError>>,
}

/// New sockets for changed listen addresses, bound by [`CardDavHandle::prepare_listeners`].
#[derive(Debug, Default)]
pub struct ListenerChange {
    plain: Option<Rebind>,
    tls: Option<Rebind>,
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
    let (plain, tls, state) = (server.plain.clone(), server.tls.clone(), server.state.clone());
    let task = tokio::spawn(server.run(shutdown));
    Ok(CardDavHandle {
        config,
        local_addr,
        tls_local_addr,
        plain,
        tls,
        state,
        task,
    })
}

impl CardDavHandle {
    /// What the admin console's lookup tester asks (the `/lookup` answers and book membership).
    pub(crate) fn inspector(&self) -> crate::carddav::lookup::Inspector {
        crate::carddav::lookup::Inspector(self.state.clone())
    }

    /// Check a new configuration without applying it (for a reload that must be all-or-nothing).
    pub fn check(&self, next: &CardDavConfig) -> Result<(), CardDavError> {
        next.validate()
    }

    /// The (plain, TLS) addresses bound now.
    pub fn addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        (self.plain.local_addr(), self.tls.local_addr())
    }

    /// Bind the sockets of listen addresses that `next` changes; nothing is swapped yet. A failure leaves the
    /// running sockets serving (one that a same-port move had to close listens again; see
    /// [`crate::net::Rebindable::prepare`]).
    pub async fn prepare_listeners(&self, next: &CardDavConfig) -> Result<ListenerChange, CardDavError> {
        let bind = |e: net::BindError| CardDavError::Bind {
            addr: e.addr,
            error: e.error,
        };
        Ok(ListenerChange {
            plain: self.plain.prepare(next.listen).await.map_err(bind)?,
            tls: self.tls.prepare(next.tls_listen).await.map_err(bind)?,
        })
    }

    /// Swap in a new configuration: books, accounts, networks, formats and the TLS certificate apply to the next
    /// request, and listeners move as prepared; open connections stay.
    pub fn reload(&self, next: CardDavConfig, listeners: ListenerChange) -> Result<(), CardDavError> {
        self.check(&next)?;
        if next.max_connections != self.config.load().max_connections {
            tracing::warn!("carddav.max_connections changed; the new limit takes effect after a restart");
        }
        self.config.store(Arc::new(next));
        // A configuration that changes what the books hold drops every rendered card and book: free them and
        // render the books anew on a blocking thread now, rather than in the first request after the reload.
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || state.prewarm());
        for (change, socket, name) in [
            (listeners.plain, &self.plain, "listen"),
            (listeners.tls, &self.tls, "tls_listen"),
        ] {
            if let Some(change) = change {
                let (old, new) = socket.apply(change);
                tracing::info!(
                    ?old,
                    ?new,
                    "CardDAV {name} moved; open connections stay on the old address until they close"
                );
            }
        }
        Ok(())
    }

    /// Wait for the service to stop (after the shutdown future resolved).
    pub async fn join(self) -> Result<(), CardDavError> {
        self.task
            .await
            .unwrap_or_else(|e| Err(CardDavError::Config(format!("CardDAV task failed: {e}"))))
    }
}

/// One request, with a panic in it (a bug) answered 500 for that request only, logged once and counted; the
/// connection and every other one go on.
async fn guarded(
    request: impl std::future::Future<
        Output = Result<hyper::Response<crate::carddav::service::Body>, std::convert::Infallible>,
    >,
    peer: std::net::SocketAddr,
) -> Result<hyper::Response<crate::carddav::service::Body>, std::convert::Infallible> {
    match crate::panics::catch_async(crate::metrics::PanicArea::Http, request).await {
        Ok(answer) => answer,
        Err(caught) => {
            tracing::error!(%peer, panic = %caught, "internal error answering an HTTP request (a bug: please report it); answered 500");
            Ok(crate::carddav::service::text(
                hyper::StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
            ))
        }
    }
}

#[cfg(test)]
mod tests {

    /// A panic while answering one HTTP request is a 500 for it, counted in `entradir_panics_total`.
    #[tokio::test]
    async fn a_panicking_request_is_answered_500() {
        crate::panics::install_hook();
        let count = || {
            let mut out = String::new();
            crate::metrics::render(&mut out);
            out.lines()
                .find_map(|l| l.strip_prefix("entradir_panics_total{area=\"http\"} "))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let before = count();
        let peer: std::net::SocketAddr = "192.0.2.1:1234".parse().unwrap();
        let boom = async {
            if std::hint::black_box(true) {
                panic!("a bug");
            }
            Ok(crate::carddav::service::text(hyper::StatusCode::OK, "never"))
        };
        let r = guarded(boom, peer).await.unwrap();
        assert_eq!(r.status(), hyper::StatusCode::INTERNAL_SERVER_ERROR);
        assert!(count() > before);
    }

    use super::*;
    use crate::carddav::config::BookConfig;
    use crate::carddav::offload::Offload;
    use crate::carddav::phonebook::gate;
    use crate::carddav::sample;
    use crate::ldap::filter::Filter;
    use crate::ldap::proto::{encode_search, take_response, Scope};
    use std::io::{Read, Write};

    /// A caller-ID lookup over a plain blocking socket, so that it times out even if the server's runtime is
    /// stuck: the display names found.
    fn lookup(port: u16, number: &str) -> std::io::Result<Vec<String>> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let f = Filter::parse(&format!("(|(telephoneNumber={number})(mobile={number}))"))
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        s.write_all(&encode_search(
            1,
            "DC=contoso,DC=example",
            Scope::Sub,
            10,
            &f,
            &["displayName"],
            &[],
        ))?;
        let mut buf = bytes::BytesMut::new();
        let mut found = Vec::new();
        loop {
            while let Some(r) = take_response(&mut buf).map_err(|e| std::io::Error::other(format!("{e:?}")))? {
                match r.tag {
                    0x64 => found.push(String::new()),
                    0x65 if r.code != Some(0) => return Err(std::io::Error::other(format!("result {:?}", r.code))),
                    0x65 => return Ok(found),
                    _ => {}
                }
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::other("connection closed"));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// One async worker, as on a small machine whose workers are all busy: while phone-book requests hold
    /// every blocking slot and the queue, an LDAP lookup served by the same runtime still answers, and the
    /// next phone is told to come back (503, Retry-After) instead of queueing without bound. Then the held
    /// requests complete with their books.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn ldap_answers_while_phone_books_are_in_flight_and_a_full_queue_answers_503() {
        let people = sample::people(200, 2);
        let mut entries = people.clone();
        entries.push(sample::group("Gated", &people.iter().collect::<Vec<_>>(), 2));
        // The base entry LDAP searches start from.
        let base = "DC=contoso,DC=example";
        entries.push(crate::directory::Entry {
            id: "~base".into(),
            kind: crate::directory::EntryKind::Container,
            dn_norm: crate::directory::entry::normalize_dn(base).unwrap_or_default().into(),
            dn: base.into(),
            guid: [0; 16],
            usn_changed: 1,
            usn_created: 1,
            attrs: vec![crate::directory::Attribute {
                name: "objectClass".into(),
                values: vec![bytes::Bytes::from_static(b"top"), bytes::Bytes::from_static(b"domain")],
            }]
            .into(),
            sort_keys: Default::default(),
        });
        let dir = Published::new(sample::snapshot(2, entries));
        let ldap_cfg = crate::ldap::LdapConfig {
            listen: Some("127.0.0.1:0".parse().expect("addr")),
            allow_anonymous: true,
            ..Default::default()
        };
        let ldap = crate::ldap::Server::bind(ldap_cfg, dir.clone())
            .await
            .expect("LDAP bind");
        let ldap_port = ldap.local_addr().expect("LDAP address").port();
        let stop = crate::ldap::CancellationToken::new();
        tokio::spawn(ldap.run(stop.clone()));
        let cfg = CardDavConfig {
            listen: Some("127.0.0.1:0".parse().expect("addr")),
            anonymous_networks: vec!["127.0.0.0/8".parse().expect("cidr")],
            books: vec![BookConfig {
                name: gate::BOOK.into(),
                display_name: "Gated".into(),
                group: Some("Gated".into()),
            }],
            ..Default::default()
        };
        let server = CardDavServer::bind(Arc::new(ArcSwap::from_pointee(cfg)), dir)
            .await
            .expect("CardDAV bind")
            .with_offload(Offload::new(1, 1));
        let (state, base) = (
            server.state.clone(),
            format!("http://{}", server.local_addr().expect("addr")),
        );
        tokio::spawn(server.run(std::future::pending()));
        // Opened on any way out, so that a failed assertion does not leave the runtime waiting for the gate.
        struct OpenOnDrop;
        impl Drop for OpenOnDrop {
            fn drop(&mut self) {
                gate::open();
            }
        }
        let _open = OpenOnDrop;
        let url = format!("{base}/phonebook/{}/yealink.xml", gate::BOOK);
        let http = reqwest::Client::new();
        let held: Vec<_> = (0..2).map(|_| tokio::spawn(http.get(&url).send())).collect();
        // One request runs (held at the gate), one waits in the queue.
        let t = std::time::Instant::now();
        while state.offload.admitted() < 2 {
            assert!(t.elapsed() < Duration::from_secs(30), "the two requests never arrived");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let refused = http.get(&url).send().await.expect("third request");
        assert_eq!(refused.status().as_u16(), 503, "beyond the queue bound");
        assert_eq!(
            refused.headers().get("retry-after").and_then(|v| v.to_str().ok()),
            Some("1")
        );

        let found = tokio::task::spawn_blocking(move || lookup(ldap_port, "+49 30 1000017"))
            .await
            .expect("lookup thread")
            .expect("the LDAP lookup answers while the phone books are in flight");
        assert_eq!(found.len(), 1, "one person has that number");
        assert_eq!(state.offload.admitted(), 2, "both phone books were still in flight");

        gate::open();
        for h in held {
            let r = h.await.expect("task").expect("held request");
            assert_eq!(r.status().as_u16(), 200);
            let body = r.text().await.expect("body");
            assert_eq!(listed(&body), 200, "every person of the book is listed");
        }
        stop.cancel();
    }

    /// The number of directory entries in a Yealink book.
    fn listed(body: &str) -> usize {
        let root = crate::carddav::xml::parse(body.as_bytes()).expect("well-formed XML");
        root.children_named("", "DirectoryEntry").count()
    }
}
