//! Immutable, versioned views of the directory, and the indexes that let the front ends answer without scans.
//!
//! A [`Snapshot`] is built from the previous one by applying only what changed: every map inside is a
//! persistent (`imbl`) structure, so cloning is O(1) and a sync round touching *k* entries costs O(k log n),
//! not O(n). Publishing is an atomic pointer swap ([`Published`]); readers hold an `Arc<Snapshot>` for as long
//! as a request needs it and never wait for the sync.

use crate::directory::dn::parent_norm;
use crate::directory::entry::{Entry, EntryKind};
use crate::directory::phone::{digits, is_phone_attr, PhoneNormalizer};
use arc_swap::ArcSwap;
use bytes::Bytes;
use imbl::{HashMap as IHashMap, OrdMap};
use std::sync::Arc;
use std::time::SystemTime;

/// Attributes with an equality index. Values of string attributes are indexed lower-cased, binary ones as is.
pub const EQ_INDEXED: &[&str] = &[
    "cn",
    "sn",
    "givenName",
    "displayName",
    "name",
    "mail",
    "sAMAccountName",
    "userPrincipalName",
    "proxyAddresses",
    "mailNickname",
    "employeeID",
    "objectGUID",
    "objectSid",
    "member",
    "memberOf",
    "manager",
    "distinguishedName",
    "msRTCSIP-PrimaryUserAddress",
];

/// Attributes with a substring (trigram) index: what phone books search by name.
pub const TEXT_INDEXED: &[&str] = &["cn", "displayName", "sn", "givenName", "mail", "sAMAccountName"];

/// Attributes whose values are binary, compared byte for byte.
pub const BINARY_ATTRS: &[&str] = &["objectGUID", "objectSid", "thumbnailPhoto", "jpegPhoto"];

pub fn is_binary_attr(attr: &str) -> bool {
    BINARY_ATTRS.iter().any(|a| a.eq_ignore_ascii_case(attr))
}

/// How many versions of deletions are remembered for [`Snapshot::changes_since`]; older sync tokens are refused.
const TOMBSTONE_VERSIONS: u64 = 10_000;

/// The naming context: derived once from `base_dn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    /// As configured, e.g. `DC=contoso,DC=com`.
    pub base_dn: Arc<str>,
    pub base_dn_norm: Arc<str>,
    /// DNS domain from the `DC=` components (`contoso.com`).
    pub dns_domain: String,
    /// Pre-Windows-2000 domain name (`CONTOSO`), accepted in `DOMAIN\user` binds.
    pub netbios: String,
}

impl Naming {
    /// Derive from a base DN. Fails when the DN does not parse.
    pub fn new(base_dn: &str) -> Option<Naming> {
        let rdns = crate::directory::dn::parse_dn(base_dn)?;
        if rdns.is_empty() {
            return None;
        }
        let dcs: Vec<&str> = rdns
            .iter()
            .flat_map(|r| r.iter())
            .filter(|(t, _)| t.eq_ignore_ascii_case("dc"))
            .map(|(_, v)| v.as_str())
            .collect();
        let first = rdns[0].first().map(|(_, v)| v.clone()).unwrap_or_default();
        Some(Naming {
            base_dn: base_dn.trim().into(),
            base_dn_norm: crate::directory::dn::format_dn_norm(&rdns).into(),
            dns_domain: if dcs.is_empty() {
                first.to_lowercase()
            } else {
                dcs.join(".").to_lowercase()
            },
            netbios: dcs.first().copied().unwrap_or(&first).to_uppercase(),
        })
    }
}

/// Entry counts by kind, for reports and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KindCounts {
    pub users: usize,
    pub groups: usize,
    pub computers: usize,
    pub contacts: usize,
    pub other: usize,
}

/// A phone-number query; every form is matched against the normalised digits of all phone attributes.
#[derive(Debug, Clone, Copy)]
pub enum PhoneQuery<'a> {
    /// The whole number in any spelling (`+49 30 1234567`, `004930…`, `030…`).
    Exact(&'a str),
    /// The whole number as an index key already (E.164 digits without `+`, from [`PhoneNormalizer::key`]).
    Key(&'a str),
    /// Leading digits (`+4930*`, `030*`).
    Prefix(&'a str),
    /// Trailing digits (`*1234567`): what PBXs send when they only trust the last N digits.
    Suffix(&'a str),
    /// Digits anywhere (`*1234*`).
    Contains(&'a str),
}

/// What changed between an older version and this snapshot.
#[derive(Debug, Default)]
pub struct Changes<'a> {
    /// Entries created or modified after the version, in order of change.
    pub changed: Vec<&'a Arc<Entry>>,
    /// Entries removed after the version (and not re-created since).
    pub removed: Vec<(Arc<str>, EntryKind)>,
}

type Ids = crate::directory::postings::Postings;

/// Entry ids in ascending order, streamed from an index.
pub type IdIter<'a> = Box<dyn Iterator<Item = &'a Arc<str>> + 'a>;

#[derive(Clone)]
pub struct Snapshot {
    /// Grows by one with every published change; AD's `highestCommittedUSN`, CardDAV's ctag and sync token.
    pub version: u64,
    pub naming: Arc<Naming>,
    /// When the data was last confirmed by a successful sync round (None before the first one).
    pub synced_at: Option<SystemTime>,
    /// Turns query numbers into the same digit keys the phone index uses.
    pub phones: Arc<PhoneNormalizer>,
    /// All entries in id order (scans, paging).
    entries: OrdMap<Arc<str>, Arc<Entry>>,
    /// The same entries for point lookups: a hash trie touches a few nodes and compares one key, where the
    /// B-tree compares (and pulls into cache) a dozen `Arc<str>` keys — the difference dominated 100k-entry
    /// phone lookups.
    by_id: IHashMap<Arc<str>, Arc<Entry>>,
    by_dn: IHashMap<Arc<str>, Arc<str>>,
    children: IHashMap<Arc<str>, Ids>,
    eq: IHashMap<Arc<str>, IHashMap<Bytes, Ids>>,
    /// phone digit key → ids, and the reversed key → ids for suffix queries.
    phone_fwd: OrdMap<String, Ids>,
    phone_rev: OrdMap<String, Ids>,
    /// The forward keys again, hashed: a caller-ID lookup is one exact key, and the B-tree's string compares
    /// (each a cache miss at 100k numbers) cost more than the rest of the search.
    phone_exact: IHashMap<String, Ids>,
    trigrams: IHashMap<[char; 3], Ids>,
    by_usn: OrdMap<(u64, Arc<str>), ()>,
    tombstones: OrdMap<(u64, Arc<str>), EntryKind>,
    /// Oldest version `changes_since` can answer for.
    history_from: u64,
    /// The last version that removed a user or contact. Unlike the tombstones it is never trimmed, so a book's
    /// change version (CardDAV getctag) that depends on it cannot fall back when old history is dropped.
    people_removed_at: u64,
    counts: KindCounts,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.version)
            .field("base_dn", &self.naming.base_dn)
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl Snapshot {
    /// An empty directory at version 0.
    pub fn empty(naming: Naming, phones: PhoneNormalizer) -> Snapshot {
        Snapshot {
            version: 0,
            naming: Arc::new(naming),
            synced_at: None,
            phones: Arc::new(phones),
            entries: OrdMap::new(),
            by_id: IHashMap::new(),
            by_dn: IHashMap::new(),
            children: IHashMap::new(),
            eq: IHashMap::new(),
            phone_fwd: OrdMap::new(),
            phone_rev: OrdMap::new(),
            phone_exact: IHashMap::new(),
            trigrams: IHashMap::new(),
            by_usn: OrdMap::new(),
            tombstones: OrdMap::new(),
            history_from: 0,
            people_removed_at: 0,
            counts: KindCounts::default(),
        }
    }

    /// A snapshot holding exactly `entries` at `version` (every entry's `usn_changed` is kept as given). The
    /// sync path builds snapshots incrementally instead; this is for tools, tests and benchmarks.
    pub fn from_entries(naming: Naming, phones: PhoneNormalizer, version: u64, entries: Vec<Entry>) -> Snapshot {
        let mut s = Snapshot::empty(naming, phones);
        s.version = version;
        for e in entries {
            s.upsert(Arc::new(e));
        }
        s
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn counts(&self) -> KindCounts {
        self.counts
    }

    /// The entry with this id (Graph object id, or the normalised DN for the domain and containers).
    pub fn entry(&self, id: &str) -> Option<&Arc<Entry>> {
        self.by_id.get(id)
    }

    /// The entry at a DN in normalised form ([`crate::directory::entry::normalize_dn`]).
    pub fn by_dn(&self, dn_norm: &str) -> Option<&Arc<Entry>> {
        self.by_dn.get(dn_norm).and_then(|id| self.by_id.get(id))
    }

    /// All entries in a stable order (by id), so paged searches can resume after an id.
    pub fn entries(&self) -> impl Iterator<Item = &Arc<Entry>> + '_ {
        self.entries.values()
    }

    /// Entries with an id strictly greater than `after`, in the same order as [`Snapshot::entries`].
    pub fn entries_after<'a>(&'a self, after: &str) -> impl Iterator<Item = &'a Arc<Entry>> + 'a {
        let key: Arc<str> = after.into();
        self.entries
            .range((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded))
            .map(|(_, e)| e)
    }

    /// Direct children of a normalised DN (one-level search).
    pub fn children<'a>(&'a self, parent_dn_norm: &str) -> impl Iterator<Item = &'a Arc<Entry>> + 'a {
        self.children
            .get(parent_dn_norm)
            .into_iter()
            .flat_map(|ids| ids.iter())
            .filter_map(|id| self.by_id.get(id))
    }

    /// Whether [`Snapshot::find_eq`] can answer for this attribute.
    pub fn is_eq_indexed(attr: &str) -> bool {
        EQ_INDEXED.iter().any(|a| a.eq_ignore_ascii_case(attr))
    }

    /// Ids of entries with `attr` equal to `value` (case-insensitive for strings, exact for binary). `None` when
    /// the attribute is not indexed and the caller has to evaluate some other way.
    pub fn find_eq(&self, attr: &str, value: &[u8]) -> Option<Vec<Arc<str>>> {
        let canon = EQ_INDEXED.iter().find(|a| a.eq_ignore_ascii_case(attr))?;
        let key = index_key(canon, value);
        Some(
            self.eq
                .get(&Arc::<str>::from(canon.to_ascii_lowercase()))
                .and_then(|m| m.get(&key))
                .map(|ids| ids.iter().cloned().collect())
                .unwrap_or_default(),
        )
    }

    /// Like [`Snapshot::find_eq`], without collecting: the number of ids and the ids in ascending order, so a
    /// size-limited search over a big group stops after the first page instead of sorting all members.
    pub fn find_eq_iter(&self, attr: &str, value: &[u8]) -> Option<(usize, IdIter<'_>)> {
        let canon = EQ_INDEXED.iter().find(|a| a.eq_ignore_ascii_case(attr))?;
        let key = index_key(canon, value);
        Some(
            match self
                .eq
                .get(&Arc::<str>::from(canon.to_ascii_lowercase()))
                .and_then(|m| m.get(&key))
            {
                Some(ids) => (ids.len(), ids.iter()),
                None => (0, Box::new(std::iter::empty())),
            },
        )
    }

    /// Candidate ids for a phone query over all phone attributes. Candidates must still be checked against the
    /// attribute the filter names. An empty digit string matches nothing.
    pub fn find_phone(&self, q: PhoneQuery<'_>) -> Vec<Arc<str>> {
        // The caller-ID case: one posting list, already sorted and unique.
        if let PhoneQuery::Key(k) = q {
            return self
                .phone_exact
                .get(k)
                .map(|ids| ids.iter().cloned().collect())
                .unwrap_or_default();
        }
        let mut out: std::collections::BTreeSet<Arc<str>> = std::collections::BTreeSet::new();
        match q {
            PhoneQuery::Exact(s) => {
                let k = self.phones.key(s);
                if let Some(ids) = self.phone_exact.get(&k) {
                    out.extend(ids.iter().cloned());
                }
            }
            PhoneQuery::Key(_) => {}
            PhoneQuery::Prefix(s) => {
                let k = self.phones.prefix_key(s);
                if !k.is_empty() {
                    for (key, ids) in self.phone_fwd.range(k.clone()..) {
                        if !key.starts_with(&k) {
                            break;
                        }
                        out.extend(ids.iter().cloned());
                    }
                }
            }
            PhoneQuery::Suffix(s) => {
                let k: String = digits(s).chars().rev().collect();
                if !k.is_empty() {
                    for (key, ids) in self.phone_rev.range(k.clone()..) {
                        if !key.starts_with(&k) {
                            break;
                        }
                        out.extend(ids.iter().cloned());
                    }
                }
            }
            PhoneQuery::Contains(s) => {
                let k = digits(s);
                if !k.is_empty() {
                    for (key, ids) in self.phone_fwd.iter() {
                        if key.contains(&k) {
                            out.extend(ids.iter().cloned());
                        }
                    }
                }
            }
        }
        out.into_iter().collect()
    }

    /// Candidate ids whose name attributes ([`TEXT_INDEXED`]) may contain `needle` (case-insensitive). `None`
    /// when the needle is shorter than three characters (too unselective for the index). Candidates must be
    /// verified.
    pub fn find_text(&self, needle: &str) -> Option<Vec<Arc<str>>> {
        self.find_text_iter(needle).map(|it| it.cloned().collect())
    }

    /// [`Snapshot::find_text`] as a lazy walk in id order: a search with a size limit stops after enough
    /// verified matches instead of intersecting the whole posting lists first.
    pub fn find_text_iter(&self, needle: &str) -> Option<IdIter<'_>> {
        let grams = trigrams_of(&needle.to_lowercase());
        if grams.is_empty() {
            return None;
        }
        let mut sets: Vec<&Ids> = Vec::with_capacity(grams.len());
        for g in &grams {
            match self.trigrams.get(g) {
                Some(ids) => sets.push(ids),
                None => return Some(Box::new(std::iter::empty())),
            }
        }
        sets.sort_by_key(|s| s.len());
        let (first, rest) = sets.split_first()?;
        let rest: Vec<&Ids> = rest.to_vec();
        Some(Box::new(
            first.iter().filter(move |id| rest.iter().all(|s| s.contains(id))),
        ))
    }

    /// The last version in which a user or contact was removed (0 if none was in this process).
    pub fn people_removed_at(&self) -> u64 {
        self.people_removed_at
    }

    /// Changes after `version`. `None` when `version` is newer than this snapshot or older than the retained
    /// history (a CardDAV client then has to start over).
    pub fn changes_since(&self, version: u64) -> Option<Changes<'_>> {
        if version > self.version || version < self.history_from {
            return None;
        }
        let from = (version + 1, Arc::<str>::from(""));
        let changed = self
            .by_usn
            .range(from.clone()..)
            .filter_map(|((_, id), _)| self.by_id.get(id))
            .collect();
        let removed = self
            .tombstones
            .range(from..)
            .filter(|((_, id), _)| !self.by_id.contains_key(id))
            .map(|((_, id), kind)| (id.clone(), *kind))
            .collect();
        Some(Changes { changed, removed })
    }

    // ---- building (crate-internal: only the directory publishes snapshots) ----

    /// Start the next version from this one.
    /// An empty snapshot that continues after `version` (a restart): the next one is `version + 1`, and
    /// `changes_since` answers only from `version` on, since removals before it are not remembered.
    pub(crate) fn resumed(naming: Naming, phones: PhoneNormalizer, version: u64) -> Snapshot {
        let mut s = Snapshot::empty(naming, phones);
        s.version = version;
        s.history_from = version;
        s
    }

    pub(crate) fn next(&self) -> Snapshot {
        let mut s = self.clone();
        s.version += 1;
        s
    }

    /// Whether anything was inserted, changed or removed at this snapshot's own version.
    pub(crate) fn changed_in_this_version(&self) -> bool {
        let from = (self.version, Arc::<str>::from(""));
        self.by_usn.range(from.clone()..).next().is_some() || self.tombstones.range(from..).next().is_some()
    }

    pub(crate) fn set_synced_at(&mut self, at: SystemTime) {
        self.synced_at = Some(at);
    }

    /// Forget deletions older than the retained window.
    pub(crate) fn trim_history(&mut self) {
        let keep_from = self.version.saturating_sub(TOMBSTONE_VERSIONS);
        if keep_from > self.history_from {
            let (_, kept) = self.tombstones.split(&(keep_from, Arc::<str>::from("")));
            self.tombstones = kept;
            self.history_from = keep_from;
        }
    }

    /// Insert or replace an entry (by id), keeping every index in step. The entry's `usn_changed` must be this
    /// snapshot's version (the caller sets it).
    pub(crate) fn upsert(&mut self, entry: Arc<Entry>) {
        let old = self.by_id.get(&entry.id).cloned();
        if let Some(old) = &old {
            if old.dn == entry.dn && old.attrs == entry.attrs && old.kind == entry.kind {
                return; // unchanged: keep the old entry, its usn and everything cached for it
            }
            self.unindex(old);
        }
        self.index(&entry);
        self.by_id.insert(entry.id.clone(), entry.clone());
        self.entries.insert(entry.id.clone(), entry);
    }

    /// Remove an entry by id; remembered as a tombstone for `changes_since`.
    pub(crate) fn remove(&mut self, id: &str) -> Option<Arc<Entry>> {
        let old = self.entries.remove(id)?;
        self.by_id.remove(id);
        self.unindex(&old);
        self.tombstones.insert((self.version, old.id.clone()), old.kind);
        if matches!(old.kind, EntryKind::User | EntryKind::Contact) {
            self.people_removed_at = self.version;
        }
        Some(old)
    }

    fn index(&mut self, e: &Arc<Entry>) {
        self.by_dn.insert(e.dn_norm.clone(), e.id.clone());
        if let Some(p) = parent_norm(&e.dn_norm) {
            self.children.entry(p.into()).or_default().insert(e.id.clone());
        }
        self.by_usn.insert((e.usn_changed, e.id.clone()), ());
        self.count(e.kind, 1);
        for (attr, key) in eq_keys(e) {
            self.eq
                .entry(attr)
                .or_default()
                .entry(key)
                .or_default()
                .insert(e.id.clone());
        }
        for k in self.phone_keys(e) {
            let rev: String = k.chars().rev().collect();
            self.phone_exact.entry(k.clone()).or_default().insert(e.id.clone());
            self.phone_fwd.entry(k).or_default().insert(e.id.clone());
            self.phone_rev.entry(rev).or_default().insert(e.id.clone());
        }
        for g in text_trigrams(e) {
            self.trigrams.entry(g).or_default().insert(e.id.clone());
        }
    }

    fn unindex(&mut self, e: &Arc<Entry>) {
        if self.by_dn.get(&e.dn_norm) == Some(&e.id) {
            self.by_dn.remove(&e.dn_norm);
        }
        if let Some(p) = parent_norm(&e.dn_norm) {
            remove_id(&mut self.children, p, &e.id);
        }
        self.by_usn.remove(&(e.usn_changed, e.id.clone()));
        self.count(e.kind, -1);
        for (attr, key) in eq_keys(e) {
            if let Some(m) = self.eq.get_mut(&attr) {
                if let Some(ids) = m.get_mut(&key) {
                    ids.remove(&e.id);
                    if ids.is_empty() {
                        m.remove(&key);
                    }
                }
            }
        }
        for k in self.phone_keys(e) {
            let rev: String = k.chars().rev().collect();
            remove_id(&mut self.phone_exact, &k, &e.id);
            remove_id_ord(&mut self.phone_fwd, &k, &e.id);
            remove_id_ord(&mut self.phone_rev, &rev, &e.id);
        }
        for g in text_trigrams(e) {
            if let Some(ids) = self.trigrams.get_mut(&g) {
                ids.remove(&e.id);
                if ids.is_empty() {
                    self.trigrams.remove(&g);
                }
            }
        }
    }

    fn phone_keys(&self, e: &Entry) -> Vec<String> {
        let mut keys: Vec<String> = e
            .attrs
            .iter()
            .filter(|a| is_phone_attr(&a.name))
            .flat_map(|a| a.values.iter())
            .filter_map(|v| std::str::from_utf8(v).ok())
            .map(|v| self.phones.key(v))
            .filter(|k| !k.is_empty())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    fn count(&mut self, kind: EntryKind, d: isize) {
        let c = match kind {
            EntryKind::User => &mut self.counts.users,
            EntryKind::Group => &mut self.counts.groups,
            EntryKind::Computer => &mut self.counts.computers,
            EntryKind::Contact => &mut self.counts.contacts,
            EntryKind::Domain | EntryKind::Container => &mut self.counts.other,
        };
        *c = c.saturating_add_signed(d);
    }
}

fn remove_id<K, Q>(map: &mut IHashMap<K, Ids>, key: &Q, id: &Arc<str>)
where
    K: std::hash::Hash + Eq + Clone + std::borrow::Borrow<Q>,
    Q: std::hash::Hash + Eq + ?Sized,
{
    if let Some(ids) = map.get_mut(key) {
        ids.remove(id);
        if ids.is_empty() {
            map.remove(key);
        }
    }
}

fn remove_id_ord(map: &mut OrdMap<String, Ids>, key: &String, id: &Arc<str>) {
    if let Some(ids) = map.get_mut(key) {
        ids.remove(id);
        if ids.is_empty() {
            map.remove(key);
        }
    }
}

/// The key under which a value is indexed for equality.
pub fn index_key(attr: &str, value: &[u8]) -> Bytes {
    if is_binary_attr(attr) {
        return Bytes::copy_from_slice(value);
    }
    match std::str::from_utf8(value) {
        Ok(s) => Bytes::from(s.to_lowercase()),
        Err(_) => Bytes::copy_from_slice(value),
    }
}

fn eq_keys(e: &Entry) -> Vec<(Arc<str>, Bytes)> {
    let mut out = Vec::new();
    for a in &e.attrs {
        if let Some(canon) = EQ_INDEXED.iter().find(|c| c.eq_ignore_ascii_case(&a.name)) {
            let attr: Arc<str> = canon.to_ascii_lowercase().into();
            for v in &a.values {
                out.push((attr.clone(), index_key(canon, v)));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn trigrams_of(s: &str) -> Vec<[char; 3]> {
    let chars: Vec<char> = s.chars().collect();
    let mut out: Vec<[char; 3]> = chars.windows(3).map(|w| [w[0], w[1], w[2]]).collect();
    out.sort();
    out.dedup();
    out
}

fn text_trigrams(e: &Entry) -> Vec<[char; 3]> {
    let mut out = Vec::new();
    for a in &e.attrs {
        if TEXT_INDEXED.iter().any(|c| c.eq_ignore_ascii_case(&a.name)) {
            for v in a.values.iter().filter_map(|v| std::str::from_utf8(v).ok()) {
                out.extend(trigrams_of(&v.to_lowercase()));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The currently published snapshot. Cheap to clone; `load` never blocks, publishing is an atomic swap.
#[derive(Clone)]
pub struct Published {
    current: Arc<ArcSwap<Snapshot>>,
    notify: tokio::sync::watch::Sender<u64>,
}

impl Published {
    pub fn new(initial: Snapshot) -> Published {
        let (notify, _) = tokio::sync::watch::channel(initial.version);
        Published {
            current: Arc::new(ArcSwap::from_pointee(initial)),
            notify,
        }
    }

    /// The snapshot to answer the current request from.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Wakes whenever a new version is published (for caches that derive data from snapshots).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.notify.subscribe()
    }

    /// Make `next` the current snapshot.
    pub fn publish(&self, next: Snapshot) {
        let v = next.version;
        self.current.store(Arc::new(next));
        self.notify.send_replace(v);
    }
}
