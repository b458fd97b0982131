//! One AD-style directory entry, as the front ends see it.
//!
//! Entries are immutable and shared (`Arc<Entry>`) between snapshots: a sync round that does not touch an
//! object reuses its entry, so anything derived from an entry (an LDAP encoding, a vCard) can be cached per
//! entry and stays valid as long as the `Arc` is the same (`Arc::ptr_eq`) or `usn_changed` is unchanged.

use crate::directory::collation::{Collation, SORTED};
use bytes::Bytes;
use rustc_hash::FxHashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// What kind of AD object an entry presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// The naming context itself (`DC=example,DC=com`, objectClass `domainDNS`).
    Domain,
    /// A container such as `CN=Users,<base>` (objectClass `container`).
    Container,
    User,
    Group,
    /// A device, presented as an AD `computer`.
    Computer,
    /// An organisational contact, presented as an AD `contact`.
    Contact,
}

/// How many distinct attribute names are shared. Names also come from Graph's JSON (property names, nested ones
/// too): past this many, garbage from Graph would only grow the table, so further names are not shared.
const MAX_SHARED: usize = 4096;

/// The shared names by number, each written once (under [`NAME_IDS`]' lock) and then read without a lock: an
/// entry refers to its attribute names by these numbers.
static NAMES: [OnceLock<Arc<str>>; MAX_SHARED] = [const { OnceLock::new() }; MAX_SHARED];
static NAME_IDS: OnceLock<Mutex<FxHashMap<Arc<str>, u32>>> = OnceLock::new();

/// The shared copy of `name` and its number; `None` once the table is full and `name` is not in it.
fn share(name: &str) -> Option<(u32, Arc<str>)> {
    let mut ids = NAME_IDS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some((n, id)) = ids.get_key_value(name) {
        return Some((*id, n.clone()));
    }
    let id = ids.len();
    if id >= MAX_SHARED {
        return None;
    }
    let n: Arc<str> = name.into();
    let _ = NAMES[id].set(n.clone());
    ids.insert(n.clone(), id as u32);
    Some((id as u32, n))
}

/// The one shared copy of an attribute name. A tenant's entries use a few dozen names (the mapping's and the
/// computed ones), so each is allocated once for the process rather than once per entry.
pub(crate) fn attr_name(name: &str) -> Arc<str> {
    share(name).map_or_else(|| name.into(), |(_, n)| n)
}

/// The number of a shared name, from the address of its shared copy: packing an entry looks up some thirty
/// names, and a shared copy lives as long as the process, so its address names it. Remembered per thread so
/// that projection threads do not take the table's lock for every attribute.
fn shared_id(name: &Arc<str>) -> Option<u32> {
    thread_local! {
        static SEEN: std::cell::RefCell<FxHashMap<usize, u32>> = Default::default();
    }
    let addr = Arc::as_ptr(name) as *const u8 as usize;
    if let Some(id) = SEEN.with(|m| m.borrow().get(&addr).copied()) {
        return Some(id);
    }
    let (id, shared) = share(name)?;
    if !Arc::ptr_eq(&shared, name) {
        // An unshared copy of a shared name: its address may be reused once it is freed, so it is not
        // remembered.
        return Some(id);
    }
    SEEN.with(|m| m.borrow_mut().insert(addr, id));
    Some(id)
}

static NO_NAME: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| "".into());

/// One attribute as it is built or edited: its canonical name (as AD spells it, e.g. `telephoneNumber`) and its
/// values. String attributes hold UTF-8; binary ones (`objectGUID`, `objectSid`, `thumbnailPhoto`, `jpegPhoto`)
/// raw bytes. An entry keeps its attributes packed ([`Attrs`]); this is the form they are made in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: Arc<str>,
    pub values: Vec<Bytes>,
}

/// Values longer than this keep their own buffer instead of being copied into an entry's: a photo is then held
/// once, by the store and every entry and cache that shows it.
const PACKED_MAX: usize = 1024;

/// An entry's attributes in presentation order, packed: one table of names, one array of value ends and one
/// buffer with every short value.
///
/// A directory holds some forty values per user, most of them a few bytes long, and the front ends walk an
/// entry's attributes on every answer. A `Vec<Attribute>` spent 40 bytes per attribute and a 32-byte `Bytes`
/// per value, each vector its own allocation, so a scan hopped between allocations; here an attribute costs
/// its shared name and a `u32`, a value a `u32`, and a scan reads two small arrays and one buffer.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    slots: Box<[Slot]>,
    /// Names that are not shared (only past [`MAX_SHARED`] distinct names); a slot's `name` counts on from
    /// `MAX_SHARED` into this.
    own_names: Box<[Arc<str>]>,
    /// Where each value ends in `data`; attribute `i` has the values `slots[i].first..slots[i + 1].first`.
    ends: Box<[u32]>,
    data: Bytes,
    /// Values over [`PACKED_MAX`], by value index; their range in `data` is empty.
    big: Box<[(u32, Bytes)]>,
}

/// An attribute's name, by number (see [`NAMES`]), and its first value.
#[derive(Clone, PartialEq, Eq)]
struct Slot {
    name: u32,
    first: u32,
}

impl Attrs {
    /// Pack `attrs` as given (names already shared, see [`attr_name`]).
    pub(crate) fn pack(attrs: Vec<Attribute>) -> Attrs {
        let mut slots = Vec::with_capacity(attrs.len());
        let count: usize = attrs.iter().map(|a| a.values.len()).sum();
        let total: usize = attrs
            .iter()
            .flat_map(|a| &a.values)
            .filter(|v| v.len() <= PACKED_MAX)
            .map(Bytes::len)
            .sum();
        let mut ends = Vec::with_capacity(count);
        let mut data = Vec::with_capacity(total);
        let mut big = Vec::new();
        let mut own_names = Vec::new();
        for a in attrs {
            let name = shared_id(&a.name).unwrap_or_else(|| {
                own_names.push(a.name);
                (MAX_SHARED + own_names.len() - 1) as u32
            });
            slots.push(Slot {
                name,
                first: ends.len() as u32,
            });
            for v in a.values {
                if v.len() > PACKED_MAX {
                    big.push((ends.len() as u32, v));
                } else {
                    data.extend_from_slice(&v);
                }
                ends.push(data.len() as u32);
            }
        }
        Attrs {
            slots: slots.into_boxed_slice(),
            own_names: own_names.into_boxed_slice(),
            ends: ends.into_boxed_slice(),
            data: Bytes::from(data),
            big: big.into_boxed_slice(),
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The `i`th attribute.
    pub fn get(&self, i: usize) -> Option<Attr<'_>> {
        (i < self.slots.len()).then(|| self.at(i))
    }

    /// The `i`th attribute, `i` in range.
    fn at(&self, i: usize) -> Attr<'_> {
        let slot = &self.slots[i];
        let hi = self.slots.get(i + 1).map_or(self.ends.len() as u32, |s| s.first);
        Attr {
            name: self.name(slot),
            values: Values {
                attrs: self,
                lo: slot.first,
                hi,
            },
        }
    }

    /// The attribute with this name, compared case-insensitively as LDAP requires.
    pub fn find(&self, name: &str) -> Option<Attr<'_>> {
        let i = self
            .slots
            .iter()
            .position(|s| self.name(s).eq_ignore_ascii_case(name))?;
        Some(self.at(i))
    }

    pub fn iter(&self) -> AttrsIter<'_> {
        AttrsIter {
            attrs: self,
            next: 0..self.slots.len(),
        }
    }

    /// The attributes in their editable form.
    pub fn to_vec(&self) -> Vec<Attribute> {
        self.iter()
            .map(|a| Attribute {
                name: a.name.clone(),
                values: a.values.to_vec(),
            })
            .collect()
    }

    /// Change the attributes through their editable form, and pack them again (for tools and tests: a
    /// projected entry is made once and never edited).
    pub fn edit(&mut self, f: impl FnOnce(&mut Vec<Attribute>)) {
        let mut v = self.to_vec();
        f(&mut v);
        *self = Attrs::from(v);
    }

    fn name(&self, slot: &Slot) -> &Arc<str> {
        let n = slot.name as usize;
        let name = match n.checked_sub(MAX_SHARED) {
            None => NAMES[n].get(),
            Some(own) => self.own_names.get(own),
        };
        // Every number was handed out with its name.
        name.unwrap_or(&NO_NAME)
    }

    /// Add an attribute (see [`Attrs::edit`]).
    pub fn push(&mut self, a: Attribute) {
        self.edit(|v| v.push(a));
    }

    /// Give the attribute `name` these values, adding it at the end if the entry has none (see [`Attrs::edit`]).
    pub fn set(&mut self, name: &str, values: Vec<Bytes>) {
        self.edit(|v| match v.iter_mut().find(|a| a.name.eq_ignore_ascii_case(name)) {
            Some(a) => a.values = values,
            None => v.push(Attribute {
                name: name.into(),
                values,
            }),
        });
    }

    /// Keep the attributes `keep` accepts (see [`Attrs::edit`]).
    pub fn retain(&mut self, keep: impl FnMut(&Attribute) -> bool) {
        self.edit(|v| v.retain(keep));
    }

    fn value(&self, j: u32) -> &[u8] {
        let start = match j {
            0 => 0,
            _ => self.ends[j as usize - 1] as usize,
        };
        let end = self.ends[j as usize] as usize;
        if start == end && !self.big.is_empty() {
            if let Ok(k) = self.big.binary_search_by_key(&j, |(at, _)| *at) {
                return &self.big[k].1;
            }
        }
        &self.data[start..end]
    }

    fn value_bytes(&self, j: u32) -> Bytes {
        let start = match j {
            0 => 0,
            _ => self.ends[j as usize - 1] as usize,
        };
        let end = self.ends[j as usize] as usize;
        if start == end {
            if let Ok(k) = self.big.binary_search_by_key(&j, |(at, _)| *at) {
                return self.big[k].1.clone();
            }
        }
        self.data.slice(start..end)
    }
}

/// Attributes given by hand (tools, tests, the root DSE): names are shared as projected entries have them.
impl From<Vec<Attribute>> for Attrs {
    fn from(mut attrs: Vec<Attribute>) -> Attrs {
        for a in &mut attrs {
            a.name = attr_name(&a.name);
        }
        Attrs::pack(attrs)
    }
}

/// The attributes of an [`Attrs`], in order.
#[derive(Clone)]
pub struct AttrsIter<'a> {
    attrs: &'a Attrs,
    next: std::ops::Range<usize>,
}

impl<'a> Iterator for AttrsIter<'a> {
    type Item = Attr<'a>;
    fn next(&mut self) -> Option<Attr<'a>> {
        self.next.next().map(|i| self.attrs.at(i))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.next.size_hint()
    }
}

impl ExactSizeIterator for AttrsIter<'_> {}

impl<'a> IntoIterator for &'a Attrs {
    type Item = Attr<'a>;
    type IntoIter = AttrsIter<'a>;
    fn into_iter(self) -> AttrsIter<'a> {
        self.iter()
    }
}

impl FromIterator<Attribute> for Attrs {
    fn from_iter<I: IntoIterator<Item = Attribute>>(iter: I) -> Attrs {
        Attrs::from(iter.into_iter().collect::<Vec<_>>())
    }
}

impl std::fmt::Debug for Attrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter().map(|a| (a.name, a.values))).finish()
    }
}

/// One attribute of an entry: a view into its [`Attrs`].
#[derive(Clone, Copy, Debug)]
pub struct Attr<'a> {
    pub name: &'a Arc<str>,
    pub values: Values<'a>,
}

/// The values of one attribute (empty for an attribute the entry does not have).
#[derive(Clone, Copy)]
pub struct Values<'a> {
    attrs: &'a Attrs,
    lo: u32,
    hi: u32,
}

static NO_ATTRS: std::sync::LazyLock<Attrs> = std::sync::LazyLock::new(Attrs::default);

impl<'a> Values<'a> {
    /// No values.
    pub fn none() -> Values<'static> {
        Values {
            attrs: &NO_ATTRS,
            lo: 0,
            hi: 0,
        }
    }

    pub fn len(&self) -> usize {
        (self.hi - self.lo) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.hi == self.lo
    }

    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        let j = self.lo.checked_add(u32::try_from(i).ok()?)?;
        (j < self.hi).then(|| self.attrs.value(j))
    }

    pub fn first(&self) -> Option<&'a [u8]> {
        self.get(0)
    }

    /// The `i`th value as a shared buffer (no copy).
    pub fn bytes(&self, i: usize) -> Option<Bytes> {
        let j = self.lo.checked_add(u32::try_from(i).ok()?)?;
        (j < self.hi).then(|| self.attrs.value_bytes(j))
    }

    /// The first `n` values (all when there are fewer).
    pub fn take(&self, n: usize) -> Values<'a> {
        self.range(0, n)
    }

    /// Values `from..to`, clamped to the ones there are.
    pub fn range(&self, from: usize, to: usize) -> Values<'a> {
        let len = self.len();
        let (from, to) = (from.min(len), to.min(len).max(from.min(len)));
        Values {
            attrs: self.attrs,
            lo: self.lo + from as u32,
            hi: self.lo + to as u32,
        }
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &'a [u8]> + ExactSizeIterator + Clone + 'a {
        let attrs = self.attrs;
        (self.lo..self.hi).map(move |j| attrs.value(j))
    }

    /// Total length of the values in bytes.
    pub fn byte_len(&self) -> usize {
        self.iter().map(<[u8]>::len).sum()
    }

    pub fn to_vec(&self) -> Vec<Bytes> {
        (self.lo..self.hi).map(|j| self.attrs.value_bytes(j)).collect()
    }
}

impl std::fmt::Debug for Values<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|v| match std::str::from_utf8(v) {
                Ok(s) => format!("{s:?}"),
                Err(_) => format!("<{} bytes>", v.len()),
            }))
            .finish()
    }
}

/// The `i`th value; panics when there is none, as slice indexing does.
impl std::ops::Index<usize> for Values<'_> {
    type Output = [u8];
    fn index(&self, i: usize) -> &[u8] {
        match self.get(i) {
            Some(v) => v,
            None => panic!("value {i} of {}", self.len()),
        }
    }
}

impl<'a> IntoIterator for Values<'a> {
    type Item = &'a [u8];
    type IntoIter = Box<dyn DoubleEndedIterator<Item = &'a [u8]> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl<T: AsRef<[u8]>> PartialEq<[T]> for Values<'_> {
    fn eq(&self, other: &[T]) -> bool {
        self.len() == other.len() && self.iter().zip(other).all(|(a, b)| a == b.as_ref())
    }
}

impl<T: AsRef<[u8]>, const N: usize> PartialEq<[T; N]> for Values<'_> {
    fn eq(&self, other: &[T; N]) -> bool {
        *self == other[..]
    }
}

impl<T: AsRef<[u8]>> PartialEq<Vec<T>> for Values<'_> {
    fn eq(&self, other: &Vec<T>) -> bool {
        *self == other[..]
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Graph object id (a GUID string) for Graph objects; the normalised DN for domain and containers.
    pub id: Arc<str>,
    pub kind: EntryKind,
    /// The DN as presented, RFC 4514 escaped, e.g. `CN=Doe\, Jane,CN=Users,DC=example,DC=com`.
    pub dn: Arc<str>,
    /// `dn` normalised for comparisons (see [`normalize_dn`]).
    pub dn_norm: Arc<str>,
    /// `objectGUID` in AD byte order (Data1-3 little-endian).
    pub guid: [u8; 16],
    /// Snapshot version in which this entry last changed (AD's `uSNChanged`); usable as a strong ETag.
    pub usn_changed: u64,
    /// Snapshot version in which this entry first appeared (AD's `uSNCreated`).
    pub usn_created: u64,
    /// Attributes in presentation order; names unique (case-insensitively).
    pub attrs: Attrs,
    /// Collation keys of the names clients sort on, derived from `attrs` when the entry is projected.
    pub sort_keys: SortKeys,
}

/// The collation keys of an entry's [`SORTED`] attributes, packed into one allocation: for each attribute in
/// [`SORTED`]'s order a little-endian `u16` length and the key (`u16::MAX` for none). Only single-valued
/// attributes get a key; a sort over several values (RFC 2891: by the least) keys them when it runs. Empty (`None`) for entries made without a collation, such as the root DSE.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SortKeys(Option<Box<[u8]>>);

impl SortKeys {
    pub(crate) fn of(attrs: &Attrs, collation: &Collation) -> SortKeys {
        let mut packed = Vec::new();
        for name in SORTED {
            let one = attrs
                .find(name)
                .filter(|a| a.values.len() == 1)
                .and_then(|a| a.values.first())
                .and_then(|v| std::str::from_utf8(v).ok());
            let at = packed.len();
            packed.extend_from_slice(&u16::MAX.to_le_bytes());
            if let Some(v) = one {
                collation.key_into(v, &mut packed);
                match u16::try_from(packed.len() - at - 2) {
                    Ok(n) if n < u16::MAX => packed[at..at + 2].copy_from_slice(&n.to_le_bytes()),
                    // A value this long is keyed when a sort needs it.
                    _ => packed.truncate(at + 2),
                }
            }
        }
        SortKeys(Some(packed.into_boxed_slice()))
    }

    /// The key of [`SORTED`]`[slot]`, if the entry has one.
    pub(crate) fn get(&self, slot: usize) -> Option<&[u8]> {
        let mut rest: &[u8] = self.0.as_deref()?;
        for i in 0..=slot {
            let (len, tail) = rest.split_first_chunk::<2>()?;
            let len = u16::from_le_bytes(*len);
            if len == u16::MAX {
                if i == slot {
                    return None;
                }
                rest = tail;
                continue;
            }
            let (key, tail) = tail.split_at_checked(len as usize)?;
            if i == slot {
                return Some(key);
            }
            rest = tail;
        }
        None
    }
}

impl Entry {
    /// The attribute with this name, compared case-insensitively as LDAP requires.
    pub fn get(&self, name: &str) -> Option<Attr<'_>> {
        self.attrs.find(name)
    }

    /// Values of an attribute (empty when absent).
    pub fn values(&self, name: &str) -> Values<'_> {
        self.get(name).map_or(Values::none(), |a| a.values)
    }

    /// First value as text, if present and UTF-8.
    pub fn first_str(&self, name: &str) -> Option<&str> {
        self.values(name).first().and_then(|v| std::str::from_utf8(v).ok())
    }

    /// All values as text (binary values that are not UTF-8 are skipped).
    pub fn strs<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        self.values(name).iter().filter_map(|v| std::str::from_utf8(v).ok())
    }

    /// Whether `objectClass` contains `class` (case-insensitive).
    pub fn has_class(&self, class: &str) -> bool {
        self.strs("objectClass").any(|c| c.eq_ignore_ascii_case(class))
    }
}

/// Normalise a DN for equality: RDN attribute types lower-cased, values compared case-insensitively (AD's
/// directory-string rules), insignificant spaces around `,` and `=` removed. Escapes are kept canonical so
/// `CN=Doe\, Jane` and `cn=doe\,  jane` compare equal. Returns `None` for a syntactically broken DN.
pub fn normalize_dn(dn: &str) -> Option<String> {
    let rdns = crate::directory::dn::parse_dn(dn)?;
    Some(crate::directory::dn::format_dn_norm(&rdns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(name: &str, values: &[&str]) -> Attribute {
        Attribute {
            name: name.into(),
            values: values.iter().map(|v| Bytes::from(v.to_string())).collect(),
        }
    }

    #[test]
    fn packed_attributes_read_back_as_given() {
        let photo = Bytes::from(vec![0xFF; PACKED_MAX + 1]);
        let given = vec![
            attr("objectClass", &["top", "person"]),
            Attribute {
                name: "thumbnailPhoto".into(),
                values: vec![Bytes::from_static(b"x"), photo.clone(), Bytes::new()],
            },
            Attribute {
                name: "none".into(),
                values: vec![],
            },
            attr("sn", &["Müller"]),
        ];
        let attrs = Attrs::from(given.clone());
        assert_eq!(attrs.to_vec(), given);
        assert_eq!(attrs.len(), 4);
        let p = attrs.find("THUMBNAILPHOTO").expect("found case-insensitively");
        assert_eq!(p.values.len(), 3);
        assert_eq!(p.values.get(0), Some(&b"x"[..]));
        assert_eq!(
            p.values.get(2),
            Some(&b""[..]),
            "an empty value next to a big one stays empty"
        );
        assert_eq!(p.values.get(3), None);
        let held = p.values.bytes(1).expect("the photo");
        assert_eq!(held.as_ptr(), photo.as_ptr(), "a big value is held, not copied");
        assert!(attrs.find("none").expect("kept").values.is_empty());
        assert_eq!(attrs.find("sn").expect("sn").values, ["Müller"]);
        assert!(attrs.find("cn").is_none());
        let classes = attrs.find("objectClass").expect("classes").values;
        assert_eq!(classes.range(1, 9), ["person"], "clamped to the values there are");
        assert!(classes.range(5, 9).is_empty());
        assert_eq!(classes.take(1), ["top"]);
        assert_eq!(classes.iter().next_back(), Some(&b"person"[..]));
    }

    /// Past the shared table's size, names are held by the entry itself and read back the same.
    #[test]
    fn names_past_the_shared_table_are_kept_per_entry() {
        let given: Vec<Attribute> = (0..MAX_SHARED + 100)
            .map(|i| attr(&format!("x-name-{i}"), &[&i.to_string()]))
            .collect();
        let attrs = Attrs::from(given.clone());
        assert!(!attrs.own_names.is_empty(), "some names were not shared");
        assert_eq!(attrs.to_vec(), given);
        let last = format!("X-NAME-{}", MAX_SHARED + 99);
        assert_eq!(
            attrs.find(&last).expect("found").values,
            [(MAX_SHARED + 99).to_string()]
        );
        assert_eq!(attrs.clone(), attrs);
    }

    #[test]
    fn edits_repack() {
        let mut attrs = Attrs::from(vec![attr("cn", &["a"]), attr("title", &["b"])]);
        attrs.set("TITLE", vec![Bytes::from_static(b"c")]);
        attrs.set("mail", vec![Bytes::from_static(b"m")]);
        attrs.retain(|a| &*a.name != "cn");
        attrs.push(attr("cn", &["z"]));
        assert_eq!(
            attrs.to_vec(),
            vec![attr("title", &["c"]), attr("mail", &["m"]), attr("cn", &["z"])]
        );
    }

    #[test]
    fn sort_keys_are_kept_per_sorted_attribute() {
        let c = Collation::root();
        let attrs = Attrs::from(vec![
            attr("displayName", &["Jörg Schäfer"]),
            attr("givenName", &["Jörg", "Joerg"]),
            attr("SN", &["Schäfer"]),
        ]);
        let keys = SortKeys::of(&attrs, &c);
        let slot = |n: &str| SORTED.iter().position(|s| *s == n).expect(n);
        assert_eq!(keys.get(slot("cn")), None, "absent");
        assert_eq!(keys.get(slot("displayName")), Some(c.key("Jörg Schäfer").as_slice()));
        assert_eq!(
            keys.get(slot("givenName")),
            None,
            "several values are keyed when sorting"
        );
        assert_eq!(
            keys.get(slot("sn")),
            Some(c.key("Schäfer").as_slice()),
            "names compare case-insensitively"
        );
        assert_eq!(keys.get(SORTED.len()), None);
        assert_eq!(SortKeys::default().get(0), None);
    }
}
