//! The one accept loop behind every listener — LDAP and LDAPS, CardDAV's HTTP and HTTPS, the admin endpoint —
//! so that all of them have the same defences and an admin the same knobs:
//!
//! - a cap on open connections over all of a service's sockets, and one per source address (IPv6 per /64,
//!   [`crate::accounts::source`]), so one host or a flood cannot take every place;
//! - a client over a cap is answered in the service's own protocol and closed at once, never queued: a
//!   queue would hold its socket and keep PBXs waiting behind it;
//! - a deadline on the TLS handshake, so a client that opens a TLS socket and says nothing is gone soon;
//! - a back-off when accepting fails (file descriptors exhausted), instead of a busy loop;
//! - refusals logged at most every ten seconds per service and reason (a flood must not flood the log), and
//!   counted in `entradir_connections_refused_total`;
//! - at shutdown, no new connections, up to a drain period for open ones to finish, then the rest are closed.
//!   Dropping the loop (its task aborted) stops it the same way.
//!
//! A front end supplies what is its own through [`Service`]: its TLS settings and per-source limit now (a
//! reload changes them for the next connection), the bytes that refuse a connection, and how to serve one.

use super::{Acceptor, Rebindable};
use crate::metrics::{self, Listener};
use bytes::Bytes;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
/// A connection's byte stream, plain or TLS.
pub(crate) type BoxIo = Box<dyn Io>;

/// How long a TLS client has to finish its handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an accept error (EMFILE, ENFILE, ENOBUFS) pauses the loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long writing the refusal to a client over a cap may take.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);
/// Refusals are logged at most this often per service and reason.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The service's `max_connections` are open.
    Full,
    /// The source address has its `max_connections_per_source` open.
    PerSource,
}

impl Refusal {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::Full => "max_connections",
            Refusal::PerSource => "max_connections_per_source",
        }
    }
}

/// One front end, as the accept loop sees it.
pub(crate) trait Service: Send + Sync + 'static {
    /// For log lines: "LDAP", "CardDAV", "admin".
    const NAME: &'static str;
    /// The `service` label of `entradir_connections_refused_total`: "ldap", "carddav", "admin".
    const METRIC: &'static str;
    /// The "listening" log line for one socket: where to start.
    fn listening(addr: SocketAddr, tls: bool) -> String {
        let _ = tls;
        format!("{} listening on {addr}", Self::NAME)
    }
    /// Connections one source may hold open now (0: no limit).
    fn per_source(&self) -> usize;
    /// The TLS settings for a new connection on a TLS socket (the reloaded ones, after a SIGHUP).
    fn tls(&self) -> Option<Arc<rustls::ServerConfig>>;
    /// What a client over a cap reads before the server closes (plain sockets only: on a TLS socket a
    /// handshake just to say "busy" would cost more than the connection it turns away).
    fn refusal(&self, why: Refusal) -> Bytes;
    /// Serve one accepted connection until it ends or `conn.stop` is cancelled.
    fn serve(self: Arc<Self>, conn: Conn) -> impl Future<Output = ()> + Send;
    /// Whether connections from `peer` start with a PROXY protocol header naming the real client (a load
    /// balancer in TCP mode, see `proxy.rs`).
    fn proxy_protocol(&self, peer: std::net::IpAddr) -> bool {
        let _ = peer;
        false
    }
}

/// How long a proxy may take to send the PROXY protocol header.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// An accepted connection, counted against both caps for as long as it lives.
pub(crate) struct Conn {
    pub io: BoxIo,
    pub peer: SocketAddr,
    /// Accepted on a TLS socket (the handshake is done).
    pub tls: bool,
    pub slot: Slot,
    /// Cancelled at shutdown: say goodbye in the protocol's way and close.
    pub stop: CancellationToken,
    _source: SourceCount,
    _open: metrics::ConnectionGuard,
}

/// A connection's place under the service's `max_connections`. LDAP gives it back while a failed bind waits
/// out its delay, so clients sitting in the password-guessing penalty do not lock PBXs out.
pub(crate) struct Slot {
    slots: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Slot {
    /// Give the place back for a while (see [`Slot::retake`]).
    pub(crate) fn release(&mut self) {
        self.permit = None;
    }

    /// Take a place again after [`Slot::release`]; false when the service is full meanwhile.
    pub(crate) fn retake(&mut self) -> bool {
        if self.permit.is_none() {
            self.permit = self.slots.clone().try_acquire_owned().ok();
        }
        self.permit.is_some()
    }
}

/// One listening socket of a service.
pub(crate) struct Socket {
    pub listener: Arc<Rebindable>,
    pub tls: bool,
    /// The `listener` label of `entradir_open_connections`.
    pub metric: Listener,
}

/// Limits fixed for the life of a running service.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Open connections at most, all sockets together (at least 1).
    pub max_connections: usize,
    /// How long open connections get to finish after shutdown.
    pub drain: Duration,
}

/// Open connections per source.
type PerSource = Arc<dashmap::DashMap<IpAddr, usize>>;

/// One connection counted against its source until dropped.
struct SourceCount {
    map: PerSource,
    key: IpAddr,
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
        // Remove the source with its last connection, so the table holds only sources with connections.
        self.map.remove_if_mut(&self.key, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

/// What the accept loops of one service share.
struct Gate {
    name: &'static str,
    /// [`Service::METRIC`].
    metric_name: &'static str,
    slots: Arc<Semaphore>,
    per_source: PerSource,
    /// Per [`Refusal`]: when it was last logged, and how many since.
    refused: Mutex<[(Option<Instant>, u64); 2]>,
    /// [`Limits::max_connections`].
    max: usize,
    /// No new connections; open ones say goodbye ([`Conn::stop`]).
    stop: CancellationToken,
    /// The drain period is over: close what is still open.
    closing: CancellationToken,
}

impl Gate {
    fn note_refusal(&self, peer: SocketAddr, why: Refusal, limit: usize) {
        metrics::connection_refused(self.metric_name, why.label());
        let i = usize::from(why == Refusal::PerSource);
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        let (last, count) = &mut refused[i];
        *count += 1;
        if last.is_some_and(|t| t.elapsed() < REFUSAL_LOG_EVERY) {
            return;
        }
        let since = std::mem::take(count);
        *last = Some(Instant::now());
        match why {
            Refusal::Full => tracing::warn!(
                service = self.name,
                %peer,
                refused = since,
                limit,
                "{}: max_connections open; closing new connections (refused counts those since the last such line)",
                self.name
            ),
            Refusal::PerSource => tracing::warn!(
                service = self.name,
                %peer,
                refused = since,
                limit,
                "{}: this source has max_connections_per_source open; closing its new connections (raise it for \
                 many clients behind one NAT address)",
                self.name
            ),
        }
    }
}

/// Serve `sockets` until `stop` is cancelled, then wait up to `limits.drain` for open connections to end.
pub(crate) async fn run<S: Service>(service: Arc<S>, sockets: Vec<Socket>, limits: Limits, stop: CancellationToken) {
    // Our own token under the caller's: cancelled with it, and when this future is dropped.
    let stop = stop.child_token();
    let _stop_when_dropped = stop.clone().drop_guard();
    // Cancelled when the drain period is over: whatever is still open is closed.
    let closing = CancellationToken::new();
    let _close_when_dropped = closing.clone().drop_guard();
    let max = limits.max_connections.max(1);
    let gate = Arc::new(Gate {
        name: S::NAME,
        metric_name: S::METRIC,
        slots: Arc::new(Semaphore::new(max)),
        per_source: Default::default(),
        refused: Mutex::new([(None, 0); 2]),
        max,
        stop: stop.clone(),
        closing: closing.clone(),
    });
    let mut loops = Vec::new();
    // One loop per socket, also for an address unset now: a reload may set it.
    for socket in sockets {
        if let Some(addr) = socket.listener.local_addr() {
            tracing::info!(%addr, tls = socket.tls, "{}", S::listening(addr, socket.tls));
        }
        loops.push(tokio::spawn(accept_loop(
            service.clone(),
            gate.clone(),
            socket.listener.acceptor(),
            socket.tls,
            socket.metric,
        )));
    }
    for l in loops {
        let _ = l.await;
    }
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.drain, gate.slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            open = max.saturating_sub(gate.slots.available_permits()),
            "{}: connections still open after {:?}; closing them",
            S::NAME,
            limits.drain
        );
        closing.cancel();
        // Each closes as soon as its task next runs; wait for that (briefly) so their places are free on return.
        let _ = tokio::time::timeout(Duration::from_secs(1), gate.slots.acquire_many(all)).await;
    }
}

async fn accept_loop<S: Service>(
    service: Arc<S>,
    gate: Arc<Gate>,
    mut acceptor: Acceptor,
    tls: bool,
    metric: Listener,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = gate.stop.cancelled() => return,
            r = acceptor.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "{}: accept failed; pausing {ACCEPT_BACKOFF:?}", S::NAME);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        if service.proxy_protocol(peer.ip()) {
            // The client's address comes first, from the proxy: read it off the accept loop.
            let (service, gate) = (service.clone(), gate.clone());
            tokio::spawn(async move {
                let mut stream = stream;
                match tokio::time::timeout(PROXY_HEADER_TIMEOUT, super::proxy::read_header(&mut stream, peer)).await {
                    Ok(Ok(client)) => admit(service, gate, stream, client, tls, metric),
                    Ok(Err(e)) => tracing::warn!(proxy = %peer, error = %e, "{}: connection closed", S::NAME),
                    Err(_) => {
                        tracing::warn!(proxy = %peer, "{}: no PROXY protocol header within {PROXY_HEADER_TIMEOUT:?}; connection closed", S::NAME)
                    }
                }
            });
            continue;
        }
        admit(service.clone(), gate.clone(), stream, peer, tls, metric);
    }
}

/// Count a connection from `peer` (the client, also behind a PROXY-protocol proxy) against the caps, and serve
/// it on its own task; or refuse it in the service's words.
fn admit<S: Service>(
    service: Arc<S>,
    gate: Arc<Gate>,
    stream: TcpStream,
    peer: SocketAddr,
    tls: bool,
    metric: Listener,
) {
    let per_source = service.per_source();
    let Some(source) = SourceCount::take(&gate.per_source, peer, per_source) else {
        gate.note_refusal(peer, Refusal::PerSource, per_source);
        refuse(stream, tls, service.refusal(Refusal::PerSource));
        return;
    };
    let Ok(permit) = gate.slots.clone().try_acquire_owned() else {
        drop(source);
        gate.note_refusal(peer, Refusal::Full, gate.max);
        refuse(stream, tls, service.refusal(Refusal::Full));
        return;
    };
    let slot = Slot {
        slots: gate.slots.clone(),
        permit: Some(permit),
    };
    let (stop, closing) = (gate.stop.clone(), gate.closing.clone());
    tokio::spawn(async move {
        let open = metrics::connection(metric);
        let io: BoxIo = if tls {
            let Some(cfg) = service.tls() else {
                tracing::warn!(%peer, "{}: TLS connection but no certificate configured", S::NAME);
                return;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(s)) => Box::new(s),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "{}: TLS handshake failed", S::NAME);
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "{}: TLS handshake timed out", S::NAME);
                    return;
                }
            }
        } else {
            Box::new(stream)
        };
        let conn = Conn {
            io,
            peer,
            tls,
            slot,
            stop,
            _source: source,
            _open: open,
        };
        tokio::select! {
            _ = service.serve(conn) => {}
            _ = closing.cancelled() => tracing::debug!(%peer, "{}: closed at the end of the drain", S::NAME),
        }
    });
}

/// Tell a client over a cap (plain sockets only, see [`Service::refusal`]) and close, off the accept loop.
fn refuse(mut stream: TcpStream, tls: bool, message: Bytes) {
    tokio::spawn(async move {
        if !tls {
            let _ = tokio::time::timeout(REFUSAL_TIMEOUT, stream.write_all(&message)).await;
        }
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, stream.shutdown()).await;
    });
}

/// A plain HTTP/1.1 answer for [`Service::refusal`] of the HTTP listeners.
pub(crate) fn http_busy(why: Refusal) -> Bytes {
    let body = match why {
        Refusal::Full => "too many connections\n",
        Refusal::PerSource => "too many connections from this address\n",
    };
    Bytes::from(format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Retry-After: 5\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ))
}

/// Serve one HTTP/1.1 connection with hyper: headers must arrive within `header_timeout` (slowloris), and
/// `stop` ends it gracefully (the request in flight is answered, keep-alive ends).
pub(crate) async fn serve_http<S, B>(conn: Conn, header_timeout: Duration, service: S, what: &'static str)
where
    S: hyper::service::Service<hyper::Request<hyper::body::Incoming>, Response = hyper::Response<B>> + Send,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Conn {
        io,
        peer,
        stop,
        slot: _slot,
        _source,
        _open,
        ..
    } = conn;
    let http = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(http);
    tokio::select! {
        r = http.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "{what} connection ended with an error");
            }
        }
        _ = stop.cancelled() => {
            http.as_mut().graceful_shutdown();
            let _ = http.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Says hello, then holds the connection until the client closes it or the server stops.
    struct Hello;

    impl Service for Hello {
        const NAME: &'static str = "test";
        const METRIC: &'static str = "test";

        fn per_source(&self) -> usize {
            2
        }

        fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
            None
        }

        fn refusal(&self, why: Refusal) -> Bytes {
            Bytes::from(format!("busy: {}\n", why.label()))
        }

        async fn serve(self: Arc<Self>, mut conn: Conn) {
            let _ = conn.io.write_all(b"hello\n").await;
            let mut buf = [0u8; 16];
            tokio::select! {
                _ = conn.io.read(&mut buf) => {}
                _ = conn.stop.cancelled() => { let _ = conn.io.write_all(b"bye\n").await; }
            }
        }
    }

    async fn connect(from: &str, to: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(format!("{from}:0").parse().expect("addr")).expect("bind");
        socket.connect(to).await.expect("connect")
    }

    /// Run `service` on a loopback port: its address, the stop token, the task.
    async fn serve<S: Service>(
        service: S,
        max_connections: usize,
        drain: Duration,
    ) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
        let bound = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let listener = Rebindable::new(None, Some(bound));
        let addr = listener.local_addr().expect("bound");
        let stop = CancellationToken::new();
        let sockets = vec![Socket {
            listener,
            tls: false,
            metric: Listener::Ldap,
        }];
        let limits = Limits { max_connections, drain };
        let task = tokio::spawn(run(Arc::new(service), sockets, limits, stop.clone()));
        (addr, stop, task)
    }

    async fn greeting(s: &mut TcpStream) -> String {
        let mut buf = vec![0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[tokio::test]
    async fn caps_refuse_in_the_services_words_and_free_places_when_connections_close() {
        let (addr, stop, server) = serve(Hello, 3, Duration::from_secs(1)).await;

        // Two from one source are let in; the third from it is refused, in the service's words.
        let mut a1 = connect("127.0.0.1", addr).await;
        let mut a2 = connect("127.0.0.1", addr).await;
        assert_eq!(greeting(&mut a1).await, "hello\n");
        assert_eq!(greeting(&mut a2).await, "hello\n");
        let mut a3 = connect("127.0.0.1", addr).await;
        assert_eq!(greeting(&mut a3).await, "busy: max_connections_per_source\n");

        // Another source still gets in, up to the service's cap of three; then everyone is refused.
        let mut b1 = connect("127.0.0.2", addr).await;
        assert_eq!(greeting(&mut b1).await, "hello\n");
        let mut b2 = connect("127.0.0.2", addr).await;
        assert_eq!(greeting(&mut b2).await, "busy: max_connections\n");

        // Closing one gives its place (and its source's) back.
        drop(a1);
        let mut again = None;
        for _ in 0..50 {
            let mut a = connect("127.0.0.1", addr).await;
            if greeting(&mut a).await == "hello\n" {
                again = Some(a);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(again.is_some(), "a closed connection's place was not given back");

        // Shutdown: open connections hear goodbye, and the loop ends once they are gone.
        stop.cancel();
        assert_eq!(greeting(&mut b1).await, "bye\n");
        assert_eq!(greeting(&mut a2).await, "bye\n");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("run ends")
            .expect("no panic");
    }

    /// Holds its connection and never listens to `stop`.
    struct Stubborn;

    impl Service for Stubborn {
        const NAME: &'static str = "stubborn";
        const METRIC: &'static str = "test";

        fn per_source(&self) -> usize {
            0
        }

        fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
            None
        }

        fn refusal(&self, _: Refusal) -> Bytes {
            Bytes::new()
        }

        async fn serve(self: Arc<Self>, mut conn: Conn) {
            let _ = conn.io.write_all(b"hello\n").await;
            std::future::pending::<()>().await;
        }
    }

    #[tokio::test]
    async fn connections_still_open_after_the_drain_period_are_closed() {
        let (addr, stop, server) = serve(Stubborn, 8, Duration::from_millis(200)).await;
        let mut c = connect("127.0.0.1", addr).await;
        assert_eq!(greeting(&mut c).await, "hello\n");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("run ends")
            .expect("no panic");
        assert_eq!(greeting(&mut c).await, "", "the server closed the connection");
    }
}
