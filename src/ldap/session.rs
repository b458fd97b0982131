//! One client connection: framing, per-connection limits, dispatch, pipelined searches, bind state and the
//! StartTLS upgrade.
//!
//! Requests are read as raw BER frames. Indexed searches with small results are answered inline with one
//! buffer; the others run on the blocking pool (several in flight per connection, up to
//! `max_ops_per_connection`, at most [`OFFLOADED_SEARCHES`] in the server) and stream their answer to the
//! connection in chunks as they make it. Bind, StartTLS and other state-changing requests first let in-flight
//! work finish.

use super::ber::{peek_header, BerError};
use super::bind::{self, MSG_BAD_CREDENTIALS, MSG_BAD_WORKSTATION};
use super::encode::EntryCache;
use super::filter::{Compiled, Filter};
use super::paging::{Budget, Pages};
use super::proto::{self, decode_request, put_extended, put_result, BindAuth, Code, Op, Request, Scope};
use super::search::{search, Limits, SearchEnv};
use super::LdapConfig;
use crate::directory::entry::normalize_dn;
use crate::directory::Published;
use crate::metrics::{self, LdapOp};
use crate::net::listen::{BoxIo, Conn, Slot};
use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_util::codec::{Decoder, FramedRead};
use tracing::{debug, error, info, warn};

/// What AD answers to a search before a successful bind.
pub const MSG_BIND_REQUIRED: &str = "000004DC: LdapErr: DSID-0C090A5C, comment: In order to perform this operation a \
     successful bind must be completed on the connection., data 0, v4563";

/// State shared by all connections.
pub(crate) struct Shared {
    pub dir: Published,
    pub cfg: ArcSwap<LdapConfig>,
    pub cache: EntryCache,
    /// Failed binds per source address: each answer waits longer (password guessing).
    pub throttle: crate::accounts::LoginThrottle,
    /// Places for searches on the blocking pool ([`OFFLOADED_SEARCHES`]): a search waiting for a slow client
    /// to take its answer holds a blocking thread, and the pool also serves argon2, CardDAV and the sync.
    pub offloaded: Arc<Semaphore>,
}

/// Searches running on the blocking pool at once, all connections together; more wait for a place without
/// holding a thread.
pub(crate) const OFFLOADED_SEARCHES: usize = 64;

impl Shared {
    fn host(&self, cfg: &LdapConfig) -> String {
        cfg.host_name
            .clone()
            .unwrap_or_else(|| format!("entradir.{}", self.dir.load().naming.dns_domain))
    }
}

/// Why the byte stream could not be split into LDAP messages.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("not LDAP (first octet 0x{0:02x})")]
    NotLdap(u8),
    #[error("request of {0} bytes exceeds the PDU limit")]
    TooLarge(usize),
    #[error(transparent)]
    Ber(#[from] BerError),
}

/// Splits the stream into complete LDAPMessage TLVs without interpreting them.
pub(crate) struct FrameCodec {
    pub max_pdu: usize,
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let Some(&first) = buf.first() else { return Ok(None) };
        if first != 0x30 {
            return Err(FrameError::NotLdap(first));
        }
        let Some((_, hl, len)) = peek_header(buf)? else {
            return Ok(None);
        };
        let total = hl.saturating_add(len);
        if total > self.max_pdu {
            return Err(FrameError::TooLarge(total));
        }
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        Ok(Some(buf.split_to(total).freeze()))
    }
}

type InFlight = FuturesUnordered<Pin<Box<dyn Future<Output = (i64, BytesMut)> + Send>>>;

/// Bytes read at most while a failed bind is delayed (watching for the client to go away); more waits.
const READ_WHILE_DELAYED: usize = 64 * 1024;

struct Session {
    shared: Arc<Shared>,
    slot: Slot,
    peer: SocketAddr,
    tls_active: bool,
    /// Account name after a successful bind.
    bound: Option<Arc<str>>,
    pages: Arc<Mutex<Pages>>,
    abandon: HashMap<i64, Arc<AtomicBool>>,
    inflight: InFlight,
    /// Searches on the blocking pool send their answers here in chunks as they make them, and wait when it is
    /// full: a client that reads slowly holds a few chunks per connection, not whole answers.
    streamed_tx: tokio::sync::mpsc::Sender<Bytes>,
    streamed: tokio::sync::mpsc::Receiver<Bytes>,
}

/// Chunks of streamed answers ([`crate::ldap::search::STREAM_CHUNK`] bytes each) waiting per connection.
const STREAMED_CHUNKS: usize = 8;

/// How the delay of a failed bind ended.
enum Delayed {
    /// Answer it; the connection has its slot back.
    Answer,
    /// The client closed the connection meanwhile.
    Gone,
    /// All slots were taken meanwhile: answer, then close as busy.
    Busy,
}

enum Next {
    Continue,
    Close,
    StartTls,
}

/// Write one response. A client that does not take it within `deadline` (it stopped reading, or reads a
/// trickle) gets an error here and its connection closed: otherwise it would hold the response's buffers and
/// its connection slot for as long as it likes.
async fn send(framed: &mut FramedRead<BoxIo, FrameCodec>, bytes: &[u8], deadline: Duration) -> std::io::Result<()> {
    let io = framed.get_mut();
    let mut write = std::pin::pin!(async {
        io.write_all(bytes).await?;
        io.flush().await
    });
    // Nearly every response fits the socket's buffer and is written at the first poll: only one that is not
    // gets a timer (registering one per response was a measurable part of a caller-ID lookup's cost).
    if let Some(done) = futures_util::FutureExt::now_or_never(write.as_mut()) {
        return done;
    }
    match tokio::time::timeout(deadline, write).await {
        Ok(done) => done,
        Err(_) => {
            debug!(
                bytes = bytes.len(),
                "client did not read the response within ldap.write_timeout; closing"
            );
            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "write timeout"))
        }
    }
}

/// Serve one connection until it closes, errs, idles out or the server shuts down.
pub(crate) async fn run(shared: Arc<Shared>, conn: Conn) {
    let Conn {
        io,
        peer,
        tls: tls_active,
        slot,
        stop: shutdown,
        ..
    } = conn;
    let max_pdu = shared.cfg.load().max_pdu_size;
    let page_ttl = shared.cfg.load().paged_search_ttl;
    let mut framed = FramedRead::with_capacity(io, FrameCodec { max_pdu }, 8 * 1024);
    let (streamed_tx, streamed) = tokio::sync::mpsc::channel(STREAMED_CHUNKS);
    let mut s = Session {
        shared,
        slot,
        peer,
        tls_active,
        bound: None,
        pages: Arc::new(Mutex::new(Pages::new(Budget {
            ttl: page_ttl,
            ..Budget::default()
        }))),
        abandon: HashMap::new(),
        inflight: FuturesUnordered::new(),
        streamed_tx,
        streamed,
    };
    // One timer for the idle timeout, moved on only when it fires before the connection has been idle long
    // enough (at most once per idle period), instead of a new timer for every request.
    let mut last_active = tokio::time::Instant::now();
    let idle_timer = tokio::time::sleep_until(last_active + s.shared.cfg.load().idle_timeout);
    tokio::pin!(idle_timer);
    loop {
        let cfg = s.shared.cfg.load_full();
        let can_read = s.inflight.len() < cfg.max_ops_per_connection.max(1);
        let idle = cfg.idle_timeout;
        if idle_timer.deadline() > last_active + idle {
            // A reload shortened the timeout.
            idle_timer.as_mut().reset(last_active + idle);
        }
        let mut active = true;
        let next = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                s.drain(&mut framed).await;
                let _ = send(&mut framed, &proto::notice_of_disconnection(Code::Unavailable, "server shutting down"), s.write_timeout()).await;
                break;
            }
            Some(chunk) = s.streamed.recv() => {
                if send(&mut framed, &chunk, s.write_timeout()).await.is_err() {
                    break;
                }
                Next::Continue
            }
            Some((id, out)) = s.inflight.next(), if !s.inflight.is_empty() => {
                s.abandon.remove(&id);
                if !out.is_empty() && send(&mut framed, &out, s.write_timeout()).await.is_err() {
                    break;
                }
                Next::Continue
            }
            frame = framed.next(), if can_read => match frame {
                None => break,
                Some(Err(e)) => {
                    s.protocol_failure(&mut framed, &e).await;
                    break;
                }
                Some(Ok(frame)) => match decode_request(frame) {
                    Ok(req) => s.dispatch(&mut framed, req, &cfg).await,
                    Err(e) => {
                        debug!(peer = %s.peer, error = %e, "undecodable request");
                        s.drain(&mut framed).await;
                        let _ = send(&mut framed, &proto::notice_of_disconnection(Code::ProtocolError, &e.to_string()), s.write_timeout()).await;
                        break;
                    }
                },
            },
            // After the frame: a request that arrives as the timer fires is served, not cut off.
            () = &mut idle_timer, if can_read => {
                let due = last_active + idle;
                if tokio::time::Instant::now() < due {
                    idle_timer.as_mut().reset(due);
                    active = false;
                } else if s.inflight.is_empty() {
                    debug!(peer = %s.peer, "idle timeout");
                    break;
                }
                Next::Continue
            }
        };
        if active {
            last_active = tokio::time::Instant::now();
            if idle_timer.is_elapsed() {
                idle_timer.as_mut().reset(last_active + idle);
            }
        }
        match next {
            Next::Continue => {}
            Next::Close => break,
            Next::StartTls => {
                let Some(tls) = cfg.tls.clone() else { break };
                let parts = framed.into_parts();
                if !parts.read_buf.is_empty() {
                    // The client sent data before the handshake: not TLS, and not something we can recover.
                    return;
                }
                let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(parts.io)).await {
                    Ok(Ok(stream)) => {
                        framed = FramedRead::with_capacity(Box::new(stream) as BoxIo, FrameCodec { max_pdu }, 8 * 1024);
                        s.tls_active = true;
                    }
                    Ok(Err(e)) => {
                        debug!(peer = %s.peer, error = %e, "StartTLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                }
            }
        }
    }
    let _ = framed.get_mut().shutdown().await;
}

impl Session {
    fn write_timeout(&self) -> Duration {
        self.shared.cfg.load().write_timeout
    }

    /// Finish everything in flight, writing results, before a request that changes connection state.
    async fn drain(&mut self, framed: &mut FramedRead<BoxIo, FrameCodec>) {
        let deadline = self.write_timeout();
        while !self.inflight.is_empty() {
            let out = tokio::select! {
                biased;
                Some(chunk) = self.streamed.recv() => chunk,
                Some((id, out)) = self.inflight.next() => {
                    self.abandon.remove(&id);
                    out.freeze()
                }
                else => break,
            };
            if !out.is_empty() && send(framed, &out, deadline).await.is_err() {
                return;
            }
        }
        // Every search has finished: what it streamed is all here.
        while let Ok(chunk) = self.streamed.try_recv() {
            if send(framed, &chunk, deadline).await.is_err() {
                return;
            }
        }
    }

    async fn protocol_failure(&mut self, framed: &mut FramedRead<BoxIo, FrameCodec>, e: &FrameError) {
        match e {
            // A TLS ClientHello on the plain port: nothing we write would be understood; just close.
            FrameError::NotLdap(0x16) | FrameError::Io(_) => {
                debug!(peer = %self.peer, error = %e, "closing connection");
            }
            _ => {
                debug!(peer = %self.peer, error = %e, "protocol error");
                self.drain(framed).await;
                let _ = send(
                    framed,
                    &proto::notice_of_disconnection(Code::ProtocolError, &e.to_string()),
                    self.write_timeout(),
                )
                .await;
            }
        }
    }

    async fn dispatch(
        &mut self,
        framed: &mut FramedRead<BoxIo, FrameCodec>,
        req: Request,
        cfg: &Arc<LdapConfig>,
    ) -> Next {
        let id = req.id;
        let started = Instant::now();
        let mut out = BytesMut::new();
        // What this operation counts as in the metrics, once its result is known.
        let counted: (LdapOp, Code) = match req.op {
            Op::Unbind => {
                metrics::ldap_op(LdapOp::Unbind, None, started.elapsed());
                return Next::Close;
            }
            Op::Abandon(target) => {
                if let Some(flag) = self.abandon.get(&target) {
                    flag.store(true, Ordering::Relaxed);
                }
                metrics::ldap_op(LdapOp::Abandon, None, started.elapsed());
                return Next::Continue;
            }
            Op::Bind { version, name, auth } => {
                self.drain(framed).await;
                let (code, msg, failed) = self.bind(cfg, version, &name, auth).await;
                if failed {
                    match self.delay_failure(framed).await {
                        Delayed::Answer => {}
                        Delayed::Gone => {
                            metrics::ldap_op(LdapOp::Bind, None, started.elapsed());
                            return Next::Close;
                        }
                        Delayed::Busy => {
                            put_result(&mut out, id, 0x61, code, "", msg);
                            out.extend_from_slice(&proto::notice_of_disconnection(Code::Busy, "too many connections"));
                            metrics::ldap_op(LdapOp::Bind, Some(code as u8), started.elapsed());
                            let _ = send(framed, &out, self.write_timeout()).await;
                            return Next::Close;
                        }
                    }
                }
                put_result(&mut out, id, 0x61, code, "", msg);
                (LdapOp::Bind, code)
            }
            Op::Extended { oid, .. } if oid == proto::OID_STARTTLS => {
                self.drain(framed).await;
                let (code, msg) = if self.tls_active {
                    (Code::OperationsError, "TLS is already active on this connection")
                } else if !cfg.starttls || cfg.tls.is_none() {
                    (Code::ProtocolError, "StartTLS is not enabled on this server")
                } else {
                    (Code::Success, "")
                };
                put_extended(&mut out, id, code, msg, Some(proto::OID_STARTTLS), None);
                metrics::ldap_op(LdapOp::Extended, Some(code as u8), started.elapsed());
                if send(framed, &out, self.write_timeout()).await.is_err() {
                    return Next::Close;
                }
                return if code == Code::Success {
                    Next::StartTls
                } else {
                    Next::Continue
                };
            }
            Op::Extended { oid, .. } if oid == proto::OID_WHOAMI => {
                let who = match &self.bound {
                    Some(name) => format!("u:{}\\{}", self.shared.dir.load().naming.netbios, name),
                    None => String::new(),
                };
                put_extended(&mut out, id, Code::Success, "", None, Some(who.as_bytes()));
                (LdapOp::Extended, Code::Success)
            }
            Op::Extended { oid, .. } => {
                let msg =
                    format!("0000203D: LdapErr: DSID-0C0C0E94, comment: Unknown extended request OID {oid}, v4563");
                put_extended(&mut out, id, Code::ProtocolError, &msg, None, None);
                (LdapOp::Extended, Code::ProtocolError)
            }
            Op::Write { response_tag } => {
                put_result(
                    &mut out,
                    id,
                    response_tag,
                    Code::UnwillingToPerform,
                    "",
                    "00002035: the directory is read-only (it mirrors Microsoft Entra ID)",
                );
                (LdapOp::Write, Code::UnwillingToPerform)
            }
            Op::Compare { dn, attr, value } => {
                if !self.may_read(cfg) {
                    put_result(&mut out, id, 0x6f, Code::OperationsError, "", MSG_BIND_REQUIRED);
                    (LdapOp::Compare, Code::OperationsError)
                } else {
                    let shared = &self.shared;
                    out = guarded(self.peer, id, 0x6f, LdapOp::Compare, started, || {
                        let mut out = BytesMut::new();
                        let (code, matched) = compare(shared, &dn, &attr, value);
                        put_result(&mut out, id, 0x6f, code, &matched, "");
                        metrics::ldap_op(LdapOp::Compare, Some(code as u8), started.elapsed());
                        out
                    });
                    if send(framed, &out, self.write_timeout()).await.is_err() {
                        return Next::Close;
                    }
                    return Next::Continue;
                }
            }
            Op::Search(sr) => {
                let rootdse = sr.base.trim().is_empty() && sr.scope == Scope::Base;
                if !rootdse && !self.may_read(cfg) {
                    put_result(&mut out, id, 0x65, Code::OperationsError, "", MSG_BIND_REQUIRED);
                    (LdapOp::Search, Code::OperationsError)
                } else {
                    let flag = Arc::new(AtomicBool::new(false));
                    self.abandon.insert(id, flag.clone());
                    let shared = self.shared.clone();
                    let pages = self.pages.clone();
                    let cfg = cfg.clone();
                    let controls = req.controls;
                    // Indexed lookups take microseconds: they run right here, in order, with no task hand-off.
                    // Anything that may scan the directory goes to the blocking pool, so it neither holds up
                    // other connections nor this one's later requests (pipelining).
                    let limit = [usize::try_from(sr.size_limit).unwrap_or(0), cfg.size_limit]
                        .into_iter()
                        .filter(|l| *l > 0)
                        .min()
                        .unwrap_or(usize::MAX);
                    let first_page = controls.iter().any(|c| c.oid == proto::OID_PAGED) && !continues_paging(&controls);
                    // A sorted search collects and orders every match (collation keys for attributes without
                    // precomputed ones): work for a blocking thread, not for the workers caller-ID lookups use.
                    let sorted = controls.iter().any(|c| c.oid == proto::OID_SORT_REQUEST);
                    let cheap = sr.scope == Scope::Base
                        || continues_paging(&controls)
                        || (sr.scope == Scope::Sub && !first_page && !sorted && limit <= 1000 && sr.filter.indexable());
                    let peer = self.peer;
                    let who = self.bound.clone();
                    // `stream`: on the blocking pool, where waiting for the connection to take a chunk is fine.
                    let run = move |stream: Option<&tokio::sync::mpsc::Sender<Bytes>>| {
                        guarded(peer, id, 0x65, LdapOp::Search, started, || {
                            // A chunk the connection does not take within write_timeout ends the search, as the
                            // session's own write deadline ends the connection.
                            let wait = cfg.write_timeout;
                            let send_chunk = |chunk: Bytes| {
                                stream.is_some_and(|tx| {
                                    let sent = tokio::runtime::Handle::current()
                                        .block_on(tokio::time::timeout(wait, tx.send(chunk)));
                                    matches!(sent, Ok(Ok(())))
                                })
                            };
                            let snap = shared.dir.load();
                            let env = SearchEnv {
                                snap: &snap,
                                cache: &shared.cache,
                                pages: &pages,
                                limits: Limits {
                                    size_limit: cfg.size_limit,
                                    max_page_size: cfg.max_page_size,
                                    time_limit: cfg.time_limit,
                                },
                                host: &|| shared.host(&cfg),
                                abandoned: &flag,
                                stream: stream.is_some().then_some(&send_chunk as &dyn Fn(Bytes) -> bool),
                            };
                            let mut out = BytesMut::new();
                            let code = search(&env, id, &sr, &controls, &mut out);
                            metrics::ldap_op(LdapOp::Search, code.map(|c| c as u8), started.elapsed());
                            super::clients::search(peer.ip(), who.as_ref(), &sr.filter, code);
                            out
                        })
                    };
                    if cheap {
                        out = run(None);
                        self.abandon.remove(&id);
                        if send(framed, &out, self.write_timeout()).await.is_err() {
                            return Next::Close;
                        }
                        return Next::Continue;
                    }
                    let tx = self.streamed_tx.clone();
                    let places = self.shared.offloaded.clone();
                    self.inflight.push(Box::pin(async move {
                        let Ok(_place) = places.acquire_owned().await else {
                            return (id, BytesMut::new());
                        };
                        let task = tokio::task::spawn_blocking(move || {
                            // The rest goes the same way as the chunks, so it cannot overtake them.
                            let rest = run(Some(&tx));
                            if !rest.is_empty() {
                                let _ = tx.blocking_send(rest.freeze());
                            }
                            BytesMut::new()
                        });
                        match task.await {
                            Ok(out) => (id, out),
                            Err(e) => {
                                warn!(error = %e, "search task failed");
                                metrics::ldap_op(LdapOp::Search, Some(Code::Other as u8), started.elapsed());
                                let mut out = BytesMut::new();
                                put_result(&mut out, id, 0x65, Code::Other, "", "internal error");
                                (id, out)
                            }
                        }
                    }));
                    return Next::Continue;
                }
            }
        };
        metrics::ldap_op(counted.0, Some(counted.1 as u8), started.elapsed());
        if send(framed, &out, self.write_timeout()).await.is_err() {
            return Next::Close;
        }
        Next::Continue
    }

    fn may_read(&self, cfg: &LdapConfig) -> bool {
        self.bound.is_some() || cfg.allow_anonymous
    }

    /// A simple bind: the result, and whether it is a failure to delay ([`Session::delay_failure`]).
    async fn bind(&mut self, cfg: &LdapConfig, version: i64, name: &str, auth: BindAuth) -> (Code, &'static str, bool) {
        // Per RFC 4513 a bind resets the authorization state, whatever its outcome.
        self.bound = None;
        if !(2..=3).contains(&version) {
            return (Code::ProtocolError, "unsupported LDAP version", false);
        }
        let password = match auth {
            BindAuth::Sasl(_) => {
                return (
                    Code::AuthMethodNotSupported,
                    "00002028: LdapErr: only simple binds are supported, v4563",
                    false,
                )
            }
            BindAuth::Simple(p) => p,
        };
        if name.trim().is_empty() && password.is_empty() {
            // Anonymous bind succeeds as in AD; whether it may read is decided per operation.
            return (Code::Success, "", false);
        }
        if password.is_empty() {
            return (
                Code::UnwillingToPerform,
                "unauthenticated bind (name without password) is not allowed",
                false,
            );
        }
        let naming = self.shared.dir.load().naming.clone();
        let account = bind::resolve_name(name, &cfg.accounts, &naming).cloned();
        let logged = crate::accounts::loggable_name(name);
        if let Some(a) = account.as_ref().filter(|a| !a.allowed_from(self.peer.ip())) {
            info!(peer = %self.peer, account = %a.name, "bind refused: source network not allowed");
            super::clients::bind_failed(self.peer.ip(), name, "source network not allowed for this account");
            return (Code::InvalidCredentials, MSG_BAD_WORKSTATION, true);
        }
        // An unknown name costs the same argon2 work as a known one (a dummy hash), so timing tells nothing.
        if !crate::accounts::verifier().check(account.as_ref(), &password).await {
            match &account {
                Some(a) => info!(peer = %self.peer, account = %a.name, "bind failed: wrong password"),
                None => info!(peer = %self.peer, name = ?logged, "bind failed: unknown account"),
            }
            let reason = if account.is_some() {
                "wrong password"
            } else {
                "unknown account"
            };
            super::clients::bind_failed(self.peer.ip(), name, reason);
            return (Code::InvalidCredentials, MSG_BAD_CREDENTIALS, true);
        }
        let Some(account) = account else {
            return (Code::InvalidCredentials, MSG_BAD_CREDENTIALS, true);
        };
        info!(peer = %self.peer, account = %account.name, "bind succeeded");
        let account: Arc<str> = Arc::from(account.name);
        super::clients::bind_ok(self.peer.ip(), &account);
        self.bound = Some(account);
        (Code::Success, "", false)
    }

    /// Wait out the per-source delay of a failed bind without holding a connection slot, watching the socket:
    /// a client that hangs up ends the wait (and the connection) at once. Bytes it sends meanwhile are kept for
    /// the next read.
    async fn delay_failure(&mut self, framed: &mut FramedRead<BoxIo, FrameCodec>) -> Delayed {
        self.slot.release();
        let mut early = BytesMut::new();
        let gone = {
            let io = framed.get_mut();
            let watch = async {
                while early.len() < READ_WHILE_DELAYED {
                    match io.read_buf(&mut early).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
                std::future::pending::<()>().await
            };
            tokio::select! {
                _ = self.shared.throttle.wait_failed(self.peer.ip()) => false,
                _ = watch => true,
            }
        };
        if gone {
            debug!(peer = %self.peer, "client went away during a failed bind's delay");
            return Delayed::Gone;
        }
        framed.read_buffer_mut().extend_from_slice(&early);
        if self.slot.retake() {
            Delayed::Answer
        } else {
            Delayed::Busy
        }
    }
}

/// Run one request's work, catching a panic in it: the client gets `operationsError` for this request only,
/// the connection and every other one go on, and the panic is logged and counted (`entradir_panics_total`).
/// `work` counts its own operation metric; a panicked one is counted here.
fn guarded(
    peer: SocketAddr,
    id: i64,
    result_tag: u8,
    op: LdapOp,
    started: Instant,
    work: impl FnOnce() -> BytesMut,
) -> BytesMut {
    match crate::panics::catch(metrics::PanicArea::Ldap, work) {
        Ok(out) => out,
        Err(caught) => {
            error!(%peer, ?op, id, panic = %caught, "internal error answering an LDAP request (a bug: please report it); answered operationsError");
            metrics::ldap_op(op, Some(Code::OperationsError as u8), started.elapsed());
            let mut out = BytesMut::new();
            put_result(
                &mut out,
                id,
                result_tag,
                Code::OperationsError,
                "",
                "00000000: internal error",
            );
            out
        }
    }
}

/// Whether the request carries a paged-results cookie (a later page, served from the stored result list).
fn continues_paging(controls: &[proto::Control]) -> bool {
    controls
        .iter()
        .filter(|c| c.oid == proto::OID_PAGED)
        .filter_map(|c| c.value.as_deref())
        .filter_map(|v| proto::decode_paged(v).ok())
        .any(|(_, cookie)| !cookie.is_empty())
}

fn compare(shared: &Shared, dn: &str, attr: &str, value: Bytes) -> (Code, String) {
    let snap = shared.dir.load();
    let Some(norm) = normalize_dn(dn) else {
        return (Code::InvalidDnSyntax, String::new());
    };
    let Some(e) = snap.by_dn(&norm) else {
        return (Code::NoSuchObject, String::new());
    };
    if e.get(attr).is_none() {
        return (Code::NoSuchAttribute, String::new());
    }
    let f = Compiled::new(&Filter::Eq(attr.to_string(), value), &snap);
    if f.matches(e, &snap) {
        (Code::CompareTrue, String::new())
    } else {
        (Code::CompareFalse, String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic inside one request is answered as operationsError with that request's id and counted; the
    /// caller (the connection) carries on.
    #[test]
    fn a_panicking_request_is_answered_and_counted() {
        let count = || {
            let mut m = String::new();
            metrics::render(&mut m);
            m.lines()
                .find_map(|l| l.strip_prefix("entradir_panics_total{area=\"ldap\"} "))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let before = count();
        let peer: SocketAddr = "192.0.2.1:1234".parse().unwrap();
        let mut buf = guarded(peer, 42, 0x65, LdapOp::Search, Instant::now(), || {
            let v: Vec<u8> = Vec::new();
            let hi = v.len().wrapping_sub(1);
            BytesMut::from(&v[3..=hi.min(1)])
        });
        let r = proto::take_response(&mut buf).unwrap().unwrap();
        assert_eq!((r.id, r.tag, r.code), (42, 0x65, Some(Code::OperationsError as i64)));
        assert!(count() > before, "counted in entradir_panics_total");
        let ok = guarded(peer, 43, 0x65, LdapOp::Search, Instant::now(), || {
            BytesMut::from(&b"x"[..])
        });
        assert_eq!(&ok[..], b"x");
    }

    #[test]
    fn frames_split_and_refuse_non_ldap() {
        let mut c = FrameCodec { max_pdu: 64 };
        let mut buf = BytesMut::from(&[0x30, 0x03, 0x02, 0x01, 0x01, 0x30, 0x02][..]);
        assert_eq!(c.decode(&mut buf).unwrap().unwrap().len(), 5);
        assert!(c.decode(&mut buf).unwrap().is_none(), "incomplete second frame waits");
        let mut tls = BytesMut::from(&[0x16, 0x03, 0x01, 0x00][..]);
        assert!(matches!(c.decode(&mut tls), Err(FrameError::NotLdap(0x16))));
        let mut big = BytesMut::from(&[0x30, 0x82, 0x10, 0x00][..]);
        assert!(matches!(c.decode(&mut big), Err(FrameError::TooLarge(_))));
        let mut indefinite = BytesMut::from(&[0x30, 0x80, 0x00][..]);
        assert!(matches!(c.decode(&mut indefinite), Err(FrameError::Ber(_))));
    }
}
