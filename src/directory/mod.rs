//! The in-memory directory: Graph objects as last synced, their projection to AD-style entries, and the
//! immutable, versioned snapshots the protocol front ends read.
//!
//! Data flows one way: `crate::graph` produces [`change::Round`]s, this module applies them and publishes a new
//! [`Snapshot`]; LDAP and CardDAV only ever read snapshots.

pub mod change;
pub mod dn;
pub mod entry;
pub mod phone;
pub mod snapshot;
pub mod state;

pub use entry::{Attribute, Entry, EntryKind};
pub use snapshot::{Naming, Published, Snapshot};
