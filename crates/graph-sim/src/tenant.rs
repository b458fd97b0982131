//! The simulated tenant: live and deleted directory objects with the change bookkeeping delta queries need.
//!
//! Every mutation takes the next value of one monotonically increasing change sequence and stamps it on what it
//! touched (the object, the changed properties, a membership entry, the manager link). A delta round issued at
//! sequence `s` later returns exactly the objects stamped after `s`. Deleted objects and removed memberships stay
//! as tombstones so later rounds can report them as `@removed`.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::model::{GraphKind, MemberRef};

/// Why a control call on the tenant was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SimError {
    #[error("no live {kind:?} with id {id}")]
    NotFound { kind: GraphKind, id: String },
    #[error("an object with id {0} already exists")]
    Duplicate(String),
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// How an object left the tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// In the recycle bin, restorable; delta reports `@removed: {reason: changed}`.
    Soft,
    /// Gone for good; delta reports `@removed: {reason: deleted}`.
    Permanent,
}

/// One group membership, kept after removal so later rounds can report the removal.
#[derive(Debug, Clone)]
pub struct Membership {
    /// `@odata.type` without the `#microsoft.graph.` prefix.
    pub odata_type: String,
    pub seq: u64,
    pub present: bool,
}

/// A user's photo as the photo endpoints serve it.
#[derive(Debug, Clone)]
pub struct Photo {
    pub etag: String,
    pub jpeg: Bytes,
}

impl Photo {
    pub fn new(jpeg: Vec<u8>) -> Photo {
        let digest = Sha256::digest(&jpeg);
        let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
        Photo {
            etag: format!("W/\"{hex}\""),
            jpeg: Bytes::from(jpeg),
        }
    }
}

/// One directory object of any kind.
#[derive(Debug, Clone)]
pub struct Object {
    /// Graph JSON properties, `id` included.
    pub props: Map<String, Value>,
    /// Sequence of the last change of anything about this object (props, deletion, members, manager).
    pub seq: u64,
    /// Sequence at creation (or restore): the change sequence of every property not in `prop_seq`.
    pub created: u64,
    /// Sequence of the last change per property changed since creation, for `Prefer: return=minimal`.
    pub prop_seq: HashMap<String, u64>,
    pub deleted: Option<Deletion>,
    /// Groups only: members by id, including removed ones as tombstones.
    pub members: BTreeMap<String, Membership>,
    /// Users only: the current manager's id.
    pub manager: Option<String>,
    /// Users only: the manager before the last manager change, to report its removal.
    pub manager_prev: Option<String>,
    pub manager_seq: u64,
    /// Users only; photos are not tracked by delta, so changing one does not bump `seq`.
    pub photo: Option<Photo>,
}

impl Object {
    fn new(props: Map<String, Value>, seq: u64) -> Object {
        Object {
            props,
            seq,
            created: seq,
            prop_seq: HashMap::new(),
            deleted: None,
            members: BTreeMap::new(),
            manager: None,
            manager_prev: None,
            manager_seq: 0,
            photo: None,
        }
    }

    /// When a property last changed.
    pub fn prop_changed(&self, key: &str) -> u64 {
        self.prop_seq.get(key).copied().unwrap_or(self.created)
    }

    pub fn is_live(&self) -> bool {
        self.deleted.is_none()
    }

    /// Current members (not tombstones).
    pub fn live_members(&self) -> impl Iterator<Item = (&String, &Membership)> {
        self.members.iter().filter(|(_, m)| m.present)
    }
}

/// The whole simulated directory.
#[derive(Debug, Default)]
pub struct Tenant {
    /// Last change sequence handed out.
    pub seq: u64,
    objects: [BTreeMap<String, Object>; 4],
}

pub fn kind_index(kind: GraphKind) -> usize {
    match kind {
        GraphKind::User => 0,
        GraphKind::Group => 1,
        GraphKind::Device => 2,
        GraphKind::Contact => 3,
    }
}

/// The `@odata.type` suffix Graph uses for an object of this kind in `members@delta`.
pub fn odata_type(kind: GraphKind) -> &'static str {
    match kind {
        GraphKind::User => "user",
        GraphKind::Group => "group",
        GraphKind::Device => "device",
        GraphKind::Contact => "orgContact",
    }
}

impl Tenant {
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub fn objects(&self, kind: GraphKind) -> &BTreeMap<String, Object> {
        &self.objects[kind_index(kind)]
    }

    fn objects_mut(&mut self, kind: GraphKind) -> &mut BTreeMap<String, Object> {
        &mut self.objects[kind_index(kind)]
    }

    pub fn get(&self, kind: GraphKind, id: &str) -> Option<&Object> {
        self.objects(kind).get(id)
    }

    pub fn live(&self, kind: GraphKind, id: &str) -> Result<&Object, SimError> {
        match self.get(kind, id) {
            Some(o) if o.is_live() => Ok(o),
            _ => Err(SimError::NotFound {
                kind,
                id: id.to_string(),
            }),
        }
    }

    fn live_mut(&mut self, kind: GraphKind, id: &str) -> Result<&mut Object, SimError> {
        match self.objects_mut(kind).get_mut(id) {
            Some(o) if o.is_live() => Ok(o),
            _ => Err(SimError::NotFound {
                kind,
                id: id.to_string(),
            }),
        }
    }

    /// Which kind a live object id belongs to, if any.
    pub fn kind_of(&self, id: &str) -> Option<GraphKind> {
        GraphKind::ALL
            .into_iter()
            .find(|k| self.get(*k, id).is_some_and(Object::is_live))
    }

    /// Adds an object; uses `props["id"]` when given (must be unused), else a fresh random GUID.
    pub fn add(&mut self, kind: GraphKind, mut props: Map<String, Value>) -> Result<String, SimError> {
        let id = match props.get("id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => return Err(SimError::Invalid("id must be a non-empty string".into())),
            None => uuid::Uuid::new_v4().to_string(),
        };
        if GraphKind::ALL.into_iter().any(|k| self.get(k, &id).is_some()) {
            return Err(SimError::Duplicate(id));
        }
        props.insert("id".into(), Value::String(id.clone()));
        // Graph sets these read-only dates itself when an object is created (orgContacts carry none).
        let stamp = match kind {
            GraphKind::User | GraphKind::Group => Some("createdDateTime"),
            GraphKind::Device => Some("registrationDateTime"),
            GraphKind::Contact => None,
        };
        if let Some(stamp) = stamp.filter(|p| !props.contains_key(*p)) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            props.insert(stamp.into(), Value::String(crate::gen::iso8601(now)));
        }
        let seq = self.next_seq();
        self.objects_mut(kind).insert(id.clone(), Object::new(props, seq));
        Ok(id)
    }

    /// Sets the given properties (a `null` value is stored as `null`, as Graph reports cleared properties).
    /// Returns whether anything changed; an update that changes nothing is not a change for delta.
    pub fn update(&mut self, kind: GraphKind, id: &str, props: Map<String, Value>) -> Result<bool, SimError> {
        if props.get("id").is_some_and(|v| v.as_str() != Some(id)) {
            return Err(SimError::Invalid("the id of an object cannot change".into()));
        }
        let changed: Vec<(String, Value)> = {
            let obj = self.live(kind, id)?;
            props
                .into_iter()
                .filter(|(k, v)| k != "id" && obj.props.get(k) != Some(v))
                .collect()
        };
        if changed.is_empty() {
            return Ok(false);
        }
        let seq = self.next_seq();
        let obj = self.live_mut(kind, id)?;
        for (k, v) in changed {
            obj.prop_seq.insert(k.clone(), seq);
            obj.props.insert(k, v);
        }
        obj.seq = seq;
        Ok(true)
    }

    /// Deletes an object (soft: restorable; permanent: also purges a soft-deleted one). Like Entra, a deleted
    /// object leaves every group it was in, and users it managed lose their manager.
    pub fn delete(&mut self, kind: GraphKind, id: &str, permanent: bool) -> Result<(), SimError> {
        let current = self
            .get(kind, id)
            .map(|o| o.deleted)
            .ok_or_else(|| SimError::NotFound {
                kind,
                id: id.to_string(),
            })?;
        match (current, permanent) {
            (Some(Deletion::Permanent), _) | (Some(Deletion::Soft), false) => {
                return Err(SimError::NotFound {
                    kind,
                    id: id.to_string(),
                })
            }
            _ => {}
        }
        let seq = self.next_seq();
        if let Some(obj) = self.objects_mut(kind).get_mut(id) {
            obj.deleted = Some(if permanent { Deletion::Permanent } else { Deletion::Soft });
            obj.seq = seq;
            if permanent {
                obj.photo = None;
            }
        }
        if current.is_none() {
            self.detach(id, seq);
        }
        Ok(())
    }

    /// Removes `id` from all memberships and manager links.
    fn detach(&mut self, id: &str, seq: u64) {
        for group in self.objects_mut(GraphKind::Group).values_mut() {
            if let Some(m) = group.members.get_mut(id) {
                if m.present {
                    m.present = false;
                    m.seq = seq;
                    group.seq = seq;
                }
            }
        }
        for user in self.objects_mut(GraphKind::User).values_mut() {
            if user.manager.as_deref() == Some(id) {
                user.manager_prev = user.manager.take();
                user.manager_seq = seq;
                user.seq = seq;
            }
        }
    }

    /// Restores a soft-deleted object (memberships are not restored; add them again if needed).
    pub fn restore(&mut self, kind: GraphKind, id: &str) -> Result<(), SimError> {
        if self.get(kind, id).and_then(|o| o.deleted) != Some(Deletion::Soft) {
            return Err(SimError::NotFound {
                kind,
                id: id.to_string(),
            });
        }
        let seq = self.next_seq();
        if let Some(obj) = self.objects_mut(kind).get_mut(id) {
            obj.deleted = None;
            obj.seq = seq;
            obj.created = seq;
            obj.prop_seq.clear();
            // The client dropped the object with its links; a restore must send them again.
            if obj.manager.is_some() {
                obj.manager_seq = seq;
            }
            for m in obj.members.values_mut().filter(|m| m.present) {
                m.seq = seq;
            }
        }
        Ok(())
    }

    /// Adds a member to a group. The member's type is looked up among the tenant's objects; ids not in the
    /// tenant need an explicit type (e.g. `servicePrincipal`).
    pub fn add_member(&mut self, group: &str, member: MemberRef) -> Result<bool, SimError> {
        self.live(GraphKind::Group, group)?;
        if member.id == group {
            return Err(SimError::Invalid("a group cannot contain itself".into()));
        }
        let odata_type = match self.kind_of(&member.id) {
            Some(k) => odata_type(k).to_string(),
            None if !member.odata_type.is_empty() && member.odata_type != "user" => member.odata_type.clone(),
            None => {
                return Err(SimError::Invalid(format!(
                    "member {} is not in the tenant; give its @odata.type (e.g. servicePrincipal)",
                    member.id
                )))
            }
        };
        if self
            .live(GraphKind::Group, group)?
            .members
            .get(&member.id)
            .is_some_and(|m| m.present)
        {
            return Ok(false);
        }
        let seq = self.next_seq();
        let g = self.live_mut(GraphKind::Group, group)?;
        g.members.insert(
            member.id,
            Membership {
                odata_type,
                seq,
                present: true,
            },
        );
        g.seq = seq;
        Ok(true)
    }

    pub fn remove_member(&mut self, group: &str, member: &str) -> Result<bool, SimError> {
        if !self
            .live(GraphKind::Group, group)?
            .members
            .get(member)
            .is_some_and(|m| m.present)
        {
            return Ok(false);
        }
        let seq = self.next_seq();
        let g = self.live_mut(GraphKind::Group, group)?;
        if let Some(m) = g.members.get_mut(member) {
            m.present = false;
            m.seq = seq;
        }
        g.seq = seq;
        Ok(true)
    }

    pub fn set_manager(&mut self, user: &str, manager: Option<&str>) -> Result<bool, SimError> {
        if let Some(m) = manager {
            self.live(GraphKind::User, m)?;
            if m == user {
                return Err(SimError::Invalid("a user cannot be their own manager".into()));
            }
        }
        if self.live(GraphKind::User, user)?.manager.as_deref() == manager {
            return Ok(false);
        }
        let seq = self.next_seq();
        let u = self.live_mut(GraphKind::User, user)?;
        u.manager_prev = u.manager.take();
        u.manager = manager.map(str::to_string);
        u.manager_seq = seq;
        u.seq = seq;
        Ok(true)
    }

    pub fn set_photo(&mut self, user: &str, jpeg: Option<Vec<u8>>) -> Result<(), SimError> {
        let u = self.live_mut(GraphKind::User, user)?;
        u.photo = jpeg.map(Photo::new);
        Ok(())
    }

    /// Ids of live objects of one kind, in id order.
    pub fn live_ids(&self, kind: GraphKind) -> Vec<String> {
        self.objects(kind)
            .iter()
            .filter(|(_, o)| o.is_live())
            .map(|(id, _)| id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn props(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn update_bumps_only_changed_properties() {
        let mut t = Tenant::default();
        let id = t
            .add(GraphKind::User, props(json!({"displayName": "A", "jobTitle": "x"})))
            .unwrap_or_default();
        let before = t.seq;
        assert!(!t
            .update(GraphKind::User, &id, props(json!({"displayName": "A"})))
            .unwrap_or(true));
        assert_eq!(t.seq, before);
        assert!(t
            .update(GraphKind::User, &id, props(json!({"jobTitle": "y"})))
            .unwrap_or(false));
        let o = t.get(GraphKind::User, &id).cloned();
        let o = o.as_ref();
        assert_eq!(o.map(|o| o.prop_changed("jobTitle")), Some(t.seq));
        assert_eq!(o.map(|o| o.prop_changed("displayName")), Some(before));
    }

    #[test]
    fn deleting_a_member_removes_it_from_groups_and_managers() {
        let mut t = Tenant::default();
        let boss = t.add(GraphKind::User, Map::new()).unwrap_or_default();
        let u = t.add(GraphKind::User, Map::new()).unwrap_or_default();
        let g = t.add(GraphKind::Group, Map::new()).unwrap_or_default();
        assert_eq!(
            t.add_member(
                &g,
                MemberRef {
                    id: boss.clone(),
                    odata_type: String::new()
                }
            ),
            Ok(true)
        );
        assert_eq!(t.set_manager(&u, Some(&boss)), Ok(true));
        assert_eq!(t.delete(GraphKind::User, &boss, false), Ok(()));
        let group = t.get(GraphKind::Group, &g).map(|g| g.live_members().count());
        assert_eq!(group, Some(0));
        assert_eq!(t.get(GraphKind::User, &u).and_then(|u| u.manager.clone()), None);
        assert!(t.delete(GraphKind::User, &boss, false).is_err());
        assert_eq!(t.delete(GraphKind::User, &boss, true), Ok(()));
        assert!(t.restore(GraphKind::User, &boss).is_err());
    }

    #[test]
    fn unknown_members_need_a_type() {
        let mut t = Tenant::default();
        let g = t.add(GraphKind::Group, Map::new()).unwrap_or_default();
        let sp = MemberRef {
            id: "sp-1".into(),
            odata_type: String::new(),
        };
        assert!(t.add_member(&g, sp).is_err());
        let sp = MemberRef {
            id: "sp-1".into(),
            odata_type: "servicePrincipal".into(),
        };
        assert_eq!(t.add_member(&g, sp), Ok(true));
    }
}
