//! What is derived from a snapshot once and shared by every request: which entries a book holds (per snapshot
//! version) and each entry's card model and rendered vCards (per entry version).
//!
//! Cards are keyed by entry id and stay valid while the entry is the same `Arc` or has the same `usn_changed`, so
//! a sync round that changes ten people re-renders ten cards, not the book. Rendering of each vCard version happens
//! on first use and is then reused (`OnceLock`), including the strong ETag's body length.
//!
//! Each book view also carries the book's change version ([`BookView::changed`]), the basis of its getctag and
//! sync token: the newest version of anything the book's content depends on, so that a change elsewhere in the
//! directory leaves the book's ctag alone while any addition, change or removal of one of its cards raises it.
//!
//! Who a book lists besides its group is decided by the directory-wide [`Listing`] rules: disabled accounts and
//! members of `directory.exclude_groups` (shared mailboxes, service accounts) are left out. Phone books, the
//! CardDAV listing and `/lookup` all read book views, so one rule hides an entry from all of them.

use crate::carddav::config::{BookConfig, VCardVersion};
use crate::carddav::vcard::{self, Card};
use crate::directory::entry::normalize_dn;
use crate::directory::{Entry, EntryKind, Snapshot};
use bytes::Bytes;
use dashmap::DashMap;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

/// One entry's card: the model (for filters) and its renderings.
pub struct CardData {
    pub entry: Arc<Entry>,
    pub card: Card,
    /// The directory version in which this card's content last changed: the entry's version, unless the entry
    /// changed only in what no card shows (a manager's `directReports` when a report leaves) since the card
    /// was last built. sync-collection follows it, so clients do not fetch a card that is the same.
    pub changed: u64,
    /// A hash of the card's content ([`CardTag`]): its ETag, the same on every replica and across restarts.
    pub tag: u64,
    v3: OnceLock<Bytes>,
    v4: OnceLock<Bytes>,
    /// The renderings escaped for XML text (`CARDDAV:address-data`), made once as well.
    xml3: OnceLock<String>,
    xml4: OnceLock<String>,
}

impl CardData {
    pub fn bytes(&self, v: VCardVersion) -> &Bytes {
        let cell = match v {
            VCardVersion::V3 => &self.v3,
            VCardVersion::V4 => &self.v4,
        };
        cell.get_or_init(|| Bytes::from(vcard::write(&self.card, v)))
    }

    /// The vCard escaped for embedding as XML text.
    pub fn xml_text(&self, v: VCardVersion) -> &str {
        let cell = match v {
            VCardVersion::V3 => &self.xml3,
            VCardVersion::V4 => &self.xml4,
        };
        cell.get_or_init(|| {
            let text = std::str::from_utf8(self.bytes(v)).unwrap_or_default();
            crate::carddav::xml::esc(text).into_owned()
        })
    }

    /// Strong ETag: the hash of the card's content ([`CardData::tag`]). Both vCard versions carry the same data,
    /// and a client sticks to one, so a version-independent tag keeps etag-comparing clients from refetching
    /// after switching PROPFIND/REPORT. Derived from content, not from a version, it is the same on every
    /// replica: a client that a load balancer moves between them refetches nothing.
    pub fn etag(&self) -> String {
        format!("\"{}\"", CardTag(self.tag))
    }
}

/// Generation of the card rendering: bump it when a release writes different bytes for the same card model
/// (2: calcard became the writer), so that the ETags change and clients fetch the new rendering.
const CARD_FORMAT: u32 = 3;

/// The content hash of a card model and the rendering generation. `DefaultHasher::new` has fixed keys: every
/// process of one build computes the same tags (a new Rust release may change them, which costs clients one
/// refetch, as a new rendering does).
fn content_tag(card: &Card) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    CARD_FORMAT.hash(&mut h);
    card.hash(&mut h);
    h.finish()
}

/// The inside of a card's ETag (without quotes): the content tag in hex.
pub struct CardTag(pub u64);

impl std::fmt::Display for CardTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The members of one book in one snapshot version.
pub struct BookView {
    pub version: u64,
    /// The newest directory version that may have changed this book's content (never above `version`):
    ///
    /// - every member's `usn_changed` (a card changed or joined);
    /// - for a group book, the book's group and its nested groups (a member added or removed, which includes
    ///   deleted members and renamed DNs: the group's `member` values change), and every entry the groups list
    ///   even when it is not shown (a member disabled, or enabled again);
    /// - for the all-users book, every user and contact shown or not (disabled), and the last removal of one.
    ///
    /// A book whose group cannot be found uses the snapshot version: the group's reappearance (rename back,
    /// re-creation) gives it a version at least that new, so the value never falls back.
    pub changed: u64,
    /// Sorted by id (stable href order).
    pub members: Vec<Arc<Entry>>,
    /// Members ordered by (usn_changed, id): the order sync-collection pages through.
    pub by_change: Vec<Arc<Entry>>,
    ids: HashSet<Arc<str>>,
    /// People who joined the book, and people who left it while their own entry stayed the same (a nested
    /// group added to or taken out of the book's group, a member disabled under `include_disabled = false`),
    /// with the version the change was seen at. The directory's change history cannot tell sync-collection
    /// about these.
    moves: Vec<(u64, Arc<str>)>,
    /// `moves` is complete for changes after this version (0 until the record is cut at `MAX_MOVES`); an older
    /// sync token must start over.
    moves_from: u64,
}

impl BookView {
    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// Ids that joined or left after `version` without a change of their own (see `moves`); `None` when the
    /// record does not reach back that far.
    pub fn moved_after(&self, version: u64) -> Option<impl Iterator<Item = &Arc<str>>> {
        (version >= self.moves_from).then(|| {
            let start = self.moves.partition_point(|(v, _)| *v <= version);
            self.moves[start..].iter().map(|(_, id)| id)
        })
    }

    /// Members changed after position (usn, id) — or after version `usn` entirely when `id` is `None` — in
    /// change order.
    pub fn changed_after(&self, usn: u64, id: Option<&str>) -> &[Arc<Entry>] {
        let start = self.by_change.partition_point(|e| match id {
            Some(id) => (e.usn_changed, e.id.as_ref()) <= (usn, id),
            None => e.usn_changed <= usn,
        });
        &self.by_change[start..]
    }
}

/// Who is listed in every book, besides what the book's own group decides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Listing {
    /// Also list disabled accounts (userAccountControl bit 2); off by default: phones should not offer people
    /// who left.
    pub include_disabled: bool,
    /// Members of these groups (object id, DN or unambiguous name), transitively, are listed in no book
    /// (`directory.exclude_groups`).
    pub exclude_groups: Vec<String>,
}

/// (group, listing rules): everything a book's membership depends on besides the snapshot. Not the book's
/// name: two books of one group (the all-people book and the directory) share one view.
type BookKey = (Option<String>, Listing);

/// Membership moves remembered per book; beyond this the oldest are forgotten (and older tokens refused).
const MAX_MOVES: usize = 50_000;

/// The moves record of a new view: the previous view's, plus people who joined or left between the two while
/// their entries did not change (a changed entry is reported from the directory's history already).
fn next_moves(prev: Option<&BookView>, ids: &HashSet<Arc<str>>, snap: &Snapshot) -> (Vec<(u64, Arc<str>)>, u64) {
    // Every token this cache generation hands out comes from a view built after the record started, and a move
    // raises the book's change version; so the record only needs to say where it was cut (`MAX_MOVES`). The
    // record starts with the process or with a configuration that changes book content, and both raise the
    // token epoch, which refuses every older token before it gets here (`State::config` keeps the views across
    // reloads that change nothing in the books).
    let Some(prev) = prev else {
        return (Vec::new(), 0);
    };
    if prev.version >= snap.version {
        // A request still on an older snapshot than the newest view: keep the record as it is.
        return (prev.moves.clone(), prev.moves_from);
    }
    let mut moves = prev.moves.clone();
    let mut moves_from = prev.moves_from;
    let unchanged_since_prev = |id: &Arc<str>| snap.entry(id).is_some_and(|e| e.usn_changed <= prev.version);
    // Every join is recorded: sync-collection leaves out members whose card did not change since the token,
    // and a member who joined must be sent even then (its entry may have changed in what no card shows). A
    // leave with a changed entry is in the directory's history already.
    let mut moved: Vec<Arc<str>> = prev
        .ids
        .symmetric_difference(ids)
        .filter(|id| ids.contains(*id) || unchanged_since_prev(id))
        .cloned()
        .collect();
    moved.sort();
    moves.extend(moved.into_iter().map(|id| (snap.version, id)));
    if moves.len() > MAX_MOVES {
        let drop = moves.len() - MAX_MOVES;
        moves_from = moves_from.max(moves[drop - 1].0);
        moves.drain(..drop);
    }
    (moves, moves_from)
}

#[derive(Default)]
pub struct Caches {
    cards: DashMap<Arc<str>, Arc<CardData>>,
    books: Mutex<HashMap<BookKey, Arc<BookView>>>,
    /// The excluded entries of the newest snapshot asked for, shared by its books.
    excluded: Mutex<Option<Arc<Excluded>>>,
}

/// The entries `directory.exclude_groups` hides in one snapshot version.
struct Excluded {
    version: u64,
    groups: Vec<String>,
    ids: HashSet<Arc<str>>,
    /// The newest version of the exclude groups, their nested groups and every entry they list: a change there
    /// can move someone into or out of every book.
    changed: u64,
    /// The groups not found, with the first version they were seen missing: a group that stays missing is
    /// reported once, and moves the books once (when it went), not with every new snapshot.
    missing: Vec<(String, u64)>,
}

impl Caches {
    /// The card of an entry, built on first use and whenever the entry changed.
    pub fn card(&self, entry: &Arc<Entry>, snap: &Snapshot) -> Arc<CardData> {
        if let Some(c) = self.cards.get(&entry.id) {
            if Arc::ptr_eq(&c.entry, entry) || c.entry.usn_changed == entry.usn_changed {
                return c.clone();
            }
        }
        // Built outside the map's lock; the version is decided under it, against whatever is cached by then
        // (another request may have cached a newer or an in-between version meanwhile).
        let card = vcard::build(entry, &snap.phones);
        let data = |changed: u64, card: Card| {
            Arc::new(CardData {
                entry: entry.clone(),
                tag: content_tag(&card),
                card,
                changed,
                v3: OnceLock::new(),
                v4: OnceLock::new(),
                xml3: OnceLock::new(),
                xml4: OnceLock::new(),
            })
        };
        match self.cards.entry(entry.id.clone()) {
            dashmap::Entry::Occupied(mut cached) => {
                let newest = cached.get().clone();
                if newest.entry.usn_changed == entry.usn_changed {
                    return newest;
                }
                if newest.entry.usn_changed > entry.usn_changed {
                    // A request on an older snapshot: its card, not cached over the newer one.
                    return data(entry.usn_changed, card);
                }
                // The entry changed since the cached card, but nothing the card shows: it keeps its version.
                let changed = if newest.card == card {
                    newest.changed
                } else {
                    entry.usn_changed
                };
                let d = data(changed, card);
                cached.insert(d.clone());
                d
            }
            dashmap::Entry::Vacant(slot) => slot.insert(data(entry.usn_changed, card)).clone(),
        }
    }

    /// Whether [`Caches::book`] would answer from its cache (the view of this snapshot version exists).
    pub fn has_book(&self, book: &BookConfig, listing: &Listing, snap: &Snapshot) -> bool {
        let key = (book.group.clone(), listing.clone());
        let books = self.books.lock().unwrap_or_else(|p| p.into_inner());
        books.get(&key).is_some_and(|v| v.version == snap.version)
    }

    /// The members of `book` in `snap`, computed once per snapshot version.
    pub fn book(&self, book: &BookConfig, listing: &Listing, snap: &Snapshot) -> Arc<BookView> {
        let key = (book.group.clone(), listing.clone());
        {
            let books = self.books.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(v) = books.get(&key).filter(|v| v.version == snap.version) {
                return v.clone();
            }
        }
        let prev = self.books.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
        let excluded = self.excluded(&listing.exclude_groups, snap);
        let (mut members, mut changed) = members(book.group.as_deref(), listing.include_disabled, snap);
        if let Some(ex) = &excluded {
            members.retain(|e| !ex.ids.contains(&e.id));
            changed = changed.max(ex.changed);
        }
        let mut by_change = members.clone();
        by_change.sort_by(|a, b| (a.usn_changed, &a.id).cmp(&(b.usn_changed, &b.id)));
        let ids: HashSet<Arc<str>> = members.iter().map(|e| e.id.clone()).collect();
        let (moves, moves_from) = next_moves(prev.as_deref(), &ids, snap);
        let view = Arc::new(BookView {
            version: snap.version,
            changed: changed.min(snap.version),
            ids,
            members,
            by_change,
            moves,
            moves_from,
        });
        let mut books = self.books.lock().unwrap_or_else(|p| p.into_inner());
        let newer = books.get(&key).is_some_and(|v| v.version > snap.version);
        if !newer {
            books.insert(key, view.clone());
        }
        drop(books);
        self.prune(snap);
        view
    }

    /// The entries hidden by `groups` in `snap` (`None` when there are no exclude groups), worked out once per
    /// snapshot version for all books.
    fn excluded(&self, groups: &[String], snap: &Snapshot) -> Option<Arc<Excluded>> {
        if groups.is_empty() {
            return None;
        }
        let mut slot = self.excluded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ex) = slot
            .as_ref()
            .filter(|ex| ex.version == snap.version && ex.groups == groups)
        {
            return Some(ex.clone());
        }
        let reported: Vec<(String, u64)> = slot
            .as_ref()
            .filter(|ex| ex.groups == groups)
            .map(|ex| ex.missing.clone())
            .unwrap_or_default();
        let mut ids = HashSet::new();
        let mut changed = 0;
        let mut missing = Vec::new();
        for group in groups {
            let Some(root) = find_group(snap, group) else {
                let seen = reported.iter().find(|(g, _)| g == group).map(|(_, v)| *v);
                // Said when it goes missing (or at start and reload), not once per book or per snapshot.
                if seen.is_none() {
                    tracing::warn!(
                        group = group.as_str(),
                        "directory.exclude_groups: group not found in the directory; its members stay listed"
                    );
                }
                // Its members are listed from the version it was first seen missing in, and stay so: the books
                // move once, not with every snapshot; its return (re-creation, rename back) is newer still.
                let since = seen.unwrap_or(snap.version);
                changed = changed.max(since);
                missing.push((group.clone(), since));
                continue;
            };
            let (members, c) = transitive_members(root, snap);
            changed = changed.max(c);
            ids.extend(members.into_keys());
        }
        let ex = Arc::new(Excluded {
            version: snap.version,
            groups: groups.to_vec(),
            ids,
            changed,
            missing,
        });
        // A request still on an older snapshot does not replace the newer set.
        if slot.as_ref().is_none_or(|old| old.version <= snap.version) {
            *slot = Some(ex.clone());
        }
        Some(ex)
    }

    /// Drop cards of entries that no longer exist, once the cache has clearly outgrown the directory.
    fn prune(&self, snap: &Snapshot) {
        if self.cards.len() > snap.len() + 1024 {
            self.cards.retain(|id, _| snap.entry(id).is_some());
        }
    }

    /// Forget everything (after a configuration change).
    pub fn clear(&self) {
        self.cards.clear();
        self.books.lock().unwrap_or_else(|p| p.into_inner()).clear();
        *self.excluded.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

fn listed(e: &Entry, include_disabled: bool) -> bool {
    vcard::is_person(e) && (include_disabled || !vcard::is_disabled(e))
}

/// Resolve a group given as Graph object id, DN, or (unambiguous) display name / cn, e.g. `"Sales Team"`.
pub fn find_group<'a>(snap: &'a Snapshot, group: &str) -> Option<&'a Arc<Entry>> {
    let is_group = |e: &&Arc<Entry>| e.kind == EntryKind::Group;
    if let Some(e) = snap.entry(group).filter(is_group) {
        return Some(e);
    }
    if let Some(e) = normalize_dn(group).and_then(|dn| snap.by_dn(&dn)).filter(is_group) {
        return Some(e);
    }
    for attr in ["displayName", "cn"] {
        let ids = snap.find_eq(attr, group.as_bytes()).unwrap_or_default();
        let groups: Vec<&Arc<Entry>> = ids.iter().filter_map(|id| snap.entry(id)).filter(is_group).collect();
        match groups.as_slice() {
            [one] => return Some(one),
            [] => {}
            _ => {
                tracing::warn!(
                    group,
                    "several groups have this name; give the book's group as DN or object id"
                );
                return None;
            }
        }
    }
    None
}

/// A book's members (sorted by id) and its change version (see [`BookView::changed`]).
fn members(group: Option<&str>, include_disabled: bool, snap: &Snapshot) -> (Vec<Arc<Entry>>, u64) {
    let Some(group) = group else {
        let mut changed = snap.people_removed_at();
        let mut out = Vec::new();
        for e in snap.entries().filter(|e| vcard::is_person(e)) {
            changed = changed.max(e.usn_changed);
            if listed(e, include_disabled) {
                out.push(e.clone());
            }
        }
        return (out, changed);
    };
    let Some(root) = find_group(snap, group) else {
        tracing::warn!(
            group,
            "address book group not found in the directory; the book is empty"
        );
        return (Vec::new(), snap.version);
    };
    let (all, changed) = transitive_members(root, snap);
    let mut v: Vec<Arc<Entry>> = all.into_values().filter(|m| listed(m, include_disabled)).collect();
    v.sort_by(|a, b| a.id.cmp(&b.id));
    (v, changed)
}

/// Every non-group entry below `root` (over `member` DNs, nested groups followed once each: cycles are possible
/// in AD), and the newest version of the groups and of every entry they list.
fn transitive_members(root: &Arc<Entry>, snap: &Snapshot) -> (HashMap<Arc<str>, Arc<Entry>>, u64) {
    let mut changed = root.usn_changed;
    let mut seen_groups: HashSet<Arc<str>> = HashSet::new();
    let mut out: HashMap<Arc<str>, Arc<Entry>> = HashMap::new();
    let mut queue = vec![root.clone()];
    seen_groups.insert(root.id.clone());
    while let Some(g) = queue.pop() {
        for dn in g.strs("member") {
            let Some(m) = normalize_dn(dn).and_then(|n| snap.by_dn(&n)) else {
                continue;
            };
            changed = changed.max(m.usn_changed);
            if m.kind == EntryKind::Group {
                if seen_groups.insert(m.id.clone()) {
                    queue.push(m.clone());
                }
            } else {
                out.insert(m.id.clone(), m.clone());
            }
        }
    }
    (out, changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carddav::vcard::tests::{attr, person, phones};
    use crate::directory::Naming;

    pub(crate) fn group(id: &str, cn: &str, members: &[&Entry]) -> Entry {
        let dn = format!("CN={cn},OU=Groups,DC=contoso,DC=example");
        let member_dns: Vec<&[u8]> = members.iter().map(|m| m.dn.as_bytes()).collect();
        Entry {
            id: id.into(),
            kind: EntryKind::Group,
            dn_norm: normalize_dn(&dn).unwrap_or_default().into(),
            dn: dn.into(),
            guid: [9; 16],
            usn_changed: 1,
            usn_created: 1,
            attrs: vec![
                attr("objectClass", &[b"top", b"group"]),
                attr("cn", &[cn.as_bytes()]),
                attr("member", &member_dns),
            ]
            .into(),
            sort_keys: Default::default(),
        }
    }

    #[test]
    fn change_versions_follow_only_what_a_book_shows() {
        let a = person("a", 2, &[("cn", "Anna")]);
        let b = person("b", 3, &[("cn", "Bert")]);
        let c = person("c", 4, &[("cn", "Cleo")]);
        let outsider = person("x", 5, &[("cn", "Xaver")]);
        let inner = group("g2", "Inner", &[&c]);
        let outer = group("g1", "Outer", &[&a, &b, &inner]);
        let v5 = Snapshot::from_entries(
            Naming::new("DC=contoso,DC=example").unwrap(),
            phones(),
            5,
            vec![a.clone(), b.clone(), c.clone(), outsider, inner.clone(), outer.clone()],
        );
        let book = |group: Option<&str>| BookConfig {
            name: group.unwrap_or("all").into(),
            display_name: "B".into(),
            group: group.map(str::to_string),
        };
        let changed = |snap: &Snapshot, group: Option<&str>| {
            Caches::default().book(&book(group), &Listing::default(), snap).changed
        };
        assert_eq!(changed(&v5, None), 5);
        assert_eq!(changed(&v5, Some("g1")), 4, "members and groups, not the outsider");

        // The outsider changes: only the all-users book moves.
        let mut v6 = v5.next();
        v6.upsert(Arc::new(person("x", 6, &[("cn", "Xaver Neu")])));
        assert_eq!((changed(&v6, None), changed(&v6, Some("g1"))), (6, 4));

        // Bert is disabled: gone from both books, both move (he is still listed in the group).
        let mut v7 = v6.next();
        v7.upsert(Arc::new(person(
            "b",
            7,
            &[("cn", "Bert"), ("userAccountControl", "514")],
        )));
        assert_eq!((changed(&v7, None), changed(&v7, Some("g1"))), (7, 7));

        // The nested group leaves the outer one: Cleo leaves the book without her entry changing.
        let mut v8 = v7.next();
        let mut outer8 = group("g1", "Outer", &[&a, &b]);
        outer8.usn_changed = 8;
        v8.upsert(Arc::new(outer8));
        let view = Caches::default().book(&book(Some("g1")), &Listing::default(), &v8);
        assert_eq!((view.changed, view.members.len()), (8, 1));

        // Anna is deleted (the directory also drops her from the group): the all-users book remembers the
        // removal even though no remaining entry carries its version.
        let mut v9 = v8.next();
        v9.remove("a");
        assert_eq!(changed(&v9, None), 9);
        let mut v10 = v9.next();
        v10.trim_history();
        assert_eq!(changed(&v10, None), 9, "no change, no new ctag");

        // A book whose group is missing follows the snapshot version, and its group's return is newer still.
        assert_eq!(changed(&v10, Some("nope")), 10);
    }

    /// A member who joins a book (here through a nested group) in the same round as a change of their entry that
    /// no card shows is recorded as a move: sync-collection, which leaves out unchanged cards, still sends it.
    #[test]
    fn a_join_is_recorded_even_when_the_entry_changed_too() {
        let a = person("a", 2, &[("cn", "Anna")]);
        let c = person("c", 3, &[("cn", "Cleo")]);
        let inner = group("g2", "Inner", &[&c]);
        let outer = group("g1", "Outer", &[&a]);
        let v5 = Snapshot::from_entries(
            Naming::new("DC=contoso,DC=example").unwrap(),
            phones(),
            5,
            vec![a.clone(), c.clone(), inner.clone(), outer],
        );
        let book = BookConfig {
            name: "o".into(),
            display_name: "O".into(),
            group: Some("g1".into()),
        };
        let caches = Caches::default();
        assert_eq!(caches.book(&book, &Listing::default(), &v5).members.len(), 1);
        let card_before = caches.card(v5.entry("c").unwrap(), &v5);
        let mut v6 = v5.next();
        let mut outer6 = group("g1", "Outer", &[&a, &inner]);
        outer6.usn_changed = 6;
        v6.upsert(Arc::new(outer6));
        v6.upsert(Arc::new(person(
            "c",
            6,
            &[("cn", "Cleo"), ("manager", "CN=New Boss,DC=x")],
        )));
        let view = caches.book(&book, &Listing::default(), &v6);
        let moved: Vec<&str> = view.moved_after(5).unwrap().map(|id| id.as_ref()).collect();
        assert_eq!(moved, ["c"]);
        let card_after = caches.card(v6.entry("c").unwrap(), &v6);
        assert_eq!(card_after.etag(), card_before.etag(), "the card itself did not change");
    }

    #[test]
    fn books_and_cards_are_cached_per_version() {
        let a = person("a", 2, &[("cn", "Anna")]);
        let b = person("b", 3, &[("cn", "Bert"), ("userAccountControl", "514")]);
        let c = person("c", 4, &[("cn", "Cleo")]);
        let inner = group("g2", "Inner", &[&c]);
        let mut outer = group("g1", "Outer", &[&a, &b, &inner]);
        // A cycle must not loop.
        outer.attrs.push(attr("member", &[outer.dn.as_bytes()]));
        let snap = Snapshot::from_entries(
            Naming::new("DC=contoso,DC=example").unwrap(),
            phones(),
            5,
            vec![a, b, c, inner, outer.clone()],
        );
        let caches = Caches::default();
        let all = BookConfig {
            name: "all".into(),
            display_name: "All".into(),
            group: None,
        };
        let view = caches.book(&all, &Listing::default(), &snap);
        let ids: Vec<&str> = view.members.iter().map(|e| e.id.as_ref()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert!(Arc::ptr_eq(&view, &caches.book(&all, &Listing::default(), &snap)));
        let after: Vec<&str> = view.changed_after(2, None).iter().map(|e| e.id.as_ref()).collect();
        assert_eq!(after, ["c"]);
        assert_eq!(view.changed_after(2, Some("a")).len(), 1);
        assert_eq!(view.changed_after(0, None).len(), 2);
        assert!(view.changed_after(4, Some("c")).is_empty());
        let with_disabled = caches.book(
            &all,
            &Listing {
                include_disabled: true,
                ..Listing::default()
            },
            &snap,
        );
        assert_eq!(with_disabled.members.len(), 3);
        let by_dn = BookConfig {
            name: "o".into(),
            display_name: "O".into(),
            group: Some(outer.dn.to_string()),
        };
        let ids: Vec<String> = caches
            .book(&by_dn, &Listing::default(), &snap)
            .members
            .iter()
            .map(|e| e.id.to_string())
            .collect();
        assert_eq!(ids, ["a", "c"]);
        let by_id = BookConfig {
            name: "i".into(),
            display_name: "I".into(),
            group: Some("g2".into()),
        };
        assert_eq!(caches.book(&by_id, &Listing::default(), &snap).members.len(), 1);
        let by_name = BookConfig {
            name: "n".into(),
            display_name: "N".into(),
            group: Some("inner".into()),
        };
        assert_eq!(caches.book(&by_name, &Listing::default(), &snap).members.len(), 1);
        let missing = BookConfig {
            name: "m".into(),
            display_name: "M".into(),
            group: Some("nope".into()),
        };
        assert!(caches.book(&missing, &Listing::default(), &snap).members.is_empty());

        let entry = snap.entry("a").unwrap();
        let c1 = caches.card(entry, &snap);
        assert!(Arc::ptr_eq(&c1, &caches.card(entry, &snap)));
        assert!(std::ptr::eq(c1.bytes(VCardVersion::V3), c1.bytes(VCardVersion::V3)));
        let changed = Arc::new(person("a", 6, &[("cn", "Anna Neu")]));
        let c2 = caches.card(&changed, &snap);
        assert!(!Arc::ptr_eq(&c1, &c2));
        assert!(std::str::from_utf8(c2.bytes(VCardVersion::V4))
            .unwrap()
            .contains("FN:Anna Neu"));
        assert_ne!(c2.etag(), c1.etag());
        assert_eq!(c2.changed, 6);
        // A change the card does not show (a report joined) keeps the card's version and ETag; the next real
        // change takes the entry's.
        let reports = Arc::new(person("a", 7, &[("cn", "Anna Neu"), ("directReports", "CN=Bert,DC=x")]));
        let c3 = caches.card(&reports, &snap);
        assert_eq!((c3.etag(), c3.changed), (c2.etag(), 6));
        let renamed = Arc::new(person("a", 8, &[("cn", "Anna Alt"), ("directReports", "CN=Bert,DC=x")]));
        let c4 = caches.card(&renamed, &snap);
        assert_eq!(c4.changed, 8);
        assert_ne!(c4.etag(), c2.etag());
        // The ETag is the content's, whatever the version or process: a fresh cache (another replica) that
        // sees the same person at another version gives the same tag.
        let elsewhere = Arc::new(person("a", 42, &[("cn", "Anna Alt")]));
        assert_eq!(Caches::default().card(&elsewhere, &snap).etag(), c4.etag());
        assert_eq!(c4.etag().len(), 18, "{}", c4.etag());
    }

    /// `directory.exclude_groups`: members of the group, also through a nested group, are in no book; a change
    /// of the exclude group moves every book and is recorded as a move for sync-collection.
    #[test]
    fn exclude_groups_hide_members_from_every_book() {
        let a = person("a", 2, &[("cn", "Anna")]);
        let shared = person("s", 3, &[("cn", "Shared Mailbox")]);
        let svc = person("v", 4, &[("cn", "Service Account")]);
        let nested = group("g3", "Services", &[&svc]);
        let hidden = group("g2", "Hidden", &[&shared, &nested]);
        let sales = group("g1", "Sales", &[&a, &shared]);
        let v5 = Snapshot::from_entries(
            Naming::new("DC=contoso,DC=example").unwrap(),
            phones(),
            5,
            vec![a.clone(), shared.clone(), svc.clone(), nested, hidden, sales],
        );
        let book = |group: Option<&str>| BookConfig {
            name: group.unwrap_or("all").into(),
            display_name: "B".into(),
            group: group.map(str::to_string),
        };
        let listing = Listing {
            include_disabled: false,
            exclude_groups: vec!["Hidden".into()],
        };
        let caches = Caches::default();
        let ids = |v: &BookView| v.members.iter().map(|e| e.id.to_string()).collect::<Vec<_>>();
        assert_eq!(ids(&caches.book(&book(None), &listing, &v5)), ["a"]);
        assert_eq!(ids(&caches.book(&book(Some("g1")), &listing, &v5)), ["a"]);
        assert_eq!(
            ids(&caches.book(&book(None), &Listing::default(), &v5)),
            ["a", "s", "v"],
            "without the rule"
        );
        // An exclude group that does not exist hides nobody.
        let typo = Listing {
            exclude_groups: vec!["Hiden".into()],
            ..Listing::default()
        };
        let typo_caches = Caches::default();
        let at5 = typo_caches.book(&book(None), &typo, &v5);
        assert_eq!(ids(&at5).len(), 3);
        // ... and moves the books once, when it is first missed, not with every later snapshot.
        let mut v6_other = v5.next();
        let mut sales6 = group("g1", "Sales", &[&a]);
        sales6.usn_changed = 6;
        v6_other.upsert(Arc::new(sales6));
        assert_eq!(at5.changed, 5);
        assert_eq!(typo_caches.book(&book(None), &typo, &v6_other).changed, 5);

        // The shared mailbox leaves the exclude group: back in both books, as a move, at the group's version.
        let mut v6 = v5.next();
        let nested6 = group("g3", "Services", &[&svc]);
        let mut hidden6 = group("g2", "Hidden", &[&nested6]);
        hidden6.usn_changed = 6;
        v6.upsert(Arc::new(hidden6));
        for b in [book(None), book(Some("g1"))] {
            let view = caches.book(&b, &listing, &v6);
            assert_eq!(ids(&view), ["a", "s"], "{}", b.name);
            assert_eq!(view.changed, 6, "{}", b.name);
            let moved: Vec<&str> = view.moved_after(5).unwrap().map(|id| id.as_ref()).collect();
            assert_eq!(moved, ["s"], "{}", b.name);
        }
        // Another book of everybody (the directory) is the same view, not a second copy of the members.
        let directory = BookConfig {
            name: "directory".into(),
            display_name: "D".into(),
            group: None,
        };
        assert!(Arc::ptr_eq(
            &caches.book(&directory, &listing, &v6),
            &caches.book(&book(None), &listing, &v6)
        ));
    }
}
