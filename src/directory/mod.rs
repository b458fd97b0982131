//! The in-memory directory: Graph objects as last synced, their projection to AD-style entries, and the
//! immutable, versioned snapshots the protocol front ends read.
//!
//! Data flows one way: `crate::graph` produces [`change::Round`]s, [`Directory`] applies them and publishes a new
//! [`Snapshot`]; LDAP and CardDAV only ever read snapshots through [`Published`].

pub mod bits;
pub mod change;
pub mod collation;
pub mod core;
pub mod dn;
pub mod entry;
pub mod mapping;
pub mod names;
mod packed;
pub mod phone;
pub mod project;
pub mod props;
pub mod query;
pub mod snapshot;
pub mod state;
pub mod store;
pub mod upn_csv;

pub use self::core::{ApplyReport, Directory, Settings};
pub use bits::EntryId;
pub use entry::{Attr, Attribute, Attrs, Entry, EntryKind, Values};
pub use query::{Candidates, Query};
pub use snapshot::{Naming, Published, Snapshot};
