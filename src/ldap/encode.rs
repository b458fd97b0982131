//! SearchResultEntry encoding, with a per-entry cache of pre-encoded attributes.
//!
//! Entries are immutable and shared between snapshots (`Arc<Entry>`), so the BER of each attribute is built
//! once and kept until the entry changes (a different `Arc`). A SearchResultEntry for any attribute selection
//! is then a header plus the concatenation of cached attribute encodings — no per-request BER building for the
//! common case. Very large attributes (photos) are not duplicated in the cache; they are encoded on demand.

use super::ber::{header_len, int_octets, put_len, put_tlv};
use crate::directory::entry::{Entry, Values};
use crate::directory::{EntryId, Snapshot};
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;

/// AD's MaxValRange: attributes with more values are returned in ranges (`member;range=0-1499`).
pub const MAX_VAL_RANGE: usize = 1500;

/// Attributes whose total size is above this are encoded per request instead of cached.
const CACHE_ATTR_LIMIT: usize = 4096;

/// One attribute of an [`EncodedEntry`]: where its name and its encoding are.
#[derive(Debug)]
struct EncAttr {
    /// The attribute name as stored (`names[name.0..name.1]`), matched case-insensitively.
    name: (u32, u32),
    /// `SEQUENCE { type, SET OF value }` at `buf[full.0..full.1]`, or `None` when too large to cache.
    full: Option<(u32, u32)>,
}

/// An entry's DN and attributes, pre-encoded. Everything sits in two allocations per entry (the encodings, the
/// names) rather than two or three per attribute: a 100k-entry directory is encoded in full after each publish,
/// and per-attribute buffers cost more than the data. Types-only answers (rare) are encoded per request.
#[derive(Debug)]
pub struct EncodedEntry {
    /// The DN's OCTET STRING at `buf[..dn_len]`, then the attribute encodings.
    buf: Bytes,
    dn_len: u32,
    names: Box<str>,
    attrs: Box<[EncAttr]>,
}

impl EncodedEntry {
    fn dn(&self) -> &[u8] {
        &self.buf[..self.dn_len as usize]
    }

    fn name(&self, a: &EncAttr) -> &str {
        self.names.get(a.name.0 as usize..a.name.1 as usize).unwrap_or_default()
    }

    fn full(&self, a: &EncAttr) -> Option<&[u8]> {
        a.full.map(|(from, to)| &self.buf[from as usize..to as usize])
    }
}

/// The length of a types-only PartialAttribute for `name`.
fn types_only_len(name: &str) -> usize {
    let content = header_len(name.len()) + name.len() + header_len(0);
    header_len(content) + content
}

/// Which attributes a search asked for (RFC 4511 §4.5.1.8 plus AD's ranged retrieval). Made only by
/// [`Selection::new`], which keeps the names distinct and notes whether operational attributes are wanted.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// `*`, or an empty list.
    pub(crate) all_user: bool,
    /// `+`: operational attributes as well.
    pub(crate) operational: bool,
    /// Explicitly named attributes, lower-cased, options stripped.
    pub(crate) names: Vec<String>,
    /// `name;range=lo-hi` requests: (lower-cased name, low, high or None for `*`).
    pub(crate) ranges: Vec<(String, usize, Option<usize>)>,
    pub(crate) types_only: bool,
    /// Whether any [`OPERATIONAL`] attribute is asked for (`+` or by name): most searches ask for none.
    any_operational: bool,
}

/// Attributes we compute per entry rather than store (returned only on request or with `+`).
pub const OPERATIONAL: &[&str] = &[
    "createTimestamp",
    "modifyTimestamp",
    "subschemaSubentry",
    "entryDN",
    "hasSubordinates",
];

impl Selection {
    pub fn new(attrs: &[String], types_only: bool) -> Selection {
        let mut s = Selection {
            types_only,
            ..Selection::default()
        };
        if attrs.is_empty() {
            s.all_user = true;
        }
        for a in attrs {
            let a = a.trim();
            match a {
                "*" => s.all_user = true,
                "+" => s.operational = true,
                // "1.1" means no attributes; it only matters when it is alone, which needs no special case.
                "1.1" | "" => {}
                _ => {
                    let mut parts = a.split(';');
                    let base = parts.next().unwrap_or_default().to_ascii_lowercase();
                    let mut ranged = false;
                    for opt in parts {
                        if let Some(r) = opt.to_ascii_lowercase().strip_prefix("range=") {
                            // A range that is not one leaves the attribute out rather than sending all of it:
                            // a client asking for a slice is not prepared for a few thousand values at once.
                            ranged = true;
                            if let Some((lo, hi)) = parse_range(r) {
                                s.ranges.push((base.clone(), lo, hi));
                            }
                        }
                    }
                    // Each name once: answers stop looking through an entry when all of them are found.
                    if !ranged && !s.names.contains(&base) {
                        s.names.push(base);
                    }
                }
            }
        }
        s.any_operational = s.operational
            || OPERATIONAL
                .iter()
                .any(|op| s.names.iter().any(|n| n.eq_ignore_ascii_case(op)));
        s
    }

    /// Whether answers take the stored attributes from the cached encodings: for `*` (the whole entry, so
    /// copying one prepared buffer beats encoding forty attributes), not for an attribute list, which a phone
    /// book sends and which is cheaper to encode from the entry than to look up in a shared cache.
    pub fn from_cache(&self) -> bool {
        self.all_user
    }

    /// Whether an attribute is selected; `name` in any case (selections are lower-cased).
    fn wants(&self, name: &str) -> bool {
        self.all_user || self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    fn wants_operational(&self, name: &str) -> bool {
        self.operational || self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// `lo-hi` or `lo-*` of a ranged request. `None` when it is not a range, or a reversed one (`5-1`). Bounds
/// beyond `usize` are clamped: a low bound that large is past every attribute, a high bound that large is `*`.
fn parse_range(r: &str) -> Option<(usize, Option<usize>)> {
    let (lo, hi) = r.split_once('-')?;
    let bound = |v: &str| -> Option<usize> {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(v.parse::<usize>().unwrap_or(usize::MAX))
    };
    let lo = bound(lo)?;
    let hi = match hi {
        "*" => None,
        h => Some(bound(h)?).filter(|h| *h != usize::MAX),
    };
    match hi {
        Some(h) if h < lo => None,
        h => Some((lo, h)),
    }
}

/// The name AD gives the first MaxValRange values of an attribute asked for without a range.
fn ranged_name(name: &str) -> String {
    format!("{name};range=0-{}", MAX_VAL_RANGE - 1)
}

/// The length of `SEQUENCE { type, SET OF value }` for the given values.
fn partial_attribute_len<V: AsRef<[u8]>>(name: &str, values: impl IntoIterator<Item = V>) -> usize {
    let set_len = set_len(values);
    let content = header_len(name.len()) + name.len() + header_len(set_len) + set_len;
    header_len(content) + content
}

/// Encode `SEQUENCE { type, SET OF value }` for the given values.
fn partial_attribute<V: AsRef<[u8]>, I: IntoIterator<Item = V> + Clone>(out: &mut BytesMut, name: &str, values: I) {
    let set_len = set_len(values.clone());
    let content = header_len(name.len()) + name.len() + header_len(set_len) + set_len;
    out.reserve(header_len(content) + content);
    out.put_u8(0x30);
    put_len(out, content);
    put_tlv(out, 0x04, name.as_bytes());
    out.put_u8(0x31);
    put_len(out, set_len);
    for v in values {
        put_tlv(out, 0x04, v.as_ref());
    }
}

/// The length of the `SET OF value` content.
fn set_len<V: AsRef<[u8]>>(values: impl IntoIterator<Item = V>) -> usize {
    values
        .into_iter()
        .map(|v| header_len(v.as_ref().len()) + v.as_ref().len())
        .sum()
}

fn encode_attr_bytes<V: AsRef<[u8]>, I: IntoIterator<Item = V> + Clone>(name: &str, values: I) -> Bytes {
    let mut b = BytesMut::new();
    partial_attribute(&mut b, name, values);
    b.freeze()
}

impl EncodedEntry {
    pub fn new(e: &Entry) -> EncodedEntry {
        let mut buf = BytesMut::new();
        put_tlv(&mut buf, 0x04, e.dn.as_bytes());
        let dn_len = buf.len() as u32;
        let mut names = String::new();
        let mut attrs = Vec::with_capacity(e.attrs.len() + 1);
        let mut add = |buf: &mut BytesMut, name: &str, encode: Option<&dyn Fn(&mut BytesMut)>| {
            let from = names.len() as u32;
            names.push_str(name);
            let full = encode.map(|f| {
                let start = buf.len() as u32;
                f(buf);
                (start, buf.len() as u32)
            });
            attrs.push(EncAttr {
                name: (from, names.len() as u32),
                full,
            });
        };
        for a in &e.attrs {
            if a.values.is_empty() {
                continue;
            }
            let size = a.values.byte_len();
            if a.values.len() > MAX_VAL_RANGE {
                // Asked for without a range, AD returns the first MaxValRange values as `name;range=0-1499`.
                let ranged = ranged_name(a.name);
                add(
                    &mut buf,
                    a.name,
                    Some(&|b: &mut BytesMut| partial_attribute(b, &ranged, a.values.take(MAX_VAL_RANGE).iter())),
                );
            } else if size <= CACHE_ATTR_LIMIT {
                add(
                    &mut buf,
                    a.name,
                    Some(&|b: &mut BytesMut| partial_attribute(b, a.name, a.values.iter())),
                );
            } else {
                add(&mut buf, a.name, None);
            }
        }
        if e.get("distinguishedName").is_none() {
            let v = [Bytes::copy_from_slice(e.dn.as_bytes())];
            add(
                &mut buf,
                "distinguishedName",
                Some(&|b: &mut BytesMut| partial_attribute(b, "distinguishedName", &v)),
            );
        }
        EncodedEntry {
            // Copied to its exact size: a grown buffer keeps up to twice the bytes, for every cached entry.
            buf: Bytes::from(buf.to_vec()),
            dn_len,
            names: names.into_boxed_str(),
            attrs: attrs.into_boxed_slice(),
        }
    }
}

impl EncodedEntry {
    /// Heap bytes this encoding holds, for the cache's budget.
    fn weight(&self) -> u64 {
        (self.buf.len() + self.names.len() + self.attrs.len() * size_of::<EncAttr>() + 96) as u64
    }
}

/// What the cache keeps per entry: the entry it was made from (an encoding is valid while that `Arc` is the
/// entry's) and the encoding.
#[derive(Clone)]
struct Cached(Arc<Entry>, Arc<EncodedEntry>);

#[derive(Clone)]
struct ByBytes;

impl quick_cache::Weighter<EntryId, Cached> for ByBytes {
    fn weight(&self, _: &EntryId, v: &Cached) -> u64 {
        v.1.weight()
    }
}

/// The default budget of [`EntryCache`]: every entry of a 20k-user tenant, the most-used fifth of a 100k one.
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

/// Pre-encoded entries by dense entry id, valid while the entry `Arc` is the same, within a byte budget.
///
/// Used for whole-entry answers (`*`, see [`Selection::from_cache`]): holding every encoding would cost a third
/// of the entries' own memory again, so the cache keeps the entries such searches return, evicting by
/// quick_cache's CLOCK-PRO, and encodes the others when a search needs them.
pub struct EntryCache {
    map: quick_cache::sync::Cache<EntryId, Cached, ByBytes>,
}

impl Default for EntryCache {
    fn default() -> EntryCache {
        EntryCache::with_budget(DEFAULT_CACHE_BYTES)
    }
}

impl EntryCache {
    pub fn new() -> EntryCache {
        EntryCache::default()
    }

    /// A cache of at most `bytes` of encodings (0: none kept).
    pub fn with_budget(bytes: u64) -> EntryCache {
        // quick_cache sizes its tables from an item estimate; a synced entry encodes to about 2.5 KiB.
        let items = usize::try_from(bytes / 2500).unwrap_or(usize::MAX).clamp(16, 1 << 22);
        // Each shard gets its part of the budget: a fixed few (not quick_cache's four per CPU) so that on a
        // large host a big group's encoding still fits one.
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(items)
            .weight_capacity(bytes)
            .shards(8)
            .build();
        let map = match options {
            Ok(o) => quick_cache::sync::Cache::with_options(o, ByBytes, Default::default(), Default::default()),
            Err(_) => quick_cache::sync::Cache::with_weighter(items, bytes, ByBytes),
        };
        EntryCache { map }
    }

    /// The encoding of `e` (the entry with dense id `id`), built now if the cache holds none or an older
    /// version.
    pub fn get(&self, id: EntryId, e: &Arc<Entry>) -> Arc<EncodedEntry> {
        if let Some(hit) = self.map.get(&id) {
            if Arc::ptr_eq(&hit.0, e) {
                return hit.1;
            }
        }
        self.put(id, e)
    }

    fn put(&self, id: EntryId, e: &Arc<Entry>) -> Arc<EncodedEntry> {
        let enc = Arc::new(EncodedEntry::new(e));
        self.map.insert(id, Cached(e.clone(), enc.clone()));
        enc
    }

    /// Bring the cache from snapshot `prev` (which it was last brought to) to `snap`, in proportion to the
    /// change: drop what was removed, re-encode what changed and was cached (so a lookup of a busy caller never
    /// pays for a change), leave the rest to be encoded when asked for. Without a usable `prev` (the first
    /// snapshot, a renamed base DN or a new collation, history older than `snap` keeps) every cached entry is
    /// checked and those no longer current are dropped.
    pub fn advance(&self, prev: Option<&Snapshot>, snap: &Snapshot) {
        // A new naming context or collation made every entry anew (without a change of version).
        let changes = prev
            .filter(|p| Arc::ptr_eq(&p.naming, &snap.naming) && Arc::ptr_eq(&p.collation, &snap.collation))
            .and_then(|p| snap.changes_since(p.version).map(|c| (p, c)));
        let Some((prev, changes)) = changes else {
            // Nothing is encoded ahead: phone books and PBXs ask for attribute lists, which are encoded from
            // the entry; the cache fills with the whole entries that searches for `*` return.
            self.map
                .retain(|id, c| snap.get(*id).is_some_and(|cur| Arc::ptr_eq(cur, &c.0)));
            return;
        };
        for (gone, _) in &changes.removed {
            if let Some(id) = prev.id_of(gone) {
                if snap.get(id).is_none() {
                    self.map.remove(&id);
                }
            }
        }
        for e in changes.changed {
            if let Some(id) = snap.id_of(&e.id) {
                match self.map.peek(&id) {
                    Some(hit) if Arc::ptr_eq(&hit.0, e) => {}
                    Some(_) => {
                        self.put(id, e);
                    }
                    None => {}
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes of encodings held.
    pub fn weight(&self) -> u64 {
        self.map.weight()
    }
}

/// Values of computed operational attributes for an entry.
fn operational_values(e: &Entry, name_lower: &str, subschema_dn: &str, snap: Option<&Snapshot>) -> Option<Vec<Bytes>> {
    let v: Vec<Bytes> = match name_lower {
        "createtimestamp" => e.values("whenCreated").to_vec(),
        "modifytimestamp" => e.values("whenChanged").to_vec(),
        "subschemasubentry" => vec![Bytes::copy_from_slice(subschema_dn.as_bytes())],
        "entrydn" => vec![Bytes::copy_from_slice(e.dn.as_bytes())],
        "hassubordinates" => {
            let has = snap.is_some_and(|s| s.children(&e.dn_norm).next().is_some());
            vec![Bytes::from_static(if has { b"TRUE" } else { b"FALSE" })]
        }
        _ => return None,
    };
    (!v.is_empty()).then_some(v)
}

/// Append one SearchResultEntry for `e` to `out`, its stored attributes copied from `enc`.
pub fn write_entry(
    out: &mut BytesMut,
    msgid: i64,
    e: &Entry,
    enc: &EncodedEntry,
    sel: &Selection,
    subschema_dn: &str,
    snap: Option<&Snapshot>,
) {
    // Cached attribute encodings are copied straight into `out`; the rare uncached ones (photos, ranges,
    // operational attributes) are built into `extra` first.
    let mut extra: Vec<Bytes> = Vec::new();
    let mut cached_len = 0usize;
    for a in enc.attrs.iter().filter(|a| sel.wants(enc.name(a))) {
        match (enc.full(a), sel.types_only) {
            (_, true) => cached_len += types_only_len(enc.name(a)),
            (Some(b), false) => cached_len += b.len(),
            (None, false) => {
                if let Some(attr) = e.attrs.find(enc.name(a)) {
                    extra.push(encode_attr_bytes(attr.name, attr.values));
                }
            }
        }
    }
    extra.extend(extras(e, sel, subschema_dn, snap, |name| {
        enc.attrs.iter().any(|a| enc.name(a).eq_ignore_ascii_case(name))
    }));
    let attrs_len: usize = cached_len + extra.iter().map(|p| p.len()).sum::<usize>();
    put_entry_header(out, msgid, Dn::Encoded(enc.dn()), attrs_len);
    for a in enc.attrs.iter().filter(|a| sel.wants(enc.name(a))) {
        match (enc.full(a), sel.types_only) {
            (_, true) => partial_attribute(out, enc.name(a), Values::none()),
            (Some(b), false) => out.put_slice(b),
            (None, false) => {}
        }
    }
    for p in &extra {
        out.put_slice(p);
    }
}

/// Append one SearchResultEntry for `e` to `out`, encoded from the entry (see [`Selection::from_cache`]): the
/// same bytes as [`write_entry`] with the entry's [`EncodedEntry`].
pub fn write_entry_direct(
    out: &mut BytesMut,
    msgid: i64,
    e: &Entry,
    sel: &Selection,
    subschema_dn: &str,
    snap: Option<&Snapshot>,
) {
    // The selected attributes are marked in a bitmask on the stack: this runs for every entry a phone book
    // returns, and walking the attributes once is most of its cost.
    const MAX_ATTRS: usize = 256;
    if e.attrs.len() > MAX_ATTRS {
        return write_entry(out, msgid, e, &EncodedEntry::new(e), sel, subschema_dn, snap);
    }
    let mut in_place = [0u64; MAX_ATTRS / 64];
    let mut attrs_len = 0usize;
    // As `EncodedEntry::new` lays them out: a big attribute's first MaxValRange values under a ranged name in
    // its place, values too large to cache after everything else, `distinguishedName` even where the entry
    // does not store it.
    let mut extra: Vec<Bytes> = Vec::new();
    // Names are unique in an entry: once every listed one is found, the rest of the entry is not looked at.
    let mut unseen = if sel.all_user { usize::MAX } else { sel.names.len() };
    for (i, a) in e.attrs.iter().enumerate() {
        if unseen == 0 {
            break;
        }
        if !sel.wants(a.name) {
            continue;
        }
        unseen -= 1;
        if a.values.is_empty() {
            continue;
        }
        if sel.types_only {
            attrs_len += types_only_len(a.name);
        } else if a.values.len() > MAX_VAL_RANGE {
            attrs_len += partial_attribute_len(&ranged_name(a.name), a.values.take(MAX_VAL_RANGE));
        } else {
            if a.values.byte_len() > CACHE_ATTR_LIMIT {
                extra.push(encode_attr_bytes(a.name, a.values));
                continue;
            }
            attrs_len += partial_attribute_len(a.name, a.values);
        }
        in_place[i / 64] |= 1 << (i % 64);
    }
    let synth_dn = (sel.wants("distinguishedName") && e.get("distinguishedName").is_none())
        .then(|| [Bytes::copy_from_slice(e.dn.as_bytes())]);
    let dn_values = synth_dn.as_ref().map(|v| if sel.types_only { &[][..] } else { &v[..] });
    if let Some(v) = dn_values {
        attrs_len += partial_attribute_len("distinguishedName", v);
    }
    extra.extend(extras(e, sel, subschema_dn, snap, |name| {
        e.get(name).is_some_and(|a| !a.values.is_empty())
    }));
    attrs_len += extra.iter().map(|p| p.len()).sum::<usize>();
    put_entry_header(out, msgid, Dn::Value(e.dn.as_bytes()), attrs_len);
    for (w, word) in in_place.iter().enumerate() {
        let mut bits = *word;
        while bits != 0 {
            let i = w * 64 + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let Some(a) = e.attrs.get(i) else { break };
            if sel.types_only {
                partial_attribute(out, a.name, Values::none());
            } else if a.values.len() > MAX_VAL_RANGE {
                partial_attribute(out, &ranged_name(a.name), a.values.take(MAX_VAL_RANGE));
            } else {
                partial_attribute(out, a.name, a.values);
            }
        }
    }
    if let Some(v) = dn_values {
        partial_attribute(out, "distinguishedName", v);
    }
    for p in &extra {
        out.put_slice(p);
    }
}

/// The attributes an answer builds per request whatever the cache holds: ranged retrievals and the computed
/// operational attributes (those `stored` does not already have). Empty, without allocating, for most searches.
fn extras(
    e: &Entry,
    sel: &Selection,
    subschema_dn: &str,
    snap: Option<&Snapshot>,
    stored: impl Fn(&str) -> bool,
) -> Vec<Bytes> {
    let mut extra: Vec<Bytes> = Vec::new();
    for (key, lo, hi) in &sel.ranges {
        let Some(attr) = e.attrs.find(key) else {
            continue;
        };
        let n = attr.values.len();
        if *lo >= n && n > 0 {
            continue;
        }
        let want_hi = hi.unwrap_or(usize::MAX).min(lo.saturating_add(MAX_VAL_RANGE - 1));
        let last = want_hi.min(n.saturating_sub(1));
        if last < *lo && n > 0 {
            // Only a reversed range gets here, and `Selection::new` drops those; never slice backwards.
            continue;
        }
        let name = if last + 1 >= n {
            format!("{};range={lo}-*", attr.name)
        } else {
            format!("{};range={lo}-{last}", attr.name)
        };
        let vals = match sel.types_only {
            true => Values::none(),
            false => attr.values.range(*lo, last + 1),
        };
        extra.push(encode_attr_bytes(&name, vals));
    }
    if !sel.any_operational {
        return extra;
    }
    for op in OPERATIONAL {
        if !sel.wants_operational(op) || stored(op) {
            continue;
        }
        if let Some(v) = operational_values(e, &op.to_ascii_lowercase(), subschema_dn, snap) {
            let v = if sel.types_only { &v[..0] } else { &v[..] };
            extra.push(encode_attr_bytes(op, v));
        }
    }
    extra
}

/// An entry's DN for [`put_entry_header`].
enum Dn<'a> {
    /// Already encoded as an OCTET STRING.
    Encoded(&'a [u8]),
    /// The DN's bytes, to be encoded.
    Value(&'a [u8]),
}

/// The LDAPMessage and SearchResultEntry headers and the DN, for `attrs_len` bytes of attributes to follow.
fn put_entry_header(out: &mut BytesMut, msgid: i64, dn: Dn<'_>, attrs_len: usize) {
    let dn_len = match dn {
        Dn::Encoded(b) => b.len(),
        Dn::Value(v) => header_len(v.len()) + v.len(),
    };
    let op_content = dn_len + header_len(attrs_len) + attrs_len;
    let id = int_octets(msgid);
    let msg_content = 2 + id.len() + header_len(op_content) + op_content;
    out.reserve(header_len(msg_content) + msg_content);
    out.put_u8(0x30);
    put_len(out, msg_content);
    put_tlv(out, 0x02, &id);
    out.put_u8(0x64);
    put_len(out, op_content);
    match dn {
        Dn::Encoded(b) => out.put_slice(b),
        Dn::Value(v) => put_tlv(out, 0x04, v),
    }
    out.put_u8(0x30);
    put_len(out, attrs_len);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::entry::Attribute;
    use crate::ldap::filter::tests::sample;
    use ldap3_proto::proto::LdapOp;
    use tokio_util::codec::Decoder;

    fn decode(mut b: BytesMut) -> ldap3_proto::proto::LdapSearchResultEntry {
        match ldap3_proto::LdapCodec::new(Some(1 << 24), None)
            .decode(&mut b)
            .unwrap()
            .unwrap()
            .op
        {
            LdapOp::SearchResultEntry(e) => e,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A cache smaller than the directory keeps within its budget and still serves every entry (encoded when
    /// asked for); one of no bytes keeps nothing.
    #[test]
    fn the_cache_stays_within_its_budget() {
        let s1 = sample();
        let one = EncodedEntry::new(s1.entries().next().unwrap()).weight();
        let cache = EntryCache::with_budget(one * 2);
        cache.advance(None, &s1);
        assert!(
            cache.weight() <= one * 2 && cache.len() < s1.len(),
            "{} entries",
            cache.len()
        );
        for (id, e) in s1.entries_with_ids() {
            let enc = cache.get(id, e);
            assert_eq!(enc.dn(), EncodedEntry::new(e).dn());
            assert!(cache.weight() <= one * 3, "{}", cache.weight());
        }
        let none = EntryCache::with_budget(0);
        none.advance(None, &s1);
        let (id, e) = s1.entries_with_ids().next().unwrap();
        none.get(id, e);
        assert_eq!(none.len(), 0);
    }

    /// After a publish the cache re-encodes what changed and drops what was removed, and nothing else.
    #[test]
    fn cache_advances_in_proportion_to_the_change() {
        let s1 = sample();
        let cache = EntryCache::new();
        cache.advance(None, &s1);
        assert!(cache.is_empty(), "nothing is encoded ahead");
        for (id, e) in s1.entries_with_ids() {
            cache.get(id, e);
        }
        assert_eq!(cache.len(), s1.len());
        let get = |s: &Snapshot, id: &str| cache.get(s.id_of(id).unwrap(), s.entry(id).unwrap());
        let untouched = get(&s1, "0002");
        let mut s2 = s1.next();
        let mut jane = Entry::clone(s1.entry("0001").unwrap());
        jane.usn_changed = s2.version;
        jane.attrs.push(Attribute {
            name: "title".into(),
            values: vec![Bytes::from_static(b"CEO")],
        });
        s2.upsert(Arc::new(jane));
        s2.remove("0003");
        cache.advance(Some(&s1), &s2);
        assert_eq!(cache.len(), s2.len(), "the removed entry's encoding is gone");
        let enc = get(&s2, "0001");
        assert!(Arc::ptr_eq(&enc, &get(&s2, "0001")));
        assert!(enc.buf.windows(3).any(|w| w == b"CEO"), "re-encoded with the new title");
        assert!(
            Arc::ptr_eq(&untouched, &get(&s2, "0002")),
            "an unchanged entry keeps its encoding"
        );
    }

    #[test]
    fn selections_and_cache_hits() {
        let snap = sample();
        let cache = EntryCache::new();
        let e = snap.entry("0001").unwrap();
        let id = snap.id_of("0001").unwrap();
        let enc = cache.get(id, e);
        assert!(Arc::ptr_eq(&enc, &cache.get(id, e)), "second lookup must hit the cache");
        let mut out = BytesMut::new();
        let sel = Selection::new(&["CN".into(), "mobile".into(), "objectGUID".into(), "+".into()], false);
        write_entry(&mut out, 3, e, &enc, &sel, "CN=Aggregate", Some(&snap));
        let r = decode(out);
        assert_eq!(r.dn, "CN=Jane Doe,CN=Users,DC=contoso,DC=example");
        let names: Vec<&str> = r.attributes.iter().map(|a| a.atype.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "cn",
                "mobile",
                "objectGUID",
                "subschemaSubentry",
                "entryDN",
                "hasSubordinates"
            ]
        );
        assert_eq!(r.attributes[2].vals[0][1], 0xff);

        let mut out = BytesMut::new();
        write_entry(&mut out, 3, e, &enc, &Selection::new(&["1.1".into()], false), "", None);
        assert!(decode(out).attributes.is_empty());
        let mut out = BytesMut::new();
        write_entry(&mut out, 3, e, &enc, &Selection::new(&[], true), "", None);
        let r = decode(out);
        assert!(r.attributes.len() > 10 && r.attributes.iter().all(|a| a.vals.is_empty()));
    }

    /// The two ways of writing an entry (from the cache for `*`, from the entry for attribute lists) give the
    /// same bytes for every selection: names in any case, ranges, operational attributes, types only, on
    /// entries with a big group's members, a photo too large to cache, an empty attribute and no stored DN.
    #[test]
    fn direct_and_cached_encodings_are_the_same_bytes() {
        let mut entries: Vec<Entry> = sample().entries().map(|e| Entry::clone(e)).collect();
        let mut g = crate::ldap::filter::tests::entry("g", crate::directory::EntryKind::Group, "CN=g,DC=x", &[]);
        g.attrs.push(Attribute {
            name: "member".into(),
            values: (0..1600).map(|i| Bytes::from(format!("CN=u{i},DC=x"))).collect(),
        });
        g.attrs.push(Attribute {
            name: "thumbnailPhoto".into(),
            values: vec![Bytes::from(vec![0xffu8; 9000])],
        });
        g.attrs.push(Attribute {
            name: "description".into(),
            values: vec![],
        });
        g.attrs.push(Attribute {
            name: "cn".into(),
            values: vec![Bytes::from_static(b"g")],
        });
        entries.push(g);
        let lists: &[&[&str]] = &[
            &[],
            &["*"],
            &["1.1"],
            &["cn"],
            &["CN", "telephoneNumber", "mobile"],
            &["member"],
            &["member;range=0-9", "cn"],
            &["member;range=1500-*"],
            &["thumbnailPhoto", "distinguishedName"],
            &["DistinguishedName"],
            &["description", "objectClass"],
            &["+"],
            &["*", "+"],
            &[
                "entryDN",
                "hasSubordinates",
                "modifyTimestamp",
                "createTimestamp",
                "subschemaSubentry",
            ],
            &["objectGUID", "objectSid", "memberOf", "nothing"],
        ];
        let snap = sample();
        for e in &entries {
            let enc = EncodedEntry::new(e);
            for list in lists {
                for types_only in [false, true] {
                    let sel = Selection::new(&list.iter().map(|a| a.to_string()).collect::<Vec<_>>(), types_only);
                    let mut cached = BytesMut::new();
                    write_entry(&mut cached, 7, e, &enc, &sel, "CN=Aggregate", Some(&snap));
                    let mut direct = BytesMut::new();
                    write_entry_direct(&mut direct, 7, e, &sel, "CN=Aggregate", Some(&snap));
                    assert_eq!(cached, direct, "{} with {list:?}, types only {types_only}", e.dn);
                    decode(direct);
                }
            }
        }
    }

    #[test]
    fn big_groups_come_in_ranges() {
        let members: Vec<Bytes> = (0..3200).map(|i| Bytes::from(format!("CN=u{i},DC=x"))).collect();
        let mut e = crate::ldap::filter::tests::entry("g", crate::directory::EntryKind::Group, "CN=g,DC=x", &[]);
        e.attrs.push(Attribute {
            name: "member".into(),
            values: members,
        });
        let e = Arc::new(e);
        let enc = EncodedEntry::new(&e);
        let get = |attrs: &[&str]| {
            let mut out = BytesMut::new();
            let sel = Selection::new(&attrs.iter().map(|s| s.to_string()).collect::<Vec<_>>(), false);
            write_entry(&mut out, 1, &e, &enc, &sel, "", None);
            decode(out)
                .attributes
                .into_iter()
                .find(|a| a.atype.starts_with("member"))
                .unwrap()
        };
        let a = get(&["member"]);
        assert_eq!((a.atype.as_str(), a.vals.len()), ("member;range=0-1499", 1500));
        let a = get(&["member;range=1500-*"]);
        assert_eq!((a.atype.as_str(), a.vals.len()), ("member;range=1500-2999", 1500));
        let a = get(&["member;range=3000-*"]);
        assert_eq!((a.atype.as_str(), a.vals.len()), ("member;range=3000-*", 200));
        assert_eq!(a.vals[0], b"CN=u3000,DC=x".to_vec());
        let a = get(&["member;range=10-99999999999999999999999"]);
        assert_eq!(
            (a.atype.as_str(), a.vals.len()),
            ("member;range=10-1509", 1500),
            "huge high bound"
        );
    }

    /// `member;range=5-1` and `objectClass;range=3-1` once sliced `lo..=hi` backwards and panicked the worker.
    /// Reversed, malformed and past-the-end ranges leave the attribute out; the rest of the entry is sent.
    #[test]
    fn reversed_and_odd_ranges_leave_the_attribute_out() {
        let members: Vec<Bytes> = (0..10).map(|i| Bytes::from(format!("CN=u{i},DC=x"))).collect();
        let mut e = crate::ldap::filter::tests::entry("g", crate::directory::EntryKind::Group, "CN=g,DC=x", &[]);
        e.attrs.push(Attribute {
            name: "cn".into(),
            values: vec![Bytes::from("g")],
        });
        e.attrs.push(Attribute {
            name: "objectClass".into(),
            values: ["top", "group"].map(Bytes::from).to_vec(),
        });
        e.attrs.push(Attribute {
            name: "member".into(),
            values: members,
        });
        let e = Arc::new(e);
        let enc = EncodedEntry::new(&e);
        for range in [
            "member;range=5-1",
            "member;range=3-0",
            "member;range=x-3",
            "member;range=-3",
            "member;range=3",
            "member;range=10-*",
            "member;range=99999999999999999999999-*",
            "member;range=99999999999999999999999-1",
            "objectClass;range=3-1",
        ] {
            let mut out = BytesMut::new();
            let sel = Selection::new(&[range.to_string(), "cn".to_string()], false);
            write_entry(&mut out, 1, &e, &enc, &sel, "", None);
            let r = decode(out);
            let names: Vec<&str> = r.attributes.iter().map(|a| a.atype.as_str()).collect();
            assert_eq!(names, vec!["cn"], "{range}");
        }
    }
}
