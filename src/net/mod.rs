//! The network edge every front end shares: listening sockets that a reload can move ([`Rebindable`]) and the
//! accept loop with its limits ([`listen`]), and an open-file limit that fits them
//! ([`ensure_fd_limit`]). LDAP, CardDAV and the admin endpoint bring only their protocol.

mod fds;
pub(crate) mod listen;
mod proxy;
mod rebind;

pub use fds::ensure_for as ensure_fd_limit;
pub use rebind::{bind, Acceptor, BindError, Rebind, Rebindable};
