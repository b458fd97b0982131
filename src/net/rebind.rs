//! Listening sockets that a reload can move: an accept loop takes connections from whatever socket is current,
//! and a SIGHUP that changes a listen address binds the new one first (a failure leaves everything as it was),
//! then swaps it in. Connections accepted on the old socket are not touched; the old socket closes once the
//! accept loop lets go of it.
//!
//! A move that keeps the port (`0.0.0.0:389` → `10.0.0.5:389`, or to `[::]:389`) cannot bind first: the kernel
//! refuses the new socket while the old one listens. Then the old socket is closed, the new one bound, and if
//! that fails, or the reload is abandoned before it applies, the old address is bound again. New connections are
//! refused from that point until the reload applies or is abandoned, normally milliseconds (and any still in
//! the old socket's backlog are reset); open ones stay.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The current socket for one configured listen address (or none, when the address is unset).
pub struct Rebindable {
    current: watch::Sender<Option<Arc<TcpListener>>>,
    /// The address as configured (`:0` stays `:0`), to tell whether a reload changed it.
    configured: Mutex<Option<SocketAddr>>,
}

/// A socket bound for a reload, swapped in by [`Rebindable::apply`].
#[derive(Debug)]
pub struct Rebind {
    configured: Option<SocketAddr>,
    listener: Option<TcpListener>,
    /// The new address is the one already bound (`127.0.0.1:0` configured, now written with its port): only
    /// the configured address changes.
    keep: bool,
    /// Set when the old socket had to be closed to bind this one (same port): dropping the `Rebind` without
    /// applying it listens on the old address again.
    undo: Option<(Arc<Rebindable>, SocketAddr)>,
}

impl Drop for Rebind {
    fn drop(&mut self) {
        if let Some((target, old)) = self.undo.take() {
            // The new socket holds the port: close it first.
            self.listener = None;
            target.relisten(old);
        }
    }
}

/// Whether the kernel refuses `new` only because `old` listens: the same port with a wildcard address on one
/// side (`0.0.0.0`, or `[::]`, which also covers IPv4). Two different specific addresses never conflict, so an
/// "address in use" there comes from another process, and closing our socket would not help.
fn overlaps(new: SocketAddr, old: SocketAddr) -> bool {
    new.port() == old.port() && (new.ip().is_unspecified() || old.ip().is_unspecified())
}

/// Why a new listen address could not be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {error}")]
pub struct BindError {
    pub addr: SocketAddr,
    /// Not a `#[source]`: the message already says it, and error chains would say it twice.
    pub error: std::io::Error,
}

/// How long a same-port move waits for the accept loops to let go of the old socket.
const VACATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Bind `addr` if set.
pub async fn bind(addr: Option<SocketAddr>) -> Result<Option<TcpListener>, BindError> {
    match addr {
        Some(addr) => TcpListener::bind(addr)
            .await
            .map(Some)
            .map_err(|error| BindError { addr, error }),
        None => Ok(None),
    }
}

impl std::fmt::Debug for Rebindable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rebindable")
            .field("local_addr", &self.local_addr())
            .finish()
    }
}

impl Rebindable {
    pub fn new(configured: Option<SocketAddr>, listener: Option<TcpListener>) -> Arc<Rebindable> {
        Arc::new(Rebindable {
            current: watch::Sender::new(listener.map(Arc::new)),
            configured: Mutex::new(configured),
        })
    }

    /// The address the current socket is bound to.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.current.borrow().as_ref().and_then(|l| l.local_addr().ok())
    }

    fn configured(&self) -> Option<SocketAddr> {
        *self.configured.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bind `want` if it differs from the running address; `Ok(None)` when nothing changes.
    ///
    /// The running socket keeps serving, except for a move to another address on the same port that the kernel
    /// refuses while it listens (a wildcard address on either side): then it is closed here, and listened on
    /// again if the new address cannot be bound or the returned [`Rebind`] is dropped without being applied.
    pub async fn prepare(self: &Arc<Self>, want: Option<SocketAddr>) -> Result<Option<Rebind>, BindError> {
        if want == self.configured() {
            return Ok(None);
        }
        if want.is_some() && want == self.local_addr() {
            return Ok(Some(Rebind {
                configured: want,
                listener: None,
                keep: true,
                undo: None,
            }));
        }
        match bind(want).await {
            Ok(listener) => Ok(Some(Rebind {
                configured: want,
                listener,
                keep: false,
                undo: None,
            })),
            Err(e) => match (want, self.local_addr()) {
                (Some(addr), Some(old)) if e.error.kind() == std::io::ErrorKind::AddrInUse && overlaps(addr, old) => {
                    self.vacate_and_bind(addr, old).await.map(Some)
                }
                _ => Err(e),
            },
        }
    }

    /// The same-port move: close the old socket, bind the new address, and restore the old one on failure.
    async fn vacate_and_bind(self: &Arc<Self>, addr: SocketAddr, old: SocketAddr) -> Result<Rebind, BindError> {
        if let Some(listener) = self.current.send_replace(None) {
            // Accept loops drop their handle when they see the change.
            let deadline = tokio::time::Instant::now() + VACATE_TIMEOUT;
            while Arc::strong_count(&listener) > 1 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            if Arc::strong_count(&listener) > 1 {
                self.current.send_replace(Some(listener));
                return Err(BindError {
                    addr,
                    error: std::io::Error::other("the old socket on the same port is still in use"),
                });
            }
        }
        match TcpListener::bind(addr).await {
            Ok(listener) => Ok(Rebind {
                configured: Some(addr),
                listener: Some(listener),
                keep: false,
                undo: Some((self.clone(), old)),
            }),
            Err(error) => {
                self.relisten(old);
                Err(BindError { addr, error })
            }
        }
    }

    /// Listen on `old` again after a same-port move did not happen. If that fails too, the configured address
    /// is forgotten, so that the next reload binds whatever the configuration says.
    fn relisten(&self, old: SocketAddr) {
        let bound = if tokio::runtime::Handle::try_current().is_ok() {
            std::net::TcpListener::bind(old).and_then(|l| {
                l.set_nonblocking(true)?;
                TcpListener::from_std(l)
            })
        } else {
            Err(std::io::Error::other("no async runtime to listen with"))
        };
        match bound {
            Ok(l) => {
                self.current.send_replace(Some(Arc::new(l)));
            }
            Err(error) => {
                *self.configured.lock().unwrap_or_else(|e| e.into_inner()) = None;
                tracing::error!(
                    addr = %old,
                    %error,
                    "could not listen on the old address again: not listening until the next reload"
                );
            }
        }
    }

    /// Swap in a socket from [`Rebindable::prepare`]; returns (old, new) bound addresses for the log.
    pub fn apply(&self, mut r: Rebind) -> (Option<SocketAddr>, Option<SocketAddr>) {
        let old = match r.undo.take() {
            Some((_, old)) => Some(old),
            None => self.local_addr(),
        };
        *self.configured.lock().unwrap_or_else(|e| e.into_inner()) = r.configured;
        if !r.keep {
            self.current.send_replace(r.listener.take().map(Arc::new));
        }
        (old, self.local_addr())
    }

    /// An accept handle for one accept loop.
    pub fn acceptor(&self) -> Acceptor {
        Acceptor {
            rx: self.current.subscribe(),
            settled: false,
        }
    }
}

/// Accepts from whichever socket is current; waits (accepting nothing) while no address is configured.
pub struct Acceptor {
    rx: watch::Receiver<Option<Arc<TcpListener>>>,
    /// The [`Rebindable`] is gone: the current socket stays the last one.
    settled: bool,
}

impl Acceptor {
    pub async fn accept(&mut self) -> std::io::Result<(TcpStream, SocketAddr)> {
        loop {
            let current = self.rx.borrow_and_update().clone();
            match current {
                Some(l) if self.settled => return l.accept().await,
                Some(l) => tokio::select! {
                    r = l.accept() => return r,
                    changed = self.rx.changed() => self.settled = changed.is_err(),
                },
                None => {
                    if self.rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_rebind_moves_new_connections_and_keeps_old_ones() {
        let first = bind(Some("127.0.0.1:0".parse().unwrap())).await.unwrap();
        let r = Rebindable::new(Some("127.0.0.1:0".parse().unwrap()), first);
        let old_addr = r.local_addr().unwrap();
        let mut acceptor = r.acceptor();
        let serve = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = acceptor.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut b = [0u8; 1];
                    while s.read_exact(&mut b).await.is_ok() {
                        let _ = s.write_all(&b).await;
                    }
                });
            }
        });
        let mut kept = TcpStream::connect(old_addr).await.unwrap();
        kept.write_all(b"a").await.unwrap();
        let mut b = [0u8; 1];
        kept.read_exact(&mut b).await.unwrap();

        // Same configured address: nothing to do.
        assert!(r.prepare(Some("127.0.0.1:0".parse().unwrap())).await.unwrap().is_none());
        // An address another process holds fails before anything changes.
        let foreign = std::net::TcpListener::bind("127.0.0.3:0").unwrap();
        let taken = foreign.local_addr().unwrap();
        let err = r.prepare(Some(taken)).await.unwrap_err();
        assert_eq!(err.addr, taken);
        assert_eq!(r.local_addr(), Some(old_addr));

        // Linux routes all of 127.0.0.0/8 to the loopback interface.
        let next = r.prepare(Some("127.0.0.2:0".parse().unwrap())).await.unwrap().unwrap();
        let (_, new_addr) = r.apply(next);
        let new_addr = new_addr.unwrap();
        assert_ne!(new_addr, old_addr);
        let mut fresh = TcpStream::connect(new_addr).await.unwrap();
        fresh.write_all(b"b").await.unwrap();
        fresh.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"b");
        // The connection from before the rebind still works ...
        kept.write_all(b"c").await.unwrap();
        kept.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"c");
        // ... and the old socket no longer accepts.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(TcpStream::connect(old_addr).await.is_err());
        serve.abort();
    }

    /// An accept loop that answers each connection with one byte, the way the front ends use an [`Acceptor`].
    fn serve(r: &Rebindable) -> tokio::task::JoinHandle<()> {
        let mut acceptor = r.acceptor();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = acceptor.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 1];
                    while s.read_exact(&mut b).await.is_ok() {
                        let _ = s.write_all(&b).await;
                    }
                });
            }
        })
    }

    async fn echoes(addr: SocketAddr) -> bool {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            return false;
        };
        let mut b = [0u8; 1];
        s.write_all(b"x").await.is_ok() && s.read_exact(&mut b).await.is_ok()
    }

    /// Moves that keep the port (specific address to the wildcard) close the old socket first; an abandoned or
    /// failed move listens on the old address again.
    #[tokio::test]
    async fn a_move_to_another_address_on_the_same_port() {
        let first = bind(Some("127.0.0.1:0".parse().unwrap())).await.unwrap();
        let r = Rebindable::new(Some("127.0.0.1:0".parse().unwrap()), first);
        let old = r.local_addr().unwrap();
        let port = old.port();
        let serving = serve(&r);
        let mut kept = TcpStream::connect(old).await.unwrap();
        let mut b = [0u8; 1];
        // Accepted before anything moves (a connection still in the old socket's backlog is reset with it).
        kept.write_all(b"a").await.unwrap();
        kept.read_exact(&mut b).await.unwrap();
        let wildcard: SocketAddr = format!("0.0.0.0:{port}").parse().unwrap();
        let elsewhere: SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();

        let socket = || r.current.borrow().clone().map(|l| Arc::as_ptr(&l) as usize);
        let before = socket();

        // The configured `:0` written with the port it got: the same socket stays.
        let same = r.prepare(Some(old)).await.unwrap().unwrap();
        assert_eq!(r.apply(same), (Some(old), Some(old)));
        assert_eq!(socket(), before, "not closed and bound again");
        assert!(r.prepare(Some(old)).await.unwrap().is_none());

        // Two specific addresses never conflict: "in use" there is another process, and our socket stays open.
        let foreign = std::net::TcpListener::bind(elsewhere).unwrap();
        assert_eq!(r.prepare(Some(elsewhere)).await.unwrap_err().addr, elsewhere);
        assert_eq!(socket(), before, "not closed for a conflict it cannot cause");
        drop(foreign);

        // Abandoned (another part of the reload failed): the old address serves again.
        let move_ = r.prepare(Some(wildcard)).await.unwrap().unwrap();
        drop(move_);
        assert_eq!(r.local_addr(), Some(old));
        assert!(echoes(old).await, "the old address serves again");

        // Failed: another process holds the port on 127.0.0.2, so the wildcard cannot be bound.
        let foreign = std::net::TcpListener::bind(elsewhere).unwrap();
        let err = r.prepare(Some(wildcard)).await.unwrap_err();
        assert_eq!(err.addr, wildcard);
        assert!(echoes(old).await, "a failed move leaves the old address serving");
        drop(foreign);

        // Applied: the wildcard serves every loopback address on that port.
        let move_ = r.prepare(Some(wildcard)).await.unwrap().unwrap();
        assert_eq!(r.apply(move_), (Some(old), Some(wildcard)));
        assert!(echoes(elsewhere).await, "the new socket accepts");
        kept.write_all(b"k").await.unwrap();
        kept.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"k", "a connection from before the move still works");
        serving.abort();
    }
}
