//! What one sync round learned from Microsoft Graph, in Graph's own terms.
//!
//! This is the contract between the sync engine (`crate::graph`) and the directory: the engine turns delta pages
//! into [`Round`]s, the directory applies a whole round at once or not at all. Nothing here knows about LDAP or
//! HTTP, and nothing here has been mapped to AD yet.

use crate::directory::entry::attr_name;
use crate::directory::props::Val;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;

/// The kinds of Graph objects entradir mirrors, one delta endpoint each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GraphKind {
    User,
    Group,
    Device,
    /// Organisational contacts (`/contacts/delta`), only with `org_contacts = true`.
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

/// A member reference as it arrives in `members@delta`: the id plus the `@odata.type`, because groups contain
/// users, groups, devices, service principals and org contacts alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MemberRef {
    pub id: String,
    /// `@odata.type` without the `#microsoft.graph.` prefix, e.g. `user`, `group`, `device`, `servicePrincipal`,
    /// `orgContact`. Empty when Graph did not say.
    pub odata_type: String,
}

/// An upsert's properties as the store merges them: each name (shared, see `attr_name`) with its value, `None`
/// for one Graph sent as `null` (cleared). A page's objects are converted as the page arrives, so a first sync
/// of a large tenant does not hold every object as JSON until the round is applied.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Updates(Vec<(Arc<str>, Option<Val>)>);

impl Updates {
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&Val>)> + '_ {
        self.0.iter().map(|(k, v)| (&**k, v.as_ref()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The updates as Graph sent them: a JSON object, `null` for a cleared property.
    pub fn to_json(&self) -> Map<String, Value> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.map_or(Value::Null, Val::to_json)))
            .collect()
    }
}

impl<'a> FromIterator<(&'a str, &'a Value)> for Updates {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a Value)>>(iter: I) -> Updates {
        Updates(
            iter.into_iter()
                .map(|(k, v)| (attr_name(k), Val::from_json(v)))
                .collect(),
        )
    }
}

impl From<Map<String, Value>> for Updates {
    fn from(m: Map<String, Value>) -> Updates {
        m.iter().map(|(k, v)| (k.as_str(), v)).collect()
    }
}

impl Serialize for Updates {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Updates {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Updates, D::Error> {
        Map::<String, Value>::deserialize(d).map(Updates::from)
    }
}

/// One change to one object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// The object exists with these properties. Properties not present are left as they were (Graph sends only
    /// the changed ones in later delta rounds); a property present with `null` is cleared. Relationship
    /// annotations (`members@delta`, `manager@delta`) are not in `props`; they come as their own changes.
    Upsert {
        kind: GraphKind,
        id: String,
        props: Updates,
    },
    /// `@removed`: `permanent` is true for reason `deleted`, false for `changed` (soft-deleted, restorable).
    /// Either way the object leaves the published directory.
    Removed {
        kind: GraphKind,
        id: String,
        permanent: bool,
    },
    /// A slice of `members@delta` for one group. Slices of the same group may arrive in several pages and
    /// may repeat; applying them must be idempotent.
    Members {
        group: String,
        added: Vec<MemberRef>,
        removed: Vec<String>,
    },
    /// `manager@delta` for a user; `None` removes the manager.
    Manager { user: String, manager: Option<String> },
}

/// A user's photo as last fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PhotoState {
    /// `GET /users/{id}/photos/{size}/$value` answered with bytes; `etag` is `@odata.mediaEtag` (or the ETag
    /// header) so a later check can tell whether it changed.
    Present {
        etag: String,
        #[serde(with = "crate::directory::state::base64_bytes")]
        jpeg: bytes::Bytes,
    },
    /// 404: the user has no photo.
    Absent,
}

/// Result of checking one user's photo; `checked_at` is seconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhotoChange {
    pub user: String,
    pub state: PhotoState,
    pub checked_at: u64,
}

/// Opaque delta links per kind, exactly as Graph returned them in `@odata.deltaLink`, plus when they were
/// obtained (Unix seconds) so links older than Graph's 7-day limit are not even tried.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaLinks {
    pub links: std::collections::BTreeMap<GraphKind, DeltaLink>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaLink {
    pub url: String,
    pub obtained_at: u64,
    /// The `$select` list the delta state was started with. Graph only reports changes to selected
    /// properties, so a link started with a different list (a new mapping) cannot be resumed.
    #[serde(default)]
    pub select: String,
}

/// Everything one successful sync round produced. Applied atomically by the directory.
#[derive(Debug, Clone, Default)]
pub struct Round {
    /// Kinds that were read from scratch this round (first sync, 410/syncStateNotFound, stale link). For these
    /// the changes are the complete set: stored objects of that kind not upserted in this round are dropped.
    pub full: Vec<GraphKind>,
    pub changes: Vec<Change>,
    pub photos: Vec<PhotoChange>,
    /// The links to resume from next round (all kinds, including those that had no changes).
    pub delta_links: DeltaLinks,
    /// Counters for the sync report: Graph requests, pages, throttled waits, retries.
    pub stats: RoundStats,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundStats {
    pub requests: u64,
    pub pages: u64,
    pub throttled: u64,
    pub retries: u64,
    pub photo_requests: u64,
}
