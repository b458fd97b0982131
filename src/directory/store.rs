//! The Graph objects as last synced: the source every snapshot is projected from.
//!
//! Keeping Graph's own data (not just the projected entries) is what lets a reload with a new mapping, CSV or
//! scope re-project the directory without asking Graph again, and what the state file persists.

use crate::directory::change::{Change, GraphKind, MemberRef, PhotoState, Round};
use crate::directory::props::{Props, Val};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One Graph object with the relationships delta tracks separately.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Object {
    pub props: Props,
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
        self.props.get(prop).and_then(Val::as_str)
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
    /// member id → groups listing it directly; manager id → direct reports. Derived, rebuilt after loading.
    #[serde(skip)]
    pub member_of: HashMap<String, IdSet>,
    #[serde(skip)]
    pub reports: HashMap<String, IdSet>,
    /// userPrincipalName → how many users hold it. Derived, rebuilt after loading: the UPN CSV's check for rows
    /// that match nobody asks it once per row instead of walking every user for each row.
    #[serde(skip)]
    upns: HashMap<String, u32>,
    /// Every user as (last photo check, id), never checked at 0: the users due for a re-check are the start of
    /// it, so a round finds them without walking every user. Derived, rebuilt after loading.
    #[serde(skip)]
    photo_order: PhotoOrder,
}

/// A sorted set of object ids, as a vector: most members are in a handful of groups and most managers have a
/// handful of reports, and a `BTreeSet` spends a 288-byte node on a set of one. Loading and rebuilding add ids in
/// order (appends); a round's few changes pay a shift.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdSet(Vec<String>);

impl IdSet {
    pub fn insert(&mut self, id: String) {
        if let Err(at) = self.0.binary_search(&id) {
            self.0.insert(at, id);
        }
    }

    pub fn remove(&mut self, id: &str) {
        if let Ok(at) = self.0.binary_search_by(|x| x.as_str().cmp(id)) {
            self.0.remove(at);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, String> {
        self.0.iter()
    }

    fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit();
    }
}

impl<'a> IntoIterator for &'a IdSet {
    type Item = &'a String;
    type IntoIter = std::slice::Iter<'a, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// See [`Store::photo_order`]. Derived from the users and photo records, which `Store`'s equality compares
/// already: two stores with equal sources are equal whatever this holds.
#[derive(Debug, Clone, Default)]
struct PhotoOrder(BTreeSet<(u64, String)>);

impl PartialEq for PhotoOrder {
    fn eq(&self, _: &PhotoOrder) -> bool {
        true
    }
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
    /// userPrincipalNames that some user now holds and none did before, or the other way round: the UPN
    /// CSV's unmatched rows change only here.
    pub upns_moved: Vec<String>,
}

/// Members are ordered by (id, type), so lookups by id are range queries: a large group's member list is never
/// scanned per change.
fn member_range<'a>(members: &'a BTreeSet<MemberRef>, id: &str) -> impl Iterator<Item = &'a MemberRef> + 'a {
    let from = MemberRef {
        id: id.to_string(),
        odata_type: String::new(),
    };
    let id = id.to_string();
    members.range(from..).take_while(move |m| m.id == id)
}

fn has_member(members: &BTreeSet<MemberRef>, id: &str) -> bool {
    member_range(members, id).next().is_some()
}

/// Remove every entry for `id`; whether there was one.
fn remove_member(members: &mut BTreeSet<MemberRef>, id: &str) -> bool {
    let found: Vec<MemberRef> = member_range(members, id).cloned().collect();
    for m in &found {
        members.remove(m);
    }
    !found.is_empty()
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

    /// Rebuild the reverse maps (not persisted) after loading.
    pub fn rebuild_links(&mut self) {
        self.member_of.clear();
        self.reports.clear();
        for (gid, g) in &self.groups {
            for m in &g.members {
                self.member_of.entry(m.id.clone()).or_default().insert(gid.clone());
            }
        }
        self.upns.clear();
        self.photo_order.0.clear();
        for (uid, u) in &self.users {
            let at = self.photos.get(uid).map_or(0, |p| p.checked_at);
            self.photo_order.0.insert((at, uid.clone()));
            if let Some(m) = &u.manager {
                self.reports.entry(m.clone()).or_default().insert(uid.clone());
            }
            if let Some(upn) = u.str("userPrincipalName") {
                *self.upns.entry(upn.to_string()).or_default() += 1;
            }
        }
        self.member_of
            .values_mut()
            .chain(self.reports.values_mut())
            .for_each(IdSet::shrink_to_fit);
    }

    /// Users last checked for a photo at or before `before` (never checked counts as 0), the `max` longest
    /// unchecked, oldest first (ties by id).
    pub fn photos_due(&self, before: u64, max: usize) -> Vec<String> {
        use std::ops::Bound;
        let end = match before.checked_add(1) {
            Some(b) => Bound::Excluded((b, String::new())),
            None => Bound::Unbounded,
        };
        self.photo_order
            .0
            .range((Bound::Unbounded, end))
            .take(max)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// Whether some user has exactly this userPrincipalName.
    pub fn has_upn(&self, upn: &str) -> bool {
        self.upns.contains_key(upn)
    }

    fn count_upn(&mut self, upn: Option<&str>, add: bool, t: &mut Touched) {
        let Some(upn) = upn else { return };
        if add {
            let n = self.upns.entry(upn.to_string()).or_default();
            *n += 1;
            if *n == 1 {
                t.upns_moved.push(upn.to_string());
            }
        } else if let Some(n) = self.upns.get_mut(upn) {
            *n -= 1;
            if *n == 0 {
                self.upns.remove(upn);
                t.upns_moved.push(upn.to_string());
            }
        }
    }

    /// Groups that list `id` directly.
    pub fn groups_of(&self, id: &str) -> impl Iterator<Item = &String> + '_ {
        self.member_of.get(id).into_iter().flatten()
    }

    /// Users whose manager is `id`.
    pub fn reports_of(&self, id: &str) -> impl Iterator<Item = &String> + '_ {
        self.reports.get(id).into_iter().flatten()
    }

    fn unlink_member(&mut self, group: &str, member: &str, t: &mut Touched) {
        if let Some(set) = self.member_of.get_mut(member) {
            set.remove(group);
            if set.is_empty() {
                self.member_of.remove(member);
            }
        }
        t.member_diffs.push((group.to_string(), member.to_string(), false));
        t.ids.insert(member.to_string());
        t.ids.insert(group.to_string());
        t.membership = true;
    }

    fn set_manager(&mut self, user: &str, new: Option<String>, t: &mut Touched) {
        let Some(u) = self.users.get_mut(user) else { return };
        if u.manager == new {
            return;
        }
        let old = std::mem::replace(&mut u.manager, new.clone());
        if let Some(o) = &old {
            if let Some(set) = self.reports.get_mut(o) {
                set.remove(user);
                if set.is_empty() {
                    self.reports.remove(o);
                }
            }
            t.ids.insert(o.clone());
        }
        if let Some(n) = &new {
            self.reports.entry(n.clone()).or_default().insert(user.to_string());
            t.ids.insert(n.clone());
        }
        t.ids.insert(user.to_string());
        t.manager_diffs.push((user.to_string(), old, new));
    }

    /// Stored objects of `kind`, read in full by `round`, that the round does not list: what applying it
    /// removes. One definition for [`Store::apply`] and for [`Store::removals`], so the delete guard counts
    /// exactly what apply would remove.
    fn absent_from_full<'a>(&'a self, round: &'a Round, kind: GraphKind) -> impl Iterator<Item = &'a str> + 'a {
        let seen: BTreeSet<&str> = round
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::Upsert { kind: k, id, .. } if *k == kind => Some(id.as_str()),
                Change::Members { group, .. } if kind == GraphKind::Group => Some(group.as_str()),
                _ => None,
            })
            .collect();
        self.objects(kind)
            .keys()
            .map(String::as_str)
            .filter(move |id| !seen.contains(id))
    }

    /// How many stored objects applying `round` would remove, without applying it: those of kinds read in
    /// full that the round does not list, and those it reports `@removed` (unless it lists them again later,
    /// as a restore does). For the sync engine's accidental-delete guard.
    pub fn removals(&self, round: &Round) -> usize {
        let mut gone: BTreeSet<(GraphKind, &str)> = BTreeSet::new();
        for kind in &round.full {
            gone.extend(self.absent_from_full(round, *kind).map(|id| (*kind, id)));
        }
        for c in &round.changes {
            match c {
                Change::Removed { kind, id, .. } if self.objects(*kind).contains_key(id) => {
                    gone.insert((*kind, id.as_str()));
                }
                Change::Upsert { kind, id, .. } => {
                    gone.remove(&(*kind, id.as_str()));
                }
                _ => {}
            }
        }
        gone.len()
    }

    /// Apply a whole round. `now` is Unix seconds. Idempotent for replayed changes.
    pub fn apply(&mut self, round: &Round, now: u64) -> Touched {
        let mut t = Touched::default();
        // For kinds read from scratch, whatever is not upserted this round is gone.
        for kind in &round.full {
            let gone: Vec<String> = self.absent_from_full(round, *kind).map(str::to_string).collect();
            for id in gone {
                self.remove(*kind, &id, &mut t);
            }
            if *kind == GraphKind::Group {
                // Membership is re-sent in full: start every surviving group from an empty member list.
                let all: Vec<(String, Vec<String>)> = self
                    .groups
                    .iter_mut()
                    .map(|(id, g)| {
                        (
                            id.clone(),
                            std::mem::take(&mut g.members).into_iter().map(|m| m.id).collect(),
                        )
                    })
                    .collect();
                for (gid, members) in all {
                    for m in members {
                        self.unlink_member(&gid, &m, &mut t);
                    }
                }
            }
            if *kind == GraphKind::User {
                let managed: Vec<String> = self
                    .users
                    .iter()
                    .filter(|(_, u)| u.manager.is_some())
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in managed {
                    self.set_manager(&id, None, &mut t);
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
                    let upn_before = obj.str("userPrincipalName").map(str::to_string);
                    let changed = obj
                        .props
                        .merge(props.iter().filter(|(k, _)| *k != "id").map(|(k, v)| (k, v.cloned())));
                    if changed {
                        obj.changed_at = now;
                    }
                    let upn_after = obj.str("userPrincipalName").map(str::to_string);
                    if *kind == GraphKind::User && upn_before != upn_after {
                        self.count_upn(upn_before.as_deref(), false, &mut t);
                        self.count_upn(upn_after.as_deref(), true, &mut t);
                    }
                    if *kind == GraphKind::User {
                        // A new user is due at its record's time (none: at once); a known one is there already.
                        let at = self.photos.get(id).map_or(0, |p| p.checked_at);
                        self.photo_order.0.insert((at, id.clone()));
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
                    let mut gone = Vec::new();
                    let mut new = Vec::new();
                    for m in added {
                        // The same member may come back with a different @odata.type; keep one entry per id.
                        if !has_member(&g.members, &m.id) {
                            g.members.insert(m.clone());
                            new.push(m.id.clone());
                        }
                    }
                    for r in removed {
                        if remove_member(&mut g.members, r) {
                            gone.push(r.clone());
                        }
                    }
                    for m in new {
                        self.member_of.entry(m.clone()).or_default().insert(group.clone());
                        t.member_diffs.push((group.clone(), m.clone(), true));
                        t.ids.insert(m);
                        t.membership = true;
                    }
                    for r in gone {
                        self.unlink_member(group, &r, &mut t);
                    }
                    t.ids.insert(group.clone());
                }
                Change::Manager { user, manager } => self.set_manager(user, manager.clone(), &mut t),
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
                let before = self.photos.get(&p.user).map_or(0, |r| r.checked_at);
                self.photo_order.0.remove(&(before, p.user.clone()));
                self.photo_order.0.insert((rec.checked_at, p.user.clone()));
                self.photos.insert(p.user.clone(), rec);
            }
        }
        t
    }

    fn remove(&mut self, kind: GraphKind, id: &str, t: &mut Touched) {
        let Some(obj) = self.objects_mut(kind).remove(id) else {
            return;
        };
        t.ids.insert(id.to_string());
        if kind == GraphKind::Group {
            for m in obj.members {
                self.unlink_member(id, &m.id, t);
            }
        }
        if kind == GraphKind::User {
            self.count_upn(obj.props.get("userPrincipalName").and_then(Val::as_str), false, t);
            let at = self.photos.get(id).map_or(0, |r| r.checked_at);
            self.photo_order.0.remove(&(at, id.to_string()));
            self.photos.remove(id);
            if let Some(m) = obj.manager {
                if let Some(set) = self.reports.get_mut(&m) {
                    set.remove(id);
                    if set.is_empty() {
                        self.reports.remove(&m);
                    }
                }
                t.ids.insert(m.clone());
                t.manager_diffs.push((id.to_string(), Some(m), None));
            }
        }
        // Whoever listed it must drop it: member lists and manager links (found through the reverse maps, so
        // a removal costs in proportion to its links, not to the directory).
        let groups: Vec<String> = self.groups_of(id).cloned().collect();
        for g in groups {
            if let Some(grp) = self.groups.get_mut(&g) {
                remove_member(&mut grp.members, id);
            }
            self.unlink_member(&g, id, t);
        }
        let managed: Vec<String> = self.reports_of(id).cloned().collect();
        for u in managed {
            self.set_manager(&u, None, t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::change::{Change, GraphKind, Round};
    use serde_json::{json, Value};

    fn upsert(id: &str, props: Value) -> Round {
        Round {
            changes: vec![Change::Upsert {
                kind: GraphKind::User,
                id: id.into(),
                props: props.as_object().cloned().unwrap_or_default().into(),
            }],
            ..Round::default()
        }
    }

    /// Nulls are not stored, nested ones neither, and sending the same object again changes nothing; the UPN
    /// index follows renames and removals, and is rebuilt after loading.
    #[test]
    fn nulls_are_not_stored_and_resending_them_is_no_change() {
        let mut store = Store::default();
        let user = json!({
            "displayName": "Jane Doe",
            "jobTitle": null,
            "onPremisesExtensionAttributes": {"extensionAttribute1": null, "extensionAttribute2": null},
            "employeeOrgData": {"division": "R&D", "costCenter": null},
            "businessPhones": ["+49 30 1234567"],
        });
        store.apply(&upsert("u1", user.clone()), 100);
        let stored = &store.users["u1"];
        assert_eq!(
            stored.props.to_json(),
            json!({
                "displayName": "Jane Doe",
                "employeeOrgData": {"division": "R&D"},
                "businessPhones": ["+49 30 1234567"],
            })
        );
        store.apply(&upsert("u1", user), 200);
        assert_eq!(store.users["u1"].changed_at, 100, "the same object again is no change");
        store.apply(&upsert("u1", json!({"employeeOrgData": null})), 300);
        assert!(!store.users["u1"].props.contains_key("employeeOrgData"));
        assert_eq!(store.users["u1"].changed_at, 300);
        assert!(!store.has_upn("jane@x.example"));
        store.apply(&upsert("u1", json!({"userPrincipalName": "jane@x.example"})), 400);
        store.apply(&upsert("u2", json!({"userPrincipalName": "jane@x.example"})), 400);
        assert!(store.has_upn("jane@x.example"));
        store.apply(&upsert("u1", json!({"userPrincipalName": "jane.doe@x.example"})), 500);
        assert!(store.has_upn("jane@x.example"), "u2 still has it");
        store.apply(
            &Round {
                changes: vec![Change::Removed {
                    kind: GraphKind::User,
                    id: "u2".into(),
                    permanent: true,
                }],
                ..Round::default()
            },
            600,
        );
        assert!(!store.has_upn("jane@x.example"));
        assert!(store.has_upn("jane.doe@x.example"));
        let mut reloaded: Store = serde_json::from_str(&serde_json::to_string(&store).unwrap()).unwrap();
        reloaded.rebuild_links();
        assert!(reloaded.has_upn("jane.doe@x.example") && !reloaded.has_upn("jane@x.example"));
    }
}
