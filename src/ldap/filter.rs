//! Search filters: decoding from BER (binary-safe), compilation against a snapshot, evaluation with AD's
//! matching semantics, and the index plan that picks candidates so common PBX queries never scan.
//!
//! A [`Filter`] is what the client sent. [`Compiled`] is the same filter bound to one snapshot: values are
//! lower-cased once, phone numbers turned into digit keys, `anr` expanded, `objectCategory` short forms
//! resolved, and in-chain (`1.2.840.113556.1.4.1941`) membership computed into id sets. Index results are only
//! candidates; every candidate is checked with [`Compiled::matches`].

use super::ber::{BerError, Tlv};
use crate::directory::dn::parse_dn;
use crate::directory::entry::{normalize_dn, Entry};
use crate::directory::phone::{digits, is_phone_attr};
use crate::directory::snapshot::{is_binary_attr, TEXT_INDEXED};
use crate::directory::{Candidates, Query, Snapshot};
use bytes::Bytes;
use roaring::RoaringBitmap;
use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// Deepest filter nesting we accept; deeper is a protocol error, not a stack overflow.
const MAX_DEPTH: usize = 64;

pub const RULE_BIT_AND: &str = "1.2.840.113556.1.4.803";
pub const RULE_BIT_OR: &str = "1.2.840.113556.1.4.804";
pub const RULE_IN_CHAIN: &str = "1.2.840.113556.1.4.1941";

/// Attributes holding DNs: compared as DNs, not strings.
const DN_ATTRS: &[&str] = &[
    "member",
    "memberOf",
    "manager",
    "directReports",
    "distinguishedName",
    "managedBy",
    "objectCategory",
];

/// Attributes `anr` searches by prefix (all substring-indexed, so `anr` is answered from the index).
const ANR_ATTRS: &[&str] = &["displayName", "givenName", "sn", "sAMAccountName", "mail", "cn"];

pub fn is_dn_attr(attr: &str) -> bool {
    DN_ATTRS.iter().any(|a| a.eq_ignore_ascii_case(attr))
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Substrings {
    pub initial: Option<Bytes>,
    pub any: Vec<Bytes>,
    pub final_: Option<Bytes>,
}

/// A filter as received (RFC 4511 §4.5.1), values as raw octets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Eq(String, Bytes),
    Sub(String, Substrings),
    Ge(String, Bytes),
    Le(String, Bytes),
    Present(String),
    Approx(String, Bytes),
    Ext {
        rule: Option<String>,
        attr: Option<String>,
        value: Bytes,
        dn_attrs: bool,
    },
}

fn utf8(b: Bytes) -> Result<String, BerError> {
    String::from_utf8(b.to_vec()).map_err(|_| BerError::Malformed("attribute description"))
}

impl Filter {
    /// Decode a filter element. Attribute descriptions must be UTF-8; values may be anything.
    pub fn decode(t: &Tlv, depth: usize) -> Result<Filter, BerError> {
        if depth > MAX_DEPTH {
            return Err(BerError::TooDeep);
        }
        let ava = |t: &Tlv| -> Result<(String, Bytes), BerError> {
            let mut r = t.reader();
            Ok((r.string(0x04)?, r.octets(0x04)?))
        };
        Ok(match t.tag {
            0xa0 | 0xa1 => {
                let mut r = t.reader();
                let mut v = Vec::new();
                while !r.is_empty() {
                    v.push(Filter::decode(&r.next_tlv()?, depth + 1)?);
                }
                if t.tag == 0xa0 {
                    Filter::And(v)
                } else {
                    Filter::Or(v)
                }
            }
            0xa2 => {
                let mut r = t.reader();
                let inner = Filter::decode(&r.next_tlv()?, depth + 1)?;
                Filter::Not(Box::new(inner))
            }
            0xa3 => {
                let (a, v) = ava(t)?;
                Filter::Eq(a, v)
            }
            0xa4 => {
                let mut r = t.reader();
                let attr = r.string(0x04)?;
                let mut parts = r.expect(0x30)?.reader();
                let mut s = Substrings::default();
                let mut n = 0;
                while !parts.is_empty() {
                    let p = parts.next_tlv()?;
                    match p.tag {
                        0x80 if n == 0 => s.initial = Some(p.value),
                        0x81 if s.final_.is_none() => s.any.push(p.value),
                        0x82 if s.final_.is_none() => s.final_ = Some(p.value),
                        _ => return Err(BerError::Malformed("substring filter")),
                    }
                    n += 1;
                }
                if n == 0 {
                    return Err(BerError::Malformed("empty substring filter"));
                }
                Filter::Sub(attr, s)
            }
            0xa5 => {
                let (a, v) = ava(t)?;
                Filter::Ge(a, v)
            }
            0xa6 => {
                let (a, v) = ava(t)?;
                Filter::Le(a, v)
            }
            0x87 => Filter::Present(utf8(t.value.clone())?),
            0xa8 => {
                let (a, v) = ava(t)?;
                Filter::Approx(a, v)
            }
            0xa9 => {
                let mut r = t.reader();
                let rule = r.optional(0x81)?.map(|t| utf8(t.value)).transpose()?;
                let attr = r.optional(0x82)?.map(|t| utf8(t.value)).transpose()?;
                let value = r.octets(0x83)?;
                let dn_attrs = r
                    .optional(0x84)?
                    .is_some_and(|t| t.value.first().is_some_and(|b| *b != 0));
                if rule.is_none() && attr.is_none() {
                    return Err(BerError::Malformed("extensible match without rule or type"));
                }
                Filter::Ext {
                    rule,
                    attr,
                    value,
                    dn_attrs,
                }
            }
            _ => return Err(BerError::Malformed("filter choice")),
        })
    }

    /// Encode back to BER (used by tests and the load tool to build requests).
    pub fn encode(&self, out: &mut bytes::BytesMut) {
        use super::ber::{put_constructed, put_tlv};
        let ava = |out: &mut bytes::BytesMut, tag: u8, a: &str, v: &[u8]| {
            put_constructed(out, tag, |o| {
                put_tlv(o, 0x04, a.as_bytes());
                put_tlv(o, 0x04, v);
            })
        };
        match self {
            Filter::And(v) | Filter::Or(v) => {
                let tag = if matches!(self, Filter::And(_)) { 0xa0 } else { 0xa1 };
                put_constructed(out, tag, |o| v.iter().for_each(|f| f.encode(o)));
            }
            Filter::Not(f) => put_constructed(out, 0xa2, |o| f.encode(o)),
            Filter::Eq(a, v) => ava(out, 0xa3, a, v),
            Filter::Ge(a, v) => ava(out, 0xa5, a, v),
            Filter::Le(a, v) => ava(out, 0xa6, a, v),
            Filter::Approx(a, v) => ava(out, 0xa8, a, v),
            Filter::Present(a) => put_tlv(out, 0x87, a.as_bytes()),
            Filter::Sub(a, s) => put_constructed(out, 0xa4, |o| {
                put_tlv(o, 0x04, a.as_bytes());
                put_constructed(o, 0x30, |p| {
                    if let Some(i) = &s.initial {
                        put_tlv(p, 0x80, i);
                    }
                    s.any.iter().for_each(|x| put_tlv(p, 0x81, x));
                    if let Some(f) = &s.final_ {
                        put_tlv(p, 0x82, f);
                    }
                })
            }),
            Filter::Ext {
                rule,
                attr,
                value,
                dn_attrs,
            } => put_constructed(out, 0xa9, |o| {
                if let Some(r) = rule {
                    put_tlv(o, 0x81, r.as_bytes());
                }
                if let Some(a) = attr {
                    put_tlv(o, 0x82, a.as_bytes());
                }
                put_tlv(o, 0x83, value);
                if *dn_attrs {
                    put_tlv(o, 0x84, &[0xff]);
                }
            }),
        }
    }

    /// Whether the index plan will very likely answer this filter without a scan (decided from the filter
    /// alone). Sessions run filters that need a scan on the blocking pool so they cannot stall other clients.
    pub fn indexable(&self) -> bool {
        // Mirrors `test_query`: a name prefix of any length, or a fragment of three characters or more.
        let text_ok = |a: &str, s: &Substrings| {
            let longest = s.any.iter().chain(s.final_.iter()).map(|v| v.len()).max();
            TEXT_INDEXED.iter().any(|t| t.eq_ignore_ascii_case(a))
                && (s.initial.as_ref().is_some_and(|i| !i.is_empty()) || longest.unwrap_or(0) >= 3)
        };
        match self {
            Filter::And(v) => v.iter().any(Filter::indexable),
            Filter::Or(v) => !v.is_empty() && v.iter().all(Filter::indexable),
            Filter::Eq(a, v) if a.eq_ignore_ascii_case("anr") => v.len() >= 3,
            Filter::Eq(a, v) if a.eq_ignore_ascii_case("objectCategory") => !v.contains(&b'='),
            Filter::Eq(a, _) => Snapshot::is_eq_indexed(a) || is_phone_attr(a),
            Filter::Sub(a, s) => is_phone_attr(a) || text_ok(a, s),
            Filter::Present(a) => {
                !a.eq_ignore_ascii_case("objectClass") && !a.eq_ignore_ascii_case("distinguishedName")
            }
            Filter::Ext { rule, attr, .. } => match rule.as_deref() {
                Some(RULE_IN_CHAIN) => true,
                Some(RULE_BIT_AND) | Some(RULE_BIT_OR) => attr
                    .as_deref()
                    .is_some_and(|a| a.eq_ignore_ascii_case("userAccountControl")),
                _ => false,
            },
            _ => false,
        }
    }

    /// Parse the RFC 4515 string form, e.g. `(&(objectClass=user)(objectGUID=\01\02…))`. `\XX` escapes
    /// become raw octets, so binary values can be written.
    pub fn parse(s: &str) -> Result<Filter, FilterParseError> {
        let b = s.trim().as_bytes();
        let (f, rest) = parse_one(b, 0)?;
        if !rest.is_empty() {
            return Err(FilterParseError("trailing characters"));
        }
        Ok(f)
    }
}

/// A filter string that is not RFC 4515.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter: {0}")]
pub struct FilterParseError(&'static str);

fn parse_one(b: &[u8], depth: usize) -> Result<(Filter, &[u8]), FilterParseError> {
    if depth > MAX_DEPTH {
        return Err(FilterParseError("nested too deep"));
    }
    let b = b.strip_prefix(b"(").ok_or(FilterParseError("expected '('"))?;
    match b.first() {
        Some(c @ (b'&' | b'|')) => {
            let mut rest = &b[1..];
            let mut v = Vec::new();
            while rest.first() == Some(&b'(') {
                let (f, r) = parse_one(rest, depth + 1)?;
                v.push(f);
                rest = r;
            }
            let rest = rest.strip_prefix(b")").ok_or(FilterParseError("expected ')'"))?;
            Ok((if *c == b'&' { Filter::And(v) } else { Filter::Or(v) }, rest))
        }
        Some(b'!') => {
            let (f, r) = parse_one(&b[1..], depth + 1)?;
            let r = r.strip_prefix(b")").ok_or(FilterParseError("expected ')'"))?;
            Ok((Filter::Not(Box::new(f)), r))
        }
        _ => {
            let end = b
                .iter()
                .position(|c| *c == b')')
                .ok_or(FilterParseError("expected ')'"))?;
            let item = &b[..end];
            let eq = item
                .iter()
                .position(|c| *c == b'=')
                .ok_or(FilterParseError("expected '='"))?;
            let (lhs, value) = (&item[..eq], &item[eq + 1..]);
            let (lhs, op) = match lhs.last() {
                Some(b'>') => (&lhs[..lhs.len() - 1], b'>'),
                Some(b'<') => (&lhs[..lhs.len() - 1], b'<'),
                Some(b'~') => (&lhs[..lhs.len() - 1], b'~'),
                Some(b':') => (&lhs[..lhs.len() - 1], b':'),
                _ => (lhs, b'='),
            };
            let lhs = std::str::from_utf8(lhs)
                .map_err(|_| FilterParseError("attribute not UTF-8"))?
                .trim();
            let f = match op {
                b'>' => Filter::Ge(lhs.into(), unescape(value)?),
                b'<' => Filter::Le(lhs.into(), unescape(value)?),
                b'~' => Filter::Approx(lhs.into(), unescape(value)?),
                b':' => {
                    let mut parts = lhs.split(':');
                    let attr = parts.next().filter(|a| !a.is_empty()).map(String::from);
                    let mut rule = None;
                    let mut dn_attrs = false;
                    for p in parts {
                        if p.eq_ignore_ascii_case("dn") {
                            dn_attrs = true;
                        } else {
                            rule = Some(p.to_string());
                        }
                    }
                    Filter::Ext {
                        rule,
                        attr,
                        value: unescape(value)?,
                        dn_attrs,
                    }
                }
                _ if value == b"*" => Filter::Present(lhs.into()),
                _ if value.contains(&b'*') => {
                    let pieces: Vec<&[u8]> = value.split(|c| *c == b'*').collect();
                    let last = pieces.len() - 1;
                    let mut s = Substrings::default();
                    for (i, p) in pieces.iter().enumerate() {
                        if p.is_empty() {
                            continue;
                        }
                        let v = unescape(p)?;
                        if i == 0 {
                            s.initial = Some(v);
                        } else if i == last {
                            s.final_ = Some(v);
                        } else {
                            s.any.push(v);
                        }
                    }
                    Filter::Sub(lhs.into(), s)
                }
                _ => Filter::Eq(lhs.into(), unescape(value)?),
            };
            Ok((f, &b[end + 1..]))
        }
    }
}

fn unescape(v: &[u8]) -> Result<Bytes, FilterParseError> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'\\' {
            let hex = v.get(i + 1..i + 3).ok_or(FilterParseError("short escape"))?;
            let s = std::str::from_utf8(hex).map_err(|_| FilterParseError("bad escape"))?;
            out.push(u8::from_str_radix(s, 16).map_err(|_| FilterParseError("bad escape"))?);
            i += 3;
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    Ok(out.into())
}

// ---------------------------------------------------------------- compilation

/// How one attribute test compares values.
#[derive(Debug, Clone)]
enum Match {
    /// Case-insensitive directory string (value lower-cased).
    Str(String),
    Bin(Bytes),
    /// Normalised DN.
    Dn(String),
    /// `objectCategory=person`: compared with the first RDN value of the stored category DN.
    CategoryShort(String),
    /// Phone digits key (E.164 digits without '+').
    Phone(String),
    Sub {
        initial: Option<String>,
        any: Vec<String>,
        final_: Option<String>,
    },
    /// Substring on a phone attribute over digit keys; `initial` already in E.164 form.
    PhoneSub {
        initial: Option<String>,
        any: Vec<String>,
        final_: Option<String>,
    },
    Ge(String, Option<i64>),
    Le(String, Option<i64>),
    Approx(String),
    BitAnd(u32),
    BitOr(u32),
}

#[derive(Debug, Clone)]
enum Node {
    Const(bool),
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    Present(String),
    Test {
        attr: String,
        m: Match,
        raw: Bytes,
    },
    /// The entry's dense id is in the set (in-chain membership, resolved at compile time).
    In(Arc<RoaringBitmap>),
}

/// A filter bound to a snapshot, ready to plan and evaluate.
#[derive(Debug, Clone)]
pub struct Compiled {
    root: Node,
}

fn lower(v: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(v) {
        Ok(s) if !s.bytes().any(|b| b.is_ascii_uppercase() || b >= 0x80) => Cow::Borrowed(s),
        Ok(s) => Cow::Owned(s.to_lowercase()),
        Err(_) => String::from_utf8_lossy(v).to_lowercase().into(),
    }
}

/// `f` of the value lower-cased as [`lower`] does it, on the stack for short ASCII values: a phone-book search
/// checks thousands of candidates' names, and lower-casing each into a new string cost more than the check.
fn with_lower<R>(v: &[u8], f: impl FnOnce(&str) -> R) -> R {
    const SHORT: usize = 128;
    if v.len() <= SHORT && v.is_ascii() {
        let mut buf = [0u8; SHORT];
        let buf = &mut buf[..v.len()];
        buf.copy_from_slice(v);
        buf.make_ascii_lowercase();
        if let Ok(s) = std::str::from_utf8(buf) {
            return f(s);
        }
    }
    f(&lower(v))
}

fn text(v: &Bytes) -> String {
    lower(v).into_owned()
}

impl Compiled {
    pub fn new(f: &Filter, snap: &Snapshot) -> Compiled {
        let cx = Cx {
            snap,
            phone_keys: Default::default(),
        };
        Compiled { root: compile(f, &cx) }
    }

    /// Whether the entry matches.
    pub fn matches(&self, e: &Entry, snap: &Snapshot) -> bool {
        eval(&self.root, e, snap)
    }

    /// The index query this filter compiles to: what [`Snapshot::query`] answers with candidates.
    pub fn query(&self, snap: &Snapshot) -> Query {
        to_query(&self.root, snap)
    }

    /// The entries that may match, from the indexes.
    pub fn candidates(&self, snap: &Snapshot) -> Candidates {
        snap.query(&self.query(snap))
    }
}

/// Compilation context: the snapshot, and phone keys already computed for this filter (a PBX lookup names the
/// same number for several phone attributes; parsing it once matters at tens of thousands of lookups a second).
struct Cx<'a> {
    snap: &'a Snapshot,
    phone_keys: std::cell::RefCell<Vec<(String, String)>>,
}

impl Cx<'_> {
    fn phone_key(&self, raw: &str) -> String {
        if let Some((_, k)) = self.phone_keys.borrow().iter().find(|(r, _)| r == raw) {
            return k.clone();
        }
        let k = self.snap.phones.key(raw);
        self.phone_keys.borrow_mut().push((raw.to_string(), k.clone()));
        k
    }
}

fn compile(f: &Filter, cx: &Cx<'_>) -> Node {
    match f {
        Filter::And(v) => Node::And(v.iter().map(|f| compile(f, cx)).collect()),
        Filter::Or(v) => Node::Or(v.iter().map(|f| compile(f, cx)).collect()),
        Filter::Not(f) => Node::Not(Box::new(compile(f, cx))),
        Filter::Present(a) => Node::Present(a.clone()),
        Filter::Eq(a, v) if a.eq_ignore_ascii_case("anr") => anr(v, cx),
        Filter::Eq(a, v) => Node::Test {
            attr: a.clone(),
            m: eq_match(a, v, cx),
            raw: v.clone(),
        },
        Filter::Approx(a, v) if a.eq_ignore_ascii_case("anr") => anr(v, cx),
        Filter::Approx(a, v) => {
            let m = if is_phone_attr(a) || is_binary_attr(a) || is_dn_attr(a) {
                eq_match(a, v, cx)
            } else {
                Match::Approx(squash(&text(v)))
            };
            Node::Test {
                attr: a.clone(),
                m,
                raw: v.clone(),
            }
        }
        Filter::Sub(a, s) => {
            let m = if is_phone_attr(a) && phone_sub_has_digits(s) {
                Match::PhoneSub {
                    initial: s
                        .initial
                        .as_ref()
                        .map(|i| cx.snap.phones.prefix_key(&String::from_utf8_lossy(i))),
                    any: s
                        .any
                        .iter()
                        .map(|x| digits(&String::from_utf8_lossy(x)))
                        .filter(|d| !d.is_empty())
                        .collect(),
                    final_: s.final_.as_ref().map(|x| digits(&String::from_utf8_lossy(x))),
                }
            } else {
                Match::Sub {
                    initial: s.initial.as_ref().map(text),
                    any: s.any.iter().map(text).collect(),
                    final_: s.final_.as_ref().map(text),
                }
            };
            Node::Test {
                attr: a.clone(),
                m,
                raw: Bytes::new(),
            }
        }
        Filter::Ge(a, v) => {
            let t = text(v);
            let n = t.trim().parse().ok();
            Node::Test {
                attr: a.clone(),
                m: Match::Ge(t, n),
                raw: v.clone(),
            }
        }
        Filter::Le(a, v) => {
            let t = text(v);
            let n = t.trim().parse().ok();
            Node::Test {
                attr: a.clone(),
                m: Match::Le(t, n),
                raw: v.clone(),
            }
        }
        Filter::Ext { rule, attr, value, .. } => {
            let Some(attr) = attr else { return Node::Const(false) };
            match rule.as_deref() {
                Some(RULE_BIT_AND) | Some(RULE_BIT_OR) => {
                    let Some(mask) = parse_u32(value) else {
                        return Node::Const(false);
                    };
                    let m = if rule.as_deref() == Some(RULE_BIT_AND) {
                        Match::BitAnd(mask)
                    } else {
                        Match::BitOr(mask)
                    };
                    Node::Test {
                        attr: attr.clone(),
                        m,
                        raw: value.clone(),
                    }
                }
                Some(RULE_IN_CHAIN) => in_chain(attr, value, cx),
                // Any other rule (caseIgnoreMatch and friends) is equality for the attributes we serve.
                _ => Node::Test {
                    attr: attr.clone(),
                    m: eq_match(attr, value, cx),
                    raw: value.clone(),
                },
            }
        }
    }
}

fn parse_u32(v: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(v).ok()?.trim();
    s.parse::<i64>().ok().map(|n| n as u32)
}

fn phone_sub_has_digits(s: &Substrings) -> bool {
    s.initial
        .iter()
        .chain(s.any.iter())
        .chain(s.final_.iter())
        .any(|v| v.iter().any(|b| b.is_ascii_digit()))
}

fn squash(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

fn eq_match(attr: &str, v: &Bytes, cx: &Cx<'_>) -> Match {
    if is_binary_attr(attr) {
        return Match::Bin(v.clone());
    }
    if is_phone_attr(attr) {
        let s = String::from_utf8_lossy(v);
        if s.bytes().any(|b| b.is_ascii_digit()) {
            return Match::Phone(cx.phone_key(&s));
        }
        return Match::Str(text(v));
    }
    if attr.eq_ignore_ascii_case("objectCategory") {
        let s = String::from_utf8_lossy(v);
        if !s.contains('=') {
            return Match::CategoryShort(s.trim().to_lowercase());
        }
    }
    if is_dn_attr(attr) {
        if let Some(n) = std::str::from_utf8(v).ok().and_then(normalize_dn) {
            return Match::Dn(n);
        }
    }
    Match::Str(text(v))
}

/// `anr` (ambiguous name resolution) the way AD applies it to the attributes PBXs and Outlook care about:
/// a prefix match on each name attribute, `=x` for exact matches, and "first last" / "last first" splits.
fn anr(v: &Bytes, cx: &Cx<'_>) -> Node {
    let s = String::from_utf8_lossy(v).trim().to_string();
    if s.is_empty() {
        return Node::Const(false);
    }
    let exact = s.strip_prefix('=');
    let mut alts: Vec<Node> = Vec::new();
    let pre = |attr: &str, p: &str| -> Node {
        Node::Test {
            attr: attr.into(),
            m: Match::Sub {
                initial: Some(p.to_lowercase()),
                any: vec![],
                final_: None,
            },
            raw: Bytes::new(),
        }
    };
    match exact {
        Some(x) => {
            let x = Bytes::from(x.trim().to_string());
            for a in ANR_ATTRS {
                alts.push(Node::Test {
                    attr: (*a).into(),
                    m: eq_match(a, &x, cx),
                    raw: x.clone(),
                });
            }
        }
        None => {
            for a in ANR_ATTRS {
                alts.push(pre(a, &s));
            }
            if let Some((first, last)) = s.split_once(' ') {
                let (first, last) = (first.trim(), last.trim());
                if !first.is_empty() && !last.is_empty() {
                    alts.push(Node::And(vec![pre("givenName", first), pre("sn", last)]));
                    alts.push(Node::And(vec![pre("givenName", last), pre("sn", first)]));
                }
            }
        }
    }
    Node::Or(alts)
}

/// `(memberOf:1.2.840.113556.1.4.1941:=G)`: everything nested anywhere below group G.
/// `(member:1.2.840.113556.1.4.1941:=X)`: every group X belongs to, directly or through other groups.
fn in_chain(attr: &str, value: &Bytes, cx: &Cx<'_>) -> Node {
    let Some(start) = std::str::from_utf8(value)
        .ok()
        .and_then(normalize_dn)
        .and_then(|n| cx.snap.by_dn(&n).cloned())
    else {
        return Node::Const(false);
    };
    let follow = if attr.eq_ignore_ascii_case("memberOf") {
        "member"
    } else if attr.eq_ignore_ascii_case("member") {
        "memberOf"
    } else {
        return Node::Const(false);
    };
    let mut seen_dn: HashSet<String> = HashSet::new();
    let mut out = RoaringBitmap::new();
    let mut queue: VecDeque<Arc<Entry>> = VecDeque::from([start]);
    seen_dn.insert(String::new());
    while let Some(e) = queue.pop_front() {
        for v in e.strs(follow) {
            let Some(n) = normalize_dn(v) else { continue };
            if !seen_dn.insert(n.clone()) {
                continue;
            }
            if let (Some(id), Some(next)) = (cx.snap.id_of_dn(&n), cx.snap.by_dn(&n)) {
                out.insert(id);
                queue.push_back(next.clone());
            }
        }
    }
    Node::In(Arc::new(out))
}

// ---------------------------------------------------------------- evaluation

fn eval(n: &Node, e: &Entry, snap: &Snapshot) -> bool {
    match n {
        Node::Const(b) => *b,
        Node::And(v) => v.iter().all(|n| eval(n, e, snap)),
        Node::Or(v) => v.iter().any(|n| eval(n, e, snap)),
        Node::Not(n) => !eval(n, e, snap),
        Node::Present(a) => present(e, a),
        Node::In(set) => snap.id_of(&e.id).is_some_and(|id| set.contains(id)),
        Node::Test { attr, m, .. } => e.values(attr).iter().any(|v| test_value(m, v, snap)),
    }
}

fn present(e: &Entry, attr: &str) -> bool {
    if attr.eq_ignore_ascii_case("objectClass") || attr.eq_ignore_ascii_case("distinguishedName") {
        return true;
    }
    !e.values(attr).is_empty()
}

fn test_value(m: &Match, v: &[u8], snap: &Snapshot) -> bool {
    match m {
        Match::Str(q) => with_lower(v, |s| s == q.as_str()),
        Match::Bin(q) => v == q,
        Match::Dn(q) => std::str::from_utf8(v)
            .ok()
            .and_then(normalize_dn)
            .is_some_and(|n| n == *q),
        Match::CategoryShort(q) => std::str::from_utf8(v)
            .ok()
            .and_then(parse_dn)
            .and_then(|rdns| rdns.first().and_then(|r| r.first()).map(|(_, val)| val.to_lowercase()))
            .is_some_and(|first| first == *q),
        Match::Phone(q) => std::str::from_utf8(v).is_ok_and(|s| phone_eq(s, q, snap)),
        Match::Sub { initial, any, final_ } => with_lower(v, |s| substr(s, initial.as_deref(), any, final_.as_deref())),
        Match::PhoneSub { initial, any, final_ } => std::str::from_utf8(v)
            .is_ok_and(|s| substr(&snap.phones.key(s), initial.as_deref(), any, final_.as_deref())),
        Match::Ge(q, n) => order(v, q, *n).is_some_and(|o| o.is_ge()),
        Match::Le(q, n) => order(v, q, *n).is_some_and(|o| o.is_le()),
        Match::Approx(q) => squash(&lower(v)) == *q,
        Match::BitAnd(mask) => parse_u32(v).is_some_and(|x| x & mask == *mask),
        Match::BitOr(mask) => parse_u32(v).is_some_and(|x| x & mask != 0),
    }
}

/// Whether a stored number has the phone key `key`, parsing it only when cheap checks cannot decide: numbers
/// stored in international form (as the projection writes them) compare by digits.
fn phone_eq(stored: &str, key: &str, snap: &Snapshot) -> bool {
    // The stored number's digits on the stack: a caller-ID lookup checks every candidate this way.
    let mut buf = [0u8; 64];
    let mut n = 0;
    for b in stored.bytes().filter(u8::is_ascii_digit) {
        if n == buf.len() {
            return snap.phones.key(stored) == key;
        }
        buf[n] = b;
        n += 1;
    }
    let d = &buf[..n];
    if stored.trim_start().starts_with('+') && !stored.contains('(') && d == key.as_bytes() {
        return true;
    }
    let tail = &key.as_bytes()[key.len().saturating_sub(4)..];
    if !tail.is_empty() && !d.windows(tail.len()).any(|w| w == tail) {
        return false;
    }
    snap.phones.key(stored) == key
}

fn order(v: &[u8], q: &str, qn: Option<i64>) -> Option<std::cmp::Ordering> {
    let s = lower(v);
    if let (Some(qn), Ok(n)) = (qn, s.trim().parse::<i64>()) {
        return Some(n.cmp(&qn));
    }
    Some(s.as_ref().cmp(q))
}

/// RFC 4517 substring matching over already-normalised strings.
fn substr(hay: &str, initial: Option<&str>, any: &[String], final_: Option<&str>) -> bool {
    let mut rest = hay;
    if let Some(i) = initial {
        match rest.strip_prefix(i) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    for a in any {
        match rest.find(a.as_str()) {
            Some(p) => rest = &rest[p + a.len()..],
            None => return false,
        }
    }
    match final_ {
        Some(f) => rest.len() >= f.len() && rest.ends_with(f),
        None => true,
    }
}

// ---------------------------------------------------------------- planning

/// The index query for a filter node. Index answers are candidates; what no index answers is a scan.
fn to_query(n: &Node, snap: &Snapshot) -> Query {
    match n {
        Node::Const(false) => Query::Nothing,
        Node::Const(true) => Query::All,
        Node::And(v) => Query::And(v.iter().map(|n| to_query(n, snap)).collect()),
        Node::Or(v) => Query::Or(v.iter().map(|n| to_query(n, snap)).collect()),
        Node::Not(n) => Query::Not(Box::new(to_query(n, snap))),
        Node::Present(a) if a.eq_ignore_ascii_case("objectClass") || a.eq_ignore_ascii_case("distinguishedName") => {
            Query::All
        }
        Node::Present(a) => Query::Present(a.clone()),
        Node::In(set) => Query::Ids(RoaringBitmap::clone(set)),
        Node::Test { attr, m, raw } => test_query(attr, m, raw, snap),
    }
}

fn test_query(attr: &str, m: &Match, raw: &Bytes, snap: &Snapshot) -> Query {
    match m {
        // The key is already E.164 digits, as the index stores them: one exact lookup, no second parse.
        Match::Phone(key) if !key.is_empty() => Query::PhoneKey(key.clone()),
        Match::PhoneSub { initial, any, final_ } => match (initial, any.as_slice(), final_) {
            // Substring parts are already digit keys ("+" keeps the snapshot from re-adding a country code).
            (Some(i), _, _) if !i.is_empty() => Query::PhonePrefix(format!("+{i}")),
            (None, [], Some(f)) if !f.is_empty() => Query::PhoneSuffix(f.clone()),
            _ => match any.iter().chain(final_.iter()).max_by_key(|s| s.len()) {
                Some(longest) if !longest.is_empty() => Query::PhoneContains(longest.clone()),
                _ => Query::Scan,
            },
        },
        Match::Str(_) | Match::Bin(_) if Snapshot::is_eq_indexed(attr) => {
            Query::Eq(attr.to_ascii_lowercase(), raw.clone())
        }
        Match::Dn(norm) if Snapshot::is_eq_indexed(attr) => {
            // The index holds stored spellings lower-cased; the stored spelling of a DN value is the target's
            // presented DN, so look the target up first.
            let key: Bytes = match snap.by_dn(norm) {
                Some(t) => Bytes::copy_from_slice(t.dn.as_bytes()),
                None => raw.clone(),
            };
            Query::Eq(attr.to_ascii_lowercase(), key)
        }
        Match::CategoryShort(short) => Query::Category(short.clone()),
        Match::BitAnd(mask) if attr.eq_ignore_ascii_case("userAccountControl") => Query::UacBits(*mask, true),
        Match::BitOr(mask) if attr.eq_ignore_ascii_case("userAccountControl") => Query::UacBits(*mask, false),
        Match::Sub { initial, any, final_ } if TEXT_INDEXED.iter().any(|a| a.eq_ignore_ascii_case(attr)) => {
            let mut parts = Vec::new();
            if let Some(i) = initial.as_ref().filter(|i| !i.is_empty()) {
                parts.push(Query::Prefix(attr.to_string(), i.clone()));
            }
            if let Some(longest) = any
                .iter()
                .chain(final_.iter())
                .filter(|s| s.chars().count() >= 3)
                .max_by_key(|s| s.chars().count())
            {
                parts.push(Query::Text(longest.clone()));
            }
            match parts.len() {
                0 => Query::Scan,
                1 => parts.remove(0),
                _ => Query::And(parts),
            }
        }
        _ => Query::Scan,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::directory::entry::Attribute;
    use crate::directory::phone::PhoneNormalizer;
    use crate::directory::snapshot::Naming;
    use crate::directory::EntryKind;

    pub(crate) fn entry(id: &str, kind: EntryKind, dn: &str, attrs: &[(&str, &[&[u8]])]) -> Entry {
        let mut a: Vec<Attribute> = attrs
            .iter()
            .map(|(n, vs)| Attribute {
                name: (*n).into(),
                values: vs.iter().map(|v| Bytes::copy_from_slice(v)).collect(),
            })
            .collect();
        a.push(Attribute {
            name: "distinguishedName".into(),
            values: vec![Bytes::copy_from_slice(dn.as_bytes())],
        });
        Entry {
            id: id.into(),
            kind,
            dn: dn.into(),
            dn_norm: normalize_dn(dn).unwrap().into(),
            guid: [0; 16],
            usn_changed: 1,
            usn_created: 1,
            attrs: a.into(),
            sort_keys: Default::default(),
        }
    }

    const PERSON: &[u8] = b"CN=Person,CN=Schema,CN=Configuration,DC=contoso,DC=example";
    const USER_OC: &[&[u8]] = &[b"top", b"person", b"organizationalPerson", b"user"];

    /// A small directory: two users, a computer, nested groups.
    pub(crate) fn sample() -> Snapshot {
        let base = "DC=contoso,DC=example";
        let users = "CN=Users,DC=contoso,DC=example";
        let jane = "CN=Jane Doe,CN=Users,DC=contoso,DC=example";
        let max = "CN=Max Müller,CN=Users,DC=contoso,DC=example";
        let inner = "CN=Sales Berlin,CN=Users,DC=contoso,DC=example";
        let outer = "CN=Sales,CN=Users,DC=contoso,DC=example";
        let entries = vec![
            entry(
                "dc=contoso,dc=example",
                EntryKind::Domain,
                base,
                &[("objectClass", &[b"top", b"domain", b"domainDNS"])],
            ),
            entry(
                "cn=users,dc=contoso,dc=example",
                EntryKind::Container,
                users,
                &[("objectClass", &[b"top", b"container"]), ("cn", &[b"Users"])],
            ),
            entry(
                "0001",
                EntryKind::User,
                jane,
                &[
                    ("objectClass", USER_OC),
                    ("objectCategory", &[PERSON]),
                    ("cn", &[b"Jane Doe"]),
                    ("sn", &[b"Doe"]),
                    ("givenName", &[b"Jane"]),
                    ("displayName", &[b"Jane Doe"]),
                    ("sAMAccountName", &[b"jdoe"]),
                    ("mail", &[b"jane.doe@contoso.example"]),
                    ("telephoneNumber", &[b"+49 30 1234567"]),
                    ("mobile", &[b"+49 171 5550100"]),
                    ("userAccountControl", &[b"512"]),
                    (
                        "objectGUID",
                        &[&[0x01, 0xff, 0x00, 0x80, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42]],
                    ),
                    ("memberOf", &[inner.as_bytes()]),
                ],
            ),
            entry(
                "0002",
                EntryKind::User,
                max,
                &[
                    ("objectClass", USER_OC),
                    ("objectCategory", &[PERSON]),
                    ("cn", &[b"Max M\xc3\xbcller"]),
                    ("sn", &[b"M\xc3\xbcller"]),
                    ("givenName", &[b"Max"]),
                    ("displayName", &[b"Max M\xc3\xbcller"]),
                    ("sAMAccountName", &[b"mmueller"]),
                    ("telephoneNumber", &[b"089 9876543"]),
                    ("ipPhone", &[b"4711"]),
                    ("userAccountControl", &[b"514"]),
                ],
            ),
            entry(
                "0003",
                EntryKind::Computer,
                "CN=PC01,CN=Users,DC=contoso,DC=example",
                &[
                    (
                        "objectClass",
                        &[b"top", b"person", b"organizationalPerson", b"user", b"computer"],
                    ),
                    (
                        "objectCategory",
                        &[b"CN=Computer,CN=Schema,CN=Configuration,DC=contoso,DC=example"],
                    ),
                    ("cn", &[b"PC01"]),
                    ("userAccountControl", &[b"4096"]),
                ],
            ),
            entry(
                "0004",
                EntryKind::Group,
                inner,
                &[
                    ("objectClass", &[b"top", b"group"]),
                    ("cn", &[b"Sales Berlin"]),
                    ("groupType", &[b"-2147483646"]),
                    ("member", &[jane.as_bytes()]),
                    ("memberOf", &[outer.as_bytes()]),
                ],
            ),
            entry(
                "0005",
                EntryKind::Group,
                outer,
                &[
                    ("objectClass", &[b"top", b"group"]),
                    ("cn", &[b"Sales"]),
                    ("groupType", &[b"2"]),
                    ("member", &[inner.as_bytes()]),
                ],
            ),
        ];
        Snapshot::from_entries(
            Naming::new(base).unwrap(),
            PhoneNormalizer::new("DE").unwrap(),
            9,
            entries,
        )
    }

    /// Ids matched by evaluating every entry, checked against the index plan: the candidates hold every match
    /// (in the same order), and exactly the matches when the plan says they are exact.
    pub(crate) fn run(snap: &Snapshot, f: &str) -> Vec<String> {
        let c = Compiled::new(&Filter::parse(f).unwrap(), snap);
        let full: Vec<String> = snap
            .entries()
            .filter(|e| c.matches(e, snap))
            .map(|e| e.id.to_string())
            .collect();
        let cands = c.candidates(snap);
        let ids = |verify: bool| -> Vec<String> {
            cands
                .iter_after(snap, None)
                .filter_map(|id| snap.get(id))
                .filter(|e| !verify || c.matches(e, snap))
                .map(|e| e.id.to_string())
                .collect()
        };
        assert_eq!(ids(true), full, "index plan lost matches for {f}");
        if cands.exact {
            assert_eq!(ids(false), full, "exact candidates that do not match for {f}");
        }
        full
    }

    #[test]
    fn phone_numbers_match_in_any_spelling() {
        let s = sample();
        for f in [
            "(telephoneNumber=+49 30 1234567)",
            "(telephoneNumber=004930 1234567)",
            "(telephoneNumber=030 1234567)",
            "(TelephoneNumber=+49301234567)",
            "(telephoneNumber=*1234567)",
            "(telephoneNumber=*234*)",
            "(telephoneNumber=030*)",
            "(telephoneNumber=+4930 12*)",
            "(|(telephoneNumber=*5550100)(Mobile=*5550100)(ipPhone=*5550100))",
        ] {
            assert_eq!(run(&s, f), vec!["0001"], "{f}");
        }
        assert_eq!(run(&s, "(ipPhone=4711)"), vec!["0002"]);
        assert!(run(&s, "(telephoneNumber=*7654321)").is_empty());
        assert!(Compiled::new(&Filter::parse("(telephoneNumber=*1234567)").unwrap(), &s)
            .candidates(&s)
            .ids
            .is_some());
    }

    #[test]
    fn names_case_insensitive_and_indexed() {
        let s = sample();
        assert_eq!(run(&s, "(|(cn=jane*)(sn=jane*))"), vec!["0001"]);
        assert_eq!(run(&s, "(cn=*MÜLL*)"), vec!["0002"]);
        assert_eq!(run(&s, "(&(telephoneNumber=*)(sn=Doe))"), vec!["0001"]);
        assert_eq!(run(&s, "(displayName~=janedoe)"), vec!["0001"]);
        assert!(Compiled::new(&Filter::parse("(cn=*üll*)").unwrap(), &s)
            .candidates(&s)
            .ids
            .is_some());
    }

    #[test]
    fn cisco_cucm_filter_and_bit_rules() {
        let s = sample();
        let cucm = "(&(objectclass=user)(!(objectclass=Computer))(!(UserAccountControl:1.2.840.113556.1.4.803:=2)))";
        assert_eq!(run(&s, cucm), vec!["0001"]);
        assert_eq!(run(&s, "(groupType:1.2.840.113556.1.4.803:=2147483648)"), vec!["0004"]);
        assert_eq!(
            run(&s, "(userAccountControl:1.2.840.113556.1.4.804:=4098)"),
            vec!["0002", "0003"]
        );
    }

    /// Equality lookups (alone, or the smallest conjunct of an AND) stream their postings; `run` checks the
    /// streamed candidates give exactly the full-scan result, in id order.
    #[test]
    fn streamed_equality_candidates_match_a_full_scan() {
        let s = sample();
        let inner = "CN=Sales Berlin,CN=Users,DC=contoso,DC=example";
        assert_eq!(run(&s, &format!("(memberOf={inner})")), vec!["0001"]);
        assert_eq!(
            run(&s, &format!("(&(objectClass=user)(memberOf={inner}))")),
            vec!["0001"]
        );
        assert_eq!(
            run(&s, &format!("(&(objectClass=group)(memberOf={inner}))")),
            Vec::<String>::new()
        );
        assert_eq!(
            run(&s, "(&(objectClass=user)(!(objectClass=computer)))"),
            vec!["0001", "0002"]
        );
        assert_eq!(run(&s, "(&(objectClass=top)(objectClass=group))"), vec!["0004", "0005"]);
        assert_eq!(
            run(&s, "(&(objectClass=user)(telephoneNumber=030 1234567))"),
            vec!["0001"]
        );
        assert!(run(&s, "(&(objectClass=user)(memberOf=CN=Nobody,DC=contoso,DC=example))").is_empty());
    }

    #[test]
    fn object_category_short_forms() {
        let s = sample();
        assert_eq!(run(&s, "(objectCategory=person)"), vec!["0001", "0002"]);
        assert_eq!(run(&s, "(objectCategory=Computer)"), vec!["0003"]);
        assert_eq!(
            run(
                &s,
                "(objectCategory=cn=person,cn=schema,cn=configuration,dc=contoso,dc=example)"
            ),
            vec!["0001", "0002"]
        );
    }

    #[test]
    fn in_chain_membership() {
        let s = sample();
        let f = "(memberOf:1.2.840.113556.1.4.1941:=CN=Sales,CN=Users,DC=contoso,DC=example)";
        assert_eq!(run(&s, f), vec!["0001", "0004"]);
        assert!(run(&s, "(memberOf=CN=Sales,CN=Users,DC=contoso,DC=example)").contains(&"0004".to_string()));
        assert_eq!(
            run(&s, "(memberOf=cn=sales berlin, cn=users,dc=contoso,dc=example)"),
            vec!["0001"]
        );
        let g = "(member:1.2.840.113556.1.4.1941:=CN=Jane Doe,CN=Users,DC=contoso,DC=example)";
        assert_eq!(run(&s, g), vec!["0004", "0005"]);
    }

    #[test]
    fn anr_and_binary_guid() {
        let s = sample();
        assert_eq!(run(&s, "(anr=jan)"), vec!["0001"]);
        assert_eq!(run(&s, "(anr=Doe Jane)"), vec!["0001"]);
        assert_eq!(run(&s, "(anr=mmue)"), vec!["0002"]);
        assert_eq!(run(&s, "(anr==jdoe)"), vec!["0001"]);
        assert_eq!(
            run(&s, r"(objectGUID=\01\ff\00\80\02\00\00\00\00\00\00\00\00\00\00\42)"),
            vec!["0001"]
        );
        assert!(run(&s, r"(objectGUID=\01\ff)").is_empty());
    }

    #[test]
    fn ordering_and_presence() {
        let s = sample();
        assert_eq!(
            run(&s, "(&(objectClass=user)(userAccountControl>=513))"),
            vec!["0002", "0003"]
        );
        assert_eq!(run(&s, "(userAccountControl<=512)"), vec!["0001"]);
        assert_eq!(run(&s, "(ipPhone=*)"), vec!["0002"]);
        assert_eq!(run(&s, "(objectClass=*)").len(), 7);
    }

    #[test]
    fn static_index_estimate_agrees_with_the_plan() {
        let s = sample();
        for f in [
            "(|(cn=Jan*)(sn=Jan*))",
            "(&(objectClass=user)(telephoneNumber=*1234567))",
            "(anr=jan)",
            "(objectClass=*)",
            "(|(cn=J*)(sn=J*))",
            "(&(objectclass=user)(!(objectclass=Computer)))",
            "(memberOf:1.2.840.113556.1.4.1941:=CN=Sales,CN=Users,DC=contoso,DC=example)",
            "(&(telephoneNumber=*)(sn=Do*))",
            "(objectCategory=person)",
            "(userAccountControl:1.2.840.113556.1.4.803:=2)",
            "(cn>=J)",
        ] {
            let filter = Filter::parse(f).unwrap();
            let planned = Compiled::new(&filter, &s).candidates(&s).ids.is_some();
            assert_eq!(filter.indexable(), planned, "{f}");
        }
    }

    #[test]
    fn ber_round_trip_and_depth_limit() {
        let f =
            Filter::parse(r"(&(cn=a*b*c)(!(x>=1))(objectGUID=\00\ff)(uac:1.2.840.113556.1.4.803:=2)(mail=*))").unwrap();
        let mut out = bytes::BytesMut::new();
        f.encode(&mut out);
        let mut r = super::super::ber::Reader::new(out.freeze());
        assert_eq!(Filter::decode(&r.next_tlv().unwrap(), 0).unwrap(), f);
        let deep = "(!".repeat(100) + "(a=b)" + &")".repeat(100);
        assert!(Filter::parse(&deep).is_err());
        let mut deep_f = Filter::Present("a".into());
        for _ in 0..100 {
            deep_f = Filter::Not(Box::new(deep_f));
        }
        let mut out = bytes::BytesMut::new();
        deep_f.encode(&mut out);
        let mut r = super::super::ber::Reader::new(out.freeze());
        assert_eq!(Filter::decode(&r.next_tlv().unwrap(), 0), Err(BerError::TooDeep));
    }
}
