//! The Graph objects as last synced: the source every snapshot is projected from.
//!
//! Keeping Graph's own data (not just the projected entries) is what lets a reload with a new mapping, CSV or
//! scope re-project the directory without asking Graph again, and what the state file persists.

use crate::directory::change::{Change, GraphKind, MemberRef, PhotoState, Round};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// One Graph object with the relationships delta tracks separately.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Object {
    pub props: Map<String, Value>,
    /// Direct members (groups only).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub members: BTreeSet<MemberRef>,
    /// Manager's object id (users only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<String>,
    /// Unix seconds when entradir first saw the object / last saw its properties change (`whenCreated`,
    /// `whenChanged`).
    #[serde(default)]
    pub created_at: u64,
    #[serde(default)]
    pub changed_at: u64,
}

impl Object {
    pub fn str(&self, prop: &str) -> Option<&str> {
        self.props.get(prop).and_then(Value::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhotoRecord {
    pub state: PhotoState,
    pub checked_at: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Store {
    pub users: BTreeMap<String, Object>,
    pub groups: BTreeMap<String, Object>,
    pub devices: BTreeMap<String, Object>,
    pub contacts: BTreeMap<String, Object>,
    pub photos: BTreeMap<String, PhotoRecord>,
}

/// Which objects a round touched, so projection only revisits those (and what depends on them).
#[derive(Debug, Default)]
pub struct Touched {
    pub ids: BTreeSet<String>,
    /// Some group's membership changed (scope filters must be re-evaluated).
    pub membership: bool,
    /// (group, member, added) for every membership that appeared or went away.
    pub member_diffs: Vec<(String, String, bool)>,
    /// (user, old manager, new manager).
    pub manager_diffs: Vec<(String, Option<String>, Option<String>)>,
}

impl Store {
    pub fn objects(&self, kind: GraphKind) -> &BTreeMap<String, Object> {
        match kind {
            GraphKind::User => &self.users,
            GraphKind::Group => &self.groups,
            GraphKind::Device => &self.devices,
            GraphKind::Contact => &self.contacts,
        }
    }

    fn objects_mut(&mut self, kind: GraphKind) -> &mut BTreeMap<String, Object> {
        match kind {
            GraphKind::User => &mut self.users,
            GraphKind::Group => &mut self.groups,
            GraphKind::Device => &mut self.devices,
            GraphKind::Contact => &mut self.contacts,
        }
    }

    /// The kind of a stored object id, if any.
    pub fn kind_of(&self, id: &str) -> Option<GraphKind> {
        GraphKind::ALL.into_iter().find(|k| self.objects(*k).contains_key(id))
    }

    pub fn len(&self) -> usize {
        self.users.len() + self.groups.len() + self.devices.len() + self.contacts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Apply a whole round. `now` is Unix seconds. Idempotent for replayed changes.
    pub fn apply(&mut self, round: &Round, now: u64) -> Touched {
        let mut t = Touched::default();
        // For kinds read from scratch, whatever is not upserted this round is gone.
        for kind in &round.full {
            let seen: BTreeSet<&str> = round
                .changes
                .iter()
                .filter_map(|c| match c {
                    Change::Upsert { kind: k, id, .. } if k == kind => Some(id.as_str()),
                    Change::Members { group, .. } if *kind == GraphKind::Group => Some(group.as_str()),
                    _ => None,
                })
                .collect();
            let gone: Vec<String> = self
                .objects(*kind)
                .keys()
                .filter(|id| !seen.contains(id.as_str()))
                .cloned()
                .collect();
            for id in gone {
                self.remove(*kind, &id, &mut t);
            }
            if *kind == GraphKind::Group {
                // Membership is re-sent in full: start every surviving group from an empty member list.
                for (id, g) in self.groups.iter_mut() {
                    if !g.members.is_empty() {
                        t.ids.extend(g.members.iter().map(|m| m.id.clone()));
                        t.member_diffs
                            .extend(g.members.iter().map(|m| (id.clone(), m.id.clone(), false)));
                        t.ids.insert(id.clone());
                        t.membership = true;
                        g.members.clear();
                    }
                }
            }
            if *kind == GraphKind::User {
                for (id, u) in self.users.iter_mut() {
                    if let Some(old) = u.manager.take() {
                        t.manager_diffs.push((id.clone(), Some(old.clone()), None));
                        t.ids.insert(old);
                        t.ids.insert(id.clone());
                    }
                }
            }
        }
        for c in &round.changes {
            match c {
                Change::Upsert { kind, id, props } => {
                    let obj = self.objects_mut(*kind).entry(id.clone()).or_insert_with(|| Object {
                        created_at: now,
                        changed_at: now,
                        ..Object::default()
                    });
                    let mut changed = false;
                    for (k, v) in props {
                        if k == "id" {
                            continue;
                        }
                        if obj.props.get(k) != Some(v) {
                            if v.is_null() {
                                obj.props.remove(k);
                            } else {
                                obj.props.insert(k.clone(), v.clone());
                            }
                            changed = true;
                        }
                    }
                    if changed {
                        obj.changed_at = now;
                    }
                    t.ids.insert(id.clone());
                }
                Change::Removed { kind, id, .. } => self.remove(*kind, id, &mut t),
                Change::Members { group, added, removed } => {
                    let g = self.groups.entry(group.clone()).or_insert_with(|| Object {
                        created_at: now,
                        changed_at: now,
                        ..Object::default()
                    });
                    for m in added {
                        if g.members.insert(m.clone()) {
                            t.member_diffs.push((group.clone(), m.id.clone(), true));
                            t.ids.insert(m.id.clone());
                            t.membership = true;
                        }
                    }
                    for r in removed {
                        let before = g.members.len();
                        g.members.retain(|m| &m.id != r);
                        if g.members.len() != before {
                            t.member_diffs.push((group.clone(), r.clone(), false));
                            t.ids.insert(r.clone());
                            t.membership = true;
                        }
                    }
                    t.ids.insert(group.clone());
                }
                Change::Manager { user, manager } => {
                    if let Some(u) = self.users.get_mut(user) {
                        if &u.manager != manager {
                            t.manager_diffs.push((user.clone(), u.manager.clone(), manager.clone()));
                            if let Some(old) = u.manager.take() {
                                t.ids.insert(old);
                            }
                            if let Some(new) = manager {
                                t.ids.insert(new.clone());
                            }
                            u.manager = manager.clone();
                            t.ids.insert(user.clone());
                        }
                    }
                }
            }
        }
        for p in &round.photos {
            if self.users.contains_key(&p.user) {
                let rec = PhotoRecord {
                    state: p.state.clone(),
                    checked_at: p.checked_at,
                };
                if self.photos.get(&p.user).map(|r| &r.state) != Some(&rec.state) {
                    t.ids.insert(p.user.clone());
                }
                self.photos.insert(p.user.clone(), rec);
            }
        }
        t
    }

    fn remove(&mut self, kind: GraphKind, id: &str, t: &mut Touched) {
        if let Some(obj) = self.objects_mut(kind).remove(id) {
            t.ids.insert(id.to_string());
            if kind == GraphKind::Group {
                t.membership = true;
                for m in obj.members {
                    t.member_diffs.push((id.to_string(), m.id.clone(), false));
                    t.ids.insert(m.id);
                }
            }
            if kind == GraphKind::User {
                self.photos.remove(id);
                if let Some(m) = obj.manager {
                    t.manager_diffs.push((id.to_string(), Some(m.clone()), None));
                    t.ids.insert(m);
                }
            }
            // Whoever listed it must drop it: member lists and manager links.
            for g in self.groups.iter_mut() {
                if g.1.members.iter().any(|m| m.id == id) {
                    g.1.members.retain(|m| m.id != id);
                    t.member_diffs.push((g.0.clone(), id.to_string(), false));
                    t.ids.insert(g.0.clone());
                    t.membership = true;
                }
            }
            for (uid, u) in self.users.iter_mut() {
                if u.manager.as_deref() == Some(id) {
                    t.manager_diffs.push((uid.clone(), u.manager.take(), None));
                    t.ids.insert(uid.clone());
                }
            }
        }
    }
}
