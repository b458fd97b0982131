//! The Graph vocabulary the simulator speaks: object kinds and member references as they appear on the wire.
//! Its own, not the server's: a stand-in that shared the client's types could not catch the client misreading
//! Graph.

use serde::{Deserialize, Serialize};

/// The collections with a `/delta` endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GraphKind {
    User,
    Group,
    Device,
    /// Organisational contacts (`/contacts/delta`).
    Contact,
}

impl GraphKind {
    pub const ALL: [GraphKind; 4] = [GraphKind::User, GraphKind::Group, GraphKind::Device, GraphKind::Contact];

    /// The collection's path segment in Graph URLs (`users`, `groups`, ...).
    pub fn collection(self) -> &'static str {
        match self {
            GraphKind::User => "users",
            GraphKind::Group => "groups",
            GraphKind::Device => "devices",
            GraphKind::Contact => "contacts",
        }
    }
}

/// A member of a group as `members@delta` lists it: the id plus the `@odata.type` without the
/// `#microsoft.graph.` prefix (`user`, `group`, `device`, `orgContact`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MemberRef {
    pub id: String,
    pub odata_type: String,
}
