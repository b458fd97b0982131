//! The one way into the snapshot's indexes: a [`Query`] tree evaluated to a bitmap of dense entry ids.
//!
//! Front ends compile what a client asked (an LDAP filter, a CardDAV text match) into a `Query`; AND, OR and
//! NOT become bitmap intersection, union and difference, so a phone-book search over a surname thousands of
//! people share costs a few bitmap operations, and the caller walks the result in id order and stops at the
//! page it returns. Index answers are *candidates*: [`Candidates::exact`] says whether every id is known to
//! match; otherwise the caller checks each entry it returns against the full filter.

use crate::directory::bits::{Bits, EntryId};
use crate::directory::dn::parent_norm;
use crate::directory::packed::PackedMap;
use crate::directory::phone::{digits, DigitKey};
use crate::directory::snapshot::{head_key, text_attr_index, trigrams_of, PhoneQuery, Snapshot, HEAD_CHARS};
use bytes::Bytes;
use roaring::RoaringBitmap;

/// A question for the indexes.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// Every entry (an unindexable term: candidates are not exact).
    Scan,
    /// Every entry, and every entry matches (`objectClass=*`).
    All,
    Nothing,
    /// A precomputed set (in-chain membership).
    Ids(RoaringBitmap),
    /// Equality on an indexed attribute ([`Snapshot::is_eq_indexed`]); value as the client sent it.
    Eq(String, Bytes),
    /// The attribute has a value.
    Present(String),
    /// `objectCategory` by its short form (`person`).
    Category(String),
    /// `userAccountControl` with all (`true`) or any (`false`) of the mask's bits set.
    UacBits(u32, bool),
    /// A whole number as its digit key (E.164 digits without `+`), in any phone attribute.
    PhoneKey(String),
    /// Number prefix, suffix or digits anywhere, in any phone attribute.
    PhonePrefix(String),
    PhoneSuffix(String),
    PhoneContains(String),
    /// Values of the name attributes containing this (lower-cased) fragment of three or more characters.
    Text(String),
    /// Values of one name attribute starting with this lower-cased prefix.
    Prefix(String, String),
    /// Direct children of a normalised DN.
    Children(String),
    /// The entry at a normalised DN and everything below it.
    Subtree(String),
    And(Vec<Query>),
    Or(Vec<Query>),
    Not(Box<Query>),
}

/// What the indexes say about a query.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidates {
    /// The ids that may match, in ascending order; `None` for every entry in the snapshot.
    pub ids: Option<RoaringBitmap>,
    /// Whether every id matches (no check needed).
    pub exact: bool,
}

impl Candidates {
    fn some(ids: RoaringBitmap, exact: bool) -> Candidates {
        Candidates { ids: Some(ids), exact }
    }

    fn posting(b: Option<&Bits>, exact: bool) -> Candidates {
        Candidates::some(b.map(Bits::to_bitmap).unwrap_or_default(), exact)
    }

    /// How many ids may match (every entry's count for `None`).
    pub fn len(&self, snap: &Snapshot) -> u64 {
        match &self.ids {
            Some(b) => b.len(),
            None => snap.live.len(),
        }
    }

    pub fn is_empty(&self, snap: &Snapshot) -> bool {
        self.len(snap) == 0
    }

    /// The candidate ids in ascending order, starting after `after`.
    pub fn iter_after<'a>(
        &'a self,
        snap: &'a Snapshot,
        after: Option<EntryId>,
    ) -> Box<dyn Iterator<Item = EntryId> + 'a> {
        let Some(from) = start(after) else {
            return Box::new(std::iter::empty());
        };
        match &self.ids {
            Some(b) => Box::new(b.range(from..)),
            None => Box::new(snap.live.range(from..)),
        }
    }

    /// Like [`Candidates::iter_after`], owning the ids.
    pub fn into_iter_after(self, snap: &Snapshot, after: Option<EntryId>) -> Box<dyn Iterator<Item = EntryId> + '_> {
        let Some(from) = start(after) else {
            return Box::new(std::iter::empty());
        };
        match self.ids {
            Some(b) => Box::new(b.into_range(from..)),
            None => Box::new(snap.live.range(from..)),
        }
    }
}

/// The first id after `after`; `None` when nothing can follow.
fn start(after: Option<EntryId>) -> Option<EntryId> {
    match after {
        None => Some(0),
        Some(a) => a.checked_add(1),
    }
}

impl Snapshot {
    /// Evaluate a query against the indexes.
    pub fn query(&self, q: &Query) -> Candidates {
        eval(self, q)
    }
}

fn eval(s: &Snapshot, q: &Query) -> Candidates {
    match q {
        Query::Scan => Candidates {
            ids: None,
            exact: false,
        },
        Query::All => Candidates { ids: None, exact: true },
        Query::Nothing => Candidates::some(RoaringBitmap::new(), true),
        Query::Ids(b) => Candidates::some(b.clone(), true),
        Query::Eq(attr, value) => match s.eq_posting(attr, value) {
            Some(p) => Candidates::posting(p, true),
            None => Candidates {
                ids: None,
                exact: false,
            },
        },
        Query::Present(attr) => Candidates::posting(s.present.get(&*attr.to_ascii_lowercase()), true),
        Query::Category(c) => Candidates::posting(s.category.get(c.as_str()), true),
        Query::UacBits(mask, all) => uac(s, *mask, *all),
        Query::PhoneKey(k) => Candidates::some(phone(s, PhoneQuery::Key(k)), false),
        Query::PhonePrefix(p) => Candidates::some(phone(s, PhoneQuery::Prefix(p)), false),
        Query::PhoneSuffix(p) => Candidates::some(phone(s, PhoneQuery::Suffix(p)), false),
        Query::PhoneContains(p) => Candidates::some(phone(s, PhoneQuery::Contains(p)), false),
        Query::Text(needle) => text(s, needle),
        Query::Prefix(attr, prefix) => name_prefix(s, attr, prefix),
        Query::Children(dn) => Candidates::posting(s.children.get(dn.as_str()), true),
        Query::Subtree(dn) => subtree(s, dn),
        Query::And(v) => and(s, v),
        Query::Or(v) => or(s, v),
        Query::Not(inner) => {
            let c = eval(s, inner);
            match (c.ids, c.exact) {
                (None, true) => Candidates::some(RoaringBitmap::new(), true),
                (Some(ids), true) => Candidates::some(&*s.live - &ids, true),
                // The complement of a superset says nothing.
                (_, false) => Candidates {
                    ids: None,
                    exact: false,
                },
            }
        }
    }
}

fn and(s: &Snapshot, v: &[Query]) -> Candidates {
    let mut exact = true;
    let mut parts: Vec<RoaringBitmap> = Vec::new();
    for q in v {
        let c = eval(s, q);
        exact &= c.exact;
        match c.ids {
            Some(ids) if ids.is_empty() => return Candidates::some(ids, true),
            Some(ids) => parts.push(ids),
            None => {}
        }
    }
    // Smallest first: every intersection after it is bounded by it.
    parts.sort_by_key(RoaringBitmap::len);
    let mut it = parts.into_iter();
    let Some(mut acc) = it.next() else {
        return Candidates { ids: None, exact };
    };
    for p in it {
        acc &= p;
        if acc.is_empty() {
            break;
        }
    }
    Candidates::some(acc, exact)
}

fn or(s: &Snapshot, v: &[Query]) -> Candidates {
    let mut exact = true;
    let mut acc = RoaringBitmap::new();
    let mut done: Vec<&Query> = Vec::new();
    for q in v {
        // The phone and trigram indexes ignore which attribute asked: `(|(cn=*x*)(sn=*x*))` looks up once.
        if done.contains(&q) {
            continue;
        }
        done.push(q);
        let c = eval(s, q);
        exact &= c.exact;
        match c.ids {
            Some(ids) => acc |= ids,
            None => return Candidates { ids: None, exact },
        }
    }
    Candidates::some(acc, exact)
}

fn uac(s: &Snapshot, mask: u32, all: bool) -> Candidates {
    let bits: Vec<u8> = (0..32u8).filter(|b| mask & (1 << b) != 0).collect();
    if bits.is_empty() {
        // `x & 0 == 0` holds for every value, `x & 0 != 0` for none; entries without the attribute never match.
        return if all {
            Candidates::posting(s.present.get("useraccountcontrol"), true)
        } else {
            Candidates::some(RoaringBitmap::new(), true)
        };
    }
    let mut acc: Option<RoaringBitmap> = None;
    for b in bits {
        let Some(p) = s.uac_bits.get(&b) else {
            if all {
                return Candidates::some(RoaringBitmap::new(), true);
            }
            continue;
        };
        match &mut acc {
            None => acc = Some(p.to_bitmap()),
            Some(a) if all => p.intersect_into(a),
            Some(a) => p.union_into(a),
        }
    }
    Candidates::some(acc.unwrap_or_default(), true)
}

/// Ids with a phone number matching `q`, in any phone attribute.
pub(crate) fn phone(s: &Snapshot, q: PhoneQuery<'_>) -> RoaringBitmap {
    let mut out = RoaringBitmap::new();
    match q {
        PhoneQuery::Key(k) => {
            if let Some(ids) = DigitKey::of(k).and_then(|k| s.phone_fwd.get(&k)) {
                ids.union_into(&mut out);
            }
        }
        PhoneQuery::Exact(raw) => {
            if let Some(ids) = DigitKey::of(&s.phones.key(raw)).and_then(|k| s.phone_fwd.get(&k)) {
                ids.union_into(&mut out);
            }
        }
        PhoneQuery::Prefix(raw) => union_prefix(&s.phone_fwd, DigitKey::of(&s.phones.prefix_key(raw)), &mut out),
        PhoneQuery::Suffix(raw) => union_prefix(&s.phone_rev, DigitKey::reversed(raw), &mut out),
        PhoneQuery::Contains(raw) => {
            let k = digits(raw);
            if !k.is_empty() {
                for (_, ids) in s.phone_fwd.iter().filter(|(key, _)| key.may_contain(k.as_bytes())) {
                    ids.union_into(&mut out);
                }
            }
        }
    }
    out
}

/// Add the ids of every key of `map` that starts with the digits of `prefix` (nothing without digits).
fn union_prefix(map: &PackedMap<DigitKey, Bits>, prefix: Option<DigitKey>, out: &mut RoaringBitmap) {
    let Some(prefix) = prefix else {
        return;
    };
    for (_, ids) in map.range(prefix.extensions()) {
        ids.union_into(out);
    }
}

/// Entries whose name values hold every trigram of `needle` (a superset of those containing it).
fn text(s: &Snapshot, needle: &str) -> Candidates {
    let grams = trigrams_of(&needle.to_lowercase());
    if grams.is_empty() {
        return Candidates {
            ids: None,
            exact: false,
        };
    }
    let mut posts: Vec<&Bits> = Vec::with_capacity(grams.len());
    for g in &grams {
        match s.trigrams.get(g) {
            Some(p) => posts.push(p),
            None => return Candidates::some(RoaringBitmap::new(), true),
        }
    }
    posts.sort_by_key(|p| p.len());
    let mut acc = posts[0].to_bitmap();
    for p in &posts[1..] {
        p.intersect_into(&mut acc);
        if acc.is_empty() {
            break;
        }
    }
    Candidates::some(acc, false)
}

/// Entries with a value of `attr` starting with `prefix`: exact up to [`HEAD_CHARS`] characters (the prefix index's
/// key), narrowed by the trigrams of the rest beyond that.
fn name_prefix(s: &Snapshot, attr: &str, prefix: &str) -> Candidates {
    let lower = prefix.to_lowercase();
    let (Some(ti), Some(head)) = (text_attr_index(attr), head_key(&lower)) else {
        return Candidates {
            ids: None,
            exact: false,
        };
    };
    let Some(p) = s.heads.get(&(ti, head)) else {
        return Candidates::some(RoaringBitmap::new(), true);
    };
    let mut acc = p.to_bitmap();
    if lower.chars().count() <= HEAD_CHARS {
        return Candidates::some(acc, true);
    }
    if let Some(rest) = text(s, &lower).ids {
        acc &= rest;
    }
    Candidates::some(acc, false)
}

fn subtree(s: &Snapshot, dn: &str) -> Candidates {
    if dn == &*s.naming.base_dn_norm {
        return Candidates { ids: None, exact: true };
    }
    let mut out = RoaringBitmap::new();
    let Some(root) = s.id_of_dn(dn) else {
        return Candidates::some(out, true);
    };
    out.insert(root);
    // Only the domain and the containers have children, so the DNs with children are few: take every one at or
    // below `dn` instead of walking the entries.
    for (parent, kids) in s.children.iter() {
        if is_at_or_below(parent, dn) {
            kids.union_into(&mut out);
        }
    }
    Candidates::some(out, true)
}

/// Whether normalised DN `dn` is `top` or below it (by its parents, so escaped commas cannot mislead).
fn is_at_or_below(dn: &str, top: &str) -> bool {
    let mut cur = Some(dn);
    while let Some(d) = cur {
        if d == top {
            return true;
        }
        if d.len() <= top.len() {
            return false;
        }
        cur = parent_norm(d);
    }
    false
}
