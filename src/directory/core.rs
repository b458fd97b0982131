//! The live directory: applies sync rounds to the stored Graph data, re-projects what they touched (and what
//! depends on it), and publishes the next snapshot in one atomic step.

use crate::directory::change::{DeltaLinks, GraphKind, Round};
use crate::directory::collation::Collation;
use crate::directory::entry::Entry;
use crate::directory::mapping::{EvalStats, Mapping};
use crate::directory::names::{Assigned, NameBook, Wanted};
use crate::directory::phone::PhoneNormalizer;
use crate::directory::project::{self, Context, Resolved};
use crate::directory::snapshot::{Naming, Published, Snapshot};
use crate::directory::store::{PhotoRecord, Store};
use crate::directory::upn_csv::{sam_from_local, UpnMap};
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Projections of at least this many objects made before anything is served (a restart, the first sync) make
/// entries on helper threads while the sync thread indexes them; smaller ones are not worth the threads.
const PIPELINE_MIN: usize = 4096;
/// Objects a helper projects before handing them over.
const PIPELINE_CHUNK: usize = 512;

/// One object to project, with what was decided for it in order.
struct Job<'a> {
    id: &'a str,
    kind: GraphKind,
    assigned: &'a Assigned,
    created_version: u64,
}

/// How Graph objects are turned into entries: everything a reload may change without a resync.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub naming: Naming,
    pub phones: PhoneNormalizer,
    /// The order of sorted LDAP results and phone books (`directory.collation`).
    pub collation: Arc<Collation>,
    pub mapping: Mapping,
    pub upn_map: UpnMap,
    /// Containers relative to the base DN, e.g. `CN=Users`.
    pub users_container: String,
    pub groups_container: String,
    pub computers_container: String,
    pub contacts_container: String,
    pub include_guests: bool,
    pub include_disabled: bool,
    /// Group ids or display names; when non-empty only their transitive members (and groups) are published.
    pub scope_groups: Vec<String>,
}

impl Settings {
    /// Defaults for a base DN and default country (used by tests, demo and export).
    pub fn new(naming: Naming, phones: PhoneNormalizer) -> Settings {
        Settings {
            naming,
            phones,
            collation: Arc::new(Collation::root()),
            mapping: Mapping::with_overrides(&BTreeMap::new()).unwrap_or_default(),
            upn_map: UpnMap::default(),
            users_container: "CN=Users".into(),
            groups_container: "CN=Users".into(),
            computers_container: "CN=Computers".into(),
            contacts_container: "CN=Contacts".into(),
            include_guests: false,
            include_disabled: true,
            scope_groups: Vec::new(),
        }
    }

    fn container_dn(&self, kind: GraphKind) -> String {
        let rel = match kind {
            GraphKind::User => &self.users_container,
            GraphKind::Group => &self.groups_container,
            GraphKind::Device => &self.computers_container,
            GraphKind::Contact => &self.contacts_container,
        };
        if rel.trim().is_empty() {
            self.naming.base_dn.to_string()
        } else {
            format!("{},{}", rel.trim(), self.naming.base_dn)
        }
    }
}

/// What applying a round did, for logs, metrics and the sync report.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApplyReport {
    pub version: u64,
    pub entries_changed: usize,
    pub entries_removed: usize,
    pub unparsable_phones: u64,
    /// CSV rows whose UPN matches no user: (UPN, line).
    pub unmatched_csv_rows: Vec<(String, usize)>,
}

pub struct Directory {
    settings: Arc<Settings>,
    /// Threads that make entries while this one indexes, in large projections before anything is served.
    helpers: usize,
    store: Store,
    names: NameBook,
    links: DeltaLinks,
    snapshot: Snapshot,
    published: Published,
    /// Ids in scope, when scope groups are configured.
    scope: Option<HashSet<String>>,
    /// First version each published id appeared in (`uSNCreated`).
    created: HashMap<String, u64>,
    /// UPN-CSV rows that match no user, line → UPN: recomputed from the whole file when the directory is
    /// rebuilt (start, reload), else updated from the UPNs a round moved, so a round costs nothing per row.
    unmatched_csv: BTreeMap<usize, String>,
}

/// Whether a change to `changed` of `entries` entries is a (near) full build: a start, the first sync, a
/// reload, a round that touched a good part of the tenant. Such a build is followed by housekeeping that a
/// small round need not pay for.
pub(crate) fn is_bulk(changed: usize, entries: usize) -> bool {
    changed.saturating_mul(4) > entries
}

impl Directory {
    /// A directory from persisted state (or empty), fully projected and published at once.
    pub fn new(settings: Settings, store: Store, links: DeltaLinks) -> Directory {
        Directory::resume(settings, store, links, 0)
    }

    /// Like [`Directory::new`], continuing after `version` (from the state file), so published versions never
    /// go back across a restart: LDAP clients comparing `uSNChanged` and CardDAV sync tokens see the restart
    /// as newer, not older, data.
    pub fn resume(settings: Settings, mut store: Store, links: DeltaLinks, version: u64) -> Directory {
        store.rebuild_links();
        let mut empty = Snapshot::resumed(settings.naming.clone(), settings.phones.clone(), version);
        empty.collation = settings.collation.clone();
        let published = Published::new(empty.clone());
        let mut d = Directory {
            settings: Arc::new(settings),
            helpers: std::thread::available_parallelism().map_or(0, |n| n.get().saturating_sub(1).min(3)),
            store,
            names: NameBook::default(),
            links,
            snapshot: empty,
            published,
            scope: None,
            created: HashMap::new(),
            unmatched_csv: BTreeMap::new(),
        };
        d.rebuild();
        d
    }

    pub fn published(&self) -> Published {
        self.published.clone()
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn delta_links(&self) -> &DeltaLinks {
        &self.links
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Users whose photo should be checked this round: never checked, or last checked before `recheck_before`;
    /// the `max` longest unchecked, oldest first. Read from an index ordered by the last check, so a round
    /// pays for the users it re-checks, not for every user.
    pub fn photo_rechecks(&self, recheck_before: u64, max: usize) -> Vec<String> {
        self.store.photos_due(recheck_before, max)
    }

    /// Users whose photo state is known (checked at least once), by id.
    pub fn photos_known(&self) -> &BTreeMap<String, PhotoRecord> {
        &self.store.photos
    }

    /// New mapping, CSV, scope or naming: re-project everything from the stored Graph data.
    pub fn reconfigure(&mut self, settings: Settings) -> ApplyReport {
        if *self.settings == settings {
            // A reload that changed nothing the projection depends on costs nothing.
            return ApplyReport {
                version: self.snapshot.version,
                ..ApplyReport::default()
            };
        }
        let naming_changed = settings.naming != self.settings.naming;
        let collation_changed = settings.collation != self.settings.collation;
        self.settings = Arc::new(settings);
        if naming_changed {
            // Every DN changes; versions still only grow (clients compare them).
            self.snapshot = Snapshot::resumed(
                self.settings.naming.clone(),
                self.settings.phones.clone(),
                self.snapshot.version,
            );
            self.snapshot.collation = self.settings.collation.clone();
        } else {
            self.snapshot = Snapshot::clone(&self.snapshot);
            if collation_changed {
                self.snapshot.rekey(self.settings.collation.clone());
            }
        }
        self.rebuild()
    }

    /// Apply one complete sync round and publish the result.
    pub fn apply(&mut self, round: &Round) -> ApplyReport {
        let now = unix_now();
        let touched = self.store.apply(round, now);
        self.links = round.delta_links.clone();
        for upn in &touched.upns_moved {
            if let Some(line) = self.settings.upn_map.line_of(upn) {
                if self.store.has_upn(upn) {
                    self.unmatched_csv.remove(&line);
                } else {
                    self.unmatched_csv.insert(line, upn.clone());
                }
            }
        }
        let full_groups = round.full.contains(&GraphKind::Group);
        let mut ids = touched.ids;
        if !self.settings.scope_groups.is_empty() && (touched.membership || full_groups || !round.full.is_empty()) {
            let new_scope = self.compute_scope();
            if let Some(old) = &self.scope {
                ids.extend(old.symmetric_difference(&new_scope).cloned());
            }
            self.scope = Some(new_scope);
        }
        let mut next = self.snapshot.next();
        next.set_synced_at(SystemTime::now());
        self.project_ids(&mut next, ids)
    }

    /// Project everything from scratch (start-up, reload).
    fn rebuild(&mut self) -> ApplyReport {
        let store = &self.store;
        self.unmatched_csv = self
            .settings
            .upn_map
            .unmatched(|upn| store.has_upn(upn))
            .map(|(u, l)| (l, u.to_string()))
            .collect();
        self.scope = if self.settings.scope_groups.is_empty() {
            None
        } else {
            Some(self.compute_scope())
        };
        let mut next = self.snapshot.next();
        // Structural entries: the domain and the containers in use.
        let base = self.settings.naming.base_dn.to_string();
        let mut structural: BTreeSet<String> = BTreeSet::from([base.clone()]);
        for kind in GraphKind::ALL {
            let c = self.settings.container_dn(kind);
            // Every level between the container and the base DN must exist for one-level searches to work.
            let mut dn = c.as_str();
            while dn.len() > base.len() {
                structural.insert(dn.to_string());
                match dn.find(',') {
                    Some(i) => dn = &dn[i + 1..],
                    None => break,
                }
            }
        }
        let wanted_ids: HashSet<String> = structural
            .iter()
            .filter_map(|dn| crate::directory::entry::normalize_dn(dn))
            .collect();
        let stale: Vec<String> = next
            .entries()
            .filter(|e| {
                matches!(
                    e.kind,
                    crate::directory::EntryKind::Domain | crate::directory::EntryKind::Container
                )
            })
            .filter(|e| !wanted_ids.contains(&*e.id))
            .map(|e| e.id.to_string())
            .collect();
        for id in stale {
            next.remove(&id);
        }
        for dn in &structural {
            if let Some(e) = project::structural(dn, &self.settings.naming, next.version) {
                next.upsert(Arc::new(e));
            }
        }
        // Graph objects that are published but no longer stored (state from another tenant, reload) go too.
        let mut ids: BTreeSet<String> = GraphKind::ALL
            .iter()
            .flat_map(|k| self.store.objects(*k).keys().cloned())
            .collect();
        ids.extend(self.names.ids().map(str::to_string));
        ids.extend(
            next.entries()
                .filter(|e| {
                    !matches!(
                        e.kind,
                        crate::directory::EntryKind::Domain | crate::directory::EntryKind::Container
                    )
                })
                .map(|e| e.id.to_string()),
        );
        self.project_ids(&mut next, ids)
    }

    fn compute_scope(&self) -> HashSet<String> {
        let mut roots: Vec<&String> = Vec::new();
        for want in &self.settings.scope_groups {
            for (gid, g) in &self.store.groups {
                if gid.eq_ignore_ascii_case(want) || g.str("displayName").is_some_and(|n| n.eq_ignore_ascii_case(want))
                {
                    roots.push(gid);
                }
            }
        }
        let mut seen: HashSet<String> = HashSet::new();
        let mut stack: Vec<String> = roots.into_iter().cloned().collect();
        while let Some(id) = stack.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            if let Some(g) = self.store.groups.get(&id) {
                stack.extend(g.members.iter().map(|m| m.id.clone()));
            }
        }
        seen
    }

    fn is_published(&self, id: &str) -> Option<GraphKind> {
        let kind = self.store.kind_of(id)?;
        let obj = &self.store.objects(kind)[id];
        if kind == GraphKind::User {
            let guest = obj.str("userType").is_some_and(|t| t.eq_ignore_ascii_case("Guest"))
                || obj.str("userPrincipalName").is_some_and(|u| u.contains("#EXT#"));
            if guest && !self.settings.include_guests {
                return None;
            }
            let disabled = obj.props.get("accountEnabled").and_then(|v| v.as_bool()) == Some(false);
            if disabled && !self.settings.include_disabled {
                return None;
            }
        }
        if let Some(scope) = &self.scope {
            if kind != GraphKind::Group && !scope.contains(id) {
                return None;
            }
        }
        Some(kind)
    }

    fn wanted_names(&self, id: &str, kind: GraphKind) -> Wanted {
        let obj = &self.store.objects(kind)[id];
        let display = obj.str("displayName").unwrap_or("").trim().to_string();
        let upn = obj.str("userPrincipalName").unwrap_or("");
        let local = self.settings.upn_map.local_for(upn);
        let sam = match kind {
            GraphKind::User => local
                .map(sam_from_local)
                .or(obj.str("onPremisesSamAccountName"))
                .or(obj.str("mailNickname"))
                .or_else(|| upn.split('@').next().filter(|s| !s.is_empty()))
                .unwrap_or(id)
                .to_string(),
            GraphKind::Group => obj
                .str("onPremisesSamAccountName")
                .or(obj.str("mailNickname"))
                .map(str::to_string)
                .unwrap_or_else(|| display.clone()),
            GraphKind::Device => display.clone(),
            GraphKind::Contact => obj
                .str("mailNickname")
                .map(str::to_string)
                .unwrap_or_else(|| display.clone()),
        };
        let cn = if display.is_empty() { upn.to_string() } else { display };
        // Graph's own creation time ranks colliding wishes the same on every replica (names.rs).
        let created = ["createdDateTime", "registrationDateTime"]
            .iter()
            .find_map(|p| obj.str(p).and_then(crate::time::parse_iso8601));
        Wanted {
            sam,
            cn,
            container: self.settings.container_dn(kind),
            computer: kind == GraphKind::Device,
            created,
        }
    }

    /// Re-project `ids` and everything whose attributes name them, into `next`, and publish it.
    fn project_ids(&mut self, next: &mut Snapshot, ids: BTreeSet<String>) -> ApplyReport {
        // 1. Names: what each object now wants (nothing, when it left); settling them may rename objects
        // outside `ids` (the next holder of a freed name), whose entries must be re-projected as well.
        let wishes: Vec<(String, Option<Wanted>)> = ids
            .iter()
            .map(|id| (id.clone(), self.is_published(id).map(|k| self.wanted_names(id, k))))
            .collect();
        let mut ids = ids;
        let mut moved: Vec<String> = Vec::new();
        for renamed in self.names.update(wishes) {
            if renamed.dn_changed {
                moved.push(renamed.id.clone());
            }
            ids.insert(renamed.id);
        }
        for id in &ids {
            next.set_clash(id, self.names.clash(id));
        }
        // 2. Whatever refers to a moved DN must be re-projected too.
        let mut affected: BTreeSet<String> = ids;
        for id in &moved {
            affected.extend(self.store.groups_of(id).cloned());
            if let Some(g) = self.store.groups.get(id) {
                affected.extend(g.members.iter().map(|m| m.id.clone()));
            }
            affected.extend(self.store.reports_of(id).cloned());
            if let Some(m) = self.store.users.get(id).and_then(|u| u.manager.clone()) {
                affected.insert(m);
            }
        }
        // 3. Project: removals and creation versions first, in order (cheap, and they change `self`), then
        // the entries themselves, which only read the store and the names.
        let mut report = ApplyReport {
            version: next.version,
            ..ApplyReport::default()
        };
        let version = next.version;
        let mut batch = next.batch();
        let mut jobs: Vec<Job<'_>> = Vec::with_capacity(affected.len());
        for id in &affected {
            let Some(kind) = self.is_published(id) else {
                if batch.remove(id).is_some() {
                    report.entries_removed += 1;
                }
                self.created.remove(id);
                continue;
            };
            let Some(assigned) = self.names.get(id) else { continue };
            let created_version = *self.created.entry(id.clone()).or_insert(version);
            jobs.push(Job {
                id,
                kind,
                assigned,
                created_version,
            });
        }
        let this = &*self;
        let mut stats = EvalStats::default();
        let mut changed = 0usize;
        let mut apply = |entry: Entry| {
            let id = entry.id.clone();
            let before = batch.entry(&id).map(|e| e.usn_changed);
            batch.upsert(Arc::new(entry));
            if batch.entry(&id).map(|e| e.usn_changed) != before {
                changed += 1;
            }
        };
        // Helpers only while nothing is served yet (a restart, the first sync): once the front ends answer,
        // a re-projection leaves them a core rather than finishing sooner (README: caller-ID during reloads).
        let c = self.snapshot.counts();
        let serving = c.tenant_objects() > 0;
        let helpers = if serving { 0 } else { self.helpers };
        if jobs.len() < PIPELINE_MIN || helpers == 0 {
            let mut dns = FxHashMap::default();
            for job in &jobs {
                apply(this.project_one(job, version, &mut dns, &mut stats));
            }
        } else {
            stats.unparsable_phones += this.project_pipelined(&jobs, version, helpers, apply);
        }
        report.entries_changed = changed;
        drop(batch);
        if is_bulk(changed, next.len()) {
            // A full build (a start, the first sync, a reload) leaves the ordered indexes' blocks part full.
            next.compact_indexes();
        }
        report.unparsable_phones = stats.unparsable_phones;
        report.unmatched_csv_rows = self.unmatched_csv.iter().map(|(l, u)| (u.clone(), *l)).collect();
        if !next.changed_in_this_version() {
            // Nothing visible changed: keep the version (clients' sync tokens stay valid and cheap).
            let mut same = self.snapshot.clone();
            same.synced_at = next.synced_at.or(same.synced_at);
            report.version = same.version;
            self.snapshot = same.clone();
            self.published.publish(same);
            return report;
        }
        next.trim_history();
        self.snapshot = next.clone();
        self.published.publish(next.clone());
        if is_bulk(changed, next.len()) {
            crate::memory::release_free_memory();
        }
        report
    }

    /// The entry for one object. `dns` remembers the DNs of the objects it names: a group's members and a
    /// user's groups are named by DN, and a group of everybody lists every user.
    fn project_one(
        &self,
        job: &Job<'_>,
        version: u64,
        dns: &mut FxHashMap<String, Option<String>>,
        stats: &mut EvalStats,
    ) -> Entry {
        let settings = &*self.settings;
        let id = job.id;
        let obj = &self.store.objects(job.kind)[id];
        let mut dn_of = |other: &str| -> Option<String> {
            if let Some(dn) = dns.get(other) {
                return dn.clone();
            }
            let dn = self
                .is_published(other)
                .and_then(|_| self.names.get(other))
                .map(|a| project::object_dn(&a.cn, &a.container));
            dns.insert(other.to_string(), dn.clone());
            dn
        };
        let mut member_of: Vec<String> = self.store.groups_of(id).filter_map(|g| dn_of(g)).collect();
        member_of.sort();
        let members: Vec<String> = obj.members.iter().filter_map(|m| dn_of(&m.id)).collect();
        let manager = obj.manager.as_deref().and_then(&mut dn_of);
        let direct_reports: Vec<String> = self.store.reports_of(id).filter_map(|u| dn_of(u)).collect();
        let upn = obj
            .str("userPrincipalName")
            .map(|u| settings.upn_map.local_for(u).filter(|l| l.contains('@')).unwrap_or(u));
        let assigned = job.assigned;
        let r = Resolved {
            id,
            kind: job.kind,
            obj,
            cn: &assigned.cn,
            container_dn: &assigned.container,
            sam: &assigned.sam,
            upn,
            member_of,
            members,
            manager,
            direct_reports,
            photo: self.store.photos.get(id),
            version,
            created_version: job.created_version,
        };
        let mut cx = Context {
            naming: &settings.naming,
            mapping: &settings.mapping,
            phones: &settings.phones,
            collation: &settings.collation,
            stats,
        };
        project::project(&r, &mut cx)
    }

    /// Project `jobs` on `helpers` threads while this one indexes what they made, chunk by chunk in the jobs'
    /// order (so dense ids come out as they would one by one). A full projection is about as much work making
    /// entries as indexing them: overlapped, a restart takes little more than the indexing.
    /// Returns the unparsable phone numbers the helpers counted.
    fn project_pipelined(&self, jobs: &[Job<'_>], version: u64, helpers: usize, mut apply: impl FnMut(Entry)) -> u64 {
        let chunks: Vec<&[Job<'_>]> = jobs.chunks(PIPELINE_CHUNK).collect();
        std::thread::scope(|scope| {
            let mut queues = Vec::with_capacity(helpers);
            let mut workers = Vec::with_capacity(helpers);
            for first in 0..helpers {
                // Two chunks ahead at most: enough to keep the indexer busy, little memory held.
                let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Entry>>(2);
                let chunks = &chunks;
                let spawned = std::thread::Builder::new().spawn_scoped(scope, move || {
                    let mut dns = FxHashMap::default();
                    let mut stats = EvalStats::default();
                    for chunk in chunks.iter().skip(first).step_by(helpers) {
                        let entries = chunk
                            .iter()
                            .map(|job| self.project_one(job, version, &mut dns, &mut stats))
                            .collect();
                        if tx.send(entries).is_err() {
                            break;
                        }
                    }
                    stats.unparsable_phones
                });
                // A thread the system refuses (a pids limit): this thread makes that helper's chunks itself.
                match spawned {
                    Ok(w) => {
                        queues.push(Some(rx));
                        workers.push(w);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "no helper thread for the projection; making its share here");
                        queues.push(None);
                    }
                }
            }
            let (mut dns, mut stats) = (FxHashMap::default(), EvalStats::default());
            for (i, chunk) in chunks.iter().enumerate() {
                match &queues[i % helpers] {
                    // A helper that panicked closed its queue; its panic is raised below, when it is joined.
                    Some(rx) => {
                        let Ok(entries) = rx.recv() else { break };
                        entries.into_iter().for_each(&mut apply);
                    }
                    None => {
                        for job in chunk.iter() {
                            apply(self.project_one(job, version, &mut dns, &mut stats));
                        }
                    }
                }
            }
            drop(queues);
            stats.unparsable_phones
                + workers
                    .into_iter()
                    .map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                    .sum::<u64>()
        })
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::change::PhotoState;
    use crate::directory::store::Object;

    /// The ordered index gives what sorting every due user by (last check, id) gives, also after rounds that
    /// add, re-check and remove users.
    #[test]
    fn photo_rechecks_are_the_longest_unchecked_first() {
        let mut store = Store::default();
        let mut x: u64 = 3;
        for i in 0..500u64 {
            let id = format!("user-{:03}", (i * 7919) % 500);
            store.users.insert(id.clone(), Object::default());
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            match (x >> 33) % 4 {
                0 => {} // never checked
                n => {
                    let checked_at = 1_000 + (x >> 40) % 50 * n;
                    store.photos.insert(
                        id,
                        PhotoRecord {
                            state: PhotoState::Absent,
                            checked_at,
                        },
                    );
                }
            }
        }
        // A photo record of a user who is gone does not count.
        store.photos.insert(
            "gone".into(),
            PhotoRecord {
                state: PhotoState::Absent,
                checked_at: 0,
            },
        );
        let naive = |before: u64, max: usize| -> Vec<String> {
            let mut due: Vec<(u64, String)> = store
                .users
                .keys()
                .map(|id| (store.photos.get(id).map_or(0, |p| p.checked_at), id.clone()))
                .filter(|(at, _)| *at <= before)
                .collect();
            due.sort();
            due.into_iter().take(max).map(|(_, id)| id).collect()
        };
        let naming = Naming::new("DC=contoso,DC=example").unwrap();
        let phones = PhoneNormalizer::new("DE").unwrap();
        let dir = Directory::new(Settings::new(naming, phones), store.clone(), Default::default());
        for (before, max) in [(0, 10), (1_060, 25), (1_100, 0), (u64::MAX, 50), (u64::MAX, 10_000)] {
            assert_eq!(
                dir.photo_rechecks(before, max),
                naive(before, max),
                "before {before}, max {max}"
            );
        }
        assert!(dir.photos_known().contains_key("gone"));

        // Rounds that add users, re-check photos (a new user's and one checked before) and remove users.
        use crate::directory::change::{Change, GraphKind, PhotoChange, Round};
        let mut dir = dir;
        let naive_of = |d: &Directory, before: u64, max: usize| -> Vec<String> {
            let mut due: Vec<(u64, String)> = d
                .store
                .users
                .keys()
                .map(|id| (d.store.photos.get(id).map_or(0, |p| p.checked_at), id.clone()))
                .filter(|(at, _)| *at <= before)
                .collect();
            due.sort();
            due.into_iter().take(max).map(|(_, id)| id).collect()
        };
        // A user re-created under an id whose photo record outlived it (an older state file) is due at that
        // record's time, not forgotten.
        dir.apply(&Round {
            changes: vec![Change::Upsert {
                kind: GraphKind::User,
                id: "gone".into(),
                props: serde_json::Map::new().into(),
            }],
            ..Round::default()
        });
        assert_eq!(dir.photo_rechecks(0, 1), ["gone"]);
        for r in 0..6u64 {
            let upsert = |id: String| Change::Upsert {
                kind: GraphKind::User,
                id,
                props: serde_json::Map::new().into(),
            };
            let mut changes: Vec<Change> = (0..5).map(|i| upsert(format!("new-{r}-{i}"))).collect();
            changes.push(Change::Removed {
                kind: GraphKind::User,
                id: format!("user-{:03}", r * 37),
                permanent: true,
            });
            let photos = [
                format!("new-{r}-0"),
                format!("user-{:03}", 100 + r),
                format!("user-{:03}", r * 37),
            ]
            .into_iter()
            .map(|user| PhotoChange {
                user,
                state: PhotoState::Absent,
                checked_at: 2_000 + r,
            })
            .collect();
            dir.apply(&Round {
                changes,
                photos,
                ..Round::default()
            });
            for (before, max) in [(0, 10), (1_060, 25), (2_002, 600), (u64::MAX, 10_000)] {
                assert_eq!(
                    dir.photo_rechecks(before, max),
                    naive_of(&dir, before, max),
                    "round {r}, before {before}, max {max}"
                );
            }
        }
    }

    /// A projection large enough for helper threads gives the same entries, under the same dense ids, as one
    /// made object by object: groups naming members, managers, disabled accounts, a group of everybody,
    /// colliding names, unparsable numbers.
    #[test]
    fn pipelined_projection_equals_one_by_one() {
        use crate::directory::change::{Change, MemberRef, Round};
        let n = PIPELINE_MIN + PIPELINE_CHUNK * 3 + 17;
        let user = |i: usize| format!("{:08x}-0000-4000-8000-{:012x}", i * 2654435761 % (1 << 32), i);
        let mut changes = Vec::new();
        for i in 0..n {
            let phone = if i % 97 == 0 {
                "n/a".to_string()
            } else {
                format!("+49 30 {:07}", 1_000_000 + i)
            };
            let props = serde_json::json!({
                "displayName": format!("Person {}", i % 1000), // collisions: numbered names
                "userPrincipalName": format!("p{i}@contoso.example"),
                "businessPhones": [phone],
                "accountEnabled": i % 11 != 0,
            });
            changes.push(Change::Upsert {
                kind: GraphKind::User,
                id: user(i),
                props: props.as_object().cloned().unwrap_or_default().into(),
            });
            if i % 10 != 0 {
                changes.push(Change::Manager {
                    user: user(i),
                    manager: Some(user(i - i % 10)),
                });
            }
        }
        for (g, members) in [
            ("everybody", (0..n).collect::<Vec<_>>()),
            ("tens", (0..n).step_by(10).collect()),
        ] {
            let id = format!("{g}-0000-4000-8000-000000000000");
            changes.push(Change::Upsert {
                kind: GraphKind::Group,
                id: id.clone(),
                props: serde_json::json!({"displayName": g, "securityEnabled": true})
                    .as_object()
                    .cloned()
                    .unwrap_or_default()
                    .into(),
            });
            changes.push(Change::Members {
                group: id,
                added: members
                    .into_iter()
                    .map(|i| MemberRef {
                        id: user(i),
                        odata_type: "user".into(),
                    })
                    .collect(),
                removed: Vec::new(),
            });
        }
        let mut store = Store::default();
        store.apply(
            &Round {
                changes,
                ..Round::default()
            },
            1_000,
        );
        let build = |helpers: usize| {
            let naming = Naming::new("DC=contoso,DC=example").unwrap();
            let phones = PhoneNormalizer::new("DE").unwrap();
            let mut dir = Directory::new(
                Settings::new(naming.clone(), phones.clone()),
                Store::default(),
                Default::default(),
            );
            dir.helpers = helpers;
            dir.store = store.clone();
            dir.store.rebuild_links();
            let report = dir.rebuild();
            (dir, report)
        };
        let (one, one_report) = build(0);
        let (piped, piped_report) = build(2);
        assert_eq!(one_report, piped_report);
        assert!(one_report.unparsable_phones > 0, "{one_report:?}");
        let a: Vec<_> = one.snapshot().entries_with_ids().collect();
        let b: Vec<_> = piped.snapshot().entries_with_ids().collect();
        assert_eq!(a.len(), n + 2 + 4, "users, groups, domain and containers");
        for ((ia, ea), (ib, eb)) in a.iter().zip(&b) {
            assert_eq!((ia, &ea.id, &ea.dn, &ea.attrs), (ib, &eb.id, &eb.dn, &eb.attrs));
        }
        let everybody = piped
            .snapshot()
            .entry("everybody-0000-4000-8000-000000000000")
            .expect("group");
        let members = everybody
            .attrs
            .iter()
            .find(|a| &**a.name == "member")
            .map_or(0, |a| a.values.len());
        assert_eq!(members, n, "a member DN for every user, disabled ones too");
    }
}
