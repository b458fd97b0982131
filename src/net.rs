//! Listening sockets that a reload can move: an accept loop takes connections from whatever socket is current,
//! and a SIGHUP that changes a listen address binds the new one first (a failure leaves everything as it was),
//! then swaps it in. Connections accepted on the old socket are not touched; the old socket closes once the
//! accept loop lets go of it.

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
}

/// Why a new listen address could not be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {error}")]
pub struct BindError {
    pub addr: SocketAddr,
    /// Not a `#[source]`: the message already says it, and error chains would say it twice.
    pub error: std::io::Error,
}

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
    pub async fn prepare(&self, want: Option<SocketAddr>) -> Result<Option<Rebind>, BindError> {
        if want == self.configured() {
            return Ok(None);
        }
        Ok(Some(Rebind {
            configured: want,
            listener: bind(want).await?,
        }))
    }

    /// Swap in a socket from [`Rebindable::prepare`]; returns (old, new) bound addresses for the log.
    pub fn apply(&self, r: Rebind) -> (Option<SocketAddr>, Option<SocketAddr>) {
        let old = self.local_addr();
        *self.configured.lock().unwrap_or_else(|e| e.into_inner()) = r.configured;
        self.current.send_replace(r.listener.map(Arc::new));
        (old, self.local_addr())
    }

    /// An accept handle for one accept loop.
    pub fn acceptor(&self) -> Acceptor {
        Acceptor {
            rx: self.current.subscribe(),
        }
    }
}

/// Accepts from whichever socket is current; waits (accepting nothing) while no address is configured.
pub struct Acceptor {
    rx: watch::Receiver<Option<Arc<TcpListener>>>,
}

impl Acceptor {
    pub async fn accept(&mut self) -> std::io::Result<(TcpStream, SocketAddr)> {
        loop {
            let current = self.rx.borrow_and_update().clone();
            match current {
                Some(l) => tokio::select! {
                    r = l.accept() => return r,
                    changed = self.rx.changed() => if changed.is_err() { std::future::pending::<()>().await },
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
        // An address in use fails before anything changes.
        let err = r.prepare(Some(old_addr)).await.unwrap_err();
        assert_eq!(err.addr, old_addr);
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
}
