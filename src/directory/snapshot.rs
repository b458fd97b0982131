//! Immutable, versioned views of the directory, and the indexes that let the front ends answer without scans.
//!
//! A [`Snapshot`] is built from the previous one by applying only what changed: every map inside is a
//! persistent (`imbl`) structure, so cloning is O(1) and a sync round touching *k* entries costs O(k log n),
//! not O(n). Publishing is an atomic pointer swap ([`Published`]); readers hold an `Arc<Snapshot>` for as long
//! as a request needs it and never wait for the sync.
//!
//! Inside, every entry has a dense integer id ([`EntryId`]), and every index maps a value to a bitmap of those
//! ids ([`Bits`]): equality, presence, phone keys, name trigrams, name prefixes, the `userAccountControl`
//! bits, the children of each DN. Graph object ids (GUID strings) are mapped to dense ids only where a request
//! names one ([`Snapshot::entry`]). Filters reach the indexes through one interface, [`crate::directory::query`].

use crate::directory::bits::{Bits, EntryId};
use crate::directory::collation::Collation;
use crate::directory::dn::parent_norm;
use crate::directory::entry::{Entry, EntryKind, SortKeys};
use crate::directory::names::Clash;
use crate::directory::packed::PackedMap;
use crate::directory::phone::{is_phone_attr, DigitKey, PhoneNormalizer};
use arc_swap::ArcSwap;
use imbl::{HashMap as IHashMap, OrdMap, Vector};
use roaring::RoaringBitmap;
use rustc_hash::FxHashMap;
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
    "objectClass",
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

impl KindCounts {
    /// Objects from the tenant (not the base DN and containers every snapshot has).
    pub fn tenant_objects(&self) -> usize {
        self.users + self.groups + self.computers + self.contacts
    }
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

/// Index of a [`TEXT_INDEXED`] attribute, the first part of a name-prefix key.
pub(crate) fn text_attr_index(attr: &str) -> Option<u8> {
    TEXT_INDEXED
        .iter()
        .position(|a| a.eq_ignore_ascii_case(attr))
        .and_then(|i| u8::try_from(i).ok())
}

/// How many leading characters the name-prefix index keys: a person at a phone types three or four letters,
/// and a prefix up to this long is answered exactly (no entry to check); a longer one is narrowed by trigrams.
pub(crate) const HEAD_CHARS: usize = 4;

/// A name-prefix key: the first one to [`HEAD_CHARS`] characters of a lower-cased value, padded with NUL.
pub(crate) type Head = [char; HEAD_CHARS];

/// The name-prefix key of a lower-cased prefix: its first [`HEAD_CHARS`] characters.
pub(crate) fn head_key(lower: &str) -> Option<Head> {
    heads_of(lower).last()
}

/// The prefix keys of a lower-cased value: its first one, two, … [`HEAD_CHARS`] characters (as many as it has).
fn heads_of(lower: &str) -> impl Iterator<Item = Head> + '_ {
    let mut k = ['\0'; HEAD_CHARS];
    lower.chars().take(HEAD_CHARS).enumerate().map(move |(i, c)| {
        k[i] = c;
        k
    })
}

#[derive(Clone)]
pub struct Snapshot {
    /// Grows by one with every published change; AD's `highestCommittedUSN`, CardDAV's ctag and sync token.
    pub version: u64,
    pub naming: Arc<Naming>,
    /// When the data was last confirmed by a successful sync round (None before the first one).
    pub synced_at: Option<SystemTime>,
    /// Turns query numbers into the same digit keys the phone index uses.
    pub phones: Arc<PhoneNormalizer>,
    /// The order sorted results and phone books use; the entries' sort keys are in it.
    pub collation: Arc<Collation>,
    /// Entries by dense id; `None` marks a free slot.
    slots: Vector<Option<Arc<Entry>>>,
    /// The ids in use (what "every entry" means to a NOT or an unindexed filter).
    pub(super) live: Arc<RoaringBitmap>,
    /// Slots freed by removals, reused first so ids stay dense.
    free: Arc<RoaringBitmap>,
    /// Entry id (Graph object id, or the normalised DN of the domain and containers) → dense id.
    by_key: OrdMap<Arc<str>, EntryId>,
    by_dn: OrdMap<Arc<str>, EntryId>,
    /// The dense id of the naming context's entry, which nearly every search names as its base.
    root: Option<EntryId>,
    pub(super) children: IHashMap<Arc<str>, Bits>,
    /// Lower-cased attribute name → entries that have it.
    pub(super) present: IHashMap<Arc<str>, Bits>,
    /// (attribute, normalised value) → entries, keyed by the pair's 128-bit [`EqKeys`] hash rather than the
    /// value: most values (DNs, GUIDs, mail addresses) belong to one entry, so the keys would otherwise hold the
    /// directory's strings a second time, and every insert and lookup would compare them byte by byte. Ordered
    /// rather than hashed, because a persistent hash map's nodes cost several times the keys they hold.
    pub(super) eq: PackedMap<u128, Bits>,
    /// The keyed hash behind `eq`.
    eq_keys: Arc<EqKeys>,
    /// `objectCategory` by its first RDN value, lower-cased (`person`, `computer`): the short form filters use.
    pub(super) category: IHashMap<Arc<str>, Bits>,
    /// `userAccountControl` bit → entries with it set (CUCM's and Jabber's `:1.2.840.113556.1.4.803:=2`).
    pub(super) uac_bits: IHashMap<u8, Bits>,
    /// phone digit key → ids (a caller-ID lookup is one exact key), and the reversed key → ids for suffix
    /// queries; keys packed into integers ([`DigitKey`]), so a prefix or suffix is one range of the map.
    pub(super) phone_fwd: PackedMap<DigitKey, Bits>,
    pub(super) phone_rev: PackedMap<DigitKey, Bits>,
    /// Lower-cased trigrams of the [`TEXT_INDEXED`] values, any attribute.
    pub(super) trigrams: IHashMap<[char; 3], Bits>,
    /// (attribute, first one to [`HEAD_CHARS`] characters) of the [`TEXT_INDEXED`] values: a phone-book prefix
    /// (`sn=Schm*`) starts from the entries whose surname begins with `sch`, not from every `sch` anywhere.
    pub(super) heads: IHashMap<(u8, Head), Bits>,
    by_usn: OrdMap<(u64, EntryId), ()>,
    tombstones: OrdMap<(u64, Arc<str>), EntryKind>,
    /// Oldest version `changes_since` can answer for.
    history_from: u64,
    /// The last version that removed a user or contact. Unlike the tombstones it is never trimmed, so a book's
    /// change version (CardDAV getctag) that depends on it cannot fall back when old history is dropped.
    people_removed_at: u64,
    counts: KindCounts,
    /// Objects that did not get the name they wanted (sync-side names, kept here so the admin console can list
    /// them without reaching into the sync engine); small, and updated in proportion to the change.
    name_clashes: OrdMap<Arc<str>, Arc<Clash>>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.version)
            .field("base_dn", &self.naming.base_dn)
            .field("entries", &self.live.len())
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
            collation: Arc::new(Collation::root()),
            slots: Vector::new(),
            live: Arc::default(),
            free: Arc::default(),
            by_key: OrdMap::new(),
            by_dn: OrdMap::new(),
            root: None,
            children: IHashMap::new(),
            present: IHashMap::new(),
            eq: PackedMap::new(),
            eq_keys: Arc::new(EqKeys::new()),
            category: IHashMap::new(),
            uac_bits: IHashMap::new(),
            phone_fwd: PackedMap::new(),
            phone_rev: PackedMap::new(),
            trigrams: IHashMap::new(),
            heads: IHashMap::new(),
            by_usn: OrdMap::new(),
            tombstones: OrdMap::new(),
            history_from: 0,
            people_removed_at: 0,
            counts: KindCounts::default(),
            name_clashes: OrdMap::new(),
        }
    }

    /// A snapshot holding exactly `entries` at `version` (every entry's `usn_changed` is kept as given). The
    /// sync path builds snapshots incrementally instead; this is for tools, tests and benchmarks. Users,
    /// groups, computers and contacts made without sort keys get them (attribute names are shared already:
    /// [`Attrs`](crate::directory::entry::Attrs) made from a list share them).
    pub fn from_entries(naming: Naming, phones: PhoneNormalizer, version: u64, entries: Vec<Entry>) -> Snapshot {
        let mut s = Snapshot::empty(naming, phones);
        s.version = version;
        let collation = s.collation.clone();
        let mut batch = s.batch();
        for mut e in entries {
            if e.sort_keys == SortKeys::default() && !matches!(e.kind, EntryKind::Domain | EntryKind::Container) {
                e.sort_keys = SortKeys::of(&e.attrs, &collation);
            }
            batch.upsert(Arc::new(e));
        }
        drop(batch);
        s.compact_indexes();
        s
    }

    /// Refill the ordered indexes' blocks (see [`PackedMap::compact`]): after a change to a good part of the
    /// directory, which leaves them part full.
    pub(crate) fn compact_indexes(&mut self) {
        self.eq.compact();
        self.phone_fwd.compact();
        self.phone_rev.compact();
    }

    pub fn len(&self) -> usize {
        self.live.len() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    pub fn counts(&self) -> KindCounts {
        self.counts
    }

    /// The entry with this id (Graph object id, or the normalised DN for the domain and containers).
    pub fn entry(&self, id: &str) -> Option<&Arc<Entry>> {
        self.get(*self.by_key.get(id)?)
    }

    /// The dense id of the entry with this Graph object id (or structural DN).
    pub fn id_of(&self, id: &str) -> Option<EntryId> {
        self.by_key.get(id).copied()
    }

    /// The entry with this dense id.
    pub fn get(&self, id: EntryId) -> Option<&Arc<Entry>> {
        self.slots.get(id as usize).and_then(Option::as_ref)
    }

    /// The entry at a DN in normalised form ([`crate::directory::entry::normalize_dn`]).
    pub fn by_dn(&self, dn_norm: &str) -> Option<&Arc<Entry>> {
        self.get(self.id_of_dn(dn_norm)?)
    }

    /// The dense id of the entry at a normalised DN.
    pub fn id_of_dn(&self, dn_norm: &str) -> Option<EntryId> {
        if dn_norm == &*self.naming.base_dn_norm {
            return self.root;
        }
        self.by_dn.get(dn_norm).copied()
    }

    /// All entries in dense-id order.
    pub fn entries(&self) -> impl Iterator<Item = &Arc<Entry>> + '_ {
        self.slots.iter().flatten()
    }

    /// All entries with their dense ids, in id order.
    pub fn entries_with_ids(&self) -> impl Iterator<Item = (EntryId, &Arc<Entry>)> + '_ {
        self.live.iter().filter_map(move |i| self.get(i).map(|e| (i, e)))
    }

    /// Direct children of a normalised DN (one-level search).
    pub fn children<'a>(&'a self, parent_dn_norm: &str) -> impl Iterator<Item = &'a Arc<Entry>> + 'a {
        self.children
            .get(parent_dn_norm)
            .into_iter()
            .flat_map(|ids| ids.iter())
            .filter_map(|id| self.get(id))
    }

    /// Whether the entry at this normalised DN has children (`hasSubordinates`).
    pub fn has_children(&self, dn_norm: &str) -> bool {
        self.children.contains_key(dn_norm)
    }

    /// Whether equality on this attribute is answered from an index.
    pub fn is_eq_indexed(attr: &str) -> bool {
        EQ_INDEXED.iter().any(|a| a.eq_ignore_ascii_case(attr))
    }

    /// Ids of entries with `attr` equal to `value` (case-insensitive for strings, exact for binary). `None` when
    /// the attribute is not indexed and the caller has to evaluate some other way.
    pub fn find_eq(&self, attr: &str, value: &[u8]) -> Option<Vec<Arc<str>>> {
        let ids = self.eq_posting(attr, value)?;
        Some(
            ids.into_iter()
                .flat_map(|b| b.iter())
                .filter_map(|i| self.get(i))
                .map(|e| e.id.clone())
                .collect(),
        )
    }

    /// The posting of an equality lookup: `None` when the attribute is not indexed, `Some(None)` when no entry
    /// has the value.
    pub(super) fn eq_posting(&self, attr: &str, value: &[u8]) -> Option<Option<&Bits>> {
        let canon = EQ_INDEXED.iter().position(|a| a.eq_ignore_ascii_case(attr))?;
        Some(self.eq.get(&self.eq_keys.key(canon, value)))
    }

    /// Ids of entries that may have a phone number matching `q` in any phone attribute (candidates: the caller
    /// checks the attribute the filter names), in dense-id order. An empty digit string matches nothing.
    pub fn find_phone(&self, q: PhoneQuery<'_>) -> Vec<Arc<str>> {
        crate::directory::query::phone(self, q)
            .iter()
            .filter_map(|i| self.get(i))
            .map(|e| e.id.clone())
            .collect()
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
        let changed = self
            .by_usn
            .range((version + 1, 0)..)
            .filter_map(|((_, id), _)| self.get(*id))
            .collect();
        let removed = self
            .tombstones
            .range((version + 1, Arc::<str>::from(""))..)
            .filter(|((_, id), _)| !self.by_key.contains_key(id))
            .map(|((_, id), kind)| (id.clone(), *kind))
            .collect();
        Some(Changes { changed, removed })
    }

    // ---- building (crate-internal: only the directory publishes snapshots) ----

    /// An empty snapshot that continues after `version` (a restart): the next one is `version + 1`, and
    /// `changes_since` answers only from `version` on, since removals before it are not remembered.
    pub(crate) fn resumed(naming: Naming, phones: PhoneNormalizer, version: u64) -> Snapshot {
        let mut s = Snapshot::empty(naming, phones);
        s.version = version;
        s.history_from = version;
        s
    }

    /// This snapshot in another collation: every entry's sort keys made again, nothing else changed (versions
    /// stay: the order of results is not data a client syncs).
    pub(crate) fn rekey(&mut self, collation: Arc<Collation>) {
        for slot in 0..self.slots.len() {
            if let Some(Some(e)) = self.slots.get(slot) {
                if e.sort_keys == SortKeys::default() {
                    continue; // made without keys (the domain, containers)
                }
                let mut e = Entry::clone(e);
                e.sort_keys = SortKeys::of(&e.attrs, &collation);
                self.slots.set(slot, Some(Arc::new(e)));
            }
        }
        self.collation = collation;
    }

    /// Start the next version from this one.
    pub(crate) fn next(&self) -> Snapshot {
        let mut s = self.clone();
        s.version += 1;
        s
    }

    /// Whether anything was inserted, changed or removed at this snapshot's own version.
    pub(crate) fn changed_in_this_version(&self) -> bool {
        self.by_usn.range((self.version, 0)..).next().is_some()
            || self
                .tombstones
                .range((self.version, Arc::<str>::from(""))..)
                .next()
                .is_some()
    }

    /// Record whether `id` clashes (see [`Clash`]).
    pub(crate) fn set_clash(&mut self, id: &str, clash: Option<Clash>) {
        match clash {
            Some(c) => {
                self.name_clashes.insert(Arc::from(id), Arc::new(c));
            }
            None => {
                self.name_clashes.remove(id);
            }
        }
    }

    /// Objects holding another name than the one they wanted, by entry id.
    pub fn name_clashes(&self) -> impl Iterator<Item = (&str, &Clash)> + '_ {
        self.name_clashes.iter().map(|(k, v)| (&**k, &**v))
    }

    /// Phone digit keys that more than one entry carries (caller-ID ambiguity), with the entries. Walks the
    /// whole phone index: for the admin console's report, not for a request path.
    pub fn shared_numbers(&self) -> impl Iterator<Item = (String, Vec<EntryId>)> + '_ {
        self.phone_fwd
            .iter()
            .filter(|(_, b)| b.len() > 1)
            .map(|(k, b)| (k.digits(), b.iter().collect()))
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

    /// Insert or replace an entry (by its entry id), keeping every index in step. The entry's `usn_changed`
    /// must be this snapshot's version (the caller sets it). For many entries, [`Snapshot::batch`] is cheaper.
    pub(crate) fn upsert(&mut self, entry: Arc<Entry>) {
        self.batch().upsert(entry);
    }

    /// Remove an entry by its entry id; remembered as a tombstone for `changes_since`.
    pub(crate) fn remove(&mut self, id: &str) -> Option<Arc<Entry>> {
        self.batch().remove(id)
    }

    /// Start a batch of upserts and removals whose index additions are merged into the indexes once per key
    /// when the batch ends, instead of once per entry and key.
    pub(crate) fn batch(&mut self) -> Batch<'_> {
        Batch {
            snap: self,
            pending: Pending::default(),
        }
    }

    fn allocate(&mut self) -> EntryId {
        if let Some(slot) = self.free.min() {
            Arc::make_mut(&mut self.free).remove(slot);
            Arc::make_mut(&mut self.live).insert(slot);
            return slot;
        }
        // Dense ids are u32: four billion entries are far beyond what a tenant holds in memory.
        let slot = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        self.slots.push_back(None);
        Arc::make_mut(&mut self.live).insert(slot);
        slot
    }

    fn unindex(&mut self, slot: EntryId, e: &Entry) {
        if self.by_dn.get(&e.dn_norm) == Some(&slot) {
            self.by_dn.remove(&e.dn_norm);
            if self.root == Some(slot) {
                self.root = None;
            }
        }
        self.by_usn.remove(&(e.usn_changed, slot));
        self.count(e.kind, -1);
        for k in IndexKeys::of(e, &self.phones, &self.eq_keys) {
            match k {
                Key::Child(p) => drop_id(&mut self.children, &p, slot),
                Key::Present(a) => drop_id(&mut self.present, &a, slot),
                Key::Eq(k) => drop_id(&mut self.eq, &k, slot),
                Key::Category(c) => drop_id(&mut self.category, &c, slot),
                Key::Uac(b) => drop_id(&mut self.uac_bits, &b, slot),
                Key::Phone(k) => drop_id(&mut self.phone_fwd, &k, slot),
                Key::PhoneRev(k) => drop_id(&mut self.phone_rev, &k, slot),
                Key::Trigram(g) => drop_id(&mut self.trigrams, &g, slot),
                Key::Head(h) => drop_id(&mut self.heads, &h, slot),
            }
        }
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

/// The persistent maps the indexes are kept in, hashed or ordered, as far as postings need them.
trait PostingMap<K> {
    fn posting_mut(&mut self, key: &K) -> Option<&mut Bits>;
    fn put(&mut self, key: K, bits: Bits);
    fn take(&mut self, key: &K);
}

/// The same three calls on both map types (imbl gives them no common trait).
macro_rules! posting_map {
    ($map:ident, $($bound:tt)+) => {
        impl<K: $($bound)+> PostingMap<K> for $map<K, Bits> {
            fn posting_mut(&mut self, key: &K) -> Option<&mut Bits> {
                self.get_mut(key)
            }
            fn put(&mut self, key: K, bits: Bits) {
                self.insert(key, bits);
            }
            fn take(&mut self, key: &K) {
                self.remove(key);
            }
        }
    };
}

posting_map!(IHashMap, std::hash::Hash + Eq + Clone);
posting_map!(OrdMap, Ord + Clone);
posting_map!(PackedMap, Ord + Clone);

fn drop_id<K>(map: &mut impl PostingMap<K>, key: &K, id: EntryId) {
    if map.posting_mut(key).is_some_and(|ids| ids.remove(id)) {
        map.take(key);
    }
}

/// Upserts and removals into one snapshot whose index additions are collected per key and merged into the
/// persistent maps when the batch is dropped. A full projection adds hundreds of keys per entry, most of them
/// shared by thousands of entries (a trigram, a surname, `objectClass: person`): merged per key, each posting
/// is looked up and copied once per batch instead of once per entry, and a bitmap is built from sorted ids.
/// Removals edit the indexes at once; removing or replacing an entry whose additions are still pending
/// merges them first, so the indexes never lose track of an id.
pub(crate) struct Batch<'a> {
    snap: &'a mut Snapshot,
    pending: Pending,
}

type Adds<K> = FxHashMap<K, Vec<EntryId>>;

/// Entries whose additions are merged together; enough to share the cost of a posting lookup many ways.
const BATCH_ENTRIES: u64 = 8192;

#[derive(Default)]
struct Pending {
    /// Entries whose keys are waiting here.
    slots: RoaringBitmap,
    children: Adds<Arc<str>>,
    present: Adds<Arc<str>>,
    eq: Adds<u128>,
    category: Adds<Arc<str>>,
    uac_bits: Adds<u8>,
    phones: Adds<DigitKey>,
    phones_rev: Adds<DigitKey>,
    trigrams: Adds<[char; 3]>,
    heads: Adds<(u8, Head)>,
}

impl Batch<'_> {
    /// See [`Snapshot::upsert`].
    pub(crate) fn upsert(&mut self, entry: Arc<Entry>) {
        let snap = &mut *self.snap;
        let slot = match snap.by_key.get(&entry.id).copied() {
            Some(slot) => {
                if let Some(old) = snap.get(slot).cloned() {
                    if old.dn == entry.dn && old.attrs == entry.attrs && old.kind == entry.kind {
                        return; // unchanged: keep the old entry, its usn and everything cached for it
                    }
                    self.unindex(slot, &old);
                }
                slot
            }
            None => {
                let slot = snap.allocate();
                snap.by_key.insert(entry.id.clone(), slot);
                slot
            }
        };
        self.index(slot, &entry);
        self.snap.slots.set(slot as usize, Some(entry));
    }

    /// See [`Snapshot::remove`].
    pub(crate) fn remove(&mut self, id: &str) -> Option<Arc<Entry>> {
        let slot = *self.snap.by_key.get(id)?;
        let old = self.snap.get(slot)?.clone();
        self.unindex(slot, &old);
        let snap = &mut *self.snap;
        snap.by_key.remove(id);
        snap.slots.set(slot as usize, None);
        Arc::make_mut(&mut snap.live).remove(slot);
        Arc::make_mut(&mut snap.free).insert(slot);
        snap.tombstones.insert((snap.version, old.id.clone()), old.kind);
        if matches!(old.kind, EntryKind::User | EntryKind::Contact) {
            snap.people_removed_at = snap.version;
        }
        Some(old)
    }

    /// The entry with this id, as the batch has it so far.
    pub(crate) fn entry(&self, id: &str) -> Option<&Arc<Entry>> {
        self.snap.entry(id)
    }

    fn index(&mut self, slot: EntryId, e: &Entry) {
        let snap = &mut *self.snap;
        snap.by_dn.insert(e.dn_norm.clone(), slot);
        if e.dn_norm == snap.naming.base_dn_norm {
            snap.root = Some(slot);
        }
        snap.by_usn.insert((e.usn_changed, slot), ());
        snap.count(e.kind, 1);
        let p = &mut self.pending;
        p.slots.insert(slot);
        for k in IndexKeys::of(e, &snap.phones, &snap.eq_keys) {
            match k {
                Key::Child(c) => p.children.entry(c).or_default().push(slot),
                Key::Present(a) => p.present.entry(a).or_default().push(slot),
                Key::Eq(k) => p.eq.entry(k).or_default().push(slot),
                Key::Category(c) => p.category.entry(c).or_default().push(slot),
                Key::Uac(b) => p.uac_bits.entry(b).or_default().push(slot),
                Key::Phone(k) => p.phones.entry(k).or_default().push(slot),
                Key::PhoneRev(k) => p.phones_rev.entry(k).or_default().push(slot),
                Key::Trigram(g) => p.trigrams.entry(g).or_default().push(slot),
                Key::Head(h) => p.heads.entry(h).or_default().push(slot),
            }
        }
        // Bounded: the pending keys of a whole tenant would double the memory a full projection needs.
        if p.slots.len() >= BATCH_ENTRIES {
            self.flush();
        }
    }

    fn unindex(&mut self, slot: EntryId, old: &Entry) {
        if self.pending.slots.contains(slot) {
            self.flush();
        }
        self.snap.unindex(slot, old);
    }

    /// Merge the pending additions into the snapshot's indexes.
    fn flush(&mut self) {
        let p = std::mem::take(&mut self.pending);
        let snap = &mut *self.snap;
        merge(&mut snap.children, p.children);
        merge(&mut snap.present, p.present);
        merge(&mut snap.eq, p.eq);
        merge(&mut snap.category, p.category);
        merge(&mut snap.uac_bits, p.uac_bits);
        merge(&mut snap.phone_fwd, p.phones);
        merge(&mut snap.phone_rev, p.phones_rev);
        merge(&mut snap.trigrams, p.trigrams);
        merge(&mut snap.heads, p.heads);
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

fn sort_ids(ids: &mut Vec<EntryId>) {
    ids.sort_unstable();
    ids.dedup();
}

/// Add the pending ids of each key. Keys go in in order, so an ordered map's inserts walk neighbouring paths.
fn merge<K: Ord>(map: &mut impl PostingMap<K>, adds: Adds<K>) {
    let mut adds: Vec<(K, Vec<EntryId>)> = adds.into_iter().collect();
    adds.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (k, mut ids) in adds {
        sort_ids(&mut ids);
        match map.posting_mut(&k) {
            Some(bits) => bits.extend_sorted(&ids),
            None => {
                if let Some(bits) = Bits::from_sorted(&ids) {
                    map.put(k, bits);
                }
            }
        }
    }
}

/// One index key an entry contributes.
enum Key {
    Child(Arc<str>),
    Present(Arc<str>),
    Eq(u128),
    Category(Arc<str>),
    Uac(u8),
    Phone(DigitKey),
    /// The phone key's digits backwards (the suffix index).
    PhoneRev(DigitKey),
    Trigram([char; 3]),
    Head((u8, Head)),
}

/// Every index key of an entry, each once: indexing and unindexing walk the same list, so they cannot drift.
struct IndexKeys;

impl IndexKeys {
    fn of(e: &Entry, phones: &PhoneNormalizer, eq_keys: &EqKeys) -> Vec<Key> {
        let mut out = Vec::new();
        if let Some(p) = parent_norm(&e.dn_norm) {
            out.push(Key::Child(p.into()));
        }
        let mut eq: Vec<u128> = Vec::new();
        let mut phone: Vec<DigitKey> = Vec::new();
        let mut phone_rev: Vec<DigitKey> = Vec::new();
        let mut grams: Vec<[char; 3]> = Vec::new();
        let mut heads: Vec<(u8, Head)> = Vec::new();
        for a in &e.attrs {
            if a.values.is_empty() {
                continue;
            }
            out.push(Key::Present(a.name.to_ascii_lowercase().into()));
            if let Some(canon) = EQ_INDEXED.iter().position(|c| c.eq_ignore_ascii_case(a.name)) {
                eq.extend(a.values.iter().map(|v| eq_keys.key(canon, v)));
            }
            if a.name.eq_ignore_ascii_case("objectCategory") {
                if let Some(short) = a.values.first().and_then(category_short) {
                    out.push(Key::Category(short.into()));
                }
            }
            if a.name.eq_ignore_ascii_case("userAccountControl") {
                if let Some(uac) = a.values.first().and_then(parse_uac) {
                    out.extend((0..32u8).filter(|b| uac & (1 << b) != 0).map(Key::Uac));
                }
            }
            if is_phone_attr(a.name) {
                for k in a
                    .values
                    .iter()
                    .filter_map(|v| std::str::from_utf8(v).ok())
                    .map(|v| phones.key(v))
                {
                    phone.extend(DigitKey::of(&k));
                    phone_rev.extend(DigitKey::reversed(&k));
                }
            }
            if let Some(ti) = text_attr_index(a.name) {
                for v in a.values.iter().filter_map(|v| std::str::from_utf8(v).ok()) {
                    let lower = v.to_lowercase();
                    grams.extend(trigrams_of(&lower));
                    // Every prefix length, so a one- or two-letter prefix is one lookup too.
                    heads.extend(heads_of(&lower).map(|h| (ti, h)));
                }
            }
        }
        eq.sort();
        eq.dedup();
        phone.sort();
        phone.dedup();
        phone_rev.sort();
        phone_rev.dedup();
        grams.sort();
        grams.dedup();
        heads.sort();
        heads.dedup();
        out.extend(eq.into_iter().map(Key::Eq));
        out.extend(phone.into_iter().map(Key::Phone));
        out.extend(phone_rev.into_iter().map(Key::PhoneRev));
        out.extend(grams.into_iter().map(Key::Trigram));
        out.extend(heads.into_iter().map(Key::Head));
        out
    }
}

/// The first RDN value of an `objectCategory` DN, lower-cased (`CN=Person,CN=Schema,…` → `person`).
pub(crate) fn category_short(v: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(v).ok()?;
    let rdns = crate::directory::dn::parse_dn(s)?;
    rdns.first().and_then(|r| r.first()).map(|(_, val)| val.to_lowercase())
}

/// `userAccountControl` as AD writes it (a signed 32-bit decimal).
pub(crate) fn parse_uac(v: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(v).ok()?.trim();
    s.parse::<i64>().ok().map(|n| n as u32)
}

/// The equality index's key of an (attribute, value) pair: a 128-bit hash of the attribute and the value as
/// equality compares it (lower-cased for strings, as is for binary attributes and invalid UTF-8): two 64-bit
/// hashes keyed from the process's random seed, so nobody outside can choose values that collide. Taken as
/// exact: for hashes that behave as random, any collision among a tenant's few million keys has a chance far
/// below 10^-20.
pub(crate) struct EqKeys {
    k0: std::hash::RandomState,
    k1: std::hash::RandomState,
}

impl EqKeys {
    fn new() -> EqKeys {
        EqKeys {
            k0: std::hash::RandomState::new(),
            k1: std::hash::RandomState::new(),
        }
    }

    /// `attr` is the attribute's position in [`EQ_INDEXED`].
    fn key(&self, attr: usize, value: &[u8]) -> u128 {
        use std::hash::{BuildHasher, Hasher};
        let lowered;
        let bytes = match std::str::from_utf8(value) {
            Ok(s)
                if (!s.is_ascii() || s.bytes().any(|b| b.is_ascii_uppercase()))
                    && !is_binary_attr(EQ_INDEXED[attr]) =>
            {
                lowered = s.to_lowercase();
                lowered.as_bytes()
            }
            _ => value,
        };
        let half = |st: &std::hash::RandomState| {
            let mut h = st.build_hasher();
            h.write_usize(attr);
            h.write(bytes);
            h.finish()
        };
        (u128::from(half(&self.k0)) << 64) | u128::from(half(&self.k1))
    }
}

/// The distinct trigrams of an already lower-cased string.
pub(crate) fn trigrams_of(s: &str) -> Vec<[char; 3]> {
    let chars: Vec<char> = s.chars().collect();
    let mut out: Vec<[char; 3]> = chars.windows(3).map(|w| [w[0], w[1], w[2]]).collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carddav::sample::{person, person_id};
    use bytes::Bytes;

    /// Every posting of every index, as sorted text, to compare two snapshots' indexes.
    fn dump(s: &Snapshot) -> Vec<String> {
        fn ids(b: &Bits) -> Vec<EntryId> {
            b.iter().collect()
        }
        let mut out: Vec<String> = Vec::new();
        out.extend(s.children.iter().map(|(k, b)| format!("child {k} {:?}", ids(b))));
        out.extend(s.present.iter().map(|(k, b)| format!("present {k} {:?}", ids(b))));
        out.extend(s.eq.iter().map(|(k, b)| format!("eq {k:x} {:?}", ids(b))));
        out.extend(s.category.iter().map(|(k, b)| format!("cat {k} {:?}", ids(b))));
        out.extend(s.uac_bits.iter().map(|(k, b)| format!("uac {k} {:?}", ids(b))));
        out.extend(
            s.phone_fwd
                .iter()
                .map(|(k, b)| format!("fwd {} {:?}", k.digits(), ids(b))),
        );
        out.extend(
            s.phone_rev
                .iter()
                .map(|(k, b)| format!("rev {} {:?}", k.digits(), ids(b))),
        );
        out.extend(s.trigrams.iter().map(|(k, b)| format!("tri {k:?} {:?}", ids(b))));
        out.extend(s.heads.iter().map(|(k, b)| format!("head {k:?} {:?}", ids(b))));
        out.extend(s.by_key.iter().map(|(k, i)| format!("key {k} {i}")));
        out.extend(s.by_dn.iter().map(|(k, i)| format!("dn {k} {i}")));
        out.push(format!("root {:?}", s.root));
        out.sort();
        out
    }

    fn renumbered(i: usize, usn: u64) -> Arc<Entry> {
        let mut e = person(i, usn);
        e.attrs.edit(|attrs| {
            for a in attrs.iter_mut().filter(|a| &*a.name == "telephoneNumber") {
                a.values = vec![Bytes::from(format!("089 {:07}", 2_000_000 + i))];
            }
        });
        Arc::new(e)
    }

    /// A batch ends with the same indexes as the same changes made one at a time, also when it replaces or
    /// removes entries whose additions are still pending, and across the flushes of a large batch.
    #[test]
    fn a_batch_indexes_like_single_changes() {
        let naming = Naming::new("DC=contoso,DC=example").expect("base DN");
        let phones = PhoneNormalizer::new("DE").expect("country");
        let n = BATCH_ENTRIES as usize + 1000;
        let mut one = Snapshot::empty(naming.clone(), phones.clone());
        one.version = 1;
        let mut many = one.clone();
        let pending = n - 10; // added after the last flush: still pending when changed again
        let flushed = 3;
        for i in 0..n {
            one.upsert(Arc::new(person(i, 1)));
        }
        one.upsert(renumbered(pending, 1));
        one.upsert(renumbered(flushed, 1));
        one.remove(&person_id(pending + 1));
        one.remove(&person_id(flushed + 1));
        one.upsert(Arc::new(person(n, 1)));
        {
            let mut b = many.batch();
            for i in 0..n {
                b.upsert(Arc::new(person(i, 1)));
            }
            b.upsert(renumbered(pending, 1));
            b.upsert(renumbered(flushed, 1));
            assert!(b.remove(&person_id(pending + 1)).is_some());
            assert!(b.remove(&person_id(flushed + 1)).is_some());
            b.upsert(Arc::new(person(n, 1)));
        }
        assert_eq!(one.len(), n - 1);
        assert_eq!(many.len(), n - 1);
        let (a, b) = (dump(&one), dump(&many));
        assert!(
            a.iter().any(|l| l.starts_with("fwd 4989")),
            "renumbered phones are indexed"
        );
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x, y);
        }
    }
}
