//! One AD-style directory entry, as the front ends see it.
//!
//! Entries are immutable and shared (`Arc<Entry>`) between snapshots: a sync round that does not touch an
//! object reuses its entry, so anything derived from an entry (an LDAP encoding, a vCard) can be cached per
//! entry and stays valid as long as the `Arc` is the same (`Arc::ptr_eq`) or `usn_changed` is unchanged.

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
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(n) = names.get(name) {
        return n.clone();
    }
    let n: Arc<str> = name.into();
    names.insert(n.clone());
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
