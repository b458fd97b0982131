//! One AD-style directory entry, as the front ends see it.
//!
//! Entries are immutable and shared (`Arc<Entry>`) between snapshots: a sync round that does not touch an
//! object reuses its entry, so anything derived from an entry (an LDAP encoding, a vCard) can be cached per
//! entry and stays valid as long as the `Arc` is the same (`Arc::ptr_eq`) or `usn_changed` is unchanged.

use crate::directory::collation::{Collation, SORTED};
use bytes::Bytes;
use std::sync::Arc;

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

/// One attribute: its canonical name (as AD spells it, e.g. `telephoneNumber`) and its values. String
/// attributes hold UTF-8; binary ones (`objectGUID`, `objectSid`, `thumbnailPhoto`, `jpegPhoto`) raw bytes.
/// The one shared copy of an attribute name. A tenant's entries use a few dozen names (the mapping's and the
/// computed ones), so each is allocated once for the process rather than once per entry.
pub(crate) fn attr_name(name: &str) -> Arc<str> {
    static NAMES: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<Arc<str>>>> =
        std::sync::OnceLock::new();
    // Names also come from Graph's JSON (property names, nested ones too): past this many, garbage from Graph
    // would only grow the table, so further names are not shared.
    const MAX_SHARED: usize = 4096;
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(n) = names.get(name) {
        return n.clone();
    }
    let n: Arc<str> = name.into();
    if names.len() < MAX_SHARED {
        names.insert(n.clone());
    }
    n
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: Arc<str>,
    pub values: Vec<Bytes>,
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
    pub attrs: Vec<Attribute>,
    /// Collation keys of the names clients sort on, derived from `attrs` when the entry is projected.
    pub sort_keys: SortKeys,
}

/// The collation keys of an entry's [`SORTED`] attributes, packed into one allocation: for each attribute in
/// [`SORTED`]'s order a little-endian `u16` length and the key (`u16::MAX` for none). Only single-valued
/// attributes get a key; a sort over several values (RFC 2891: by the least) keys them when it runs. Empty (`None`) for entries made without a collation, such as the root DSE.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SortKeys(Option<Box<[u8]>>);

impl SortKeys {
    pub(crate) fn of(attrs: &[Attribute], collation: &Collation) -> SortKeys {
        let mut packed = Vec::new();
        for name in SORTED {
            let one =
                attrs
                    .iter()
                    .find(|a| a.name.eq_ignore_ascii_case(name))
                    .and_then(|a| match a.values.as_slice() {
                        [v] => std::str::from_utf8(v).ok(),
                        _ => None,
                    });
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
    pub fn get(&self, name: &str) -> Option<&Attribute> {
        self.attrs.iter().find(|a| a.name.eq_ignore_ascii_case(name))
    }

    /// Values of an attribute (empty when absent).
    pub fn values(&self, name: &str) -> &[Bytes] {
        self.get(name).map(|a| a.values.as_slice()).unwrap_or(&[])
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
    fn sort_keys_are_kept_per_sorted_attribute() {
        let c = Collation::root();
        let attrs = [
            attr("displayName", &["Jörg Schäfer"]),
            attr("givenName", &["Jörg", "Joerg"]),
            attr("SN", &["Schäfer"]),
        ];
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
